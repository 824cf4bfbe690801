#!/usr/bin/env bash
# Fault 1: kill -9 of the server under a mixed write load (initialize + order link, connect +
# double opt-in subscribe, code requests, confirms, merges, admin creates + updates), KILLS times,
# each followed by a restart on the same database; then every acknowledged write is read back,
# every queued mail must have reached the counting sink exactly once (matched by Message-ID),
# subscriber_count must equal the counted active subscriptions, no merge is half-done and the
# migration lock is free.
#
#   scripts/faults/kill9.sh postgres|sqlite
#   KILLS=3 LOAD_SECS=40 CONCURRENCY=8 scripts/faults/kill9.sh sqlite
# A mail in flight at a kill stays leased for the outbox lease (120 s) before it is sent again,
# so the check waits up to MAIL_WAIT (default 180 s) for the outbox to drain.
backend="${1:-postgres}"
source "$(dirname "$0")/lib.sh"
kills="${KILLS:-3}"
load_secs="${LOAD_SECS:-40}"
concurrency="${CONCURRENCY:-8}"
# A mail the SMTP server accepted in the instant before a kill, not yet marked sent, is sent
# again when its lease ends, with the same Message-ID: at most one claimed batch (10) per kill.
# ALLOW_RESENDS=0 makes any such copy a failure.
allow_resends="${ALLOW_RESENDS:-$((kills * 10))}"

case "$backend" in
  postgres) new_pg_db ;;
  sqlite) new_sqlite_db ;;
  *) echo "usage: $0 postgres|sqlite" >&2; exit 2 ;;
esac
say "fault 1 (kill -9 under mixed write load) on $backend: $kills kills in ${load_secs}s, $concurrency clients"
start_sink
start_server 1
init_store

"$LOAD" mixed --base "$(url_of 1)" --store "$STORE" --key "$KEY" --acks "$WORK/acks.jsonl" --sink "$SINK_LOG" \
  --secs "$load_secs" --concurrency "$concurrency" --tag "k$$" --max-latency "$REQUEST_TIMEOUT_SECS" \
  >"$WORK/load.json" &
load=$!
PIDS+=("$load")

down_total=0
for i in $(seq 1 "$kills"); do
  sleep "$(python3 -c "import random; print(round(random.uniform(3, max(3.5, $load_secs / ($kills + 1) - 2)), 2))")"
  acked=$(wc -l <"$WORK/acks.jsonl")
  kill9_server 1
  t0=$(date +%s.%N)
  say "kill -9 #$i (after $acked acknowledged writes)"
  sleep 1
  start_server 1
  down=$(python3 -c "print(round($(date +%s.%N) - $t0, 2))")
  down_total=$(python3 -c "print(round($down_total + $down, 2))")
  say "restarted and ready after ${down}s"
done

load_rc=0
wait "$load" || load_rc=$?
load_json=$(cat "$WORK/load.json")
say "load: $load_json"

rc=0
"$LOAD" check --base "$(url_of 1)" --store "$STORE" --key "$KEY" --acks "$WORK/acks.jsonl" --sink "$SINK_LOG" \
  --db "$DATABASE_URL" --mail-wait "${MAIL_WAIT:-180}" --allow-resends "$allow_resends" >"$WORK/check.txt" || rc=$?
cat "$WORK/check.txt"
internal=$(count_internal_errors "$WORK"/server1.log)

echo
echo "fault 1 on $backend: $kills x kill -9 + restart (down ${down_total}s in all) during ${load_secs}s of mixed load"
python3 - "$WORK/load.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
print(f"  load: {d['operations']} operations, {d['requests']} requests, {d['answered']} answered "
      f"({d['answered_per_sec']:.0f}/s), {d['unanswered']} unanswered (connection refused or cut by a kill), "
      f"status {d['by_status']}, max latency {d['max_latency_ms']} ms")
EOF
echo "  $(grep '^mail:' "$WORK/check.txt")"
echo "  $(grep '^writes:' "$WORK/check.txt")"
echo "  internal errors logged by the server: $internal"
if [ "$load_rc" -ne 0 ] || [ "$rc" -ne 0 ] || [ "$internal" -ne 0 ]; then
  echo "FAIL (load exit $load_rc, check exit $rc)"
  exit 1
fi
echo "OK: every acknowledged write found, every queued mail delivered (copies re-sent after a kill carry the same Message-ID), counters exact, no half merge"
