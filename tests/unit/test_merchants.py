"""Merchants inside a venue (issue 17, secondary consumption), on a real shard. The
contract (engine/state/merchants.py, README): a zone a merchant runs is a consumption
point -- each person of a ticket is admitted there once, ever, whatever the product's
re-entry rule -- and a zone no merchant runs keeps the product's rule; a merchant's
channel sells only products of its zones and opens shifts only at its stations, and a
station of a merchant opens to no other channel; what the split owes the merchant is
in its settlement. The demo's boat company (westlake-boats) runs the boat zone (gate
pier-1) and the till pier-till; the combo (main, pagoda, boat) re-enters."""
from __future__ import annotations

import dataclasses

import pytest

from turnstile.engine import (Direction, FailedPrecondition, HoldItem, InvalidArgument, NotFound,
                              PermissionDenied, Shard, cmd, demo)
from turnstile.clients.gate import GateClient, _Bundle
from turnstile.engine.model import EntryRule, GateMode
from turnstile.server.services import bundle_message

from tests.conftest import TODAY, sell, tree

V = demo.VENUE
BOATS = "westlake-boats"
COMBO = (demo.slot_id("main", TODAY, 10), demo.slot_id("pagoda", TODAY, 10), demo.slot_id("boat", TODAY, 11))
CRUISE = (demo.slot_id("boat", TODAY, 11),)
IN, OUT = Direction.IN, Direction.OUT


def scan(shard, code, gate, direction=IN, persons=0, hour=11, minute=5):
    return shard.run(cmd.verify(code, gate, direction, persons=persons,
                                at=demo.local_time(TODAY, hour, minute)))


def reasons(shard, code, moves):
    return [scan(shard, code, g, d).reason.name for g, d in moves]


@pytest.fixture
def piers(shard):
    """A second pier gate that scans both ways, so a rider could leave and come back."""
    shard.run(cmd.gate("boat", "pier-2", GateMode.BOTH))
    return shard


def test_a_boat_ride_is_redeemed_once_where_the_park_lets_the_combo_back_in(piers):
    code = sell(piers, "combo", COMBO).tickets[0].code
    # the pagoda (no merchant) keeps the combo's re-entry
    assert reasons(piers, code, [("pagoda-1", IN), ("pagoda-1", OUT), ("pagoda-1", IN)]) \
        == ["OK", "OK", "OK_REENTRY"]
    # the boat is the merchant's: once, at either pier, also after getting off
    assert reasons(piers, code, [("pier-2", IN), ("pier-2", OUT), ("pier-2", IN), ("pier-1", IN)]) \
        == ["OK", "OK", "ALREADY_USED", "ALREADY_USED"]
    # and on no later day either (a pass valid for days would not ride again)
    assert scan(piers, code, "pier-1", hour=16).reason.name == "ALREADY_USED"


def test_a_group_rides_one_person_at_a_time_and_each_once(piers):
    piers.run(cmd.product(V, "family", ["main", "boat"], price_fen=20000, max_group=4,
                          rule=EntryRule(reentry=True)))
    code = sell(piers, "family", (COMBO[0], COMBO[2]), group=3).tickets[0].code
    assert [(r.reason.name, r.persons) for r in (scan(piers, code, "pier-1", persons=2),
                                                 scan(piers, code, "pier-1", persons=1),
                                                 scan(piers, code, "pier-1", persons=1))] \
        == [("OK", 2), ("OK", 1), ("ALREADY_USED", 0)]


def test_a_zone_taken_off_its_merchant_follows_the_product_again(piers):
    piers.run(cmd.merchant(V, BOATS, zones=[], stations=["pier-till"]))
    code = sell(piers, "combo", COMBO).tickets[0].code
    assert reasons(piers, code, [("pier-2", IN), ("pier-2", OUT), ("pier-2", IN)]) == ["OK", "OK", "OK_REENTRY"]
    piers.run(cmd.merchant(V, BOATS, zones=["boat"]))
    code = sell(piers, "combo", COMBO).tickets[0].code
    assert reasons(piers, code, [("pier-2", IN), ("pier-2", OUT), ("pier-2", IN)]) == ["OK", "OK", "ALREADY_USED"]


def test_a_combo_whose_ride_was_had_is_not_refunded(shard):
    sold = sell(shard, "combo", COMBO, order="o-ride")
    assert scan(shard, sold.tickets[0].code, "pier-1").reason.name == "OK"
    with pytest.raises(Exception) as e:
        shard.run(cmd.refund("o-ride", "r1", [], channel="web"))
    assert getattr(e.value, "code", "") == "TICKET_NOT_REFUNDABLE"


def test_the_merchant_sells_only_what_it_runs(shard):
    h = shard.run(cmd.hold(BOATS, V, [HoldItem("cruise", CRUISE, 2)]))
    assert h.amount_fen == 2 * 6000
    for product, slots in (("adult", (COMBO[0],)), ("combo", COMBO)):
        before = shard.availability(V, TODAY, TODAY)
        with pytest.raises(PermissionDenied) as e:
            shard.run(cmd.hold(BOATS, V, [HoldItem("cruise", CRUISE, 1), HoldItem(product, slots, 1)]))
        assert e.value.field == "items[1].product"
        assert shard.availability(V, TODAY, TODAY) == before
        with pytest.raises(PermissionDenied):
            shard.quote(V, BOATS, [{"product": product, "slots": list(slots), "qty": 1}])
    # anyone else sells the cruise too (its split still pays the merchant)
    assert shard.run(cmd.hold("window", V, [HoldItem("cruise", CRUISE, 1)])).amount_fen == 6000


def test_a_merchants_till_is_its_own(shard):
    for station, channel in (("pier-till", "window"), ("window-1", BOATS), ("pier-till", "admin")):
        with pytest.raises(PermissionDenied) as e:
            shard.run(cmd.open_shift(V, station, f"s-{station}-{channel}", channel=channel))
        assert e.value.field == "station"
    assert shard.run(cmd.open_shift(V, "pier-till", "boat-am", channel=BOATS, principal="p"))["station"] \
        == "pier-till"
    assert shard.run(cmd.open_shift(V, "window-1", "win-am", channel="window", principal="w"))["station"] \
        == "window-1"


def test_the_merchants_sales_are_counted_at_its_till_and_settled_to_it(shard):
    shard.run(cmd.open_shift(V, "pier-till", "boat-am", channel=BOATS, principal="p"))
    h = shard.run(cmd.hold(BOATS, V, [HoldItem("cruise", CRUISE, 2)]))
    shard.run(cmd.confirm(h.hold_id, "b-1", BOATS, method="wechat", amount_fen=12000, shift="boat-am",
                          principal="p"))
    sell(shard, "combo", COMBO, qty=3)
    rows, total = shard.revenue(V, TODAY, TODAY, "day", ("channel", "station", "product"))
    mine = [(k["product"], v) for _, k, v in rows if k["channel"] == BOATS]
    assert [(p, v[1], v[4]) for p, v in mine] == [("cruise", 2, 12000)]        # persons, paid
    assert [k["station"] for _, k, _ in rows if k["channel"] == BOATS] == ["pier-till"]
    partners, net_fen, venue_fen = shard.settlement(V, TODAY, TODAY, BOATS)
    boats, = partners
    assert {ln["product"]: (ln["persons"], ln["amount_fen"]) for ln in boats["lines"]} \
        == {"cruise": (2, 12000 * 85 // 100), "combo": (3, 3 * 4000)}
    assert boats["amount_fen"] == 10200 + 12000
    assert shard.shift(V, "boat-am")["methods"] == [["wechat", 1, 12000, 0, 0]]


@pytest.mark.parametrize("args, field, error", [
    (dict(zones=["nowhere"]), "zones[0]", NotFound),
    (dict(zones=["main", "main"]), "zones[1]", InvalidArgument),
    (dict(zones=[7]), "zones[0]", InvalidArgument),
    (dict(stations=["pier-till"]), "stations[0]", FailedPrecondition),   # the boats' till
    (dict(zones=["boat"]), "zones[0]", FailedPrecondition),              # the boats' zone
    (dict(stations=["bad id!"]), "stations[0]", InvalidArgument),
    (dict(stations=[f"s{i}" for i in range(101)]), "stations", InvalidArgument),
    (dict(id=V), "id", InvalidArgument),
    (dict(id=""), "id", InvalidArgument),
    (dict(venue="atlantis"), "venue", NotFound),
])
def test_bad_merchants_are_refused_by_field_and_change_nothing(shard, shard_path, args, field, error):
    before = tree(shard_path)
    base = {"venue": V, "id": "noodles", "name": "Noodle bar", "zones": [], "stations": []}
    c = cmd.merchant(V, "noodles")
    c.args = {**base, **args}
    with pytest.raises(error) as e:
        shard.run(c)
    assert e.value.field == field
    assert tree(shard_path) == before
    assert [m.id for m in shard.catalog(V).merchants] == [BOATS]


def test_an_unknown_field_is_refused(shard):
    c = cmd.merchant(V, "noodles")
    c.args["till"] = "x"
    with pytest.raises(InvalidArgument) as e:
        shard.run(c)
    assert e.value.field == "till"


@pytest.mark.parametrize("snapshot", [False, True])
def test_merchants_survive_a_reopen_by_journal_and_by_snapshot(shard, shard_path, clock, snapshot):
    shard.run(cmd.zone(V, "food", "Food court"))
    shard.run(cmd.gate("food", "food-door", GateMode.BOTH))
    shard.run(cmd.merchant(V, "noodles", name="Noodle bar", zones=["food"], stations=["noodle-till"]))
    code = sell(shard, "combo", COMBO).tickets[0].code
    assert scan(shard, code, "pier-1").reason.name == "OK"
    cat = shard.catalog(V).merchants
    shard.close(snapshot=snapshot)
    s = Shard.open(shard_path, clock=clock)
    try:
        assert s.catalog(V).merchants == cat
        assert [dataclasses.astuple(m)[1:] for m in cat] == [
            ("noodles", "Noodle bar", ("food",), ("noodle-till",)),
            (BOATS, "West Lake Boats", ("boat",), ("pier-till",))]
        assert scan(s, code, "pier-1").reason.name == "ALREADY_USED"
        fresh = sell(s, "combo", COMBO).tickets[0].code
        assert [scan(s, fresh, "pier-1").reason.name, scan(s, fresh, "pier-1").reason.name] \
            == ["OK", "ALREADY_USED"]
        with pytest.raises(PermissionDenied):
            s.run(cmd.open_shift(V, "noodle-till", "n1", channel="window"))
        assert s.check(replay=True) == []
    finally:
        s.close(snapshot=False)


def test_the_offline_bundle_marks_consumption_points_and_redeemed_codes(shard):
    t = sell(shard, "combo", COMBO).tickets[0]
    scan(shard, t.code, "pier-1")
    b = shard.offline_bundle(V)
    assert {z.id: z.once for z in b.zones} == {"main": False, "pagoda": False, "boat": True}
    assert t.ticket_id + 2 in b.sets["exhausted"]              # the boat is the combo's third zone
    assert t.ticket_id not in b.sets["exhausted"]              # the park lets it back in


def test_an_offline_terminal_refuses_a_second_ride_as_the_server_does(piers, tmp_path, clock):
    """The same scans given to the shard and to an offline terminal holding its bundle get
    the same answers: on, off, on again at a pier that scans both ways; a code ridden
    before the bundle was cut (and not inside: the rider got off) is refused too."""
    ridden = sell(piers, "combo", COMBO).tickets[0].code
    assert reasons(piers, ridden, [("pier-2", IN), ("pier-2", OUT)]) == ["OK", "OK"]
    code = sell(piers, "combo", COMBO).tickets[0].code
    gate = GateClient("127.0.0.1:9", "tsk_none", "pier-2", V, state_dir=str(tmp_path / "gate"),
                      clock=clock, max_bundle_age_s=1e9, retry_online_s=float("inf"))
    gate.bundle = _Bundle(bundle_message(piers.offline_bundle(V)))
    gate.online = False
    try:
        clock.at(TODAY, 11, 5)
        got = []
        for c, d in ((code, IN), (code, OUT), (code, IN), (ridden, IN)):
            server = piers.run(cmd.verify(c, "pier-2", d, at=clock.t))
            offline = gate.verify(c, direction=int(d))
            got.append((server.reason.name, offline.reason, offline.offline))
        assert got == [("OK", "OK", True), ("OK", "OK", True), ("ALREADY_USED", "ALREADY_USED", True),
                       ("ALREADY_USED", "ALREADY_USED", True)]
    finally:
        gate.close()
