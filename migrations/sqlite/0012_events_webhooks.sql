-- Mirrors migrations/postgres/0012. Events (CONTRACT §9.1): written in the same transaction as the change that causes them.
-- subject_id is the profile an event concerns, so that erasure can scrub its earlier events.
-- dispatched_at is set once the dispatcher has made the event's deliveries.
CREATE TABLE events (
    store_id BLOB NOT NULL REFERENCES stores (id) ON DELETE CASCADE,
    id BLOB NOT NULL,
    type TEXT NOT NULL,
    subject_id BLOB,
    data TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    dispatched_at INTEGER,
    PRIMARY KEY (store_id, id)
) STRICT;
CREATE INDEX events_by_subject ON events (store_id, subject_id);
CREATE INDEX events_by_time ON events (created_at);
CREATE INDEX events_undispatched ON events (created_at) WHERE dispatched_at IS NULL;

-- Webhook endpoints. No signing secret is stored: it is derived from SECRET_KEY, the endpoint id
-- and secret_version; a rotation keeps the previous version signing until previous_until.
CREATE TABLE webhook_endpoints (
    store_id BLOB NOT NULL REFERENCES stores (id) ON DELETE CASCADE,
    id BLOB NOT NULL,
    url TEXT NOT NULL,
    description TEXT,
    events TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'disabled')),
    secret_version INTEGER NOT NULL,
    previous_until INTEGER,
    failing_since INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (store_id, id)
) STRICT;

-- One event for one endpoint, delivered by the webhook worker under a lease like the mail outbox.
CREATE TABLE webhook_deliveries (
    store_id BLOB NOT NULL,
    id BLOB NOT NULL,
    endpoint_id BLOB NOT NULL,
    event_id BLOB NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    locked_until INTEGER,
    created_at INTEGER NOT NULL,
    delivered_at INTEGER,
    PRIMARY KEY (store_id, id),
    CONSTRAINT webhook_deliveries_once UNIQUE (store_id, endpoint_id, event_id),
    FOREIGN KEY (store_id, endpoint_id) REFERENCES webhook_endpoints (store_id, id) ON DELETE CASCADE,
    FOREIGN KEY (store_id, event_id) REFERENCES events (store_id, id) ON DELETE CASCADE
) STRICT;
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_by_endpoint ON webhook_deliveries (store_id, endpoint_id, id);

-- Every attempt: what the receiver answered and how long it took.
CREATE TABLE webhook_attempts (
    store_id BLOB NOT NULL,
    delivery_id BLOB NOT NULL,
    attempt INTEGER NOT NULL,
    at INTEGER NOT NULL,
    status_code INTEGER,
    duration_ms INTEGER NOT NULL,
    error TEXT,
    PRIMARY KEY (store_id, delivery_id, attempt),
    FOREIGN KEY (store_id, delivery_id) REFERENCES webhook_deliveries (store_id, id) ON DELETE CASCADE
) STRICT;

-- The janitor moves memberships whose scheduled end has passed to `expired`.
CREATE INDEX subscriptions_scheduled_end ON subscriptions (end_date) WHERE status = 'cancellation_scheduled';
