-- Almost every write records events (CONTRACT §9.1), so each event row's cost counts (issue 14).
-- `events_by_time` served only the retention sweep, which now walks the primary key store by store
-- (event ids are UUIDv7, ordered by time). On Postgres this migration also drops the events'
-- foreign key to `stores` and stores `data` as `json`; here `data` is already text, and dropping
-- a foreign key would mean rebuilding the table (with the deliveries that reference it), for a
-- check that costs an embedded database one index probe.
DROP INDEX events_by_time;
