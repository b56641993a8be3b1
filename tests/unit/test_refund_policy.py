"""Refund policies (issue 13, 退改签): tiers by time before the ticket's slot starts --
free until 24 h before, a fee until it starts, nothing after -- decided when the refund
is made; the fee and the amount are in the answer, the order and the journal. Without
a policy a product keeps its flat refund fee at any time. Unused tickets only."""
from __future__ import annotations

import datetime as dt
import json

import pytest

from turnstile.engine import (HoldItem, InvalidArgument, Reason, RefundClosed, RefundTier, Shard, TicketUsed, cmd,
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


def test_a_group_ticket_is_refunded_in_part_and_admits_the_rest(shard, clock):
    """Partial refunds of a group ticket (fewer persons): the persons refunded get their
    share back (the fee by the policy), their stock returns, and the ticket admits the
    rest; the last persons get what is left, to the fen."""
    slot = demo.slot_id("main", TODAY, 10)
    h = shard.run(cmd.hold("agency", demo.VENUE, [HoldItem("group", (slot,), 1, 7)]))
    sold = shard.run(cmd.confirm(h.hold_id, "g1", "agency", method="cash", amount_fen=h.amount_fen))
    t = sold.tickets[0].ticket_id
    assert h.amount_fen == 7 * 6000
    sold_before = next(s for s in shard.availability(demo.VENUE, TODAY) if s.slot == slot).sold
    r = shard.run(cmd.refund("g1", "r1", [t], channel="agency", persons=2))
    assert (r.amount_fen, r.fee_fen, r.persons) == (12000, 0, 2)
    assert next(s for s in shard.availability(demo.VENUE, TODAY) if s.slot == slot).sold == sold_before - 2
    for persons, field in ((5, "persons"), (9, "persons")):
        with pytest.raises(InvalidArgument) as e:
            shard.run(cmd.refund("g1", f"bad{persons}", [t], channel="agency", persons=persons))
        assert e.value.field == field
    with pytest.raises(InvalidArgument) as e:
        shard.run(cmd.refund("g1", "bad", [], channel="agency", persons=1))
    assert e.value.field == "tickets"
    r2 = shard.run(cmd.refund("g1", "r2", [t], channel="agency", persons=4))
    assert r2.amount_fen == 24000
    clock.at(TODAY, 10, 5)
    scan = shard.run(cmd.verify(sold.tickets[0].code, "north-1"))
    assert (scan.reason, scan.persons) == (Reason.OK, 1)                  # one person left
    with pytest.raises(TicketUsed):
        shard.run(cmd.refund("g1", "r3", [t], channel="agency"))
    order = shard.get_order("g1", "agency")
    assert order.refunded_fen == 36000 and [r.get("persons") for r in order.refunds] == [2, 4]


@pytest.mark.parametrize("snapshot", [False, True])
def test_a_group_refunded_in_part_stays_so_after_a_reopen(shard_path, clock, snapshot):
    shard = Shard.open(shard_path, clock=clock)
    shard.run_many(demo.commands(TODAY))
    slot = demo.slot_id("main", TODAY, 10)
    h = shard.run(cmd.hold("agency", demo.VENUE, [HoldItem("group", (slot,), 1, 5)]))
    sold = shard.run(cmd.confirm(h.hold_id, "g1", "agency", method="cash", amount_fen=h.amount_fen))
    shard.run(cmd.refund("g1", "r1", [sold.tickets[0].ticket_id], channel="agency", persons=3))
    shard.close(snapshot=snapshot)
    again = Shard.open(shard_path, clock=clock)
    try:
        clock.at(TODAY, 10, 5)
        scan = again.run(cmd.verify(sold.tickets[0].code, "north-1"))
        assert (scan.reason, scan.persons) == (Reason.OK, 2)
        assert next(s for s in again.availability(demo.VENUE, TODAY) if s.slot == slot).sold == 2
    finally:
        again.close(snapshot=False)
