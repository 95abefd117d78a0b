"""equilibriumd as an operator and systemd see it: it starts and watches the
workers, restarts them with backoff, survives its own death, obeys signals
and speaks sd_notify (issue 3; DESIGN.md "Processes", "Signals",
"Guarantees"; docs/operations.md).

Tests that need to steer a worker (crash on cue, a slow drain, a price
stored at start) run eq-stub-worker, a test-only worker that goes through
the real bootstrap (workers/common/wk.c) and does nothing else; it is
linked as eq-prober/eq-pricing/eq-forwarder in a temp libexec dir. Tests
about the supervisor's mechanics run once with the stub and once with the
real workers from <build>/workers.

Assertions go through what an operator has: `eqctl ... --json`, the HTTP
port, the log, the notify socket, and /proc (the processes in the
supervisors' process groups are the ground truth for "no role runs twice").
"""

import json
import os
import signal
import socket
import subprocess
import threading
import time

import pytest

from eqtest import util

ROLES = ("prober", "forwarder", "pricing")
STUB = util.build_path("tests", "unit", "supervisor", "eq-stub-worker")
EQUILIBRIUMD = util.build_path("supervisor", "equilibriumd")

# Short timeouts so failures are detected in a test's time.
FAST = {
    "supervisor.heartbeat_timeout_ms": "1000",
    "supervisor.drain_ms": "1000",
    "supervisor.restart_reset_ms": "2000",
}


def real_workers_built():
    return all(os.access(util.build_path("workers", f"eq-{r}"), os.X_OK) for r in ROLES)


@pytest.fixture
def stub_dir(test_tmp):
    util.require_binary(STUB, "eq-stub-worker", "supervisor")
    d = os.path.join(test_tmp, "libexec")
    os.makedirs(d)
    for r in ROLES:
        os.symlink(STUB, os.path.join(d, f"eq-{r}"))
    return d


@pytest.fixture(params=["stub", "real"])
def workers(request, stub_dir):
    """Config overrides selecting the worker binaries (parametrised)."""
    if request.param == "stub":
        return {"supervisor.libexec_dir": stub_dir}
    if not real_workers_built():
        pytest.skip("real workers not built yet (<build>/workers/eq-*)")
    return {}


@pytest.fixture
def stub(stub_dir):
    return {"supervisor.libexec_dir": stub_dir}


# --------------------------------------------------------------------------
# helpers

def by_slot(d):
    return {w["slot"]: w for w in d.status()["workers"]}


def live_workers(d):
    """slot -> worker dict for slots that have a process."""
    return {s: w for s, w in by_slot(d).items() if w["pid"]}


def wait_all_ready(d, n, timeout=10.0):
    def ready():
        ws = [w for w in d.status()["workers"] if w["pid"] and w["ready"]]
        return ws if len(ws) == n else None
    return util.wait_for(ready, timeout=timeout, desc=f"{n} ready workers")


def wait_replaced(d, slot, old_pid, timeout=10.0):
    """Waits until slot runs a ready process other than old_pid (one
    snapshot per check); returns its worker dict."""
    def replaced():
        w = by_slot(d)[slot]
        return w if w["pid"] and w["pid"] != old_pid and w["ready"] else None
    return util.wait_for(replaced, timeout=timeout, desc=f"slot {slot} replaced")


def history(d):
    rc, out, err = d.eqctl("history", "--json")
    assert rc == 0, err
    return json.loads(out)


def role_of(pid):
    """'pricing' for a process whose argv[0] is eq-pricing, else None."""
    argv0 = util.pid_cmdline(pid).split(" ")[0]
    base = os.path.basename(argv0)
    return base[3:] if base.startswith("eq-") and base[3:] in ROLES else None


def parent_of(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        return int(data[data.rindex(b")") + 2:].split()[1])
    except (OSError, ValueError):
        return 0


def group_workers(d):
    """{role: [pid...]} over every process group of d's supervisors: what
    really runs, whatever the segment says.  A worker's own helper task
    with its command line (LeakSanitizer's tracer at exit under ASan) is
    not a second worker."""
    found = {}
    for pgid in d._pgids:
        for pid in util.pids_in_group(pgid):
            r = role_of(pid)
            if r:
                found[pid] = r
    out = {r: [] for r in ROLES}
    for pid, r in found.items():
        if parent_of(pid) not in found:
            out[r].append(pid)
    return out


class RoleMonitor:
    """Samples group_workers() every few ms in a thread and keeps the most
    processes of each role seen at once."""

    def __init__(self, d):
        self.d = d
        self.max = {r: 0 for r in ROLES}
        self.samples = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.is_set():
            seen = group_workers(self.d)
            # A /proc scan takes milliseconds: one process may die and its
            # successor start within it.  Only those still alive in a quick
            # second look ran at the same time.
            for r in ROLES:
                alive = [p for p in seen[r] if util.pid_alive(p)]
                self.max[r] = max(self.max[r], len(alive))
            self.samples += 1
            time.sleep(0.003)

    def stop(self):
        self._stop.set()
        self._t.join(timeout=5)
        return self.max


def log_lines(d, needle):
    return [l for l in d.log_text().splitlines() if needle in l]


def http_get(port, path="/", timeout=5.0):
    """One GET on a fresh connection; returns (status, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    if not data:
        raise ConnectionAbortedError("closed without an answer")
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


def run_equilibriumd(*args, timeout=15, env=None):
    return subprocess.run([EQUILIBRIUMD, *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


# --------------------------------------------------------------------------
# command line

def test_help_version_and_usage_errors():
    util.require_binary(EQUILIBRIUMD, "equilibriumd", "supervisor")
    r = run_equilibriumd("--help")
    assert r.returncode == 0 and "usage: equilibriumd -c FILE" in r.stdout
    r = run_equilibriumd("--version")
    assert r.returncode == 0 and r.stdout.startswith("equilibriumd ")
    for bad in ([], ["--bogus"], ["-c"], ["-c", "x", "extra"]):
        r = run_equilibriumd(*bad)
        assert r.returncode == 2, (bad, r)
        assert "try --help" in r.stderr


def test_check_config_prints_file_line_errors(test_tmp):
    good = os.path.join(test_tmp, "good.conf")
    with open(good, "w") as f:
        f.write("[shm]\nname = /eqt-check\n")
    r = run_equilibriumd("--check-config", "-c", good)
    assert r.returncode == 0, r.stderr
    bad = os.path.join(test_tmp, "bad.conf")
    with open(bad, "w") as f:
        f.write("[shm]\nname = /eqt-check\n[nosuch]\nx = 1\n[probe]\ninterval_ms = banana\n")
    r = run_equilibriumd("--check-config", "-c", bad)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert any(l.startswith(f"{bad}:3:") for l in lines), lines   # unknown section: its header
    assert any(l.startswith(f"{bad}:6:") for l in lines), lines
    r = run_equilibriumd("--check-config", "-c", os.path.join(test_tmp, "missing.conf"))
    assert r.returncode == 1 and "missing.conf" in r.stderr


def test_invalid_config_exits_78_and_creates_nothing(test_tmp):
    bad = os.path.join(test_tmp, "bad.conf")
    name = f"/eqt-{os.getpid()}-bad78"
    with open(bad, "w") as f:
        f.write(f"[shm]\nname = {name}\n[http]\nlisten = nonsense\n")
    r = run_equilibriumd("-c", bad)
    assert r.returncode == 78, r.stderr
    assert f"{bad}:4:" in r.stderr
    assert "--check-config" in r.stderr
    assert not os.path.exists("/dev/shm" + name)


def test_shm_group_that_does_not_exist_exits_78_a_gid_is_taken(test_tmp):
    """[shm] group takes a name or a numeric gid; a name that is no group on
    this machine is a config error (--check-config: FILE:LINE; start: 78,
    no segment); a numeric gid owns the segment it creates."""
    name = f"/eqt-{os.getpid()}-grp"
    bad = os.path.join(test_tmp, "group.conf")
    with open(bad, "w") as f:
        f.write(f"[shm]\nname = {name}\ngroup = eq-no-such-group\n")
    r = run_equilibriumd("--check-config", "-c", bad)
    assert r.returncode == 1
    assert f"{bad}:3: [shm] group = eq-no-such-group: group 'eq-no-such-group' does not exist" \
        in r.stderr, r.stderr
    r = run_equilibriumd("-c", bad)
    assert r.returncode == 78, r.stderr
    assert not os.path.exists("/dev/shm" + name)
    good = os.path.join(test_tmp, "gid.conf")
    with open(good, "w") as f:
        f.write(f"[shm]\nname = {name}\ngroup = 4242\n")
    assert run_equilibriumd("--check-config", "-c", good).returncode == 0


# --------------------------------------------------------------------------
# start, systemd

def test_ready_status_watchdog_and_stopping_over_notify(daemon, workers):
    d = daemon(workers, env={"WATCHDOG_USEC": "200000"}, **FAST)
    lines = d.notify.assignments()
    assert "READY=1" in lines
    # READY=1 only once every slot is ready: 1 prober, 1 forwarder, 2 pricing.
    assert len(wait_all_ready(d, 4)) == 4
    status = d.wait_notify("STATUS=mode normal")
    assert "4/4 workers ready" in d.notify.wait(
        lambda ls: [l for l in ls if "4/4 workers ready" in l], 5)[-1], status
    # WATCHDOG=1 every WATCHDOG_USEC/2 from the supervisor's own loop.
    n0 = d.notify.assignments().count("WATCHDOG=1")
    time.sleep(1.0)
    n1 = d.notify.assignments().count("WATCHDOG=1")
    assert n1 - n0 >= 5, (n0, n1)
    # Workers never see systemd's variables.
    for w in live_workers(d).values():
        with open(f"/proc/{w['pid']}/environ", "rb") as f:
            env = f.read().split(b"\0")
        assert not any(e.startswith(b"NOTIFY_SOCKET=") or e.startswith(b"WATCHDOG_") for e in env)
    assert d.stop(signal.SIGTERM) == 0
    assert "STOPPING=1" in d.notify.assignments()


def test_workers_get_the_fd_contract(daemon, stub):
    """fd 3 the status channel, 4 the config memfd (closed once read), 5 the
    shared listening socket for eq-pricing only; no other socket or memfd
    of the supervisor leaks into a worker."""
    d = daemon(stub, **FAST)
    wait_all_ready(d, 4)
    listen_inodes = set()
    for w in live_workers(d).values():
        fds = {int(fd): os.readlink(f"/proc/{w['pid']}/fd/{fd}")
               for fd in os.listdir(f"/proc/{w['pid']}/fd")}
        assert fds[3].startswith("socket:")
        assert not any(t.startswith("/memfd:") for t in fds.values()), fds
        sockets = {t for fd, t in fds.items() if t.startswith("socket:") and fd != 3}
        if w["role"] == "pricing":
            assert sockets == {fds[5]}, fds      # libuv may hold a dup of it
            listen_inodes.add(fds[5])
        else:
            assert not sockets, fds
    # Both pricing workers share the supervisor's one socket.
    assert len(listen_inodes) == 1


# --------------------------------------------------------------------------
# restarts

def test_kill9_each_role_restarts_only_that_worker(daemon, workers):
    d = daemon(workers, **FAST)
    wait_all_ready(d, 4)
    for role in ROLES:
        before = live_workers(d)
        slot, victim = next((s, w) for s, w in before.items() if w["role"] == role)
        os.kill(victim["pid"], signal.SIGKILL)
        new = wait_replaced(d, slot, victim["pid"])
        assert new["restarts"] == victim["restarts"] + 1
        after = live_workers(d)
        for s, w in before.items():
            if s != slot:
                assert after[s]["pid"] == w["pid"], f"{w['role']} slot {s} was restarted too"
                assert after[s]["restarts"] == w["restarts"]
        assert not util.pid_alive(victim["pid"])
        assert log_lines(d, f"pid {victim['pid']} killed by SIGKILL")
    # The per-role restart counter of the metrics: one restart per role
    # (eq-pricing serves /metrics; the stub worker serves no HTTP).
    if "supervisor.libexec_dir" not in workers:
        status, _, body = d.http("GET", "/metrics", token=None)
        assert status == 200
        text = body.decode()
        for role in ROLES:
            assert f'eq_worker_restarts_total{{role="{role}"}} 1\n' in text, (role, text)
    assert d.stop() == 0


def test_supervisor_and_workers_ignore_sigpipe(daemon, workers):
    """DESIGN.md "Signals": equilibriumd and the workers ignore SIGPIPE, so a
    write to a gone peer is an EPIPE, never a death.  A SIGPIPE sent to each
    process changes nothing: same pids, no restart."""
    d = daemon(workers, **FAST)
    wait_all_ready(d, 4)
    before = live_workers(d)
    os.kill(d.pid, signal.SIGPIPE)
    for w in before.values():
        os.kill(w["pid"], signal.SIGPIPE)
    time.sleep(0.5)
    assert d.running(), "equilibriumd died of SIGPIPE"
    after = live_workers(d)
    for s, w in before.items():
        assert after[s]["pid"] == w["pid"] and after[s]["restarts"] == w["restarts"], \
            f"eq-{w['role']} (slot {s}) died of SIGPIPE"
    assert d.stop() == 0


def test_long_up_worker_restarts_at_once_a_quick_crash_backs_off(daemon, workers):
    """DESIGN.md [supervisor] restart_reset_ms: a worker that had been up
    that long is restarted at once; one that dies within it waits
    restart_base_ms (a crash loop is throttled)."""
    d = daemon(workers, **FAST)           # restart_reset_ms 2000, base 100
    wait_all_ready(d, 4)
    slot, victim = next((s, w) for s, w in live_workers(d).items() if w["role"] == "pricing")
    time.sleep(2.5)                       # past restart_reset_ms since its spawn
    os.kill(victim["pid"], signal.SIGKILL)
    new = wait_replaced(d, slot, victim["pid"])
    line = log_lines(d, f"pid {victim['pid']} killed by SIGKILL")
    assert line and line[0].endswith("restarting at once"), line
    # Killed again at once (well within restart_reset_ms): the base delay.
    os.kill(new["pid"], signal.SIGKILL)
    wait_replaced(d, slot, new["pid"])
    line = log_lines(d, f"pid {new['pid']} killed by SIGKILL")
    assert line and line[0].endswith("restarting in 100 ms"), line
    assert d.stop() == 0


def test_crash_looping_worker_backs_off_and_never_takes_others_down(daemon, stub):
    d = daemon(stub, start=False, env={"EQ_STUB_CRASH": "forwarder"}, **FAST)
    d.start(wait_ready=False)
    util.wait_for(lambda: len([w for w in d.status()["workers"]
                               if w["ready"] and w["role"] != "forwarder"]) == 3,
                  timeout=10, desc="the three other workers ready")
    others = {s: w["pid"] for s, w in live_workers(d).items() if w["role"] != "forwarder"}
    # 50 ms life + 100, 200, 400, 800 ms delays: five starts within ~2 s.
    util.wait_for(lambda: by_slot(d)[1]["restarts"] >= 4, timeout=10,
                  desc="forwarder restarted 4 times")
    delays = [int(l.split("restarting in ")[1].split(" ")[0])
              for l in log_lines(d, "eq-forwarder (slot 1)") if "restarting in" in l]
    assert delays[:4] == [100, 200, 400, 800], delays
    assert all("before it was ready (startup failure" in l
               for l in log_lines(d, "eq-forwarder (slot 1)") if "restarting in" in l)
    # The others were never touched, and READY=1 waits for every slot.
    assert {s: w["pid"] for s, w in live_workers(d).items() if w["role"] != "forwarder"} == others
    assert "READY=1" not in d.notify.assignments()
    assert d.notify.wait(lambda ls: [l for l in ls if "3/4 workers ready" in l], 5)
    assert d.stop() == 0


def test_hung_worker_is_killed_and_replaced(daemon, workers):
    d = daemon(workers, **FAST)
    wait_all_ready(d, 4)
    slot, victim = next((s, w) for s, w in live_workers(d).items() if w["role"] == "pricing")
    t0 = time.monotonic()
    os.kill(victim["pid"], signal.SIGSTOP)
    new = wait_replaced(d, slot, victim["pid"])
    took = time.monotonic() - t0
    # heartbeat_timeout_ms 1000 (+ the 250 ms check period + restart).
    assert 1.0 <= took < 5.0, took
    assert new["restarts"] == victim["restarts"] + 1
    util.wait_for(lambda: not util.pid_alive(victim["pid"]), timeout=3, desc="stopped worker gone")
    assert log_lines(d, f"pid {victim['pid']}) hung: no heartbeat")


def test_pricing_restart_never_refuses_a_connection(daemon, workers):
    """One pricing worker: while it is dead the listen socket stays open in
    the supervisor, so connections wait in the backlog and are answered by
    its successor."""
    # A 400 ms restart delay keeps the no-worker gap wide enough that some
    # connections surely land in it, even on a loaded machine.
    # restart_reset_ms far away: however long the start took on a loaded
    # machine, this kill is a "crash within it" and waits the base delay.
    d = daemon(dict(workers, **{"pricing.workers": "1", "supervisor.restart_base_ms": "400"}),
               **dict(FAST, **{"supervisor.restart_reset_ms": "600000"}))
    wait_all_ready(d, 3)
    path = "/" if workers else "/healthz"
    assert http_get(d.port, path)[0] == 200
    victim = next(w for w in live_workers(d).values() if w["role"] == "pricing")

    results = []
    stop = threading.Event()

    def client():
        while not stop.is_set():
            t = time.monotonic()
            try:
                status = http_get(d.port, path, timeout=10)[0]
                results.append((t, time.monotonic(), status))
            except ConnectionRefusedError as exc:
                results.append((t, time.monotonic(), f"refused: {exc}"))
            except OSError as exc:       # accepted by the killed worker, then cut
                results.append((t, time.monotonic(), f"cut: {exc}"))
    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    t_kill = time.monotonic()
    os.kill(victim["pid"], signal.SIGKILL)
    util.wait_for(lambda: any(w["role"] == "pricing" and w["ready"] and w["pid"] != victim["pid"]
                              for w in d.status()["workers"]), timeout=10, desc="new pricing ready")
    time.sleep(0.3)
    stop.set()
    for t in threads:
        t.join(timeout=15)
    refused = [r for r in results if isinstance(r[2], str) and r[2].startswith("refused")]
    assert not refused, refused
    # Connections that met no pricing worker were queued, then answered by
    # the new one: answered 200 after the kill, having waited out the gap.
    # (They may have been opened a moment before t_kill: with four clients
    # looping on sub-millisecond requests, the kill usually finds all four
    # mid-request, still in the backlog; the old worker is dead, so the 200
    # is the successor's.)
    waited = [r for r in results if r[1] > t_kill and r[2] == 200 and r[1] - r[0] > 0.05]
    assert waited, results[-20:]
    cut = [r for r in results if isinstance(r[2], str)]
    assert len(cut) <= 4, cut   # at most the ones the killed worker held


def check_json(d):
    rc, out, err = d.eqctl("check", "--json")
    assert rc in (0, 1), err
    return json.loads(out)


def test_reaped_worker_leaves_nothing_locked(daemon, stub):
    """A worker killed while it holds a stale-price entry mid-write: the
    supervisor releases the entry when it reaps the pid, so no reader ever
    waits on it and `eqctl check` stays clean."""
    d = daemon(dict(stub, **{"pricing.workers": "1"}), env={"EQ_STUB_WEDGE_PRICE": "zone-w"},
               **FAST)
    util.wait_for(lambda: check_json(d)["prices_locked_live"] == 1, timeout=5,
                  desc="the entry held mid-write")
    victim = next(w["pid"] for w in live_workers(d).values() if w["role"] == "pricing")
    os.kill(victim, signal.SIGKILL)
    util.wait_for(lambda: log_lines(d, f"released 1 stale-price entry pid {victim} left mid-write"),
                  timeout=5, desc="the reaper's release")
    c = check_json(d)
    assert c["prices_locked_dead"] == 0, c
    assert c["ok"], c


# --------------------------------------------------------------------------
# the supervisor's own death

def test_workers_drain_and_exit_when_the_supervisor_dies(daemon, stub):
    d = daemon(stub, env={"EQ_STUB_DRAIN_MS": "200"}, **FAST)
    wait_all_ready(d, 4)
    pids = [w["pid"] for w in live_workers(d).values()]
    d.kill()
    util.wait_for(lambda: not any(util.pid_alive(p) for p in pids), timeout=5,
                  desc="orphaned workers to drain and exit")
    assert len(log_lines(d, "draining (supervisor gone)")) == 4


def test_supervisor_kill9_new_one_adopts_and_no_role_runs_twice(daemon, stub):
    d = daemon(stub, env={"EQ_STUB_DRAIN_MS": "400", "EQ_STUB_STORE_PRICE": "zone-a"}, **FAST)
    wait_all_ready(d, 4)
    before = json.loads(d.eqctl("prices", "--json")[1])["entries"]
    t_before = time.monotonic()
    assert [p["zone_id"] for p in before] == ["zone-a"]
    d.send_signal(signal.SIGUSR1)
    util.wait_for(lambda: d.status()["override"] == "degraded", timeout=5)
    old = {w["pid"] for w in live_workers(d).values()}
    old_sup = d.pid
    restarts = {s: w["restarts"] for s, w in by_slot(d).items()}

    mon = RoleMonitor(d)
    d.kill()
    d.extra_env.pop("EQ_STUB_STORE_PRICE")       # the new workers store nothing
    d.start()                                    # same config, same segment
    wait_all_ready(d, 4)
    time.sleep(0.1)
    most = mon.stop()
    assert mon.samples >= 3
    assert most == {"prober": 1, "forwarder": 1, "pricing": 2}, most
    # And in the new supervisor's own words: the old workers were gone
    # before it started any.
    log = d.log_text()
    gone = log.index("previous supervisor's 4 workers gone after")
    assert log.find(f"equilibriumd[{d.pid}]: started eq-") > gone

    st = d.status()
    assert st["supervisor"]["pid"] == d.pid != old_sup
    assert st["override"] == "degraded" and st["mode"] == "degraded"
    # The stale price is the same entry: same values, and as old as the
    # time that passed (nothing rewrote it).
    elapsed_ms = (time.monotonic() - t_before) * 1000    # a lower bound
    after = json.loads(d.eqctl("prices", "--json")[1])["entries"]
    assert len(after) == 1
    for key in ("zone_id", "base_fare", "surge_multiplier", "source"):
        assert after[0][key] == before[0][key]
    assert after[0]["read_age_ms"] >= before[0]["read_age_ms"] + elapsed_ms - 5
    assert not any(util.pid_alive(p) for p in old)
    new = {w["pid"] for w in live_workers(d).values()}
    assert not new & old
    # Replacing the dead supervisor's workers is not a worker restart.
    assert {s: w["restarts"] for s, w in by_slot(d).items()} == restarts
    assert log_lines(d, "adopted segment")
    assert log_lines(d, "still runs: stopping it before starting workers")


def test_new_supervisor_kills_previous_workers_that_do_not_stop(daemon, stub):
    d = daemon(stub, **FAST)
    wait_all_ready(d, 4)
    old = [w["pid"] for w in live_workers(d).values()]
    for p in old:                                # they will not drain
        os.kill(p, signal.SIGSTOP)
    d.kill()                                     # well within heartbeat_timeout_ms
    t0 = time.monotonic()
    mon = RoleMonitor(d)
    d.start()
    took = time.monotonic() - t0
    most = mon.stop()
    assert most == {"prober": 1, "forwarder": 1, "pricing": 2}, most
    assert not any(util.pid_alive(p) for p in old)
    # drain_ms 1000 + 1000 margin, then SIGKILL.
    assert 1.8 < took < 8, took
    assert len(log_lines(d, "did not stop within 2000 ms: SIGKILL")) == 4


def test_second_supervisor_on_the_segment_is_refused(daemon, stub):
    d = daemon(stub, **FAST)
    wait_all_ready(d, 4)
    pids = {s: w["pid"] for s, w in live_workers(d).items()}
    r = run_equilibriumd("-c", d.conf_path)
    assert r.returncode == 69, r.stderr
    assert f"another equilibriumd (pid {d.pid}) runs on {d.shm_name}" in r.stderr
    assert {s: w["pid"] for s, w in live_workers(d).items()} == pids
    assert d.status()["supervisor"]["pid"] == d.pid


def test_foreign_segment_refused_until_reset_shm(daemon, stub):
    d = daemon(stub, start=False, **FAST)
    path = "/dev/shm/" + d.shm_name.lstrip("/")
    with open(path, "wb") as f:
        f.write(b"NOTOURS!" + b"\0" * 8192)
    r = run_equilibriumd("-c", d.conf_path)
    assert r.returncode == 69, r.stderr
    assert "--reset-shm" in r.stderr
    d.start(args=["--reset-shm"])
    wait_all_ready(d, 4)
    assert log_lines(d, "--reset-shm: removing segment")


def test_reset_shm_drops_the_adopted_state(daemon, stub):
    d = daemon(stub, **FAST)
    d.send_signal(signal.SIGUSR1)
    util.wait_for(lambda: d.status()["override"] == "degraded", timeout=5)
    assert d.stop() == 0
    d.start()
    assert d.status()["override"] == "degraded"           # adopted
    assert d.stop() == 0
    d.start(args=["--reset-shm"])
    assert d.status()["override"] == "none"


# --------------------------------------------------------------------------
# signals

def test_sigusr1_sigusr2_step_the_override_with_history(daemon, workers):
    d = daemon(workers, **FAST)
    me = os.getpid()
    expect = [("none", "degraded", "SIGUSR1"), ("degraded", "emergency", "SIGUSR1"),
              ("emergency", "degraded", "SIGUSR2"), ("degraded", "none", "SIGUSR2")]
    for (_, to, sig) in expect:
        d.send_signal(getattr(signal, sig))
        util.wait_for(lambda: d.status()["override"] == to, timeout=5, desc=f"override {to}")
        if to == "emergency":
            assert d.status()["mode"] == "emergency"
            # (Real workers without backends may be in automatic emergency.)
            assert d.notify.wait(lambda ls: [l for l in ls if l.startswith("STATUS=mode emergency")
                                             and "override emergency" in l], 5)
            d.send_signal(signal.SIGUSR1)            # already at the top
            util.wait_for(lambda: log_lines(d, "override already emergency"), timeout=5)
    overrides = [h for h in history(d) if h["kind"] == "override"]
    assert [(h["from"], h["to"]) for h in overrides] == [(a, b) for a, b, _ in expect]
    for h, (_, _, sig) in zip(overrides, expect):
        assert h["cause"] == f"{sig} from pid {me}"
        assert h["pid"] == me


def test_eqctl_mode_sets_the_override(daemon, stub):
    d = daemon(stub, **FAST)
    rc, out, err = d.eqctl("mode", "emergency", "--json")
    assert rc == 0, err
    res = json.loads(out)
    assert res == {"override": "emergency", "previous": "none", "changed": True,
                   "mode": "emergency", "auto_mode": "normal",
                   "override_expires": None, "override_reason": None}
    assert d.status()["override"] == "emergency"
    d.wait_notify("STATUS=mode emergency")                  # the supervisor follows
    h = [h for h in history(d) if h["kind"] == "override"][-1]
    assert h["cause"].startswith("eqctl mode emergency (pid ") and h["pid"]
    rc, out, _ = d.eqctl("mode", "emergency")
    assert rc == 0 and "already emergency" in out
    rc, out, _ = d.eqctl("mode", "auto")
    assert rc == 0 and "emergency -> none" in out
    assert d.status()["override"] == "none"
    assert d.eqctl("mode")[0] == 2
    assert d.eqctl("mode", "panic")[0] == 2
    rc, _, err = d.eqctl("--shm", "/eqt-no-such-segment", "mode", "degraded")
    assert rc == 3 and err.strip()


def _override_expires_after(d, victim_action):
    """Sets degraded --for 2s with a reason, runs victim_action(), and checks
    that the override is gone within 2 s (plus the 250 ms ticks and a
    margin for a loaded machine), with cause "expired" in the history and
    expires/reason cleared in the status."""
    t_set = time.monotonic()
    rc, out, err = d.eqctl("mode", "degraded", "--for", "2s", "--reason", "drill 42", "--json")
    assert rc == 0, err
    j = json.loads(out)
    assert j["override"] == "degraded" and j["override_reason"] == "drill 42"
    assert j["override_expires"] is not None
    st = d.status()
    assert st["override"] == "degraded" and st["override_reason"] == "drill 42"
    assert st["override_expires"] == j["override_expires"]
    victim_action()
    util.wait_for(lambda: d.status()["override"] == "none", timeout=6, desc="override expired")
    took = time.monotonic() - t_set
    assert 1.9 <= took <= 4.0, took
    st = d.status()
    assert st["override_expires"] is None and st["override_reason"] is None
    last = [h for h in history(d) if h["kind"] == "override"][-1]
    assert (last["from"], last["to"], last["cause"]) == ("degraded", "none", "expired"), last


def test_override_for_expires_though_the_prober_is_sigkilled(daemon, workers):
    """DESIGN.md Modes: an override set with --for expires by itself whichever
    process is alive: the prober is SIGKILLed (and stays down past the
    expiry: restart_base_ms 5 s), equilibriumd applies it."""
    d = daemon(dict(workers, **{"supervisor.restart_base_ms": "5000",
                                "supervisor.restart_max_ms": "5000"}),
               **dict(FAST, **{"supervisor.restart_reset_ms": "600000"}))
    wait_all_ready(d, 4)
    prober = next(w for w in live_workers(d).values() if w["role"] == "prober")

    def kill_prober():
        os.kill(prober["pid"], signal.SIGKILL)
        util.wait_for(lambda: not util.pid_alive(prober["pid"]), timeout=5, desc="prober gone")
    _override_expires_after(d, kill_prober)
    assert not any(w["role"] == "prober" and w["pid"] and w["ready"]
                   for w in d.status()["workers"]), "the prober came back before the expiry"


def test_override_for_expires_while_the_supervisor_is_stopped(daemon):
    """The other way round: equilibriumd SIGSTOPped, the real eq-prober
    applies the expiry."""
    if not real_workers_built():
        pytest.fail("the real workers are not built (ninja -C build)")
    d = daemon({}, **FAST)
    wait_all_ready(d, 4)
    try:
        _override_expires_after(d, lambda: os.kill(d.pid, signal.SIGSTOP))
    finally:
        os.kill(d.pid, signal.SIGCONT)
    assert d.stop() == 0


def test_eqctl_watch_shows_a_live_view(daemon, stub):
    d = daemon(stub, **FAST)
    wait_all_ready(d, 4)
    t0 = time.monotonic()
    rc, out, err = d.eqctl("watch", "--count", "3", "--interval", "200")
    assert rc == 0, err
    assert 0.35 < time.monotonic() - t0 < 5
    assert out.count("mode normal") == 3
    assert out.count(f"supervisor pid {d.pid}") == 3
    for role in ROLES:
        assert f" {role} " in out
    assert "REQUESTS" in out and "EVENTS" in out
    assert d.eqctl("watch", "--count")[0] == 2
    assert d.eqctl("watch", "--bogus")[0] == 2


def test_sighup_with_a_broken_config_keeps_the_running_one(daemon, stub):
    d = daemon(stub, **FAST)
    wait_all_ready(d, 4)
    pids = {s: w["pid"] for s, w in live_workers(d).items()}
    good = d.config_text()
    with open(d.conf_path, "a") as f:
        f.write("[probe]\ninterval_ms = -5\n")
    n_lines = good.count("\n") + 2
    d.send_signal(signal.SIGHUP)
    util.wait_for(lambda: log_lines(d, "reload rejected"), timeout=5)
    assert log_lines(d, f"{d.conf_path}:{n_lines}:")
    assert {s: w["pid"] for s, w in live_workers(d).items()} == pids
    assert not log_lines(d, "stub: reload applied")
    # A worker restarted now still gets the running config.
    os.kill(pids[2], signal.SIGKILL)
    wait_replaced(d, 2, pids[2])

    # A valid change reaches every worker.
    d.set_config({"probe.interval_ms": "500"})
    d.send_signal(signal.SIGHUP)
    util.wait_for(lambda: len(log_lines(d, "reload applied: probe.interval_ms 1000 -> 500")) == 4,
                  timeout=10, desc="four workers applied the reload")
    assert log_lines(d, "accepted and handed to the workers")


def test_sighup_resizes_the_pricing_pool(daemon, stub):
    d = daemon(stub, **FAST)
    wait_all_ready(d, 4)
    pids = {s: w["pid"] for s, w in live_workers(d).items()}
    d.reload({"pricing.workers": "3"})
    wait_all_ready(d, 5)
    now = live_workers(d)
    assert now[4]["role"] == "pricing" and now[4]["index"] == 2
    assert all(now[s]["pid"] == p for s, p in pids.items())
    d.reload({"pricing.workers": "1"})
    util.wait_for(lambda: len(live_workers(d)) == 3, timeout=5, desc="two pricing retired")
    st = by_slot(d)
    assert st[3]["state"] == st[4]["state"] == "stopped"
    assert st[3]["restarts"] == 0
    assert all(st[s]["pid"] == pids[s] for s in (0, 1, 2))


def test_sighup_restart_only_keys_wait_for_a_restart(daemon, stub):
    d = daemon(stub, **FAST)
    wait_all_ready(d, 4)
    other_port = util.free_port()
    d.set_config({"http.listen": f"127.0.0.1:{other_port}", "shm.name": d.shm_name + "-new",
                  "probe.interval_ms": "500"})
    d.shm_name = d.shm_name[:-4]                 # keep talking to the running segment
    d.send_signal(signal.SIGHUP)
    util.wait_for(lambda: log_lines(d, "accepted and handed to the workers"), timeout=5)
    warn = log_lines(d, "restart-only keys changed")
    assert warn and "http.listen" in warn[0] and "shm" in warn[0]
    assert len(log_lines(d, "reload applied: probe.interval_ms 1000 -> 500")) == 4
    # A pricing worker started after the reload still serves the running
    # socket and the running segment.
    victim = by_slot(d)[2]["pid"]
    os.kill(victim, signal.SIGKILL)
    wait_replaced(d, 2, victim)
    assert not os.path.exists("/dev/shm/" + d.shm_name.lstrip("/") + "-new")
    assert not util.port_open(other_port)
    assert http_get(d.port)[0] == 200


def test_sigterm_drains_and_exits_0(daemon, stub):
    d = daemon(stub, env={"EQ_STUB_DRAIN_MS": "300"}, **FAST)
    wait_all_ready(d, 4)
    pids = [w["pid"] for w in live_workers(d).values()]
    t0 = time.monotonic()
    assert d.stop(signal.SIGTERM) == 0
    took = time.monotonic() - t0
    assert 0.3 <= took < 1.9, took     # not the 2 s kill deadline
    assert not any(util.pid_alive(p) for p in pids)
    assert "STOPPING=1" in d.notify.assignments()
    assert len(log_lines(d, "draining (drain requested), deadline 1000 ms")) == 4
    assert not log_lines(d, "SIGKILL")
    st = d.status()
    assert all(w["state"] == "stopped" and w["pid"] is None for w in st["workers"])


def test_sigterm_kills_workers_that_do_not_drain(daemon, stub):
    d = daemon(stub, env={"EQ_STUB_DRAIN_MS": "60000"}, **FAST)
    wait_all_ready(d, 4)
    stuck = by_slot(d)[2]["pid"]
    os.kill(stuck, signal.SIGSTOP)               # not even its own deadline fires
    t0 = time.monotonic()
    assert d.stop(signal.SIGINT) == 0
    took = time.monotonic() - t0
    # The others hit their own drain deadline (1000 ms); the stopped one is
    # SIGKILLed at drain_ms + 1000 ms.
    assert 1.9 < took < 5, took
    assert not util.pid_alive(stuck)
    assert log_lines(d, "drain did not finish within its deadline")
    assert log_lines(d, f"pid {stuck}) still runs 2000 ms after drain; SIGKILL")


# --------------------------------------------------------------------------
# socket activation

def test_socket_activation_socket_is_used(test_tmp, daemon, stub):
    """systemd-socket-activate plays systemd: it listens, and on the first
    connection execs equilibriumd with the socket as fd 3 (LISTEN_FDS=1)."""
    activate = "/usr/bin/systemd-socket-activate"
    if not os.access(activate, os.X_OK):
        pytest.skip("systemd-socket-activate not installed")
    d = daemon(stub, start=False, **FAST)
    port = util.free_port()
    proc = util.track(subprocess.Popen(
        [activate, "-l", f"127.0.0.1:{port}", EQUILIBRIUMD, "-c", d.conf_path],
        stdout=subprocess.DEVNULL, stderr=open(d.log_path, "ab"), start_new_session=True),
        "socket-activated equilibriumd")
    d._pgids.append(proc.pid)
    try:
        util.wait_for(lambda: util.port_open(port), timeout=5, desc="activation socket")
        status, body = http_get(port, timeout=10)     # starts the service, then answered
        assert status == 200
        pricing = [w["pid"] for w in d.status()["workers"] if w["role"] == "pricing"]
        assert int(body) in pricing
        assert log_lines(d, "listening on the socket passed by systemd")
        assert not util.port_open(d.port)            # http.listen was not bound
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        util.untrack(proc)


# --------------------------------------------------------------------------
# the worker bootstrap (wk.c) on its own

def test_worker_command_line(stub_dir):
    pricing = os.path.join(stub_dir, "eq-pricing")
    r = subprocess.run([pricing, "--help"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0 and "--slot N" in r.stdout
    r = subprocess.run([pricing], capture_output=True, text=True, timeout=10)
    assert r.returncode == 2 and "--slot N is required" in r.stderr
    r = subprocess.run([pricing, "--slot", "99"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 2
    # Without the supervisor's fds and without -c: a clear refusal.
    r = subprocess.run([pricing, "--slot", "2"], capture_output=True, text=True, timeout=10,
                       close_fds=True)
    assert r.returncode == 2 and "started by equilibriumd" in r.stderr
