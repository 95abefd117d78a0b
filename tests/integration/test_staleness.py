"""Bounded staleness (DESIGN.md "Price object", issue 14): a last known
price older than modes.stale_max_age_ms is never served; the answer is the
default with fallback_reason stale_expired.  0 = no limit."""

import time



def test_an_expired_last_known_price_gives_way_to_the_default(daemon, redis):
    hour_ago = int(time.time() * 1000) - 3_600_000 - 60_000
    redis.set_zone("old", 20.0, 3.0, updated_at=hour_ago)        # a surge from over an hour ago
    redis.set_zone("fresh", 15.0, 1.2)
    d = daemon({"zone:old.base_fare": "11.0"}, pg_primary=False, kafka=False)
    for z in ("old", "fresh"):                                    # live reads fill shared memory
        code, _, a = d.http_json("GET", f"/v1/pricing/{z}")
        assert code == 200 and a["source"] == "redis", a
    assert a["age_ms"] < 60_000
    redis.stop()
    code, _, old = d.http_json("GET", "/v1/pricing/old")
    assert code == 200
    assert old["source"] == "default" and old["fallback_reason"] == "stale_expired", old
    assert old["base_fare"] == 11.0 and old["surge_multiplier"] == 1.0, old
    code, _, fresh = d.http_json("GET", "/v1/pricing/fresh")
    assert fresh["source"] == "stale" and fresh["freshness"] == "very_stale", fresh
    assert fresh["surge_multiplier"] == 1.2


def test_no_limit_serves_any_age(daemon, redis):
    redis.set_zone("old", 20.0, 3.0, updated_at=int(time.time() * 1000) - 7_200_000)
    d = daemon({"modes.stale_max_age_ms": "0"}, pg_primary=False, kafka=False)
    code, _, a = d.http_json("GET", "/v1/pricing/old")
    assert a["source"] == "redis"
    redis.stop()
    code, _, old = d.http_json("GET", "/v1/pricing/old")
    assert old["source"] == "stale" and old["freshness"] == "very_stale", old
    assert old["surge_multiplier"] == 3.0 and old["age_ms"] >= 7_200_000


def test_expired_entries_skip_the_degraded_cache(daemon, redis):
    """In degraded mode a recently read entry is served without a backend
    call, but not one whose price is over the limit: Redis is asked."""
    hour_ago = int(time.time() * 1000) - 3_700_000
    redis.set_zone("old", 20.0, 3.0, updated_at=hour_ago)
    d = daemon(pg_primary=False, kafka=False)
    d.http_json("GET", "/v1/pricing/old")
    rc, _, err = d.eqctl("mode", "degraded")
    assert rc == 0, err
    redis.set_zone("old", 21.0, 2.5)                              # a new price, now
    code, _, a = d.http_json("GET", "/v1/pricing/old")
    assert a["source"] == "redis" and a["surge_multiplier"] == 2.5, a
