"""What each mode costs, measured from real answers (DESIGN.md "Modes":
the status JSON's `modes` and `impact`), the `api` component judged by real
traffic as well as by its probe ("Component health"), and the alert on the
oldest undelivered event ([alerts] event_age_ms) — issue 14, observed as an
operator sees them: `eqctl status`, the status JSON, the alerts a local
webhook receives."""

import threading
import time

from eqtest import wait_for
from test_prober import Sink, wait_all_healthy, wait_component, wait_mode


def get_prices(d, n, zone="z1"):
    for _ in range(n):
        status, _, _ = d.http("GET", f"/v1/pricing/{zone}")
        assert status == 200


def test_status_measures_each_mode_and_its_impact(daemon, redis, pg_primary, kafka):
    redis.set_zone("z1", 10.0, 1.5)
    d = daemon()
    wait_all_healthy(d)
    get_prices(d, 40)
    rc, _, err = d.eqctl("mode", "degraded")
    assert rc == 0, err
    wait_for(lambda: d.status()["mode"] == "degraded", timeout=5, desc="override applied")
    get_prices(d, 40)

    st = d.status()
    normal, degraded, emergency = (st["modes"][m] for m in ("normal", "degraded", "emergency"))
    assert normal["requests"] >= 40 and degraded["requests"] >= 40
    for m in (normal, degraded):
        assert m["seconds"] > 0
        assert m["errors"] == 0 and m["availability"] == 1.0
        assert m["mean_ms"] > 0 and m["p99_ms"] >= m["mean_ms"] * 0.5
        assert m["p99_ms"] < 1000
    # Never visited: no figures rather than made-up ones.
    assert emergency["requests"] == 0
    assert emergency["mean_ms"] is None and emergency["p99_ms"] is None
    assert emergency["availability"] is None
    imp = st["impact"]
    assert set(imp) == {"degraded", "emergency"}
    for k in ("response_time_pct", "throughput_pct", "error_rate_pct", "availability_pct"):
        assert isinstance(imp["degraded"][k], float), (k, imp["degraded"])
        assert imp["emergency"][k] is None
    assert imp["degraded"]["error_rate_pct"] == 0.0
    assert imp["degraded"]["availability_pct"] == 0.0

    # The same figures, for a person.
    rc, out, err = d.eqctl("status")
    assert rc == 0, err
    assert "impact vs normal:" in out
    row = [line for line in out.splitlines()
           if line.split()[:1] == ["degraded"] and "pts" in line]
    assert row, out
    # GET /v1/status is the same document.
    code, _, body = d.http_json("GET", "/v1/status")
    assert code == 200 and set(body["impact"]) == {"degraded", "emergency"}
    assert body["modes"]["degraded"]["requests"] >= 40


def test_resolve_alert_carries_the_impact_against_normal(daemon, redis, pg_primary, kafka):
    sink = Sink()
    try:
        redis.set_zone("z1", 10.0, 1.5)
        d = daemon({"alerts.webhook_url": sink.url("/hook")})
        wait_all_healthy(d)
        get_prices(d, 30)
        redis.stop()
        wait_mode(d, "degraded", 5)
        get_prices(d, 30)
        redis.start()
        wait_mode(d, "normal", 10)

        def resolved():
            return [b for b, _, _ in sink.on("/hook")
                    if b["subject"] == "mode" and b["event"] == "resolve"]
        wait_for(resolved, timeout=10, desc="the mode's resolve alert")
        detail = resolved()[0]["detail"]
        assert detail.startswith("degraded for "), detail
        assert "p99 " in detail and "; vs normal: response time " in detail, detail
        assert "throughput " in detail and "5xx " in detail and "availability " in detail, detail
        assert " pts" in detail, detail
    finally:
        sink.close()


def test_api_is_degraded_by_slow_real_traffic_and_recovers(daemon, redis, pg_primary, kafka):
    """Real answers slower than probe.api_latency_ms at p99 make `api`
    degraded although its own /healthz probe answers at once."""
    redis.set_zone("z1", 10.0, 1.5)
    d = daemon({"probe.api_latency_ms": "50", "redis.timeout_ms": "2000",
                "probe.redis_timeout_ms": "2000", "probe.redis_latency_ms": "1000",
                "modes.degraded_stale_ttl_ms": "1"})
    wait_all_healthy(d)
    stop = threading.Event()

    def pauser():                      # Redis answers, but ~200 ms late
        while not stop.is_set():
            redis.pause(200)
            time.sleep(0.22)

    def client():
        while not stop.is_set():
            d.http("GET", "/v1/pricing/z1")

    threads = [threading.Thread(target=pauser), threading.Thread(target=client)]
    for t in threads:
        t.start()
    try:
        wait_component(d, "api", "degraded", 8)
        api = d.status()["components"]["api"]
        assert api["last_error"].startswith("real traffic: p99 "), api
        assert "over 50 ms" in api["last_error"], api
    finally:
        stop.set()
        for t in threads:
            t.join()
    # Fast answers again: the next windows are fine and the probe too.
    def healthy_again():
        d.http("GET", "/v1/pricing/z1")
        return d.status()["components"]["api"]["state"] == "healthy"
    wait_for(healthy_again, timeout=8, desc="api healthy again")


def test_alert_while_events_wait_longer_than_event_age(daemon, redis, pg_primary, kafka):
    sink = Sink()
    try:
        d = daemon({"alerts.webhook_url": sink.url("/hook"), "alerts.event_age_ms": "1000",
                    "alerts.min_interval_ms": "0"})
        wait_all_healthy(d)
        kafka.down()
        code, _, body = d.http_json("POST", "/v1/events",
                                    {"type": "demand", "zone_id": "z1", "count": 3})
        assert code == 202, body

        def events_alerts():
            return [b for b, _, _ in sink.on("/hook") if b["subject"] == "events"]
        wait_for(events_alerts, timeout=10, desc="events trigger")
        trig = events_alerts()[0]
        assert trig["event"] == "trigger" and trig["state"] == "late", trig
        assert trig["kind"] == "events" and trig["severity"] == "warning"
        assert "oldest undelivered event" in trig["detail"], trig
        assert d.status()["events"]["oldest_undelivered_age_ms"] > 1000
        kafka.up()
        wait_for(lambda: len(events_alerts()) >= 2, timeout=30, desc="events resolve")
        res = events_alerts()[1]
        assert res["event"] == "resolve" and res["state"] == "flowing", res
        assert res["dedup_key"] == trig["dedup_key"]
        assert d.status()["events"]["oldest_undelivered_age_ms"] <= 1000
        assert "the oldest undelivered event is" in d.log_text()
    finally:
        sink.close()
