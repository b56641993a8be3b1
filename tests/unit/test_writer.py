"""The group-commit writer (engine.writer): what callers see of batching and of a
failed commit. The shard is real (LMDB in a temp dir); the tests only hold a commit
back, or make one fail, at the storage call."""
from __future__ import annotations

import asyncio
import threading

import pytest

from turnstile.engine import cmd, demo, HoldItem, Shard, ShardUnavailable, StorageError
from tests.conftest import TODAY

SLOT = demo.slot_id("main", TODAY, 8)


def _hold(qty: int = 1):
    return cmd.hold("web", "westlake", [HoldItem("adult", (SLOT,), qty)])


def _held(shard: Shard) -> int:
    return next(r for r in shard.availability("westlake", TODAY) if r.slot == SLOT).held


def test_callers_arriving_during_a_commit_share_the_next_one(shard):
    """Ten holds that trickle in while the first one's commit is in flight are
    committed together, in one transaction, right after it: two fsyncs, not three or
    eleven (the eleventh caller waits for one commit after the first, not a queue)."""
    real_commit = shard.storage.commit
    release = threading.Event()
    commits: list[int] = []

    def slow_commit(seq, blob, rows):
        commits.append(seq)
        if len(commits) == 1:
            release.wait(5)                  # the first commit "fsyncs" until released
        return real_commit(seq, blob, rows)

    shard.storage.commit = slow_commit
    before = dict(shard.batch_sizes)

    async def go():
        async with shard.writer() as w:
            first = asyncio.ensure_future(w.submit(_hold()))
            while not commits:               # the first batch is committing
                await asyncio.sleep(0.001)
            rest = []
            for _ in range(10):              # they trickle in, one every 2 ms
                rest.append(asyncio.ensure_future(w.submit(_hold())))
                await asyncio.sleep(0.002)
            await asyncio.sleep(0.02)
            assert not first.done() and not any(r.done() for r in rest)   # nothing answered early
            release.set()
            return await first, await asyncio.gather(*rest)

    first, rest = asyncio.run(go())
    assert len({h.hold_id for h in [first, *rest]}) == 11
    assert len(commits) == 2
    new = {k: shard.batch_sizes[k] - before.get(k, 0) for k in shard.batch_sizes
           if shard.batch_sizes[k] != before.get(k, 0)}
    assert new == {1: 1, 10: 1}
    assert _held(shard) == 11


def test_a_failed_commit_answers_nothing_after_it(shard_path, clock):
    """The first commit fails: its caller gets the storage error, the callers whose
    commands were applied behind it are refused too, and none of it is on disk."""
    shard = Shard.open(shard_path, clock=clock)
    shard.run_many(demo.commands(TODAY))
    real_commit = shard.storage.commit
    entered = threading.Event()
    release = threading.Event()

    def failing_commit(seq, blob, rows):
        entered.set()
        release.wait(5)
        raise StorageError("disk gone")

    shard.storage.commit = failing_commit

    async def go():
        w = shard.writer()
        await w.start()
        first = asyncio.ensure_future(w.submit(_hold(2)))
        while not entered.is_set():
            await asyncio.sleep(0.001)
        behind = [asyncio.ensure_future(w.submit(_hold())) for _ in range(3)]
        await asyncio.sleep(0.02)
        release.set()
        out = await asyncio.gather(first, *behind, return_exceptions=True)
        await w.stop()
        return out

    out = asyncio.run(go())
    assert isinstance(out[0], StorageError)
    assert all(isinstance(e, (StorageError, ShardUnavailable)) for e in out[1:])
    assert shard.failed is not None
    with pytest.raises(ShardUnavailable):
        shard.run(_hold())
    shard.storage.commit = real_commit
    shard.close(snapshot=False)
    again = Shard.open(shard_path, clock=clock)
    try:
        assert _held(again) == 0             # nothing of the failed batches survived
        assert again.check() == []
    finally:
        again.close(snapshot=False)
