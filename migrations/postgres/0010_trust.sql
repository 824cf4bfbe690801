-- Proof and claims (CONTRACT §4): a session that gave its profile the email holds the profile
-- like a verified one; any other unverified session on a profile with an email is a claim.
ALTER TABLE profile_sessions ADD COLUMN attached_email BOOLEAN NOT NULL DEFAULT FALSE;

-- Login limits (§4 "Limits") are not scoped to a store: fixed-window counters of failures per
-- hashed email and per client address.
CREATE TABLE account_rate_limits (
    bucket TEXT NOT NULL,
    window_start BIGINT NOT NULL,
    hits BIGINT NOT NULL,
    PRIMARY KEY (bucket, window_start)
);
CREATE INDEX account_rate_limits_by_window ON account_rate_limits (window_start);

-- The newest confirmation link of a subscription decides whether a repeated subscribe mails again.
CREATE INDEX subscription_tokens_by_subscription ON subscription_tokens (store_id, subscription_id, created_at);
