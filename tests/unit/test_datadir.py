"""engine/datadir.py: the data-dir operations behind `turnstile backup | restore | shards |
master-key`, called as functions on real LMDB data dirs (DESIGN.md 8, 10), and
Shard.open_readonly, which backups read their copies with."""
from __future__ import annotations

import datetime as dt
import contextlib
import json
import os
import stat
import subprocess
import sys

import pytest

from turnstile.engine import (HoldItem, MasterKeyError, Shard, ShardUnavailable, cmd, datadir,
                    demo, keyring)
from turnstile.engine.datadir import BackupDamaged, Refused
from turnstile.server.control import ControlStore
from tests.conftest import TODAY, add_hills, sell, tree

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# hills sells tomorrow, venue time, on the real clock (datadir's shards run on it)
HILLS_DAY = dt.date.today() + dt.timedelta(days=1)


@contextlib.contextmanager
def owned(path: str):
    """The shard in `path` held open by another process, as a running server holds it
    (LMDB opens an environment once per process)."""
    owner = subprocess.Popen(
        [sys.executable, "-c", "import sys\nfrom engine import Shard\ns = Shard.open(sys.argv[1])\n"
         "print('ready', flush=True)\nsys.stdin.read()\ns.close()", path],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout.readline().strip() == "ready"
        yield
    finally:
        owner.stdin.close()
        assert owner.wait(30) == 0


@pytest.fixture
def data(tmp_path, clock):
    """A data dir of one shard: the demo venue with 3 tickets sold (one order of 2, one of
    1), the hills venue unsold, a control store with one principal."""
    path = str(tmp_path / "data")
    s = Shard.open(datadir.shard_path(path, 0), clock=clock)
    try:
        s.run_many(demo.commands(TODAY))
        sell(s, qty=2)
        sell(s)
        add_hills(s, HILLS_DAY)
    finally:
        s.close()
    store = ControlStore(os.path.join(path, "control"))
    try:
        store.create_principal("admin", "admin")
        store.place_venue("westlake", 0)
    finally:
        store.close()
    with open(os.path.join(path, "demo-keys.txt"), "w") as f:
        f.write("tsk_x_secret\n")
    return path


# -- backup and restore ---------------------------------------------------------------------
def test_a_backup_restores_to_the_same_shards(data, tmp_path):
    out, target = str(tmp_path / "backup"), str(tmp_path / "restored")
    b = datadir.backup(data, out)
    [s] = b.shards
    assert (s.shard, s.tickets, s.orders, s.holds, s.venues) == (0, 3, 2, 0, ["westlake", "hills"])
    assert s.tickets_by_venue == {"westlake": 3, "hills": 0}
    assert b.control.principals == 1 and b.control.venue_map == {"westlake": 0}
    assert b.warnings == []
    with open(os.path.join(out, datadir.MANIFEST)) as f:
        manifest = json.load(f)
    assert manifest == b.manifest and manifest["format"] == datadir.FORMAT
    assert set(manifest["files"]) == {"shard-0/data.mdb", "control/data.mdb"}   # no demo-keys.txt
    assert manifest["total_bytes"] == b.total_bytes == sum(
        os.path.getsize(os.path.join(out, f)) for f in manifest["files"])
    for root, dirs, files in os.walk(out):
        assert stat.S_IMODE(os.stat(root).st_mode) == 0o700
        for f in files:
            assert stat.S_IMODE(os.stat(os.path.join(root, f)).st_mode) == 0o600

    r = datadir.restore(out, target, replay=True)
    assert r.problems == [] and r.files == 2 and r.created == manifest["created"]
    [got] = r.shards
    assert got.ok and got.summary == s
    assert r.control.principals == 1 and r.control.venue_map == {"westlake": 0}
    shard = Shard.open(datadir.shard_path(target, 0))
    try:
        assert shard.venues() == ["westlake", "hills"] and shard.check(replay=True) == []
    finally:
        shard.close(snapshot=False)


def test_a_backup_runs_beside_the_shards_owner(data, tmp_path):
    with owned(datadir.shard_path(data, 0)):
        b = datadir.backup(data, str(tmp_path / "backup"))
        assert b.shards[0].tickets == 3 and b.warnings == []
        with pytest.raises(Refused, match="held by a running server"):
            datadir.list_shards(data)
        with pytest.raises(Refused, match="held by a running server"):
            datadir.set_shard_count(data, 2, open_map=ControlStore)
    assert not os.path.exists(os.path.join(data, "shard-1"))


def test_backup_refusals_write_nothing(data, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(Refused, match="is not empty"):
        datadir.backup(data, str(out))
    assert os.listdir(out) == ["keep.txt"]
    with pytest.raises(Refused, match="no shards"):
        datadir.backup(str(tmp_path / "nothing"), str(tmp_path / "o1"))
    with pytest.raises(Refused, match="wrong master key"):
        datadir.backup(data, str(tmp_path / "o2"), master_key=os.urandom(32))
    assert not os.path.exists(tmp_path / "o2")


def test_restore_refuses_a_damaged_backup_and_a_non_empty_target(data, tmp_path):
    out, target = str(tmp_path / "backup"), str(tmp_path / "target")
    datadir.backup(data, out)
    path = os.path.join(out, "shard-0", "data.mdb")
    with open(path, "r+b") as f:                    # one byte, same size
        f.seek(os.path.getsize(path) // 2)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0xFF]))
    with pytest.raises(BackupDamaged, match="is damaged") as e:
        datadir.restore(out, target)
    assert [d.split(":")[0] for d in e.value.damaged] == ["shard-0/data.mdb"]
    assert not os.path.exists(target)
    assert not [d for d in os.listdir(tmp_path) if d.startswith(".turnstile-restore-")]

    good = str(tmp_path / "good")
    datadir.backup(data, good)
    os.makedirs(os.path.join(target, "shard-0"))
    with pytest.raises(Refused, match="is not empty"):
        datadir.restore(good, target)
    with pytest.raises(Refused, match="wrong master key"):
        datadir.restore(good, str(tmp_path / "t2"), master_key=os.urandom(32))
    assert not os.path.exists(tmp_path / "t2")
    os.remove(os.path.join(good, datadir.MANIFEST))
    with pytest.raises(Refused, match="has no manifest.json"):
        datadir.restore(good, str(tmp_path / "t3"))


def test_progress_reports_each_phase_to_its_end(data, tmp_path):
    steps: list[datadir.Step] = []
    datadir.backup(data, str(tmp_path / "backup"), progress=steps.append)
    phases = list(dict.fromkeys(s.phase for s in steps))
    assert phases == ["copying", "reading copies", "checksums"]
    for phase in phases:
        mine = [s for s in steps if s.phase == phase]
        assert [s.done for s in mine] == sorted(s.done for s in mine)
        assert mine[0].done == 0 and mine[-1].done == mine[-1].total > 0
    assert {s.item for s in steps if s.phase == "copying"} >= {"shard-0", "control"}
    assert steps[-1].unit == "B"


# -- read-only shards -----------------------------------------------------------------------
def test_a_readonly_shard_reads_beside_its_owner_and_writes_nothing(data, tmp_path):
    path = datadir.shard_path(data, 0)
    s = Shard.open(path)
    try:
        want = datadir.summarize(s)
    finally:
        s.close(snapshot=False)
    with owned(path):
        ro = Shard.open_readonly(path)
        try:
            assert ro.readonly and ro.shard_id == 0
            assert datadir.summarize(ro) == want
            assert ro.check(replay=True) == []
            with pytest.raises(ShardUnavailable, match="read-only"):
                ro.run(cmd.venue("lake", "Lake"))
        finally:
            ro.close()

    out = str(tmp_path / "backup")
    datadir.backup(data, out)
    copy = os.path.join(out, "shard-0")
    before = tree(copy)
    ro = Shard.open_readonly(copy, lock=False)
    ro.close()
    assert tree(copy) == before and os.listdir(copy) == ["data.mdb"]
    with pytest.raises(MasterKeyError, match="wrong master key"):
        Shard.open_readonly(copy, lock=False, master_key=os.urandom(32))


# -- shards ---------------------------------------------------------------------------------
def test_set_count_list_and_move_a_venue(data):
    with pytest.raises(Refused, match="at least 1"):
        datadir.set_shard_count(data, 0, open_map=ControlStore)
    r = datadir.set_shard_count(data, 4, open_map=ControlStore)
    assert (r.count, r.created, r.removed) == (4, [1, 2, 3], [])
    listing = datadir.list_shards(data)
    assert listing.shard_count == 4 and [s.shard for s in listing.shards] == [0, 1, 2, 3]
    assert [s.empty for s in listing.shards] == [False, True, True, True]
    assert listing.shards[0].venues == ["westlake", "hills"] and listing.problems == []
    assert 0 < listing.shards[0].used_bytes <= listing.shards[0].file_bytes
    r = datadir.set_shard_count(data, 3, open_map=ControlStore)
    assert (r.created, r.removed) == ([], [3]) and datadir.shard_ids(data) == [0, 1, 2]

    # a venue that has sold cannot move: its codes carry shard 0
    with pytest.raises(Refused, match="venue westlake on shard 0 has 3 issued tickets"):
        datadir.move_venue(data, "westlake", 1, open_map=ControlStore)
    with pytest.raises(Refused, match="there is no shard 7"):
        datadir.move_venue(data, "hills", 7, open_map=ControlStore)
    with pytest.raises(Refused, match="no venue ghost"):
        datadir.move_venue(data, "ghost", 1, open_map=ControlStore)

    m = datadir.move_venue(data, "hills", 2, open_map=ControlStore)
    assert (m.source, m.target) == (0, 2)
    assert m.sizes == {"zones": 1, "gates": 2, "products": 1, "slots": 2, "allotments": 1}
    s0, s2 = (Shard.open(datadir.shard_path(data, k), shard_id=k) for k in (0, 2))
    try:
        assert s2.catalog("hills") == s0.catalog("hills")
        assert {r.slot: (r.capacity, getattr(r.allotments.get("ota"), "capacity", None))
                for r in s2.availability("hills", HILLS_DAY)} == {"summit-0": (150, 20),
                                                                  "summit-2": (100, None)}
        assert s2.check() == []
    finally:
        s0.close(snapshot=False)
        s2.close(snapshot=False)
    listing = datadir.list_shards(data)
    assert listing.venue_map == {"westlake": 0, "hills": 2} and listing.problems == []
    assert listing.shards[0].unmapped == {"hills": 2} and listing.shards[2].venues == ["hills"]

    with pytest.raises(Refused, match="already on shard 2"):
        datadir.move_venue(data, "hills", 2, open_map=ControlStore)
    with pytest.raises(Refused, match="shard 0 already has venue hills"):
        datadir.move_venue(data, "hills", 0, open_map=ControlStore)
    with pytest.raises(Refused, match="shard 2 holds hills"):
        datadir.set_shard_count(data, 2, open_map=ControlStore)
    assert datadir.shard_ids(data) == [0, 1, 2]


def test_a_venue_with_an_active_hold_does_not_move(data):
    datadir.set_shard_count(data, 2, open_map=ControlStore)
    s = Shard.open(datadir.shard_path(data, 0))          # the real clock, as datadir's
    try:
        s.run(cmd.hold("ota", "hills", [HoldItem("hike", ("summit-0",), 1)]))
    finally:
        s.close()
    with pytest.raises(Refused, match="venue hills on shard 0 has 1 active hold"):
        datadir.move_venue(data, "hills", 1, open_map=ControlStore)
    assert datadir.list_shards(data).shards[1].empty


# -- the master key and modes ---------------------------------------------------------------
def test_rotating_the_master_key(data, tmp_path):
    new = str(tmp_path / "new.key")
    key = keyring.create_key_file(new)
    r = datadir.rotate_master_key(data, new)
    assert r.shards == {0: "rotated"} and r.key_id == keyring.master_key_id(key)
    with pytest.raises(MasterKeyError, match="wrong master key"):
        Shard.open(datadir.shard_path(data, 0))
    assert datadir.rotate_master_key(data, new).shards == {0: "already"}     # run again
    Shard.open(datadir.shard_path(data, 0), master_key=key).close()
    with pytest.raises(Refused, match="is the current one"):
        datadir.rotate_master_key(data, new, master_key=key)


def test_mode_warnings(tmp_path, clock):
    data = str(tmp_path / "data")
    Shard.open(datadir.shard_path(data, 0), clock=clock).close()
    assert datadir.mode_warnings(data) == []
    target = os.path.join(data, "shard-0", "data.mdb")
    os.chmod(target, 0o644)
    key = os.path.join(data, "master.key")
    keyring.create_key_file(key)
    found = datadir.mode_warnings(data, key)
    assert len(found) == 2
    assert found[0].startswith(f"{target} is mode 0644, open to group or others")
    assert "is inside the data dir" in found[1]
