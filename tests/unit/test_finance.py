"""Finance in the engine (issue 14): the money counters a day's revenue report adds up,
cash-desk shifts, entries per gate and hour, tickets by visit day, the revenue split and
its settlement, order listings by cursor, statements and their reconciliation. Every
expectation is worked out here from the prices, fees and shares the test sets, and each
survives a reopen (from the snapshot, and from the journal alone)."""
from __future__ import annotations

import datetime as dt

import pytest

from turnstile.engine import (AlreadyExists, Direction, FailedPrecondition, HoldItem, InvalidArgument, NotFound, RefundTier,
                              Shard, cmd, demo)

from tests.conftest import TODAY

V = demo.VENUE
SLOT10 = (demo.slot_id("main", TODAY, 10),)      # 10:00-11:00; the clock starts at 08:30


def _sell(shard, product="adult", slots=SLOT10, *, qty=1, group=1, channel="web", method="cash",
          order=None, shift="", principal="", reference=""):
    h = shard.run(cmd.hold(channel, V, [HoldItem(product, slots, qty, group)]))
    return shard.run(cmd.confirm(h.hold_id, order or f"o-{h.hold_id}", channel, method=method,
                                 amount_fen=h.amount_fen, reference=reference, shift=shift,
                                 principal=principal))


def _day(shard):
    """A day's business: a window shift selling 2 adults for cash, a web sale of a child by
    Alipay, one adult refunded at the window with a 10 % fee."""
    shard.run(cmd.refund_policy(V, "adult", [RefundTier(0, 10)]))
    shard.run(cmd.open_shift(V, "window-1", "w1-am", cashier="Li", float_fen=50_000, principal="till-1"))
    a = _sell(shard, qty=2, channel="window", shift="w1-am", principal="till-1", order="w-1")
    c = _sell(shard, "child", channel="web", method="alipay", order="web-1", reference="2026112322001")
    r = shard.run(cmd.refund("w-1", "r-1", [a.tickets[0].ticket_id], channel="window",
                             shift="w1-am", principal="till-1"))
    return a, c, r


def _revenue(shard, by=("channel", "method")):
    rows, total = shard.revenue(V, TODAY, TODAY, "day", by)
    return {tuple(cut.values()): dict(zip(FIELDS, v)) for _, cut, v in rows}, dict(zip(FIELDS, total))


FIELDS = ("sold_tickets", "sold_persons", "gross_fen", "discount_fen", "paid_fen", "refunded_tickets",
          "refunded_persons", "refunded_fen", "fee_fen", "changed_tickets", "change_in_fen", "change_out_fen")


def test_a_days_revenue_adds_up_sales_refunds_and_fees_per_channel_and_method(shard):
    _, _, r = _day(shard)
    assert (r.amount_fen, r.fee_fen) == (7200, 800)
    rows, total = _revenue(shard)
    assert rows[("window", "cash")] == dict(zip(FIELDS, (2, 2, 16000, 0, 16000, 1, 1, 7200, 800, 0, 0, 0)))
    assert rows[("web", "alipay")] == dict(zip(FIELDS, (1, 1, 4000, 0, 4000, 0, 0, 0, 0, 0, 0, 0)))
    assert len(rows) == 2
    net = total["paid_fen"] - total["refunded_fen"]
    assert net == 16000 + 4000 - 7200
    # by month and year: the same money
    (_, _, month), = shard.revenue(V, TODAY, TODAY + dt.timedelta(days=30), "month")[0]
    assert dict(zip(FIELDS, month)) == total
    # nothing the day before
    assert shard.revenue(V, TODAY - dt.timedelta(days=1), TODAY - dt.timedelta(days=1)) == ([], [0] * 12)


def test_a_shift_counts_its_cash_and_closes_with_over_short(shard):
    _day(shard)
    sh = shard.shift(V, "w1-am")
    assert sh["station"] == "window-1" and sh["open"]
    assert sh["methods"] == [["cash", 1, 16000, 1, 7200]]
    assert sh["cash_expected_fen"] == 50_000 + 16000 - 7200
    # only its opener sells into it; one open shift per station
    with pytest.raises(NotFound):
        _sell(shard, channel="window", shift="w1-am", principal="till-2")
    with pytest.raises(FailedPrecondition):
        shard.run(cmd.open_shift(V, "window-1", "w1-pm", principal="till-2"))
    with pytest.raises(NotFound):
        shard.run(cmd.close_shift(V, "w1-am", 0, principal="till-2"))
    closed = shard.run(cmd.close_shift(V, "w1-am", 50_000 + 16000 - 7200 - 100, principal="till-1"))
    assert closed["over_short_fen"] == -100 and not closed["open"]
    with pytest.raises(FailedPrecondition):         # closed: nothing more is sold into it
        _sell(shard, channel="window", shift="w1-am", principal="till-1")
    shard.run(cmd.open_shift(V, "window-1", "w1-pm", principal="till-2"))   # the station is free
    # the order records its station and shift
    o = shard.get_order("w-1", "window")
    assert (o.station, o.shift) == ("window-1", "w1-am")
    assert [s["shift"] for s in shard.shifts(V, TODAY, TODAY)] == ["w1-am", "w1-pm"]


def test_entries_per_gate_and_hour_first_entries_reentries_exits_and_peak(shard, clock):
    sold = _sell(shard, qty=3, slots=(demo.day_slot_id(TODAY),))
    codes = [t.code for t in sold.tickets]
    clock.at(TODAY, 9, 10)
    for c in codes:
        assert shard.run(cmd.verify(c, "north-1")).reason.name == "OK"
    clock.at(TODAY, 10, 5)
    assert shard.run(cmd.verify(codes[0], "south-exit", Direction.OUT)).reason.name == "OK"
    clock.at(TODAY, 10, 30)
    assert shard.run(cmd.verify(codes[0], "east")).reason.name == "OK_REENTRY"
    assert shard.run(cmd.verify(codes[1], "east")).reason.name == "ALREADY_USED"   # refused: not counted
    e = shard.entries(V, TODAY)
    assert [(g["gate"], g["hour"], g["entries"], g["reentries"], g["exits"]) for g in e["gate_hours"]] == [
        ("east", 10, 0, 1, 0), ("north-1", 9, 3, 0, 0), ("south-exit", 10, 0, 0, 1)]
    main = next(z for z in e["zones"] if z["zone"] == "main")
    assert (main["entries"], main["reentries"], main["exits"], main["entered_tickets"], main["peak_inside"]) \
        == (3, 1, 1, 3, 3)
    assert shard.entries(V, TODAY + dt.timedelta(days=1))["gate_hours"] == []


def test_tickets_by_visit_day_sold_used_unused_refunded_expired(shard, clock):
    today = _sell(shard, qty=4, slots=(demo.day_slot_id(TODAY),))
    _sell(shard, qty=2, slots=(demo.day_slot_id(TODAY + dt.timedelta(days=1)),))
    clock.at(TODAY, 9)
    shard.run(cmd.verify(today.tickets[0].code, "north-1"))
    shard.run(cmd.refund(today.order.order_id, "r1", [today.tickets[1].ticket_id], channel="web"))
    rows = {(r["day"], r["product"]): r for r in shard.ticket_status(V, TODAY, TODAY + dt.timedelta(days=1))}
    d0, d1 = demo.to_day(TODAY), demo.to_day(TODAY + dt.timedelta(days=1))
    assert {k: rows[(d0, "adult")][k] for k in ("sold", "used", "unused", "refunded", "expired")} == \
        dict(sold=4, used=1, unused=2, refunded=1, expired=0)
    assert rows[(d1, "adult")]["unused"] == 2
    clock.at(TODAY + dt.timedelta(days=1), 12)      # the day after: today's unused ones expired
    r = {(x["day"], x["product"]): x for x in shard.ticket_status(V, TODAY, TODAY)}[(d0, "adult")]
    assert (r["unused"], r["expired"], r["used"], r["refunded"]) == (0, 2, 1, 1)


def test_the_split_gives_each_partner_its_share_and_the_venue_the_rest_to_the_fen(shard):
    shard.run(cmd.revenue_split(V, "adult", [
        {"partner": "lake-ota", "kind": "partner", "pct": 10},
        {"partner": "main", "kind": "zone", "per_person_fen": 500}]))
    a, _, r = _day(shard)                           # 2 adults sold (16000), one refunded (7200 back)
    combo = _sell(shard, "combo", (demo.slot_id("main", TODAY, 10), demo.slot_id("pagoda", TODAY, 10),
                                   demo.slot_id("boat", TODAY, 10)), qty=2)
    paid_combo = combo.order.amount_fen
    partners, net, venue_share = shard.settlement(V, TODAY, TODAY)
    got = {p["partner"]: p["amount_fen"] for p in partners}
    assert got["lake-ota"] == 1600 - 720               # 10 % of 16000, less 10 % of the 7200 refunded
    assert got["main"] == 2 * 500 - 500                 # 5 yuan a person, one person refunded
    assert got["westlake-boats"] == 2 * 4000 and got["leifeng-pagoda"] == 2 * 3000   # the package's parts
    assert net == 16000 + 4000 - 7200 + paid_combo
    assert venue_share + sum(got.values()) == net
    assert [p["partner"] for p in shard.settlement(V, TODAY, TODAY, "lake-ota")[0]] == ["lake-ota"]
    # a share names a part for a package, and only then
    with pytest.raises(InvalidArgument) as e:
        shard.run(cmd.revenue_split(V, "combo", [{"partner": "x", "kind": "partner", "pct": 5}]))
    assert e.value.field == "shares[0].part"
    with pytest.raises(InvalidArgument) as e:
        shard.run(cmd.revenue_split(V, "adult", [{"partner": "x", "kind": "bank", "pct": 5}]))
    assert e.value.field == "shares[0].kind"


def test_orders_are_listed_by_day_channel_station_status_a_page_at_a_time(shard):
    _day(shard)
    for i in range(5):
        _sell(shard, channel="web", order=f"bulk-{i}")
    orders, nxt = shard.list_orders(V, TODAY, TODAY)
    assert [o.order_id for o in orders] == ["w-1", "web-1"] + [f"bulk-{i}" for i in range(5)] and nxt == ""
    assert [o.order_id for o in shard.list_orders(V, TODAY, TODAY, station="window-1")[0]] == ["w-1"]
    assert [o.order_id for o in shard.list_orders(V, TODAY, TODAY, status="partly_refunded")[0]] == ["w-1"]
    seen, after = [], ""
    while True:
        page, after = shard.list_orders(V, TODAY, TODAY, channel="web", after=after, limit=2)
        seen += [o.order_id for o in page]
        if not after:
            break
    assert seen == ["web-1"] + [f"bulk-{i}" for i in range(5)]
    refunds, _ = shard.list_refunds(V, TODAY, TODAY)
    assert [(x["order_id"], x["refund"]["refund_id"], x["refund"]["amount_fen"], x["shift"]) for x in refunds] \
        == [("w-1", "r-1", 7200, "w1-am")]
    with pytest.raises(InvalidArgument):
        shard.list_orders(V, TODAY, TODAY, after="not-a-cursor!")
    with pytest.raises(InvalidArgument):
        shard.list_orders(V, TODAY, TODAY, status="lost")


def test_a_statement_reconciles_to_the_fen_and_names_each_mismatch(shard):
    _day(shard)
    _sell(shard, "child", method="alipay", order="web-2", reference="T-2")
    _sell(shard, "child", method="alipay", order="web-3", reference="T-3")
    shard.run(cmd.refund("web-2", "rf-2", channel="web"))            # 4000 back (child: no fee)
    lines = [
        {"kind": "payment", "trade_no": "2026112322001", "order_id": "web-1", "amount_fen": 4000, "fee_fen": 24},
        {"kind": "payment", "trade_no": "T-2", "order_id": "web-2", "amount_fen": 4000, "fee_fen": 24},
        {"kind": "payment", "trade_no": "T-3", "order_id": "web-3", "amount_fen": 3999, "fee_fen": 24},
        {"kind": "payment", "trade_no": "T-9", "order_id": "elsewhere", "amount_fen": 100, "fee_fen": 1},
        {"kind": "refund", "trade_no": "T-9", "order_id": "elsewhere", "refund_id": "x", "amount_fen": 100,
         "fee_fen": -1},
    ]
    first = shard.run(cmd.statement(V, "alipay", TODAY, lines))
    assert first["changed"] and first["lines"] == 5
    assert shard.run(cmd.statement(V, "alipay", TODAY, lines)) == {**first, "changed": False}
    r = shard.reconcile(V, "alipay", TODAY)
    assert (r["matched_payments"], r["matched_paid_fen"]) == (2, 8000)
    kinds = sorted((m["kind"], m["order_id"]) for m in r["mismatches"])
    assert kinds == [("AMOUNT_DIFFERS", "web-3"), ("PAID_NOT_IN_TURNSTILE", "elsewhere"),
                     ("REFUND_MISSING_AT_PROVIDER", "web-2"), ("REFUND_MISSING_IN_TURNSTILE", "elsewhere")]
    # a Turnstile payment the provider does not list
    shard.run(cmd.statement(V, "alipay", TODAY, lines[1:]))
    assert ("IN_TURNSTILE_NOT_PAID", "web-1") in {(m["kind"], m["order_id"])
                                                  for m in shard.reconcile(V, "alipay", TODAY)["mismatches"]}
    with pytest.raises(NotFound):
        shard.reconcile(V, "wechat", TODAY)
    with pytest.raises(InvalidArgument) as e:
        shard.run(cmd.statement(V, "alipay", TODAY, [{"kind": "refund", "order_id": "a", "amount_fen": 5}]))
    assert e.value.field == "lines[0].refund_id"


@pytest.mark.parametrize("snapshot", [True, False])
def test_everything_counted_is_there_after_a_reopen(shard_path, clock, snapshot):
    s = Shard.open(shard_path, clock=clock)
    s.run_many(demo.commands(TODAY))
    s.run(cmd.revenue_split(V, "adult", [{"partner": "lake-ota", "kind": "partner", "pct": 10}]))
    a, _, _ = _day(s)
    clock.at(TODAY, 10, 10)
    s.run(cmd.verify(a.tickets[1].code, "north-2"))
    before = (s.revenue(V, TODAY, TODAY, "day", ("channel", "station", "product", "method")),
              s.shift(V, "w1-am"), s.settlement(V, TODAY, TODAY), s.entries(V, TODAY),
              s.ticket_status(V, TODAY, TODAY), s.list_orders(V, TODAY, TODAY))
    s.close(snapshot=snapshot)
    s = Shard.open(shard_path, clock=clock)
    try:
        after = (s.revenue(V, TODAY, TODAY, "day", ("channel", "station", "product", "method")),
                 s.shift(V, "w1-am"), s.settlement(V, TODAY, TODAY), s.entries(V, TODAY),
                 s.ticket_status(V, TODAY, TODAY), s.list_orders(V, TODAY, TODAY))
        assert after == before
        assert s.check(replay=True) == []
        with pytest.raises(AlreadyExists):
            s.run(cmd.open_shift(V, "window-2", "w1-am", idempotency_key="again"))
    finally:
        s.close(snapshot=False)


def test_a_refund_at_another_desk_is_counted_there_and_in_its_shift(shard):
    shard.run(cmd.open_shift(V, "window-1", "a", principal="till-1"))
    shard.run(cmd.open_shift(V, "window-2", "b", principal="till-2"))
    sold = _sell(shard, qty=2, channel="window", shift="a", principal="till-1", order="w-9")
    shard.run(cmd.refund("w-9", "r", [sold.tickets[0].ticket_id], channel="window", shift="b",
                         principal="till-2"))
    rows, _ = _revenue(shard, ("station",))
    assert (rows[("window-1",)]["paid_fen"], rows[("window-1",)]["refunded_fen"]) == (16000, 0)
    assert (rows[("window-2",)]["paid_fen"], rows[("window-2",)]["refunded_fen"]) == (0, 8000)
    assert shard.shift(V, "b")["methods"] == [["cash", 0, 0, 1, 8000]]
    assert shard.shift(V, "b")["cash_expected_fen"] == -8000      # the drawer gave out what it never took
    (r,), _ = shard.list_refunds(V, TODAY, TODAY, station="window-2")
    assert (r["order_id"], r["shift"]) == ("w-9", "b")


def test_a_payment_is_matched_by_its_reference_not_by_an_order_id_with_another_reference(shard):
    _sell(shard, "child", method="alipay", order="web-7", reference="T-7")
    _sell(shard, "child", method="alipay", order="web-8")                 # no reference recorded
    shard.run(cmd.statement(V, "alipay", TODAY, [
        {"kind": "payment", "trade_no": "T-OTHER", "order_id": "web-7", "amount_fen": 4000},
        {"kind": "payment", "trade_no": "T-8", "order_id": "web-8", "amount_fen": 4000}]))
    r = shard.reconcile(V, "alipay", TODAY)
    assert r["matched_payments"] == 1                                     # web-8, by its order id
    assert sorted((m["kind"], m["reference"]) for m in r["mismatches"]) == [
        ("IN_TURNSTILE_NOT_PAID", "T-7"), ("PAID_NOT_IN_TURNSTILE", "T-OTHER")]
