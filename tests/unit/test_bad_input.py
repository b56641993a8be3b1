"""Bad input: each malformed request gets a clear error naming the field, and
changes nothing -- not memory, not the journal, not the rows."""
from __future__ import annotations

import pytest

from turnstile.engine import (cmd, demo, Command, CommandKind, TurnstileError, InvalidArgument, NotFound,
                    SoldOut, HoldItem, Direction)
from tests.conftest import TODAY, sell

SLOT = demo.slot_id("main", TODAY, 8)
SLOT10 = demo.slot_id("main", TODAY, 10)


def item(**kw):
    base = {"product": "adult", "slots": [SLOT], "qty": 1, "group": 1}
    base.update(kw)
    return base


def hold_args(**kw):
    base = {"channel": "web", "venue": "westlake", "items": [item()], "ttl_s": 900}
    base.update(kw)
    return base


CASES = [
    # (command, error class, field)
    (Command(CommandKind.HOLD, hold_args(items=[item(qty=0)])), InvalidArgument, "items[0].qty"),
    (Command(CommandKind.HOLD, hold_args(items=[item(qty=-3)])), InvalidArgument, "items[0].qty"),
    (Command(CommandKind.HOLD, hold_args(items=[item(qty=10**9)])), InvalidArgument, "items[0].qty"),
    (Command(CommandKind.HOLD, hold_args(items=[item(qty="2")])), InvalidArgument, "items[0].qty"),
    (Command(CommandKind.HOLD, hold_args(items=[item(qty=True)])), InvalidArgument, "items[0].qty"),
    (Command(CommandKind.HOLD, hold_args(items=[item(qty=1999)])), SoldOut, "items[0].qty"),
    (Command(CommandKind.HOLD, hold_args(items=[item(group=2)])), InvalidArgument, "items[0].group"),
    (Command(CommandKind.HOLD, hold_args(items=[item(product="ghost")])), NotFound, "items[0].product"),
    (Command(CommandKind.HOLD, hold_args(items=[item(slots=["nope"])])), NotFound, "items[0].slots[0]"),
    (Command(CommandKind.HOLD, hold_args(items=[item(slots=[SLOT, SLOT10])])), InvalidArgument, "items[0].slots"),
    (Command(CommandKind.HOLD, hold_args(items=[item(slots=[demo.slot_id("pagoda", TODAY, 9)])])),
     InvalidArgument, "items[0].slots[0]"),
    (Command(CommandKind.HOLD, hold_args(items=[])), InvalidArgument, "items"),
    (Command(CommandKind.HOLD, hold_args(items="adult")), InvalidArgument, "items"),
    (Command(CommandKind.HOLD, hold_args(venue="atlantis")), NotFound, "venue"),
    (Command(CommandKind.HOLD, hold_args(channel="")), InvalidArgument, "channel"),
    (Command(CommandKind.HOLD, hold_args(channel="x" * 200)), InvalidArgument, "channel"),
    (Command(CommandKind.HOLD, hold_args(ttl_s=0)), InvalidArgument, "ttl_s"),
    (Command(CommandKind.HOLD, hold_args(_now=5)), InvalidArgument, "_now"),
    (Command(CommandKind.HOLD, "not a dict"), InvalidArgument, None),
    (Command(CommandKind.HOLD, hold_args(), "k" * 500), InvalidArgument, "idempotency_key"),
    (Command(CommandKind.CONFIRM, {"hold_id": 10**6, "order_id": "o", "channel": "web",
                          "payment": {"method": "cash", "amount_fen": 0}}), NotFound, "hold_id"),
    (Command(CommandKind.CONFIRM, {"hold_id": -1, "order_id": "o", "channel": "web",
                          "payment": {"method": "cash", "amount_fen": 0}}), InvalidArgument, "hold_id"),
    (Command(CommandKind.CONFIRM, {"hold_id": 1, "order_id": "o", "channel": "web"}), InvalidArgument, "payment"),
    (Command(CommandKind.CONFIRM, {"hold_id": 1, "order_id": "o o", "channel": "web",
                          "payment": {"method": "cash", "amount_fen": 0}}), InvalidArgument, "order_id"),
    (Command(CommandKind.REFUND, {"order_id": "nope", "refund_id": "r", "tickets": [], "channel": "web"}), NotFound, "order_id"),
    (Command(CommandKind.RELEASE, {"hold_id": "1", "channel": "web"}), InvalidArgument, "hold_id"),
    (Command(CommandKind.BLOCK, {"ticket_id": 123456}), NotFound, "ticket_id"),
    (Command(CommandKind.SLOT_CAPACITY, {"slot": SLOT, "capacity": -1}), InvalidArgument, "capacity"),
    (Command(CommandKind.SLOT_CAPACITY, {"slot": "nope", "capacity": 1}), NotFound, "slot"),
    (Command(CommandKind.ALLOTMENT, {"slot": SLOT, "channel": "x", "capacity": 10**8}), SoldOut, "capacity"),
    (Command(CommandKind.SLOTS, {"slots": [{"id": "s1", "zone": "main", "day": 1, "start": 10, "end": 5,
                                   "capacity": 1}]}), InvalidArgument, "slots[0].end"),
    (Command(CommandKind.SLOTS, {"slots": [{"id": "s1", "zone": "main", "day": 1, "start": 1, "end": 5,
                                   "capacity": 1}, {"id": "s1", "zone": "main", "day": 1,
                                                    "start": 1, "end": 5, "capacity": 1}]}),
     TurnstileError, "slots[1].id"),
    (Command(CommandKind.PRODUCT, {"venue": "westlake", "id": "p", "zones": ["main", "ghost"]}), NotFound, "zones[1]"),
    (Command(CommandKind.PRODUCT, {"venue": "westlake", "id": "p", "zones": ["main"], "max_group": 0}),
     InvalidArgument, "max_group"),
    (Command(CommandKind.PRODUCT, {"venue": "westlake", "id": "p", "zones": ["main"],
                          "rule": {"valid_days": 0}}), InvalidArgument, "rule.valid_days"),
    (Command(CommandKind.GATE, {"zone": "main", "id": "g", "mode": 7}), InvalidArgument, "mode"),
    (Command(CommandKind.ZONE, {"venue": "westlake", "id": "z", "live_capacity": -5}), InvalidArgument, "live_capacity"),
    (Command(CommandKind.VENUE, {"id": "v", "utc_offset_s": 99 * 3600}), InvalidArgument, "utc_offset_s"),
    (Command(CommandKind.KEY, {"key_id": 0, "state": 0}), TurnstileError, "key_id"),
    (cmd.verify("X", "north-1", Direction.IN, persons=-1), InvalidArgument, "persons"),
    (cmd.verify("X", "north-1", Direction.IN, at="noon"), InvalidArgument, "at"),
    (cmd.verify(12345, "north-1"), InvalidArgument, "code"),
    (Command(CommandKind.VERIFY, ("X", "north-1", 3, None, 0)), InvalidArgument, "direction"),
    (cmd.verify_batch(["A", 5], "north-1"), InvalidArgument, "codes"),
    (cmd.verify_batch(["A", "B"], ["north-1"]), InvalidArgument, "gates"),
    (cmd.verify_holder("12", "north-1"), InvalidArgument, "id_number"),
    (cmd.verify_face("short", "north-1"), InvalidArgument, "face_token"),
    (cmd.verify("X", "north-1", scan_id="not an id"), InvalidArgument, "scan_id"),
    (cmd.verify_batch(["X"], "north-1", batch_id=""), InvalidArgument, "batch_id"),
    (cmd.verify_face(12345678, "north-1"), InvalidArgument, "face_token"),
    (cmd.enroll_face("westlake", "face-token-1", "12"), InvalidArgument, "id_number"),
    (cmd.enroll_face("westlake", "bad\ntoken-1", "110101199003071234"), InvalidArgument, "face_token"),
    (cmd.enroll_face("westlake", "face-token-1", None), NotFound, "face_token"),
    (Command(999, {}), InvalidArgument, None),
]


@pytest.mark.parametrize("command,error,field", CASES,
                         ids=[f"{c.op}-{f}-{i}" for i, (c, _, f) in enumerate(CASES)])
def test_bad_input_is_refused_and_changes_nothing(shard, command, error, field):
    sell(shard, order="existing")
    h = shard.run(cmd.hold("web", "westlake", [HoldItem("adult", (SLOT,), 1)]))
    before = shard.state.dump()
    journal_before = list(shard.storage.journal_after(0))
    with pytest.raises(error) as e:
        shard.run(command)
    assert e.value.field == field
    assert e.value.code and e.value.message
    assert shard.state.dump() == before
    assert list(shard.storage.journal_after(0)) == journal_before
    assert shard.hold(h.hold_id) is not None
    assert shard.check() == []


def test_errors_in_a_batch_do_not_disturb_their_neighbours(shard):
    good = cmd.hold("web", "westlake", [HoldItem("adult", (SLOT,), 2)])
    bad = cmd.hold("web", "westlake", [HoldItem("adult", (SLOT,), 0)])
    results = shard.run_many([good, bad, good])
    assert isinstance(results[1], InvalidArgument)
    assert results[0].hold_id + 1 == results[2].hold_id
    assert next(r for r in shard.availability("westlake", TODAY) if r.slot == SLOT).held == 4
