#!/usr/bin/env bash
# The pages people see, in a real headless Chromium (Debian's, driven by playwright-core):
# installs what is missing (chromium from apt, playwright-core from the lockfile), then runs
# tests/browser against the debug binary. Usage: scripts/browser-tests.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1; then
  echo "== installing chromium (apt)"
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -q >/dev/null || true
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q chromium >/dev/null
fi
cargo build -q --bin storecrm
cd tests/browser
npm ci --no-audit --no-fund --loglevel=error
STORECRM_BIN="$PWD/../../target/debug/storecrm" CHROMIUM="$(command -v chromium)" npm test --silent
