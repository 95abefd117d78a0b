"""Shared helpers for the integration harness: paths, ports, waiting,
process bookkeeping.

Everything here runs inside the pytest process. Processes started by the
fixtures are registered with `track()` so that even an interrupted session
(Ctrl-C, a fixture that raised half-way) leaves nothing running: the atexit
hook kills every tracked process group that is still alive.
"""

import atexit
import errno
import os
import pwd
import signal
import socket
import subprocess
import threading
import time

SOURCE_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
PG_BINDIR = "/usr/lib/postgresql/15/bin"
SERVICE_USER = "equilibrium"


class HarnessError(RuntimeError):
    """A fixture could not provide what it promised (with the reason)."""


def build_dir():
    """The meson build directory: $EQ_BUILD_DIR, else <repo>/build."""
    return os.path.abspath(os.environ.get("EQ_BUILD_DIR") or os.path.join(SOURCE_ROOT, "build"))


def build_path(*parts):
    return os.path.join(build_dir(), *parts)


def require_binary(path, what, owner):
    """Returns path if it is an executable file, else raises HarnessError
    naming who builds it and how to build it."""
    if os.path.isfile(path) and os.access(path, os.X_OK):
        return path
    raise HarnessError(
        f"{what} not built: {path} is missing (built by helper '{owner}'); "
        f"run 'ninja -C {build_dir()}' or tests/run")


# --------------------------------------------------------------------------
# Waiting

def wait_for(pred, timeout=10.0, interval=0.05, desc=None):
    """Calls pred() until it returns something truthy and returns that value.

    Exceptions raised by pred count as "not yet" (the last one is reported).
    Raises TimeoutError after `timeout` seconds, naming `desc` (or pred) and
    the last value or exception seen."""
    deadline = time.monotonic() + timeout
    last, last_exc = None, None
    while True:
        try:
            last = pred()
            last_exc = None
            if last:
                return last
        except Exception as exc:  # noqa: BLE001 - reported below
            last_exc = exc
        if time.monotonic() >= deadline:
            what = desc or getattr(pred, "__name__", repr(pred))
            detail = f"last exception: {last_exc!r}" if last_exc else f"last value: {last!r}"
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what} ({detail})")
        time.sleep(interval)


# --------------------------------------------------------------------------
# Ports

_port_lock = threading.Lock()
_handed_out = set()


def free_port():
    """A TCP port on 127.0.0.1 that is free right now and has not been handed
    out before in this session.

    The kernel picks it (bind to port 0), so concurrent test runs rarely
    collide; servers started on it still retry on EADDRINUSE because another
    process can take it between this call and their bind."""
    with _port_lock:
        for _ in range(100):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            if port not in _handed_out:
                _handed_out.add(port)
                return port
    raise HarnessError("could not find a free TCP port on 127.0.0.1")


def closed_port():
    """A port nothing listens on (connecting to it is refused): for "absent"
    backends in generated configs."""
    return free_port()


def port_open(port, host="127.0.0.1", timeout=0.2):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------
# Processes

_tracked_lock = threading.Lock()
_tracked = {}   # pid -> (Popen, description, pgid or None)


def track(proc, desc, own_group=True):
    """Registers a started Popen for the emergency cleanup at exit."""
    with _tracked_lock:
        _tracked[proc.pid] = (proc, desc, proc.pid if own_group else None)
    return proc


def untrack(proc):
    with _tracked_lock:
        _tracked.pop(proc.pid, None)


def _kill_tracked():
    with _tracked_lock:
        items = list(_tracked.values())
        _tracked.clear()
    for proc, _desc, pgid in items:
        try:
            if pgid is not None:
                os.killpg(pgid, signal.SIGCONT)
                os.killpg(pgid, signal.SIGKILL)
            elif proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
                proc.kill()
        except OSError:
            pass
        try:
            proc.wait(timeout=5)
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


atexit.register(_kill_tracked)


def pid_alive(pid):
    """True if pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return False
    # State is the field after the parenthesised command name.
    state = data[data.rindex(b")") + 2:data.rindex(b")") + 3]
    return state not in (b"Z", b"X")


def pid_cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def pid_starttime(pid):
    """The process start time in clock ticks (field 22 of /proc/PID/stat),
    to tell a process from a later one that reused its pid; None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return int(data[data.rindex(b")") + 2:].split()[19])


def pids_in_group(pgid):
    """Live pids whose process group is pgid (scans /proc)."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        fields = data[data.rindex(b")") + 2:].split()
        if int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            out.append(int(name))
    return out


def kill_quietly(pid, sig):
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False
    except OSError as exc:
        if exc.errno == errno.ESRCH:
            return False
        raise


def tail(path, lines=40):
    """The last `lines` lines of a text file ('' if it does not exist)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read()
    except OSError:
        return ""
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:])


# --------------------------------------------------------------------------
# The service user (PostgreSQL refuses to run as root)

def service_user():
    """(uid, gid, name) the backends run as: `equilibrium` when we are root,
    else ourselves."""
    if os.geteuid() != 0:
        pw = pwd.getpwuid(os.geteuid())
        return pw.pw_uid, pw.pw_gid, pw.pw_name
    try:
        pw = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        raise HarnessError(
            f"user '{SERVICE_USER}' does not exist: run deploy/dev/install-deps "
            f"(or useradd --system --home-dir /var/lib/equilibrium "
            f"--shell /usr/sbin/nologin {SERVICE_USER})") from None
    return pw.pw_uid, pw.pw_gid, pw.pw_name


def as_service_user(argv):
    """argv prefixed so that it runs as the service user (no-op if not root)."""
    if os.geteuid() != 0:
        return list(argv)
    uid, gid, _name = service_user()
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
            "--inh-caps=-all", "--"] + list(argv)


def chown_service(path):
    if os.geteuid() == 0:
        uid, gid, _ = service_user()
        os.chown(path, uid, gid)


def run(argv, timeout=60, check=True, input=None, env=None, cwd=None):
    """subprocess.run with text output captured; raises HarnessError with the
    command's stderr when check and it fails."""
    try:
        res = subprocess.run(argv, input=input, capture_output=True, timeout=timeout,
                             env=env, cwd=cwd, text=True, stdin=None if input is not None
                             else subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise HarnessError(f"{' '.join(argv)}: timed out after {timeout}s") from exc
    if check and res.returncode != 0:
        raise HarnessError(f"{' '.join(argv)}: exit {res.returncode}: "
                           f"{(res.stderr or res.stdout).strip()[-2000:]}")
    return res
