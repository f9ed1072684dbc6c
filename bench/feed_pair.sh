#!/usr/bin/env bash
# bench/feed_pair.sh: one A B A B comparison of a convenor binary's feed with nginx serving the
# same bytes; the quick check used for before/after comparisons in BENCHMARKS.md (bench/run.sh
# does the same for every config and connection count, and much more).
#
#   bash bench/feed_pair.sh BINARY CONFIG [CONNS] [SECONDS]
#
# Starts BINARY (`serve`, fresh state directory) on CONFIG pinned to CPU 1, fetches its
# /calendar.ics, serves those bytes with nginx (one worker, sendfile, pinned to CPU 1), and runs
# wrk (one thread, CPU 0) against convenor, nginx, convenor, nginx; prints req/s, p99 and the
# server's CPU per request, then the req/s ratio. Only 127.0.0.1 is contacted; everything
# started here is stopped on exit. Needs wrk, nginx-light and curl (bench/run.sh installs them).
set -euo pipefail
# shellcheck source=bench/nginx.sh
. "$(dirname "$0")/nginx.sh"
BIN=$(realpath "$1")
CONFIG=$(realpath "$2")
CONNS=${3:-256}
SECS=${4:-5}
PORT_CONVENOR=18580
PORT_NGINX=18581

WORK=$(mktemp -d /tmp/convenor-pair.XXXXXX)
chmod 755 "$WORK"
mkdir -p "$WORK/www" "$WORK/state"
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

STATE_DIRECTORY="$WORK/state" taskset -c 1 "$BIN" --config "$CONFIG" serve \
  --listen "127.0.0.1:$PORT_CONVENOR" >"$WORK/convenor.log" 2>&1 &
CPID=$!
PIDS+=("$CPID")
for _ in $(seq 1 200); do
  curl -sf -o "$WORK/www/calendar.ics" "http://127.0.0.1:$PORT_CONVENOR/calendar.ics" && break
  sleep 0.05
done
[ -s "$WORK/www/calendar.ics" ] || { cat "$WORK/convenor.log" >&2; exit 1; }

write_nginx_conf "$WORK" "$PORT_NGINX:$WORK/www"
taskset -c 1 nginx -c "$WORK/nginx.conf" -g 'daemon off;' &
NPID=$!
PIDS+=("$NPID")
sleep 0.5
NWORKER=$(pgrep -P "$NPID" | head -1)

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
echo "$(wc -c <"$WORK/www/calendar.ics") bytes, $CONNS connections, ${SECS}s per run"
declare -A SUM=([convenor]=0 [nginx]=0)
for _ in 1 2; do
  for server in convenor nginx; do
    if [ "$server" = convenor ]; then port=$PORT_CONVENOR pid=$CPID; else port=$PORT_NGINX pid=$NWORKER; fi
    c0=$(cpu_ticks "$pid")
    out=$(taskset -c 0 wrk -t1 -c"$CONNS" -d"${SECS}s" --timeout 5s --latency \
      "http://127.0.0.1:$port/calendar.ics")
    c1=$(cpu_ticks "$pid")
    reqs=$(awk '/ requests in / {print $1}' <<<"$out")
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    awk -v s="$server" -v r="$rps" -v p="$p99" -v t=$((c1 - c0)) -v n="$reqs" \
      'BEGIN { printf "%-9s %10.0f req/s  p99 %-9s %6.1f µs CPU/req\n", s, r, p, t * 10000 / n }'
    SUM[$server]=$(awk -v a="${SUM[$server]}" -v b="$rps" 'BEGIN { print a + b }')
  done
done
awk -v c="${SUM[convenor]}" -v n="${SUM[nginx]}" \
  'BEGIN { printf "RATIO convenor/nginx req/s %.2f\n", c / n }'
