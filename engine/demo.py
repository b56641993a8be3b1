"""A demo venue: West Lake scenic area with three zones, six gates, seven products
and a week of time slots. Used by `turnstile demo`, the tests and the benchmarks."""
from __future__ import annotations

import datetime as _dt

from . import cmd
from .journal import Command
from .model import EntryRule, GateMode, to_day

VENUE = "westlake"
UTC_OFFSET = 8 * 3600


def commands(start: _dt.date | None = None, days: int = 7, *, main_capacity: int = 2000) -> list[Command]:
    """The commands that create the demo venue with `days` days of slots from `start`."""
    start = start or _dt.date.today()
    out = [
        cmd.venue(VENUE, "West Lake Scenic Area", UTC_OFFSET),
        cmd.zone(VENUE, "main", "Main park", live_capacity=30_000),
        cmd.zone(VENUE, "pagoda", "Leifeng Pagoda", live_capacity=400, enforce_exit=True),
        cmd.zone(VENUE, "boat", "Lake cruise"),
        cmd.gate("main", "north-1", GateMode.IN),
        cmd.gate("main", "north-2", GateMode.IN),
        cmd.gate("main", "south-exit", GateMode.OUT),
        cmd.gate("main", "east", GateMode.BOTH),
        cmd.gate("pagoda", "pagoda-1", GateMode.BOTH),
        cmd.gate("boat", "pier-1", GateMode.IN),
        cmd.product(VENUE, "adult", ["main"], name="Adult day ticket", price_fen=8000,
                    rule=EntryRule(reentry=True), channel_prices={"ota": 7600}),
        cmd.product(VENUE, "child", ["main"], name="Child day ticket", price_fen=4000,
                    rule=EntryRule(reentry=True)),
        cmd.product(VENUE, "combo", ["main", "pagoda", "boat"], name="Lake combo (联票)",
                    price_fen=15000, rule=EntryRule(reentry=True)),
        cmd.product(VENUE, "group", ["main"], name="Group ticket (一团一票)", price_fen=6000,
                    max_group=60, channels=["agency", "window"]),
        cmd.product(VENUE, "annual", ["main"], name="Annual pass", price_fen=30000,
                    rule=EntryRule(max_entries=0, daily_entries=1, valid_days=365),
                    real_name=True, refundable=False),
        cmd.product(VENUE, "punch10", ["main"], name="10-visit card", price_fen=50000,
                    rule=EntryRule(max_entries=10, valid_days=180)),
        cmd.product(VENUE, "night", ["main"], name="Night tour, real-name", price_fen=10000,
                    rule=EntryRule(slot_grace_s=900), real_name=True, refund_fee_pct=10),
    ]
    slots = []
    for d in range(days):
        day = start + _dt.timedelta(days=d)
        dn = to_day(day)
        base = dn * 86400 - UTC_OFFSET          # venue-local midnight in UTC seconds
        for h in range(8, 18, 2):
            slots.append({"id": f"main-{day:%Y%m%d}-{h:02d}", "zone": "main", "day": dn,
                          "start": base + h * 3600, "end": base + (h + 2) * 3600,
                          "capacity": main_capacity})
        for h in range(9, 17):
            slots.append({"id": f"pagoda-{day:%Y%m%d}-{h:02d}", "zone": "pagoda", "day": dn,
                          "start": base + h * 3600, "end": base + (h + 1) * 3600, "capacity": 200})
            slots.append({"id": f"boat-{day:%Y%m%d}-{h:02d}", "zone": "boat", "day": dn,
                          "start": base + h * 3600, "end": base + (h + 1) * 3600, "capacity": 100})
    out.append(cmd.slots(slots))
    first = f"main-{start:%Y%m%d}-08"
    out.append(cmd.allotment(first, "ota", 300))
    return out


def first_open_main_slot(start: _dt.date, days: int, now: float) -> str | None:
    """The first main-zone slot of the demo's days that has not ended at `now` (only
    those can be sold), or None."""
    for d in range(days):
        day = start + _dt.timedelta(days=d)
        for h in range(8, 18, 2):
            if local_time(day, h + 2) > now:
                return slot_id("main", day, h)
    return None


def slot_id(zone: str, day: _dt.date, hour: int) -> str:
    return f"{zone}-{day:%Y%m%d}-{hour:02d}"


def local_time(day: _dt.date, hour: int, minute: int = 0) -> int:
    """UTC seconds of a venue-local wall-clock time."""
    return (to_day(day) * 86400 - UTC_OFFSET) + hour * 3600 + minute * 60
