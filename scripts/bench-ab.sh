#!/usr/bin/env bash
# A/B of one storecrm call between two builds: each build serves its own fresh database (migrated,
# one store, AB_PROFILES seeded profiles), and scripts/cpu-split.sh measures them in turn, ROUNDS
# rounds with the order alternating, so that the machine's drift falls on both. Prints requests/s
# and the CPU per request of the server and of Postgres. Load goes to 127.0.0.1 only, bounded by
# time (cpu-split runs wrk under timeout).
#   scripts/bench-ab.sh BIN_A BIN_B PATH [ROUNDS] [SECONDS]   # PATH under /v1/stores/{id}, POSTed
#   e.g. scripts/bench-ab.sh /tmp/storecrm-before target/release/storecrm /profiles/initialize 3 10
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
A="$(realpath "$1")" B="$(realpath "$2")" suffix="$3" rounds="${4:-3}" secs="${5:-10}"
pg="${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432}"
export SECRET_KEY="bench-secret-key-0123456789abcdef0123456789abcdef" RUST_LOG=warn ACCESS_TOKEN_TTL_SECS=3600
export SESSION_LIMIT_PER_ADDRESS=100000000 CODE_LIMIT_PER_IP=100000000 CODE_LIMIT_PER_EMAIL=100000000 TRUSTED_PROXY_HOPS=1
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; sleep 1; rm -rf "$work"; for n in a b; do psql $pg/postgres -qc "DROP DATABASE IF EXISTS sc_ab_$n WITH (FORCE)"; done; }
trap cleanup EXIT
declare -A url pid
for n in a b; do
  bin=$A; port=18101; [ $n = b ] && bin=$B && port=18102
  psql $pg/postgres -qc "DROP DATABASE IF EXISTS sc_ab_$n WITH (FORCE)" -c "CREATE DATABASE sc_ab_$n"
  export DATABASE_URL=$pg/sc_ab_$n MAIL_DIR="$work/mail_$n" LISTEN_ADDR=127.0.0.1:$port
  $bin migrate >/dev/null
  $bin accounts create --email ab@example.com --password ab-password-123 >/dev/null
  store=$($bin stores create --name ab --owner ab@example.com | python3 -c 'import json,sys; print(json.load(sys.stdin)["store"]["id"])')
  $bin seed --store "$store" --profiles "${AB_PROFILES:-10000}" >/dev/null
  $bin serve 2>>"$work/server_$n.log" & pid[$n]=$!; pids+=($!)
  url[$n]="http://127.0.0.1:$port/v1/stores/$store$suffix"
done
sleep 2
for r in $(seq 1 "$rounds"); do
  order="a b"; [ $((r % 2)) = 0 ] && order="b a"
  for n in $order; do
    psql $pg/sc_ab_$n -qc "VACUUM ANALYZE" -c CHECKPOINT
    echo "$n round $r: $("$here/cpu-split.sh" ${pid[$n]} ${url[$n]} $secs POST)"
  done
done
