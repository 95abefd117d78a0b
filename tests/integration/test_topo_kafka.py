"""Kafka with three brokers (DESIGN.md, "Production topologies"): under
event load, one broker down and its partitions' leaders moved: delivery
goes on and no event is lost; every broker down: events spool, then replay
once the brokers are back, still nothing lost.

The broker is eq-kafka-dev --brokers 3 (librdkafka's mock cluster). Its
partitions start led by brokers 1, 2, 3 in turn; the mock does not move a
downed broker's leadership by itself, so the test moves it
(`move-leaders`), as a real cluster's controller would. Events are counted
in Kafka exactly as test_events_e2e.py does (every 202'd event_id must be
in pricing.events; duplicates are allowed, at least once).
"""

import time

import pytest

from eqtest.util import wait_for

from test_events_helpers import (Poster, check_delivered, events_status, forwarder_pid,
                                 kafka_event_ids, wait_drained)

PARTITIONS = 6
DAEMON = {
    "kafka.rdkafka.message.timeout.ms": "5000",
    "kafka.rdkafka.reconnect.backoff.max.ms": "500",
    "probe.interval_ms": "300", "probe.fast_interval_ms": "100",
    "probe.kafka_timeout_ms": "1000",
    "probe.recovery_base_ms": "200", "probe.recovery_max_ms": "1000",
}


def _delivered(d):
    return events_status(d)["delivered"]


@pytest.mark.kafka(brokers=3, partitions=PARTITIONS)
def test_three_brokers_one_down_leaders_moved_delivery_continues(daemon, redis, kafka):
    leaders = kafka.leaders()
    assert sorted(set(leaders.values())) == [1, 2, 3]
    assert kafka.bootstrap.count(",") == 2
    # redis: a live price source, so the mode never reaches emergency.
    d = daemon(DAEMON, kafka=kafka, redis=redis)
    wait_for(lambda: forwarder_pid(d), timeout=20, desc="eq-forwarder ready")
    poster = Poster(d, batch=50, rate=1000, minimum=4000)
    poster.start()
    ok = False
    try:
        wait_for(lambda: _delivered(d) >= 500, timeout=20, desc="deliveries, 3 brokers up")

        kafka.down(2)
        t_down = time.monotonic()
        moved = kafka.move_leaders(2)
        assert moved == PARTITIONS // 3 * len(kafka.topics)
        assert 2 not in kafka.leaders().values()
        base = _delivered(d)
        wait_for(lambda: _delivered(d) >= base + 1000, timeout=20, interval=0.1,
                 desc="delivery going on with broker 2 down")
        print(f"\n[kafka] broker 2 down + leaders moved: 1000 more delivered after "
              f"{time.monotonic() - t_down:.2f}s")
        ok = True
    finally:
        poster.stop(abort=not ok)
    assert not poster.errors, poster.errors[:5]
    assert poster.refused == 0, f"{poster.refused} events refused (503)"
    # Still with broker 2 down: everything accepted is delivered, so no
    # partition is stuck behind the dead broker (one that was would hold
    # its events in the ring or the spool until broker 2 came back).
    wait_drained(d, timeout=30)
    check_delivered(poster.ids, kafka_event_ids(kafka), "kafka-3-one-down")

    # Broker 2 back and leading a partition again: delivery through it.
    kafka.up(2)
    kafka.set_leader("pricing.events", 1, 2)
    again = Poster(d, batch=50, rate=1000, minimum=2000)
    again.start()
    again.stop()
    assert not again.errors and again.refused == 0, (again.errors[:5], again.refused)
    wait_drained(d, timeout=30)
    check_delivered(poster.ids + again.ids, kafka_event_ids(kafka), "kafka-3-back")


@pytest.mark.kafka(brokers=3, partitions=PARTITIONS)
def test_three_brokers_all_down_spool_then_replay(daemon, redis, kafka):
    d = daemon(DAEMON, kafka=kafka, redis=redis)
    wait_for(lambda: forwarder_pid(d), timeout=20, desc="eq-forwarder ready")
    poster = Poster(d, batch=50, rate=1000, minimum=5000)
    poster.start()
    ok = False
    try:
        wait_for(lambda: _delivered(d) >= 500, timeout=20, desc="deliveries, 3 brokers up")
        for b in (1, 2, 3):
            kafka.down(b)
        wait_for(lambda: events_status(d)["spooled"] >= 1000, timeout=30, interval=0.1,
                 desc="events spooled with every broker down")
        # The prober sees the outage too (within fall x fast interval).
        wait_for(lambda: d.status()["components"]["kafka"]["state"] in ("unhealthy", "failed"),
                 timeout=10, desc="kafka reported down by the prober")
        for b in (1, 2, 3):
            kafka.up(b)
        t_up = time.monotonic()
        wait_for(lambda: events_status(d)["replayed"] >= 1000, timeout=60, interval=0.1,
                 desc="the spool replayed once the brokers are back")
        print(f"\n[kafka] all brokers back: 1000 replayed after {time.monotonic() - t_up:.2f}s")
        ok = True
    finally:
        poster.stop(abort=not ok)

    assert not poster.errors, poster.errors[:5]
    assert poster.refused == 0, f"{poster.refused} events refused (503)"
    final = wait_drained(d, timeout=90)
    assert final["delivered"] >= len(poster.ids)
    check_delivered(poster.ids, kafka_event_ids(kafka), "kafka-3-all-down")
