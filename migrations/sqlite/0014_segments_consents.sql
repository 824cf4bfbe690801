-- Mirrors migrations/postgres/0014. Saved segments: stored `find` filters (issue 16).
CREATE TABLE segments (
    store_id BLOB NOT NULL REFERENCES stores (id) ON DELETE CASCADE,
    id BLOB NOT NULL,
    key TEXT NOT NULL,
    name TEXT,
    query TEXT,
    taxonomy_query TEXT,
    status TEXT CHECK (status IN ('active', 'archived')),
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (store_id, id),
    CONSTRAINT segments_key UNIQUE (store_id, key)
) STRICT;

-- The consent ledger: one immutable record per subscription change, kept with the profile.
CREATE TABLE consents (
    store_id BLOB NOT NULL,
    id BLOB NOT NULL,
    subscription_id BLOB NOT NULL,
    profile_id BLOB NOT NULL,
    audience_id BLOB NOT NULL,
    action TEXT NOT NULL,
    status_after TEXT NOT NULL,
    at INTEGER NOT NULL,
    source TEXT,
    ip TEXT,
    user_agent TEXT,
    confirm_mail_id BLOB,
    wording_hash TEXT,
    PRIMARY KEY (store_id, id),
    FOREIGN KEY (store_id, profile_id) REFERENCES profiles (store_id, id) ON DELETE CASCADE
) STRICT;
CREATE INDEX consents_by_profile ON consents (store_id, profile_id, id);
CREATE INDEX consents_by_subscription ON consents (store_id, subscription_id, id);

ALTER TABLE stores ADD COLUMN consent_full_ip INTEGER NOT NULL DEFAULT 0;
