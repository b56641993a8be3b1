"""A shard whose LMDB map fills (issue 12): it warns at 80 % (log), then refuses every
batch whole with StorageFull -- RESOURCE_EXHAUSTED "storage full" at the API -- before
LMDB itself fails, never half-applied; queries go on, and a larger map size (a restart
with --map-size-mib) lets writes go on with everything acknowledged before intact. The
same map size again stays full: the file's high-water mark is what counts."""
from __future__ import annotations

import logging

import pytest

from turnstile.engine import HoldItem, Shard, StorageFull, cmd, demo

from tests.conftest import TODAY

SLOT = demo.day_slot_id(TODAY)
SMALL = 16 << 20


def _held(shard: Shard) -> int:
    return next(s for s in shard.availability(demo.VENUE, TODAY) if s.slot == SLOT).held


def _holds(n: int, start: int) -> list:
    return [cmd.hold("web", demo.VENUE, [HoldItem("adult", (SLOT,), 1)], ttl_s=86400,
                     idempotency_key=f"h-{start + i:08d}-" + "x" * 100) for i in range(n)]


def test_a_full_map_refuses_whole_batches_and_a_larger_one_goes_on(shard_path, clock, caplog):
    caplog.set_level(logging.WARNING, logger="turnstile.engine.shard")
    shard = Shard.open(shard_path, clock=clock, map_size=SMALL, durable=False)
    shard.run_many(demo.commands(TODAY, days=1, main_capacity=1_000_000))
    done, refused = 0, None
    try:
        while refused is None and done < 200_000:
            results = shard.run_many(_holds(500, done))
            ok = [r for r in results if not isinstance(r, BaseException)]
            if len(ok) != len(results):
                # a batch is refused whole or applied whole
                assert not ok and all(isinstance(r, StorageFull) for r in results), results[:3]
                refused = results[0]
                break
            done += len(ok)
        assert refused is not None and refused.code == "STORAGE_FULL"
        assert done > 5000, done                               # the map held a season of holds first
        assert "of the LMDB map in use" in caplog.text          # warned before it was full
        assert "storage full" in caplog.text
        assert _held(shard) == done                             # nothing of the refused batch
        assert shard.failed is None
        assert shard.summary().holds == done                    # queries go on
        with pytest.raises(StorageFull):
            shard.run(_holds(1, done)[0])
    finally:
        shard.close(snapshot=False)
    same = Shard.open(shard_path, clock=clock, map_size=SMALL, durable=False)
    try:
        assert same.storage_full
        with pytest.raises(StorageFull):
            same.run(_holds(1, done)[0])
    finally:
        same.close(snapshot=False)
    bigger = Shard.open(shard_path, clock=clock, map_size=4 * SMALL, durable=False)
    try:
        assert _held(bigger) == done                            # every acknowledged hold
        assert not bigger.storage_full
        bigger.run_many(_holds(10, done))
        assert _held(bigger) == done + 10
        assert bigger.check() == []
    finally:
        bigger.close(snapshot=False)
