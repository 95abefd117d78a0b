"""A real PostgreSQL 15 cluster on a private loopback port.

initdb refuses root, so the cluster runs as the `equilibrium` user (the
data directory is chowned to it). Trust authentication on 127.0.0.1 only;
the superuser and database are both `equilibrium`, and the project schema
(deploy/sql/schema.sql) is applied at creation. Clients connect with
`conninfo` (hostaddr=, never a host name: libpq resolves names blocking).

Disk durability is switched off (fsync, full_page_writes): these clusters
are thrown away with the session and must be fast. A committed row still
survives a SIGKILL of the cluster (synchronous_commit stays on).

Fault injection: .stop() (fast shutdown), .kill() (SIGKILL the postmaster
and its backends: a crash, recovered at the next start), .freeze()/.thaw()
(SIGSTOP every process of the cluster: connections hang).
"""

import os
import signal

from . import util

SCHEMA = os.path.join(util.SOURCE_ROOT, "deploy", "sql", "schema.sql")


class PgError(util.HarnessError):
    """psql failed (the message holds its stderr)."""


class PgCluster:
    def __init__(self, workdir, name="pg"):
        self.name = name
        self.workdir = workdir               # owned by the service user
        self.datadir = os.path.join(workdir, "data")
        self.log_path = os.path.join(workdir, "postgres.log")
        self.port = None
        self.frozen = False
        self._created = False

    @property
    def conninfo(self):
        """libpq connection string for the `equilibrium` database."""
        return self.conninfo_for("equilibrium")

    def conninfo_for(self, dbname):
        return f"hostaddr=127.0.0.1 port={self.port} dbname={dbname} user=equilibrium"

    # -- lifecycle ---------------------------------------------------------

    def create(self):
        """initdb, start, create the database and apply the schema."""
        os.makedirs(self.workdir, exist_ok=True)
        os.chmod(self.workdir, 0o755)
        util.chown_service(self.workdir)
        self._pg(["initdb", "-D", self.datadir, "-U", "equilibrium", "-A", "trust",
                  "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"],
                 timeout=120)
        for attempt in range(5):
            self.port = util.free_port()
            self._write_conf()
            try:
                self.start()
                break
            except util.HarnessError:
                if "could not bind" in util.tail(self.log_path, 20) and attempt < 4:
                    continue
                raise
        self._created = True
        self.psql("CREATE DATABASE equilibrium", dbname="postgres")
        with open(SCHEMA) as f:
            self.sql(f.read())
        return self

    def _write_conf(self):
        path = os.path.join(self.datadir, "postgresql.auto.conf")
        with open(path, "w") as f:
            f.write(
                "# written by tests/integration/eqtest/pg.py\n"
                f"port = {self.port}\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.workdir}'\n"
                # Commits reach the OS before returning (a SIGKILLed cluster
                # keeps them); nothing is forced to disk.
                "fsync = off\nfull_page_writes = off\n"
                "max_connections = 100\n"
                "log_min_messages = warning\nlog_connections = off\n")
        util.chown_service(path)

    def _pg(self, argv, timeout=60, check=True):
        argv = [os.path.join(util.PG_BINDIR, argv[0])] + argv[1:]
        return util.run(util.as_service_user(argv), timeout=timeout, check=check,
                        cwd=self.workdir)

    def start(self, timeout=30):
        """Starts the cluster (same port) and waits until it accepts
        connections. A no-op if it runs; thaws a frozen one."""
        self.thaw()
        if self.running():
            return self
        self._remove_stale_lock()
        res = self._pg(["pg_ctl", "-D", self.datadir, "-l", self.log_path, "-w",
                        "-t", str(timeout), "start"], timeout=timeout + 10, check=False)
        if res.returncode != 0:
            raise util.HarnessError(
                f"PostgreSQL {self.name} did not start on port {self.port}:\n"
                f"{res.stderr.strip()}\n{util.tail(self.log_path)}")
        return self

    def stop(self, mode="fast", timeout=30):
        """pg_ctl stop -m mode (smart | fast | immediate)."""
        self.thaw()
        if not self.running():
            return self
        self._pg(["pg_ctl", "-D", self.datadir, "-m", mode, "-w", "-t", str(timeout),
                  "stop"], timeout=timeout + 10)
        return self

    def kill(self):
        """SIGKILL the postmaster and every backend (a crash)."""
        pids = self._pids()
        for pid in pids:
            util.kill_quietly(pid, signal.SIGKILL)
        # Gone from /proc, not merely zombies: postgres refuses to start while
        # the pid in postmaster.pid still exists.
        util.wait_for(lambda: not any(os.path.exists(f"/proc/{p}") for p in pids),
                      timeout=10, desc=f"{self.name} processes to be reaped")
        self.frozen = False
        return self

    def _remove_stale_lock(self):
        """Removes postmaster.pid if its postmaster is dead (SIGKILLed, maybe
        still a zombie); pg_ctl would otherwise refuse to start."""
        lock = os.path.join(self.datadir, "postmaster.pid")
        try:
            with open(lock) as f:
                pid = int(f.readline())
        except (OSError, ValueError):
            return
        if not util.pid_alive(pid) or "postgres" not in util.pid_cmdline(pid):
            os.unlink(lock)

    def restart(self):
        return self.stop().start()

    def running(self):
        pid = self.postmaster_pid()
        return pid is not None and util.pid_alive(pid)

    def postmaster_pid(self):
        try:
            with open(os.path.join(self.datadir, "postmaster.pid")) as f:
                pid = int(f.readline())
        except (OSError, ValueError):
            return None
        return pid if "postgres" in util.pid_cmdline(pid) else None

    def _pids(self):
        """The postmaster and its children (backends, checkpointer, ...)."""
        pm = self.postmaster_pid()
        if pm is None:
            return []
        pids = [pm]
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    data = f.read()
            except OSError:
                continue
            if int(data[data.rindex(b")") + 2:].split()[1]) == pm:
                pids.append(int(name))
        return pids

    def freeze(self):
        """SIGSTOP the postmaster and every backend: TCP connects still
        succeed (kernel backlog) but no query is ever answered."""
        pids = self._pids()
        if not pids:
            raise util.HarnessError(f"PostgreSQL {self.name} is not running")
        for pid in pids:
            util.kill_quietly(pid, signal.SIGSTOP)
        self.frozen = True
        return self

    def thaw(self):
        if self.frozen:
            for pid in self._pids():
                util.kill_quietly(pid, signal.SIGCONT)
        self.frozen = False
        return self

    def destroy(self):
        """Stops the cluster immediately (end of session)."""
        self.thaw()
        if self.running():
            self._pg(["pg_ctl", "-D", self.datadir, "-m", "immediate", "-w", "stop"],
                     check=False)
        pm = self.postmaster_pid()
        if pm is not None:
            util.kill_quietly(pm, signal.SIGKILL)

    # -- SQL ---------------------------------------------------------------

    def psql(self, text, dbname="equilibrium", timeout=30):
        """Runs SQL text through psql (ON_ERROR_STOP) and returns its
        unaligned, tuples-only output ('|' between columns), stripped.
        Raises PgError with psql's message on any error."""
        argv = [os.path.join(util.PG_BINDIR, "psql"), "-X", "-q", "-A", "-t",
                "-v", "ON_ERROR_STOP=1", "-d", self.conninfo_for(dbname), "-f", "-"]
        env = dict(os.environ, PGCONNECT_TIMEOUT="10")
        res = util.run(argv, input=text, timeout=timeout, check=False, env=env)
        if res.returncode != 0:
            raise PgError(f"psql on {self.name} (port {self.port}): {res.stderr.strip()}")
        return res.stdout.strip()

    def sql(self, text, timeout=30):
        """SQL in the `equilibrium` database; returns psql's output text."""
        return self.psql(text, timeout=timeout)

    def rows(self, text, timeout=30):
        """A query's rows as lists of strings (NULL is '')."""
        out = self.sql(text, timeout=timeout)
        return [line.split("|") for line in out.splitlines()] if out else []

    def set_zone(self, zone_id, base_fare, multiplier, supply_count=10, demand_count=10,
                 last_updated="now()"):
        """Upserts one row of current_zone_status. last_updated is an SQL
        expression (default now())."""
        zid = zone_id.replace("'", "''")
        return self.sql(
            "INSERT INTO current_zone_status (zone_id, base_fare, current_multiplier, "
            "supply_count, demand_count, last_updated) VALUES "
            f"('{zid}', {_num(base_fare)}, {_num(multiplier)}, {int(supply_count)}, "
            f"{int(demand_count)}, {last_updated}) ON CONFLICT (zone_id) DO UPDATE SET "
            "base_fare = EXCLUDED.base_fare, current_multiplier = EXCLUDED.current_multiplier, "
            "supply_count = EXCLUDED.supply_count, demand_count = EXCLUDED.demand_count, "
            "last_updated = EXCLUDED.last_updated")

    def reset_data(self):
        """Empties the project tables (between tests)."""
        self.sql("TRUNCATE current_zone_status")

    def wait_ready(self, timeout=30):
        util.wait_for(lambda: self.sql("SELECT 1") == "1", timeout=timeout,
                      desc=f"PostgreSQL {self.name} to answer")
        return self

    def __repr__(self):
        return f"<PgCluster {self.name} 127.0.0.1:{self.port} " \
               f"{'running' if self.running() else 'stopped'}>"


def _num(x):
    """A number as SQL text, written as given (20 stays 20, 2.50 stays 2.5)."""
    float(x)                         # rejects anything that is not a number
    return str(x)
