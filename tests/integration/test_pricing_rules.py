"""Pricing rules and booking windows (issue 13, "Prices" and "Booking rules") against a
real server: an operator sets a product's rules (AdminService.SetPriceRules) and booking
window (SetBookingWindow) and reads them back (GetProductPricing); a channel's Quote lists
every rule that applied with its amount, in the documented order (early-bird, time of
day, fill rate), and a Hold with the quote id is charged exactly that; outside a booking
window Quote and Hold are refused FAILED_PRECONDITION with reason BOOKING_CLOSED and
nothing is held; bad input and callers without the role are refused and change nothing.

The server's clock is 07:00 venue-local on Monday 2026-12-28 and the demo seeds slots for
seven days from it (to Sunday 2027-01-03; adult tickets cost 10000 on weekends, 7600 on
weekdays through the OTA; the demo's own early-bird rule, 7 days ahead, reaches none of
them and is replaced here)."""
from __future__ import annotations

import datetime as dt

import grpc
import pytest

from turnstile.clients.admin import AdminClient, BookingWindow, DatePrice, PriceRule, PriceRules
from turnstile.clients.base import Connection
from turnstile.clients.channel import AppliedRule, ChannelClient, Item
from turnstile.engine import demo
from tests.integration.conftest import api_error, refused, start_server, stop_server

VENUE = "westlake"
MON = dt.date(2026, 12, 28)
TUE, WED, THU, SAT, SUN = (MON + dt.timedelta(days=n) for n in (1, 2, 3, 5, 6))
INVALID, DENIED = "INVALID_ARGUMENT", "PERMISSION_DENIED"

# the adult ticket's rules, given out of order: the server keeps them in the order they apply
RULES = [PriceRule("fill_rate", pct=20, cap_fen=1000, fill_pct=50),
         PriceRule("time_of_day", amount_fen=-1000, from_minute=16 * 60),
         PriceRule("early_bird", pct=-10, days_ahead=3)]
IN_ORDER = (RULES[2], RULES[1], RULES[0])
# the slot every rule applies to: Sunday (6 days ahead, a weekend: 10000) at 16:00, its
# capacity cut to 4 and half of it sold before the quote
FULL = demo.slot_id("main", SUN, 16)


def slot(day: dt.date, hour: int = 10) -> str:
    return demo.slot_id("main", day, hour)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = start_server(str(tmp_path_factory.mktemp("rules")), MON)
    yield s
    stop_server(s)


@pytest.fixture(scope="module")
def conns(server):
    cs = {p: Connection(server.address, server.keys[p])
          for p in ("admin", "demo-operator", "demo-ota", "demo-window", "demo-gate")}
    yield cs
    for c in cs.values():
        c.close()


@pytest.fixture(scope="module")
def ruled(conns):
    """The operator's rules for the adult ticket; FULL half sold by the window."""
    op = AdminClient(conns["demo-operator"])
    r = op.set_price_rules(VENUE, "adult", RULES)
    assert r == PriceRules(VENUE, "adult", IN_ORDER)
    op.set_slot_capacity(VENUE, FULL, 4)
    window = ChannelClient(conns["demo-window"])
    h = window.hold(VENUE, [Item("adult", FULL, qty=2)])
    assert h.amount_fen == 2 * (10000 - 1000 - 1000)     # 0 % full when held: no fill rule yet
    window.confirm(h, "window-rules-1", method="cash")
    return op


def stock(ch: ChannelClient, day: dt.date, slot_id: str) -> tuple:
    s = next(s for s in ch.availability(VENUE, day) if s.slot_id == slot_id)
    return s.held, s.sold, s.remaining


def test_a_quote_lists_each_applied_rule_in_order(conns, ruled):
    ota = ChannelClient(conns["demo-ota"])
    q = ota.quote(VENUE, [Item("adult", FULL), Item("adult", slot(MON)), Item("adult", slot(SUN)),
                          Item("adult", slot(TUE, 16)), Item("child", FULL)])
    got = [(ln.product_id, ln.date_type, ln.base_price_fen, ln.rules, ln.unit_price_fen)
           for ln in q.lines]
    assert got == [
        # 10 % off 10000, then 1000 off, then +20 % of 8000 (1600) capped at 1000
        ("adult", "weekend", 10000, (AppliedRule("early_bird", -1000), AppliedRule("time_of_day", -1000),
                                     AppliedRule("fill_rate", 1000)), 9000),
        ("adult", "weekday", 7600, (), 7600),                 # today, 10:00, empty: none applies
        ("adult", "weekend", 10000, (AppliedRule("early_bird", -1000),), 9000),
        ("adult", "weekday", 7600, (AppliedRule("time_of_day", -1000),), 6600),   # 1 day ahead
        ("child", "weekend", 4000, (), 4000),                 # another product: no rules
    ]
    assert [i.unit_price_fen for i in q.items] == [9000, 7600, 9000, 6600, 4000]
    assert q.amount_fen == 9000 + 7600 + 9000 + 6600 + 4000


def test_a_hold_with_the_quote_id_is_charged_the_ruled_price(conns, ruled):
    ota = ChannelClient(conns["demo-ota"])
    items = [Item("adult", FULL), Item("adult", slot(TUE, 16), qty=2)]
    q = ota.quote(VENUE, items)
    assert q.amount_fen == 9000 + 2 * 6600
    h = ota.hold(VENUE, items, quote_id=q)
    assert h.amount_fen == q.amount_fen
    assert [i.unit_price_fen for i in h.items] == [9000, 6600]
    order = ota.confirm(h, "ota-rules-1")
    assert order.amount_fen == 9000 + 2 * 6600
    # a rule changed since a quote: the hold is refused and holds nothing
    items = [Item("adult", slot(SUN))]
    old = ota.quote(VENUE, items)
    before = stock(ota, SUN, slot(SUN))
    ruled.set_price_rules(VENUE, "adult", [PriceRule("early_bird", pct=-20, days_ahead=3)])
    try:
        e = api_error(ota.hold, VENUE, items, quote_id=old)
        assert (e.code, e.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "QUOTE_CHANGED")
        assert stock(ota, SUN, slot(SUN)) == before
    finally:
        ruled.set_price_rules(VENUE, "adult", RULES)


def test_outside_the_booking_window_nothing_is_quoted_or_held(conns, ruled):
    op = ruled
    ota = ChannelClient(conns["demo-ota"])
    closed = (grpc.StatusCode.FAILED_PRECONDITION, "BOOKING_CLOSED")

    def refused_both(day: dt.date, hour: int):
        items = [Item("child", slot(day, hour))]
        before = stock(ota, day, slot(day, hour))
        for call in (lambda: ota.quote(VENUE, items), lambda: ota.hold(VENUE, items)):
            e = api_error(call)
            assert (e.code, e.reason) == closed
        assert stock(ota, day, slot(day, hour)) == before      # nothing held

    def sells(day: dt.date, hour: int):
        items = [Item("child", slot(day, hour))]
        assert ota.quote(VENUE, items).amount_fen == 4000
        ota.release(ota.hold(VENUE, items))

    try:
        # opens 3 days ahead, closes 2 hours before the slot starts (now is 07:00 Monday)
        w = op.set_booking_window(VENUE, "child", opens_days=3, closes_minutes=120)
        assert w == BookingWindow(VENUE, "child", 3, 120, ())
        refused_both(SUN, 10)              # 6 days ahead: too early
        refused_both(MON, 8)               # closed at 06:00
        sells(MON, 10)                     # closes at 08:00
        sells(THU, 10)                     # 3 days ahead: open
        # weekends only, sold until an hour after the slot started (negative)
        w = op.set_booking_window(VENUE, "child", closes_minutes=-60, weekdays=[7, 6])
        assert w == BookingWindow(VENUE, "child", 0, -60, (6, 7))
        refused_both(WED, 10)
        sells(SAT, 10)
        sells(SUN, 10)
        # the default again: any day, until the slot ends
        assert op.set_booking_window(VENUE, "child") == BookingWindow(VENUE, "child", 0, None, ())
        sells(WED, 10)
        sells(MON, 8)
    finally:
        op.set_booking_window(VENUE, "child")


def test_product_pricing_returns_what_was_set(conns, ruled):
    op = ruled
    w = op.set_booking_window(VENUE, "adult", opens_days=30, closes_minutes=0, weekdays=[1, 2, 3, 4, 5, 6, 7])
    assert w == BookingWindow(VENUE, "adult", 30, 0, (1, 2, 3, 4, 5, 6, 7))     # 0 is set, not unset
    p = op.product_pricing(VENUE, "adult")
    assert p.rules == PriceRules(VENUE, "adult", IN_ORDER)
    assert p.booking == w
    assert (p.prices.venue_id, p.prices.product_id) == (VENUE, "adult")
    assert sorted(p.prices.prices, key=repr) == sorted(
        [DatePrice(t, c, f) for t, c, f in demo.DATE_PRICES["adult"]], key=repr)
    # a product with nothing set: an empty table, no rules, the default window
    c = op.product_pricing(VENUE, "child")
    assert (c.prices.prices, c.rules.rules, c.booking) == ((), (), BookingWindow(VENUE, "child"))
    # a channel may read it (it shows buyers the early-bird and when booking opens)
    assert AdminClient(conns["demo-ota"]).product_pricing(VENUE, "adult") == p


def test_bad_input_is_refused_and_changes_nothing(conns, ruled):
    op, admin = ruled, AdminClient(conns["admin"])
    admin.create_venue("hills", "Hills")
    admin.create_zone("hills", "top")
    admin.create_product("hills", "hike", ["top"], price_fen=5000)
    before = {p: op.product_pricing(VENUE, p) for p in ("adult", "child")}
    hike = admin.product_pricing("hills", "hike")
    eb = PriceRule("early_bird", pct=-10, days_ahead=3)

    def rules(*rs, product="adult", venue=VENUE, client=op):
        return refused(client.set_price_rules, venue, product, list(rs))

    assert rules(eb, PriceRule("happy_hour", amount_fen=-1)) == (INVALID, INVALID, "rules[1].kind")
    assert rules(eb, PriceRule("time_of_day", amount_fen=-1, from_minute=600),
                 PriceRule("early_bird", pct=-5, days_ahead=7)) == (INVALID, INVALID, "rules[2].kind")
    assert rules(PriceRule("early_bird", amount_fen=-100, pct=-10, days_ahead=3)) == \
        (INVALID, INVALID, "rules[0].amount_fen")
    assert rules(PriceRule("early_bird", days_ahead=3)) == (INVALID, INVALID, "rules[0].amount_fen")
    assert rules(PriceRule("early_bird", pct=-10, days_ahead=3, from_minute=600)) == \
        (INVALID, INVALID, "rules[0].from_minute")
    assert rules(PriceRule("early_bird", pct=-10)) == (INVALID, INVALID, "rules[0].days_ahead")
    assert rules(PriceRule("fill_rate", pct=10, fill_pct=101)) == (INVALID, INVALID, "rules[0].fill_pct")
    assert rules(PriceRule("time_of_day", pct=-101)) == (INVALID, INVALID, "rules[0].pct")
    assert rules(PriceRule("time_of_day", pct=-10, cap_fen=-1)) == (INVALID, INVALID, "rules[0].cap_fen")

    def window(product="adult", venue=VENUE, client=op, **kw):
        return refused(client.set_booking_window, venue, product, **kw)

    assert window(weekdays=[1, 8]) == (INVALID, INVALID, "weekdays[1]")
    assert window(weekdays=[0]) == (INVALID, INVALID, "weekdays[0]")
    assert window(weekdays=[6, 6]) == (INVALID, INVALID, "weekdays[1]")
    assert window(opens_days=3661) == (INVALID, INVALID, "opens_days")
    assert window(closes_minutes=-7 * 1440 - 1) == (INVALID, INVALID, "closes_minutes")
    # a product the venue doesn't have (another venue's), or another venue the operator
    # may not set up
    assert rules(eb, product="hike") == ("NOT_FOUND", "NOT_FOUND", "product_id")
    assert rules(eb, product="nope") == ("NOT_FOUND", "NOT_FOUND", "product_id")
    assert window(product="hike", opens_days=3) == ("NOT_FOUND", "NOT_FOUND", "product_id")
    assert refused(op.product_pricing, VENUE, "hike") == ("NOT_FOUND", "NOT_FOUND", "product_id")
    assert rules(eb, venue="hills", product="hike")[::2] == (DENIED, "venue_id")
    assert window(venue="hills", product="hike", opens_days=3)[::2] == (DENIED, "venue_id")
    assert refused(op.product_pricing, "hills", "hike")[::2] == (DENIED, "venue_id")
    # a gate key and a channel key may not set rules or windows
    for who in ("demo-gate", "demo-ota"):
        client = AdminClient(conns[who])
        assert rules(eb, client=client)[:2] == (DENIED, "ROLE_NOT_ALLOWED")
        assert window(client=client, opens_days=3)[:2] == (DENIED, "ROLE_NOT_ALLOWED")
    assert refused(AdminClient(conns["demo-gate"]).set_price_rules, VENUE, "adult", [])[:2] == \
        (DENIED, "ROLE_NOT_ALLOWED")
    # nothing changed
    assert {p: op.product_pricing(VENUE, p) for p in ("adult", "child")} == before
    assert admin.product_pricing("hills", "hike") == hike
    assert hike.rules.rules == () and hike.booking == BookingWindow("hills", "hike")


def test_rule_and_window_set_up_is_audited(conns, ruled):
    admin = AdminClient(conns["admin"])
    recs = admin.audit_records(0, principal_id="demo-operator")
    ok = {r.method for r in recs if r.result == "OK"}
    assert {"/turnstile.v1.AdminService/SetPriceRules",
            "/turnstile.v1.AdminService/SetBookingWindow"} <= ok
