"""Operator overrides as the operator and Kafka consumers see them (DESIGN.md
"Modes", "eqctl"): an override set with `eqctl mode ... --for --reason`
expires by itself, and every override change, whoever made it (eqctl, a
signal to equilibriumd, the expiry), reaches Kafka's system.events as a
system event of kind "override" keyed "mode", even when the prober that
emits them was SIGKILLed in between (its cursor is in the segment).
"""

import os
import signal

from eqtest.util import wait_for

from test_events_helpers import unpackb

FAST = {
    "probe.interval_ms": "300", "probe.fast_interval_ms": "100",
    "probe.kafka_timeout_ms": "1000",
    "probe.recovery_base_ms": "200", "probe.recovery_max_ms": "1000",
    "supervisor.heartbeat_timeout_ms": "1000",
}


def override_events(kafka):
    out = []
    for r in kafka.records("system.events"):
        ev = unpackb(r.value)
        if ev.get("kind") == "override":
            assert r.key == b"mode", r.key
            out.append(ev)
    return out


def prober_pid(d):
    return next((w["pid"] for w in d.status()["workers"]
                 if w["role"] == "prober" and w["pid"] and w["ready"]), None)


def test_override_changes_reach_kafka_even_across_a_prober_kill(daemon, redis, kafka):
    d = daemon(FAST, kafka=kafka, redis=redis)
    first = wait_for(lambda: prober_pid(d), timeout=20, desc="eq-prober ready")
    rc, _, err = d.eqctl("mode", "degraded", "--for", "3s", "--reason", "db-2 maintenance")
    assert rc == 0, err
    # The prober dies before the expiry: equilibriumd expires the override,
    # the next prober emits both changes from the segment's cursor.
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: d.status()["override"] == "none", timeout=8, desc="override expired")
    d.send_signal(signal.SIGUSR1)                        # none -> degraded, by a signal
    wait_for(lambda: d.status()["override"] == "degraded", timeout=5, desc="SIGUSR1 applied")
    second = wait_for(lambda: (lambda p: p if p and p != first else None)(prober_pid(d)),
                      timeout=20, desc="a new eq-prober")
    assert second != first
    evs = wait_for(lambda: (lambda e: e if len(e) >= 3 else None)(override_events(kafka)),
                   timeout=30, desc="three override events in system.events")
    got = [(e["from"], e["to"]) for e in evs]
    assert got == [("none", "degraded"), ("degraded", "none"), ("none", "degraded")], evs
    assert "db-2 maintenance" in evs[0]["cause"] and evs[0]["cause"].startswith("eqctl mode degraded --for 3s")
    assert evs[1]["cause"] == "expired"
    assert evs[2]["cause"].startswith("SIGUSR1 from pid")
    assert all(e["type"] == "system" and e["v"] == 1 for e in evs)
    assert len({e["event_id"] for e in evs}) == 3
    assert evs[0]["mode"] == "degraded" and evs[2]["mode"] == "degraded"
