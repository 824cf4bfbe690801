#!/usr/bin/env bash
# Data in and out (issue 16), on Postgres, with the release build. Prints markdown for
# docs/benchmarks.md.
#
# 1. Import: a BENCH_IMPORT_ROWS-row CSV (default 100,000) with 5 taxonomy values per row (the
#    seed taxonomy's fields: tags, tier, orders, vip, home), by `storecrm import`: rows/s and the
#    importer's peak RSS; then the same file again (every row an update).
# 2. Export: BENCH_EXPORT_ROWS profiles (default 1,000,000, made with `storecrm seed`) streamed as
#    NDJSON and as CSV through GET /profiles/export (to /dev/null): rows/s, and the server's
#    RSS before and at its peak during the export (sampled every 100 ms); the CLI's export too.
#
#   scripts/bench-data.sh
#   BENCH_IMPORT_ROWS=20000 BENCH_EXPORT_ROWS=200000 scripts/bench-data.sh   # quicker
set -euo pipefail
cd "$(dirname "$0")/.."
import_rows="${BENCH_IMPORT_ROWS:-100000}"
export_rows="${BENCH_EXPORT_ROWS:-1000000}"
port="${BENCH_PORT:-18082}"
pg="${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432}"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release --quiet --bin storecrm
bin="$CARGO_TARGET_DIR/release/storecrm"

work="$(mktemp -d)"
server="" db="sc_bench_data_$RANDOM$RANDOM"
cleanup() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  rm -rf "$work"
  psql "$pg/postgres" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null || true
}
trap cleanup EXIT
psql "$pg/postgres" -qc "CREATE DATABASE $db" >/dev/null

export DATABASE_URL="$pg/$db?sslmode=disable"
export SECRET_KEY="bench-secret-key-0123456789abcdef0123456789abcdef"
export RUST_LOG=error
export MAIL_DIR="$work/mail"
export LISTEN_ADDR="127.0.0.1:$port"
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
# Runs a command under GNU time; `rss` then prints its peak RSS in MiB.
timed() { /usr/bin/time -f '%M' -o "$work/rss" "$@"; }
rss() { echo $(( $(tail -n1 "$work/rss") / 1024 )); }

"$bin" migrate >/dev/null
boot="$(echo 'bench-password-123' | "$bin" init --email bench@example.com --password-stdin --store-name bench)"
store="$(echo "$boot" | json 'd["store"]["id"]')"
key="$(echo "$boot" | json 'd["api_key"]["key"]')"
"$bin" seed --store "$store" --profiles 0 >/dev/null   # the seed taxonomy, for the columns

python3 - "$import_rows" > "$work/list.csv" <<'PY'
import random, sys
n = int(sys.argv[1]); r = random.Random(7)
tags = ["vip", "newsletter", "b2b", "gift", "mobile", "returning", "wholesale", "churn-risk"]
cities = [("Paris", 48.85, 2.35), ("Berlin", 52.52, 13.40), ("Rome", 41.90, 12.50), ("Madrid", 40.42, -3.70)]
print("email,seed.tags,seed.tier,seed.orders,seed.vip,seed.home")
for i in range(n):
    c = r.choice(cities)
    t = "|".join(sorted(r.sample(tags, r.randint(1, 3))))
    print(f"person{i}@import.example,{t},{r.choice(['gold','silver','bronze'])},{r.randint(0,199)},"
          f"{'true' if r.random() < .1 else 'false'},\"{c[1]+r.uniform(-.5,.5):.5f},{c[2]+r.uniform(-.5,.5):.5f},{c[0]}\"")
PY
size_mb=$(( $(stat -c %s "$work/list.csv") / 1048576 ))

echo "## D. Import and export (issue 16)"
echo
echo "\`scripts/bench-data.sh\` on $(nproc) cores, Postgres $(psql "$pg/postgres" -tAc 'SHOW server_version'), release build, $(date -u +%Y-%m-%d)."
echo
echo "| what | rows | seconds | rows/s | peak RSS (MiB) |"
echo "|---|---:|---:|---:|---:|"
for pass in "import (all new)" "import again (all updates)"; do
  start=$(date +%s.%N)
  timed "$bin" import --store "$store" "$work/list.csv" > "$work/import.json" 2>/dev/null
  rss=$(rss)
  end=$(date +%s.%N)
  created=$(json 'd["imported"]["created"] + d["imported"]["updated"]' < "$work/import.json")
  secs=$(python3 -c "print(f'{$end - $start:.1f}')")
  rate=$(python3 -c "print(f'{$created / ($end - $start):,.0f}')")
  echo "| $pass, CSV ${size_mb} MiB, 5 values a row | $created | $secs | $rate | $rss |"
done

have=$(psql "$DATABASE_URL" -tAc "SELECT COUNT(*) FROM profiles")
more=$(( export_rows > have ? export_rows - have : 0 ))
[ "$more" -gt 0 ] && "$bin" seed --store "$store" --profiles "$more" --batch 5000 --parallel 2 >/dev/null
total=$(psql "$DATABASE_URL" -tAc "SELECT COUNT(*) FROM profiles")

"$bin" serve >/dev/null 2>&1 &
server=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
rss_of() { echo $(( $(awk '/VmRSS/ {print $2}' "/proc/$server/status") / 1024 )); }
for format in ndjson csv; do
  before=$(rss_of)
  peak=$before
  start=$(date +%s.%N)
  curl -sf -H "Authorization: Bearer $key" -o "$work/out" "http://127.0.0.1:$port/v1/stores/$store/profiles/export?format=$format" &
  getter=$!
  while kill -0 "$getter" 2>/dev/null; do
    now=$(rss_of); [ "$now" -gt "$peak" ] && peak=$now; sleep 0.1
  done
  wait "$getter"
  end=$(date +%s.%N)
  lines=$(wc -l < "$work/out"); [ "$format" = csv ] && lines=$((lines - 1))
  mb=$(( $(stat -c %s "$work/out") / 1048576 ))
  secs=$(python3 -c "print(f'{$end - $start:.1f}')")
  rate=$(python3 -c "print(f'{$lines / ($end - $start):,.0f}')")
  echo "| export over HTTP, $format (${mb} MiB), server RSS before → peak | $lines | $secs | $rate | $before → $peak |"
  rm -f "$work/out"
done
start=$(date +%s.%N)
timed "$bin" export --store "$store" --format csv -o "$work/out" 2>/dev/null
rss=$(rss)
end=$(date +%s.%N)
lines=$(( $(wc -l < "$work/out") - 1 ))
echo "| \`storecrm export --format csv\` | $lines | $(python3 -c "print(f'{$end - $start:.1f}')") | $(python3 -c "print(f'{$lines / ($end - $start):,.0f}')") | $rss |"
echo
echo "Profiles in the store at export time: $total."
