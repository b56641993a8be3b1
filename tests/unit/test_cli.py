"""The turnstile CLI, end to end as a subprocess."""
from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def turnstile(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "turnstile.clients.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_help_of_every_command():
    from turnstile.clients.cli import commands
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
    # today's two demo tickets, codes that verify now, and the first as a QR PNG
    codes = open(os.path.join(data, "demo-tickets.txt")).read().split()
    assert len(codes) == 2 and all(c in r.stdout for c in codes)
    assert open(os.path.join(data, "demo-ticket.png"), "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    again = turnstile("demo", "--data", data)
    assert "already seeded" in again.stdout
    info = turnstile("info", "--data", data)
    assert info.returncode == 0 and "tickets issued 2" in info.stdout
    chk = turnstile("check", "--data", data, "--replay")
    assert chk.returncode == 0 and chk.stdout.strip().endswith("ok")
    assert all(c in again.stdout for c in codes)         # the same order, printed again
    from turnstile.engine import Reason, Shard, cmd
    with Shard.open(os.path.join(data, "shard-0")) as shard:     # now, whatever the hour
        assert shard.run(cmd.verify(codes[0], "north-1")).reason == Reason.OK


def test_check_without_data_fails(tmp_path):
    r = turnstile("check", "--data", str(tmp_path / "none"))
    assert r.returncode == 1 and "no shards" in r.stderr


def test_a_reader_that_stops_reading_ends_the_command_quietly(tmp_path):
    """`turnstile info --data data | head -1`: once head has read its line and gone, the
    next write meets a pipe with no reader. The command ends quietly, exit 141 (128 +
    SIGPIPE, what a shell shows for `cat` ended the same way), no traceback. The pipe's
    read end is closed before turnstile writes, so the test does not race head."""
    data = str(tmp_path / "data")
    assert turnstile("demo", "--data", data, "--start", dt.date.today().isoformat()).returncode == 0
    for args in (("info", "--data", data), ("--help",)):
        read, write = os.pipe()
        os.close(read)                                    # head has read its line and gone
        with os.fdopen(write, "wb") as stdout:
            r = subprocess.run([sys.executable, "-m", "turnstile.clients.cli", *args], cwd=ROOT, stdout=stdout,
                               stderr=subprocess.PIPE, text=True, timeout=120)
        assert "Traceback" not in r.stderr and "BrokenPipeError" not in r.stderr, (args, r.stderr)
        assert r.stderr == "", (args, r.stderr)
        # info meets the closed pipe; argparse's help swallows the error itself
        assert r.returncode == (141 if args[0] == "info" else 0), args
    # and through a shell, as a user types it: head's line arrives whole
    r = subprocess.run(f"{sys.executable} -m turnstile.clients.cli info --data {data} | head -1", shell=True,
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.stdout.startswith(os.path.join(data, "shard-0")) and r.stdout.count("\n") == 1
    assert "Traceback" not in r.stderr, r.stderr


def test_shard_dirs_go_by_number_and_none_is_a_one_line_error(tmp_path):
    """`check`, `info` and `audit` walk DATA/shard-N by N (shard-10 after shard-2), and
    a dir with no shard is NotFound, which the command prints on one line (exit 1)."""
    from turnstile.engine import NotFound
    from turnstile.server.cli import _shard_dirs
    for k in (10, 2, 0, 1):
        (tmp_path / f"shard-{k}").mkdir()
    (tmp_path / "shard-x").mkdir()
    assert [p.rsplit("-", 1)[1] for p in _shard_dirs(str(tmp_path))] == ["0", "1", "2", "10"]
    with pytest.raises(NotFound):
        _shard_dirs(str(tmp_path / "nothing"))
