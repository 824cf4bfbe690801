-- The outbox made visible (admin API, CLI, metrics). A delivered mail now keeps a summary row
-- (kind, recipient, subject with any sign-in code masked, when it was sent) until the janitor
-- removes it after MAIL_KEEP_SENT_SECS; its body is dropped at delivery. Erasure deletes a
-- recipient's rows, sent or not.
ALTER TABLE mail_outbox ADD COLUMN sent_at BIGINT;
ALTER TABLE mail_outbox ADD COLUMN kind TEXT NOT NULL DEFAULT 'other';
ALTER TABLE mail_outbox ADD COLUMN subject TEXT NOT NULL DEFAULT '';
DROP INDEX mail_outbox_due;
CREATE INDEX mail_outbox_due ON mail_outbox (next_attempt_at) WHERE failed_at IS NULL AND sent_at IS NULL;
-- A store's mail list, newest first, and the janitor's sweep of old sent rows.
CREATE INDEX mail_outbox_by_store ON mail_outbox (store_id, id);
CREATE INDEX mail_outbox_sent ON mail_outbox (sent_at) WHERE sent_at IS NOT NULL;
