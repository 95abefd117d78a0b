"""HTTP clients for tests against eq-pricing.

- request(): one well-formed request through http.client (a fresh
  connection each time). Returns (status, headers, body) with headers a
  case-insensitive dict and body bytes.
- RawConnection: a plain socket for what http.client refuses to send:
  malformed request lines, oversized headers, pipelining, slow clients
  (send a request in pieces), half-closed connections. It parses responses
  itself (Content-Length, chunked, or read-to-close), so several pipelined
  responses can be read back one by one.
- raw(): send bytes, read until the server closes (or timeout), return the
  bytes; parse_responses() splits them into Response objects.
"""

import http.client
import json as _json
import socket
import time
from collections import namedtuple


class Headers(dict):
    """A dict with case-insensitive keys (stored lower-case). Repeated
    headers are joined with ', ' (as RFC 9110 allows), except Set-Cookie."""

    def __init__(self, pairs=()):
        super().__init__()
        for k, v in pairs:
            k = k.lower()
            self[k] = f"{self[k]}, {v}" if k in self else v

    def __getitem__(self, key):
        return super().__getitem__(key.lower())

    def __contains__(self, key):
        return super().__contains__(key.lower())

    def get(self, key, default=None):
        return super().get(key.lower(), default)


Response = namedtuple("Response", "status reason headers body")


def _encode_body(body, headers):
    if body is None:
        return None
    if isinstance(body, (dict, list)):
        headers.setdefault("Content-Type", "application/json")
        return _json.dumps(body).encode()
    if isinstance(body, str):
        return body.encode()
    return bytes(body)


def request(port, method, path, body=None, headers=None, host="127.0.0.1", timeout=10.0):
    """One request on a new connection. body may be bytes, str, or a dict /
    list (sent as JSON). Returns (status, Headers, body bytes)."""
    hdrs = dict(headers or {})
    data = _encode_body(body, hdrs)
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        payload = resp.read()
        return resp.status, Headers(resp.getheaders()), payload
    finally:
        conn.close()


def request_json(port, method, path, body=None, headers=None, **kw):
    """request(), with the body parsed as JSON (None if empty)."""
    status, hdrs, payload = request(port, method, path, body=body, headers=headers, **kw)
    return status, hdrs, (_json.loads(payload) if payload else None)


class RawConnection:
    """A raw TCP connection to 127.0.0.1:port."""

    def __init__(self, port, host="127.0.0.1", timeout=10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.buf = b""
        self.eof = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)
        return self

    def send_slowly(self, data, chunk=1, delay=0.05):
        """Sends data a few bytes at a time (a slow client)."""
        if isinstance(data, str):
            data = data.encode()
        for i in range(0, len(data), chunk):
            self.sock.sendall(data[i:i + chunk])
            time.sleep(delay)
        return self

    def shutdown_write(self):
        """Half-close: the server sees EOF on its read side."""
        self.sock.shutdown(socket.SHUT_WR)
        return self

    def _fill(self, deadline):
        if self.eof:
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no complete HTTP response before the timeout")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError("no complete HTTP response before the timeout") from None
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def _read_until(self, marker, deadline):
        while marker not in self.buf:
            if not self._fill(deadline):
                raise ConnectionError(f"connection closed before {marker!r} "
                                      f"(had {self.buf[:200]!r})")
        head, self.buf = self.buf.split(marker, 1)
        return head

    def _read_exact(self, n, deadline):
        while len(self.buf) < n:
            if not self._fill(deadline):
                raise ConnectionError(f"connection closed {n - len(self.buf)} bytes short")
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def read_response(self, timeout=None, head=False):
        """Reads exactly one response (for pipelining, call once per request).
        head=True for the answer to a HEAD request (no body)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        header = self._read_until(b"\r\n\r\n", deadline).decode("latin-1")
        lines = header.split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/"):
            raise ValueError(f"bad status line {lines[0]!r}")
        status, reason = int(parts[1]), (parts[2] if len(parts) > 2 else "")
        headers = Headers(tuple(x.strip() for x in line.split(":", 1))
                          for line in lines[1:] if ":" in line)
        if head or status in (204, 304) or 100 <= status < 200:
            body = b""
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            body = b""
            while True:
                size = int(self._read_until(b"\r\n", deadline).split(b";")[0], 16)
                if size == 0:
                    # Trailers (if any) end with an empty line.
                    while self._read_until(b"\r\n", deadline):
                        pass
                    break
                body += self._read_exact(size, deadline)
                self._read_exact(2, deadline)
        elif "content-length" in headers:
            body = self._read_exact(int(headers["content-length"]), deadline)
        else:
            while self._fill(deadline):
                pass
            body, self.buf = self.buf, b""
        return Response(status, reason, headers, body)

    def read_all(self, timeout=None):
        """Everything until the server closes; raises TimeoutError if it
        does not close in time."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while self._fill(deadline):
            pass
        data, self.buf = self.buf, b""
        return data

    def is_closed(self, timeout=1.0):
        """True if the server closed the connection within timeout (bytes
        received meanwhile are kept for read_response)."""
        deadline = time.monotonic() + timeout
        try:
            while self._fill(deadline):
                pass
        except TimeoutError:
            return False
        return True

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def raw(port, data, timeout=10.0, host="127.0.0.1"):
    """Sends data on a new connection, half-closes, and returns every byte
    received until the server closes the connection."""
    with RawConnection(port, host=host, timeout=timeout) as c:
        c.send(data)
        try:
            c.shutdown_write()
        except OSError:
            pass
        return c.read_all()


def parse_responses(data):
    """Splits bytes holding zero or more complete responses into Responses
    (bodies by Content-Length or chunked; a response without either takes
    the rest)."""
    class _Buf(RawConnection):
        def __init__(self, b):  # noqa: D401 - no socket, just the buffer
            self.buf, self.eof, self.timeout = b, True, 0

    src = _Buf(data)
    out = []
    while src.buf:
        out.append(src.read_response(timeout=1))
    return out
