"""eq_event_lag_seconds and the status JSON's oldest_undelivered_age_ms
count an event still waiting in the shared-memory ring, not only what the
forwarder holds (issue 14, DESIGN.md "Metrics": "age of the oldest
undelivered event, ring or spool").  The forwarder is SIGSTOPped, so an
accepted event sits in the ring unread; once it runs again the event is
delivered and the lag returns to 0."""

import os
import re
import signal
import time

from eqtest.util import wait_for

from test_events_helpers import forwarder_pid


def lag(d):
    status, _, body = d.http("GET", "/metrics", token=None)
    assert status == 200
    m = re.search(r"^eq_event_lag_seconds (\S+)$", body.decode(), re.M)
    assert m, "no eq_event_lag_seconds"
    return float(m.group(1))


def test_an_event_waiting_in_the_ring_counts_in_the_lag(daemon, redis, kafka):
    d = daemon({}, kafka=kafka, redis=redis)
    fw = wait_for(lambda: forwarder_pid(d), timeout=20, desc="eq-forwarder ready")
    # The prober's start-up system events pass through the ring too: wait
    # until the forwarder has them all (a few ms each).
    wait_for(lambda: lag(d) == 0, timeout=20, desc="nothing undelivered")
    t_zero = time.time()            # nothing undelivered was older than this
    os.kill(fw, signal.SIGSTOP)
    try:
        status, _, body = d.http_json("POST", "/v1/events",
                                      body={"type": "demand", "zone_id": "z1", "count": 1})
        assert status == 202, body
        t_posted = time.time()
        time.sleep(1.2)
        got = lag(d)
        # At least our event's age; at most that of anything appended since
        # the forwarder was last seen empty (a prober system event may be).
        assert 1.0 <= got <= time.time() - t_zero + 0.1, got
        age = d.status()["events"]["oldest_undelivered_age_ms"]
        assert 1000 <= age <= (time.time() - t_zero) * 1000 + 100, age
    finally:
        os.kill(fw, signal.SIGCONT)
    wait_for(lambda: lag(d) == 0, timeout=20, desc="the event delivered, lag 0")
    assert kafka.wait_messages("pricing.events", 1, timeout=20)
