#!/usr/bin/env bash
# CI of the TypeScript SDK (sdk/typescript): dependencies from the lockfile, generated types
# current with docs/openapi.json, strict type check, build to dist/, then the tests against the
# real server on SQLite and, when TEST_DATABASE_URL is set, on Postgres too.
#
#   sdk/typescript/scripts/ci.sh
#   TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test sdk/typescript/scripts/ci.sh
#
# The server binary is STORECRM_BIN (default ../../target/debug/storecrm). When STORECRM_BIN is
# not set, `cargo build --bin storecrm` runs first (a no-op after `cargo test`), so the tests never
# run against a stale server.
set -euo pipefail
cd "$(dirname "$0")/.."
export npm_config_fund=false npm_config_audit=false npm_config_update_notifier=false

step() { echo "== sdk/typescript: $*"; }
started=$(date +%s)

step "node $(node --version), npm $(npm --version)"
major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 20 ]; then
  echo "Node 20 or newer is required" >&2
  exit 1
fi

step "npm ci (from package-lock.json)"
npm ci --no-audit --no-fund --loglevel=error

step "generated types are current (openapi-typescript ../../docs/openapi.json)"
node scripts/check-generated.mjs

step "type check (tsc --noEmit, strict)"
npx --no-install tsc --noEmit -p tsconfig.json

step "build (dist/: ESM + .d.ts)"
npm run --silent build
test -f dist/index.js && test -f dist/index.d.ts

step "type check the examples against the built package"
npx --no-install tsc --noEmit -p tsconfig.examples.json

if [ -z "${STORECRM_BIN:-}" ]; then
  step "cargo build --bin storecrm (the server the tests start)"
  (cd ../.. && cargo build --quiet --bin storecrm)
fi
bin="${STORECRM_BIN:-../../target/debug/storecrm}"
case "$bin" in /*) ;; *) bin="$PWD/$bin" ;; esac
if [ ! -x "$bin" ]; then
  echo "the storecrm binary is missing at $bin: run \`cargo build\` at the repository root or set STORECRM_BIN" >&2
  exit 1
fi
export STORECRM_BIN="$bin"

if [ -n "${TEST_DATABASE_URL:-}" ]; then
  if ! command -v psql >/dev/null 2>&1; then
    echo "TEST_DATABASE_URL is set but psql is not installed (the tests create their databases with it)" >&2
    exit 1
  fi
  step "tests: SQLite and Postgres ($TEST_DATABASE_URL)"
else
  step "tests: SQLite only — TEST_DATABASE_URL is not set, the Postgres half is SKIPPED"
fi
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
node scripts/run-tests.mjs 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
if [ "$status" -ne 0 ]; then
  echo "== sdk/typescript: tests FAILED" >&2
  exit "$status"
fi

sqlite_suites=$(grep -cE '^✔ sqlite: ' "$log" || true)
pg_suites=$(grep -cE '^✔ postgres: ' "$log" || true)
if [ -n "${TEST_DATABASE_URL:-}" ] && { [ "$pg_suites" -eq 0 ] || [ "$pg_suites" -ne "$sqlite_suites" ]; }; then
  echo "== sdk/typescript: the Postgres suites did not all run (sqlite=$sqlite_suites postgres=$pg_suites)" >&2
  exit 1
fi
if [ -n "${TEST_DATABASE_URL:-}" ]; then
  step "passed: $sqlite_suites SQLite suites, $pg_suites Postgres suites ($(( $(date +%s) - started )) s)"
else
  step "passed: $sqlite_suites SQLite suites; Postgres SKIPPED (TEST_DATABASE_URL not set) ($(( $(date +%s) - started )) s)"
fi
