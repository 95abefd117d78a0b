"""pytest fixtures for Equilibrium's integration tests (BRIEF.md,
"Integration tests"; docs/development.md).

    redis       a fresh redis-server per test            (eqtest/redis.py)
    pg_primary  a PostgreSQL cluster for the session,    (eqtest/pg.py)
    pg_backup   an independent second one; each test finds it running,
                thawed and with current_zone_status empty
    kafka       eq-kafka-dev, the mock broker, per test  (eqtest/kafka.py)
    sentinel    Redis master + replica + 3 Sentinels,    (eqtest/sentinel.py)
                per test
    pg_standby  a streaming hot standby of pg_primary,   (eqtest/pg.py)
                per test
    netns       factory: netns(label) -> a network       (eqtest/netns.py)
                namespace joined by a veth pair, removed at teardown
    (HAProxy in front of nodes: eqtest/haproxy.py, used directly by
    test_topo_haproxy.py)
    daemon      factory: daemon(**overrides) -> a started equilibriumd
                wired to whichever of the above the test uses (eqtest/daemon.py)

Everything binds 127.0.0.1 on free ports and lives under one per-session
temp dir (/tmp/eqt-<pid>-*). It is removed at the end of a session where
every test passed, and kept (its path printed, without the PostgreSQL data
dirs) otherwise; EQ_KEEP_TMP=1 keeps all of it. The build under test is $EQ_BUILD_DIR (default <repo>/build).
"""

import os
import re
import shutil
import tempfile

import pytest

from eqtest.daemon import DaemonFactory
from eqtest.kafka import Kafka
from eqtest.pg import PgCluster
from eqtest.redis import Redis
from eqtest.netns import Netns
from eqtest.sentinel import SentinelSet


# --------------------------------------------------------------------------
# Temp dirs

_state = {"failed": False}     # did any test of the session fail?

@pytest.fixture(scope="session")
def session_tmp():
    """The per-session temp root, traversable by the service user (the PG
    data dirs below it belong to `equilibrium`)."""
    root = tempfile.mkdtemp(prefix=f"eqt-{os.getpid()}-", dir="/tmp")
    os.chmod(root, 0o755)
    yield root
    if os.environ.get("EQ_KEEP_TMP"):
        print(f"\n[eqtest] test files kept in {root}")
    elif _state["failed"]:
        # Logs and configs stay for the post-mortem; the clusters' data
        # (tens of MB each, stopped by now) does not.
        for name in ("pg-primary", "pg-backup"):
            shutil.rmtree(os.path.join(root, name, "data"), ignore_errors=True)
        print(f"\n[eqtest] test files kept in {root} (logs, configs; no PG data)")
    else:
        shutil.rmtree(root, ignore_errors=True)


_test_seq = [0]


@pytest.fixture
def test_tmp(request, session_tmp):
    """A temp dir for this test under the session root."""
    _test_seq[0] += 1
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)[:60]
    path = os.path.join(session_tmp, f"{_test_seq[0]:03d}-{name}")
    os.makedirs(path)
    os.chmod(path, 0o755)
    return path


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keeps each phase's report on the item (rep_setup, rep_call), so
    fixtures can tell at teardown whether the test failed."""
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
    if rep.failed:
        _state["failed"] = True


def _test_failed(request):
    return any(getattr(getattr(request.node, f"rep_{w}", None), "failed", False)
               for w in ("setup", "call"))


# --------------------------------------------------------------------------
# Backends

@pytest.fixture
def redis(test_tmp):
    """A fresh redis-server for this test (.port, .cli(), .cmd(), .stop(),
    .start(), .kill(), .pause(ms), .freeze(), .thaw(), .set_zone())."""
    r = Redis(os.path.join(test_tmp, "redis")).start()
    yield r
    r.thaw()
    r.kill()


@pytest.fixture
def sentinel(test_tmp):
    """Redis master + replica + three redis-sentinel processes for this test
    (.master(), .replica(), .sentinel_addrs, .master_name, .master_addr(),
    .kill_master(), .wait_new_master(old), .restart(node), .failover()):
    see eqtest/sentinel.py."""
    s = SentinelSet(os.path.join(test_tmp, "sentinel"))
    try:
        s.start()
    except BaseException:
        s.close()
        raise
    yield s
    s.close()


def _pg_session(session_tmp, name):
    cluster = PgCluster(os.path.join(session_tmp, name), name=name)
    try:
        cluster.create()
    except BaseException:
        cluster.destroy()
        raise
    return cluster


@pytest.fixture(scope="session")
def _pg_primary_cluster(session_tmp):
    c = _pg_session(session_tmp, "pg-primary")
    yield c
    c.destroy()


@pytest.fixture(scope="session")
def _pg_backup_cluster(session_tmp):
    c = _pg_session(session_tmp, "pg-backup")
    yield c
    c.destroy()


def _pg_for_test(cluster):
    cluster.start()            # thaws and restarts what a previous test left
    cluster.wait_ready()
    cluster.reset_data()
    yield cluster
    cluster.start()


@pytest.fixture
def pg_primary(_pg_primary_cluster):
    """The session's primary PostgreSQL (.conninfo, .port, .sql(), .rows(),
    .stop(), .start(), .kill(), .freeze(), .thaw(), .set_zone()). Running and
    with an empty current_zone_status at the start of each test; restarted
    after a test that stopped it."""
    yield from _pg_for_test(_pg_primary_cluster)


@pytest.fixture
def pg_backup(_pg_backup_cluster):
    """An independent second cluster, as pg_primary."""
    yield from _pg_for_test(_pg_backup_cluster)


@pytest.fixture
def pg_standby(pg_primary, test_tmp):
    """A hot standby of this test's pg_primary (pg_basebackup -R), streaming
    and answering read-only queries; .promote(), .in_recovery(),
    .wait_caught_up(). Thrown away (data dir too) at teardown."""
    sb = None
    try:
        sb = PgCluster.standby_of(pg_primary, os.path.join(test_tmp, "pg-standby"))
        yield sb
    finally:
        if sb is not None:
            sb.destroy()
            shutil.rmtree(sb.datadir, ignore_errors=True)


@pytest.fixture
def netns():
    """Factory: netns(label="ns") -> a created eqtest.netns.Netns (.addr,
    .wrap(argv), .partition(), .heal()). Every namespace it made is removed
    at teardown; stop what runs inside first (fixtures listed after this
    one in a test's arguments are torn down before it)."""
    made = []

    def make(label="ns"):
        ns = Netns(label).create()
        made.append(ns)
        return ns
    yield make
    for ns in made:
        ns.destroy()


@pytest.fixture
def kafka(request, test_tmp):
    """eq-kafka-dev for this test (.bootstrap, .down(), .up(), .latency(ms),
    .consume(topic) -> [bytes], .records(topic), .wait_messages(topic, n)).
    One broker and one partition per topic unless the test is marked
    @pytest.mark.kafka(partitions=N, topics=[...], brokers=N). Errors (never skips) if
    eq-kafka-dev is not built."""
    marker = request.node.get_closest_marker("kafka")
    k = Kafka(os.path.join(test_tmp, "kafka"), **(marker.kwargs if marker else {})).start()
    yield k
    k.close()


# --------------------------------------------------------------------------
# The daemon

@pytest.fixture
def daemon(request, test_tmp, session_tmp):
    """Factory: daemon(overrides=None, *, redis=None, pg_primary=None,
    pg_backup=None, kafka=None, token=..., start=True, args=(), env=None,
    **overrides) -> Daemon (see eqtest/daemon.py)."""
    factory = DaemonFactory(request, test_tmp, session_tmp)
    yield factory
    if _test_failed(request):
        for d in factory.daemons:
            print(f"\n[eqtest] {d!r} config {d.conf_path}\n--- log tail ---\n"
                  f"{d.log_tail(60)}\n--- notify: {d.notify_messages!r}")
    factory.close()



def pytest_configure(config):
    config.addinivalue_line(
        "markers", "kafka(partitions=1, topics=(...), brokers=1): how the kafka fixture's "
        "broker is made")
