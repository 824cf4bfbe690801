-- Mirrors migrations/postgres/0009 (JSONB path → json_extract; BIGINT → INTEGER).
CREATE TABLE payment_events (
    event_id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    processed_at INTEGER NOT NULL
) STRICT;

CREATE INDEX subscriptions_by_stripe_subscription
    ON subscriptions (json_extract(payment, '$.provider.subscription_id'));
