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
    ttl_ms = 2000
    redis.set_zone("z1", 12.5, 1.7)
    d = start(daemon, **{"modes.degraded_stale_ttl_ms": str(ttl_ms)})
    t_read = time.monotonic()
    assert price(d, "z1")["base_fare"] == 12.5          # the live read: TTL counts from here
    rc, _, err = d.eqctl("mode", "degraded")
    assert rc == 0, err
    assert d.status()["mode"] == "degraded"
    redis.set_zone("z1", 13.5, 1.7)
    # Within the TTL: degraded mode serves the cached entry, Redis unasked.
    p = price(d, "z1")
    assert time.monotonic() - t_read < ttl_ms / 1000, "the in-TTL answer came too late to judge"
    check_row(p, "stale", "stale", 0.7, "degraded_cache")
    assert p["mode"] == "degraded" and p["base_fare"] == 12.5
    # Past the TTL: Redis again, still in degraded mode.
    time.sleep(max(0.0, ttl_ms / 1000 + 0.1 - (time.monotonic() - t_read)))
    p = price(d, "z1")
    check_row(p, "redis", "real-time", 1.0, None)
    assert p["mode"] == "degraded" and p["base_fare"] == 13.5


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


def scrape(d):
    status, _, body = d.http("GET", "/metrics", token=None)
    assert status == 200
    return body.decode()


def sample(text, name):
    """The value of one sample, NAME{LABELS} exactly as exported."""
    m = re.search(r"^" + re.escape(name) + r" (\S+)$", text, re.M)
    assert m, f"no sample {name}"
    return float(m.group(1))


def histogram(text, mode):
    """{le: cumulative count} (le a float, inf for +Inf), sum, count."""
    buckets = {float(le.replace("+Inf", "inf")): float(v) for le, v in re.findall(
        r'^eq_request_duration_seconds_bucket\{mode="' + mode + r'",le="([^"]+)"\} (\S+)$',
        text, re.M)}
    return (buckets, sample(text, f'eq_request_duration_seconds_sum{{mode="{mode}"}}'),
            sample(text, f'eq_request_duration_seconds_count{{mode="{mode}"}}'))


def requests(text, endpoint=r"\w+", mode="normal"):
    """eq_requests_total summed over codes (and endpoints, by default)."""
    return sum(float(v) for v in re.findall(
        r'^eq_requests_total\{endpoint="' + endpoint + r'",code="\d+",mode="' + mode + r'"\} (\S+)$',
        text, re.M))


def test_metrics_move_with_what_they_measure(daemon, redis):
    """The time, latency and lag metrics driven and read back, not only seen
    at zero (eq_worker_restarts_total: test_supervisor.py)."""
    redis.set_zone("z1", 12.5, 1.7)
    t_start = time.time()
    d = start(daemon, **{"redis.timeout_ms": "200"})
    # (the prober's first GET /healthz, then none for an hour: QUIET_PROBER)
    wait_for(lambda: requests(scrape(d), "healthz") >= 1, timeout=10, desc="the api probe")

    # eq_request_duration_seconds: every answer is in the histogram of its
    # mode, buckets cumulative; a request held by a paused Redis (past the
    # 200 ms timeout) lands above 0.1 s and adds its time to the sum.
    for _ in range(5):
        price(d, "z1")
    a = scrape(d)
    buckets, total, count = histogram(a, "normal")
    assert count == requests(a) >= 5, a
    assert buckets[float("inf")] == count
    les = sorted(buckets)
    assert all(buckets[x] <= buckets[y] for x, y in zip(les, les[1:])), buckets
    assert 0 < total < count * 0.2, total
    redis.pause(1000)
    t0 = time.monotonic()
    d.http("GET", "/v1/pricing/z1")
    slow = time.monotonic() - t0
    assert slow >= 0.2, slow
    b = scrape(d)
    buckets2, total2, count2 = histogram(b, "normal")
    # the scrape a and the slow request, and any probe of the prober's
    assert count2 - count == 2 + requests(b, "healthz") - requests(a, "healthz"), (a, b)
    assert buckets2[0.1] <= buckets[0.1] + 1             # the slow one is not at or below 0.1 s
    assert buckets2[1.0] == buckets[1.0] + 2 or slow > 1.0
    assert total2 - total >= 0.15, (total, total2)

    # eq_mode_seconds_total: one second in degraded by override, counted
    # there and nowhere else; it stops growing when the mode is left.
    rc, _, err = d.eqctl("mode", "degraded")
    assert rc == 0, err
    t_set = time.time()
    time.sleep(1.0)
    t_clear0 = time.time()
    rc, _, err = d.eqctl("mode", "auto")
    assert rc == 0, err
    t_clear1 = time.time()
    c = scrape(d)
    degraded = sample(c, 'eq_mode_seconds_total{mode="degraded"}')
    normal = sample(c, 'eq_mode_seconds_total{mode="normal"}')
    assert t_clear0 - t_set - 0.1 <= degraded <= t_clear1 - t_set + 0.6, degraded  # + eqctl's start
    assert sample(c, 'eq_mode_seconds_total{mode="emergency"}') == 0
    assert 0 < normal <= time.time() - t_start - degraded + 0.01, normal
    time.sleep(0.3)
    c2 = scrape(d)
    assert sample(c2, 'eq_mode_seconds_total{mode="degraded"}') == degraded
    assert sample(c2, 'eq_mode_seconds_total{mode="normal"}') >= normal + 0.25

    # eq_event_lag_seconds: Kafka is absent (a closed port), so an accepted
    # event stays undelivered and the lag is its age, growing.
    status, _, body = d.http_json("POST", "/v1/events", body={"type": "demand", "zone_id": "z1", "count": 1})
    assert status == 202, body
    t_posted = time.time()
    lag = wait_for(lambda: (lambda v: v if v >= 1.0 else None)(
        sample(scrape(d), "eq_event_lag_seconds")), timeout=20, desc="an event lag of 1 s")
    assert lag <= time.time() - t_start + 0.01, lag
    time.sleep(0.5)
    lag2 = sample(scrape(d), "eq_event_lag_seconds")
    assert lag2 >= lag + 0.4 and lag2 >= time.time() - t_posted - 0.5, (lag, lag2)


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
