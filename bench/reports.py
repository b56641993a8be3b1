"""The data the finance report benches read (issue 14): a month of sales in a real shard.

A month (November 2025, 30 days) of the demo venue's adult and child day tickets sold
through the real sale path, `cmd.hold` + `cmd.confirm`, in orders of 1,000 tickets that
take turns over 3 channels, 2 products and 3 payment methods; one day of the month (the
big day) sells `day_tickets`, the other days share the rest of `tickets`. Every tenth
order gives 100 of its tickets back (`cmd.refund`), and on the big day the first 10
tickets of every order are scanned in (`cmd.verify_batch`). Revenue shares are set
first: 10 % of what adult tickets take to a partner, 5 yuan per child to the main zone.

As it sells, the build tallies what each call answered: tickets and fen per day of
sale, channel, product and method, refunds and their fees, codes per visit day sold,
scanned and refunded, and each partner's share. A bench holds a report against these
tallies (`expected_revenue`, `expected_status`, `expected_settlement`), so a report that
is fast and wrong fails. Codes are MAC-only (signed=False): rendering a signed code costs
five times as much, and no report reads one.

    python -m bench.reports [TICKETS [DAY_TICKETS]]   # build once, print the time taken
"""
from __future__ import annotations

import datetime as _dt
import sys
import time
from dataclasses import dataclass, field

from bench import TempDir
from turnstile.engine import Shard, cmd, demo
from turnstile.engine.model import Reason, to_day

VENUE = demo.VENUE
MONTH = _dt.date(2025, 11, 1)               # 30 days, no holiday in the demo's calendar
DAYS = 30
BIG_DAY = MONTH + _dt.timedelta(days=14)    # 2025-11-15, a Saturday (weekend prices)
CAPACITY = 10 ** 9                          # per slot: stock never refuses a sale here
ORDER_QTY = 1000                            # tickets per order
CHANNELS = ("web", "ota", "window")
PRODUCTS = ("adult", "child")
METHODS = ("cash", "alipay", "wechat")
REFUND_EVERY = 10                           # every tenth order gives back ...
REFUND_QTY = 100                            # ... this many of its tickets
SCAN_PER_ORDER = 10                         # big day: the first tickets of each order scanned in
CHUNK = 50                                  # orders per run_many batch
# revenue shares (AdminService.SetRevenueSplit): a partner's percent, a zone's fen per person
PARTNER, PARTNER_PCT = "lake-ota", 10
ZONE_SHARE, ZONE_FEN = "main", 500
SPLITS = {"adult": [{"partner": PARTNER, "kind": "partner", "pct": PARTNER_PCT}],
          "child": [{"partner": ZONE_SHARE, "kind": "zone", "per_person_fen": ZONE_FEN}]}
OK = int(Reason.OK)
# the counters of one (day, channel, product, method) the build tallies
SOLD, PAID, REF_T, REFUNDED, FEE = range(5)


class Clock:
    """A clock the build moves from day to day (UTC seconds), for Shard.open(clock=...)."""

    def __init__(self, t: int):
        self.t = t

    def __call__(self) -> float:
        return self.t


@dataclass
class Month:
    """A built shard and what its sales answered, tallied as they were made."""

    shard: Shard
    clock: Clock
    tickets: int
    day_tickets: int
    build_s: float
    # (day, channel, product, method) -> [sold, paid fen, refunded tickets, refunded fen, fees]
    sales: dict[tuple[int, str, str, str], list[int]] = field(default_factory=dict)
    # (visit day, product) -> [codes sold, scanned in, refunded]
    visits: dict[tuple[int, str], list[int]] = field(default_factory=dict)
    # partner -> fen its share comes to
    shares: dict[str, int] = field(default_factory=dict)

    @property
    def big_day(self) -> int:
        return to_day(BIG_DAY)

    @property
    def days(self) -> tuple[int, int]:
        return to_day(MONTH), to_day(MONTH) + DAYS - 1

    def expected_revenue(self, day_from: int, day_to: int,
                         by: tuple[str, ...] = ()) -> dict[tuple[str, ...], list[int]]:
        """The counters (engine.state.finance.FIELDS) a revenue report over the days owes
        per cut of `by` (of channel, product, method), from the tallies: one ticket is one
        person, no coupon (gross = paid), no change."""
        out: dict[tuple[str, ...], list[int]] = {}
        for (day, channel, product, method), v in self.sales.items():
            if not day_from <= day <= day_to:
                continue
            cut = {"channel": channel, "product": product, "method": method}
            row = out.setdefault(tuple(cut[d] for d in by), [0] * 12)
            for i, n in enumerate((v[SOLD], v[SOLD], v[PAID], 0, v[PAID], v[REF_T], v[REF_T],
                                   v[REFUNDED], v[FEE], 0, 0, 0)):
                row[i] += n
        return out

    def expected_status(self, day: int) -> dict[str, dict[str, int]]:
        """Per product, the codes of visit day `day` sold, used, refunded, and the rest
        unused (the day not over at the shard's clock) or expired (over)."""
        over = day < self.shard.today(VENUE)
        out = {}
        for (d, product), (sold, used, refunded) in self.visits.items():
            if d == day:
                rest = sold - used - refunded
                out[product] = {"sold": sold, "used": used, "refunded": refunded,
                                "unused": 0 if over else rest, "expired": rest if over else 0}
        return out

    def expected_settlement(self) -> tuple[dict[str, int], int]:
        """Each partner's share of the month and the month's net revenue (paid less
        refunded)."""
        net = sum(v[PAID] - v[REFUNDED] for v in self.sales.values())
        return dict(self.shares), net

    def close(self) -> None:
        self.shard.close(snapshot=False)


def orders_per_day(tickets: int, day_tickets: int) -> list[int]:
    """Orders sold on each day of the month: `day_tickets` on the big day, the rest of
    `tickets` spread over the other days (the first ones one more when it does not divide)."""
    if tickets % ORDER_QTY or day_tickets % ORDER_QTY or not 0 < day_tickets < tickets:
        raise ValueError(f"sizes are whole orders of {ORDER_QTY}, the big day's fewer than all")
    rest, others = (tickets - day_tickets) // ORDER_QTY, DAYS - 1
    per = [rest // others + (k < rest % others) for k in range(others)]
    big = (BIG_DAY - MONTH).days
    return per[:big] + [day_tickets // ORDER_QTY] + per[big:]


def _share(product: str, fen: int, tickets: int) -> tuple[str, int]:
    """The partner and what SPLITS gives it of `fen` paid (or given back, < 0) for
    `tickets` one-person tickets of `product`."""
    if product == "adult":
        if fen % 100:                       # every price here is whole yuan: no rounding
            raise AssertionError(f"{fen} fen is not whole yuan")
        return PARTNER, fen * PARTNER_PCT // 100
    return ZONE_SHARE, (1 if fen >= 0 else -1) * ZONE_FEN * tickets


def _ok(results: list) -> list:
    bad = [r for r in results if isinstance(r, Exception)]
    if bad:
        raise AssertionError(f"{len(bad)} commands refused, the first: {bad[0]!r}")
    return results


def build(path: str, tickets: int = 10_000_000, day_tickets: int = 1_000_000) -> Month:
    """Open a shard at `path` and sell a month into it (the module's docstring); the
    clock is left on the month's last evening, so the big day's unused codes expired."""
    t0 = time.perf_counter()
    clock = Clock(demo.local_time(MONTH, 7))
    shard = Shard.open(path, clock=clock, durable=False, snapshot_every=10 ** 12)
    _ok(shard.run_many(demo.commands(MONTH, days=DAYS, main_capacity=CAPACITY)))
    _ok(shard.run_many([cmd.revenue_split(VENUE, p, shares) for p, shares in SPLITS.items()]))
    m = Month(shard, clock, tickets, day_tickets, 0.0)
    k = 0                                   # orders sold so far: whose turn each cut is
    for d, n in enumerate(orders_per_day(tickets, day_tickets)):
        day = MONTH + _dt.timedelta(days=d)
        dn, slot = to_day(day), demo.day_slot_id(day)
        clock.t = demo.local_time(day, 7)
        for start in range(0, n, CHUNK):
            plan = []
            for j in range(k + start, k + min(n, start + CHUNK)):
                plan.append((f"m{j}", CHANNELS[j % 3], PRODUCTS[j // 3 % 2], METHODS[j // 6 % 3],
                             j % REFUND_EVERY == 0))
            holds = _ok(shard.run_many([cmd.hold(ch, VENUE, [{"product": p, "slots": [slot],
                                                               "qty": ORDER_QTY}])
                                        for _, ch, p, _, _ in plan]))
            confirms = _ok(shard.run_many([
                cmd.confirm(h.hold_id, oid, ch, method=meth, amount_fen=h.amount_fen, signed=False)
                for h, (oid, ch, _, meth, _) in zip(holds, plan)]))
            refunds, refunded, scans = [], [], []
            for c, (oid, ch, p, meth, back) in zip(confirms, plan):
                if len(c.tickets) != ORDER_QTY or c.order.amount_fen <= 0:
                    raise AssertionError(f"order {oid}: {len(c.tickets)} tickets, {c.order.amount_fen} fen")
                row = m.sales.setdefault((dn, ch, p, meth), [0] * 5)
                row[SOLD] += ORDER_QTY
                row[PAID] += c.order.amount_fen
                who, fen = _share(p, c.order.amount_fen, ORDER_QTY)
                m.shares[who] = m.shares.get(who, 0) + fen
                m.visits.setdefault((dn, p), [0, 0, 0])[0] += ORDER_QTY
                if back:                    # the order's last tickets, never the scanned ones
                    refunds.append(cmd.refund(oid, "back", [t.ticket_id for t in c.tickets[-REFUND_QTY:]],
                                              channel=ch))
                    refunded.append((ch, p, meth))
                if day == BIG_DAY:
                    scans += [(p, t.code) for t in c.tickets[:SCAN_PER_ORDER]]
            for r, (ch, p, meth) in zip(_ok(shard.run_many(refunds)), refunded):
                if len(r.tickets) != REFUND_QTY:
                    raise AssertionError(f"refund of {r.order_id}: {len(r.tickets)} tickets")
                row = m.sales[(dn, ch, p, meth)]
                row[REF_T] += len(r.tickets)
                row[REFUNDED] += r.amount_fen
                row[FEE] += r.fee_fen
                who, fen = _share(p, -r.amount_fen, len(r.tickets))
                m.shares[who] += fen
                m.visits[(dn, p)][2] += len(r.tickets)
            if scans:
                res, = _ok(shard.run_many([cmd.verify_batch([c for _, c in scans], "north-1")]))
                for (p, _), reason in zip(scans, res.reasons):
                    if reason != OK:
                        raise AssertionError(f"a fresh ticket scanned {Reason(reason).name}")
                    m.visits[(dn, p)][1] += 1
        k += n
    clock.t = demo.local_time(MONTH + _dt.timedelta(days=DAYS - 1), 20)
    m.build_s = time.perf_counter() - t0
    return m


def main(argv: list[str]) -> int:
    tickets = int(argv[0]) if argv else 10_000_000
    day_tickets = int(argv[1]) if len(argv) > 1 else tickets // 10
    with TempDir() as path:
        m = build(path, tickets, day_tickets)
        sold = sum(v[SOLD] for v in m.sales.values())
        print(f"built {sold:,} tickets ({m.day_tickets:,} on {BIG_DAY}) in {m.build_s:.1f} s "
              f"({m.build_s / sold * 1e6:.1f} µs per ticket)")
        m.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
