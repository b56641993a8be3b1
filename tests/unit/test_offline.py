"""The server side of offline gates (DESIGN.md 6) on a real shard: bundles (whole and
delta) and uploaded scans (facts, once per nonce, conflicts)."""
from __future__ import annotations

import pytest

from turnstile.engine import cmd, Direction, Reason, Shard, InvalidArgument, NotFound, demo
from turnstile.engine.model import OfflineBundle
from tests.conftest import TODAY, sell

IN, OUT = Direction.IN, Direction.OUT
SETS = ("voided", "blocked", "used", "entered", "inside", "exhausted")


def merged(held: dict, delta: OfflineBundle) -> dict:
    """What a gate does with a delta: drop the changed ids, add their new members."""
    if delta.full:
        return dict(delta.sets)
    c = delta.sets["changed"]
    return {name: (held[name] - c) | delta.sets[name] for name in SETS}


def up(scan_nonce: str, code: str, at: int, *, direction=IN, admitted=1, reason=Reason.OK, seq=0):
    return {"nonce": scan_nonce, "seq": seq, "code": code, "direction": int(direction), "at": at,
            "persons": 0, "admitted": admitted, "reason": int(reason)}


def test_whole_bundle_has_rules_keys_and_todays_sets(shard, clock):
    a, b = (t.code for t in sell(shard, qty=2).tickets)
    shard.run(cmd.verify(a, "north-1"))
    b_id = sell(shard, "group", qty=1, group=1, channel="window").tickets[0].ticket_id
    shard.run(cmd.block(b_id))
    bundle = shard.offline_bundle(demo.VENUE)
    assert bundle.full and bundle.sets["changed"] is None
    assert bundle.day == (clock.t + demo.UTC_OFFSET) // 86400
    assert bundle.public_keys == shard.public_keys()
    assert {g.id for g in bundle.gates} == {"north-1", "north-2", "south-exit", "east",
                                             "pagoda-1", "pier-1"}
    adult = next(p for p in bundle.products if p.id == "adult")
    assert adult.zones == ["main"] and adult.max_entries == 1 and adult.reentry
    a_id = shard.state.tickets_of([a])[0]
    s = bundle.sets
    assert a_id in s["used"] and a_id in s["entered"] and a_id in s["inside"]
    assert a_id in s["exhausted"]                       # single use: no new visit left
    assert list(s["blocked"]) == [b_id] and len(s["voided"]) == 0
    # slots of yesterday, today and tomorrow only (the demo starts today)
    assert {sl.day for sl in bundle.slots} == {bundle.day, bundle.day + 1}


def test_delta_merged_equals_whole_bundle(shard, clock):
    codes = [t.code for t in sell(shard, qty=6).tickets]
    shard.run(cmd.verify(codes[0], "north-1"))
    held = shard.offline_bundle(demo.VENUE)
    # changes after the bundle: entries, an exit, a block
    shard.run(cmd.verify(codes[1], "north-1"))
    shard.run(cmd.verify_batch(codes[2:4], "north-2"))
    shard.run(cmd.verify(codes[0], "south-exit", OUT))
    tid5 = shard.state.tickets_of([codes[5]])[0]
    shard.run(cmd.block(tid5))
    delta = shard.offline_bundle(demo.VENUE, held.epoch, held.version)
    assert not delta.full
    ids = shard.state.tickets_of(codes)
    assert set(delta.sets["changed"]) == {ids[0], ids[1], ids[2], ids[3], ids[5]}
    whole = shard.offline_bundle(demo.VENUE)
    assert merged(held.sets, delta) == {n: whole.sets[n] for n in SETS}
    assert ids[0] not in whole.sets["inside"] and ids[0] in whole.sets["used"]
    # nothing changed since: an empty delta
    again = shard.offline_bundle(demo.VENUE, delta.epoch, delta.version)
    assert not again.full and len(again.sets["changed"]) == 0


def test_bundle_of_another_day_or_process_is_replaced_whole(shard, shard_path, clock):
    held = shard.offline_bundle(demo.VENUE)
    assert not shard.offline_bundle(demo.VENUE, held.epoch, held.version).full
    clock.t += 86400
    assert shard.offline_bundle(demo.VENUE, held.epoch, held.version).full
    held = shard.offline_bundle(demo.VENUE)
    shard.close()
    reopened = Shard.open(shard_path, clock=clock)
    try:
        assert reopened.offline_bundle(demo.VENUE, held.epoch, held.version).full
    finally:
        reopened.close(snapshot=False)


def test_uploaded_scans_are_facts_applied_once(shard, clock):
    a, b = (t.code for t in sell(shard, qty=2).tickets)
    t0 = clock.t
    scans = [up("n2", b, t0 + 60, seq=2), up("n1", a, t0, seq=1),
             up("n3", a, t0 + 120, direction=OUT, seq=3)]
    first = shard.run(cmd.offline_scans("east", scans))
    assert [r.status for r in first] == ["APPLIED"] * 3
    assert [Reason(r.reason) for r in first] == [Reason.OK] * 3
    assert shard.inside("main") == 1                     # a in and out, b in
    again = shard.run(cmd.offline_scans("east", scans))
    assert [r.status for r in again] == ["DUPLICATE"] * 3
    assert [r.reason for r in again] == [r.reason for r in first]
    assert shard.inside("main") == 1                     # nothing applied twice
    assert shard.check(replay=True) == []


def test_ticket_admitted_at_two_offline_gates_is_one_conflict(shard, clock):
    code = sell(shard, "group", qty=1, group=1, channel="window").tickets[0].code
    t0 = clock.t
    r1 = shard.run(cmd.offline_scans("north-1", [up("a1", code, t0)]))
    r2 = shard.run(cmd.offline_scans("north-2", [up("b1", code, t0 + 30)]))
    assert r1[0].status == "APPLIED" and r2[0].status == "CONFLICT"
    assert Reason(r2[0].reason) == Reason.ALREADY_USED
    shard.run(cmd.offline_scans("north-2", [up("b1", code, t0 + 30)]))     # retried upload
    found = shard.conflicts(demo.VENUE)
    assert len(found) == 1
    c = found[0]
    assert (c.gate, c.nonce, c.at, Reason(c.server_reason)) == \
        ("north-2", "b1", t0 + 30, Reason.ALREADY_USED)
    assert shard.conflicts(demo.VENUE, after=c.key) == []
    # a refused offline scan is no conflict
    shard.run(cmd.offline_scans("north-2", [up("b2", code, t0 + 40, admitted=0,
                                              reason=Reason.ALREADY_USED)]))
    assert len(shard.conflicts(demo.VENUE)) == 1


def test_uploads_ignore_live_capacity_but_keep_the_count(shard_path, clock):
    s = Shard.open(shard_path, clock=clock)
    try:
        s.run_many(demo.commands(TODAY))
        s.run(cmd.zone(demo.VENUE, "tiny", live_capacity=1))
        s.run(cmd.gate("tiny", "tiny-1"))
        s.run(cmd.product(demo.VENUE, "tiny-t", ["tiny"]))
        day = (clock.t + demo.UTC_OFFSET) // 86400
        s.run(cmd.slots([{"id": "tiny-today", "zone": "tiny", "day": day, "start": clock.t - 3600,
                          "end": clock.t + 3600, "capacity": 10}]))
        h = s.run(cmd.hold("web", demo.VENUE, [{"product": "tiny-t", "slots": ["tiny-today"],
                                                "qty": 2}]))
        codes = [t.code for t in s.run(cmd.confirm(h.hold_id, "o1", "web", method="cash",
                                                  amount_fen=0)).tickets]
        res = s.run(cmd.offline_scans("tiny-1", [up(f"n{i}", c, clock.t + i)
                                                 for i, c in enumerate(codes)]))
        assert [Reason(r.reason) for r in res] == [Reason.OK, Reason.OK]
        assert s.inside("tiny") == 2                  # both are in: facts, not requests
        assert s.check(replay=True) == []
    finally:
        s.close(snapshot=False)


@pytest.mark.parametrize("bad,field", [
    ({"nonce": ""}, "scans[1].nonce"),
    ({"direction": 3}, "scans[1].direction"),
    ({"at": -1}, "scans[1].at"),
    ({"code": 5}, "scans[1].code"),
    ({"reason": 99}, "scans[1].reason"),
])
def test_bad_upload_names_the_field_and_changes_nothing(shard, clock, bad, field):
    code = sell(shard).tickets[0].code
    good = up("g1", code, clock.t)
    with pytest.raises(InvalidArgument) as e:
        shard.run(cmd.offline_scans("east", [good, {**good, "nonce": "g2", **bad}]))
    assert e.value.field == field
    assert shard.inside("main") == 0 and len(shard.state.tickets.used) == 0
    with pytest.raises(InvalidArgument) as e:
        shard.run(cmd.offline_scans("south-exit", [good]))        # an exit-only gate
    assert e.value.field == "scans[0].direction"
    with pytest.raises(NotFound):
        shard.run(cmd.offline_scans("nowhere", [good]))


def test_late_upload_of_an_earlier_day_leaves_the_current_visit_alone(shard, clock):
    """A punch card used offline yesterday and online today: yesterday's scan, uploaded
    now, is one more visit, and today's visit (inside) is unchanged."""
    import datetime as dt
    code = sell(shard, "punch10").tickets[0].code
    yesterday = clock.t
    clock.at(TODAY + dt.timedelta(days=1), 9)
    assert shard.run(cmd.verify(code, "north-1")).reason == Reason.OK
    res = shard.run(cmd.offline_scans("north-2", [up("y1", code, yesterday)]))
    assert (res[0].status, Reason(res[0].reason)) == ("APPLIED", Reason.OK)
    base = shard.state.tickets_of([code])[0]
    assert shard.state.tickets.record(base)["entries"] == 2
    assert shard.inside("main") == 1
    out = shard.run(cmd.verify(code, "south-exit", Direction.OUT))
    assert (out.reason, out.persons) == (Reason.OK, 1)
    assert shard.inside("main") == 0
    assert shard.check(replay=True) == []
