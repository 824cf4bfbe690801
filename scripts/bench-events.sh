#!/usr/bin/env bash
# What recording events (CONTRACT §9.1) costs the hottest writes, and how fast one instance
# delivers webhooks. Prints markdown tables for docs/benchmarks.md.
#
# 1. Throughput of `initialize`, `connect` (a new address each time) and an admin `subscribe` (a
#    new subscriber each time) on Postgres, for this tree built twice: as shipped, and with the
#    `bench-without-events` feature, which writes no event (and skips the reads that only build
#    events) and changes nothing else. Three servers: "without" (that build), "recording" (this
#    build with WEBHOOK_WORKER=false: events written, none fanned out here) and "with" (this build
#    with its webhook worker, which marks every event dispatched, on the same 2 cores). Each runs
#    BENCH_ROUNDS times, interleaved (without, recording, with, then the reverse, ...) so that
#    drift of the machine cancels; ratios are of the summed rates. BENCH_BIN_BEFORE names another
#    binary to use as "without".
# 2. One instance delivering BENCH_DELIVERIES webhooks (`storecrm seed` records a profile.created
#    per profile) to a local receiver (examples/bench_receiver.rs): deliveries per second.
#
#   scripts/bench-events.sh
#   BENCH_SECONDS=15 BENCH_CONNECTIONS=16 BENCH_ROUNDS=2 BENCH_DELIVERIES=20000 scripts/bench-events.sh
# Load goes to 127.0.0.1 only; every wrk run is bounded by time and sits under `timeout`. Every
# request comes from a random client address (X-Forwarded-For, one trusted proxy hop), as
# shoppers do, so the per-address limits count many buckets instead of serializing on one row.
set -euo pipefail
cd "$(dirname "$0")/.."
connections="${BENCH_CONNECTIONS:-16}"
seconds="${BENCH_SECONDS:-15}"
rounds="${BENCH_ROUNDS:-2}"
deliveries="${BENCH_DELIVERIES:-20000}"
port="${BENCH_PORT:-18081}"
receiver_port="${BENCH_RECEIVER_PORT:-18095}"
pg="${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432}"
command -v wrk >/dev/null || { echo "wrk is required (apt-get install wrk)" >&2; exit 1; }

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
builds="$CARGO_TARGET_DIR/bench-events"
mkdir -p "$builds"
before="${BENCH_BIN_BEFORE:-}"
if [ -z "$before" ]; then
  # Only this crate is rebuilt for the feature: its dependencies are the same.
  cargo build --release --quiet --bin storecrm --features bench-without-events
  cp "$CARGO_TARGET_DIR/release/storecrm" "$builds/storecrm-without-events"
  before="$builds/storecrm-without-events"
fi
cargo build --release --quiet --bin storecrm --example bench_receiver
after="$CARGO_TARGET_DIR/release/storecrm"
receiver_bin="$CARGO_TARGET_DIR/release/examples/bench_receiver"

work="$(mktemp -d)"
server="" receiver="" db=""
stop() { if [ -n "$1" ]; then kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; fi; }
cleanup() {
  stop "$server"; stop "$receiver"
  rm -rf "$work"
  [ -n "$db" ] && psql "$pg/postgres" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null || true
}
trap cleanup EXIT

export SECRET_KEY="bench-secret-key-0123456789abcdef0123456789abcdef"
export RUST_LOG=error
export MAIL_DIR="$work/mail"
export LISTEN_ADDR="127.0.0.1:$port"
# Limits raised (not switched off: every request still counts in its bucket).
export SESSION_LIMIT_PER_ADDRESS=1000000000 TRUSTED_PROXY_HOPS=1
export WEBHOOKS_ALLOW_PRIVATE=true
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
wait_up() {
  for _ in $(seq 1 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$1" || true)" != 000 ] && return 0; sleep 0.1
  done
  echo "nothing answers at $1" >&2; exit 1
}

# Each request gets its own body: a new address for connect, the next seeded profile for subscribe.
cat >"$work/load.lua" <<'EOF'
local kind = os.getenv("WRK_KIND")
local start = tonumber(os.getenv("WRK_START") or "0")
local auth = os.getenv("WRK_AUTH")
local ids = {}
if kind == "subscribe" then
  for line in io.lines(os.getenv("WRK_IDS")) do ids[#ids + 1] = line end
end
local n = 0
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
if auth and auth ~= "" then wrk.headers["authorization"] = auth end
request = function()
  n = n + 1
  local headers = {}
  for k, v in pairs(wrk.headers) do headers[k] = v end
  headers["x-forwarded-for"] = string.format("10.%d.%d.%d", math.random(0, 255), math.random(0, 255), math.random(1, 254))
  local body = "{}"
  if kind == "connect" then
    body = string.format('{"email": "c%d-%d@bench.example"}', start, n)
  elseif kind == "subscribe" then
    body = string.format('{"profile_id": "%s"}', ids[(start + n - 1) % #ids + 1])
  end
  return wrk.format(nil, nil, headers, body)
end
EOF

# Requests/s of one run, after a 3 s warm-up on other bodies; non-2xx answers fail the script.
measure() { # name kind path auth
  local out rps
  WRK_KIND="$2" WRK_START=1000000 WRK_AUTH="$4" WRK_IDS="$work/ids" \
    timeout 60 wrk -t1 -c"$connections" -d3s -s "$work/load.lua" "$api$3" >/dev/null
  psql "$DATABASE_URL" -qc "VACUUM ANALYZE" -c "CHECKPOINT" >/dev/null
  out=$(WRK_KIND="$2" WRK_START=0 WRK_AUTH="$4" WRK_IDS="$work/ids" timeout $((seconds + 30)) \
    wrk -t1 -c"$connections" -d"${seconds}s" --latency -s "$work/load.lua" "$api$3")
  if grep -qE "Non-2xx|Socket errors" <<<"$out"; then echo "$1: errors during the run:" >&2; echo "$out" >&2; exit 1; fi
  rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
  echo "$rps" >"$work/$1.rps"
  printf '| %s | %s | %s | %s |\n' "$1" "$rps" "$(awk '$1 == "50%" {print $2}' <<<"$out")" \
    "$(awk '$1 == "99%" {print $2}' <<<"$out")"
}

# A fresh database with a store, an API key, a single opt-in audience and seeded profiles.
setup() { # binary
  [ -n "$db" ] && psql "$pg/postgres" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null
  db="sc_bench_events_$(date +%s%N)"
  psql "$pg/postgres" -qc "CREATE DATABASE $db"
  export DATABASE_URL="$pg/$db"
  "$1" migrate >/dev/null
  "$1" accounts create --email bench@example.com --password bench-password >/dev/null
  store=$("$1" stores create --name bench --owner bench@example.com | json 'd["store"]["id"]')
  key=$("$1" api-keys create --store "$store" --name bench | json 'd["api_key"]["key"]')
  "$1" seed --store "$store" --profiles "${BENCH_PROFILES:-120000}" >/dev/null
  psql "$DATABASE_URL" -Atc "SELECT id FROM profiles ORDER BY random()" >"$work/ids"
  api="http://127.0.0.1:$port/v1/stores/$store"
}

echo "wrk: 1 thread, $connections connections, ${seconds}s per run (after a 3 s warm-up), $rounds rounds"
echo
echo "| run | requests/s | p50 | p99 |"
echo "| --- | ---: | ---: | ---: |"
for round in $(seq 1 "$rounds"); do
  order="without recording with"; [ $((round % 2)) = 0 ] && order="with recording without"
  for build in $order; do
    bin="$after"; [ "$build" = without ] && bin="$before"
    # "recording": events written, but this instance runs no webhook worker (as API instances
    # may, with the worker elsewhere), so the figure is the cost of recording alone; "with":
    # the worker fans the events out on the same 2 cores besides.
    worker=true; [ "$build" = recording ] && worker=false
    setup "$bin"
    WEBHOOK_WORKER=$worker "$bin" serve 2>>"$work/server.log" & server=$!
    wait_up "127.0.0.1:$port/healthz"
    curl -sf "$api/audiences" -H "authorization: Bearer $key" -H 'content-type: application/json' \
      -d '{"key": "news"}' >/dev/null
    measure "${build}_initialize_$round" initialize /profiles/initialize ""
    measure "${build}_connect_$round" connect /profiles/connect ""
    measure "${build}_subscribe_$round" subscribe /audiences/news/subscribe "Bearer $key"
    stop "$server"; server=""
  done
done
# The summed rates of all rounds of one build and call.
total() { cat "$work/$1"_*.rps | python3 -c "import sys; print(sum(float(l) for l in sys.stdin))"; }
echo
for op in initialize connect subscribe; do
  with=$(total "with_$op") recording=$(total "recording_$op") without=$(total "without_$op")
  echo "$op recording events / without: $(python3 -c "print(f'{$recording / $without:.2f}')")  (target >= 0.90);" \
    "with the webhook worker on the same instance: $(python3 -c "print(f'{$with / $without:.2f}')")"
done

# Deliveries: an endpoint, then a seed whose profile.created events the worker delivers.
echo
"$receiver_bin" "127.0.0.1:$receiver_port" 2>>"$work/server.log" & receiver=$!
wait_up "127.0.0.1:$receiver_port/count"
export BENCH_PROFILES=0
setup "$after"
"$after" serve 2>>"$work/server.log" & server=$!
wait_up "127.0.0.1:$port/healthz"
curl -sf "$api/webhooks" -H "authorization: Bearer $key" -H 'content-type: application/json' \
  -d "{\"url\": \"http://127.0.0.1:$receiver_port/hook\", \"events\": [\"profile.created\"]}" >/dev/null
sleep 1.1 # the endpoint gets events from the next second on
"$after" seed --store "$store" --profiles "$deliveries" >/dev/null
started=$(date +%s.%N)
for _ in $(seq 1 1200); do
  got=$(curl -s "127.0.0.1:$receiver_port/count")
  [ "$got" -ge "$deliveries" ] && break
  sleep 0.25
done
elapsed=$(python3 -c "import time; print(f'{time.time() - $started:.1f}')")
delivered=$(psql "$DATABASE_URL" -Atc "SELECT count(*) FROM webhook_deliveries WHERE status = 'delivered'")
attempts=$(psql "$DATABASE_URL" -Atc "SELECT count(*) FROM webhook_attempts")
echo "deliveries: $got received, $delivered delivered, $attempts attempts in ${elapsed}s:" \
  "$(python3 -c "print(f'{$got / $elapsed:.0f}')") deliveries/s from one instance"
