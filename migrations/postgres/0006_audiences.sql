-- Audiences (newsletters, gated content, paid memberships) and their subscriptions.
CREATE TABLE audiences (
    store_id UUID NOT NULL REFERENCES stores (id) ON DELETE CASCADE,
    id UUID NOT NULL,
    key TEXT NOT NULL,
    name TEXT,
    status TEXT NOT NULL CHECK (status IN ('active', 'archived')),
    kind TEXT NOT NULL CHECK (kind IN ('standard', 'paid')),
    prices JSONB NOT NULL DEFAULT '[]',
    -- Deleting a template clears this first, in the same transaction (no dangling reference).
    confirm_template_id UUID,
    subscriber_count BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (store_id, id),
    CONSTRAINT audiences_key_unique UNIQUE (store_id, key),
    FOREIGN KEY (store_id, confirm_template_id) REFERENCES email_templates (store_id, id)
);
CREATE INDEX audiences_by_template ON audiences (store_id, confirm_template_id);

CREATE TABLE subscriptions (
    store_id UUID NOT NULL,
    id UUID NOT NULL,
    audience_id UUID NOT NULL,
    profile_id UUID NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'active', 'cancellation_scheduled', 'cancelled', 'expired')),
    source TEXT NOT NULL CHECK (source IN ('signup', 'admin', 'import')),
    price_id TEXT,
    payment JSONB,
    start_date BIGINT,
    end_date BIGINT,
    confirmed_at BIGINT,
    cancelled_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (store_id, id),
    CONSTRAINT subscriptions_one_per_profile UNIQUE (store_id, audience_id, profile_id),
    FOREIGN KEY (store_id, audience_id) REFERENCES audiences (store_id, id) ON DELETE CASCADE,
    FOREIGN KEY (store_id, profile_id) REFERENCES profiles (store_id, id) ON DELETE CASCADE
);
-- Subscriber pages: keyset by id within an audience, with or without a status filter.
CREATE INDEX subscriptions_by_audience ON subscriptions (store_id, audience_id, id);
CREATE INDEX subscriptions_by_audience_status ON subscriptions (store_id, audience_id, status, id);
CREATE INDEX subscriptions_by_profile ON subscriptions (store_id, profile_id);

-- Single-use double opt-in tokens, stored hashed.
CREATE TABLE subscription_tokens (
    store_id UUID NOT NULL,
    token_hash BYTEA NOT NULL,
    subscription_id UUID NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT,
    PRIMARY KEY (store_id, token_hash),
    FOREIGN KEY (store_id, subscription_id) REFERENCES subscriptions (store_id, id) ON DELETE CASCADE
);
