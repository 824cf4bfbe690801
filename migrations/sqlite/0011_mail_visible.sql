-- Mirrors migrations/postgres/0011.
ALTER TABLE mail_outbox ADD COLUMN sent_at INTEGER;
ALTER TABLE mail_outbox ADD COLUMN kind TEXT NOT NULL DEFAULT 'other';
ALTER TABLE mail_outbox ADD COLUMN subject TEXT NOT NULL DEFAULT '';
DROP INDEX mail_outbox_due;
CREATE INDEX mail_outbox_due ON mail_outbox (next_attempt_at) WHERE failed_at IS NULL AND sent_at IS NULL;
CREATE INDEX mail_outbox_by_store ON mail_outbox (store_id, id);
CREATE INDEX mail_outbox_sent ON mail_outbox (sent_at) WHERE sent_at IS NOT NULL;
