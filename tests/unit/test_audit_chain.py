"""The audit chain resists rewriting, not only editing (DESIGN.md 4.2, 5; engine/audit.py):
signed checkpoints every `audit_every` records and on close, a head row, old segments
archived to files and pruned. Each test tampers with a real data dir behind the engine's
back, as someone with write access to it would, and expects verification to find it --
or, for the records after the last checkpoint, documents that only their hashes cover
them."""
from __future__ import annotations

import asyncio
import json
import os

import pytest

from turnstile.engine import Shard, audit, cmd, keyring
from turnstile.engine.storage import Storage

EVERY = 5


def audited(c, who="admin", method="/turnstile.v1.AdminService/CreateVenue"):
    c.audit = (who, method, "cd" * 32)
    return c


def note(i: int):
    return audited(cmd.note("OK"), who=f"p{i}")


@pytest.fixture
def log(shard_path, clock, monkeypatch):
    """A shard with 12 audited commands, a checkpoint every 5 (at 5 and 10)."""
    monkeypatch.setattr(audit, "EVERY", EVERY)        # as the shard's key is made
    s = Shard.open(shard_path, clock=clock)
    assert s.audit_every == EVERY
    for i in range(12):
        s.run(note(i))
    yield s
    if not s.closed:
        s.close(snapshot=False)


def rows(shard, prefix: bytes) -> dict[int, dict]:
    return {int(k[len(prefix):], 16): json.loads(v) for k, v in shard.storage.rows_with_prefix(prefix)}


def put_rows(shard, rows_: dict[bytes, bytes | None]) -> None:
    """Write rows behind the engine's back (one LMDB transaction)."""
    with shard.storage.env.begin(write=True, db=shard.storage.rows) as txn:
        for k, v in rows_.items():
            if v is None:
                txn.delete(k)
            else:
                txn.put(k, v)


def rewrite_from(shard, seq: int, *, principal="mallory", head=True) -> None:
    """Change record `seq` and recompute every hash after it, consistently (and the head)."""
    recs = rows(shard, audit.PREFIX)
    prev = recs[seq]["prev"]
    out = {}
    for s in sorted(r for r in recs if r >= seq):
        rec = {k: v for k, v in recs[s].items() if k != "hash"}
        rec["prev"] = prev
        if s == seq:
            rec["principal"] = principal
        h, row = audit.make(rec["seq"], prev, rec["at"], rec["principal"], rec["method"],
                            rec["digest"], rec["result"])
        out[audit.key(s)] = row
        prev = h
    if head:
        out[audit.HEAD] = audit.head_row(max(recs), prev)
    put_rows(shard, out)


def test_checkpoints_are_signed_every_n_records_and_on_close(log, shard_path, clock):
    assert sorted(rows(log, audit.CP_PREFIX)) == [5, 10]
    r = log.check_audit()
    assert r.ok and r.checked == 12 and r.last_checkpoint == 10 and r.unsigned_tail == 2
    log.close()
    s2 = Shard.open(shard_path, clock=clock)
    try:
        assert sorted(rows(s2, audit.CP_PREFIX)) == [5, 10, 12]        # signed on close
        r = s2.check_audit()
        assert r.ok and r.last_checkpoint == 12 and r.unsigned_tail == 0
        # the next is due audit_every records after the last, whatever the setting now
        s2.audit_every = 3
        for i in range(5):
            s2.run(note(i))
        assert max(rows(s2, audit.CP_PREFIX)) == 17
        assert s2.verify_audit() == (True, 17, 0)
    finally:
        s2.close()


def test_an_edited_record_is_found(log):
    put_rows(log, {audit.key(3): json.dumps(dict(rows(log, audit.PREFIX)[3], result="DENIED")).encode()})
    r = log.check_audit()
    assert not r.ok and r.first_bad_seq == 3 and "record 3" in r.problem


def test_a_chain_rewritten_consistently_is_found_by_its_checkpoint(log):
    rewrite_from(log, 3)
    assert audit.verify(iter(rows(log, audit.PREFIX).values()))[0]   # the hashes alone agree
    r = log.check_audit()
    assert not r.ok and r.first_bad_seq == 5 and "checkpoint at seq 5" in r.problem


def test_a_rewrite_that_also_removes_the_checkpoints_is_found(log):
    rewrite_from(log, 7)
    put_rows(log, {audit.cp_key(10): None})
    r = log.check_audit()
    assert not r.ok and "no checkpoint by seq 10" in r.problem and r.first_bad_seq == 10
    put_rows(log, {audit.cp_key(5): None})          # every one: the key row promised the first
    r = log.check_audit()
    assert not r.ok and "no checkpoint by seq 5" in r.problem and r.first_bad_seq == 5


def test_a_forged_checkpoint_is_found(log):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    rewrite_from(log, 3)
    recs = rows(log, audit.PREFIX)
    cp = rows(log, audit.CP_PREFIX)[5]
    put_rows(log, {audit.cp_key(5): audit.make_checkpoint(
        Ed25519PrivateKey.generate(), cp["key"], log.shard_id, 5, recs[5]["hash"], cp["at"], 10)})
    r = log.check_audit()
    assert not r.ok and r.first_bad_seq == 5 and "signature" in r.problem


def test_the_records_after_the_last_checkpoint_are_covered_by_hash_only(log):
    """The documented limit: a consistent rewrite after the last checkpoint is not found
    from the data dir alone; the report says how many records that is."""
    rewrite_from(log, 11)
    r = log.check_audit()
    assert r.ok and r.last_checkpoint == 10 and r.unsigned_tail == 2


def test_a_cut_tail_is_found_by_the_head(log):
    put_rows(log, {audit.key(12): None})
    r = log.check_audit()
    assert not r.ok and r.first_bad_seq == 12 and "cut off" in r.problem


def test_a_cut_tail_with_its_head_moved_is_found_by_a_checkpoint(log):
    recs = rows(log, audit.PREFIX)
    put_rows(log, {**{audit.key(s): None for s in range(8, 13)},
                   audit.HEAD: audit.head_row(7, recs[7]["hash"])})
    r = log.check_audit()
    assert not r.ok and r.first_bad_seq == 8 and "checkpoint names seq 10" in r.problem


def test_a_removed_head_row_is_found(log):
    put_rows(log, {audit.HEAD: None})
    r = log.check_audit()
    assert not r.ok and "head row is missing" in r.problem


def test_a_replaced_audit_key_is_found(log):
    """Someone who cannot open the sealed seed makes a key of their own and re-signs: the
    checkpoints verify under it, but the key row does not open under the data key."""
    other = keyring.Keyring(keyring.new_dek())
    signer, row = audit.new_key(other, log.shard_id, EVERY)
    kid = audit.AuditKey.parse(row).key
    recs = rows(log, audit.PREFIX)
    with log.storage.env.begin(write=True) as txn:
        txn.put(audit.KEY_META.encode(), row, db=log.storage.meta)
        for s in (5, 10):
            txn.put(audit.cp_key(s), audit.make_checkpoint(signer, kid, log.shard_id, s,
                                                           recs[s]["hash"], 0, s + EVERY),
                    db=log.storage.rows)
    r = log.check_audit()
    assert not r.ok and "does not open under the shard's data key" in r.problem


def test_the_audit_key_is_never_in_clear_and_verifies_without_the_master_key(log, shard_path):
    signer = log._audit_signer
    seed = signer.private_bytes_raw()
    log.close()
    for root, _, files in os.walk(shard_path):
        for f in files:
            with open(os.path.join(root, f), "rb") as fh:
                data = fh.read()
            assert seed not in data and seed.hex().encode() not in data, f
    # an auditor without the master key: the public key in the key row suffices
    storage = Storage(shard_path, readonly=True)
    try:
        row = audit.AuditKey.parse(storage.get_meta_bytes(audit.KEY_META))
        assert row.public == signer.public_key().public_bytes_raw()
        with storage.env.begin() as txn:
            r = audit.verify_chain(0, txn, storage.rows, storage.meta,
                                   os.path.join(shard_path, audit.ARCHIVE_DIR))
        assert r.ok and r.checked == 12 and r.last_checkpoint == 12
    finally:
        storage.close()


def test_archive_then_verify_and_query(log, shard_path, clock):
    for i in range(8):                      # 20 records, checkpoints at 5, 10, 15, 20
        log.run(note(12 + i))
    written = log.archive_audit(keep=4, segment_records=10)
    assert [(s.first, s.last) for s in written] == [(1, 10)]     # 11..15 waits for more
    assert log.prune_audit() == 10 + 1       # records 1..10, checkpoint 5 (10 stays hot)
    assert sorted(rows(log, audit.PREFIX)) == list(range(11, 21))
    assert sorted(rows(log, audit.CP_PREFIX)) == [10, 15, 20]
    r = log.check_audit()
    assert r.ok and (r.checked, r.archived, r.segments) == (20, 10, 1)
    # queries read the archive, then the rows
    assert [x.seq for x in log.audit_records(after_seq=7, limit=6)] == [8, 9, 10, 11, 12, 13]
    assert [x.principal for x in log.audit_records(principal="p3")] == ["p3"]
    # a segment file: JSON lines, a checkpoint after each record it covers, its own last
    with open(written[0].path) as f:
        lines = [json.loads(x) for x in f]
    assert [x["checkpoint"]["seq"] for x in lines if "checkpoint" in x] == [5, 10]
    assert "checkpoint" in lines[-1] and len(lines) == 12
    assert oct(os.stat(written[0].path).st_mode & 0o777) == "0o600"
    log.close()
    s2 = Shard.open(shard_path, clock=clock)
    try:
        s2.run(note(99))
        assert s2.verify_audit() == (True, 21, 0)
    finally:
        s2.close()


@pytest.fixture
def archived(log):
    """20 records, 1..15 archived in three files of five."""
    for i in range(8):
        log.run(note(12 + i))
    segs = log.archive_audit(keep=5, segment_records=5)
    assert [(s.first, s.last) for s in segs] == [(1, 5), (6, 10), (11, 15)]
    log.prune_audit()
    assert log.verify_audit() == (True, 20, 0)
    return log, segs


def test_an_edited_archive_file_is_found(archived):
    shard, segs = archived
    with open(segs[1].path) as f:
        lines = f.read().splitlines()
    rec = json.loads(lines[2])
    lines[2] = json.dumps(dict(rec, principal="mallory"))
    with open(segs[1].path, "w") as f:
        f.write("\n".join(lines) + "\n")
    r = shard.check_audit()
    assert not r.ok and r.first_bad_seq == rec["seq"]


def test_a_removed_archive_file_is_found(archived):
    shard, segs = archived
    os.remove(segs[1].path)
    r = shard.check_audit()
    assert not r.ok and r.first_bad_seq == 6 and "segment removed" in r.problem


def test_the_last_archive_file_removed_is_found(archived):
    shard, segs = archived
    os.remove(segs[2].path)
    r = shard.check_audit()
    assert not r.ok and r.first_bad_seq == 11


def test_reordered_archive_files_are_found(archived):
    shard, segs = archived
    a, b = segs[0].path, segs[1].path
    os.rename(a, a + ".x")
    os.rename(b, a)
    os.rename(a + ".x", b)
    assert not shard.check_audit().ok


def test_an_archive_file_cut_short_is_found(archived):
    shard, segs = archived
    with open(segs[2].path) as f:
        lines = f.read().splitlines()
    with open(segs[2].path, "w") as f:
        f.write("\n".join(lines[:-2]) + "\n")        # its last record and checkpoint gone
    r = shard.check_audit()
    assert not r.ok and "cut short" in r.problem


def test_rows_both_archived_and_hot_must_agree(log):
    """A crash between writing a segment and pruning it leaves both: fine while equal."""
    log.archive_audit(keep=0, segment_records=5)
    assert log.verify_audit() == (True, 12, 0)
    put_rows(log, {audit.key(4): json.dumps(dict(rows(log, audit.PREFIX)[4], result="X")).encode()})
    r = log.check_audit()
    assert not r.ok and r.first_bad_seq == 4 and "archived copy" in r.problem


def test_a_broken_chain_is_not_archived(log):
    rewrite_from(log, 3)
    from turnstile.engine.errors import CorruptData
    with pytest.raises(CorruptData):
        log.archive_audit(keep=0, segment_records=5)
    assert audit.segments(log.audit_dir) == [] and sorted(rows(log, audit.PREFIX))[0] == 1


def test_a_shard_from_before_checkpoints_is_signed_from_its_first_open(shard_path, clock):
    """Its records stay, covered from the first checkpoint on; no key is made twice."""
    s = Shard.open(shard_path, clock=clock)
    for i in range(3):
        s.run(note(i))
    s._audit_signer = None                   # as the previous release: no key, no head
    s.close()
    st = Storage(shard_path)
    with st.env.begin(write=True) as txn:
        txn.delete(audit.KEY_META.encode(), db=st.meta)
        txn.delete(audit.HEAD, db=st.rows)
    st.close()
    s = Shard.open(shard_path, clock=clock)
    try:
        r = s.check_audit()
        assert r.ok and r.signed and r.checked == 3 and r.last_checkpoint == 0
        kid = r.key
        s.run(note(3))
        s.close()
        s = Shard.open(shard_path, clock=clock)
        r = s.check_audit()
        assert r.ok and r.key == kid and r.last_checkpoint == 4
    finally:
        s.close()


def test_pruning_rides_the_writers_batches(log):
    """Archiving runs in a thread beside the writer; the writer then deletes the archived
    rows a slice per audited batch."""
    for i in range(30):
        log.run(note(12 + i))                         # 42 records
    log.AUDIT_PRUNE_SLICE = 7

    async def main():
        async with log.writer() as w:
            segs = await asyncio.get_running_loop().run_in_executor(
                None, lambda: log.archive_audit(keep=5, segment_records=10))
            assert [(s.first, s.last) for s in segs] == [(1, 10), (11, 20), (21, 30)]
            for i in range(6):
                await w.submit(note(100 + i))
                r = await asyncio.get_running_loop().run_in_executor(None, log.check_audit)
                assert r.ok, r.problem
    asyncio.run(main())
    assert sorted(rows(log, audit.PREFIX))[0] == 31
    assert log.verify_audit() == (True, 48, 0)
