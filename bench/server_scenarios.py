"""Server scenarios: a real `turnstile serve` on 127.0.0.1 under gRPC load (DESIGN.md 9).

    python -m bench.server_scenarios server [--quick] [--json out.json] [--no-profile]

One run, in one process (bench/run.py starts it like the engine scenarios):

1. a new temp data dir seeded with `turnstile demo --data DIR --start <today>`;
2. `turnstile serve --data DIR --port 0` as a subprocess in its own session (one process
   per shard under the supervisor), started and stopped by server/testing.py (the
   harness the integration tests use too), its clock at 07:00 of the day; as the admin
   principal, through AdminService (clients.admin): a zone
   without a live-capacity limit (the demo's main zone stops at 30,000 inside), its entry
   gate, a single-use product and a whole-day slot; eight channel principals and their API
   keys; the flash-sale slot set to a capacity of 10,000 (SetSlotCapacity). The first
   tickets are sold through SalesService Hold + Confirm (10,000 per order, signed codes);
3. the server is stopped (SIGTERM: it drains every shard) and the rest of the tickets are
   issued in bulk through the engine on the data dir (`bench.issue_bulk`, as the engine
   scenarios do; a shard dir is locked by the process that has it open);
4. the server is started again and measured with the scenarios of clients/loadgen/ (the
   one load generator; `turnstile loadgen` runs the same): grpc.aio clients in this
   process (asyncio or uvloop loop), every request to 127.0.0.1, every run bounded in
   count and time: unary Verify at 64 and at 4 calls in flight, VerifyStream in batches
   of 100, VerifyPacked (a concentrator's packed stream) in batches of 1,000, a flash sale of SalesService.Hold on one hot slot (checked through
   InventoryService.Availability during and after it, and in the shard's own order through
   AdminService.QueryAudit); each run also checks its answers against ReportService; then
   every code is scanned again (each must be ALREADY_USED);
5. the server is stopped and the shard opened with the engine: the invariants hold
   (`Shard.check`), and the tickets in `used` are exactly those the clients saw admitted.

The server and every helper process die with this process (PR_SET_PDEATHSIG), so a
timeout in bench/run.py leaves nothing running.

Diagnostics that explain the numbers: the CPU the shard process spent per call (from
/proc, main thread apart; bench/cpu.py), the group-commit batches the writer formed (read
from the shard's LMDB journal, read-only, after each run), the LMDB bytes written per call, the
grpcio floor (the same load against a bare grpc.aio server in a process of its own,
without and with the project's auth interceptor, run just before and just after each unary
Verify run of ours at the same calls in flight, and after the flash sales, while the
server is up and idle: the fastest of those runs is the floor), and a py-spy profile of the shard
process (when py-spy is installed: `pip install py-spy`).
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as _dt
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import grpc

from bench import TempDir, dumps, issue_bulk, render_codes
from bench.cpu import children, machine_busy_s, max_rss_mb, proc_cpu_s, self_cpu_s, thread_cpu_s
from turnstile.clients import loadgen
from turnstile.clients.admin import AdminClient, SlotSpec
from turnstile.clients.base import Connection
from turnstile.clients.loadgen.checks import Checks, scan_checks
from turnstile.engine import Shard, demo, keyring
from turnstile.server.testing import (Server, day_clock, master_key_file, seed_demo, start_server,
                            stop_server, term_on_parent_death)
from turnstile.v1 import admin_pb2, common_pb2, gate_pb2, gate_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
VENUE = demo.VENUE
ZONE = "bench-plaza"
GATE_IN = "bench-plaza-in"
PRODUCT = "bench-plaza-day"          # single use, one zone, one day
FLASH_CAPACITY = 10_000
CHANNELS = 8
OK = int(common_pb2.OK)
REASON = common_pb2.ScanReason.Name
MAX_MESSAGE = 16 << 20
STREAMS, WINDOW = 128, 2              # VerifyStream: streams at once, batches in flight on each
PACKED_STREAMS, PACKED_WINDOW = 8, 16  # VerifyPacked, batches of 1,000: 8 concentrators, each as far
                                      # ahead as the server reads (GateService.STREAM_AHEAD)


# -- the server under test (server/testing.py starts and stops it) --------------------------------
def shard_pid(server: Server, shard: int = 0) -> int:
    """The pid of the process serving `shard` (a child of the supervisor)."""
    for pid, cmdline in children(server.proc.pid):
        if f"--shard {shard} " in cmdline + " ":
            return pid
    raise RuntimeError(f"no process for shard {shard}")


def server_pids(server: Server) -> list[int]:
    """The supervisor and every shard process."""
    return [server.proc.pid] + [p for p, _ in children(server.proc.pid)]


# -- the shard's LMDB, read-only, while the server runs -------------------------------------------
class ShardPeek:
    """Batches the writer committed, audit rows and LMDB size, read from the shard's LMDB
    environment read-only beside the running server (engine.storage.Storage with
    readonly=True: readers registered in LMDB's lock file, the owner.lock untouched).
    Diagnostics only."""

    def __init__(self, path: str):
        from turnstile.engine.storage import Storage
        self.storage = Storage(path, readonly=True)

    def mark(self) -> dict:
        last = self.storage.last_row(b"audit/")
        return {"seq": self.storage.last_seq(), "audit": int(last[0][6:], 16) if last else 0,
                "bytes": self.storage.used_bytes(), "rows": self.storage.row_count()}

    def batches(self, after: int) -> list[int]:
        """Records (commands) per journal batch committed after `after`."""
        from turnstile.engine.journal import records
        return [sum(1 for _ in records(bytes(v))) for _, v in self.storage.journal_after(after)]

    def close(self) -> None:
        self.storage.close()


def batch_stats(sizes: list[int]) -> dict:
    if not sizes:
        return {"batches": 0}
    s = sorted(sizes)
    hist = Counter()
    for x in s:
        hist["1" if x == 1 else "2-7" if x < 8 else "8-31" if x < 32 else "32-63" if x < 64
             else "64" if x == 64 else "65-255" if x < 256 else "256+"] += 1
    return {"batches": len(s), "commands": sum(s), "mean": sum(s) / len(s),
            "p50": s[len(s) // 2], "max": s[-1], "histogram": dict(hist)}


class Measure:
    """What one run cost: wall time, CPU of the shard process (main thread apart) and of
    the rest of the server, of this load generator, of other processes on the machine; and
    what the shard's writer committed meanwhile."""

    def __init__(self, server: Server | None, peek: ShardPeek | None = None,
                 pid: int | None = None):
        self.server, self.peek = server, peek
        self.pid = pid if pid is not None else shard_pid(server)
        self.all = server_pids(server) if server else [self.pid]

    def __enter__(self) -> "Measure":
        self.m0 = self.peek.mark() if self.peek else None
        self.t0 = time.perf_counter()
        self.busy0, self.self0 = machine_busy_s(), self_cpu_s()
        self.th0 = thread_cpu_s(self.pid)
        self.srv0 = sum(proc_cpu_s(p) for p in self.all)
        return self

    def __exit__(self, *exc) -> None:
        wall = time.perf_counter() - self.t0
        th1 = thread_cpu_s(self.pid)
        srv = sum(proc_cpu_s(p) for p in self.all) - self.srv0
        mine = self_cpu_s() - self.self0
        busy = machine_busy_s() - self.busy0
        main = th1.get(self.pid, ("", 0.0))[1] - self.th0.get(self.pid, ("", 0.0))[1]
        shard = sum(c for _, c in th1.values()) - sum(c for _, c in self.th0.values())
        threads = {}
        for tid, (name, c) in th1.items():
            if tid != self.pid:
                d = c - self.th0.get(tid, (name, 0.0))[1]
                if d > 0:
                    threads[name] = threads.get(name, 0.0) + d
        self.result = {
            "wall_s": wall, "shard_cpu_s": shard, "shard_main_cpu_s": main,
            "shard_other_threads_cpu_s": {k: round(v, 3) for k, v in threads.items()},
            "server_cpu_s": srv, "client_cpu_s": mine,
            "other_load": max(0.0, (busy - srv - mine) / wall) if wall > 0 else float("nan")}
        if self.peek:
            m1 = self.peek.mark()
            self.result["batch"] = batch_stats(self.peek.batches(self.m0["seq"]))
            self.result["commits"] = m1["seq"] - self.m0["seq"]
            self.result["audit_records"] = m1["audit"] - self.m0["audit"]
            self.result["lmdb_growth_bytes"] = m1["bytes"] - self.m0["bytes"]
            self.result["rows_added"] = m1["rows"] - self.m0["rows"]


def _cost(res: dict, calls: int, items: int | None = None) -> dict:
    """Per-call and per-item costs of a measured run."""
    w = res["wall_s"]
    out = {"shard_cores": res["shard_cpu_s"] / w, "shard_main_cores": res["shard_main_cpu_s"] / w,
           "client_cores": res["client_cpu_s"] / w,
           "shard_us_per_call": res["shard_cpu_s"] / calls * 1e6,
           "shard_main_us_per_call": res["shard_main_cpu_s"] / calls * 1e6,
           "client_us_per_call": res["client_cpu_s"] / calls * 1e6}
    if items:
        out["shard_us_per_item"] = res["shard_cpu_s"] / items * 1e6
    return out


# -- set-up through the API ---------------------------------------------------------------------
def setup_catalog(server: Server, day: _dt.date, flash_slot: str) -> dict:
    """As the admin principal (clients.admin): the bench zone, gate, product and slot,
    channel principals with their keys, and the flash-sale slot's capacity."""
    plaza_slot = f"{ZONE}-{day:%Y%m%d}"
    start = demo.local_time(day, 0)
    with Connection(server.address, server.keys["admin"], timeout=30) as conn:
        a = AdminClient(conn)
        a.create_zone(VENUE, ZONE, "Bench plaza (no live-capacity limit)", key="bench-zone")
        a.create_gate(VENUE, ZONE, GATE_IN, mode="in", key="bench-gate")
        a.create_product(VENUE, PRODUCT, [ZONE], name="Bench plaza day ticket", price_fen=1000,
                         rule=admin_pb2.EntryRule(max_entries=1, valid_days=1, slot_grace_s=0),
                         refundable=True, key="bench-product")
        a.create_slots(VENUE, [SlotSpec(plaza_slot, ZONE, day, start, start + 86400, 10 ** 9)],
                       key="bench-slots")
        channel_keys = []
        for k in range(CHANNELS):
            a.create_principal(f"bench-ch{k}", "channel", venue_ids=[VENUE], channel=f"ch{k}")
            channel_keys.append(a.create_api_key(f"bench-ch{k}").secret)
        c = a.set_slot_capacity(VENUE, flash_slot, FLASH_CAPACITY, key="bench-flash-capacity")
    return {"plaza_slot": plaza_slot, "channel_keys": channel_keys,
            "flash_slot": {"slot": flash_slot, "capacity": c.capacity, "sold": c.sold, "held": c.held}}


def sell_real(server: Server, day: _dt.date, count: int) -> list[tuple[int, str]]:
    """Sell `count` bench tickets through SalesService Hold + Confirm (signed codes, orders
    of 10,000, as the demo OTA) with clients.loadgen; (ticket id, code) each."""
    with loadgen.Venue(target(server)) as v:
        bought = v.buy(count, v.product(PRODUCT), day, "bench")
    return [(tid, code) for tid, code, _ in bought]


def bulk_issue(data: str, slot: str, signed: int, mac_only: int) -> tuple[list, list, dict]:
    """With the server stopped: issue tickets in bulk through the engine (bench.issue_bulk)
    and render their codes; `signed` signed codes, then `mac_only` MAC-only codes."""
    t = time.perf_counter()
    shard = Shard.open(os.path.join(data, "shard-0"), shard_id=0,
                       master_key=keyring.read_key_file(master_key_file(data)))
    try:
        n = signed + mac_only
        first = issue_bulk(shard, n, product=PRODUCT, slot=slot, channel="bench-bulk")
        t1 = time.perf_counter()
        a = render_codes(shard, first, signed, signed=True)
        t2 = time.perf_counter()
        b = render_codes(shard, first + signed, mac_only, signed=False)
        t3 = time.perf_counter()
        violations = shard.check()
    finally:
        shard.close()
    return ([(first + k, c) for k, c in enumerate(a)],
            [(first + signed + k, c) for k, c in enumerate(b)],
            {"issue_s": t1 - t, "render_signed_s": t2 - t1, "render_mac_s": t3 - t2,
             "check_violations": [str(v) for v in violations], "total_s": time.perf_counter() - t})


# -- load: clients/loadgen/, the one load generator (bench adds its measurements) ------------
def target(server: Server, sales: list[str] | None = None) -> loadgen.Target:
    """The live server as a load target: the demo gate, the admin (reports, audit log) and
    the given channel keys (else the demo OTA)."""
    return loadgen.Target(server.address, loadgen.Keys(
        gate=server.keys["demo-gate"], admin=server.keys["admin"],
        sales=list(sales or [server.keys["demo-ota"]])), VENUE)


def _day_of(at: int) -> _dt.date:
    """The venue-local day of a scan time."""
    return _dt.datetime.fromtimestamp(at + demo.UTC_OFFSET, _dt.timezone.utc).date()


def _scans(r: loadgen.Result, runs_failed: list[str] | None, label: str) -> list[tuple[int, int, int]]:
    """(ticket asked, reason, ticket answered) of the scans a run got answers to; the run's
    own failed checks (clients.loadgen) noted in `runs_failed`."""
    if runs_failed is not None and not r.ok:
        runs_failed += [f"{label}: {c.name} ({c.detail})" for c in r.checks if not c.passed]
    if r.errors and runs_failed is not None:
        runs_failed.append(f"{label}: RPC errors {r.errors}")
    return [a for a in r.answers if a[1] is not None]


def verify_unary(server: Server, peek: ShardPeek, codes: list, *, inflight: int, loop: str,
                 at: int, deadline_s: float, dupes: float = 0.01, seed: int = 7,
                 label: str = "", runs_failed: list[str] | None = None) -> tuple[dict, list]:
    meas = Measure(server, peek)
    r = loadgen.verify_unary(target(server), tickets=codes, at=at, gate=GATE_IN, product=PRODUCT,
                             date=_day_of(at), inflight=inflight, dupes=dupes, seed=seed, loop=loop,
                             duration_s=deadline_s, around=meas)
    m = meas.result
    res = {"scenario": "server-verify", "label": label, "loop": loop, "inflight": inflight,
           "calls_planned": r.planned, "calls": r.calls, "cut_by_deadline": r.cut,
           "elapsed_s": r.elapsed_s, "throughput_per_s": r.throughput_per_s,
           "latency_us": r.latency_us, "loadgen_ok": r.ok, "errors": r.errors, **m,
           **_cost(m, max(1, r.calls))}
    return res, _scans(r, runs_failed, f"Verify {label}")


def verify_stream(server: Server, peek: ShardPeek, codes: list, *, streams: int, per: int,
                  window: int, loop: str, at: int, deadline_s: float, label: str = "",
                  expect: str = "admit", runs_failed: list[str] | None = None,
                  packed: bool = False) -> tuple[dict, list]:
    """VerifyStream (packed: VerifyPacked, the codes' binary form) through clients.loadgen,
    every answer checked there."""
    meas = Measure(server, peek)
    r = loadgen.verify_stream(target(server), tickets=codes, at=at, gate=GATE_IN, product=PRODUCT,
                              date=_day_of(at), streams=streams, per_call=per, window=window,
                              loop=loop, duration_s=deadline_s, expect=expect, around=meas,
                              packed=packed)
    m = meas.result
    res = {"scenario": "server-stream", "label": label, "loop": loop, "streams": r.extra["streams"],
           "method": "VerifyPacked" if packed else "VerifyStream",
           "per_call": per, "window": window, "codes_planned": r.planned, "codes": r.ops,
           "calls": r.calls, "cut_by_deadline": r.cut, "elapsed_s": r.elapsed_s,
           "throughput_per_s": r.throughput_per_s, "calls_per_s": r.extra["calls_per_s"],
           "latency_us": r.latency_us, "loadgen_ok": r.ok, "errors": r.errors, **m,
           **_cost(m, max(1, r.calls), r.ops)}
    return res, _scans(r, runs_failed, f"{res['method']} {label}")


def flash_sale(server: Server, peek: ShardPeek, *, channel_keys: list[str], day: _dt.date,
               slot: str | None, asks_total: int, inflight: int, loop: str, deadline_s: float,
               checks: Checks, buy: bool = False) -> dict:
    """clients.loadgen's flash sale on the bench's flash slot (capacity set by
    setup_catalog), or with `buy` (every ask an order, SalesService.Buy) on a new slot
    of the same capacity it creates; its checks join the bench's."""
    meas = Measure(server, peek)
    r = loadgen.flash_sale(target(server, channel_keys), slot=slot, capacity=FLASH_CAPACITY,
                           product="adult", date=day, count=asks_total, inflight=inflight,
                           loop=loop, duration_s=deadline_s, ttl_s=3600, retries=200, seed=11,
                           around=meas, buy=buy)
    checks.extend(r.checks)
    checks(f"flash sale: every {'Buy' if buy else 'Hold'} answered (no RPC errors)", not r.errors,
           r.errors)
    m = meas.result
    x = r.extra
    return {"scenario": "server-holds", "method": "Buy" if buy else "Hold", "loop": loop,
            "inflight": inflight,
            "channels": x["channels"], "asks_planned": asks_total, "calls": r.calls,
            "cut_by_deadline": r.cut, "elapsed_s": r.elapsed_s,
            "throughput_per_s": r.throughput_per_s, "granted": r.counts["granted"],
            "refused": r.counts["refused"], "granted_per_s": x["granted_per_s"],
            "sold_out_after_s": x["sold_out_after_s"],
            "availability_before": x["availability_before"],
            "availability_after": x["availability_after"],
            "availability_polls": x["availability_polls"],
            "max_sold_plus_held_seen": x["max_sold_plus_held_seen"], "retried": x["retried"],
            "latency_us": r.latency_us, **m, **_cost(m, max(1, r.calls))}

# -- the grpcio floor -----------------------------------------------------------------------------
def floor_server(mode: str, control: str | None) -> None:
    """A grpc.aio GateService on 127.0.0.1:0 (uvloop, the server's message options) whose
    Verify answers a constant: what grpcio itself costs per call. mode `auth` adds the
    project's AuthInterceptor (server/auth.py) over the data dir's control store."""
    import uvloop

    class Gate(gate_pb2_grpc.GateServiceServicer):
        async def Verify(self, request, context):
            return gate_pb2.VerifyResponse(reason=0, ticket_id=1, persons=1, product_id=PRODUCT,
                                           shard=0)

    async def main():
        interceptors = []
        if mode == "auth":
            from turnstile.server.auth import AuthInterceptor
            from turnstile.server.control import ControlStore
            interceptors = [AuthInterceptor(ControlStore(control))]
        server = grpc.aio.server(interceptors=interceptors, options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.max_send_message_length", MAX_MESSAGE)])
        gate_pb2_grpc.add_GateServiceServicer_to_server(Gate(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        print(f"listening on 127.0.0.1:{port}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await asyncio.wait_for(stop.wait(), 600)       # bounded: stops by itself
        except asyncio.TimeoutError:
            pass
        await server.stop(1)

    uvloop.run(main())


def grpc_floor(mode: str, data: str, key: str, codes: list, *, inflight: int, loop: str,
               at: int, deadline_s: float) -> dict:
    proc = subprocess.Popen([sys.executable, "-m", "bench.server_scenarios", "floor-server",
                             "--mode", mode, "--control", os.path.join(data, "control")],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=term_on_parent_death)
    try:
        line = proc.stdout.readline()
        if not line.startswith("listening on "):
            raise RuntimeError(f"floor server did not start: {line!r}")
        address = line.split()[2]
        work = loadgen.deal(loadgen.scan_items(codes, at), inflight, 0.0, random.Random(3))
        with Connection(address, key) as conn, Measure(None, None, pid=proc.pid) as meas:
            run = loadgen.unary_load(conn, work, gate=GATE_IN, deadline_s=deadline_s, loop=loop)
        r = meas.result
        calls = len(run.out)
        return {"scenario": "server-floor", "mode": mode, "loop": loop, "inflight": inflight,
                "calls": calls, "cut_by_deadline": run.cut, "elapsed_s": run.elapsed,
                "throughput_per_s": calls / run.elapsed, "errors": dict(run.errors),
                "latency_us": loadgen.latency_us(run.lat), **r, **_cost(r, max(1, calls))}
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


# -- py-spy -----------------------------------------------------------------------------------------
def py_spy() -> str | None:
    exe = Path(sys.executable).with_name("py-spy")
    return str(exe) if exe.exists() else shutil.which("py-spy")


_COMPONENTS = (
    ("server/", "server handlers + auth interceptor (server/*.py)"),
    ("engine/", "engine: writer, state machine, journal, audit (engine/*.py)"),
    ("grpc/", "grpcio Python layer (grpc/*.py)"),
    ("google/protobuf", "protobuf (Python layer)"),
)


def summarise_profile(path: str, main_tid: int) -> dict:
    """Own-time shares of a py-spy raw profile (--threads): per thread, per component of
    the main thread, and the main thread's top functions. A sample whose only Python frame
    is the event loop's `run` is time in C under the loop: grpcio's Cython/C core, uvloop
    and protobuf's C code."""
    threads: Counter = Counter()
    comp: Counter = Counter()
    own: Counter = Counter()
    total = main = 0
    with open(path) as f:
        for line in f:
            stack, _, n = line.rstrip().rpartition(" ")
            if not stack:
                continue
            n = int(n)
            frames = stack.split(";")
            thread = frames[0]
            total += n
            threads[thread] += n
            if f"({main_tid})" not in thread and "MainThread" not in thread:
                continue
            main += n
            leaf = frames[-1]
            own[leaf] += n
            if "runners.py" in leaf or leaf.startswith("run (uvloop"):
                comp["grpcio C core + uvloop + protobuf C (no Python frame under the loop)"] += n
                continue
            for fr in reversed(frames[1:]):
                hit = next((name for key, name in _COMPONENTS if f"({key}" in fr or f" {key}" in fr
                            or f"/{key}" in fr), None)
                if hit:
                    comp[hit] += n
                    break
            else:
                comp["asyncio (Python parts) and other stdlib"] += n
    return {"samples": total, "main_samples": main,
            "threads": {t: n / total for t, n in threads.most_common()} if total else {},
            "components": {c: n / main for c, n in comp.most_common()} if main else {},
            "top_own": [(fn, n / main) for fn, n in own.most_common(15)] if main else []}


def profile_run(server: Server, peek: ShardPeek, codes: list, *, inflight: int, loop: str,
                at: int, out: str, runs_failed: list[str] | None = None) -> tuple[dict | None, list]:
    exe = py_spy()
    if not exe:
        return None, []
    pid = shard_pid(server)
    raw = out + ".txt"
    # as long as the run lasts at most; py-spy stops by itself
    est = max(3, min(20, int(len(codes) / 1500)))
    spy = subprocess.Popen([exe, "record", "--pid", str(pid), "--duration", str(est), "--rate", "200",
                            "--format", "raw", "--threads", "--nonblocking", "-o", raw],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)                         # py-spy attaches
    res, answers = verify_unary(server, peek, codes, inflight=inflight, loop=loop, at=at,
                                deadline_s=est, dupes=0.0, label="under py-spy",
                                runs_failed=runs_failed)
    try:
        spy.wait(est + 30)
    except subprocess.TimeoutExpired:
        spy.kill()
        spy.wait()
    if not os.path.exists(raw):
        return {"error": "py-spy wrote no profile", "run": res}, answers
    prof = summarise_profile(raw, pid)
    prof["run"] = {k: res[k] for k in ("calls", "throughput_per_s", "shard_us_per_call",
                                       "shard_main_us_per_call")}
    prof["seconds"] = est
    return prof, answers


# -- the whole run --------------------------------------------------------------------------------
def server_bench(*, quick: bool, profile: bool = True, loops=("uvloop", "asyncio"),
                 deadline_s: float = 60) -> dict:
    # the venue's today (UTC+8): the bench slot is sold in-process by the real clock, which
    # finds yesterday's (the UTC date's, from 16:00 UTC) slot ended
    day = demo.venue_today(time.time())
    at = demo.local_time(day, 9, 30)                 # inside the bench slot, venue-local day
    flash_slot = demo.slot_id("main", day, 12)
    scale = 5 if quick else 1
    n_real = 20_000 // scale                         # sold through Hold + Confirm
    n_u64 = 24_000 // scale                          # unary, 64 in flight, first loop
    n_u64b = 12_000 // scale                         # unary, 64 in flight, the other loop
    n_u4 = 5_000 // scale                            # unary, 4 in flight (latency)
    n_u16 = 10_000 // scale                          # unary, 16 in flight
    n_prof = 12_000 // scale                         # unary under py-spy (not a target)
    n_warm = 2_000 // scale                          # unary warm-up after the restart
    n_stream = 600_000 // scale                      # VerifyStream, MAC-only codes
    n_stream1 = 20_000 // scale                      # VerifyStream, one stream (diagnostic)
    n_stream_signed = 50_000 // scale                # VerifyStream, signed codes (diagnostic)
    n_packed = 1_500_000 // scale                    # VerifyPacked, MAC-only codes, batches of 1,000
    n_floor, n_floor16, n_floor4 = 8_000 // scale, 5_000 // scale, 3_000 // scale   # grpcio floor runs
    n_signed = n_warm + n_u64 + n_u64b + n_u4 + n_u16 + n_prof + n_stream_signed
    asks = int(FLASH_CAPACITY * 1.2)
    checks = Checks()
    runs: list[dict] = []
    setup: dict[str, Any] = {"day": day.isoformat(), "scan_time_utc": at}
    prof = None
    floors: list[dict] = []
    floor_reps: dict[tuple[int, str], list[dict]] = {}
    with TempDir(prefix="turnstile-server-bench-") as data:
        t = time.perf_counter()
        seed_demo(data, day)
        setup["demo_s"] = time.perf_counter() - t
        # the server decides scans and sales at its own time: 07:00 on the day when the run
        # starts (on both starts), and scans may name any time of that day
        clock = day_clock(day)
        t = time.perf_counter()
        server = start_server(data, day, clock, die_with_parent=True)
        setup["start_s"] = time.perf_counter() - t
        try:
            setup["shards"] = len(server.shards)
            cat = setup_catalog(server, day, flash_slot)
            setup["flash_slot"] = cat["flash_slot"]
            t = time.perf_counter()
            real = sell_real(server, day, n_real)
            setup["real_sale_s"] = time.perf_counter() - t
            setup["real_sale_us_per_ticket"] = setup["real_sale_s"] / n_real * 1e6
            setup["real_sale_tickets"] = n_real
        finally:
            stop_server(server)
        checks("tickets sold through Hold + Confirm", len(real) == n_real, len(real))
        bulk_signed, bulk_mac, b = bulk_issue(data, cat["plaza_slot"], max(0, n_signed - n_real),
                                              n_stream + n_stream1 + n_packed)
        setup["bulk"] = b
        checks("engine check() after the real sale and the bulk issue", not b["check_violations"],
               b["check_violations"])
        signed = real + bulk_signed
        rng = random.Random(5)
        rng.shuffle(signed)                          # real-path and bulk tickets mixed
        parts, lo = {}, 0
        for name, n in (("warm", n_warm), ("u64", n_u64), ("u64b", n_u64b), ("u4", n_u4), ("u16", n_u16), ("prof", n_prof),
                        ("stream_signed", n_stream_signed)):
            parts[name] = signed[lo:lo + n]
            lo += n
        answers: list[tuple[int, int, int]] = []       # (ticket asked, reason, ticket answered)
        runs_failed: list[str] = []                    # the runs' own checks (clients.loadgen)
        t = time.perf_counter()
        server = start_server(data, day, clock, die_with_parent=True)
        setup["restart_s"] = time.perf_counter() - t
        try:
            peek = ShardPeek(os.path.join(data, "shard-0"))
            try:
                # warm-up (not measured; its scans are checked like the others)
                _, out = verify_unary(server, peek, parts["warm"], inflight=64, loop=loops[0],
                                      at=at, deadline_s=deadline_s, label="warm-up",
                                      runs_failed=runs_failed)
                answers += out
                # the grpcio floor beside each unary run of ours, the server up and idle
                # (same load generator, same codes' form): the machine's speed drifts by up
                # to 3x over a bench run, so a floor measured minutes later is no measure
                n_floor_at = {64: n_floor, 16: n_floor16, 4: n_floor4}

                def floor(inflight: int) -> None:
                    for mode in ("bare", "auth"):
                        floor_reps.setdefault((inflight, mode), []).append(grpc_floor(
                            mode, data, server.keys["demo-gate"], signed[:n_floor_at[inflight]],
                            inflight=inflight, loop=loops[0], at=at, deadline_s=deadline_s))

                # 1. unary Verify, 64 in flight in each loop, then 4 (latency) and 16 in
                # flight, each between two runs of the floor at the same calls in flight
                for inflight, label, rounds in (
                        (64, "throughput", ((loops[0], "u64"), (loops[-1], "u64b"))),
                        (4, "latency", ((loops[0], "u4"),)), (16, "mid load", ((loops[0], "u16"),))):
                    floor(inflight)
                    for loop, part in rounds:
                        r, out = verify_unary(server, peek, parts[part], inflight=inflight,
                                              loop=loop, at=at, deadline_s=deadline_s,
                                              label=label, runs_failed=runs_failed)
                        runs.append(r)
                        answers += out
                    floor(inflight)
                # 2. VerifyStream in batches of 100
                for codes, label, streams, window in (
                        (bulk_mac[:n_stream], "MAC-only codes", STREAMS, WINDOW),
                        (parts["stream_signed"], "signed codes", STREAMS, WINDOW),
                        # a concentrator: one stream, 16 batches in flight (the server reads
                        # that far ahead, GateService.STREAM_AHEAD)
                        (bulk_mac[n_stream:n_stream + n_stream1], "one stream", 1, 16)):
                    r, out = verify_stream(server, peek, codes, streams=streams, per=100,
                                           window=window, loop=loops[0], at=at,
                                           deadline_s=deadline_s, label=label,
                                           runs_failed=runs_failed)
                    runs.append(r)
                    answers += out
                # 2b. a concentrator's packed stream: batches of 1,000 in their binary form
                r, out = verify_stream(server, peek, bulk_mac[n_stream + n_stream1:],
                                       streams=PACKED_STREAMS, per=1000, window=PACKED_WINDOW,
                                       loop=loops[0], at=at, deadline_s=deadline_s,
                                       label="MAC-only codes", runs_failed=runs_failed, packed=True)
                runs.append(r)
                answers += out
                # 3. the flash sale
                runs.append(flash_sale(server, peek, channel_keys=cat["channel_keys"], day=day,
                                       slot=flash_slot, asks_total=asks, inflight=64,
                                       loop=loops[0], deadline_s=deadline_s, checks=checks))
                # 3b. the same sale by orders: each ask SalesService.Buy (held and paid in one)
                runs.append(flash_sale(server, peek, channel_keys=cat["channel_keys"], day=day,
                                       slot=None, asks_total=asks, inflight=64, loop=loops[0],
                                       deadline_s=deadline_s, checks=checks, buy=True))
                floor(64)                   # the sales' floor, measured right after them
                # diagnostics: where the shard's time goes
                if profile:
                    prof, out = profile_run(server, peek, parts["prof"], inflight=64,
                                            loop=loops[0], at=at, out=os.path.join(data, "py-spy"),
                                            runs_failed=runs_failed)
                    answers += out
                # every scanned code once more: ALREADY_USED, the same ticket
                scanned = sorted({tid for tid, _, _ in answers})
                code_of = {tid: c for tid, c in signed + bulk_mac}
                again_codes = [(tid, code_of[tid]) for tid in scanned]
                t = time.perf_counter()
                _, again = verify_stream(server, peek, again_codes, streams=8, per=1000, window=2,
                                         loop=loops[0], at=at + 60, deadline_s=120,
                                         label="second scans", expect="used",
                                         runs_failed=runs_failed)
                setup["second_scan_s"] = time.perf_counter() - t
            finally:
                peek.close()
        finally:
            stop_server(server)
        rc = server.proc.returncode
        setup["stop_exit_status"] = rc
        setup["server_log_tail"] = server.log[-5:]

        # the checks: over every run's answers, no double admit (clients.loadgen's scan
        # checks); second scans ALREADY_USED; the engine agrees
        _, counts = scan_checks([(tid, tid, reason, got) for tid, reason, got in answers], "admit",
                                checks)
        refused = counts["refused"]
        admitted = {tid for tid, reason, _ in answers if reason == OK}
        asked = {tid for tid, _, _ in answers}
        second: Counter = Counter()
        n_again = 0
        wrong_again = 0
        for tid, reason, g in again:
            n_again += 1
            second[REASON(reason)] += 1
            wrong_again += tid != g
        checks("every second scan ALREADY_USED (same ticket)",
               n_again == len(asked) and set(second) == {"ALREADY_USED"} and not wrong_again,
               f"{n_again} rescanned of {len(asked)}: {dict(second)}")
        checks("every scan run's own checks passed (clients.loadgen: answers, ReportService counts)",
               not runs_failed, "; ".join(runs_failed[:5]))
        checks("server stopped cleanly (SIGTERM: drain, last commit, exit 0)", rc == 0, rc)
        t = time.perf_counter()
        shard = Shard.open(os.path.join(data, "shard-0"), shard_id=0,
                           master_key=keyring.read_key_file(master_key_file(data)))
        try:
            used = shard.state.tickets.used
            want = admitted
            checks("engine after the run: used = the tickets the clients saw admitted",
                   len(used) == len(want) and all(t in used for t in want),
                   f"used {len(used)}, admitted {len(want)}")
            v = shard.check()
            checks("engine after the run: shard.check() == [] (sold + held <= capacity, "
                   "used ⊆ issued, inside ⊆ used, ...)", v == [], v[:5])
            idx = shard.state.slot_idx[flash_slot]
            c = shard.state.slots.slot(idx)
            checks("engine after the run: flash slot sold + held == capacity == 10,000",
                   c["sold"] + c["held"] == c["capacity"] == FLASH_CAPACITY, c)
        finally:
            shard.close(snapshot=False)
        setup["final_check_s"] = time.perf_counter() - t

        # each floor: the fastest of its runs beside ours (a neighbour's burst only slows
        # a run), every run's rate kept
        for rs in floor_reps.values():
            best = max(rs, key=lambda r: r["throughput_per_s"])
            best["repetitions_per_s"] = [r["throughput_per_s"] for r in rs]
            floors.append(best)
    return {"scenario": "server", "quick": quick, "runs": runs, "floors": floors, "profile": prof,
            "setup": setup, "admitted": len(admitted), "refused": dict(refused),
            "rescanned": n_again, "checks": checks.as_dicts(), "ok": checks.ok,
            "max_rss_mb": max_rss_mb()}


# -- output ----------------------------------------------------------------------------------------
def _line(r: dict) -> str:
    lat = r["latency_us"]
    unit = "codes/s" if r["scenario"] == "server-stream" else "/s"
    extra = ""
    if r["scenario"] == "server-stream":
        extra = f" ({r['calls_per_s']:,.0f} calls/s, {r['streams']} streams × window {r['window']})"
    if r["scenario"] == "server-holds":
        extra = f" (granted {r['granted']:,}, refused {r['refused']}, {r['granted_per_s']:,.0f} granted/s)"
    head = {"server-verify": f"Verify {r.get('label', '')} {r.get('inflight')} in flight",
            "server-stream": f"{r.get('method', 'VerifyStream')} {r.get('per_call')} per call "
                             f"{r.get('label', '')}",
            "server-holds": f"{r.get('method', 'Hold')} flash sale {r.get('inflight')} in flight",
            "server-floor": f"grpcio floor ({r.get('mode')}) {r.get('inflight')} in flight"}[r["scenario"]]
    s = (f"  {head} [{r['loop']}]: {r['throughput_per_s']:,.0f} {unit}{extra}"
         f"{' (cut)' if r.get('cut_by_deadline') else ''}\n"
         f"      p50 {lat['p50'] / 1000:.2f} ms p99 {lat['p99'] / 1000:.2f} ms p99.9 {lat['p999'] / 1000:.2f} ms;"
         f" shard {r['shard_cores']:.2f} cores ({r['shard_us_per_call']:,.0f} µs/call, main thread "
         f"{r['shard_main_us_per_call']:,.0f}), client {r['client_cores']:.2f} cores "
         f"({r['client_us_per_call']:,.0f} µs/call), other load {r['other_load']:.2f}")
    if r.get("batch", {}).get("batches"):
        b = r["batch"]
        s += (f"\n      commits {b['batches']:,}, batch mean {b['mean']:.1f} p50 {b['p50']} max {b['max']};"
              f" LMDB +{r['lmdb_growth_bytes'] / 2**20:.1f} MiB "
              f"({r['lmdb_growth_bytes'] / max(1, r['calls']):,.0f} B/call), audit records "
              f"{r['audit_records']:,}")
    return s


def summary(res: dict) -> str:
    lines = [f"== server (gRPC, real `turnstile serve`, {res['setup'].get('shards')} shard processes)"]
    for r in res["runs"] + res["floors"]:
        lines.append(_line(r))
    p = res.get("profile")
    if p and "components" in p:
        lines.append("  py-spy, shard main thread: " + "; ".join(
            f"{k} {v:.0%}" for k, v in p["components"].items()))
    for c in res["checks"]:
        lines.append(f"  [{'ok' if c['passed'] else 'FAIL'}] {c['check']}"
                     + (f" ({c['detail']})" if c["detail"] and not c["passed"] else ""))
    lines.append(f"  max RSS {res['max_rss_mb']:,.0f} MB")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.server_scenarios", description=__doc__.split("\n")[0])
    ap.add_argument("scenario", choices=["server", "floor-server"])
    ap.add_argument("--quick", action="store_true", help="smaller sizes (smoke)")
    ap.add_argument("--no-profile", action="store_true", help="skip the py-spy run")
    ap.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop",
                    help="the load generator's main loop (the other one is measured once too)")
    ap.add_argument("--json", default=None, help="write the result here as JSON")
    ap.add_argument("--mode", default="bare", help=argparse.SUPPRESS)
    ap.add_argument("--control", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.scenario == "floor-server":
        floor_server(a.mode, a.control)
        return 0
    other = "asyncio" if a.loop == "uvloop" else "uvloop"
    result = server_bench(quick=a.quick, profile=not a.no_profile, loops=(a.loop, other))
    if a.json:
        with open(a.json, "w") as f:
            f.write(dumps(result))
    print(summary(result))
    if not result["ok"]:
        print("CORRECTNESS CHECK FAILED", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
