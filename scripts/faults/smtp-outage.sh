#!/usr/bin/env bash
# Fault 2: the SMTP server is down for OUTAGE_SECS while CODES sign-in code requests (each to a
# new address) arrive; after it returns every one of them must be delivered, none twice (the
# counting sink matches the outbox by Message-ID).
#
#   scripts/faults/smtp-outage.sh [postgres|sqlite]
#   OUTAGE_SECS=60 CODES=1000 scripts/faults/smtp-outage.sh      # the issue's figures (default)
#   OUTAGE_SECS=15 CODES=1000 scripts/faults/smtp-outage.sh      # the quick (CI) variant
# The outbox retries from MAIL_RETRY_BASE_SECS=1 doubling up to MAIL_RETRY_MAX_SECS=4 here, so
# delivery resumes within seconds of the sink's return (production defaults: 30 s up to 1 h).
backend="${1:-postgres}"
source "$(dirname "$0")/lib.sh"
outage="${OUTAGE_SECS:-60}"
codes="${CODES:-1000}"
concurrency="${CONCURRENCY:-8}"

case "$backend" in
  postgres) new_pg_db ;;
  sqlite) new_sqlite_db ;;
  *) echo "usage: $0 postgres|sqlite" >&2; exit 2 ;;
esac
say "fault 2 (SMTP down ${outage}s during $codes code requests) on $backend"
start_sink
start_server 1
init_store

stop_sink
say "SMTP sink stopped"
t0=$(date +%s.%N)
"$LOAD" mixed --base "$(url_of 1)" --store "$STORE" --key "$KEY" --acks "$WORK/acks.jsonl" --ops code \
  --max "$codes" --secs "$outage" --concurrency "$concurrency" --tag "o$$" >"$WORK/load.json" || { cat "$WORK/load.json"; exit 1; }
acked=$(wc -l <"$WORK/acks.jsonl")
sent_during=$(wc -l <"$SINK_LOG" 2>/dev/null || echo 0)
remaining=$(python3 -c "print(round(max(0.0, $outage - ($(date +%s.%N) - $t0)), 1))")
say "$acked code requests acknowledged while the sink is down; $sent_during mails reached it; down for ${remaining}s more"
sleep "$remaining"
start_sink
say "SMTP sink back"
t1=$(date +%s.%N)

rc=0
"$LOAD" check --base "$(url_of 1)" --store "$STORE" --key "$KEY" --acks "$WORK/acks.jsonl" --sink "$SINK_LOG" \
  --db "$DATABASE_URL" --mail-wait "${MAIL_WAIT:-120}" >"$WORK/check.txt" || rc=$?
drained=$(python3 -c "print(round($(date +%s.%N) - $t1, 1))")
cat "$WORK/check.txt"
internal=$(count_internal_errors "$WORK"/server1.log)

echo
echo "fault 2 on $backend: SMTP sink down ${outage}s during $codes code requests"
python3 - "$WORK/load.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
print(f"  load: {d['requests']} code requests in {d['seconds']}s ({d['answered_per_sec']:.0f}/s), status {d['by_status']}, "
      f"max latency {d['max_latency_ms']} ms")
EOF
echo "  all mail delivered and checked ${drained}s after the sink returned; internal errors logged: $internal"
if [ "$rc" -ne 0 ] || [ "$internal" -ne 0 ] || [ "$acked" -ne "$codes" ]; then
  echo "FAIL (check exit $rc, $acked of $codes acknowledged)"
  exit 1
fi
echo "OK: $codes queued, $codes delivered after the outage, none twice"
