-- Mirrors migrations/postgres/0010.
ALTER TABLE profile_sessions ADD COLUMN attached_email INTEGER NOT NULL DEFAULT 0;

CREATE TABLE account_rate_limits (
    bucket TEXT NOT NULL,
    window_start INTEGER NOT NULL,
    hits INTEGER NOT NULL,
    PRIMARY KEY (bucket, window_start)
) STRICT;
CREATE INDEX account_rate_limits_by_window ON account_rate_limits (window_start);

CREATE INDEX subscription_tokens_by_subscription ON subscription_tokens (store_id, subscription_id, created_at);
