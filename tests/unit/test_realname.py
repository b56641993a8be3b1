"""Real-name limits and the person blacklist (issue 13, 实名制 against 黄牛): a real-name
product may allow one ID number only so many tickets a day and a slot, across channels,
checked at Confirm where the ID numbers are given; a person on a venue's blacklist can't
buy, and their tickets are blocked at once (the gate answers BLOCKED)."""
from __future__ import annotations

import datetime as dt

import pytest

from turnstile.engine import HoldItem, Reason, Shard, cmd, demo
from turnstile.engine.errors import AlreadyExists, Blacklisted, IdLimitExceeded, InvalidArgument, NotFound

from tests.conftest import TODAY

A, B = "110101199001011234", "110101199202022345"
S8, S10 = demo.slot_id("main", TODAY, 8), demo.slot_id("main", TODAY, 10)
TOMORROW8 = demo.slot_id("main", TODAY + dt.timedelta(days=1), 8)


def _buy(shard: Shard, slot: str, ids: list[str], channel: str = "web", order: str | None = None):
    h = shard.run(cmd.hold(channel, demo.VENUE, [HoldItem("night", (slot,), len(ids))]))
    return shard.run(cmd.confirm(h.hold_id, order or f"o-{h.hold_id}", channel, method="cash",
                                 amount_fen=h.amount_fen, holders=[ids]))


def _try(shard: Shard, slot: str, ids: list[str], channel: str = "web"):
    """A confirm that must be refused: the error, with the hold still active and no
    ticket issued."""
    h = shard.run(cmd.hold(channel, demo.VENUE, [HoldItem("night", (slot,), len(ids))]))
    issued = shard.summary().issued
    with pytest.raises(Exception) as e:
        shard.run(cmd.confirm(h.hold_id, f"o-{h.hold_id}", channel, method="cash",
                              amount_fen=h.amount_fen, holders=[ids]))
    assert shard.hold_info(h.hold_id).status == "active"
    assert shard.summary().issued == issued
    shard.run(cmd.release(h.hold_id, channel))
    return e.value


def test_one_id_number_holds_at_most_its_limits_across_channels(shard):
    shard.run(cmd.id_limits(demo.VENUE, "night", per_day=2, per_slot=1))
    first = _buy(shard, S8, [A])
    assert isinstance(_try(shard, S8, [A], channel="ota"), IdLimitExceeded)   # the slot's one
    _buy(shard, S10, [A], channel="ota")                                       # the day's second
    assert isinstance(_try(shard, S10, [A]), IdLimitExceeded)
    _buy(shard, TOMORROW8, [A])                                                # another day
    assert isinstance(_try(shard, TOMORROW8, [B, B]), IdLimitExceeded)         # within one order
    _buy(shard, S8, [B])                                                       # another person
    # a refunded ticket no longer counts
    shard.run(cmd.refund(first.order.order_id, "r1", [first.tickets[0].ticket_id], channel="web"))
    _buy(shard, S8, [A])
    shard.run(cmd.id_limits(demo.VENUE, "night"))                              # no limits
    _buy(shard, S8, [A, A])
    assert shard.check() == []


def test_one_order_with_a_holder_on_two_slots_of_a_day_counts_each_limit_apart(shard):
    """Found by tests/unit/test_sales_machine.py: a holder named on two lines of one order,
    for two slots of the same day, was an internal error (the slot's count was never
    begun). Per day the two tickets count together, per slot each alone."""
    a = "110101199001011234"
    shard.run(cmd.id_limits(demo.VENUE, "night", per_day=2, per_slot=1))
    s10, s16 = demo.slot_id("main", TODAY, 10), demo.slot_id("main", TODAY, 16)
    h = shard.run(cmd.hold("web", demo.VENUE, [HoldItem("night", (s10,), 1), HoldItem("night", (s16,), 1)]))
    sold = shard.run(cmd.confirm(h.hold_id, "two-slots", "web", method="cash", amount_fen=h.amount_fen,
                                 holders=[[a], [a]]))
    assert len(sold.tickets) == 2
    e = _try(shard, demo.slot_id("main", TODAY, 12), [a])            # a third that day
    assert (type(e), e.field) == (IdLimitExceeded, "holders[0][0]")


def test_a_blacklisted_person_can_not_buy_and_their_tickets_are_blocked(shard, clock):
    sold = _buy(shard, demo.day_slot_id(TODAY), [B])        # valid all day: scanned at any hour
    code = sold.tickets[0].code
    r = shard.run(cmd.blacklist(demo.VENUE, B, reason="resold tickets", until=int(clock.t) + 3600))
    assert r.listed and r.tickets == [sold.tickets[0].ticket_id] and B not in r.holder
    assert shard.run(cmd.verify(code, "north-1")).reason == Reason.BLOCKED
    err = _try(shard, S10, [B], channel="ota")
    assert isinstance(err, Blacklisted) and err.field == "holders[0][0]"
    _buy(shard, S10, [A])                                                       # others buy
    with pytest.raises(AlreadyExists):
        shard.run(cmd.blacklist(demo.VENUE, B))
    clock.t += 3601                                                             # the entry expired:
    _buy(shard, S10, [B])                                                       # sales go on,
    assert shard.run(cmd.verify(code, "north-1")).reason == Reason.BLOCKED       # the old one stays blocked
    off = shard.run(cmd.blacklist(demo.VENUE, B, remove=True))
    assert not off.listed and off.tickets == r.tickets
    assert shard.run(cmd.verify(code, "north-1")).reason == Reason.OK
    with pytest.raises(NotFound):
        shard.run(cmd.blacklist(demo.VENUE, B, remove=True))
    with pytest.raises(InvalidArgument):
        shard.run(cmd.blacklist(demo.VENUE, "12"))
    assert shard.check() == []


@pytest.mark.parametrize("snapshot", [False, True])
def test_limits_and_the_blacklist_survive_a_reopen(shard_path, clock, snapshot):
    shard = Shard.open(shard_path, clock=clock)
    shard.run_many(demo.commands(TODAY))
    shard.run(cmd.id_limits(demo.VENUE, "night", per_slot=1))
    _buy(shard, S8, [A])
    code = _buy(shard, demo.day_slot_id(TODAY), [B]).tickets[0].code
    shard.run(cmd.blacklist(demo.VENUE, B, reason="fraud"))
    shard.close(snapshot=snapshot)
    again = Shard.open(shard_path, clock=clock)
    try:
        assert isinstance(_try(again, S8, [A]), IdLimitExceeded)
        assert isinstance(_try(again, TOMORROW8, [B]), Blacklisted)
        assert again.run(cmd.verify(code, "north-1")).reason == Reason.BLOCKED
        again.run(cmd.blacklist(demo.VENUE, B, remove=True))
        assert again.run(cmd.verify(code, "north-1")).reason == Reason.OK
        assert again.check() == []
    finally:
        again.close(snapshot=False)
