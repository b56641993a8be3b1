"""A real Turnstile server for tests and benchmarks: `serve` in a subprocess on
127.0.0.1:0 over a data dir (DESIGN.md 10), as grpc_testing or aiohttp.test_utils give
theirs.

    from turnstile.server.testing import start_server, stop_server

    server = start_server(data, dt.date.today())     # seeds the demo into an empty dir
    with server.channel() as ch:
        GateServiceStub(ch).Verify(request, metadata=server.meta("demo-gate"), timeout=5)
    assert "stopped" in stop_server(server)           # SIGTERM: drain, last commit, exit

`start_server` keeps the master key in a file beside the data dir (DATA.master-key, as
`make run` does), seeds the demo venue into an empty data dir, starts `serve --port 0` in
a session of its own, waits for its "listening on" line (every shard's address) and reads
the API keys `serve` wrote for the demo principals. A thread keeps reading the server's
output into `Server.log`, so a full pipe never stops it. The server reads TURNSTILE_*
variables as its configuration: none of the caller's reach it, only those given in `env`.

The server runs as `python -m turnstile.server.cli` (the data-dir commands): this module needs the
server's install and never imports `clients`.
"""
from __future__ import annotations

import datetime as dt
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import grpc

from turnstile.engine import demo, keyring

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SHARD = re.compile(r"(\d+)@(\S+?)[,;)]")


@dataclass
class Server:
    """A running `serve`: its first shard's `address` (each shard answers GetShardMap),
    every shard's (`shards`: shard id -> host:port), the API keys of the demo principals
    (`keys`: principal -> key; empty if principals were made before the first serve),
    the process (`proc`, the supervisor; its shards are its children) and its output so
    far (`log`)."""

    address: str
    data: str
    keys: dict[str, str]
    day: dt.date
    proc: subprocess.Popen
    offset: int = 0             # the server's clock minus the machine's (--clock-offset-s)
    shards: dict[int, str] = field(default_factory=dict)
    log: list[str] = field(default_factory=list, repr=False)
    reader: threading.Thread | None = field(default=None, repr=False)

    def now(self) -> float:
        """The server's time."""
        return time.time() + self.offset

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.address)

    def meta(self, principal: str) -> tuple:
        """Call metadata that authenticates as `principal` (one of `keys`)."""
        return (("authorization", f"Bearer {self.keys[principal]}"),)


def master_key_file(data: str, key: str | None = None) -> str:
    """The master key file beside `data` (DATA.master-key, as `make run` keeps one). If
    there is none, it is made, mode 0600, holding `key` (64 hex digits) or a new key."""
    path = os.path.abspath(data).rstrip("/") + ".master-key"
    if not os.path.exists(path):
        if key is None:
            keyring.create_key_file(path)
        else:
            keyring.parse_master_key(key, "the master key given")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(key + "\n")
    return path


def day_clock(day: dt.date) -> tuple:
    """`serve` options that set the server's clock to 07:00 venue-local on `day`, before
    the demo's first slot (a slot that is over can't be sold, whatever hour it is), and
    let scans name any time of that day (never a later day)."""
    return ("--clock-offset-s", str(int(demo.local_time(day, 7) - time.time())),
            "--scan-skew-s", "86400")


def _env(env: dict | None) -> dict:
    """The server's environment: the caller's without TURNSTILE_* (configuration), plus `env`."""
    out = {k: v for k, v in os.environ.items() if not k.startswith("TURNSTILE_")}
    out.update(env or {})
    return out


def seed_demo(data: str, day: dt.date, *, master_key: str | None = None,
              env: dict | None = None) -> None:
    """`demo --data DATA --start DAY`: the demo venue with slots from `day`."""
    r = subprocess.run([sys.executable, "-m", "turnstile.server.cli", "demo", "--data", data, "--start",
                        day.isoformat(), "--master-key-file", master_key_file(data, master_key)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120, env=_env(env))
    if r.returncode:
        raise RuntimeError(f"demo failed ({r.returncode}):\n{r.stdout}{r.stderr}")


def term_on_parent_death() -> None:
    """For `preexec_fn`: the child gets SIGTERM when the thread that started it dies, even
    by SIGKILL (Linux prctl PR_SET_PDEATHSIG), so a killed benchmark leaves no server
    behind. Only for a process without other threads busy forking (preexec_fn)."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def start_server(data: str, day: dt.date, args: tuple = (), env: dict | None = None, *,
                 clock: bool = True, auth_cache_s: float | None = None,
                 master_key: str | None = None, die_with_parent: bool = False,
                 timeout: float = 60) -> Server:
    """Seed the demo (from `day`) if `data` is empty and serve it on 127.0.0.1:0.

    args: more `serve` options. env: the server's TURNSTILE_* configuration. clock: set
    the server's clock to the morning of `day` (`day_clock`) unless args set it; else it
    is the machine's. auth_cache_s: the lifetime of its key caches (--auth-cache-s).
    master_key: the key a new key file holds (default: a new key). die_with_parent: the
    server stops when the starting thread dies (`term_on_parent_death`)."""
    key = ("--master-key-file", master_key_file(data, master_key))
    if clock and "--clock-offset-s" not in args:
        args = (*day_clock(day), *args)
    if auth_cache_s is not None:
        args = (*args, "--auth-cache-s", str(auth_cache_s))
    if not os.path.isdir(os.path.join(data, "shard-0")):
        seed_demo(data, day, master_key=master_key, env=env)
    # its own session: a crash test can SIGKILL the supervisor and its shards at once
    proc = subprocess.Popen([sys.executable, "-m", "turnstile.server.cli", "serve", "--data", data,
                             "--port", "0", *key, *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env=_env(env), preexec_fn=term_on_parent_death if die_with_parent else None)
    try:
        server = _await_server(proc, data, day, timeout)
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)          # never leave a server behind
        proc.wait(10)
        raise
    if "--clock-offset-s" in args:
        server.offset = int(args[args.index("--clock-offset-s") + 1])
    return server


def _await_server(proc: subprocess.Popen, data: str, day: dt.date, timeout: float) -> Server:
    log: list[str] = []
    first: list[str] = []
    seen = threading.Event()

    def read() -> None:          # to the end, so a full pipe never blocks the server
        for line in proc.stdout:
            log.append(line.rstrip("\n"))
            if not first and line.startswith("listening on "):
                first.append(line)
                seen.set()
        seen.set()               # it exited

    reader = threading.Thread(target=read, name="turnstile-serve-output", daemon=True)
    reader.start()
    if not seen.wait(timeout) or not first:
        raise RuntimeError("server did not start:\n" + "\n".join(log))
    shards = {int(k): a for k, a in _SHARD.findall(first[0])}
    return Server(first[0].split()[2], data, read_demo_keys(data), day, proc, shards=shards,
                  log=log, reader=reader)


def read_demo_keys(data: str) -> dict[str, str]:
    """principal -> API key, from the DATA/demo-keys.txt `serve` writes when it makes the
    demo principals ({} if it did not)."""
    keys = {}
    path = os.path.join(data, "demo-keys.txt")
    if os.path.exists(path):
        with open(path) as f:
            for row in f:
                if row.strip() and not row.startswith("#"):
                    principal, _role, key = row.split()
                    keys[principal] = key
    return keys


def stop_server(server: Server, timeout: float = 30) -> str:
    """SIGTERM to the supervisor (it drains every shard and exits), SIGKILL to its whole
    session if it has not stopped within `timeout`; its output. A server that has stopped
    already is left as it is."""
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
        try:
            server.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            kill_server(server)
    if server.reader is not None:
        server.reader.join(10)
    return "\n".join(server.log)


def kill_server(server: Server) -> None:
    """SIGKILL the supervisor and every shard process."""
    os.killpg(server.proc.pid, signal.SIGKILL)
    server.proc.wait(10)
