"""Two Equilibrium nodes behind HAProxy (DESIGN.md, "Production
topologies"): a rolling restart under load — SIGTERM node A, wait for its
exit, start it, wait until HAProxy sees it up, then node B — with zero
failed client requests.

HAProxy (eqtest/haproxy.py) checks `GET /readyz` every 200 ms (fall 1,
rise 2), retries a refused connect or an empty response on the other node
(`retry-on conn-failure empty-response`, `option redispatch`). The nodes'
part is the drain: `/readyz` 503 at once on SIGTERM, then
`supervisor.drain_grace_ms` of serving with `Connection: close` so the
balancer notices, then the listener closes while in-flight requests finish.
"""

import os
import threading
import time

from eqtest import http as eqhttp
from eqtest.haproxy import CHECK_INTER_MS, HAProxy
from eqtest.util import wait_for

CLIENTS = 4
CONF = {"supervisor.drain_grace_ms": str(3 * CHECK_INTER_MS)}


class Load(threading.Thread):
    """A client hammering the frontend; every answer that is not 200 (or
    a connection error) is kept."""

    def __init__(self, port, token):
        super().__init__(daemon=True)
        self.port, self.token = port, token
        self.ok = 0
        self.failures = []
        self.halt = threading.Event()

    def run(self):
        while not self.halt.is_set():
            try:
                status, _h, body = eqhttp.request(
                    self.port, "GET", "/v1/pricing/z1",
                    headers={"Authorization": f"Bearer {self.token}"}, timeout=10)
                if status == 200:
                    self.ok += 1
                else:
                    self.failures.append((time.monotonic(), status, body[:200]))
            except Exception as exc:  # noqa: BLE001 - a failed request, reported
                self.failures.append((time.monotonic(), "error", repr(exc)))
            time.sleep(0.002)


def test_rolling_restart_behind_haproxy_fails_no_request(daemon, redis, kafka, test_tmp):
    redis.set_zone("z1", 12.5, 1.7)
    a = daemon(CONF, redis=redis, kafka=kafka)
    b = daemon(CONF, redis=redis, kafka=kafka, token=a.token)
    h = HAProxy(os.path.join(test_tmp, "haproxy"), {"a": a.port, "b": b.port}).start()
    try:
        h.wait_status("a", "UP")
        h.wait_status("b", "UP")
        loads = [Load(h.port, a.token) for _ in range(CLIENTS)]
        for ld in loads:
            ld.start()
        wait_for(lambda: sum(ld.ok for ld in loads) >= 200, timeout=20,
                 desc="load through haproxy")
        timings = {}
        for name, node in (("a", a), ("b", b)):
            t0 = time.monotonic()
            assert node.stop() == 0, node.log_tail()
            t_exit = time.monotonic() - t0
            h.wait_status(name, "DOWN", timeout=5)
            node.start()
            h.wait_status(name, "UP")
            timings[name] = (t_exit, time.monotonic() - t0)
            before = sum(ld.ok for ld in loads)
            wait_for(lambda: sum(ld.ok for ld in loads) >= before + 100, timeout=20,
                     desc=f"load after restarting {name}")
        time.sleep(0.5)
    finally:
        for ld in locals().get("loads", []):
            ld.halt.set()
        for ld in locals().get("loads", []):
            ld.join(timeout=15)
        h.stop()
    ok = sum(ld.ok for ld in loads)
    failures = [f for ld in loads for f in ld.failures]
    print(f"\n[haproxy] rolling restart: {ok} requests answered 200, {len(failures)} failed; "
          + ", ".join(f"node {n}: exit after {e:.2f}s, back in rotation after {u:.2f}s"
                      for n, (e, u) in timings.items()))
    assert not failures, f"{len(failures)} failed requests, first: {failures[:5]}"
