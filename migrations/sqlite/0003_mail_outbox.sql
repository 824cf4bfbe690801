-- The mail outbox. Mirrors migrations/postgres/0003: UUID is BLOB, JSONB is TEXT, BIGINT is INTEGER.

CREATE TABLE mail_outbox (
    store_id BLOB REFERENCES stores (id) ON DELETE CASCADE,
    id BLOB PRIMARY KEY,
    to_key TEXT NOT NULL,
    message TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    locked_until INTEGER,
    last_error TEXT,
    failed_at INTEGER,
    created_at INTEGER NOT NULL
) STRICT;
CREATE INDEX mail_outbox_due ON mail_outbox (next_attempt_at) WHERE failed_at IS NULL;
CREATE INDEX mail_outbox_recipient ON mail_outbox (store_id, to_key);
