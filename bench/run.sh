#!/usr/bin/env bash
# bench/run.sh: every figure of BENCHMARKS.md in one run (about 6 minutes on 2 cores).
#
# 1. criterion benches of the pure cores, printed as time per meeting;
# 2. `convenor serve` beside nginx (one worker) serving the very bytes convenor serves, both
#    pinned to the same CPU, loaded by wrk (pinned to the other) at 32 and 256 connections, for
#    the shipped config and a generated one of 500 meetings, alternating convenor/nginx twice;
# 3. convenor's RSS after start, after warm-up, after 1 and 2 million requests; CPU while idle;
# 4. start-up to READY (sd_notify) and to the first 200, at 5 and 5,000 meetings;
# 5. 2,000 distinct mails through mail::Transport (plaintext SMTP) to postfix's smtp-sink.
#
# Only 127.0.0.1 is contacted. Every wrk run is bounded in time; everything started here is
# stopped on exit. Environment knobs: BENCH_SECONDS (per wrk run, default 5), BENCH_SERVER_CPU
# (default 1), BENCH_CLIENT_CPU (default 0), BENCH_SKIP_CRITERION=1.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# shellcheck source=bench/nginx.sh
. bench/nginx.sh
SECS=${BENCH_SECONDS:-5}
SCPU=${BENCH_SERVER_CPU:-1}
CCPU=${BENCH_CLIENT_CPU:-0}
PORT_CONVENOR=18480
PORT_NGINX=18481 # + one per config
PORT_STARTUP=18490
PORT_SMTP=18425

WORK=$(mktemp -d /tmp/convenor-bench.XXXXXX)
chmod 755 "$WORK" # nginx workers read it as an unprivileged user
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do
    kill "$p" 2>/dev/null || true
  done
  for p in "${PIDS[@]}"; do
    wait "$p" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

say() { printf '\n== %s\n' "$*"; }

# --- tools ------------------------------------------------------------------------------------
missing=()
for pkg in wrk nginx-light postfix curl python3 util-linux; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  apt-get update -qq
  # postfix only for /usr/sbin/smtp-sink: its own daemon is never started here.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
PY=/usr/bin/python3

say "machine"
echo "nproc: $(nproc); memory: $(free -h | awk '/^Mem:/ {print $2}'); CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "kernel: $(uname -r); $(nginx -v 2>&1); wrk $(wrk -v 2>&1 | head -1 | awk '{print $2}'); $(rustc --version)"
echo "server CPU $SCPU (convenor, nginx), client CPU $CCPU (wrk, one thread); ${SECS}s per wrk run"

say "build (release)"
cargo build --release --quiet --bin convenor --example bench_tool
BIN=$ROOT/target/release/convenor
TOOL=$ROOT/target/release/examples/bench_tool

# --- 1. criterion -----------------------------------------------------------------------------
if [ "${BENCH_SKIP_CRITERION:-0}" != 1 ]; then
  say "criterion: pure cores (cargo bench --bench render, short settings)"
  cargo bench --quiet --bench render -- --warm-up-time 1 --measurement-time 2 --sample-size 10 \
    >"$WORK/criterion.log" 2>&1 || { cat "$WORK/criterion.log"; exit 1; }
  $PY - "$ROOT/target/criterion" <<'EOF'
import json, os, sys
base = sys.argv[1]
def est(group, name):
    p = os.path.join(base, group, name, "new", "estimates.json")
    with open(p) as f:
        return json.load(f)["mean"]["point_estimate"]  # ns
print(f"{'bench':<22}{'meetings':>9}{'time':>12}{'per meeting':>14}")
for group in sorted(os.listdir(base)):
    if group == "report" or not os.path.isdir(os.path.join(base, group)):
        continue
    names = [n for n in os.listdir(os.path.join(base, group)) if n != "report"]
    sized = sorted((int(n), n) for n in names if n.isdigit())
    for size, n in sized:
        ns = est(group, n)
        print(f"{group:<22}{size:>9}{ns/1e6:>10.3f}ms{ns/size/1e3:>11.2f} µs")
    for n in sorted(n for n in names if not n.isdigit()):
        print(f"{group + '/' + n:<31}{est(group, n)/1e3:>10.1f}µs")
EOF
fi

# --- configs ------------------------------------------------------------------------------------
"$TOOL" config --meetings 500 --templates-dir "$ROOT/templates" >"$WORK/c500.toml"
"$TOOL" config --meetings 5 --templates-dir "$ROOT/templates" >"$WORK/c5.toml"
"$TOOL" config --meetings 5000 --templates-dir "$ROOT/templates" >"$WORK/c5000.toml"

# --- helpers ------------------------------------------------------------------------------------
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; } # utime + stime, all threads
ctx_switches() {
  local t total=0
  for t in /proc/"$1"/task/*/status; do
    total=$((total + $(awk '/^(non)?voluntary_ctxt_switches:/ {s += $2} END {print s}' "$t")))
  done
  echo "$total"
}
to_us() { # wrk latency such as 812.00us, 1.20ms, 2.01s
  awk -v v="$1" 'BEGIN {
    n = v + 0; if (v ~ /us$/) print n; else if (v ~ /ms$/) print n * 1000;
    else if (v ~ /s$/) print n * 1000000; else print n }'
}

# Runs wrk against $1 with $2 connections for $3 seconds; sets RPS P50 P99 ERR REQS.
load() {
  local out
  out=$(taskset -c "$CCPU" wrk -t1 -c"$2" -d"${3}s" --timeout 5s --latency "$1")
  RPS=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
  REQS=$(awk '/ requests in / {print $1}' <<<"$out")
  P50=$(to_us "$(awk '$1 == "50%" {print $2}' <<<"$out")")
  P99=$(to_us "$(awk '$1 == "99%" {print $2}' <<<"$out")")
  local sock non2xx
  sock=$(awk '/Socket errors:/ {gsub(",", ""); print $4 + $6 + $8 + $10}' <<<"$out")
  non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $5}' <<<"$out")
  ERR=$((${sock:-0} + ${non2xx:-0}))
}

wait_200() { # url
  local i
  for i in $(seq 1 400); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$1" || true)" = 200 ] && return 0
    sleep 0.05
  done
  echo "no 200 from $1" >&2
  return 1
}

start_convenor() { # config name; sets CPID
  mkdir -p "$WORK/state-$2"
  STATE_DIRECTORY="$WORK/state-$2" taskset -c "$SCPU" "$BIN" --config "$1" serve \
    --listen "127.0.0.1:$PORT_CONVENOR" >"$WORK/convenor-$2.log" 2>&1 &
  CPID=$!
  PIDS+=("$CPID")
  wait_200 "http://127.0.0.1:$PORT_CONVENOR/calendar.ics"
}

stop_convenor() {
  kill -TERM "$CPID"
  wait "$CPID" 2>/dev/null || true
}

# --- 2. nginx -----------------------------------------------------------------------------------
say "nginx: one worker, pinned to CPU $SCPU"
mkdir -p "$WORK/www-shipped" "$WORK/www-500"
write_nginx_conf "$WORK" "$PORT_NGINX:$WORK/www-shipped" "$((PORT_NGINX + 1)):$WORK/www-500"
taskset -c "$SCPU" nginx -c "$WORK/nginx.conf" -g 'daemon off;' &
NPID=$!
PIDS+=("$NPID")
sleep 0.5
NWORKER=$(pgrep -P "$NPID" | head -1)
echo "nginx master $NPID, worker $NWORKER (affinity $(taskset -cp "$NWORKER" | awk '{print $NF}'))"

TOTAL_REQS=0
printf '\n%-8s %5s %-9s %10s %9s %9s %6s %9s\n' config conns server "req/s" "p50 µs" "p99 µs" errors "µs CPU/req"
for cfg in shipped 500; do
  if [ "$cfg" = shipped ]; then file=$ROOT/config/lednet.toml; nport=$PORT_NGINX; else file=$WORK/c$cfg.toml; nport=$((PORT_NGINX + 1)); fi
  start_convenor "$file" "$cfg"
  threads=$(ls "/proc/$CPID/task" | wc -l)
  rss_start=$(rss_kb "$CPID")
  # The very bytes convenor serves, as nginx's static file.
  curl -s -D "$WORK/h-convenor-$cfg" -o "$WORK/www-$cfg/calendar.ics" "http://127.0.0.1:$PORT_CONVENOR/calendar.ics"
  curl -s -D "$WORK/h-nginx-$cfg" -o "$WORK/nginx-$cfg.ics" "http://127.0.0.1:$nport/calendar.ics"
  cmp -s "$WORK/www-$cfg/calendar.ics" "$WORK/nginx-$cfg.ics" || { echo "nginx serves other bytes" >&2; head -3 "$WORK/h-nginx-$cfg" "$WORK/h-convenor-$cfg" >&2; exit 1; }
  ct_c=$(grep -i '^content-type:' "$WORK/h-convenor-$cfg" | tr -d '\r')
  ct_n=$(grep -i '^content-type:' "$WORK/h-nginx-$cfg" | tr -d '\r')
  [ "${ct_c,,}" = "${ct_n,,}" ] || { echo "Content-Type differs: $ct_c / $ct_n" >&2; exit 1; }
  echo "# $cfg: $(wc -c <"$WORK/www-$cfg/calendar.ics") bytes, $ct_c; convenor pid $CPID, $threads threads, affinity $(taskset -cp "$CPID" | awk '{print $NF}')"
  # Warm-up, both servers.
  load "http://127.0.0.1:$PORT_CONVENOR/calendar.ics" 32 2; TOTAL_REQS=$((TOTAL_REQS + REQS))
  load "http://127.0.0.1:$nport/calendar.ics" 32 2
  rss_warm=$(rss_kb "$CPID")
  for conns in 32 256; do
    declare -A sum=()
    for round in 1 2; do
      for server in convenor nginx; do
        if [ "$server" = convenor ]; then url="http://127.0.0.1:$PORT_CONVENOR/calendar.ics"; pid=$CPID; else url="http://127.0.0.1:$nport/calendar.ics"; pid=$NWORKER; fi
        t0=$(cpu_ticks "$pid")
        load "$url" "$conns" "$SECS"
        t1=$(cpu_ticks "$pid")
        [ "$server" = convenor ] && TOTAL_REQS=$((TOTAL_REQS + REQS))
        cpu_us=$(awk -v t=$((t1 - t0)) -v n="$REQS" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}')
        printf '%-8s %5s %-9s %10.0f %9.0f %9.0f %6s %9s\n' "$cfg" "$conns" "$server" "$RPS" "$P50" "$P99" "$ERR" "$cpu_us"
        sum[$server.rps]=$(awk -v a="${sum[$server.rps]:-0}" -v b="$RPS" 'BEGIN {print a + b}')
        sum[$server.p50]=$(awk -v a="${sum[$server.p50]:-0}" -v b="$P50" 'BEGIN {print a + b}')
        sum[$server.p99]=$(awk -v a="${sum[$server.p99]:-0}" -v b="$P99" 'BEGIN {print a + b}')
        sum[$server.err]=$(( ${sum[$server.err]:-0} + ERR ))
      done
    done
    awk -v cfg="$cfg" -v c="$conns" -v cr="${sum[convenor.rps]}" -v nr="${sum[nginx.rps]}" \
      -v c50="${sum[convenor.p50]}" -v n50="${sum[nginx.p50]}" -v c99="${sum[convenor.p99]}" -v n99="${sum[nginx.p99]}" \
      -v ce="${sum[convenor.err]}" -v ne="${sum[nginx.err]}" 'BEGIN {
      printf "RATIO %-7s %4s conns: convenor/nginx req/s %.2f (%.0f vs %.0f), p50 %.2f, p99 %.2f (%.0f vs %.0f µs), errors %d/%d\n",
        cfg, c, cr / nr, cr / 2, nr / 2, c50 / n50, c99 / n99, c99 / 2, n99 / 2, ce, ne }'
    unset sum
  done
  if [ "$cfg" = shipped ]; then
    # RSS after one and two million requests (bounded: at most 120 s of load each).
    for target in 1000000 2000000; do
      spent=0
      while [ "$TOTAL_REQS" -lt "$target" ] && [ "$spent" -lt 120 ]; do
        load "http://127.0.0.1:$PORT_CONVENOR/calendar.ics" 32 10
        TOTAL_REQS=$((TOTAL_REQS + REQS)); spent=$((spent + 10))
      done
      eval "rss_$target=\$(rss_kb \"\$CPID\")"
    done
    sleep 1
    t0=$(cpu_ticks "$CPID"); s0=$(ctx_switches "$CPID")
    sleep 10
    t1=$(cpu_ticks "$CPID"); s1=$(ctx_switches "$CPID")
    echo "RSS shipped: start ${rss_start} kB, after warm-up ${rss_warm} kB, after 1M requests ${rss_1000000} kB, after 2M ${rss_2000000} kB ($TOTAL_REQS served)"
    echo "IDLE shipped: $((t1 - t0)) CPU ticks (1/$(getconf CLK_TCK) s) and $((s1 - s0)) context switches in 10 s idle"
  else
    echo "RSS $cfg: start ${rss_start} kB, after warm-up and load $(rss_kb "$CPID") kB"
  fi
  stop_convenor
done
kill -TERM "$NPID"; wait "$NPID" 2>/dev/null || true

# --- 4. start-up --------------------------------------------------------------------------------
say "start-up to READY (NOTIFY_SOCKET) and to the first 200, pinned to CPU $SCPU, 5 runs each"
for n in 5 5000; do
  $PY bench/startup.py --binary "$BIN" --config "$WORK/c$n.toml" --label "$n meetings" \
    --work "$WORK" --port "$PORT_STARTUP" --cpus "$SCPU" --runs 5
done
# A first start renders the feeds on a second thread while it writes the plan: on both CPUs.
say "start-up at 5,000 meetings on CPUs $CCPU and $SCPU, 5 runs each"
$PY bench/startup.py --binary "$BIN" --config "$WORK/c5000.toml" --label "5000, 2 CPUs" \
  --work "$WORK" --port "$PORT_STARTUP" --cpus "$CCPU,$SCPU" --runs 5

# --- 5. mail --------------------------------------------------------------------------------------
say "mail: 2,000 distinct messages through mail::Transport (plaintext SMTP) to smtp-sink"
taskset -c "$CCPU" /usr/sbin/smtp-sink -u postfix "127.0.0.1:$PORT_SMTP" 256 &
PIDS+=("$!")
# Wait until smtp-sink accepts (a fixed sleep lost the race under load: refused connections).
for _ in $(seq 1 200); do
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT_SMTP") 2>/dev/null && break
  sleep 0.05
done
taskset -c "$SCPU" "$TOOL" smtp --port "$PORT_SMTP" --count 2000 --concurrency 1
taskset -c "$SCPU" "$TOOL" smtp --port "$PORT_SMTP" --count 2000 --concurrency 4

say "done"
