#!/usr/bin/env python3
"""Memory figures of eq-pricing for tests/bench/bench_pricing.sh (issue 13).

  bench_mem.py rss PID SHM
      KiB resident in PID beyond the shared-memory segment SHM (its pages
      are the segment's, counted once for the machine, not per worker).
  bench_mem.py idle HOST PORT N PID SHM TOKEN
      Opens N keep-alive connections to HOST:PORT, sends one
      GET /v1/pricing/z1 on each and reads the answer, leaves them open and
      idle, and prints the RSS growth of PID beyond the segment:
      "conns N open_after M rss_before_kib A rss_after_kib B per_conn_bytes X".
      Every connection must answer 200 and still be open at the end, else
      the run fails (exit 1): a figure from refused connections is no figure.
"""
import errno
import os
import resource
import selectors
import socket
import sys
import time


def rss_beyond_kib(pid, shm):
    """Sum of Rss over PID's mappings other than /dev/shm/<shm>."""
    seg = "/dev/shm/" + shm.lstrip("/")
    total = 0
    skip = False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            parts = line.split()
            if not parts:
                continue
            if not parts[0].endswith(":") or "-" in parts[0]:
                # a mapping header: "start-end perms offset dev inode [path]"
                skip = len(parts) >= 6 and parts[5] == seg
                continue
            if parts[0] == "Rss:" and not skip:
                total += int(parts[1])
    return total


def idle(host, port, n, pid, shm, token):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n + 100:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 100), hard))
    req = (f"GET /v1/pricing/z1 HTTP/1.1\r\nHost: {host}\r\n"
           f"Authorization: Bearer {token}\r\n\r\n").encode()
    time.sleep(0.5)
    before = rss_beyond_kib(pid, shm)
    sel = selectors.DefaultSelector()
    socks = []
    pending = {}
    deadline = time.monotonic() + 120
    batch = 200                  # connects in flight: stay under the listen backlog
    i = 0
    while (i < n or pending) and time.monotonic() < deadline:
        while i < n and len(pending) < batch:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            rc = s.connect_ex((host, port))
            if rc not in (0, errno.EINPROGRESS):
                raise SystemExit(f"bench_mem: connect {i}: {os.strerror(rc)}")
            socks.append(s)
            pending[s] = [b"", False]
            sel.register(s, selectors.EVENT_WRITE)
            i += 1
        for key, ev in sel.select(timeout=1.0):
            s = key.fileobj
            st = pending[s]
            if ev & selectors.EVENT_WRITE and not st[1]:
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    raise SystemExit(f"bench_mem: connect: {os.strerror(err)}")
                s.send(req)
                st[1] = True
                sel.modify(s, selectors.EVENT_READ)
                continue
            data = s.recv(65536)
            if not data:
                raise SystemExit("bench_mem: a connection was closed before its answer")
            st[0] += data
            head, sep, body = st[0].partition(b"\r\n\r\n")
            if sep:
                clen = 0
                for h in head.split(b"\r\n")[1:]:
                    k, _, v = h.partition(b":")
                    if k.strip().lower() == b"content-length":
                        clen = int(v)
                if len(body) >= clen:
                    if not head.startswith(b"HTTP/1.1 200"):
                        first = head.split(b"\r\n")[0]
                        raise SystemExit(f"bench_mem: answer {first!r}")
                    sel.unregister(s)
                    del pending[s]
    if pending or i < n:
        raise SystemExit(f"bench_mem: {len(pending) + n - i} connections unanswered after 120 s")
    time.sleep(1.0)
    after = rss_beyond_kib(pid, shm)
    open_after = 0
    for s in socks:              # still open: no data and no EOF
        try:
            if s.recv(1, socket.MSG_PEEK) == b"":
                continue
        except BlockingIOError:
            pass
        open_after += 1
    if open_after != n:
        raise SystemExit(f"bench_mem: only {open_after} of {n} connections still open")
    per = (after - before) * 1024 / n
    print(f"conns {n} open_after {open_after} rss_before_kib {before} rss_after_kib {after} "
          f"per_conn_bytes {per:.0f}")
    for s in socks:
        s.close()


def main(argv):
    if len(argv) == 4 and argv[1] == "rss":
        print(rss_beyond_kib(int(argv[2]), argv[3]))
    elif len(argv) == 8 and argv[1] == "idle":
        idle(argv[2], int(argv[3]), int(argv[4]), int(argv[5]), argv[6], argv[7])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
