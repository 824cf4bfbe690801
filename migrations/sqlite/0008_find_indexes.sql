-- The twin of migrations/postgres/0008, shaped for SQLite's planner (docs/benchmarks.md).
-- SQLite runs a taxonomy filter's EXISTS once per profile, in sort order, as a probe for that
-- profile. With the value before profile_id, a range filter (a number between, a geo box) probed a
-- whole range of values for every profile: 0.4 s and 1.7 s at 100k profiles. Here profile_id comes
-- first, so each probe is one index seek; and each index holds only the rows of its type, as on
-- Postgres. ptv_text (whole) and ptv_bool keep their column order: an equality on the value
-- already pins the probe down.
DROP INDEX ptv_number;
DROP INDEX ptv_bool;
DROP INDEX ptv_geo;
CREATE INDEX ptv_number ON profile_taxonomy_values (store_id, taxonomy_id, field_key, profile_id, num_value)
    WHERE num_value IS NOT NULL;
CREATE INDEX ptv_bool ON profile_taxonomy_values (store_id, taxonomy_id, field_key, bool_value, profile_id)
    WHERE bool_value IS NOT NULL;
CREATE INDEX ptv_geo ON profile_taxonomy_values (store_id, taxonomy_id, field_key, profile_id, lat, lon)
    WHERE lat IS NOT NULL;
