"""Promotions and after-sale over the API (issue 13): coupons set by an operator and
taken by a channel's Hold (explained by Quote, held to by its quote id, single-use codes
used once), a window selling a weekend and a holiday with a coupon, changes (改签)
previewed and made, a group ticket refunded in part, a package's split on the order,
a pass's fixed dates and its renewal, and who may do each. Real server, real clients.

The server's clock is 07:00 venue time on Monday 2026-12-28; the demo's slots run to
Sunday 2027-01-03. The adult ticket costs 7600 through the OTA on weekdays, 8000 at the
window, 10000 on the weekend and 12000 on the public holiday 2027-01-01 (engine/demo.py)."""
from __future__ import annotations

import datetime as dt

import pytest

from turnstile.clients.admin import AdminClient, Coupon, PackagePart, PassDates
from turnstile.clients.base import Connection
from turnstile.clients.channel import ChannelClient, Item
from turnstile.clients.gate import GateClient
from turnstile.clients.pos import SandboxPaymentAdapter, Till
from turnstile.engine import demo
from tests.integration.conftest import api_error, refused, start_server, stop_server

VENUE = "westlake"
MON = dt.date(2026, 12, 28)
TUE, WED, FRI, SAT = (MON + dt.timedelta(days=n) for n in (1, 2, 4, 5))      # FRI = 2027-01-01


def slot(day: dt.date, hour: int = 10, zone: str = "main") -> str:
    return demo.slot_id(zone, day, hour)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = start_server(str(tmp_path_factory.mktemp("promotions")), MON)
    yield s
    stop_server(s)


@pytest.fixture(scope="module")
def conns(server):
    cs = {p: Connection(server.address, server.keys[p])
          for p in ("admin", "demo-operator", "demo-ota", "demo-window", "demo-gate", "demo-finance")}
    yield cs
    for c in cs.values():
        c.close()


def test_a_single_use_coupon_is_quoted_held_sold_once_and_counted(conns):
    op, ota = AdminClient(conns["demo-operator"]), ChannelClient(conns["demo-ota"])
    finance = AdminClient(conns["demo-finance"])
    c = op.set_coupon(Coupon(VENUE, "NEWYEAR", "pct", pct=10, cap_fen=1500, single_use=True,
                             product_ids=("adult",), budget_fen=1_000_000))
    assert (c.kind, c.pct, c.single_use, c.active) == ("pct", 10, True, True)
    codes = op.issue_coupon_codes(VENUE, "NEWYEAR", 3, key="ny-batch-1")
    assert len(set(codes)) == 3
    assert op.issue_coupon_codes(VENUE, "NEWYEAR", 3, key="ny-batch-1") == codes   # a retry: the same
    items = [Item("adult", slot(TUE), qty=3)]
    q = ota.quote(VENUE, items, coupon=codes[0])
    assert (q.coupon.coupon_id, q.coupon.discount_fen, q.amount_fen) == ("NEWYEAR", 1500, 3 * 7600 - 1500)
    assert q.explain()[-2:] == ["coupon NEWYEAR (pct) -15.00", "total 213.00"]
    h = ota.hold(VENUE, items, quote_id=q, coupon=codes[0])
    assert (h.amount_fen, h.coupon_id, h.discount_fen) == (q.amount_fen, "NEWYEAR", 1500)
    o = ota.confirm(h, "ny-1")
    assert (o.amount_fen, o.coupon_id, o.discount_fen) == (21300, "NEWYEAR", 1500)
    assert sum(ln.discount_fen for ln in o.lines) == 1500
    assert refused(ota.hold, VENUE, items, coupon=codes[0]) == ("FAILED_PRECONDITION", "COUPON_USED", "coupon")
    forged = codes[1][:-2] + ("AA" if codes[1][-2:] != "AA" else "BB")
    assert refused(ota.hold, VENUE, items, coupon=forged) == ("FAILED_PRECONDITION", "COUPON_INVALID", "coupon")
    s = finance.coupon(VENUE, "NEWYEAR")
    assert (s.issued, s.uses, s.spent_fen) == (3, 1, 1500)
    # a refund gives back what the tickets were paid, not their list price
    r = ota.refund(VENUE, "ny-1")
    assert r.amount_fen == 21300


def test_a_hold_that_ends_unpaid_gives_its_coupon_back(conns):
    op, ota = AdminClient(conns["demo-operator"]), ChannelClient(conns["demo-ota"])
    op.set_coupon(Coupon(VENUE, "ONE-OFF", "fixed", amount_fen=1000, budget_fen=1000))
    h = ota.hold(VENUE, [Item("adult", slot(TUE))], coupon="ONE-OFF")
    assert refused(ota.hold, VENUE, [Item("adult", slot(TUE))], coupon="ONE-OFF")[1] == "COUPON_EXHAUSTED"
    ota.release(h)
    assert op.coupon(VENUE, "ONE-OFF").spent_fen == 0
    assert ota.hold(VENUE, [Item("adult", slot(TUE))], coupon="ONE-OFF").discount_fen == 1000


def test_a_window_sells_a_weekend_and_a_holiday_with_a_spend_coupon(conns):
    op = AdminClient(conns["demo-operator"])
    op.set_coupon(Coupon(VENUE, "M400J50", "spend", min_spend_fen=40000, amount_fen=5000))
    till = Till(conns["demo-window"], VENUE, SandboxPaymentAdapter(seed=5), station="window-3")
    till.open_shift("carol", float_fen=0)
    cart = till.cart().add("adult", slot(SAT), qty=2).add("adult", slot(FRI), qty=2)
    shown = till.explain(cart, coupon="M400J50")
    assert [ln.date_type for ln in shown.lines] == ["weekend", "holiday"]
    assert shown.amount_fen == 2 * 10000 + 2 * 12000 - 5000
    assert shown.explain()[0] == "adult x2 (weekend): 100.00 = 100.00 each"
    sale = till.checkout(cart, "card", coupon="M400J50")
    assert sale.order.amount_fen == 39000 and sale.payment.amount_fen == 39000
    assert [ln.unit_price_fen for ln in sale.order.lines] == [10000, 12000]
    # below the spend, nothing is held and the cashier is told why
    small = till.cart().add("adult", slot(SAT))
    assert refused(till.checkout, small, "cash", coupon="M400J50")[1] == "COUPON_NOT_APPLICABLE"
    assert till.close_shift().totals["card"].sales_fen == 39000


def test_a_change_is_previewed_then_made_and_the_old_code_is_refused(server, conns, tmp_path):
    ota = ChannelClient(conns["demo-ota"])
    o = ota.buy(VENUE, [Item("adult", slot(TUE), qty=2)], "chg-1")
    preview = ota.change(VENUE, "chg-1", [slot(SAT)], [o.tickets[0].ticket_id], preview=True)
    assert (preview.old_paid_fen, preview.new_amount_fen, preview.fee_fen, preview.due_fen) == \
        (7600, 10000, 0, 2400)
    assert preview.tickets == ()
    assert ota.get_order(VENUE, "chg-1").changes == ()              # a preview changes nothing
    e = api_error(ota.change, VENUE, "chg-1", [slot(SAT)], [o.tickets[0].ticket_id], amount_fen=100)
    assert (e.code.name, e.field) == ("INVALID_ARGUMENT", "payment.amount_fen")
    c = ota.change(VENUE, "chg-1", [slot(SAT)], [o.tickets[0].ticket_id], change_id="c1",
                   method="alipay", payment_reference="ali-77")
    assert c.due_fen == 2400 and len(c.tickets) == 1 and c.tickets[0].code
    gate = GateClient(server.address, server.keys["demo-gate"], "north-1", VENUE, state_dir=str(tmp_path),
                      timeout=10, clock=server.now)
    try:
        assert gate.verify(o.tickets[0].code).reason == "VOIDED"
        assert gate.verify(c.tickets[0].code).reason == "NOT_YET_VALID"      # Saturday's now
    finally:
        gate.close()
    after = ota.get_order(VENUE, "chg-1")
    assert [ch.change_id for ch in after.changes] == ["c1"] and after.changes[0].due_fen == 2400
    assert [t.state for t in after.tickets] == ["voided", "issued", "issued"]


def test_a_group_ticket_is_refunded_in_part(conns):
    admin = ChannelClient(conns["demo-window"])           # the group ticket: agencies and the window
    o = admin.buy(VENUE, [Item("group", slot(WED), qty=1, group=10)], "grp-1")
    t = o.tickets[0].ticket_id
    r = admin.refund(VENUE, "grp-1", [t], persons=3)
    assert (r.persons, r.amount_fen) == (3, 3 * 6000)
    order = admin.get_order(VENUE, "grp-1")
    assert order.tickets[0].persons == 7 and order.refunds[0].persons == 3
    assert refused(admin.refund, VENUE, "grp-1", [t], persons=7)[1:] == ("INVALID_ARGUMENT", "persons")


def test_a_package_order_records_its_split(conns):
    op, ota = AdminClient(conns["demo-operator"]), ChannelClient(conns["demo-ota"])
    parts = (PackagePart("boat", "westlake-boats", amount_fen=4000),
             PackagePart("pagoda", "leifeng", amount_fen=3000), PackagePart("main", "westlake", pct=100))
    assert op.set_package(VENUE, "combo", parts).parts == parts
    assert op.product_pricing(VENUE, "combo").package.parts == parts
    o = ota.buy(VENUE, [Item("combo", (slot(WED), slot(WED, zone="pagoda"), slot(WED, 11, "boat")))], "pkg-1")
    assert o.lines[0].split == (("boat", "westlake-boats", 4000), ("pagoda", "leifeng", 3000),
                                ("main", "westlake", 8000))
    assert refused(op.set_package, VENUE, "combo", [PackagePart("a", "m", pct=60)]) == \
        ("INVALID_ARGUMENT", "INVALID_ARGUMENT", "parts")


def test_a_pass_has_fixed_dates_and_is_renewed_for_the_next_season(server, conns, tmp_path):
    op, window = AdminClient(conns["demo-operator"]), ChannelClient(conns["demo-window"])
    holder = "110101199001011234"
    d = op.set_pass_dates(VENUE, "annual", "2027-01-01", "2027-12-31")
    assert d == PassDates(VENUE, "annual", "2027-01-01", "2027-12-31")
    first = window.buy(VENUE, [Item("annual", slot(TUE))], "pass-2027", holders=[[holder]])
    gate = GateClient(server.address, server.keys["demo-gate"], "north-1", VENUE, state_dir=str(tmp_path),
                      timeout=10, clock=server.now)
    try:
        assert gate.verify(first.tickets[0].code).reason == "NOT_YET_VALID"       # its season: 2027
        # renewal: the next season's dates, sold again to the same holder; the 2027 pass
        # keeps its dates
        op.set_pass_dates(VENUE, "annual", "2028-01-01", "2028-12-31")
        window.buy(VENUE, [Item("annual", slot(TUE))], "pass-2028", holders=[[holder]])
        assert op.product_pricing(VENUE, "annual").pass_dates.valid_from == "2028-01-01"
        assert gate.verify(first.tickets[0].code).reason == "NOT_YET_VALID"
    finally:
        gate.close()
    assert refused(op.set_pass_dates, VENUE, "annual", "2028-01-01")[1:] == ("INVALID_ARGUMENT", "valid_to")
    assert refused(op.set_pass_dates, VENUE, "annual", "2028-13-01", "2028-12-31")[1:] == \
        ("INVALID_ARGUMENT", "valid_from")
    assert op.set_pass_dates(VENUE, "annual") == PassDates(VENUE, "annual")


def test_who_may_set_and_read_promotions(conns):
    ota, finance = AdminClient(conns["demo-ota"]), AdminClient(conns["demo-finance"])
    window = ChannelClient(conns["demo-window"])
    coupon = Coupon(VENUE, "SNEAKY", "fixed", amount_fen=100)
    assert refused(ota.set_coupon, coupon)[0] == "PERMISSION_DENIED"
    assert refused(finance.set_coupon, coupon)[0] == "PERMISSION_DENIED"
    assert refused(ota.coupon, VENUE, "NEWYEAR")[0] == "PERMISSION_DENIED"
    assert refused(ota.issue_coupon_codes, VENUE, "NEWYEAR", 1)[0] == "PERMISSION_DENIED"
    assert refused(ota.set_pass_dates, VENUE, "annual")[0] == "PERMISSION_DENIED"
    assert refused(finance.set_package, VENUE, "combo", [])[0] == "PERMISSION_DENIED"
    # another channel's order can't be changed: it is not found for that channel
    assert refused(window.change, VENUE, "chg-1", [slot(WED)], preview=True)[1:] == ("NOT_FOUND", "order_id")


def test_bad_coupons_are_refused_by_field_and_change_nothing(conns):
    op = AdminClient(conns["demo-operator"])
    for c, field in ((Coupon(VENUE, "BAD", "half"), "coupon.kind"),
                     (Coupon(VENUE, "BAD", "pct", pct=101), "coupon.pct"),
                     (Coupon(VENUE, "BAD", "fixed"), "coupon.amount_fen"),
                     (Coupon(VENUE, "BAD", "fixed", amount_fen=1, product_ids=("nosuch",)), "coupon.product_ids[0]"),
                     (Coupon(VENUE, "BAD", "fixed", amount_fen=1, valid_from="2027-02-30"), "coupon.valid_from"),
                     (Coupon("nowhere", "BAD", "fixed", amount_fen=1), "coupon.venue_id")):
        assert refused(op.set_coupon, c)[2] == field, c
    assert refused(op.coupon, VENUE, "BAD")[1:] == ("NOT_FOUND", "coupon_id")
    assert refused(op.issue_coupon_codes, VENUE, "NEWYEAR", 0)[2] == "count"
