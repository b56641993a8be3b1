"""Secrets stay secret (issue 9.3) as an operator meets it: the real `turnstile` CLI and
a real server over real data dirs. The shard's secrets are found through the engine,
then looked for in every file of the data dir and of a backup; the master key lives
beside the data dir, never in it; modes are private whatever the umask; the audit log's
request digests are keyed; a served data dir is refused clearly by every data command."""
from __future__ import annotations

import datetime as dt
import hashlib
import os
import stat
import subprocess
import sys

import pytest
from turnstile.v1 import admin_pb2, admin_pb2_grpc, sales_pb2, sales_pb2_grpc

from turnstile.engine import Reason, Shard, cmd, demo
from tests.conftest import MASTER_KEY
from tests.integration.conftest import ROOT, master_key_file, start_server, stop_server
from tests.unit.test_secrets import (_as_before_master_keys, files_under, found_secrets,
                                     secret_forms, shard_secrets)

# venue-local tomorrow (UTC+8): its slots are on sale whatever the hour the test runs
DAY = dt.datetime.now(dt.timezone(dt.timedelta(hours=8))).date() + dt.timedelta(days=1)
ID_NUMBER = "110101199003074321"


def no_key_env() -> dict:
    """The environment without the session's master key (tests/conftest.py)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("TURNSTILE_MASTER_KEY")}


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "turnstile.clients.cli", *args], cwd=ROOT,
                          env=no_key_env() if env is None else env, capture_output=True,
                          text=True, timeout=180, check=False)


def ok(*args: str, **kw) -> subprocess.CompletedProcess:
    r = cli(*args, **kw)
    assert r.returncode == 0, f"turnstile {' '.join(args)}: {r.stdout}\n{r.stderr}"
    return r


def one_line_error(r: subprocess.CompletedProcess, words: str) -> str:
    assert r.returncode != 0, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert words in lines[0], lines[0]
    return lines[0]


def tree(path: str) -> dict[str, bytes]:
    """Every file under `path` and its bytes (LMDB's lock file aside: readers register
    in it)."""
    return {os.path.relpath(f, path): open(f, "rb").read() for f in files_under(path)
            if not f.endswith("lock.mdb")}


def _sell(server, n: int = 3, tag: str = "s") -> list[str]:
    """Adult tickets through the OTA, a real-name night ticket at the window; codes."""
    ch = server.channel()
    sales = sales_pb2_grpc.SalesServiceStub(ch)
    codes = []
    for i in range(n):
        h = sales.Hold(sales_pb2.HoldRequest(venue_id="westlake", idempotency_key=f"{tag}-{i}", items=[
            sales_pb2.Item(product_id="adult", slot_ids=[demo.slot_id("main", DAY, 10)], qty=1)]),
            metadata=server.meta("demo-ota"), timeout=10)
        c = sales.Confirm(sales_pb2.ConfirmRequest(
            hold_id=h.hold_id, order_id=f"{tag}-order-{i}",
            payment=sales_pb2.Payment(method="alipay", amount_fen=h.amount_fen)),
            metadata=server.meta("demo-ota"), timeout=10)
        codes += [t.code for t in c.tickets]
    h = sales.Hold(sales_pb2.HoldRequest(venue_id="westlake", idempotency_key=f"{tag}-night", items=[
        sales_pb2.Item(product_id="night", slot_ids=[demo.slot_id("main", DAY, 8)], qty=1)]),
        metadata=server.meta("demo-window"), timeout=10)
    c = sales.Confirm(sales_pb2.ConfirmRequest(
        hold_id=h.hold_id, order_id=f"{tag}-night-1",
        payment=sales_pb2.Payment(method="cash", amount_fen=h.amount_fen),
        holders=[sales_pb2.Holders(id_numbers=[ID_NUMBER])]), metadata=server.meta("demo-window"),
        timeout=10)
    ch.close()
    return codes + [c.tickets[0].code]


def test_no_file_of_a_served_data_dir_or_its_backup_holds_a_secret(tmp_path):
    data, backup = str(tmp_path / "data"), str(tmp_path / "backup")
    server = start_server(data, DAY)
    try:
        _sell(server)
        ch = server.channel()          # a second ticket key: a KEY record in the journal
        admin_pb2_grpc.AdminServiceStub(ch).RotateTicketKey(
            admin_pb2.RotateTicketKeyRequest(shard=0), metadata=server.meta("admin"), timeout=10)
        ch.close()
        _sell(server, 1, "after-rotation")
        ok("backup", "--data", data, "--out", backup, "--master-key-file", master_key_file(data))
    finally:
        assert "stopped" in stop_server(server)
    # the secrets, found through the engine with the master key
    shard = Shard.open(os.path.join(data, "shard-0"), master_key=MASTER_KEY)
    try:
        secrets = shard_secrets(shard, bytes.fromhex(MASTER_KEY))
    finally:
        shard.close(snapshot=False)
    assert len([k for k in secrets if k.startswith("MAC key")]) == 2
    files = files_under(data) + files_under(backup)
    assert {os.path.relpath(f, data) for f in files_under(data)} >= {
        "shard-0/data.mdb", "control/data.mdb", "demo-keys.txt"}
    assert os.path.isfile(os.path.join(backup, "shard-0", "data.mdb"))
    # the search finds what is there (a venue name), and none of the secrets
    assert b"westlake" in open(os.path.join(backup, "shard-0", "data.mdb"), "rb").read()
    assert found_secrets(files, secrets) == []
    # nor the ID number, nor the master key (it lives beside the data dir)
    master = {"ID number": ID_NUMBER.encode(), "master key": bytes.fromhex(MASTER_KEY)}
    assert found_secrets(files, master) == []
    # the backup carries no API key in clear either (demo-keys.txt stays behind)
    assert not os.path.exists(os.path.join(backup, "demo-keys.txt"))


def test_commands_refuse_without_or_with_a_wrong_master_key(tmp_path):
    new = str(tmp_path / "new")
    for argv in (["demo", "--data", new], ["serve", "--data", new, "--port", "0"]):
        one_line_error(cli(*argv), "no master key")
        assert not os.path.exists(new), argv                   # nothing created

    data, key = str(tmp_path / "data"), str(tmp_path / "data.master-key")
    ok("master-key", "create", key)
    ok("demo", "--data", data, "--start", DAY.isoformat(), "--master-key-file", key)
    ok("backup", "--data", data, "--out", str(tmp_path / "good-backup"), "--master-key-file", key)
    wrong = str(tmp_path / "wrong.key")
    ok("master-key", "create", wrong)
    before = tree(data)
    out, target = str(tmp_path / "b"), str(tmp_path / "restored")
    commands = [["serve", "--data", data, "--port", "0"], ["demo", "--data", data],
                ["check", "--data", data], ["info", "--data", data],
                ["backup", "--data", data, "--out", out], ["shards", "list", "--data", data],
                ["restore", "--from", str(tmp_path / "good-backup"), "--data", target]]
    for argv in commands:
        one_line_error(cli(*argv), "no master key")
        line = one_line_error(cli(*argv, "--master-key-file", wrong), "wrong master key")
        assert "shard-0" in line
        env = {**no_key_env(), "TURNSTILE_MASTER_KEY": open(wrong).read().strip()}
        one_line_error(cli(*argv, env=env), "wrong master key")
        assert tree(data) == before, argv                       # untouched
        assert not os.path.exists(out) and not os.path.exists(target), argv
    bad = tmp_path / "bad.key"
    bad.write_text("0123 not hex\n")
    one_line_error(cli("check", "--data", data, "--master-key-file", str(bad)), "64 hex digits")
    one_line_error(cli("check", "--data", data, "--master-key-file", str(tmp_path / "none")),
                   "cannot read the master key file")
    # the right key, from the environment this time
    env = {**no_key_env(), "TURNSTILE_MASTER_KEY_FILE": key}
    assert "shard-0: ok" in ok("check", "--data", data, env=env).stdout


def test_rotating_the_master_key(tmp_path):
    data = str(tmp_path / "data")
    server = start_server(data, DAY)
    try:
        code = _sell(server, 1)[0]
    finally:
        assert "stopped" in stop_server(server)
    old, new = master_key_file(data), str(tmp_path / "new.key")
    ok("master-key", "create", new)
    r = ok("master-key", "rotate", "--data", data, "--new-key-file", new, "--master-key-file", old)
    assert "shard-0: re-wrapped" in r.stdout
    one_line_error(cli("check", "--data", data, "--master-key-file", old), "wrong master key")
    assert "shard-0: ok" in ok("check", "--replay", "--data", data, "--master-key-file", new).stdout
    # run again (as after a rotation that stopped halfway): nothing left to do
    assert "already under the new key" in ok("master-key", "rotate", "--data", data,
                                             "--new-key-file", new, "--master-key-file", old).stdout

    os.replace(new, old)                       # the operator puts the new key in place
    server = start_server(data, DAY)            # serves with it, and sells on
    try:
        later = _sell(server, 1, "after")[0]
    finally:
        assert "stopped" in stop_server(server)
    shard = Shard.open(os.path.join(data, "shard-0"), master_key=open(old).read())
    try:
        for c, gate in ((code, "north-1"), (later, "north-2")):
            assert shard.run(cmd.verify(c, gate, at=demo.local_time(DAY, 10, 5))).reason == Reason.OK
    finally:
        shard.close(snapshot=False)


def _modes(path: str) -> dict[str, int]:
    out = {}
    for root, dirs, files in os.walk(path):
        for name in [root] + [os.path.join(root, f) for f in files]:
            out[os.path.relpath(name, path)] = stat.S_IMODE(os.lstat(name).st_mode)
    return out


def test_data_dirs_backups_and_keys_are_private_whatever_the_umask(tmp_path):
    data, backup = str(tmp_path / "data"), str(tmp_path / "backup")
    old = os.umask(0)                         # the children inherit it
    try:
        ok("master-key", "create", master_key_file(data) + ".tmp")
        os.replace(master_key_file(data) + ".tmp", master_key_file(data))
        server = start_server(data, DAY)          # demo + serve, with that key file
        try:
            _sell(server, 1)
            ok("backup", "--data", data, "--out", backup, "--master-key-file", master_key_file(data))
        finally:
            assert "stopped" in stop_server(server)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(master_key_file(data)).st_mode) == 0o600
    assert {"demo-keys.txt", "control/data.mdb", "control/lock.mdb", "shard-0/data.mdb",
            "shard-0/lock.mdb", "shard-0/owner.lock"} <= set(_modes(data))
    assert {"manifest.json", "control/data.mdb", "shard-0/data.mdb"} <= set(_modes(backup))
    for root in (data, backup):
        modes = _modes(root)
        assert modes == {p: (0o700 if os.path.isdir(os.path.join(root, p)) else 0o600)
                         for p in modes}, modes
    check = ok("check", "--data", data, "--master-key-file", master_key_file(data))
    assert "warning" not in check.stderr
    target = os.path.join(data, "shard-0", "data.mdb")
    os.chmod(target, 0o644)
    os.chmod(os.path.join(data, "control"), 0o755)
    check = ok("check", "--data", data, "--master-key-file", master_key_file(data))
    assert f"warning: {target} is mode 0644" in check.stderr
    assert f"warning: {os.path.join(data, 'control')} is mode 0755" in check.stderr


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    data = str(tmp_path_factory.mktemp("served") / "data")
    server = start_server(data, DAY)
    yield server
    if server.proc.poll() is None:
        assert "stopped" in stop_server(server)


def test_audit_digests_are_keyed(served):
    ch = served.channel()
    sales = sales_pb2_grpc.SalesServiceStub(ch)
    meta = served.meta("demo-window")
    hold = sales_pb2.HoldRequest(venue_id="westlake", idempotency_key="audit-1", items=[
        sales_pb2.Item(product_id="night", slot_ids=[demo.slot_id("main", DAY, 12)], qty=1)])
    h = sales.Hold(hold, metadata=meta, timeout=10)
    confirm = sales_pb2.ConfirmRequest(
        hold_id=h.hold_id, order_id="audit-order-1",
        payment=sales_pb2.Payment(method="cash", amount_fen=h.amount_fen),
        holders=[sales_pb2.Holders(id_numbers=[ID_NUMBER])])
    sales.Confirm(confirm, metadata=meta, timeout=10)
    recs = admin_pb2_grpc.AdminServiceStub(ch).QueryAudit(
        admin_pb2.QueryAuditRequest(principal_id="demo-window", limit=1000),
        metadata=served.meta("admin"), timeout=10).records
    ch.close()
    by_method = {r.method.rsplit("/", 1)[1]: r.request_digest for r in recs}
    assert set(by_method) >= {"Hold", "Confirm"}
    for name, request in (("Hold", hold), ("Confirm", confirm)):
        digest = by_method[name]
        assert len(digest) == 64                      # still a 256-bit digest
        # not a plain hash of the request: that would give the ID number away to guessing
        assert digest != hashlib.sha256(request.SerializeToString()).hexdigest()
        assert digest != hashlib.sha256(request.SerializeToString(deterministic=True)).hexdigest()
    assert all(ID_NUMBER.encode() not in form for r in recs
               for form in secret_forms(r.request_digest.encode()))


def test_data_commands_on_a_served_data_dir_say_so(served):
    data, key = served.data, master_key_file(served.data)
    for argv in (["info"], ["check"], ["demo"], ["shards", "list"],
                 ["master-key", "rotate", "--new-key-file", key]):
        r = cli(*argv, "--data", data, "--master-key-file", key)
        assert r.returncode == 1, (argv, r.stdout, r.stderr)
        one_line_error(r, "in use")
        assert "serve" in r.stderr, r.stderr


def test_a_data_dir_from_before_master_keys_is_wrapped_before_it_is_backed_up(tmp_path):
    data, key = str(tmp_path / "data"), str(tmp_path / "data.master-key")
    ok("master-key", "create", key)
    ok("demo", "--data", data, "--start", DAY.isoformat(), "--master-key-file", key)
    path = os.path.join(data, "shard-0")
    shard = Shard.open(path, master_key=open(key).read())
    st = shard.state
    secrets = shard_secrets(shard, bytes.fromhex(open(key).read().strip()))
    del secrets["shard data key (DEK)"]
    old = (st.holder_secret, st.data_key, {k: (v.mac_key, v.seed) for k, v in st.codec.keys.items()})
    shard.close()
    _as_before_master_keys(path, old)
    assert found_secrets(files_under(data), secrets)            # the old layout: in clear

    before = tree(data)
    one_line_error(cli("backup", "--data", data, "--out", str(tmp_path / "b0"),
                       "--master-key-file", key), "in clear")
    assert tree(data) == before and not os.path.exists(tmp_path / "b0")
    assert "shard-0: ok" in ok("check", "--replay", "--data", data, "--master-key-file", key).stdout
    ok("backup", "--data", data, "--out", str(tmp_path / "b1"), "--master-key-file", key)
    assert found_secrets(files_under(data) + files_under(str(tmp_path / "b1")), secrets) == []
