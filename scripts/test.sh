#!/usr/bin/env bash
# Every test the project has, on a fresh machine: the Rust suite (cargo test: unit tests and the
# HTTP suite on SQLite, and on Postgres when TEST_DATABASE_URL is set), the API document checks
# (scripts/api/check.sh, on the same backends), then the suites that need more than cargo (each
# installs what it needs: Chromium from apt, npm packages from lockfiles).
# `cargo test` alone still runs the Rust suite.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo test"
if [ -n "${TEST_DATABASE_URL:-}" ]; then
  # The Postgres half is #[ignore]d unless asked for.
  cargo test -- --include-ignored
else
  cargo test
fi

echo "== API document checks (validators, schemathesis as each principal, newman; SQLite, and Postgres with TEST_DATABASE_URL)"
# 15 examples per operation keeps it to a few minutes; scripts/api/check.sh alone defaults to 40.
TEST_DATABASE_URL="${TEST_DATABASE_URL:-}" API_CHECK_MAX_EXAMPLES="${API_CHECK_MAX_EXAMPLES:-15}" scripts/api/check.sh

if [ -n "${TEST_DATABASE_URL:-}" ]; then
  echo "== quick fault scripts (SMTP outage during 1,000 code requests; two instances on one Postgres; PgBouncer)"
  # On the debug build: the same checks (nothing lost, nothing doubled), without a release build.
  FAULT_PROFILE=debug scripts/faults/quick.sh
fi

echo "== browser tests (hosted pages in Chromium)"
scripts/browser-tests.sh

echo "== TypeScript SDK (sdk/typescript: generated types current, strict build, tests on the real server)"
sdk/typescript/scripts/ci.sh
