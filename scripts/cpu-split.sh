#!/usr/bin/env bash
# Where a call's CPU goes: runs wrk against URL for SECONDS (after a 3 s warm-up) and prints the
# rate and the CPU time per request of the server process PID and of all Postgres processes on
# this machine (backends and background writers together), from /proc tick counts. On a machine
# whose cores the server, Postgres and wrk share, throughput is about cores / (their sum), so a
# change's effect on either side shows here with less noise than in requests/s.
#   scripts/cpu-split.sh PID URL [SECONDS] [METHOD]
#   e.g. scripts/cpu-split.sh "$(pgrep -f 'storecrm serve')" http://127.0.0.1:8080/v1/stores/$STORE/profiles/initialize 10 POST
# Every request comes from a random client address (X-Forwarded-For: give the server
# TRUSTED_PROXY_HOPS=1 and raised limits, as scripts/bench-hot.sh does). Load goes to the URL only;
# each wrk run is bounded by time and sits under `timeout`.
set -euo pipefail
pid="$1" url="$2" seconds="${3:-10}" method="${4:-POST}"
command -v wrk >/dev/null || { echo "wrk is required (apt-get install wrk)" >&2; exit 1; }
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
cat >"$work/load.lua" <<LUA
wrk.method = "$method"
request = function()
  local headers = {}
  headers["X-Forwarded-For"] = string.format("10.%d.%d.%d", math.random(0, 255), math.random(0, 255), math.random(1, 254))
  return wrk.format(nil, nil, headers, nil)
end
LUA
ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
postgres_ticks() {
  local sum=0 p
  for p in $(pgrep -x postgres || true); do sum=$((sum + $(ticks "$p"))); done
  echo "$sum"
}
timeout 60 wrk -t1 -c16 -d3s -s "$work/load.lua" "$url" >/dev/null
s0=$(ticks "$pid") p0=$(postgres_ticks)
out=$(timeout $((seconds + 30)) wrk -t1 -c16 -d"${seconds}s" -s "$work/load.lua" "$url")
s1=$(ticks "$pid") p1=$(postgres_ticks)
requests=$(awk '/requests in/ {print $1}' <<<"$out")
hz=$(getconf CLK_TCK)
python3 - "$requests" "$hz" "$((s1 - s0))" "$((p1 - p0))" "$(awk '/^Requests\/sec/ {print $2}' <<<"$out")" <<'PY'
import sys
n, hz, server, postgres, rps = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
us = lambda ticks: ticks / hz / n * 1e6
print(f"requests/s {rps}  server {us(server):.0f} us/request  postgres {us(postgres):.0f} us/request")
PY
