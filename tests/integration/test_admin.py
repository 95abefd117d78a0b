"""POST /v1/admin/mode through the real daemon: admin tokens only (401
without a valid token, 403 `forbidden` for an ordinary one, refused before
the body is read), 400 `invalid_request` for every kind of bad body with
nothing changed, and a good one sets the override as eqctl status and the
history (cause `api`) show it, and the mode follows.
"""

import hashlib
import json
import secrets
import time

import pytest

QUIET_PROBER = {"probe.interval_ms": "3600000", "probe.fast_interval_ms": "3600000"}


@pytest.fixture
def d(daemon, redis):
    redis.set_zone("z1", 12.5, 1.7)
    admin = secrets.token_hex(16)
    conf = dict(QUIET_PROBER)
    conf.update({"pricing.workers": "1", "http.header_timeout_ms": "500",
                 "auth.admin_token_sha256": hashlib.sha256(admin.encode()).hexdigest()})
    dm = daemon(conf)
    dm.admin = admin
    return dm


def history(d):
    rc, out, err = d.eqctl("history", "--json")
    assert rc == 0, err
    return json.loads(out)


def post(d, body, token):
    return d.http_json("POST", "/v1/admin/mode", body=body, token=token)


def test_admin_sets_the_override_with_cause_api(d):
    status, _, body = post(d, '{"override":"degraded"}', d.admin)
    assert status == 200, body
    assert body["override"] == "degraded" and body["mode"] == "degraded"
    assert body["auto_mode"] == "normal"
    assert "override_expires" in body and "override_reason" in body
    st = d.status()
    assert st["override"] == "degraded" and st["mode"] == "degraded"
    h = [h for h in history(d) if h["kind"] == "override"][-1]
    assert (h["from"], h["to"], h["cause"]) == ("none", "degraded", "api")
    # The pricing answers follow the mode at once.
    s2, _, price = d.http_json("GET", "/v1/pricing/z1")
    assert s2 == 200 and price["mode"] == "degraded"
    status, _, body = post(d, '{"override":"none"}', d.admin)
    assert status == 200 and body["override"] == "none" and body["mode"] == "normal"
    assert d.status()["override"] == "none"


def test_for_s_and_reason_expire_by_themselves(d):
    t0 = time.time()
    status, _, body = post(d, '{"override":"emergency","for_s":2,"reason":"drill \u00e9"}',
                           d.admin)
    assert status == 200, body
    assert body["override"] == "emergency" and body["mode"] == "emergency"
    assert body["override_reason"] == "drill \u00e9"
    assert body["override_expires"].endswith("Z")
    st = d.status()
    assert st["override_reason"] == "drill \u00e9"
    assert st["override_expires"] == body["override_expires"]
    h = [h for h in history(d) if h["kind"] == "override"][-1]
    assert (h["to"], h["cause"]) == ("emergency", "api")
    deadline = time.monotonic() + 10
    while d.status()["override"] != "none":
        assert time.monotonic() < deadline, "the override never expired"
        time.sleep(0.1)
    assert time.time() - t0 >= 1.9
    h = [h for h in history(d) if h["kind"] == "override"][-1]
    assert (h["from"], h["to"], h["cause"]) == ("emergency", "none", "expired")
    assert d.status()["override_reason"] is None


def test_tokens_401_and_403(d):
    for tok in (None, "nope"):
        status, headers, body = post(d, '{"override":"emergency"}', tok)
        assert (status, body["error"]) == (401, "unauthorized")
        assert headers["Connection"] == "close"        # refused before its body
    status, _, body = post(d, '{"override":"emergency"}', d.token)   # ordinary token
    assert (status, body["error"]) == (403, "forbidden")
    assert "admin_token_sha256" in body["message"]
    assert d.status()["override"] == "none"
    assert not [h for h in history(d) if h["kind"] == "override"]


@pytest.mark.parametrize("bad", [
    "", "not json", "[]", '"degraded"', "{}",
    '{"override":"panic"}', '{"override":1}',
    '{"override":"degraded","extra":1}',
    '{"override":"degraded","for_s":0}', '{"override":"degraded","for_s":86401}',
    '{"override":"degraded","for_s":"60"}', '{"override":"none","for_s":60}',
    '{"override":"degraded","reason":5}',
    '{"override":"degraded","reason":"' + "x" * 201 + '"}',
    '{"override":"degraded","reason":"bell\\u0007"}',
    '{"override":"degraded","override":"none"}',
])
def test_bad_bodies_400_nothing_changed(d, bad):
    status, _, body = post(d, bad, d.admin)
    assert (status, body["error"]) == (400, "invalid_request"), body
    assert d.status()["override"] == "none"


def test_admin_api_off_without_admin_tokens(daemon, redis):
    d = daemon(QUIET_PROBER)
    status, _, body = d.http_json("POST", "/v1/admin/mode", body='{"override":"degraded"}')
    assert (status, body["error"]) == (403, "forbidden")
    status, _, body = d.http_json("POST", "/v1/admin/mode", body='{"override":"degraded"}',
                                  token=None)
    assert status == 401
    assert d.status()["override"] == "none"
