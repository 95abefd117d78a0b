#!/bin/sh
# Detection and recovery times of eq-prober against real redis-server,
# PostgreSQL and eq-kafka-dev, default [probe] settings: median and worst of
# several runs vs the targets 1.5 s (refused), 2.5 s (hung), 5.5 s
# (recovery).  Exits 1 if a worst case misses its target.
#
# Usage: tests/bench/bench_prober.sh [BUILD_DIR] [RUNS]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-${EQ_BUILD_DIR:-$here/../../build}}
runs=${2:-5}
exec /usr/bin/python3 "$here/bench_prober.py" --build "$build" --runs "$runs"
