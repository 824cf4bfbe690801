-- The mail outbox: rows are written in the same transaction as the state change that causes
-- the mail, and deleted once delivered, so no personal data outlives its delivery.
-- A row that keeps failing is kept with failed_at set, for an operator to inspect.

CREATE TABLE mail_outbox (
    store_id UUID REFERENCES stores (id) ON DELETE CASCADE,
    id UUID PRIMARY KEY,
    to_key TEXT NOT NULL,
    message JSONB NOT NULL,
    attempts INT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    locked_until BIGINT,
    last_error TEXT,
    failed_at BIGINT,
    created_at BIGINT NOT NULL
);
-- The worker's "due rows" scan; given-up rows drop out of it.
CREATE INDEX mail_outbox_due ON mail_outbox (next_attempt_at) WHERE failed_at IS NULL;
-- Erasure of one recipient's pending mail.
CREATE INDEX mail_outbox_recipient ON mail_outbox (store_id, to_key);
