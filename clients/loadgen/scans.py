"""The scan scenarios: verify-unary, verify-stream and the opening-gate storm.

Each scans fresh tickets it buys first (or tickets the caller gives: bench/ passes
millions it issued through the engine), checks every answer (each ticket admitted once,
never twice; a refusal only for a code another call admitted) and, for tickets of a
named product and with an admin key, that ReportService counted what it admitted.
"""
from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import math
import random
import time
from collections import Counter
from typing import Sequence

import grpc
from turnstile.v1 import gate_pb2_grpc

from ..base import Connection
from .checks import IN, Checks, count_checks, scan_checks
from .load import (Run, deal, into_batches, ready, run_id, run_loop, scan_items, stream_load,
                   stream_requests, unary_load, verify_request)
from .results import QUIET, Progress, Result, latency_us
from .target import CALL_TIMEOUT, MAX_COUNT, LoadgenError, Target, bound
from .venue import Venue


def _scan_setup(v: Venue, count: int, tickets, at, gate, product, date, run, short_codes: bool,
                progress: Progress):
    """(items, product, zone, gate, date) for a scan scenario: the caller's tickets, or
    `count` new ones bought through SalesService."""
    if tickets is not None and product is None:
        p = None
        zone = next((g.zone_id for g in v.gates if g.gate_id == gate), None) if gate else None
        if zone is None:
            raise LoadgenError("with given tickets, name their gate or product")
    else:
        p = v.product(product)
        zone = p.zone_ids[0]
    date = date or v.today()
    gates = v.gate_ids(zone, IN, gate)
    if not gates:
        raise LoadgenError(f"no entry gate in zone {zone}")
    if tickets is None:
        items = v.buy(count, p, date, run, short_codes=short_codes, progress=progress)
    else:
        items = scan_items(tickets, at)
        if not items:
            raise LoadgenError("no tickets given")
        if len(items) > MAX_COUNT:
            raise LoadgenError(f"at most {MAX_COUNT:,} tickets")
    return items, (p.product_id if p else None), zone, gates, date


def _report_checks(v: Venue, checks: Checks, product: str, zone: str, date: _dt.date,
                   tc0: dict | None, lc0: dict | None, admitted: int, unknown: int,
                   notes: list) -> None:
    if tc0 is None:
        notes.append("no admin key: ReportService checks skipped")
        return
    tc1, lc1 = v.ticket_counts(product), v.live_counts(date, zone)
    what = "rose by the tickets admitted" if admitted else "unchanged (no ticket admitted)"
    count_checks(checks, f"ReportService.TicketCounts: {product} used {what}",
                 tc0["used"], tc1["used"], admitted, unknown)
    count_checks(checks, f"ReportService.LiveCounts: {zone} entered on {date} {what}",
                 lc0["entered"], lc1["entered"], admitted, unknown)


def _finish_scans(v: Venue, res: Result, out: list, expect: str, product, zone, date,
                  tc0, lc0) -> Result:
    checks, counts = scan_checks(out, expect, res.checks)
    res.counts.update(counts)
    if product is not None:
        _report_checks(v, checks, product, zone, date, tc0, lc0,
                       counts["admitted"] if expect == "admit" else 0, counts["unknown"], res.notes)
    else:
        res.notes.append("tickets of an unnamed product: ReportService checks skipped")
    res.answers = [(a[0], a[2], a[3]) for a in out]
    return res


def verify_unary(target: Target, *, count: int = 1000, inflight: int = 64, duration_s: float = 60,
                 dupes: float = 0.01, tickets: Sequence | None = None, at: int | None = None,
                 gate: str | None = None, product: str | None = None, date: _dt.date | None = None,
                 expect: str = "admit", rate: float | None = None, loop: str = "asyncio",
                 seed: int = 7, short_codes: bool = False, around=None,
                 progress: Progress | None = None) -> Result:
    """Unary GateService.Verify, `inflight` calls at once, every ticket once and a share
    `dupes` of them twice at once (two gates, one code: exactly one may admit).

    tickets: (ticket id, code[, scan time]) to scan (else `count` are bought first);
    at: their scan time; expect "used" for tickets already scanned; around: a context
    manager entered around the load alone (bench/ measures CPU with it)."""
    progress = progress or QUIET
    bound(len(tickets) if tickets is not None else count, duration_s)
    inflight = max(1, inflight)
    with Venue(target) as v:
        run = run_id()
        items, product, zone, gates, date = _scan_setup(
            v, count, tickets, at, gate, product, date, run, short_codes, progress)
        work = deal(items, inflight, dupes, random.Random(seed))
        tc0 = v.ticket_counts(product) if product else None
        lc0 = v.live_counts(date, zone) if product else None
        scanner = v.connection(target.keys.need("gate"))
        progress.phase("verify-unary", sum(map(len, work)))
        with around if around is not None else contextlib.nullcontext():
            r = unary_load(scanner, work, gate=gates[0], venue=v.venue, deadline_s=duration_s,
                           loop=loop, rate=rate, progress=progress, allow_remote=target.allow_remote)
        progress.close()
        res = Result("verify-unary", ops=len(r.out), calls=len(r.out),
                     planned=sum(len(w) for w in work), elapsed_s=r.elapsed, latency_us=latency_us(r.lat),
                     cut=r.cut, errors=dict(r.errors), tickets=items,
                     extra={"inflight": inflight, "gate": gates[0], "dupes": dupes, "rate": rate,
                            "loop": loop})
        return _finish_scans(v, res, r.out, expect, product, zone, date, tc0, lc0)


def verify_stream(target: Target, *, count: int = 10_000, streams: int = 8, per_call: int = 100,
                  window: int = 2, duration_s: float = 60, tickets: Sequence | None = None,
                  at: int | None = None, gate: str | None = None, product: str | None = None,
                  date: _dt.date | None = None, expect: str = "admit", rate: float | None = None,
                  loop: str = "asyncio", short_codes: bool = False, around=None,
                  progress: Progress | None = None, packed: bool = False) -> Result:
    """GateService.VerifyStream: batches of `per_call` codes, `streams` streams at once,
    `window` batches in flight on each; every ticket once. Throughput in codes/s,
    latency per batch. `rate` paces batches per second. `packed`: the concentrators'
    GateService.VerifyPacked instead (codes in their binary form, answers in packed
    arrays; a batch holds codes of one size), checked alike."""
    progress = progress or QUIET
    bound(len(tickets) if tickets is not None else count, duration_s)
    if not 1 <= per_call <= 10_000:
        raise LoadgenError("per_call must be between 1 and 10,000")
    with Venue(target) as v:
        run = run_id()
        items, product, zone, gates, date = _scan_setup(
            v, count, tickets, at, gate, product, date, run, short_codes, progress)
        batches = into_batches(items, per_call, one_size=packed)
        streams = max(1, min(streams, len(batches)))
        work = [batches[k::streams] for k in range(streams)]
        tc0 = v.ticket_counts(product) if product else None
        lc0 = v.live_counts(date, zone) if product else None
        scanner = v.connection(target.keys.need("gate"))
        name = "verify-packed" if packed else "verify-stream"
        requests = stream_requests(work, gates[0], IN, packed=packed)
        progress.phase(name, len(items))
        with around if around is not None else contextlib.nullcontext():
            r = stream_load(scanner, requests, venue=v.venue, window=max(1, window),
                            deadline_s=duration_s, loop=loop, rate=rate, progress=progress,
                            allow_remote=target.allow_remote)
        progress.close()
        answered = sum(1 for a in r.out if a[2] is not None)
        res = Result(name, ops=answered, unit="codes", calls=r.extra["calls"],
                     planned=len(items), elapsed_s=r.elapsed, latency_us=latency_us(r.lat),
                     cut=r.cut, errors=dict(r.errors), tickets=items,
                     extra={"streams": streams, "per_call": per_call, "window": window,
                            "gate": gates[0], "loop": loop,
                            "calls_per_s": r.extra["calls"] / r.elapsed if r.elapsed else 0.0})
        return _finish_scans(v, res, r.out, expect, product, zone, date, tc0, lc0)


# -- the opening-gate storm -----------------------------------------------------------------------
async def _storm(conn: Connection, address: str, plan: list[list[list]], gates: list[str],
                 interval_s: float, deadline_s: float, progress: Progress) -> Run:
    m = conn.metadata
    lat: list[float] = []
    out: list[tuple] = []
    errors: Counter = Counter()
    late = 0
    cut = False
    adv = progress.advance if progress is not QUIET else None
    chans = [conn.aio_channel(address=address, own_connection=True) for _ in plan]
    try:
        for ch in chans:
            await ready(ch, address)
        stop = time.perf_counter() + deadline_s
        t0 = time.perf_counter()

        async def terminal(g: int, ticks: list[list]):
            nonlocal late, cut
            verify = gate_pb2_grpc.GateServiceStub(chans[g]).Verify
            gate = gates[g % len(gates)]

            async def scan(it):
                t = time.perf_counter()
                try:
                    r = await verify(verify_request(it, gate, IN), metadata=m, timeout=CALL_TIMEOUT)
                    out.append((it[0], it[1], r.reason, r.ticket_id))
                except grpc.aio.AioRpcError as e:
                    errors[e.code().name] += 1
                    out.append((it[0], it[1], None, None))
                lat.append(time.perf_counter() - t)
                if adv:
                    adv(1)

            for k, chunk in enumerate(ticks):
                due = t0 + k * interval_s
                now = time.perf_counter()
                if now > stop:
                    cut = True
                    return
                if due > now:
                    await asyncio.sleep(due - now)
                elif k and now - due > interval_s:
                    late += 1
                await asyncio.gather(*(scan(it) for it in chunk))

        await asyncio.gather(*(terminal(g, ticks) for g, ticks in enumerate(plan)))
        elapsed = time.perf_counter() - t0
    finally:
        for ch in chans:
            await ch.close()
    return Run(lat, out, elapsed, cut, errors, t0, {"late_bursts": late})


def gate_storm(target: Target, *, count: int = 2000, gates: int = 16, burst: int = 8,
               interval_s: float = 0.25, dupes: float = 0.02, duration_s: float = 60,
               tickets: Sequence | None = None, at: int | None = None, gate: str | None = None,
               product: str | None = None, date: _dt.date | None = None, expect: str = "admit",
               loop: str = "asyncio", seed: int = 13, short_codes: bool = False, around=None,
               progress: Progress | None = None) -> Result:
    """The gates open: `gates` gate terminals (each its own connection, over the zone's
    entry gates) scan in bursts: every `interval_s` each terminal sends `burst` scans at
    once. A share `dupes` of the codes is shown at a second terminal in the same burst
    (exactly one may admit). Bursts are due on a fixed clock; `late_bursts` counts those
    that started more than an interval late."""
    progress = progress or QUIET
    bound(len(tickets) if tickets is not None else count, duration_s)
    if not 1 <= gates <= 1024 or burst < 1 or interval_s < 0:
        raise LoadgenError("gates 1-1024, burst >= 1, interval >= 0")
    rng = random.Random(seed)
    with Venue(target) as v:
        run = run_id()
        items, product, zone, gate_ids, date = _scan_setup(
            v, count, tickets, at, gate, product, date, run, short_codes, progress)
        gates = max(1, min(gates, len(items)))
        per_tick = gates * burst
        ticks = math.ceil(len(items) / per_tick)
        plan: list[list[list]] = [[[] for _ in range(ticks)] for _ in range(gates)]
        for k, it in enumerate(items):
            t, g = divmod(k, per_tick)
            plan[g % gates][t].append(it)
        n_dupes = 0
        if gates > 1:
            for k in rng.sample(range(len(items)), int(len(items) * dupes)):
                t, g = divmod(k, per_tick)
                other = (g % gates + rng.randrange(1, gates)) % gates
                plan[other][t].append(items[k])
                n_dupes += 1
        tc0 = v.ticket_counts(product) if product else None
        lc0 = v.live_counts(date, zone) if product else None
        progress.phase("gate-storm", len(items) + n_dupes)
        scanner = v.connection(target.keys.need("gate"))
        with around if around is not None else contextlib.nullcontext():
            r = run_loop(lambda: _storm(scanner, v.address, plan, gate_ids, interval_s, duration_s,
                                        progress), loop, duration_s + CALL_TIMEOUT + 30)
        progress.close()
        res = Result("gate-storm", ops=len(r.out), calls=len(r.out), planned=len(items) + n_dupes,
                     elapsed_s=r.elapsed, latency_us=latency_us(r.lat), cut=r.cut,
                     errors=dict(r.errors), tickets=items,
                     extra={"terminals": gates, "gates": gate_ids, "burst": burst,
                            "interval_s": interval_s, "bursts": ticks, "dupes": n_dupes,
                            "late_bursts": r.extra["late_bursts"], "loop": loop})
        return _finish_scans(v, res, r.out, expect, product, zone, date, tc0, lc0)
