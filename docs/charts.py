"""Draw the README's finance charts from a simulated week at the demo venue:

    .venv/bin/python -m docs.charts        # writes docs/images/revenue-week.png, entries-day.png

A real shard in a temp dir, the demo venue, a clock moved by hand through seven days of
sales on four channels (OTA, mini-program, agency, ticket window; cash, card, Alipay,
WeChat Pay), some refunds, and a day of scans at the gates hour by hour; then the engine's
reports (Shard.revenue, Shard.entries) drawn by the same functions `turnstile report
revenue|entries --png` uses (clients/reports.py). The numbers are made up; the counting
and drawing are the product's."""
from __future__ import annotations

import datetime as dt
import os
import random
import tempfile

from turnstile.clients import reports as R
from turnstile.engine import Direction, HoldItem, Shard, cmd, demo

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "images")
START = dt.date(2026, 12, 7)                    # a Monday
CHANNELS = [("ota", "alipay", 40), ("miniprogram", "wechat", 25), ("agency", "channel", 10),
            ("window", "cash", 15), ("window", "card", 10)]


class Clock:
    def __init__(self) -> None:
        self.t = demo.local_time(START, 7)

    def __call__(self) -> float:
        return self.t


def simulate(path: str) -> Shard:
    rng = random.Random(2026)
    clock = Clock()
    shard = Shard.open(path, clock=clock)
    shard.run_many(demo.commands(START, days=8, main_capacity=20_000))
    saturday = START + dt.timedelta(days=5)
    waiting: list[str] = []         # the Saturday's codes sold, not yet at a gate
    inside: list[str] = []
    for d in range(7):
        day = START + dt.timedelta(days=d)
        weekend = day.weekday() >= 5
        for hour in range(8, 18):
            clock.t = demo.local_time(day, hour, 0)
            for channel, method, weight in CHANNELS:
                product = rng.choice(["adult", "adult", "child", "combo"])
                if hour >= 17 or (product == "combo" and hour >= 10):
                    continue
                n = max(rng.randint(weight, weight * 2) * (2 if weekend else 1) // 2, 1)
                slots = ((demo.day_slot_id(day),) if product != "combo" else
                         (demo.slot_id("main", day, 10), demo.slot_id("pagoda", day, 10),
                          demo.slot_id("boat", day, 11)))
                h = shard.run(cmd.hold(channel, demo.VENUE, [HoldItem(product, slots, n)]))
                order = f"{channel}-{d}-{hour}-{method}"
                sold = shard.run(cmd.confirm(h.hold_id, order, channel, method=method,
                                             amount_fen=h.amount_fen))
                if rng.random() < 0.15:
                    shard.run(cmd.refund(order, "r1", [sold.tickets[0].ticket_id], channel=channel))
                    sold.tickets.pop(0)
                if day == saturday:
                    waiting += [t.code for t in sold.tickets]
            if day != saturday:
                continue
            # the Saturday at the gates: most of what was sold arrives within the hour,
            # the afternoon leaves, a few come back in
            rng.shuffle(waiting)
            arriving, waiting[:] = waiting[:len(waiting) * 4 // 5], waiting[len(waiting) * 4 // 5:]
            for k, c in enumerate(arriving):
                clock.t = demo.local_time(day, hour, 5 + k * 50 // len(arriving))
                r = shard.run(cmd.verify(c, rng.choice(["north-1", "north-2", "east"])))
                inside.append(c)
                if r.reason.name == "OK" and shard.product_of(r.ticket) == "combo":
                    shard.run(cmd.verify(c, "pagoda-1"))     # the combo's holders go up the pagoda too
            if hour >= 12:
                rng.shuffle(inside)
                leaving = inside[:len(inside) // (4 if hour < 16 else 2)]
                for k, c in enumerate(leaving):
                    clock.t = demo.local_time(day, hour, 56 + k * 3 // len(leaving))
                    shard.run(cmd.verify(c, rng.choice(["south-exit", "east"]), Direction.OUT))
                    inside.remove(c)
                    if hour < 15 and rng.random() < 0.1:
                        shard.run(cmd.verify(c, "east"))
                        inside.append(c)
    return shard


def revenue_report(shard: Shard) -> R.RevenueReport:
    last = START + dt.timedelta(days=6)
    rows, total = shard.revenue(demo.VENUE, START, last, "day", ("channel",))

    def row(period: str, cut: dict, v: list[int]) -> R.RevenueRow:
        return R.RevenueRow(period, cut.get("channel", ""), "", "", "", *v, Shard.net_revenue(v))
    return R.RevenueReport(demo.VENUE, START, last, "day", ("channel",),
                           tuple(row(p, c, v) for p, c, v in rows), row("", {}, total))


def entries_report(shard: Shard) -> R.EntriesReport:
    day = START + dt.timedelta(days=5)
    e = shard.entries(demo.VENUE, day)
    return R.EntriesReport(demo.VENUE, day, tuple(
        R.GateHour(g["zone"], g["gate"], g["hour"], g["entries"], g["reentries"], g["exits"])
        for g in e["gate_hours"]), tuple(
        R.ZoneDay(z["zone"], z["entries"], z["reentries"], z["exits"], z["entered_tickets"], z["peak_inside"])
        for z in e["zones"]))


def main() -> None:
    os.environ.setdefault("TURNSTILE_MASTER_KEY", os.urandom(32).hex())
    os.makedirs(OUT, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        shard = simulate(os.path.join(tmp, "shard-0"))
        try:
            with open(os.path.join(OUT, "revenue-week.png"), "wb") as f:
                f.write(R.revenue_chart_png(revenue_report(shard),
                                            title="West Lake, net revenue per day and channel (a demo week)"))
            with open(os.path.join(OUT, "entries-day.png"), "wb") as f:
                f.write(R.entries_chart_png(entries_report(shard),
                                            title="West Lake, entries per hour (the demo Saturday)"))
        finally:
            shard.close(snapshot=False)
    print(f"wrote {OUT}/revenue-week.png and entries-day.png")


if __name__ == "__main__":
    main()
