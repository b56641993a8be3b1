"""The scenario load generator bench/ uses (DESIGN.md 9): gRPC load against a live server.

Every scenario talks gRPC only (this module never imports the engine or the server), sets
itself up through the API, runs its load with grpc.aio clients in this process, checks the
answers it got against what the server reports, and returns a `Result`: throughput,
latency p50/p99/p99.9 and a correctness verdict (no oversell, no double admission). A
fast wrong answer is a failure.

    verify-unary   GateService.Verify, one code per call, N calls in flight; a share of
                   the codes also sent by a second caller at once (exactly one admitted)
    verify-stream  GateService.VerifyStream, batches of codes (100), S streams × W in flight
    flash-sale     SalesService.Hold of qty 1 on ONE slot from many callers at once, more
                   asks than stock: exactly the free stock granted, every other ask
                   SOLD_OUT, never sold + held > capacity (InventoryService polled during
                   the sale), in the shard's own order (audit log) no refusal before the
                   slot was full, retries with the same idempotency key take no stock
    gate-storm     the gates open: G gate terminals (one connection each) scan in
                   bursts, every gate at each tick; a share of codes shown at two gates
                   in the same burst
    holiday        a compressed holiday day: channels sell (Hold + Confirm, 1-4 tickets
                   per order over the day's slots) while gates admit what was sold, a
                   share of visitors exits and comes back (re-entry), some try twice

Tickets for the scan scenarios are bought first through SalesService Hold + Confirm (or
given by the caller: bench/ passes millions of codes it issued through the engine).
Checks against the server's own counts (ReportService.TicketCounts and LiveCounts,
InventoryService.Availability) assume this run is the only traffic on the venue.

Bounds: every scenario targets 127.0.0.1 only (any other host needs
`allow_remote=True`), plans at most MAX_COUNT operations, stops issuing new calls when
its `duration_s` has passed, gives every call a deadline, and stops by itself.

Keys (`Keys`): `gate` scans, `sales` (one or more channel / seller keys) buys, `admin`
(admin or operator) creates the flash-sale slot and reads reports and the audit log; a
single admin key can do all of it. Without an admin key the report and audit checks are
skipped (and said so).

    from clients import loadgen
    t = loadgen.Target("127.0.0.1:50051", loadgen.Keys.from_file("data/demo-keys.txt"))
    r = loadgen.flash_sale(t, capacity=1000, inflight=64)
    print(r.summary()); assert r.ok
"""
from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import math
import random
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from .base import ApiError, read_keys_file
from turnstile.v1 import (admin_pb2, admin_pb2_grpc, common_pb2, gate_pb2, gate_pb2_grpc,
                          inventory_pb2, inventory_pb2_grpc, report_pb2, report_pb2_grpc,
                          sales_pb2, sales_pb2_grpc)

LOOPBACK = "127.0.0.1"
MAX_COUNT = 10_000_000            # operations one scenario may plan
MAX_DURATION_S = 3600.0           # the longest load phase allowed
MAX_MESSAGE = 16 << 20
CALL_TIMEOUT = 30.0               # every call's deadline (s)
SETUP_TIMEOUT = 120.0             # set-up calls (a confirm of 10,000 tickets)
MAX_QTY = 10_000                  # tickets per Hold item (the engine's limit)

OK = common_pb2.OK
OK_REENTRY = common_pb2.OK_REENTRY
ALREADY_USED = common_pb2.ALREADY_USED
IN, OUT = common_pb2.IN, common_pb2.OUT
ADMITTED = frozenset({OK, OK_REENTRY})


def reason_name(reason: int) -> str:
    return common_pb2.ScanReason.Name(reason)


class LoadgenError(Exception):
    """A scenario could not be set up or run (bad address, missing key, no stock, ...).
    Not a correctness verdict: that is `Result.ok`."""


# -- target, keys -----------------------------------------------------------------------------
def check_address(address: str, allow_remote: bool = False) -> str:
    """HOST:PORT, refused unless HOST is 127.0.0.1 (or allow_remote)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise LoadgenError(f"address {address!r} is not HOST:PORT")
    if host != LOOPBACK and not allow_remote:
        raise LoadgenError(f"refusing to load {host}: only {LOOPBACK} is a target unless "
                           f"allow_remote / --allow-remote is given")
    return address


ROLE_ALIASES = {"gate": "gate", "sales": "sales", "channel": "sales", "seller": "sales",
                "admin": "admin", "operator": "admin"}


@dataclass
class Keys:
    """API keys by what they are used for: `gate` scans, `sales` keys buy (one channel
    each; the flash sale spreads its asks over them), `admin` sets up and reads reports."""

    gate: str | None = None
    sales: list[str] = field(default_factory=list)
    admin: str | None = None

    @classmethod
    def parse(cls, specs: Iterable[str], keys: "Keys | None" = None) -> "Keys":
        """From `[ROLE=]KEY` strings (comma-separated lists allowed); ROLE is gate, sales
        (or channel, seller) or admin (or operator). A key without a role is used for
        every role not given otherwise (an admin key can do everything)."""
        k = keys or cls()
        bare: list[str] = []
        for spec in specs:
            for item in (s.strip() for s in spec.split(",")):
                if not item:
                    continue
                role, eq, key = item.partition("=")
                if eq and role.lower() in ROLE_ALIASES:
                    role = ROLE_ALIASES[role.lower()]
                    if not key:
                        raise LoadgenError(f"empty key for {role}")
                    if role == "sales":
                        k.sales.append(key)
                    else:
                        setattr(k, role, key)
                elif eq and "_" not in role:
                    raise LoadgenError(f"unknown key role {role!r} (gate, sales, admin)")
                else:
                    bare.append(item)
        for key in bare:
            k.gate = k.gate or key
            k.admin = k.admin or key
            if key not in k.sales:
                k.sales.append(key)
        return k

    @classmethod
    def from_file(cls, path: str, keys: "Keys | None" = None) -> "Keys":
        """From `turnstile serve`'s DATA/demo-keys.txt (principal, role, key per line):
        the admin key, the gate key, and every channel and seller key for sales."""
        k = keys or cls()
        try:
            rows = read_keys_file(path)
        except OSError as e:
            raise LoadgenError(f"cannot read keys file {path}: {e.strerror}") from None
        except ValueError as e:
            raise LoadgenError(str(e)) from None
        for role, key in rows.values():
            if role == "admin":
                k.admin = key
            elif role == "operator" and not k.admin:
                k.admin = key
            elif role == "gate" and not k.gate:
                k.gate = key
            elif role in ("channel", "seller") and key not in k.sales:
                k.sales.append(key)
        return k

    def need(self, what: str) -> str:
        key = self.sales[0] if what == "sales" and self.sales else getattr(self, what, None)
        if not key or isinstance(key, list):
            raise LoadgenError(f"this scenario needs a {what} key (--key {what}=KEY or --keys-file)")
        return key

    def any(self) -> str:
        key = self.admin or self.gate or (self.sales[0] if self.sales else None)
        if not key:
            raise LoadgenError("no API key given (--key or --keys-file)")
        return key


def meta(key: str) -> tuple:
    return (("authorization", f"Bearer {key}"),)


@dataclass
class Target:
    """Where the load goes: a server address (any shard; the venue's shard is found
    through the shard map), the keys, the venue."""

    address: str = f"{LOOPBACK}:50051"
    keys: Keys = field(default_factory=Keys)
    venue: str = "westlake"
    allow_remote: bool = False

    def __post_init__(self) -> None:
        self.address = check_address(self.address, self.allow_remote)


_OPTIONS = [("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.max_send_message_length", MAX_MESSAGE)]


def aio_channel(address: str, *, own_connection: bool = False) -> grpc.aio.Channel:
    opts = list(_OPTIONS)
    if own_connection:      # a connection of its own (each gate terminal of a storm)
        opts.append(("grpc.use_local_subchannel_pool", 1))
    return grpc.aio.insecure_channel(address, options=opts)


# statuses after which a call may or may not have been applied (or was shed unapplied)
_UNKNOWN_OUTCOME = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                              grpc.StatusCode.CANCELLED, grpc.StatusCode.RESOURCE_EXHAUSTED,
                              grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN})


def error_reason(err: grpc.RpcError) -> str:
    """The stable reason of a Turnstile error (google.rpc ErrorInfo), else the status name."""
    return ApiError.from_rpc(err).reason or err.code().name


# -- results ---------------------------------------------------------------------------------------
def percentiles(values: Iterable[float]) -> dict[str, float]:
    """Nearest-rank p50, p99 and p99.9 of values (any unit)."""
    v = sorted(values)
    out = {}
    for key, p in (("p50", 50), ("p99", 99), ("p999", 99.9)):
        out[key] = v[min(len(v), max(1, math.ceil(p * len(v) / 100))) - 1] if v else float("nan")
    return out


def latency_us(seconds: Iterable[float]) -> dict[str, float]:
    return {k: round(v * 1e6, 1) for k, v in percentiles(seconds).items()}


@dataclass
class Check:
    name: str
    passed: bool
    detail: str = ""


class Checks(list):
    def __call__(self, name: str, passed: bool, detail: Any = "") -> bool:
        self.append(Check(name, bool(passed), str(detail)))
        return bool(passed)


@dataclass
class Result:
    """What a scenario did. `ops` are the units of `throughput_per_s` (`unit`: calls,
    codes); `latency_us` holds p50/p99/p999 of one call (a batch for streams) in µs;
    `checks` the correctness checks, `ok` their verdict. Not in to_dict: `answers`, per
    scan (ticket asked, reason, ticket answered), reason None where the call failed (the
    flash sale: per ask (ask number, hold id or refusal reason or None, answer time));
    `tickets`, the (ticket id, code, scan time) a scan scenario scanned."""

    scenario: str
    ops: int = 0
    unit: str = "calls"
    calls: int = 0
    planned: int = 0
    elapsed_s: float = 0.0
    latency_us: dict = field(default_factory=lambda: percentiles([]))
    checks: list = field(default_factory=Checks)
    cut: bool = False
    errors: dict = field(default_factory=dict)
    counts: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    answers: list = field(default_factory=list, repr=False)
    tickets: list = field(default_factory=list, repr=False)

    @property
    def throughput_per_s(self) -> float:
        return self.ops / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    @property
    def verdict(self) -> str:
        return "pass" if self.ok else "FAIL"

    def to_dict(self) -> dict:
        return {"scenario": self.scenario, "ops": self.ops, "unit": self.unit, "calls": self.calls,
                "planned": self.planned, "elapsed_s": self.elapsed_s,
                "throughput_per_s": self.throughput_per_s, "latency_us": self.latency_us,
                "cut_by_deadline": self.cut, "errors": self.errors, "counts": self.counts,
                "extra": self.extra, "notes": self.notes, "ok": self.ok, "verdict": self.verdict,
                "checks": [{"check": c.name, "passed": c.passed, "detail": c.detail}
                           for c in self.checks]}

    def summary(self) -> str:
        lat = self.latency_us

        def ms(k: str) -> str:
            return f"{lat[k] / 1000:.2f} ms" if lat[k] == lat[k] else "-"     # nan: no calls
        per = " per batch" if self.unit == "codes" else ""
        lines = [f"{self.scenario}: {self.ops:,} {self.unit} in {self.elapsed_s:.2f} s = "
                 f"{self.throughput_per_s:,.0f} {self.unit}/s"
                 + (f" ({self.calls:,} calls)" if self.calls != self.ops else "")
                 + (" (cut by the time bound)" if self.cut else ""),
                 f"  latency{per}: p50 {ms('p50')}, p99 {ms('p99')}, p99.9 {ms('p999')}"]
        if self.counts:
            lines.append("  " + ", ".join(f"{k} {_fmt(v)}" for k, v in self.counts.items()))
        if self.errors:
            lines.append(f"  RPC errors: {dict(self.errors)}")
        for n in self.notes:
            lines.append(f"  note: {n}")
        for c in self.checks:
            lines.append(f"  [{'ok' if c.passed else 'FAIL'}] {c.name}"
                         + (f" ({c.detail})" if c.detail and not c.passed else ""))
        lines.append(f"verdict: {self.verdict}")
        return "\n".join(lines)


def _fmt(v: Any) -> str:
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:,.1f}"
    return str(v)


class Progress:
    """What a scenario reports as it goes (the CLI draws a progress bar of it)."""

    def phase(self, name: str, total: int | None) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


_QUIET = Progress()


class _Pacer:
    """Open-loop pacing: the k-th call of a run is due at t0 + k / rate, whoever sends
    it. Latency counts from the due time, so a server that falls behind is charged for
    the queue it causes (no coordinated omission)."""

    def __init__(self, rate: float | None):
        self.interval = 1.0 / rate if rate else 0.0
        self.next = 0.0

    def start(self) -> None:
        self.next = time.perf_counter()

    async def due(self) -> float:
        if not self.interval:
            return time.perf_counter()
        t = self.next
        self.next += self.interval
        d = t - time.perf_counter()
        if d > 0:
            await asyncio.sleep(d)
        return t


def _run(factory: Callable, loop: str, bound_s: float):
    """Run an async load in a new event loop (asyncio or uvloop), at most bound_s."""
    async def main():
        try:
            return await asyncio.wait_for(factory(), bound_s)
        except TimeoutError:
            raise LoadgenError(f"the run did not stop within {bound_s:.0f} s") from None
    if loop == "uvloop":
        import uvloop
        return uvloop.run(main())
    if loop != "asyncio":
        raise LoadgenError(f"unknown loop {loop!r} (asyncio, uvloop)")
    return asyncio.run(main())


def _bound(count: int, duration_s: float) -> None:
    if not 0 < count <= MAX_COUNT:
        raise LoadgenError(f"count must be between 1 and {MAX_COUNT:,}")
    if not 0 < duration_s <= MAX_DURATION_S:
        raise LoadgenError(f"duration must be between 0 and {MAX_DURATION_S:.0f} s")


async def _ready(ch: grpc.aio.Channel, address: str) -> None:
    try:
        await asyncio.wait_for(ch.channel_ready(), 10)
    except TimeoutError:
        raise LoadgenError(f"no server answers at {address}") from None


def _run_id() -> str:
    return f"{int(time.time()) % 10 ** 8:x}{secrets.token_hex(3)}"


# -- the venue, through the API (set-up and checks) ---------------------------------------------
def _epoch_day(date: _dt.date) -> int:
    return (date - _dt.date(1970, 1, 1)).days


class Venue:
    """The venue's shard, catalog and stock, read and set up through blocking gRPC calls."""

    def __init__(self, target: Target):
        self.target = target
        self.keys = target.keys
        self.venue = target.venue
        key = self.keys.any()
        try:
            with grpc.insecure_channel(target.address, options=_OPTIONS) as ch:
                m = admin_pb2_grpc.AdminServiceStub(ch).GetShardMap(
                    admin_pb2.GetShardMapRequest(), metadata=meta(key), timeout=CALL_TIMEOUT)
        except grpc.RpcError as e:
            raise LoadgenError(f"{target.address}: GetShardMap failed: {e.code().name} "
                               f"{e.details()}") from None
        if self.venue not in m.venues:
            raise LoadgenError(f"no venue {self.venue!r} in the shard map of {target.address} "
                               f"(venues: {', '.join(sorted(m.venues)) or 'none'})")
        shard = m.venues[self.venue]
        addr = next((s.address for s in m.shards if s.shard == shard), "")
        if not addr:
            raise LoadgenError(f"shard {shard} of venue {self.venue} has no address")
        host, _, port = addr.rpartition(":")
        if host in ("0.0.0.0", "::", "[::]"):     # listening on every interface
            addr = f"{target.address.rpartition(':')[0]}:{port}"
        self.shard = shard
        self.address = check_address(addr, target.allow_remote)
        self.channel = grpc.insecure_channel(self.address, options=_OPTIONS)
        self.sales = sales_pb2_grpc.SalesServiceStub(self.channel)
        self.inventory = inventory_pb2_grpc.InventoryServiceStub(self.channel)
        self.admin = admin_pb2_grpc.AdminServiceStub(self.channel)
        self.reports = report_pb2_grpc.ReportServiceStub(self.channel)
        try:
            cat = self._call("GetCatalog", self.admin.GetCatalog,
                             admin_pb2.GetCatalogRequest(venue_id=self.venue), key)
        except BaseException:
            self.channel.close()
            raise
        self.utc_offset_s = cat.venue.utc_offset_s
        self.zones = {z.zone_id: z for z in cat.zones}
        self.gates = list(cat.gates)
        self.products = {p.product_id: p for p in cat.products}

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "Venue":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, name: str, fn, request, key: str, timeout: float = CALL_TIMEOUT):
        try:
            return fn(request, metadata=meta(key), timeout=timeout)
        except grpc.RpcError as e:
            raise LoadgenError(f"{name} failed: {e.code().name}: {e.details()}") from None

    # the catalog ------------------------------------------------------------------------------
    def today(self) -> _dt.date:
        return _dt.datetime.fromtimestamp(time.time() + self.utc_offset_s, _dt.timezone.utc).date()

    def day_start(self, date: _dt.date) -> int:
        """UTC seconds of the venue-local midnight starting `date`."""
        return _epoch_day(date) * 86400 - self.utc_offset_s

    def product(self, product: str | None = None, zone: str | None = None):
        """The product to sell: the one named, or the first that admits one zone (`zone`
        if given), needs no holder, admits one person and is sold to every channel."""
        if product:
            p = self.products.get(product)
            if p is None:
                raise LoadgenError(f"no product {product!r} in venue {self.venue} "
                                   f"(products: {', '.join(self.products)})")
            if len(p.zone_ids) != 1:
                raise LoadgenError(f"product {product} admits {len(p.zone_ids)} zones; pick one "
                                   f"that admits one")
            if zone and p.zone_ids[0] != zone:
                raise LoadgenError(f"product {product} does not admit zone {zone}")
            return p
        for p in self.products.values():
            if (len(p.zone_ids) == 1 and not p.real_name and not p.channels
                    and (zone is None or p.zone_ids[0] == zone)):
                return p
        raise LoadgenError(f"no product in venue {self.venue} that admits one zone"
                           f"{' (' + zone + ')' if zone else ''}, sold to every channel, "
                           f"without real names; name one (--product)")

    def gate_ids(self, zone: str, direction: int, gate: str | None = None) -> list[str]:
        """Gates of `zone` that scan `direction` (or the one named)."""
        want = {IN: (admin_pb2.GATE_IN, admin_pb2.GATE_BOTH),
                OUT: (admin_pb2.GATE_OUT, admin_pb2.GATE_BOTH)}[direction]
        if gate:
            g = next((g for g in self.gates if g.gate_id == gate), None)
            if g is None:
                raise LoadgenError(f"no gate {gate!r} in venue {self.venue}")
            if g.zone_id != zone or g.mode not in want:
                raise LoadgenError(f"gate {gate} does not scan {'in' if direction == IN else 'out'} "
                                   f"of zone {zone}")
            return [gate]
        return [g.gate_id for g in self.gates if g.zone_id == zone and g.mode in want]

    # stock --------------------------------------------------------------------------------------
    def availability(self, date: _dt.date, zone: str, key: str | None = None) -> list[dict]:
        r = self._call("Availability", self.inventory.Availability, inventory_pb2.AvailabilityRequest(
            venue_id=self.venue, date_from=date.isoformat(), zone_id=zone),
            key or self.keys.admin or self.keys.need("sales"))
        return [_stock(s) for s in r.slots]

    def slot(self, slot: str, date: _dt.date, zone: str, key: str | None = None) -> dict:
        for s in self.availability(date, zone, key):
            if s["slot"] == slot:
                return s
        raise LoadgenError(f"no slot {slot!r} of zone {zone} on {date} (give the slot's --date)")

    def create_slot(self, slot: str, zone: str, date: _dt.date, capacity: int) -> None:
        start = self.day_start(date)
        self._call("CreateSlots", self.admin.CreateSlots, admin_pb2.CreateSlotsRequest(
            venue_id=self.venue, idempotency_key=f"{slot}-create", slots=[admin_pb2.SlotSpec(
                slot_id=slot, zone_id=zone, date=date.isoformat(), start=Timestamp(seconds=start),
                end=Timestamp(seconds=start + 86400), capacity=capacity)]), self.keys.need("admin"))

    def buy(self, n: int, product, date: _dt.date, run: str, *, short_codes: bool = False,
            progress: Progress = _QUIET) -> list[tuple[int, str, int]]:
        """Buy n tickets of `product` on `date` through SalesService Hold + Confirm (the
        first sales key), slot after slot of its zone (skipping those the server says are
        over); (ticket id, code, scan time) each, the scan time inside the ticket's slot."""
        key = self.keys.need("sales")
        zone = product.zone_ids[0]
        out: list[tuple[int, str, int]] = []
        progress.phase("buying tickets", n)
        k = 0
        for attempt in range(3):
            slots = self.availability(date, zone, key)
            if attempt == 0 and sum(s["remaining"] for s in slots) < n:
                raise LoadgenError(
                    f"only {sum(s['remaining'] for s in slots):,} tickets left for this channel "
                    f"on {date} in zone {zone}; lower the count or pick another date")
            for s in slots:
                left = s["remaining"]
                while left > 0 and len(out) < n:
                    q = min(left, n - len(out), MAX_QTY)
                    try:
                        h = self.sales.Hold(sales_pb2.HoldRequest(
                            venue_id=self.venue, idempotency_key=f"lg-{run}-buy-{k}",
                            items=[sales_pb2.Item(product_id=product.product_id,
                                                  slot_ids=[s["slot"]], qty=q)]),
                            metadata=meta(key), timeout=SETUP_TIMEOUT)
                    except grpc.RpcError as e:
                        # sold meanwhile, or over by the server's clock: the next slot
                        if error_reason(e) in ("SOLD_OUT", "SLOT_CLOSED"):
                            break
                        raise LoadgenError(f"Hold failed: {e.code().name}: {e.details()}") from None
                    c = self._call("Confirm", self.sales.Confirm, sales_pb2.ConfirmRequest(
                        hold_id=h.hold_id, order_id=f"lg-{run}-buy-{k}", short_codes=short_codes,
                        payment=sales_pb2.Payment(method="alipay", reference=f"lg-{run}-{k}",
                                                  amount_fen=h.amount_fen)), key, SETUP_TIMEOUT)
                    # inside the slot, as near now as it allows: a server takes a scan
                    # time only near its own clock (a test server's may be set elsewhere)
                    edge = min(60, (s["end"] - s["start"]) // 2)
                    at = min(max(int(time.time()), s["start"] + edge), s["end"] - edge)
                    out += [(t.ticket_id, t.code, at) for t in c.tickets]
                    progress.advance(len(c.tickets))
                    left -= q
                    k += 1
                if len(out) >= n:
                    return out
        raise LoadgenError(f"could not buy {n:,} tickets on {date} in zone {zone} "
                           f"(got {len(out):,}); is other traffic selling the same stock?")

    # reports and the audit log (admin; None without an admin key) -------------------------------
    def ticket_counts(self, product: str) -> dict | None:
        if not self.keys.admin:
            return None
        r = self._call("TicketCounts", self.reports.TicketCounts,
                       report_pb2.TicketCountsRequest(venue_id=self.venue), self.keys.admin)
        for p in r.products:
            if p.product_id == product:
                return {"issued": p.issued, "used": p.used, "voided": p.voided}
        raise LoadgenError(f"no product {product} in TicketCounts")

    def live_counts(self, date: _dt.date, zone: str) -> dict | None:
        """Tickets entered on `date` in `zone`, and persons inside now if `date` is the
        server's today at the venue (else inside is None)."""
        if not self.keys.admin:
            return None
        out = {}
        for d in (date.isoformat(), ""):
            r = self._call("LiveCounts", self.reports.LiveCounts,
                           report_pb2.LiveCountsRequest(venue_id=self.venue, date=d), self.keys.admin)
            z = next((z for z in r.zones if z.zone_id == zone), None)
            if z is None:
                raise LoadgenError(f"no zone {zone} in LiveCounts")
            if d:
                out["entered"] = z.entered_tickets
            else:
                out["inside"] = z.inside if r.date == date.isoformat() else None
        return out

    def audit_end(self) -> int | None:
        """The last audit record's seq (AdminService.QueryAudit; None if not allowed)."""
        if not self.keys.admin:
            return None

        def after(seq: int) -> bool:          # is there a record after seq?
            return bool(self.admin.QueryAudit(admin_pb2.QueryAuditRequest(after_seq=seq, limit=1),
                                              metadata=meta(self.keys.admin),
                                              timeout=CALL_TIMEOUT).records)
        try:
            lo, hi = 0, 1
            while after(hi):
                lo, hi = hi, hi * 2
            while hi - lo > 1:          # after(lo) or lo == 0; not after(hi)
                mid = (lo + hi) // 2
                lo, hi = (mid, hi) if after(mid) else (lo, mid)
            return hi if after(lo) else lo
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.PERMISSION_DENIED:
                return None
            raise LoadgenError(f"QueryAudit failed: {e.code().name}: {e.details()}") from None

    def principals(self, api_keys: Sequence[str]) -> set[str]:
        """The principals of API keys (tsk_<key id>_<secret>), as the admin lists them."""
        ids = {k.split("_")[1] for k in api_keys if k.count("_") >= 2}
        r = self._call("ListApiKeys", self.admin.ListApiKeys, admin_pb2.ListApiKeysRequest(),
                       self.keys.need("admin"))
        return {k.principal_id for k in r.keys if k.key_id in ids}

    def audited(self, after_seq: int, principals: set[str], method: str) -> list[str]:
        """Results of the audited calls of `method` by `principals` after record
        `after_seq`, in the order the shard applied them. (Request digests are keyed by
        the shard, so they can't be matched to requests here.)"""
        out: list[str] = []
        seq = after_seq
        while True:
            r = self._call("QueryAudit", self.admin.QueryAudit, admin_pb2.QueryAuditRequest(
                after_seq=seq, limit=1000), self.keys.need("admin"))
            if not r.records:
                return out
            out += [rec.result for rec in r.records
                    if rec.method == method and rec.principal_id in principals]
            seq = r.records[-1].seq


def _stock(s) -> dict:
    return {"slot": s.slot_id, "zone": s.zone_id, "date": s.date, "start": s.start.seconds,
            "end": s.end.seconds, "capacity": s.capacity, "sold": s.sold, "held": s.held,
            "remaining": s.remaining, "pool_remaining": s.pool_remaining,
            "allotments": {a.channel: {"capacity": a.capacity, "sold": a.sold, "held": a.held}
                           for a in s.allotments}}


# -- checks -----------------------------------------------------------------------------------------
def scan_checks(answers: Sequence[tuple], expect: str = "admit", checks: Checks | None = None
                ) -> tuple[Checks, dict]:
    """Correctness of entry scans. `answers`: (ticket id asked or -1, code, reason,
    ticket id answered) per call, reason None where the call failed (unknown outcome).
    expect "admit": fresh tickets, each admitted exactly once however often it was
    shown, every other answer ALREADY_USED. expect "used": tickets already inside or
    used up, every answer ALREADY_USED."""
    checks = Checks() if checks is None else checks
    answered = [a for a in answers if a[2] is not None]
    admits = Counter(a[1] for a in answered if a[2] in ADMITTED)
    refused = Counter(reason_name(a[2]) for a in answered if a[2] not in ADMITTED)
    failed = {a[1] for a in answers if a[2] is None}
    asked = {a[1] for a in answers}
    unknown = failed - set(admits)             # a failed call may have admitted these
    wrong = sum(1 for a in answered if a[0] >= 0 and a[0] != a[3])
    checks("calls answered", bool(answered), f"{len(answered)} of {len(answers)}")
    checks("every answer names the ticket asked", not wrong, f"{wrong} name another ticket")
    if expect == "admit":
        twice = sum(1 for v in admits.values() if v > 1)
        checks("no ticket admitted twice", not twice, f"{twice} tickets admitted more than once")
        never = asked - set(admits) - unknown
        checks("every scanned ticket admitted exactly once", not never,
               f"{len(never)} of {len(asked)} never admitted")
        # a refusal is right only for a code another call admitted (or may have)
        lone = {a[1] for a in answered if a[2] not in ADMITTED} - set(admits) - unknown
        checks("the only refusals are concurrent duplicates, ALREADY_USED",
               set(refused) <= {"ALREADY_USED"} and not lone,
               f"{dict(refused)}; {len(lone)} refused tickets never admitted")
    elif expect == "used":
        checks("every scan refused ALREADY_USED (tickets already used)",
               not admits and set(refused) <= {"ALREADY_USED"}, f"admitted {sum(admits.values())}, "
               f"refused {dict(refused)}")
    else:
        raise ValueError(f"expect must be admit or used, not {expect!r}")
    counts = {"tickets": len(asked), "answered": len(answered), "admitted": len(admits),
              "refused": dict(refused), "unknown": len(unknown)}
    return checks, counts


def count_checks(checks: Checks, name: str, before: int | None, after: int | None, want: int,
                 slack: int = 0) -> None:
    """A server count rose by `want` (up to `slack` more: calls whose outcome is unknown)."""
    if before is None or after is None:
        return
    d = after - before
    checks(name, want <= d <= want + slack, f"rose by {d:,}, expected {want:,}"
           + (f" (+ up to {slack:,} unknown)" if slack else ""))


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


# -- scan load ------------------------------------------------------------------------------------
def scan_items(tickets: Sequence, at: int | None) -> list[tuple[int, str, int | None]]:
    """(ticket id or -1, code, scan time) from (id, code[, at]) tuples or plain codes; the
    scan time `at` where a ticket has none, or None: the server's clock."""
    out = []
    for t in tickets:
        if isinstance(t, str):
            t = (-1, t)
        when = t[2] if len(t) >= 3 and t[2] is not None else at
        out.append((int(t[0]), t[1], None if when is None else int(when)))
    return out


def read_codes(path: str) -> list[tuple[int, str, int | None]]:
    """Tickets from a file: one per line, `CODE`, `TICKET_ID CODE` or `TICKET_ID CODE
    SCAN_TIME` (UTC seconds), as `save_codes` writes them; # starts a comment."""
    out = []
    try:
        with open(path) as f:
            for n, line in enumerate(f, 1):
                parts = line.split("#", 1)[0].split()
                if not parts:
                    continue
                try:
                    if len(parts) == 1:
                        out.append((-1, parts[0], None))
                    elif len(parts) in (2, 3):
                        out.append((int(parts[0]), parts[1], int(parts[2]) if len(parts) == 3 else None))
                    else:
                        raise ValueError
                except ValueError:
                    raise LoadgenError(f"{path}:{n}: expected CODE, or TICKET_ID CODE [SCAN_TIME]") from None
    except OSError as e:
        raise LoadgenError(f"cannot read {path}: {e.strerror}") from None
    return out


def save_codes(path: str, tickets: Iterable[tuple]) -> int:
    """Write tickets (ticket id, code, scan time) for `read_codes`; returns how many."""
    n = 0
    with open(path, "w") as f:
        f.write("# ticket_id code scan_time(UTC s): turnstile loadgen --codes-file\n")
        for t in tickets:
            f.write(f"{t[0]} {t[1]}" + (f" {t[2]}" if len(t) > 2 and t[2] is not None else "") + "\n")
            n += 1
    return n


def deal(items: list, inflight: int, dupes: float, rng: random.Random) -> list[list]:
    """Every item once, dealt round-robin to `inflight` workers; a share `dupes` of them
    ALSO to another worker at a random place (two gates scanning one code at once)."""
    work = [items[k::inflight] for k in range(inflight)]
    if inflight > 1:
        for k in rng.sample(range(len(items)), int(len(items) * dupes)):
            home = k % inflight
            other = (home + rng.randrange(1, inflight)) % inflight
            work[other].insert(rng.randrange(len(work[other]) + 1), items[k])
    return work


def _verify_request(it: tuple, gate: str, direction: int) -> gate_pb2.VerifyRequest:
    req = gate_pb2.VerifyRequest(code=it[1], gate_id=gate, direction=direction)
    if it[2] is not None:               # else the server's clock
        req.scan_time.seconds = it[2]
    return req


def _batch_request(batch: list, gate: str, direction: int) -> gate_pb2.VerifyBatchRequest:
    req = gate_pb2.VerifyBatchRequest(codes=[it[1] for it in batch], gate_id=gate, direction=direction)
    if batch[0][2] is not None:
        req.scan_time.seconds = batch[0][2]
    return req


@dataclass
class Run:
    """Raw outcome of a load: latencies (s), answers, wall time, whether the time bound
    stopped it, RPC errors by status."""

    lat: list
    out: list
    elapsed: float
    cut: bool
    errors: Counter
    t0: float = 0.0
    extra: dict = field(default_factory=dict)


async def _unary(address: str, key: str, work: list[list], gate: str, direction: int,
                 deadline_s: float, rate: float | None, progress: Progress) -> Run:
    m = meta(key)
    lat: list[float] = []
    out: list[tuple] = []
    errors: Counter = Counter()
    cut = False
    # requests built before the clock starts: the load generator's CPU is not the server's
    reqs = [[(it, _verify_request(it, gate, direction)) for it in w] for w in work]
    pacer = _Pacer(rate)
    adv = progress.advance if progress is not _QUIET else None
    async with aio_channel(address) as ch:
        verify = gate_pb2_grpc.GateServiceStub(ch).Verify
        await _ready(ch, address)
        stop = time.perf_counter() + deadline_s

        async def worker(items):
            nonlocal cut
            clock, push, lpush = time.perf_counter, out.append, lat.append
            for it, req in items:
                t0 = await pacer.due()
                try:
                    r = await verify(req, metadata=m, timeout=CALL_TIMEOUT)
                    push((it[0], it[1], r.reason, r.ticket_id))
                except grpc.aio.AioRpcError as e:
                    errors[e.code().name] += 1
                    push((it[0], it[1], None, None))
                t1 = clock()
                lpush(t1 - t0)
                if adv:
                    adv(1)
                if t1 > stop:
                    cut = True
                    return

        t = time.perf_counter()
        pacer.start()
        await asyncio.gather(*(worker(w) for w in reqs))
        elapsed = time.perf_counter() - t
    return Run(lat, out, elapsed, cut, errors, t)


def unary_load(address: str, key: str, work: list[list], *, gate: str, direction: int = IN,
               deadline_s: float = 60, loop: str = "asyncio", rate: float | None = None,
               progress: Progress = _QUIET, allow_remote: bool = False) -> Run:
    """The bare unary Verify load: `work` is one list of (ticket id, code, scan time) per
    caller in flight; no set-up, no checks (bench/ points it at a bare grpc server too)."""
    check_address(address, allow_remote)
    return _run(lambda: _unary(address, key, work, gate, direction, deadline_s, rate, progress),
                loop, deadline_s + CALL_TIMEOUT + 30)


def _batches(items: list, per: int) -> list[list]:
    """Consecutive items of one scan time, `per` at most in each batch."""
    out: list[list] = []
    for it in items:
        if out and len(out[-1]) < per and out[-1][0][2] == it[2]:
            out[-1].append(it)
        else:
            out.append([it])
    return out


async def _stream(address: str, key: str, work: list[list], gate: str, direction: int,
                  window: int, deadline_s: float, rate: float | None, progress: Progress) -> Run:
    m = meta(key)
    lat: list[float] = []
    out: list[tuple] = []
    errors: Counter = Counter()
    cut = False
    reqs = [[(b, _batch_request(b, gate, direction)) for b in w] for w in work]
    pacer = _Pacer(rate)
    adv = progress.advance if progress is not _QUIET else None
    async with aio_channel(address) as ch:
        stub = gate_pb2_grpc.GateServiceStub(ch)
        await _ready(ch, address)
        stop = time.perf_counter() + deadline_s

        async def one(batches):
            nonlocal cut
            if not batches:
                return
            call = stub.VerifyStream(metadata=m, timeout=deadline_s + CALL_TIMEOUT)
            room = asyncio.Semaphore(window)
            sent: list[float] = []

            async def send():
                nonlocal cut
                try:
                    for _, req in batches:
                        await room.acquire()
                        if time.perf_counter() > stop:
                            cut = True
                            break
                        sent.append(await pacer.due())
                        await call.write(req)
                    await call.done_writing()
                except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
                    pass                    # the call ended; the reader has its status

            sender = asyncio.ensure_future(send())
            k = 0
            try:
                async for resp in call:
                    lat.append(time.perf_counter() - sent[k])
                    b = batches[k][0]
                    out.extend((it[0], it[1], reason, got)
                               for it, reason, got in zip(b, resp.reasons, resp.ticket_ids))
                    k += 1
                    room.release()
                    if adv:
                        adv(len(b))
            except grpc.aio.AioRpcError as e:
                errors[e.code().name] += 1
                for b, _ in batches[k:len(sent)]:      # sent, never answered: unknown
                    out.extend((it[0], it[1], None, None) for it in b)
            if not sender.done():                      # the call ended early
                sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender

        t = time.perf_counter()
        pacer.start()
        await asyncio.gather(*(one(w) for w in reqs))
        elapsed = time.perf_counter() - t
    calls = len(lat)
    return Run(lat, out, elapsed, cut, errors, t, {"calls": calls})


def stream_load(address: str, key: str, work: list[list], *, gate: str, direction: int = IN,
                window: int = 2, deadline_s: float = 60, loop: str = "asyncio",
                rate: float | None = None, progress: Progress = _QUIET,
                allow_remote: bool = False) -> Run:
    """The bare VerifyStream load: `work` is one list of batches per stream, each batch a
    list of (ticket id, code, scan time) of one scan time; `window` batches in flight on
    each stream."""
    check_address(address, allow_remote)
    return _run(lambda: _stream(address, key, work, gate, direction, window, deadline_s, rate,
                                progress), loop, deadline_s + CALL_TIMEOUT + 30)


def _scan_setup(target: Target, v: Venue, count: int, tickets, at, gate, product, date, run,
                short_codes: bool, progress: Progress):
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
    progress = progress or _QUIET
    _bound(len(tickets) if tickets is not None else count, duration_s)
    inflight = max(1, inflight)
    with Venue(target) as v:
        run = _run_id()
        items, product, zone, gates, date = _scan_setup(
            target, v, count, tickets, at, gate, product, date, run, short_codes, progress)
        work = deal(items, inflight, dupes, random.Random(seed))
        tc0 = v.ticket_counts(product) if product else None
        lc0 = v.live_counts(date, zone) if product else None
        progress.phase("verify-unary", sum(map(len, work)))
        with around if around is not None else contextlib.nullcontext():
            r = unary_load(v.address, target.keys.need("gate"), work, gate=gates[0],
                           deadline_s=duration_s, loop=loop, rate=rate, progress=progress,
                           allow_remote=target.allow_remote)
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
                  progress: Progress | None = None) -> Result:
    """GateService.VerifyStream: batches of `per_call` codes, `streams` streams at once,
    `window` batches in flight on each; every ticket once. Throughput in codes/s,
    latency per batch. `rate` paces batches per second."""
    progress = progress or _QUIET
    _bound(len(tickets) if tickets is not None else count, duration_s)
    if not 1 <= per_call <= 10_000:
        raise LoadgenError("per_call must be between 1 and 10,000")
    with Venue(target) as v:
        run = _run_id()
        items, product, zone, gates, date = _scan_setup(
            target, v, count, tickets, at, gate, product, date, run, short_codes, progress)
        batches = _batches(items, per_call)
        streams = max(1, min(streams, len(batches)))
        work = [batches[k::streams] for k in range(streams)]
        tc0 = v.ticket_counts(product) if product else None
        lc0 = v.live_counts(date, zone) if product else None
        progress.phase("verify-stream", len(items))
        with around if around is not None else contextlib.nullcontext():
            r = stream_load(v.address, target.keys.need("gate"), work, gate=gates[0],
                            window=max(1, window), deadline_s=duration_s, loop=loop, rate=rate,
                            progress=progress, allow_remote=target.allow_remote)
        progress.close()
        answered = sum(1 for a in r.out if a[2] is not None)
        res = Result("verify-stream", ops=answered, unit="codes", calls=r.extra["calls"],
                     planned=len(items), elapsed_s=r.elapsed, latency_us=latency_us(r.lat),
                     cut=r.cut, errors=dict(r.errors), tickets=items,
                     extra={"streams": streams, "per_call": per_call, "window": window,
                            "gate": gates[0], "loop": loop,
                            "calls_per_s": r.extra["calls"] / r.elapsed if r.elapsed else 0.0})
        return _finish_scans(v, res, r.out, expect, product, zone, date, tc0, lc0)


# -- the opening-gate storm -----------------------------------------------------------------------
async def _storm(address: str, key: str, plan: list[list[list]], gates: list[str],
                 interval_s: float, deadline_s: float, progress: Progress) -> Run:
    m = meta(key)
    lat: list[float] = []
    out: list[tuple] = []
    errors: Counter = Counter()
    late = 0
    cut = False
    adv = progress.advance if progress is not _QUIET else None
    chans = [aio_channel(address, own_connection=True) for _ in plan]
    try:
        for ch in chans:
            await _ready(ch, address)
        stop = time.perf_counter() + deadline_s
        t0 = time.perf_counter()

        async def terminal(g: int, ticks: list[list]):
            nonlocal late, cut
            verify = gate_pb2_grpc.GateServiceStub(chans[g]).Verify
            gate = gates[g % len(gates)]

            async def scan(it):
                t = time.perf_counter()
                try:
                    r = await verify(_verify_request(it, gate, IN), metadata=m, timeout=CALL_TIMEOUT)
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
    progress = progress or _QUIET
    _bound(len(tickets) if tickets is not None else count, duration_s)
    if not 1 <= gates <= 1024 or burst < 1 or interval_s < 0:
        raise LoadgenError("gates 1-1024, burst >= 1, interval >= 0")
    rng = random.Random(seed)
    with Venue(target) as v:
        run = _run_id()
        items, product, zone, gate_ids, date = _scan_setup(
            target, v, count, tickets, at, gate, product, date, run, short_codes, progress)
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
        key = target.keys.need("gate")
        with around if around is not None else contextlib.nullcontext():
            r = _run(lambda: _storm(v.address, key, plan, gate_ids, interval_s, duration_s, progress),
                     loop, duration_s + CALL_TIMEOUT + 30)
        progress.close()
        res = Result("gate-storm", ops=len(r.out), calls=len(r.out), planned=len(items) + n_dupes,
                     elapsed_s=r.elapsed, latency_us=latency_us(r.lat), cut=r.cut,
                     errors=dict(r.errors), tickets=items,
                     extra={"terminals": gates, "gates": gate_ids, "burst": burst,
                            "interval_s": interval_s, "bursts": ticks, "dupes": n_dupes,
                            "late_bursts": r.extra["late_bursts"], "loop": loop})
        return _finish_scans(v, res, r.out, expect, product, zone, date, tc0, lc0)


# -- the flash sale ----------------------------------------------------------------------------------
def _hold_request(venue: str, run: str, k: int, product: str, slot: str, ttl_s: int):
    return sales_pb2.HoldRequest(venue_id=venue, idempotency_key=f"lg-{run}-flash-{k}", ttl_s=ttl_s,
                                 items=[sales_pb2.Item(product_id=product, slot_ids=[slot], qty=1)])


async def _flash(address: str, keys: list[str], poll_key: str, reqs: list, inflight: int,
                 venue: str, date: str, zone: str, slot: str, deadline_s: float,
                 rate: float | None, progress: Progress) -> Run:
    lat: list[float] = []
    out: list[tuple[int, Any, float]] = []
    errors: Counter = Counter()
    cut = False
    metas = [meta(k) for k in keys]
    work = [reqs[k::inflight] for k in range(inflight)]
    peak = {"max_used": 0, "polls": 0}
    done = asyncio.Event()
    pacer = _Pacer(rate)
    adv = progress.advance if progress is not _QUIET else None
    async with aio_channel(address) as ch:
        hold = sales_pb2_grpc.SalesServiceStub(ch).Hold
        inv = inventory_pb2_grpc.InventoryServiceStub(ch)
        await _ready(ch, address)
        stop = time.perf_counter() + deadline_s

        async def poll():       # sold + held seen during the sale: never above capacity
            req = inventory_pb2.AvailabilityRequest(venue_id=venue, date_from=date, zone_id=zone)
            while not done.is_set():
                try:
                    r = await inv.Availability(req, metadata=meta(poll_key), timeout=CALL_TIMEOUT)
                    for s in r.slots:
                        if s.slot_id == slot:
                            peak["max_used"] = max(peak["max_used"], s.sold + s.held)
                    peak["polls"] += 1
                except grpc.aio.AioRpcError as e:
                    errors[f"Availability {e.code().name}"] += 1
                try:
                    await asyncio.wait_for(done.wait(), 0.1)
                except TimeoutError:
                    pass

        async def worker(items):
            nonlocal cut
            clock = time.perf_counter
            for k, c, req in items:
                t0 = await pacer.due()
                try:
                    r = await hold(req, metadata=metas[c], timeout=CALL_TIMEOUT)
                    res: Any = r.hold_id
                except grpc.aio.AioRpcError as e:
                    if e.code() in _UNKNOWN_OUTCOME:      # may or may not have been applied
                        errors[e.code().name] += 1
                        res = None
                    else:
                        res = error_reason(e)
                t1 = clock()
                lat.append(t1 - t0)
                out.append((k, res, t1))
                if adv:
                    adv(1)
                if t1 > stop:
                    cut = True
                    return

        poller = asyncio.ensure_future(poll())
        t = time.perf_counter()
        pacer.start()
        try:
            await asyncio.gather(*(worker(w) for w in work))
        finally:
            elapsed = time.perf_counter() - t
            done.set()
            await poller
    return Run(lat, out, elapsed, cut, errors, t, {"peak": peak})


async def _again(address: str, keys: list[str], sample: list) -> list[tuple[int, Any]]:
    """The same Hold requests again, same idempotency keys: the first answers come back."""
    async with aio_channel(address) as ch:
        hold = sales_pb2_grpc.SalesServiceStub(ch).Hold
        out = []
        for k, c, req in sample:
            try:
                r = await hold(req, metadata=meta(keys[c]), timeout=CALL_TIMEOUT)
                out.append((k, r.hold_id))
            except grpc.aio.AioRpcError as e:
                out.append((k, error_reason(e)))
    return out


async def _release(address: str, keys: list[str], holds: list[tuple[int, int]], run: str,
                   inflight: int) -> Counter:
    """Release holds (hold id, key index) with `inflight` calls at once."""
    done: Counter = Counter()
    async with aio_channel(address) as ch:
        release = sales_pb2_grpc.SalesServiceStub(ch).Release

        async def worker(part):
            for hid, c in part:
                try:
                    await release(sales_pb2.ReleaseRequest(hold_id=hid, idempotency_key=f"lg-{run}-rel-{hid}"),
                                  metadata=meta(keys[c]), timeout=CALL_TIMEOUT)
                    done["released"] += 1
                except grpc.aio.AioRpcError as e:
                    done[error_reason(e)] += 1
        await asyncio.gather(*(worker(holds[k::inflight]) for k in range(inflight)))
    return done


def flash_sale(target: Target, *, capacity: int = 1000, count: int | None = None,
               inflight: int = 64, duration_s: float = 60, slot: str | None = None,
               product: str | None = None, zone: str | None = None, date: _dt.date | None = None,
               ttl_s: int = 3600, retries: int = 200, release: bool = False,
               rate: float | None = None, loop: str = "asyncio", seed: int = 11, around=None,
               progress: Progress | None = None) -> Result:
    """A flash sale on one slot: `count` asks (default 1.2 × the free stock) of
    SalesService.Hold qty 1, `inflight` at once, spread over the sales keys (channels).

    slot: an existing slot without allotments (its free stock is what may be granted);
    by default a new whole-day slot of `capacity` is created in the product's zone
    (AdminService.CreateSlots, admin key). Checks: exactly the free stock granted (all
    of it, if every ask was answered), every refusal SOLD_OUT, hold ids unique,
    Availability sold + held == capacity after and never above it while the sale ran
    (polled), in the shard's own order (audit log, admin key) no refusal before the slot
    was full, `retries` granted asks sent again with the same idempotency keys return
    the first hold and take no stock. `release`: give every granted hold back at the
    end (checked: the stock returns); else holds expire after `ttl_s`."""
    progress = progress or _QUIET
    keys = target.keys
    sellers = list(keys.sales) or [keys.need("sales")]
    with Venue(target) as v:
        run = _run_id()
        p = v.product(product, zone)
        zone = p.zone_ids[0]
        date = date or v.today()
        poll_key = keys.admin or sellers[0]
        if slot is None:
            if not keys.admin:
                raise LoadgenError("the flash sale creates its slot with an admin key; without "
                                   "one, name an existing slot (--slot) and its --date")
            if not 1 <= capacity <= MAX_COUNT:
                raise LoadgenError(f"capacity must be between 1 and {MAX_COUNT:,}")
            slot = f"lg-flash-{run}"
            v.create_slot(slot, zone, date, capacity)
        before = v.slot(slot, date, zone, poll_key)
        if before["allotments"]:
            raise LoadgenError(f"slot {slot} has channel allotments; the flash sale needs a "
                               f"slot that is one shared pool")
        free = before["capacity"] - before["sold"] - before["held"]
        asks = int(free * 1.2) + 1 if count is None else count
        _bound(asks, duration_s)
        rng = random.Random(seed)
        reqs = [(k, rng.randrange(len(sellers)), _hold_request(v.venue, run, k, p.product_id, slot, ttl_s))
                for k in range(asks)]
        audit0 = v.audit_end()
        progress.phase("flash-sale", asks)
        with around if around is not None else contextlib.nullcontext():
            r = _run(lambda: _flash(v.address, sellers, poll_key, reqs, max(1, inflight), v.venue,
                                    date.isoformat(), zone, slot, duration_s, rate, progress),
                     loop, duration_s + CALL_TIMEOUT + 30)
        progress.close()
        out = r.out
        granted = [(k, res, t) for k, res, t in out if isinstance(res, int)]
        refused = Counter(res for _, res, _ in out if isinstance(res, str))
        unknown = sum(1 for _, res, _ in out if res is None)
        after = v.slot(slot, date, zone, poll_key)
        sold_out_at = max((t for _, _, t in granted), default=r.t0) - r.t0
        checks, notes = Checks(), []
        all_answered = len(out) == asks and not r.cut and not unknown
        if all_answered and asks >= free:
            checks("flash sale: exactly the capacity granted", len(granted) == free,
                   f"granted {len(granted)}, capacity {before['capacity']}, sold+held before "
                   f"{before['sold'] + before['held']}")
        else:
            checks("flash sale: no more than the capacity granted", len(granted) <= free,
                   f"granted {len(granted)} of {free} free ({len(out)} of {asks} asks answered)")
        checks("flash sale: every refusal is SOLD_OUT", set(refused) <= {"SOLD_OUT"}, dict(refused))
        checks("flash sale: hold ids unique", len({res for _, res, _ in granted}) == len(granted))
        used_after = after["sold"] + after["held"]
        if all_answered and asks >= free:
            checks("flash sale: Availability sold + held == capacity after the sale",
                   used_after == after["capacity"] == before["capacity"], after)
        else:
            checks("flash sale: Availability sold + held <= capacity after the sale",
                   used_after <= after["capacity"] and 0 <= used_after - before["sold"]
                   - before["held"] - len(granted) <= unknown, after)
        checks("flash sale: Availability sold + held never above capacity while it ran",
               r.extra["peak"]["max_used"] <= before["capacity"], r.extra["peak"])
        if audit0 is not None:
            # in the order the shard applied them (its audit log): every hold granted until
            # the slot was full, every one refused after, none refused before
            applied = v.audited(audit0, v.principals(sellers), "/turnstile.v1.SalesService/Hold")
            first_refusal = next((i for i, res in enumerate(applied) if res != "OK"), len(applied))
            checks("flash sale: in the shard's order (audit log) SOLD_OUT only once the slot was full",
                   len(out) - unknown <= len(applied) <= len(out) and first_refusal == len(granted)
                   and all(res == "SOLD_OUT" for res in applied[first_refusal:]),
                   f"{len(applied)} audited, first refusal at {first_refusal}, granted {len(granted)}")
        else:
            notes.append("no admin (or auditor) key: the audit-order check skipped")
        again: list = []
        if retries and granted:
            first = {k: res for k, res, _ in granted[:retries]}
            by_k = {k: (k, c, req) for k, c, req in reqs if k in first}
            sample = [by_k[k] for k in first]
            again = _run(lambda: _again(v.address, sellers, sample), loop, CALL_TIMEOUT * 4 + 30)
            after2 = v.slot(slot, date, zone, poll_key)
            checks("flash sale: retried holds (same idempotency key) return the first hold, take no stock",
                   all(first[k] == hid for k, hid in again) and after2 == after,
                   f"{sum(first[k] != h for k, h in again)} differ; {after2}")
        counts = {"asks": asks, "granted": len(granted), "refused": dict(refused), "unknown": unknown,
                  "free_before": free,
                  "capacity": before["capacity"], "sold_plus_held_after": used_after}
        if release and granted:
            key_of = {k: c for k, c, _ in reqs}
            rel = _run(lambda: _release(v.address, sellers, [(hid, key_of[k]) for k, hid, _ in granted],
                                        run, max(1, min(inflight, 64))), loop, duration_s + CALL_TIMEOUT + 30)
            final = v.slot(slot, date, zone, poll_key)
            checks("flash sale: released holds return their stock",
                   rel.get("released", 0) == len(granted) and final["held"] == after["held"] - len(granted)
                   and final["sold"] == after["sold"], f"{dict(rel)}; {final}")
            counts["released"] = rel.get("released", 0)
        res = Result("flash-sale", ops=len(out), calls=len(out), planned=asks, elapsed_s=r.elapsed,
                     latency_us=latency_us(r.lat), checks=checks, cut=r.cut, errors=dict(r.errors),
                     counts=counts, notes=notes,
                     extra={"slot": slot, "product": p.product_id, "date": date.isoformat(),
                            "channels": len(sellers), "inflight": inflight, "loop": loop,
                            "availability_before": before, "availability_after": after,
                            "availability_polls": r.extra["peak"]["polls"],
                            "max_sold_plus_held_seen": r.extra["peak"]["max_used"],
                            "granted_per_s": len(granted) / sold_out_at if sold_out_at > 0 else float("nan"),
                            "sold_out_after_s": sold_out_at, "retried": len(again)})
        res.answers = [(k, res_, t) for k, res_, t in out]
        return res


# -- a holiday day -------------------------------------------------------------------------------------
async def _holiday(v: Venue, keys: Keys, product, slots: list[dict], count: int, concurrency: int,
                   exit_share: float, reentry_share: float, dupes: float, deadline_s: float,
                   rate: float | None, run: str, rng: random.Random, progress: Progress) -> Run:
    sellers = list(keys.sales)
    gate_m = meta(keys.need("gate"))
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
    pacer = _Pacer(rate)
    adv = progress.advance if progress is not _QUIET else None
    methods = ["alipay", "wechat", "cash", "card"]
    async with aio_channel(v.address) as ch:
        sales = sales_pb2_grpc.SalesServiceStub(ch)
        verify = gate_pb2_grpc.GateServiceStub(ch).Verify
        await _ready(ch, v.address)
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
            key = meta(sellers[s % len(sellers)])
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
    progress = progress or _QUIET
    _bound(count, duration_s)
    keys = target.keys
    keys.need("sales")
    keys.need("gate")
    with Venue(target) as v:
        run = _run_id()
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
            r = _run(lambda: _holiday(v, keys, p, list(slots0.values()), count, max(3, concurrency),
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


SCENARIOS: dict[str, Callable[..., Result]] = {
    "verify-unary": verify_unary,
    "verify-stream": verify_stream,
    "flash-sale": flash_sale,
    "gate-storm": gate_storm,
    "holiday": holiday,
}
