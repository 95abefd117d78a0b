"""Redis read replicas without Sentinel (DESIGN.md, "Data sources": the
backup cache): `redis.replicas` lists a real replica (redis-server
--replicaof the master). The master stopped: answers come from the
replica with its labels (`redis_replica`, real-time, 0.95, the master's
fallback_reason), every request within one Redis timeout; the master
back: answers from `redis` again.

A database is configured too (with other fares): the replica comes before
it in the chain. (Without one, the prober, which has no `redis_replica`
component yet, derives emergency from a failed master, and emergency asks
no backend: DESIGN.md wants a live replica to keep the mode degraded.)
"""

import os
import time

from eqtest.redis import Redis
from eqtest.util import wait_for

CONF = {"probe.interval_ms": "300", "probe.fast_interval_ms": "100",
        "probe.recovery_base_ms": "200", "probe.recovery_max_ms": "1000",
        "modes.degraded_stale_ttl_ms": "1"}
BOUND = 0.1 + 0.3            # redis.timeout_ms + margin


def _get(d, zone="z1"):
    time.sleep(0.005)
    t0 = time.monotonic()
    status, _h, body = d.http_json("GET", f"/v1/pricing/{zone}")
    return status, body, time.monotonic() - t0


def test_replica_answers_while_the_master_is_down(daemon, redis, pg_primary, kafka, test_tmp):
    replica = Redis(os.path.join(test_tmp, "replica"),
                    extra_args=["--replicaof", "127.0.0.1", str(redis.port),
                                "--repl-diskless-sync-delay", "0"]).start()
    try:
        redis.set_zone("z1", 12.5, 1.7)
        pg_primary.set_zone("z1", 99, 1.0)           # a database answer would show 99
        wait_for(lambda: replica.cmd("HGET", "pricing:z1", "base_fare") == "12.5", timeout=10,
                 desc="the replica to have z1")
        d = daemon(dict(CONF, **{"redis.replicas": f"127.0.0.1:{replica.port}"}),
                   redis=redis, pg_primary=pg_primary, kafka=kafka)
        status, p, _ = _get(d)
        assert (status, p["source"]) == (200, "redis"), p

        redis.stop()
        t0 = time.monotonic()
        first = None
        answers = []
        while time.monotonic() - t0 < 2.0:
            status, p, took = _get(d)
            answers.append((status, p.get("source"), p.get("fallback_reason"), took))
            if first is None and p.get("source") == "redis_replica":
                first = time.monotonic() - t0
            if p.get("source") == "redis_replica":
                assert (p["freshness"], p["confidence"], p["base_fare"]) == \
                    ("real-time", 0.95, 12.5), p
        assert all(a[0] == 200 for a in answers), answers[:5]
        assert max(a[3] for a in answers) < BOUND, max(a[3] for a in answers)
        sources = {(a[1], a[2]) for a in answers}
        assert sources <= {("redis_replica", "redis_unavailable"),
                           ("redis_replica", "redis_timeout")}, sources
        print(f"\n[replica] master stopped: first replica answer after {first * 1000:.0f} ms, "
              f"slowest {max(a[3] for a in answers) * 1000:.0f} ms")

        redis.start()                    # empty: the fixture keeps no data
        redis.set_zone("z1", 12.5, 1.7)
        wait_for(lambda: _get(d)[1].get("source") == "redis", timeout=15,
                 desc="answers from the master again")
    finally:
        replica.kill()
