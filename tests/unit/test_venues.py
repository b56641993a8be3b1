"""Ids are per venue (DESIGN.md 4.1): a second venue on the shard uses the demo's names,
each name resolves within its venue, and the journal replays it all."""
from __future__ import annotations

import pytest

from turnstile.engine import AlreadyExists, GateMode, HoldItem, InvalidArgument, NotFound, Reason, Shard, cmd, demo

from tests.conftest import TODAY

HILLS = "hills"
SLOT = demo.slot_id("main", TODAY, 10)


def add_hills(shard: Shard) -> None:
    """Venue `hills` with westlake's names: zone main, gate north-1, product adult and
    a slot of the same id."""
    shard.run(cmd.venue(HILLS, "Green Hills"))
    shard.run(cmd.zone(HILLS, "main"))
    shard.run(cmd.gate("main", "north-1", GateMode.IN, venue=HILLS))
    shard.run(cmd.product(HILLS, "adult", ["main"], price_fen=5000))
    start = demo.local_time(TODAY, 10)
    shard.run(cmd.slots([{"id": SLOT, "zone": "main", "day": TODAY, "start": start,
                          "end": start + 7200, "capacity": 5}], venue=HILLS))


def buy(shard: Shard, venue: str, order: str) -> str:
    h = shard.run(cmd.hold("web", venue, [HoldItem("adult", (SLOT,), 1)]))
    return shard.run(cmd.confirm(h.hold_id, order, "web", method="cash",
                                 amount_fen=h.amount_fen)).tickets[0].code


def test_a_second_venue_uses_the_same_names(shard, clock):
    add_hills(shard)
    with pytest.raises(AlreadyExists):            # still unique within a venue
        shard.run(cmd.zone(HILLS, "main"))
    clock.at(TODAY, 10, 15)
    ours, theirs = buy(shard, demo.VENUE, "o-west"), buy(shard, HILLS, "o-hills")
    assert shard.get_order("o-hills", "web").amount_fen == 5000     # hills' price, not westlake's
    # a bare id that now names two gates must say which venue
    with pytest.raises(InvalidArgument) as e:
        shard.run(cmd.verify(ours, "north-1"))
    assert e.value.field == "gate"
    assert shard.run(cmd.verify(ours, (demo.VENUE, "north-1"))).reason == Reason.OK
    assert shard.run(cmd.verify(ours, (HILLS, "north-1"))).reason == Reason.WRONG_ZONE
    assert shard.run(cmd.verify(theirs, (HILLS, "north-1"))).reason == Reason.OK
    # stock calls name the slot within a venue
    shard.run(cmd.slot_capacity(SLOT, 3, venue=HILLS))
    rows = {r.slot: r for r in shard.availability(HILLS, TODAY)}
    assert rows[SLOT].capacity == 3
    west = {r.slot: r for r in shard.availability(demo.VENUE, TODAY)}[SLOT]
    assert west.capacity == 2000               # the demo's, untouched
    with pytest.raises(NotFound):
        shard.run(cmd.slot_capacity("main-nowhere", 3, venue=HILLS))
    assert shard.inside("main", HILLS) == 1 and shard.inside("main", demo.VENUE) == 1
    assert shard.check(replay=True) == []


def test_the_journal_replays_per_venue_names(shard_path, shard, clock):
    add_hills(shard)
    clock.at(TODAY, 10, 15)
    code = buy(shard, HILLS, "o-hills")
    shard.close(snapshot=False)                   # reopen from the journal alone
    again = Shard.open(shard_path, clock=clock)
    try:
        assert again.run(cmd.verify(code, (HILLS, "north-1"))).reason == Reason.OK
        assert again.check(replay=True) == []
        again.snapshot()                          # and from a snapshot
    finally:
        again.close()
    third = Shard.open(shard_path, clock=clock)
    try:
        assert third.run(cmd.verify(code, (HILLS, "north-1"))).reason == Reason.ALREADY_USED
        assert third.check(replay=True) == []
    finally:
        third.close()
