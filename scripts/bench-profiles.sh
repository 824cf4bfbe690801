#!/usr/bin/env bash
# Seeds N profiles (default 100000) into a fresh database and measures find latency.
#   scripts/bench-profiles.sh postgres   # uses BENCH_PG_URL (default postgres://postgres@127.0.0.1:5432)
#   scripts/bench-profiles.sh sqlite
# BENCH_EXPLAIN=1 adds the Postgres plans of the same queries (scripts/explain-find.sh);
# BENCH_BIN=/path/to/other/storecrm runs another build; BENCH_SEED_PARALLEL sets `seed --parallel`.
set -euo pipefail
cd "$(dirname "$0")/.."
backend="${1:-postgres}"
n="${BENCH_PROFILES:-100000}"
rounds="${BENCH_ROUNDS:-200}"
port="${BENCH_PORT:-18080}"
work="$(mktemp -d)"
server=""
trap 'kill $server 2>/dev/null || true; rm -rf "$work"' EXIT

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release --quiet --bin storecrm --example bench_find
bin="${BENCH_BIN:-$CARGO_TARGET_DIR/release/storecrm}" # BENCH_BIN: another build to compare

export SECRET_KEY="bench-secret-key-0123456789abcdef0123456789abcdef"
export RUST_LOG=warn
export LISTEN_ADDR="127.0.0.1:$port"
if [ "$backend" = postgres ]; then
  pg="${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432}"
  db="sc_bench_$(date +%s)"
  psql "$pg/postgres" -qc "CREATE DATABASE $db"
  export DATABASE_URL="$pg/$db"
  trap 'kill $server 2>/dev/null || true; rm -rf "$work"; psql "$pg/postgres" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)"' EXIT
else
  export DATABASE_URL="sqlite://$work/bench.db"
fi

$bin accounts create --email bench@example.com --password bench-password >/dev/null
store=$($bin stores create --name bench --owner bench@example.com | python3 -c 'import json,sys; print(json.load(sys.stdin)["store"]["id"])')
key=$($bin api-keys create --store "$store" --name bench | python3 -c 'import json,sys; print(json.load(sys.stdin)["api_key"]["key"])')
seeded=$($bin seed --store "$store" --profiles "$n" ${BENCH_SEED_PARALLEL:+--parallel "$BENCH_SEED_PARALLEL"})
tax=$(echo "$seeded" | python3 -c 'import json,sys; print(json.load(sys.stdin)["seeded"]["taxonomy_id"])')
echo "backend: $backend; seed: $(echo "$seeded" | python3 -c 'import json,sys; s=json.load(sys.stdin)["seeded"]; print("%d profiles in %.1f s = %.0f/s" % (s["inserted"], s["seconds"], s["profiles_per_second"]))')"
if [ "$backend" = postgres ]; then
  # The state autovacuum reaches after a bulk load: statistics, and a visibility map that lets
  # index-only scans skip the heap. Without it the first minutes after seeding measure the load.
  psql "$DATABASE_URL" -qc "VACUUM ANALYZE"
fi

$bin serve & server=$!
for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.2; done
"$CARGO_TARGET_DIR/release/examples/bench_find" "http://127.0.0.1:$port" "$store" "$key" "$tax" "$rounds"
if [ "$backend" = postgres ] && [ "${BENCH_EXPLAIN:-0}" = 1 ]; then
  echo
  scripts/explain-find.sh "$DATABASE_URL" "$store" "$tax"
fi
