-- Mirrors migrations/postgres (UUID, BYTEA → BLOB; JSONB → TEXT; BIGINT → INTEGER).
-- Email templates of a store (double opt-in confirmations, the magic-code mail override, ...).
CREATE TABLE email_templates (
    store_id BLOB NOT NULL REFERENCES stores (id) ON DELETE CASCADE,
    id BLOB NOT NULL,
    key TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    text_body TEXT,
    from_name TEXT,
    from_email TEXT,
    reply_to TEXT,
    preheader TEXT,
    status TEXT NOT NULL CHECK (status IN ('active', 'archived')),
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (store_id, id),
    CONSTRAINT email_templates_key_unique UNIQUE (store_id, key)
) STRICT;
