#!/usr/bin/env bash
# The API-document checks of storecrm (called by .ci/run; runnable by hand).
#
#   scripts/api/check.sh                     # everything, on SQLite (+ Postgres with TEST_DATABASE_URL)
#   scripts/api/check.sh --write-collection  # regenerate postman/storecrm.postman_collection.json
#   scripts/api/check.sh --skip newman       # further options: see scripts/api/checks.py --help
#
# 1. builds the server (cargo build), installs the pinned tools into target/ (gitignored): a
#    Python venv (target/api-venv: openapi-spec-validator, schemathesis 4) and the npm tools of
#    scripts/api/package-lock.json with `npm ci` (target/api-tools: @redocly/cli,
#    openapi-to-postmanv2, newman). Each is reinstalled only when its pins change, so a warm run
#    installs nothing. Nothing is installed globally.
# 2. per backend, on fresh servers (harness.py; rate limits raised for the run, see RAISED_LIMITS
#    there, and payments pointed at a local fake Stripe):
#    - the served /openapi.json: openapi-spec-validator, then `redocly lint` (redocly.yaml);
#    - schemathesis, all checks, all phases incl. stateful, fixed seed, as each of the three
#      principals (store API key, account token, verified profile token);
#    - the Postman collection generated from the document (postman.mjs) run with newman; the
#      committed postman/ collection must equal it.
# Exit status: non-zero on any failure. Logs: the folder printed at the start (or --work DIR).
#
# Environment: TEST_DATABASE_URL (postgres://... : also run on Postgres, in a fresh database
# sc_api_<random> created and dropped next to it), API_CHECK_SEED, API_CHECK_MAX_EXAMPLES.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
here=$root/scripts/api
venv=$root/target/api-venv
tools=$root/target/api-tools
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

step() { printf '\n== %s\n' "$*"; }
stamp_of() { cat "$@" | sha256sum | cut -d' ' -f1; }

step "cargo build (the storecrm binary)"
cargo build --quiet --bin storecrm

step "python tools (target/api-venv)"
want=$(stamp_of "$here/requirements.txt" "$here/constraints.txt" <(python3 --version))
if [ ! -x "$venv/bin/st" ] || [ "$(cat "$venv/.stamp" 2>/dev/null)" != "$want" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt" -c "$here/constraints.txt"
  echo "$want" > "$venv/.stamp"
fi
"$venv/bin/st" --version

step "npm tools (target/api-tools, npm ci)"
want=$(stamp_of "$here/package.json" "$here/package-lock.json" <(node --version))
if [ ! -x "$tools/node_modules/.bin/newman" ] || [ "$(cat "$tools/.stamp" 2>/dev/null)" != "$want" ]; then
  rm -rf "$tools"
  mkdir -p "$tools"
  cp "$here/package.json" "$here/package-lock.json" "$tools/"
  (cd "$tools" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$want" > "$tools/.stamp"
fi
echo "redocly $("$tools/node_modules/.bin/redocly" --version 2>/dev/null | tail -n1), newman $("$tools/node_modules/.bin/newman" --version)"

if [ "${1:-}" = "--write-collection" ]; then
  step "postman collection from the current document"
  "$root/target/debug/storecrm" openapi > "$tools/openapi.json"
  API_TOOLS_DIR=$tools node "$here/postman.mjs" "$tools/openapi.json" "$root/postman/storecrm.postman_collection.json"
  exit 0
fi

step "API checks"
export API_TOOLS_DIR=$tools
exec "$venv/bin/python" "$here/checks.py" \
  --binary "$root/target/debug/storecrm" --venv-bin "$venv/bin" --node-bin "$tools/node_modules/.bin" \
  --seed "${API_CHECK_SEED:-20261201}" --max-examples "${API_CHECK_MAX_EXAMPLES:-40}" "$@"
