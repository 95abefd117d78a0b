"""eq-pricing's HTTP layer through the real daemon: bad input of every
kind gets its status and the worker keeps serving others; keep-alive and
pipelining keep answers in order; limits (headers, body, slow clients,
idle connections, max_connections) behave as docs/http-api.md says.
"""

import json
import threading
import time

import pytest

QUIET_PROBER = {"probe.interval_ms": "3600000", "probe.fast_interval_ms": "3600000"}


@pytest.fixture
def d(daemon, redis):
    redis.set_zone("z1", 12.5, 1.7)
    conf = dict(QUIET_PROBER)
    conf.update({"http.max_header_bytes": "2048", "http.max_body_bytes": "4096",
                 "http.header_timeout_ms": "500", "http.idle_timeout_ms": "1000",
                 "pricing.workers": "1"})
    dm = daemon(conf)
    dm.redis_fixture = redis
    return dm


def auth(d):
    return f"Authorization: Bearer {d.token}\r\n"


def still_serving(d):
    status, _, body = d.http_json("GET", "/v1/pricing/z1")
    assert status == 200 and body["source"] == "redis", body


def jbody(resp):
    return json.loads(resp.body)


@pytest.mark.parametrize("raw_zone", [
    "%41",                      # never percent-decoded
    "a%20b",
    "a+b",
    "x" * 65,
    "caf%C3%A9",
    "a,b",
    "a/b",                      # a second segment
    "",                         # the empty id
])
def test_invalid_zone_ids(d, raw_zone):
    with d.raw() as c:
        c.send(f"GET /v1/pricing/{raw_zone} HTTP/1.1\r\nHost: t\r\n{auth(d)}\r\n")
        r = c.read_response()
        assert r.status == 400 and jbody(r)["error"] == "invalid_zone_id"
        assert r.headers["Content-Type"] == "application/json"
        # 400 for input keeps the connection
        c.send(f"GET /v1/pricing/z1 HTTP/1.1\r\nHost: t\r\n{auth(d)}\r\n")
        assert c.read_response().status == 200
    still_serving(d)


def test_longest_valid_zone_id(d):
    zone = "A-z_0.9:" * 8
    assert len(zone) == 64
    status, _, body = d.http_json("GET", f"/v1/pricing/{zone}")
    assert status == 200 and body["zone_id"] == zone


def test_headers_too_large_431(d):
    with d.raw() as c:
        c.send(f"GET /v1/pricing/z1 HTTP/1.1\r\nX-Pad: {'a' * 3000}\r\n{auth(d)}\r\n")
        r = c.read_response()
        assert r.status == 431 and jbody(r)["error"] == "headers_too_large"
        assert r.headers["Connection"] == "close"
        assert c.is_closed(timeout=3)
    still_serving(d)


def test_body_too_large_413_by_length_before_the_body(d):
    with d.raw() as c:
        c.send(f"POST /v1/events HTTP/1.1\r\n{auth(d)}Content-Type: application/json\r\n"
               "Content-Length: 100000\r\n\r\n")
        r = c.read_response(timeout=3)
        assert r.status == 413 and jbody(r)["error"] == "body_too_large"
        assert c.is_closed(timeout=3)
    still_serving(d)


def test_body_too_large_413_chunked(d):
    with d.raw() as c:
        c.send(f"POST /v1/events HTTP/1.1\r\n{auth(d)}Transfer-Encoding: chunked\r\n\r\n")
        for _ in range(6):
            c.send(b"400\r\n" + b"x" * 1024 + b"\r\n")
        r = c.read_response(timeout=3)
        assert r.status == 413
    still_serving(d)


@pytest.mark.parametrize("raw", [
    b"GARBAGE\r\n\r\n",
    b"GET /v1/pricing/z1 HTTP/1.1\r\nNo colon here\r\n\r\n",
    b"GET /v1/pricing/z1 HTTP/7.0\r\n\r\n",
    b"POST /v1/events HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    b"GET /v1/pricing/\x00z HTTP/1.1\r\n\r\n",
])
def test_malformed_400_and_close(d, raw):
    with d.raw() as c:
        c.send(raw)
        r = c.read_response(timeout=3)
        assert r.status == 400 and jbody(r)["error"] == "bad_request"
        assert c.is_closed(timeout=3)
    still_serving(d)


def test_unknown_path_and_wrong_method(d):
    status, _, body = d.http_json("GET", "/v2/whatever")
    assert (status, body["error"]) == (404, "not_found")
    status, headers, body = d.http_json("POST", "/v1/pricing/z1", body="{}")
    assert (status, body["error"]) == (405, "method_not_allowed")
    assert headers["Allow"] == "GET, HEAD"
    status, headers, _ = d.http("DELETE", "/metrics")
    assert status == 405 and headers["Allow"] == "GET, HEAD"


def test_missing_and_wrong_token(d):
    for token in (None, "nope"):
        status, headers, body = d.http_json("GET", "/v1/pricing/z1", token=token)
        assert (status, body["error"]) == (401, "unauthorized")
    still_serving(d)


def test_head(d):
    with d.raw() as c:
        c.send(f"HEAD /v1/pricing/z1 HTTP/1.1\r\n{auth(d)}\r\n"
               f"GET /healthz HTTP/1.1\r\n\r\n")
        r = c.read_response(head=True)
        assert r.status == 200 and int(r.headers["Content-Length"]) > 100
        assert r.headers["X-Equilibrium-Source"] == "redis"
        assert c.read_response().body == b"ok"


def test_slow_client_408_others_served(d):
    with d.raw() as slow:
        t0 = time.monotonic()
        slow.send(f"GET /v1/pricing/z1 HTTP/1.1\r\n{auth(d)}")      # never finished
        still_serving(d)
        assert time.monotonic() - t0 < 0.3
        r = slow.read_response(timeout=3)
        assert r.status == 408 and jbody(r)["error"] == "request_timeout"
        assert 0.45 <= time.monotonic() - t0 < 2.0
        assert slow.is_closed(timeout=3)


def test_slow_loris_trickle_408(d):
    with d.raw() as c:
        t0 = time.monotonic()
        done = threading.Event()

        def trickle():
            try:
                for ch in "GET /v1/pricing/z1 HTTP/1.1\r\nX-Slow: " + "a" * 100:
                    if done.is_set():
                        return
                    c.sock.sendall(ch.encode())
                    time.sleep(0.05)
            except OSError:
                pass

        th = threading.Thread(target=trickle)
        th.start()
        r = c.read_response(timeout=5)
        done.set()
        th.join()
        assert r.status == 408
        assert time.monotonic() - t0 < 1.5


def test_refused_at_the_headers_no_continue_no_body_read(d):
    # Unknown path with a body announced: 404 at once, no 100 Continue
    # first, and the connection closes without reading the body.
    with d.raw() as c:
        c.send("POST /nowhere HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n"
               "Expect: 100-continue\r\n\r\n")
        r = c.read_response(timeout=3)
        assert r.status == 404 and jbody(r)["error"] == "not_found"
        assert r.headers["Connection"] == "close"
        assert c.is_closed(timeout=3)
    # A protected endpoint without a token: 401 without waiting for the
    # 4000 announced bytes (waiting would end in 408 after 500 ms).
    with d.raw() as c:
        t0 = time.monotonic()
        c.send("POST /v1/events HTTP/1.1\r\nHost: t\r\nContent-Length: 4000\r\n"
               "Content-Type: application/json\r\n\r\n")
        r = c.read_response(timeout=3)
        assert r.status == 401 and jbody(r)["error"] == "unauthorized"
        assert time.monotonic() - t0 < 0.4
        assert c.is_closed(timeout=3)
    # Wrong method with a body: 405 with Allow, and nothing of the body is
    # taken for a next request.
    with d.raw() as c:
        smuggled = f"GET /v1/pricing/z1 HTTP/1.1\r\n{auth(d)}\r\n"
        c.send(f"POST /v1/pricing/z1 HTTP/1.1\r\n{auth(d)}"
               f"Content-Length: {len(smuggled)}\r\n\r\n{smuggled}")
        r = c.read_response(timeout=3)
        assert r.status == 405 and r.headers["Allow"] == "GET, HEAD"
        assert c.is_closed(timeout=3)
    # An accepted request with Expect still gets its 100 and is served.
    with d.raw() as c:
        body = '{"type":"demand","zone_id":"z1","count":1}'
        c.send(f"POST /v1/events HTTP/1.1\r\n{auth(d)}Content-Length: {len(body)}\r\n"
               "Expect: 100-continue\r\n\r\n")
        assert c.read_response(timeout=3).status == 100
        c.send(body)
        assert c.read_response(timeout=3).status == 202
    still_serving(d)


def test_body_on_get_refused(d):
    with d.raw() as c:
        c.send(f"GET /v1/pricing/z1 HTTP/1.1\r\n{auth(d)}Content-Length: 2\r\n\r\nhi")
        r = c.read_response(timeout=3)
        assert r.status == 400 and jbody(r)["error"] == "bad_request"
        assert "no body" in jbody(r)["message"]
        assert c.is_closed(timeout=3)
    still_serving(d)


def test_trickled_body_408_at_a_fixed_deadline(d):
    # One byte every 100 ms used to keep the connection for ever; the body
    # now has http.header_timeout_ms (500) from the end of the headers.
    with d.raw() as c:
        c.send(f"POST /v1/events HTTP/1.1\r\n{auth(d)}Content-Length: 1000\r\n\r\n")
        t0 = time.monotonic()
        done = threading.Event()

        def trickle():
            try:
                for _ in range(100):
                    if done.is_set():
                        return
                    c.sock.sendall(b"[")
                    time.sleep(0.1)
            except OSError:
                pass

        th = threading.Thread(target=trickle)
        th.start()
        r = c.read_response(timeout=8)
        done.set()
        th.join()
        assert r.status == 408 and jbody(r)["error"] == "request_timeout"
        assert time.monotonic() - t0 < 1.5
    still_serving(d)


def test_keepalive_many_requests_one_connection(d):
    with d.raw() as c:
        for i in range(50):
            c.send(f"GET /v1/pricing/z1 HTTP/1.1\r\n{auth(d)}\r\n")
            r = c.read_response()
            assert r.status == 200 and jbody(r)["zone_id"] == "z1"
            assert "Connection" not in r.headers


def test_pipelining_keeps_order(d, pg_primary):
    pg_primary.set_zone("db1", 20.0, 1.1)
    d.redis_fixture.pause(400)            # the first lookups wait on Redis
    reqs = "".join([
        f"GET /v1/pricing/db1 HTTP/1.1\r\n{auth(d)}\r\n",
        "GET /healthz HTTP/1.1\r\n\r\n",
        f"GET /v1/pricing/z1 HTTP/1.1\r\n{auth(d)}\r\n",
        "GET /readyz HTTP/1.1\r\n\r\n",
        "GET /nope HTTP/1.1\r\n\r\n",
        f"GET /v1/pricing?zones=z1,db1 HTTP/1.1\r\n{auth(d)}\r\n",
    ])
    with d.raw() as c:
        c.send(reqs)
        rs = [c.read_response(timeout=5) for _ in range(6)]
    assert [r.status for r in rs] == [200, 200, 200, 200, 404, 200]
    assert jbody(rs[0])["zone_id"] == "db1"
    assert rs[1].body == b"ok"
    assert jbody(rs[2])["zone_id"] == "z1"
    assert jbody(rs[3])["ready"] is True
    assert [p["zone_id"] for p in jbody(rs[5])["prices"]] == ["z1", "db1"]


def test_pipelined_burst_all_answered(d):
    with d.raw() as c:
        c.send(f"GET /v1/pricing/z1 HTTP/1.1\r\n{auth(d)}\r\n" * 500)
        for _ in range(500):
            assert c.read_response().status == 200


def test_half_close_still_answered(d):
    with d.raw() as c:
        c.send(f"GET /v1/pricing/z1 HTTP/1.1\r\n{auth(d)}\r\n")
        c.shutdown_write()
        assert c.read_response().status == 200
        assert c.is_closed(timeout=3)


def test_idle_keepalive_closed(d):
    with d.raw() as c:
        c.send("GET /healthz HTTP/1.1\r\n\r\n")
        assert c.read_response().status == 200
        t0 = time.monotonic()
        assert c.is_closed(timeout=5)
        assert time.monotonic() - t0 >= 0.9


def test_connection_close_honoured(d):
    with d.raw() as c:
        c.send("GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n")
        r = c.read_response()
        assert r.headers["Connection"] == "close"
        assert c.is_closed(timeout=3)


def test_max_connections_waits_in_backlog(daemon, redis):
    conf = dict(QUIET_PROBER)
    conf.update({"http.max_connections": "2", "pricing.workers": "1",
                 "http.idle_timeout_ms": "30000", "http.header_timeout_ms": "30000"})
    dm = daemon(conf)
    a, b = dm.raw(), dm.raw()
    for c in (a, b):
        c.send("GET /healthz HTTP/1.1\r\n\r\n")
        assert c.read_response().status == 200
    third = dm.raw()
    third.send("GET /healthz HTTP/1.1\r\n\r\n")
    with pytest.raises(TimeoutError):
        third.read_response(timeout=0.5)
    a.close()
    assert third.read_response(timeout=5).status == 200
    b.close()
    third.close()
