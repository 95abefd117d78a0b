"""deploy/systemd (the units meson generates in the build tree with the
install's paths): the unit says what equilibriumd needs (DESIGN.md "Known
limits": systemd; docs/operations.md "systemd") and stays well hardened.
systemd is not PID 1 here, so the unit is checked as text and with
`systemd-analyze security --offline=true`; the daemon's side of the
protocol (READY/STATUS/WATCHDOG/STOPPING, socket activation) is exercised
in test_supervisor.py."""

import json
import os
import re
import shutil
import signal
import subprocess

import pytest

from eqtest import util

UNIT_DIR = util.build_path("deploy", "systemd")
SERVICE = os.path.join(UNIT_DIR, "equilibrium.service")
SOCKET = os.path.join(UNIT_DIR, "equilibrium.socket")


def settings(path):
    """{Key: [values...]} of a unit file (keys may repeat)."""
    out = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line[0] in "#;[":
                continue
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def seconds(value):
    m = re.fullmatch(r"(\d+)(s|min)?", value)
    assert m, value
    return int(m.group(1)) * (60 if m.group(2) == "min" else 1)


def test_service_keeps_the_segment_and_speaks_notify():
    s = settings(SERVICE)
    assert s["Type"] == ["notify"]
    assert s["RemoveIPC"] == ["no"]                 # the segment survives restarts
    assert "DynamicUser" not in s                   # it would imply RemoveIPC=yes
    assert s["User"] == ["equilibrium"]
    # Neither an invalid config (78) nor a refused segment (69) is helped
    # by a restart.
    assert {"69", "78"} <= set(s["RestartPreventExitStatus"][0].split())
    assert s["Restart"] == ["on-failure"]
    # An honest reload: the file is checked before the daemon is signalled,
    # so `systemctl reload` fails on a bad file.
    assert "--check-config" in s["ExecReload"][0], s["ExecReload"]
    assert "-HUP $MAINPID" in s["ExecReload"][-1], s["ExecReload"]
    assert s["KillMode"] == ["mixed"]               # equilibriumd drains its workers
    assert s["StateDirectory"] == ["equilibrium"]   # the spool
    # Longer than the defaults heartbeat_timeout_ms 5000 and drain_ms 5000 + 1 s.
    assert seconds(s["WatchdogSec"][0]) * 1000 > 5000
    assert seconds(s["TimeoutStopSec"][0]) * 1000 > 5000 + 1000
    assert int(s["LimitNOFILE"][0]) > 10000         # http.max_connections per worker
    assert any("--check-config" in v for v in s["ExecStartPre"])


def test_units_carry_the_install_paths():
    """configure_file filled in every path: none is left as @VAR@, and
    ExecStart names the sbindir and sysconfdir this build installs to."""
    text = open(SERVICE).read()
    assert not re.search(r"@[A-Z_]+@", text), text
    info = subprocess.run(["meson", "introspect", "--buildoptions", util.build_dir()],
                          capture_output=True, text=True, check=True).stdout
    opts = {o["name"]: o["value"] for o in json.loads(info)}
    prefix = opts["prefix"]
    sbindir = os.path.join(prefix, opts["sbindir"])
    sysconf = os.path.join(prefix, opts["sysconfdir"])
    start = settings(SERVICE)["ExecStart"][0]
    assert start == f"{sbindir}/equilibriumd -c {sysconf}/equilibrium/equilibrium.conf", start


def test_socket_unit_matches_the_default_listen_address():
    s = settings(SOCKET)
    assert s["ListenStream"] == ["127.0.0.1:8080"]
    assert s["Service"] == ["equilibrium.service"]
    assert int(s["Backlog"][0]) >= 4096


def test_service_exposure_score():
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed")
    r = subprocess.run([analyze, "security", "--offline=true", SERVICE],
                       capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for equilibrium\.service: ([0-9.]+)", r.stdout)
    assert m, r.stdout + r.stderr
    # docs/operations.md reports 1.2; anything above 2.0 means hardening was lost.
    assert float(m.group(1)) <= 2.0, r.stdout


# --------------------------------------------------------------------------
# An honest reload, through the daemon's notify protocol (systemd is not
# PID 1 here: the fixture's NOTIFY_SOCKET listener stands in for it).

def _reloads(d):
    status, _h, body = d.http("GET", "/metrics", token=None)
    assert status == 200
    text = body.decode()
    return {r: int(re.search(rf'^eq_config_reloads_total{{result="{r}"}} (\d+)$', text, re.M).group(1))
            for r in ("ok", "rejected")}


def _after(lines, start):
    return lines[start:]


def test_reload_speaks_reloading_ready_and_status_and_counts(daemon):
    d = daemon()
    assert _reloads(d) == {"ok": 0, "rejected": 0}     # exported at 0 from the start

    # A valid file: RELOADING=1, then STATUS= saying ok, then READY=1.
    n = len(d.notify.assignments())
    d.reload({"log.level": "info", "pricing.default_base_fare": "13.00"})
    got = d.notify.wait(lambda ls: "READY=1" in _after(ls, n) and _after(ls, n), timeout=15)
    assert got, (d.notify_messages(), d.log_tail())
    seq = _after(d.notify.assignments(), n)
    assert seq[0] == "RELOADING=1", seq
    i_ready = seq.index("READY=1")
    status = [x for x in seq[:i_ready] if x.startswith("STATUS=")]
    assert status and "reload ok" in status[-1], seq
    util.wait_for(lambda: _reloads(d) == {"ok": 1, "rejected": 0}, timeout=5,
                  desc="eq_config_reloads_total{result=ok} 1")
    assert "reload: " in d.log_text() and "accepted" in d.log_text()

    # An invalid file: rejected, the old config kept, and said so in all
    # three places; the daemon still answers READY=1 (it is serving).
    n = len(d.notify.assignments())
    with open(d.conf_path, "a") as f:
        f.write("\n[nosuchsection]\nx = 1\n")
    d.send_signal(signal.SIGHUP)
    got = d.notify.wait(lambda ls: "READY=1" in _after(ls, n), timeout=15)
    assert got, (d.notify_messages(), d.log_tail())
    seq = _after(d.notify.assignments(), n)
    assert seq[0] == "RELOADING=1", seq
    status = [x for x in seq[:seq.index("READY=1")] if x.startswith("STATUS=")]
    assert status and "reload rejected" in status[-1], seq
    util.wait_for(lambda: _reloads(d) == {"ok": 1, "rejected": 1}, timeout=5,
                  desc="eq_config_reloads_total{result=rejected} 1")
    assert "reload rejected" in d.log_text()
    assert d.running()
    status_code, _h, body = d.http("GET", "/v1/pricing/zz")
    assert status_code == 200 and json.loads(body)["base_fare"] == 13.0, body   # the accepted one
