"""Redis master + replica + three redis-sentinel processes, on free loopback
ports (DESIGN.md, "Production topologies").

    s = SentinelSet(os.path.join(test_tmp, "sentinel")).start()
    s.master_name            # "mymaster"
    s.sentinel_addrs         # ["127.0.0.1:P1", "127.0.0.1:P2", "127.0.0.1:P3"]
    s.master()               # the Redis object Sentinel calls master now
    s.replica()              # the other one
    s.master_addr()          # ("127.0.0.1", port) as SENTINEL get-master-addr-by-name says
    s.kill_master()          # SIGKILL the current master; returns that Redis
    s.wait_new_master(old)   # waits until every Sentinel names another master
    s.restart(node)          # starts a stopped node again on its port (as a
                             # replica of the current master by default)
    s.failover()             # SENTINEL FAILOVER (the old master keeps running
                             # and is demoted to a replica)

Sentinel is tuned for tests: down-after-milliseconds 1000 (a dead master is
`s_down` after 1 s, the failover starts at once since the quorum is 2 of 3),
failover-timeout 5000. A failover after a SIGKILL typically completes
(`+switch-master`) in 1.5-3 s; tests measure rather than assume it.

Both Redis nodes are eqtest.redis.Redis objects (so .set_zone(), .cmd(),
.freeze() work); data written to the master reaches the replica by
replication (`wait_replicated()` waits for it). Sentinels run in the default
namespace on 127.0.0.1 only; the nodes may live in a network namespace
(host=, netns=) to be partitioned.
"""

import os
import signal
import subprocess

from . import util
from .redis import Redis, RedisError

DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000


class Sentinel:
    """One redis-sentinel process with its own (rewritable) config file."""

    def __init__(self, workdir, master_name, master_host, master_port):
        self.workdir = workdir
        self.master_name = master_name
        self.master_host, self.master_port = master_host, master_port
        self.port = None
        self.proc = None
        self.conf_path = os.path.join(workdir, "sentinel.conf")
        self.log_path = os.path.join(workdir, "sentinel.log")
        os.makedirs(workdir, exist_ok=True)

    def _write_conf(self):
        # Sentinel rewrites this file (known replicas, epochs): written once.
        with open(self.conf_path, "w") as f:
            f.write(f"port {self.port}\nbind 127.0.0.1\ndaemonize no\n"
                    f"protected-mode no\ndir {self.workdir}\nlogfile {self.log_path}\n"
                    f"sentinel resolve-hostnames no\n"
                    f"sentinel monitor {self.master_name} {self.master_host} "
                    f"{self.master_port} 2\n"
                    f"sentinel down-after-milliseconds {self.master_name} {DOWN_AFTER_MS}\n"
                    f"sentinel failover-timeout {self.master_name} {FAILOVER_TIMEOUT_MS}\n"
                    f"sentinel parallel-syncs {self.master_name} 1\n")

    def start(self, timeout=10.0):
        if self.running():
            return self
        first = self.port is None
        for attempt in range(5):
            if self.port is None:
                self.port = util.free_port()
            if first:
                self._write_conf()
            self.proc = util.track(subprocess.Popen(
                ["redis-sentinel", self.conf_path], stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, cwd=self.workdir,
                start_new_session=True), f"redis-sentinel :{self.port}")
            try:
                util.wait_for(self._ready_or_dead, timeout=timeout,
                              desc=f"redis-sentinel on port {self.port}")
            except TimeoutError as exc:
                self.kill()
                raise util.HarnessError(f"{exc}\n{util.tail(self.log_path)}") from None
            if self.proc.poll() is None:
                return self
            log = util.tail(self.log_path)
            self.kill()
            if "Address already in use" in log and first and attempt < 4:
                self.port = None
                continue
            raise util.HarnessError(f"redis-sentinel on port {self.port} exited:\n{log}")
        raise util.HarnessError("redis-sentinel: could not bind a free port after 5 tries")

    def _ready_or_dead(self):
        if self.proc.poll() is not None:
            return True
        try:
            return self.cmd("PING") == "PONG"
        except (OSError, RedisError):
            return False

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        if self.proc is None:
            return self
        if self.proc.poll() is None:
            util.kill_quietly(self.proc.pid, signal.SIGCONT)
            util.kill_quietly(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        util.untrack(self.proc)
        self.proc = None
        return self

    def stop(self):
        return self.kill()

    def cmd(self, *args, timeout=5.0):
        # The same RESP client as Redis's, pointed at this sentinel.
        return Redis.cmd(_Addr(self.port), *args, timeout=timeout)

    def master_addr(self):
        """(host, port) this Sentinel names as master, or None."""
        reply = self.cmd("SENTINEL", "get-master-addr-by-name", self.master_name)
        return (reply[0], int(reply[1])) if reply else None

    @property
    def addr(self):
        return f"127.0.0.1:{self.port}"

    def __repr__(self):
        return f"<Sentinel 127.0.0.1:{self.port} {'running' if self.running() else 'stopped'}>"


class _Addr:
    """Enough of a Redis object for Redis.cmd: an address without password."""

    def __init__(self, port, host="127.0.0.1"):
        self.host, self.port, self.password = host, port, None


class SentinelSet:
    def __init__(self, workdir, master_name="mymaster", sentinels=3, host="127.0.0.1",
                 netns=None, password=None):
        """The nodes bind host (in netns if given); sentinels on 127.0.0.1.
        With password, both nodes require it (and replicate with it) and
        the Sentinels authenticate with it."""
        self.workdir = workdir
        self.master_name = master_name
        self.n_sentinels = sentinels
        self.password = password
        # Diskless full syncs start at once (7.0 waits 5 s for more replicas).
        self.nodes = [Redis(os.path.join(workdir, f"redis-{i}"), password=password,
                            host=host, netns=netns,
                            extra_args=["--repl-diskless-sync-delay", "0"])
                      for i in range(2)]
        self.sentinels = []

    # -- lifecycle ---------------------------------------------------------

    def start(self, timeout=20.0):
        """Starts node 0 as master, node 1 as its replica, then the
        Sentinels; returns once every Sentinel knows the replica and the
        other Sentinels (so a failover can start at once)."""
        master, replica = self.nodes
        master.start()
        replica.port = replica.port or util.free_port()
        self._set_replica_args(replica, master)
        replica.start()
        util.wait_for(lambda: self._link_up(replica), timeout=timeout,
                      desc=f"replica :{replica.port} to sync from :{master.port}")
        for i in range(self.n_sentinels):
            s = Sentinel(os.path.join(self.workdir, f"sentinel-{i}"), self.master_name,
                         master.host, master.port)
            if self.password:
                # Written before the first start so it lands in the conf file.
                s.port = util.free_port()
                s._write_conf()
                with open(s.conf_path, "a") as f:
                    f.write(f"sentinel auth-pass {self.master_name} {self.password}\n")
            self.sentinels.append(s.start())
        util.wait_for(self._sentinels_settled, timeout=timeout,
                      desc="every sentinel to see the replica and the other sentinels")
        return self

    def _set_replica_args(self, node, master):
        args = [a for a in node.extra_args]
        if "--replicaof" in args:
            i = args.index("--replicaof")
            del args[i:i + 3]
        args += ["--replicaof", master.host, str(master.port)]
        if self.password:
            args = [a for a in args if a != "--masterauth"]
            args += ["--masterauth", self.password]
        node.extra_args = args

    def _link_up(self, replica):
        info = replica.cmd("INFO", "replication")
        return "master_link_status:up" in info

    def _sentinels_settled(self):
        for s in self.sentinels:
            m = s.cmd("SENTINEL", "master", self.master_name)
            fields = dict(zip(m[::2], m[1::2]))
            if int(fields.get("num-slaves", 0)) < 1:
                return False
            if int(fields.get("num-other-sentinels", 0)) < self.n_sentinels - 1:
                return False
        return True

    def close(self):
        for s in self.sentinels:
            s.kill()
        for n in self.nodes:
            n.thaw()
            n.kill()

    # -- what Sentinel says --------------------------------------------------

    @property
    def sentinel_addrs(self):
        return [s.addr for s in self.sentinels]

    def master_addr(self):
        """(host, port) the first answering Sentinel names as master."""
        last = None
        for s in self.sentinels:
            if not s.running():
                continue
            try:
                return s.master_addr()
            except (OSError, RedisError) as exc:
                last = exc
        raise util.HarnessError(f"no sentinel answered: {last!r}")

    def node_at(self, addr):
        for n in self.nodes:
            if (n.host, n.port) == tuple(addr):
                return n
        raise util.HarnessError(f"sentinel names {addr}, not one of this set's nodes")

    def master(self):
        """The node Sentinel currently names as master."""
        return self.node_at(self.master_addr())

    def replica(self):
        """The node that is not the current master."""
        m = self.master()
        return next(n for n in self.nodes if n is not m)

    def role(self, node):
        """ROLE's first element as the node itself says: 'master' or 'slave'."""
        return node.cmd("ROLE")[0]

    # -- faults ----------------------------------------------------------------

    def kill_master(self):
        """SIGKILLs the current master; returns it (stopped)."""
        m = self.master()
        m.kill()
        return m

    def wait_new_master(self, old, timeout=20.0):
        """Waits until every running Sentinel names a master other than old
        and that node says ROLE master; returns the new master."""
        old_addr = (old.host, old.port)

        def switched():
            addrs = {s.master_addr() for s in self.sentinels if s.running()}
            if len(addrs) != 1 or old_addr in addrs:
                return None
            node = self.node_at(addrs.pop())
            return node if self.role(node) == "master" else None
        return util.wait_for(switched, timeout=timeout, interval=0.05,
                             desc=f"sentinels to elect a master other than :{old.port}")

    def restart(self, node, as_replica=True, timeout=20.0):
        """Starts a stopped node again on its port. as_replica: started with
        --replicaof the current master (what a config management tool would
        do); else started bare, as a master Sentinel must demote. Waits until
        its replication link is up (as_replica) or until Sentinel has
        demoted it (not as_replica)."""
        if node.running():
            return node
        m = self.master()
        if as_replica:
            self._set_replica_args(node, m)
        else:
            node.extra_args = [a for a in node.extra_args]
            if "--replicaof" in node.extra_args:
                i = node.extra_args.index("--replicaof")
                del node.extra_args[i:i + 3]
        node.start()
        util.wait_for(lambda: self.role(node) == "slave" and self._link_up(node),
                      timeout=timeout, desc=f":{node.port} to replicate from :{m.port}")
        return node

    def failover(self, timeout=20.0):
        """SENTINEL FAILOVER: Sentinel promotes the replica and demotes the
        running master without any disconnect on our side. Returns the new
        master once every Sentinel names it and the old one says ROLE slave."""
        old = self.master()

        def asked():
            # NOGOODSLAVE: the Sentinel has not yet seen a replica it trusts
            # (one that just rejoined); INPROG: an earlier failover is still
            # finishing. Both pass: ask again.
            try:
                return self.sentinels[0].cmd("SENTINEL", "FAILOVER", self.master_name) == "OK"
            except RedisError as exc:
                if str(exc).startswith(("NOGOODSLAVE", "INPROG")):
                    return False
                raise
        util.wait_for(asked, timeout=timeout, interval=0.2,
                      desc="a Sentinel to accept SENTINEL FAILOVER")
        new = self.wait_new_master(old, timeout=timeout)
        util.wait_for(lambda: self.role(old) == "slave", timeout=timeout,
                      desc=f"old master :{old.port} to be demoted")
        return new

    def wait_replicated(self, timeout=10.0):
        """Waits until the replica's replication offset reaches the master's."""
        m, r = self.master(), self.replica()

        def caught_up():
            mo = _info_int(m.cmd("INFO", "replication"), "master_repl_offset")
            ro = _info_int(r.cmd("INFO", "replication"), "slave_repl_offset")
            return ro is not None and mo is not None and ro >= mo
        util.wait_for(caught_up, timeout=timeout, desc="the replica to catch up")
        return self

    def __repr__(self):
        return f"<SentinelSet {self.master_name} nodes={self.nodes} sentinels={self.sentinels}>"


def _info_int(info, key):
    for line in info.splitlines():
        if line.startswith(key + ":"):
            return int(line.split(":", 1)[1])
    return None
