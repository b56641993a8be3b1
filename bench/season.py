"""Season soak: a compressed holiday week through the real engine, measuring what stays.

    python -m bench.season                          # 1M scans over 7 days, window 1 day
    python -m bench.season --scans 200000 --days 4  # smaller
    python -m bench.season --out bench/RESULTS.md --label current   # write its section

One process, one shard: the real engine on a real LMDB environment in a temp dir (full
sync unless --no-sync), commands through the group-commit writer (`shard.writer()`) from
concurrent asyncio submitters, a fake clock that runs a week in minutes. Each simulated
day (08:00-20:00 venue-local in 20-minute rounds, National Day week from 2025-10-01) is
the holiday scenario of clients/loadgen/day.py: channels sell orders of 1-4 tickets
(Hold with an idempotency key, Confirm with the channel's order id; some holds released,
some left to expire, some orders refunded, some calls retried with the same key, a small
slot sold out), and gates admit what was sold, each scan with a scan id (uuid4 hex, as
clients/gate.py sends): entry, a share shown again (ALREADY_USED), a share exits and
re-enters; some entries arrive as VerifyBatch calls with a batch id; an offline gate
uploads twice a day (and re-sends part of one upload). Every command carries the audit
tuple the server sets (principal, gRPC method, request digest).

As a running server does (server/app.py _archive_audit), the soak archives the old
audit log: every --archive-every-min simulated minutes (default 60; and once each night)
it runs `shard.archive_audit(keep=--audit-keep, segment_records=10,000)` -- the server's
defaults -- in a thread (loop.run_in_executor) beside the writer, one run at a time; the
archived rows are then pruned by the writer a slice per audited batch. Engines without
Shard.archive_audit keep every audit row in LMDB.

After each day it records scans and ticket sales so far, the LMDB file (bytes in use,
data.mdb's allocated blocks), the audit archive (the allocated blocks of the files in
<shard>/audit), the disk (data.mdb + archive), the B-tree pages per database, the rows
by kind (their key + value bytes), and the process's RSS; derived: bytes per million
scans and per million tickets sold. Rows kept only to answer retries are pruned by the
engine after its retry window when Shard.open takes `retry_window_s` (the soak passes
--window-days then; older engines keep them for ever). At the end it checks the answers
(each as the visitor's story says, retries answered as first, no ticket admitted twice,
no slot over capacity), every archive run, shard.check(replay=True), the audit chain
(shard.check_audit(): archive files and hot rows as one chain, every checkpoint's
signature), and a reopen. A failed check fails the run (exit 1): a fast wrong run is a
failure.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as _dt
import functools
import gc
import inspect
import json
import math
import os
import random
import re
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from bench import TempDir, dumps
from turnstile.clients.loadgen.checks import Checks
from turnstile.engine import Shard, SoldOut, TurnstileError, cmd, demo
from turnstile.engine.model import Direction, EntryRule, GateMode, Reason, to_day

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

START = _dt.date(2025, 10, 1)        # National Day: the first day of Golden Week
VENUE = demo.VENUE
ZONE = "lakeside"
GATE_IN, GATE_IN2, GATE_OUT, GATE_OFF = "lakeside-in-1", "lakeside-in-2", "lakeside-out", "lakeside-kiosk"
PRODUCT = "lakeside-day"
CHANNELS = ("web", "ota", "window")
METHODS = ("alipay", "wechat", "cash", "card")
ROUND_S = 20 * 60                     # a round of a day: 20 simulated minutes
FIRST_HOUR, LAST_HOUR = 8, 20
ROUNDS = (LAST_HOUR - FIRST_HOUR) * 3600 // ROUND_S

# the visitor's story (clients/loadgen/day.py's holiday defaults) and the sales mix
MIX = {
    "repeat": 0.05,        # shown again at another entry gate at once: ALREADY_USED
    "exit": 0.30,          # leaves through the exit gate ...
    "reentry": 0.50,       # ... and of those, comes back: OK_REENTRY
    "retry": 0.01,         # a call resent with the same key / scan id / order id
    "release": 0.03,       # a hold released instead of paid
    "abandon": 0.01,       # a hold left to expire
    "refund": 0.02,        # an order refunded before the visit (the visitor comes anyway: VOIDED)
    "batch": 0.10,         # entries that arrive through a concentrator's VerifyBatch (50 a call)
    "flash": 0.02,         # orders on the day's small slot, asked 1.5x its capacity
}
BATCH_CODES = 50
UPLOADS_PER_DAY = 2
UPLOAD_SCANS = 200
WRONG_DAY = 50                          # yesterday's tickets shown today, per day: refused
MEAN_QTY = 2.5
ARCHIVE_EVERY_MIN = 60                  # simulated minutes between audit archive runs
AUDIT_KEEP = 10_000                     # Shard.archive_audit's defaults, as the server calls it
SEGMENT_RECORDS = 10_000


def scans_per_ticket() -> float:
    m = MIX
    visit = 1 + m["repeat"] + m["exit"] * (1 + m["reentry"])
    return (1 - m["refund"]) * (m["batch"] + (1 - m["batch"]) * visit * (1 + m["retry"])) + m["refund"]


def orders_per_round(scans: int, days: int) -> int:
    return max(1, round(scans / days / scans_per_ticket() / MEAN_QTY / ROUNDS))


def flash_capacity(orders: int) -> int:
    """The small slot's capacity: the day's flash orders ask 1.5x it."""
    return max(4, int(orders * ROUNDS * MIX["flash"] * MEAN_QTY / 1.5))


class Clock:
    """The shard's clock: set by the soak, a week in minutes."""

    def __init__(self, t: float):
        self.t = t

    def __call__(self) -> float:
        return self.t


# -- measuring ----------------------------------------------------------------------------
def proc_status() -> dict[str, int]:
    """RSS of this process (KiB fields of /proc/self/status, as bytes)."""
    out = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[k] = int(v.split()[0]) * 1024
    except OSError:
        pass
    return out


def row_kind(key: bytes, value: memoryview) -> str:
    """What a row is kept for: retry rows (by the key they answer), audit rows (records
    of gate calls or others; the chain's checkpoints and head), orders and the rest, by
    key prefix."""
    if key.startswith(b"retry/"):           # retry/<bucket>/<key>
        key = key[18:]
    for p, name in ((b"offline/", "scan ids, offline nonces"), (b"scanbatch/", "batch ids"),
                    (b"idem/", "idempotency keys"), (b"hold/", "ended holds")):
        if key.startswith(p):
            return name
    if key.startswith(b"audit/"):
        return "audit: gate calls" if b"GateService" in bytes(value) else "audit: other calls"
    if key.startswith(b"audit-cp/") or key == b"audit-head":
        return AUDIT_CP
    if key.startswith(b"order/"):
        return "orders"
    return "other: " + bytes(key.split(b"/", 1)[0][:16]).decode(errors="replace")


AUDIT_CP = "audit: checkpoints, head"
AUDIT_KINDS = ("audit: gate calls", "audit: other calls", AUDIT_CP)
RETRY_KINDS = ("scan ids, offline nonces", "batch ids", "idempotency keys", "ended holds")
SCAN_KINDS = ("scan ids, offline nonces", "batch ids", "audit: gate calls")


def archive_size(shard: Shard) -> tuple[int, int]:
    """(allocated bytes, files) of the shard's audit archive (<shard>/audit/*)."""
    d = getattr(shard, "audit_dir", None) or os.path.join(shard.storage.path, "audit")
    n = b = 0
    try:
        with os.scandir(d) as it:
            for e in it:
                if e.is_file(follow_symlinks=False):
                    n += 1
                    b += e.stat(follow_symlinks=False).st_blocks * 512
    except FileNotFoundError:
        pass
    return b, n


def measure(shard: Shard) -> dict[str, Any]:
    """The LMDB file, audit archive and rows of a shard, and this process's memory, now."""
    st = shard.storage
    env = st.env
    psize = env.stat()["psize"]
    kinds: dict[str, list[int]] = {}
    pages = {}
    with env.begin(buffers=True) as txn:
        for name, db in (("rows", st.rows), ("journal", st.journal), ("snapshot", st.snapshot),
                         ("meta", st.meta)):
            s = txn.stat(db)
            pages[name] = (s["branch_pages"] + s["leaf_pages"] + s["overflow_pages"]) * psize
        for k, v in txn.cursor(db=st.rows):
            kind = row_kind(bytes(k[:40]), v)
            c = kinds.get(kind)
            if c is None:
                c = kinds[kind] = [0, 0]
            c[0] += 1
            c[1] += len(k) + len(v)
    f = os.stat(os.path.join(st.path, "data.mdb"))
    used = st.used_bytes()
    arch, arch_files = archive_size(shard)
    return {"used_bytes": used, "file_bytes": f.st_blocks * 512, "file_size": f.st_size,
            "archive_bytes": arch, "archive_files": arch_files,
            "disk_bytes": f.st_blocks * 512 + arch,
            "db_bytes": pages, "free_bytes": used - sum(pages.values()) - 2 * psize,
            "rows": st.row_count(), "row_kinds": {k: {"rows": c[0], "bytes": c[1]}
                                                   for k, c in sorted(kinds.items())},
            "journal_batches": st.journal_count(), **proc_status()}


# -- the soak -----------------------------------------------------------------------------
class Soak:
    def __init__(self, shard: Shard, clock: Clock, *, scans: int, days: int, submitters: int,
                 seed: int, verbose: bool = True, archive_every_s: int = 0,
                 audit_keep: int = AUDIT_KEEP, segment_records: int = SEGMENT_RECORDS):
        self.shard, self.clock, self.days, self.submitters = shard, clock, days, submitters
        # the audit archive, as server/app.py runs it: one run at a time, in a thread
        self.archive_every_s, self.audit_keep = archive_every_s, audit_keep
        self.segment_records = segment_records
        self.archive_due: float | None = None
        self.archive_job: asyncio.Future | None = None
        self.archive: Counter = Counter()    # runs, segments, records, skipped, failures
        self.archive_s = 0.0                 # wall seconds in archive runs
        self.archive_errors: list[str] = []
        self.rng = random.Random(seed)
        self.verbose = verbose
        self.orders_per_round = orders_per_round(scans, days)
        self.checks = Checks()
        self.n: Counter = Counter()         # what was done, cumulative
        self.seen: Counter = Counter()       # answers checked, by kind
        self.wrong: Counter = Counter()      # answers other than the story's, by kind
        self.errors: Counter = Counter()
        self.flash: dict[str, dict] = {}     # slot -> {"capacity", "sold"...}
        self.sold_by_slot: Counter = Counter()
        self.admitted_total = 0              # distinct tickets admitted (OK) over the run
        self.days_out: list[dict] = []
        self.w = None

    # -- commands with the audit tuple the server sets (server/services.py _audit_info)
    def audited(self, c, principal: str, method: str, *parts: Any):
        c.audit = (principal, f"/turnstile.v1.{method}",
                   self.shard.request_digest(repr(parts).encode()))
        return c

    async def submit(self, c):
        return await self.w.submit(c)

    def expect(self, kind: str, ok: bool, got: Any = None) -> None:
        self.seen[kind] += 1
        if not ok:
            self.wrong[kind] += 1
            if self.wrong[kind] <= 3:
                self.errors[f"{kind}: {got!r}"[:200]] += 1

    # -- sales --------------------------------------------------------------------------
    async def order(self, day: _dt.date, k: int, visits: list, refunded: list) -> None:
        rng = self.rng
        ch = CHANNELS[k % len(CHANNELS)]
        who = f"sales-{ch}"
        flash = rng.random() < MIX["flash"]
        slot = f"{ZONE}-{day:%Y%m%d}-{'flash' if flash else 'day'}"
        qty = rng.randint(1, 4)
        key = f"{ch}-{day:%m%d}-{k}"
        items = [{"product": PRODUCT, "slots": [slot], "qty": qty, "group": 1}]
        if flash:
            self.flash[slot]["asked"] += qty

        def hold():
            return self.audited(cmd.hold(ch, VENUE, items, idempotency_key=key), who,
                                "SalesService/Hold", key, items)
        try:
            h = await self.submit(hold())
        except SoldOut:
            self.n["holds sold out"] += 1
            if not flash:
                self.expect("hold refused SOLD_OUT only on the small slot", False, slot)
            else:
                self.flash[slot]["sold_out"] += 1
                st = self.shard.state
                c = st.slots.slot(st.slot_idx[(VENUE, slot)])
                free = c["capacity"] - c["sold"] - c["held"]
                # stock a release freed since the refusal may be back: a margin of one order
                self.expect("SOLD_OUT only when the small slot had less than two orders' qty left",
                            free < qty + 4, (slot, free, qty))
            return
        except TurnstileError as e:
            self.expect("hold granted", False, e)
            return
        self.n["holds"] += 1
        if rng.random() < MIX["retry"]:
            again = await self.submit(hold())
            self.expect("retried Hold: the first hold back", again.hold_id == h.hold_id,
                        (again.hold_id, h.hold_id))
        fate = rng.random()
        if fate < MIX["release"]:
            r = await self.submit(self.audited(
                cmd.release(h.hold_id, ch, idempotency_key=f"rel-{key}"), who,
                "SalesService/Release", h.hold_id))
            self.expect("hold released", r.released, r)
            return
        if fate < MIX["release"] + MIX["abandon"]:
            self.n["holds left to expire"] += 1
            return

        def confirm():
            return self.audited(cmd.confirm(h.hold_id, key, ch, method=METHODS[k % 4],
                                            amount_fen=h.amount_fen, reference=f"pay-{key}"),
                                who, "SalesService/Confirm", h.hold_id, key)
        c = await self.submit(confirm())
        tickets = [(t.ticket_id, t.code) for t in c.tickets]
        self.expect("confirm issued qty tickets", len(tickets) == qty, (len(tickets), qty))
        self.n["orders"] += 1
        self.n["tickets sold"] += len(tickets)
        self.sold_by_slot[slot] += len(tickets)
        if rng.random() < MIX["retry"]:
            again = await self.submit(confirm())
            self.expect("retried Confirm: the same tickets and codes",
                        [(t.ticket_id, t.code) for t in again.tickets] == tickets)
        if rng.random() < MIX["refund"]:
            r = await self.submit(self.audited(cmd.refund(key, "r1", channel=ch), who,
                                               "SalesService/Refund", key))
            self.expect("refund of the whole unused order", sorted(r.tickets) == sorted(t for t, _ in tickets),
                        r)
            self.n["tickets refunded"] += len(tickets)
            self.sold_by_slot[slot] -= len(tickets)
            refunded.extend(tickets)
        else:
            visits.extend(tickets)

    # -- gates --------------------------------------------------------------------------
    async def scan(self, kind: str, want: Reason, tid: int, code: str, gate: str, d: Direction,
                   at: int) -> bool:
        sid = uuid.uuid4().hex

        def c():
            return self.audited(cmd.verify(code, gate, d, at=at, scan_id=sid), f"gate-{gate}",
                                "GateService/Verify", code, gate, sid)
        r = await self.submit(c())
        self.n["scans"] += 1
        self.expect(f"{kind}: {want.name}", r.reason == want and r.ticket == tid,
                    (r.reason.name, r.ticket, tid))
        if self.rng.random() < MIX["retry"]:
            again = await self.submit(c())
            self.n["scans"] += 1
            self.expect("retried scan (same scan id): the first answer",
                        (again.reason, again.ticket, again.persons) == (r.reason, r.ticket, r.persons),
                        (again, r))
        return r.reason == want

    async def visit(self, tid: int, code: str, at: int, admitted: Counter) -> None:
        rng = self.rng
        if not await self.scan("entry", Reason.OK, tid, code, GATE_IN, Direction.IN, at):
            return
        admitted[tid] += 1
        if rng.random() < MIX["repeat"]:
            await self.scan("shown again", Reason.ALREADY_USED, tid, code, GATE_IN2, Direction.IN, at + 30)
        if rng.random() < MIX["exit"]:
            if await self.scan("exit", Reason.OK, tid, code, GATE_OUT, Direction.OUT, at + 60) \
                    and rng.random() < MIX["reentry"]:
                await self.scan("re-entry", Reason.OK_REENTRY, tid, code, GATE_IN, Direction.IN, at + 120)

    async def voided(self, tid: int, code: str, at: int) -> None:
        await self.scan("refunded ticket", Reason.VOIDED, tid, code, GATE_IN, Direction.IN, at)

    async def batch(self, tickets: list, at: int, admitted: Counter) -> None:
        bid = uuid.uuid4().hex
        codes = [c for _, c in tickets]
        r = await self.submit(self.audited(cmd.verify_batch(codes, GATE_IN2, Direction.IN, at=at,
                                                            batch_id=bid),
                                           "gate-concentrator", "GateService/VerifyBatch", bid))
        self.n["scans"] += len(codes)
        self.n["batches"] += 1
        ok = r.reasons == bytes(len(codes)) and list(r.tickets) == [t for t, _ in tickets]
        self.expect("VerifyBatch: every fresh ticket OK", ok, r.reasons[:8])
        if ok:
            for t, _ in tickets:
                admitted[t] += 1

    async def upload(self, tickets: list, at: int, admitted: Counter, resend: int) -> None:
        scans = [{"nonce": uuid.uuid4().hex, "seq": i, "code": code, "direction": 1, "at": at + i,
                  "persons": 0, "admitted": 1, "reason": 0} for i, (_, code) in enumerate(tickets)]

        def c(s):
            return self.audited(cmd.offline_scans(GATE_OFF, s, venue=VENUE), f"gate-{GATE_OFF}",
                                "GateService/UploadScans", [x["nonce"] for x in s])
        res = await self.submit(c(scans))
        self.n["scans"] += len(scans)
        self.n["offline uploads"] += 1
        ok = [(r.status, r.reason, r.ticket_id) for r in res] == \
             [("APPLIED", 0, t) for t, _ in tickets]
        self.expect("offline upload: every fresh ticket APPLIED, OK", ok,
                    Counter(r.status for r in res))
        if ok:
            for t, _ in tickets:
                admitted[t] += 1
        if resend:
            again = await self.submit(c(scans[:resend]))
            self.n["scans"] += resend
            self.expect("offline re-send: DUPLICATE with the first answer",
                        all(r.status == "DUPLICATE" and r.ticket_id == t
                            for r, (t, _) in zip(again, tickets)), Counter(r.status for r in again))

    # -- the audit archive ----------------------------------------------------------------
    def maybe_archive(self) -> None:
        """Start an archive run in a thread when one is due at the shard's clock (every
        archive_every_s simulated seconds), unless the last one still runs (the server
        awaits each run before it sleeps again: never two at once)."""
        if not self.archive_every_s:
            return
        now = self.clock.t
        if self.archive_due is None:
            self.archive_due = now + self.archive_every_s
        if now < self.archive_due:
            return
        while self.archive_due <= now:
            self.archive_due += self.archive_every_s
        if self.archive_job is not None and not self.archive_job.done():
            self.archive["skipped: the last run still running"] += 1
            return
        self.archive_job = asyncio.ensure_future(self._archive())

    async def _archive(self) -> None:
        loop = asyncio.get_running_loop()
        t = time.perf_counter()
        try:
            written = await loop.run_in_executor(None, functools.partial(
                self.shard.archive_audit, keep=self.audit_keep, segment_records=self.segment_records))
        except Exception as e:          # the server logs it and goes on; the soak fails a check
            self.archive["failures"] += 1
            self.archive_errors.append(repr(e)[:200])
        else:
            self.archive["runs"] += 1
            self.archive["segments"] += len(written)
            self.archive["records"] += sum(g.last - g.first + 1 for g in written)
        finally:
            self.archive_s += time.perf_counter() - t

    async def archive_done(self) -> None:
        if self.archive_job is not None:
            await self.archive_job

    # -- running --------------------------------------------------------------------------
    async def run_jobs(self, jobs: list) -> None:
        it = iter(jobs)

        async def worker():
            for job in it:
                await job

        await asyncio.gather(*(worker() for _ in range(min(self.submitters, len(jobs)))))

    async def day(self, d: int, yesterday: list) -> list:
        day = START + _dt.timedelta(days=d)
        rng = self.rng
        admitted: Counter = Counter()
        pending: list = []            # sold in the previous round: visited in this one
        pending_void: list = []
        k = 0
        uploads_at = {ROUNDS // 3, 2 * ROUNDS // 3}
        t_day = time.perf_counter()
        for rnd in range(ROUNDS + 1):
            self.clock.t = demo.local_time(day, FIRST_HOUR) + rnd * ROUND_S
            now = int(self.clock.t)
            self.maybe_archive()
            jobs, visits, refunded = [], [], []
            if rnd < ROUNDS:
                for _ in range(self.orders_per_round):
                    jobs.append(self.order(day, k, visits, refunded))
                    k += 1
            # this round's visitors: what was sold the round before
            rng.shuffle(pending)
            n_batch = int(len(pending) * MIX["batch"]) // BATCH_CODES * BATCH_CODES
            n_up = min(UPLOAD_SCANS, len(pending) - n_batch) if rnd in uploads_at else 0
            for lo in range(0, n_batch, BATCH_CODES):
                jobs.append(self.batch(pending[lo:lo + BATCH_CODES], now, admitted))
            if n_up:
                jobs.append(self.upload(pending[n_batch:n_batch + n_up], now, admitted,
                                        resend=20 if rnd == min(uploads_at) else 0))
            for tid, code in pending[n_batch + n_up:]:
                jobs.append(self.visit(tid, code, now, admitted))
            for tid, code in pending_void:
                jobs.append(self.voided(tid, code, now))
            if rnd == 0:
                for tid, code in yesterday:       # a day ticket of yesterday: refused today
                    jobs.append(self.stale(tid, code, now))
            rng.shuffle(jobs)
            await self.run_jobs(jobs)
            pending, pending_void = visits, refunded
        twice = sum(1 for v in admitted.values() if v > 1)
        self.expect("no ticket admitted twice (OK) in a day", not twice, twice)
        self.admitted_total += len(admitted)
        # the night: holds left open expire at the shard's clock, the writer prunes, the
        # night's archive run (due at the clock) is awaited before measuring
        self.clock.t = demo.local_time(day, 23)
        await self.submit(cmd.expire())
        await self.archive_done()
        self.maybe_archive()
        await self.archive_done()
        await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - t_day
        gc.collect()
        m = measure(self.shard)
        m.update(day=d + 1, date=day.isoformat(), seconds=elapsed, scans=self.n["scans"],
                 tickets_sold=self.n["tickets sold"], orders=self.n["orders"],
                 pruned=getattr(self.shard, "pruned", None),
                 audit_seq=getattr(self.shard, "audit_seq", None), archive=dict(self.archive),
                 archive_s=self.archive_s)
        self.days_out.append(m)
        if self.verbose:
            print(day_line(m, self.days_out[-2] if len(self.days_out) > 1 else None), flush=True)
        sold = list(admitted)
        return [(t, c) for t, c in self._codes_of(rng.sample(sold, min(WRONG_DAY, len(sold))))]

    def _codes_of(self, tids: list[int]) -> list[tuple[int, str]]:
        st = self.shard.state
        return [(t, st.render(t, signed=True)) for t in tids]

    async def stale(self, tid: int, code: str, at: int) -> None:
        r = await self.submit(self.audited(cmd.verify(code, GATE_IN, Direction.IN, at=at,
                                                      scan_id=uuid.uuid4().hex),
                                           f"gate-{GATE_IN}", "GateService/Verify", code))
        self.n["scans"] += 1
        self.expect("yesterday's day ticket refused today", not r.reason.admitted and r.ticket == tid,
                    (r.reason.name, r.ticket, tid))

    async def main(self) -> None:
        async with self.shard.writer() as w:
            self.w = w
            yesterday: list = []
            for d in range(self.days):
                yesterday = await self.day(d, yesterday)
            await self.archive_done()
            self.writer_stats = w.stats()


def catalog(days: int, flash_cap: int) -> list:
    """The demo venue (one day of its slots) and the soak's zone: entry, exit and an
    offline kiosk gate, a day ticket with re-entry, per day a large whole-day slot and a
    small one that sells out."""
    out = demo.commands(START, days=1)
    out += [cmd.zone(VENUE, ZONE, "Lakeside promenade"),
            cmd.gate(ZONE, GATE_IN, GateMode.IN, venue=VENUE),
            cmd.gate(ZONE, GATE_IN2, GateMode.IN, venue=VENUE),
            cmd.gate(ZONE, GATE_OUT, GateMode.OUT, venue=VENUE),
            cmd.gate(ZONE, GATE_OFF, GateMode.IN, venue=VENUE),
            cmd.product(VENUE, PRODUCT, [ZONE], name="Lakeside day ticket", price_fen=6000,
                        rule=EntryRule(reentry=True), channel_prices={"ota": 5600})]
    slots = []
    for d in range(days + 1):
        day = START + _dt.timedelta(days=d)
        base = demo.local_time(day, 0)
        slots.append({"id": f"{ZONE}-{day:%Y%m%d}-day", "zone": ZONE, "day": to_day(day),
                      "start": base, "end": base + 86400, "capacity": 10 ** 8})
        slots.append({"id": f"{ZONE}-{day:%Y%m%d}-flash", "zone": ZONE, "day": to_day(day),
                      "start": base, "end": base + 86400, "capacity": flash_cap})
    out.append(cmd.slots(slots, venue=VENUE))
    return out


def has_retry_window() -> bool:
    return "retry_window_s" in inspect.signature(Shard.open).parameters


def has_audit_archive() -> bool:
    return hasattr(Shard, "archive_audit") and hasattr(Shard, "check_audit")


def soak(*, scans: int = 1_000_000, days: int = 7, window_days: float = 1.0, durable: bool = True,
         submitters: int = 64, snapshot_every: int = 1_000_000, seed: int = 12,
         archive_every_min: float = ARCHIVE_EVERY_MIN, audit_keep: int = AUDIT_KEEP,
         segment_records: int = SEGMENT_RECORDS, audit_every: int | None = None,
         verbose: bool = True) -> dict:
    """Run the soak; returns its result (per day and checks). See the module docstring.
    `archive_every_min` 0: the audit log is never archived. `segment_records` (archive
    files of at least that many records) and `audit_every` (records between checkpoints
    after the first, the shard's audit_every) let a small run archive."""
    t0 = time.perf_counter()
    window_s = int(window_days * 86400)
    kw: dict[str, Any] = {}
    pruning = has_retry_window()
    archiving = has_audit_archive() and archive_every_min > 0
    archive_every_s = int(archive_every_min * 60) if archiving else 0
    if pruning:
        kw["retry_window_s"] = window_s
    clock = Clock(demo.local_time(START, 7))
    with TempDir(prefix="turnstile-season-") as path:
        shard = Shard.open(path, durable=durable, clock=clock, snapshot_every=snapshot_every, **kw)
        if audit_every:
            shard.audit_every = audit_every
        flash_cap = flash_capacity(orders_per_round(scans, days))
        bad = [r for r in shard.run_many(catalog(days, flash_cap)) if isinstance(r, TurnstileError)]
        if bad:
            raise RuntimeError(f"the soak's catalog was refused: {bad[:3]}")
        s = Soak(shard, clock, scans=scans, days=days, submitters=submitters, seed=seed,
                 verbose=verbose, archive_every_s=archive_every_s, audit_keep=audit_keep,
                 segment_records=segment_records)
        for d in range(days):
            s.flash[f"{ZONE}-{START + _dt.timedelta(days=d):%Y%m%d}-flash"] = {
                "capacity": flash_cap, "sold_out": 0, "asked": 0}
        base = measure(shard)
        if verbose:
            print(f"season soak: {scans:,} scans over {days} days, ~{s.orders_per_round} orders per "
                  f"20-minute round, {submitters} submitters, durable={durable}, "
                  + (f"retry window {window_days:g} day(s)" if pruning else
                     "no retry_window_s in Shard.open: retry rows are never pruned") + ", "
                  + (f"audit archived every {archive_every_min:g} simulated min (keep {audit_keep:,})"
                     if archiving else "audit never archived"), flush=True)
            print(HEADER, flush=True)
        asyncio.run(s.main())
        run_s = time.perf_counter() - t0
        checks = s.checks
        checks("every answer as the visitor's / channel's story says",
               not s.wrong, {**s.wrong, "first": dict(s.errors)})
        st = shard.state
        checks("tickets used = tickets admitted (the engine agrees with the gates' answers)",
               len(st.tickets.used) == s.admitted_total, (len(st.tickets.used), s.admitted_total))
        checks("tickets issued = tickets sold by the run", st.tickets.n == s.n["tickets sold"],
               (st.tickets.n, s.n["tickets sold"]))
        over, wrong_sold = [], []
        for key, idx in st.slot_idx.items():
            c = st.slots.slot(idx)
            if c["sold"] + c["held"] > c["capacity"]:
                over.append((key, c))
            if key[1].startswith(ZONE) and c["sold"] != s.sold_by_slot[key[1]]:
                wrong_sold.append((key[1], c["sold"], s.sold_by_slot[key[1]]))
        checks("no oversell: sold + held <= capacity on every slot", not over, over[:3])
        checks("sold on every slot = tickets confirmed - refunded by the run", not wrong_sold,
               wrong_sold[:3])
        checks("no hold left open after the last night (expired at the shard's clock)",
               not st.holds, len(st.holds))
        checks("SOLD_OUT answered on every small slot asked more than its capacity",
               all(f["sold_out"] for f in s.flash.values() if f["asked"] > f["capacity"]), s.flash)
        checks("shard.check(replay=True) == []", (v := shard.check(replay=True)) == [], v)
        audit_end: dict[str, Any] = {}
        if archiving:
            checks("every audit archive run written and verified (Shard.archive_audit)",
                   not s.archive["failures"], s.archive_errors[:3])
            rep = shard.check_audit()
            hot = sum(last_kind_rows(s.days_out, k) for k in ("audit: gate calls", "audit: other calls"))
            audit_end = {"ok": rep.ok, "summary": rep.summary(), "records": rep.checked,
                         "archived": rep.archived, "segments": rep.segments,
                         "head_seq": rep.head_seq, "last_checkpoint": rep.last_checkpoint}
            checks("the audit chain verifies: archive files and hot rows as one chain, "
                   "every checkpoint signed (shard.check_audit())", rep.ok, rep.summary())
            # old records leave LMDB: the archive holds all but the newest, at most keep +
            # one segment + the checkpoint interval + a day's records (archived after it)
            # behind; hot rows are what the archive does not hold (or holds, not yet pruned)
            day_records = max((b.get("audit_seq") or 0) - (a.get("audit_seq") or 0)
                              for a, b in zip([{"audit_seq": 0}] + s.days_out, s.days_out))
            bound = audit_keep + segment_records + 2 * getattr(shard, "audit_every", 1000) + day_records
            checks("old audit records archived, their rows pruned from LMDB (hot records at "
                   "the end <= keep + a segment + two checkpoint intervals + a day's records)",
                   rep.head_seq - rep.archived <= bound and hot <= bound,
                   (rep.head_seq, rep.archived, hot, bound))
        used = len(st.tickets.used)
        shard.close(snapshot=False)
        again = Shard.open(path, durable=durable, clock=clock, **kw)
        checks("reopen: the same tickets used, check() == []",
               len(again.state.tickets.used) == used and again.check() == [],
               len(again.state.tickets.used))
        if archiving:
            rep = again.check_audit()
            checks("reopen: the audit chain verifies (check_audit())", rep.ok, rep.summary())
        again.close(snapshot=False)
    return {"scenario": "season", "scans_asked": scans, "days": days, "durable": durable,
            "pruning": pruning, "retry_window_s": window_s if pruning else None,
            "archiving": archiving, "archive_every_s": archive_every_s or None,
            "audit_keep": audit_keep if archiving else None,
            "segment_records": segment_records if archiving else None,
            "archive": dict(s.archive), "archive_s": s.archive_s, "audit": audit_end,
            "submitters": submitters, "snapshot_every": snapshot_every, "seed": seed,
            "orders_per_round": s.orders_per_round, "rounds_per_day": ROUNDS,
            "flash_capacity": flash_cap, "mix": MIX, "counts": dict(s.n), "answers_checked": dict(s.seen),
            "writer": s.writer_stats, "start": base, "per_day": s.days_out, "run_s": run_s,
            "checks": checks.as_dicts(), "ok": checks.ok}


# -- output -------------------------------------------------------------------------------
HEADER = (f"{'day':>3} {'scans':>10} {'sold':>9} {'rows':>10} {'retry rows':>10} {'audit rows':>10} "
          f"{'used MB':>8} {'file MB':>8} {'arch MB':>8} {'RSS MB':>7} {'anon MB':>7} "
          f"{'disk/M scans':>12} {'disk/M sold':>12} {'Δdisk MB':>8} {'s':>5}")
MB = 2 ** 20


def retry_rows(m: dict) -> int:
    return sum(m["row_kinds"].get(k, {}).get("rows", 0) for k in RETRY_KINDS)


def audit_rows(m: dict) -> int:
    """Audit records in LMDB (not the checkpoints and head)."""
    return sum(m["row_kinds"].get(k, {}).get("rows", 0) for k in ("audit: gate calls", "audit: other calls"))


def last_kind_rows(days: list, kind: str) -> int:
    return days[-1]["row_kinds"].get(kind, {}).get("rows", 0) if days else 0


def disk(m: dict) -> int:
    """data.mdb + the audit archive (a run of an engine without an archive: data.mdb)."""
    return m.get("disk_bytes", m["file_bytes"])


def kind_bytes(m: dict, kinds) -> int:
    return sum(m["row_kinds"].get(k, {}).get("bytes", 0) for k in kinds)


def per_m(b: float, n: float) -> float:
    return b / n * 1e6 if n else math.nan


def day_line(m: dict, prev: dict | None) -> str:
    d_disk = disk(m) - (disk(prev) if prev else 0)
    return (f"{m['day']:>3} {m['scans']:>10,} {m['tickets_sold']:>9,} {m['rows']:>10,} "
            f"{retry_rows(m):>10,} {audit_rows(m):>10,} {m['used_bytes'] / MB:>8.1f} "
            f"{m['file_bytes'] / MB:>8.1f} {m.get('archive_bytes', 0) / MB:>8.1f} "
            f"{m.get('VmRSS', 0) / MB:>7.0f} {m.get('RssAnon', 0) / MB:>7.0f} "
            f"{per_m(disk(m), m['scans']) / MB:>10.1f}MB {per_m(disk(m), m['tickets_sold']) / MB:>10.1f}MB "
            f"{(d_disk / MB if prev else math.nan):>8.1f} {m['seconds']:>5.0f}")


def summary(r: dict) -> str:
    lines = [f"== season soak: {r['counts'].get('scans', 0):,} scans, {r['counts'].get('tickets sold', 0):,} "
             f"tickets sold in {r['counts'].get('orders', 0):,} orders over {r['days']} days in "
             f"{r['run_s']:.0f} s"]
    lines.append("  counts: " + ", ".join(f"{k} {v:,}" for k, v in sorted(r["counts"].items())))
    lines.append("  answers checked: " + ", ".join(f"{k} {v:,}"
                                                   for k, v in sorted(r["answers_checked"].items())))
    last = r["per_day"][-1]
    lines.append("  rows by kind at the end: " + ", ".join(
        f"{k} {v['rows']:,} ({v['bytes'] / MB:.1f} MB)" for k, v in last["row_kinds"].items()))
    if r.get("archiving"):
        lines.append(f"  audit archive: {archive_text(r)}")
        if r.get("audit"):
            lines.append(f"  {r['audit']['summary']}")
    for c in r["checks"]:
        lines.append(f"  [{'ok' if c['passed'] else 'FAIL'}] {c['check']}"
                     + (f" ({c['detail']})" if c["detail"] and not c["passed"] else ""))
    return "\n".join(lines)


# -- RESULTS.md ----------------------------------------------------------------------------
BEGIN = "<!-- season-soak: begin (written by bench/season.py --out; bench/run.py keeps it) -->"
END = "<!-- season-soak: end -->"
RUN_RE = re.compile(r"<!-- season-run (?P<label>[^>]*?) -->\n(?P<body>.*?)<!-- /season-run (?P=label) -->\n",
                    re.S)
DATA_RE = re.compile(r"<!-- season-data (?P<json>\{.*?\}) -->", re.S)


def _sh(*c: str) -> str:
    try:
        return subprocess.run(c, cwd=ROOT, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def engine_source() -> str:
    """Which engine ran: its commit, and whether the tree had changes (or where it came
    from, when it is not this checkout's)."""
    import turnstile.engine as eng
    where = Path(eng.__file__).resolve().parent
    if where != (ROOT / "engine").resolve():
        return f"engine from {where} (not this checkout)"
    commit = _sh("git", "rev-parse", "--short", "HEAD") or "unknown"
    dirty = bool(_sh("git", "status", "--porcelain", "--untracked-files=no", "--", "engine"))
    return f"commit {commit}" + (" with uncommitted engine changes" if dirty else "")


def archive_text(r: dict) -> str:
    """What the run's audit archive did, in a line."""
    if not r.get("archiving"):
        return "none (this engine has no Shard.archive_audit, or --archive-every-min 0)"
    a, last = r.get("archive", {}), r["per_day"][-1]
    skipped = a.get("skipped: the last run still running", 0)
    return (f"every {r['archive_every_s'] / 60:g} simulated min and each night, keep "
            f"{r['audit_keep']:,}, segments of {r['segment_records']:,}: {a.get('runs', 0):,} runs"
            + (f" ({skipped:,} not started while the last still ran)" if skipped else "")
            + f", {a.get('failures', 0)} failed, {a.get('segments', 0):,} segments of "
            f"{a.get('records', 0):,} records written in {r.get('archive_s', 0):,.1f} s; at the end "
            f"{last.get('archive_files', 0):,} files, {last.get('archive_bytes', 0) / MB:,.1f} MB")


def run_block(label: str, r: dict) -> str:
    """One run's part of the section: what ran, the per-day table, rows by kind."""
    L = []
    w = L.append
    c = r["counts"]
    source = r["engine"]
    w(f"### {label}")
    w("")
    w(f"`{r['command'].strip()}` — {source}, {r['when']}, {r['run_s'] / 60:.1f} min. "
      f"{'LMDB full sync (fsync per batch)' if r['durable'] else 'durable=False (no fsync)'}, "
      f"{r['submitters']} submitters, snapshot every {r['snapshot_every']:,} commands; "
      + (f"**retry window {r['retry_window_s'] / 86400:g} simulated day(s)** (Shard.open retry_window_s)."
         if r["pruning"] else "**no retry window** (this engine's Shard.open has no retry_window_s: "
         "retry rows are never pruned).")
      + (f" **Audit archive** (Shard.archive_audit in a thread beside the writer): {archive_text(r)}."
         if r.get("archiving") else ""))
    w("")
    audit_end = r.get("audit") or {}
    w(f"Done: {c.get('scans', 0):,} scans ({c.get('batches', 0):,} VerifyBatch calls of {BATCH_CODES}, "
      f"{c.get('offline uploads', 0)} offline uploads), {c.get('tickets sold', 0):,} tickets sold in "
      f"{c.get('orders', 0):,} orders ({c.get('holds', 0):,} holds, {c.get('holds sold out', 0):,} "
      f"refused SOLD_OUT, {c.get('tickets refunded', 0):,} tickets refunded, "
      f"{c.get('holds left to expire', 0):,} holds left to expire). "
      + (f"At the end, {audit_end['summary']}. " if audit_end else "")
      + "Checks: "
      + ("all passed" if r["ok"] else "**FAILED**: " + "; ".join(
          x["check"] for x in r["checks"] if not x["passed"])) + ".")
    w("")
    w("| day | scans | tickets sold | rows | retry rows | audit records in LMDB (of gate calls) | "
      "LMDB in use | data.mdb | audit archive | disk | RSS (anon) | disk per M scans | disk per M sold | "
      "Δ data.mdb this day | Δ disk this day | Δ disk per M scans of the day |")
    w("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    prev = r["start"] | {"scans": 0, "tickets_sold": 0}
    for m in r["per_day"]:
        d_file = m["file_bytes"] - prev["file_bytes"]
        d_disk = disk(m) - disk(prev)
        d_scans = m["scans"] - prev["scans"]
        w(f"| {m['day']} | {m['scans']:,} | {m['tickets_sold']:,} | {m['rows']:,} | {retry_rows(m):,} | "
          f"{audit_rows(m):,} ({m['row_kinds'].get('audit: gate calls', {}).get('rows', 0):,}) | "
          f"{m['used_bytes'] / MB:,.0f} MB | {m['file_bytes'] / MB:,.0f} MB | "
          f"{m.get('archive_bytes', 0) / MB:,.1f} MB | {disk(m) / MB:,.0f} MB | "
          f"{m.get('VmRSS', 0) / MB:,.0f} ({m.get('RssAnon', 0) / MB:,.0f}) MB | "
          f"{per_m(disk(m), m['scans']) / MB:,.0f} MB | "
          f"{per_m(disk(m), m['tickets_sold']) / MB:,.0f} MB | {d_file / MB:+,.0f} MB | "
          f"{d_disk / MB:+,.0f} MB | {per_m(d_disk, d_scans) / MB:+,.0f} MB |")
        prev = m
    last = r["per_day"][-1]
    w("")
    w("Rows at the end, by what they are kept for (key + value bytes; LMDB's pages add their "
      "overhead): " + ", ".join(f"{k} {v['rows']:,} ({v['bytes'] / MB:,.1f} MB)"
                                 for k, v in last["row_kinds"].items())
      + ". B-tree pages: " + ", ".join(f"{k} {v / MB:,.1f} MB" for k, v in last["db_bytes"].items())
      + f", free {last['free_bytes'] / MB:,.1f} MB.")
    w("")
    data = {"label": label, "commit": source, "pruning": r["pruning"],
            "window_s": r["retry_window_s"], "archiving": bool(r.get("archiving")),
            "archive_every_s": r.get("archive_every_s"), "audit_keep": r.get("audit_keep"),
            "summary": derived(r)}
    w(f"<!-- season-data {json.dumps(data, sort_keys=True)} -->")
    return f"<!-- season-run {label} -->\n" + "\n".join(L) + f"\n<!-- /season-run {label} -->\n"


SALE_KINDS = ("idempotency keys", "ended holds", "audit: other calls", AUDIT_CP, "orders")


def derived(r: dict) -> dict:
    """The numbers the before/after table compares: at the end, and *late* -- from the end
    of the middle day to the end of the last (the steady state once pruning runs).
    *file*: data.mdb; *disk*: data.mdb + the audit archive."""
    days = r["per_day"]
    last = days[-1]
    mid = days[len(days) // 2 - 1] if len(days) >= 2 else r["start"] | {"scans": 0, "tickets_sold": 0}
    scans, sold = last["scans"], last["tickets_sold"]
    d_scans, d_sold = scans - mid["scans"], sold - mid["tickets_sold"]
    d_file = last["file_bytes"] - mid["file_bytes"]
    d_disk = disk(last) - disk(mid)
    return {
        "scans": scans, "sold": sold, "file_mb": last["file_bytes"] / MB,
        "archive_mb": last.get("archive_bytes", 0) / MB if r.get("archiving") else None,
        "archive_files": last.get("archive_files", 0) if r.get("archiving") else None,
        "disk_mb": disk(last) / MB,
        "file_per_m_scans": per_m(last["file_bytes"], scans),
        "file_per_m_sold": per_m(last["file_bytes"], sold),
        "disk_per_m_scans": per_m(disk(last), scans),
        "disk_per_m_sold": per_m(disk(last), sold),
        "late_file_growth_per_m_scans": per_m(d_file, d_scans),
        "late_file_growth_per_m_sold": per_m(d_file, d_sold),
        "late_disk_growth_per_m_scans": per_m(d_disk, d_scans),
        "late_disk_growth_per_m_sold": per_m(d_disk, d_sold),
        "late_archive_growth_per_m_sold": per_m(last.get("archive_bytes", 0) - mid.get("archive_bytes", 0),
                                                d_sold),
        "late_scan_rows_growth_per_m_scans": per_m(kind_bytes(last, SCAN_KINDS) - kind_bytes(mid, SCAN_KINDS),
                                                   d_scans),
        "late_sale_rows_growth_per_m_sold": per_m(kind_bytes(last, SALE_KINDS) - kind_bytes(mid, SALE_KINDS),
                                                  d_sold),
        "late_order_rows_growth_per_m_sold": per_m(kind_bytes(last, ("orders",)) - kind_bytes(mid, ("orders",)),
                                                   d_sold),
        "late_audit_rows_growth_per_m_sold": per_m(kind_bytes(last, AUDIT_KINDS) - kind_bytes(mid, AUDIT_KINDS),
                                                   d_sold),
        "retry_rows": retry_rows(last), "rows": last["rows"],
        "gate_audit_rows": last["row_kinds"].get("audit: gate calls", {}).get("rows", 0),
        "audit_rows": audit_rows(last),
        "audit_ok": (r.get("audit") or {}).get("ok"),
        "rss_mb": last.get("VmRSS", 0) / MB, "rss_anon_mb": last.get("RssAnon", 0) / MB,
        "late_rss_anon_growth_mb_per_m_sold": per_m(last.get("RssAnon", 0) - mid.get("RssAnon", 0),
                                                    d_sold) / MB,
        "late_days": f"{mid.get('day', 0)}→{last['day']}", "ok": r["ok"],
    }


INTRO = """## Season soak (issue 12)

`bench/season.py`: a compressed holiday week in one process through the real engine and
its group-commit writer, a fake clock running the week in minutes (see its docstring for
the day's story). Where the engine has it, the old audit log is archived as a server
does: `Shard.archive_audit` (keep 10,000 records, the server's default) in a thread beside
the writer every simulated hour and each night, its rows then pruned by the writer. After
each simulated day it records the LMDB file, the audit archive and the process's RSS;
*data.mdb* is the file's allocated blocks (the file is sparse), *audit archive* the
allocated blocks of the files in the shard's `audit/` dir, *disk* the two together (runs
without an archive: data.mdb), *LMDB in use* its pages up to the highest one written,
*retry rows* the rows kept only to answer retries (scan ids and offline nonces, batch ids,
idempotency keys, ended holds), *audit records in LMDB* the hot audit records (of gate
calls: those of Verify, VerifyBatch and UploadScans). *Per M scans / per M sold*: disk
divided by the scans / tickets sold so far (1 MB = 2^20 bytes); *Δ per M scans of the
day*: the growth that day over that day's scans (the mix is fixed: {ratio:.2f} scans per
ticket sold, so the same growth per M sold is that times {ratio:.2f}). *Late*: from the
end of the middle day to the end of the week, once pruning runs. *Scan rows*: scan ids
and offline nonces, batch ids, audit records of gate calls; *sale rows*: idempotency keys,
ended holds, orders, the other audit records and the chain's checkpoints and head (key +
value bytes). RSS counts data.mdb's pages the process touched (the file is mapped); *anon*
is the process's own memory. "—": the run did not record it (its engine had no archive).
"""


def compare_table(runs: list[dict]) -> list[str]:
    L = ["| run | retry window | audit archive | scans | tickets sold | data.mdb at the end | "
         "audit archive at the end | disk at the end | disk per M scans | disk per M sold | "
         "late data.mdb growth per M scans / per M sold | late disk growth per M sold | "
         "late scan-row growth per M scans | late sale-row growth per M sold | retry rows at the end | "
         "audit records in LMDB at the end (of gate calls) | RSS (anon) at the end | "
         "late anon RSS growth per M sold | checks |",
         "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for d in runs:
        s = d["summary"]
        disk_mb = s.get("disk_mb", s["file_mb"])
        audit_rows = s.get("audit_rows")
        L.append(f"| {d['label']} | "
                 f"{'%g day(s)' % (d['window_s'] / 86400) if d['pruning'] else 'none'} | "
                 + (f"every {d['archive_every_s'] / 60:g} min, keep {d['audit_keep']:,}"
                    if d.get("archiving") else "none") + " | "
                 f"{s['scans']:,} | {s['sold']:,} | {s['file_mb']:,.0f} MB | "
                 + (f"{s['archive_mb']:,.1f} MB ({s['archive_files']:,} files)"
                    if s.get("archive_mb") is not None else "—") + " | "
                 f"{disk_mb:,.0f} MB | "
                 f"{s.get('disk_per_m_scans', s['file_per_m_scans']) / MB:,.0f} MB | "
                 f"{s.get('disk_per_m_sold', s['file_per_m_sold']) / MB:,.0f} MB | "
                 f"{s['late_file_growth_per_m_scans'] / MB:,.0f} / {s['late_file_growth_per_m_sold'] / MB:,.0f} MB "
                 f"(days {s['late_days']}) | "
                 f"{s.get('late_disk_growth_per_m_sold', s['late_file_growth_per_m_sold']) / MB:,.0f} MB | "
                 f"{s['late_scan_rows_growth_per_m_scans'] / MB:,.1f} MB | "
                 f"{s['late_sale_rows_growth_per_m_sold'] / MB:,.0f} MB | "
                 f"{s['retry_rows']:,} | "
                 f"{'—' if audit_rows is None else format(audit_rows, ',')} ({s['gate_audit_rows']:,}) | "
                 f"{s['rss_mb']:,.0f} ({s['rss_anon_mb']:,.0f}) MB | "
                 f"{s['late_rss_anon_growth_mb_per_m_sold']:+,.0f} MB | "
                 f"{'pass' if s['ok'] else '**FAIL**'} |")
    return L
def write_section(path: Path, label: str, block: str, notes: str | None = None) -> None:
    """Put run `label` into the season section of `path` (replacing a run of that label,
    keeping the others), regenerate the section's comparison table, and leave the rest
    of the file as it is. A new section goes before "## Reproduce" (or at the end)."""
    text = path.read_text() if path.exists() else "# Turnstile benchmark results\n\n"
    old = ""
    if BEGIN in text and END in text:
        a, b = text.index(BEGIN), text.index(END) + len(END)
        old, text = text[a:b], text[:a] + "\0SEASON\0" + text[b:]
    runs = {m["label"]: m.group(0) for m in RUN_RE.finditer(old)}
    keep_notes = re.search(r"<!-- season-notes -->\n(.*?)<!-- /season-notes -->\n", old, re.S)
    runs[label] = block
    data = []
    for body in runs.values():
        m = DATA_RE.search(body)
        if m:
            data.append(json.loads(m.group("json")))
    S = [BEGIN, INTRO.format(ratio=scans_per_ticket()), "### Before and after", ""]
    S += compare_table(data)
    S.append("")
    if notes is not None:
        S += ["<!-- season-notes -->", notes.strip(), "<!-- /season-notes -->", ""]
    elif keep_notes:
        S += ["<!-- season-notes -->", keep_notes.group(1).strip(), "<!-- /season-notes -->", ""]
    for body in runs.values():
        S.append(body)
    S.append(END)
    section = "\n".join(S)
    if "\0SEASON\0" in text:
        text = text.replace("\0SEASON\0", section)
    elif "\n## Reproduce" in text:
        i = text.index("\n## Reproduce")
        text = text[:i + 1] + section + "\n\n" + text[i + 1:]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


def run_args(argv: list[str]) -> str:
    """The arguments that shape a run (what --out, --json and the like add left out)."""
    out, skip = [], False
    for x in argv:
        if skip:
            skip = False
        elif x.split("=", 1)[0] in ("--json", "--out", "--label", "--notes", "--source", "--from-json"):
            skip = "=" not in x
        else:
            out.append(x)
    return " ".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.season", description=__doc__.split("\n")[0],
        epilog="Exit status 1 if a correctness check failed. --out writes the run into the "
               "file's season section under --label, keeping the other runs there (and the "
               "rest of the file) as they are.")
    ap.add_argument("--scans", type=int, default=1_000_000,
                    help="scans over the whole soak (default 1,000,000); sales follow the mix "
                         f"(~{scans_per_ticket():.2f} scans per ticket sold)")
    ap.add_argument("--days", type=int, default=7, help="simulated days (default 7)")
    ap.add_argument("--window-days", type=float, default=1.0,
                    help="the retry window in simulated days, passed as Shard.open's retry_window_s "
                         "where the engine has it (default 1)")
    ap.add_argument("--no-sync", action="store_true", help="durable=False: no fsync (faster, same bytes)")
    ap.add_argument("--submitters", type=int, default=64, help="concurrent asyncio submitters (default 64)")
    ap.add_argument("--snapshot-every", type=int, default=1_000_000,
                    help="commands between snapshots (default 1,000,000, the server's)")
    ap.add_argument("--archive-every-min", type=float, default=ARCHIVE_EVERY_MIN,
                    help="simulated minutes between audit archive runs (Shard.archive_audit in a "
                         f"thread, as the server's --audit-archive-s; default {ARCHIVE_EVERY_MIN}; "
                         "0: never)")
    ap.add_argument("--audit-keep", type=int, default=AUDIT_KEEP,
                    help=f"audit records kept in LMDB behind the head when archiving (default "
                         f"{AUDIT_KEEP:,}, the server's)")
    ap.add_argument("--seed", type=int, default=12)
    ap.add_argument("--json", default=None, help="write the result here as JSON")
    ap.add_argument("--out", default=None, help="write the run into this RESULTS.md's season section")
    ap.add_argument("--label", default="current", help="the run's name in that section (default: current)")
    ap.add_argument("--notes", default=None, help="a file whose text goes under the section's table")
    ap.add_argument("--source", default=None,
                    help="what engine ran, for the report (default: this checkout's commit, and "
                         "whether its engine/ has uncommitted changes)")
    ap.add_argument("--from-json", default=None,
                    help="run nothing: write the run saved by --json in this file to --out")
    a = ap.parse_args(argv)
    if a.scans < 1 or a.days < 1 or a.window_days <= 0:
        ap.error("--scans and --days must be positive, --window-days above 0")
    if a.archive_every_min < 0 or a.audit_keep < 0:
        ap.error("--archive-every-min and --audit-keep must not be negative")
    if a.from_json:
        r = json.loads(Path(a.from_json).read_text())
    else:
        source = a.source or engine_source()    # before the run: the tree may change during it
        r = soak(scans=a.scans, days=a.days, window_days=a.window_days, durable=not a.no_sync,
                 submitters=a.submitters, snapshot_every=a.snapshot_every, seed=a.seed,
                 archive_every_min=a.archive_every_min, audit_keep=a.audit_keep)
        r["engine"] = source
        r["command"] = "python -m bench.season " + run_args(argv if argv is not None else sys.argv[1:])
        r["when"] = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(summary(r))
    if a.json and not a.from_json:
        Path(a.json).write_text(dumps(r))
    if a.out:
        notes = Path(a.notes).read_text() if a.notes else None
        write_section(Path(a.out), a.label, run_block(a.label, r), notes)
        print(f"wrote the season section of {a.out} (run {a.label!r})")
    if not r["ok"]:
        print("CORRECTNESS CHECK FAILED", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
