"""Kafka health per topic, at the produce level (DESIGN.md, Guarantees: a
Kafka problem confined to one topic holds back that topic only).  Two
brokers (eq-kafka-dev --brokers 2): every pricing.quotes partition led by
broker 2, pricing.events and system.events by broker 1.  Broker 2 goes
down and stays the quotes' leader: the quotes stall and are spooled, while
POSTed events keep reaching Kafka within a second or two; with broker 2
back, the quotes are replayed and nothing is lost.
"""

import time

import pytest

from eqtest.util import wait_for

from test_events_helpers import (check_delivered, events_status, forwarder_pid,
                                 kafka_event_ids, wait_drained)

PARTITIONS = 3
FAST = {
    "probe.interval_ms": "300", "probe.fast_interval_ms": "100",
    "probe.kafka_timeout_ms": "1000",
    "probe.recovery_base_ms": "200", "probe.recovery_max_ms": "1000",
    "kafka.rdkafka.reconnect.backoff.max.ms": "500",
}


def _quotes(kafka):
    return len(kafka.records("pricing.quotes"))


@pytest.mark.kafka(brokers=2, partitions=PARTITIONS)
def test_quotes_leaders_down_do_not_delay_events(daemon, redis, kafka):
    for p in range(PARTITIONS):
        kafka.set_leader("pricing.quotes", p, 2)
        kafka.set_leader("pricing.events", p, 1)
        kafka.set_leader("system.events", p, 1)
    d = daemon(FAST, kafka=kafka, redis=redis)
    wait_for(lambda: forwarder_pid(d), timeout=20, desc="eq-forwarder ready")
    for _ in range(20):
        assert d.http("GET", "/v1/pricing/z1")[0] == 200
    wait_for(lambda: _quotes(kafka) >= 20, timeout=20, desc="quotes in Kafka")

    kafka.down(2)
    for _ in range(50):
        assert d.http("GET", "/v1/pricing/z1")[0] == 200
    # Past probe.kafka_timeout_ms: the quotes' stall is noticed by now.
    time.sleep(2.0)
    ids = []
    for round_ in range(3):
        t0 = time.monotonic()
        status, _, body = d.http_json("POST", "/v1/events", body=[
            {"type": "demand", "zone_id": f"e{i % 4}", "count": i} for i in range(20)])
        assert status == 202, body
        ids += body["event_ids"]
        wait_for(lambda: set(body["event_ids"]) <= set(kafka_event_ids(kafka)), timeout=10,
                 interval=0.1, desc=f"round {round_}: events in Kafka with the quotes' broker down")
        took = time.monotonic() - t0
        print(f"\n[topics] round {round_}: 20 events in Kafka {took:.2f}s after the POST "
              f"(quotes' broker down)")
        assert took < 3.0, took
    e = events_status(d)
    assert e["spooled"] >= 1, e               # the quotes wait in the spool

    kafka.up(2)
    wait_drained(d, timeout=60)
    assert _quotes(kafka) >= 70
    check_delivered(ids, kafka_event_ids(kafka), "one topic down")
