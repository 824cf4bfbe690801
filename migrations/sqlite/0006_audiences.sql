-- Mirrors migrations/postgres (UUID, BYTEA → BLOB; JSONB → TEXT; BIGINT → INTEGER).
-- Audiences (newsletters, gated content, paid memberships) and their subscriptions.
CREATE TABLE audiences (
    store_id BLOB NOT NULL REFERENCES stores (id) ON DELETE CASCADE,
    id BLOB NOT NULL,
    key TEXT NOT NULL,
    name TEXT,
    status TEXT NOT NULL CHECK (status IN ('active', 'archived')),
    kind TEXT NOT NULL CHECK (kind IN ('standard', 'paid')),
    prices TEXT NOT NULL DEFAULT '[]',
    -- Deleting a template clears this first, in the same transaction (no dangling reference).
    confirm_template_id BLOB,
    subscriber_count INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (store_id, id),
    CONSTRAINT audiences_key_unique UNIQUE (store_id, key),
    FOREIGN KEY (store_id, confirm_template_id) REFERENCES email_templates (store_id, id)
) STRICT;
CREATE INDEX audiences_by_template ON audiences (store_id, confirm_template_id);

CREATE TABLE subscriptions (
    store_id BLOB NOT NULL,
    id BLOB NOT NULL,
    audience_id BLOB NOT NULL,
    profile_id BLOB NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'active', 'cancellation_scheduled', 'cancelled', 'expired')),
    source TEXT NOT NULL CHECK (source IN ('signup', 'admin', 'import')),
    price_id TEXT,
    payment TEXT,
    start_date INTEGER,
    end_date INTEGER,
    confirmed_at INTEGER,
    cancelled_at INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (store_id, id),
    CONSTRAINT subscriptions_one_per_profile UNIQUE (store_id, audience_id, profile_id),
    FOREIGN KEY (store_id, audience_id) REFERENCES audiences (store_id, id) ON DELETE CASCADE,
    FOREIGN KEY (store_id, profile_id) REFERENCES profiles (store_id, id) ON DELETE CASCADE
) STRICT;
-- Subscriber pages: keyset by id within an audience, with or without a status filter.
CREATE INDEX subscriptions_by_audience ON subscriptions (store_id, audience_id, id);
CREATE INDEX subscriptions_by_audience_status ON subscriptions (store_id, audience_id, status, id);
CREATE INDEX subscriptions_by_profile ON subscriptions (store_id, profile_id);

-- Single-use double opt-in tokens, stored hashed.
CREATE TABLE subscription_tokens (
    store_id BLOB NOT NULL,
    token_hash BLOB NOT NULL,
    subscription_id BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at INTEGER,
    PRIMARY KEY (store_id, token_hash),
    FOREIGN KEY (store_id, subscription_id) REFERENCES subscriptions (store_id, id) ON DELETE CASCADE
) STRICT;
