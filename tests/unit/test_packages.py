"""Packages (套票, issue 13 promotions): a product made of a ticket plus extras with one
price and a recorded split of that price over its parts, each settled to a merchant. The
demo's combo (15000 fen: main park, pagoda, boat) is made a package here; expectations
from that contract: every order line of a package records parts that add up, to the fen,
to what the line was paid."""
from __future__ import annotations

import pytest

from turnstile.engine import (HoldItem, InvalidArgument, NotFound, PackagePart, PackageSplit, Shard, cmd,
                              demo)

from tests.conftest import TODAY

V = demo.VENUE
COMBO = (demo.slot_id("main", TODAY, 10), demo.slot_id("pagoda", TODAY, 10), demo.slot_id("boat", TODAY, 11))
PARTS = [PackagePart("boat", "westlake-boats", amount_fen=4000),
         PackagePart("pagoda", "leifeng", amount_fen=3000),
         PackagePart("main", "westlake", pct=100)]


def _sell(shard: Shard, qty: int, order: str, coupon: str | None = None):
    h = shard.run(cmd.hold("web", V, [HoldItem("combo", COMBO, qty)], coupon=coupon))
    return shard.run(cmd.confirm(h.hold_id, order, "web", method="cash", amount_fen=h.amount_fen))


def test_an_order_line_of_a_package_records_its_split(shard):
    assert shard.package(V, "adult").parts == []                # not a package
    pkg = shard.run(cmd.package(V, "combo", PARTS))
    assert pkg == shard.package(V, "combo") == PackageSplit(V, "combo", PARTS)
    line, = _sell(shard, 2, "o1").order.lines
    assert line["split"] == [["boat", "westlake-boats", 8000], ["pagoda", "leifeng", 6000],
                             ["main", "westlake", 16000]]
    # with a coupon the parts split what was paid, not the list price
    shard.run(cmd.coupon(V, "C", "fixed", amount_fen=1001))
    line, = _sell(shard, 1, "o2", coupon="C").order.lines
    assert sum(fen for _, _, fen in line["split"]) == 15000 - 1001
    # a product that is not a package records no split
    h = shard.run(cmd.hold("web", V, [HoldItem("adult", (COMBO[0],), 1)]))
    sold = shard.run(cmd.confirm(h.hold_id, "o3", "web", method="cash", amount_fen=h.amount_fen))
    assert "split" not in sold.order.lines[0]


def test_percent_parts_add_up_to_the_fen_and_fixed_parts_never_pass_the_price():
    pkg = PackageSplit(V, "p", [PackagePart("a", "m1", pct=33), PackagePart("b", "m2", pct=33),
                                PackagePart("c", "m3", pct=34)])
    split = pkg.split(10001, 1)
    assert sum(f for _, _, f in split) == 10001 and split[0][2] == 3301
    fixed = PackageSplit(V, "p", [PackagePart("meal", "canteen", amount_fen=5000),
                                  PackagePart("ticket", "venue", pct=100)])
    assert fixed.split(3000, 1) == [["meal", "canteen", 3000], ["ticket", "venue", 0]]


def test_a_changed_package_line_records_the_split_of_its_new_price(shard):
    shard.run(cmd.package(V, "combo", PARTS))
    _sell(shard, 1, "o1")
    sat = TODAY.replace(day=TODAY.day + 5)                       # a Saturday: combo keeps 15000
    to = [demo.slot_id("main", sat, 10), demo.slot_id("pagoda", sat, 10), demo.slot_id("boat", sat, 11)]
    # the demo's combo keeps 10 % when refunded (or changed) within a day of its slot
    r = shard.run(cmd.change("o1", "c1", to, channel="web", method="cash", amount_fen=1500))
    assert (r.terms.fee_fen, r.terms.due_fen) == (1500, 1500)
    order = shard.get_order("o1", "web")
    assert order.lines[-1]["split"] == [["boat", "westlake-boats", 4000], ["pagoda", "leifeng", 3000],
                                        ["main", "westlake", 8000]]


@pytest.mark.parametrize("parts, field", [
    ([{"part": "a", "merchant": "m", "pct": 90}], "parts"),
    ([{"part": "a", "merchant": "m", "pct": 50, "amount_fen": 5}], "parts[0].amount_fen"),
    ([{"part": "a", "merchant": "m"}], "parts[0].amount_fen"),
    ([{"part": "a", "merchant": "m", "pct": 50}, {"part": "a", "merchant": "n", "pct": 50}], "parts[1].part"),
    ([{"part": "a", "merchant": "", "pct": 100}], "parts[0].merchant"),
    ([{"part": "a", "merchant": "m", "pct": 100, "share": 1}], "parts[0].share"),
])
def test_bad_packages_are_refused_by_field_and_change_nothing(shard, parts, field):
    shard.run(cmd.package(V, "combo", PARTS))
    with pytest.raises(InvalidArgument) as e:
        shard.run(cmd.package(V, "combo", parts))
    assert e.value.field == field
    assert shard.package(V, "combo").parts == PARTS
    with pytest.raises(NotFound):
        shard.run(cmd.package(V, "nosuch", PARTS))


@pytest.mark.parametrize("snapshot", [False, True])
def test_a_package_survives_a_reopen(shard_path, clock, snapshot):
    shard = Shard.open(shard_path, clock=clock)
    shard.run_many(demo.commands(TODAY))
    shard.run(cmd.package(V, "combo", PARTS))
    shard.close(snapshot=snapshot)
    again = Shard.open(shard_path, clock=clock)
    try:
        assert again.package(V, "combo").parts == PARTS
    finally:
        again.close(snapshot=False)
