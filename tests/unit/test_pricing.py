"""The price calendar (issue 13): a venue's days have types (weekday, weekend, holiday,
peak, off -- the holiday calendar is data an operator loads), a product has a price per
date type and channel with its base and channel prices as the default, a quote explains
each line and gives an id a hold is held to. Expectations from the issue's contract;
TODAY (tests/conftest.py) is Monday 2026-11-23, the demo's slots run a week from it."""
from __future__ import annotations

import datetime as dt

import pytest

from turnstile.engine import (DatePrice, HoldItem, InvalidArgument, NotFound, QuoteChanged,
                              QuoteExpired, Shard, cmd, demo)
from turnstile.engine.model import QUOTE_TTL_S

from tests.conftest import TODAY

MON, SAT, SUN = TODAY, TODAY + dt.timedelta(days=5), TODAY + dt.timedelta(days=6)
WED, THU = TODAY + dt.timedelta(days=2), TODAY + dt.timedelta(days=3)
BASE, OTA = 8000, None          # demo adult: 8000 fen; read the OTA's own price below


def _item(day: dt.date, qty: int = 1) -> HoldItem:
    return HoldItem("adult", (demo.day_slot_id(day),), qty)


def _quote(shard: Shard, day: dt.date, channel: str = "web"):
    return shard.quote(demo.VENUE, channel, [{"product": "adult", "slots": [demo.day_slot_id(day)],
                                              "qty": 1}])


def _held(shard: Shard, day: dt.date) -> int:
    return next(s for s in shard.availability(demo.VENUE, day) if s.slot == demo.day_slot_id(day)).held


def _price_demo(shard: Shard) -> None:
    shard.run_many([
        cmd.calendar(demo.VENUE, {WED: "holiday", SAT: "weekday"}),
        cmd.prices(demo.VENUE, "adult", [DatePrice("weekend", "", 10000),
                                         DatePrice("holiday", "", 12000),
                                         DatePrice("holiday", "ota", 11500)]),
    ])


def test_days_are_weekday_or_weekend_unless_the_calendar_says_otherwise(shard):
    days = {d.day: (d.date_type, d.explicit) for d in shard.calendar(demo.VENUE, MON, SUN)}
    assert [t for t, _ in days.values()] == ["weekday"] * 5 + ["weekend"] * 2
    r = shard.run(cmd.calendar(demo.VENUE, {WED: "holiday", SAT: "weekday", "2027-10-01": "peak"}))
    assert r.days == 3
    got = {d.day: (d.date_type, d.explicit) for d in shard.calendar(demo.VENUE, MON, SUN)}
    assert got[(WED - dt.date(1970, 1, 1)).days] == ("holiday", True)
    assert got[(SAT - dt.date(1970, 1, 1)).days] == ("weekday", True)      # a working Saturday
    assert got[(SUN - dt.date(1970, 1, 1)).days] == ("weekend", False)
    shard.run(cmd.calendar(demo.VENUE, {WED: ""}))                        # entry removed
    assert shard.calendar(demo.VENUE, WED)[0].date_type == "weekday"


def test_a_line_is_priced_by_its_days_type_and_channel(shard):
    ota_base = _quote(shard, MON, "ota").amount_fen          # the demo's OTA channel price
    assert _quote(shard, MON).amount_fen == BASE
    _price_demo(shard)
    assert _quote(shard, MON).amount_fen == BASE                # no weekday price: the base
    assert _quote(shard, MON, "ota").amount_fen == ota_base     # ... the channel's own
    assert _quote(shard, SUN).amount_fen == 10000               # weekend, any channel
    assert _quote(shard, SUN, "ota").amount_fen == 10000
    assert _quote(shard, SAT).amount_fen == BASE                # the calendar: a working day
    assert _quote(shard, WED).amount_fen == 12000               # holiday
    assert _quote(shard, WED, "ota").amount_fen == 11500        # holiday for the OTA
    q = _quote(shard, WED, "ota")
    line, = q.lines
    assert (line.product, line.date_type, line.base_price_fen, line.unit_price_fen) == \
        ("adult", "holiday", 11500, 11500)
    assert line.rules == []
    assert q.quote_id and q.expires_at == int(shard.clock()) + QUOTE_TTL_S


def test_a_hold_with_a_quote_id_is_charged_the_quote_or_refused(shard, clock):
    _price_demo(shard)
    q = _quote(shard, SUN)
    h = shard.run(cmd.hold("web", demo.VENUE, [_item(SUN)], quote_id=q.quote_id))
    assert h.amount_fen == q.amount_fen == 10000
    # the operator changes the weekend price: the old quote is refused, nothing is held
    q2 = _quote(shard, SUN)
    shard.run(cmd.prices(demo.VENUE, "adult", [DatePrice("weekend", "", 9000)]))
    before = _held(shard, SUN)
    with pytest.raises(QuoteChanged):
        shard.run(cmd.hold("web", demo.VENUE, [_item(SUN)], quote_id=q2.quote_id))
    assert _held(shard, SUN) == before
    # another channel, other items or another day than quoted: not this quote
    q3 = _quote(shard, SUN)
    for bad in (cmd.hold("ota", demo.VENUE, [_item(SUN)], quote_id=q3.quote_id),
                cmd.hold("web", demo.VENUE, [_item(SUN, 2)], quote_id=q3.quote_id),
                cmd.hold("web", demo.VENUE, [_item(SAT)], quote_id=q3.quote_id)):
        with pytest.raises(QuoteChanged):
            shard.run(bad)
    with pytest.raises(InvalidArgument):
        shard.run(cmd.hold("web", demo.VENUE, [_item(SUN)], quote_id="not a quote"))
    forged = q3.quote_id[:-2] + ("A" if q3.quote_id[-2] != "A" else "B") + q3.quote_id[-1]
    with pytest.raises(QuoteChanged):
        shard.run(cmd.hold("web", demo.VENUE, [_item(SUN)], quote_id=forged))
    clock.t += QUOTE_TTL_S + 1
    with pytest.raises(QuoteExpired):
        shard.run(cmd.hold("web", demo.VENUE, [_item(SUN)], quote_id=q3.quote_id))
    assert _held(shard, SUN) == before
    ok = shard.run(cmd.hold("web", demo.VENUE, [_item(SUN)]))
    assert ok.amount_fen == 9000


def test_bad_calendars_and_price_tables_change_nothing(shard):
    _price_demo(shard)
    table = shard.price_table(demo.VENUE, "adult")
    cal = shard.calendar(demo.VENUE, MON, SUN)
    for bad, field in (
            (cmd.calendar(demo.VENUE, {"2026-13-01": "holiday"}), "days"),
            (cmd.calendar(demo.VENUE, {"2026-11-24": "festival"}), "days"),
            (cmd.calendar(demo.VENUE, {}), "days"),
            (cmd.prices(demo.VENUE, "adult", [{"date_type": "sunday", "price_fen": 1}]), "prices[0].date_type"),
            (cmd.prices(demo.VENUE, "adult", [{"date_type": "weekend", "price_fen": -1}]), "prices[0].price_fen"),
            (cmd.prices(demo.VENUE, "adult", [{"date_type": "weekend", "channel": "bad channel!", "price_fen": 1}]),
             "prices[0].channel"),
            (cmd.prices(demo.VENUE, "adult", [DatePrice("weekend", "", 1), DatePrice("weekend", "", 2)]),
             "prices[1]")):
        with pytest.raises(InvalidArgument) as e:
            shard.run(bad)
        assert e.value.field.startswith(field), (e.value.field, field)
    with pytest.raises(NotFound):
        shard.run(cmd.prices(demo.VENUE, "no-such-product", [DatePrice("weekend", "", 1)]))
    with pytest.raises(NotFound):
        shard.run(cmd.calendar("no-such-venue", {MON: "holiday"}))
    assert shard.price_table(demo.VENUE, "adult") == table
    assert shard.calendar(demo.VENUE, MON, SUN) == cal


@pytest.mark.parametrize("snapshot", [False, True])
def test_the_calendar_prices_and_a_priced_hold_survive_a_reopen(shard_path, clock, snapshot):
    shard = Shard.open(shard_path, clock=clock)
    shard.run_many(demo.commands(TODAY))
    _price_demo(shard)
    h = shard.run(cmd.hold("web", demo.VENUE, [_item(WED)]))
    # the price changes after the hold: the hold keeps what it was charged (its record
    # holds the price decided, replay never prices it again)
    shard.run(cmd.prices(demo.VENUE, "adult", []))
    table, cal = shard.price_table(demo.VENUE, "adult"), shard.calendar(demo.VENUE, MON, SUN)
    shard.close(snapshot=snapshot)
    again = Shard.open(shard_path, clock=clock)
    try:
        assert again.price_table(demo.VENUE, "adult") == table
        assert again.calendar(demo.VENUE, MON, SUN) == cal
        assert again.hold_info(h.hold_id).amount_fen == 12000
        assert _quote(again, WED).amount_fen == BASE
        assert again.check() == []
    finally:
        again.close(snapshot=False)


def _slot_quote(shard: Shard, day: dt.date, hour: int, channel: str = "web"):
    return shard.quote(demo.VENUE, channel, [{"product": "adult", "qty": 1,
                                              "slots": [demo.slot_id("main", day, hour)]}])


def test_pricing_rules_apply_in_their_documented_order(shard):
    """early_bird, then time_of_day, then fill_rate, each on the price the one before left
    (model.RULE_KINDS); the quote names each with its amount."""
    _price_demo(shard)
    r = shard.run(cmd.price_rules(demo.VENUE, "adult", [
        {"kind": "time_of_day", "from_minute": 14 * 60, "amount_fen": -2000},   # given out of order
        {"kind": "early_bird", "days_ahead": 3, "pct": -10},
    ]))
    assert [x.kind for x in r.rules] == ["early_bird", "time_of_day"]
    assert _slot_quote(shard, MON, 8).amount_fen == BASE                  # today, morning: none
    assert _slot_quote(shard, MON, 16).amount_fen == BASE - 2000          # late afternoon
    assert _slot_quote(shard, SUN, 8).amount_fen == 9000                  # weekend 10000, -10 %
    q = _slot_quote(shard, SUN, 16)
    line, = q.lines
    assert (line.date_type, line.base_price_fen, line.unit_price_fen) == ("weekend", 10000, 7000)
    assert [(a.rule, a.amount_fen) for a in line.rules] == [("early_bird", -1000), ("time_of_day", -2000)]
    assert q.amount_fen == 7000
    # a hold is charged the same, and held to the quote
    h = shard.run(cmd.hold("web", demo.VENUE, [HoldItem("adult", (demo.slot_id("main", SUN, 16),), 1)],
                           quote_id=q.quote_id))
    assert h.amount_fen == 7000


def test_a_member_level_price_applies_last_and_only_to_members_of_that_level(shard):
    """member_level comes after fill_rate (model.RULE_KINDS), on the price the rules before
    left; a buyer without a level (every buyer until the members work gives levels) pays
    the price without it. A coupon comes after all of them."""
    shard.run(cmd.price_rules(demo.VENUE, "adult", [
        {"kind": "member_level", "member_level": 2, "pct": -20},
        {"kind": "time_of_day", "from_minute": 14 * 60, "amount_fen": -2000}]))
    assert [r.kind for r in shard.price_rules(demo.VENUE, "adult").rules] == ["time_of_day", "member_level"]
    item = [{"product": "adult", "slots": [demo.slot_id("main", MON, 16)], "qty": 1}]
    assert shard.quote(demo.VENUE, "web", item).amount_fen == BASE - 2000
    assert shard.quote(demo.VENUE, "web", item, member_level=1).amount_fen == BASE - 2000
    gold = shard.quote(demo.VENUE, "web", item, member_level=3)
    assert [(a.rule, a.amount_fen) for a in gold.lines[0].rules] == [("time_of_day", -2000),
                                                                     ("member_level", -1200)]
    h = shard.run(cmd.hold("web", demo.VENUE, [HoldItem("adult", (demo.slot_id("main", MON, 16),), 1)],
                           member_level=3, quote_id=gold.quote_id))
    assert h.amount_fen == BASE - 2000 - 1200
    with pytest.raises(QuoteChanged):               # a member's quote is not a non-member's price
        shard.run(cmd.hold("web", demo.VENUE, [HoldItem("adult", (demo.slot_id("main", MON, 16),), 1)],
                           quote_id=gold.quote_id))
    with pytest.raises(InvalidArgument) as e:
        shard.run(cmd.price_rules(demo.VENUE, "adult", [{"kind": "member_level", "member_level": 100,
                                                         "pct": -5}]))
    assert e.value.field == "rules[0].member_level"


def test_a_fill_rate_surcharge_is_capped_and_no_price_goes_below_zero(shard):
    shard.run(cmd.price_rules(demo.VENUE, "adult", [
        {"kind": "fill_rate", "fill_pct": 50, "pct": 20, "cap_fen": 1000}]))
    slot = demo.slot_id("main", TODAY, 10)
    assert _slot_quote(shard, MON, 10).amount_fen == BASE
    shard.run(cmd.hold("web", demo.VENUE, [HoldItem("adult", (slot,), 1000)]))   # half of 2000
    q = _slot_quote(shard, MON, 10)
    assert q.amount_fen == BASE + 1000                                    # +20 % = 1600, capped
    assert q.lines[0].rules[0] == ("fill_rate", 1000)
    shard.run(cmd.price_rules(demo.VENUE, "adult", [
        {"kind": "early_bird", "days_ahead": 1, "amount_fen": -10**9}]))
    assert _slot_quote(shard, THU, 10).amount_fen == 0
    assert _slot_quote(shard, THU, 10).lines[0].rules[0].amount_fen == -BASE
    shard.run(cmd.price_rules(demo.VENUE, "adult", []))                    # rules removed
    assert shard.price_rules(demo.VENUE, "adult").rules == []
    assert _slot_quote(shard, THU, 10).amount_fen == BASE


def test_bad_pricing_rules_change_nothing(shard):
    shard.run(cmd.price_rules(demo.VENUE, "adult", [{"kind": "early_bird", "days_ahead": 3, "pct": -10}]))
    before = shard.price_rules(demo.VENUE, "adult")
    for rules, field in (
            ([{"kind": "happy_hour", "pct": -10}], "rules[0].kind"),
            ([{"kind": "early_bird", "days_ahead": 3, "pct": -10},
              {"kind": "early_bird", "days_ahead": 9, "pct": -20}], "rules[1].kind"),
            ([{"kind": "early_bird", "days_ahead": 3, "pct": -10, "amount_fen": -5}], "rules[0].amount_fen"),
            ([{"kind": "early_bird", "days_ahead": 3}], "rules[0].amount_fen"),
            ([{"kind": "early_bird", "pct": -10}], "rules[0].days_ahead"),
            ([{"kind": "time_of_day", "from_minute": 1440, "pct": -10}], "rules[0].from_minute"),
            ([{"kind": "fill_rate", "fill_pct": 50, "pct": 10, "days_ahead": 1}], "rules[0].days_ahead"),
            ([{"kind": "fill_rate", "fill_pct": 50, "pct": -101}], "rules[0].pct")):
        with pytest.raises(InvalidArgument) as e:
            shard.run(cmd.price_rules(demo.VENUE, "adult", rules))
        assert e.value.field == field, (e.value.field, field)
    with pytest.raises(NotFound):
        shard.run(cmd.price_rules(demo.VENUE, "nope", []))
    assert shard.price_rules(demo.VENUE, "adult") == before


@pytest.mark.parametrize("snapshot", [False, True])
def test_pricing_rules_survive_a_reopen(shard_path, clock, snapshot):
    shard = Shard.open(shard_path, clock=clock)
    shard.run_many(demo.commands(TODAY))
    shard.run(cmd.price_rules(demo.VENUE, "adult", [{"kind": "early_bird", "days_ahead": 3, "pct": -10}]))
    want = shard.price_rules(demo.VENUE, "adult")
    shard.close(snapshot=snapshot)
    again = Shard.open(shard_path, clock=clock)
    try:
        assert again.price_rules(demo.VENUE, "adult") == want
        assert _slot_quote(again, THU, 8).amount_fen == BASE - 800
    finally:
        again.close(snapshot=False)


def _hold_slot(shard: Shard, day: dt.date, hour: int):
    return shard.run(cmd.hold("web", demo.VENUE, [HoldItem("adult", (demo.slot_id("main", day, hour),), 1)]))


def test_a_booking_window_refuses_with_booking_closed_and_holds_nothing(shard, clock):
    """Issue 13: opens N days ahead, closes M minutes before the slot starts (or after it
    started), on given days of the week; outside it BOOKING_CLOSED, never a sale."""
    from turnstile.engine import BookingClosed
    clock.at(TODAY, 8, 30)
    shard.run(cmd.booking(demo.VENUE, "adult", opens_days=3, closes_minutes=30))
    held = _held(shard, SUN)
    with pytest.raises(BookingClosed):
        _hold_slot(shard, SUN, 10)                        # 6 days ahead: not open yet
    with pytest.raises(BookingClosed):
        _slot_quote(shard, SUN, 10)                       # a quote says so too
    assert _held(shard, SUN) == held
    _hold_slot(shard, THU, 10)                            # 3 days ahead: open
    _hold_slot(shard, MON, 10)                            # 90 minutes before it starts
    clock.at(TODAY, 9, 31)
    with pytest.raises(BookingClosed):
        _hold_slot(shard, MON, 10)                        # 29 minutes before: closed
    _hold_slot(shard, MON, 12)
    # sold until an hour after the start; weekends only
    shard.run(cmd.booking(demo.VENUE, "adult", closes_minutes=-60, weekdays=[6, 7]))
    with pytest.raises(BookingClosed):
        _hold_slot(shard, MON, 12)                        # a Monday
    _hold_slot(shard, SAT, 10)
    shard.run(cmd.booking(demo.VENUE, "adult", closes_minutes=-60))
    clock.at(TODAY, 10, 59)
    _hold_slot(shard, MON, 10)
    clock.at(TODAY, 11, 1)
    with pytest.raises(BookingClosed):
        _hold_slot(shard, MON, 10)
    shard.run(cmd.booking(demo.VENUE, "adult"))           # the default again
    assert shard.booking(demo.VENUE, "adult").closes_minutes is None
    _hold_slot(shard, MON, 10)                            # until the slot ends


def test_bad_booking_windows_change_nothing(shard):
    shard.run(cmd.booking(demo.VENUE, "adult", opens_days=30))
    before = shard.booking(demo.VENUE, "adult")
    for kw, field in ((dict(weekdays=[0]), "weekdays"), (dict(weekdays=[8]), "weekdays"),
                      (dict(weekdays=[1, 1]), "weekdays"), (dict(opens_days=-1), "opens_days"),
                      (dict(closes_minutes=10**7), "closes_minutes")):
        with pytest.raises(InvalidArgument) as e:
            shard.run(cmd.booking(demo.VENUE, "adult", **kw))
        assert e.value.field == field
    assert shard.booking(demo.VENUE, "adult") == before


def test_a_booking_window_survives_a_reopen(shard_path, clock):
    shard = Shard.open(shard_path, clock=clock)
    shard.run_many(demo.commands(TODAY))
    shard.run(cmd.booking(demo.VENUE, "adult", opens_days=2, weekdays=[1, 2, 3, 4, 5]))
    want = shard.booking(demo.VENUE, "adult")
    shard.close(snapshot=True)
    again = Shard.open(shard_path, clock=clock)
    try:
        assert again.booking(demo.VENUE, "adult") == want
        from turnstile.engine import BookingClosed
        with pytest.raises(BookingClosed):
            _hold_slot(again, THU, 10)
    finally:
        again.close(snapshot=False)


def test_rules_given_as_records_are_taken(shard):
    """cmd.price_rules takes model.PriceRule records as its docstring says, not only
    dicts (each record carries every kind's condition field, at 0)."""
    from turnstile.engine import PriceRule
    r = shard.run(cmd.price_rules(demo.VENUE, "adult", [PriceRule("early_bird", pct=-10, days_ahead=3),
                                                        PriceRule("time_of_day", amount_fen=-500,
                                                                  from_minute=600)]))
    assert [(x.kind, x.days_ahead, x.from_minute) for x in r.rules] == [("early_bird", 3, 0),
                                                                         ("time_of_day", 0, 600)]
    with pytest.raises(InvalidArgument) as e:           # another kind's condition is not dropped
        shard.run(cmd.price_rules(demo.VENUE, "adult", [PriceRule("early_bird", pct=-10, days_ahead=3,
                                                                  from_minute=600)]))
    assert e.value.field == "rules[0].from_minute"
