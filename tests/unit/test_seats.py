"""Theatre seats (issue 17): seat maps, sessions, seats held by name (all or nothing) or
the best available (adjacent seats of one row in the best price zone that has them, the
fewest single seats left, front-most, nearest the middle), priced by zone, sold with the
hold, freed by a release, an expiry or a refund; a seat never held or sold twice.

The hall of these tests (HALL), read left to right, seats numbered from 1 along a row
(x counted, _ not): row A `BBAAxAABB_BBAAAABB` has B1 B2 A3 A4 x5 A6 A7 B8 B9, an aisle,
B10 B11 A12 A13 A14 A15 B16 B17. Zone A costs 380 yuan, B 280. TODAY (tests/conftest.py)
is Monday 2026-11-23, the show at 19:00 venue time."""
from __future__ import annotations

import pytest

from turnstile.engine import (FailedPrecondition, HoldItem, InvalidArgument, NotFound, Shard,
                              SoldOut, cmd, demo)
from turnstile.engine.errors import SeatTaken

from tests.conftest import TODAY, tree

V = demo.VENUE
ROW = "BBAAxAABB_BBAAAABB"
HALL = [{"section": "stalls", "row": r, "layout": ROW} for r in "ABC"]
ZONES = [{"zone": "A", "price_fen": 38000, "name": "front"}, {"zone": "B", "price_fen": 28000}]
SEATS_PER_ROW = 16                                    # 17 numbered, one never sold


def _show(shard, slot="show-1", hall=HALL):
    start = demo.local_time(TODAY, 19)
    shard.run_many([cmd.zone(V, "theatre", "Theatre"), cmd.product(V, "show", ["theatre"], price_fen=1),
                    cmd.slots([{"id": slot, "zone": "theatre", "day": TODAY, "start": start,
                                "end": start + 7200, "capacity": 1}]),
                    cmd.seat_map(V, "hall", hall, ZONES)])
    return shard.run(cmd.seating(V, slot, "hall"))


@pytest.fixture
def hall(shard):
    _show(shard)
    return shard


def _hold(shard, qty=0, seats=(), channel="web"):
    item = HoldItem("show", ("show-1",), qty or len(seats), 1, tuple(seats))
    return shard.run(cmd.hold(channel, V, [item]))


def _states(shard) -> dict[str, str]:
    return {name: state for name, _, state in shard.session_seats(V, "show-1")[1]}


def _taken(shard) -> set[str]:
    return {n for n, s in _states(shard).items() if s in ("held", "sold")}


# -- maps and sessions -----------------------------------------------------------------------
@pytest.mark.parametrize("rows, zones, field", [
    ([{"section": "s", "row": "A", "layout": "AAQ"}], ZONES, "rows[0].layout"),        # no zone Q
    ([{"section": "s", "row": "A", "layout": "AA a"}], ZONES, "rows[0].layout"),
    ([{"section": "s", "row": "A", "layout": ""}], ZONES, "rows[0].layout"),
    ([{"section": "s", "row": "A", "layout": "AA"}] * 2, ZONES, "rows[1].row"),
    ([{"section": "s", "row": "A", "layout": "AA", "colour": 1}], ZONES, "rows[0]"),
    ([], ZONES, "rows"),
    ([{"section": "s", "row": "A", "layout": "AA"}], [], "zones"),
    ([{"section": "s", "row": "A", "layout": "AA"}], [{"zone": "AB", "price_fen": 1}], "zones[0].zone"),
    ([{"section": "s", "row": "A", "layout": "AA"}], [{"zone": "A", "price_fen": -1}], "zones[0].price_fen"),
    ([{"section": "s", "row": f"R{i}", "layout": "A" * 200} for i in range(101)], ZONES, "rows"),
])
def test_a_bad_seat_map_is_refused_naming_the_field(shard, rows, zones, field):
    before = tree(shard.storage.path)
    with pytest.raises(InvalidArgument) as e:
        shard.run(cmd.seat_map(V, "hall", rows, zones))
    assert e.value.field == field
    assert tree(shard.storage.path) == before


def test_a_session_sells_its_seats_and_nothing_else(hall):
    s = hall.availability(V, TODAY)
    show = next(x for x in s if x.slot == "show-1")
    assert show.capacity == 3 * SEATS_PER_ROW                  # the x seats are never sold
    for c, field in ((cmd.slot_capacity("show-1", 100, venue=V), "slot"),
                     (cmd.allotment("show-1", "ota", 10, venue=V), "slot"),
                     (cmd.seating(V, "show-1", "hall"), "slot")):
        with pytest.raises(FailedPrecondition) as e:
            hall.run(c)
        assert e.value.field == field
    with pytest.raises(NotFound) as e:
        hall.run(cmd.seating(V, "show-1", "nosuch"))
    assert e.value.field == "seat_map"
    with pytest.raises(FailedPrecondition):                    # a map with sessions stays as it is
        hall.run(cmd.seat_map(V, "hall", HALL[:1], ZONES))


def test_seats_are_set_before_the_first_sale(shard):
    start = demo.local_time(TODAY, 19)
    shard.run_many([cmd.zone(V, "theatre", "Theatre"), cmd.product(V, "show", ["theatre"], price_fen=1),
                    cmd.slots([{"id": "show-9", "zone": "theatre", "day": TODAY, "start": start,
                                "end": start + 7200, "capacity": 10}]),
                    cmd.seat_map(V, "hall", HALL, ZONES)])
    shard.run(cmd.hold("web", V, [HoldItem("show", ("show-9",))]))
    with pytest.raises(FailedPrecondition) as e:
        shard.run(cmd.seating(V, "show-9", "hall"))
    assert e.value.field == "slot"


# -- holding seats ---------------------------------------------------------------------------
def test_named_seats_are_held_all_or_nothing_and_priced_by_zone(hall):
    h = _hold(hall, seats=["stalls-A-3", "stalls-A-1"])
    assert h.amount_fen == 38000 + 28000
    assert sorted((i.unit_price_fen, i.qty) for i in h.items) == [(28000, 1), (38000, 1)]
    assert _taken(hall) == {"stalls-A-3", "stalls-A-1"}
    before = tree(hall.storage.path)
    with pytest.raises(SeatTaken) as e:
        _hold(hall, seats=["stalls-B-1", "stalls-A-3"])
    assert (e.value.code, e.value.field) == ("SEAT_TAKEN", "items[0].seats[1]")
    with pytest.raises(SeatTaken):
        _hold(hall, seats=["stalls-B-5"])                      # never sold
    for seats, exc, field in ((["stalls-Z-1"], NotFound, "items[0].seats[0]"),
                              (["stalls-B-1", "stalls-B-1"], InvalidArgument, "items[0].seats[1]")):
        with pytest.raises(exc) as e:
            _hold(hall, seats=seats)
        assert e.value.field == field
    assert tree(hall.storage.path) == before and _taken(hall) == {"stalls-A-3", "stalls-A-1"}


def test_the_best_available_are_adjacent_in_the_best_zone_leaving_no_single_seat(hall):
    # row A's zone A: A3 A4 | x | A6 A7 | aisle | A12-A15 (columns 2-3, 5-6, 11-14 of 0..17,
    # the middle at 8.5). Two persons: no pair leaves a single seat, so the one nearest the
    # middle: A6 A7 (columns 5+6 = 11, 6 from 17), then A12 A13 (23: 6 from 17) before
    # A3 A4 (5: 12 from 17)
    assert _seats(_hold(hall, 2)) == ["stalls-A-6", "stalls-A-7"]
    assert _seats(_hold(hall, 2)) == ["stalls-A-12", "stalls-A-13"]
    # three: row A has no three adjacent left in zone A; in row B every three leave a
    # single seat: B12-B14 (nearer the middle than B13-B15)
    assert _seats(_hold(hall, 3)) == ["stalls-B-12", "stalls-B-13", "stalls-B-14"]
    # four: only row C's A12-A15 are four adjacent seats of zone A
    assert _seats(_hold(hall, 4)) == ["stalls-C-12", "stalls-C-13", "stalls-C-14", "stalls-C-15"]
    # five: nowhere five adjacent (zone B's pairs are split by the x seat and the aisle):
    # zone A's first free seats in row order
    assert _seats(_hold(hall, 5)) == ["stalls-A-3", "stalls-A-4", "stalls-A-14", "stalls-A-15",
                                      "stalls-B-3"]
    assert len(_taken(hall)) == 16


def _seats(h) -> list[str]:
    return [s for it in h.items for s in it.seats]


def _zone(shard, name: str) -> str:
    return {n: z for n, z, _ in shard.session_seats(V, "show-1")[1]}[name]


def test_a_quote_shows_the_best_seats_and_their_price_and_takes_none(hall):
    q = hall.quote(V, "web", [{"product": "show", "slots": ["show-1"], "qty": 2}])
    assert ([it.seats for it in q.items], q.amount_fen) == ([("stalls-A-6", "stalls-A-7")], 76000)
    assert _taken(hall) == set()


# -- the life of a seat ------------------------------------------------------------------------
def test_seats_held_sold_freed_and_each_ticket_has_its_own(hall, clock):
    h = _hold(hall, seats=["stalls-A-3", "stalls-A-4"])
    hall.run(cmd.release(h.hold_id, "web"))
    assert _taken(hall) == set()
    h = hall.run(cmd.hold("web", V, [HoldItem("show", ("show-1",), 2)], ttl_s=60))
    assert [it.seats for it in h.items] == [("stalls-A-6", "stalls-A-7")]
    clock.t += 61
    one = _seats(_hold(hall, 1))                            # the next batch expires it
    assert one == ["stalls-A-12"]                           # a single seat that leaves no single
    assert (_states(hall)["stalls-A-6"], _states(hall)["stalls-A-7"]) == ("free", "free")
    h = _hold(hall, seats=["stalls-B-1", "stalls-B-3"])
    sold = hall.run(cmd.confirm(h.hold_id, "s-1", "web", method="cash", amount_fen=h.amount_fen))
    assert sorted(t.seat for t in sold.tickets) == ["stalls-B-1", "stalls-B-3"]
    assert {hall.seat_of(t.ticket_id) for t in sold.tickets} == {"stalls-B-1", "stalls-B-3"}
    assert _states(hall)["stalls-B-1"] == "sold" and _states(hall)["stalls-A-12"] == "held"
    by_seat = {t.seat: t.ticket_id for t in sold.tickets}
    with pytest.raises(FailedPrecondition) as e:
        hall.run(cmd.change("s-1", "c1", ["show-1"], [by_seat["stalls-B-1"]], channel="web"))
    assert e.value.field == "tickets"
    hall.run(cmd.refund("s-1", "r1", [by_seat["stalls-B-1"]], channel="web"))
    assert _states(hall)["stalls-B-1"] == "free" and _states(hall)["stalls-B-3"] == "sold"
    assert hall.seat_of(by_seat["stalls-B-1"]) == ""
    assert _seats(_hold(hall, seats=["stalls-B-1"])) == ["stalls-B-1"]     # sold again
    assert hall.check(replay=True) == []


def test_seats_replay_and_snapshot_to_the_same_hall(hall, shard_path, clock):
    h = _hold(hall, 3)
    sold = hall.run(cmd.confirm(h.hold_id, "s-1", "web", method="cash", amount_fen=h.amount_fen))
    hall.run(cmd.refund("s-1", "r1", [sold.tickets[1].ticket_id], channel="web"))
    _hold(hall, seats=["stalls-C-1"])
    seen = _states(hall)
    hall.close(snapshot=False)
    for snap in (False, True):
        s = Shard.open(shard_path, clock=clock)
        assert {n: st for n, _, st in s.session_seats(V, "show-1")[1]} == seen
        assert s.check(replay=True) == []
        s.close(snapshot=snap)


def test_a_show_sells_out_seat_by_seat_and_no_seat_twice(hall):
    got, n = [], 0
    while True:
        try:
            h = _hold(hall, 1 + n % 3)
        except SoldOut:
            break
        got += _seats(h)
        hall.run(cmd.confirm(h.hold_id, f"o-{n}", "web", method="cash", amount_fen=h.amount_fen))
        n += 1
    assert len(got) == len(set(got)) == 3 * SEATS_PER_ROW       # the whole hall, each seat once
    show = next(x for x in hall.availability(V, TODAY) if x.slot == "show-1")
    assert (show.sold, show.held) == (3 * SEATS_PER_ROW, 0)
    assert hall.check() == []


def test_seats_named_for_a_slot_without_seats_are_refused(hall):
    with pytest.raises(InvalidArgument) as e:
        hall.run(cmd.hold("web", V, [HoldItem("adult", (demo.slot_id("main", TODAY, 10),), seats=("s-A-1",))]))
    assert e.value.field == "items[0].seats"
