-- Platform identity: accounts, their sessions, stores, members and API keys.
-- Mirrors migrations/postgres/0001: UUID and BYTEA are BLOB, JSONB is TEXT, BIGINT is INTEGER.

CREATE TABLE accounts (
    id BLOB PRIMARY KEY,
    email TEXT NOT NULL,
    email_key TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    CONSTRAINT accounts_email_key_unique UNIQUE (email_key)
) STRICT;

CREATE TABLE account_sessions (
    id BLOB PRIMARY KEY,
    account_id BLOB NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    user_agent TEXT,
    created_at INTEGER NOT NULL,
    last_used_at INTEGER NOT NULL,
    refresh_expires_at INTEGER NOT NULL,
    revoked_at INTEGER
) STRICT;
CREATE INDEX account_sessions_account ON account_sessions (account_id);

CREATE TABLE account_refresh_tokens (
    token_hash BLOB PRIMARY KEY,
    session_id BLOB NOT NULL REFERENCES account_sessions (id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    rotated_at INTEGER
) STRICT;
CREATE INDEX account_refresh_tokens_session ON account_refresh_tokens (session_id);

CREATE TABLE stores (
    id BLOB PRIMARY KEY,
    name TEXT NOT NULL,
    from_email TEXT,
    from_name TEXT,
    allowed_origins TEXT NOT NULL DEFAULT '[]',
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;

CREATE TABLE store_members (
    store_id BLOB NOT NULL REFERENCES stores (id) ON DELETE CASCADE,
    account_id BLOB NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('owner', 'admin')),
    created_at INTEGER NOT NULL,
    PRIMARY KEY (store_id, account_id)
) STRICT;
CREATE INDEX store_members_account ON store_members (account_id, store_id);

CREATE TABLE api_keys (
    store_id BLOB NOT NULL REFERENCES stores (id) ON DELETE CASCADE,
    id BLOB NOT NULL,
    name TEXT NOT NULL,
    prefix TEXT NOT NULL,
    key_hash BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    last_used_at INTEGER,
    revoked_at INTEGER,
    PRIMARY KEY (store_id, id),
    CONSTRAINT api_keys_hash_unique UNIQUE (store_id, key_hash)
) STRICT;
