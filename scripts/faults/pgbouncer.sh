#!/usr/bin/env bash
# Fault 5: PgBouncer (Debian's package; 1.18 on bookworm, which keeps no prepared statements in
# transaction mode) in transaction-pooling mode between two server instances and Postgres, with
# fewer server connections than the instances' pools hold (POOL_SIZE, default 4, against 2 x 10),
# handed out round-robin, so consecutive transactions of one client connection land on different
# Postgres sessions. DATABASE_URL ends in `?pgbouncer=true` (docs/scaling.md).
#   - two `storecrm migrate` at once through PgBouncer on a fresh database (transaction-level
#     advisory lock), then the servers start through it;
#   - the mixed write load of fault 1 round-robin over both for LOAD_SECS;
#   - an export (a REPEATABLE READ snapshot) lists every profile;
#   - both instances restarted with fault 4's limits: the limits and merge races across both;
#   - the check (through the API, and directly against Postgres for the outbox and the counters):
#     every acknowledged write found, every mail delivered once, no 500.
# Without PgBouncer (not installed and not installable with apt-get) it says so and exits 0.
#
# API_TESTS=1 then also runs the Postgres half of the API suite (debug build) through the same
# PgBouncer, with TEST_DATABASE_URL=...?pgbouncer=true and 20 server connections per database.
#
#   scripts/faults/pgbouncer.sh
#   LOAD_SECS=30 POOL_SIZE=2 scripts/faults/pgbouncer.sh
#   FAULT_PROFILE=debug API_TESTS=1 scripts/faults/pgbouncer.sh
#   URL_PARAM= scripts/faults/pgbouncer.sh     # the control, without ?pgbouncer=true: it fails
#   DIRECT=1 [URL_PARAM=] scripts/faults/pgbouncer.sh   # baselines: the same, straight to Postgres
set -euo pipefail
PGBOUNCER="${PGBOUNCER_BIN:-$(command -v pgbouncer || echo /usr/sbin/pgbouncer)}"
if [ ! -x "$PGBOUNCER" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing pgbouncer (Debian package)"
  export DEBIAN_FRONTEND=noninteractive
  timeout 300 apt-get install -y -qq pgbouncer >/dev/null 2>&1 \
    || { timeout 300 apt-get update -qq >/dev/null 2>&1 && timeout 300 apt-get install -y -qq pgbouncer >/dev/null 2>&1; } \
    || true
fi
if [ ! -x "$PGBOUNCER" ]; then
  echo "SKIP fault 5: pgbouncer is not installed and could not be installed (apt-get install pgbouncer)"
  exit 0
fi

source "$(dirname "$0")/lib.sh"
set -E
trap 'echo "pgbouncer.sh: line $LINENO failed: $BASH_COMMAND" >&2' ERR
load_secs="${LOAD_SECS:-15}"
pool_size="${POOL_SIZE:-4}"
concurrency="${CONCURRENCY:-8}"

# PgBouncer will not run as root: as root, it switches to `postgres` (or nobody) itself (-u, so
# that the process started here is PgBouncer and the exit trap ends it), in a directory of its
# own, on the first free port from BASE_PORT+32.
BOUNCER_DIR="$WORK/pgbouncer"
mkdir -p "$BOUNCER_DIR"
run_as=()
if [ "$(id -u)" = 0 ]; then
  user=$(id -u postgres >/dev/null 2>&1 && echo postgres || echo nobody)
  chmod 711 "$WORK"
  chown "$user" "$BOUNCER_DIR"
  run_as=(-u "$user")
fi
BOUNCER_PORT=""
for port in $(seq $((BASE_PORT + 32)) $((BASE_PORT + 60))); do
  if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then BOUNCER_PORT=$port; break; fi
done
[ -n "$BOUNCER_PORT" ] || { echo "no free port for PgBouncer" >&2; exit 1; }
pg_host_port="${PG#*://}"; pg_host_port="${pg_host_port#*@}"
pg_user="${PG#*://}"; pg_user="${pg_user%@*}"; pg_user="${pg_user%%:*}"
cat >"$BOUNCER_DIR/pgbouncer.ini" <<EOF
[databases]
* = host=${pg_host_port%:*} port=${pg_host_port##*:}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BOUNCER_PORT
unix_socket_dir =
auth_type = trust
auth_file = $BOUNCER_DIR/userlist.txt
admin_users = $pg_user
pool_mode = transaction
default_pool_size = $pool_size
max_client_conn = 200
server_round_robin = 1
; Postgres may be shared: at most this many sessions in all, closed 10 s after their last use.
max_user_connections = ${MAX_SERVER_CONNECTIONS:-40}
server_idle_timeout = 10
ignore_startup_parameters = extra_float_digits
logfile = $BOUNCER_DIR/pgbouncer.log
EOF
echo "\"$pg_user\" \"\"" >"$BOUNCER_DIR/userlist.txt"
"$PGBOUNCER" "${run_as[@]}" "$BOUNCER_DIR/pgbouncer.ini" >>"$BOUNCER_DIR/stdout.log" 2>&1 &
BOUNCER_PID=$!
PIDS+=("$BOUNCER_PID")
for _ in $(seq 1 50); do
  psql "postgres://$pg_user@127.0.0.1:$BOUNCER_PORT/postgres" -Atqc 'SELECT 1' >/dev/null 2>&1 && break
  kill -0 "$BOUNCER_PID" 2>/dev/null || { cat "$BOUNCER_DIR"/*.log >&2; exit 1; }
  sleep 0.1
done
bouncer_admin() { psql "postgres://$pg_user@127.0.0.1:$BOUNCER_PORT/pgbouncer" -Atqc "$1"; }
version=$(bouncer_admin 'SHOW VERSION')

new_pg_db
DIRECT_URL="$DATABASE_URL"
url_param="${URL_PARAM-pgbouncer=true}"
export DATABASE_URL="postgres://$pg_user@127.0.0.1:$BOUNCER_PORT/$DB_NAME${url_param:+?$url_param}"
via="through PgBouncer"
if [ -n "${DIRECT:-}" ]; then
  export DATABASE_URL="$DIRECT_URL${url_param:+?$url_param}"
  via="directly (DIRECT=1: a baseline, PgBouncer unused)"
fi
say "fault 5 ($version, pool_mode=transaction, $pool_size server connections, round-robin): 2 instances x DB_MAX_CONNECTIONS=$DB_MAX_CONNECTIONS, ${load_secs}s of mixed load"
say "the servers connect $via with ${url_param:-no parameter}"

# Two migrations at once, through PgBouncer.
"$BIN" migrate >"$WORK/migrate1.json" 2>"$WORK/migrate1.log" &
m1=$!
"$BIN" migrate >"$WORK/migrate2.json" 2>"$WORK/migrate2.log" &
m2=$!
migrate_rc=0
wait "$m1" || migrate_rc=$?
wait "$m2" || migrate_rc=$?
if [ "$migrate_rc" -ne 0 ]; then cat "$WORK"/migrate*.log >&2; echo "FAIL: migrate" >&2; exit 1; fi
applied=$(cat "$WORK"/migrate1.json "$WORK"/migrate2.json | python3 -c "
import json, sys
print(' + '.join(str(len(json.loads(l)['migrated']['applied'])) for l in sys.stdin if l.strip()))")
say "two migrations at once: applied $applied"

# 1. The mixed load, with the lib's per-address limits out of its way (it comes from one address).
start_sink
start_server 1
start_server 2
init_store
bases="$(url_of 1),$(url_of 2)"
mixed_rc=0
"$LOAD" mixed --base "$bases" --store "$STORE" --key "$KEY" --acks "$WORK/acks.jsonl" --sink "$SINK_LOG" \
  --secs "$load_secs" --concurrency "$concurrency" --tag "b$$" --max-latency "$((REQUEST_TIMEOUT_SECS + 2))" \
  >"$WORK/mixed.json" || mixed_rc=$?

# The export streams from one REPEATABLE READ snapshot (through PgBouncer): every profile is in it.
exported=$(curl -sf -m 60 "$(url_of 2)/v1/stores/$STORE/profiles/export?format=ndjson" -H "authorization: Bearer $KEY" \
  | wc -l || echo -1)
profiles=$(psql "$DIRECT_URL" -Atqc "SELECT COUNT(*) FROM profiles WHERE store_id = '$STORE'")
served=$(for n in 1 2; do curl -s "$(url_of $n)/metrics" | awk '/^storecrm_http_requests_total/ {s += $NF} END {printf "%d ", s}'; done)

# 2. Both instances restarted with fault 4's limits (each burst from its own X-Forwarded-For
# address): the limits hold and each merge race has one winner.
for n in 1 2; do kill "${SERVER_PID[$n]}"; wait "${SERVER_PID[$n]}" 2>/dev/null || true; done
export TRUSTED_PROXY_HOPS=1 CODE_LIMIT_PER_EMAIL=5 CODE_LIMIT_PER_IP=30 SESSION_LIMIT_PER_ADDRESS=60
start_server 1
start_server 2
limits_rc=0
"$LOAD" limits --base "$bases" --store "$STORE" --key "$KEY" --acks "$WORK/acks-limits.jsonl" --rounds "${ROUNDS:-5}" \
  --merges "${MERGES:-10}" --code-per-email 5 --code-per-ip 30 --session-per-address 60 --tag "l$$" \
  >"$WORK/limits.txt" || limits_rc=$?
sed '$d' "$WORK/limits.txt"
limits_json=$(tail -n 1 "$WORK/limits.txt")
cat "$WORK/acks-limits.jsonl" >>"$WORK/acks.jsonl" # `limits` starts its acks file anew

check_rc=0
"$LOAD" check --base "$bases" --store "$STORE" --key "$KEY" --acks "$WORK/acks.jsonl" --sink "$SINK_LOG" \
  --db "$DIRECT_URL" --mail-wait "${MAIL_WAIT:-60}" >"$WORK/check.txt" || check_rc=$?
cat "$WORK/check.txt"
internal=$(count_internal_errors "$WORK"/server1.log "$WORK"/server2.log)
prepared_errors=$(cat "$WORK"/server*.log | { grep -ci "prepared statement" || true; })
# SHOW STATS: database, total_xact_count, total_query_count, ...
stats=$(bouncer_admin 'SHOW STATS' | awk -F'|' -v db="$DB_NAME" '$1 == db {print $2 " transactions, " $3 " queries (its counts)"}')
backends=$(psql "$DIRECT_URL" -Atqc "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = '$DB_NAME' AND pid <> pg_backend_pid()")

echo
echo "fault 5 ($version, transaction pooling, $pool_size server connections for 2 x $DB_MAX_CONNECTIONS client connections)"
python3 - "$WORK/mixed.json" <<EOF
import json, sys
d = json.load(open(sys.argv[1])); l = json.loads('''$limits_json''')
print(f"  limits and merge races: {l['requests']} requests in {l['seconds']}s, status {l['by_status']}")
print(f"  mixed load round-robin: {d['operations']} operations, {d['requests']} requests in {d['seconds']}s "
      f"({d['answered_per_sec']:.0f}/s), status {d['by_status']}, {d['unanswered']} unanswered, "
      f"max latency {d['max_latency_ms']} ms")
EOF
echo "  export (one snapshot): $exported profiles of $profiles"
echo "  PgBouncer: $stats; Postgres sessions of the database at the end: $backends"
echo "  requests served per instance during the mixed load: $served; internal errors logged: $internal; 'prepared statement' in the logs: $prepared_errors"
if [ "$limits_rc" -ne 0 ] || [ "$mixed_rc" -ne 0 ] || [ "$check_rc" -ne 0 ] || [ "$internal" -ne 0 ] \
  || [ "$prepared_errors" -ne 0 ] || [ "$exported" != "$profiles" ]; then
  echo "FAIL (limits exit $limits_rc, mixed exit $mixed_rc, check exit $check_rc)"
  exit 1
fi
echo "OK: migrations, limits, merge races, mixed load, export and mail all work $via"

if [ -n "${API_TESTS:-}" ]; then
  # A test holds a row lock on a connection of its own while two requests wait on it and a third
  # connection watches: fewer than ~8 server connections per database would queue the watcher
  # behind the waiters (PgBouncer's query_wait_timeout, 120 s).
  bouncer_admin "SET default_pool_size = 20" >/dev/null
  say "API suite, Postgres half, through PgBouncer (debug build)"
  TEST_DATABASE_URL="postgres://$pg_user@127.0.0.1:$BOUNCER_PORT/postgres?sslmode=disable&pgbouncer=true" \
    timeout 1800 cargo test --quiet --test api -- --include-ignored postgres:: 2>&1 | tee "$WORK/api.txt" | grep -E "^test result|FAILED|panicked" || true
  grep -q "^test result: ok" "$WORK/api.txt" || { echo "FAIL: the API suite through PgBouncer"; exit 1; }
fi
