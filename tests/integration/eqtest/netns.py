"""Network namespaces standing in for hosts, and real partitions
(DESIGN.md, "Production topologies").

    ns = Netns("redis").create()
    ns.addr                  # the namespace's address, e.g. "10.213.0.6"
    ns.host_addr             # the host end of the veth pair, e.g. "10.213.0.5"
    ns.wrap(argv)            # argv run inside the namespace (ip netns exec)
    ns.partition()           # the far end's link down: packets vanish
    ns.heal()                # link up again
    ns.destroy()

Each namespace is joined to the default namespace by one veth pair with a
private /30: host end .1, namespace end .2 of the block. Blocks come from
10.213.0.0/16 and a block is used only if it overlaps none of the host's
routes (every table, the default route aside) and no address on the host;
the choice and the creation happen under a file lock so that concurrent
test sessions never pick the same block or interface names. Nothing here
routes or forwards: the only addresses a test can reach are the namespace
ends (and loopback), so no test can ever send a packet elsewhere.

A partition sets the namespace end's link down. The neighbour entries on
both ends were pinned at creation (`ip neigh replace ... nud permanent`), so
the host never asks ARP and gets no "no route to host": its packets are
dropped by the carrier-less veth, a connect() hangs in SYN_SENT and an
established connection just stops hearing back, as when a switch or a
host dies. That is the hung peer a backend that refuses does not show.

Namespaces are named eqt-<block>-<pid>; one whose creator is dead (a
SIGKILLed pytest) is removed by the next allocation, and everything this
process created is removed at exit.
"""

import atexit
import fcntl
import ipaddress
import json
import os
import re
import socket
import threading

from . import util

POOL = ipaddress.ip_network("10.213.0.0/16")
LOCK_PATH = "/run/lock/eqtest-netns.lock"
_NAME_RE = re.compile(r"^eqt-(\d+)-(\d+)$")

_live_lock = threading.Lock()
_live = set()


def _ip(*args, netns=None, check=True, timeout=20):
    argv = ["ip"] + ([ "-n", netns] if netns else []) + list(args)
    return util.run(argv, timeout=timeout, check=check)


def _host_networks():
    """Every IPv4 network the host routes or holds an address in, except
    the default route."""
    nets = []
    out = _ip("-j", "-4", "route", "show", "table", "all").stdout
    for r in json.loads(out or "[]"):
        dst = r.get("dst")
        if not dst or dst == "default":
            continue
        try:
            nets.append(ipaddress.ip_network(dst, strict=False))
        except ValueError:
            continue
    out = _ip("-j", "-4", "addr", "show").stdout
    for link in json.loads(out or "[]"):
        for a in link.get("addr_info", []):
            nets.append(ipaddress.ip_network(f"{a['local']}/{a['prefixlen']}", strict=False))
    return nets


def _namespaces():
    out = util.run(["ip", "-j", "netns", "list"], check=False).stdout
    try:
        return [n["name"] for n in json.loads(out or "[]")]
    except ValueError:
        return []


def _links():
    out = _ip("-j", "link", "show").stdout
    return {l["ifname"] for l in json.loads(out or "[]")}


def _reap_stale():
    """Removes namespaces (and their host links) whose creator is dead."""
    for name in _namespaces():
        m = _NAME_RE.match(name)
        if not m:
            continue
        block, pid = int(m.group(1)), int(m.group(2))
        if util.pid_alive(pid):
            continue
        _ip("link", "del", f"eqh{block}", check=False)
        util.run(["ip", "netns", "del", name], check=False)


class Netns:
    def __init__(self, label="ns"):
        self.label = label               # for messages only
        self.block = None
        self.name = None
        self.host_if = self.ns_if = None
        self.addr = self.host_addr = None
        self.network = None
        self.partitioned = False

    # -- lifecycle ---------------------------------------------------------

    def create(self):
        if os.geteuid() != 0:
            raise util.HarnessError("network namespaces need root (ip netns add)")
        os.makedirs(os.path.dirname(LOCK_PATH), exist_ok=True)
        with open(LOCK_PATH, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            _reap_stale()
            self._allocate()
            try:
                self._build()
            except BaseException:
                self.destroy()
                raise
        return self

    def _allocate(self):
        taken = _host_networks()
        links = _links()
        used_blocks = {int(m.group(1)) for m in map(_NAME_RE.match, _namespaces()) if m}
        for i, net in enumerate(POOL.subnets(new_prefix=30)):
            if i == 0 or i in used_blocks:
                continue
            if f"eqh{i}" in links or f"eqn{i}" in links:
                continue
            if any(net.overlaps(t) for t in taken):
                continue
            self.block, self.network = i, net
            hosts = list(net.hosts())
            self.host_addr, self.addr = str(hosts[0]), str(hosts[1])
            self.name = f"eqt-{i}-{os.getpid()}"
            self.host_if, self.ns_if = f"eqh{i}", f"eqn{i}"
            return
        raise util.HarnessError(f"no free /30 in {POOL} for a test namespace")

    def _build(self):
        util.run(["ip", "netns", "add", self.name])
        with _live_lock:
            _live.add(self)
        _ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if,
            "netns", self.name)
        _ip("addr", "add", f"{self.host_addr}/30", "dev", self.host_if)
        _ip("link", "set", self.host_if, "up")
        _ip("link", "set", "lo", "up", netns=self.name)
        _ip("addr", "add", f"{self.addr}/30", "dev", self.ns_if, netns=self.name)
        _ip("link", "set", self.ns_if, "up", netns=self.name)
        host_mac = self._mac(self.host_if)
        ns_mac = self._mac(self.ns_if, netns=self.name)
        # Pinned neighbours: with the far end down, no ARP is ever asked, so
        # nothing reports "no route to host"; packets just vanish.
        _ip("neigh", "replace", self.addr, "lladdr", ns_mac, "dev", self.host_if,
            "nud", "permanent")
        _ip("neigh", "replace", self.host_addr, "lladdr", host_mac, "dev", self.ns_if,
            "nud", "permanent", netns=self.name)

    def _mac(self, ifname, netns=None):
        out = _ip("-j", "link", "show", "dev", ifname, netns=netns).stdout
        return json.loads(out)[0]["address"]

    def destroy(self):
        """Removes the veth pair and the namespace. Processes still inside
        keep running but can reach nothing (stop them first)."""
        if self.name is None:
            return
        _ip("link", "del", self.host_if, check=False)
        util.run(["ip", "netns", "del", self.name], check=False)
        with _live_lock:
            _live.discard(self)
        self.name = None

    # -- use -----------------------------------------------------------------

    def wrap(self, argv):
        """argv run inside the namespace (needs root: setns)."""
        return ["ip", "netns", "exec", self.name] + list(argv)

    def partition(self):
        """The namespace end's link down: from the host, packets to addr
        vanish (connect hangs, established connections go silent)."""
        _ip("link", "set", self.ns_if, "down", netns=self.name)
        self.partitioned = True
        return self

    def heal(self):
        _ip("link", "set", self.ns_if, "up", netns=self.name)
        # The neighbour entries are permanent; re-pin anyway in case the
        # link flap dropped the namespace end's.
        host_mac = self._mac(self.host_if)
        _ip("neigh", "replace", self.host_addr, "lladdr", host_mac, "dev", self.ns_if,
            "nud", "permanent", netns=self.name)
        self.partitioned = False
        return self

    def __repr__(self):
        return f"<Netns {self.label} {self.name} {self.addr}" \
               f"{' partitioned' if self.partitioned else ''}>"


def _destroy_all():
    with _live_lock:
        items = list(_live)
    for ns in items:
        try:
            ns.destroy()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


atexit.register(_destroy_all)


def sysctl_forwarding():
    """The host's net.ipv4.ip_forward (tests check it stays as found)."""
    with open("/proc/sys/net/ipv4/ip_forward") as f:
        return f.read().strip()


def reachable(addr, port, timeout):
    """'open', 'refused' or 'hang' for a TCP connect to addr:port within
    timeout seconds."""

    s = socket.socket()
    s.settimeout(timeout)
    try:
        s.connect((addr, port))
        return "open"
    except ConnectionRefusedError:
        return "refused"
    except (socket.timeout, TimeoutError):
        return "hang"
    except OSError as exc:
        return f"error: {exc}"
    finally:
        s.close()


