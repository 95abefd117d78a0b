"""Real network partitions (DESIGN.md, "Production topologies"): Redis and
PostgreSQL each run in their own network namespace (fixture netns), reached
over a veth pair; a partition sets the far end's link down with the
neighbours pinned, so packets vanish and connections hang instead of
being refused (tests/integration/test_topo_harness.py proves that).

Redis partitioned, then PostgreSQL partitioned (Redis healed), then both,
then both healed. Throughout, every request is answered 200, within the
bound a refused backend gets: one timeout of the partitioned backend at
most (both timeouts when both hang at once, before the circuits open);
the answers' source and the mode follow DESIGN.md ("Modes", the source
tables); after the heal, answers come from Redis again and the mode is
normal.
"""

import os
import time

import pytest

from eqtest.pg import PgCluster
from eqtest.redis import Redis
from eqtest.util import wait_for

REDIS_TIMEOUT = 0.1          # redis.timeout_ms default
PG_TIMEOUT = 0.5             # postgres.timeout_ms default
MARGIN = 0.3                 # scheduling slack on a loaded 2-core box
CONF = {"probe.interval_ms": "300", "probe.fast_interval_ms": "100",
        "probe.recovery_base_ms": "200", "probe.recovery_max_ms": "1000",
        # Degraded mode would serve its 30 s cache without asking anyone:
        # 1 ms, so every answer below is a live decision.
        "modes.degraded_stale_ttl_ms": "1"}


@pytest.fixture
def ns_backends(netns, test_tmp):
    """(redis, pg, redis_ns, pg_ns): each server in its own namespace."""
    rns, pns = netns("redis"), netns("pg")
    r = Redis(os.path.join(test_tmp, "ns-redis"), host=rns.addr, netns=rns).start()
    pg = PgCluster(os.path.join(test_tmp, "ns-pg"), name="ns-pg", host=pns.addr, netns=pns)
    try:
        pg.create()
        yield r, pg, rns, pns
    finally:
        rns.heal()
        pns.heal()
        r.kill()
        pg.destroy()


def _run(d, seconds, zone="z1"):
    """Requests back to back for `seconds`; [(status, source, reason, mode, took)]."""
    out = []
    t_end = time.monotonic() + seconds
    while time.monotonic() < t_end:
        time.sleep(0.005)                  # past the 1 ms degraded-cache TTL
        t0 = time.monotonic()
        status, _h, body = d.http_json("GET", f"/v1/pricing/{zone}", timeout=10)
        took = time.monotonic() - t0
        out.append((status, body.get("source"), body.get("fallback_reason"), body.get("mode"),
                    took))
    return out


def _check(answers, bound, sources, label):
    assert answers, label
    bad = [a for a in answers if a[0] != 200]
    assert not bad, f"{label}: non-200 answers {bad[:5]}"
    slow = max(a[4] for a in answers)
    assert slow < bound, f"{label}: a request took {slow:.3f}s (bound {bound:.3f}s)"
    seen = {(a[1], a[2]) for a in answers}
    assert seen <= sources, f"{label}: unexpected sources {seen - sources}"
    print(f"\n[partition] {label}: {len(answers)} answers, slowest {slow * 1000:.0f} ms, "
          f"sources {sorted(seen, key=str)}")
    return slow


def _state(d, comp):
    return d.status()["components"][comp]["state"]


def test_partitions_redis_then_postgres_then_both_then_heal(daemon, kafka, ns_backends):
    r, pg, rns, pns = ns_backends
    r.set_zone("z1", 12.5, 1.7)
    pg.set_zone("z1", 11.0, 1.5)
    d = daemon(CONF, redis=r, pg_primary=pg, kafka=kafka)
    wait_for(lambda: d.status()["mode"] == "normal", timeout=15, desc="normal mode")
    _check(_run(d, 0.5), REDIS_TIMEOUT + MARGIN, {("redis", None)}, "healthy")

    # 1. Redis partitioned: answers from the database (the hung master
    # costs at most its timeout), mode degraded once the prober fails it.
    rns.partition()
    t0 = time.monotonic()
    ans = _run(d, 1.0)
    wait_for(lambda: _state(d, "redis") == "failed", timeout=10, desc="redis failed")
    failed_after = time.monotonic() - t0
    ans += _run(d, 1.0)
    _check(ans, REDIS_TIMEOUT + MARGIN,
           {("database", "redis_timeout"), ("database", "redis_unavailable")},
           "redis partitioned")
    assert d.status()["mode"] == "degraded"
    print(f"[partition] redis partitioned -> failed after {failed_after:.2f}s")

    # 2. Redis healed, PostgreSQL partitioned: answers from Redis again
    # (the database is not asked for a zone Redis has), mode degraded
    # while postgres_primary is failed.
    rns.heal()
    t0 = time.monotonic()
    wait_for(lambda: _state(d, "redis") == "healthy", timeout=15, desc="redis healthy again")
    redis_back = time.monotonic() - t0
    # Pricing workers follow the prober's "healthy" within 250 ms; until
    # then a request may still skip Redis for the database.
    time.sleep(0.3)
    pns.partition()
    ans = _run(d, 0.5)
    wait_for(lambda: _state(d, "postgres_primary") == "failed", timeout=10,
             desc="postgres_primary failed")
    ans += _run(d, 1.0)
    _check(ans, REDIS_TIMEOUT + MARGIN, {("redis", None)}, "postgres partitioned")
    assert d.status()["mode"] == "degraded"
    # A zone Redis lacks must ask the hung database: one PG timeout at most,
    # then the default (nothing known).
    miss = _run(d, 1.5, zone="nowhere")
    _check(miss, PG_TIMEOUT + MARGIN,
           {("default", "database_unavailable"), ("default", "zone_not_found")},
           "postgres partitioned, redis miss")
    print(f"[partition] redis healed -> healthy after {redis_back:.2f}s")

    # 3. Both partitioned: no live source. Until the circuits open a request
    # may wait out both timeouts; then the last known price (stale), and
    # emergency mode once the prober has failed both.
    rns.partition()
    ans = _run(d, 1.0)
    wait_for(lambda: d.status()["mode"] == "emergency", timeout=10, desc="emergency mode")
    ans += _run(d, 1.0)
    _check(ans, REDIS_TIMEOUT + PG_TIMEOUT + MARGIN,
           {("stale", "all_systems_unavailable"), ("database", "redis_timeout"),
            ("database", "redis_unavailable"), ("default", "emergency_mode")},
           "both partitioned")
    last = ans[-1]
    assert (last[1], last[2], last[3]) == ("default", "emergency_mode", "emergency"), last

    # 4. Both healed: back to Redis and normal mode, nothing restarted.
    rns.heal()
    pns.heal()
    t0 = time.monotonic()
    wait_for(lambda: d.status()["mode"] == "normal", timeout=20, desc="normal mode after heal")
    healed = time.monotonic() - t0
    time.sleep(0.3)                        # pricing follows the prober within 250 ms
    _check(_run(d, 0.5), REDIS_TIMEOUT + MARGIN, {("redis", None)}, "healed")
    print(f"[partition] both healed -> normal after {healed:.2f}s")
