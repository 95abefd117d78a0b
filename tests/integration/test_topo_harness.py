"""The topology fixtures test themselves against the real programs:
Redis + Sentinel (eqtest/sentinel.py), network namespaces and partitions
(eqtest/netns.py), a PostgreSQL streaming standby (eqtest/pg.py). The
topology tests (test_topo_*.py) rely on exactly what is proven here.
"""

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
