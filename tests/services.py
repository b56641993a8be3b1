"""Real etcd and PostgreSQL for the replicated mode's tests and benchmarks (issue 18,
DESIGN.md 7), from Debian's packages (`etcd-server`, `postgresql-15`; `make test` installs
them with scripts/install-services.sh), run on 127.0.0.1 only, in a directory of the
test's, and stopped by the test that started them (by their own process ids).

- `Etcd`: one member, client and peer URLs on free loopback ports, short election
  timeouts (a restart is ready in well under a second).
- `PostgresPair`: a primary and a streaming standby that the primary waits for at every
  commit (synchronous_standby_names = standby1, synchronous_commit = on): a commit the
  primary answered is on both machines. initdb refuses root, so as root both run as the
  `postgres` user the package made. fsync is off: the tests kill processes, never the
  machine, and the page cache keeps what a killed process wrote. A database failover
  (its primary's machine dies, its standby is promoted) is `kill_primary` then
  `promote_standby`; a client finds the new primary by itself through `dsn_both`. It
  destroys the pair's topology: a test that does it uses a PostgresPair of its own.
"""
from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
PG_BIN = "/usr/lib/postgresql/15/bin"
INSTALL = "scripts/install-services.sh"


class Missing(RuntimeError):
    """etcd or PostgreSQL is not installed (run scripts/install-services.sh as root)."""


def check_installed() -> None:
    missing = [p for p in (ETCD, os.path.join(PG_BIN, "initdb")) if not os.access(p, os.X_OK)]
    if missing:
        raise Missing(f"not installed: {', '.join(missing)}; `make test` installs them as root "
                      f"({INSTALL}: Debian's etcd-server and postgresql-15)")


def free_ports(n: int) -> list[int]:
    """`n` ports free on 127.0.0.1 now (bound, read, released together)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _wait(ready, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready within {timeout:.0f} s")
        time.sleep(0.05)


class Etcd:
    """One etcd member on 127.0.0.1 with its data under `base`."""

    def __init__(self, base: str, name: str = "turnstile-test"):
        check_installed()
        self.base = base
        self.name = name
        self.client_port, self.peer_port = free_ports(2)
        self.proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    def start(self) -> "Etcd":
        os.makedirs(self.base, exist_ok=True)
        c, p = f"http://127.0.0.1:{self.client_port}", f"http://127.0.0.1:{self.peer_port}"
        log = open(os.path.join(self.base, "etcd.log"), "ab")
        self.proc = subprocess.Popen(
            [ETCD, "--name", self.name, "--data-dir", os.path.join(self.base, "data"),
             "--logger=zap", "--log-outputs=stderr",
             "--listen-client-urls", c, "--advertise-client-urls", c,
             "--listen-peer-urls", p, "--initial-advertise-peer-urls", p,
             "--initial-cluster", f"{self.name}={p}", "--initial-cluster-state", "new",
             "--heartbeat-interval=20", "--election-timeout=200"],
            stdout=log, stderr=log, start_new_session=True)
        log.close()
        _wait(self._healthy, "etcd")
        return self

    def _healthy(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"etcd exited {self.proc.returncode} (see {self.base}/etcd.log)")
        import urllib.request
        try:
            with urllib.request.urlopen(f"http://{self.endpoint}/health", timeout=0.5) as r:
                return b'"true"' in r.read()
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def __enter__(self) -> "Etcd":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _children(pid: int) -> list[int]:
    """The ids of the processes whose parent is `pid` now (from /proc)."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            # pid (comm) state ppid ...: comm may hold spaces and parentheses
            if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
                out.append(int(d))
    return out


def _alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie, dead and not yet reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


@dataclass
class _Node:
    name: str
    port: int
    data: str


class PostgresPair:
    """A PostgreSQL 15 primary and its synchronous standby on 127.0.0.1, in a directory of
    their own under the system's temp dir (a test's tmp_path is private to root, and the
    postgres user could not reach it), removed by stop()."""

    STANDBY = "standby1"

    def __init__(self):
        check_installed()
        import tempfile
        self.base = base = tempfile.mkdtemp(prefix="turnstile-pg-")
        p, s = free_ports(2)
        self.primary = _Node("primary", p, os.path.join(base, "primary"))
        self.standby = _Node("standby", s, os.path.join(base, "standby"))
        self._as_pg = os.geteuid() == 0          # initdb refuses root

    # -- helpers ------------------------------------------------------------------------
    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = list(argv)
        if self._as_pg:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if check and r.returncode:
            raise RuntimeError(f"{os.path.basename(argv[0])} exited {r.returncode}: {r.stderr[-2000:]}")
        return r

    def dsn(self, node: _Node | None = None, dbname: str = "postgres") -> str:
        node = node or self.primary
        return f"host=127.0.0.1 port={node.port} user=postgres dbname={dbname} connect_timeout=3"

    def dsn_both(self, dbname: str = "postgres") -> str:
        """The libpq string a client of the pair holds to survive a database failover: both
        servers, the primary first, and only one taking writes is connected to
        (target_session_attrs=read-write; a server that is down or in recovery is passed
        over), so after `promote_standby` it reaches the promoted standby by itself."""
        return (f"host=127.0.0.1,127.0.0.1 port={self.primary.port},{self.standby.port} "
                f"user=postgres dbname={dbname} target_session_attrs=read-write connect_timeout=3")

    def _pg_ctl(self, node: _Node, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self._run(os.path.join(PG_BIN, "pg_ctl"), "-D", node.data, "-l",
                         os.path.join(self.base, f"{node.name}.log"), *args, check=check)

    def _sql(self, node: _Node, query: str) -> str:
        r = self._run(os.path.join(PG_BIN, "psql"), "-h", "127.0.0.1", "-p", str(node.port), "-U", "postgres",
                      "-Atc", query, check=False)
        return r.stdout.strip()

    def create_database(self, name: str) -> str:
        """A new database on the pair (the log of record of one test's shards); its dsn."""
        import psycopg
        with psycopg.connect(self.dsn(), autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(dbname=name)

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> "PostgresPair":
        os.makedirs(self.base, exist_ok=True)
        if self._as_pg:
            pw = pwd.getpwnam("postgres")
            os.chown(self.base, pw.pw_uid, pw.pw_gid)
        self._run(os.path.join(PG_BIN, "initdb"), "-D", self.primary.data, "-U", "postgres",
                  "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8")
        with open(os.path.join(self.primary.data, "postgresql.conf"), "a") as f:
            f.write(f"listen_addresses = '127.0.0.1'\nport = {self.primary.port}\n"
                    f"unix_socket_directories = '{self.base}'\nwal_level = replica\n"
                    f"max_wal_senders = 5\nsynchronous_standby_names = 'FIRST 1 ({self.STANDBY})'\n"
                    "synchronous_commit = on\nfsync = off\n")
        self._pg_ctl(self.primary, "-w", "start")
        self._run(os.path.join(PG_BIN, "pg_basebackup"), "-h", "127.0.0.1", "-p", str(self.primary.port),
                  "-U", "postgres", "-D", self.standby.data, "-R", "-X", "stream", "-c", "fast")
        with open(os.path.join(self.standby.data, "postgresql.auto.conf"), "a") as f:
            f.write(f"port = {self.standby.port}\nprimary_conninfo = 'host=127.0.0.1 "
                    f"port={self.primary.port} user=postgres application_name={self.STANDBY}'\n")
        self.start_standby()
        return self

    def start_primary(self) -> None:
        self._pg_ctl(self.primary, "-w", "start")

    def stop_primary(self, mode: str = "fast") -> None:
        self._pg_ctl(self.primary, "-m", mode, "-w", "stop", check=False)

    def start_standby(self) -> None:
        self._pg_ctl(self.standby, "-w", "start")
        _wait(lambda: self._sql(self.primary, "select sync_state from pg_stat_replication "
                                              f"where application_name = '{self.STANDBY}'") == "sync",
              "the synchronous standby")

    def stop_standby(self, mode: str = "fast") -> None:
        self._pg_ctl(self.standby, "-m", mode, "-w", "stop", check=False)

    def kill_primary(self, timeout: float = 10.0) -> list[int]:
        """The primary's machine dies: SIGKILL at once to its postmaster and every process it
        forked (backends, WAL sender, checkpointer...), so nothing is shut down and no
        client gets another answer -- a commit waiting for the standby is never answered.
        Returns after they are all gone (a zombie counts as gone), their ids. The stale
        postmaster.pid is then removed, so that stop() signals no process that took one of
        those ids since (the data dir is left as the crash left it otherwise)."""
        pidfile = os.path.join(self.primary.data, "postmaster.pid")
        try:
            with open(pidfile) as f:
                postmaster = int(f.readline())
        except (OSError, ValueError):
            return []
        victims = [postmaster, *_children(postmaster)]
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _wait(lambda: not any(_alive(pid) for pid in victims), "the killed primary's exit", timeout)
        os.unlink(pidfile)
        return victims

    def promote_standby(self) -> None:
        """Fail the database over to the standby (after `kill_primary`): `pg_ctl promote -w`,
        back once it takes writes. It then runs alone, as an operator runs it when the only
        standby became the primary (and as Patroni's non-strict synchronous_mode does):
        synchronous_standby_names, which pg_basebackup copied from the old primary and which
        names no server now, is emptied first (ALTER SYSTEM, reload) -- else every commit on
        the promoted server would wait for a standby that never comes. A commit it answers
        is then on this one machine only, until a new standby is attached."""
        self._run(os.path.join(PG_BIN, "psql"), "-h", "127.0.0.1", "-p", str(self.standby.port),
                  "-U", "postgres", "-v", "ON_ERROR_STOP=1",
                  "-c", "ALTER SYSTEM SET synchronous_standby_names = ''",
                  "-c", "SELECT pg_reload_conf()")
        self._pg_ctl(self.standby, "-w", "promote")
        _wait(lambda: self._sql(self.standby, "select pg_is_in_recovery()") == "f"
              and self._sql(self.standby, "show synchronous_standby_names") == "",
              "the promoted standby")

    def stop(self) -> None:
        """Stop both servers and remove their directory."""
        for node in (self.primary, self.standby):
            if os.path.exists(os.path.join(node.data, "postmaster.pid")):
                self._pg_ctl(node, "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.base, ignore_errors=True)

    def pids(self) -> list[int]:
        out = []
        for node in (self.primary, self.standby):
            try:
                with open(os.path.join(node.data, "postmaster.pid")) as f:
                    out.append(int(f.readline()))
            except (OSError, ValueError):
                pass
        return out

    def kill(self) -> None:
        """SIGKILL both postmasters (a test that leaves them behind)."""
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def __enter__(self) -> "PostgresPair":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
