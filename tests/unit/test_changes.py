"""Changes (改签, issue 13 after-sale): unused tickets of an order moved to another slot or
day of the same product in one atomic step -- stock taken on the new slot and returned on
the old, old codes voided, new codes issued, the price difference and the change fee by
the rules -- idempotent like every mutating call. Expectations come from that contract and
the demo (adult 8000 fen on weekdays, 10000 on weekends; TODAY, tests/conftest.py, is
Monday 2026-11-23, 08:30 venue time)."""
from __future__ import annotations

import datetime as dt

import pytest

from turnstile.engine import (AlreadyExists, ChangeClosed, HoldItem, IdempotencyMismatch, InvalidArgument,
                              Reason, RefundTier, Shard, SlotClosed, SoldOut, TicketUsed, cmd, demo)
from turnstile.engine.errors import IdLimitExceeded

from tests.conftest import TODAY

V = demo.VENUE
MON_10 = demo.slot_id("main", TODAY, 10)
WED = TODAY + dt.timedelta(days=2)
SAT = TODAY + dt.timedelta(days=5)
WED_10, SAT_10 = demo.slot_id("main", WED, 10), demo.slot_id("main", SAT, 10)


def _sell(shard: Shard, qty: int, slot: str = MON_10, order: str = "o1", product: str = "adult",
          holders=None, coupon=None):
    h = shard.run(cmd.hold("web", V, [HoldItem(product, (slot,), qty)], coupon=coupon))
    return shard.run(cmd.confirm(h.hold_id, order, "web", method="cash", amount_fen=h.amount_fen,
                                 holders=holders))


def _stock(shard: Shard, slot: str) -> tuple[int, int]:
    day = dt.datetime.strptime(slot.split("-")[1], "%Y%m%d").date()
    s = next(s for s in shard.availability(V, day) if s.slot == slot)
    return s.sold, s.held


def test_tickets_move_to_another_day_in_one_step(shard, clock):
    sold = _sell(shard, 3)
    mon, wed = _stock(shard, MON_10), _stock(shard, WED_10)
    moved = [t.ticket_id for t in sold.tickets[:2]]
    terms = shard.change_terms("o1", "c1", [WED_10], moved, channel="web")
    assert (terms.unit_price_fen, terms.old_paid_fen, terms.fee_fen, terms.due_fen) == (8000, 16000, 0, 0)
    r = shard.run(cmd.change("o1", "c1", [WED_10], moved, channel="web"))
    assert r.terms == terms
    assert len(r.new_tickets) == 2 and all(t.code for t in r.new_tickets)
    assert _stock(shard, MON_10) == (mon[0] - 2, mon[1])          # returned on the old slot
    assert _stock(shard, WED_10) == (wed[0] + 2, wed[1])          # taken on the new
    # the old codes are refused at the gate, the third ticket still works today, the new
    # ones on Wednesday
    assert shard.run(cmd.verify(sold.tickets[0].code, "north-1")).reason == Reason.VOIDED
    clock.at(TODAY, 10, 5)
    assert shard.run(cmd.verify(sold.tickets[2].code, "north-1")).reason == Reason.OK
    assert shard.run(cmd.verify(r.new_tickets[0].code, "north-1")).reason == Reason.NOT_YET_VALID
    clock.at(WED, 10, 5)
    assert shard.run(cmd.verify(r.new_tickets[0].code, "north-1")).reason == Reason.OK
    order, tickets = shard.order_tickets("o1", "web")
    assert [c["change_id"] for c in order.changes] == ["c1"]
    assert [t.state for t in tickets] == ["voided", "voided", "used", "inside", "issued"]


def test_the_buyer_pays_the_difference_or_gets_it_back(shard):
    sold = _sell(shard, 2)
    ids = [t.ticket_id for t in sold.tickets]
    assert shard.change_terms("o1", "c1", [SAT_10], channel="web").due_fen == 2 * (10000 - 8000)
    with pytest.raises(InvalidArgument) as e:                      # the weekend costs more
        shard.run(cmd.change("o1", "c1", [SAT_10], channel="web"))
    assert e.value.field == "payment"
    with pytest.raises(InvalidArgument) as e:
        shard.run(cmd.change("o1", "c1", [SAT_10], channel="web", method="cash", amount_fen=3999))
    assert e.value.field == "payment.amount_fen"
    assert _stock(shard, SAT_10)[0] == 0                           # nothing changed
    r = shard.run(cmd.change("o1", "c1", [SAT_10], channel="web", method="wechat", amount_fen=4000,
                             reference="wx-1"))
    assert (r.terms.tickets, r.terms.due_fen) == (ids, 4000)
    # and back to a weekday: 4000 returned
    back = shard.change_terms("o1", "c2", [WED_10], channel="web")
    assert (back.old_paid_fen, back.new_amount_fen, back.due_fen) == (20000, 16000, -4000)
    r2 = shard.run(cmd.change("o1", "c2", [WED_10], channel="web"))
    assert r2.terms.due_fen == -4000
    # a refund gives back what the ticket is worth now
    t = r2.new_tickets[0].ticket_id
    assert shard.run(cmd.refund("o1", "r1", [t], channel="web")).amount_fen == 8000


def test_the_fee_follows_the_refund_policy_and_a_started_slot_is_closed(shard, clock):
    shard.run(cmd.refund_policy(V, "adult", [RefundTier(1440, 0), RefundTier(0, 10)]))
    _sell(shard, 2)                                                # Monday 10:00, now 08:30
    t = shard.change_terms("o1", "c1", [WED_10], channel="web")
    assert (t.fee_fen, t.due_fen) == (1600, 1600)                  # within 24 h: 10 %
    shard.run(cmd.change("o1", "c1", [WED_10], channel="web", method="cash", amount_fen=1600))
    _sell(shard, 1, order="o2")
    clock.at(TODAY, 10, 1)                                         # the slot started
    with pytest.raises(ChangeClosed):
        shard.run(cmd.change("o2", "c1", [WED_10], channel="web"))


def test_what_can_not_be_changed_is_refused_and_changes_nothing(shard, clock):
    sold = _sell(shard, 2)
    _sell(shard, 1, order="kid", product="child")
    clock.at(TODAY, 10, 5)
    shard.run(cmd.verify(sold.tickets[0].code, "north-1"))
    before = (_stock(shard, MON_10), _stock(shard, WED_10))
    with pytest.raises(TicketUsed):
        shard.run(cmd.change("o1", "c1", [WED_10], [sold.tickets[0].ticket_id], channel="web"))
    with pytest.raises(InvalidArgument) as e:
        shard.run(cmd.change("o1", "c1", [MON_10], channel="web"))
    assert e.value.field == "slots"
    with pytest.raises(InvalidArgument) as e:                      # another zone's slot
        shard.run(cmd.change("o1", "c1", [demo.slot_id("pagoda", WED, 10)], channel="web"))
    assert e.value.field == "slots[0]"
    with pytest.raises(SlotClosed):
        shard.run(cmd.change("o1", "c1", [demo.slot_id("main", TODAY, 8)], channel="web"))
    with pytest.raises(InvalidArgument) as e:
        shard.run(cmd.change("o1", "c1", [WED_10], [12345], channel="web"))
    assert e.value.field == "tickets[0]"
    with pytest.raises(Exception) as e:                            # another channel's order
        shard.run(cmd.change("o1", "c1", [WED_10], channel="ota"))
    assert e.value.field == "order_id"
    shard.run(cmd.slot_capacity(WED_10, _stock(shard, WED_10)[0], venue=V))     # sold out
    with pytest.raises(SoldOut):
        shard.run(cmd.change("o1", "c1", [WED_10], channel="web"))
    assert (_stock(shard, MON_10), _stock(shard, WED_10)) == before
    assert shard.order_tickets("o1", "web")[0].changes == []


def test_a_change_is_idempotent(shard):
    _sell(shard, 2)
    first = shard.run(cmd.change("o1", "c1", [WED_10], channel="web"))
    again = shard.run(cmd.change("o1", "c1", [WED_10], channel="web"))
    assert again == first                                          # same tickets and codes
    assert _stock(shard, WED_10)[0] == 2
    with pytest.raises(IdempotencyMismatch):
        shard.run(cmd.change("o1", "c1", [SAT_10], channel="web", method="cash", amount_fen=0))
    with pytest.raises(AlreadyExists):      # the order keeps the change id when retries are gone
        shard.change_terms("o1", "c1", [SAT_10], channel="web")


def test_real_name_holders_move_with_their_tickets_within_their_limits(shard):
    night_mon, night_wed = demo.slot_id("main", TODAY, 16), demo.slot_id("main", WED, 16)
    a, b = "110101199001011234", "110101199202022345"
    shard.run(cmd.id_limits(V, "night", per_day=1))
    _sell(shard, 2, slot=night_mon, product="night", holders=[[a, b]])
    _sell(shard, 1, slot=night_wed, product="night", holders=[[b]], order="o2")
    # the night ticket keeps a flat 10 % on refunds, so on changes too
    with pytest.raises(IdLimitExceeded):                           # b has Wednesday already
        shard.run(cmd.change("o1", "c1", [night_wed], channel="web", method="cash", amount_fen=2000))
    sold = shard.order_tickets("o1", "web")[1]
    r = shard.run(cmd.change("o1", "c1", [night_wed], [sold[0].ticket_id], channel="web",
                             method="cash", amount_fen=1000))
    assert [t.holder for t in r.new_tickets] == ["110***********1234"]
    assert shard.run(cmd.verify_holder(a, "north-1")).reason == Reason.NOT_YET_VALID   # Wednesday's
    # moving a ticket within its day does not count it twice
    r2 = shard.run(cmd.change("o1", "c2", [demo.slot_id("main", WED, 14)],
                              [r.new_tickets[0].ticket_id], channel="web", method="cash", amount_fen=1000))
    assert r2.new_tickets[0].holder == "110***********1234"


def test_a_coupon_order_changes_by_what_it_was_paid(shard):
    shard.run(cmd.coupon(V, "TAKE1000", "fixed", amount_fen=1000))
    _sell(shard, 2, coupon="TAKE1000")                              # paid 15000
    t = shard.change_terms("o1", "c1", [WED_10], channel="web")
    assert (t.old_paid_fen, t.new_amount_fen, t.due_fen) == (15000, 16000, 1000)


@pytest.mark.parametrize("snapshot", [False, True])
def test_a_change_survives_a_reopen(shard_path, clock, snapshot):
    shard = Shard.open(shard_path, clock=clock)
    shard.run_many(demo.commands(TODAY))
    _sell(shard, 3)
    r = shard.run(cmd.change("o1", "c1", [SAT_10], channel="web", method="cash", amount_fen=6000))
    want = (_stock(shard, MON_10), _stock(shard, SAT_10), shard.order_tickets("o1", "web"))
    shard.close(snapshot=snapshot)
    again = Shard.open(shard_path, clock=clock)
    try:
        assert (_stock(again, MON_10), _stock(again, SAT_10), again.order_tickets("o1", "web")) == want
        clock.at(SAT, 10, 5)
        assert again.run(cmd.verify(r.new_tickets[0].code, "north-1")).reason == Reason.OK
    finally:
        again.close(snapshot=False)
