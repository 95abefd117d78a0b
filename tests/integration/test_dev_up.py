"""deploy/dev/up, the README's first command, as a new user runs it: from a
fresh copy of the checkout in a mode-0700 directory owned by root (a
`mktemp -d`, like a checkout under /root), where user `equilibrium`, which
PostgreSQL runs as, cannot reach. It must come up (a price served), run a
PostgreSQL primary and a streaming standby used as the backup database
(the standby answers with the primary stopped), stop everything it started
on Ctrl-C (SIGINT to its process group, as a terminal sends it) and on
SIGTERM, work a second time on the same state, and refuse a second run
while one is up.

The copy is the checkout's tracked files as they are in the working tree
(what a clone of the commit under test holds); the binaries come from the
build under test ($EQ_BUILD_DIR) through --no-build, so nothing is rebuilt.
"""

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from eqtest import free_port, http, util, wait_for
from eqtest.redis import Redis

EQUILIBRIUMD = util.build_path("supervisor", "equilibriumd")
EQCTL = util.build_path("eqctl", "eqctl")

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="needs root: the 0700 root-owned checkout is the point")


def _env_file(path):
    out = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if "=" in line and not line.startswith("#"):
                k, v = line.split("=", 1)
                out[k] = v.strip("'")
    return out


def _children(pid):
    """Every descendant of pid (from /proc), for the 'nothing left' check."""
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c in kids.get(p, []):
            out.append(c)
            todo.append(c)
    return out


class DevUp:
    """One deploy/dev/up process in its own session (a terminal's
    foreground job), output in a log file."""

    def __init__(self, repo, log_path, args=()):
        self.repo, self.log_path = repo, log_path
        self.dev = os.path.join(repo, ".eqdev")
        env = dict(os.environ, EQ_BUILD_DIR=util.build_dir())
        self.log = open(log_path, "ab")
        self.offset = self.log.tell()          # this run's output starts here
        self.proc = subprocess.Popen([os.path.join(repo, "deploy", "dev", "up"), "--no-build",
                                      *args],
                                     cwd=repo, env=env, stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        util.track(self.proc, "deploy/dev/up")

    def output(self):
        """This run's output."""
        with open(self.log_path, "rb") as f:
            f.seek(self.offset)
            return f.read().decode(errors="replace")

    def wait_ready(self, timeout=180):
        def ready_or_exited():
            return self.proc.poll() is not None or "up: ready:" in self.output()
        wait_for(ready_or_exited, timeout=timeout, interval=0.2, desc="deploy/dev/up ready")
        assert self.proc.poll() is None, \
            f"deploy/dev/up exited {self.proc.returncode}:\n{self.output()[-4000:]}"
        self.ports = _env_file(os.path.join(self.dev, "ports.env"))
        self.state = _env_file(os.path.join(self.dev, "state.env"))
        with open(os.path.join(self.dev, "token")) as f:
            self.token = f.read().strip()
        return self

    def get(self, path):
        return http.request(int(self.ports["HTTP_PORT"]), "GET", path,
                            headers={"Authorization": f"Bearer {self.token}"})

    def price(self, zone):
        status, _h, body = self.get(f"/v1/pricing/{zone}")
        assert status == 200, body
        return json.loads(body)

    def ctl(self, *args):
        return util.run([os.path.join(self.repo, "deploy", "dev", "ctl"), *args], timeout=90)

    def eqctl_status(self):
        res = util.run([EQCTL, "--shm", self.state["SHM_NAME"], "status", "--json"])
        return json.loads(res.stdout)

    def psql(self, port, sql):
        res = util.run([os.path.join(util.PG_BINDIR, "psql"), "-X", "-At", "-d",
                        f"hostaddr=127.0.0.1 port={port} dbname=equilibrium user=equilibrium",
                        "-c", sql])
        return res.stdout.strip()

    def started_pids(self):
        """Every process this run started: the daemon and its workers,
        redis-server, eq-kafka-dev, both PostgreSQL clusters with their
        backends."""
        pids = []
        for name in ("equilibriumd.pid", "redis.pid", "kafka.pid"):
            with open(os.path.join(self.dev, name)) as f:
                pids.append(int(f.read().split()[0]))
        for cluster in ("primary", "standby"):
            with open(os.path.join(self.state["PGROOT"], cluster, "postmaster.pid")) as f:
                pids.append(int(f.readline()))
        out = []
        for p in pids:
            out += [p] + _children(p)
        return [(p, util.pid_starttime(p)) for p in out]

    def wait_exit(self, timeout=90):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"deploy/dev/up still running {timeout}s after the signal:\n"
                                 f"{self.output()[-3000:]}") from None

    def close(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        util.untrack(self.proc)
        self.log.close()


def _alive(pids):
    return [p for p, start in pids if util.pid_alive(p) and util.pid_starttime(p) == start]


@pytest.fixture
def private_checkout(request):
    """A copy of the checkout's tracked files in a fresh mktemp -d (0700,
    root); removed afterwards with the clusters it got, unless the test
    failed (then its path is printed)."""
    top = tempfile.mkdtemp(prefix="eq-devup-")
    assert os.stat(top).st_mode & 0o777 == 0o700
    repo = os.path.join(top, "equilibrium")
    os.mkdir(repo)
    files = subprocess.run(["git", "-C", util.SOURCE_ROOT, "ls-files", "-z"], check=True,
                           capture_output=True).stdout.split(b"\0")
    for rel in filter(None, files):
        src = os.path.join(util.SOURCE_ROOT.encode(), rel)
        if not os.path.lexists(src):
            continue                              # deleted in the working tree
        dst = os.path.join(repo.encode(), rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy2(src, dst, follow_symlinks=False)
    os.chmod(repo, 0o700)
    # Free ports chosen here, so the run does not take 8080 from whoever has it.
    os.makedirs(os.path.join(repo, ".eqdev"))
    with open(os.path.join(repo, ".eqdev", "ports.env"), "w") as f:
        for var in ("REDIS_PORT", "PG_PORT", "PG_STANDBY_PORT", "HTTP_PORT"):
            f.write(f"{var}={free_port()}\n")
    yield repo
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    state = os.path.join(repo, ".eqdev", "state.env")
    if os.path.exists(state):
        st = _env_file(state)
        try:
            os.unlink("/dev/shm/" + st["SHM_NAME"].lstrip("/"))
        except OSError:
            pass
        if not failed and st["PGROOT"].startswith("/var/lib/equilibrium/dev-pg-"):
            shutil.rmtree(st["PGROOT"], ignore_errors=True)
    if failed:
        print(f"\n[test_dev_up] checkout kept in {top}")
    else:
        shutil.rmtree(top, ignore_errors=True)


def test_dev_up_from_a_private_checkout_serves_fails_over_and_stops_cleanly(private_checkout, tmp_path):
    repo = private_checkout
    log = str(tmp_path / "up.log")

    # -- first run: ready, a price, a streaming standby ----------------------
    up = DevUp(repo, log)
    try:
        up.wait_ready()
        pgroot = up.state["PGROOT"]
        # The service user cannot reach the checkout, so the clusters live
        # outside it, and nothing PostgreSQL sees goes through the checkout.
        assert not pgroot.startswith(repo), pgroot
        out = up.output()
        assert "Permission denied" not in out, out[-3000:]
        for drill in ("deploy/dev/ctl redis stop", "deploy/dev/ctl redis hang",
                      "deploy/dev/ctl primary stop", "deploy/dev/ctl kafka down",
                      " watch", "/metrics", "/v1/events"):
            assert drill in out, f"outage drill lacks {drill!r}:\n{out[-3000:]}"

        status, _h, body = http.request(int(up.ports["HTTP_PORT"]), "GET", "/readyz")
        assert status == 200, body
        p = up.price("downtown")
        assert (p["source"], p["surge_multiplier"]) == ("redis", 1.7), p

        pg, standby = up.ports["PG_PORT"], up.ports["PG_STANDBY_PORT"]
        assert up.psql(standby, "SELECT pg_is_in_recovery()") == "t"
        assert up.psql(pg, "SELECT state FROM pg_stat_replication") == "streaming"
        conf = open(os.path.join(repo, ".eqdev", "equilibrium.conf")).read()
        assert f"backup = hostaddr=127.0.0.1 port={standby} " in conf, conf

        # -- the drill: Redis and the primary down, the standby answers ------
        up.ctl("primary", "stop")
        up.ctl("redis", "stop")

        def backup_only():
            comps = up.eqctl_status()["components"]
            return (comps["postgres_primary"]["state"] == "failed"
                    and comps["postgres_backup"]["state"] == "healthy")
        wait_for(backup_only, timeout=20, desc="primary failed, backup healthy")
        # suburbs is only in PostgreSQL; with the primary down it can only
        # come from the standby.
        p = up.price("suburbs")
        assert (p["source"], p["base_fare"], p["fallback_reason"]) == \
            ("database", 9.0, "redis_unavailable"), p
        # Back: Redis restarts with its data (append-only file), answers
        # come from it again.
        up.ctl("redis", "start")
        up.ctl("primary", "start")
        wait_for(lambda: up.price("downtown")["source"] == "redis", timeout=20,
                 desc="answers from redis again after the drill")

        # -- a second run while this one is up is refused, touching nothing --
        res = subprocess.run([os.path.join(repo, "deploy", "dev", "up"), "--no-build"],
                             cwd=repo, capture_output=True, text=True, timeout=60,
                             env=dict(os.environ, EQ_BUILD_DIR=util.build_dir()))
        assert res.returncode == 1, res
        assert "another deploy/dev/up runs for this checkout" in res.stderr, res.stderr
        assert up.price("downtown")["source"] == "redis", "the refused run broke the first"

        # -- Ctrl-C: SIGINT to the foreground process group ------------------
        pids = up.started_pids()
        assert len(pids) >= 8, pids        # daemon + 4 workers, redis, kafka, 2 postmasters
        os.killpg(up.proc.pid, signal.SIGINT)
        assert up.wait_exit() == 130, up.output()[-3000:]
        wait_for(lambda: not _alive(pids), timeout=10,
                 desc="every process deploy/dev/up started gone after SIGINT")
    finally:
        up.close()

    # -- second run on the same state, stopped with SIGTERM -----------------
    up = DevUp(repo, log)
    try:
        up.wait_ready()
        out = up.output()
        # The clusters of the first run are reused, not created again.
        assert "creating the PostgreSQL primary" not in out, out[-3000:]
        assert "creating the streaming standby" not in out, out[-3000:]
        p = up.price("downtown")
        assert p["source"] == "redis", p
        assert up.psql(up.ports["PG_STANDBY_PORT"], "SELECT pg_is_in_recovery()") == "t"
        pids = up.started_pids()
        up.proc.send_signal(signal.SIGTERM)        # a service manager: the pid only
        assert up.wait_exit() == 143, up.output()[-3000:]
        wait_for(lambda: not _alive(pids), timeout=10,
                 desc="every process deploy/dev/up started gone after SIGTERM")
    finally:
        up.close()


def test_dev_up_ha_runs_sentinels_replica_three_brokers_and_stops_them(private_checkout, tmp_path):
    """deploy/dev/up --ha: master + replica + three Sentinels, primary +
    standby, three brokers; the failover drill it prints works (the master
    SIGKILLed: Sentinel names the replica; a broker down with its leaders
    moved: events still accepted); SIGTERM stops every one of them."""
    repo = private_checkout
    up = DevUp(repo, str(tmp_path / "up.log"), args=("--ha",))
    try:
        up.wait_ready()
        out = up.output()
        for drill in ("Failover drill", "kill the master", "sentinel get-master-addr-by-name",
                      "pg_ctl -D", "promote", "move-leaders 2"):
            assert drill in out, f"failover drill lacks {drill!r}:\n{out[-3000:]}"
        ports = up.ports
        sentinels = [int(ports[f"SENTINEL_PORT_{i}"]) for i in (1, 2, 3)]
        conf = open(os.path.join(repo, ".eqdev", "equilibrium.conf")).read()
        assert f"replicas = 127.0.0.1:{ports['REDIS_REPLICA_PORT']}" in conf, conf
        assert "sentinels = " + ",".join(f"127.0.0.1:{p}" for p in sentinels) in conf, conf
        with open(os.path.join(repo, ".eqdev", "kafka.bootstrap")) as f:
            assert f.read().strip().count(",") == 2          # three brokers
        replica = Redis("/nonexistent", port=int(ports["REDIS_REPLICA_PORT"]))
        assert replica.cmd("ROLE")[0] == "slave"
        master_port = int(ports["REDIS_PORT"])
        s1 = Redis("/nonexistent", port=sentinels[0])
        assert s1.cmd("SENTINEL", "get-master-addr-by-name", "mymaster") == \
            ["127.0.0.1", str(master_port)]
        pids = up.started_pids()
        for name in ("redis-replica.pid", "sentinel-1.pid", "sentinel-2.pid", "sentinel-3.pid"):
            with open(os.path.join(up.dev, name)) as f:
                p = int(f.read().split()[0])
            pids.append((p, util.pid_starttime(p)))

        # The drill: the master SIGKILLed, Sentinel promotes the replica.
        with open(os.path.join(up.dev, "redis.pid")) as f:
            os.kill(int(f.read().split()[0]), signal.SIGKILL)
        wait_for(lambda: s1.cmd("SENTINEL", "get-master-addr-by-name", "mymaster") ==
                 ["127.0.0.1", ports["REDIS_REPLICA_PORT"]], timeout=20,
                 desc="Sentinel to name the replica master")
        # A broker down, its leaders moved: events are still accepted.
        with open(os.path.join(up.dev, "kafka.ctl"), "w") as f:
            f.write("down 2\nmove-leaders 2\n")
        status, _h, body = http.request(
            int(ports["HTTP_PORT"]), "POST", "/v1/events",
            body={"type": "demand", "zone_id": "downtown", "count": 1},
            headers={"Authorization": f"Bearer {up.token}"})
        assert status == 202, body

        up.proc.send_signal(signal.SIGTERM)
        assert up.wait_exit() == 143, up.output()[-3000:]
        wait_for(lambda: not _alive(pids), timeout=15,
                 desc="every process deploy/dev/up --ha started gone after SIGTERM")
    finally:
        up.close()
