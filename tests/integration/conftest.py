"""A real server process on 127.0.0.1:0 over a real data dir (DESIGN.md 10)."""
from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

import grpc
import pytest

from tests.conftest import MASTER_KEY

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclass
class Server:
    address: str
    data: str
    keys: dict[str, str]
    day: dt.date
    proc: subprocess.Popen

    offset: int = 0             # the server's clock minus the machine's (--clock-offset-s)

    def now(self) -> float:
        """The server's time."""
        return time.time() + self.offset

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.address)

    def meta(self, principal: str) -> tuple:
        return (("authorization", f"Bearer {self.keys[principal]}"),)


class Stubs:
    """Raw stubs of every service over one channel to a server."""

    def __init__(self, server: Server):
        from turnstile.v1 import (admin_pb2_grpc, gate_pb2_grpc, inventory_pb2_grpc,
                                  member_pb2_grpc, report_pb2_grpc, sales_pb2_grpc)
        self.server = server
        self.ch = server.channel()
        self.gate = gate_pb2_grpc.GateServiceStub(self.ch)
        self.sales = sales_pb2_grpc.SalesServiceStub(self.ch)
        self.inv = inventory_pb2_grpc.InventoryServiceStub(self.ch)
        self.admin = admin_pb2_grpc.AdminServiceStub(self.ch)
        self.report = report_pb2_grpc.ReportServiceStub(self.ch)
        self.member = member_pb2_grpc.MemberServiceStub(self.ch)


def master_key_file(data: str) -> str:
    """The key file beside `data` (as `make run` keeps one), holding the session's master
    key (tests/conftest.py); made mode 0600 if absent."""
    path = os.path.abspath(data).rstrip("/") + ".master-key"
    if not os.path.exists(path):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(MASTER_KEY + "\n")
    return path


def start_server(data: str, day: dt.date, args: tuple = (), env: dict | None = None, *,
                 clock: bool = True) -> Server:
    """Seed the demo (from `day`) if `data` is empty and serve it. With `clock`, the
    server's clock is set to the morning of `day` (day_clock); else it is the machine's."""
    # the master key as an operator gives it: a file beside the data dir, not the
    # session's environment variable
    key = ("--master-key-file", master_key_file(data))
    if clock and "--clock-offset-s" not in args:
        args = (*day_clock(day), *args)
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("TURNSTILE_MASTER_KEY")}
    child_env.update(env or {})
    if not os.path.isdir(os.path.join(data, "shard-0")):
        subprocess.run([sys.executable, "-m", "clients.cli", "demo", "--data", data, "--start",
                        day.isoformat(), *key], cwd=ROOT, check=True, capture_output=True,
                       timeout=60, env=child_env)
    # its own session: a crash test can SIGKILL the supervisor and its shards at once
    proc = subprocess.Popen([sys.executable, "-m", "clients.cli", "serve", "--data", data, "--port", "0",
                             *key, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True, env=child_env)
    try:
        server = _await_server(proc, data, day)
        if "--clock-offset-s" in args:
            server.offset = int(args[args.index("--clock-offset-s") + 1])
        return server
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)          # never leave a server behind
        proc.wait(10)
        raise


def _await_server(proc: subprocess.Popen, data: str, day: dt.date) -> Server:
    address = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith("listening on "):
            address = line.split()[2]
            break
    if address is None:
        raise RuntimeError(f"server did not start: {proc.stdout.read()}")
    keys = {}
    path = os.path.join(data, "demo-keys.txt")       # absent if principals were made first
    if os.path.exists(path):
        with open(path) as f:
            for row in f:
                if not row.startswith("#"):
                    pid, _role, key = row.split()
                    keys[pid] = key
    return Server(address, data, keys, day, proc)


def stop_server(server: Server) -> str:
    server.proc.send_signal(signal.SIGTERM)
    out, _ = server.proc.communicate(timeout=30)
    return out


def kill_server(server: Server) -> None:
    """SIGKILL the supervisor and every shard process."""
    os.killpg(server.proc.pid, signal.SIGKILL)
    server.proc.wait(10)


def day_clock(day: dt.date) -> tuple:
    """`serve` options that set the server's clock to 07:00 venue-local on `day`, before
    the demo's first slot (a slot that is over can't be sold, whatever hour the suite
    runs at), and let scans name any time of that day (tests scan at 8:41, 16:30...;
    never a later day)."""
    from engine import demo
    return ("--clock-offset-s", str(int(demo.local_time(day, 7) - time.time())),
            "--scan-skew-s", "86400")


AUTH_CACHE_S = 0.2      # the servers' key caches (--auth-cache-s): a revocation is waited out in 0.2 s


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = str(tmp_path_factory.mktemp("data"))
    s = start_server(data, dt.date.today(), ("--auth-cache-s", str(AUTH_CACHE_S)))
    yield s
    if s.proc.poll() is None:
        out = stop_server(s)
        assert "stopped" in out
