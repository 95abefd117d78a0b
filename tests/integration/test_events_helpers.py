"""Helpers (no tests) for the event-path tests (test_events*.py): a small MessagePack
decoder (no python3-msgpack on the test machines), a background poster for
POST /v1/events that remembers every event_id answered 202, and the check
that each of them is in Kafka.
"""

import json
import os
import signal
import struct
import threading
import time

from eqtest.util import wait_for


# -- MessagePack (the subset proto/ writes, decoded strictly) ---------------

def unpackb(data):
    value, pos = _unpack(data, 0)
    if pos != len(data):
        raise ValueError(f"{len(data) - pos} trailing bytes")
    return value


def _unpack(b, p):
    t = b[p]
    p += 1
    if t <= 0x7f:
        return t, p
    if t >= 0xe0:
        return t - 0x100, p
    if 0xa0 <= t <= 0xbf:
        n = t & 0x1f
        return b[p:p + n].decode(), p + n
    if 0x80 <= t <= 0x8f:
        return _map(b, p, t & 0x0f)
    if 0x90 <= t <= 0x9f:
        return _array(b, p, t & 0x0f)
    if t == 0xc0:
        return None, p
    if t in (0xc2, 0xc3):
        return t == 0xc3, p
    fixed = {0xcc: ">B", 0xcd: ">H", 0xce: ">I", 0xcf: ">Q", 0xd0: ">b", 0xd1: ">h",
             0xd2: ">i", 0xd3: ">q", 0xca: ">f", 0xcb: ">d"}
    if t in fixed:
        fmt = fixed[t]
        n = struct.calcsize(fmt)
        return struct.unpack(fmt, b[p:p + n])[0], p + n
    if t in (0xd9, 0xda, 0xdb, 0xc4, 0xc5, 0xc6):
        w = {0xd9: 1, 0xda: 2, 0xdb: 4, 0xc4: 1, 0xc5: 2, 0xc6: 4}[t]
        n = int.from_bytes(b[p:p + w], "big")
        p += w
        raw = b[p:p + n]
        return (raw.decode() if t >= 0xd9 else bytes(raw)), p + n
    if t in (0xde, 0xdf):
        w = 2 if t == 0xde else 4
        return _map(b, p + w, int.from_bytes(b[p:p + w], "big"))
    if t in (0xdc, 0xdd):
        w = 2 if t == 0xdc else 4
        return _array(b, p + w, int.from_bytes(b[p:p + w], "big"))
    raise ValueError(f"unsupported MessagePack type 0x{t:02x}")


def _map(b, p, n):
    out = {}
    for _ in range(n):
        k, p = _unpack(b, p)
        v, p = _unpack(b, p)
        out[k] = v
    return out, p


def _array(b, p, n):
    out = []
    for _ in range(n):
        v, p = _unpack(b, p)
        out.append(v)
    return out, p


# -- posting ------------------------------------------------------------------

class Poster(threading.Thread):
    """Posts batches of demand/supply events in a loop (at most `rate`
    events a second) until stop() and at least `minimum` were accepted.
    Keeps every event_id answered 202 (in order); a 503 is counted and the
    batch is not retried (its events were refused, not lost)."""

    def __init__(self, daemon, batch=100, rate=2000, minimum=0, zones=50):
        super().__init__(daemon=True)
        self.d = daemon
        self.batch = batch
        self.rate = rate
        self.minimum = minimum
        self.zones = zones
        self.ids = []
        self.refused = 0              # events answered 503
        self.retry_after = set()      # Retry-After values seen with 503
        self.errors = []              # anything else (fails the test)
        self._halt = threading.Event()
        self._n = 0

    def run(self):
        start = time.monotonic()
        while not (self._halt.is_set() and len(self.ids) >= self.minimum):
            events = [{"type": "demand" if (self._n + i) % 3 else "supply",
                       "zone_id": f"z{(self._n + i) % self.zones}", "count": self._n + i}
                      for i in range(self.batch)]
            try:
                status, headers, body = self.d.http_json("POST", "/v1/events", body=events,
                                                         timeout=10)
            except Exception as exc:  # noqa: BLE001 - reported by the test
                self.errors.append(repr(exc))
                time.sleep(0.1)
                continue
            if status == 202:
                if body.get("accepted") != len(events) or len(body.get("event_ids", [])) != len(events):
                    self.errors.append(f"202 with a bad body: {body!r}")
                self.ids.extend(body["event_ids"])
                self._n += len(events)
            elif status == 503:
                self.refused += len(events)
                self.retry_after.add(headers.get("Retry-After"))
                time.sleep(0.05)
            else:
                self.errors.append(f"{status} {body!r}")
            # pace: no faster than `rate` events a second
            ahead = self._n / self.rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(min(ahead, 0.2))

    def stop(self, timeout=120, abort=False):
        """Stops after `minimum` accepted events (at once with abort)."""
        if abort:
            self.minimum = 0
        self._halt.set()
        self.join(timeout)
        assert not self.is_alive(), "the poster did not finish"


# -- the daemon's view ------------------------------------------------------

def events_status(d):
    return d.status()["events"]


def forwarder_pid(d):
    ws = [w for w in d.workers("forwarder") if w.get("pid") and w.get("ready")]
    return ws[0]["pid"] if ws else None


def kill_forwarder(d, timeout=20):
    """SIGKILLs the running eq-forwarder and waits for its replacement to be
    ready.  Returns (old pid, new pid)."""
    old = wait_for(lambda: forwarder_pid(d), timeout=timeout, desc="a ready forwarder")
    os.kill(old, signal.SIGKILL)
    new = wait_for(lambda: (lambda p: p if p and p != old else None)(forwarder_pid(d)),
                   timeout=timeout, desc="the forwarder restarted after SIGKILL")
    return old, new


def wait_drained(d, timeout=90):
    """Until the ring and the spool are empty (everything delivered)."""
    def drained():
        e = events_status(d)
        return e if e["ring_used"] == 0 and e["spooled"] == 0 else None
    return wait_for(drained, timeout=timeout, interval=0.2,
                    desc="ring and spool empty (all events delivered)")


def spool_json(d):
    rc, out, err = d.eqctl("-c", d.conf_path, "spool", "--json")
    assert rc in (0, 1), f"eqctl spool: exit {rc}: {err}"
    return json.loads(out)


def kafka_event_ids(kafka, topic="pricing.events"):
    """Every event_id in topic, in partition/offset order (duplicates kept)."""
    ids = []
    for rec in kafka.records(topic, timeout=60):
        ev = unpackb(rec.value)
        ids.append(ev["event_id"])
    return ids


def check_delivered(accepted, delivered_ids, label):
    """Every accepted id is in Kafka; returns the duplicate count (printed)."""
    seen = {}
    for i in delivered_ids:
        seen[i] = seen.get(i, 0) + 1
    missing = [i for i in accepted if i not in seen]
    dups = sum(c - 1 for c in seen.values())
    unknown = len(set(seen) - set(accepted))
    print(f"\n[{label}] accepted {len(accepted)}, in Kafka {len(delivered_ids)} "
          f"({len(seen)} distinct), duplicates {dups}, missing {len(missing)}, "
          f"not ours {unknown}")
    assert not missing, f"{len(missing)} of {len(accepted)} accepted events missing from Kafka " \
                        f"(first: {missing[:5]})"
    return dups
