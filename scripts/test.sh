#!/usr/bin/env bash
# Every test the project has, on a fresh machine: the Rust suite (cargo test: unit tests and the
# HTTP suite on SQLite, and on Postgres when TEST_DATABASE_URL is set), then the suites that need
# more than cargo (each installs what it needs: Chromium from apt, npm packages from lockfiles).
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

echo "== browser tests (hosted pages in Chromium)"
scripts/browser-tests.sh

echo "== TypeScript SDK (sdk/typescript: generated types current, strict build, tests on the real server)"
sdk/typescript/scripts/ci.sh
