"""Merchants inside a venue over the API (issue 17, secondary consumption): the boat
company of the demo (westlake-boats: it runs the boat zone, whose gate pier-1 is its
terminal, and the till pier-till; its principal demo-boats) redeems a package's boat ride
once, online and offline, and is refused the second time; it sells its cruise at its own
till through the payment adapter, counted at that till and settled to it; every scope
edge and bad value is refused and changes nothing. Real server, real clients.

The contract (README "Merchants", docs/ROLES.md): a merchant's zone admits each person
of a ticket once, ever; its principals scan at its zones' gates alone, sell as channel
`westlake-boats` only products of its zones, open shifts only at its stations, and read
their own settlement statement (what the split owes them), not the venue's totals. The
demo's split: 40 yuan of each combo person to the boats, and 85 % of a cruise.

The server's clock is the morning of Tuesday 2026-12-29; the terminal's is 09:05 (the
9 o'clock boat)."""
from __future__ import annotations

import datetime as dt

import pytest

from turnstile.clients.admin import AdminClient
from turnstile.clients.base import Connection
from turnstile.clients.channel import ChannelClient, Item
from turnstile.clients.gate import GateClient
from turnstile.clients.pos import SandboxPaymentAdapter, Till
from turnstile.clients.reports import ReportsClient
from turnstile.engine import demo
from tests.integration.conftest import refused, start_server, stop_server

V = demo.VENUE
DAY = dt.date(2026, 12, 29)
BOATS = "westlake-boats"
COMBO = [demo.slot_id("main", DAY, 8), demo.slot_id("pagoda", DAY, 9), demo.slot_id("boat", DAY, 9)]
CRUISE = demo.slot_id("boat", DAY, 9)
NINE = demo.local_time(DAY, 9, 5)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = start_server(str(tmp_path_factory.mktemp("merchants")), DAY)
    yield s
    stop_server(s)


@pytest.fixture(scope="module")
def conns(server):
    out = {name: Connection(server.address, server.keys[name])
           for name in ("admin", "demo-boats", "demo-ota", "demo-window", "demo-gate", "demo-finance",
                        "demo-operator")}
    yield out
    for c in out.values():
        c.close()


def combos(conns, n: int, order: str) -> list[str]:
    o = ChannelClient(conns["demo-ota"]).buy(V, [Item("combo", COMBO, n)], order)
    return [t.code for t in o.tickets]


def terminal(server, tmp_path, name: str, gate: str = "pier-1") -> GateClient:
    return GateClient(server.address, server.keys["demo-boats"], gate, V, state_dir=str(tmp_path / name),
                      clock=lambda: NINE, retry_online_s=float("inf"))


def test_a_package_boat_ride_is_redeemed_once_at_the_merchant(server, conns, tmp_path):
    codes = combos(conns, 4, "ota-boat-1")
    pier = terminal(server, tmp_path, "pier")
    try:
        first = pier.verify(codes[0])
        assert (first.reason, first.offline, first.persons, first.product_id) == ("OK", False, 1, "combo")
        assert pier.verify(codes[0]).reason == "ALREADY_USED"       # the second time: refused
        # the park's own gates still let the combo in (the ride is one part of it)
        park = GateClient(server.address, server.keys["demo-gate"], "north-1", V,
                          state_dir=str(tmp_path / "park"), clock=lambda: demo.local_time(DAY, 8, 5))
        try:
            assert park.verify(codes[0]).reason == "OK"
        finally:
            park.close()

        # offline: the terminal decides from its bundle, where the ride had online is known
        assert pier.maintain()
        assert pier.bundle_age() is not None
        pier.online = False
        assert [(d.reason, d.offline) for d in (pier.verify(codes[0]), pier.verify(codes[1]),
                                                pier.verify(codes[1]))] \
            == [("ALREADY_USED", True), ("OK", True), ("ALREADY_USED", True)]
        assert pier.pending() == 3
        # back online: the queue goes up as facts, and the server knows the ride was had
        pier.online = True
        assert pier.maintain() and pier.pending() == 0
        assert (pier.verify(codes[1]).reason, pier.verify(codes[2]).reason) == ("ALREADY_USED", "OK")
        # a redeemed combo is used: not refunded (the ride was had)
        assert refused(ChannelClient(conns["demo-ota"]).refund, V, "ota-boat-1", [first.ticket_id])[1] \
            == "TICKET_NOT_REFUNDABLE"
    finally:
        pier.close()


def test_the_merchant_terminal_scans_only_at_its_own_gates(server, conns, tmp_path):
    code = combos(conns, 1, "ota-boat-2")[0]
    for gate in ("north-1", "pagoda-1"):
        t = terminal(server, tmp_path, f"t-{gate}", gate)
        try:
            assert refused(t.verify, code)[::2] == ("PERMISSION_DENIED", "gate_id")
        finally:
            t.close()
    # nothing was scanned: the ride is still there
    pier = terminal(server, tmp_path, "pier-2")
    try:
        assert pier.verify(code).reason == "OK"
    finally:
        pier.close()


def test_the_merchant_sells_its_cruise_at_its_till_counted_there_and_settled_to_it(server, conns):
    before = ReportsClient(conns["demo-finance"]).settlement(V, DAY, DAY, partner=BOATS)
    combos(conns, 2, "ota-boat-3")
    till = Till(conns["demo-boats"], V, SandboxPaymentAdapter(seed=7), station="pier-till")
    till.open_shift("Li Wei")
    sale = till.checkout(till.cart().add("cruise", CRUISE, 2), "wechat", auth_code="134567890123456789")
    assert (sale.order.amount_fen, len(sale.tickets), sale.order.channel) == (12000, 2, BOATS)
    report = till.close_shift()
    assert report.net_fen == 12000

    fin = ReportsClient(conns["demo-finance"])
    rows = fin.revenue(V, DAY, DAY, group_by=("channel", "station", "product")).rows
    mine = [(r.station_id, r.product_id, r.sold_persons, r.paid_fen) for r in rows if r.channel == BOATS]
    assert mine == [("pier-till", "cruise", 2, 12000)]
    after = fin.settlement(V, DAY, DAY, partner=BOATS)
    owed = {ln.product_id: (ln.persons, ln.amount_fen) for ln in after.partners[0].lines}
    was = {ln.product_id: (ln.persons, ln.amount_fen) for ln in before.partners[0].lines}
    assert owed["cruise"][0] - was.get("cruise", (0, 0))[0] == 2
    assert owed["cruise"][1] - was.get("cruise", (0, 0))[1] == 12000 * 85 // 100
    assert owed["combo"][1] - was["combo"][1] == 2 * 4000

    # the merchant reads its own statement, without the venue's totals
    own = ReportsClient(conns["demo-boats"]).settlement(V, DAY, DAY)
    assert [p.partner for p in own.partners] == [BOATS]
    assert own.partners[0].amount_fen == after.partners[0].amount_fen
    assert (own.net_fen, own.venue_fen) == (0, 0)
    assert refused(ReportsClient(conns["demo-boats"]).settlement, V, DAY, DAY, partner="leifeng-pagoda") \
        == ("PERMISSION_DENIED", "CHANNEL_NOT_ALLOWED", "partner")


def test_the_merchant_sells_nothing_else_and_nowhere_else(server, conns):
    boats = ChannelClient(conns["demo-boats"])
    stock = {s.slot_id: s.remaining for s in ChannelClient(conns["demo-ota"]).availability(V, DAY)}
    for product, slots in (("adult", demo.slot_id("main", DAY, 8)), ("combo", COMBO)):
        assert refused(boats.buy, V, [Item(product, slots, 1)], f"b-{product}", method="cash",
                       amount_fen=0)[::2] == ("PERMISSION_DENIED", "items[0].product_id")
        assert refused(boats.quote, V, [Item(product, slots, 1)])[::2] \
            == ("PERMISSION_DENIED", "items[0].product_id")
    assert {s.slot_id: s.remaining for s in ChannelClient(conns["demo-ota"]).availability(V, DAY)} == stock
    # its till is its own: not at the window's station, and the window not at its till
    assert refused(Till(conns["demo-boats"], V, SandboxPaymentAdapter(), station="window-1").open_shift,
                   "Li Wei")[::2] == ("PERMISSION_DENIED", "station_id")
    assert refused(Till(conns["demo-window"], V, SandboxPaymentAdapter(), station="pier-till").open_shift,
                   "Wang Fang")[::2] == ("PERMISSION_DENIED", "station_id")
    # another channel's order is not the merchant's to see or refund
    combos(conns, 1, "ota-boat-4")
    assert refused(boats.get_order, V, "ota-boat-4")[0] == "NOT_FOUND"
    assert refused(boats.refund, V, "ota-boat-4", [])[0] == "NOT_FOUND"
    # the operator's set-up stays the operator's
    assert refused(AdminClient(conns["demo-boats"]).set_merchant, V, BOATS, zones=["boat", "main"])[0] \
        == "PERMISSION_DENIED"
    boats = {m.merchant_id: list(m.zone_ids) for m in AdminClient(conns["demo-operator"]).catalog(V).merchants}
    assert boats[BOATS] == ["boat"]


def test_another_venue_is_out_of_the_merchants_scope(server, conns, tmp_path):
    admin = AdminClient(conns["admin"])
    admin.create_venue("hills", "Fragrant Hills")
    admin.create_zone("hills", "lift", "Cable car")
    admin.create_gate("hills", "lift", "lift-1", mode="in")
    admin.set_merchant("hills", BOATS, zones=["lift"], stations=["lift-till"])   # the same id there
    t = GateClient(server.address, server.keys["demo-boats"], "lift-1", "hills",
                   state_dir=str(tmp_path / "lift"), clock=lambda: NINE)
    try:
        code = combos(conns, 1, "ota-boat-5")[0]
        assert refused(t.verify, code)[::2] == ("PERMISSION_DENIED", "venue_id")
    finally:
        t.close()
    assert refused(AdminClient(conns["demo-boats"]).catalog, "hills")[::2] == ("PERMISSION_DENIED", "venue_id")


@pytest.mark.parametrize("kw, field, status", [
    (dict(zones=["lake-bottom"]), "zone_ids[0]", "NOT_FOUND"),
    (dict(zones=["main", "main"]), "zone_ids[1]", "INVALID_ARGUMENT"),
    (dict(zones=["boat"]), "zone_ids[0]", "FAILED_PRECONDITION"),          # the boats'
    (dict(stations=["pier-till"]), "station_ids[0]", "FAILED_PRECONDITION"),
    (dict(stations=["till 1"]), "station_ids[0]", "INVALID_ARGUMENT"),
    (dict(stations=[f"t{i}" for i in range(101)]), "station_ids", "INVALID_ARGUMENT"),
    (dict(merchant_id=""), "merchant_id", "INVALID_ARGUMENT"),
    (dict(merchant_id=V), "merchant_id", "INVALID_ARGUMENT"),
    (dict(name="x" * 65), "name", "INVALID_ARGUMENT"),
    (dict(venue="atlantis"), "venue_id", "NOT_FOUND"),
])
def test_bad_merchants_are_refused_by_field_and_change_nothing(server, conns, kw, field, status):
    op = AdminClient(conns["demo-operator"])
    before = op.catalog(V).merchants
    args = {"venue": V, "merchant_id": "noodles", "name": "Noodle bar", **kw}
    venue, mid = args.pop("venue"), args.pop("merchant_id")
    got = refused(op.set_merchant, venue, mid, **args)
    assert (got[0], got[2]) == (status, field)
    assert op.catalog(V).merchants == before


def test_an_operator_sets_a_restaurant_and_its_staff_redeem_meals(server, conns, tmp_path):
    op = AdminClient(conns["demo-operator"])
    op.create_zone(V, "canteen", "Lakeside canteen")
    op.create_gate(V, "canteen", "canteen-door", mode="in")
    m = op.set_merchant(V, "canteen-co", name="Lakeside Canteen", zones=["canteen"], stations=["canteen-till"])
    assert (m.merchant_id, list(m.zone_ids), list(m.station_ids)) == ("canteen-co", ["canteen"], ["canteen-till"])
    admin = AdminClient(conns["admin"])
    admin.create_principal("canteen-staff", "merchant", venue_ids=[V], channel="canteen-co")
    key = admin.create_api_key("canteen-staff").secret
    code = combos(conns, 1, "ota-boat-6")[0]
    t = GateClient(server.address, key, "canteen-door", V, state_dir=str(tmp_path / "canteen"), clock=lambda: NINE)
    try:
        assert t.verify(code).reason == "WRONG_ZONE"            # the combo has no meal
        assert refused(t.verify, code, gate_id="pier-1")[::2] == ("PERMISSION_DENIED", "gate_id")
    finally:
        t.close()
    # a merchant principal needs its venues and its merchant id
    assert refused(admin.create_principal, "nobody-staff", "merchant", venue_ids=[V])[::2] \
        == ("INVALID_ARGUMENT", "channel")
    assert refused(admin.create_principal, "nowhere-staff", "merchant", channel="canteen-co")[::2] \
        == ("INVALID_ARGUMENT", "venue_ids")
