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

host= listens on another address than 127.0.0.1 and netns= runs the
cluster in a network namespace (eqtest/netns.py). A streaming-replication
hot standby of a running cluster: PgCluster.standby_of(primary, workdir)
(pg_basebackup -R -X stream), then .promote() (pg_ctl promote),
.in_recovery(), .wait_caught_up(primary).
"""

import os
import shutil
import signal
import tempfile

from . import util

SCHEMA = os.path.join(util.SOURCE_ROOT, "deploy", "sql", "schema.sql")


class PgError(util.HarnessError):
    """psql failed (the message holds its stderr)."""


class PgCluster:
    def __init__(self, workdir, name="pg", host="127.0.0.1", netns=None):
        self.name = name
        self.host = host                     # listen address, reached at
        self.netns = netns                   # a netns.Netns to run in, or None
        self.primary = None                  # the PgCluster streamed from (standby)
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
        return f"hostaddr={self.host} port={self.port} dbname={dbname} user=equilibrium"

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
        # pg_basebackup -R writes primary_conninfo here: a standby keeps it.
        kept = []
        if os.path.exists(path):
            with open(path) as f:
                kept = [line for line in f if line.startswith("primary_conninfo")]
        with open(path, "w") as f:
            f.write(
                "# written by tests/integration/eqtest/pg.py\n"
                f"port = {self.port}\n"
                f"listen_addresses = '{self.host}'\n"
                f"unix_socket_directories = '{self._socket_dir()}'\n"
                # Commits reach the OS before returning (a SIGKILLed cluster
                # keeps them); nothing is forced to disk.
                "fsync = off\nfull_page_writes = off\n"
                "max_connections = 100\n"
                "log_min_messages = warning\nlog_connections = off\n"
                # A standby tells its primary at once what it replayed
                # (replay lag is measured, not guessed).
                "wal_receiver_status_interval = 1s\nhot_standby_feedback = off\n"
                + "".join(kept))
        util.chown_service(path)
        if self.host != "127.0.0.1":
            # Clients in the default namespace come from the veth's host end.
            hba = os.path.join(self.datadir, "pg_hba.conf")
            src = self.netns.host_addr if self.netns else self.host
            with open(hba) as f:
                text = f.read()
            line = f"host all all {src}/32 trust\nhost replication all {src}/32 trust\n"
            if line not in text:
                with open(hba, "a") as f:
                    f.write(line)

    def _socket_dir(self):
        """The workdir, or a short private dir in /tmp when the socket path
        would pass the 107-byte limit of sun_path (deep test dirs)."""
        if len(self.workdir) + len("/.s.PGSQL.65535") < 100:
            return self.workdir
        if getattr(self, "_short_sockdir", None) is None:
            self._short_sockdir = tempfile.mkdtemp(prefix="eqpg-", dir="/tmp")
            os.chmod(self._short_sockdir, 0o755)
            util.chown_service(self._short_sockdir)
        return self._short_sockdir

    def _pg(self, argv, timeout=60, check=True):
        argv = util.as_service_user([os.path.join(util.PG_BINDIR, argv[0])] + argv[1:])
        if self.netns:
            argv = self.netns.wrap(argv)
        return util.run(argv, timeout=timeout, check=check, cwd=self.workdir)

    # -- streaming replication -------------------------------------------

    @classmethod
    def standby_of(cls, primary, workdir, name="pg-standby", host="127.0.0.1", netns=None):
        """A hot standby streaming from primary (which must be running):
        pg_basebackup -R -X stream, started and answering read-only queries
        when this returns."""
        sb = cls(workdir, name=name, host=host, netns=netns)
        sb.primary = primary
        os.makedirs(workdir, exist_ok=True)
        os.chmod(workdir, 0o755)
        util.chown_service(workdir)
        sb._pg(["pg_basebackup", "-D", sb.datadir, "-d",
                f"hostaddr={primary.host} port={primary.port} user=equilibrium",
                "-R", "-X", "stream", "-c", "fast", "--no-sync"], timeout=120)
        for attempt in range(5):
            sb.port = util.free_port()
            sb._write_conf()
            try:
                sb.start()
                break
            except util.HarnessError:
                if "could not bind" in util.tail(sb.log_path, 20) and attempt < 4:
                    continue
                raise
        sb._created = True
        sb.wait_ready()
        return sb

    def in_recovery(self):
        """pg_is_in_recovery(): True on a standby, False once promoted."""
        return self.sql("SELECT pg_is_in_recovery()") == "t"

    def promote(self, timeout=30):
        """pg_ctl promote -w: the standby becomes a primary, same process."""
        self._pg(["pg_ctl", "-D", self.datadir, "-w", "-t", str(timeout), "promote"],
                 timeout=timeout + 10)
        return self

    def wait_caught_up(self, primary=None, timeout=20):
        """Waits until this standby has replayed everything the primary had
        written when called."""
        primary = primary or self.primary
        target = primary.sql("SELECT pg_current_wal_lsn()")
        util.wait_for(lambda: self.sql(
            f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn") == "t",
            timeout=timeout, desc=f"{self.name} to replay up to {target}")
        return self

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
        if getattr(self, "_short_sockdir", None):
            shutil.rmtree(self._short_sockdir, ignore_errors=True)

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
        return f"<PgCluster {self.name} {self.host}:{self.port} " \
               f"{'running' if self.running() else 'stopped'}>"


def _num(x):
    """A number as SQL text, written as given (20 stays 20, 2.50 stays 2.5)."""
    float(x)                         # rejects anything that is not a number
    return str(x)
