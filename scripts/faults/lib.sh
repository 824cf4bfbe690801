# Shared by the fault scripts (sourced, not run): builds the release binary and the load program,
# makes a work directory and a fresh database, starts the counting SMTP sink and servers on
# loopback, and removes all of it on exit (trap). Every wait is bounded.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT="$PWD"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
PG="${FAULT_PG_URL:-postgres://postgres@127.0.0.1:5432}"
# FAULT_PROFILE=debug uses the debug build (CI: no release build of every crate just for this;
# the checks are the same, the load figures lower).
PROFILE="${FAULT_PROFILE:-release}"
PROFILE_FLAG=$([ "$PROFILE" = release ] && echo --release || true)
BIN="${FAULT_BIN:-$CARGO_TARGET_DIR/$PROFILE/storecrm}"
LOAD="$CARGO_TARGET_DIR/$PROFILE/examples/fault_load"
SINK="$ROOT/scripts/faults/smtp_sink.py"
BASE_PORT="${FAULT_PORT:-18300}"

if [ -z "${FAULT_NO_BUILD:-}" ]; then
  cargo build $PROFILE_FLAG --quiet --bin storecrm --example fault_load
fi

WORK="$(mktemp -d -t storecrm-fault.XXXXXX)"
PIDS=()
DBS=()
started_at=$(date +%s)
fault_cleanup() {
  local rc=$?
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  for db in "${DBS[@]}"; do psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true; done
  if [ "$rc" -ne 0 ] && [ -d "$WORK" ]; then
    echo "--- last server log lines ---" >&2
    tail -n 20 "$WORK"/server*.log 2>/dev/null >&2 || true
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap fault_cleanup EXIT
trap 'exit 130' INT TERM

say() { echo "[$(($(date +%s) - started_at))s] $*"; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

# A fresh Postgres database; sets DATABASE_URL.
new_pg_db() {
  local db="sc_fault_$(date +%s)_$RANDOM"
  psql "$PG/postgres" -qc "CREATE DATABASE $db" >/dev/null
  DBS+=("$db")
  DB_NAME="$db"
  export DATABASE_URL="$PG/$db"
}

new_sqlite_db() {
  export DATABASE_URL="sqlite://$WORK/crm.db"
}

# The counting SMTP sink on SINK_PORT, logging to $WORK/sink.jsonl; SINK_PID.
SINK_PORT=$((BASE_PORT + 25))
SINK_LOG="$WORK/sink.jsonl"
start_sink() {
  python3 "$SINK" "$SINK_PORT" "$SINK_LOG" >>"$WORK/sink.out" 2>&1 &
  SINK_PID=$!
  PIDS+=("$SINK_PID")
  for _ in $(seq 1 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$SINK_PORT") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "the SMTP sink did not start" >&2; exit 1
}
stop_sink() { kill "$SINK_PID" 2>/dev/null || true; wait "$SINK_PID" 2>/dev/null || true; }

# Server settings shared by every script; a script may override any before starting servers.
export SECRET_KEY="fault-secret-key-0123456789abcdef0123456789abcdef"
export RUST_LOG="${RUST_LOG:-warn}"
export SMTP_URL="smtp://127.0.0.1:$SINK_PORT?tls=none"
export MAIL_DIR="$WORK/mail"
export MAIL_POLL_INTERVAL_MS=100
export MAIL_RETRY_BASE_SECS=1
export MAIL_RETRY_MAX_SECS=4
export MAIL_MAX_ATTEMPTS=100
export SESSION_LIMIT_PER_ADDRESS=1000000000
export CODE_LIMIT_PER_IP=1000000000
export CONFIRM_MAIL_LIMIT_PER_RECIPIENT=1000
export DB_MAX_CONNECTIONS="${DB_MAX_CONNECTIONS:-10}"
export REQUEST_TIMEOUT_SECS="${REQUEST_TIMEOUT_SECS:-10}"
export EVENT_FEED_DELAY_SECS=0

# start_server N: instance N on BASE_PORT+N, log $WORK/serverN.log; SERVER_PID[N].
declare -A SERVER_PID
start_server() {
  local n="$1" port=$((BASE_PORT + $1))
  LISTEN_ADDR="127.0.0.1:$port" PUBLIC_BASE_URL="http://127.0.0.1:$port" "$BIN" serve >>"$WORK/server$n.log" 2>&1 &
  SERVER_PID[$n]=$!
  PIDS+=("${SERVER_PID[$n]}")
  wait_ready "$port" 200 "${SERVER_PID[$n]}" "$WORK/server$n.log"
}
url_of() { echo "http://127.0.0.1:$((BASE_PORT + $1))"; }
kill9_server() { kill -9 "${SERVER_PID[$1]}" 2>/dev/null || true; wait "${SERVER_PID[$1]}" 2>/dev/null || true; }

# wait_ready PORT TRIES(x0.1s) PID LOG
wait_ready() {
  for _ in $(seq 1 "$2"); do
    [ "$(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$1/readyz" || true)" = 200 ] && return 0
    if ! kill -0 "$3" 2>/dev/null; then echo "the server on port $1 exited:" >&2; tail -n 5 "$4" >&2; exit 1; fi
    sleep 0.1
  done
  echo "no ready server on port $1" >&2; exit 1
}

# An account, a store, an API key and the double opt-in audience `news`: STORE, KEY.
init_store() {
  local out
  out=$(echo 'fault password 123' | "$BIN" init --email "fault@example.com" --password-stdin --store-name fault)
  STORE=$(json 'd["store"]["id"]' <<<"$out")
  KEY=$(json 'd["api_key"]["key"]' <<<"$out")
  local api="$(url_of 1)/v1/stores/$STORE" tpl
  tpl=$(curl -sf "$api/email-templates" -H "authorization: Bearer $KEY" -H 'content-type: application/json' \
    -d '{"key": "confirm-news", "subject": "Confirm {{ audience_name }}", "body": "<p>Hi, <a href=\"{{ confirm_url }}\">confirm</a></p>"}' \
    | json 'd["id"]')
  curl -sf "$api/audiences" -H "authorization: Bearer $KEY" -H 'content-type: application/json' \
    -d "{\"key\": \"news\", \"name\": \"News\", \"confirm_template_id\": \"$tpl\"}" >/dev/null
}

# count_internal_errors LOG...: the 500s the servers logged (each internal error is logged once).
count_internal_errors() { cat "$@" 2>/dev/null | { grep -c "internal error" || true; }; }
