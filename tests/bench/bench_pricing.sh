#!/usr/bin/env bash
# bench_pricing.sh: eq-pricing throughput, latency and CPU per request,
# against nginx and redis-benchmark on the same machine, in one go
# (issue 4, "Performance"; figures recorded in docs/http-api.md).
#
# Runs, each for $DURATION seconds after a warm-up, with wrk -t1 -c$CONNS:
#   1. normal path: equilibriumd as deployed (prober, forwarder, quote
#      events on; Kafka is eq-kafka-dev when built), Redis up, one pricing
#      worker, GET /v1/pricing/z1 with a bearer token;
#   2. the same with quote events off (EQ_PRICING_QUOTES=0);
#   3. the shared-memory path: override emergency, emergency_pricing =
#      stale, the zone already in the stale table (no backend call);
#   4. nginx, 1 worker, `return 200` with a JSON body of the same size;
#   5. redis-benchmark HGETALL pricing:z1 at the same concurrency, no
#      pipelining.
# CPU per request comes from /proc/PID/stat (utime + stime) before and
# after, for the eq-pricing worker and the nginx worker.  eq-pricing and
# nginx runs are interleaved ROUNDS times and medians printed, because the
# machine may be shared.
#
# Usage: tests/bench/bench_pricing.sh [BUILD_DIR]
# Env:   DURATION (10)  WARMUP (2)  CONNS (64)  ROUNDS (3)  KEEP=1 (keep the temp dir)
# This is a benchmark, not a test: it prints figures and whether the
# issue's targets were met, and exits 0 unless something failed to run.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=$(cd "${1:-${EQ_BUILD_DIR:-$REPO/build}}" && pwd)
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CONNS=${CONNS:-64}
ROUNDS=${ROUNDS:-3}
TOKEN=bench-token
TICK=$(getconf CLK_TCK)

for bin in "$BUILD/supervisor/equilibriumd" "$BUILD/eqctl/eqctl" "$BUILD/workers/eq-pricing"; do
  [ -x "$bin" ] || { echo "bench_pricing: $bin not built (ninja -C $BUILD)" >&2; exit 1; }
done
for tool in wrk nginx redis-server redis-benchmark redis-cli curl python3; do
  command -v "$tool" >/dev/null || { echo "bench_pricing: $tool not installed" >&2; exit 1; }
done

TMP=$(mktemp -d /tmp/eqbench-XXXXXX)
chmod 755 "$TMP"
PIDS=()
SHM=/eqbench-$$
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -f "/dev/shm/${SHM#/}"
  if [ -n "${KEEP:-}" ]; then echo "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_http() {   # url [status]
  for _ in $(seq 1 200); do
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

# wrk URL PIDS... -> sets RPS P99_MS US_PER_REQ
run_wrk() {
  local url=$1; shift
  wrk -t1 -c"$CONNS" -d"${WARMUP}s" -H "Authorization: Bearer $TOKEN" "$url" >/dev/null
  local c0 c1 out reqs
  c0=$(cpu_ticks "$@")
  out=$(wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -H "Authorization: Bearer $TOKEN" "$url")
  c1=$(cpu_ticks "$@")
  reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  RPS=$(echo "$out" | awk '/^Requests\/sec/ {print $2}')
  P99_MS=$(echo "$out" | awk '$1 == "99%" {v=$2; if (v ~ /us$/) {sub(/us$/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v*=1000}; print v}')
  US_PER_REQ=$(python3 -c "print(f'{($c1 - $c0) * 1e6 / $TICK / max($reqs, 1):.2f}')")
  local errs
  errs=$(echo "$out" | awk '/Non-2xx|Socket errors/ {print}')
  [ -z "$errs" ] || echo "  wrk: $errs"
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

# ---- equilibriumd ----
HPORT=$(free_port)
mkdir -p "$TMP/spool"
cat >"$TMP/eq.conf" <<EOF
[shm]
name = $SHM
[http]
listen = 127.0.0.1:$HPORT
[auth]
token_sha256 = $(printf %s "$TOKEN" | sha256sum | cut -d' ' -f1)
[pricing]
workers = 1
[redis]
port = $RPORT
[kafka]
brokers = $BROKERS
[spool]
dir = $TMP/spool
[modes]
emergency_pricing = stale
[supervisor]
libexec_dir = $BUILD/workers
EOF

start_daemon() {   # extra env assignments...
  env "$@" "$BUILD/supervisor/equilibriumd" -c "$TMP/eq.conf" >>"$TMP/eq.log" 2>&1 &
  SUP=$!
  PIDS+=($SUP)
  wait_http "http://127.0.0.1:$HPORT/readyz"
  PRICING=$("$BUILD/eqctl/eqctl" --shm "$SHM" status --json |
    python3 -c 'import json,sys; print(" ".join(str(w["pid"]) for w in json.load(sys.stdin)["workers"] if w["role"] == "pricing" and w["pid"]))')
}
stop_daemon() {
  kill "$SUP"; wait "$SUP" 2>/dev/null || true
}

URL="http://127.0.0.1:$HPORT/v1/pricing/z1"
declare -A R P C
add() {   # name: appends this run's figures to the lists
  R[$1]="${R[$1]:-} $RPS"; P[$1]="${P[$1]:-} $P99_MS"; C[$1]="${C[$1]:-} $US_PER_REQ"
}
median() { python3 -c 'import statistics,sys; print(statistics.median(map(float, sys.argv[1:])))' "$@"; }

start_daemon
BODY_BYTES=$(curl -s -H "Authorization: Bearer $TOKEN" "$URL" | wc -c)

# ---- nginx, same body size (measured between our runs) ----
NPORT=$(free_port)
mkdir -p "$TMP/nginx"
NBODY=$(python3 -c "print('x' * ($BODY_BYTES - 2))")
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
echo "eq-pricing worker pid(s): $PRICING; nginx worker $NWORKER; answer body $BODY_BYTES bytes; $KAFKA_NOTE"

# Interleaved rounds: the machine may be shared, so each figure is the
# median of ROUNDS runs taken side by side rather than one run each.
for round in $(seq 1 "$ROUNDS"); do
  run_wrk "$URL" $PRICING; add normal
  "$BUILD/eqctl/eqctl" --shm "$SHM" mode emergency >/dev/null
  curl -s -H "Authorization: Bearer $TOKEN" "$URL" | grep -q '"source":"stale"' ||
    { echo "bench_pricing: the emergency answer is not from the stale table" >&2; exit 1; }
  run_wrk "$URL" $PRICING; add stale
  "$BUILD/eqctl/eqctl" --shm "$SHM" mode auto >/dev/null
  run_wrk "http://127.0.0.1:$NPORT/v1/pricing/z1" "$NWORKER"; add nginx
done
stop_daemon

start_daemon EQ_PRICING_QUOTES=0
for round in $(seq 1 "$ROUNDS"); do
  run_wrk "$URL" $PRICING; add noquotes
done
stop_daemon

# ---- redis-benchmark, no pipelining, same concurrency ----
RBS=""
for round in $(seq 1 "$ROUNDS"); do
  RBS="$RBS $(redis-benchmark -p "$RPORT" -c "$CONNS" -n 300000 -q HGETALL pricing:z1 2>/dev/null |
    tr '\r' '\n' | awk '/requests per second/ {for (i=1;i<=NF;i++) if ($i ~ /^[0-9.]+$/) v=$i} END {print v}')"
done
RB=$(median $RBS)
for k in normal noquotes stale nginx; do
  R[$k]=$(median ${R[$k]}); P[$k]=$(median ${P[$k]}); C[$k]=$(median ${C[$k]})
done

date_utc=$(date -u +%Y-%m-%dT%H:%MZ)
echo
echo "bench_pricing $date_utc  wrk -t1 -c$CONNS -d${DURATION}s, median of $ROUNDS interleaved rounds, $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg)"
printf '%-34s %12s %10s %12s\n' "run" "req/s" "p99 ms" "CPU us/req"
printf '%-34s %12s %10s %12s\n' "eq-pricing normal (Redis, quotes)" "${R[normal]}" "${P[normal]}" "${C[normal]}"
printf '%-34s %12s %10s %12s\n' "eq-pricing normal, quotes off" "${R[noquotes]}" "${P[noquotes]}" "${C[noquotes]}"
printf '%-34s %12s %10s %12s\n' "eq-pricing stale (shm only)" "${R[stale]}" "${P[stale]}" "${C[stale]}"
printf '%-34s %12s %10s %12s\n' "nginx return 200 (1 worker)" "${R[nginx]}" "${P[nginx]}" "${C[nginx]}"
printf '%-34s %12s\n' "redis-benchmark HGETALL" "$RB"
python3 - "${R[stale]}" "${R[nginx]}" "${C[stale]}" "${C[nginx]}" "${R[normal]}" "${R[noquotes]}" "$RB" \
  "${P[normal]}" "${P[stale]}" <<'EOF'
import sys
stale, nginx, cstale, cnginx, normal, noq, rb, p99n, p99s = map(float, sys.argv[1:])
def verdict(ok): return "met" if ok else "NOT met"
print(f"stale/nginx throughput      {stale / nginx:5.2f}x  (target >= 1.0: {verdict(stale >= nginx)})")
print(f"stale/nginx CPU per request {cstale / cnginx:5.2f}x  (target <= 1.0: {verdict(cstale <= cnginx)})")
print(f"normal/redis-benchmark      {normal / rb:5.2f}x  (target >= 0.8: {verdict(normal >= 0.8 * rb)})")
print(f"normal (quotes off)/redis   {noq / rb:5.2f}x")
print(f"p99 normal {p99n:.2f} ms, stale {p99s:.2f} ms (target < 2 ms: {verdict(p99n < 2 and p99s < 2)})")
EOF
