"""The Debian package, as CI and an operator use it: built with
`dpkg-buildpackage -us -uc -b` from a clean copy of the checkout, lintian
without errors, installed with apt, the DESIGN.md layout with its owners
and modes, `systemd-analyze verify` on the installed units, --check-config
on the installed config as user equilibrium, the installed daemon started
the way the unit starts it (user equilibrium, installed libexec, here a
private segment and port) answering a price from a real Redis, every man
page rendering, promtool on the installed rules; then an upgrade to a
second build with a higher version over that running daemon (stop,
replace, start: the segment and its override adopted), and a purge.

systemd is not PID 1 here, so the test does what the unit and the
maintainer scripts would have systemd do (stop before the upgrade, start
after). One package test runs at a time on a machine (a lock), since it
installs into the system.
"""

import fcntl
import glob
import grp
import json
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import time

import pytest

from eqtest import free_port, http, util, wait_for

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="installs a package: needs root"),
    pytest.mark.skipif(shutil.which("dpkg-buildpackage") is None, reason="dpkg-dev not installed"),
]

APT_ENV = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
APT = ["apt-get", "-o", "DPkg::Lock::Timeout=300", "-y", "-q"]


def sh(argv, timeout=600, check=True, **kw):
    res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(argv)}: exit {res.returncode}\n"
                             f"{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return res


def checkout_copy(dest):
    """A clone of the checkout's commit with the working tree's tracked
    files on top (what CI's fresh clone holds when nothing is uncommitted)."""
    sh(["git", "clone", "-q", "--no-hardlinks", util.SOURCE_ROOT, dest])
    files = sh(["git", "-C", util.SOURCE_ROOT, "ls-files", "-z"]).stdout.split("\0")
    for rel in filter(None, files):
        src = os.path.join(util.SOURCE_ROOT, rel)
        if os.path.lexists(src) and not os.path.isdir(src):
            os.makedirs(os.path.dirname(os.path.join(dest, rel)), exist_ok=True)
            shutil.copy2(src, os.path.join(dest, rel), follow_symlinks=False)


def build_deb(src, extra=()):
    sh(["nice", "-n", "10", "dpkg-buildpackage", "-us", "-uc", "-b", *extra], cwd=src,
       timeout=1200)
    debs = sorted(glob.glob(os.path.join(os.path.dirname(src), "equilibrium_*.deb")),
                  key=os.path.getmtime)
    assert debs, "dpkg-buildpackage made no .deb"
    return debs[-1]


def installed_version():
    res = sh(["dpkg-query", "-W", "-f=${Status} ${Version}", "equilibrium"], check=False)
    return res.stdout.split()[-1] if "install ok installed" in res.stdout else None


class Installed:
    """The installed daemon, started as the unit's ExecStart would start it,
    with a private config (segment, port, spool) next to the installed one."""

    def __init__(self, workdir, redis):
        self.workdir, self.redis = workdir, redis
        self.shm = f"/eqpkg-{os.getpid()}"
        self.port = free_port()
        self.spool = os.path.join(workdir, "spool")
        os.makedirs(self.spool, exist_ok=True)
        pw = pwd.getpwnam("equilibrium")
        os.chown(self.spool, pw.pw_uid, pw.pw_gid)
        os.chmod(workdir, 0o755)
        self.conf = os.path.join(workdir, "equilibrium.conf")
        with open(self.conf, "w") as f:
            f.write(f"[shm]\nname = {self.shm}\n[http]\nlisten = 127.0.0.1:{self.port}\n"
                    f"[redis]\nhost = 127.0.0.1\nport = {redis.port}\n"
                    f"[kafka]\nbrokers = 127.0.0.1:{util.closed_port()}\n"
                    f"[spool]\ndir = {self.spool}\n")
        os.chmod(self.conf, 0o644)
        self.proc = None

    def as_service(self, argv):
        return ["setpriv", "--reuid=equilibrium", "--regid=equilibrium", "--init-groups",
                "--"] + argv

    def exec_start(self):
        unit = open("/lib/systemd/system/equilibrium.service").read()
        line = re.search(r"^ExecStart=(.+)$", unit, re.M).group(1).split()
        assert line[:2] == ["/usr/sbin/equilibriumd", "-c"], line
        return line[:2] + [self.conf] + line[3:]

    def start(self):
        self.log = open(os.path.join(self.workdir, "daemon.log"), "ab")
        self.proc = subprocess.Popen(self.as_service(self.exec_start()), stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        util.track(self.proc, "installed equilibriumd")

        def ready():
            if self.proc.poll() is not None:
                return True
            try:
                return http.request(self.port, "GET", "/readyz", timeout=1)[0] == 200
            except OSError:
                return False
        wait_for(ready, timeout=60, desc="the installed daemon's /readyz")
        assert self.proc.poll() is None, f"exited {self.proc.returncode}:\n{self.log_text()}"
        return self

    def log_text(self):
        with open(os.path.join(self.workdir, "daemon.log"), errors="replace") as f:
            return f.read()

    def eqctl(self, *args):
        return sh(self.as_service(["/usr/bin/eqctl", "--shm", self.shm, *args]), timeout=30)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)          # systemctl stop
        rc = self.proc.wait(timeout=30)
        util.untrack(self.proc)
        self.log.close()
        return rc

    def close(self):
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        try:
            os.unlink("/dev/shm" + self.shm)
        except OSError:
            pass


def check_layout():
    eq = grp.getgrnam("equilibrium").gr_gid

    def mode(path, want_mode, uid=0, gid=0, kind=stat.S_ISREG):
        st = os.stat(path)
        assert kind(st.st_mode), path
        assert stat.S_IMODE(st.st_mode) == want_mode, (path, oct(st.st_mode))
        assert (st.st_uid, st.st_gid) == (uid, gid), (path, st.st_uid, st.st_gid)

    for exe in ["/usr/sbin/equilibriumd", "/usr/bin/eqctl"] + \
            [f"/usr/libexec/equilibrium/eq-{r}" for r in ("prober", "pricing", "forwarder")]:
        mode(exe, 0o755)
    mode("/etc/equilibrium/equilibrium.conf", 0o640, 0, eq)
    conffiles = sh(["dpkg-query", "-W", "-f=${Conffiles}", "equilibrium"]).stdout
    assert "/etc/equilibrium/equilibrium.conf" in conffiles, conffiles
    pw = pwd.getpwnam("equilibrium")
    mode("/var/lib/equilibrium/spool", 0o750, pw.pw_uid, pw.pw_gid, stat.S_ISDIR)
    for f in ["/lib/systemd/system/equilibrium.service", "/lib/systemd/system/equilibrium.socket",
              "/usr/lib/sysusers.d/equilibrium.conf", "/usr/lib/tmpfiles.d/equilibrium.conf",
              "/usr/share/man/man8/equilibriumd.8.gz", "/usr/share/man/man1/eqctl.1.gz",
              "/usr/share/man/man5/equilibrium.conf.5.gz",
              "/usr/share/bash-completion/completions/eqctl",
              "/usr/share/doc/equilibrium/operations.md",
              "/usr/share/doc/equilibrium/configuration.md",
              "/usr/share/doc/equilibrium/sql/schema.sql",
              "/usr/share/doc/equilibrium/prometheus/equilibrium.rules.yml",
              "/usr/share/doc/equilibrium/prometheus/equilibrium.rules.test.yml",
              "/usr/share/doc/equilibrium/grafana/equilibrium.json"]:
        mode(f, 0o644)
    listing = sh(["dpkg", "-L", "equilibrium"]).stdout
    assert "eq-kafka-dev" not in listing, "the dev broker is not in the package"
    assert "/usr/local" not in listing
    json.load(open("/usr/share/doc/equilibrium/grafana/equilibrium.json"))


@pytest.fixture
def package_lock():
    with open("/run/lock/equilibrium-test-package.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


@pytest.mark.timeout(1800)
def test_package_builds_installs_runs_upgrades_and_purges(package_lock, redis, test_tmp):
    top = tempfile.mkdtemp(prefix="eq-pkg-")
    src = os.path.join(top, "equilibrium")
    d = None
    try:
        checkout_copy(src)
        deb1 = build_deb(src)
        meson_version = re.search(r"version : '([^']+)'", open(os.path.join(src, "meson.build")).read()).group(1)
        assert os.path.basename(deb1).startswith(f"equilibrium_{meson_version}_"), deb1

        lint = sh(["lintian", "--tag-display-limit", "0", deb1], check=False)
        errors = [l for l in lint.stdout.splitlines() if l.startswith("E:")]
        assert not errors, lint.stdout

        if installed_version() is not None:           # a leftover of an earlier run
            sh(APT + ["purge", "equilibrium"], env=APT_ENV)
        sh(APT + ["install", deb1], env=APT_ENV)
        assert installed_version() == meson_version
        check_layout()

        for unit in ("equilibrium.service", "equilibrium.socket"):
            res = sh(["systemd-analyze", "verify", f"/lib/systemd/system/{unit}"], check=False)
            assert res.returncode == 0 and not res.stderr.strip(), res.stderr
        res = sh(["setpriv", "--reuid=equilibrium", "--regid=equilibrium", "--init-groups", "--",
                  "/usr/sbin/equilibriumd", "--check-config", "-c",
                  "/etc/equilibrium/equilibrium.conf"], check=False)
        assert res.returncode == 0, res.stdout + res.stderr

        for page in ("equilibriumd", "eqctl", "equilibrium.conf"):
            res = sh(["man", "-P", "cat", page], check=False, env=dict(os.environ, MANWIDTH="80"))
            assert res.returncode == 0 and "NAME" in res.stdout and "SEE ALSO" in res.stdout, \
                (page, res.stderr)
        if shutil.which("promtool"):
            docdir = "/usr/share/doc/equilibrium/prometheus"
            sh(["promtool", "check", "rules", f"{docdir}/equilibrium.rules.yml"])
            sh(["promtool", "test", "rules", f"{docdir}/equilibrium.rules.test.yml"], cwd=docdir)

        # -- the installed daemon, as the unit runs it --------------------
        redis.set_zone("z1", 12.5, 1.7)
        d = Installed(test_tmp, redis).start()
        assert "workers from /usr/libexec/equilibrium" in d.log_text(), d.log_text()[-2000:]
        status, _h, body = http.request(d.port, "GET", "/v1/pricing/z1")
        assert status == 200, body
        p = json.loads(body)
        assert (p["source"], p["surge_multiplier"]) == ("redis", 1.7), p
        for pid in util.pids_in_group(d.proc.pid):
            assert os.stat(f"/proc/{pid}").st_uid == pwd.getpwnam("equilibrium").pw_uid
            exe = os.readlink(f"/proc/{pid}/exe")
            assert exe == "/usr/sbin/equilibriumd" or exe.startswith("/usr/libexec/equilibrium/"), exe
        st = json.loads(d.eqctl("status", "--json").stdout)
        v1 = sh(["/usr/sbin/equilibriumd", "--version"]).stdout.split()[1]
        assert st["version"] == v1 and v1.startswith(meson_version), (st["version"], v1)
        d.eqctl("mode", "degraded", "--reason", "before the upgrade")

        # -- upgrade: a higher version over the running daemon -----------
        new_version = meson_version + ".1"
        mb = os.path.join(src, "meson.build")
        text = open(mb).read()
        with open(mb, "w") as f:
            f.write(text.replace(f"version : '{meson_version}'", f"version : '{new_version}'", 1))
        cl = os.path.join(src, "debian", "changelog")
        old = open(cl).read()
        with open(cl, "w") as f:
            f.write(
            f"equilibrium ({new_version}) unstable; urgency=medium\n\n  * Upgrade test build.\n\n"
            f" -- Equilibrium developers <equilibrium@example.invalid>  "
            f"{time.strftime('%a, %d %b %Y %H:%M:%S +0000', time.gmtime())}\n\n" + old)
        deb2 = build_deb(src, ["-nc"])
        assert os.path.basename(deb2).startswith(f"equilibrium_{new_version}_"), deb2

        assert d.stop() == 0, d.log_text()[-2000:]       # prerm: systemctl stop
        sh(APT + ["install", deb2], env=APT_ENV)
        assert installed_version() == new_version
        check_layout()
        v2 = sh(["/usr/sbin/equilibriumd", "--version"]).stdout.split()[1]
        assert v2.startswith(new_version + "+") or v2 == new_version, v2
        d.start()                                        # postinst: systemctl start
        st = json.loads(d.eqctl("status", "--json").stdout)
        assert st["version"] == v2, st["version"]
        # The segment (and the override in it) was adopted, not recreated.
        assert (st["override"], st["override_reason"]) == ("degraded", "before the upgrade"), st
        assert "adopt" in d.log_text().split("starting: config")[-1].lower(), d.log_text()[-2000:]
        status, _h, body = http.request(d.port, "GET", "/v1/pricing/z1")
        assert status == 200 and json.loads(body)["mode"] == "degraded", body
        assert d.stop() == 0

        # -- purge ---------------------------------------------------------
        sh(APT + ["purge", "equilibrium"], env=APT_ENV)
        assert installed_version() is None
        for gone in ["/usr/sbin/equilibriumd", "/usr/bin/eqctl", "/usr/libexec/equilibrium",
                     "/etc/equilibrium", "/var/lib/equilibrium/spool",
                     "/lib/systemd/system/equilibrium.service", "/usr/share/doc/equilibrium"]:
            assert not os.path.exists(gone), gone
    finally:
        if d is not None:
            d.close()
        if installed_version() is not None:
            sh(APT + ["purge", "equilibrium"], env=APT_ENV, check=False)
        shutil.rmtree(top, ignore_errors=True)
