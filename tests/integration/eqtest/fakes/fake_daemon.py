#!/usr/bin/python3
"""A stand-in for equilibriumd that follows the same outside contract the
harness relies on, used by test_harness.py to test the `daemon` fixture's
own machinery (config plumbing, NOTIFY_SOCKET readiness, failure reports,
teardown of leftover workers and the segment) independently of the real
supervisor. Not a model of the daemon's behaviour beyond that.

Usage: fake_daemon.py -c FILE. Behaviour by $FAKE_MODE:
  ready        (default) create /dev/shm/<shm.name>, fork one "worker" that
               ignores SIGTERM, serve HTTP on http.listen (GET anything ->
               JSON echo of the path and Authorization header), send
               STATUS=... then READY=1, exit 0 on SIGTERM (leaving the
               worker behind on purpose).
  exit         print "fake: cannot start: boom" to stderr and exit 78.
  never        run but never send READY=1.
  ignore-term  as ready, but ignore SIGTERM too.
"""

import configparser
import http.server
import json
import os
import signal
import socket
import sys
import threading
import time


def notify(msg):
    path = os.environ.get("NOTIFY_SOCKET")
    if path:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(msg.encode(), path)


def main():
    conf_path = sys.argv[sys.argv.index("-c") + 1]
    cp = configparser.ConfigParser(interpolation=None, strict=False)
    cp.optionxform = str
    cp.read(conf_path)
    mode = os.environ.get("FAKE_MODE", "ready")
    print(f"fake: starting with {conf_path} mode {mode}", file=sys.stderr, flush=True)
    if mode == "exit":
        print("fake: cannot start: boom", file=sys.stderr, flush=True)
        sys.exit(78)

    shm = "/dev/shm/" + cp["shm"]["name"].lstrip("/")
    with open(shm, "wb") as f:
        f.write(b"\0" * 4096)

    pid = os.fork()
    if pid == 0:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        while True:
            time.sleep(1)

    host, port = cp["http"]["listen"].rsplit(":", 1)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"path": self.path,
                               "authorization": self.headers.get("Authorization"),
                               "worker_pid": pid}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer((host, int(port)), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()

    if mode == "ignore-term":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    notify("STATUS=starting workers")
    if mode != "never":
        notify(f"READY=1\nSTATUS=serving\nMAINPID={os.getpid()}")
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main()
