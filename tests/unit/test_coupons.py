"""Coupons (issue 13, promotions): fixed amount, percentage with a cap, spend-X-save-Y
(满减) over an order; validity days, products and channels; a total budget and a limit per
person; single-use codes issued in batches (each used once) and public codes. A coupon is
taken with the hold, after every pricing rule, and given back when the hold is released or
expires, exactly once; a refund gives back what the ticket was paid, to the fen.
Expectations come from that contract and the demo's prices (adult 8000 fen on a weekday,
child 4000); TODAY (tests/conftest.py) is Monday 2026-11-23, 08:30 venue time."""
from __future__ import annotations

import datetime as dt

import pytest

from turnstile.engine import (CouponRefused, FailedPrecondition, HoldItem, HoldNotActive,
                              InvalidArgument, NotFound, QuoteChanged, Shard, cmd, demo)

from tests.conftest import TODAY

V = demo.VENUE
SLOT = demo.slot_id("main", TODAY, 10)


def _items(adult: int = 1, child: int = 0) -> list[HoldItem]:
    out = [HoldItem("adult", (SLOT,), adult)] if adult else []
    return out + ([HoldItem("child", (SLOT,), child)] if child else [])


def _hold(shard: Shard, coupon: str | None, adult: int = 1, child: int = 0, channel: str = "web",
          holder: str | None = None):
    return shard.run(cmd.hold(channel, V, _items(adult, child), coupon=coupon, coupon_holder=holder))


def _refused(shard: Shard, code: str, coupon: str | None, **kw) -> CouponRefused:
    held = _held(shard)
    with pytest.raises(CouponRefused) as e:
        _hold(shard, coupon, **kw)
    assert e.value.code == code, e.value
    assert _held(shard) == held                    # nothing held
    return e.value


def _held(shard: Shard) -> int:
    return next(s for s in shard.availability(V, TODAY) if s.slot == SLOT).held


def _pay(shard: Shard, h, order: str):
    return shard.run(cmd.confirm(h.hold_id, order, "web", method="cash", amount_fen=h.amount_fen))


def test_a_fixed_coupon_takes_its_amount_off_the_order(shard):
    shard.run(cmd.coupon(V, "TAKE5", "fixed", amount_fen=500))
    h = _hold(shard, "TAKE5", adult=2)
    assert (h.amount_fen, h.coupon, h.discount_fen) == (2 * 8000 - 500, "TAKE5", 500)
    assert [it.unit_price_fen for it in h.items] == [8000]         # prices stay, the order is off
    sold = _pay(shard, h, "o1")
    assert (sold.order.amount_fen, sold.order.coupon, sold.order.discount_fen) == (15500, "TAKE5", 500)
    st = shard.coupon(V, "TAKE5")
    assert (st.uses, st.spent_fen) == (1, 500)
    # never more than the order: a 100-yuan coupon on a 40-yuan order makes it free
    shard.run(cmd.coupon(V, "BIG", "fixed", amount_fen=10000))
    assert _hold(shard, "BIG", adult=0, child=1).amount_fen == 0


def test_a_percentage_coupon_is_capped(shard):
    shard.run(cmd.coupon(V, "P10", "pct", pct=10, cap_fen=1000))
    assert _hold(shard, "P10", adult=1).amount_fen == 8000 - 800
    assert _hold(shard, "P10", adult=2).amount_fen == 16000 - 1000       # 1600 capped at 1000


def test_spend_x_save_y_needs_the_spend(shard):
    shard.run(cmd.coupon(V, "M150J20", "spend", min_spend_fen=15000, amount_fen=2000))
    e = _refused(shard, "COUPON_NOT_APPLICABLE", "M150J20", adult=1)     # 8000 < 15000
    assert e.field == "coupon"
    assert _hold(shard, "M150J20", adult=2).amount_fen == 16000 - 2000


def test_products_channels_and_days_bound_a_coupon(shard, clock):
    shard.run(cmd.coupon(V, "KIDS", "fixed", amount_fen=1000, products=["child"]))
    _refused(shard, "COUPON_NOT_APPLICABLE", "KIDS", adult=2)            # no child ticket in it
    # only the child line is discounted: the adult line is paid in full
    h = _hold(shard, "KIDS", adult=1, child=1)
    assert h.amount_fen == 8000 + 4000 - 1000
    shard.run(cmd.coupon(V, "OTAONLY", "fixed", amount_fen=300, channels=["ota"]))
    _refused(shard, "COUPON_NOT_APPLICABLE", "OTAONLY")
    assert _hold(shard, "OTAONLY", channel="ota").discount_fen == 300
    tomorrow = TODAY + dt.timedelta(days=1)
    shard.run(cmd.coupon(V, "LATER", "fixed", amount_fen=300, valid_from=tomorrow))
    _refused(shard, "COUPON_NOT_APPLICABLE", "LATER")
    clock.at(tomorrow, 8)
    later = [HoldItem("adult", (demo.slot_id("main", tomorrow, 10),), 1)]
    assert shard.run(cmd.hold("web", V, later, coupon="LATER")).discount_fen == 300
    shard.run(cmd.coupon(V, "LATER", "fixed", amount_fen=300, valid_to=TODAY))   # changed: ended
    with pytest.raises(CouponRefused) as e:
        shard.run(cmd.hold("web", V, later, coupon="LATER"))
    assert e.value.code == "COUPON_NOT_APPLICABLE"
    clock.at(TODAY, 8, 30)
    shard.run(cmd.coupon(V, "KIDS", "fixed", amount_fen=1000, active=False))     # withdrawn
    _refused(shard, "COUPON_INVALID", "KIDS", child=1)
    _refused(shard, "COUPON_INVALID", "NOSUCH")


def test_the_budget_is_never_exceeded_and_comes_back_when_a_hold_ends_unpaid(shard, clock):
    shard.run(cmd.coupon(V, "B", "fixed", amount_fen=800, budget_fen=2000))
    a = _hold(shard, "B")
    b = _hold(shard, "B")
    _refused(shard, "COUPON_EXHAUSTED", "B")                             # 2400 > 2000
    assert shard.coupon(V, "B").spent_fen == 1600
    shard.run(cmd.release(a.hold_id, "web"))                             # given back
    assert shard.coupon(V, "B").spent_fen == 800
    c = _hold(shard, "B")
    _pay(shard, c, "paid")                                               # a sale keeps it
    clock.t += 3600                                                      # b expires
    shard.run(cmd.expire())
    assert (shard.coupon(V, "B").uses, shard.coupon(V, "B").spent_fen) == (1, 800)
    with pytest.raises(HoldNotActive):                                   # once, not twice
        shard.run(cmd.release(b.hold_id, "web"))
    shard.run(cmd.expire())
    assert shard.coupon(V, "B").spent_fen == 800


def test_one_person_uses_a_coupon_as_often_as_it_allows(shard):
    shard.run(cmd.coupon(V, "ONCE", "fixed", amount_fen=500, per_holder=1))
    with pytest.raises(InvalidArgument) as e:
        _hold(shard, "ONCE")
    assert e.value.field == "coupon_holder"
    a = _hold(shard, "ONCE", holder="110101199001011234")
    e = _refused(shard, "COUPON_LIMIT", "ONCE", holder="110101199001011234")
    assert e.field == "coupon_holder"
    _refused(shard, "COUPON_LIMIT", "ONCE", holder="110101199001011234".lower())   # same person
    assert _hold(shard, "ONCE", holder="110101199202022345").discount_fen == 500
    shard.run(cmd.release(a.hold_id, "web"))
    assert _hold(shard, "ONCE", holder="110101199001011234").discount_fen == 500


def test_a_person_limited_coupon_of_a_real_name_order_belongs_to_one_of_its_holders(shard):
    night = demo.slot_id("main", TODAY, 16)
    shard.run(cmd.coupon(V, "NIGHT", "fixed", amount_fen=1000, per_holder=1, products=["night"]))
    h = shard.run(cmd.hold("web", V, [HoldItem("night", (night,), 1)], coupon="NIGHT",
                           coupon_holder="110101199001011234"))
    with pytest.raises(InvalidArgument) as e:
        shard.run(cmd.confirm(h.hold_id, "n1", "web", method="cash", amount_fen=h.amount_fen,
                              holders=[["110101199202022345"]]))
    assert e.value.field == "holders"
    sold = shard.run(cmd.confirm(h.hold_id, "n1", "web", method="cash", amount_fen=9000,
                                 holders=[["110101199001011234"]]))
    assert sold.order.amount_fen == 9000


def test_single_use_codes_are_used_once_and_forged_ones_refused(shard):
    shard.run(cmd.coupon(V, "GIFT", "fixed", amount_fen=2000, single_use=True))
    batch = shard.run(cmd.coupon_codes(V, "GIFT", 3))
    assert (batch.first, batch.count) == (0, 3)
    codes = shard.coupon_codes(V, "GIFT", 0, 3)
    assert len(set(codes)) == 3 and all(c.startswith("GIFT-") for c in codes)
    _refused(shard, "COUPON_INVALID", "GIFT")                        # the id is not a code
    h = _hold(shard, codes[0])
    assert h.discount_fen == 2000
    _refused(shard, "COUPON_USED", codes[0])
    forged = codes[1][:-1] + ("A" if codes[1][-1] != "A" else "B")
    _refused(shard, "COUPON_INVALID", forged)
    shard.run(cmd.release(h.hold_id, "web"))                          # the code comes back
    assert _hold(shard, codes[0]).discount_fen == 2000
    more = shard.run(cmd.coupon_codes(V, "GIFT", 2))
    assert more.first == 3
    assert shard.coupon_codes(V, "GIFT", 3, 2)[0] not in codes
    assert shard.coupon(V, "GIFT").issued == 5
    with pytest.raises(InvalidArgument):
        shard.coupon_codes(V, "GIFT", 4, 2)                           # not issued
    # a public coupon has no codes to issue; a coupon with codes stays single-use
    shard.run(cmd.coupon(V, "OPEN", "fixed", amount_fen=100))
    with pytest.raises(FailedPrecondition):
        shard.run(cmd.coupon_codes(V, "OPEN", 1))
    with pytest.raises(FailedPrecondition) as e:
        shard.run(cmd.coupon(V, "GIFT", "fixed", amount_fen=2000))
    assert e.value.field == "single_use"


def test_a_quote_explains_the_coupon_and_its_id_binds_it(shard):
    shard.run(cmd.coupon(V, "P20", "pct", pct=20))
    items = [{"product": "adult", "slots": [SLOT], "qty": 2}]
    q = shard.quote(V, "web", items, coupon="P20")
    assert (q.amount_fen, q.coupon.coupon, q.coupon.kind, q.coupon.discount_fen) == \
        (16000 - 3200, "P20", "pct", 3200)
    assert shard.coupon(V, "P20").uses == 0                           # a quote takes nothing
    with pytest.raises(QuoteChanged):                                 # the coupon left out
        shard.run(cmd.hold("web", V, items, quote_id=q.quote_id))
    h = shard.run(cmd.hold("web", V, items, quote_id=q.quote_id, coupon="P20"))
    assert h.amount_fen == q.amount_fen
    shard.run(cmd.coupon(V, "P20", "pct", pct=25))                    # the rules changed
    with pytest.raises(QuoteChanged):
        shard.run(cmd.hold("web", V, items, quote_id=q.quote_id, coupon="P20"))


def test_refunds_give_back_what_each_ticket_was_paid_to_the_fen(shard):
    shard.run(cmd.coupon(V, "ODD", "fixed", amount_fen=1001))
    h = _hold(shard, "ODD", adult=3)
    sold = _pay(shard, h, "odd")
    assert sold.order.amount_fen == 24000 - 1001
    back = [shard.run(cmd.refund("odd", f"r{t.ticket_id}", [t.ticket_id], channel="web")).amount_fen
            for t in sold.tickets]
    assert sum(back) == sold.order.amount_fen                         # no fen lost or made
    assert max(back) - min(back) <= 1
    assert shard.coupon(V, "ODD").uses == 1                           # refunds keep the coupon used


@pytest.mark.parametrize("snapshot", [False, True])
def test_coupons_and_their_use_survive_a_reopen(shard_path, clock, snapshot):
    shard = Shard.open(shard_path, clock=clock)
    shard.run_many(demo.commands(TODAY))
    shard.run(cmd.coupon(V, "GIFT", "fixed", amount_fen=2000, single_use=True, budget_fen=10000,
                         per_holder=2))
    shard.run(cmd.coupon_codes(V, "GIFT", 4))
    codes = shard.coupon_codes(V, "GIFT", 0, 4)
    who = "110101199001011234"
    _pay(shard, _hold(shard, codes[0], holder=who), "o1")
    held = _hold(shard, codes[1], holder=who)
    want = shard.coupon(V, "GIFT")
    assert (want.issued, want.uses, want.spent_fen) == (4, 2, 4000)
    shard.close(snapshot=snapshot)
    again = Shard.open(shard_path, clock=clock)
    try:
        assert again.coupon(V, "GIFT") == want
        assert again.coupon_codes(V, "GIFT", 0, 4) == codes
        _refused(again, "COUPON_USED", codes[0], holder="110101199202022345")
        _refused(again, "COUPON_LIMIT", codes[2], holder=who)
        again.run(cmd.release(held.hold_id, "web"))                   # given back after the reopen
        assert again.coupon(V, "GIFT").spent_fen == 2000
        assert _hold(again, codes[1], holder=who).discount_fen == 2000
    finally:
        again.close(snapshot=False)


@pytest.mark.parametrize("args, field", [
    ({"kind": "half"}, "kind"),
    ({"kind": "fixed"}, "amount_fen"),
    ({"kind": "fixed", "amount_fen": 100, "pct": 5}, "pct"),
    ({"kind": "pct"}, "pct"),
    ({"kind": "pct", "pct": 101}, "pct"),
    ({"kind": "pct", "pct": 10, "amount_fen": 5}, "amount_fen"),
    ({"kind": "spend", "amount_fen": 100}, "min_spend_fen"),
    ({"kind": "fixed", "amount_fen": -1}, "amount_fen"),
    ({"kind": "fixed", "amount_fen": 100, "valid_from": 20000, "valid_to": 19999}, "valid_to"),
    ({"kind": "fixed", "amount_fen": 100, "products": ["nosuch"]}, "products[0]"),
    ({"kind": "fixed", "amount_fen": 100, "channels": ["web", "web"]}, "channels[1]"),
    ({"kind": "fixed", "amount_fen": 100, "per_holder": -1}, "per_holder"),
    ({"kind": "fixed", "amount_fen": 100, "budget": 5}, "budget"),
    ({"kind": "fixed", "amount_fen": 100, "id": "x" * 41}, "id"),
])
def test_bad_coupons_are_refused_by_field_and_change_nothing(shard, args, field):
    from turnstile.engine.journal import Command, CommandKind
    with pytest.raises((InvalidArgument, NotFound)) as e:
        shard.run(Command(CommandKind.COUPON, {"venue": V, "id": "C1", **args}))
    assert e.value.field == field
    with pytest.raises(NotFound):
        shard.coupon(V, "C1")
