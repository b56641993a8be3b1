"""Season and annual passes with fixed calendar dates (issue 13): a product whose tickets
are valid from one date to another whatever the slot they were sold for, not only "N days
from the visit"; the days a ticket was issued with stay its own when the pass's dates
change, and after a reopen. TODAY (tests/conftest.py) is Monday 2026-11-23."""
from __future__ import annotations

import datetime as dt

import pytest

from turnstile.engine import BookingClosed, InvalidArgument, Reason, Shard, cmd, demo, to_day

from tests.conftest import TODAY, sell

DAYSLOT = (demo.day_slot_id(TODAY),)
HOLDER = [["110101199001011234"]]          # the annual pass is real-name


def test_a_pass_is_valid_on_its_fixed_dates_whatever_its_slot(shard, clock):
    shard.run(cmd.pass_dates(demo.VENUE, "annual", "2026-11-01", "2026-12-31"))
    sold = sell(shard, "annual", DAYSLOT, holders=HOLDER)
    rec = shard.ticket(sold.tickets[0].ticket_id).components[0]
    assert (rec["first_day"], rec["last_day"]) == (to_day("2026-11-01"), to_day("2026-12-31"))
    code = sold.tickets[0].code
    assert shard.run(cmd.verify(code, "north-1")).reason == Reason.OK
    clock.at(dt.date(2026, 12, 31), 10)                      # the last day: still valid
    assert shard.run(cmd.verify(code, "north-1")).reason == Reason.OK     # a day's first visit
    clock.at(dt.date(2027, 1, 1), 10)
    assert shard.run(cmd.verify(code, "north-1")).reason == Reason.EXPIRED


def test_a_pass_sold_before_its_season_is_not_yet_valid(shard):
    shard.run(cmd.pass_dates(demo.VENUE, "annual", "2027-01-01", "2027-12-31"))
    code = sell(shard, "annual", DAYSLOT, holders=HOLDER).tickets[0].code
    assert shard.run(cmd.verify(code, "north-1")).reason == Reason.NOT_YET_VALID


def test_a_slot_after_the_pass_ends_is_not_sold(shard):
    shard.run(cmd.pass_dates(demo.VENUE, "annual", "2026-11-01", TODAY.isoformat()))
    later = (demo.day_slot_id(TODAY + dt.timedelta(days=1)),)
    with pytest.raises(BookingClosed):
        sell(shard, "annual", later, holders=HOLDER)
    sell(shard, "annual", DAYSLOT, holders=HOLDER)


def test_bad_dates_change_nothing(shard):
    shard.run(cmd.pass_dates(demo.VENUE, "annual", "2027-01-01", "2027-12-31"))
    before = shard.pass_dates(demo.VENUE, "annual")
    for lo, hi, field in (("2027-01-02", "2027-01-01", "valid_to"), ("2027-01-01", None, "valid_to"),
                          (None, "2027-01-01", "valid_from"), ("2027-01-01", "2040-01-01", "valid_to")):
        with pytest.raises(InvalidArgument) as e:
            shard.run(cmd.pass_dates(demo.VENUE, "annual", lo, hi))
        assert e.value.field == field
    assert shard.pass_dates(demo.VENUE, "annual") == before


@pytest.mark.parametrize("snapshot", [False, True])
def test_sold_passes_keep_their_days_when_the_dates_change_and_after_a_reopen(shard_path, clock, snapshot):
    shard = Shard.open(shard_path, clock=clock)
    shard.run_many(demo.commands(TODAY))
    shard.run(cmd.pass_dates(demo.VENUE, "annual", "2026-11-01", "2026-12-31"))
    tid = sell(shard, "annual", DAYSLOT, holders=HOLDER).tickets[0].ticket_id
    shard.run(cmd.pass_dates(demo.VENUE, "annual"))             # no longer a fixed-date pass
    plain = sell(shard, "annual", DAYSLOT, holders=HOLDER).tickets[0].ticket_id
    shard.close(snapshot=snapshot)
    again = Shard.open(shard_path, clock=clock)
    try:
        first = again.ticket(tid).components[0]
        assert (first["first_day"], first["last_day"]) == (to_day("2026-11-01"), to_day("2026-12-31"))
        second = again.ticket(plain).components[0]
        assert second["first_day"] == to_day(TODAY)            # from its slot's day, as any ticket
        assert again.pass_dates(demo.VENUE, "annual").valid_from == 0
        assert again.check() == []
    finally:
        again.close(snapshot=False)
