"""A real redis-server on a private loopback port, one per test.

Started with no persistence (`--save '' --appendonly no`) and with
`--enable-debug-command local` so tests may use `DEBUG SLEEP` (redis 7.0
disables DEBUG by default). Fault injection: .stop()/.start() (same port
again, so a daemon's config stays valid), .kill() (SIGKILL), .pause(ms)
(CLIENT PAUSE: connections are accepted, commands wait), .freeze()/.thaw()
(SIGSTOP/SIGCONT: the kernel still accepts connections, nothing answers).

host= binds another address than 127.0.0.1 and netns= runs the server in a
network namespace (eqtest/netns.py): Redis(dir, host=ns.addr, netns=ns).
"""

import os
import signal
import socket
import subprocess
import time

from . import util


class RedisError(Exception):
    """An error reply from redis (-ERR ...)."""


class Redis:
    def __init__(self, workdir, port=None, password=None, extra_args=(), host="127.0.0.1",
                 netns=None):
        self.workdir = workdir
        self.host = host                 # the address it binds and is reached at
        self.netns = netns               # a netns.Netns to run in, or None
        self.port = port
        self.password = password
        self.extra_args = list(extra_args)
        self.proc = None
        self.frozen = False
        self.log_path = os.path.join(workdir, "redis.log")
        os.makedirs(workdir, exist_ok=True)

    # -- lifecycle ---------------------------------------------------------

    def _argv(self):
        argv = ["redis-server", "--port", str(self.port), "--bind", self.host,
                "--save", "", "--appendonly", "no", "--daemonize", "no",
                "--dir", self.workdir, "--logfile", self.log_path,
                "--enable-debug-command", "local", "--protected-mode", "no"]
        if self.password:
            argv += ["--requirepass", self.password]
        argv += self.extra_args
        return self.netns.wrap(argv) if self.netns else argv

    def start(self, timeout=10.0):
        """Starts redis-server (on the same port as before, if it ran before)
        and waits until it answers PING. Picks another port only on the very
        first start, if the chosen one was taken meanwhile."""
        if self.running():
            return self
        first = self.port is None
        for attempt in range(5):
            if self.port is None:
                self.port = util.free_port()
            self.proc = util.track(subprocess.Popen(
                self._argv(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.STDOUT, cwd=self.workdir, start_new_session=True),
                f"redis-server :{self.port}")
            self.frozen = False
            try:
                util.wait_for(self._ready_or_dead, timeout=timeout,
                              desc=f"redis-server on port {self.port}")
            except TimeoutError as exc:
                self._reap(signal.SIGKILL)
                raise util.HarnessError(f"{exc}\n{util.tail(self.log_path)}") from None
            if self.proc.poll() is None:
                return self
            log = util.tail(self.log_path)
            self._reap(signal.SIGKILL)
            if "Address already in use" in log and (first or attempt < 4):
                if first:
                    self.port = None
                time.sleep(0.2)
                continue
            raise util.HarnessError(f"redis-server on port {self.port} exited at start:\n{log}")
        raise util.HarnessError("redis-server: could not bind a free port after 5 tries")

    def _ready_or_dead(self):
        if self.proc.poll() is not None:
            return True
        try:
            return self.cmd("PING") == "PONG"
        except (OSError, RedisError):
            return False

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=10.0):
        """Stops redis-server (SIGTERM, then SIGKILL) and waits for the port
        to be closed."""
        self._reap(signal.SIGTERM, timeout)
        return self

    def kill(self):
        """SIGKILL: as abrupt as a crash."""
        self._reap(signal.SIGKILL)
        return self

    def restart(self):
        self.stop()
        return self.start()

    def _reap(self, sig, timeout=10.0):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGCONT)
                os.kill(self.proc.pid, sig)
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            except ProcessLookupError:
                pass
        self.proc.wait()
        util.untrack(self.proc)
        self.proc = None
        self.frozen = False

    def freeze(self):
        """SIGSTOP: the port still accepts TCP connections (kernel backlog)
        but nothing is ever answered: a hung backend."""
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.frozen = True
        return self

    def thaw(self):
        if self.proc is not None and self.frozen:
            os.kill(self.proc.pid, signal.SIGCONT)
        self.frozen = False
        return self

    def pause(self, ms, mode="ALL"):
        """CLIENT PAUSE ms: every client's commands wait for ms (redis keeps
        accepting connections). mode "WRITE" pauses only writes."""
        return self.cmd("CLIENT", "PAUSE", str(int(ms)), mode)

    # -- commands ----------------------------------------------------------

    def cli(self, *args, timeout=10):
        """Runs redis-cli against this server; returns its stdout, stripped.
        Raises RedisError on an error reply."""
        argv = ["redis-cli", "-h", self.host, "-p", str(self.port)]
        if self.password:
            argv += ["--no-auth-warning", "-a", self.password]
        res = util.run(argv + [str(a) for a in args], timeout=timeout, check=False)
        out = res.stdout.strip()
        if res.returncode != 0 or out.startswith(("ERR ", "WRONGTYPE ", "NOAUTH ")):
            raise RedisError(out or res.stderr.strip())
        return out

    def cmd(self, *args, timeout=5.0):
        """Sends one command over RESP and returns the decoded reply: str,
        int, None or a list. Raises RedisError on an error reply."""
        with socket.create_connection((self.host, self.port), timeout=timeout) as s:
            f = s.makefile("rb")
            if self.password:
                s.sendall(_encode(["AUTH", self.password]))
                _decode(f)
            s.sendall(_encode(args))
            return _decode(f)

    # Convenience for the platform's data (DESIGN.md, "Data sources").
    def set_zone(self, zone_id, base_fare, surge_multiplier, supply_count=10,
                 demand_count=10, updated_at=None):
        """HSET pricing:{zone_id} with the platform's fields; updated_at is
        unix ms (default: now; pass False to leave it out)."""
        fields = ["base_fare", base_fare, "surge_multiplier", surge_multiplier,
                  "supply_count", supply_count, "demand_count", demand_count]
        if updated_at is None:
            updated_at = int(time.time() * 1000)
        if updated_at is not False:
            fields += ["updated_at", updated_at]
        return self.cmd("HSET", f"pricing:{zone_id}", *fields)

    def __repr__(self):
        return f"<Redis {self.host}:{self.port} {'running' if self.running() else 'stopped'}>"


def _encode(args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def _decode(f):
    line = f.readline()
    if not line:
        raise ConnectionError("redis closed the connection")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RedisError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)[:-2]
        try:
            return data.decode()
        except UnicodeDecodeError:
            return data
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [_decode(f) for _ in range(n)]
    raise RedisError(f"unexpected RESP reply {line!r}")
