#!/usr/bin/env bash
# Fault 4: two instances on one Postgres behind a round-robin client (the load program plays the
# load balancer, appending X-Forwarded-For; the servers run with TRUSTED_PROXY_HOPS=1).
#   - the per-email code limit (CODE_LIMIT_PER_EMAIL=5), the per-address code limit
#     (CODE_LIMIT_PER_IP=30) and the per-address session limit (SESSION_LIMIT_PER_ADDRESS=60)
#     hold across both: bursts sent at once, alternating instances, accept exactly the limit;
#   - two merges of one pair sent at once, one to each instance: one 200, the other 404/409,
#     nothing half-done (MERGES races);
#   - a mixed admin load round-robin over both for MIXED_SECS;
#   - every mail (both instances run an outbox worker) reaches the sink once.
#
#   scripts/faults/two-instances.sh
#   ROUNDS=10 MERGES=20 MIXED_SECS=10 scripts/faults/two-instances.sh
source "$(dirname "$0")/lib.sh"
rounds="${ROUNDS:-10}"
merges="${MERGES:-20}"
mixed_secs="${MIXED_SECS:-10}"

new_pg_db
export TRUSTED_PROXY_HOPS=1 CODE_LIMIT_PER_EMAIL=5 CODE_LIMIT_PER_IP=30 SESSION_LIMIT_PER_ADDRESS=60
say "fault 4 (two instances on one Postgres, round-robin): $rounds per-email bursts, $merges merge races, ${mixed_secs}s mixed"
start_sink
start_server 1
start_server 2
init_store
bases="$(url_of 1),$(url_of 2)"

rc=0
"$LOAD" limits --base "$bases" --store "$STORE" --key "$KEY" --acks "$WORK/acks.jsonl" --rounds "$rounds" \
  --merges "$merges" --code-per-email 5 --code-per-ip 30 --session-per-address 60 --tag "l$$" >"$WORK/limits.txt" || rc=$?
sed '$d' "$WORK/limits.txt"
limits_json=$(tail -n 1 "$WORK/limits.txt")

mixed_rc=0
"$LOAD" mixed --base "$bases" --store "$STORE" --key "$KEY" --acks "$WORK/acks.jsonl" --ops merge,update \
  --secs "$mixed_secs" --concurrency 8 --tag "m$$" >"$WORK/mixed.json" || mixed_rc=$?

check_rc=0
"$LOAD" check --base "$bases" --store "$STORE" --key "$KEY" --acks "$WORK/acks.jsonl" --sink "$SINK_LOG" \
  --db "$DATABASE_URL" --mail-wait "${MAIL_WAIT:-60}" || check_rc=$?
internal=$(count_internal_errors "$WORK"/server1.log "$WORK"/server2.log)
served=$(for n in 1 2; do curl -s "$(url_of $n)/metrics" | awk '/^storecrm_http_requests_total/ {s += $NF} END {printf "%d ", s}'; done)

echo
echo "fault 4 (two instances, one Postgres)"
python3 - "$WORK/mixed.json" <<EOF
import json, sys
d = json.load(open(sys.argv[1])); l = json.loads('''$limits_json''')
print(f"  limits and races: {l['requests']} requests in {l['seconds']}s, status {l['by_status']}")
print(f"  mixed admin load round-robin: {d['operations']} operations, {d['requests']} requests in {d['seconds']}s "
      f"({d['answered_per_sec']:.0f}/s), status {d['by_status']}")
EOF
echo "  requests served per instance (storecrm_http_requests_total): $served; internal errors logged: $internal"
if [ "$rc" -ne 0 ] || [ "$mixed_rc" -ne 0 ] || [ "$check_rc" -ne 0 ] || [ "$internal" -ne 0 ]; then
  echo "FAIL (limits exit $rc, mixed exit $mixed_rc, check exit $check_rc)"
  exit 1
fi
echo "OK: limits held across instances, each merge race had one winner, each mail sent once"
