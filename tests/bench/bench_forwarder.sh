#!/bin/sh
# bench_forwarder.sh [BUILD_DIR] [N] [ROUNDS]
#
# eq-forwarder's throughput against kcat, same broker, same run:
#   1. kcat -P produces N messages (the same kind: demand/supply events as
#      MessagePack, keyed by zone) from a file, with the forwarder's producer
#      settings (idempotence, acks=all, linger.ms=5, lz4);
#   2. ring -> broker: eq-forwarder (standalone) runs; N events are appended
#      to the shared-memory ring (16 MiB, the default: the producer waits
#      whenever it is full) as eq-pricing would; timed from the first append
#      until all are delivered;
#   3. replay: with the broker down the forwarder moves N events to the disk
#      spool; it is stopped, the broker comes back, a new forwarder starts;
#      timed until the spool is empty and all N are delivered.
# Each is run ROUNDS times (default 5, interleaved) and the best is kept: the machine
# is shared, and noise only ever slows a run down.
# Prints events/s for each and the ratios to kcat (target >= 0.8).
# The broker is eq-kafka-dev (librdkafka's mock cluster on loopback).
# FWD_WRAP="strace -c -f -o FILE" (say) runs eq-forwarder under a profiler.
set -eu

BUILD=${1:-build}
N=${2:-200000}
ROUNDS=${3:-5}
BUILD=$(cd "$BUILD" && pwd)
TOOL=$BUILD/tests/bench/bench_forwarder_tool
FWD=$BUILD/workers/eq-forwarder
KDEV=$BUILD/deploy/dev/eq-kafka-dev
for b in "$TOOL" "$FWD" "$KDEV"; do
	[ -x "$b" ] || { echo "bench_forwarder: $b is not built (ninja -C $BUILD)" >&2; exit 1; }
done
command -v kcat >/dev/null || { echo "bench_forwarder: kcat not installed" >&2; exit 1; }

TMP=$(mktemp -d /tmp/eqbench-fw-XXXXXX)
SHM=/eqbench-fw-$$
KDEV_PID=
FWD_PID=
cleanup() {
	[ -n "$FWD_PID" ] && kill -9 "$FWD_PID" 2>/dev/null || true
	if [ -n "$KDEV_PID" ]; then
		echo quit >&3 2>/dev/null || true
		exec 3>&- || true
		sleep 0.2
		kill -9 "$KDEV_PID" 2>/dev/null || true
	fi
	save_log
	"$TOOL" unlink "$SHM" 2>/dev/null || true
	rm -rf "$TMP"
}
trap cleanup EXIT INT TERM
# BENCH_LOG=FILE keeps eq-forwarder's log.
save_log() { [ -n "${BENCH_LOG:-}" ] && cp "$TMP/fwd.log" "$BENCH_LOG" 2>/dev/null || true; }

# The broker: 16 partitions (the mock keeps ~5 MiB each; it drops the
# oldest beyond that, which does not matter for throughput).
mkfifo "$TMP/kdev.in"
"$KDEV" --bootstrap-file "$TMP/bootstrap" --partitions 16 \
	--topics pricing.quotes,pricing.events,system.events <"$TMP/kdev.in" >"$TMP/kdev.out" 2>"$TMP/kdev.log" &
KDEV_PID=$!
exec 3>"$TMP/kdev.in"
i=0
while [ ! -s "$TMP/bootstrap" ]; do
	i=$((i + 1)); [ $i -lt 200 ] || { echo "eq-kafka-dev did not start" >&2; cat "$TMP/kdev.log" >&2; exit 1; }
	sleep 0.05
done
BS=$(cat "$TMP/bootstrap")
kdev() {   # one command, wait for its "ok"
	n=$(grep -c '^ok' "$TMP/kdev.out" || true)
	echo "$1" >&3
	i=0
	while [ "$(grep -c '^ok' "$TMP/kdev.out" || true)" -le "$n" ]; do
		i=$((i + 1)); [ $i -lt 200 ] || { echo "eq-kafka-dev: no ok for $1" >&2; exit 1; }
		sleep 0.05
	done
}

now() { date +%s.%N; }
rate() { awk -v n="$1" -v t="$2" 'BEGIN { printf "%.0f", n / t }'; }

# The default ring size; the replay phase below needs N to fit, so it is
# filled while the broker is down with the forwarder spooling.
RING=${BENCH_RING_BYTES:-16777216}
cat >"$TMP/fw.conf" <<EOF
[shm]
name = $SHM
ring_bytes = $RING
zones_capacity = 16
[kafka]
brokers = $BS
rdkafka.log_level = 3
[spool]
dir = $TMP/spool
fsync = batch
[supervisor]
drain_ms = 10000
${BENCH_EXTRA_CONF:-}
EOF

echo "bench_forwarder: $N events, broker $BS (eq-kafka-dev, 16 partitions), best of $ROUNDS"

best() {   # the smaller of two times ("" = none yet)
	if [ -z "$1" ]; then echo "$2"; else awk -v a="$1" -v b="$2" 'BEGIN { print (b < a) ? b : a }'; fi
}

start_fwd() {
	${FWD_WRAP:-} "$FWD" -c "$TMP/fw.conf" --slot 0 2>>"$TMP/fwd.log" &
	FWD_PID=$!
	"$TOOL" wait "$SHM" ready 0 30 >/dev/null
}
stop_fwd() {
	kill -TERM "$FWD_PID"
	wait "$FWD_PID" || true
	FWD_PID=
}

"$TOOL" gen "$N" "$TMP/msgs"
"$TOOL" create "$SHM" "$RING"
KCAT_S= FW_S= RP_S=
# Interleaved rounds, so a busy moment of the machine hits all three alike.
for r in $(seq "$ROUNDS"); do
	# 1. kcat
	t0=$(now)
	kcat -P -b "$BS" -t pricing.events -l -K '\xc1\xc0\xc1\xc0' -D '\xc1\xc1\xc1\xc1' \
		-X enable.idempotence=true -X acks=all -X linger.ms=5 -X batch.num.messages=10000 \
		-X compression.codec=lz4 -X partitioner=murmur2_random -X log_level=3 "$TMP/msgs"
	t1=$(now)
	KCAT_S=$(best "$KCAT_S" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')")

	# 2. ring -> broker: a running forwarder, events appended as fast as
	#    the ring takes them (the producer waits whenever it is full)
	start_fwd
	target=$(( $("$TOOL" count "$SHM") + N ))
	FW_S=$(best "$FW_S" "$("$TOOL" fill "$SHM" "$N" "$target" 300 2>/dev/null)")
	stop_fwd

	# 3. replay: spool N with the broker down, then a new forwarder
	kdev down
	start_fwd
	"$TOOL" fill "$SHM" "$N" 2>/dev/null
	"$TOOL" wait "$SHM" spooled "$N" 300 >/dev/null
	stop_fwd
	kdev up
	sleep 1
	target=$(( $("$TOOL" count "$SHM") + N ))
	t0=$(now)            # process start and spool scan included, as for kcat
	start_fwd
	"$TOOL" wait "$SHM" drained "$target" 300 >/dev/null
	t1=$(now)
	RP_S=$(best "$RP_S" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')")
	stop_fwd
done
KCAT_RATE=$(rate "$N" "$KCAT_S")
FW_RATE=$(rate "$N" "$FW_S")
RP_RATE=$(rate "$N" "$RP_S")
echo "kcat:               $N messages in ${KCAT_S}s = $KCAT_RATE msg/s"
echo "eq-forwarder ring:  $N events in ${FW_S}s = $FW_RATE events/s"
echo "eq-forwarder spool: $N events in ${RP_S}s = $RP_RATE events/s (replay)"

awk -v f="$FW_RATE" -v r="$RP_RATE" -v k="$KCAT_RATE" 'BEGIN {
	printf "ratio ring->broker / kcat:   %.2f (target >= 0.80)\n", f / k
	printf "ratio spool replay / kcat:   %.2f (target >= 0.80)\n", r / k
}'
