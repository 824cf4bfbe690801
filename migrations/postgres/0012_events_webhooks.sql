-- Events (CONTRACT §9.1): written in the same transaction as the change that causes them.
-- subject_id is the profile an event concerns, so that erasure can scrub its earlier events.
-- dispatched_at is set once the dispatcher has made the event's deliveries.
CREATE TABLE events (
    store_id UUID NOT NULL REFERENCES stores (id) ON DELETE CASCADE,
    id UUID NOT NULL,
    type TEXT NOT NULL,
    subject_id UUID,
    data JSONB NOT NULL,
    created_at BIGINT NOT NULL,
    dispatched_at BIGINT,
    PRIMARY KEY (store_id, id)
);
CREATE INDEX events_by_subject ON events (store_id, subject_id);
CREATE INDEX events_by_time ON events (created_at);
CREATE INDEX events_undispatched ON events (created_at) WHERE dispatched_at IS NULL;

-- Webhook endpoints. No signing secret is stored: it is derived from SECRET_KEY, the endpoint id
-- and secret_version; a rotation keeps the previous version signing until previous_until.
CREATE TABLE webhook_endpoints (
    store_id UUID NOT NULL REFERENCES stores (id) ON DELETE CASCADE,
    id UUID NOT NULL,
    url TEXT NOT NULL,
    description TEXT,
    events JSONB NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'disabled')),
    secret_version INT NOT NULL,
    previous_until BIGINT,
    failing_since BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (store_id, id)
);

-- One event for one endpoint, delivered by the webhook worker under a lease like the mail outbox.
CREATE TABLE webhook_deliveries (
    store_id UUID NOT NULL,
    id UUID NOT NULL,
    endpoint_id UUID NOT NULL,
    event_id UUID NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts INT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    locked_until BIGINT,
    created_at BIGINT NOT NULL,
    delivered_at BIGINT,
    PRIMARY KEY (store_id, id),
    CONSTRAINT webhook_deliveries_once UNIQUE (store_id, endpoint_id, event_id),
    FOREIGN KEY (store_id, endpoint_id) REFERENCES webhook_endpoints (store_id, id) ON DELETE CASCADE,
    FOREIGN KEY (store_id, event_id) REFERENCES events (store_id, id) ON DELETE CASCADE
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_by_endpoint ON webhook_deliveries (store_id, endpoint_id, id);

-- Every attempt: what the receiver answered and how long it took.
CREATE TABLE webhook_attempts (
    store_id UUID NOT NULL,
    delivery_id UUID NOT NULL,
    attempt INT NOT NULL,
    at BIGINT NOT NULL,
    status_code INT,
    duration_ms BIGINT NOT NULL,
    error TEXT,
    PRIMARY KEY (store_id, delivery_id, attempt),
    FOREIGN KEY (store_id, delivery_id) REFERENCES webhook_deliveries (store_id, id) ON DELETE CASCADE
);

-- The janitor moves memberships whose scheduled end has passed to `expired`.
CREATE INDEX subscriptions_scheduled_end ON subscriptions (end_date) WHERE status = 'cancellation_scheduled';
