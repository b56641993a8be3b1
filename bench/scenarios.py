"""Scenario runs: the engine under load, durable, with a correctness check each.

    python -m bench.scenarios durable-scans [--loop uvloop] [--quick] [--json out.json]
    python -m bench.scenarios hot-slot-holds | hot-slot-holds-priced | spread-holds | recovery
    python -m bench.scenarios durable-scans --profile /tmp/scans.prof   # cProfile the run

Each scenario runs in its own process (bench/run.py starts one per scenario), is bounded
in count and time, stops by itself, works on a temp dir, and prints throughput, latency
percentiles (p50/p99/p99.9 of single calls as the caller saw them), the batch sizes the
group-commit writer formed, and its correctness checks. A failed check fails the run:
a fast wrong answer is a failure.
"""
from __future__ import annotations

import argparse
import array
import asyncio
import cProfile
import gc
import hashlib
import io
import os
import pstats
import random
import sys
import time
from collections import Counter
from typing import Any, Callable

from bench import (DAY, bench_clock, PLAZA_IN, PLAZA_OUT, SCAN_AT, VENUE, TempDir, dumps,
                   issue_bulk, open_bench_shard, render_codes, sell_codes)
from bench.cpu import max_rss_mb
from turnstile.clients.loadgen.checks import Checks, scan_checks
from turnstile.clients.loadgen.results import percentiles
from turnstile.engine import Shard, SoldOut, cmd, demo
from turnstile.engine.model import DatePrice, Direction, HoldItem, Reason, to_day

SUBMITTERS = 64


# -- helpers ------------------------------------------------------------------------------
def _batch_stats(before: Counter, after: Counter) -> dict:
    """Batch sizes formed by the writer during the run (sizes counted per batch)."""
    sizes = after - before
    batches = sum(sizes.values())
    if not batches:
        return {"batches": 0}
    flat_by_batch = sorted(sizes.elements())
    commands = sum(flat_by_batch)
    # the batch size the average command rode in (what amortises the fsync)
    by_command = []
    for s, n in sizes.items():
        by_command.append((s, s * n))
    by_command.sort()
    half, acc, median_cmd = commands / 2, 0, 0
    for s, w in by_command:
        acc += w
        if acc >= half:
            median_cmd = s
            break
    hist = Counter()
    for s, n in sizes.items():
        b = ("1" if s == 1 else "2-7" if s < 8 else "8-31" if s < 32 else "32-63" if s < 64
             else "64" if s == 64 else "65-255" if s < 256 else "256+")
        hist[b] += n
    return {"batches": batches, "commands": commands, "mean": commands / batches,
            "p50": percentiles(flat_by_batch)["p50"], "max": flat_by_batch[-1],
            "median_per_command": median_cmd, "histogram": dict(hist)}


def _time_commits(shard: Shard) -> list[float]:
    """Time every LMDB commit of the shard (they run in the writer's I/O thread)."""
    times: list[float] = []
    inner = shard._commit

    def timed(batch):
        t = time.perf_counter()
        inner(batch)
        times.append(time.perf_counter() - t)

    shard._commit = timed
    return times


def _us(d: dict) -> dict:
    return {k: round(v * 1e6, 1) for k, v in d.items()}


def _run_loop(main: Callable, loop: str):
    if loop == "uvloop":
        import uvloop
        return uvloop.run(main())
    return asyncio.run(main())


async def _drive(shard: Shard, work: list[list], call, deadline_s: float) -> dict:
    """Run one submitter per list in `work` against the shard's group-commit writer.

    `call(w, item)` submits one item and returns whatever the check needs. Returns
    results per submitter, single-call latencies, elapsed seconds, and whether the
    deadline cut the run short."""
    lat: list[float] = []
    results: list[list] = [[] for _ in work]
    cut = False
    # What the benchmark itself keeps (codes, commands, results) is not the engine's:
    # keep it out of the cyclic GC's generations, as a server does after start-up with
    # gc.freeze(); otherwise a gen-2 collection over it shows up as a ~60 ms p99.9.
    gc.collect()
    gc.freeze()
    pauses: list[tuple[int, float]] = []
    started = [0.0]

    def on_gc(phase, info):                 # how long the cyclic GC stops the world
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pauses.append((info["generation"], time.perf_counter() - started[0]))

    gc.callbacks.append(on_gc)
    stop = time.perf_counter() + deadline_s

    async with shard.writer() as w:
        async def submitter(k: int) -> None:
            nonlocal cut
            out = results[k]
            push, lpush = out.append, lat.append
            clock = time.perf_counter
            for item in work[k]:
                t0 = clock()
                r = await call(w, item)
                t1 = clock()
                lpush(t1 - t0)
                push((item, r))
                if t1 > stop:
                    cut = True
                    return

        t0, cpu0 = time.perf_counter(), time.process_time()
        await asyncio.gather(*(submitter(k) for k in range(len(work))))
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - cpu0       # all threads: the loop and the commit thread
        stats = w.stats()
    gc.callbacks.remove(on_gc)
    gc.unfreeze()
    full = [p for g, p in pauses if g == 2]
    every = sorted(p for _, p in pauses)
    gcs = {"gen2_collections": len(full), "gen2_max_ms": max(full, default=0) * 1e3,
           "gen2_total_ms": sum(full) * 1e3, "young_collections": len(pauses) - len(full),
           "young_max_ms": max((p for g, p in pauses if g < 2), default=0) * 1e3,
           # every collection, all generations: the stops of the world a caller may meet
           "pauses": len(every), "pause_total_ms": sum(every) * 1e3,
           "pause_ms": {k: v * 1e3 for k, v in {**percentiles(every), "max": every[-1]}.items()} if every else {}}
    return {"results": results, "lat": lat, "elapsed": elapsed, "cpu_s": cpu, "cut": cut,
            "writer": stats, "gc": gcs}


def _profiled(fn: Callable, path: str | None):
    if not path:
        return fn()
    prof = cProfile.Profile()
    prof.enable()
    try:
        return fn()
    finally:
        prof.disable()
        prof.dump_stats(path)
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(40)
        with open(path + ".txt", "w") as f:
            f.write(s.getvalue())


def precondition(shard: Shard, records: int) -> dict:
    """Bring a new shard's LMDB file to the steady state of a shard that has run a while.

    A new file grows with every commit, and on ext4 an fdatasync that must also persist a
    new file size costs about twice one that does not (measured: ~640 vs ~410 µs per
    LMDB commit). A running shard's journal is pruned by its snapshots and LMDB reuses the
    freed pages, so its file stops growing. This journals `records` scans of unreadable
    codes (answered FORGED, changing no state) through the real command path, then takes
    a snapshot, which drops that journal and leaves its pages free for the run."""
    t = time.perf_counter()
    bogus = cmd.verify("A" * 48, PLAZA_IN, at=SCAN_AT)
    forged = 0
    for lo in range(0, records, 1000):
        forged += sum(r.reason == Reason.FORGED for r in shard.run_many([bogus] * min(1000, records - lo)))
    shard.snapshot()
    return {"records": records, "forged": forged, "seconds": time.perf_counter() - t,
            "file_mb": os.path.getsize(os.path.join(shard.storage.path, "data.mdb")) / 2 ** 20}


# -- durable scans ------------------------------------------------------------------------
def durable_scans(*, quick: bool, loop: str = "asyncio", submitters: int = SUBMITTERS,
                  scans: int | None = None, signed: bool = True, deadline_s: float = 60,
                  profile: str | None = None, durable: bool = True, warm: bool = True) -> dict:
    """`submitters` concurrent callers each `await w.submit(cmd.verify(code, gate))` one
    scan at a time on distinct fresh tickets, through group commit on a durable shard
    (LMDB full sync). 1 % of the codes are ALSO scanned by a second submitter at the same
    time: exactly one of the two may be admitted (anti-passback under concurrency).
    durable=False (diagnostic only) shows the ceiling without fsync."""
    n = scans or (10_000 if quick else 100_000)
    dupes = n // 100
    checks = Checks()
    with TempDir() as path:
        shard = open_bench_shard(path, durable=durable)
        t = time.perf_counter()
        first = issue_bulk(shard, n)
        codes = render_codes(shard, first, n, signed=signed)
        setup_s = time.perf_counter() - t
        pre = precondition(shard, max(2 * n, 100_000)) if warm else None
        rng = random.Random(7)
        items = [(first + k, codes[k]) for k in range(n)]
        # every code once, dealt round-robin; duplicates of random codes to OTHER submitters
        work = [items[k::submitters] for k in range(submitters)]
        for k in rng.sample(range(n), dupes):
            home = k % submitters
            other = (home + rng.randrange(1, submitters)) % submitters
            work[other].insert(rng.randrange(len(work[other]) + 1), items[k])
        total = sum(len(x) for x in work)

        async def call(w, item):
            r = await w.submit(cmd.verify(item[1], PLAZA_IN, at=SCAN_AT))
            return int(r.reason), r.ticket         # keep atoms only: no GC load of our own

        commits = _time_commits(shard)
        before = Counter(shard.batch_sizes)
        run = _profiled(lambda: _run_loop(lambda: _drive(shard, work, call, deadline_s), loop), profile)
        batches = _batch_stats(before, shard.batch_sizes)

        done = [(item, r) for out in run["results"] for item, r in out]
        # the load generator's scan checks: the engine's reasons are the API's numbers
        _, counts = scan_checks([(item[0], item[1], r[0], r[1]) for item, r in done], "admit", checks)
        admitted, refused = counts["admitted"], counts["refused"]
        checks("used bitmap = admitted tickets", len(shard.state.tickets.used) == admitted)
        checks("shard.check(replay=True) == []", (v := shard.check(replay=True)) == [], v)
        used_mem = len(shard.state.tickets.used)
        shard.close(snapshot=False)
        again = Shard.open(path, durable=True, clock=bench_clock)
        checks("every acknowledged entry survived reopen (journal replay)",
               len(again.state.tickets.used) == used_mem and again.check() == [],
               f"{len(again.state.tickets.used)} used after reopen, {used_mem} before")
        again.close(snapshot=False)

    lat = run["lat"]
    return {
        "scenario": "durable-scans", "loop": loop, "submitters": submitters, "signed_codes": signed,
        "durable": durable, "warm_file": warm, "precondition": pre,
        "scans_planned": total, "scans_done": len(done), "cut_by_deadline": run["cut"],
        "elapsed_s": run["elapsed"], "throughput_per_s": len(done) / run["elapsed"],
        "latency_us": _us(percentiles(lat)), "batch": batches, "gc": run["gc"],
        "commit_us": _us(percentiles(commits)), "commits": len(commits),
        "admitted": admitted, "refused": refused, "setup_s": setup_s,
        "checks": checks.as_dicts(), "ok": checks.ok, "max_rss_mb": max_rss_mb(),
    }


def durable_batch_scans(*, quick: bool, loop: str = "asyncio", submitters: int = SUBMITTERS,
                        per_call: int = 100, scans: int | None = None, signed: bool = False,
                        deadline_s: float = 60, profile: str | None = None,
                        warm: bool = True) -> dict:
    """Gate concentrators: `submitters` callers each `await w.submit(cmd.verify_batch(...))`
    of `per_call` codes at a time, durable. Not a target (the target counts single calls);
    it shows what the durable path does when scans arrive batched."""
    n = scans or (64_000 if quick else 640_000)
    n -= n % per_call
    checks = Checks()
    with TempDir() as path:
        shard = open_bench_shard(path, durable=True)
        t = time.perf_counter()
        first = issue_bulk(shard, n)
        codes = render_codes(shard, first, n, signed=signed)
        setup_s = time.perf_counter() - t
        pre = precondition(shard, max(n // 2, 100_000)) if warm else None
        calls = [(first + lo, codes[lo:lo + per_call]) for lo in range(0, n, per_call)]
        work = [calls[k::submitters] for k in range(submitters)]

        async def call(w, item):
            r = await w.submit(cmd.verify_batch(item[1], PLAZA_IN, at=SCAN_AT))
            return r.reasons, r.tickets

        commits = _time_commits(shard)
        before = Counter(shard.batch_sizes)
        run = _profiled(lambda: _run_loop(lambda: _drive(shard, work, call, deadline_s), loop), profile)
        batches = _batch_stats(before, shard.batch_sizes)
        done = [(item, r) for out in run["results"] for item, r in out]
        scanned = sum(len(r[0]) for item, r in done)
        checks("every scan of a fresh ticket admitted",
               all(r[0] == bytes(len(r[0])) and list(r[1]) == list(range(item[0], item[0] + len(r[0])))
                   for item, r in done))
        checks("used bitmap = admitted tickets", len(shard.state.tickets.used) == scanned)
        checks("shard.check(replay=True) == []", (v := shard.check(replay=True)) == [], v)
        shard.close(snapshot=False)

    return {
        "scenario": "durable-batch-scans", "loop": loop, "submitters": submitters,
        "per_call": per_call, "signed_codes": signed, "durable": True, "warm_file": warm,
        "precondition": pre,
        "scans_planned": n, "scans_done": scanned, "cut_by_deadline": run["cut"],
        "elapsed_s": run["elapsed"], "throughput_per_s": scanned / run["elapsed"],
        "calls_per_s": len(done) / run["elapsed"],
        "latency_us": _us(percentiles(run["lat"])), "batch": batches, "gc": run["gc"],
        "commit_us": _us(percentiles(commits)), "commits": len(commits), "setup_s": setup_s,
        "checks": checks.as_dicts(), "ok": checks.ok, "max_rss_mb": max_rss_mb(),
    }


# -- holds --------------------------------------------------------------------------------
COUPON = "FLASH10"        # a public coupon: its code is its id
COUPON_OFF = 1000         # fen off every hold
FILL_PCT = 50             # the fill-rate rule's threshold


def pricing_commands(capacity: int, *, with_coupon: bool = True) -> list:
    """Issue 13's pricing in force on the demo's adult ticket for the hot slot (on DAY,
    10:00-12:00): DAY a holiday in the calendar; a price table by date type with a
    channel's own holiday price (ch0 11,000 fen, any other channel 12,000); the three
    rules -- early-bird (7 days ahead, -10 %: checked, not met, the slot is today),
    time-of-day (slots from 10:00, -500 fen: met) and fill-rate (half the slot sold or
    held, +10 % capped at 2,000 fen: met from the hold that finds the slot half full on,
    so the price changes mid-sale); a booking window (opens 30 days ahead, closes an
    hour after the slot starts: open); and a public fixed coupon of 1,000 fen that every
    hold takes, with a budget it never reaches (2x what the holds can take); with_coupon
    False (a diagnostic): no coupon."""
    return [
        cmd.calendar(VENUE, {DAY: "holiday"}),
        cmd.prices(VENUE, "adult", [DatePrice("weekend", "", 10000), DatePrice("holiday", "", 12000),
                                    DatePrice("holiday", "ch0", 11000)]),
        cmd.price_rules(VENUE, "adult", [
            {"kind": "early_bird", "days_ahead": 7, "pct": -10},
            {"kind": "time_of_day", "from_minute": 600, "amount_fen": -500},
            {"kind": "fill_rate", "fill_pct": FILL_PCT, "pct": 10, "cap_fen": 2000}]),
        cmd.booking(VENUE, "adult", opens_days=30, closes_minutes=-60),
    ] + ([cmd.coupon(VENUE, COUPON, "fixed", amount_fen=COUPON_OFF, products=["adult"],
                     budget_fen=2 * COUPON_OFF * capacity)] if with_coupon else [])


def _holds(kind: str, *, quick: bool, loop: str, submitters: int, deadline_s: float,
           profile: str | None, idempotent: bool = False, warm: bool = True,
           priced: bool = False, with_coupon: bool = True) -> dict:
    checks = Checks()
    rng = random.Random(11)
    if kind == "hot":
        n_slots, capacity = 1, (5_000 if quick else 50_000)
    else:
        n_slots, capacity = 1000, (5 if quick else 50)
    asks_total = int(n_slots * capacity * 1.2)
    day = to_day(DAY)
    start = demo.local_time(DAY, 10)
    slot_ids = [f"{kind}-{DAY:%Y%m%d}-{k:04d}" for k in range(n_slots)]
    with TempDir() as path:
        shard = open_bench_shard(path, durable=True)
        for lo in range(0, n_slots, 1000):
            shard.run(cmd.slots([{"id": s, "zone": "main", "day": day, "start": start,
                                  "end": start + 7200, "capacity": capacity}
                                 for s in slot_ids[lo:lo + 1000]]))
        quotes: dict[str, tuple] = {}
        coupon = COUPON if priced and with_coupon else None
        if priced:
            bad = [r for r in shard.run_many(pricing_commands(n_slots * capacity, with_coupon=with_coupon))
                   if isinstance(r, Exception)]
            checks("pricing, booking window" + (" and coupon" if coupon else "") + " set", not bad, bad[:3])
            # what Quote says before the sale (the slot empty): the price every hold pays
            # until the slot is half full
            quotes = {f"ch{c}": _quote(shard, f"ch{c}", slot_ids[0], coupon) for c in range(8)}
        pre = precondition(shard, max(asks_total * 10, 100_000)) if warm else None
        asks = [slot_ids[0] if n_slots == 1 else slot_ids[rng.randrange(n_slots)]
                for _ in range(asks_total)]
        work = [[(k, asks[k]) for k in range(s, asks_total, submitters)] for s in range(submitters)]
        # what each priced hold was charged, by ask, in arrays (no object per hold: the run
        # must not make the GC work harder than the plain run does); -1: another coupon
        amounts, discounts = array.array("q", [0]) * asks_total, array.array("q", [0]) * asks_total

        async def call(w, item):
            k, slot = item
            c = cmd.hold(f"ch{k % 8}", VENUE, [HoldItem("adult", (slot,), qty=1)],
                         idempotency_key=f"flash-{k}" if idempotent else None, coupon=coupon)
            try:
                h = await w.submit(c)
            except SoldOut:
                return "SoldOut"
            except Exception as e:
                return f"{type(e).__name__}: {e}"
            if priced:
                amounts[k] = h.amount_fen
                discounts[k] = h.discount_fen if h.coupon == (coupon or "") else -1
            return h.hold_id                    # an int: no GC load of our own

        commits = _time_commits(shard)
        before = Counter(shard.batch_sizes)
        run = _profiled(lambda: _run_loop(lambda: _drive(shard, work, call, deadline_s), loop), profile)
        batches = _batch_stats(before, shard.batch_sizes)

        done = [(item, r) for out in run["results"] for item, r in out]
        # ask -> (hold id, amount, discount, coupon) of the priced holds granted
        held_by = {item[0]: (r, amounts[item[0]], discounts[item[0]], coupon or "" if discounts[item[0]] >= 0
                             else "another coupon") for item, r in done if priced and isinstance(r, int)}
        granted = Counter(item[1] for item, r in done if isinstance(r, int))
        sold_out = Counter(item[1] for item, r in done if r == "SoldOut")
        other = [r for item, r in done if isinstance(r, str) and r != "SoldOut"]
        asked = Counter(item[1] for item, r in done)
        st = shard.state
        counters = {s: st.slots.slot(st.slot_idx[s]) for s in slot_ids}
        checks("no errors other than SoldOut", not other, other[:3])
        checks("granted = capacity of every slot asked exactly (all asks answered)",
               not run["cut"] and len(done) == asks_total
               and sum(granted.values()) == sum(min(asked[s], capacity) for s in slot_ids)
               and (kind != "hot" or sum(granted.values()) == capacity),
               f"{sum(granted.values())} granted, {len(done)} of {asks_total} asks answered")
        over = [s for s in slot_ids if granted[s] > capacity]
        checks("zero oversell: granted <= capacity on every slot", not over, over[:5])
        # qty 1 each: a slot grants every ask until it is full, then refuses every one
        wrong = [s for s in slot_ids if granted[s] != min(asked[s], capacity)]
        checks("granted = min(asked, capacity) on every slot", not wrong,
               [(s, asked[s], granted[s]) for s in wrong[:5]])
        checks("SoldOut only where the slot was full",
               all(granted[s] == capacity for s in sold_out), "")
        checks("slot counters: held = granted, sold = 0",
               all(counters[s]["held"] == granted[s] and counters[s]["sold"] == 0 for s in slot_ids))
        hold_ids = [r for item, r in done if isinstance(r, int)]
        checks("hold ids unique", len(set(hold_ids)) == len(hold_ids))
        pricing = (_check_priced(shard, checks, held_by, quotes, slot_ids[0], capacity, coupon)
                   if priced else None)
        checks("shard.check(replay=True) == []", (v := shard.check(replay=True)) == [], v)
        held = sum(c["held"] for c in counters.values())
        holds_before = list(st.holds.values())
        shard.close(snapshot=False)
        again = Shard.open(path, durable=True, clock=bench_clock)
        held_again = sum(again.state.slots.slot(again.state.slot_idx[s])["held"] for s in slot_ids)
        checks("every acknowledged hold survived reopen", held_again == held and again.check() == [],
               f"held {held_again} after reopen, {held} before")
        # replayed from the journal: every active hold as it was, field by field, and the
        # slot counters alike
        holds_after = list(again.state.holds.values())
        checks("state after reopen (journal replay) = state before: holds and slot counters",
               holds_after == holds_before and len(holds_before) == len(hold_ids) and all(
                   again.state.slots.slot(again.state.slot_idx[s]) == counters[s] for s in slot_ids),
               f"{len(holds_after)} holds after, {len(holds_before)} before")
        if coupon:
            cs = again.coupon(VENUE, COUPON)
            checks("coupon use survived reopen (replayed from the HOLD records)",
                   (cs.uses, cs.spent_fen) == (pricing["coupon_uses"], pricing["coupon_spent_fen"]),
                   f"{cs.uses} uses, {cs.spent_fen} fen after reopen")
        again.close(snapshot=False)

    lat = run["lat"]
    return {
        "scenario": (f"{kind}-slot-holds" if kind == "hot" else "spread-holds") + ("-priced" if priced else ""),
        "loop": loop, "priced": priced, "with_coupon": bool(coupon), "pricing": pricing,
        "submitters": submitters, "slots": n_slots, "capacity_per_slot": capacity,
        "idempotency_keys": idempotent, "warm_file": warm, "precondition": pre,
        "asks_planned": asks_total, "asks_done": len(done), "cut_by_deadline": run["cut"],
        "granted": sum(granted.values()), "sold_out": sum(sold_out.values()),
        "elapsed_s": run["elapsed"], "throughput_per_s": len(done) / run["elapsed"],
        # CPU of the whole process per ask: what another process on the machine changes least
        "cpu_us_per_ask": run["cpu_s"] / max(len(done), 1) * 1e6,
        "latency_us": _us(percentiles(lat)), "batch": batches, "gc": run["gc"],
        "commit_us": _us(percentiles(commits)), "commits": len(commits),
        "checks": checks.as_dicts(), "ok": checks.ok, "max_rss_mb": max_rss_mb(),
    }


def hot_slot_holds(*, quick: bool, loop: str = "asyncio", submitters: int = SUBMITTERS,
                   deadline_s: float = 60, profile: str | None = None,
                   idempotent: bool = False, warm: bool = True) -> dict:
    """Flash sale: 64 channels' submitters hold 1 ticket each on ONE slot, asking 1.2x
    its capacity in total: exactly `capacity` granted, the rest SoldOut, zero oversell."""
    return _holds("hot", quick=quick, loop=loop, submitters=submitters, deadline_s=deadline_s,
                  profile=profile, idempotent=idempotent, warm=warm)


def hot_slot_holds_priced(*, quick: bool, loop: str = "asyncio", submitters: int = SUBMITTERS,
                          deadline_s: float = 60, profile: str | None = None,
                          idempotent: bool = False, warm: bool = True,
                          with_coupon: bool = True) -> dict:
    """hot-slot-holds with issue 13's pricing in force (`pricing_commands`): every hold
    priced by the calendar, a price table, three rules and a booking window, and taking
    a public coupon. Same submitters, asks, durability and checks as the plain run, and
    more: each hold's amount is what Quote says, the coupon's use adds up."""
    return _holds("hot", quick=quick, loop=loop, submitters=submitters, deadline_s=deadline_s,
                  profile=profile, idempotent=idempotent, warm=warm, priced=True,
                  with_coupon=with_coupon)


HALL_ROWS = 40                  # 40 rows of 50 seats, an aisle in the middle: 2,000 seats


def seat_holds(*, quick: bool, loop: str = "asyncio", submitters: int = SUBMITTERS,
               deadline_s: float = 120, profile: str | None = None, warm: bool = True) -> dict:
    """A show sold out by best-available holds (issue 17): 64 submitters each ask the best
    seats for 1-4 persons on ONE session of a 2,000-seat hall (three price zones, an
    aisle in every row) until it is sold out, then single seats until none is left:
    exactly the hall held, no seat twice, every refusal SoldOut."""
    checks = Checks()
    rng = random.Random(17)
    rows = HALL_ROWS // 4 if quick else HALL_ROWS
    layout = [{"section": "hall", "row": f"R{r:02d}",
               "layout": ("A" if r < rows // 4 else "B" if r < rows * 5 // 8 else "C") * 25 + "_"
               + ("A" if r < rows // 4 else "B" if r < rows * 5 // 8 else "C") * 25} for r in range(rows)]
    seats_total = rows * 50
    day = to_day(DAY)
    start = demo.local_time(DAY, 19)
    with TempDir() as path:
        shard = open_bench_shard(path, durable=True)
        shard.run_many([cmd.zone(VENUE, "theatre", "Theatre"), cmd.product(VENUE, "show", ["theatre"], price_fen=1),
                        cmd.slots([{"id": "show", "zone": "theatre", "day": day, "start": start,
                                    "end": start + 7200, "capacity": 1}]),
                        cmd.seat_map(VENUE, "hall", layout, [{"zone": "A", "price_fen": 58000},
                                                             {"zone": "B", "price_fen": 38000},
                                                             {"zone": "C", "price_fen": 18000}]),
                        cmd.seating(VENUE, "show", "hall")])
        pre = precondition(shard, 100_000) if warm else None
        asks = [rng.randint(1, 4) for _ in range(seats_total // 2)] + [1] * (seats_total // 2)
        work = [[(k, asks[k]) for k in range(sub, len(asks), submitters)] for sub in range(submitters)]
        got = array.array("i", [-1]) * (len(asks) * 4)         # ask k's seats at 4k..4k+3

        async def call(w, item):
            k, n = item
            try:
                h = await w.submit(cmd.hold(f"ch{k % 8}", VENUE, [HoldItem("show", ("show",), qty=n)]))
            except SoldOut:
                return "SoldOut"
            except Exception as e:
                return f"{type(e).__name__}: {e}"
            names = [x for it in h.items for x in it.seats]
            for j, x in enumerate(names):
                got[4 * k + j] = int(x.rsplit("-", 2)[1][1:]) * 50 + int(x.rsplit("-", 1)[1]) - 1
            return len(names)

        commits = _time_commits(shard)
        before = Counter(shard.batch_sizes)
        run = _profiled(lambda: _run_loop(lambda: _drive(shard, work, call, deadline_s), loop), profile)
        batches = _batch_stats(before, shard.batch_sizes)
        done = [(item, r) for out in run["results"] for item, r in out]
        granted = [r for _, r in done if isinstance(r, int)]
        other = [r for _, r in done if isinstance(r, str) and r != "SoldOut"]
        seats = [x for x in got if x >= 0]
        checks("no errors other than SoldOut", not other, other[:3])
        checks("every ask answered", not run["cut"] and len(done) == len(asks), f"{len(done)} of {len(asks)}")
        checks("each hold got the seats it asked for", all(r == n for (_, n), r in done if isinstance(r, int)))
        checks("exactly the hall held: every seat once, none twice",
               len(seats) == len(set(seats)) == seats_total == sum(granted),
               f"{len(seats)} seats answered, {len(set(seats))} distinct, of {seats_total}")
        st = shard.state
        sess = st.sessions[st.slot_idx[(VENUE, "show")]]
        c = st.slots.slot(st.slot_idx[(VENUE, "show")])
        checks("the session's seats and slot: all held, none free",
               sess.seats.counts() == (0, seats_total, 0, 0) and (c["held"], c["sold"]) == (seats_total, 0),
               f"seats {sess.seats.counts()}, slot {c}")
        checks("shard.check(replay=True) == []", (v := shard.check(replay=True)) == [], v)
        states = sess.seats.states()
        shard.close(snapshot=False)
        again = Shard.open(path, durable=True, clock=bench_clock)
        checks("every acknowledged seat survived reopen",
               again.state.sessions[again.state.slot_idx[(VENUE, "show")]].seats.states() == states
               and again.check() == [])
        again.close(snapshot=False)
    lat = run["lat"]
    return {
        "scenario": "seat-holds", "loop": loop, "submitters": submitters, "slots": 1,
        "capacity_per_slot": seats_total, "idempotency_keys": False, "warm_file": warm, "precondition": pre,
        "priced": False, "with_coupon": False, "pricing": None,
        "asks_planned": len(asks), "asks_done": len(done), "cut_by_deadline": run["cut"],
        "granted": len(granted), "seats": len(seats), "sold_out": len(done) - len(granted) - len(other),
        "elapsed_s": run["elapsed"], "throughput_per_s": len(done) / run["elapsed"],
        "holds_per_s": len(granted) / run["elapsed"], "seats_per_s": len(seats) / run["elapsed"],
        "cpu_us_per_ask": run["cpu_s"] / max(len(done), 1) * 1e6,
        "latency_us": _us(percentiles(lat)), "batch": batches, "gc": run["gc"],
        "commit_us": _us(percentiles(commits)), "commits": len(commits),
        "checks": checks.as_dicts(), "ok": checks.ok, "max_rss_mb": max_rss_mb(),
    }


def _quote(shard: Shard, channel: str, slot: str, coupon: str | None) -> tuple:
    """(amount after the coupon, discount, rules met, date type) of Quote for one ticket
    of `slot`."""
    q = shard.quote(VENUE, channel, [{"product": "adult", "slots": [slot], "qty": 1}], coupon=coupon)
    return (q.amount_fen, q.coupon.discount_fen if q.coupon else 0,
            tuple(r.rule for r in q.lines[0].rules), q.lines[0].date_type)


def _check_priced(shard: Shard, checks: Checks, held_by: dict, before: dict, slot: str,
                  capacity: int, coupon: str | None) -> dict:
    """Every granted hold charged what Quote says for its channel in the state it was
    applied in, and the coupon's use equal to the holds' discounts.

    All holds are of 1 ticket on the one slot, so the only state a hold's price depends
    on that changes during the sale is the slot's fill: hold ids are given in the order
    holds are applied, so the j-th granted hold (0-based) found j tickets held. Quote
    taken before the sale (empty slot) gives the price until the fill-rate rule is met,
    Quote taken now (slot full) the price from then on; the engine reads the fill as
    held / capacity before taking the stock (sales.hold_lines), so the rule is met from
    the first j with 100 j / capacity >= FILL_PCT."""
    after = {ch: _quote(shard, ch, slot, coupon) for ch in before}
    ids = sorted(h[0] for h in held_by.values())
    first = ids[0] if ids else 0
    checks("hold ids of the granted holds are consecutive (their order of application)",
           ids == list(range(first, first + len(ids))), "")
    wrong = []
    for k, (hid, amount, discount, code) in held_by.items():
        j = hid - first
        q = after if 100 * j / capacity >= FILL_PCT else before
        want = q[f"ch{k % 8}"]
        if (amount, discount, code) != (want[0], want[1], coupon or ""):
            wrong.append((k, j, amount, discount, code, want[:2]))
    checks("every granted hold's amount = what Quote says for its items and channel "
           "(rules, price table, coupon)", not wrong and held_by, wrong[:3])
    rules_seen = {q[2] for q in before.values()} | {q[2] for q in after.values()}
    checks("the rules were in force: a holiday price, time-of-day met, fill-rate met from half full",
           all(q[3] == "holiday" and q[2] == ("time_of_day",) for q in before.values())
           and all(q[2] == ("time_of_day", "fill_rate") for q in after.values()), rules_seen)
    paid = Counter(a for _, a, _, _ in held_by.values())
    out = {"quote_before": before, "quote_after": after, "amounts": dict(sorted(paid.items()))}
    if not coupon:
        return out
    cs = shard.coupon(VENUE, coupon)
    spent = sum(d for _, _, d, _ in held_by.values())
    checks("coupon: uses = granted holds, spent_fen = sum of their discount_fen",
           cs.uses == len(held_by) and cs.spent_fen == spent,
           f"{cs.uses} uses, {cs.spent_fen} fen spent; {len(held_by)} holds, {spent} fen of discount")
    checks("coupon: budget never exceeded", cs.spent_fen <= cs.coupon.budget_fen,
           f"{cs.spent_fen} > {cs.coupon.budget_fen}")
    return {**out, "coupon": coupon, "coupon_uses": cs.uses, "coupon_spent_fen": cs.spent_fen,
            "coupon_budget_fen": cs.coupon.budget_fen}


def spread_holds(*, quick: bool, loop: str = "asyncio", submitters: int = SUBMITTERS,
                 deadline_s: float = 60, profile: str | None = None,
                 idempotent: bool = False, warm: bool = True) -> dict:
    """The same spread over 1,000 slots (1.2x total capacity, random slot per ask)."""
    return _holds("spread", quick=quick, loop=loop, submitters=submitters,
                  deadline_s=deadline_s, profile=profile, idempotent=idempotent, warm=warm)


# -- recovery -----------------------------------------------------------------------------
def _digest(shard: Shard) -> dict[str, str]:
    """A digest of every snapshot part of the state (what recovery must reproduce)."""
    return {k: hashlib.blake2b(v, digest_size=16).hexdigest()
            for k, v in shard.state.dump().items()}


def _drop_page_cache(path: str) -> bool:
    """Evict the LMDB file from the OS page cache (clean pages only), so the next open
    reads from the disk: a cold start without root."""
    f = os.path.join(path, "data.mdb")
    try:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
        return True
    except (OSError, AttributeError):
        return False


def recovery(*, quick: bool, tickets: int | None = None, journal: int | None = None,
             opens: int = 3, profile: str | None = None) -> dict:
    """Open + recovery of a shard holding `tickets` issued tickets in its snapshot and
    `journal` journal records after it (single scans: 90 % fresh entries, 5 % exits,
    5 % repeated entries refused ALREADY_USED; committed in batches of 8,192 as the
    writer would), closed without a new snapshot. Reopened `opens` times: the first
    after evicting the file from the page cache (cold), the rest warm."""
    n = tickets or (1_000_000 if quick else 10_000_000)
    j = journal or (100_000 if quick else 1_000_000)
    checks = Checks()
    build: dict[str, float] = {}
    with TempDir() as path:
        t = time.perf_counter()
        shard = open_bench_shard(path, durable=False)
        real = 10_000
        t1 = time.perf_counter()
        sell_codes(shard, real, signed=True, order_prefix="real-")
        build["real_confirm_us_per_ticket"] = (time.perf_counter() - t1) / real * 1e6
        first = issue_bulk(shard, n - real)
        build["issue_s"] = time.perf_counter() - t
        checks("tickets issued", shard.state.tickets.n == n, shard.state.tickets.n)
        t = time.perf_counter()
        shard.snapshot()
        build["snapshot_write_s"] = time.perf_counter() - t

        # the journal after the snapshot: j single-scan records
        t = time.perf_counter()
        n_entries = j * 9 // 10
        codes = render_codes(shard, first, n_entries, signed=False)
        build["render_s"] = time.perf_counter() - t
        t = time.perf_counter()
        cmds, entered, e = [], [], 0
        x = 0
        for i in range(j):
            r = i % 20
            if r == 18 and entered:
                cmds.append(cmd.verify(codes[entered[x % len(entered)]], PLAZA_OUT, Direction.OUT,
                                       at=SCAN_AT + 60))
                x += 1
            elif r == 19 and entered:
                cmds.append(cmd.verify(codes[entered[(x * 7) % len(entered)]], PLAZA_IN,
                                       at=SCAN_AT + 120))
            elif e < n_entries:
                cmds.append(cmd.verify(codes[e], PLAZA_IN, at=SCAN_AT))
                entered.append(e)
                e += 1
            else:
                cmds.append(cmd.verify(codes[0], PLAZA_IN, at=SCAN_AT + 120))
        reasons: Counter = Counter()
        for lo in range(0, j, 8192):
            for res in shard.run_many(cmds[lo:lo + 8192]):
                reasons[res.reason.name] += 1
        build["journal_s"] = time.perf_counter() - t
        del cmds, codes
        checks("journal scans answered as planned",
               reasons["OK"] == n_entries + j // 20 and set(reasons) <= {"OK", "ALREADY_USED"},
               dict(reasons))
        journal_records = shard.storage.journal_count()
        want = _digest(shard)
        used, n_issued = len(shard.state.tickets.used), shard.state.tickets.n
        checks("shard.check() == [] before close", (v := shard.check()) == [], v)
        shard.storage.env.sync(True)
        shard.close(snapshot=False)
        size_mb = os.path.getsize(os.path.join(path, "data.mdb")) / 2 ** 20

        runs = []
        for k in range(opens):
            cold = _drop_page_cache(path) if k == 0 else False
            t = time.perf_counter()
            s = _profiled(lambda: Shard.open(path, durable=True, clock=bench_clock), profile if k == 0 else None)
            wall = time.perf_counter() - t
            runs.append({"cold": cold, "open_s": wall, **s.recovery})
            if k == 0:
                checks("replayed every journal record", s.recovery["replayed"] == j,
                       s.recovery["replayed"])
                checks("reopened state = closed state (every snapshot part)", _digest(s) == want)
                checks("counts equal (tickets issued, used)",
                       s.state.tickets.n == n_issued and len(s.state.tickets.used) == used)
                checks("shard.check() == [] after reopen", (v := s.check()) == [], v)
            s.close(snapshot=False)
    warm = [r["open_s"] for r in runs if not r["cold"]] or [r["open_s"] for r in runs]
    return {
        "scenario": "recovery", "tickets": n, "journal_records": j,
        "journal_batches": journal_records, "data_mb": size_mb, "build": build,
        "opens": runs, "open_cold_s": runs[0]["open_s"] if runs[0]["cold"] else None,
        "open_warm_s": min(warm), "checks": checks.as_dicts(), "ok": checks.ok,
        "max_rss_mb": max_rss_mb(),
    }


SCENARIOS = {
    "durable-scans": durable_scans,
    "durable-batch-scans": durable_batch_scans,
    "hot-slot-holds": hot_slot_holds,
    "hot-slot-holds-priced": hot_slot_holds_priced,
    "spread-holds": spread_holds,
    "seat-holds": seat_holds,
    "recovery": recovery,
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.scenarios", description=__doc__.split("\n")[0])
    ap.add_argument("scenario", choices=sorted(SCENARIOS))
    ap.add_argument("--quick", action="store_true", help="smaller sizes (CI smoke)")
    ap.add_argument("--loop", choices=["asyncio", "uvloop"], default=None)
    ap.add_argument("--submitters", type=int, default=None)
    ap.add_argument("--count", type=int, default=None, help="scans (durable-scans) or tickets (recovery)")
    ap.add_argument("--journal", type=int, default=None, help="journal records (recovery)")
    ap.add_argument("--mac-only", action="store_true", help="MAC-only codes (durable-scans)")
    ap.add_argument("--no-sync", action="store_true",
                    help="durable=False: no fsync (diagnostic ceiling, durable-scans)")
    ap.add_argument("--idempotent", action="store_true", help="holds carry idempotency keys")
    ap.add_argument("--no-coupon", action="store_true",
                    help="the rules without the coupon (hot-slot-holds-priced, diagnostic)")
    ap.add_argument("--fresh-file", action="store_true",
                    help="skip preconditioning: run on a new, growing LMDB file")
    ap.add_argument("--profile", default=None, help="write a cProfile of the measured part here")
    ap.add_argument("--json", default=None, help="write the result here as JSON")
    a = ap.parse_args(argv)
    kw: dict[str, Any] = {"quick": a.quick, "profile": a.profile}
    if a.scenario != "recovery":
        if a.loop:
            kw["loop"] = a.loop
        if a.submitters:
            kw["submitters"] = a.submitters
        kw["warm"] = not a.fresh_file
    if a.scenario == "durable-scans":
        kw["scans"] = a.count
        kw["signed"] = not a.mac_only
        kw["durable"] = not a.no_sync
    if a.scenario == "durable-batch-scans":
        kw["scans"] = a.count
    if a.scenario in ("hot-slot-holds", "hot-slot-holds-priced", "spread-holds"):
        kw["idempotent"] = a.idempotent
    if a.scenario == "hot-slot-holds-priced":
        kw["with_coupon"] = not a.no_coupon
    if a.scenario == "recovery":
        kw["tickets"] = a.count
        kw["journal"] = a.journal
    result = SCENARIOS[a.scenario](**kw)
    text = dumps(result)
    if a.json:
        with open(a.json, "w") as f:
            f.write(text)
    print(_summary(result))
    if not result["ok"]:
        print("CORRECTNESS CHECK FAILED", file=sys.stderr)
        return 1
    return 0


def _summary(r: dict) -> str:
    lines = [f"== {r['scenario']}" + (f" ({r['loop']}, {r['submitters']} submitters"
                                      + (", NO fsync" if r.get("durable") is False else "") + ")"
                                      if "loop" in r else "")]
    if "throughput_per_s" in r:
        lat, b = r["latency_us"], r["batch"]
        lines.append(f"  throughput {r['throughput_per_s']:,.0f}/s over {r['elapsed_s']:.2f} s"
                     + (f" ({r['calls_per_s']:,.0f} calls/s of {r['per_call']})" if "per_call" in r else "")
                     + ("  (cut by deadline)" if r["cut_by_deadline"] else ""))
        lines.append(f"  latency p50 {lat['p50']:,.0f} µs  p99 {lat['p99']:,.0f} µs  p99.9 {lat['p999']:,.0f} µs")
        lines.append(f"  batches {b['batches']:,}  mean {b.get('mean', 0):.1f}  p50 {b.get('p50', 0)}  "
                     f"max {b.get('max', 0)}  {b.get('histogram', {})}")
        lines.append(f"  LMDB commit p50 {r['commit_us']['p50']:,.0f} µs  p99 {r['commit_us']['p99']:,.0f} µs"
                     + (f"  CPU {r['cpu_us_per_ask']:,.1f} µs per ask" if "cpu_us_per_ask" in r else ""))
        g = r.get("gc", {})
        lines.append(f"  GC: {g.get('gen2_collections', 0)} full collections, longest "
                     f"{g.get('gen2_max_ms', 0):,.0f} ms; {g.get('young_collections', 0)} young, longest "
                     f"{g.get('young_max_ms', 0):,.1f} ms")
        pm = g.get("pause_ms")
        if pm:
            lines.append(f"  GC pauses (all {g['pauses']:,} collections): p50 {pm['p50']:.2f} ms  "
                         f"p99 {pm['p99']:.2f} ms  p99.9 {pm['p999']:.2f} ms  max {pm['max']:.1f} ms  "
                         f"total {g['pause_total_ms']:,.0f} ms")
    else:
        for o in r["opens"]:
            lines.append(f"  open {o['open_s']:.2f} s ({'cold' if o['cold'] else 'warm'}): read snapshot "
                         f"{o['read_snapshot_s']:.2f} s, load {o['load_snapshot_s']:.2f} s, replay "
                         f"{o['replay_s']:.2f} s ({o['replayed']:,} records)")
        lines.append(f"  build {', '.join(f'{k} {v:.2f}' for k, v in r['build'].items())}")
    pr = r.get("pricing")
    if pr:
        lines.append(f"  priced: paid {pr['amounts']} (fen: holds)"
                     + (f"; coupon {pr['coupon']} {pr['coupon_uses']:,} uses, {pr['coupon_spent_fen']:,} "
                        f"of {pr['coupon_budget_fen']:,} fen budget" if "coupon" in pr else "; no coupon"))
    for c in r["checks"]:
        lines.append(f"  [{'ok' if c['passed'] else 'FAIL'}] {c['check']}"
                     + (f" ({c['detail']})" if c["detail"] and not c["passed"] else ""))
    lines.append(f"  max RSS {r['max_rss_mb']:,.0f} MB")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
