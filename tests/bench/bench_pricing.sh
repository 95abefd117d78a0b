#!/usr/bin/env bash
# bench_pricing.sh: eq-pricing throughput, latency, CPU and memory per
# request against nginx and redis-benchmark on the same machine, in one go
# (issue 13's figures; tests/bench/run prints them with the others).
#
# Three daemons run side by side on loopback (each equilibriumd as deployed:
# prober, forwarder, Kafka = eq-kafka-dev when built), sharing one
# redis-server that holds the zone:
#   Q  one pricing worker, quote events on;
#   N  one pricing worker, quote events off ([pricing] quotes = off);
#   T  two pricing workers.
# Every round runs, each for $DURATION seconds after a warm-up, with
# wrk -t1 -c$CONNS, one after the other (interleaved, so a busy moment of
# the shared machine hits all alike):
#   normal      Q, GET /v1/pricing/z1 with a token: Redis, quote events on
#   noquotes    N, the same with quote events off
#   stale       Q with override emergency and emergency_pricing = stale:
#               the shared-memory path, no backend call
#   stale2      T, the same stale path over two workers
#   nginx       1 worker, `return 200` with a JSON body of the same size
#   redis       redis-benchmark HGETALL pricing:z1 -c$CONNS, no pipelining
# Medians over ROUNDS rounds are reported.  CPU per request comes from
# /proc/PID/stat (utime + stime) before and after, for the eq-pricing
# worker(s) and the nginx worker.  The quote events' cost is the median of
# the per-round differences normal - noquotes.
# After the rounds: RSS per pricing worker beyond the segment (Q, after the
# load), then 10,000 idle keep-alive connections on Q (RSS growth per
# connection), then the live-stream figure if the stream endpoint exists.
#
# Usage: tests/bench/bench_pricing.sh [BUILD_DIR]
# Env:   DURATION (10)  WARMUP (2)  CONNS (64)  ROUNDS (3)  IDLE_CONNS (10000)
#        KEEP=1 (keep the temp dir)  BENCH_FIGURES=FILE (append the figures
#        as tab-separated rows: figure, ours, reference, ratio, target, met)
# This is a benchmark, not a test: it prints figures and whether the
# issue's targets were met, and exits 0 unless something failed to run.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE="$REPO/tests/bench"
BUILD=$(cd "${1:-${EQ_BUILD_DIR:-$REPO/build}}" && pwd)
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CONNS=${CONNS:-64}
ROUNDS=${ROUNDS:-3}
IDLE_CONNS=${IDLE_CONNS:-10000}
TOKEN=bench-token
TICK=$(getconf CLK_TCK)
FIGURES=${BENCH_FIGURES:-}

for bin in "$BUILD/supervisor/equilibriumd" "$BUILD/eqctl/eqctl" "$BUILD/workers/eq-pricing"; do
  [ -x "$bin" ] || { echo "bench_pricing: $bin not built (ninja -C $BUILD)" >&2; exit 1; }
done
for tool in wrk nginx redis-server redis-benchmark redis-cli curl python3; do
  command -v "$tool" >/dev/null || { echo "bench_pricing: $tool not installed" >&2; exit 1; }
done

TMP=$(mktemp -d /tmp/eqbench-XXXXXX)
chmod 755 "$TMP"
PIDS=()
SHMS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for s in "${SHMS[@]}"; do rm -f "/dev/shm/${s#/}"; done
  if [ -n "${KEEP:-}" ]; then echo "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_http() {   # url [status]
  for _ in $(seq 1 400); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$1")" = "${2:-200}" ] && return 0
    sleep 0.05
  done
  echo "bench_pricing: $1 never answered ${2:-200}" >&2; return 1
}
cpu_ticks() {   # pid... -> utime+stime summed
  local t=0 p
  for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
  echo "$t"
}
py() { python3 -c "$@"; }

# run_wrk URL PIDS... -> sets RPS P99_MS US_PER_REQ
run_wrk() {
  local url=$1; shift
  wrk -t1 -c"$CONNS" -d"${WARMUP}s" -H "Authorization: Bearer $TOKEN" "$url" >/dev/null
  local c0 c1 out reqs errs
  c0=$(cpu_ticks "$@")
  out=$(wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -H "Authorization: Bearer $TOKEN" "$url")
  c1=$(cpu_ticks "$@")
  reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  RPS=$(echo "$out" | awk '/^Requests\/sec/ {print $2}')
  P99_MS=$(echo "$out" | awk '$1 == "99%" {v=$2; if (v ~ /us$/) {sub(/us$/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v*=1000}; print v}')
  US_PER_REQ=$(py "print(f'{($c1 - $c0) * 1e6 / $TICK / max($reqs, 1):.2f}')")
  errs=$(echo "$out" | awk '/Non-2xx|Socket errors/ {print}')
  [ -z "$errs" ] || echo "  wrk $url: $errs"
}

# ---- Redis with the zone ----
RPORT=$(free_port)
mkdir -p "$TMP/redis"
redis-server --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$TMP/redis" \
  --daemonize no >"$TMP/redis/log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break; sleep 0.05; done
redis-cli -p "$RPORT" HSET pricing:z1 base_fare 12.5 surge_multiplier 1.7 supply_count 10 \
  demand_count 17 >/dev/null

# ---- Kafka (the mock broker) when built ----
BROKERS="127.0.0.1:$(free_port)"
KAFKA_NOTE="no eq-kafka-dev: quotes go to the ring and the forwarder's spool"
if [ -x "$BUILD/deploy/dev/eq-kafka-dev" ]; then
  mkfifo "$TMP/kafka.in"
  "$BUILD/deploy/dev/eq-kafka-dev" --bootstrap-file "$TMP/kafka.bootstrap" \
    <"$TMP/kafka.in" >"$TMP/kafka.out" 2>&1 &
  PIDS+=($!)
  exec 9>"$TMP/kafka.in"
  for _ in $(seq 1 100); do [ -s "$TMP/kafka.bootstrap" ] && break; sleep 0.05; done
  BROKERS=$(cat "$TMP/kafka.bootstrap")
  KAFKA_NOTE="Kafka: eq-kafka-dev at $BROKERS"
fi

# ---- the daemons ----
declare -A DPORT DSHM DPID DWORKERS
start_daemon() {   # name workers [quotes: on|off]
  local name=$1 workers=$2 quotes=${3:-on}
  local port shm dir=$TMP/$name
  port=$(free_port)
  shm=/eqbench-$$-$name
  SHMS+=("$shm")
  mkdir -p "$dir/spool"
  cat >"$dir/eq.conf" <<EOF
[shm]
name = $shm
[http]
listen = 127.0.0.1:$port
max_connections = $((IDLE_CONNS + 500))
[auth]
token_sha256 = $(printf %s "$TOKEN" | sha256sum | cut -d' ' -f1)
[pricing]
workers = $workers
quotes = $quotes
[redis]
port = $RPORT
[kafka]
brokers = $BROKERS
[spool]
dir = $dir/spool
[modes]
emergency_pricing = stale
[supervisor]
libexec_dir = $BUILD/workers
EOF
  "$BUILD/supervisor/equilibriumd" -c "$dir/eq.conf" >>"$dir/eq.log" 2>&1 &
  DPID[$name]=$!
  PIDS+=($!)
  DPORT[$name]=$port
  DSHM[$name]=$shm
  wait_http "http://127.0.0.1:$port/readyz"
  local pids=""
  for _ in $(seq 1 100); do
    pids=$("$BUILD/eqctl/eqctl" --shm "$shm" status --json |
      python3 -c 'import json,sys; print(" ".join(str(w["pid"]) for w in json.load(sys.stdin)["workers"] if w["role"] == "pricing" and w["pid"] and w["ready"]))')
    [ "$(echo "$pids" | wc -w)" = "$workers" ] && break
    sleep 0.05
  done
  DWORKERS[$name]=$pids
}
mode() {   # name mode
  "$BUILD/eqctl/eqctl" --shm "${DSHM[$1]}" mode "$2" >/dev/null
}
url() { echo "http://127.0.0.1:${DPORT[$1]}/v1/pricing/z1"; }

start_daemon Q 1
start_daemon N 1 off
start_daemon T 2
BODY_BYTES=$(curl -s -H "Authorization: Bearer $TOKEN" "$(url Q)" | wc -c)
# T's stale table holds z1 once T read it live (normal mode): prime it.
curl -s -H "Authorization: Bearer $TOKEN" "$(url T)" >/dev/null
mode T emergency

# ---- nginx, same body size ----
NPORT=$(free_port)
mkdir -p "$TMP/nginx"
NBODY=$(py "print('x' * ($BODY_BYTES - 2))")
cat >"$TMP/nginx/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  server {
    listen 127.0.0.1:$NPORT;
    location / { default_type application/json; return 200 '"$NBODY"'; }
  }
}
NGINX
nginx -c "$TMP/nginx/nginx.conf" -p "$TMP/nginx" &
PIDS+=($!)
wait_http "http://127.0.0.1:$NPORT/"
NWORKER=$(pgrep -P "$(cat "$TMP/nginx/nginx.pid")" | head -1)
echo "bench_pricing: eq-pricing Q ${DWORKERS[Q]}, N ${DWORKERS[N]}, T ${DWORKERS[T]}; nginx worker $NWORKER;" \
  "answer body $BODY_BYTES bytes; $KAFKA_NOTE"

declare -A R P C
add() {   # name: appends this run's figures to the lists
  R[$1]="${R[$1]:-} $RPS"; P[$1]="${P[$1]:-} $P99_MS"; C[$1]="${C[$1]:-} $US_PER_REQ"
}
QCOST=""
RBS=""
for round in $(seq 1 "$ROUNDS"); do
  echo "bench_pricing: round $round of $ROUNDS (load $(cut -d' ' -f1 /proc/loadavg))"
  run_wrk "$(url Q)" ${DWORKERS[Q]}; add normal; cq=$US_PER_REQ
  run_wrk "$(url N)" ${DWORKERS[N]}; add noquotes
  QCOST="$QCOST $(py "print(f'{$cq - $US_PER_REQ:.2f}')")"
  mode Q emergency
  curl -s -H "Authorization: Bearer $TOKEN" "$(url Q)" | grep -q '"source":"stale"' ||
    { echo "bench_pricing: the emergency answer is not from the stale table" >&2; exit 1; }
  run_wrk "$(url Q)" ${DWORKERS[Q]}; add stale
  mode Q auto
  curl -s -H "Authorization: Bearer $TOKEN" "$(url T)" | grep -q '"source":"stale"' ||
    { echo "bench_pricing: T's emergency answer is not from the stale table" >&2; exit 1; }
  run_wrk "$(url T)" ${DWORKERS[T]}; add stale2
  run_wrk "http://127.0.0.1:$NPORT/v1/pricing/z1" "$NWORKER"; add nginx
  RBS="$RBS $(redis-benchmark -p "$RPORT" -c "$CONNS" -n $((DURATION * 30000)) -q HGETALL pricing:z1 2>/dev/null |
    tr '\r' '\n' | awk '/requests per second/ {for (i=1;i<=NF;i++) if ($i ~ /^[0-9.]+$/) v=$i} END {print v}')"
done
median() { py 'import statistics,sys; print(statistics.median(map(float, sys.argv[1:])))' "$@"; }
RB=$(median $RBS)
QC=$(median $QCOST)
for k in normal noquotes stale stale2 nginx; do
  R[$k]=$(median ${R[$k]}); P[$k]=$(median ${P[$k]}); C[$k]=$(median ${C[$k]})
done

# ---- memory ----
RSS_KIB=""
for p in ${DWORKERS[Q]}; do
  RSS_KIB=$(python3 "$HERE/bench_mem.py" rss "$p" "${DSHM[Q]}")
done
IDLE_OUT=$(python3 "$HERE/bench_mem.py" idle 127.0.0.1 "${DPORT[Q]}" "$IDLE_CONNS" \
  "${DWORKERS[Q]}" "${DSHM[Q]}" "$TOKEN")
echo "bench_pricing: $IDLE_OUT"
IDLE_B=$(echo "$IDLE_OUT" | awk '{for (i=1;i<=NF;i++) if ($i == "per_conn_bytes") print $(i+1)}')
STREAM_CODE=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 \
  -H "Authorization: Bearer $TOKEN" "$(url Q)/stream" || true)

date_utc=$(date -u +%Y-%m-%dT%H:%MZ)
echo
echo "bench_pricing $date_utc  wrk -t1 -c$CONNS -d${DURATION}s, median of $ROUNDS interleaved rounds, $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg)"
printf '%-36s %12s %10s %12s\n' "run" "req/s" "p99 ms" "CPU us/req"
printf '%-36s %12s %10s %12s\n' "eq-pricing normal (Redis, quotes)" "${R[normal]}" "${P[normal]}" "${C[normal]}"
printf '%-36s %12s %10s %12s\n' "eq-pricing normal, quotes off" "${R[noquotes]}" "${P[noquotes]}" "${C[noquotes]}"
printf '%-36s %12s %10s %12s\n' "eq-pricing stale (shm only)" "${R[stale]}" "${P[stale]}" "${C[stale]}"
printf '%-36s %12s %10s %12s\n' "eq-pricing stale, 2 workers" "${R[stale2]}" "${P[stale2]}" "${C[stale2]}"
printf '%-36s %12s %10s %12s\n' "nginx return 200 (1 worker)" "${R[nginx]}" "${P[nginx]}" "${C[nginx]}"
printf '%-36s %12s\n' "redis-benchmark HGETALL -P1" "$RB"
printf 'quote events cost %s us/answer (per-round differences:%s)\n' "$QC" "$QCOST"
printf 'RSS per pricing worker beyond the segment %s KiB\n' "$RSS_KIB"

python3 - "$FIGURES" "${R[stale]}" "${R[nginx]}" "${C[stale]}" "${C[nginx]}" "${R[normal]}" "$RB" \
  "${C[normal]}" "$QC" "${P[normal]}" "${P[stale]}" "${P[nginx]}" "${C[stale2]}" "$RSS_KIB" \
  "$IDLE_B" "$IDLE_CONNS" "$STREAM_CODE" <<'EOF'
import sys
(fig, stale, nginx, cstale, cnginx, normal, rb, cnormal, qc, p99n, p99s, p99x, cstale2,
 rss_kib, idle_b, idle_n, stream_code) = sys.argv[1:]
stale, nginx, cstale, cnginx, normal, rb, cnormal, qc, p99n, p99s, p99x, cstale2 = map(
    float, (stale, nginx, cstale, cnginx, normal, rb, cnormal, qc, p99n, p99s, p99x, cstale2))
rows = []
def row(name, ours, ref, ratio, target, ok):
    rows.append((name, ours, ref, ratio, target, "met" if ok else "NOT met"))
row("stale path, 1 worker, req/s vs nginx return 200", f"{stale:.0f}/s", f"{nginx:.0f}/s",
    f"{stale / nginx:.2f}x", ">= 1.2x", stale >= 1.2 * nginx)
row("stale path CPU per request vs nginx", f"{cstale:.2f} us", f"{cnginx:.2f} us",
    f"{cstale / cnginx:.2f}x", "<= 0.8x", cstale <= 0.8 * cnginx)
row("normal path (Redis, quotes on) vs redis-benchmark HGETALL -P1", f"{normal:.0f}/s", f"{rb:.0f}/s",
    f"{normal / rb:.2f}x", ">= 1.0x", normal >= rb)
row("normal path CPU per request vs the stale path's", f"{cnormal:.2f} us", f"{cstale:.2f} us",
    f"{cnormal / cstale:.2f}x", "<= 1.3x", cnormal <= 1.3 * cstale)
row("quote events' cost per answer", f"{qc:.2f} us", "-", "-", "<= 1 us", qc <= 1.0)
row("p99 at 64 connections, normal path vs nginx", f"{p99n:.2f} ms", f"{p99x:.2f} ms",
    f"{p99n / p99x:.2f}x", "<= 1.0x", p99n <= p99x)
row("p99 at 64 connections, stale path vs nginx", f"{p99s:.2f} ms", f"{p99x:.2f} ms",
    f"{p99s / p99x:.2f}x", "<= 1.0x", p99s <= p99x)
row("2 pricing workers: CPU per request, 2 vs 1 worker (stale)", f"{cstale2:.2f} us", f"{cstale:.2f} us",
    f"{cstale2 / cstale:.2f}x", "<= 1.1x (flat)", cstale2 <= 1.1 * cstale)
if rss_kib:
    r = float(rss_kib) / 1024
    row("RSS per pricing worker beyond the segment", f"{r:.1f} MiB", "-", "-", "<= 16 MiB", r <= 16)
if idle_b:
    b = float(idle_b)
    row(f"{int(idle_n)} idle keep-alive connections: RSS growth per connection", f"{b / 1024:.2f} KiB",
        "-", "-", "<= 4 KiB", b <= 4096)
if stream_code != "200":
    rows.append(("1,000 open live streams", "n/a", "-", "-", "measured once streams exist",
                 f"n/a (GET .../stream answers {stream_code or 'nothing'})"))
for r in rows:
    print("  " + " | ".join(r))
if fig:
    with open(fig, "a") as f:
        for r in rows:
            f.write("\t".join(r) + "\n")
EOF
