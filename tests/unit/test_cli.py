"""The turnstile CLI, end to end as a subprocess."""
from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def turnstile(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "server.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_help_of_every_command():
    from server.cli import commands
    paths = list(commands())
    assert {("serve",), ("demo",), ("check",), ("backup",), ("restore",), ("shards", "move"),
            ("keys",), ("report",), ("loadgen",)} <= set(paths)
    for path in [()] + paths:
        r = turnstile(*path, "--help")
        assert r.returncode == 0, (path, r.stderr)
        assert r.stdout.startswith("usage: turnstile " + " ".join(path)), (path, r.stdout[:200])
        # every option is explained
        assert "--help" in r.stdout and r.stdout.count("\n") > 3, path


def test_demo_info_check(tmp_path):
    data = str(tmp_path / "data")
    r = turnstile("demo", "--data", data, "--start", dt.date.today().isoformat())
    assert r.returncode == 0, r.stderr
    assert "demo-order-1" in r.stdout and "ticket 0:" in r.stdout
    again = turnstile("demo", "--data", data)
    assert "already seeded" in again.stdout
    info = turnstile("info", "--data", data)
    assert info.returncode == 0 and "tickets issued 2" in info.stdout
    chk = turnstile("check", "--data", data, "--replay")
    assert chk.returncode == 0 and chk.stdout.strip().endswith("ok")


def test_check_without_data_fails(tmp_path):
    r = turnstile("check", "--data", str(tmp_path / "none"))
    assert r.returncode == 1 and "no shards" in r.stderr
