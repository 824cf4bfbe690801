-- Mirrors migrations/postgres/0004. Rate limits kept in the database, so they hold across instances: one fixed-window counter per
-- store, bucket (e.g. code requests per email hash or per client address) and window.
CREATE TABLE rate_limits (
    store_id BLOB NOT NULL REFERENCES stores (id) ON DELETE CASCADE,
    bucket TEXT NOT NULL,
    window_start INTEGER NOT NULL,
    hits INTEGER NOT NULL,
    PRIMARY KEY (store_id, bucket, window_start)
) STRICT;
CREATE INDEX rate_limits_by_window ON rate_limits (window_start);

-- What the janitor sweeps: guests that never gained an email, ended sessions, old codes.
CREATE INDEX profiles_guests ON profiles (created_at) WHERE email_key IS NULL;
CREATE INDEX profile_sessions_by_expiry ON profile_sessions (refresh_expires_at);
CREATE INDEX magic_codes_by_expiry ON magic_codes (expires_at);
