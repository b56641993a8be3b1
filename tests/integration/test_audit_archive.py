"""The audit log as an operator and an auditor meet it (engine/audit.py, DESIGN.md 4.2, 5):
`turnstile check` verifies every shard's chain offline, `turnstile audit archive` moves
old segments to files and prunes them, backups carry those files, `turnstile audit
verify` needs no master key, and a running server's VerifyAudit walks a long chain in a
thread while the shard keeps answering. Real CLI subprocesses, real data dirs, a real
server."""
from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time

from turnstile.engine import Shard, audit, cmd, demo
from turnstile.v1 import admin_pb2, admin_pb2_grpc
from tests.integration.conftest import ROOT, start_server, stop_server, venue_day
from tests.integration.test_cli_data import cli, ok


def add_records(path: str, n: int, shard_id: int = 0) -> None:
    """`n` audited commands (notes, as the server audits a call made outside the shard)."""
    s = Shard.open(path, shard_id=shard_id)
    try:
        for lo in range(0, n, 5000):
            batch = []
            for i in range(lo, min(n, lo + 5000)):
                c = cmd.note("OK")
                c.audit = (f"admin-{i % 7}", "/turnstile.v1.AdminService/CreateApiKey", "ef" * 32)
                batch.append(c)
            s.run_many(batch)
    finally:
        s.close()


def test_check_archive_backup_and_verify_from_the_cli(tmp_path):
    data = str(tmp_path / "data")
    path = os.path.join(data, "shard-0")
    s = Shard.open(path)
    s.run_many(demo.commands(dt.date(2026, 11, 23)))
    s.close()
    add_records(path, 2500)                            # checkpoints at 1000, 2000, 2500 (close)

    r = ok("check", "--data", data)
    assert "shard-0: audit chain ok: 2500 records (0 archived in 0 segments), last " \
           "checkpoint at seq 2500" in r.stdout and f"{path}: ok" in r.stdout

    r = ok("audit", "archive", "--data", data, "--keep", "100", "--segment", "1000")
    assert "archived 2000 records in 2 new segments" in r.stdout, r.stdout
    names = sorted(os.listdir(os.path.join(path, "audit")))
    assert names == ["0000000000000001-00000000000003e8.jsonl",
                     "00000000000003e9-00000000000007d0.jsonl"]
    r = ok("check", "--data", data)
    assert "audit chain ok: 2500 records (2000 archived in 2 segments)" in r.stdout
    s = Shard.open_readonly(path)
    try:
        assert sum(1 for _ in s.storage.rows_with_prefix(audit.PREFIX)) == 500   # pruned
    finally:
        s.close()

    # a backup carries the archive; its restore verifies the chain
    backup, restored = str(tmp_path / "backup"), str(tmp_path / "restored")
    ok("backup", "--data", data, "--out", backup)
    with open(os.path.join(backup, "manifest.json")) as f:
        m = json.load(f)
    assert {f"shard-0/audit/{n}" for n in names} <= set(m["files"])
    assert m["shards"][0]["audit"] == {"ok": True, "records": 2500, "segments": 2,
                                       "last_checkpoint": 2500}
    ok("restore", "--from", backup, "--data", restored)
    assert "audit chain ok: 2500 records (2000 archived" in ok("check", "--data", restored).stdout

    # an auditor without the master key verifies with the public key the shard keeps
    env = {k: v for k, v in os.environ.items() if not k.startswith("TURNSTILE_MASTER_KEY")}
    r = subprocess.run([sys.executable, "-m", "turnstile.clients.cli", "audit", "verify",
                        "--data", data], cwd=ROOT, capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0 and "audit chain ok: 2500 records" in r.stdout, r.stdout + r.stderr
    assert "no master key" in r.stderr

    # one record of an archive file changed: check and verify both say where
    seg = os.path.join(path, "audit", names[1])
    with open(seg) as f:
        lines = f.read().splitlines()
    rec = json.loads(lines[10])
    lines[10] = json.dumps(dict(rec, result="PERMISSION_DENIED"))
    with open(seg, "w") as f:
        f.write("\n".join(lines) + "\n")
    for argv in (["check"], ["audit", "verify"]):
        r = cli(*argv, "--data", data)
        assert r.returncode == 1, r.stdout + r.stderr
        assert f"audit chain BROKEN at seq {rec['seq']}" in r.stdout, r.stdout
    # and a removed one
    os.remove(seg)
    r = cli("check", "--data", data)
    assert r.returncode == 1 and "audit chain BROKEN at seq 1001" in r.stdout, r.stdout


def test_archive_is_refused_while_a_server_holds_the_data(tmp_path):
    data = str(tmp_path / "data")
    server = start_server(data, venue_day())
    try:
        r = cli("audit", "archive", "--data", data)
        assert r.returncode == 1 and "in use" in r.stderr, r.stdout + r.stderr
        # verify runs beside it
        r = ok("audit", "verify", "--data", data)
        assert "shard-0: audit chain ok" in r.stdout
    finally:
        assert "stopped" in stop_server(server)


def test_verify_audit_of_a_long_chain_does_not_stall_the_shard(tmp_path):
    """VerifyAudit walks the chain in a thread, in one read transaction: calls sent while
    it runs are answered before it ends (on the event loop they would wait for it)."""
    data = str(tmp_path / "data")
    day = venue_day()
    server = start_server(data, day)
    stop_server(server)
    add_records(os.path.join(data, "shard-0"), 150_000)
    server = start_server(data, day)
    try:
        ch = server.channel()
        admin = admin_pb2_grpc.AdminServiceStub(ch)
        done: dict = {}

        def verify() -> None:
            t = time.monotonic()
            done["answer"] = admin.VerifyAudit(admin_pb2.VerifyAuditRequest(),
                                               metadata=server.meta("admin"), timeout=120)
            done["t0"], done["t1"] = t, time.monotonic()

        worker = threading.Thread(target=verify)
        started = time.monotonic()
        worker.start()
        time.sleep(0.2)                          # VerifyAudit is under way
        answered = []                            # (sent, answered) of calls meanwhile
        while worker.is_alive() and time.monotonic() - started < 120:
            t = time.monotonic()
            admin.GetShardMap(admin_pb2.GetShardMapRequest(), metadata=server.meta("admin"),
                              timeout=120)
            answered.append((t, time.monotonic()))
        worker.join()
        answer = done["answer"]
        assert answer.ok and answer.checked >= 150_000, answer
        took = done["t1"] - done["t0"]
        assert took > 0.5, f"VerifyAudit took {took:.2f} s: too short to tell"
        meanwhile = [a for s, a in answered if s > done["t0"] + 0.1 and a < done["t1"] - 0.05]
        assert len(meanwhile) >= 3, (f"{len(meanwhile)} calls answered during a {took:.2f} s "
                                     f"VerifyAudit: {answered[:5]}")
        recs = admin.QueryAudit(admin_pb2.QueryAuditRequest(after_seq=149_990, limit=5),
                                metadata=server.meta("admin"), timeout=30).records
        assert [r.seq for r in recs] == list(range(149_991, 149_996))
        ch.close()
    finally:
        assert "stopped" in stop_server(server)


def test_a_server_signs_its_audit_log_and_verify_audit_finds_a_cut(tmp_path):
    """What a server writes verifies; a tail cut off behind its back while it is stopped
    is found by VerifyAudit after the restart (the head row and close checkpoint)."""
    data = str(tmp_path / "data")
    day = venue_day()
    server = start_server(data, day)
    meta = server.meta("admin")
    try:
        ch = server.channel()
        admin = admin_pb2_grpc.AdminServiceStub(ch)
        for i in range(3):
            admin.CreatePrincipal(admin_pb2.CreatePrincipalRequest(
                principal_id=f"aud-{i}", role=admin_pb2.AUDITOR), metadata=meta, timeout=10)
        v = admin.VerifyAudit(admin_pb2.VerifyAuditRequest(), metadata=meta, timeout=30)
        assert v.ok and v.checked >= 3
        last = v.checked
        ch.close()
    finally:
        assert "stopped" in stop_server(server)
    path = os.path.join(data, "shard-0")
    s = Shard.open(path)
    try:
        assert s.check_audit().last_checkpoint == last      # signed on close
        with s.storage.env.begin(write=True, db=s.storage.rows) as txn:
            txn.delete(audit.key(last))
    finally:
        s.closed = True                          # as a hand with write access: no close work
        s.storage.close()
    server = start_server(data, day)
    try:
        with server.channel() as ch:
            v = admin_pb2_grpc.AdminServiceStub(ch).VerifyAudit(
                admin_pb2.VerifyAuditRequest(), metadata=server.meta("admin"), timeout=30)
        assert not v.ok and v.first_bad_seq == last
    finally:
        stop_server(server)
    r = cli("check", "--data", data)
    assert r.returncode == 1 and f"audit chain BROKEN at seq {last}" in r.stdout, r.stdout
