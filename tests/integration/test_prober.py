"""eq-prober against real servers, observed as an operator would: through
`eqctl status --json`, `eqctl history --json` and the alerts a local HTTP
sink receives (issue 5, "Tests"; docs/health.md).

Timing: detection and recovery are measured from the moment the fault is
in place to the history record of the transition in shared memory (its
own timestamp, so the polling here adds nothing), against the design's
bounds with default settings: a refused connection is failed within
1.5 s, a hung one within 2.5 s, a recovery seen within 5.5 s. A small
margin covers process start-up of the fault itself and a loaded CI box.
"""

import datetime
import json
import os
import signal
import stat
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from eqtest import closed_port, wait_for

MARGIN = 0.35           # s: scheduling slack on a loaded 2-core box
REFUSED_TARGET = 1.5    # interval + (fall-1) x fast
HUNG_TARGET = 2.5       # interval + fall x timeout + (fall-1) x fast, rounded up
RECOVERY_TARGET = 5.5   # recovery_max + rise x fast


# --------------------------------------------------------------------------
# helpers

def hist_time(rec):
    return datetime.datetime.strptime(rec["time"], "%Y-%m-%dT%H:%M:%S.%fZ") \
        .replace(tzinfo=datetime.timezone.utc).timestamp()


def history(d):
    rc, out, err = d.eqctl("history", "--json")
    assert rc == 0, err
    return json.loads(out)


def find_history(d, after_index=-1, **match):
    """The first history record after after_index whose fields match."""
    for rec in history(d):
        if rec["index"] > after_index and all(rec.get(k) == v for k, v in match.items()):
            return rec
    return None


def last_index(d):
    h = history(d)
    return h[-1]["index"] if h else -1


def comp(d, name):
    return d.status()["components"][name]


def wait_component(d, name, state, timeout):
    return wait_for(lambda: comp(d, name)["state"] == state, timeout=timeout, interval=0.05,
                    desc=f"{name} {state} (now {comp(d, name)['state']})")


def wait_mode(d, mode, timeout):
    return wait_for(lambda: d.status()["auto_mode"] == mode, timeout=timeout, interval=0.05,
                    desc=f"auto mode {mode}")


def wait_all_healthy(d, timeout=20):
    """The baseline every test starts from: every configured component
    healthy and the automatic mode normal."""
    def ok():
        st = d.status()
        bad = {k: v["state"] for k, v in st["components"].items()
               if v.get("configured", True) and v["state"] != "healthy"}
        return st["auto_mode"] == "normal" and not bad
    try:
        wait_for(ok, timeout=timeout, interval=0.1, desc="every component healthy")
    except TimeoutError:
        st = d.status()
        pytest.fail("baseline not reached: mode %s, components %s" % (
            st["auto_mode"], {k: (v["state"], v.get("last_error")) for k, v in st["components"].items()}))


def transition_delay(d, t_fault, after, **match):
    """Seconds from t_fault to the history record matching `match`."""
    rec = wait_for(lambda: find_history(d, after, **match), timeout=15, interval=0.05,
                   desc=f"history record {match}")
    return hist_time(rec) - t_fault, rec


def prober_pid(d):
    ws = d.workers("prober")
    return ws[0]["pid"] if ws else None


# --------------------------------------------------------------------------
# redis: refused, recovered, hung

def test_redis_stopped_is_failed_within_target_then_recovers(daemon, redis, pg_primary, kafka):
    d = daemon()
    wait_all_healthy(d)
    mark = last_index(d)

    redis.stop()
    t_down = time.time()
    dt, rec = transition_delay(d, t_down, mark, kind="component", component="redis", to="failed")
    assert dt <= REFUSED_TARGET + MARGIN, f"redis failed {dt:.3f} s after it stopped"
    dm, mrec = transition_delay(d, t_down, mark, kind="auto", to="degraded")
    assert dm <= REFUSED_TARGET + MARGIN
    assert "redis failed" in mrec["cause"]
    # unhealthy came first and did not change the mode
    unh = find_history(d, mark, kind="component", component="redis", to="unhealthy")
    assert unh is not None and unh["index"] < rec["index"]
    assert find_history(d, mark, kind="auto", to="normal") is None

    st = d.status()
    assert st["mode"] == "degraded" and st["auto_mode"] == "degraded"
    r = st["components"]["redis"]
    assert r["state"] == "failed"
    assert r["consecutive_failures"] >= 3
    assert r["last_error"] and "refused" in r["last_error"]
    assert 800 <= r["backoff_ms"] <= 5000

    # Let the backoff reach its cap, then restart: healthy after rise.
    time.sleep(8)
    assert comp(d, "redis")["state"] == "failed"         # never given up on, never flapped
    mark = last_index(d)
    redis.start()
    t_up = time.time()
    dr, _ = transition_delay(d, t_up, mark, kind="component", component="redis", to="healthy")
    assert dr <= RECOVERY_TARGET + MARGIN, f"recovery seen {dr:.3f} s after redis came back"
    wait_mode(d, "normal", 2)
    # The recovered Redis passed the write/read round trip (a GET of the
    # probe's own health key, set with a short expiry).
    keys = redis.cmd("KEYS", "equilibrium:health:*")
    assert keys, "the probe writes its health key"
    assert 0 < redis.cmd("PTTL", keys[0]) <= 10000


def test_redis_hung_is_detected_without_the_prober_hanging(daemon, redis, pg_primary, kafka):
    d = daemon()
    wait_all_healthy(d)
    mark = last_index(d)
    pid = prober_pid(d)

    redis.pause(6000)                       # CLIENT PAUSE: connections accepted, nothing answered
    t_hang = time.time()
    dt, _ = transition_delay(d, t_hang, mark, kind="component", component="redis", to="failed")
    assert dt <= HUNG_TARGET + MARGIN, f"hung redis failed after {dt:.3f} s"
    wait_mode(d, "degraded", 1)
    assert "no answer within 250 ms" in comp(d, "redis")["last_error"] \
        or "timeout" in comp(d, "redis")["last_error"]

    # The prober kept turning: heartbeats fresh, same process, the other
    # components probed on schedule meanwhile.
    k0 = comp(d, "kafka")["last_ok"]
    time.sleep(1.5)
    st = d.status()
    w = [x for x in st["workers"] if x["role"] == "prober"][0]
    assert w["pid"] == pid
    assert w["heartbeat_age_ms"] < 1000
    assert st["components"]["kafka"]["last_ok"] != k0
    assert st["components"]["kafka"]["state"] == "healthy"

    # The pause ends: recovered.
    wait_component(d, "redis", "healthy", 6 + RECOVERY_TARGET + MARGIN)
    wait_mode(d, "normal", 2)


def test_redis_slow_is_degraded(daemon, redis, pg_primary, kafka):
    """An answer slower than probe.redis_latency_ms (here 30 ms) but within
    the probe timeout: degraded, then healthy after rise fast answers."""
    d = daemon({"probe.redis_latency_ms": "30"})
    wait_all_healthy(d)

    def slow_once():
        redis.pause(120)                    # the next probe's commands wait 120 ms
    deadline = time.time() + 10
    while comp(d, "redis")["state"] != "degraded" and time.time() < deadline:
        slow_once()
        time.sleep(0.1)
    r = comp(d, "redis")
    assert r["state"] == "degraded", r
    assert "over 30 ms" in r["last_error"]
    wait_mode(d, "degraded", 1)
    wait_component(d, "redis", "healthy", 5)
    wait_mode(d, "normal", 2)


# --------------------------------------------------------------------------
# postgres and the emergency mode

def test_postgres_primary_stopped_is_degraded(daemon, redis, pg_primary, pg_backup, kafka):
    d = daemon()
    wait_all_healthy(d)
    mark = last_index(d)
    pg_primary.stop()
    t_down = time.time()
    dt, _ = transition_delay(d, t_down, mark, kind="component", component="postgres_primary",
                             to="failed")
    assert dt <= REFUSED_TARGET + MARGIN
    wait_mode(d, "degraded", 1)
    st = d.status()
    assert st["components"]["postgres_backup"]["state"] == "healthy"
    assert st["components"]["redis"]["state"] == "healthy"
    pg_primary.start()
    wait_component(d, "postgres_primary", "healthy", RECOVERY_TARGET + 2)
    wait_mode(d, "normal", 2)


def test_no_live_price_source_is_emergency(daemon, redis, pg_primary, pg_backup, kafka):
    d = daemon()
    wait_all_healthy(d)
    mark = last_index(d)
    redis.stop()
    pg_primary.stop()
    wait_mode(d, "degraded", 5)
    assert d.status()["auto_mode"] == "degraded"        # the backup is still a live source
    pg_backup.stop()
    t = time.time()
    dt, rec = transition_delay(d, t, mark, kind="auto", to="emergency")
    assert dt <= REFUSED_TARGET + MARGIN
    assert "no live price source" in rec["cause"]
    assert d.status()["mode"] == "emergency"
    # One database back is a live source again: degraded; all back: normal.
    pg_backup.start()
    wait_mode(d, "degraded", RECOVERY_TARGET + 3)
    redis.start()
    pg_primary.start()
    wait_mode(d, "normal", RECOVERY_TARGET + 3)


def test_unconfigured_backup_is_not_probed(daemon, redis, pg_primary, kafka):
    d = daemon(pg_backup=False)
    wait_all_healthy(d)
    b = comp(d, "postgres_backup")
    assert b["state"] == "unknown" and b.get("configured") is False
    # Primary down and no backup: redis still answers, so degraded.
    pg_primary.stop()
    wait_mode(d, "degraded", 5)
    redis.stop()
    wait_mode(d, "emergency", 5)


# --------------------------------------------------------------------------
# reload and restart

def test_reload_applies_endpoints_and_thresholds(daemon, redis, pg_primary, kafka):
    d = daemon()
    wait_all_healthy(d)
    d.reload({"redis.port": closed_port()})
    wait_component(d, "redis", "failed", 5)
    d.reload({"redis.port": redis.port, "probe.recovery_max_ms": "1000",
              "probe.recovery_base_ms": "500"})
    wait_component(d, "redis", "healthy", 1.0 + 2 * 0.25 + 1.5)
    wait_mode(d, "normal", 2)


def test_prober_killed_keeps_the_outage(daemon, redis, pg_primary, kafka):
    """SIGKILL of eq-prober while Redis is down: the supervisor restarts it;
    the new prober adopts the failed state (the mode never reads normal)."""
    d = daemon()
    wait_all_healthy(d)
    redis.stop()
    wait_mode(d, "degraded", 5)
    since = comp(d, "redis")["since"]
    old = prober_pid(d)
    os.kill(old, signal.SIGKILL)
    t_end = time.time() + 5
    while time.time() < t_end:
        st = d.status()
        assert st["auto_mode"] == "degraded", st["auto_mode"]
        assert st["components"]["redis"]["state"] == "failed"
        time.sleep(0.05)
    new = wait_for(lambda: prober_pid(d) not in (None, 0, old) and prober_pid(d), timeout=10)
    assert new != old
    assert comp(d, "redis")["since"] == since       # the same outage
    redis.start()
    wait_mode(d, "normal", RECOVERY_TARGET + 3)


# --------------------------------------------------------------------------
# alerts

class Sink:
    """A loopback HTTP server recording every POST (path, parsed JSON body,
    arrival time); answers 202."""

    def __init__(self):
        sink = self
        self.reqs = []
        self.lock = threading.Lock()

        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(n)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {"__invalid__": raw.decode(errors="replace")}
                with sink.lock:
                    sink.reqs.append((self.path, body, time.time(),
                                      self.headers.get("Content-Type")))
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.srv.server_address[1]
        self.thread = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def on(self, path):
        with self.lock:
            return [(b, t, ct) for p, b, t, ct in self.reqs if p == path]

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


@pytest.fixture
def sink():
    s = Sink()
    yield s
    s.close()


SLACK = "/services/T000/B000/XXXXSECRET"
ROUTING_KEY = "R0UTINGKEY0000000000000000000000"


def alert_conf(sink, **extra):
    conf = {
        "alerts.webhook_url": sink.url("/hook"),
        "alerts.slack_webhook_url": sink.url(SLACK),
        "alerts.pagerduty_url": sink.url("/v2/enqueue"),
        "alerts.pagerduty_routing_key": ROUTING_KEY,
    }
    conf.update(extra)
    return conf


def test_alerts_one_trigger_one_resolve_per_channel(daemon, redis, pg_primary, kafka, sink):
    d = daemon(alert_conf(sink))
    wait_all_healthy(d)
    redis.stop()
    wait_mode(d, "degraded", 5)
    redis.start()
    wait_mode(d, "normal", RECOVERY_TARGET + 3)
    time.sleep(1.0)                                   # deliveries are asynchronous

    # Generic webhook: redis trigger then resolve, mode trigger then resolve.
    hook = [b for b, _, ct in sink.on("/hook")]
    assert all(ct == "application/json" for _, _, ct in sink.on("/hook"))
    assert not any("__invalid__" in b for b in hook)
    redis_ev = [b for b in hook if b["subject"] == "redis"]
    assert [b["event"] for b in redis_ev] == ["trigger", "resolve"]
    assert redis_ev[0]["severity"] == "critical" and redis_ev[0]["state"] == "failed"
    assert redis_ev[1]["state"] == "healthy"
    assert redis_ev[0]["dedup_key"] == redis_ev[1]["dedup_key"]
    assert redis_ev[0]["dedup_key"].startswith("equilibrium/") and \
        redis_ev[0]["dedup_key"].endswith("/redis")
    mode_ev = [b for b in hook if b["subject"] == "mode"]
    assert [b["event"] for b in mode_ev] == ["trigger", "resolve"]
    assert mode_ev[0]["state"] == "degraded" and mode_ev[1]["state"] == "normal"
    # The resolve of the mode carries the measured impact of the span.
    assert "degraded for" in mode_ev[1]["detail"] and "requests" in mode_ev[1]["detail"]

    # PagerDuty Events API v2.
    pd = [b for b, _, _ in sink.on("/v2/enqueue")]
    pd_redis = [b for b in pd if b["dedup_key"].endswith("/redis")]
    assert [b["event_action"] for b in pd_redis] == ["trigger", "resolve"]
    trig, res = pd_redis
    assert trig["routing_key"] == ROUTING_KEY == res["routing_key"]
    assert trig["dedup_key"] == res["dedup_key"]
    p = trig["payload"]
    assert p["severity"] in ("critical", "error", "warning", "info")
    assert p["summary"] and len(p["summary"]) <= 1024
    assert p["source"] and p["component"] == "redis" and p["timestamp"].endswith("Z")
    assert set(res) == {"routing_key", "event_action", "dedup_key"}

    # Slack incoming webhook.
    sl = [b for b, _, _ in sink.on(SLACK)]
    texts = [b["text"] for b in sl]
    red = [t for t in texts if "redis failed on" in t or "redis healthy again" in t]
    assert len(red) == 2 and red[0].startswith("CRITICAL") and red[1].startswith("RESOLVED"), texts
    mode = [t for t in texts if t.split(": ", 1)[1].startswith("mode ")]
    assert len(mode) == 2 and mode[0].startswith("WARNING: mode degraded") and \
        mode[1].startswith("RESOLVED: mode normal again"), texts
    assert all(isinstance(b.get("attachments"), list) for b in sl)

    # No secret in the logs.
    log = d.log_text()
    assert ROUTING_KEY not in log and "XXXXSECRET" not in log


def test_alerts_no_storm_while_flapping(daemon, redis, pg_primary, kafka, sink):
    window = 4.0
    d = daemon(alert_conf(sink, **{
        "alerts.min_interval_ms": str(int(window * 1000)),
        "probe.interval_ms": "100", "probe.fast_interval_ms": "50",
        "probe.fall": "2", "probe.rise": "1",
        "probe.recovery_base_ms": "100", "probe.recovery_max_ms": "200"}))
    wait_all_healthy(d)
    t0 = time.time()
    cycles = 0
    while time.time() - t0 < 9:
        redis.stop()
        wait_component(d, "redis", "failed", 3)
        redis.start()
        wait_component(d, "redis", "healthy", 3)
        cycles += 1
    assert cycles >= 4
    time.sleep(window + 1.5)                          # a held-back trigger would go now
    for path, key, ev_key in (("/hook", "subject", "event"),
                              ("/v2/enqueue", None, "event_action")):
        evs = [(b, t) for b, t, _ in sink.on(path)
               if (b.get(key) == "redis" if key else b["dedup_key"].endswith("/redis"))]
        kinds = [b[ev_key] for b, _ in evs]
        trig_t = [t for b, t in evs if b[ev_key] == "trigger"]
        assert 1 <= len(trig_t) <= 9 / window + 2, kinds
        assert all(b - a >= window - 0.2 for a, b in zip(trig_t, trig_t[1:])), trig_t
        # strictly alternating, starting with a trigger, every incident closed
        assert kinds == ["trigger", "resolve"] * (len(kinds) // 2), kinds
        assert len({b["dedup_key"] for b, _ in evs}) == 1


def test_alerts_email_through_sendmail(daemon, redis, pg_primary, kafka, test_tmp):
    out = os.path.join(test_tmp, "mail.out")
    script = os.path.join(test_tmp, "sendmail")
    with open(script, "w") as f:
        f.write(f"#!/bin/sh\necho \"ARGS: $*\" >> {out}\ncat >> {out}\necho ---- >> {out}\n")
    os.chmod(script, stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    d = daemon({"alerts.email_to": "ops@example.org", "alerts.sendmail": script})
    wait_all_healthy(d)
    redis.stop()
    wait_mode(d, "degraded", 5)
    redis.start()
    wait_mode(d, "normal", RECOVERY_TARGET + 3)
    text = wait_for(lambda: os.path.exists(out) and
                    open(out).read().count("RESOLVED redis") and open(out).read(), timeout=5)
    assert "ARGS: -i ops@example.org" in text
    a = text.index("Subject: [equilibrium] ALERT redis failed")
    r = text.index("Subject: [equilibrium] RESOLVED redis healthy again")
    assert a < r
    assert "To: ops@example.org" in text


def test_alert_channel_down_never_stalls_probing(daemon, redis, pg_primary, kafka):
    """Every channel points at a port that never answers (a listener that
    never accepts): detection times are unchanged."""
    import socket
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(0)                                    # accepts nothing
    port = hole.getsockname()[1]
    try:
        d = daemon({"alerts.webhook_url": f"http://127.0.0.1:{port}/x",
                    "alerts.slack_webhook_url": f"http://127.0.0.1:{closed_port()}/y"})
        wait_all_healthy(d)
        mark = last_index(d)
        redis.stop()
        t = time.time()
        dt, _ = transition_delay(d, t, mark, kind="component", component="redis", to="failed")
        assert dt <= REFUSED_TARGET + MARGIN
        redis.start()
        wait_mode(d, "normal", RECOVERY_TARGET + 3)
        w = d.workers("prober")[0]
        assert w["heartbeat_age_ms"] < 1000
    finally:
        hole.close()
