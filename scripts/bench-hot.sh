#!/usr/bin/env bash
# The hot calls of issue 15 against a bare axum + sqlx server doing one statement per request
# (examples/bench_baseline.rs), on the same Postgres database, in one run: getMe, checkAccess and
# initialize against a point select / single insert, and requestCode (a new address each time).
# Both servers are up; one is loaded at a time, under the same wrk load, each storecrm run next to
# the baseline run it is compared with (BENCH_ROUNDS rounds, the pair's order alternating); prints
# requests/s, the ratios of the rates summed over the rounds (each round's own in brackets) and
# the server's peak RSS. Ratios, not absolute rates, are the targets.
#   scripts/bench-hot.sh                  # BENCH_PG_URL (default postgres://postgres@127.0.0.1:5432)
#   BENCH_CONNECTIONS=16 BENCH_SECONDS=15 BENCH_THREADS=1 BENCH_MAX_REQUESTS=500000 BENCH_ROUNDS=2 scripts/bench-hot.sh
#   BENCH_BIN=/path/to/other/storecrm scripts/bench-hot.sh   # the same runs against another build
# Load goes to 127.0.0.1 only; each wrk run stops after BENCH_SECONDS or BENCH_MAX_REQUESTS per
# thread, whichever comes first, and is killed by `timeout` if it overruns. Every request comes
# from a random client address (X-Forwarded-For, one trusted proxy hop), as real shoppers do, and
# the limits are raised besides (not switched off: every request still counts in its buckets).
set -euo pipefail
cd "$(dirname "$0")/.."
connections="${BENCH_CONNECTIONS:-16}"
seconds="${BENCH_SECONDS:-15}"
threads="${BENCH_THREADS:-1}"
max_requests="${BENCH_MAX_REQUESTS:-500000}"
rounds="${BENCH_ROUNDS:-2}"
port="${BENCH_PORT:-18081}"
base_port="${BENCH_BASELINE_PORT:-18091}"
pg="${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432}"
command -v wrk >/dev/null || { echo "wrk is required (apt-get install wrk)" >&2; exit 1; }

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release --quiet --bin storecrm --example bench_baseline
bin="${BENCH_BIN:-$CARGO_TARGET_DIR/release/storecrm}" # BENCH_BIN: another build to compare
baseline="$CARGO_TARGET_DIR/release/examples/bench_baseline"

work="$(mktemp -d)"
db="sc_bench_hot_$(date +%s)"
server="" baseline_pid="" store="" profile="" token=""
cleanup() {
  for pid in $server $baseline_pid; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
  if [ "${BENCH_KEEP_DB:-0}" = 1 ]; then
    echo "kept: DATABASE_URL=$DATABASE_URL store=$store profile=$profile token=$token" >&2; return
  fi
  psql "$pg/postgres" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null
}
trap cleanup EXIT
psql "$pg/postgres" -qc "CREATE DATABASE $db"

export DATABASE_URL="$pg/$db"
export SECRET_KEY="bench-secret-key-0123456789abcdef0123456789abcdef"
export RUST_LOG=warn
export MAIL_DIR="$work/mail"
export ACCESS_TOKEN_TTL_SECS=3600
export LISTEN_ADDR="127.0.0.1:$port"
export SESSION_LIMIT_PER_ADDRESS=100000000 CODE_LIMIT_PER_IP=100000000 CODE_LIMIT_PER_EMAIL=100000000
export TRUSTED_PROXY_HOPS=1
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

# Wrk stops a thread after max_requests responses and counts answers that are not 2xx.
cat >"$work/load.lua" <<EOF
local limit, seen = $max_requests, 0
wrk.method = os.getenv("WRK_METHOD") or "GET"
local auth = os.getenv("WRK_AUTH")
if auth and auth ~= "" then wrk.headers["Authorization"] = auth end
-- Each request comes from its own client address, as a storefront's shoppers do (the server
-- trusts one proxy hop: X-Forwarded-For), so the per-address limits count many buckets instead
-- of making every request of the run wait on one row. WRK_EMAILS: a JSON body with a new
-- address on every request (requestCode).
local emails = os.getenv("WRK_EMAILS")
if emails then wrk.headers["Content-Type"] = "application/json" end
local n = 0
request = function()
  n = n + 1
  local headers = {}
  for k, v in pairs(wrk.headers) do headers[k] = v end
  headers["X-Forwarded-For"] = string.format("10.%d.%d.%d", math.random(0, 255), math.random(0, 255), math.random(1, 254))
  local body = nil
  if emails then body = string.format('{"email": "hot%d.%d@bench.example"}', n, math.random(1e9)) end
  return wrk.format(nil, nil, headers, body)
end
function response(status, headers, body)
  seen = seen + 1
  if seen >= limit then wrk.thread:stop() end
end
EOF

wait_up() { # any HTTP answer will do
  for _ in $(seq 1 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$1/healthz" || true)" != 000 ] && return 0; sleep 0.1
  done
  echo "server at $1 did not come up" >&2; exit 1
}

# Requests/s of one wrk run; a run with non-2xx answers or socket errors fails the script.
measure() { # name method url auth [emails]
  local out
  if [ -n "${5:-}" ]; then export WRK_EMAILS=1; else unset WRK_EMAILS; fi
  # requestCode's run leaves thousands of mails for the outbox worker: the next run waits until
  # they are out, or it would share the cores with their delivery.
  for _ in $(seq 1 600); do
    [ "$(psql "$DATABASE_URL" -Atc "SELECT count(*) FROM mail_outbox WHERE failed_at IS NULL AND sent_at IS NULL")" = 0 ] && break
    sleep 0.5
  done
  WRK_METHOD="$2" WRK_AUTH="$4" timeout 60 wrk -t1 -c"$connections" -d3s -s "$work/load.lua" "$3" >/dev/null
  # Statistics taken after the warm-up: planned while profile_sessions held a few rows, the
  # foreign-key checks of initialize seq-scanned it for the rest of the run (until autovacuum's
  # next analyze). And no dirty pages or vacuum debt carried from one run into the next.
  psql "$DATABASE_URL" -qc "VACUUM ANALYZE" -c "CHECKPOINT" >/dev/null
  out=$(WRK_METHOD="$2" WRK_AUTH="$4" timeout $((seconds + 30)) \
    wrk -t"$threads" -c"$connections" -d"${seconds}s" --latency -s "$work/load.lua" "$3")
  if grep -qE "Non-2xx|Socket errors" <<<"$out"; then echo "$1: errors during the run:" >&2; echo "$out" >&2; exit 1; fi
  local rps p50 p99
  rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  echo "$rps" >"$work/$1.rps"
  printf '| %s | %s | %s | %s |\n' "$1" "$rps" "$p50" "$p99"
}

# The real CLI and API make the store, a verified profile with taxonomy values, and its token.
$bin migrate >/dev/null
$bin accounts create --email bench@example.com --password bench-password >/dev/null
store=$($bin stores create --name bench --owner bench@example.com | json 'd["store"]["id"]')
key=$($bin api-keys create --store "$store" --name bench | json 'd["api_key"]["key"]')
tax=$($bin seed --store "$store" --profiles "${BENCH_PROFILES:-10000}" | json 'd["seeded"]["taxonomy_id"]')

$bin serve 2>>"$work/server.log" & server=$!
wait_up "127.0.0.1:$port"
api="http://127.0.0.1:$port/v1/stores/$store"
guest=$(curl -sf -X POST "$api/profiles/initialize" | json 'd["access_token"]')
curl -sf "$api/profiles/auth/code" -H 'content-type: application/json' -d '{"email": "me@bench.example"}' >/dev/null
code=""
for _ in $(seq 1 50); do
  code=$(cat "$MAIL_DIR"/*.eml 2>/dev/null | grep -oE '^Subject: [0-9]{6}' | grep -oE '[0-9]{6}' | head -1 || true)
  [ -n "$code" ] && break; sleep 0.1
done
[ -n "$code" ] || { echo "no sign-in code arrived in $MAIL_DIR" >&2; exit 1; }
verified=$(curl -sf "$api/profiles/auth/verify" -H "authorization: Bearer $guest" -H 'content-type: application/json' \
  -d "{\"email\": \"me@bench.example\", \"code\": \"$code\"}")
token=$(json 'd["access_token"]' <<<"$verified")
profile=$(json 'd["profile_id"]' <<<"$verified")
session=$(json 'd["id"]' <<<"$verified")
curl -sf -X PUT "$api/profiles/$profile" -H "authorization: Bearer $key" -H 'content-type: application/json' \
  -d "{\"taxonomies\": [{\"taxonomy_id\": \"$tax\", \"fields\": [
        {\"key\": \"tags\", \"type\": \"text\", \"value\": [\"vip\", \"b2b\"]},
        {\"key\": \"tier\", \"type\": \"text\", \"value\": [\"gold\"]},
        {\"key\": \"orders\", \"type\": \"number\", \"value\": 12},
        {\"key\": \"vip\", \"type\": \"boolean\", \"value\": true},
        {\"key\": \"home\", \"type\": \"geo_location\", \"value\": {\"lat\": 48.8566, \"lon\": 2.3522, \"label\": \"Paris\"}}]}]}" \
  >/dev/null
# A paid-free newsletter the verified profile is subscribed to (single opt-in), for checkAccess.
audience=$(curl -sf "$api/audiences" -H "authorization: Bearer $key" -H 'content-type: application/json' \
  -d '{"key": "news", "name": "News"}' | json 'd["id"]')
curl -sf "$api/audiences/$audience/subscribers" -H "authorization: Bearer $key" -H 'content-type: application/json' \
  -d "{\"profile_id\": \"$profile\"}" >/dev/null
access=$(curl -sf "$api/audiences/news/access" -H "authorization: Bearer $token" | json 'd["has_access"]')
[ "$access" = True ] || { echo "checkAccess answered has_access=$access" >&2; exit 1; }
me=$(curl -sf "$api/profiles/me" -H "authorization: Bearer $token")
echo "profile/me answers $(wc -c <<<"$me") bytes: $(json '"%d fields, %d sessions, %d codes" % (len(d["taxonomies"][0]["fields"]), len(d["auth_tokens"]), len(d["verification_codes"]))' <<<"$me")"
echo "wrk: $threads thread(s), $connections connections, ${seconds}s per run (after a 3 s warm-up), $rounds round(s)"
echo

# Both servers stay up; each storecrm run is paired with the baseline run it is compared with,
# in the order storecrm, baseline in odd rounds and baseline, storecrm in even ones, so that the
# machine's drift (this VM's speed moves by 10-20 % within minutes) falls on both sides of a ratio.
"$baseline" "127.0.0.1:$base_port" 2>>"$work/server.log" & baseline_pid=$!
wait_up "127.0.0.1:$base_port"
base="http://127.0.0.1:$base_port"
pair() { # round storecrm-name method url auth emails baseline-name method url
  if [ $(($1 % 2)) = 1 ]; then
    measure "$2_$1" "$3" "$4" "$5" "$6"; measure "$7_$1" "$8" "$9" ""
  else
    measure "$7_$1" "$8" "$9" ""; measure "$2_$1" "$3" "$4" "$5" "$6"
  fi
}
echo "| run | requests/s | p50 | p99 |"
echo "| --- | ---: | ---: | ---: |"
for round in $(seq 1 "$rounds"); do
  pair "$round" storecrm_me GET "$api/profiles/me" "Bearer $token" "" baseline_select GET "$base/profiles/$store/$profile"
  pair "$round" storecrm_access GET "$api/audiences/news/access" "Bearer $token" "" baseline_select2 GET "$base/profiles/$store/$profile"
  pair "$round" storecrm_initialize POST "$api/profiles/initialize" "" "" baseline_insert POST "$base/profiles/$store"
  pair "$round" storecrm_request_code POST "$api/profiles/auth/code" "" emails baseline_insert2 POST "$base/profiles/$store"
  measure "baseline_me_statement_$round" GET "$base/me-statement/$store/$session/$profile" ""
  measure "baseline_initialize_statement_$round" POST "$base/initialize-statement/$store" ""
done
rss_kib=$(awk '/VmHWM/ {print $2}' "/proc/$server/status")
kill "$server"; wait "$server" 2>/dev/null || true; server=""
kill "$baseline_pid"; wait "$baseline_pid" 2>/dev/null || true; baseline_pid=""

# Ratios of the rates summed over the rounds; each round's own ratio in brackets.
ratio() {
  python3 - "$work" "$1" "$2" "$rounds" <<'PY'
import sys
work, a, b, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
rate = lambda name, r: float(open(f"{work}/{name}_{r}.rps").read())
each = [rate(a, r) / rate(b, r) for r in range(1, rounds + 1)]
total = sum(rate(a, r) for r in range(1, rounds + 1)) / sum(rate(b, r) for r in range(1, rounds + 1))
print(f"{total:.2f}" + (" (" + " · ".join(f"{x:.2f}" for x in each) + ")" if rounds > 1 else ""))
PY
}
echo
echo "getMe / point select:          $(ratio storecrm_me baseline_select)  (target >= 0.7)"
echo "checkAccess / point select:     $(ratio storecrm_access baseline_select2)  (target >= 0.6)"
echo "initialize / single insert:     $(ratio storecrm_initialize baseline_insert)  (target >= 0.6)"
echo "requestCode / single insert:    $(ratio storecrm_request_code baseline_insert2)  (target >= 0.3)"
echo "getMe's statement alone, bare server / point select: $(ratio baseline_me_statement baseline_select)"
echo "initialize's statement alone, bare server / single insert: $(ratio baseline_initialize_statement baseline_insert)"
echo "storecrm peak RSS over the runs: $((rss_kib / 1024)) MiB"
