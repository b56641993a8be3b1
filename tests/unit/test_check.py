"""check() finds what is broken: each test breaks one invariant behind the engine's
back (as a bug or a bad disk would) and expects check() to name it."""
from __future__ import annotations

from turnstile.engine import cmd, demo, Shard
from tests.conftest import TODAY, sell

SLOT = demo.slot_id("main", TODAY, 8)


def names(shard, **kw):
    return {v.invariant for v in shard.check(**kw)}


def test_clean_shard_is_clean(shard):
    code = sell(shard, qty=3).tickets[0].code
    shard.run(cmd.verify(code, "north-1"))
    assert shard.check(replay=True) == []


def test_held_stock_without_a_hold(shard):
    shard.state.slots.take(shard.state.slot_idx[SLOT], -1, 5)
    assert "held = Σ active holds" in names(shard)


def test_sold_stock_without_tickets(shard):
    idx = shard.state.slot_idx[SLOT]
    shard.state.slots.take(idx, -1, 2)
    shard.state.slots.sell(idx, -1, 2)
    assert "sold = tickets issued - refunded" in names(shard)


def test_oversold_slot(shard):
    idx = shard.state.slot_idx[demo.slot_id("main", TODAY, 10)]
    shard.state.slots.set_capacity(idx, 0)
    shard.state.slots.release(idx, -1, -3)          # held goes to 3 over a capacity of 0
    assert "sold + held ≤ capacity" in names(shard)


def test_bitmap_disagreeing_with_records(shard):
    sell(shard, qty=2)
    shard.state.tickets.used.add(1)
    found = names(shard)
    assert "used bitmap = records" in found


def test_inside_not_used_and_head_count(shard):
    sell(shard, qty=2)
    shard.state.tickets.inside.add(0)
    found = names(shard)
    assert "inside ⊆ used" in found and "inside bitmap = records" in found


def test_memory_that_the_journal_does_not_explain(shard):
    sell(shard, qty=2)
    shard.state.tickets.set_blocked(0, True)        # not journaled
    assert "journal replay reproduces state" in names(shard, replay=True)


def test_reopen_of_clean_data_stays_clean(shard, shard_path, clock):
    sell(shard, qty=2)
    shard.close()
    s2 = Shard.open(shard_path, clock=clock)
    try:
        assert s2.check(replay=True) == []
    finally:
        s2.close()


def test_replay_check_with_live_holds_confirms_and_refunds(shard):
    from turnstile.engine import HoldItem
    shard.run(cmd.hold("ota", "westlake", [HoldItem("adult", (SLOT,), 3)]))
    shard.run(cmd.hold("web", "westlake", [HoldItem("adult", (SLOT,), 2)], idempotency_key="k"))
    sell(shard, qty=2, order="o-1")
    shard.run(cmd.refund("o-1", "r-1", channel="web"))
    assert shard.check(replay=True) == []
