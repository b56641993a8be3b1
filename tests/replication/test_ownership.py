"""Shard ownership in a real etcd (server/ownership.py, issue 18). The contract: one owner
at a time; every new owner gets a higher epoch; an owner that can't renew its lease
counts itself no longer the owner before etcd lets the lease lapse (so it stops
acknowledging first); once the lease has lapsed another takes the shard with a new epoch,
and with the log of record in PostgreSQL, the old owner -- stopped past its lease and
then resumed -- can write nothing."""
from __future__ import annotations

import asyncio
import time

import pytest

from turnstile.engine import NotPrimary
from turnstile.engine.recordlog import Fenced, RecordLog
from turnstile.server.ownership import Ownership


def run(coro):
    return asyncio.run(coro)


def test_one_owner_at_a_time_and_each_new_owner_a_higher_epoch(etcd, shard_no):
    async def go():
        a = Ownership(etcd.endpoint, shard_no, "node-a", ttl=3)
        b = Ownership(etcd.endpoint, shard_no, "node-b", ttl=3)
        try:
            assert await a.acquire() == 1
            assert a.valid() and await a.owner() == "node-a"
            a.check()
            assert await b.acquire(wait=False) is None           # taken
            waiting = asyncio.create_task(b.acquire())
            await asyncio.sleep(0.5)
            assert not waiting.done()
            await a.release()                                     # a steps down
            assert not a.valid()
            with pytest.raises(NotPrimary):
                a.check()
            assert await asyncio.wait_for(waiting, 10) == 2
            assert await b.owner() == "node-b" and await b.last_epoch() == 2
            await b.release()
            assert await a.acquire() == 3                         # epochs never go back
        finally:
            await a.close()
            await b.close()
    run(go())


def test_a_stalled_owner_stops_counting_itself_the_owner_before_its_lease_lapses(etcd, shard_no):
    async def go():
        a = Ownership(etcd.endpoint, shard_no, "node-a", ttl=3, margin_s=1.0)
        b = Ownership(etcd.endpoint, shard_no, "node-b", ttl=3)
        try:
            await a.acquire()
            await asyncio.sleep(1.5)
            assert a.valid()                                      # renewed meanwhile
            # stalled (as under SIGSTOP): no renewal goes out any more
            a._renewer.cancel()
            stalled = time.monotonic()
            taker = asyncio.create_task(b.acquire(poll_s=0.05))
            while a.valid():
                await asyncio.sleep(0.02)
            invalid_after = time.monotonic() - stalled
            assert not taker.done()                               # invalid before another owns it
            assert await asyncio.wait_for(taker, 15) == 2
            taken_after = time.monotonic() - stalled
            assert invalid_after < taken_after
            return invalid_after, taken_after
        finally:
            await a.close()
            await b.close()
    invalid_after, taken_after = run(go())
    assert invalid_after <= 3.0 and taken_after > invalid_after


def test_an_owner_stopped_past_its_lease_writes_nothing_when_it_resumes(etcd, pg, shard_no):
    """The primary's view: owner A (epoch 1) writes to the log; it stalls past its lease;
    B takes the shard (epoch 2) and claims the log; A resumes, still believing it owns the
    shard between two checks -- its write is refused by the log in the same transaction,
    and its next renewal tells it it is no longer the owner."""
    async def go():
        a = Ownership(etcd.endpoint, shard_no, "node-a", ttl=2, margin_s=0.5)
        b = Ownership(etcd.endpoint, shard_no, "node-b", ttl=2)
        log_a = RecordLog(pg.dsn(), shard_no, owner="node-a")
        log_b = RecordLog(pg.dsn(), shard_no, owner="node-b")
        try:
            log_a.ensure_schema()
            log_a.claim(await a.acquire(), base=0)
            a.check()
            log_a.append(1, b"by a", {})
            a._renewer.cancel()                                   # stalled
            epoch = await asyncio.wait_for(b.acquire(poll_s=0.05), 15)
            assert epoch == 2
            log_b.claim(epoch, base=0)
            log_b.append(2, b"by b", {})
            with pytest.raises(Fenced):                           # a write A had in flight
                log_a.append(2, b"by a again", {})
            with pytest.raises(NotPrimary):
                a.check()
            assert [(s, e) for s, e, _, _ in log_b.entries()] == [(1, 1), (2, 2)]
        finally:
            log_a.close()
            log_b.close()
            await a.close()
            await b.close()
    run(go())


def test_ownership_is_lost_when_etcd_is_gone(tmp_path, shard_no):
    from tests.services import Etcd
    e = Etcd(str(tmp_path / "etcd")).start()

    async def go():
        a = Ownership(e.endpoint, shard_no, "node-a", ttl=3, margin_s=1.0)
        try:
            await a.acquire()
            e.stop()                                              # etcd down: no renewal answers
            t = time.monotonic()
            while a.valid():
                await asyncio.sleep(0.05)
            return time.monotonic() - t
        finally:
            await a.close()
    try:
        assert run(go()) <= 3.0
    finally:
        e.stop()
