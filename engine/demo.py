"""A demo venue: West Lake scenic area with three zones, six gates, eight products,
a merchant (the boat company) and a week of time slots. Used by `turnstile demo`, the tests and the benchmarks.

Prices follow a calendar: the adult ticket costs 100 yuan on weekends and 120 on
holidays (80 on weekdays, 76 through the OTA), and the holiday calendar is data
(HOLIDAYS below), loaded the way an operator loads a year's public holidays. Booked a
week or more ahead, the adult ticket is 10 % off (an early-bird rule, PRICE_RULES below;
the week of slots seeded by default is never that far ahead, so its prices stay as said).
The lake combo is a package (套票) whose price is split over the park, the pagoda and the
boat company, refunded free until a day before and at 10 % until its slot starts; two
coupons are public: WELCOME10 and SPEND300 (满减).

Each day has two-hour slots of the main zone from 08:00 to 18:00, hourly ones of the
pagoda and the boat from 09:00 to 17:00, and one whole-day slot of the main zone and one
of the boat (`main-YYYYMMDD-day`, `boat-YYYYMMDD-day`, 00:00-24:00), so a ticket sold now
can be scanned now, at any hour."""
from __future__ import annotations

import datetime as _dt
from typing import Callable

from . import cmd
from .journal import Command
from .model import DatePrice, EntryRule, GateMode, PackagePart, RefundTier, to_day

VENUE = "westlake"
UTC_OFFSET = 8 * 3600

# The venue's price calendar as its operator loads it (AdminService.SetCalendar): a
# date type per venue-local day that is not an ordinary weekday or weekend. Public
# holidays are "holiday"; a working weekend day (调休) would be "weekday". Only what is
# certain is listed: 2027's New Year's Day (元旦, a Friday).
HOLIDAYS = {
    "2027-01-01": "holiday",
}
# Prices by date type (AdminService.SetPrices): product -> [(date type, channel ("" =
# every channel), price per person in fen)]. Other days and products keep their base
# (and channel) prices.
DATE_PRICES = {
    "adult": [("weekend", "", 10000), ("holiday", "", 12000)],
}
# Pricing rules (AdminService.SetPriceRules; model.PriceRule): product -> rules, applied
# after the date-type price. Early-bird: booked 7 or more days before the visit, 10 % off.
PRICE_RULES = {
    "adult": [{"kind": "early_bird", "days_ahead": 7, "pct": -10}],
}
# Refund tiers (AdminService.SetRefundPolicy): product -> [(minutes before the slot starts,
# fee %)]. The combo: free until 24 h before, 10 % until it starts, nothing after.
REFUND_POLICIES = {
    "combo": [(1440, 0), (0, 10)],
}
# Packages (AdminService.SetPackage): the combo (套票) is the park, the pagoda and the boat,
# its price split per person: 40 yuan to the boat company, 30 to the pagoda, the rest
# to the park.
PACKAGES = {
    "combo": [("boat", "westlake-boats", 4000, 0), ("pagoda", "leifeng-pagoda", 3000, 0),
              ("main", "westlake", 0, 100)],
}
# Merchants inside the venue (AdminService.SetMerchant): the boat company runs the boat
# zone, a consumption point (each person of a ticket rides once; its gate pier-1 is the
# company's terminal), and sells at its till by the pier; it sells the cruise alone too,
# and keeps 85 % of it (AdminService.SetRevenueSplit: the venue's commission is the rest).
MERCHANTS = [
    dict(id="westlake-boats", name="West Lake Boats", zones=["boat"], stations=["pier-till"]),
]
SPLITS = {
    "cruise": [{"partner": "westlake-boats", "kind": "merchant", "pct": 85}],
}
# Coupons (AdminService.SetCoupon): a public code, 10 % off adult and child tickets (at
# most 20 yuan an order), and spend 300 yuan, save 30 (满减) on anything.
COUPONS = [
    dict(id="WELCOME10", kind="pct", pct=10, cap_fen=2000, products=["adult", "child"],
         name="Welcome: 10 % off"),
    dict(id="SPEND300", kind="spend", min_spend_fen=30000, amount_fen=3000, name="满300减30"),
]


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
        cmd.product(VENUE, "cruise", ["boat"], name="Lake cruise", price_fen=6000),
        cmd.calendar(VENUE, HOLIDAYS),
        *(cmd.prices(VENUE, product, [DatePrice(*row) for row in rows])
          for product, rows in DATE_PRICES.items()),
        *(cmd.price_rules(VENUE, product, rules) for product, rules in PRICE_RULES.items()),
        *(cmd.refund_policy(VENUE, product, [RefundTier(*t) for t in tiers])
          for product, tiers in REFUND_POLICIES.items()),
        *(cmd.package(VENUE, product, [PackagePart(*p) for p in parts]) for product, parts in PACKAGES.items()),
        *(cmd.coupon(VENUE, **c) for c in COUPONS),
        *(cmd.merchant(VENUE, **m) for m in MERCHANTS),
        *(cmd.revenue_split(VENUE, product, shares) for product, shares in SPLITS.items()),
    ]
    return out + slot_commands(start, days, main_capacity=main_capacity)


def slot_commands(start: _dt.date, days: int = 7, *, main_capacity: int = 2000,
                  skip: Callable[[str], bool] = lambda slot_id: False) -> list[Command]:
    """The demo's slots of `days` days from `start` (those `skip` does not refuse),
    and the OTA's allotment on the first main slot of `start` if that is new."""
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
        slots.append({"id": day_slot_id(day), "zone": "main", "day": dn, "start": base,
                      "end": base + 86400, "capacity": main_capacity})
        slots.append({"id": day_slot_id(day, "boat"), "zone": "boat", "day": dn, "start": base,
                      "end": base + 86400, "capacity": 100})
    slots = [s for s in slots if not skip(s["id"])]
    if not slots:
        return []
    out = [cmd.slots(slots, venue=VENUE)]
    first = f"main-{start:%Y%m%d}-08"
    if any(s["id"] == first for s in slots):
        out.append(cmd.allotment(first, "ota", 300, venue=VENUE))
    return out


def day_slot_id(day: _dt.date, zone: str = "main") -> str:
    """The main zone's (or the boat's) whole-day slot of `day`."""
    return f"{zone}-{day:%Y%m%d}-day"


def venue_today(now: float) -> _dt.date:
    """The venue-local date at UTC seconds `now`."""
    return _dt.date.fromordinal(_dt.date(1970, 1, 1).toordinal() + int(now + UTC_OFFSET) // 86400)


def slot_id(zone: str, day: _dt.date, hour: int) -> str:
    return f"{zone}-{day:%Y%m%d}-{hour:02d}"


def local_time(day: _dt.date, hour: int, minute: int = 0) -> int:
    """UTC seconds of a venue-local wall-clock time."""
    return (to_day(day) * 86400 - UTC_OFFSET) + hour * 3600 + minute * 60
