"""Live operation on a real shard (issue 15): the controls an operator clicks (sales
paused, entry closed, live capacity), the flow alerts they set, gate heartbeats, and the
live view a control room watches. Expectations are what the API documents
(admin.proto, report.proto): a paused slot answers SALES_PAUSED, a closed entry
ENTRY_CLOSED, alerts rise at a level and fall 5 points below it."""
from __future__ import annotations


import pytest

from turnstile.engine import cmd, demo, Direction, FailedPrecondition, HoldItem, InvalidArgument, \
    NotFound, Reason, Shard
from tests.conftest import TODAY, sell, tree

IN, OUT = Direction.IN, Direction.OUT
V = demo.VENUE
MAIN8 = demo.slot_id("main", TODAY, 8)
MAIN10 = demo.slot_id("main", TODAY, 10)
PAGODA9 = demo.slot_id("pagoda", TODAY, 9)
COMBO = HoldItem("combo", (MAIN10, PAGODA9, demo.slot_id("boat", TODAY, 9)), 1)


def scan(shard, code, gate="north-1", direction=IN, **kw):
    return shard.run(cmd.verify(code, gate, direction, **kw))


def hold(shard, slot=MAIN8, product="adult", channel="web"):
    return shard.run(cmd.hold(channel, V, [HoldItem(product, (slot,), 1)]))


def refused(fn) -> FailedPrecondition:
    with pytest.raises(FailedPrecondition) as e:
        fn()
    return e.value


# -- sales paused ------------------------------------------------------------------------
def test_pausing_a_venue_refuses_every_hold_and_quote_until_resumed(shard):
    shard.run(cmd.pause_sales(V))
    e = refused(lambda: hold(shard))
    assert e.code == "SALES_PAUSED" and e.field == "items[0].slots[0]"
    assert refused(lambda: shard.run(cmd.hold("web", V, [COMBO]))).code == "SALES_PAUSED"
    with pytest.raises(FailedPrecondition, match="paused"):
        shard.quote(V, "web", [{"product": "adult", "slots": [MAIN8], "qty": 1}])
    assert shard.availability(V, TODAY)[0].sold == 0
    shard.run(cmd.pause_sales(V, False))
    assert hold(shard).amount_fen > 0


def test_pausing_a_zone_or_a_slot_leaves_the_others_on_sale(shard):
    shard.run(cmd.pause_sales(V, zone="pagoda"))
    shard.run(cmd.pause_sales(V, slot=MAIN8))
    assert refused(lambda: hold(shard)).code == "SALES_PAUSED"
    assert hold(shard, MAIN10).hold_id > 0
    e = refused(lambda: shard.run(cmd.hold("web", V, [COMBO])))
    assert e.code == "SALES_PAUSED" and e.field == "items[0].slots[1]"
    c = shard.live_controls(V)
    assert (c.sales_paused, c.paused_zones, c.paused_slots) == (False, ("pagoda",), (MAIN8,))


def test_a_hold_taken_before_the_pause_is_still_confirmed(shard):
    h = hold(shard)
    shard.run(cmd.pause_sales(V))
    r = shard.run(cmd.confirm(h.hold_id, "o-1", "web", method="cash", amount_fen=h.amount_fen))
    assert len(r.tickets) == 1


def test_a_change_into_a_paused_slot_is_refused(shard):
    sell(shard, order="o-ch")
    shard.run(cmd.pause_sales(V, slot=MAIN10))
    e = refused(lambda: shard.run(cmd.change("o-ch", "c1", [MAIN10], channel="web")))
    assert e.code == "SALES_PAUSED"
    assert shard.get_order("o-ch", "web").changes == []


# -- entry closed --------------------------------------------------------------------------
def test_closing_a_zone_refuses_entries_but_lets_people_out(shard):
    inside, waiting = (sell(shard).tickets[0].code for _ in range(2))
    assert scan(shard, inside).reason == Reason.OK
    shard.run(cmd.close_entry(V, zone="main"))
    r = scan(shard, waiting)
    assert (r.reason, r.persons) == (Reason.ENTRY_CLOSED, 0)
    assert scan(shard, waiting, "east").reason == Reason.ENTRY_CLOSED
    assert shard.inside("main", V) == 1
    assert scan(shard, inside, "south-exit", OUT).reason == Reason.OK
    assert shard.inside("main", V) == 0
    shard.run(cmd.close_entry(V, False, zone="main"))
    assert scan(shard, waiting).reason == Reason.OK


def test_closing_one_gate_leaves_the_zone_s_other_gates_open(shard):
    code = sell(shard).tickets[0].code
    shard.run(cmd.close_entry(V, gate="north-1"))
    assert scan(shard, code).reason == Reason.ENTRY_CLOSED
    assert scan(shard, code, "north-2").reason == Reason.OK


def test_a_refusal_for_another_reason_is_not_masked_by_a_closed_entry(shard):
    code = sell(shard).tickets[0].code
    assert scan(shard, code).reason == Reason.OK
    shard.run(cmd.close_entry(V, zone="main"))
    assert scan(shard, code, "north-2").reason == Reason.ALREADY_USED   # still inside


def test_offline_bundles_carry_closed_entries(shard):
    shard.run(cmd.close_entry(V, zone="pagoda"))
    shard.run(cmd.close_entry(V, gate="north-2"))
    b = shard.offline_bundle(V)
    assert {z.id: z.entry_closed for z in b.zones} == {"main": False, "pagoda": True, "boat": False}
    assert [g.id for g in b.gates if g.entry_closed] == ["north-2"]
    delta = shard.offline_bundle(V, b.epoch, b.version)
    assert not delta.full and [g.id for g in delta.gates if g.entry_closed] == ["north-2"]


# -- live capacity ----------------------------------------------------------------------------
def test_a_live_capacity_set_during_the_day_limits_entries_from_then_on(shard):
    codes = [t.code for t in sell(shard, qty=3).tickets]
    assert scan(shard, codes[0]).reason == Reason.OK
    shard.run(cmd.live_capacity(V, "main", 2))
    assert scan(shard, codes[1]).reason == Reason.OK
    assert scan(shard, codes[2]).reason == Reason.ZONE_FULL
    assert shard.catalog(V).zones[0].live_capacity == 2
    shard.run(cmd.live_capacity(V, "main", 0))              # no limit
    assert scan(shard, codes[2]).reason == Reason.OK


# -- kept across a restart: by the journal, and by a snapshot ----------------------------------
@pytest.mark.parametrize("snapshot", [False, True])
def test_controls_survive_a_restart(shard, shard_path, clock, snapshot):
    codes = [t.code for t in sell(shard, qty=2).tickets]
    shard.run_many([cmd.pause_sales(V, zone="boat"), cmd.close_entry(V, gate="north-1"),
                    cmd.live_capacity(V, "main", 1), cmd.flow_alerts(V, "main", [80, 95], 30)])
    before = shard.live_controls(V)
    shard.close(snapshot=snapshot)
    s = Shard.open(shard_path, clock=clock)
    try:
        assert s.live_controls(V) == before
        assert scan(s, codes[0]).reason == Reason.ENTRY_CLOSED
        assert scan(s, codes[0], "north-2").reason == Reason.OK
        assert scan(s, codes[1], "north-2").reason == Reason.ZONE_FULL
        assert refused(lambda: s.run(cmd.hold("web", V, [COMBO]))).code == "SALES_PAUSED"
        assert s.check() == []
    finally:
        s.close(snapshot=False)


# -- bad input changes nothing -------------------------------------------------------------------
@pytest.mark.parametrize("command, field", [
    (cmd.pause_sales(V, zone="main", slot=MAIN8), "slot"),
    (cmd.pause_sales(V, zone="nowhere"), "zone"),
    (cmd.close_entry(V), "zone"),
    (cmd.close_entry(V, zone="main", gate="north-1"), "zone"),
    (cmd.close_entry(V, gate="nowhere"), "gate"),
    (cmd.live_capacity(V, "main", -1), "live_capacity"),
    (cmd.live_capacity(V, "main", 10**9 + 1), "live_capacity"),
    (cmd.flow_alerts(V, "main", [95, 80]), "fill_pct[1]"),
    (cmd.flow_alerts(V, "main", [0]), "fill_pct[0]"),
    (cmd.flow_alerts(V, "main", [101]), "fill_pct[0]"),
    (cmd.flow_alerts(V, "main", [10, 20, 30, 40, 50]), "fill_pct"),
    (cmd.flow_alerts(V, "main", [], -1), "rate"),
])
def test_a_bad_control_is_refused_and_changes_nothing(shard, shard_path, command, field):
    before = tree(shard_path), shard.live_controls(V)
    with pytest.raises((InvalidArgument, NotFound)) as e:
        shard.run(command)
    assert e.value.field == field
    assert (tree(shard_path), shard.live_controls(V)) == before


def test_another_venue_s_zone_is_not_found(shard):
    from tests.conftest import add_hills
    add_hills(shard, TODAY)
    with pytest.raises(NotFound):
        shard.run(cmd.pause_sales(V, zone="summit"))
    with pytest.raises(NotFound):
        shard.run(cmd.close_entry(V, gate="summit-in"))


# -- the live view -----------------------------------------------------------------------------
def test_the_view_counts_inside_entries_and_the_last_minute(shard, clock):
    codes = [t.code for t in sell(shard, qty=3).tickets]
    scan(shard, codes[0])
    clock.t += 70                                     # a minute and more later
    scan(shard, codes[1])
    scan(shard, codes[2])
    scan(shard, codes[0], "south-exit", OUT)
    v = shard.live(V)
    main = v.zones[0]
    assert (main.zone, main.inside, main.entries, main.exits) == ("main", 2, 3, 1)
    assert main.last_minute == 2                      # the first entry is older than 60 s
    assert main.per_minute[-1] + main.per_minute[-2] == 3 and sum(main.per_minute) == 3
    assert len(main.per_minute) == 60
    assert v.day == demo.to_day(TODAY) and v.at == clock.t
    assert [(s.channel, s.tickets, s.paid_fen) for s in v.sales] == [("web", 3, 3 * 8000)]
    clock.t += 3600
    assert shard.live(V).zones[0].last_minute == 0


def test_fill_alerts_rise_by_level_and_fall_back_five_points_below(shard, clock):
    shard.run_many([cmd.live_capacity(V, "pagoda", 20), cmd.flow_alerts(V, "pagoda", [50, 80])])
    codes = [t.code for t in sell(shard, "combo", (MAIN8, PAGODA9, demo.slot_id("boat", TODAY, 9)),
                                  qty=17).tickets]
    clock.at(TODAY, 9, 10)

    def fill():
        return [(a.id, a.level_pct, a.value) for a in shard.live(V).alerts if a.kind == "fill"]

    for c in codes[:9]:
        scan(shard, c, "pagoda-1")
    assert fill() == []                                # 9 of 20: 45 %
    scan(shard, codes[9], "pagoda-1")
    assert fill() == [("fill:pagoda", 50, 10)]
    raised = shard.live(V).alerts[0].raised_at
    for c in codes[10:16]:
        scan(shard, c, "pagoda-1")
    assert fill() == [("fill:pagoda", 80, 16)]         # 80 %
    scan(shard, codes[0], "pagoda-1", OUT)             # 15 of 20: 75 %, within 5 points
    assert fill() == [("fill:pagoda", 80, 15)]
    scan(shard, codes[1], "pagoda-1", OUT)             # 70 %: back to the 50 % level
    assert fill() == [("fill:pagoda", 50, 14)]
    assert shard.live(V).alerts[0].raised_at >= raised
    for c in codes[2:6]:
        scan(shard, c, "pagoda-1", OUT)                # 10 of 20: 50 %
    assert fill() == [("fill:pagoda", 50, 10)]
    scan(shard, codes[6], "pagoda-1", OUT)             # 45 %: within 5 points still
    assert fill() == [("fill:pagoda", 50, 9)]
    scan(shard, codes[7], "pagoda-1", OUT)             # 40 %
    assert fill() == []


def test_a_rate_alert_is_open_while_the_last_minute_reaches_the_rate(shard, clock):
    shard.run(cmd.flow_alerts(V, "main", rate=3))
    codes = [t.code for t in sell(shard, qty=3).tickets]
    scan(shard, codes[0])
    scan(shard, codes[1])
    assert shard.live(V).alerts == ()
    scan(shard, codes[2])
    a, = shard.live(V).alerts
    assert (a.id, a.kind, a.value, a.threshold) == ("rate:main", "rate", 3, 3)
    clock.t += 61
    assert shard.live(V).alerts == ()


def test_gates_are_unknown_until_heard_and_down_when_silent(shard, clock):
    shard.board.gate_down_after_s = 30
    assert {g.gate: g.state for g in shard.live(V).gates}["north-1"] == "unknown"
    assert shard.heartbeat(V, "north-1", queued=4, bundle_cut_at=clock.t - 60, version="gate 2.1") is False
    assert shard.heartbeat(V, "pier-1", offline=True) is False
    gates = {g.gate: g for g in shard.live(V).gates}
    assert (gates["north-1"].state, gates["north-1"].status.queued) == ("up", 4)
    assert gates["pier-1"].state == "offline" and gates["east"].state == "unknown"
    assert shard.live(V).alerts == ()
    clock.t += 31
    shard.heartbeat(V, "pier-1")
    v = shard.live(V)
    assert {g.gate: g.state for g in v.gates if g.status} == {"north-1": "down", "pier-1": "up"}
    assert [(a.id, a.value) for a in v.alerts] == [("gate:north-1", 31)]
    shard.heartbeat(V, "north-1")
    assert shard.live(V).alerts == ()


def test_a_heartbeat_says_when_entry_is_closed(shard):
    shard.run(cmd.close_entry(V, zone="pagoda"))
    assert shard.heartbeat(V, "pagoda-1") is True
    assert shard.heartbeat(V, "north-1") is False
    with pytest.raises(InvalidArgument) as e:
        shard.heartbeat(V, "north-1", version="x" * 65)
    assert e.value.field == "version"
    with pytest.raises(NotFound):
        shard.heartbeat(V, "nowhere")


# -- ticket and live counts (ReportService.TicketCounts, LiveCounts) -----------------------------
def test_ticket_and_live_counts_count_codes_and_a_code_used_through_any_of_its_parts(shard, clock):
    """report.proto: per product, codes issued, used (entered through any zone of the code),
    voided and blocked; a combo's three parts are one code."""
    before = {c.product: c for c in shard.ticket_counts(V)}
    entered0 = {z.zone: z.entered for z in shard.live_counts(V, TODAY)}
    combos = [t for _ in range(3) for t in sell(shard, "combo", COMBO.slots).tickets]
    adults = sell(shard, "adult", (MAIN8,), qty=3).tickets
    clock.at(TODAY, 10, 5)
    assert scan(shard, combos[0].code, "pagoda-1").reason == Reason.OK      # the pagoda only
    assert scan(shard, combos[1].code).reason == Reason.OK                  # the main zone
    assert scan(shard, combos[1].code, "pagoda-1").reason == Reason.OK      # and the pagoda
    assert scan(shard, combos[1].code, "pier-1").reason == Reason.OK        # and the boat
    shard.run(cmd.block(adults[0].ticket_id))
    shard.run(cmd.block(combos[2].ticket_id))
    after = {c.product: c for c in shard.ticket_counts(V)}
    grew = {p: (after[p].issued - before[p].issued, after[p].used - before[p].used,
                after[p].voided - before[p].voided, after[p].blocked - before[p].blocked)
            for p in ("combo", "adult")}
    assert grew == {"combo": (3, 2, 0, 1), "adult": (3, 0, 0, 1)}
    # LiveCounts: tickets entered today per zone, each part of a combo in its own zone
    entered = {z.zone: z.entered - entered0[z.zone] for z in shard.live_counts(V, TODAY)}
    assert entered == {"main": 1, "pagoda": 2, "boat": 1}
    assert [c.product for c in shard.ticket_counts(V)][:3] == ["adult", "child", "combo"]
