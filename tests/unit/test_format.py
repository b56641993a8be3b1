"""Upgrades (issue 12, DESIGN.md 4.2): a data dir written by the previous release's format
opens with this build and reads as that release read it, also after a crash before the
upgrade (journal after the snapshot); `turnstile migrate` upgrades it in place after a
verified backup, and a data dir of a newer format is refused.

The fixture (tests/fixtures/format1.tar.gz) and what the previous release observed of it
(format1.expect.json) were made by tests/fixtures/make_format1.py run with the code of
commit 56c9ac5; `observe` is that script's, so both builds are asked the same questions.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile

import lmdb
import pytest

from turnstile.engine import CorruptData, Shard, cmd, datadir
from turnstile.engine.datadir import Refused
from turnstile.engine.journal import FORMAT, FORMAT_RECORD, Record, blob_format, json_record, records
from turnstile.engine.state import catalog, sales
from turnstile.engine.storage import SCHEMA, FormatTooNew, Storage
from tests.fixtures import make_format1 as fx

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(os.path.dirname(HERE), "fixtures")
ROOT = os.path.dirname(os.path.dirname(HERE))
KEY = fx.FORMAT1_MASTER_KEY
FORMAT_3_KINDS = {Record.CALENDAR, Record.PRICES, Record.PRICE_RULES, Record.BOOKING,
                  Record.ID_LIMITS, Record.REFUND_POLICY, Record.PASS_DATES, Record.BLACKLIST,
                  Record.COUPON, Record.COUPON_CODES, Record.CHANGE,
                  Record.PACKAGE}
FORMAT_4_KINDS = {Record.SPLIT, Record.SHIFT}
FORMAT_5_KINDS = {Record.CONTROL}
FORMAT_6_KINDS = {Record.MEMBER_PROGRAM, Record.MEMBER, Record.POINTS, Record.SEAT_MAP, Record.SEATING,
                  Record.SEATS}
FORMAT_7_KINDS = {Record.MERCHANT}


@pytest.fixture(scope="module")
def expected() -> dict:
    with open(os.path.join(FIXTURES, "format1.expect.json")) as f:
        return json.load(f)


@pytest.fixture
def data(tmp_path) -> str:
    """The fixture's data dir, unpacked afresh (DATA/shard-0)."""
    with tarfile.open(os.path.join(FIXTURES, "format1.tar.gz")) as tar:
        tar.extractall(tmp_path, filter="data")
    return str(tmp_path / "data")


def shard0(data: str) -> str:
    return os.path.join(data, "shard-0")


def assert_observed(shard: Shard, expected: dict) -> None:
    got = fx.observe(shard)
    keys = set(got) | (set(expected) - {"clock", "kept", "journal_batches", "snapshot_seq"})
    differ = {k: (got.get(k), expected.get(k)) for k in keys if got.get(k) != expected.get(k)}
    assert not differ, f"differs from what format 1 observed: {sorted(differ)}\n{differ}"


def journal_formats(path: str) -> list[int]:
    st = Storage(path, readonly=True, lock=False)
    try:
        return [blob_format(blob) for _, blob in st.journal_after(0)]
    finally:
        st.close()


def test_the_fixture_is_of_format_1(data, expected):
    """What the other tests rely on: the fixture is what its name says (an old format,
    a snapshot and journal after it), not a dir this build made."""
    st = Storage(shard0(data), readonly=True, lock=False)
    try:
        assert st.formats() == (1, 1)
        assert st.get_meta_bytes("schema") == b"1" and st.get_meta_bytes("oldest") is None
        seq, blobs = st.read_snapshot()
        assert seq == expected["snapshot_seq"] > 0
        assert "versions" not in blobs and blob_format(blobs["catalog"]) == 1
        batches = list(st.journal_after(seq))
        assert len(batches) == expected["journal_batches"] > 0
        kinds = {k for _, b in batches for k, _ in records(b)}
    finally:
        st.close()
    assert set(journal_formats(shard0(data))) == {1}
    # every kind a command journaled in format 1 after the snapshot (SECRETS is in the
    # snapshot; the kinds of formats 3 to 7 were not there yet)
    assert kinds == set(Record) - {Record.FORMAT, Record.SECRETS} - FORMAT_3_KINDS - FORMAT_4_KINDS \
        - FORMAT_5_KINDS - FORMAT_6_KINDS - FORMAT_7_KINDS


def test_a_format_1_dir_opens_and_reads_as_before(data, expected):
    """The crash-before-upgrade case: its snapshot loaded, its journal of format 1
    replayed, everything a caller reads is what the previous release read."""
    clock = fx.Clock(expected["clock"])
    shard = Shard.open(shard0(data), clock=clock, master_key=KEY)
    try:
        assert shard.recovery["replayed"] > 0
        assert_observed(shard, expected)
        assert shard.check(replay=True) == []
        # opened by this build: marked with its format (older builds refuse it), its old
        # records still there until migrate
        assert shard.storage.formats() == (SCHEMA, 1)
    finally:
        shard.close(snapshot=False)


def test_a_mixed_journal_replays(data, expected):
    """This build appends batches of its format after the old ones; replay reads both."""
    clock = fx.Clock(expected["clock"])
    shard = Shard.open(shard0(data), clock=clock, master_key=KEY)
    try:
        h = shard.run(cmd.hold("pos", "lake", [{"product": "adult", "slots": ["m-d1"], "qty": 1}]))
        shard.run(cmd.confirm(h.hold_id, "pos-2001", "pos", method="cash", amount_fen=h.amount_fen))
        code = shard.order_codes("pos-2001", "pos")[0]
        shard.run(cmd.refund("pos-1005", "r-9", channel="pos"))
        shard.run(cmd.block(shard.get_order("ota-78", "ota").lines[0]["first_ticket"] + 1))
        shard.run(cmd.expire())
        keep = fx.observe(shard)
    finally:
        shard.close(snapshot=False)
    assert set(journal_formats(shard0(data))) == {1, FORMAT}
    shard = Shard.open(shard0(data), clock=clock, master_key=KEY)
    try:
        assert fx.observe(shard) == keep
        assert shard.order_codes("pos-2001", "pos")[0] == code
        assert shard.check(replay=True) == []
    finally:
        shard.close(snapshot=False)


def test_replay_does_not_decide_again(data, expected, monkeypatch):
    """Replay applies what the records say: with the commands' checks of catalog and
    sales broken (as if today's rules refused everything), both the format-1 fixture and
    a dir of this build's format open and read the same."""
    clock = fx.Clock(expected["clock"])
    shard = Shard.open(shard0(data), clock=clock, master_key=KEY)
    try:
        h = shard.run(cmd.hold("ota", "hill", [{"product": "adult", "slots": ["h-d0"], "qty": 1}],
                               ttl_s=60))
        shard.run(cmd.release(h.hold_id, "ota"))
        shard.run(cmd.venue("cove", "Cove"))
        shard.run(cmd.zone("cove", "main"))
        shard.run(cmd.gate("main", "g-c", venue="cove"))
        shard.run(cmd.product("cove", "adult", ["main"], price_fen=100))
        shard.run(cmd.slots([fx._slot("c-d0", "main", fx.DAY, 0, 24, 9)], venue="cove"))
        shard.run(cmd.allotment("c-d0", "ota", 3, venue="cove"))
        shard.run(cmd.slot_capacity("c-d0", 8, venue="cove"))
        keep = fx.observe(shard)
        keep_dump = shard.state.dump()
    finally:
        shard.close(snapshot=False)

    def refuse(*a, **k):
        raise AssertionError("replay decided a command again")

    for mod in (catalog, sales):
        for name in ("arg", "int_arg", "ident_arg", "text_arg"):
            monkeypatch.setattr(mod, name, refuse)
    monkeypatch.setattr(sales, "hold_lines", refuse)
    monkeypatch.setattr(sales, "active_hold", refuse)
    shard = Shard.open_readonly(shard0(data), lock=False, clock=clock, master_key=KEY)
    try:
        assert fx.observe(shard) == keep
        assert shard.state.dump() == keep_dump
    finally:
        shard.close()


def test_migrate_upgrades_in_place_after_a_verified_backup(data, expected, tmp_path):
    clock = fx.Clock(expected["clock"])
    bk = str(tmp_path / "before")
    m = datadir.migrate(data, backup_to=bk, master_key=KEY)
    assert m.backup == bk and m.format == FORMAT
    assert [(s.shard, s.before, s.action) for s in m.shards] == [(0, (1, 1), "migrated")]
    assert m.shards[0].journal_batches == expected["journal_batches"]
    st = Storage(shard0(data), readonly=True, lock=False)
    try:
        assert st.formats() == (FORMAT, FORMAT)
        assert st.journal_count() == 0
        seq, blobs = st.read_snapshot()
        assert "versions" in blobs and blob_format(blobs["catalog"]) == FORMAT
    finally:
        st.close()
    shard = Shard.open(shard0(data), clock=clock, master_key=KEY)
    try:
        assert_observed(shard, expected)
        assert shard.check(replay=True) == []
    finally:
        shard.close(snapshot=False)

    # idempotent: nothing to do, nothing written, no second backup
    again = datadir.migrate(data, master_key=KEY)
    assert again.backup is None and [s.action for s in again.shards] == ["current"]
    assert sorted(os.listdir(tmp_path)) == ["before", "data"]

    # the backup is of the old format, verifies and restores to what format 1 read
    datadir.verify_backup(bk)
    assert journal_formats(os.path.join(bk, "shard-0")) == [1] * expected["journal_batches"]
    r = datadir.restore(bk, str(tmp_path / "restored"), master_key=KEY)
    assert r.problems == []
    shard = Shard.open(os.path.join(str(tmp_path / "restored"), "shard-0"), clock=clock,
                       master_key=KEY)
    try:
        assert_observed(shard, expected)
    finally:
        shard.close(snapshot=False)


def test_migrate_refuses_a_dir_in_use(data):
    shard = Shard.open(shard0(data), master_key=KEY)     # holds the owner.lock
    try:
        with pytest.raises(Refused, match="in use"):
            datadir.migrate(data, master_key=KEY)
    finally:
        shard.close(snapshot=False)


def test_migrate_refuses_a_damaged_backup_target_and_changes_nothing(data, tmp_path):
    os.makedirs(tmp_path / "full")
    (tmp_path / "full" / "x").write_text("not empty")
    with pytest.raises(Refused, match="not empty"):
        datadir.migrate(data, backup_to=str(tmp_path / "full"), master_key=KEY)
    assert journal_formats(shard0(data))[0] == 1
    assert Storage.peek_meta(shard0(data), "schema", lock=False) == b"1"


def _set_meta(path: str, key: bytes, value: bytes) -> None:
    env = lmdb.open(path, max_dbs=8, subdir=True)
    try:
        with env.begin(write=True, db=env.open_db(b"meta")) as txn:
            txn.put(key, value)
    finally:
        env.close()


def test_a_newer_data_dir_is_refused(data, tmp_path):
    path = shard0(data)
    _set_meta(path, b"schema", str(FORMAT + 1).encode())
    with open(os.path.join(path, "data.mdb"), "rb") as f:
        before = f.read()
    with pytest.raises(FormatTooNew, match=f"format {FORMAT + 1}"):
        Shard.open(path, master_key=KEY)
    with pytest.raises(CorruptData, match=f"format {FORMAT + 1}"):
        Shard.open_readonly(path, lock=False, master_key=KEY)
    with pytest.raises(Refused, match=f"format {FORMAT + 1}.*nothing was migrated"):
        datadir.migrate(data, backup_to=str(tmp_path / "bk"), master_key=KEY)
    assert not os.path.exists(tmp_path / "bk")
    with open(os.path.join(path, "data.mdb"), "rb") as f:
        assert f.read() == before


def test_newer_records_and_snapshot_blobs_are_refused(tmp_path):
    """A batch or snapshot blob of a format this build does not read is CorruptData,
    never guessed at (even where the dir's meta does not say so)."""
    path = str(tmp_path / "shard-0")
    shard = Shard.open(path, master_key=KEY)
    shard.run(cmd.venue("v"))
    shard.close(snapshot=False)
    st = Storage(path)
    seq = st.last_seq()
    newer = FORMAT_RECORD[:-2] + (FORMAT + 1).to_bytes(2, "little")
    st.commit(seq + 1, newer + json_record(Record.VENUE, {"id": "w", "name": "w", "utc_offset_s": 0}), {})
    st.close()
    with pytest.raises(CorruptData, match=f"format {FORMAT + 1}"):
        Shard.open(path, master_key=KEY)

    path = str(tmp_path / "shard-1")
    shard = Shard.open(path, shard_id=1, master_key=KEY)
    shard.run(cmd.venue("v"))
    shard.close()                                      # a snapshot
    st = Storage(path)
    seq, blobs = st.read_snapshot()
    blobs["versions"] = json.dumps({**json.loads(blobs["versions"]), "records": 2}).encode()
    st.write_snapshot(seq, blobs)
    st.close()
    with pytest.raises(CorruptData, match="records \\(version 2\\)"):
        Shard.open(path, shard_id=1, master_key=KEY)


def test_new_dirs_are_of_this_format(tmp_path):
    path = str(tmp_path / "shard-0")
    shard = Shard.open(path, master_key=KEY)
    shard.run(cmd.venue("v"))
    shard.close(snapshot=False)
    st = Storage(path, readonly=True, lock=False)
    try:
        assert st.formats() == (FORMAT, FORMAT)
        assert {blob_format(b) for _, b in st.journal_after(0)} == {FORMAT}
    finally:
        st.close()


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TURNSTILE_MASTER_KEY": KEY}
    env.pop("TURNSTILE_MASTER_KEY_FILE", None)
    return subprocess.run([sys.executable, "-m", "turnstile.clients.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_cli_migrate_then_check(data, tmp_path):
    r = cli("migrate", "--data", data, "--backup-to", str(tmp_path / "bk"))
    assert r.returncode == 0, r.stderr
    assert f"shard-0: format 1 -> {FORMAT}" in r.stdout and str(tmp_path / "bk") in r.stdout
    r = cli("migrate", "--data", data)
    assert r.returncode == 0 and "nothing to do" in r.stdout, r.stderr
    r = cli("check", "--data", data, "--replay")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{shard0(data)}: ok" in r.stdout
    _set_meta(shard0(data), b"schema", b"99")
    r = cli("migrate", "--data", data)
    assert r.returncode == 1 and "format 99" in r.stderr
