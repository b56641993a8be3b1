"""Price calendars and the explained Quote (issue 13, "Prices") against a real server:
an operator loads a calendar and a price table (AdminService.SetCalendar, SetPrices),
a channel's Quote explains each line (date type, base price, rules, unit price) with a
quote id, a Hold with that id charges exactly the quote or is refused QUOTE_CHANGED
holding nothing, a window sells a weekend at the weekend price, and bad input is
refused with its field named and nothing changed.

The server's clock is the morning of Monday 2026-12-28 and the demo seeds slots for
seven days from it (to Sunday 2027-01-03): weekdays, a public holiday (2027-01-01, in
the demo's HOLIDAYS, engine/demo.py) and a weekend."""
from __future__ import annotations

import datetime as dt

import grpc
import pytest

from turnstile.clients.admin import AdminClient, CalendarDay, DatePrice, SlotSpec
from turnstile.clients.base import Connection
from turnstile.clients.channel import ChannelClient, Item
from turnstile.clients.pos import SandboxPaymentAdapter, Till
from turnstile.engine import demo
from tests.integration.conftest import api_error, start_server, stop_server

VENUE = "westlake"
MON = dt.date(2026, 12, 28)
WED, FRI, SAT, SUN = (MON + dt.timedelta(days=n) for n in (2, 4, 5, 6))     # FRI = 2027-01-01

# the operator's table for the adult ticket (base 8000, OTA channel price 7600)
TABLE = [DatePrice("weekend", "", 10000), DatePrice("holiday", "", 12000),
         DatePrice("weekend", "ota", 9500)]


def slot(day: dt.date) -> str:
    return demo.slot_id("main", day, 10)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = start_server(str(tmp_path_factory.mktemp("pricing")), MON)
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
def priced(conns):
    """The operator's calendar (Wednesday peak season, Saturday a working day) and the
    adult ticket's price table."""
    op = AdminClient(conns["demo-operator"])
    assert op.set_calendar(VENUE, {WED: "peak", SAT.isoformat(): "weekday"}) == 2
    table = op.set_prices(VENUE, "adult", TABLE)
    assert (table.venue_id, table.product_id) == (VENUE, "adult")
    assert sorted(table.prices, key=repr) == sorted(TABLE, key=repr)
    return op


def test_the_calendar_as_set(conns, priced):
    days = priced.calendar(VENUE, MON, SUN)
    assert days == [
        CalendarDay(MON, "weekday", False), CalendarDay(MON + dt.timedelta(1), "weekday", False),
        CalendarDay(WED, "peak", True), CalendarDay(MON + dt.timedelta(3), "weekday", False),
        CalendarDay(FRI, "holiday", True),          # the demo's holiday data
        CalendarDay(SAT, "weekday", True),          # a working Saturday (调休)
        CalendarDay(SUN, "weekend", False)]
    # "" removes a day's entry: back to the day of the week
    assert priced.set_calendar(VENUE, {MON: "off"}) == 1
    assert priced.calendar(VENUE, MON) == [CalendarDay(MON, "off", True)]
    assert priced.set_calendar(VENUE, {MON: ""}) == 1
    assert priced.calendar(VENUE, MON) == [CalendarDay(MON, "weekday", False)]
    # a channel may read it (it shows buyers why a day costs more)
    ota_days = AdminClient(conns["demo-ota"]).calendar(VENUE, FRI, SUN)
    assert [d.date_type for d in ota_days] == ["holiday", "weekday", "weekend"]


def test_a_channel_quote_explains_each_line(server, conns, priced):
    ota = ChannelClient(conns["demo-ota"])
    q = ota.quote(VENUE, [Item("adult", slot(MON)), Item("adult", slot(SUN), qty=2),
                          Item("adult", slot(FRI)), Item("adult", slot(WED)),
                          Item("adult", slot(SAT)), Item("child", slot(SUN))])
    got = [(ln.product_id, ln.date_type, ln.base_price_fen, ln.rules, ln.unit_price_fen)
           for ln in q.lines]
    assert got == [
        ("adult", "weekday", 7600, (), 7600),       # no weekday entry: the OTA's channel price
        ("adult", "weekend", 9500, (), 9500),       # the (ota, weekend) entry
        ("adult", "holiday", 12000, (), 12000),     # the (any channel, holiday) entry
        ("adult", "peak", 7600, (), 7600),          # no peak entry: the channel price
        ("adult", "weekday", 7600, (), 7600),       # the working Saturday is a weekday
        ("child", "weekend", 4000, (), 4000),       # no table: the base price every day
    ]
    assert [i.unit_price_fen for i in q.items] == [ln.unit_price_fen for ln in q.lines]
    assert q.amount_fen == 7600 + 2 * 9500 + 12000 + 7600 + 7600 + 4000
    assert q.quote_id
    assert 0 < q.expires_at.timestamp() - server.now() <= 600 + 5


def test_hold_with_the_quote_id_charges_the_quote(conns, priced):
    ota = ChannelClient(conns["demo-ota"])
    items = [Item("adult", slot(SUN), qty=2), Item("adult", slot(FRI))]
    q = ota.quote(VENUE, items)
    assert q.amount_fen == 2 * 9500 + 12000
    hold = ota.hold(VENUE, items, quote_id=q.quote_id)
    assert hold.amount_fen == q.amount_fen
    assert [i.unit_price_fen for i in hold.items] == [9500, 12000]
    order = ota.confirm(hold, "ota-pricing-1")
    assert order.amount_fen == q.amount_fen
    assert [ln.unit_price_fen for ln in order.lines] == [9500, 12000]


def test_a_changed_price_refuses_the_old_quote(conns, priced):
    ota = ChannelClient(conns["demo-ota"])
    items = [Item("adult", slot(SUN), qty=2)]
    old = ota.quote(VENUE, items)
    assert old.amount_fen == 2 * 9500
    before = next(s for s in ota.availability(VENUE, SUN) if s.slot_id == slot(SUN))
    priced.set_prices(VENUE, "adult", [DatePrice("weekend", "ota", 9900), *TABLE[:2]])
    try:
        e = api_error(ota.hold, VENUE, items, quote_id=old.quote_id)
        assert (e.code, e.reason, e.field) == (grpc.StatusCode.FAILED_PRECONDITION, "QUOTE_CHANGED",
                                               "quote_id")
        after = next(s for s in ota.availability(VENUE, SUN) if s.slot_id == slot(SUN))
        assert (after.held, after.sold, after.remaining) == (before.held, before.sold, before.remaining)
        # a new quote says the new price, and holds
        new = ota.quote(VENUE, items)
        assert new.lines[0].unit_price_fen == 9900 and new.quote_id != old.quote_id
        h = ota.hold(VENUE, items, quote_id=new)
        assert h.amount_fen == 2 * 9900
        ota.release(h)
    finally:
        priced.set_prices(VENUE, "adult", TABLE)


def test_a_quote_holds_only_its_own_items_and_channel(conns, priced):
    ota = ChannelClient(conns["demo-ota"])
    window = ChannelClient(conns["demo-window"])
    items = [Item("adult", slot(MON), qty=2)]
    q = ota.quote(VENUE, items)
    for call in (lambda: ota.hold(VENUE, [Item("adult", slot(MON), qty=3)], quote_id=q.quote_id),
                 lambda: ota.hold(VENUE, [Item("adult", slot(SUN), qty=2)], quote_id=q.quote_id),
                 lambda: window.hold(VENUE, items, quote_id=q.quote_id)):
        e = api_error(call)
        assert (e.code, e.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "QUOTE_CHANGED")
    e = api_error(ota.hold, VENUE, items, quote_id="not-a-quote")
    assert (e.code, e.field) == (grpc.StatusCode.INVALID_ARGUMENT, "quote_id")
    mon = next(s for s in ota.availability(VENUE, MON) if s.slot_id == slot(MON))
    assert mon.held == 0


def test_a_window_sells_a_weekend_at_the_weekend_price(conns, priced):
    till = Till(conns["demo-window"], VENUE, SandboxPaymentAdapter(seed=3), station="window-9")
    till.open_shift("bob", float_fen=10_000)
    cart = till.cart().add("adult", slot(SUN), qty=2)
    assert till.quote(cart) == 2 * 10000                # (any channel, weekend): not the base 8000
    sale = till.checkout(cart, "cash", tendered_fen=20_000)
    assert sale.order.amount_fen == 20_000 and sale.order.channel == "window"
    assert [ln.unit_price_fen for ln in sale.order.lines] == [10000]
    weekday = till.cart().add("adult", slot(MON))
    assert till.quote(weekday) == 8000                  # no weekday entry, no window price: base


def test_bad_input_is_refused_and_changes_nothing(server, conns, priced):
    op, admin = priced, AdminClient(conns["admin"])
    ota = ChannelClient(conns["demo-ota"])
    items = [Item("adult", slot(d)) for d in (MON, WED, FRI, SAT, SUN)]
    prices = [ln.unit_price_fen for ln in ota.quote(VENUE, items).lines]
    calendar = op.calendar(VENUE, MON, SUN)
    # another venue, with a product the operator (scoped to westlake) may not price
    admin.create_venue("hills", "Hills")
    admin.create_zone("hills", "top")
    admin.create_product("hills", "hike", ["top"], price_fen=5000)
    hills = [SlotSpec(f"top-{d:%m%d}", "top", d, demo.local_time(d, 9), demo.local_time(d, 17), 50)
             for d in (MON, SUN)]
    assert admin.create_slots("hills", hills) == 2
    hikes = [Item("hike", s.slot_id) for s in hills]
    admin_sales = ChannelClient(conns["admin"])
    assert [ln.unit_price_fen for ln in admin_sales.quote("hills", hikes).lines] == [5000, 5000]

    def refused(fn, *args, **kw) -> tuple:
        e = api_error(fn, *args, **kw)
        return e.code.name, e.reason, e.field

    INVALID = "INVALID_ARGUMENT"
    assert refused(op.set_calendar, VENUE, {MON: "holiday", SUN: "festival"}) == \
        (INVALID, INVALID, "days[1].date_type")
    assert refused(op.set_calendar, VENUE, {"2027-1-5": "holiday"}) == (INVALID, INVALID, "days[0].date")
    assert refused(op.set_calendar, VENUE, {"2027-02-30": "holiday"}) == (INVALID, INVALID, "days[0].date")
    assert refused(op.set_calendar, VENUE, {}) == (INVALID, INVALID, "days")
    assert refused(op.calendar, VENUE, "28/12/2026") == (INVALID, INVALID, "date_from")
    assert refused(op.calendar, VENUE, SUN, MON) == (INVALID, INVALID, "date_to")
    assert refused(op.set_prices, VENUE, "adult", [DatePrice("weekend", "", 1),
                                                   DatePrice("festival", "", 1)]) == \
        (INVALID, INVALID, "prices[1].date_type")
    assert refused(op.set_prices, VENUE, "adult", [DatePrice("weekend", "", -1)]) == \
        (INVALID, INVALID, "prices[0].price_fen")
    assert refused(op.set_prices, VENUE, "adult", [DatePrice("weekend", "ota", 1),
                                                   DatePrice("weekend", "ota", 2)]) == \
        (INVALID, INVALID, "prices[1]")
    assert refused(op.set_prices, VENUE, "adult", [DatePrice("weekend", "no such!", 1)]) == \
        (INVALID, INVALID, "prices[0].channel")
    # another venue's product, named under this venue: not found; under its own venue: not
    # the operator's
    assert refused(op.set_prices, VENUE, "hike", [DatePrice("weekend", "", 1)]) == \
        ("NOT_FOUND", "NOT_FOUND", "product_id")
    assert refused(op.set_prices, "hills", "hike", [DatePrice("weekend", "", 1)])[:1] == \
        ("PERMISSION_DENIED",)
    assert refused(op.set_calendar, "hills", {MON: "holiday"})[::2] == ("PERMISSION_DENIED", "venue_id")
    # a gate key may not price anything, nor a channel
    gate = AdminClient(conns["demo-gate"])
    assert refused(gate.set_prices, VENUE, "adult", [DatePrice("weekend", "", 1)])[:2] == \
        ("PERMISSION_DENIED", "ROLE_NOT_ALLOWED")
    assert refused(AdminClient(conns["demo-ota"]).set_calendar, VENUE, {SUN: "weekday"})[:2] == \
        ("PERMISSION_DENIED", "ROLE_NOT_ALLOWED")
    # nothing changed: prices, calendar, the other venue's product
    assert [ln.unit_price_fen for ln in ota.quote(VENUE, items).lines] == prices
    assert op.calendar(VENUE, MON, SUN) == calendar
    assert admin.calendar("hills", MON) == [CalendarDay(MON, "weekday", False)]
    assert [ln.unit_price_fen for ln in admin_sales.quote("hills", hikes).lines] == [5000, 5000]


def test_price_set_up_is_audited(server, conns, priced):
    admin = AdminClient(conns["admin"])
    recs = [r for r in admin.audit_records(0, principal_id="demo-operator")]
    methods = {r.method for r in recs if r.result == "OK"}
    assert {"/turnstile.v1.AdminService/SetCalendar", "/turnstile.v1.AdminService/SetPrices"} <= methods
