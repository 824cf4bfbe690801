-- Saved segments: stored `find` filters (issue 16).
CREATE TABLE segments (
    store_id UUID NOT NULL REFERENCES stores (id) ON DELETE CASCADE,
    id UUID NOT NULL,
    key TEXT NOT NULL,
    name TEXT,
    query TEXT,
    taxonomy_query TEXT,
    status TEXT CHECK (status IN ('active', 'archived')),
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (store_id, id),
    CONSTRAINT segments_key UNIQUE (store_id, key)
);

-- The consent ledger: one immutable record per subscription change, kept with the profile (its
-- erasure deletes them; a merge moves the source's records to the target). No foreign key to the
-- subscription: a removed subscription keeps its history.
CREATE TABLE consents (
    store_id UUID NOT NULL,
    id UUID NOT NULL,
    subscription_id UUID NOT NULL,
    profile_id UUID NOT NULL,
    audience_id UUID NOT NULL,
    action TEXT NOT NULL,
    status_after TEXT NOT NULL,
    at BIGINT NOT NULL,
    source TEXT,
    ip TEXT,
    user_agent TEXT,
    confirm_mail_id UUID,
    wording_hash TEXT,
    PRIMARY KEY (store_id, id),
    FOREIGN KEY (store_id, profile_id) REFERENCES profiles (store_id, id) ON DELETE CASCADE
);
CREATE INDEX consents_by_profile ON consents (store_id, profile_id, id);
CREATE INDEX consents_by_subscription ON consents (store_id, subscription_id, id);

-- A store may keep subscribers' full IP addresses in the ledger; by default /24 (IPv4) or /48 (IPv6).
ALTER TABLE stores ADD COLUMN consent_full_ip BOOLEAN NOT NULL DEFAULT FALSE;
