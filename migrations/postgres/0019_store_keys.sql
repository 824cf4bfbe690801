-- The hottest inserts no longer lock their store's row (issue 15). A foreign key to `stores`
-- checks each new row with `SELECT ... FOR KEY SHARE` on the store's one row; with many
-- concurrent writers of one store that lock becomes a multixact shared by all of them, rewritten
-- for every new locker: every guest (`initialize`), every new profile (`connect`) and every new
-- rate-limit bucket (one per client address and window) paid for it. Both checks move into the
-- statements as a plain `EXISTS` on `stores` (an unknown store is still 404, and nothing is
-- written for it), and a store deleted by hand still takes its rows with it, by the trigger.
-- (SQLite keeps its foreign keys: one writer at a time, no shared row locks.)
ALTER TABLE profiles DROP CONSTRAINT profiles_store_id_fkey;
ALTER TABLE rate_limits DROP CONSTRAINT rate_limits_store_id_fkey;

DROP TRIGGER stores_delete_events ON stores;
DROP FUNCTION stores_delete_events();
CREATE FUNCTION stores_delete_rows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM events WHERE store_id = OLD.id;
    DELETE FROM profiles WHERE store_id = OLD.id;
    DELETE FROM rate_limits WHERE store_id = OLD.id;
    RETURN OLD;
END
$$;
CREATE TRIGGER stores_delete_rows BEFORE DELETE ON stores FOR EACH ROW EXECUTE FUNCTION stores_delete_rows();
