"""The topology fixtures test themselves against the real programs:
Redis + Sentinel (eqtest/sentinel.py), network namespaces and partitions
(eqtest/netns.py), a PostgreSQL streaming standby (eqtest/pg.py). The
topology tests (test_topo_*.py) rely on exactly what is proven here.
"""

import os
import socket
import time

import pytest

from eqtest import util


# --------------------------------------------------------------------------
# Sentinel

def test_sentinel_set_starts_master_replica_and_three_sentinels(sentinel):
    m, r = sentinel.master(), sentinel.replica()
    assert m is sentinel.nodes[0] and r is sentinel.nodes[1]
    assert sentinel.role(m) == "master" and sentinel.role(r) == "slave"
    assert len(sentinel.sentinel_addrs) == 3
    assert all(a.startswith("127.0.0.1:") for a in sentinel.sentinel_addrs)
    for s in sentinel.sentinels:
        assert s.master_addr() == ("127.0.0.1", m.port)
    m.set_zone("z1", 12.5, 1.7)
    sentinel.wait_replicated()
    assert r.cmd("HGET", "pricing:z1", "base_fare") == "12.5"


def test_sentinel_kill_master_elects_the_replica_and_restart_rejoins(sentinel):
    sentinel.master().set_zone("z1", 12.5, 1.7)
    sentinel.wait_replicated()
    t0 = time.monotonic()
    old = sentinel.kill_master()
    new = sentinel.wait_new_master(old)
    took = time.monotonic() - t0
    assert new is not old and sentinel.role(new) == "master"
    assert new.cmd("HGET", "pricing:z1", "base_fare") == "12.5"
    # down-after 1000 ms: a failover cannot complete sooner, and must come
    # well within failover-timeout.
    assert 1.0 <= took < 15, took
    sentinel.restart(old)
    assert sentinel.role(old) == "slave"
    assert sentinel.master() is new
    new.set_zone("z2", 3, 1)
    sentinel.wait_replicated()
    assert old.cmd("HGET", "pricing:z2", "base_fare") == "3"


def test_sentinel_restarted_bare_master_is_demoted_by_sentinel(sentinel):
    old = sentinel.kill_master()
    new = sentinel.wait_new_master(old)
    sentinel.restart(old, as_replica=False)    # comes back believing it is master
    assert sentinel.role(old) == "slave" and sentinel.master() is new


def test_sentinel_failover_demotes_the_running_master(sentinel):
    old = sentinel.master()
    new = sentinel.failover()
    assert new is not old and old.running()
    assert sentinel.role(old) == "slave" and sentinel.role(new) == "master"
    with pytest.raises(Exception, match="READONLY"):
        old.cmd("SET", "k", "v")


# --------------------------------------------------------------------------
# Network namespaces and partitions

def test_netns_block_is_private_and_collides_with_no_host_route(netns):
    import ipaddress
    from eqtest.netns import _host_networks
    before = _host_networks()
    ns = netns("a")
    net = ipaddress.ip_network(f"{ns.addr}/30", strict=False)
    assert net.subnet_of(ipaddress.ip_network("10.213.0.0/16"))
    assert not any(net.overlaps(n) for n in before)
    ns2 = netns("b")
    assert ns2.addr != ns.addr and ns2.name != ns.name


def test_netns_redis_partition_hangs_and_heal_resumes(netns, test_tmp):
    from eqtest.netns import reachable, sysctl_forwarding
    from eqtest.redis import Redis
    forwarding = sysctl_forwarding()
    ns = netns("redis")
    r = Redis(os.path.join(test_tmp, "ns-redis"), host=ns.addr, netns=ns).start()
    try:
        assert r.cmd("PING") == "PONG"
        assert r.cmd("CONFIG", "GET", "bind") == ["bind", ns.addr]
        # Not reachable on loopback: it really lives in the namespace.
        assert reachable("127.0.0.1", r.port, 0.5) == "refused"
        s = socket.create_connection((ns.addr, r.port), timeout=2)
        ns.partition()
        t0 = time.monotonic()
        assert reachable(ns.addr, r.port, 1.0) == "hang"     # not refused
        assert time.monotonic() - t0 >= 0.9
        s.sendall(b"PING\r\n")
        s.settimeout(1.0)
        with pytest.raises(TimeoutError):                    # silent, not reset
            s.recv(100)
        ns.heal()
        assert reachable(ns.addr, r.port, 1.0) == "open"
        s.settimeout(10)
        assert s.recv(100) == b"+PONG\r\n"                   # retransmitted
        s.close()
    finally:
        r.kill()
    assert sysctl_forwarding() == forwarding


def test_netns_is_removed_at_destroy(netns):
    from eqtest.netns import _links, _namespaces
    ns = netns("gone")
    name, host_if = ns.name, ns.host_if
    assert name in _namespaces() and host_if in _links()
    ns.destroy()
    assert name not in _namespaces() and host_if not in _links()


def test_netns_postgres_runs_inside_and_partitions(netns, test_tmp):
    from eqtest.netns import reachable
    from eqtest.pg import PgCluster
    ns = netns("pg")
    pg = PgCluster(os.path.join(test_tmp, "ns-pg"), name="ns-pg", host=ns.addr, netns=ns)
    try:
        pg.create()
        pg.set_zone("z1", 9, 1.5)
        assert pg.rows("SELECT zone_id, base_fare FROM current_zone_status") == [["z1", "9"]]
        assert f"hostaddr={ns.addr}" in pg.conninfo
        ns.partition()
        assert reachable(ns.addr, pg.port, 1.0) == "hang"
        ns.heal()
        pg.wait_ready()
    finally:
        pg.destroy()


# --------------------------------------------------------------------------
# PostgreSQL streaming standby

def test_pg_standby_streams_and_answers_read_only(pg_primary, pg_standby):
    assert pg_standby.in_recovery() and not pg_primary.in_recovery()
    pg_primary.set_zone("z1", 12.5, 1.7)
    pg_standby.wait_caught_up()
    assert pg_standby.rows("SELECT base_fare FROM current_zone_status") == [["12.5"]]
    with pytest.raises(Exception, match="read-only"):
        pg_standby.set_zone("z2", 1, 1)


def test_pg_standby_answers_with_the_primary_stopped_then_promotes(pg_primary, pg_standby):
    pg_primary.set_zone("z1", 12.5, 1.7)
    pg_standby.wait_caught_up()
    pg_primary.stop()
    assert pg_standby.rows("SELECT base_fare FROM current_zone_status") == [["12.5"]]
    pid = pg_standby.postmaster_pid()
    pg_standby.promote()
    assert not pg_standby.in_recovery()
    assert pg_standby.postmaster_pid() == pid             # nothing restarted
    pg_standby.set_zone("z2", 3, 1)                       # writable now
    assert len(pg_standby.rows("SELECT 1 FROM current_zone_status")) == 2


# --------------------------------------------------------------------------
# eq-kafka-dev --brokers N

def test_kafka_dev_three_brokers_leaders_and_moves(test_tmp):
    from eqtest.kafka import Kafka
    k = Kafka(os.path.join(test_tmp, "k3"), brokers=3, partitions=3,
              topics=["pricing.events"]).start()
    try:
        addrs = k.bootstrap.split(",")
        assert len(addrs) == 3 and all(a.startswith("127.0.0.1:") for a in addrs)
        assert k.leaders() == {("pricing.events", 0): 1, ("pricing.events", 1): 2,
                               ("pricing.events", 2): 3}
        k.down(1)
        assert k.move_leaders(1) == 1
        assert k.leaders()[("pricing.events", 0)] in (2, 3)
        k.down(2)
        k.down(3)
        with pytest.raises(util.HarnessError, match="every other broker is down"):
            k.move_leaders(3)
        with pytest.raises(util.HarnessError, match="broker id must be 1..3"):
            k.down(4)
        with pytest.raises(util.HarnessError, match="leader takes"):
            k.set_leader("nope", 0, 1)
        k.up()
        k.set_leader("pricing.events", 0, 1)
        assert k.leaders()[("pricing.events", 0)] == 1
    finally:
        k.close()


def test_kafka_dev_rejects_a_bad_broker_count(test_tmp):
    res = util.run([util.build_path("deploy", "dev", "eq-kafka-dev"), "--bootstrap-file",
                    os.path.join(test_tmp, "bs"), "--brokers", "10"], check=False)
    assert res.returncode == 2 and "--brokers must be 1..9" in res.stderr
