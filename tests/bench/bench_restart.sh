#!/bin/sh
# bench_restart.sh: how long a worker is gone after kill -9, from the kill
# to its replacement's ready flag (ready_mono_ms in the worker table).
# Starts a private equilibriumd (real workers if <build>/workers has all
# three, else the test stub worker), waits past restart_reset_ms between
# kills so each victim counts as "up long" (restarted at once, no backoff:
# DESIGN.md [supervisor] restart_reset_ms), and prints every sample and the
# median.  Target (issue 13): median <= 30 ms.
#
#   tests/bench/bench_restart.sh [BUILD_DIR] [--rounds N] [--role ROLE] [--stub]
#
# Timing never fails the run; a setup problem does (exit 1).
set -eu

build=${EQ_BUILD_DIR:-}
rounds=10
role=pricing
force_stub=0
while [ $# -gt 0 ]; do
	case "$1" in
	--rounds) rounds=$2; shift 2 ;;
	--role) role=$2; shift 2 ;;
	--stub) force_stub=1; shift ;;
	-h|--help) sed -n '2,12p' "$0"; exit 0 ;;
	*) build=$1; shift ;;
	esac
done
[ -n "$build" ] || build="$(cd "$(dirname "$0")/../.." && pwd)/build"
build=$(cd "$build" && pwd)
daemon=$build/supervisor/equilibriumd
probe=$build/tests/bench/bench_restart_kill
stub=$build/tests/unit/supervisor/eq-stub-worker
for f in "$daemon" "$probe"; do
	[ -x "$f" ] || { echo "bench_restart: $f is not built (ninja -C $build)" >&2; exit 1; }
done

tmp=$(mktemp -d /tmp/eq-bench-restart.XXXXXX)
shm=/eqbench-restart-$$
pid=
cleanup() {
	[ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
	rm -f "/dev/shm$shm"
	[ -n "${EQ_BENCH_KEEP:-}" ] && echo "kept $tmp" || rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

libexec=$build/workers
if [ "$force_stub" = 1 ] || [ ! -x "$libexec/eq-prober" ] || [ ! -x "$libexec/eq-pricing" ] ||
   [ ! -x "$libexec/eq-forwarder" ]; then
	[ -x "$stub" ] || { echo "bench_restart: no workers and no $stub" >&2; exit 1; }
	libexec=$tmp/libexec
	mkdir "$libexec"
	for r in prober pricing forwarder; do ln -s "$stub" "$libexec/eq-$r"; done
	echo "bench_restart: workers: test stub (eq-stub-worker)"
else
	echo "bench_restart: workers: $libexec"
fi
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
closed=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir "$tmp/spool"
cat > "$tmp/equilibrium.conf" <<CONF
[shm]
name = $shm
[http]
listen = 127.0.0.1:$port
[redis]
port = $closed
[kafka]
brokers = 127.0.0.1:$closed
[spool]
dir = $tmp/spool
[supervisor]
libexec_dir = $libexec
restart_base_ms = 100
restart_reset_ms = 1000
CONF

"$daemon" -c "$tmp/equilibrium.conf" 2>"$tmp/equilibriumd.log" &
pid=$!
# Each kill waits for every restart to count as "after a long uptime".
"$probe" --shm "$shm" --role "$role" --rounds "$rounds" --wait-ms 1200 || {
	echo "bench_restart: failed; daemon log:" >&2
	tail -20 "$tmp/equilibriumd.log" >&2
	exit 1
}
