#!/usr/bin/env bash
# The quick fault scripts, for CI: fault 2 with a 15 s SMTP outage (1,000 code requests), fault 4
# (two instances on one Postgres) and fault 5 (PgBouncer in transaction mode, 10 s of load; it
# installs Debian's pgbouncer if it can, and is skipped if it cannot). Needs Postgres
# (FAULT_PG_URL, default postgres://postgres@127.0.0.1:5432, trust auth) and python3; builds the
# release binary once.
#
#   scripts/faults/quick.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
# FAULT_PROFILE=debug (scripts/test.sh) builds and uses the debug binaries instead.
if [ "${FAULT_PROFILE:-release}" = release ]; then
  cargo build --release --quiet --bin storecrm --example fault_load
else
  cargo build --quiet --bin storecrm --example fault_load
fi
export FAULT_NO_BUILD=1
started=$(date +%s)
OUTAGE_SECS="${OUTAGE_SECS:-15}" CODES="${CODES:-1000}" scripts/faults/smtp-outage.sh postgres
ROUNDS="${ROUNDS:-5}" MERGES="${MERGES:-10}" MIXED_SECS="${MIXED_SECS:-5}" scripts/faults/two-instances.sh
ROUNDS="${ROUNDS:-5}" MERGES="${MERGES:-10}" LOAD_SECS="${LOAD_SECS:-10}" scripts/faults/pgbouncer.sh
echo "quick fault scripts passed in $(($(date +%s) - started))s"
