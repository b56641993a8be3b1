"""A standby follows the log of record and takes over (issue 18), in one process, with a
real PostgreSQL primary and synchronous standby. The contract (engine/recordlog.py:
Follower, promote): a standby applies each batch of the log as it arrives (woken by its
NOTIFY); promoted with a new epoch it has every batch the primary acknowledged, and
decides on from there -- no acknowledged sale lost, no ticket sold past its stock, no
admitted ticket admitted again -- while the deposed primary can write nothing.

(The process-level test -- kill -9 of a serving primary under load, failover through
etcd within 30 s -- comes with `turnstile serve` in replicated mode.)"""
from __future__ import annotations

import random
import shutil
import threading
import time

import pytest

from turnstile.engine import HoldItem, NotPrimary, Shard, SoldOut, cmd, demo
from turnstile.engine.recordlog import Follower, RecordLog, promote

from tests.conftest import TODAY, Clock

SLOT = demo.slot_id("main", TODAY, 10)
CAPACITY = 40


def test_the_standby_follows_and_takes_over_with_every_acknowledged_write(pg, shard_no, tmp_path):
    clock = Clock(demo.local_time(TODAY, 10, 5))
    pdir, sdir = str(tmp_path / "primary"), str(tmp_path / "standby")
    p = Shard.open(pdir, clock=clock)
    p.run_many(demo.commands(TODAY, 1, main_capacity=CAPACITY))
    p.close(snapshot=False)
    shutil.copytree(pdir, sdir)                  # the standby starts from a copy, then the log
    p = Shard.open(pdir, clock=clock)
    log = RecordLog(pg.dsn(), shard_no, owner="primary")
    log.ensure_schema()
    log.claim(1, base=p.seq)
    p.record_log = log
    s = Shard.open(sdir, clock=clock)
    follower = Follower(s, pg.dsn(), shard_no, poll_s=0.5)
    t = threading.Thread(target=follower.run, daemon=True)
    t.start()
    rng = random.Random(18)
    sold: dict[str, list[str]] = {}              # acknowledged orders -> codes
    admitted: list[str] = []                     # codes an acknowledged scan let in
    waits = []
    try:
        for i in range(60):
            if rng.random() < 0.6:
                try:
                    h = p.run(cmd.hold("web", demo.VENUE, [HoldItem("adult", (SLOT,), rng.randint(1, 3))]))
                except SoldOut:
                    continue
                r = p.run(cmd.confirm(h.hold_id, f"o-{i}", "web", method="cash", amount_fen=h.amount_fen))
                sold[f"o-{i}"] = [x.code for x in r.tickets]
            elif sold:
                code = rng.choice([c for codes in sold.values() for c in codes])
                if p.run(cmd.verify(code, "north-1")).reason.name == "OK":
                    admitted.append(code)
            # the standby catches up with each acknowledged batch, woken by its NOTIFY
            t0 = time.monotonic()
            while s.seq < p.seq and time.monotonic() - t0 < 10:
                time.sleep(0.002)
            waits.append(time.monotonic() - t0)
            assert s.seq == p.seq
    finally:
        follower.stop.set()
        t.join(10)
    assert not t.is_alive() and sold and admitted
    # the primary is gone; the standby takes over with the next epoch
    p.close(snapshot=False)
    new_log = RecordLog(pg.dsn(), shard_no, owner="standby")
    assert promote(s, new_log, 2) == 0           # it had everything already
    try:
        for order, codes in sold.items():
            assert [x.code for x in s.order_tickets(order, "web")[1]] == codes
        for code in admitted:
            assert s.run(cmd.verify(code, "north-1")).reason.name == "ALREADY_USED"
        # it decides on: the slot sells up to its stock and no further
        while True:
            try:
                h = s.run(cmd.hold("web", demo.VENUE, [HoldItem("adult", (SLOT,), 1)]))
            except SoldOut:
                break
            s.run(cmd.confirm(h.hold_id, f"after-{h.hold_id}", "web", method="cash", amount_fen=h.amount_fen))
        assert sum(c.sold for c in s.availability(demo.VENUE, TODAY, TODAY) if c.slot == SLOT) == CAPACITY
        assert s.check(replay=True) == []
        assert s.verify_audit()[0]
        # the deposed primary, back, writes nothing
        p = Shard.open(pdir, clock=clock)
        p.record_log = log
        with pytest.raises(NotPrimary):
            p.run(cmd.venue("v2", "Another", 8 * 3600))
        p.close(snapshot=False)
    finally:
        new_log.close()
        log.close()
        follower.close()
        s.close(snapshot=False)
    waits.sort()
    print(f"standby caught up after each batch in median {waits[len(waits) // 2] * 1000:.1f} ms, "
          f"max {waits[-1] * 1000:.1f} ms")
