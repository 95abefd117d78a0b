"""The event path through the real daemon: POST /v1/events -> ring ->
eq-forwarder -> eq-kafka-dev, the disk spool while Kafka is away, the
back-pressure when ring and spool are full (503 + Retry-After, never a
silent drop), eqctl spool, and a clean stop that keeps what it spooled.
"""

import json
import os
import re
import signal
import time

from eqtest.util import wait_for

from test_events_helpers import (Poster, check_delivered, events_status, forwarder_pid,
                                 kafka_event_ids, spool_json, unpackb, wait_drained)

UUID7 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$")

FAST = {
    "probe.interval_ms": "300", "probe.fast_interval_ms": "100",
    "probe.kafka_timeout_ms": "1000",
    "probe.recovery_base_ms": "200", "probe.recovery_max_ms": "1000",
}


def post(d, events):
    status, headers, body = d.http_json("POST", "/v1/events", body=events)
    return status, headers, body


def test_events_reach_kafka_as_messagepack(daemon, redis, kafka):
    d = daemon(FAST, kafka=kafka, redis=redis)
    evs = [{"type": "demand", "zone_id": "z1", "count": 3, "ts": 1700000000000},
           {"type": "supply", "zone_id": "z.2:x-y", "count": 0}]
    status, _, body = post(d, evs)
    assert status == 202 and body["accepted"] == 2
    ids = body["event_ids"]
    recs = kafka.wait_messages("pricing.events", 2, timeout=20)
    by_id = {unpackb(r.value)["event_id"]: r for r in recs}
    assert set(by_id) == set(ids)
    first = unpackb(by_id[ids[0]].value)
    assert by_id[ids[0]].key == b"z1"
    assert first["type"] == "demand" and first["zone_id"] == "z1" and first["count"] == 3
    assert first["client_ts"] == 1700000000000 and first["v"] == 1
    assert by_id[ids[1]].key == b"z.2:x-y"
    e = wait_drained(d)
    assert e["delivered"] >= 2 and e["oldest_undelivered_age_ms"] in (0, None)


def test_outage_spools_then_replays_and_eqctl_spool_shows_it(daemon, redis, kafka):
    t_start = time.time()
    d = daemon(FAST, kafka=kafka, redis=redis)
    wait_for(lambda: forwarder_pid(d), timeout=20, desc="eq-forwarder ready")
    kafka.down()
    ids = []
    t_first = None                  # when the first event was surely in the ring
    for i in range(20):
        status, _, body = post(d, [{"type": "demand", "zone_id": f"z{i % 4}", "count": i}])
        assert status == 202, body
        ids += body["event_ids"]
        t_first = t_first or time.time()
    # (the prober's system events about Kafka failing wait in the spool too)
    sp = wait_for(lambda: (lambda s: s if s["records"] >= 20 else None)(spool_json(d)),
                  timeout=30, desc="the 20 events in the spool")
    assert sp["segments"] >= 1 and sp["bytes"] > 0 and sp["forwarder_pid"] == forwarder_pid(d)
    assert sp["corrupt_regions"] == 0
    # The oldest undelivered record is no younger than our first event and
    # no older than this daemon; its age is measured from that time.
    time.sleep(max(0.0, 0.5 - (time.time() - t_first)))
    t_q0 = time.time()
    sp = spool_json(d)
    t_q1 = time.time()
    assert t_start * 1000 - 1 <= sp["oldest_undelivered_ms"] <= t_first * 1000 + 1, (sp, t_start, t_first)
    assert (t_q0 - t_first) * 1000 - 1 <= sp["oldest_undelivered_age_ms"] \
        <= (t_q1 - t_start) * 1000 + 1, (sp, t_start, t_first, t_q0, t_q1)
    e = events_status(d)
    assert e["spooled"] >= 20 and e["ring_used"] == 0

    # --decode N: the oldest N records, as JSON, in order
    rc, out, err = d.eqctl("-c", d.conf_path, "spool", "--decode", str(sp["records"]), "--json")
    assert rc == 0, err
    dec = json.loads(out)["decoded"]
    assert len(dec) == sp["records"]
    ours = [r for r in dec if r["topic"] == "pricing.events"]
    assert [r["event"]["event_id"] for r in ours] == ids
    assert [r["key"] for r in ours[:3]] == ["z0", "z1", "z2"]
    assert ours[0]["event"]["type"] == "demand" and ours[2]["event"]["count"] == 2
    others = [r for r in dec if r["topic"] != "pricing.events"]
    assert all(r["topic"] == "system.events" and r["event"]["type"] == "system" for r in others)
    # the text form, one JSON line per record after the summary
    rc, out, _ = d.eqctl("-c", d.conf_path, "spool", "--decode", "2")
    assert rc == 0 and f"undelivered: {sp['records']} events" in out
    assert out.count('"event_id"') == 2
    # no config needed: the directory comes from the segment
    rc, out, err = d.eqctl("spool", "--json")
    assert rc == 0, err
    seg = json.loads(out)
    assert seg["dir"] == sp["dir"] and seg["records"] >= 20, (seg, sp)
    # usage errors
    assert d.eqctl("-c", d.conf_path, "spool", "--decode", "x")[0] == 2
    assert d.eqctl("-c", d.conf_path, "spool", "--bogus")[0] == 2
    assert d.eqctl("spool", "--dir", d.spool_dir + "/nope")[0] == 3

    kafka.up()
    wait_drained(d, timeout=60)
    sp = spool_json(d)
    assert sp["records"] == 0 and sp["segments"] == 0
    e = events_status(d)
    assert e["replayed"] >= 19     # one may have gone as the canary before the outage was seen
    check_delivered(ids, kafka_event_ids(kafka), "outage")
    # order per key is kept across this clean outage (refused connections)
    got = [unpackb(r.value) for r in kafka.records("pricing.events")]
    for z in ("z0", "z1", "z2", "z3"):
        counts = [g["count"] for g in got if g["zone_id"] == z]
        assert counts == sorted(counts), (z, counts)


def test_full_spool_gives_503_and_loses_nothing(daemon, redis, kafka):
    """Kafka down, the smallest spool (1 MiB) and the smallest ring: the ring
    fills behind the full spool and POST /v1/events answers 503 with
    Retry-After.  Every 202'd event still reaches Kafka once it is back."""
    d = daemon(dict(FAST, **{"spool.max_bytes": "1048576", "shm.ring_bytes": "65536"}),
               kafka=kafka, redis=redis)
    wait_for(lambda: forwarder_pid(d), timeout=20, desc="eq-forwarder ready")
    kafka.down()
    poster = Poster(d, batch=50, rate=20000)
    poster.start()
    try:
        # The ring may refuse briefly before the outage is noticed; what
        # counts is the spool filling up to its bound, then 503s again.
        wait_for(lambda: spool_json(d)["bytes"] > 1048576 - 1000, timeout=60,
                 desc="the spool full")
        refused = poster.refused
        wait_for(lambda: poster.refused > refused, timeout=30,
                 desc="503 while ring and spool are full")
    finally:
        poster.stop(abort=True)
    assert not poster.errors, poster.errors[:5]
    assert poster.retry_after and all(v and v.isdigit() for v in poster.retry_after), \
        poster.retry_after
    # Retry-After follows the spool: a full spool drains only once Kafka is
    # back, so the 503s behind it ask for 30 s (docs/http-api.md).
    assert "30" in poster.retry_after, poster.retry_after
    sp = spool_json(d)
    assert 1048576 - 1000 < sp["bytes"] <= 1048576, sp
    e = events_status(d)
    assert e["ring_used"] > 0 and e["dropped"] == 0
    accepted = len(poster.ids)
    assert accepted > 5000
    assert e["accepted"] >= accepted

    kafka.up()
    wait_drained(d, timeout=90)
    check_delivered(poster.ids, kafka_event_ids(kafka), "full spool")
    # and the ring takes events again
    status, _, _ = post(d, [{"type": "demand", "zone_id": "z", "count": 1}])
    assert status == 202


def test_clean_stop_keeps_spooled_events_for_the_next_start(daemon, redis, kafka):
    """SIGTERM while Kafka is down: the forwarder spools what is in the ring
    and the daemon exits 0; the next daemon (same spool) delivers it all."""
    d = daemon(FAST, kafka=kafka, redis=redis)
    wait_for(lambda: forwarder_pid(d), timeout=20, desc="eq-forwarder ready")
    kafka.down()
    ids = []
    for i in range(30):
        status, _, body = post(d, [{"type": "supply", "zone_id": f"s{i % 3}", "count": i}] * 10)
        assert status == 202, body
        ids += body["event_ids"]
    assert d.stop(signal.SIGTERM) == 0
    log = d.log_text()
    assert "forwarder: drained:" in log
    m = re.findall(r"forwarder: drained: (\d+) events in the spool", log)
    assert m and int(m[-1]) >= 300, m     # ours, and the prober's system events

    kafka.up()
    d.start()
    wait_drained(d, timeout=60)
    check_delivered(ids, kafka_event_ids(kafka), "clean stop")


def test_forwarder_killed_while_healthy_resends_not_loses(daemon, redis, kafka):
    d = daemon(FAST, kafka=kafka, redis=redis)
    pid = wait_for(lambda: forwarder_pid(d), timeout=20, desc="eq-forwarder ready")
    poster = Poster(d, batch=100, rate=3000, minimum=5000)
    poster.start()
    try:
        wait_for(lambda: len(poster.ids) > 1500, timeout=30, desc="events flowing")
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: (lambda p: p and p != pid)(forwarder_pid(d)), timeout=20,
                 desc="a new forwarder")
    finally:
        poster.stop()
    assert not poster.errors and poster.refused == 0
    wait_drained(d, timeout=60)
    assert all(UUID7.match(i) for i in poster.ids[:10])
    check_delivered(poster.ids, kafka_event_ids(kafka), "kill while healthy")


def _metric(d, name):
    status, _, body = d.http("GET", "/metrics", token=None)
    assert status == 200
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def test_event_lag_counts_the_ring_while_the_forwarder_is_stopped(daemon, redis, kafka):
    """eq_event_lag_seconds is the age of the oldest undelivered event, ring
    or spool: with eq-forwarder stopped (SIGSTOP) the events wait in the
    ring, and the lag grows although the forwarder publishes nothing."""
    d = daemon(FAST, kafka=kafka, redis=redis)
    pid = wait_for(lambda: forwarder_pid(d), timeout=20, desc="eq-forwarder ready")
    wait_drained(d, timeout=30)
    assert _metric(d, "eq_event_lag_seconds") == 0
    os.kill(pid, signal.SIGSTOP)
    try:
        status, _, body = post(d, [{"type": "demand", "zone_id": "lag", "count": 1}] * 5)
        assert status == 202, body
        time.sleep(1.5)
        lag = _metric(d, "eq_event_lag_seconds")
        assert lag >= 1.4, lag
        e = events_status(d)
        assert e["ring_used"] >= 5 and e["oldest_undelivered_age_ms"] >= 1400, e
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_drained(d, timeout=30)
    wait_for(lambda: _metric(d, "eq_event_lag_seconds") == 0, timeout=10,
             desc="the lag back at 0 once delivered")
    check_delivered(body["event_ids"], kafka_event_ids(kafka), "lag")
