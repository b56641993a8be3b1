"""Replay applies what a scan decided, never decides it again (DESIGN.md 4.2, issue 12).

A data dir's journal holds scans (SCAN, SCAN_BATCH, OFFLINE_SCANS) decided under the
rules of the build that wrote it. The tests here write such a journal under today's
rules, then change the rules those decisions depended on -- as an upgrade may -- by
rewriting the catalog records in the journal (the products' entry rules, the zones'
capacity and exit rule), and reopen: the ticket state must be the state before the
change, scan for scan, and the changed rules must be in force for new scans. A build
that re-decided on replay would refuse to open (or rebuild another state).

Journaled admissions that can't fit the state (a ticket that does not exist, a gate
whose zone the ticket has no part in) still make the data dir refuse to open.
"""
from __future__ import annotations

import array
import datetime as dt
import json

import lmdb
import pytest
from pyroaring import BitMap

from turnstile.engine import CorruptData, Direction, Reason, Shard, cmd, demo
from turnstile.engine.journal import (_HDR, FORMAT_RECORD, NO_TICKET, Record, json_record,
                                      scan_batch_record, scan_record)
from turnstile.engine.storage import SHARD_MAP_SIZE
from tests.conftest import TODAY, sell

IN, OUT = Direction.IN, Direction.OUT
MAIN_08 = demo.slot_id("main", TODAY, 8)


def ticket_state(shard: Shard) -> dict:
    """Everything a scan changes: the ticket records (state bits, persons inside, visit,
    entries, day entries), the zones' head counts, and the state sets."""
    t = shard.state.tickets
    return {"records": t.records(), "zones": t.zone_counters(),
            **{name: BitMap(getattr(t, name)) for name in ("used", "inside", "voided", "blocked")},
            "entered": {d: BitMap(b) for d, b in t.entered.items() if len(b)}}


def change_rules(path: str, products: dict[str, dict] = {}, zones: dict[str, dict] = {}) -> int:
    """Rewrite the PRODUCT and ZONE records in the journal of the closed shard at `path`:
    products[id] updates the product's rule, zones[id] the zone. Returns the records
    rewritten."""
    env = lmdb.open(path, map_size=SHARD_MAP_SIZE, max_dbs=8, subdir=True)
    changed = 0
    try:
        with env.begin(write=True) as txn:
            snap = env.open_db(b"snapshot", txn=txn)
            assert txn.stat(snap)["entries"] == 0, "the catalog must still be in the journal"
            journal = env.open_db(b"journal", txn=txn)
            for key, blob in list(txn.cursor(db=journal)):
                out, off = [], 0
                while off < len(blob):
                    n, kind = _HDR.unpack_from(blob, off)
                    rec = blob[off:off + _HDR.size + n]
                    if kind in (Record.PRODUCT, Record.ZONE):
                        r = json.loads(rec[_HDR.size:])
                        if kind == Record.PRODUCT and r["id"] in products:
                            r["rule"].update(products[r["id"]])
                            rec, changed = json_record(Record.PRODUCT, r), changed + 1
                        elif kind == Record.ZONE and r["id"] in zones:
                            r.update(zones[r["id"]])
                            rec, changed = json_record(Record.ZONE, r), changed + 1
                    out.append(rec)
                    off += _HDR.size + n
                txn.put(key, b"".join(out), db=journal)
    finally:
        env.close()
    return changed


def reasons(results) -> list[Reason]:
    return [r.reason for r in results]


def test_single_scans_replay_as_decided_under_changed_rules(shard, shard_path, clock):
    a, b = (t.code for t in sell(shard, qty=2).tickets)                     # adult: re-entry
    g = sell(shard, "group", qty=1, group=5, channel="window").tickets[0].code
    p = sell(shard, "punch10").tickets[0].code                               # 10 visits
    clock.at(TODAY, 9, 15)
    c = sell(shard, "combo", (MAIN_08, demo.slot_id("pagoda", TODAY, 9),
                              demo.slot_id("boat", TODAY, 11))).tickets[0].code
    run = lambda *cmds: [shard.run(x) for x in cmds]                          # noqa: E731
    got = run(cmd.verify(a, "north-1"), cmd.verify(a, "south-exit", OUT),
              cmd.verify(a, "north-1"),                                       # re-entry
              cmd.verify(b, "north-1"), cmd.verify(b, "north-2"),             # still inside
              cmd.verify(g, "north-1", persons=2), cmd.verify(g, "north-2"),  # 2, then the rest
              cmd.verify(g, "south-exit", OUT, persons=1),
              cmd.verify(c, "pagoda-1", OUT),                                 # exit, never in
              cmd.verify(c, "pagoda-1"), cmd.verify(c, "east"),
              cmd.verify(p, "north-1"), cmd.verify(p, "south-exit", OUT))
    assert reasons(got) == [Reason.OK, Reason.OK, Reason.OK_REENTRY, Reason.OK,
                            Reason.ALREADY_USED, Reason.OK, Reason.OK, Reason.OK,
                            Reason.NOT_INSIDE, Reason.OK, Reason.OK, Reason.OK, Reason.OK]
    assert [r.persons for r in got[5:8]] == [2, 3, 1]
    clock.t += 86400                             # the next day: a new visit rolls the zone
    assert shard.run(cmd.verify(p, "north-1")).reason == Reason.OK
    want = ticket_state(shard)
    shard.close(snapshot=False)

    # an upgrade reads the rules differently: no re-entry, one visit, a full main zone,
    # no exit check at the pagoda -- every decision above but the refusals would now be
    # another one
    assert change_rules(shard_path,
                        products={"adult": {"reentry": False}, "punch10": {"max_entries": 1}},
                        zones={"main": {"live_capacity": 1}, "pagoda": {"enforce_exit": False}}) == 4
    again = Shard.open(shard_path, clock=clock)
    try:
        assert ticket_state(again) == want
        assert again.check() == []
        # the new rules are in force: the punch card's second visit used its only one
        assert again.run(cmd.verify(p, "south-exit", OUT)).reason == Reason.OK
        assert again.run(cmd.verify(p, "north-1")).reason == Reason.ALREADY_USED
    finally:
        again.close(snapshot=False)


def test_batch_scans_replay_as_decided_under_changed_rules(shard, shard_path, clock):
    codes = [t.code for t in sell(shard, qty=4).tickets]
    forged = codes[0][:-1] + ("A" if codes[0][-1] != "A" else "B")
    got = [shard.run(cmd.verify_batch(codes + [forged], "north-2")),
           shard.run(cmd.verify_batch(codes[:3], "south-exit", OUT)),
           shard.run(cmd.verify_batch(codes[:3], ["north-1", "north-2", "east"])),
           shard.run(cmd.verify_batch(codes[2:], ["east", "north-1"]))]
    assert [list(map(Reason, r.reasons)) for r in got] == [
        [Reason.OK] * 4 + [Reason.FORGED], [Reason.OK] * 3, [Reason.OK_REENTRY] * 3,
        [Reason.ALREADY_USED, Reason.ALREADY_USED]]
    want = ticket_state(shard)
    shard.close(snapshot=False)

    assert change_rules(shard_path, products={"adult": {"reentry": False}}) == 1
    again = Shard.open(shard_path, clock=clock)
    try:
        assert ticket_state(again) == want
        assert again.check() == []
        r = again.run(cmd.verify_batch(codes[:1], "south-exit", OUT))
        assert (r[0].reason, r[0].persons) == (Reason.OK, 1)
        assert again.run(cmd.verify_batch(codes[:1], "north-1"))[0].reason == Reason.ALREADY_USED
    finally:
        again.close(snapshot=False)


def up(nonce: str, code: str, at: int, direction=IN, *, persons=0, admitted=1, reason=Reason.OK):
    return {"nonce": nonce, "seq": 0, "code": code, "direction": int(direction), "at": at,
            "persons": persons, "admitted": admitted, "reason": int(reason)}


def test_offline_uploads_replay_as_decided_under_changed_rules(shard, shard_path, clock):
    a, b = (t.code for t in sell(shard, qty=2).tickets)
    g = sell(shard, "group", qty=1, group=4, channel="window").tickets[0].code
    shard.run(cmd.verify(a, "north-1"))
    t = clock.t
    got = shard.run(cmd.offline_scans("east", [
        up("1", b, t + 60), up("2", b, t + 120, OUT), up("3", b, t + 180),    # b re-enters
        up("4", a, t + 240),                                                  # a is inside
        up("5", g, t + 300, persons=3), up("6", g, t + 360, OUT, persons=1),
        up("7", "not a code", t + 420)]))
    assert [(r.status, Reason(r.reason), r.persons) for r in got] == [
        ("APPLIED", Reason.OK, 1), ("APPLIED", Reason.OK, 1), ("APPLIED", Reason.OK_REENTRY, 1),
        ("CONFLICT", Reason.ALREADY_USED, 0), ("APPLIED", Reason.OK, 3), ("APPLIED", Reason.OK, 1),
        ("CONFLICT", Reason.FORGED, 0)]
    want = ticket_state(shard)
    shard.close(snapshot=False)

    assert change_rules(shard_path, products={"adult": {"reentry": False}}) == 1
    again = Shard.open(shard_path, clock=clock)
    try:
        assert ticket_state(again) == want
        assert again.check() == []
        assert again.run(cmd.verify(b, "south-exit", OUT)).reason == Reason.OK
        assert again.run(cmd.verify(b, "north-1")).reason == Reason.ALREADY_USED
    finally:
        again.close(snapshot=False)


def _append(shard: Shard, *records: bytes) -> None:
    """Commit a journal batch of `records` as a writer of this build would."""
    shard.seq += 1
    shard.storage.commit(shard.seq, FORMAT_RECORD + b"".join(records), {})


def test_a_journaled_admission_is_applied_even_where_the_rules_would_refuse(shard, shard_path, clock):
    """The journal, not this build's rules, says what was admitted: a scan journaled as
    admitted a year after the ticket's day is applied; one journaled as refused on its
    day changes nothing."""
    t = sell(shard, qty=2).tickets
    gate = shard.state.gate_idx[(demo.VENUE, "north-1")]
    late = clock.t + 365 * 86400
    untouched = shard.state.tickets.record(t[1].ticket_id)
    _append(shard, scan_record(t[0].ticket_id, gate, IN, 0, late, Reason.OK),
            scan_record(t[1].ticket_id, gate, IN, 0, clock.t, Reason.VOIDED))
    shard.close(snapshot=False)
    again = Shard.open(shard_path, clock=clock)
    try:
        st = again.state.tickets
        day = (late + demo.UTC_OFFSET) // 86400
        assert t[0].ticket_id in st.used and t[0].ticket_id in st.entered[day]
        assert st.record(t[0].ticket_id)["entries"] == 1
        assert st.record(t[1].ticket_id) == untouched and t[1].ticket_id not in st.used
    finally:
        again.close(snapshot=False)


@pytest.mark.parametrize("kind", ["scan", "batch", "offline", "zone"])
def test_a_journaled_admission_that_cannot_fit_the_state_is_corrupt(shard, shard_path, kind):
    tid = sell(shard).tickets[0].ticket_id
    gate = shard.state.gate_idx[(demo.VENUE, "north-1")]
    at = int(shard.clock())
    nowhere = shard.state.tickets.n + 100                 # no such ticket
    if kind == "scan":
        rec = scan_record(nowhere, gate, IN, 0, at, Reason.OK)
    elif kind == "batch":
        rec = scan_batch_record(array.array("q", [tid, nowhere]), gate, IN, at, 0,
                                bytes([Reason.OK, Reason.OK]))
    elif kind == "offline":
        rec = json_record(Record.OFFLINE_SCANS, {"venue": demo.VENUE, "gate": "north-1", "scans": [
            {"nonce": "n", "seq": 0, "direction": 1, "at": at, "persons": 0, "admitted": 1,
             "reason": 0, "ticket": nowhere, "result": int(Reason.OK), "k": 1}]})
    else:                                                 # an adult ticket at the pagoda
        rec = scan_record(tid, shard.state.gate_idx[(demo.VENUE, "pagoda-1")], IN, 0, at, Reason.OK)
    _append(shard, rec)
    shard.close(snapshot=False)
    with pytest.raises(CorruptData):
        Shard.open(shard_path)


def test_refusals_of_no_ticket_replay_as_nothing(shard, shard_path):
    gate = shard.state.gate_idx[(demo.VENUE, "north-1")]
    at = int(shard.clock())
    before = ticket_state(shard)
    _append(shard, scan_record(NO_TICKET, gate, IN, 0, at, Reason.UNKNOWN),
            scan_batch_record(array.array("q", [-1, -2]), gate, IN, at, 0,
                              bytes([Reason.FORGED, Reason.UNKNOWN])),
            scan_record(NO_TICKET, gate, OUT, 0, at, Reason.FORGED))
    shard.close(snapshot=False)
    again = Shard.open(shard_path)
    try:
        assert ticket_state(again) == before
    finally:
        again.close(snapshot=False)


def test_replay_keeps_the_days_of_a_two_day_journal(shard, shard_path, clock):
    """Not a rule change: the same journal replays to the same state (the roll of a zone
    to a new day included), as a check that apply is the live path's."""
    codes = [t.code for t in sell(shard, qty=3).tickets]
    for c in codes:
        shard.run(cmd.verify(c, "north-1"))
    shard.run(cmd.verify(codes[0], "south-exit", OUT))
    clock.t += 86400 + 3600
    tomorrow = demo.slot_id("main", TODAY + dt.timedelta(days=1), 8)
    more = [t.code for t in sell(shard, slots=(tomorrow,), qty=2).tickets]
    shard.run(cmd.verify_batch(more, "north-2"))
    want = ticket_state(shard)
    assert shard.state.tickets.zone_inside(shard.state.zone_idx[(demo.VENUE, "main")],
                                           (clock.t + demo.UTC_OFFSET) // 86400) == 2
    shard.close(snapshot=False)
    again = Shard.open(shard_path, clock=clock)
    try:
        assert ticket_state(again) == want
    finally:
        again.close(snapshot=False)
