"""Refund policies (issue 13, 退改签): tiers by time before the ticket's slot starts --
free until 24 h before, a fee until it starts, nothing after -- decided when the refund
is made; the fee and the amount are in the answer, the order and the journal. Without
a policy a product keeps its flat refund fee at any time. Unused tickets only."""
from __future__ import annotations

import datetime as dt
import json

import pytest

from turnstile.engine import (InvalidArgument, RefundClosed, RefundTier, Shard, TicketUsed, cmd,
                              demo)
from turnstile.engine.journal import Record, records

from tests.conftest import TODAY, sell

SLOT10 = (demo.slot_id("main", TODAY, 10),)     # starts at 10:00; the clock starts at 08:30


def _policy(shard: Shard) -> None:
    shard.run(cmd.refund_policy(demo.VENUE, "adult", [RefundTier(1440, 0), RefundTier(0, 10)]))


def test_the_tier_is_decided_by_the_time_left_before_the_slot(shard, clock):
    _policy(shard)
    early = sell(shard, "adult", (demo.slot_id("main", TODAY + dt.timedelta(days=2), 10),), qty=1)
    r = shard.run(cmd.refund(early.order.order_id, "r1", channel="web"))
    assert (r.amount_fen, r.fee_fen) == (8000, 0)                  # more than 24 h ahead: free
    late = sell(shard, "adult", SLOT10, qty=2)
    r = shard.run(cmd.refund(late.order.order_id, "r1", [late.tickets[0].ticket_id], channel="web"))
    assert (r.amount_fen, r.fee_fen) == (7200, 800)                # 90 minutes before: 10 %
    clock.at(TODAY, 10, 1)
    with pytest.raises(RefundClosed):                              # after the start: nothing
        shard.run(cmd.refund(late.order.order_id, "r2", channel="web"))
    assert shard.get_order(late.order.order_id, "web").refunded_fen == 7200
    # the journal carries what was decided
    batches = [b for _, b in shard.storage.journal_after(0)]
    refunds = [json.loads(bytes(p)) for b in batches for k, p in records(b) if k == Record.REFUND]
    assert [(x["amount_fen"], x["fee_fen"]) for x in refunds] == [(8000, 0), (7200, 800)]


def test_without_a_policy_the_flat_fee_applies_at_any_time(shard, clock):
    sold = sell(shard, "adult", SLOT10, qty=1)
    clock.at(TODAY, 11, 0)
    r = shard.run(cmd.refund(sold.order.order_id, "r1", channel="web"))
    p = shard.catalog(demo.VENUE).products
    fee_pct = next(x for x in p if x.id == "adult").refund_fee_pct
    assert r.fee_fen == (8000 * fee_pct + 50) // 100 and r.amount_fen == 8000 - r.fee_fen


def test_used_tickets_are_never_refunded(shard):
    _policy(shard)
    sold = sell(shard, "adult", (demo.day_slot_id(TODAY),), qty=1)
    shard.run(cmd.verify(sold.tickets[0].code, "north-1"))
    with pytest.raises(TicketUsed):
        shard.run(cmd.refund(sold.order.order_id, "r1", channel="web"))


def test_bad_policies_change_nothing_and_a_policy_survives_a_reopen(shard_path, clock):
    shard = Shard.open(shard_path, clock=clock)
    shard.run_many(demo.commands(TODAY))
    _policy(shard)
    want = shard.refund_policy(demo.VENUE, "adult")
    assert [(t.before_minutes, t.fee_pct) for t in want.tiers] == [(1440, 0), (0, 10)]
    for tiers, field in (([{"before_minutes": 60, "fee_pct": 101}], "tiers[0].fee_pct"),
                         ([{"before_minutes": 60}], "tiers[0].fee_pct"),
                         ([{"before_minutes": 60, "fee_pct": 5}, {"before_minutes": 60, "fee_pct": 9}],
                          "tiers")):
        with pytest.raises(InvalidArgument) as e:
            shard.run(cmd.refund_policy(demo.VENUE, "adult", tiers))
        assert e.value.field == field
    assert shard.refund_policy(demo.VENUE, "adult") == want
    shard.close(snapshot=True)
    again = Shard.open(shard_path, clock=clock)
    try:
        assert again.refund_policy(demo.VENUE, "adult") == want
        again.run(cmd.refund_policy(demo.VENUE, "adult", []))
        assert again.refund_policy(demo.VENUE, "adult").tiers == []
    finally:
        again.close(snapshot=False)
