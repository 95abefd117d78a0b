"""GET /v1/pricing/{zone}/stream through the real daemon and real Redis:
the current answer at once, a Redis change seen within
pricing.stream_interval_ms plus a margin, closed with `event: mode` on
emergency and refused while it lasts, http.max_streams, a drain closes
streams with {"mode":"draining"}, and 1,000 subscribers of one zone cost one
Redis read per interval (counted with Redis INFO commandstats).
"""

import json
import re
import selectors
import signal
import socket
import time

import pytest

QUIET_PROBER = {"probe.interval_ms": "3600000", "probe.fast_interval_ms": "3600000"}
INTERVAL_MS = 200


@pytest.fixture
def d(daemon, redis):
    redis.set_zone("z1", 12.5, 1.7)
    conf = dict(QUIET_PROBER)
    conf.update({"pricing.workers": "1", "pricing.stream_interval_ms": str(INTERVAL_MS)})
    dm = daemon(conf)
    dm.redis_fixture = redis
    return dm


class Stream:
    """A raw SSE client: the response head, then events as (event, data)."""

    def __init__(self, d, zone="z1", token=None):
        self.sock = socket.create_connection(("127.0.0.1", d.port), timeout=10)
        tok = d.token if token is None else token
        self.sock.sendall(f"GET /v1/pricing/{zone}/stream HTTP/1.1\r\nHost: t\r\n"
                          f"Authorization: Bearer {tok}\r\n\r\n".encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self._fill(10)
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = dict(l.split(": ", 1) for l in lines[1:])
        self.closed = False

    def _fill(self, timeout):
        self.sock.settimeout(timeout)
        b = self.sock.recv(65536)
        if not b:
            raise EOFError
        self.buf += b

    def next(self, timeout=5.0):
        """The next block as (event, data, comment), or None on EOF."""
        deadline = time.monotonic() + timeout
        while b"\n\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no event")
            try:
                self._fill(left)
            except EOFError:
                self.closed = True
                return None
        block, self.buf = self.buf.split(b"\n\n", 1)
        ev, data, comment, retry = None, None, None, None
        for line in block.decode().split("\n"):
            if line.startswith("event: "):
                ev = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
            elif line.startswith(":"):
                comment = line[1:].strip()
            elif line.startswith("retry: "):
                retry = int(line[7:])
        return ev, data, comment, retry

    def next_event(self, timeout=5.0):
        while True:
            b = self.next(timeout)
            if b is None or b[0] is not None:
                return b

    def close(self):
        self.sock.close()


def streams_open(d):
    status, _, body = d.http("GET", "/metrics")
    assert status == 200
    m = re.search(rb"^eq_streams_open (\d+)$", body, re.M)
    assert m, "eq_streams_open missing from /metrics"
    return int(m.group(1))


def test_stream_current_answer_then_changes(d):
    s = Stream(d)
    assert s.status == 200
    assert s.headers["Content-Type"] == "text/event-stream"
    assert s.headers["Connection"] == "close"
    assert "Content-Length" not in s.headers
    first = s.next()
    assert first[3] == 2000                       # retry: the reconnect delay
    ev, data, _, _ = s.next_event()
    assert ev == "price" and data["zone_id"] == "z1" and data["surge_multiplier"] == 1.7
    assert data["source"] == "redis"
    # Nothing changes: no event within a few intervals.
    with pytest.raises(TimeoutError):
        s.next_event(timeout=INTERVAL_MS * 3 / 1000)
    d.redis_fixture.set_zone("z1", 12.5, 2.3)
    t0 = time.monotonic()
    ev, data, _, _ = s.next_event(timeout=3)
    assert ev == "price" and data["surge_multiplier"] == 2.3
    assert time.monotonic() - t0 < INTERVAL_MS / 1000 + 0.5
    assert streams_open(d) == 1
    s.close()
    deadline = time.monotonic() + 5
    while streams_open(d) != 0:
        assert time.monotonic() < deadline, "eq_streams_open stays above 0"
        time.sleep(0.1)


def test_stream_needs_a_token_and_a_valid_zone(d):
    s = Stream(d, token="nope")
    assert s.status == 401
    s.close()
    s = Stream(d, zone="bad%20zone")
    assert s.status == 400
    s.close()


def test_emergency_closes_streams_and_refuses_new_ones(d):
    s = Stream(d)
    assert s.next_event()[0] == "price"
    rc, _, err = d.eqctl("mode", "emergency")
    assert rc == 0, err
    ev, data, _, _ = s.next_event(timeout=3)
    assert (ev, data) == ("mode", {"mode": "emergency"})
    assert s.next(timeout=3) is None and s.closed
    s2 = Stream(d)
    assert s2.status == 503
    body = json.loads(s2.buf.decode() or s2.sock.recv(4096).decode())
    assert body["error"] == "feature_disabled"
    rc, _, _ = d.eqctl("mode", "auto")
    assert rc == 0
    s3 = Stream(d)
    assert s3.status == 200 and s3.next_event()[0] == "price"
    s3.close()


def test_max_streams_503_with_retry_after(daemon, redis):
    redis.set_zone("z1", 12.5, 1.7)
    conf = dict(QUIET_PROBER)
    conf.update({"pricing.workers": "1", "http.max_streams": "2"})
    d = daemon(conf)
    a, b = Stream(d), Stream(d)
    assert a.status == b.status == 200
    c = Stream(d)
    assert c.status == 503 and c.headers["Retry-After"]
    assert "too_many_streams" in (c.buf.decode() or c.sock.recv(4096).decode())
    a.close()
    # The slot frees once the worker notices the client left (next tick).
    deadline = time.monotonic() + 5
    while True:
        e = Stream(d)
        if e.status == 200:
            break
        assert time.monotonic() < deadline, "a closed stream kept its slot"
        e.close()
        time.sleep(0.2)
    e.close()
    b.close()


def test_drain_closes_streams_with_draining(d):
    s = Stream(d)
    assert s.next_event()[0] == "price"
    pid = [w["pid"] for w in d.workers("pricing")][0]
    import os
    os.kill(pid, signal.SIGTERM)
    ev, data, _, _ = s.next_event(timeout=5)
    assert (ev, data) == ("mode", {"mode": "draining"})
    assert s.next(timeout=5) is None


def hgetall_calls(redis):
    info = redis.cmd("INFO", "commandstats")
    m = re.search(r"cmdstat_hgetall:calls=(\d+)", info)
    return int(m.group(1)) if m else 0


def test_thousand_subscribers_one_redis_read_per_interval(d):
    n = 1000
    sel = selectors.DefaultSelector()
    socks = []
    req = (f"GET /v1/pricing/z1/stream HTTP/1.1\r\nHost: t\r\n"
           f"Authorization: Bearer {d.token}\r\n\r\n").encode()
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", d.port), timeout=10)
        s.sendall(req)
        s.setblocking(False)
        socks.append(s)
        sel.register(s, selectors.EVENT_READ, bytearray())
    # Every subscriber gets its first price event.
    deadline = time.monotonic() + 30
    primed = set()
    while len(primed) < n:
        assert time.monotonic() < deadline, f"only {len(primed)} of {n} primed"
        for key, _ in sel.select(timeout=1):
            try:
                chunk = key.fileobj.recv(65536)
            except BlockingIOError:
                continue
            assert chunk, "a stream closed"
            key.data.extend(chunk)
            if b"event: price" in key.data:
                primed.add(key.fileobj.fileno())
    # Over a measured window, reads stay at one per interval.
    before = hgetall_calls(d.redis_fixture)
    t0 = time.monotonic()
    window = 3.0
    while time.monotonic() - t0 < window:
        for key, _ in sel.select(timeout=0.2):
            try:
                key.fileobj.recv(65536)
            except BlockingIOError:
                pass
    reads = hgetall_calls(d.redis_fixture) - before
    elapsed = time.monotonic() - t0
    ticks = elapsed * 1000 / INTERVAL_MS
    assert reads <= ticks + 2, f"{reads} HGETALL for {n} subscribers in {elapsed:.2f}s"
    assert reads >= ticks / 2, f"only {reads} reads in {elapsed:.2f}s: the zone is not re-checked"
    for s in socks:
        s.close()
