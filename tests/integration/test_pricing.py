"""eq-pricing through the real daemon: each row of DESIGN.md's
source/freshness table, each fallback_reason, each mode's behaviour, the
API surface (batch, status, metrics, readiness, auth). Faults (Redis down or
hung, databases down, worker kills) are in test_pricing_faults.py; HTTP
edge cases in test_pricing_http.py.

Most tests keep the prober quiet (one probe per hour) so that what the
chain does is decided by the test, not by a mode change racing it; the
tests about the prober's part set their own intervals.
"""

import re
import time

import pytest

from eqtest import wait_for

QUIET_PROBER = {"probe.interval_ms": "3600000", "probe.fast_interval_ms": "3600000"}
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def now_ms():
    return int(time.time() * 1000)


def start(daemon, **overrides):
    conf = dict(QUIET_PROBER)
    conf.update(overrides)
    return daemon(conf)


def price(d, zone, **kw):
    status, headers, body = d.http_json("GET", f"/v1/pricing/{zone}", **kw)
    assert status == 200, (status, body)
    assert headers["X-Equilibrium-Source"] == body["source"]
    assert headers["X-Equilibrium-Mode"] == body["mode"]
    assert headers["Content-Type"] == "application/json"
    return body


def check_row(p, source, freshness, confidence, reason):
    assert (p["source"], p["freshness"]) == (source, freshness), p
    assert p["confidence"] == pytest.approx(confidence), p
    assert p.get("fallback_reason") == reason, p
    assert ("warning" in p) == (source == "default"), p


# --------------------------------------------------------------------------
# Rows of the source table

def test_redis_row_is_real_time(daemon, redis, pg_primary):
    redis.set_zone("z1", 12.5, 1.7, supply_count=10, demand_count=17,
                   updated_at=now_ms() - 2000)
    d = start(daemon)
    p = price(d, "z1")
    check_row(p, "redis", "real-time", 1.0, None)
    assert p["zone_id"] == "z1"
    assert (p["base_fare"], p["surge_multiplier"]) == (12.5, 1.7)
    assert (p["supply_count"], p["demand_count"]) == (10, 17)
    assert 2000 <= p["age_ms"] < 3000
    assert p["mode"] == "normal"
    assert ISO_MS.match(p["timestamp"])
    # The price object's field set is the contract's, nothing less.
    assert set(p) == {"zone_id", "base_fare", "surge_multiplier", "supply_count",
                      "demand_count", "confidence", "source", "freshness", "age_ms",
                      "timestamp", "mode"}


def test_redis_without_updated_at_has_age_zero(daemon, redis):
    redis.set_zone("z1", 12.5, 1.7, updated_at=False)
    d = start(daemon)
    p = price(d, "z1")
    check_row(p, "redis", "real-time", 1.0, None)
    assert p["age_ms"] == 0


def test_live_read_refreshes_the_stale_entry(daemon, redis):
    redis.set_zone("z1", 12.5, 1.7)
    d = start(daemon)
    price(d, "z1")
    rc, out, err = d.eqctl("prices", "z1", "--json")
    assert rc == 0, err
    assert "z1" in out and "12.5" in out and "redis" in out


def test_database_row_when_redis_misses(daemon, redis, pg_primary, pg_backup):
    pg_primary.set_zone("z2", 20.25, 1.1, last_updated="now() - interval '10 seconds'")
    d = start(daemon)
    p = price(d, "z2")
    check_row(p, "database", "stale", 0.9, "redis_miss")
    assert (p["base_fare"], p["surge_multiplier"]) == (20.25, 1.1)
    assert 10000 <= p["age_ms"] < 12000


def test_database_row_when_redis_is_down(daemon, redis, pg_primary):
    pg_primary.set_zone("z2", 20.0, 1.1)
    d = start(daemon)
    redis.stop()
    p = price(d, "z2")
    check_row(p, "database", "stale", 0.9, "redis_unavailable")


def test_database_row_when_redis_times_out(daemon, redis, pg_primary):
    redis.set_zone("z2", 12.5, 1.7)
    pg_primary.set_zone("z2", 20.0, 1.1)
    d = start(daemon)
    assert price(d, "z2")["source"] == "redis"
    redis.pause(3000)
    t0 = time.monotonic()
    p = price(d, "z2")
    took = time.monotonic() - t0
    check_row(p, "database", "stale", 0.9, "redis_timeout")
    assert 0.09 <= took < 0.1 + 0.4


def test_backup_answers_when_primary_is_down(daemon, redis, pg_primary, pg_backup):
    pg_primary.set_zone("z3", 20.0, 1.1)
    pg_backup.set_zone("z3", 21.0, 1.2)
    d = start(daemon)
    assert price(d, "z3")["base_fare"] == 20.0
    pg_primary.stop()
    p = price(d, "z3")
    check_row(p, "database", "stale", 0.9, "redis_miss")
    assert p["base_fare"] == 21.0


def test_all_down_stale_then_default(daemon, redis, pg_primary, pg_backup):
    redis.set_zone("z4", 12.5, 1.7, updated_at=False)
    d = start(daemon)
    price(d, "z4")                       # remembered in shared memory
    time.sleep(0.3)
    redis.stop()
    pg_primary.stop()
    pg_backup.stop()
    p = price(d, "z4")
    check_row(p, "stale", "very_stale", 0.5, "all_systems_unavailable")
    assert p["base_fare"] == 12.5 and p["supply_count"] == 10
    assert p["age_ms"] >= 300            # from the live read
    p = price(d, "never-seen")
    check_row(p, "default", "default", 0.1, "all_systems_unavailable")
    assert (p["base_fare"], p["surge_multiplier"]) == (12.5, 1.0)
    assert (p["supply_count"], p["demand_count"]) == (0, 0)


def test_redis_miss_and_databases_down(daemon, redis, pg_primary, pg_backup):
    pg_primary.set_zone("z5", 20.0, 1.1)
    d = start(daemon)
    check_row(price(d, "z5"), "database", "stale", 0.9, "redis_miss")
    pg_primary.stop()
    pg_backup.stop()
    check_row(price(d, "z5"), "stale", "very_stale", 0.5, "database_unavailable")
    check_row(price(d, "z6"), "default", "default", 0.1, "database_unavailable")


def test_zone_not_found(daemon, redis, pg_primary, pg_backup):
    d = start(daemon)
    p = price(d, "nowhere")
    check_row(p, "default", "default", 0.1, "zone_not_found")


def test_defaults_per_zone_and_global(daemon, redis):
    d = start(daemon, **{"zone:vip.base_fare": "30", "zone:vip.surge_multiplier": "2.5",
                         "pricing.default_base_fare": "9.75",
                         "pricing.default_confidence": "0.2"})
    redis.stop()
    p = price(d, "vip")
    check_row(p, "default", "default", 0.2, "all_systems_unavailable")
    assert (p["base_fare"], p["surge_multiplier"]) == (30.0, 2.5)
    p = price(d, "other")
    assert (p["base_fare"], p["surge_multiplier"]) == (9.75, 1.0)


# --------------------------------------------------------------------------
# Modes

def test_degraded_serves_fresh_cache_without_backend(daemon, redis):
    redis.set_zone("z1", 12.5, 1.7, updated_at=now_ms() - 4000)
    d = start(daemon)
    price(d, "z1")
    rc, _, err = d.eqctl("mode", "degraded")
    assert rc == 0, err
    redis.set_zone("z1", 99, 9)          # not asked while the cache is fresh
    p = price(d, "z1")
    check_row(p, "stale", "stale", 0.7, "degraded_cache")
    assert p["mode"] == "degraded" and p["base_fare"] == 12.5
    assert p["age_ms"] >= 4000           # age from updated_at, TTL from the read
    # A zone without a fresh entry goes live, in degraded mode.
    redis.set_zone("z2", 14, 1.2)
    p = price(d, "z2")
    check_row(p, "redis", "real-time", 1.0, None)
    assert p["mode"] == "degraded"


def test_degraded_cache_expires(daemon, redis):
    redis.set_zone("z1", 12.5, 1.7)
    d = start(daemon, **{"modes.degraded_stale_ttl_ms": "300"})
    price(d, "z1")
    d.eqctl("mode", "degraded")
    redis.set_zone("z1", 13.5, 1.7)
    time.sleep(0.4)
    p = price(d, "z1")
    check_row(p, "redis", "real-time", 1.0, None)
    assert p["base_fare"] == 13.5


def test_batch_is_off_in_degraded_and_emergency(daemon, redis):
    d = start(daemon)
    assert d.http("GET", "/v1/pricing?zones=a,b")[0] == 200
    for mode in ("degraded", "emergency"):
        d.eqctl("mode", mode)
        status, headers, body = d.http_json("GET", "/v1/pricing?zones=a,b")
        assert status == 503 and body["error"] == "feature_disabled", body
        assert mode in body["message"]
        assert "Retry-After" in headers


def test_emergency_default_without_backend(daemon, redis):
    redis.set_zone("z1", 12.5, 1.7)
    d = start(daemon)
    price(d, "z1")
    d.eqctl("mode", "emergency")
    redis.set_zone("z1", 99, 9)
    p = price(d, "z1")
    check_row(p, "default", "default", 0.1, "emergency_mode")
    assert p["mode"] == "emergency" and p["base_fare"] == 12.5
    d.eqctl("mode", "auto")
    assert price(d, "z1")["base_fare"] == 99


def test_emergency_stale_pricing(daemon, redis):
    redis.set_zone("z1", 12.5, 1.7)
    d = start(daemon, **{"modes.emergency_pricing": "stale"})
    price(d, "z1")
    d.eqctl("mode", "emergency")
    check_row(price(d, "z1"), "stale", "very_stale", 0.5, "emergency_mode")
    check_row(price(d, "absent"), "default", "default", 0.1, "emergency_mode")


def test_events_disabled_in_emergency(daemon, redis):
    d = start(daemon)
    d.eqctl("mode", "emergency")
    ev = {"type": "demand", "zone_id": "z1", "count": 1}
    status, headers, body = d.http_json("POST", "/v1/events", body=ev)
    assert status == 503 and body["error"] == "feature_disabled"
    assert "Retry-After" in headers


def test_mode_from_the_prober_redis_failed_is_skipped(daemon, redis, pg_primary):
    """The prober marks Redis failed; from then on no request waits on it,
    even one whose hang would cost the full timeout."""
    pg_primary.set_zone("z7", 20.0, 1.1)
    d = daemon({"probe.interval_ms": "100", "probe.fall": "2",
                "modes.degraded_stale_ttl_ms": "1"})
    redis.freeze()
    wait_for(lambda: d.status()["components"]["redis"]["state"] == "failed", timeout=10,
             desc="the prober to mark redis failed")
    for _ in range(5):
        # Past the 1 ms degraded-cache TTL, so each answer is a live read
        # (two requests within one millisecond would share the cache).
        time.sleep(0.005)
        t0 = time.monotonic()
        p = price(d, "z7")
        assert time.monotonic() - t0 < 0.05
        check_row(p, "database", "stale", 0.9, "redis_unavailable")


# --------------------------------------------------------------------------
# API surface

def test_batch_answers_in_request_order(daemon, redis, pg_primary):
    redis.set_zone("b1", 1.5, 1.0)
    pg_primary.set_zone("b2", 2.5, 1.0)
    d = start(daemon)
    status, headers, body = d.http_json("GET", "/v1/pricing?zones=b2,nowhere,b1,b2")
    assert status == 200
    ps = body["prices"]
    assert [p["zone_id"] for p in ps] == ["b2", "nowhere", "b1", "b2"]
    assert [p["source"] for p in ps] == ["database", "default", "redis", "database"]
    assert ps[1]["fallback_reason"] == "zone_not_found"
    assert headers["X-Equilibrium-Mode"] == "normal"
    zones = ",".join(f"z{i}" for i in range(100))
    assert len(d.http_json("GET", f"/v1/pricing?zones={zones}")[2]["prices"]) == 100
    status, _, body = d.http_json("GET", f"/v1/pricing?zones={zones},z100")
    assert (status, body["error"]) == (400, "too_many_zones")
    for q in ("zones=a,,b", "zones=", "zones=a/b", "zones=%41", "x=1"):
        status, _, body = d.http_json("GET", f"/v1/pricing?{q}")
        assert (status, body["error"]) == (400, "invalid_zone_id"), q


def test_status_is_eqctl_status(daemon, redis):
    d = start(daemon)
    status, headers, body = d.http_json("GET", "/v1/status")
    assert status == 200 and headers["Content-Type"] == "application/json"
    st = d.status()
    assert set(body) == set(st)
    for k in ("mode", "auto_mode", "override", "mode_since"):
        assert body[k] == st[k], k
    assert set(body["components"]) == set(st["components"])
    assert {w["role"] for w in body["workers"]} >= {"pricing"}
    assert d.http("GET", "/v1/status", token=None)[0] == 401


def test_healthz_readyz(daemon):
    d = daemon(dict(QUIET_PROBER), redis=False)
    status, headers, body = d.http("GET", "/healthz", token=None)
    assert (status, body) == (200, b"ok") and headers["Content-Type"].startswith("text/plain")
    status, _, body = d.http_json("GET", "/readyz", token=None)
    assert status == 200 and body == {"ready": True, "mode": "normal"}
    d.eqctl("mode", "degraded")
    assert d.http_json("GET", "/readyz", token=None)[2]["mode"] == "degraded"


def test_metrics(daemon, redis):
    redis.set_zone("z1", 12.5, 1.7)
    d = start(daemon)
    price(d, "z1")
    d.http("GET", "/v1/pricing/bad%20id")
    status, headers, body = d.http("GET", "/metrics", token=None)
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = body.decode()
    assert 'eq_mode{mode="normal"} 1\n' in text
    assert 'eq_mode{mode="emergency"} 0\n' in text
    assert 'eq_price_answers_total{source="redis"} 1\n' in text
    assert 'eq_requests_total{endpoint="pricing",code="200",mode="normal"} 1\n' in text
    assert 'eq_requests_total{endpoint="pricing",code="400",mode="normal"} 1\n' in text
    assert re.search(r'eq_component_state\{component="redis",state="\w+"\} 1\n', text)
    for name in ("eq_mode_seconds_total", "eq_request_duration_seconds_bucket",
                 "eq_request_duration_seconds_sum", "eq_request_duration_seconds_count",
                 "eq_events_total", "eq_event_lag_seconds", "eq_worker_restarts_total"):
        assert f"\n{name}" in text, name
    # Every sample line is NAME{LABELS} VALUE with a numeric value.
    for line in text.splitlines():
        if line and not line.startswith("#"):
            assert re.match(r'^[a-z_]+(\{[^}]*\})? [0-9.e+Inf-]+$', line), line


def test_auth(daemon, redis):
    redis.set_zone("z1", 12.5, 1.7)
    d = start(daemon)
    assert d.http("GET", "/v1/pricing/z1")[0] == 200
    for token, hdrs in ((None, None), ("wrong", None), (None, {"Authorization": "Basic eDp5"})):
        status, headers, body = d.http_json("GET", "/v1/pricing/z1", token=token, headers=hdrs)
        assert status == 401 and body["error"] == "unauthorized"
        assert headers["WWW-Authenticate"] == "Bearer"
    for path in ("/healthz", "/readyz", "/metrics"):
        assert d.http("GET", path, token=None)[0] == 200, path


def test_auth_off_is_said_loudly(daemon, redis):
    redis.set_zone("z1", 12.5, 1.7)
    d = daemon(dict(QUIET_PROBER), token=None)
    assert d.http("GET", "/v1/pricing/z1", token=None)[0] == 200
    wait_for(lambda: "auth is OFF" in d.log_text(), timeout=5, desc="the auth-off warning")


def test_events_accepted_all_or_nothing(daemon, redis):
    d = start(daemon)
    evs = [{"type": "demand", "zone_id": "z1", "count": 3, "ts": now_ms()},
           {"type": "supply", "zone_id": "z2", "count": 0}]
    status, _, body = d.http_json("POST", "/v1/events", body=evs)
    assert status == 202, body
    assert body["accepted"] == 2 and len(body["event_ids"]) == 2
    assert all(re.match(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$", i)
               for i in body["event_ids"])
    status, _, body = d.http_json("POST", "/v1/events", body=evs + [{"type": "x"}])
    assert status == 400 and body["error"] == "invalid_event" and body["index"] == 2
    status, _, body = d.http_json("POST", "/v1/events", body="not json")
    assert status == 400 and body["error"] == "invalid_event" and "index" not in body
    status, headers, _ = d.http("GET", "/v1/events")
    assert status == 405 and headers["Allow"] == "POST"
    text = d.http("GET", "/metrics", token=None)[2].decode()
    assert 'eq_events_total{outcome="accepted"} 2\n' in text
