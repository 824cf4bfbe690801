#!/usr/bin/env bash
# Fault 3: the database goes away under a mixed write load, without restarting the server.
#   a. TERMINATES times, every ~2 s, every connection of the server is killed with
#      pg_terminate_backend;
#   b. then the database is unreachable for UNREACHABLE_SECS (ALTER DATABASE ... ALLOW_CONNECTIONS
#      false, and its connections killed: new connections are refused, as when Postgres is down;
#      the shared Postgres of the machine itself is not restarted).
# Meanwhile every answer must be a 2xx/4xx or a 503 with the error shape (never a 500, never
# slower than REQUEST_TIMEOUT_SECS + 2 s), /readyz must answer 503 while the database is away,
# and afterwards the same server process must serve again without a restart: readyz 200, a
# clean load, every acknowledged write present, every mail delivered once.
#
#   scripts/faults/pg-terminate.sh
#   TERMINATES=5 UNREACHABLE_SECS=8 LOAD_SECS=40 scripts/faults/pg-terminate.sh
source "$(dirname "$0")/lib.sh"
terminates="${TERMINATES:-5}"
unreachable="${UNREACHABLE_SECS:-8}"
load_secs="${LOAD_SECS:-40}"
concurrency="${CONCURRENCY:-8}"
port=$((BASE_PORT + 1))

new_pg_db
say "fault 3 (Postgres connections killed x$terminates, database unreachable ${unreachable}s) under ${load_secs}s of mixed load"
start_sink
start_server 1
pid_before="${SERVER_PID[1]}"
init_store
psql_q() { psql "$PG/postgres" -Atqc "$1"; }
kill_backends() {
  psql_q "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '$DB_NAME' AND pid <> pg_backend_pid()"
}
readyz() { curl -s -o /dev/null -m "$((REQUEST_TIMEOUT_SECS + 2))" -w '%{http_code}' "http://127.0.0.1:$port/readyz" || echo 000; }

"$LOAD" mixed --base "$(url_of 1)" --store "$STORE" --key "$KEY" --acks "$WORK/acks.jsonl" --sink "$SINK_LOG" \
  --secs "$load_secs" --concurrency "$concurrency" --tag "p$$" --max-latency "$((REQUEST_TIMEOUT_SECS + 2))" \
  >"$WORK/load.json" &
load=$!
PIDS+=("$load")

sleep 3
killed=0
for i in $(seq 1 "$terminates"); do
  n=$(kill_backends)
  killed=$((killed + n))
  say "pg_terminate_backend #$i: $n connections killed"
  sleep 2
done

psql_q "ALTER DATABASE $DB_NAME ALLOW_CONNECTIONS false" >/dev/null
n=$(kill_backends)
killed=$((killed + n))
say "database unreachable ($n connections killed, new ones refused) for ${unreachable}s"
readyz_while_down=()
end=$(($(date +%s) + unreachable))
while [ "$(date +%s)" -lt "$end" ]; do
  readyz_while_down+=("$(readyz)")
  sleep 0.5
done
psql_q "ALTER DATABASE $DB_NAME ALLOW_CONNECTIONS true" >/dev/null
t_back=$(date +%s.%N)
say "database reachable again; /readyz while it was away: $(printf '%s\n' "${readyz_while_down[@]}" | sort | uniq -c | tr '\n' ' ')"
for _ in $(seq 1 200); do [ "$(readyz)" = 200 ] && break; sleep 0.1; done
recovered=$(python3 -c "print(round($(date +%s.%N) - $t_back, 2))")
say "/readyz 200 again ${recovered}s later"

load_rc=0
wait "$load" || load_rc=$?
say "load: $(cat "$WORK/load.json")"

# Afterwards: the same process serves a clean load.
after_rc=0
"$LOAD" mixed --base "$(url_of 1)" --store "$STORE" --key "$KEY" --acks "$WORK/acks.jsonl" --sink "$SINK_LOG" \
  --secs 5 --concurrency "$concurrency" --tag "q$$" >"$WORK/after.json" || after_rc=$?
after_bad=$(python3 -c "import json; d=json.load(open('$WORK/after.json')); print(sum(v for k, v in d['by_status'].items() if not k.startswith('2')) + d['unanswered'])")

rc=0
"$LOAD" check --base "$(url_of 1)" --store "$STORE" --key "$KEY" --acks "$WORK/acks.jsonl" --sink "$SINK_LOG" \
  --db "$DATABASE_URL" --mail-wait "${MAIL_WAIT:-60}" || rc=$?
internal=$(count_internal_errors "$WORK"/server1.log)
same_process=no
kill -0 "$pid_before" 2>/dev/null && [ "${SERVER_PID[1]}" = "$pid_before" ] && same_process=yes
down_non503=$(printf '%s\n' "${readyz_while_down[@]}" | grep -vc '^503$' || true)

echo
echo "fault 3 (Postgres): $terminates x pg_terminate_backend + ${unreachable}s unreachable, $killed connections killed, during ${load_secs}s of mixed load"
python3 - "$WORK/load.json" "$WORK/after.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1])); a = json.load(open(sys.argv[2]))
print(f"  load: {d['operations']} operations, {d['requests']} requests ({d['answered_per_sec']:.0f}/s answered), "
      f"status {d['by_status']}, {d['unanswered']} unanswered, max latency {d['max_latency_ms']} ms, "
      f"5xx other than 503: {d['server_errors_not_503']}, error bodies without the shape: {d['error_bodies_without_shape']}")
print(f"  after: {a['requests']} requests in {a['seconds']}s ({a['answered_per_sec']:.0f}/s), status {a['by_status']}")
EOF
echo "  /readyz while unreachable: ${#readyz_while_down[@]} polls, $down_non503 not 503; ready again ${recovered}s after the database returned"
echo "  same server process throughout: $same_process; internal errors logged: $internal"
if [ "$load_rc" -ne 0 ] || [ "$after_rc" -ne 0 ] || [ "$after_bad" -ne 0 ] || [ "$rc" -ne 0 ] || [ "$internal" -ne 0 ] \
  || [ "$same_process" != yes ] || [ "$down_non503" -ne 0 ]; then
  echo "FAIL (load exit $load_rc, after-load exit $after_rc with $after_bad non-2xx, check exit $rc)"
  exit 1
fi
echo "OK: 503s with the error shape while the database was away, no 500, no hang, recovered without a restart"
