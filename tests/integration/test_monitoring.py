"""deploy/prometheus and deploy/grafana: the alert rules load and their
unit tests pass (promtool), the dashboard JSON loads, and every metric its
queries use is exported by a running daemon; the gauges added for them
(override, auto mode, component latency, spool, ring and stale-price fill,
build info) read what the segment holds."""

import json
import os
import re
import shutil
import subprocess

import pytest

from eqtest import util

PROM = os.path.join(util.SOURCE_ROOT, "deploy", "prometheus")
RULES = os.path.join(PROM, "equilibrium.rules.yml")
RULES_TEST = os.path.join(PROM, "equilibrium.rules.test.yml")
DASHBOARD = os.path.join(util.SOURCE_ROOT, "deploy", "grafana", "equilibrium.json")

promtool = pytest.mark.skipif(shutil.which("promtool") is None,
                              reason="promtool not installed (apt-get install prometheus)")


@promtool
def test_alert_rules_load():
    res = subprocess.run(["promtool", "check", "rules", RULES], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    names = re.findall(r"^\s+- alert: (\w+)", open(RULES).read(), re.M)
    # The alerts issue 10 asks for, each under its name.
    for want in ("EquilibriumModeNotNormal", "EquilibriumOverrideLeftOn",
                 "EquilibriumComponentFailed", "EquilibriumSpoolFilling", "EquilibriumEventLag",
                 "EquilibriumWorkerCrashLoop", "EquilibriumHigh5xxRatio",
                 "EquilibriumReloadRejected", "EquilibriumTargetAbsent"):
        assert want in names, want


@promtool
def test_alert_rules_unit_tests_pass_and_cover_every_alert():
    res = subprocess.run(["promtool", "test", "rules", RULES_TEST], capture_output=True,
                         text=True, cwd=PROM)
    assert res.returncode == 0, res.stdout + res.stderr
    rules = set(re.findall(r"^\s+- alert: (\w+)", open(RULES).read(), re.M))
    tested = set(re.findall(r"alertname: (\w+)", open(RULES_TEST).read()))
    assert rules == tested, f"alerts without a promtool test: {rules - tested}"


def dashboard_metrics():
    with open(DASHBOARD) as f:
        dash = json.load(f)
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [v["query"] for v in dash["templating"]["list"] if v["type"] == "query"]
    assert exprs
    return dash, sorted({m for e in exprs for m in re.findall(r"\beq_[a-z_]+", e)})


def test_dashboard_loads_and_has_the_panels_an_sre_expects():
    dash, _names = dashboard_metrics()
    assert dash["uid"] and dash["title"] == "Equilibrium"
    titles = " | ".join(p["title"] for p in dash["panels"]).lower()
    for want in ("mode", "source", "latency by mode", "component states", "component probe latency",
                 "spool, ring and stale-price fill", "event lag", "restarts"):
        assert want in titles, want
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))


def scrape_names(d):
    status, _h, body = d.http("GET", "/metrics", token=None)
    assert status == 200
    return {line.split("{")[0].split(" ")[0] for line in body.decode().splitlines()
            if line and not line.startswith("#")}, body.decode()


def test_every_dashboard_metric_is_exported_by_a_running_daemon(daemon, redis, pg_primary):
    _dash, names = dashboard_metrics()
    d = daemon(redis=redis, pg_primary=pg_primary)
    # The first scrape, before any request was counted: closed-label series
    # are exported at 0 from the start.
    exported, text = scrape_names(d)
    assert 'eq_requests_total{endpoint="pricing",code="200",mode="normal"} ' in text
    missing = [n for n in names if n not in exported]
    assert not missing, f"dashboard queries metrics the daemon does not export: {missing}"


def test_added_gauges_read_the_segment(daemon, redis, pg_primary):
    redis.set_zone("z1", 12.5, 1.7)
    d = daemon(redis=redis, pg_primary=pg_primary, overrides={"spool.max_bytes": "2097152"})
    d.http("GET", "/v1/pricing/z1")
    d.eqctl("mode", "degraded", "--for", "5m")
    util.wait_for(lambda: 'eq_override{override="degraded"} 1\n' in scrape_names(d)[1],
                  timeout=10, desc="eq_override follows eqctl mode")
    _names, text = scrape_names(d)
    assert 'eq_override{override="none"} 0\n' in text
    assert 'eq_auto_mode{mode="normal"} 1\n' in text or 'eq_auto_mode{mode="degraded"} 1\n' in text
    assert "eq_spool_max_bytes 2097152\n" in text
    assert re.search(r"^eq_prices_entries [1-9]\d*$", text, re.M), "the z1 answer is stored"
    status = d.status()
    assert f"eq_prices_capacity {status['prices']['capacity']}\n" in text
    assert f"eq_ring_capacity {status['events']['ring_capacity']}\n" in text
    assert re.search(r'^eq_component_latency_seconds\{component="redis"\} [0-9.e-]+$', text, re.M)
    assert f'eq_build_info{{version="{status["version"]}"}} 1\n' in text
