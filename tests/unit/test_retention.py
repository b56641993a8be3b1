"""Bounded on disk (issue 12, DESIGN.md 4.2): rows kept only to answer retries -- a gate's
scan ids and batch ids, idempotency keys, offline nonces, what became of an ended hold --
answer retries for at least the retry window and are pruned after it, by the writer, a
slice per batch; a scan adds no audit record (its journal record is the record of entry),
while sales and administrative changes still do."""
from __future__ import annotations

import asyncio
import json

from turnstile.engine import Reason, Shard, cmd, demo
from turnstile.engine.state import retry

from tests.conftest import TODAY, sell

WINDOW = 300
GATE = "north-1"
DAY = (demo.day_slot_id(TODAY),)    # the whole-day slot: every window of a test fits in it


def _open(path, clock, **kw) -> Shard:
    return Shard.open(path, clock=clock, retry_window_s=WINDOW, **kw)


def _retry_rows(shard: Shard) -> int:
    n = sum(1 for _ in shard.storage.rows_with_prefix(retry.RETRY))
    return n + sum(1 for p in retry.LEGACY for _ in shard.storage.rows_with_prefix(p))


def _scan(shard: Shard, code: str, scan_id: str, direction=1):
    return shard.run(cmd.verify(code, GATE if direction == 1 else "south-exit", direction,
                                scan_id=scan_id))


def test_a_scan_id_answers_its_retry_for_the_whole_window_then_is_forgotten(shard_path, clock):
    shard = _open(shard_path, clock)
    try:
        shard.run_many(demo.commands(TODAY))
        code = sell(shard, "adult", DAY).tickets[0].code
        assert _scan(shard, code, "s-1").reason == Reason.OK
        # other traffic opens newer buckets meanwhile (a window after the first)
        clock.t += WINDOW - 1
        other = sell(shard, "adult", DAY).tickets[0].code
        assert _scan(shard, other, "s-2").reason == Reason.OK
        # a retry of s-1 just inside its window: the first answer, not ALREADY_USED
        assert _scan(shard, code, "s-1").reason == Reason.OK
        clock.t += WINDOW + 2
        sell(shard, "adult", DAY)            # a second bucket opens; s-1's is still read
        assert _scan(shard, code, "s-1").reason == Reason.OK
        clock.t += WINDOW
        sell(shard, "adult", DAY)            # a third: s-1's bucket is no longer read
        assert _scan(shard, code, "s-1").reason == Reason.ALREADY_USED
    finally:
        shard.close(snapshot=False)


def test_pruning_keeps_the_retry_rows_flat_over_many_windows(shard_path, clock):
    """A season compressed: every window the same traffic. The rows kept stop growing
    after two windows, and every batch deletes at most a slice."""
    shard = _open(shard_path, clock)
    kept = []
    try:
        shard.run_many(demo.commands(TODAY, days=1, main_capacity=100_000))
        for window in range(8):
            codes = [t.code for t in sell(shard, "adult", DAY, qty=40).tickets]
            for i, code in enumerate(codes):
                before = shard.pruned
                _scan(shard, code, f"w{window}-{i}")
                _scan(shard, code, f"w{window}-{i}-out", direction=2)
                assert shard.pruned - before <= retry.PRUNE_SLICE
            kept.append(_retry_rows(shard))
            clock.t += WINDOW
        for _ in range(5):                   # slices go on with the traffic
            sell(shard, "adult", DAY)
        assert shard.pruned > 0
        assert max(kept[3:]) <= 2 * max(kept[:2]) + 10, kept      # flat, not growing
        assert kept[-1] < 3 * 82, kept       # three windows of 82 rows at most
        assert shard.check() == []
    finally:
        shard.close(snapshot=False)
    again = _open(shard_path, clock)         # the buckets are found again on open
    try:
        assert len(again.state.retry_buckets) <= 3
    finally:
        again.close(snapshot=False)


def test_an_idempotency_key_and_an_ended_hold_are_kept_for_the_window(shard_path, clock):
    shard = _open(shard_path, clock)
    try:
        shard.run_many(demo.commands(TODAY))
        slot = DAY[0]
        h = shard.run(cmd.hold("web", demo.VENUE, [cmd.HoldItem("adult", (slot,), 1)],
                               idempotency_key="k1"))
        again = shard.run(cmd.hold("web", demo.VENUE, [cmd.HoldItem("adult", (slot,), 1)],
                                   idempotency_key="k1"))
        assert again.hold_id == h.hold_id
        shard.run(cmd.release(h.hold_id, "web"))
        clock.t += WINDOW - 1
        assert shard.hold_info(h.hold_id).status == "released"
        clock.t += 3 * WINDOW
        for _ in range(3):
            sell(shard, "adult", DAY)
            clock.t += WINDOW
        # past the window: a new hold under the old key, and the ended hold is gone
        third = shard.run(cmd.hold("web", demo.VENUE, [cmd.HoldItem("adult", (slot,), 1)],
                                   idempotency_key="k1"))
        assert third.hold_id != h.hold_id
    finally:
        shard.close(snapshot=False)


def test_rows_from_before_buckets_are_read_then_pruned(shard_path, clock):
    """A data dir written before buckets keeps its retry rows at the top level
    (`offline/<venue>\\0<gate>\\0<scan id>`): a retry still finds them, and they are
    pruned like the oldest bucket."""
    shard = _open(shard_path, clock)
    shard.run_many(demo.commands(TODAY))
    code = sell(shard, "adult", DAY).tickets[0].code
    first = shard.run(cmd.verify(code, GATE))
    legacy = f"offline/{demo.VENUE}\0{GATE}\0old-1".encode()
    shard.storage.commit(shard.seq, None, {legacy: json.dumps({
        "nonce": "old-1", "status": "APPLIED", "reason": int(first.reason),
        "ticket_id": first.ticket, "persons": first.persons}).encode()})
    shard.close(snapshot=False)
    shard = _open(shard_path, clock)
    try:
        assert shard.state.retry_buckets[0] == -1         # the rows from before, oldest
        assert _scan(shard, code, "old-1").reason == Reason.OK     # the old answer
        for _ in range(3):
            clock.t += WINDOW
            sell(shard, "adult", DAY)
        sell(shard, "adult", DAY)
        assert shard.storage.get_row(legacy) is None
        assert _scan(shard, code, "old-1").reason == Reason.ALREADY_USED
    finally:
        shard.close(snapshot=False)


def test_a_scan_adds_no_audit_record_but_a_sale_does(shard_path, clock):
    shard = _open(shard_path, clock)
    try:
        shard.run_many(demo.commands(TODAY))
        code = sell(shard, "adult", DAY).tickets[0].code
        who = ("demo-gate", "/turnstile.v1.GateService/Verify", "d" * 64)
        before = shard.audit_seq
        c = cmd.verify(code, GATE, scan_id="s-9")
        c.audit = who
        assert shard.run(c).reason == Reason.OK
        b = cmd.verify_batch([code], GATE, batch_id="b-1")
        b.audit = who
        shard.run(b)
        assert shard.audit_seq == before
        h = cmd.hold("web", demo.VENUE, [cmd.HoldItem("adult", DAY, 1)])
        h.audit = ("demo-ota", "/turnstile.v1.SalesService/Hold", "e" * 64)
        shard.run(h)
        assert shard.audit_seq == before + 1
        assert shard.audit_records(before)[0].method == "/turnstile.v1.SalesService/Hold"
    finally:
        shard.close(snapshot=False)


def test_pruning_runs_in_the_group_commit_writer(shard_path, clock):
    """Through the asyncio writer, as a server runs it: retries within the window get
    their first answers while older buckets are pruned by slices."""
    shard = _open(shard_path, clock)
    shard.run_many(demo.commands(TODAY, days=1, main_capacity=100_000))
    codes = [t.code for t in sell(shard, "adult", DAY, qty=300).tickets]

    async def go():
        async with shard.writer() as w:
            for window in range(4):
                got = await asyncio.gather(*(w.submit(cmd.verify(c, GATE if window % 2 == 0 else "south-exit",
                                                                 1 if window % 2 == 0 else 2,
                                                                 scan_id=f"{window}-{i}"))
                                             for i, c in enumerate(codes)))
                again = await asyncio.gather(*(w.submit(cmd.verify(c, GATE if window % 2 == 0 else "south-exit",
                                                                   1 if window % 2 == 0 else 2,
                                                                   scan_id=f"{window}-{i}"))
                                               for i, c in enumerate(codes)))
                assert [r.reason for r in again] == [r.reason for r in got]
                clock.t += WINDOW

    try:
        asyncio.run(go())
        assert shard.pruned >= 300
        assert _retry_rows(shard) <= 3 * 300
    finally:
        shard.close(snapshot=False)
