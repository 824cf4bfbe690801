#!/usr/bin/env bash
# EXPLAIN (ANALYZE, BUFFERS) of the statements that examples/bench_find.rs makes `find` run, as
# src/repo/profiles.rs `find_sql` writes them, with the values in place of the parameters (find
# is planned with its values: it is not a cached prepared statement).
#   scripts/explain-find.sh DATABASE_URL STORE_ID TAXONOMY_ID        # a database seeded by `storecrm seed`
# Called by scripts/bench-profiles.sh when BENCH_EXPLAIN=1. Prints plans only; changes nothing.
set -euo pipefail
url="$1" store="$2" tax="$3"
cols="p.store_id, p.id, p.email, p.verified, p.status, p.created_at, p.updated_at"
base="SELECT $cols FROM profiles p WHERE p.store_id = '$store'::uuid"
order="ORDER BY p.created_at ASC, p.id ASC LIMIT 50"
like() { echo "AND (p.search_text LIKE '%$1%' ESCAPE '\\')"; }
has() { # field_key condition
  echo "AND EXISTS (SELECT 1 FROM profile_taxonomy_values v WHERE v.store_id = p.store_id AND v.profile_id = p.id AND v.taxonomy_id = '$tax'::uuid AND v.field_key = '$1' $2)"
}
# Within 10 km of Paris, with the same arithmetic as condition_sql.
geo=$(python3 -c '
import math
lat, lon, r = 48.85, 2.35, 10.0
dlat = r / 111.195; k = max(math.cos(math.radians(lat)), 1e-6); dlon = min(dlat / k, 360.0)
f = lambda x: repr(float(x)) + "::float8"
print(f"AND v.lat BETWEEN {f(lat - dlat)} AND {f(lat + dlat)} AND v.lon BETWEEN {f(lon - dlon)} AND {f(lon + dlon)}"
      f" AND ((v.lat - {f(lat)}) * (v.lat - {f(lat)}) + ((v.lon - {f(lon)}) * {f(k)}) * ((v.lon - {f(lon)}) * {f(k)})) <= {f(dlat * dlat)}")')
# The keyset position of page 1,000 (rows 49,951 on) in created_at order.
after=$(psql "$url" -Atc "SELECT created_at || ',''' || id || '''::uuid' FROM profiles WHERE store_id = '$store'
  ORDER BY created_at, id OFFSET 49949 LIMIT 1")

explain() {
  echo "### $1"
  echo
  echo '```'
  psql "$url" -Atc "EXPLAIN (ANALYZE, BUFFERS) $2"
  echo '```'
  echo
}
explain "list, default sort" "$base $order"
explain "list, page 1,000 (keyset)" "$base AND (p.created_at, p.id) > ($after) $order"
explain "query: email substring (rare)" "$base $(like user4242.) $order"
explain "query: domain substring (~1%)" "$base $(like @seed42.) $order"
explain "query: text value (tag)" "$base $(like wholesale) $order"
explain "taxonomy: tier = gold" "$base $(has tier "AND v.text_value IN ('gold')") $order"
explain "taxonomy: tags all [vip, b2b]" \
  "$base $(has tags "AND v.text_value IN ('vip')") $(has tags "AND v.text_value IN ('b2b')") $order"
explain "taxonomy: orders between 10..20" "$base $(has orders "AND v.num_value BETWEEN 10::float8 AND 20::float8") $order"
explain "taxonomy: vip = true" "$base $(has vip "AND v.bool_value = TRUE") $order"
explain "taxonomy: within 10 km of Paris" "$base $(has home "$geo") $order"
explain "query + taxonomy + sort=email" \
  "$base $(like seed1) $(has tier "AND v.text_value IN ('silver')") ORDER BY COALESCE(p.email_key, '') ASC, p.id ASC LIMIT 50"
