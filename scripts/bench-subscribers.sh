#!/usr/bin/env bash
# GET /v1/stores/{storeId}/audiences/{id}/subscribers at 1,000,000 subscriptions (issue 15): pages
# 1 and 1,000 (keyset cursors) must answer with p99 < 20 ms, on Postgres, with the release build.
# Prints markdown for docs/benchmarks.md.
#
# Setup: `storecrm migrate` and `init` (store, admin API key) into a throwaway database, a
# standard audience made over HTTP, BENCH_SUBSCRIBERS profiles (default 1,000,000) made with
# `storecrm seed`, one subscriber added over HTTP (POST /subscribers), and the rest in one SQL
# `INSERT ... SELECT` from profiles, each row shaped as the server's addSubscriber writes it
# (`upsert_subscription`: active, source admin, start/confirmed/created/updated = now, a UUIDv7
# id whose time orders the rows), then VACUUM ANALYZE of the whole database (so no autovacuum of
# the seeded tables runs during the measurements) and a CHECKPOINT. The page-BENCH_PAGE cursor is found by
# walking the cursors over HTTP from page 1 (no offset shortcut), for the plain list and for
# `status=active`. Each URL then gets `wrk` for BENCH_SECONDS (after a 3 s warm-up) at every
# connection count in BENCH_CONNECTIONS; the machine's busy CPU over each run (/proc/stat: server,
# Postgres and wrk together) divided by its requests says what one request costs. Last, EXPLAIN
# (ANALYZE, BUFFERS) of the statement the server runs for page BENCH_PAGE (src/repo/audiences.rs
# `subscribers`), as its named prepared statement runs it (Postgres' own choice of plan after
# five executions), and the generic plan that statement would get if it were cached.
#
#   scripts/bench-subscribers.sh          # BENCH_PG_URL (default postgres://postgres@127.0.0.1:5432)
#   BENCH_SUBSCRIBERS=200000 BENCH_SECONDS=5 BENCH_CONNECTIONS=16 scripts/bench-subscribers.sh   # quicker
#   BENCH_BIN=/path/to/storecrm BENCH_LABEL="release build of abc1234" scripts/bench-subscribers.sh
#                                         # a build made elsewhere (no cargo); the label names it
#   BENCH_KEEP_DB=1 ...                   # keep the database (its URL, store and key go to stderr)
# Load goes to 127.0.0.1 only; each wrk run stops after BENCH_SECONDS or BENCH_MAX_REQUESTS per
# thread, whichever comes first, and is killed by `timeout` if it overruns.
set -euo pipefail
cd "$(dirname "$0")/.."
subscribers="${BENCH_SUBSCRIBERS:-1000000}"
limit="${BENCH_LIMIT:-50}"
page="${BENCH_PAGE:-1000}"
seconds="${BENCH_SECONDS:-15}"
connections="${BENCH_CONNECTIONS:-1 16}" # one wrk run per value, per URL
threads="${BENCH_THREADS:-1}"
max_requests="${BENCH_MAX_REQUESTS:-500000}"
target_ms="${BENCH_TARGET_MS:-20}"
port="${BENCH_PORT:-18083}"
pg="${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432}"
command -v wrk >/dev/null || { echo "wrk is required (apt-get install wrk)" >&2; exit 1; }
if [ $(((page - 1) * limit + 1)) -gt "$subscribers" ]; then
  echo "page $page of $limit is past $subscribers subscribers" >&2; exit 1
fi

if [ -n "${BENCH_BIN:-}" ]; then
  bin="$BENCH_BIN" build="$BENCH_BIN"
else
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
  cargo build --release --quiet --bin storecrm
  bin="$CARGO_TARGET_DIR/release/storecrm" build="release build of $(git rev-parse --short HEAD)"
fi
build="${BENCH_LABEL:-$build}" # what the header says was measured

work="$(mktemp -d)"
db="sc_bench_subs_$RANDOM$RANDOM"
server="" store="" key=""
cleanup() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  rm -rf "$work"
  if [ "${BENCH_KEEP_DB:-0}" = 1 ]; then
    echo "kept: DATABASE_URL=$DATABASE_URL store=$store key=$key" >&2; return
  fi
  psql "$pg/postgres" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null || true
}
trap cleanup EXIT
psql "$pg/postgres" -qc "CREATE DATABASE $db" >/dev/null

# As bench-hot.sh: the app's default connection (TLS when the server offers it).
export DATABASE_URL="$pg/$db"
export SECRET_KEY="bench-secret-key-0123456789abcdef0123456789abcdef"
export RUST_LOG=error
export MAIL_DIR="$work/mail"
export LISTEN_ADDR="127.0.0.1:$port"
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
sql() { psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -qAt "$@"; }
hz=$(getconf CLK_TCK)
num() { python3 -c "print(f'{$1:,}')"; }
secs_since() { python3 -c "import time; print(f'{time.time() - $1:.1f}')"; }

start_server() {
  "$bin" serve >>"$work/server.log" 2>&1 &
  server=$!
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && return 0; sleep 0.1; done
  echo "the server did not come up:" >&2; cat "$work/server.log" >&2; exit 1
}
stop_server() { kill "$server"; wait "$server" 2>/dev/null || true; server=""; }

"$bin" migrate >/dev/null
boot="$(echo 'bench-password-123' | "$bin" init --email bench@example.com --password-stdin --store-name bench)"
store="$(echo "$boot" | json 'd["store"]["id"]')"
key="$(echo "$boot" | json 'd["api_key"]["key"]')"
api="http://127.0.0.1:$port/v1/stores/$store"
auth="Authorization: Bearer $key"

started=$(date +%s.%N)
"$bin" seed --store "$store" --profiles "$subscribers" --batch 5000 --parallel 2 >/dev/null
seed_secs=$(secs_since "$started")

# The audience, and one subscriber, through the API: the row the server writes is the model the
# SQL rows below are checked against.
start_server
audience=$(curl -sf "$api/audiences" -H "$auth" -H 'content-type: application/json' \
  -d '{"key": "news", "name": "News", "type": "standard"}' | json 'd["id"]')
first=$(sql -c "SELECT id FROM profiles WHERE store_id = '$store' ORDER BY id LIMIT 1")
curl -sf "$api/audiences/$audience/subscribers" -H "$auth" -H 'content-type: application/json' \
  -d "{\"profile_id\": \"$first\"}" >/dev/null
stop_server

# Everyone else, in one statement. Each row is what `upsert_subscription` writes for addSubscriber
# (status active, source admin, no price or payment, start_date = confirmed_at = created_at =
# updated_at = its time in seconds) with a UUIDv7 id: its first 48 bits are the time in ms, here
# one ms apart per row, in random profile order, ending now; the rest is gen_random_uuid()'s
# random bits and variant, with the version nibble set to 7. So the ids order like the server's
# Uuid::now_v7() ones (Postgres and Rust both compare uuids bytewise), which is all the keyset
# cursor needs. The counting trigger (0007_subscriber_counts.sql) would update the audience's row
# once per inserted row, a million versions of one row in one transaction; it is off for this
# statement only (the ALTER is part of the transaction) and the count is set once after it.
started=$(date +%s.%N)
sql -v store="$store" -v audience="$audience" -v n="$subscribers" <<'SQL'
BEGIN;
ALTER TABLE subscriptions DISABLE TRIGGER subscriptions_count;
INSERT INTO subscriptions (store_id, id, audience_id, profile_id, status, source, price_id, payment,
                           start_date, end_date, confirmed_at, cancelled_at, created_at, updated_at)
SELECT store_id,
       (substr(lpad(to_hex(ms), 12, '0'), 1, 8) || '-' || substr(lpad(to_hex(ms), 12, '0'), 9, 4)
        || '-7' || substr(gen_random_uuid()::text, 16))::uuid,
       :'audience'::uuid, id, 'active', 'admin', NULL, NULL,
       ms / 1000, NULL, ms / 1000, NULL, ms / 1000, ms / 1000
FROM (SELECT p.store_id, p.id,
             (extract(epoch FROM clock_timestamp()) * 1000)::bigint - :n + row_number() OVER (ORDER BY random()) AS ms
      FROM profiles p
      WHERE p.store_id = :'store'::uuid
        AND NOT EXISTS (SELECT 1 FROM subscriptions s
                        WHERE s.store_id = p.store_id AND s.audience_id = :'audience'::uuid AND s.profile_id = p.id)
      LIMIT :n - 1) p;
ALTER TABLE subscriptions ENABLE TRIGGER subscriptions_count;
UPDATE audiences SET subscriber_count = (
    SELECT count(*) FROM subscriptions s
    WHERE s.store_id = audiences.store_id AND s.audience_id = audiences.id
      AND s.status IN ('active', 'cancellation_scheduled'))
WHERE store_id = :'store'::uuid AND id = :'audience'::uuid;
COMMIT;
SQL
insert_secs=$(secs_since "$started")
started=$(date +%s.%N)
sql -c "VACUUM (ANALYZE)" -c "CHECKPOINT"
vacuum_secs=$(secs_since "$started")

# Shapes of the rows: one line expected (the API's row included), every one a v7 id, active, admin.
shapes=$(sql -F ' | ' -c "SELECT substr(id::text, 15, 1) AS version, status, source,
    price_id IS NULL AND payment IS NULL AND end_date IS NULL AND cancelled_at IS NULL AS nulls,
    start_date = created_at AND confirmed_at = created_at AND updated_at = created_at AS same_times,
    count(*)
  FROM subscriptions WHERE store_id = '$store' GROUP BY 1, 2, 3, 4, 5 ORDER BY 6 DESC")
counted=$(sql -c "SELECT count(*) FROM subscriptions
  WHERE store_id = '$store' AND audience_id = '$audience' AND status = 'active'")
sizes=$(sql -c "SELECT pg_size_pretty(pg_table_size('subscriptions')) || ' table, '
  || pg_size_pretty(pg_indexes_size('subscriptions')) || ' indexes'")

start_server
stated=$(curl -sf "$api/audiences/$audience" -H "$auth" | json 'd["subscriber_count"]')

# The cursor of page N: N - 1 requests, each with the cursor the one before answered. Also checks
# that page N starts where an OFFSET would put it, and times the walk.
walk() { # status ('' for none) → prints: cursor, after-id, seconds
  python3 - "$port" "/v1/stores/$store/audiences/$audience/subscribers" "$key" "$limit" "$page" "$1" <<'PY'
import base64, http.client, json, sys, time, urllib.parse
port, path, key, limit, page, status = sys.argv[1:]
conn = http.client.HTTPConnection("127.0.0.1", int(port))
cursor, started = None, time.time()
for n in range(1, int(page)):
    q = {"limit": limit}
    if status: q["status"] = status
    if cursor: q["cursor"] = cursor
    conn.request("GET", path + "?" + urllib.parse.urlencode(q), headers={"Authorization": "Bearer " + key})
    r = conn.getresponse(); body = r.read()
    if r.status != 200: sys.exit(f"page {n}: HTTP {r.status}: {body[:300]!r}")
    d = json.loads(body)
    if len(d["items"]) != int(limit) or not d["cursor"]: sys.exit(f"page {n}: {len(d['items'])} items, cursor {d['cursor']!r}")
    cursor = d["cursor"]
wire = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
print(cursor, wire["a"][0], f"{time.time() - started:.1f}")
PY
}
walked=$(walk "")
read -r cursor after walk_secs <<<"$walked"
walked=$(walk active)
read -r cursor_active after_active walk_active_secs <<<"$walked"
offset_id=$(sql -c "SELECT id FROM subscriptions WHERE store_id = '$store' AND audience_id = '$audience'
  ORDER BY id OFFSET $(((page - 1) * limit - 1)) LIMIT 1")
[ "$offset_id" = "$after" ] || { echo "page $page's cursor is after $after, OFFSET says $offset_id" >&2; exit 1; }

# Counts answers and stops a thread after max_requests; done() prints what the table needs
# (wrk's latencies are in microseconds).
cat >"$work/load.lua" <<EOF
local limit, seen = $max_requests, 0
wrk.headers["Authorization"] = "Bearer $key"
function response(status, headers, body)
  seen = seen + 1
  if seen >= limit then wrk.thread:stop() end
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d %d %d %d\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    e.status, e.connect + e.read + e.write + e.timeout))
end
EOF

ms() { python3 -c "print(f'{$1 / 1000:.2f} ms')"; }
# Busy and total jiffies of all cores (busy: user, nice, system, irq, softirq; total adds idle,
# iowait and steal, the time the hypervisor gave to others).
busy() { awk '$1 == "cpu" {print $2 + $3 + $4 + $7 + $8, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat; }
measure() { # page filter url
  local c out result requests duration p50 p90 p99 max status_errors socket_errors rps met b0 t0 b1 t1 cpu
  for c in $connections; do
    timeout 30 wrk -t"$threads" -c"$c" -d3s -s "$work/load.lua" "$3" >/dev/null
    read -r b0 t0 < <(busy)
    out=$(timeout $((seconds + 30)) wrk -t"$threads" -c"$c" -d"${seconds}s" -s "$work/load.lua" "$3")
    read -r b1 t1 < <(busy)
    result=$(grep '^RESULT ' <<<"$out") || { echo "no RESULT line from wrk:" >&2; echo "$out" >&2; exit 1; }
    read -r _ requests duration p50 p90 p99 max status_errors socket_errors <<<"$result"
    if [ "$status_errors" != 0 ] || [ "$socket_errors" != 0 ]; then
      echo "page $1 ($2), $c connections: $status_errors non-2xx answers, $socket_errors socket errors" >&2
      echo "$out" >&2; exit 1
    fi
    rps=$(python3 -c "print(f'{$requests / ($duration / 1e6):,.0f}')")
    met=$([ "$p99" -lt $((target_ms * 1000)) ] && echo yes || echo "**no**")
    cpu=$(python3 -c "b, t = $b1 - $b0, $t1 - $t0; print(f'{100 * b / t:.0f} % | {b * 1000 / $hz / $requests:.2f} ms')")
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$1" "$2" "$limit" "$c" "$rps" \
      "$(ms "$p50")" "$(ms "$p90")" "$(ms "$p99")" "$(ms "$max")" "$cpu" "$met"
  done
}

url="$api/audiences/$audience/subscribers"
echo "## G. Subscriber pages at $(num "$subscribers") subscriptions (issue 15)"
echo
echo "\`scripts/bench-subscribers.sh\` on $(nproc) cores, Postgres $(sql -c 'SHOW server_version'), $build,"
echo "$(date -u '+%Y-%m-%d %H:%M') UTC. \`wrk -t$threads\`, ${seconds} s per run after a 3 s warm-up; page $(num "$page") is"
echo "the cursor after $(num $((page - 1))) pages of $limit, found by walking them over HTTP. CPU: the whole machine's"
echo "(server, Postgres and wrk), busy share of its $(nproc) cores and busy CPU time per request."
echo
echo "| page | filter | limit | connections | requests/s | p50 | p90 | p99 | max | CPU busy | CPU a request | p99 < $target_ms ms |"
echo "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
measure 1 none "$url?limit=$limit"
measure "$(num "$page")" none "$url?limit=$limit&cursor=$cursor"
measure 1 "status=active" "$url?limit=$limit&status=active"
measure "$(num "$page")" "status=active" "$url?limit=$limit&status=active&cursor=$cursor_active"
rss_kib=$(awk '/VmHWM/ {print $2}' "/proc/$server/status")
stop_server

echo
echo "- Subscriptions counted in SQL (this audience, \`status = 'active'\`): $(num "$counted");"
echo "  the audience's \`subscriber_count\` over the API: $(num "$stated"). Subscriptions: $sizes."
echo "- Row shapes (uuid version | status | source | nulls as the server writes | one time in all four | rows):"
while IFS= read -r line; do echo "  \`$line\`"; done <<<"$shapes"
echo "- Setup: seed $(num "$subscribers") profiles ${seed_secs} s; INSERT ... SELECT ${insert_secs} s;"
echo "  VACUUM ANALYZE + CHECKPOINT ${vacuum_secs} s. Walking to page $page: ${walk_secs} s"
echo "  ($(python3 -c "print(f'{$walk_secs * 1000 / ($page - 1):.2f}')") ms a page, one connection), with \`status=active\` ${walk_active_secs} s."
echo "- storecrm's peak RSS over the runs: $((rss_kib / 1024)) MiB."

# The statement of src/repo/audiences.rs `subscribers`, page N, as the server sends it: a named
# prepared statement, planned with its values for its first five executions; from the sixth,
# Postgres (plan_cache_mode auto) keeps a generic plan if its estimated cost is not above theirs.
cols="s.store_id, s.id, s.audience_id, s.profile_id, s.status, s.source, s.price_id, s.payment, s.start_date, \
s.end_date, s.confirmed_at, s.cancelled_at, s.created_at, s.updated_at"
from="SELECT $cols, p.email AS email FROM subscriptions s JOIN profiles p ON p.store_id = s.store_id AND p.id = s.profile_id"
explain() { # title plan_cache_mode statement-with-params param-types values
  local runs=()
  for _ in 1 2 3 4 5 6; do runs+=(-c "EXECUTE q($5)"); done
  echo
  echo "EXPLAIN (ANALYZE, BUFFERS) EXECUTE, $1:"
  echo
  echo '```'
  sql -c "SET plan_cache_mode = $2" -c "PREPARE q($4) AS $3" -c '\o /dev/null' "${runs[@]}" -c '\o' \
    -c "EXPLAIN (ANALYZE, BUFFERS) EXECUTE q($5)"
  echo '```'
}
values="'$store', '$audience', '$after', $((limit + 1))"
plain="$from WHERE s.store_id = \$1 AND s.audience_id = \$2 AND s.id > \$3 ORDER BY s.id LIMIT \$4"
explain "page $page as the server runs it (seventh execution, plan_cache_mode auto)" auto \
  "$plain" "uuid, uuid, uuid, bigint" "$values"
explain "page $page with the generic plan forced (what a cached plan would be)" force_generic_plan \
  "$plain" "uuid, uuid, uuid, bigint" "$values"
explain "page $page, \`status=active\`, as the server runs it" auto \
  "$from WHERE s.store_id = \$1 AND s.audience_id = \$2 AND s.status = \$3 AND s.id > \$4 ORDER BY s.id LIMIT \$5" \
  "uuid, uuid, text, uuid, bigint" "'$store', '$audience', 'active', '$after_active', $((limit + 1))"
