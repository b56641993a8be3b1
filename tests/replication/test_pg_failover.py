"""A failover of the DATABASE under a replicated shard (issue 18): the PostgreSQL primary
that holds the log of record dies while sales go on, and its synchronous standby is
promoted. The shard and its standby hold one libpq string naming both database servers
with target_session_attrs=read-write (tests/services.py, PostgresPair.dsn_both). The
contract (engine/recordlog.py): an appended batch is on both database machines before it
is acknowledged; while the log is not writable an append waits, retried on a new
connection, so the shard acknowledges nothing meanwhile and loses nothing; a retry that
finds its batch written already (the commit happened, its answer was lost) takes it as
written; a Follower on such a string finds the new primary after a database failover.
So, with nothing restarted on the shard's side: sales go on once the standby is
promoted, every acknowledged batch is in the promoted database's log, and a standby shard
following that log and then promoted holds every acknowledged order and admission."""
from __future__ import annotations

import random
import shutil
import threading
import time

import pytest

from turnstile.engine import HoldItem, NotPrimary, Shard, cmd, demo
from turnstile.engine.recordlog import Follower, RecordLog, promote

from tests.conftest import TODAY, Clock
from tests.services import PostgresPair

SLOT = demo.slot_id("main", TODAY, 10)
SHARD = 1
PACE_S = 0.005          # between two operations of the seller


@pytest.fixture
def pair():
    """A PostgresPair of this test's own: the failover leaves it a lone promoted standby."""
    with PostgresPair() as p:
        yield p


class Seller:
    """Sells (hold + confirm) and scans sold tickets at the north gate, one operation after
    another in a thread of its own -- the only one touching the shard -- until `stop`.
    Each operation is acknowledged (returns: noted in `acks` with the time and the shard's
    sequence then) or raises (noted in `errors`; the seller stops)."""

    def __init__(self, shard: Shard, seed: int):
        self.shard = shard
        self.rng = random.Random(seed)
        self.sold: dict[str, list[str]] = {}         # acknowledged orders -> codes
        self.admitted: list[str] = []                 # codes an acknowledged scan let in
        self.acks: list[tuple[float, int]] = []       # (monotonic time, shard seq) per ack
        self.errors: list[BaseException] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self._n = 0

    def _one(self) -> None:
        p, rng = self.shard, self.rng
        unscanned = [c for codes in self.sold.values() for c in codes if c not in self.admitted]
        if unscanned and rng.random() < 0.3:
            code = rng.choice(unscanned)
            if p.run(cmd.verify(code, "north-1")).reason.name == "OK":
                self.admitted.append(code)
        else:
            self._n += 1
            order = f"o-{self._n}"
            h = p.run(cmd.hold("web", demo.VENUE, [HoldItem("adult", (SLOT,), rng.randint(1, 2))]))
            self.acks.append((time.monotonic(), p.seq))
            r = p.run(cmd.confirm(h.hold_id, order, "web", method="cash", amount_fen=h.amount_fen))
            self.sold[order] = [x.code for x in r.tickets]
        self.acks.append((time.monotonic(), p.seq))

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                self._one()
            except BaseException as e:  # noqa: BLE001 -- noted, asserted on by the test
                self.errors.append(e)
                return
            time.sleep(PACE_S)

    def wait_acks(self, n: int, timeout: float) -> float:
        """Until `n` operations are acknowledged in all; returns the seconds waited."""
        t0 = time.monotonic()
        while len(self.acks) < n and not self.errors and time.monotonic() - t0 < timeout:
            time.sleep(0.01)
        assert not self.errors, f"the seller failed: {self.errors!r}"
        assert len(self.acks) >= n, f"{len(self.acks)} operations acknowledged in {timeout} s, not {n}"
        return time.monotonic() - t0


def log_of(dsn: str) -> list[tuple[int, int, bytes]]:
    """(seq, epoch, journal) of every batch of the shard's log in the database `dsn`."""
    reader = RecordLog(dsn, SHARD)
    try:
        return [(seq, epoch, journal) for seq, epoch, journal, _rows in reader.entries(0)]
    finally:
        reader.close()


def test_the_log_of_record_survives_a_database_failover_under_sales(pair, tmp_path):
    t_start = time.monotonic()
    db = "failover"
    pair.create_database(db)
    both = pair.dsn_both(db)
    on_standby_node = pair.dsn(pair.standby, dbname=db)   # the database's standby, later its primary
    clock = Clock(demo.local_time(TODAY, 10, 5))
    pdir, sdir = str(tmp_path / "primary"), str(tmp_path / "standby")
    p = Shard.open(pdir, clock=clock)
    p.run_many(demo.commands(TODAY, 1, main_capacity=2000))
    p.close(snapshot=False)
    shutil.copytree(pdir, sdir)                  # the standby shard: a copy before any sale
    p = Shard.open(pdir, clock=clock)
    base_seq = p.seq
    log = RecordLog(both, SHARD, owner="primary")
    log.ensure_schema()
    log.claim(1, base=p.seq)
    p.record_log = log
    s = Shard.open(sdir, clock=clock)
    follower = Follower(s, both, SHARD, poll_s=0.2)
    following = threading.Thread(target=follower.run, daemon=True)
    following.start()
    seller = Seller(p, seed=18)
    new_log = RecordLog(both, SHARD, owner="standby")
    try:
        seller.thread.start()
        seller.wait_acks(40, timeout=20)

        # the database's primary machine dies under the sales
        pair.kill_primary()
        t_kill = time.monotonic()
        time.sleep(0.3)            # an append answered just before the kill is acknowledged now
        frozen = len(seller.acks)
        acked_seq = seller.acks[-1][1]
        # every acknowledged batch is on the standby machine already (synchronous commit):
        # read there, read-only, while it still replays what it received
        deadline = time.monotonic() + 10
        while (on_standby := log_of(on_standby_node))[-1][0] < acked_seq and time.monotonic() < deadline:
            time.sleep(0.05)
        assert on_standby[-1][0] >= acked_seq
        time.sleep(1.5)
        # no database takes writes: the shard waits and acknowledges nothing meanwhile
        assert not seller.errors, f"an operation failed while the database was down: {seller.errors!r}"
        assert len(seller.acks) == frozen
        assert seller.thread.is_alive() and following.is_alive()
        # the batch in flight at the kill: its commit got there, its answer did not?
        in_flight_on_standby = log_of(on_standby_node)[-1][0] > acked_seq

        # the standby is promoted; nothing on the shard's side is restarted or told
        pair.promote_standby()
        t_promoted = time.monotonic()
        seller.wait_acks(frozen + 1, timeout=20)
        first_after = seller.acks[frozen][0]
        seller.wait_acks(frozen + 40, timeout=20)
        seller.stop.set()
        seller.thread.join(20)
        assert not seller.thread.is_alive() and not seller.errors
        assert seller.sold and seller.admitted

        # every acknowledged batch is in the promoted database's log, as the shard wrote it
        recorded = log_of(on_standby_node)
        assert recorded[-1][0] == p.seq
        assert [seq for seq, _, _ in recorded] == sorted({seq for seq, _, _ in recorded})
        assert {e for _, e, _ in recorded} == {1}
        assert {seq: j for seq, _, j in recorded if j} == dict(p.storage.journal_after(base_seq))
        assert {seq for _, seq in seller.acks} <= {seq for seq, _, _ in recorded}

        # the standby shard, following the same string all along, caught up on the new
        # database primary by itself
        deadline = time.monotonic() + 15
        while s.seq < p.seq and time.monotonic() < deadline:
            time.sleep(0.02)
        assert s.seq == p.seq
        follower.stop.set()
        following.join(10)
        assert not following.is_alive()
        assert follower.error is None

        # the shard's primary goes; its standby takes over with the next epoch
        sold_count = sum(len(c) for c in seller.sold.values())
        p.close(snapshot=False)
        assert promote(s, new_log, 2) == 0       # it had everything already
        for order, codes in seller.sold.items():
            assert [x.code for x in s.order_tickets(order, "web")[1]] == codes
        assert sum(c.sold for c in s.availability(demo.VENUE, TODAY, TODAY) if c.slot == SLOT) == sold_count
        for code in seller.admitted:             # no ticket admitted twice
            assert s.run(cmd.verify(code, "north-1")).reason.name == "ALREADY_USED"
        fresh = next(c for codes in seller.sold.values() for c in codes if c not in seller.admitted)
        assert s.run(cmd.verify(fresh, "north-1")).reason.name == "OK"
        assert s.run(cmd.verify(fresh, "north-1")).reason.name == "ALREADY_USED"
        h = s.run(cmd.hold("web", demo.VENUE, [HoldItem("adult", (SLOT,), 1)]))
        s.run(cmd.confirm(h.hold_id, "after", "web", method="cash", amount_fen=h.amount_fen))
        assert s.check(replay=True) == []
        assert s.verify_audit()[0]
        after = log_of(on_standby_node)
        assert after[:len(recorded)] == recorded and after[-1][:2] == (s.seq, 2)
        # the deposed shard primary, back on its old epoch, writes nothing
        p = Shard.open(pdir, clock=clock)
        p.record_log = log
        with pytest.raises(NotPrimary):
            p.run(cmd.venue("v2", "Another", 8 * 3600))
        p.close(snapshot=False)
        assert log_of(on_standby_node) == after
    finally:
        seller.stop.set()
        follower.stop.set()
        log.close()                               # an append still retrying gives up (Fenced)
        new_log.close()
        follower.close()
        seller.thread.join(10)
        following.join(10)
        for shard in (p, s):
            if not shard.closed:
                shard.close(snapshot=False)
    print(f"\nfailover: {frozen} operations acknowledged before the kill; none in the "
          f"{t_promoted - t_kill:.2f} s until the promotion; the first one {first_after - t_promoted:.2f} s "
          f"after it ({first_after - t_kill:.2f} s after the kill); the batch in flight at the kill was "
          f"{'already' if in_flight_on_standby else 'not'} on the standby; "
          f"{len(seller.sold)} orders, {len(seller.admitted)} admissions; "
          f"test body {time.monotonic() - t_start:.1f} s")
