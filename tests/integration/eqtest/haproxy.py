"""Debian's HAProxy in front of Equilibrium nodes (DESIGN.md, "Production
topologies"), on a free loopback port, with the settings a rolling restart
needs:

    option httpchk GET /readyz        a draining node (503) leaves rotation
    retry-on conn-failure empty-response, retries 3, option redispatch
                                      a refused connect or a connection the
                                      node closed without answering is
                                      retried on the other node
    default-server inter 200ms fall 1 rise 2

    h = HAProxy(dir, {"a": port_a, "b": port_b}).start()
    h.port                      # the frontend
    h.server_status("a")        # "UP", "DOWN", "MAINT", ... from "show stat"
    h.wait_status("a", "UP")

Runs in the foreground (-db) in its own process group; the admin socket is
in the workdir (or a short /tmp path when that would be too long).
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile

from . import util

CHECK_INTER_MS = 200


class HAProxy:
    def __init__(self, workdir, servers, port=None):
        self.workdir = workdir
        self.servers = dict(servers)          # name -> loopback port
        self.port = port
        self.proc = None
        self.cfg_path = os.path.join(workdir, "haproxy.cfg")
        self.log_path = os.path.join(workdir, "haproxy.log")
        os.makedirs(workdir, exist_ok=True)
        sock = os.path.join(workdir, "admin.sock")
        if len(sock) > 90:                    # haproxy: at most 97 bytes
            sock = os.path.join(tempfile.mkdtemp(prefix="eqha-", dir="/tmp"), "admin.sock")
        self.sock_path = sock

    def _config(self):
        lines = [
            "global",
            f"    stats socket {self.sock_path} mode 600 level admin",
            "defaults",
            "    mode http",
            "    timeout connect 1s",
            "    timeout client 10s",
            "    timeout server 10s",
            "    timeout http-keep-alive 1s",
            "    retries 3",
            "    option redispatch",
            "    retry-on conn-failure empty-response",
            "    option httpchk GET /readyz",
            "    http-check expect status 200",
            f"    default-server inter {CHECK_INTER_MS}ms fall 1 rise 2",
            "frontend fe",
            f"    bind 127.0.0.1:{self.port}",
            "    default_backend nodes",
            "backend nodes",
            "    balance roundrobin",
        ]
        lines += [f"    server {n} 127.0.0.1:{p} check" for n, p in self.servers.items()]
        return "\n".join(lines) + "\n"

    def start(self, timeout=10.0):
        for attempt in range(5):
            if self.port is None or attempt:
                self.port = util.free_port()
            with open(self.cfg_path, "w") as f:
                f.write(self._config())
            util.run(["haproxy", "-c", "-q", "-f", self.cfg_path])
            self._log = open(self.log_path, "ab")
            self.proc = util.track(subprocess.Popen(
                ["haproxy", "-db", "-f", self.cfg_path], stdin=subprocess.DEVNULL,
                stdout=self._log, stderr=self._log, cwd=self.workdir, start_new_session=True),
                f"haproxy :{self.port}")
            try:
                util.wait_for(lambda: self.proc.poll() is not None or
                              (util.port_open(self.port) and os.path.exists(self.sock_path)),
                              timeout=timeout, desc=f"haproxy on port {self.port}")
            except TimeoutError:
                self.stop()
                raise util.HarnessError(f"haproxy did not start:\n{util.tail(self.log_path)}")
            if self.proc.poll() is None:
                return self
            log = util.tail(self.log_path)
            self.stop()
            if "cannot bind" not in log and "Address already in use" not in log:
                raise util.HarnessError(f"haproxy exited at start:\n{log}")
        raise util.HarnessError("haproxy: could not bind a free port after 5 tries")

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            util.kill_quietly(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        util.untrack(self.proc)
        self.proc = None
        self._log.close()
        if not self.sock_path.startswith(self.workdir):
            shutil.rmtree(os.path.dirname(self.sock_path), ignore_errors=True)

    def admin(self, command, timeout=5.0):
        """One command on the admin socket; returns its output."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(self.sock_path)
            s.sendall(command.encode() + b"\n")
            chunks = []
            while True:
                b = s.recv(65536)
                if not b:
                    break
                chunks.append(b)
        return b"".join(chunks).decode(errors="replace")

    def server_status(self, name):
        """The server's status column of "show stat" (UP, DOWN, ...)."""
        out = self.admin("show stat")
        header = None
        for line in out.splitlines():
            if line.startswith("# "):
                header = line[2:].split(",")
                continue
            cols = line.split(",")
            if header and len(cols) > 1 and cols[0] == "nodes" and cols[1] == name:
                return dict(zip(header, cols))["status"]
        raise util.HarnessError(f"haproxy has no server {name!r}:\n{out[:500]}")

    def wait_status(self, name, status, timeout=20.0):
        return util.wait_for(lambda: self.server_status(name).startswith(status),
                             timeout=timeout, interval=0.05,
                             desc=f"haproxy to see server {name} {status}")
