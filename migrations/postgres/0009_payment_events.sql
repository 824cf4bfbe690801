-- Stripe webhook events already processed: the row is written in the same transaction as the
-- subscription change, so a replayed or concurrently redelivered event changes nothing twice.
CREATE TABLE payment_events (
    event_id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    processed_at BIGINT NOT NULL
);

-- Subscription events name the Stripe subscription, which the checkout webhook stored in `payment`.
CREATE INDEX subscriptions_by_stripe_subscription
    ON subscriptions ((payment -> 'provider' ->> 'subscription_id'));
