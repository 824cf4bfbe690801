-- Platform identity: accounts, their sessions, stores, members and API keys.
-- Timestamps are Unix seconds (BIGINT). Store-owned tables key on store_id first.

CREATE TABLE accounts (
    id UUID PRIMARY KEY,
    email TEXT NOT NULL,
    email_key TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    CONSTRAINT accounts_email_key_unique UNIQUE (email_key)
);

CREATE TABLE account_sessions (
    id UUID PRIMARY KEY,
    account_id UUID NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    user_agent TEXT,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT NOT NULL,
    refresh_expires_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX account_sessions_account ON account_sessions (account_id);

-- Every refresh token ever issued for a session: rotated ones are kept to detect reuse.
CREATE TABLE account_refresh_tokens (
    token_hash BYTEA PRIMARY KEY,
    session_id UUID NOT NULL REFERENCES account_sessions (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    rotated_at BIGINT
);
CREATE INDEX account_refresh_tokens_session ON account_refresh_tokens (session_id);

CREATE TABLE stores (
    id UUID PRIMARY KEY,
    name TEXT NOT NULL,
    from_email TEXT,
    from_name TEXT,
    allowed_origins JSONB NOT NULL DEFAULT '[]',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE store_members (
    store_id UUID NOT NULL REFERENCES stores (id) ON DELETE CASCADE,
    account_id UUID NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('owner', 'admin')),
    created_at BIGINT NOT NULL,
    PRIMARY KEY (store_id, account_id)
);
CREATE INDEX store_members_account ON store_members (account_id, store_id);

CREATE TABLE api_keys (
    store_id UUID NOT NULL REFERENCES stores (id) ON DELETE CASCADE,
    id UUID NOT NULL,
    name TEXT NOT NULL,
    prefix TEXT NOT NULL,
    key_hash BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at BIGINT,
    PRIMARY KEY (store_id, id),
    CONSTRAINT api_keys_hash_unique UNIQUE (store_id, key_hash)
);
