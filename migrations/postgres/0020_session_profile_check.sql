-- A new session no longer checks its profile by foreign key (issue 15). The key's check ran, for
-- every session row, a lookup of the profile and a share lock on it (a WAL record of its own):
-- pgbench of initialize's statement, whose profile is new in the same statement and so cannot be
-- gone, ran 12 % faster without it (docs/benchmarks.md §K). What the key did is now done by the
-- statements, on Postgres (SQLite keeps its keys):
-- - A session of an existing profile (connect, verify, sign-in) is written only with its profile
--   locked (`FOR KEY SHARE`, the lock the key's check took): a merge or an erasure deleting the
--   profile meanwhile makes it write nothing (409 concurrent_change, as the key's violation did).
-- - Deleting a profile (erasure, merge, guest sweep) deletes its sessions in the next statement
--   of its transaction, which sees any session committed before the profile's row lock was
--   granted; their exchanged refresh tokens go by their own key's cascade.
-- - A store deleted by hand takes its sessions, by the trigger of 0019.
ALTER TABLE profile_sessions DROP CONSTRAINT profile_sessions_store_id_profile_id_fkey;

CREATE OR REPLACE FUNCTION stores_delete_rows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM events WHERE store_id = OLD.id;
    DELETE FROM profiles WHERE store_id = OLD.id;
    DELETE FROM profile_sessions WHERE store_id = OLD.id;
    DELETE FROM rate_limits WHERE store_id = OLD.id;
    RETURN OLD;
END
$$;
