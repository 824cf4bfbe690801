-- Email templates of a store (double opt-in confirmations, the magic-code mail override, ...).
CREATE TABLE email_templates (
    store_id UUID NOT NULL REFERENCES stores (id) ON DELETE CASCADE,
    id UUID NOT NULL,
    key TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    text_body TEXT,
    from_name TEXT,
    from_email TEXT,
    reply_to TEXT,
    preheader TEXT,
    status TEXT NOT NULL CHECK (status IN ('active', 'archived')),
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (store_id, id),
    CONSTRAINT email_templates_key_unique UNIQUE (store_id, key)
);
