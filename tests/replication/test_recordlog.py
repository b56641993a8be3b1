"""The log of record (engine/recordlog.py, issue 18) on a real PostgreSQL primary with a
real synchronous standby. The contract (its docstring, DESIGN.md 7): every batch a
replicated shard commits is in the log before it is answered, on both database machines;
a standby that starts from a copy of the primary and replays the log after it holds the
same state, without deciding anything again; once a newer epoch claims the shard, the
older owner writes nothing (in the same transaction as its write); a database that
stops makes the shard wait, acknowledging nothing and losing nothing."""
from __future__ import annotations

import os
import shutil
import threading
import time

import psycopg
import pytest

from turnstile.engine import HoldItem, NotPrimary, ShardUnavailable, Shard, cmd, demo
from turnstile.engine.errors import CorruptData
from turnstile.engine.recordlog import Fenced, RecordLog, apply_log, pack, unpack

from tests.conftest import TODAY, Clock, sell

SLOT = demo.slot_id("main", TODAY, 8)


def new_log(pg, shard: int, epoch: int | None = None, **kw) -> RecordLog:
    log = RecordLog(pg.dsn(), shard, **kw)
    log.ensure_schema()
    if epoch is not None:
        log.claim(epoch, base=0)
    return log


def seeded_copies(clock, first: str, *copies: str) -> None:
    """The demo seeded into shard dir `first`, which is then copied to each of `copies`
    (standbys start from a copy of the primary)."""
    with Shard.open(first, clock=clock) as s:
        s.run_many(demo.commands(TODAY))
    for d in copies:
        shutil.copytree(first, d)


def rows_of(pg, node, shard: int) -> list[tuple[int, int]]:
    with psycopg.connect(pg.dsn(node)) as c:
        return c.execute("SELECT seq, epoch FROM turnstile_log WHERE shard = %s ORDER BY seq",
                         (shard,)).fetchall()


def test_a_body_is_the_batch_as_written():
    rows = {b"a": b"1", b"gone": None, b"": b"", b"k" * 300: b"\0" * 70_000}
    assert unpack(pack(b"journal", rows)) == (b"journal", rows)
    assert unpack(pack(None, {})) == (b"", {})
    for bad in (b"", b"\x05\0\0\0abc", pack(b"j", {b"a": b"1"}) + b"x", pack(b"j", {b"a": b"1"})[:-1]):
        with pytest.raises(CorruptData):
            unpack(bad)


def test_a_standby_replaying_the_log_holds_the_primarys_state(pg, shard_no, tmp_path):
    clock = Clock(demo.local_time(TODAY, 8, 30))
    primary_dir, standby_dir = str(tmp_path / "primary"), str(tmp_path / "standby")
    p = Shard.open(primary_dir, clock=clock)
    p.close(snapshot=False)
    shutil.copytree(primary_dir, standby_dir)           # the standby starts from a copy
    p = Shard.open(primary_dir, clock=clock)
    try:
        p.record_log = new_log(pg, shard_no, epoch=1)
        p.run_many(demo.commands(TODAY))
        sold = [sell(p, "adult", qty=3, order="o-1"), sell(p, "combo", (SLOT, demo.slot_id("pagoda", TODAY, 9),
                                                                       demo.slot_id("boat", TODAY, 9)))]
        code = sold[0].tickets[0].code
        assert p.run(cmd.verify(code, "north-1")).reason.name == "OK"
        p.run(cmd.refund("o-1", "r-1", [sold[0].tickets[2].ticket_id], channel="web"))
        h = p.run(cmd.hold("web", demo.VENUE, [HoldItem("child", (SLOT,), 2)]))       # left open
        # every batch the primary wrote is in the log, on the database's standby as well
        on_primary = rows_of(pg, pg.primary, shard_no)
        assert [seq for seq, _ in on_primary][-1] == p.seq and {e for _, e in on_primary} == {1}
        assert rows_of(pg, pg.standby, shard_no) == on_primary

        s = Shard.open(standby_dir, clock=clock)
        try:
            reader = RecordLog(pg.dsn(pg.standby), shard_no)
            applied = [s.follow(seq, journal, rows) for seq, _, journal, rows in reader.entries(s.seq)]
            assert applied and all(applied)
            assert s.seq == p.seq
            assert s.state.dump() == p.state.dump()
            assert s.check(replay=True) == []
            assert s.get_order("o-1", "web") == p.get_order("o-1", "web")
            assert s.order_tickets("o-1", "web") == p.order_tickets("o-1", "web")
            # applied again: had already, nothing changes
            assert not any(s.follow(seq, j, r) for seq, _, j, r in reader.entries(0))
            # the standby knows what was decided: the scan, the refund, the open hold
            assert s.run(cmd.verify(code, "north-1")).reason.name == "ALREADY_USED"
            assert s.run(cmd.verify(sold[0].tickets[2].code, "north-1")).reason.name == "VOIDED"
            assert s.hold_info(h.hold_id).status == "active"
            reader.close()
        finally:
            s.close(snapshot=False)
    finally:
        p.record_log.close()
        p.close(snapshot=False)


def test_a_newer_epoch_fences_the_older_owner_in_the_same_transaction(pg, shard_no, tmp_path):
    old = new_log(pg, shard_no, epoch=1, owner="node-a")
    old.append(1, b"one", {b"k": b"1"})
    new = new_log(pg, shard_no, owner="node-b")
    new.claim(2, base=0)
    with pytest.raises(Fenced):
        old.append(2, b"two", {})
    with pytest.raises(Fenced):
        old.claim(1, base=0)                           # an older epoch claims nothing back
    new.claim(2, base=0)                               # its own epoch again: a no-op
    new.append(2, b"two", {})
    assert rows_of(pg, pg.primary, shard_no) == [(1, 1), (2, 2)]
    # a shard whose log is fenced stops, and says it is not the primary
    clock = Clock(demo.local_time(TODAY, 8, 30))
    p = Shard.open(str(tmp_path / "deposed"), clock=clock)
    try:
        p.record_log = old
        with pytest.raises(NotPrimary):
            p.run(cmd.venue("v2", "Another venue", 8 * 3600))
        with pytest.raises(ShardUnavailable):
            p.run(cmd.venue("v3", "Yet another", 8 * 3600))
    finally:
        p.close(snapshot=False)
    assert rows_of(pg, pg.primary, shard_no) == [(1, 1), (2, 2)]
    old.close()
    new.close()


def test_a_retried_batch_is_taken_once_and_another_writers_is_refused(pg, shard_no):
    log = new_log(pg, shard_no, epoch=7)
    log.append(1, b"batch", {b"a": None})
    log.append(1, b"batch", {b"a": None})              # the answer was lost: sent again
    with pytest.raises(Fenced):
        log.append(1, b"other", {})                     # another batch at that sequence
    assert rows_of(pg, pg.primary, shard_no) == [(1, 7)]
    assert log.last_seq() == 1
    assert [(s, e, j, r) for s, e, j, r in log.entries()] == [(1, 7, b"batch", {b"a": None})]
    with pytest.raises(Fenced):
        RecordLog(pg.dsn(), shard_no).append(2, b"x", {})   # no epoch claimed: nothing written
    log.close()


@pytest.mark.parametrize("stop", ["primary", "standby"])
def test_while_the_log_is_not_writable_a_batch_waits_and_is_then_written(pg, shard_no, stop, caplog):
    """The database's primary stopped (the append can't connect), or its synchronous
    standby stopped (the commit waits for it): the append returns only once the log is
    writable again, and the batch is then on both machines. An operator reads in the
    log that a batch waits (after slow_s) and when it got through; with the database's
    primary down, also when the log stopped being writable and when it was again."""
    log = new_log(pg, shard_no, epoch=1, retry_s=0.1, slow_s=0.5)
    log.append(1, b"before", {})
    done = threading.Event()
    (pg.stop_primary if stop == "primary" else pg.stop_standby)()
    try:
        t = threading.Thread(target=lambda: (log.append(2, b"during", {b"k": b"v"}), done.set()),
                             daemon=True)
        t.start()
        time.sleep(1.5)
        assert not done.is_set()                        # nothing acknowledged meanwhile
    finally:
        (pg.start_primary if stop == "primary" else pg.start_standby)()
    assert done.wait(60)
    assert rows_of(pg, pg.primary, shard_no) == [(1, 1), (2, 1)]
    said = [r.getMessage() for r in caplog.records if r.name == "turnstile.engine.recordlog"]
    if stop == "primary":
        assert any("not writable" in m for m in said) and any("writable again" in m for m in said)
    # either way, the batch that waits is named while it waits, and when it got through
    assert any("batch 2 has waited" in m for m in said) and any("batch 2 is in the log" in m for m in said)
    deadline = time.monotonic() + 30
    while rows_of(pg, pg.standby, shard_no) != [(1, 1), (2, 1)] and time.monotonic() < deadline:
        time.sleep(0.1)                                 # the standby replays what it received
    assert rows_of(pg, pg.standby, shard_no) == [(1, 1), (2, 1)]
    log.close()


def test_an_owner_whose_lease_may_lapse_writes_nothing(pg, shard_no, tmp_path):
    """Shard.fence (Ownership.check in a server) is asked before each batch is written:
    once it says the owner may be gone, the batch goes nowhere and the shard stops."""
    clock = Clock(demo.local_time(TODAY, 8, 30))
    p = Shard.open(str(tmp_path / "fenced"), clock=clock)
    log = new_log(pg, shard_no, epoch=1)
    owner = {"valid": True}

    def fence():
        if not owner["valid"]:
            raise NotPrimary("the lease may lapse")
    try:
        p.record_log, p.fence = log, fence
        p.run(cmd.venue("v1", "A venue", 8 * 3600))
        owner["valid"] = False
        with pytest.raises(NotPrimary):
            p.run(cmd.venue("v2", "Another venue", 8 * 3600))
        assert [seq for seq, _ in rows_of(pg, pg.primary, shard_no)] == [p.seq - 1]
    finally:
        log.close()
        p.close(snapshot=False)


def test_audit_records_the_primary_archives_are_archived_by_the_standby_too(pg, shard_no, tmp_path,
                                                                          monkeypatch):
    """The primary archives old audit records to files on its own machine and then prunes
    them from its rows, batch by batch, through the log. A standby applying those
    deletions first archives the same records into its own files, so after a failover its
    audit chain verifies whole (`turnstile audit verify`), none of it left on the dead
    machine only."""
    from turnstile.engine import audit
    monkeypatch.setattr(audit, "EVERY", 5)              # a checkpoint every 5 records
    clock = Clock(demo.local_time(TODAY, 8, 30))
    pdir, sdir = str(tmp_path / "primary"), str(tmp_path / "standby")
    seeded_copies(clock, pdir, sdir)
    p = Shard.open(pdir, clock=clock)
    p.record_log = new_log(pg, shard_no, epoch=1)
    s = Shard.open(sdir, clock=clock)

    def hold() -> None:                                 # an audited call, as the server makes
        c = cmd.hold("web", demo.VENUE, [HoldItem("adult", (SLOT,), 1)])
        c.audit = ("demo-ota", "/turnstile.v1.SalesService/Hold", "cd" * 32)
        p.run(c)
    try:
        for i in range(40):
            hold()
        written = p.archive_audit(keep=5, segment_records=10)
        assert written                                  # the primary archived some
        for i in range(3):                              # and prunes them as it writes
            hold()
        archived = written[-1].last
        gone = [seq for seq in range(1, archived + 1) if p.storage.get_row(f"audit/{seq:016x}".encode()) is None]
        assert gone, "the primary pruned nothing"
        reader = RecordLog(pg.dsn(), shard_no)
        assert apply_log(s, reader) > 0
        reader.close()
        assert s.seq == p.seq
        for seq in gone:                                # pruned on the standby too...
            assert s.storage.get_row(f"audit/{seq:016x}".encode()) is None
        ok, checked, bad = s.verify_audit()             # ...and its chain is whole
        assert ok and bad == 0 and checked >= p.audit_seq, (ok, checked, bad)
        assert os.listdir(os.path.join(sdir, "audit"))
    finally:
        p.record_log.close()
        p.close(snapshot=False)
        s.close(snapshot=False)


def test_a_primary_reopened_after_refused_commands_follows_its_successor_from_the_right_batch(
        pg, shard_no, tmp_path):
    """A refused command is a batch that writes nothing -- not to LMDB, not to the log --
    yet takes a number. A primary closed right after a few (writing its snapshot) and
    opened again as a standby holds the last batch the log has, no more: its successor
    writes its next batches under those numbers, and the old primary, following, applies
    every one of them -- the successor's sale is there, and the two hold the same state."""
    from turnstile.engine import TurnstileError
    from turnstile.engine.recordlog import promote
    clock = Clock(demo.local_time(TODAY, 8, 30))
    a_dir, b_dir = str(tmp_path / "a"), str(tmp_path / "b")
    seeded_copies(clock, a_dir, b_dir)
    a = Shard.open(a_dir, clock=clock)
    promote(a, new_log(pg, shard_no), 1)
    sell(a, order="a-1")
    for i in range(3):
        assert isinstance(a.run_many([cmd.release(f"h-none-{i}", "web")])[0], TurnstileError)
    a.record_log.close()
    a.close()                                           # with its snapshot
    b = Shard.open(b_dir, clock=clock)
    b_log = new_log(pg, shard_no)
    try:
        promote(b, b_log, 2)
        sold = sell(b, order="b-1")
        a = Shard.open(a_dir, clock=clock)
        try:
            reader = RecordLog(pg.dsn(), shard_no, lineage=a.lineage)
            apply_log(a, reader)
            reader.close()
            assert a.order_tickets("b-1", "web") == b.order_tickets("b-1", "web")
            assert [t.code for t in a.order_tickets("b-1", "web")[1]] == [t.code for t in sold.tickets]
            assert a.state.dump() == b.state.dump()
        finally:
            a.close(snapshot=False)
    finally:
        b_log.close()
        b.close(snapshot=False)


def test_a_node_the_log_cannot_bring_up_to_date_is_refused_before_it_applies_anything(
        pg, shard_no, tmp_path):
    """The log of record holds the batches after the one its first owner held when it
    claimed it, and nothing past its end. A copy of the shard older than that first owner's
    (it lacks batches the log never had) is refused with LogPruned; a copy that wrote
    batches of its own apart from the log (past the log's end) is refused with NotThisShard;
    each before it follows, claims or applies anything. A copy at the start follows."""
    from turnstile.engine.recordlog import Follower, LogPruned, NotThisShard, promote
    clock = Clock(demo.local_time(TODAY, 8, 30))
    dirs = {name: str(tmp_path / name) for name in ("primary", "older", "apart", "same")}
    Shard.open(dirs["primary"], clock=clock).close(snapshot=False)
    shutil.copytree(dirs["primary"], dirs["older"])     # before the venue was made
    p = Shard.open(dirs["primary"], clock=clock)
    p.run_many(demo.commands(TODAY))
    p.close(snapshot=False)
    shutil.copytree(dirs["primary"], dirs["apart"])
    shutil.copytree(dirs["primary"], dirs["same"])
    with Shard.open(dirs["apart"], clock=clock) as s:  # sold there, offline
        for i in range(4):
            sell(s, order=f"apart-{i}")
    p = Shard.open(dirs["primary"], clock=clock)
    log = new_log(pg, shard_no)
    try:
        promote(p, log, 1)
        sell(p, order="o-1")
        for name, refused in (("older", LogPruned), ("apart", NotThisShard)):
            s = Shard.open(dirs[name], clock=clock)
            seq, dump = s.seq, s.state.dump()
            try:
                follower = Follower(s, pg.dsn(), shard_no)    # as a standby starts
                t = threading.Thread(target=follower.run, daemon=True)
                t.start()
                t.join(30)
                follower.close()
                assert isinstance(follower.error, refused) and not follower.checked.is_set(), name
                node_log = RecordLog(pg.dsn(), shard_no, lineage=s.lineage)
                with pytest.raises(refused):
                    promote(s, node_log, 2)                 # as it takes the shard over
                node_log.close()
                assert (s.seq, s.state.dump()) == (seq, dump), name
            finally:
                s.close(snapshot=False)
        assert log.current_epoch() == 1                 # nobody claimed it from the primary
        with Shard.open(dirs["same"], clock=clock) as s:
            reader = RecordLog(pg.dsn(), shard_no, lineage=s.lineage)
            assert apply_log(s, reader) == 2            # the hold and the confirm of o-1
            reader.close()
            assert s.state.dump() == p.state.dump()
    finally:
        log.close()
        p.close(snapshot=False)
