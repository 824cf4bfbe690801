-- Almost every write records events (CONTRACT §9.1), so each event row's cost counts (issue 14).
-- Three costs that nothing needs are removed (docs/benchmarks.md §F: together about a fifth of
-- the event rows' cost to the database):
-- 1. The foreign key to `stores`: the application never deletes a store, and the key cost a lookup
--    and a share lock on the store's row per event. A store deleted by hand still takes its
--    events (and through them their deliveries) with it, by the trigger below.
-- 2. `data` as `jsonb`: only the erasure scrub reads into it (`->`, which `json` has too), and
--    every event paid for parsing its object into `jsonb` and printing it back when read. `json`
--    keeps the text as written (the server serialized and checked it).
-- 3. `events_by_time`: it served only the retention sweep, which now walks the primary key store by
--    store (event ids are UUIDv7, ordered by time).
ALTER TABLE events DROP CONSTRAINT events_store_id_fkey;
ALTER TABLE events ALTER COLUMN data TYPE JSON USING data::json;
DROP INDEX events_by_time;

CREATE FUNCTION stores_delete_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM events WHERE store_id = OLD.id;
    RETURN OLD;
END
$$;
CREATE TRIGGER stores_delete_events BEFORE DELETE ON stores FOR EACH ROW EXECUTE FUNCTION stores_delete_events();
