"""Pricing follows the prober's recovery (DESIGN.md "Component health"):
once the prober marks a backend healthy again, pricing workers use it
within 250 ms, whatever their own reconnect backoff says (issue 14: after a
5 s CLIENT PAUSE the prober said normal while answers kept coming from the
database with redis_unavailable for a while)."""

import threading
import time

from eqtest import wait_for
from test_prober import wait_all_healthy

FOLLOW_S = 0.25
MARGIN_S = 0.25          # polling on a loaded 2-core box


def test_pricing_uses_redis_within_250_ms_of_the_prober_seeing_it_healthy(daemon, redis,
                                                                          pg_primary, kafka):
    redis.set_zone("z1", 10.0, 1.5)
    pg_primary.sql("INSERT INTO current_zone_status VALUES ('z1', 9.0, 1.1, 1, 1, now()) "
                   "ON CONFLICT (zone_id) DO UPDATE SET base_fare = 9.0")
    d = daemon({"pricing.workers": "1"})
    wait_all_healthy(d)
    answers = []                       # (monotonic time, source)
    stop = threading.Event()

    def client():
        while not stop.is_set():
            code, _, a = d.http_json("GET", "/v1/pricing/z1")
            if code == 200:
                answers.append((time.monotonic(), a["source"]))
            time.sleep(0.01)

    t = threading.Thread(target=client)
    t.start()
    try:
        redis.pause(5000)
        wait_for(lambda: d.status()["components"]["redis"]["state"] == "failed", timeout=8,
                 desc="redis failed during the pause")
        wait_for(lambda: any(s == "database" for _, s in answers), timeout=5,
                 desc="database answers meanwhile")

        def healthy():
            return d.status()["components"]["redis"]["state"] == "healthy"
        wait_for(healthy, timeout=15, interval=0.02, desc="the prober sees redis healthy")
        t_healthy = time.monotonic()
        wait_for(lambda: any(s == "redis" and ts > t_healthy - 1 for ts, s in answers),
                 timeout=5, desc="an answer from redis again")
        time.sleep(0.6)                  # a few more answers
    finally:
        stop.set()
        t.join()
    first_redis = min(ts for ts, s in answers if s == "redis" and ts > t_healthy - 1)
    assert first_redis - t_healthy <= FOLLOW_S + MARGIN_S, (first_redis - t_healthy)
    # And from then on Redis answers (no flapping back to the database).
    later = [s for ts, s in answers if ts > first_redis + 0.1]
    assert later and all(s == "redis" for s in later), later[:20]
