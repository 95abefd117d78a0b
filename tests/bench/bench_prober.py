#!/usr/bin/env python3
"""Benchmark of eq-prober's detection and recovery times with the default
[probe] settings, against real servers (issue 5, "Done when"):

    refused   redis stopped            -> automatic mode degraded   target 1.5 s
              (its shutdown closes the probe's connection: the passive
              signal has the prober probe at once)
    refused0  redis moved to a closed  -> redis failed              target 1.5 s
              port by a reload (no connection to lose: the probes alone)
    hung      redis CLIENT PAUSE       -> redis failed              target 2.5 s
    recovery  redis back after a long  -> redis healthy             target 5.5 s
              outage (backoff at its cap)

Each time is measured from the moment the fault is in place (or removed)
to the timestamp of the history record the prober wrote in shared memory,
so the benchmark's own polling adds nothing.  Prints median and worst of
RUNS runs per scenario; exits 1 if a worst case misses its target.

Usage: bench_prober.py [--runs N] [--build DIR]   (tests/bench/bench_prober.sh)
"""

import argparse
import datetime
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

from eqtest import closed_port, wait_for  # noqa: E402
from eqtest.daemon import Daemon  # noqa: E402
from eqtest.kafka import Kafka  # noqa: E402
from eqtest.pg import PgCluster  # noqa: E402
from eqtest.redis import Redis  # noqa: E402

TARGETS = {"refused": 1.5, "refused0": 1.5, "hung": 2.5, "recovery": 5.5}


def hist_time(rec):
    return datetime.datetime.strptime(rec["time"], "%Y-%m-%dT%H:%M:%S.%fZ") \
        .replace(tzinfo=datetime.timezone.utc).timestamp()


def history(d):
    rc, out, err = d.eqctl("history", "--json")
    if rc != 0:
        raise RuntimeError(err)
    return json.loads(out)


def last_index(d):
    h = history(d)
    return h[-1]["index"] if h else -1


def record_after(d, mark, **match):
    def find():
        for rec in history(d):
            if rec["index"] > mark and all(rec.get(k) == v for k, v in match.items()):
                return rec
        return None
    return wait_for(find, timeout=20, interval=0.05, desc=str(match))


def state(d, name):
    return d.status()["components"][name]["state"]


def wait_normal(d, timeout=30):
    def ok():
        st = d.status()
        return st["auto_mode"] == "normal" and all(
            c["state"] == "healthy" for c in st["components"].values() if c.get("configured", True))
    wait_for(ok, timeout=timeout, interval=0.1, desc="every component healthy")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--build", default=None, help="meson build dir (default $EQ_BUILD_DIR or build)")
    args = ap.parse_args()
    if args.build:
        os.environ["EQ_BUILD_DIR"] = os.path.abspath(args.build)

    root = tempfile.mkdtemp(prefix=f"eqbench-prober-{os.getpid()}-", dir="/tmp")
    os.chmod(root, 0o755)
    redis = kafka = pg = d = None
    results = {k: [] for k in TARGETS}
    ok = False
    try:
        redis = Redis(os.path.join(root, "redis")).start()
        pg = PgCluster(os.path.join(root, "pg"), name="bench-pg").create()
        kafka = Kafka(os.path.join(root, "kafka")).start()
        d = Daemon(os.path.join(root, "daemon"), root, {}, redis=redis, pg_primary=pg,
                   kafka=kafka)
        d.start()
        wait_normal(d)
        for run in range(args.runs):
            # refused: stop -> mode degraded
            mark = last_index(d)
            redis.stop()
            t = time.time()
            rec = record_after(d, mark, kind="auto", to="degraded")
            results["refused"].append(hist_time(rec) - t)
            # recovery: after a long enough outage for the backoff to sit
            # at its cap, at a random instant of its period
            time.sleep(8 + random.uniform(0, 5))
            mark = last_index(d)
            redis.start()
            t = time.time()
            rec = record_after(d, mark, kind="component", component="redis", to="healthy")
            results["recovery"].append(hist_time(rec) - t)
            wait_normal(d)
            # hung: CLIENT PAUSE -> redis failed
            time.sleep(random.uniform(0, 1))
            mark = last_index(d)
            redis.pause(4000)
            t = time.time()
            rec = record_after(d, mark, kind="component", component="redis", to="failed")
            results["hung"].append(hist_time(rec) - t)
            wait_normal(d, timeout=20)
            # refused0: a reload points the prober at a closed port; it
            # drops its client before the next probe, which is refused.
            time.sleep(random.uniform(0, 1))
            mark = last_index(d)
            d.reload({"redis.port": closed_port()})
            t = time.time()
            rec = record_after(d, mark, kind="component", component="redis", to="failed")
            results["refused0"].append(hist_time(rec) - t)
            d.reload({"redis.port": redis.port})
            wait_normal(d, timeout=20)
            print(f"run {run + 1}/{args.runs}: refused {results['refused'][-1]:.3f} s, "
                  f"refused0 {results['refused0'][-1]:.3f} s, "
                  f"recovery {results['recovery'][-1]:.3f} s, hung {results['hung'][-1]:.3f} s",
                  flush=True)
        ok = True
    finally:
        for x in (d,):
            if x is not None:
                x.close()
        for x in (kafka,):
            if x is not None:
                x.close()
        if redis is not None:
            redis.kill()
        if pg is not None:
            pg.destroy()
        if ok:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"bench files kept in {root}", file=sys.stderr)

    print()
    print(f"{'scenario':<10} {'runs':>4} {'median':>9} {'worst':>9} {'target':>8}")
    missed = False
    for name, target in TARGETS.items():
        xs = results[name]
        worst = max(xs)
        flag = "ok" if worst <= target else "OVER TARGET"
        missed |= worst > target
        print(f"{name:<10} {len(xs):>4} {statistics.median(xs):>8.3f}s {worst:>8.3f}s "
              f"{target:>7.1f}s  {flag}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
