"""The scenario load generator bench/ uses (DESIGN.md 9): gRPC load against a live server.

Every scenario talks gRPC only (this package never imports the engine or the server), sets
itself up through the API, runs its load with grpc.aio clients in this process, checks the
answers it got against what the server reports, and returns a `Result`: throughput,
latency p50/p99/p99.9 and a correctness verdict (no oversell, no double admission). A
fast wrong answer is a failure.

    verify-unary   GateService.Verify, one code per call, N calls in flight; a share of
                   the codes also sent by a second caller at once (exactly one admitted)
    verify-stream  GateService.VerifyStream, batches of codes (100), S streams × W in flight;
                   packed=True: GateService.VerifyPacked, the codes' binary form packed
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

    from turnstile.clients import loadgen
    t = loadgen.Target("127.0.0.1:50051", loadgen.Keys.from_file("data/demo-keys.txt"))
    r = loadgen.flash_sale(t, capacity=1000, inflight=64)
    print(r.summary()); assert r.ok

It is built on clients.base like the other clients: set-up, reads and checks go through
`Connection` and the role clients (routing, deadlines, retries, one error type); the hot
loops run on grpc.aio channels the connection makes (`Connection.aio_channel`). By
concern:

    target.py    where the load goes and as whom: Target, Keys, bounds, LoadgenError
    venue.py     the venue through the API: shard, catalog, stock, buying, reports, audit
    load.py      the bare loads on grpc.aio: pacing, unary Verify, VerifyStream
    scans.py     verify-unary, verify-stream, gate-storm
    flash.py     flash-sale
    day.py       holiday (a compressed holiday day)
    results.py   Result, percentiles, Progress
    checks.py    Checks and the scan and count checks

The names below are loaded when first used, so `clients.loadgen.checks` and
`clients.loadgen.results` import no grpc (bench's in-process engine scenarios use them).
"""
from __future__ import annotations

import importlib

# module -> the names it gives the package
_EXPORTS = {
    "target": ("CALL_TIMEOUT", "LOOPBACK", "MAX_COUNT", "MAX_DURATION_S", "MAX_QTY",
               "SETUP_TIMEOUT", "Keys", "LoadgenError", "Target", "check_address"),
    "checks": ("Check", "Checks", "count_checks", "scan_checks"),
    "results": ("Progress", "Result", "latency_us", "percentiles"),
    "venue": ("Venue",),
    "load": ("Run", "deal", "read_codes", "save_codes", "scan_items", "stream_load",
             "stream_requests", "unary_load"),
    "scans": ("gate_storm", "verify_stream", "verify_unary"),
    "flash": ("flash_sale",),
    "day": ("holiday",),
}
_HOME = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted([*_HOME, "SCENARIOS"])


def _scenarios() -> dict:
    """Scenario name (as `turnstile loadgen` takes it) -> its function."""
    from .flash import flash_sale
    from .day import holiday
    from .scans import gate_storm, verify_stream, verify_unary
    return {"verify-unary": verify_unary, "verify-stream": verify_stream,
            "flash-sale": flash_sale, "gate-storm": gate_storm, "holiday": holiday}


def __getattr__(name: str):
    if name == "SCENARIOS":
        value = _scenarios()
    elif name in _HOME:
        value = getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
