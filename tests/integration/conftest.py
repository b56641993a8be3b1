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

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclass
class Server:
    address: str
    data: str
    keys: dict[str, str]
    day: dt.date
    proc: subprocess.Popen

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.address)

    def meta(self, principal: str) -> tuple:
        return (("authorization", f"Bearer {self.keys[principal]}"),)


def start_server(data: str, day: dt.date, args: tuple = (), env: dict | None = None) -> Server:
    if not os.path.isdir(os.path.join(data, "shard-0")):
        subprocess.run([sys.executable, "-m", "server.cli", "demo", "--data", data, "--start",
                        day.isoformat()], cwd=ROOT, check=True, capture_output=True, timeout=60)
    # its own session: a crash test can SIGKILL the supervisor and its shards at once
    proc = subprocess.Popen([sys.executable, "-m", "server.cli", "serve", "--data", data, "--port", "0",
                             *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True, env={**os.environ, **(env or {})})
    try:
        return _await_server(proc, data, day)
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


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = str(tmp_path_factory.mktemp("data"))
    s = start_server(data, dt.date.today())
    yield s
    if s.proc.poll() is None:
        out = stop_server(s)
        assert "stopped" in out
