-- Faster find and seeding (docs/benchmarks.md has the plans and numbers).
--
-- A value row fills one of text_value / num_value / bool_value / lat+lon, yet every ptv_* index
-- held every row: four full-size indexes to write per value and to keep in cache. The number,
-- boolean and geo ones now hold only their own rows (a filter `x = $n` or `x BETWEEN ...` implies
-- `x IS NOT NULL`, so the planner still picks them). ptv_text stays whole: besides text filters it
-- serves the (store_id, taxonomy_id, field_key) lookups of taxonomy changes and the cascade.
DROP INDEX ptv_number;
DROP INDEX ptv_bool;
DROP INDEX ptv_geo;
CREATE INDEX ptv_number ON profile_taxonomy_values (store_id, taxonomy_id, field_key, num_value, profile_id)
    WHERE num_value IS NOT NULL;
CREATE INDEX ptv_bool ON profile_taxonomy_values (store_id, taxonomy_id, field_key, bool_value, profile_id)
    WHERE bool_value IS NOT NULL;
CREATE INDEX ptv_geo ON profile_taxonomy_values (store_id, taxonomy_id, field_key, lat, lon, profile_id)
    WHERE lat IS NOT NULL;

-- A value belongs to its field (`gold` is only ever a `tier`), but the planner multiplies the
-- selectivities of field_key and the value as if independent, and underestimated matches about
-- fivefold: it then sorted a seq scan of all profiles instead of walking the sort index.
CREATE STATISTICS ptv_field_text (mcv) ON field_key, text_value FROM profile_taxonomy_values;
CREATE STATISTICS ptv_field_number (mcv) ON field_key, num_value FROM profile_taxonomy_values;
CREATE STATISTICS ptv_field_bool (mcv) ON field_key, bool_value FROM profile_taxonomy_values;
ANALYZE profile_taxonomy_values;
