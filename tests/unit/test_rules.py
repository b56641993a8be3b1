"""Entry rules as a gate sees them: each test sells real tickets on a real shard and
scans them, asserting the reason and head counts a gate operator would see."""
from __future__ import annotations

import datetime as dt
import os

import pytest

from turnstile.engine import cmd, demo, Direction, Reason, HoldItem, IdempotencyMismatch, InvalidArgument, \
    NotFound, Shard
from tests.conftest import TODAY, sell

IN, OUT = Direction.IN, Direction.OUT
TOMORROW = TODAY + dt.timedelta(days=1)


def scan(shard, code, gate="north-1", direction=IN, **kw):
    return shard.run(cmd.verify(code, gate, direction, **kw))


def test_single_use_with_reentry_after_exit(shard, clock):
    code = sell(shard).tickets[0].code
    assert scan(shard, code).reason == Reason.OK
    assert shard.inside("main") == 1
    assert scan(shard, code, "north-2").reason == Reason.ALREADY_USED   # anti-passback
    assert scan(shard, code, "south-exit", OUT).reason == Reason.OK
    assert shard.inside("main") == 0
    assert scan(shard, code).reason == Reason.OK_REENTRY
    clock.at(TOMORROW, 9)
    assert scan(shard, code).reason == Reason.EXPIRED


def test_single_use_without_reentry(shard, clock):
    res = sell(shard, "group", qty=1, group=1, channel="window")
    code = res.tickets[0].code
    assert scan(shard, code).reason == Reason.OK
    assert scan(shard, code, "south-exit", OUT).reason == Reason.OK
    assert scan(shard, code).reason == Reason.ALREADY_USED


def test_punch_card_counts_visits(shard, clock):
    code = sell(shard, "punch10").tickets[0].code
    for i in range(10):
        clock.at(TODAY + dt.timedelta(days=i), 9)
        assert scan(shard, code, at=clock.t).reason == Reason.OK, i
        assert scan(shard, code, "south-exit", OUT, at=clock.t + 60).reason == Reason.OK
    clock.at(TODAY + dt.timedelta(days=11), 9)
    assert scan(shard, code, at=clock.t).reason == Reason.ENTRY_LIMIT


def test_annual_pass_one_visit_a_day(shard, clock):
    res = sell(shard, "annual", holders=[["110101199003071234"]])
    code = res.tickets[0].code
    assert res.tickets[0].holder == "110***********1234"
    assert scan(shard, code).reason == Reason.OK
    assert scan(shard, code, "south-exit", OUT).reason == Reason.OK
    assert scan(shard, code).reason == Reason.ENTRY_LIMIT
    clock.at(TOMORROW, 10)
    assert scan(shard, code, at=clock.t).reason == Reason.OK
    clock.at(TODAY + dt.timedelta(days=365), 10)
    assert scan(shard, code, at=clock.t).reason == Reason.EXPIRED


def test_not_yet_valid_and_slot_window_with_grace(shard, clock):
    code = sell(shard, slots=(demo.slot_id("main", TOMORROW, 10),)).tickets[0].code
    assert scan(shard, code).reason == Reason.NOT_YET_VALID
    # window 10:00-12:00, 30 min grace either side
    assert scan(shard, code, at=demo.local_time(TOMORROW, 9, 29)).reason == Reason.WRONG_SLOT
    assert scan(shard, code, at=demo.local_time(TOMORROW, 12, 31)).reason == Reason.WRONG_SLOT
    assert scan(shard, code, at=demo.local_time(TOMORROW, 9, 31)).reason == Reason.OK


def test_refused_scan_changes_nothing(shard):
    code = sell(shard, slots=(demo.slot_id("main", TOMORROW, 10),)).tickets[0].code
    tid = sell(shard).tickets[0].ticket_id
    before = shard.ticket(tid - 1)
    assert scan(shard, code).reason == Reason.NOT_YET_VALID
    assert shard.ticket(tid - 1) == before
    assert shard.inside("main") == 0


def test_group_ticket_partial_admits(shard):
    res = sell(shard, "group", qty=1, group=30, channel="agency")
    code = res.tickets[0].code
    assert res.tickets[0].persons == 30
    r = scan(shard, code, persons=10)
    assert (r.reason, r.persons) == (Reason.OK, 10)
    r = scan(shard, code, "north-2", persons=25)       # only 20 left of the group
    assert (r.reason, r.persons) == (Reason.OK, 20)
    assert shard.inside("main") == 30
    assert scan(shard, code).reason == Reason.ALREADY_USED
    r = scan(shard, code, "south-exit", OUT, persons=5)
    assert (r.reason, r.persons) == (Reason.OK, 5)
    assert shard.inside("main") == 25
    r = scan(shard, code, "south-exit", OUT)
    assert (r.reason, r.persons) == (Reason.OK, 25)
    assert shard.inside("main") == 0


def test_group_stock_counts_persons(shard):
    sell(shard, "group", qty=2, group=40, channel="agency")
    row = next(r for r in shard.availability("westlake", TODAY)
               if r.slot == demo.slot_id("main", TODAY, 8))
    assert row.sold == 80


def test_combo_admits_each_zone_once(shard, clock):
    day = TODAY
    res = sell(shard, "combo", (demo.slot_id("main", day, 8), demo.slot_id("pagoda", day, 9),
                                demo.slot_id("boat", day, 9)))
    code = res.tickets[0].code
    assert scan(shard, code).reason == Reason.OK
    assert scan(shard, code, "pier-1", at=demo.local_time(day, 9, 5)).reason == Reason.OK
    assert scan(shard, code, "pier-1", at=demo.local_time(day, 9, 6)).reason == Reason.ALREADY_USED
    assert scan(shard, code, "pagoda-1", at=demo.local_time(day, 9, 10)).reason == Reason.OK
    assert shard.inside("pagoda") == 1 and shard.inside("boat") == 1 and shard.inside("main") == 1
    # a plain adult ticket is not for the pagoda
    adult = sell(shard).tickets[0].code
    assert scan(shard, adult, "pagoda-1").reason == Reason.WRONG_ZONE


def test_exit_without_entry_enforced_per_zone(shard, clock):
    day = TODAY
    code = sell(shard, "combo", (demo.slot_id("main", day, 8), demo.slot_id("pagoda", day, 9),
                                 demo.slot_id("boat", day, 9))).tickets[0].code
    assert scan(shard, code, "pagoda-1", OUT).reason == Reason.NOT_INSIDE      # enforced
    assert scan(shard, code, "south-exit", OUT).reason == Reason.OK            # not enforced
    assert scan(shard, code, "south-exit", OUT).persons == 0


def test_zone_full(shard, clock):
    shard.run(cmd.zone("westlake", "cave", live_capacity=2))
    shard.run(cmd.gate("cave", "cave-1"))
    shard.run(cmd.product("westlake", "cave-ticket", ["cave"]))
    shard.run(cmd.slots([{"id": "cave-today", "zone": "cave", "day": demo.to_day(TODAY),
                          "start": demo.local_time(TODAY, 8), "end": demo.local_time(TODAY, 18),
                          "capacity": 10}]))
    codes = [t.code for t in sell(shard, "cave-ticket", ("cave-today",), qty=3).tickets]
    assert [scan(shard, c, "cave-1").reason for c in codes] == [Reason.OK, Reason.OK, Reason.ZONE_FULL]
    assert scan(shard, codes[0], "cave-1", OUT).reason == Reason.OK
    assert scan(shard, codes[2], "cave-1").reason == Reason.OK
    assert shard.inside("cave") == 2


def test_blocked_and_voided(shard):
    res = sell(shard, qty=2, order="o-bv")
    a, b = res.tickets
    shard.run(cmd.block(a.ticket_id))
    assert scan(shard, a.code).reason == Reason.BLOCKED
    shard.run(cmd.block(a.ticket_id, blocked=False))
    shard.run(cmd.refund("o-bv", "r1", [b.ticket_id], channel="web"))
    assert scan(shard, b.code).reason == Reason.VOIDED
    assert scan(shard, a.code).reason == Reason.OK


def test_verify_by_id_number(shard, clock):
    res = sell(shard, "night", qty=2, holders=[["110101199003071234", "11010119900307777X"]])
    r = shard.run(cmd.verify_holder("11010119900307777x", "north-1"))
    assert (r.reason, r.ticket) == (Reason.OK, res.tickets[1].ticket_id)
    assert shard.run(cmd.verify_holder("110101199003071234", "north-1")).reason == Reason.OK
    assert shard.run(cmd.verify_holder("110101199003071234", "north-2")).reason == Reason.ALREADY_USED
    assert shard.run(cmd.verify_holder("999999199003071234", "north-1")).reason == Reason.UNKNOWN
    order = shard.get_order(res.order.order_id, "web")
    assert "110101199003071234" not in repr(order)


def test_verify_by_face_token(shard, shard_path, clock):
    """A face terminal's token, enrolled to a real-name holder, admits like the
    holder's ID card; the shard keeps neither the token nor the ID number."""
    token, other = "face-7f3a9c01d2", "face-0000aaaa11"
    res = sell(shard, "night", qty=2, holders=[["110101199003071234", "11010119900307777X"]])
    assert shard.run(cmd.verify_face(token, "north-1")).reason == Reason.UNKNOWN   # not enrolled
    got = shard.run(cmd.enroll_face("westlake", token, "11010119900307777x", idempotency_key="enr-1"))
    assert vars(got) == {"enrolled": True, "holder": "110***********777X", "tickets": 1}
    r = shard.run(cmd.verify_face(token, "north-1"))
    assert (r.reason, r.ticket) == (Reason.OK, res.tickets[1].ticket_id)
    assert shard.run(cmd.verify_face(token, "north-2")).reason == Reason.ALREADY_USED
    assert shard.run(cmd.verify_face(other, "north-1")).reason == Reason.UNKNOWN
    # a retry of the enrolment is answered the same; the key reused for another is refused
    assert shard.run(cmd.enroll_face("westlake", token, "11010119900307777x", idempotency_key="enr-1")) == got
    with pytest.raises(IdempotencyMismatch):
        shard.run(cmd.enroll_face("westlake", other, "11010119900307777x", idempotency_key="enr-1"))
    # the token survives a reopen (journal, then snapshot), hashed
    shard.close(snapshot=False)
    again = Shard.open(shard_path, clock=clock)
    try:
        assert again.run(cmd.verify_face(token, "south-exit", OUT)).reason == Reason.OK
        assert again.check(replay=True) == []
        again.close()
        again = Shard.open(shard_path, clock=clock)
        # single use, no re-entry (the night tour's rule): the face is refused like the ticket
        assert again.run(cmd.verify_face(token, "north-1")).reason == Reason.ALREADY_USED
        raw = open(os.path.join(shard_path, "data.mdb"), "rb").read()   # journal, rows, snapshot
        assert token.encode() not in raw and b"11010119900307777" not in raw
        # removed: the terminal's token no longer names anybody
        assert vars(again.run(cmd.enroll_face("westlake", token, None))) == {"enrolled": False, "holder": "", "tickets": 0}
        assert again.run(cmd.verify_face(token, "north-1")).reason == Reason.UNKNOWN
        with pytest.raises(NotFound):
            again.run(cmd.enroll_face("westlake", token, None))
    finally:
        again.close(snapshot=False)


def test_real_name_needs_one_id_per_ticket(shard):
    h = shard.run(cmd.hold("web", "westlake", [HoldItem("night", (demo.slot_id("main", TODAY, 8),), 2)]))
    with pytest.raises(InvalidArgument) as e:
        shard.run(cmd.confirm(h.hold_id, "o-rn", "web", method="cash", amount_fen=h.amount_fen,
                              holders=[["110101199003071234"]]))
    assert e.value.field == "holders[0]"


def test_batch_scans_decide_like_single_scans(shard):
    codes = [t.code for t in sell(shard, qty=50).tickets]
    tampered = codes[40][:-1] + ("B" if codes[40][-1] == "A" else "A")
    mixed = codes[:30] + codes[:5] + ["NOTACODE", tampered]
    res = shard.run(cmd.verify_batch(mixed, "north-1"))
    reasons = [res[i].reason for i in range(len(res))]
    assert reasons == [Reason.OK] * 30 + [Reason.ALREADY_USED] * 5 + [Reason.FORGED] * 2
    assert shard.inside("main") == 30
    assert shard.check() == []
    # per-code gates, mixed with an exit batch
    res = shard.run(cmd.verify_batch(codes[:3], ["south-exit"] * 3, OUT))
    assert [res[i].reason for i in range(3)] == [Reason.OK] * 3
    assert shard.inside("main") == 27
    assert shard.check() == []


def test_gate_direction_and_unknown_gate_are_errors(shard):
    code = sell(shard).tickets[0].code
    with pytest.raises(InvalidArgument) as e:
        scan(shard, code, "south-exit", IN)
    assert e.value.field == "direction"
    with pytest.raises(NotFound) as e:
        scan(shard, code, "nowhere")
    assert e.value.field == "gate"


def test_scans_survive_reopen(shard, shard_path, clock):
    from turnstile.engine import Shard
    codes = [t.code for t in sell(shard, qty=3).tickets]
    scan(shard, codes[0])
    shard.run(cmd.verify_batch(codes[1:], "north-2"))
    shard.close(snapshot=False)           # journal replay path
    s2 = Shard.open(shard_path, clock=clock)
    try:
        assert [scan(s2, c).reason for c in codes] == [Reason.ALREADY_USED] * 3
        assert s2.inside("main") == 3
        assert s2.check(replay=True) == []
    finally:
        s2.close()


def test_head_count_starts_afresh_each_day_and_late_scans_stay_consistent(shard, clock):
    day_pass = sell(shard, "punch10", qty=3)
    a, b, c = [t.code for t in day_pass.tickets]
    assert scan(shard, a).reason == Reason.OK                      # never scans out
    assert shard.inside("main") == 1
    clock.at(TOMORROW, 9)
    assert shard.inside("main") == 0                               # yesterday is over
    assert scan(shard, b, at=clock.t).reason == Reason.OK
    assert shard.inside("main") == 1
    # a late-arriving batch of yesterday's scans: visits, but nobody inside now
    res = shard.run(cmd.verify_batch([c], "north-1", at=demo.local_time(TODAY, 9)))
    assert res[0].reason == Reason.OK
    assert shard.inside("main") == 1
    assert shard.check(replay=True) == []


def test_a_scan_retried_with_its_scan_id_gets_the_first_answer(shard):
    """A gate whose answer was lost sends the scan again with the same scan id: the
    visitor is admitted (the first answer), not refused ALREADY_USED; the scan counts
    once. The same id for another scan is refused; a new id is a new scan."""
    a, b = (t.code for t in sell(shard, qty=2).tickets)
    first = shard.run(cmd.verify(a, "north-1", scan_id="n1-000017"))
    assert first.reason == Reason.OK
    assert shard.run(cmd.verify(a, "north-1", scan_id="n1-000017")) == first
    assert shard.inside("main") == 1
    with pytest.raises(IdempotencyMismatch) as e:
        shard.run(cmd.verify(b, "north-1", scan_id="n1-000017"))
    assert e.value.field == "scan_id"
    assert shard.run(cmd.verify(a, "north-1", scan_id="n1-000018")).reason == Reason.ALREADY_USED
    # a scan id is per gate: another gate's "n1-000017" is its own scan
    assert shard.run(cmd.verify(b, "north-2", scan_id="n1-000017")).reason == Reason.OK
    # batches: a concentrator resending a batch gets its first answers
    c, d = (t.code for t in sell(shard, qty=2).tickets)
    r1 = shard.run(cmd.verify_batch([c, d, c], "north-1", batch_id="conc-1/0042"))
    r2 = shard.run(cmd.verify_batch([c, d, c], "north-1", batch_id="conc-1/0042"))
    assert [x.reason for x in r2] == [x.reason for x in r1] == [Reason.OK, Reason.OK, Reason.ALREADY_USED]
    assert list(r2.tickets) == list(r1.tickets) and list(r2.persons) == list(r1.persons) == [1, 1, 0]
    assert shard.inside("main") == 4
    with pytest.raises(InvalidArgument) as e:
        shard.run(cmd.verify(a, "north-1", scan_id="bad id with spaces"))
    assert e.value.field == "scan_id"
    assert shard.check() == []


def test_an_offline_upload_of_a_scan_decided_online_is_a_duplicate(shard):
    """The gate's online answer was lost, so it decided offline and queued the scan
    under the same id: the upload is DUPLICATE with the server's answer, not a conflict."""
    code = sell(shard).tickets[0].code
    online = shard.run(cmd.verify(code, "north-1", scan_id="n1-lost"))
    at = shard.clock()
    up = shard.run(cmd.offline_scans("north-1", [
        {"nonce": "n1-lost", "seq": 1, "code": code, "direction": 1, "at": int(at), "persons": 0,
         "admitted": 1, "reason": int(Reason.OK)}]))
    assert up[0].status == "DUPLICATE" and up[0].reason == online.reason
    assert shard.conflicts("westlake") == []
