"""PostgreSQL primary + streaming hot standby (DESIGN.md, "Production
topologies"): the standby (pg_basebackup -R, fixture pg_standby) is
`postgres.backup`. Redis runs without the zones, so every answer is a
database read (`redis_miss`).

- the prober reports each database's recovery state and the standby's
  replay lag (`in_hot_standby`, `replay_lag_ms`);
- the primary stopped: the standby answers, every request within one
  PostgreSQL timeout;
- the standby promoted (pg_ctl promote): it keeps answering, nothing
  restarted (same daemon workers, same postmaster), and rows written to it
  afterwards are served.
"""

import time

from eqtest.util import wait_for

# modes.degraded_stale_ttl_ms=1: once the primary is failed the mode is
# degraded, and the degraded cache would otherwise answer without asking
# any database for 30 s.
CONF = {"probe.interval_ms": "300", "probe.fast_interval_ms": "100",
        "probe.recovery_base_ms": "200", "probe.recovery_max_ms": "1000",
        "modes.degraded_stale_ttl_ms": "1"}
PG_TIMEOUT_S = 0.5          # postgres.timeout_ms default


def _get(d, zone):
    t0 = time.monotonic()
    status, headers, body = d.http_json("GET", f"/v1/pricing/{zone}")
    took = time.monotonic() - t0
    assert status == 200, (status, body)
    return body, took


def _comp(d, name):
    return d.status()["components"][name]


def _pids(d):
    return sorted((w["role"], w["pid"]) for w in d.workers())


def test_prober_reports_recovery_state_and_replay_lag(daemon, redis, kafka, pg_primary,
                                                      pg_standby):
    d = daemon(CONF, redis=redis, kafka=kafka, pg_primary=pg_primary, pg_backup=pg_standby)
    wait_for(lambda: _comp(d, "postgres_backup")["in_hot_standby"] is True, timeout=10,
             desc="postgres_backup reported as a hot standby")
    pri = _comp(d, "postgres_primary")
    assert pri["in_hot_standby"] is False and pri["replay_lag_ms"] is None, pri
    wait_for(lambda: _comp(d, "postgres_backup")["replay_lag_ms"] == 0, timeout=10,
             desc="replay lag 0 on a caught-up standby")

    # Replay paused while the primary writes: the lag is the age of the
    # last replayed transaction and grows; resumed, it returns to 0.
    pg_primary.set_zone("z0", 1, 1)
    pg_standby.wait_caught_up()
    pg_standby.sql("SELECT pg_wal_replay_pause()")
    pg_primary.set_zone("z1", 2, 1)
    wait_for(lambda: (_comp(d, "postgres_backup")["replay_lag_ms"] or 0) >= 1000, timeout=10,
             desc="replay lag over 1 s while replay is paused")
    assert _comp(d, "postgres_backup")["state"] == "healthy"    # informational only
    pg_standby.sql("SELECT pg_wal_replay_resume()")
    wait_for(lambda: _comp(d, "postgres_backup")["replay_lag_ms"] == 0, timeout=10,
             desc="replay lag back to 0 after resume")


def test_primary_stopped_standby_answers_then_promoted_keeps_answering(
        daemon, redis, kafka, pg_primary, pg_standby):
    pg_primary.set_zone("z1", 12.5, 1.7, supply_count=10, demand_count=17)
    pg_standby.wait_caught_up()
    d = daemon(CONF, redis=redis, kafka=kafka, pg_primary=pg_primary, pg_backup=pg_standby)
    p, _ = _get(d, "z1")
    assert (p["source"], p["fallback_reason"], p["base_fare"]) == ("database", "redis_miss", 12.5)
    wait_for(lambda: _comp(d, "postgres_backup")["in_hot_standby"] is True, timeout=10,
             desc="postgres_backup reported as a hot standby")
    workers = _pids(d)
    standby_pm = pg_standby.postmaster_pid()

    # The primary goes away: the standby answers. Every answer within one
    # PostgreSQL timeout (the primary's), and from the database tier.
    pg_primary.stop()
    t_stop = time.monotonic()
    first = None
    worst = 0.0
    while time.monotonic() - t_stop < 3.0:
        time.sleep(0.005)
        p, took = _get(d, "z1")
        worst = max(worst, took)
        assert p["source"] == "database" and p["base_fare"] == 12.5, p
        if first is None:
            first = time.monotonic() - t_stop
    assert worst < PG_TIMEOUT_S + 0.3, f"a request took {worst:.3f}s with the primary down"
    wait_for(lambda: _comp(d, "postgres_primary")["state"] == "failed", timeout=10,
             desc="postgres_primary failed")
    assert _comp(d, "postgres_backup")["state"] == "healthy"
    print(f"\n[pg] primary stopped: standby's first answer after {first * 1000:.0f} ms, "
          f"slowest request {worst * 1000:.0f} ms")

    # Promotion: same postmaster, now writable; the daemon is not touched.
    pg_standby.promote()
    t_promote = time.monotonic()
    pg_standby.set_zone("z2", 7.25, 1.3)          # only the promoted standby has it
    p, took = _get(d, "z2")
    assert (p["source"], p["base_fare"]) == ("database", 7.25), p
    print(f"[pg] standby promoted: a row written to it served "
          f"{(time.monotonic() - t_promote) * 1000:.0f} ms after promote returned")
    for _ in range(20):
        time.sleep(0.005)
        p, took = _get(d, "z1")
        assert p["source"] == "database" and took < PG_TIMEOUT_S + 0.3, (p, took)
    wait_for(lambda: _comp(d, "postgres_backup")["in_hot_standby"] is False, timeout=10,
             desc="postgres_backup reported promoted")
    assert _comp(d, "postgres_backup")["state"] == "healthy"
    assert pg_standby.postmaster_pid() == standby_pm
    assert _pids(d) == workers, "a worker was restarted"
