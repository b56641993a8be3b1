"""A holiday day, compressed: channels sell (Hold + Confirm, 1-4 tickets per order over
the day's slots) while gates admit what was sold; a share of visitors exits and comes
back (re-entry), some try twice. Checked: every answer as the visitor's story says, no
ticket admitted twice, no slot oversold, and ReportService agrees.
"""
from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import random
import time
from collections import Counter

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from turnstile.v1 import gate_pb2, gate_pb2_grpc, sales_pb2, sales_pb2_grpc

from ..base import auth_metadata
from .checks import ALREADY_USED, IN, OK, OK_REENTRY, OUT, Checks, count_checks, reason_name
from .load import Pacer, Run, error_reason, ready, run_id, run_loop
from .results import QUIET, Progress, Result, latency_us
from .target import CALL_TIMEOUT, Keys, LoadgenError, Target, bound
from .venue import Venue


async def _holiday(v: Venue, keys: Keys, product, slots: list[dict], count: int, concurrency: int,
                   exit_share: float, reentry_share: float, dupes: float, deadline_s: float,
                   rate: float | None, run: str, rng: random.Random, progress: Progress) -> Run:
    sellers = list(keys.sales)
    gate_m = auth_metadata(keys.need("gate"))
    zone = product.zone_ids[0]
    ins, outs = v.gate_ids(zone, IN), v.gate_ids(zone, OUT)
    reentry = product.rule.reentry
    lat: list[float] = []
    by_kind: dict[str, list[float]] = {}
    scans: list[tuple] = []         # (kind, expected reason name, ticket id, code, reason, got)
    errors: Counter = Counter()
    sold: Counter = Counter()       # slot -> tickets confirmed by this run
    holds: Counter = Counter()
    state = {"planned": 0, "order": 0, "cut": False, "not_scanned": 0}
    full: set[str] = set()
    n_sell = max(1, concurrency // 4)
    n_in = max(1, concurrency // 2)
    n_out = max(1, concurrency - n_sell - n_in)
    entries: asyncio.Queue = asyncio.Queue()
    exits: asyncio.Queue = asyncio.Queue()
    pacer = Pacer(rate)
    adv = progress.advance if progress is not QUIET else None
    methods = ["alipay", "wechat", "cash", "card"]
    async with v.conn.aio_channel(address=v.address) as ch:
        sales = sales_pb2_grpc.SalesServiceStub(ch)
        verify = gate_pb2_grpc.GateServiceStub(ch).Verify
        await ready(ch, v.address)
        stop = time.perf_counter() + deadline_s

        async def timed(kind: str, coro):
            t = time.perf_counter()
            try:
                return await coro
            finally:
                d = time.perf_counter() - t
                lat.append(d)
                by_kind.setdefault(kind, []).append(d)
                if adv:
                    adv(1)

        async def scan(kind: str, expected: str, it, gate: str, direction: int, at: int):
            try:
                r = await timed(kind, verify(gate_pb2.VerifyRequest(
                    code=it[1], gate_id=gate, direction=direction, scan_time=Timestamp(seconds=at)),
                    metadata=gate_m, timeout=CALL_TIMEOUT))
                scans.append((kind, expected, it[0], it[1], r.reason, r.ticket_id))
                return r.reason
            except grpc.aio.AioRpcError as e:
                errors[f"{kind} {e.code().name}"] += 1
                scans.append((kind, expected, it[0], it[1], None, None))
                return None

        async def seller(s: int):
            key = auth_metadata(sellers[s % len(sellers)])
            while state["planned"] < count and time.perf_counter() < stop:
                open_slots = [x for x in slots if x["slot"] not in full]
                if not open_slots:
                    return
                qty = min(rng.randint(1, 4), count - state["planned"])
                state["planned"] += qty
                k = state["order"]
                state["order"] += 1
                sl = rng.choice(open_slots)
                await pacer.due()
                try:
                    h = await timed("hold", sales.Hold(sales_pb2.HoldRequest(
                        venue_id=v.venue, idempotency_key=f"lg-{run}-day-{k}",
                        items=[sales_pb2.Item(product_id=product.product_id, slot_ids=[sl["slot"]],
                                              qty=qty)]), metadata=key, timeout=CALL_TIMEOUT))
                except grpc.aio.AioRpcError as e:
                    why = error_reason(e)
                    holds[why] += 1
                    state["planned"] -= qty
                    if why == "SOLD_OUT":
                        full.add(sl["slot"])
                    else:
                        errors[f"hold {e.code().name}"] += 1
                    continue
                holds["granted"] += 1
                try:       # a granted hold is always paid for, even past the time bound
                    c = await timed("confirm", sales.Confirm(sales_pb2.ConfirmRequest(
                        hold_id=h.hold_id, order_id=f"lg-{run}-day-{k}",
                        payment=sales_pb2.Payment(method=methods[k % 4], reference=f"lg-{run}-{k}",
                                                  amount_fen=h.amount_fen)), metadata=key,
                        timeout=CALL_TIMEOUT))
                except grpc.aio.AioRpcError as e:
                    errors[f"confirm {e.code().name}"] += 1
                    state["planned"] -= qty
                    continue
                holds[f"tickets issued {'==' if len(c.tickets) == qty else '!='} qty"] += 1
                sold[sl["slot"]] += len(c.tickets)
                # the visit (entry, exit an hour later, re-entry an hour after that)
                # stays on the slot's day, where the ticket is valid: a whole-day slot
                # admits its late arrivals early enough
                off = v.utc_offset_s
                day_end = ((sl["start"] + off) // 86400 + 1) * 86400 - off
                last = min(sl["end"] - 60, day_end - 2 * 3600 - 60)
                span = max(1, last - sl["start"] - 60)
                for t in c.tickets:
                    await entries.put(((t.ticket_id, t.code), sl["start"] + 60 + rng.randrange(span)))

        async def entry(g: int):
            while True:
                job = await entries.get()
                if job is None:
                    return
                it, at = job
                if time.perf_counter() > stop:
                    state["cut"] = True
                    state["not_scanned"] += 1
                    continue
                gate = ins[g % len(ins)]
                r = await scan("entry", "OK", it, gate, IN, at)
                if r != OK:
                    continue
                if rng.random() < dupes:       # shown again, elsewhere, before any exit
                    await scan("repeat", "ALREADY_USED", it, ins[(g + 1) % len(ins)], IN, at + 30)
                if outs and rng.random() < exit_share:
                    await exits.put((it, at))

        async def leave(g: int):
            while True:
                job = await exits.get()
                if job is None:
                    return
                it, at = job
                if time.perf_counter() > stop:
                    state["cut"] = True
                    continue
                r = await scan("exit", "OK", it, outs[g % len(outs)], OUT, at + 3600)
                if r == OK and reentry and rng.random() < reentry_share:
                    await scan("reentry", "OK_REENTRY", it, ins[g % len(ins)], IN, at + 7200)

        t = time.perf_counter()
        pacer.start()
        gates_in = [asyncio.ensure_future(entry(g)) for g in range(n_in)]
        gates_out = [asyncio.ensure_future(leave(g)) for g in range(n_out)]
        await asyncio.gather(*(seller(s) for s in range(n_sell)))
        for _ in gates_in:
            entries.put_nowait(None)
        await asyncio.gather(*gates_in)
        for _ in gates_out:
            exits.put_nowait(None)
        await asyncio.gather(*gates_out)
        elapsed = time.perf_counter() - t
    cut = state["cut"] or state["planned"] < count and len(full) != len(slots)
    return Run(lat, scans, elapsed, cut, errors, t,
               {"sold": sold, "holds": holds, "by_kind": by_kind, "full": full,
                "not_scanned": state["not_scanned"], "workers": (n_sell, n_in, n_out)})


def holiday(target: Target, *, count: int = 1000, concurrency: int = 16, exit_share: float = 0.3,
            reentry_share: float = 0.5, dupes: float = 0.05, duration_s: float = 60,
            product: str | None = None, date: _dt.date | None = None, rate: float | None = None,
            loop: str = "asyncio", seed: int = 17, progress: Progress | None = None,
            around=None) -> Result:
    """A holiday day, compressed: sellers (a quarter of `concurrency`, over the sales
    keys) sell `count` tickets in orders of 1-4 on random slots of the day (Hold, then
    Confirm), while entry gates (half) admit each ticket sold at a time inside its slot;
    a share `dupes` is shown again at once (ALREADY_USED), a share `exit_share` leaves
    through an exit gate an hour later, and of those `reentry_share` comes back an hour
    after (OK_REENTRY, for a product with re-entry). `rate` paces orders per second.

    Checks: every Hold granted or SOLD_OUT, every order issued its tickets, every scan
    answered as the visitor's story says, no oversell (Availability sold + held <=
    capacity on every slot; sold rose by what this run confirmed), and with an admin
    key ReportService agrees: tickets issued and used, entered on the day, and inside
    now (when the day is the server's today)."""
    progress = progress or QUIET
    bound(count, duration_s)
    keys = target.keys
    keys.need("sales")
    keys.need("gate")
    with Venue(target) as v:
        run = run_id()
        p = v.product(product)
        zone = p.zone_ids[0]
        date = date or v.today()
        if not v.gate_ids(zone, IN):
            raise LoadgenError(f"no entry gate in zone {zone}")
        slots0 = {s["slot"]: s for s in v.availability(date, zone)}
        if not slots0:
            raise LoadgenError(f"no slots of zone {zone} on {date}")
        tc0, lc0 = v.ticket_counts(p.product_id), v.live_counts(date, zone)
        progress.phase("holiday", None)
        with around if around is not None else contextlib.nullcontext():
            r = run_loop(lambda: _holiday(v, keys, p, list(slots0.values()), count, max(3, concurrency),
                                          exit_share, reentry_share, dupes, duration_s, rate, run,
                                          random.Random(seed), progress),
                         loop, duration_s + 3 * CALL_TIMEOUT + 30)
        progress.close()
        slots1 = {s["slot"]: s for s in v.availability(date, zone)}
        checks, notes = Checks(), []
        sold, holds = r.extra["sold"], r.extra["holds"]
        scans = r.out
        kinds = Counter(s[0] for s in scans if s[4] is not None)
        checks("calls answered", holds["granted"] > 0 and kinds["entry"] > 0,
               f"{holds['granted']} holds, {kinds['entry']} entries")
        checks("every Hold granted or SOLD_OUT", set(holds) <= {"granted", "SOLD_OUT",
                                                              "tickets issued == qty"}, dict(holds))
        checks("every confirmed order issued its tickets", not holds["tickets issued != qty"],
               dict(holds))
        over = [s for s in slots1.values() if s["sold"] + s["held"] > s["capacity"]]
        checks("no oversell: sold + held <= capacity on every slot (Availability)", not over,
               over[:3])
        moved = {k: slots1[k]["sold"] - slots0[k]["sold"] for k in slots0
                 if slots1[k]["sold"] != slots0[k]["sold"] or sold[k]}
        checks("Availability: sold rose on each slot by what this run confirmed",
               all(moved[k] == sold[k] for k in moved), {k: (moved[k], sold[k]) for k in moved})
        for kind, want in (("entry", "OK"), ("repeat", "ALREADY_USED"), ("exit", "OK"),
                           ("reentry", "OK_REENTRY")):
            got = Counter(reason_name(s[4]) for s in scans if s[0] == kind and s[4] is not None)
            if got or kind == "entry":
                label = {"entry": "every first entry admitted (OK)",
                         "repeat": "every second entry without an exit refused (ALREADY_USED)",
                         "exit": "every exit let out (OK)",
                         "reentry": "every re-entry after an exit admitted (OK_REENTRY)"}[kind]
                checks(label, set(got) == {want}, dict(got))
        wrong = sum(1 for s in scans if s[4] is not None and s[2] != s[5])
        checks("every answer names the ticket asked", not wrong, f"{wrong} name another ticket")
        first = Counter(s[3] for s in scans if s[4] == OK and s[0] != "exit")
        checks("no ticket admitted twice as a new visit (OK)", max(first.values(), default=0) <= 1,
               sum(v_ > 1 for v_ in first.values()))
        n_sold = sum(sold.values())
        admitted = len(first)
        unknown = len({s[3] for s in scans if s[0] == "entry" and s[4] is None})
        exited = sum(1 for s in scans if s[0] == "exit" and s[4] == OK)
        back = sum(1 for s in scans if s[0] == "reentry" and s[4] == OK_REENTRY)
        if tc0 is not None:
            tc1, lc1 = v.ticket_counts(p.product_id), v.live_counts(date, zone)
            count_checks(checks, f"ReportService.TicketCounts: {p.product_id} issued rose by the "
                                 f"tickets sold", tc0["issued"], tc1["issued"], n_sold)
            count_checks(checks, f"ReportService.TicketCounts: {p.product_id} used rose by the "
                                 f"tickets admitted", tc0["used"], tc1["used"], admitted, unknown)
            count_checks(checks, f"ReportService.LiveCounts: {zone} entered on {date} rose by the "
                                 f"tickets admitted", lc0["entered"], lc1["entered"], admitted, unknown)
            if lc0.get("inside") is not None and lc1.get("inside") is not None and not r.errors:
                count_checks(checks, f"ReportService.LiveCounts: {zone} inside now rose by "
                                     f"admitted - exited + re-entered", lc0["inside"], lc1["inside"],
                             admitted - exited + back)
        else:
            notes.append("no admin key: ReportService checks skipped")
        by_kind = {k: latency_us(v_) for k, v_ in r.extra["by_kind"].items()}
        res = Result("holiday", ops=len(r.lat), calls=len(r.lat), planned=count, elapsed_s=r.elapsed,
                     latency_us=latency_us(r.lat), checks=checks, cut=r.cut, errors=dict(r.errors),
                     notes=notes,
                     counts={"sold": n_sold, "orders": holds["granted"], "sold_out_holds": holds["SOLD_OUT"],
                             "admitted": admitted, "repeats_refused": sum(
                                 1 for s in scans if s[0] == "repeat" and s[4] == ALREADY_USED),
                             "exited": exited, "reentered": back, "not_scanned": r.extra["not_scanned"]},
                     extra={"product": p.product_id, "zone": zone, "date": date.isoformat(),
                            "workers": dict(zip(("sellers", "entry_gates", "exit_gates"),
                                                r.extra["workers"])),
                            "latency_us_by_kind": by_kind, "slots_sold_out": sorted(r.extra["full"]),
                            "loop": loop})
        res.answers = [(s[2], s[4], s[5]) for s in scans]
        return res
