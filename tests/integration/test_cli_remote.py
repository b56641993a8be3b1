"""`turnstile keys` and `turnstile report` as an operator runs them: subprocesses
against a real server."""
from __future__ import annotations

import csv
import io
import os
import socket
import subprocess
import sys
import time

import grpc
import pytest

from turnstile.clients.base import ApiError, Connection
from turnstile.clients.channel import ChannelClient, Item
from turnstile.engine import demo
from tests.integration.conftest import AUTH_CACHE_S, ROOT

VENUE = "westlake"
def turnstile(*args: str, key: str | None = None, env_key: str | None = None,
              address: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TURNSTILE_API_KEY"}
    if env_key:
        env["TURNSTILE_API_KEY"] = env_key
    argv = [sys.executable, "-m", "turnstile.clients.cli", *args]
    if address:
        argv += ["--address", address]
    if key:
        argv += ["--key", key]
    return subprocess.run(argv, check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("args,expect", [
    (("keys", "--help"), ["create", "revoke", "list", "principals", "rotate", "retire"]),
    (("keys", "list", "--help"), ["--principal", "--csv"]),
    (("report", "conflicts", "--help"), ["--venue", "--csv", "two offline"]),
    (("keys", "create", "--help"), ["PRINCIPAL", "--address", "127.0.0.1:50051", "TURNSTILE_API_KEY",
                                    "--key-file", "shown this once"]),
    (("keys", "revoke", "--help"), ["KEY_ID", "--key"]),
    (("keys", "principals", "--help"), ["--csv", "--tls-ca"]),
    (("keys", "rotate", "--help"), ["--shard", "every shard"]),
    (("keys", "retire", "--help"), ["--shard", "FORGED"]),
    (("report", "--help"), ["live", "tickets", "conflicts"]),
    (("report", "live", "--help"), ["--venue", "--date", "--csv", "--timeout"]),
    (("report", "tickets", "--help"), ["--venue", "--csv", "--tls-cert", "--tls-key", "--key-file"]),
    (("loadgen", "--help"), ["--key-file", "--keys-file", "TURNSTILE_API_KEY", "`ps`"]),
])
def test_help(args, expect):
    r = turnstile(*args)
    assert r.returncode == 0, r.stderr
    for word in expect:
        assert word in r.stdout, (word, r.stdout)


def test_top_level_help_lists_the_remote_commands():
    r = turnstile("--help")
    assert r.returncode == 0 and "keys" in r.stdout and "report" in r.stdout


def test_create_a_key_use_it_and_revoke_it(server):
    admin = server.keys["admin"]
    r = turnstile("keys", "create", "demo-ota", env_key=admin, address=server.address)
    assert r.returncode == 0, r.stderr
    secret = r.stdout.strip()
    key_id = secret.split("_")[1]
    assert secret.startswith("tsk_") and f"created API key {key_id} for demo-ota" in r.stderr
    with Connection(server.address, secret) as conn:
        ota = ChannelClient(conn)
        assert ota.availability(VENUE, server.day, zone="main")       # the new key works
        r = turnstile("keys", "revoke", key_id, key=admin, address=server.address)
        assert r.returncode == 0 and r.stdout.strip() == f"revoked API key {key_id}"
        time.sleep(AUTH_CACHE_S)                   # every cache of every shard ends within it
        with pytest.raises(ApiError) as e:
            ota.availability(VENUE, server.day, zone="main")
        assert e.value.code == grpc.StatusCode.UNAUTHENTICATED
    # listed as revoked; revoking again is a retry; an unknown key is NOT_FOUND
    r = turnstile("keys", "list", "--principal", "demo-ota", "--csv", key=admin, address=server.address)
    assert r.returncode == 0, r.stderr
    states = {row["key_id"]: row["state"] for row in csv.DictReader(io.StringIO(r.stdout))}
    assert states[key_id] == "revoked" and "active" in states.values()   # the demo key
    assert secret.split("_", 2)[2] not in r.stdout
    r = turnstile("keys", "revoke", key_id, key=admin, address=server.address)
    assert r.returncode == 0 and r.stdout.strip() == f"revoked API key {key_id}"
    r = turnstile("keys", "revoke", "000000000000", key=admin, address=server.address)
    assert r.returncode == 1 and "NOT_FOUND" in r.stderr and "000000000000" in r.stderr
    r = turnstile("keys", "revoke", "f" * 65, key=admin, address=server.address)  # ids: 1-64
    assert r.returncode == 1 and "INVALID_ARGUMENT" in r.stderr and "key_id" in r.stderr
    assert "f" * 65 not in r.stderr


def test_list_principals_as_table_and_csv(server):
    r = turnstile("keys", "principals", key=server.keys["admin"], address=server.address)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["principal", "role", "venues", "channel", "gates"]
    assert ["demo-ota", "channel", VENUE, "ota", "*"] in [ln.split() for ln in lines[2:]]
    r = turnstile("keys", "principals", "--csv", key=server.keys["admin"], address=server.address)
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert {(row["principal"], row["role"]) for row in rows} >= {
        ("admin", "admin"), ("demo-gate", "gate"), ("demo-ota", "channel"), ("demo-window", "seller")}
    # only an admin may
    r = turnstile("keys", "principals", key=server.keys["demo-window"], address=server.address)
    assert r.returncode == 1 and "PERMISSION_DENIED" in r.stderr


def test_rotate_and_retire_ticket_keys(server):
    admin = server.keys["admin"]
    r = turnstile("keys", "rotate", key=admin, address=server.address)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert [ln.split(":")[0] for ln in lines] == ["shard 0", "shard 1"]       # every shard
    assert all(ln.endswith("is now issuing") for ln in lines)
    first = int(lines[1].split()[4])
    r = turnstile("keys", "rotate", "--shard", "1", key=admin, address=server.address)
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 1
    second = int(r.stdout.split()[4])
    assert second != first
    r = turnstile("keys", "retire", "--shard", "1", str(first), key=admin, address=server.address)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"shard 1: ticket key {first} is now retired"
    r = turnstile("keys", "retire", "--shard", "1", "999", key=admin, address=server.address)
    assert r.returncode == 1 and r.stderr.startswith("turnstile: ")


def test_reports_as_table_and_csv(server):
    ota = ChannelClient(Connection(server.address, server.keys["demo-ota"]))
    before = turnstile("report", "tickets", "--venue", VENUE, "--csv", env_key=server.keys["admin"],
                       address=server.address)
    assert before.returncode == 0, before.stderr
    issued = {row["product_id"]: int(row["issued"]) for row in csv.DictReader(io.StringIO(before.stdout))}
    ota.buy(VENUE, [Item("child", demo.slot_id("main", server.day, 10), qty=3)], "cli-report-1")
    r = turnstile("report", "tickets", "--venue", VENUE, "--csv", env_key=server.keys["admin"],
                  address=server.address)
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert list(rows[0]) == ["product_id", "issued", "used", "voided", "blocked"]
    after = {row["product_id"]: int(row["issued"]) for row in rows}
    assert after["child"] == issued["child"] + 3 and after["adult"] == issued["adult"]
    table = turnstile("report", "tickets", "--venue", VENUE, key=server.keys["admin"], address=server.address)
    assert table.stdout.splitlines()[0].split() == ["product_id", "issued", "used", "voided", "blocked"]
    assert ["child", str(after["child"])] == table.stdout.splitlines()[3].split()[:2]

    live = turnstile("report", "live", "--venue", VENUE, "--date", server.day.isoformat(),
                     key=server.keys["admin"], address=server.address)
    assert live.returncode == 0, live.stderr
    lines = live.stdout.splitlines()
    assert lines[0].startswith(f"{VENUE} on {server.day.isoformat()}: ") and lines[0].endswith(" inside")
    assert lines[1].split() == ["zone_id", "inside", "entered_tickets", "live_capacity"]
    assert [ln.split()[0] for ln in lines[3:]] == ["main", "pagoda", "boat"]
    assert lines[3].split()[3] == "30000" and lines[4].split()[3] == "400"
    live_csv = turnstile("report", "live", "--venue", VENUE, "--csv", key=server.keys["admin"],
                         address=server.address)
    rows = list(csv.DictReader(io.StringIO(live_csv.stdout)))
    assert [(row["zone_id"], row["live_capacity"]) for row in rows] == [
        ("main", "30000"), ("pagoda", "400"), ("boat", "0")]


def test_errors_are_one_line_and_exit_nonzero(server):
    r = turnstile("report", "live", "--venue", VENUE, address=server.address)
    assert r.returncode != 0 and "TURNSTILE_API_KEY" in r.stderr
    r = turnstile("report", "live", "--venue", "atlantis", key=server.keys["admin"], address=server.address)
    assert r.returncode == 1 and "NOT_FOUND" in r.stderr and "atlantis" in r.stderr
    r = turnstile("report", "live", "--venue", VENUE, key=server.keys["demo-ota"], address=server.address)
    assert r.returncode == 1 and "PERMISSION_DENIED" in r.stderr
    r = turnstile("report", "live", "--venue", VENUE, "--date", "23/11/2026", key=server.keys["admin"],
                  address=server.address)
    assert r.returncode == 1 and "INVALID_ARGUMENT" in r.stderr and "date" in r.stderr
    r = turnstile("keys", "principals", key="tsk_000000000000_nope", address=server.address)
    assert r.returncode == 1 and "UNAUTHENTICATED" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = turnstile("report", "live", "--venue", VENUE, "--timeout", "1", key=server.keys["admin"],
                  address="127.0.0.1:9")
    assert r.returncode == 1 and "UNAVAILABLE" in r.stderr


# -- the API key from a file or the environment, never needed on the command line --------
def _key_file(tmp_path, key: str, mode: int = 0o600, name: str = "admin.key") -> str:
    path = tmp_path / name
    path.write_text(key + "\n")
    path.chmod(mode)
    return str(path)


def test_the_key_comes_from_a_file_or_the_environment(server, tmp_path):
    admin = server.keys["admin"]
    path = _key_file(tmp_path, admin)
    r = turnstile("keys", "principals", "--csv", "--key-file", path, address=server.address)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert "demo-ota" in r.stdout
    r = turnstile("keys", "principals", "--csv", env_key=admin, address=server.address)
    assert r.returncode == 0 and "demo-ota" in r.stdout, r.stderr
    # a file names its key's role like any key: the window may not list principals
    window = _key_file(tmp_path, server.keys["demo-window"], name="window.key")
    r = turnstile("keys", "principals", "--key-file", window, env_key=admin, address=server.address)
    assert r.returncode == 1 and "PERMISSION_DENIED" in r.stderr
    # a key file others may read still works, with a warning
    loose = _key_file(tmp_path, admin, mode=0o644, name="loose.key")
    r = turnstile("report", "live", "--venue", VENUE, "--key-file", loose, address=server.address)
    assert r.returncode == 0 and "readable by other users" in r.stderr and admin not in r.stderr


def test_key_errors_are_clear_and_never_echo_the_file(server, tmp_path):
    r = turnstile("keys", "principals", address=server.address)
    assert r.returncode != 0
    assert "--key-file" in r.stderr and "TURNSTILE_API_KEY" in r.stderr
    r = turnstile("keys", "principals", "--key-file", str(tmp_path / "absent.key"), address=server.address)
    assert r.returncode != 0 and "cannot read key file" in r.stderr
    junk = tmp_path / "junk.key"
    junk.write_text("hunter2 is my password\n")
    junk.chmod(0o600)
    r = turnstile("keys", "principals", "--key-file", str(junk), address=server.address)
    assert r.returncode != 0 and "expected one API key" in r.stderr and "hunter2" not in r.stderr
    path = _key_file(tmp_path, server.keys["admin"])
    r = turnstile("keys", "principals", "--key-file", path, key=server.keys["admin"], address=server.address)
    assert r.returncode != 0 and "once" in r.stderr


def test_ps_shows_no_secret(tmp_path):
    """While a command waits on a server, its command line (what `ps` shows every user)
    carries the key file's name and no secret."""
    secret = "tsk_0123456789ab_" + "s" * 43
    path = _key_file(tmp_path, secret)
    silent = socket.socket()             # accepts, never answers: the command waits
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    silent.settimeout(60)
    address = f"127.0.0.1:{silent.getsockname()[1]}"
    env = {k: v for k, v in os.environ.items() if k != "TURNSTILE_API_KEY"}
    try:
        for argv, extra in ((("--key-file", path), {}), ((), {"TURNSTILE_API_KEY": secret})):
            proc = subprocess.Popen([sys.executable, "-m", "turnstile.clients.cli", "keys", "principals",
                                     "--address", address, "--timeout", "30", *argv],
                                    cwd=ROOT, env={**env, **extra}, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
            conn = None
            try:
                conn, _ = silent.accept()        # it has its key and is calling
                ps = subprocess.run(["ps", "-ww", "-o", "args=", "-p", str(proc.pid)],
                                    capture_output=True, text=True, check=True).stdout
                assert "turnstile.clients.cli keys principals" in ps and secret not in ps
                assert secret.split("_")[2] not in ps
            finally:
                proc.kill()
                proc.communicate()
                if conn is not None:
                    conn.close()
    finally:
        silent.close()


def test_loadgen_takes_its_keys_from_a_file_or_the_environment(server, tmp_path):
    path = _key_file(tmp_path, server.keys["admin"])   # an admin key serves every role
    # the server's clock is the morning of server.day: the load's tickets are of that day
    # (the machine's venue-local date differs from it in the evening, UTC, and weekends)
    day = ("--date", server.day.isoformat())
    r = turnstile("loadgen", "verify-unary", "-n", "4", "-c", "2", "-q", "--key-file", path,
                  "--address", server.address, *day)
    assert r.returncode == 0, r.stdout + r.stderr
    r = turnstile("loadgen", "verify-unary", "-n", "4", "-c", "2", "-q", "--address", server.address, *day,
                  env_key=f"admin={server.keys['admin']},gate={server.keys['demo-gate']},"
                          f"sales={server.keys['demo-ota']}")
    assert r.returncode == 0, r.stdout + r.stderr
    r = turnstile("loadgen", "verify-unary", "-n", "4", "--address", server.address)
    assert r.returncode == 2 and "--key-file" in r.stderr and "TURNSTILE_API_KEY" in r.stderr
