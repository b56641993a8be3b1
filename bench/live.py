"""The live view under a gate storm (issue 15): a real `turnstile serve` on 127.0.0.1 scans
as fast as it can while dashboards watch it (DESIGN.md 9).

    python -m bench.live [--quick] [--json out.json] [--no-browser] [--profile]

One run, in one process (bench/run.py starts it like the other scenarios):

1. set-up as bench/server_scenarios.py does it (its helpers): a new data dir seeded with the
   demo, `turnstile serve` with its clock at 07:00 of the day, the bench zone, gate,
   single-use product and whole-day slot through AdminService; besides, a quiet zone for
   the probe: a single-use product of the demo's `boat` zone with a whole-day slot (open at
   the server's clock), and tickets for it sold through SalesService; the server stopped,
   the storm's tickets issued in bulk through the engine (`bench.issue_bulk`), the server
   started again;
2. the watchers, in a process of their own (`python -m bench.live watch`, driven over its
   stdin and stdout) so that their CPU is not the load generator's: K gRPC
   ReportService.WatchLive streams (min_interval_ms 250, a channel each, the demo viewer's
   key), and, where `turnstile dashboard` is installed, M server-sent-event readers of its
   /api/live (aiohttp, each logged in on its own) and one page in headless Chromium
   (Playwright, Debian's /usr/bin/chromium);
3. storm phases A B B A, then P: A without any watcher, B with the gRPC watchers and the
   SSE readers, P with those and the page too. Each phase is VerifyStream in batches of
   100 (128 streams x 2 in flight, MAC-only codes, bounded in count), then unary Verify at
   64 in flight (signed codes, bounded in time: longer in P, whose probes time the page),
   with the load generator of clients/loadgen/ in this process (uvloop), the tickets given
   without their product so that it makes no ReportService call between loads (such a
   call reads every ticket entered today on the shard's event loop, and stalls the views:
   the run checks the counts once, at the end). Scans/s in B against A is the "without
   slowing scans" figure (A B B A: a steady drift of the machine weighs on both alike);
4. during each load of B and P, the watcher process scans one probe ticket of the quiet
   zone at its gate about every 0.5 s (jittered, at the server's clock) and times, from
   the probe's answer, the first WatchLive view, SSE event and page update whose persons
   inside the quiet zone include it. The page records each change of the zone's number
   itself (a MutationObserver notes `performance.timeOrigin + performance.now()`, the wall
   clock in ms, and the start of the next animation frame; an EventSource wrapper notes
   each view's arrival), read back after the phase and mapped onto the watcher process's
   `time.time()` by the offset of the shortest of a few bracketed `page.evaluate` round
   trips;
5. correctness (a fast wrong answer is a failure): every storm ticket admitted at most
   once (clients.loadgen's scan checks, and ReportService's counts), every probe ticket
   admitted once (and ALREADY_USED when shown again), every watcher's last view shows the
   probes admitted in the quiet zone, as the server counts them; after the server stops,
   the engine's used tickets are those the clients saw admitted and `Shard.check()` is [].

With --profile, py-spy (when installed) samples the shard process through the first A and
the first B phase (both, so the means of A and B bear its cost alike): how much of the
shard's main thread the live views take.

The server, the dashboard and the watcher process die with this process
(PR_SET_PDEATHSIG), so a timeout in bench/run.py leaves nothing running.
"""
from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import grpc

from bench import TempDir, dumps
from bench.cpu import children, max_rss_mb, proc_cpu_s
from bench.server_scenarios import (GATE_IN, PRODUCT, ROOT, STREAMS, VENUE, WINDOW, ZONE, Measure,
                                    ShardPeek, _cost, _scans, bulk_issue, py_spy, setup_catalog,
                                    shard_pid, summarise_profile, target)
from turnstile.clients import loadgen
from turnstile.clients.admin import AdminClient, SlotSpec
from turnstile.clients.base import Connection
from turnstile.clients.channel import ChannelClient, Item
from turnstile.clients.loadgen import percentiles
from turnstile.clients.loadgen.checks import Checks, count_checks, scan_checks
from turnstile.clients.reports import ReportsClient
from turnstile.engine import Shard, demo, keyring
from turnstile.server.testing import (day_clock, master_key_file, seed_demo, start_server,
                                      stop_server, term_on_parent_death)
from turnstile.v1 import (admin_pb2, common_pb2, gate_pb2, gate_pb2_grpc, report_pb2,
                          report_pb2_grpc)

QUIET_ZONE = "boat"                   # the demo's lake cruise: no storm there
QUIET_GATE = "pier-1"
QUIET_PRODUCT = "bench-boat-day"      # single use, the quiet zone only, one day
WATCHERS = 8                          # K: gRPC WatchLive streams
SSE_READERS = 8                       # M: /api/live readers of the dashboard
MIN_INTERVAL_MS = 250
PROBE_EVERY_S = 0.5
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# A: no watcher; B: the gRPC watchers and the dashboard's SSE readers (A B B A: a steady drift of
# the machine weighs on the As and the Bs alike); P: B and the page in Chromium
PHASES = ("A1", "B1", "B2", "A2", "P")
OK = int(common_pb2.OK)


@dataclass(frozen=True)
class Sizes:
    """How much one run does: codes per VerifyStream part; the time bound of a unary part
    (of the P phase apart: its probes time the page) and the signed codes each may use;
    probe tickets in all; the warm-up."""

    stream: int
    unary_s: float
    unary: int
    page_unary_s: float
    page_unary: int
    probes: int
    warm_stream: int
    warm_unary: int

    def unary_of(self, phase: str) -> tuple[float, int]:
        """(time bound, codes) of a phase's unary part."""
        return (self.page_unary_s, self.page_unary) if phase == "P" else (self.unary_s, self.unary)


FULL = Sizes(stream=200_000, unary_s=7.0, unary=14_000, page_unary_s=19.0, page_unary=36_000,
             probes=160, warm_stream=20_000, warm_unary=1_000)
QUICK = Sizes(stream=40_000, unary_s=2.5, unary=5_000, page_unary_s=4.0, page_unary=8_000,
              probes=60, warm_stream=5_000, warm_unary=1_000)


# -- what is installed ------------------------------------------------------------------------
def dashboard_missing() -> str | None:
    """Why `turnstile dashboard` can't run here, or None."""
    if importlib.util.find_spec("aiohttp") is None:
        return "aiohttp is not installed (pip install 'turnstile[dashboard]')"
    if importlib.util.find_spec("turnstile.clients.dashboard.app") is None:
        return "turnstile.clients.dashboard is not there"
    return None


def browser_missing() -> str | None:
    """Why the page can't be driven in a browser here, or None."""
    if not os.path.exists(CHROMIUM):
        return f"no {CHROMIUM} (apt-get install chromium)"
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed (pip install playwright)"
    return None


# -- set-up of the quiet zone -------------------------------------------------------------------
def setup_quiet(server, day) -> str:
    """As the admin: a single-use product of the quiet zone and a whole-day slot of it (open
    whatever the server's clock says that day); the slot's id."""
    slot = f"{QUIET_PRODUCT}-{day:%Y%m%d}"
    start = demo.local_time(day, 0)
    with Connection(server.address, server.keys["admin"], timeout=30) as conn:
        a = AdminClient(conn)
        a.create_product(VENUE, QUIET_PRODUCT, [QUIET_ZONE], name="Bench lake cruise",
                         price_fen=4000, rule=admin_pb2.EntryRule(max_entries=1, valid_days=1,
                                                                  slot_grace_s=0),
                         key="bench-live-product")
        a.create_slots(VENUE, [SlotSpec(slot, QUIET_ZONE, day, start, start + 86400, 10_000)],
                       key="bench-live-slot")
    return slot


def buy_probes(server, slot: str, n: int) -> list[tuple[int, str]]:
    """`n` tickets of the quiet zone sold through SalesService (the demo OTA): (id, code)."""
    with Connection(server.address, server.keys["demo-ota"], timeout=60) as conn:
        order = ChannelClient(conn).buy(VENUE, [Item(QUIET_PRODUCT, slot, n)], "bench-live-probes")
    return [(t.ticket_id, t.code) for t in order.tickets]


def quiet_inside(server) -> int:
    """Persons inside the quiet zone as the server counts them (ReportService.LiveCounts)."""
    with Connection(server.address, server.keys["admin"], timeout=30) as conn:
        return next(z.inside for z in ReportsClient(conn).live_counts(VENUE).zones
                    if z.zone_id == QUIET_ZONE)


def rescan(server, codes: list[tuple[int, str]]) -> list[tuple[int, int, int]]:
    """Each code shown once more at the quiet zone's gate: (ticket, reason, ticket answered)."""
    out = []
    with server.channel() as ch:
        verify = gate_pb2_grpc.GateServiceStub(ch).Verify
        for tid, code in codes:
            r = verify(gate_pb2.VerifyRequest(code=code, gate_id=QUIET_GATE, direction=common_pb2.IN),
                       metadata=server.meta("demo-gate"), timeout=10)
            out.append((tid, r.reason, r.ticket_id))
    return out


# -- `turnstile dashboard`, dying with this process -------------------------------------------------
def start_dashboard(address: str, timeout: float = 30) -> tuple[subprocess.Popen, str]:
    """`turnstile dashboard --address ADDRESS --port 0` (min interval 250 ms) in a process
    that gets SIGTERM when this one dies (clients/dashboard/testing.py starts it without
    that); (process, page URL) once it prints `dashboard on URL`."""
    proc = subprocess.Popen([sys.executable, "-m", "turnstile.clients.cli", "dashboard", "--address",
                             address, "--host", "127.0.0.1", "--port", "0", "--min-interval-ms",
                             str(MIN_INTERVAL_MS)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, preexec_fn=term_on_parent_death)
    lines: "queue.Queue[str | None]" = queue.Queue()

    def read() -> None:          # to the end, so a full pipe never blocks it
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=read, name="bench-dashboard-output", daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            break
        if line is None:
            break
        seen.append(line)
        if line.startswith("dashboard on "):
            return proc, line.split()[2]
    proc.kill()
    proc.wait(10)
    raise RuntimeError("the dashboard did not start:\n" + "\n".join(seen))


def stop_process(proc: subprocess.Popen, timeout: float = 15) -> int | None:
    """SIGTERM, SIGKILL after `timeout`; the exit status."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
    return proc.returncode


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of a process and all its descendants alive now."""
    total = proc_cpu_s(pid)
    for child, _ in children(pid):
        total += tree_cpu_s(child)
    return total


# -- the watcher process, from this side --------------------------------------------------------
class Watchers:
    """`python -m bench.live watch` (see `watch_main`), driven by JSON lines: `watch` opens
    every watcher (`browser`: and the page) and answers once each has its first view; `go`
    starts the probe and a window that the rates count over, `pause` ends both (one
    window per load: no probe while the load generator sets up or checks); `stop` waits
    for the last probe to show everywhere, closes the watchers and answers what each saw;
    `quit` ends the process."""

    def __init__(self, cfg: dict, timeout: float = 60):
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.live", "watch"], cwd=ROOT,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     preexec_fn=term_on_parent_death)
        self.replies: "queue.Queue[dict | None]" = queue.Queue()
        threading.Thread(target=self._read, name="bench-watchers-output", daemon=True).start()
        self.ask(cfg, timeout)

    def _read(self) -> None:
        for line in self.proc.stdout:
            if line.startswith("{"):
                self.replies.put(json.loads(line))
            else:
                print(line, end="", file=sys.stderr)
        self.replies.put(None)

    def ask(self, msg: dict, timeout: float) -> dict:
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()
        try:
            reply = self.replies.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"the watcher process did not answer {msg.get('cmd', 'its set-up')} "
                               f"within {timeout:.0f} s") from None
        if reply is None:
            raise RuntimeError(f"the watcher process exited ({self.proc.wait(10)})")
        if reply.get("event") == "failed":
            raise RuntimeError(f"the watcher process failed: {reply.get('error')}")
        return reply

    def close(self) -> int | None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(20)
            except (OSError, subprocess.TimeoutExpired):
                pass
        return stop_process(self.proc)


# -- the watcher process, its side ----------------------------------------------------------------
# in the page, before its own script: when each live view arrived (an EventSource that notes
# its messages before the page's handler sees them), and every change of the quiet zone's
# number with the wall clock (ms) when the DOM changed and when the next frame started
RECORDER_JS = """
(() => {
  const sel = '[data-testid="zone-inside-%s"]';
  const log = window.__insideLog = [];
  const views = window.__viewTimes = [];
  let last = null;
  const now = () => performance.timeOrigin + performance.now();
  const Base = window.EventSource;
  window.EventSource = class extends Base {
    constructor(...args) {
      super(...args);
      this.addEventListener("message", () => { views.push(now()); });
    }
  };
  new MutationObserver(() => {
    const e = document.querySelector(sel);
    if (!e || e.textContent === last) return;
    last = e.textContent;
    const entry = [now(), last, 0];
    log.push(entry);
    requestAnimationFrame(() => { entry[2] = now(); });
  }).observe(document, {subtree: true, childList: true, characterData: true});
})();
""" % QUIET_ZONE


def _zone_inside(zones, zone: str = QUIET_ZONE) -> int:
    """Persons inside `zone` in a view's zones (LiveView messages, or the dashboard's JSON)."""
    for z in zones:
        if isinstance(z, dict):
            if z["zone_id"] == zone:
                return int(z["inside"])
        elif z.zone_id == zone:
            return z.inside
    raise KeyError(zone)


class _Watch:
    """The watchers of one B or P phase, in the watcher process: what each got, as
    (time.time(), persons inside the quiet zone, bytes) per view."""

    def __init__(self, cfg: dict, browser):
        self.cfg = cfg
        self.browser = browser
        self.grpc: list[list] = [[] for _ in range(cfg["watchers"])]
        self.sse: list[list] = [[] for _ in range(cfg["sse"] if cfg["dashboard"] else 0)]
        self.conn = Connection(cfg["address"], cfg["viewer_key"])
        self.errors: list[str] = []
        self.tasks: list[asyncio.Task] = []
        self.channels: list = []
        self.context = None
        self.page = None

    async def open(self) -> None:
        cfg, conn = self.cfg, self.conn
        address = conn.address_of(venue=VENUE)
        request = report_pb2.WatchLiveRequest(venue_id=VENUE, min_interval_ms=cfg["interval_ms"])

        async def watch(k: int) -> None:
            ch = conn.aio_channel(address=address, own_connection=True)
            self.channels.append(ch)
            rec = self.grpc[k]
            try:
                async for view in report_pb2_grpc.ReportServiceStub(ch).WatchLive(
                        request, metadata=conn.metadata):
                    rec.append((time.time(), _zone_inside(view.zones), view.ByteSize()))
            except grpc.aio.AioRpcError as e:
                if e.code() != grpc.StatusCode.CANCELLED:
                    self.errors.append(f"WatchLive {k}: {e.code().name} {e.details()}")

        self.tasks += [asyncio.create_task(watch(k)) for k in range(cfg["watchers"])]
        if cfg["dashboard"]:
            self.tasks += [asyncio.create_task(self._sse(k)) for k in range(cfg["sse"])]
        if self.browser is not None:
            await self._open_page()
        deadline = time.monotonic() + 30
        while any(not r for r in self.grpc + self.sse):
            if self.errors or time.monotonic() > deadline:
                raise RuntimeError("watchers without a first view: " + "; ".join(self.errors))
            await asyncio.sleep(0.02)

    async def _sse(self, k: int) -> None:
        """One reader of the dashboard's /api/live, logged in on its own (a browser each)."""
        import aiohttp
        base, rec = self.cfg["dashboard"], self.sse[k]
        try:
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
                async with s.post(base + "login", json={"key": self.cfg["viewer_key"]}) as r:
                    if r.status != 200:
                        self.errors.append(f"SSE {k}: login answered {r.status}")
                        return
                async with s.get(base + "api/live", params={"venue": VENUE},
                                 timeout=aiohttp.ClientTimeout(total=None, sock_read=None)) as r:
                    event = "message"
                    async for line in r.content:
                        line = line.rstrip(b"\r\n")
                        if not line:
                            event = "message"
                        elif line.startswith(b"event:"):
                            event = line[6:].strip().decode()
                        elif line.startswith(b"data:"):
                            if event == "message":
                                view = json.loads(line[5:])
                                rec.append((time.time(), _zone_inside(view["zones"]), len(line) - 5))
                            else:
                                self.errors.append(f"SSE {k}: event {event}: {line[5:200].decode()}")
        except aiohttp.ClientError as e:
            self.errors.append(f"SSE {k}: {e!r}")

    async def _open_page(self) -> None:
        self.context = await self.browser.new_context(viewport={"width": 1600, "height": 1000},
                                                      timezone_id="Asia/Shanghai")
        await self.context.add_init_script(RECORDER_JS)
        self.page = page = await self.context.new_page()
        await page.goto(self.cfg["dashboard"])
        await page.get_by_test_id("login-key").fill(self.cfg["viewer_key"])
        await page.get_by_test_id("login-submit").click()
        await page.wait_for_function(
            "() => document.querySelector('[data-testid=\"live-status\"]')?.dataset.state === 'live'"
            f" && document.querySelector('[data-testid=\"zone-inside-{QUIET_ZONE}\"]')", timeout=30_000)

    async def page_log(self) -> dict:
        """The page's changes of the quiet zone's number, times mapped to this process's
        `time.time()`: the page's wall clock minus its offset, taken from the round trip
        of `page.evaluate` that was shortest of several (the offset is known to half of it)."""
        best = None
        for _ in range(7):
            t0 = time.time()
            p = await self.page.evaluate("performance.timeOrigin + performance.now()")
            t1 = time.time()
            if best is None or t1 - t0 < best[0]:
                best = (t1 - t0, p / 1000 - (t0 + t1) / 2)
        rtt, offset = best
        raw = await self.page.evaluate("window.__insideLog")
        views = await self.page.evaluate("window.__viewTimes")
        return {"offset_s": offset, "rtt_s": rtt, "views": [v / 1000 - offset for v in views],
                "changes": [(d / 1000 - offset, int(text.replace(",", "")),
                             (f / 1000 - offset) if f else None) for d, text, f in raw]}

    async def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for ch in self.channels:
            await ch.close()
        if self.context is not None:
            await self.context.close()
        self.conn.close()


async def _probe(cfg: dict, tickets: list, out: list, stop: asyncio.Event) -> None:
    """About every PROBE_EVERY_S (uniformly 0.75 to 1.25 times it, so that the probes fall
    at every phase of a stream's 250 ms cycle, not at one) one fresh ticket of the quiet
    zone at its gate, at the server's clock: (ticket, reason, ticket answered, sent,
    answered) each, times from time.time()."""
    conn = Connection(cfg["address"], cfg["gate_key"])
    rng = random.Random(len(tickets))
    try:
        async with conn.aio_channel(venue=VENUE) as ch:
            verify = gate_pb2_grpc.GateServiceStub(ch).Verify
            due = time.monotonic()
            while tickets and not stop.is_set():
                tid, code = tickets.pop(0)
                t0 = time.time()
                try:
                    r = await verify(gate_pb2.VerifyRequest(code=code, gate_id=cfg["gate"],
                                                            direction=common_pb2.IN),
                                     metadata=conn.metadata, timeout=10)
                    out.append((tid, r.reason, r.ticket_id, t0, time.time()))
                except grpc.aio.AioRpcError as e:
                    out.append((tid, None, e.code().name, t0, time.time()))
                due += cfg["probe_every_s"] * (0.75 + 0.5 * rng.random())
                try:
                    await asyncio.wait_for(stop.wait(), max(0.0, due - time.monotonic()))
                except asyncio.TimeoutError:
                    pass
    finally:
        conn.close()


async def watch_main() -> None:
    """The watcher process: reads commands from stdin, answers on stdout (one JSON object a
    line). Its first line is its configuration."""
    loop = asyncio.get_running_loop()

    async def read() -> dict:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        return json.loads(line) if line else {"cmd": "quit"}

    def say(msg: dict) -> None:
        sys.stdout.write(json.dumps(msg) + "\n")
        sys.stdout.flush()

    cfg = await read()
    tickets = [tuple(t) for t in cfg["probes"]]
    pw = browser = None
    if cfg["browser"]:
        from playwright.async_api import async_playwright
        pw = await async_playwright().start()
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    say({"event": "started"})
    w: _Watch | None = None
    probes: list = []
    windows: list[list[float]] = []
    stop = asyncio.Event()
    prober: asyncio.Task | None = None
    try:
        while True:
            msg = await read()
            what = msg.get("cmd")
            try:
                if what == "watch":
                    t = time.perf_counter()
                    w = _Watch(cfg, browser if msg.get("browser") else None)
                    probes, windows = [], []
                    await w.open()
                    say({"event": "ready", "setup_s": time.perf_counter() - t})
                elif what == "go":
                    stop = asyncio.Event()
                    windows.append([time.time(), 0.0])
                    prober = asyncio.create_task(_probe(cfg, tickets, probes, stop))
                    say({"event": "going"})
                elif what == "pause":
                    windows[-1][1] = time.time()
                    stop.set()
                    await prober
                    say({"event": "paused"})
                elif what == "stop":
                    want = cfg["base"] + msg["admitted_before"] + sum(1 for p in probes if p[1] == OK)
                    # let the last probe reach every watcher (or give up after 5 s)
                    settle = time.monotonic() + 5
                    while time.monotonic() < settle and any(
                            not r or r[-1][1] < want for r in w.grpc + w.sse):
                        await asyncio.sleep(0.05)
                    page = None
                    if w.page is not None:
                        while time.monotonic() < settle and await w.page.evaluate(
                                "(window.__insideLog.at(-1) || [0, '-1'])[1].replace(/,/g, '')") != str(want):
                            await asyncio.sleep(0.05)
                        page = await w.page_log()
                    await w.close()
                    say({"event": "result", "windows": windows, "probes": probes,
                         "grpc": w.grpc, "sse": w.sse, "page": page, "errors": w.errors})
                    w = None
                elif what == "quit":
                    break
            except Exception as e:          # reported to the driving process, which fails the run
                say({"event": "failed", "error": f"{what}: {e!r}"})
    finally:
        if w is not None:
            await w.close()
        if browser is not None:
            await browser.close()
        if pw is not None:
            await pw.stop()


# -- measuring ------------------------------------------------------------------------------------
def latencies(probes: list, base: int, admitted_before: int, records: list[list]) -> list[float]:
    """For each probe admitted and each watcher: seconds from the probe's answer to the
    first view the watcher got (after the probe was sent) whose persons inside the quiet
    zone include it (a view already there before the answer counts 0)."""
    out = []
    n = base + admitted_before
    for p in probes:
        if p[1] != OK:
            continue
        n += 1
        for rec in records:
            t = next((t for t, inside, *_ in rec if t >= p[3] and inside >= n), None)
            if t is not None:
                out.append(max(0.0, t - p[4]))
    return out


def _lat(values: list[float]) -> dict:
    pc = percentiles(values)
    return {"n": len(values), "p50_ms": pc["p50"] * 1000, "p99_ms": pc["p99"] * 1000,
            "max_ms": max(values) * 1000 if values else float("nan")}


def _rates(records: list[list], windows: list[list[float]]) -> dict:
    """Views per second each watcher got within the windows, their mean size, and the
    longest time between two views within a window (and when it ended, from the first
    window's start)."""
    span = max(1e-9, sum(t1 - t0 for t0, t1 in windows))

    def inside(t: float) -> int:
        return next((k for k, (t0, t1) in enumerate(windows) if t0 <= t <= t1), -1)
    per = [sum(1 for r in rec if inside(r[0]) >= 0) / span for rec in records]
    gap, at = 0.0, 0.0
    for rec in records:
        for a, b in zip(rec, rec[1:]):
            k = inside(a[0])
            if k >= 0 and inside(b[0]) == k and b[0] - a[0] > gap:
                gap, at = b[0] - a[0], b[0] - windows[0][0]
    sizes = [r[2] for rec in records for r in rec if inside(r[0]) >= 0]
    return {"streams": len(records), "per_stream_per_s": per,
            "min_per_s": min(per) if per else 0.0, "mean_per_s": sum(per) / len(per) if per else 0.0,
            "total_per_s": sum(per), "max_gap_s": gap, "max_gap_ended_at_s": at,
            "bytes_mean": sum(sizes) / len(sizes) if sizes else 0.0}


class Window:
    """Around one load alone (clients.loadgen's `around`): the watchers' probe and window
    on (`watchers` None: there are none), the server's CPU measured (server_scenarios'
    Measure), and that of the processes in `pids` (name -> (pid, with its descendants))."""

    def __init__(self, server, peek, watchers: Watchers | None, pids: dict[str, tuple[int, bool]]):
        self.meas = Measure(server, peek)
        self.watchers, self.pids = watchers, pids
        self.cores: dict[str, float] = {}

    def _cpu(self) -> dict[str, float]:
        return {k: tree_cpu_s(p) if tree else proc_cpu_s(p) for k, (p, tree) in self.pids.items()}

    def __enter__(self) -> "Window":
        if self.watchers is not None:
            self.watchers.ask({"cmd": "go"}, 30)
        self.cpu0 = self._cpu()
        self.meas.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.meas.__exit__(*exc)
        cpu1 = self._cpu()
        wall = self.meas.result["wall_s"]
        self.cores = {k: (cpu1[k] - self.cpu0[k]) / wall for k in cpu1}
        if "browser" in self.cores:            # the watcher process's descendants only
            self.cores["browser"] -= self.cores["watcher process"]
        if self.watchers is not None:
            self.watchers.ask({"cmd": "pause"}, 30)


def part(kind: str, server, peek, codes: list, *, at: int, unary_s: float, label: str,
         watchers: Watchers | None, pids: dict, runs_failed: list[str]) -> tuple[dict, list]:
    """One load of clients.loadgen on the bench zone's gate at scan time `at`: "stream"
    (VerifyStream, batches of 100, STREAMS x WINDOW in flight, bounded in count) or "unary"
    (Verify, 64 in flight, 1 % of the codes shown twice at once, at most `unary_s`). The
    tickets are given without their product, so loadgen skips its ReportService checks
    (the run checks the counts once, at the end): no report call stalls the server while
    the watchers watch."""
    win = Window(server, peek, watchers, pids)
    kw = dict(tickets=codes, at=at, gate=GATE_IN, loop="uvloop", around=win)
    if kind == "stream":
        r = loadgen.verify_stream(target(server), streams=STREAMS, per_call=100, window=WINDOW,
                                  duration_s=60, **kw)
    else:
        r = loadgen.verify_unary(target(server), inflight=64, duration_s=unary_s, **kw)
    m = win.meas.result
    res = {"kind": kind, "throughput_per_s": r.throughput_per_s, "ops": r.ops, "calls": r.calls,
           "planned": r.planned, "cut_by_deadline": r.cut, "elapsed_s": r.elapsed_s,
           "latency_us": r.latency_us, "errors": r.errors, "cores": win.cores,
           # other processes than the server, this one and the watchers' (Measure's
           # other_load counts the watchers' too)
           "others_cores": max(0.0, m["other_load"] - sum(win.cores.values())), **m,
           **_cost(m, max(1, r.calls), r.ops if kind == "stream" else None)}
    return res, _scans(r, runs_failed, f"{kind} {label}")


def storm(server, peek, mac: list, signed: list, unary_s: float, label: str, runs_failed: list[str],
          watchers: Watchers | None, pids: dict) -> tuple[dict, list]:
    """One phase: VerifyStream over `mac`, then unary Verify over `signed` for at most
    `unary_s`, both at the server's clock."""
    at = int(server.now())
    kw = dict(at=at, unary_s=unary_s, label=label, watchers=watchers, pids=pids,
              runs_failed=runs_failed)
    rs, a1 = part("stream", server, peek, mac, **kw)
    ru, a2 = part("unary", server, peek, signed, **kw)
    wall = rs["wall_s"] + ru["wall_s"]
    cores = {k: (rs["cores"][k] * rs["wall_s"] + ru["cores"][k] * ru["wall_s"]) / wall
             for k in rs["cores"]}
    others = (rs["others_cores"] * rs["wall_s"] + ru["others_cores"] * ru["wall_s"]) / wall
    return {"phase": label, "stream": rs, "unary": ru, "cores": cores, "others_cores": others}, a1 + a2


# -- where the shard's time goes (--profile) -------------------------------------------------------
# frames of the live views in the shard (server/services.py WatchLive and _live_msg, engine/live.py)
LIVE_FRAMES = (("_live_msg", "the view as a LiveView message (_live_msg)"),
               ("live.py", "the view itself (engine/live.py)"),
               ("WatchLive", "the rest of WatchLive (serialize, compare, send)"))


class Spy:
    """py-spy recording the shard process (all threads, raw stacks) until `stop`."""

    def __init__(self, exe: str, pid: int, out: str):
        self.pid, self.out = pid, out
        self.proc = subprocess.Popen([exe, "record", "--pid", str(pid), "--rate", "200", "--format",
                                      "raw", "--threads", "--nonblocking", "-o", out],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)                       # it attaches

    def stop(self) -> dict:
        """Stop it and summarise: server_scenarios' shares, and the live views' share of
        the shard's main thread."""
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if not os.path.exists(self.out):
            return {"error": "py-spy wrote no profile"}
        prof = summarise_profile(self.out, self.pid)
        live: dict[str, int] = {}
        main = 0
        with open(self.out) as f:
            for line in f:
                stack, _, n = line.rstrip().rpartition(" ")
                if not stack or (f"({self.pid})" not in stack.split(";")[0]
                                 and "MainThread" not in stack.split(";")[0]):
                    continue
                main += int(n)
                hit = next((name for key, name in LIVE_FRAMES if key in stack), None)
                if hit:
                    live[hit] = live.get(hit, 0) + int(n)
        prof["live_views"] = {k: v / main for k, v in live.items()} if main else {}
        return prof


# -- the whole run --------------------------------------------------------------------------------
def live_bench(*, quick: bool, browser: bool = True, profile: bool = False) -> dict:
    day = demo.venue_today(time.time())
    sizes = QUICK if quick else FULL
    checks = Checks()
    notes: list[str] = []
    setup: dict[str, Any] = {"day": day.isoformat()}
    no_dash = dashboard_missing()
    no_browser = no_dash or (browser_missing() if browser else "--no-browser")
    if profile and not py_spy():
        notes.append("no profile: py-spy is not installed (pip install py-spy)")
        profile = False
    if no_dash:
        notes.append(f"no dashboard: {no_dash}")
    elif no_browser:
        notes.append(f"no browser: {no_browser}")
    phases: list[dict] = []
    watched: list[dict] = []
    answers: list[tuple[int, int, int]] = []
    runs_failed: list[str] = []
    probes: list = []
    t_run = time.perf_counter()
    with TempDir(prefix="turnstile-live-bench-") as data:
        t = time.perf_counter()
        seed_demo(data, day)
        clock = day_clock(day)
        server = start_server(data, day, clock, die_with_parent=True)
        try:
            cat = setup_catalog(server, day, demo.slot_id("main", day, 12))
            quiet_slot = setup_quiet(server, day)
            probe_tickets = buy_probes(server, quiet_slot, sizes.probes)
            base = quiet_inside(server)
        finally:
            stop_server(server)
        n_signed = sizes.warm_unary + sum(sizes.unary_of(p)[1] for p in PHASES)
        n_mac = sizes.warm_stream + len(PHASES) * sizes.stream
        signed, mac, b = bulk_issue(data, cat["plaza_slot"], n_signed, n_mac)
        checks("engine check() after the set-up and the bulk issue", not b["check_violations"],
               b["check_violations"])
        rng = random.Random(5)
        rng.shuffle(signed)
        server = start_server(data, day, clock, die_with_parent=True)
        setup["setup_s"] = time.perf_counter() - t
        setup["shards"] = len(server.shards)
        setup["tickets"] = {"signed": n_signed, "mac_only": n_mac, "probe": len(probe_tickets)}
        dash = watchers = None
        peek = ShardPeek(os.path.join(data, "shard-0"))
        try:
            pids: dict[str, tuple[int, bool]] = {}
            dash_url = None
            if not no_dash:
                dash, dash_url = start_dashboard(server.address)
                pids["dashboard"] = (dash.pid, False)
            t = time.perf_counter()
            watchers = Watchers({"address": server.address, "viewer_key": server.keys["demo-viewer"],
                                 "gate_key": server.keys["demo-gate"], "gate": QUIET_GATE,
                                 "dashboard": dash_url, "browser": not no_browser,
                                 "watchers": WATCHERS, "sse": SSE_READERS,
                                 "interval_ms": MIN_INTERVAL_MS, "probe_every_s": PROBE_EVERY_S,
                                 "probes": probe_tickets, "base": base})
            setup["watcher_process_start_s"] = time.perf_counter() - t
            t_phases = time.perf_counter()
            pids["watcher process"] = (watchers.proc.pid, False)
            if not no_browser:
                pids["browser"] = (watchers.proc.pid, True)     # minus the watcher process, below
            # warm-up, not measured (its scans are checked like the others)
            _, out = storm(server, peek, mac[:sizes.warm_stream], signed[:sizes.warm_unary],
                           2.0, "warm-up", runs_failed, None, {})
            answers += out
            admitted_probes = 0
            s_lo, u_lo = sizes.warm_stream, sizes.warm_unary
            for label in PHASES:
                if label == "P" and no_browser:
                    continue
                unary_s, n_unary = sizes.unary_of(label)
                codes_mac, codes_signed = mac[s_lo:s_lo + sizes.stream], signed[u_lo:u_lo + n_unary]
                s_lo, u_lo = s_lo + sizes.stream, u_lo + n_unary
                spy = None
                if profile and label in ("A1", "B1"):
                    spy = Spy(py_spy(), shard_pid(server), os.path.join(data, f"py-spy-{label}.txt"))
                if label.startswith("A"):
                    r, out = storm(server, peek, codes_mac, codes_signed, unary_s, label, runs_failed,
                                   None, pids)
                    r["watchers"] = False
                else:
                    ready = watchers.ask({"cmd": "watch", "browser": label == "P"}, 90)
                    r, out = storm(server, peek, codes_mac, codes_signed, unary_s, label, runs_failed,
                                   watchers, pids)
                    res = watchers.ask({"cmd": "stop", "admitted_before": admitted_probes}, 60)
                    r["watchers"] = True
                    r["browser"] = label == "P"
                    r["watch_setup_s"] = ready["setup_s"]
                    watched.append(summarise_watch(res, base, admitted_probes, checks, label))
                    probes += res["probes"]
                    admitted_probes += sum(1 for p in res["probes"] if p[1] == OK)
                if spy is not None:
                    r["profile"] = spy.stop()
                phases.append(r)
                answers += out
            setup["phases_s"] = time.perf_counter() - t_phases
            # the storm's counts as the server reports them, once (these calls read every
            # ticket entered today: see report_calls_s)
            t = time.perf_counter()
            with loadgen.Venue(target(server)) as v:
                storm_counts = (v.ticket_counts(PRODUCT), v.live_counts(day, ZONE))
            setup["report_calls_s"] = time.perf_counter() - t
            setup["quiet_inside_server"] = quiet_inside(server)
            code_of = dict(probe_tickets)
            again = rescan(server, [(p[0], code_of[p[0]]) for p in probes])
        finally:
            if watchers is not None:
                watchers.close()
            if dash is not None:
                setup["dashboard_exit_status"] = stop_process(dash)
            peek.close()
            stop_server(server)
        rc = server.proc.returncode

        # the checks
        _, counts = scan_checks([(tid, tid, reason, got) for tid, reason, got in answers], "admit",
                                checks)
        count_checks(checks, "ReportService.TicketCounts: the storm product's used = the tickets "
                     "admitted", 0, storm_counts[0]["used"], counts["admitted"], counts["unknown"])
        count_checks(checks, "ReportService.LiveCounts: the storm zone's entered today = the tickets "
                     "admitted", 0, storm_counts[1]["entered"], counts["admitted"], counts["unknown"])
        checks("every storm run's own checks passed (clients.loadgen: answers)",
               not runs_failed, "; ".join(runs_failed[:5]))
        probe_ok = [p for p in probes if p[1] == OK and p[2] == p[0]]
        checks(f"every probe ticket admitted once ({len(probes)} probes)",
               probes and len(probe_ok) == len(probes) == len({p[0] for p in probes}),
               f"{len(probe_ok)} of {len(probes)} admitted: "
               f"{[p for p in probes if p not in probe_ok][:3]}")
        checks("every probe ticket shown again: ALREADY_USED",
               all(r == common_pb2.ALREADY_USED and got == tid for tid, r, got in again),
               [a for a in again if a[1] != common_pb2.ALREADY_USED][:3])
        checks("the server counts the probes admitted inside the quiet zone (ReportService.LiveCounts)",
               setup["quiet_inside_server"] == base + len(probe_ok),
               f"{setup['quiet_inside_server']} inside, {base} + {len(probe_ok)} expected")
        checks("server stopped cleanly (SIGTERM: drain, last commit, exit 0)", rc == 0, rc)
        shard = Shard.open(os.path.join(data, "shard-0"), shard_id=0,
                           master_key=keyring.read_key_file(master_key_file(data)))
        try:
            used = shard.state.tickets.used
            want = {tid for tid, reason, _ in answers if reason == OK} | {p[0] for p in probe_ok}
            checks("engine after the run: used = the tickets the clients saw admitted",
                   len(used) == len(want) and all(t in used for t in want),
                   f"used {len(used)}, admitted {len(want)}")
            v = shard.check()
            checks("engine after the run: shard.check() == []", v == [], v[:5])
        finally:
            shard.close(snapshot=False)
    return {"scenario": "live", "quick": quick, "phases": phases, "watched": watched,
            "summary": summarise(phases, watched), "setup": setup, "notes": notes,
            "admitted": counts["admitted"], "refused": counts["refused"],
            "probes_admitted": len(probe_ok), "checks": checks.as_dicts(), "ok": checks.ok,
            "elapsed_s": time.perf_counter() - t_run, "max_rss_mb": max_rss_mb(),
            "sizes": sizes.__dict__, "watchers": WATCHERS,
            "sse_readers": 0 if no_dash else SSE_READERS, "browser": not no_browser,
            "min_interval_ms": MIN_INTERVAL_MS, "probe_every_s": PROBE_EVERY_S}


def summarise_watch(res: dict, base: int, before: int, checks: Checks, label: str) -> dict:
    """What the watchers of one B phase saw: rates, probe latencies (seconds, every
    probe x watcher), their last views."""
    windows = res["windows"]
    probes = res["probes"]
    admitted = sum(1 for p in probes if p[1] == OK)
    want = base + before + admitted
    lat: dict[str, list[float]] = {"grpc": latencies(probes, base, before, res["grpc"])}
    out: dict[str, Any] = {"phase": label, "windows": windows,
                           "window_s": sum(t1 - t0 for t0, t1 in windows), "probes": len(probes),
                           "probes_admitted": admitted, "grpc": _rates(res["grpc"], windows),
                           "latency_s": lat}
    last = [rec[-1][1] if rec else None for rec in res["grpc"]]
    checks(f"{label}: every WatchLive stream's last view shows the probes inside the quiet zone",
           all(x == want for x in last), f"{last}, expected {want}")
    if res["sse"]:
        out["sse"] = _rates(res["sse"], windows)
        lat["sse"] = latencies(probes, base, before, res["sse"])
        last = [rec[-1][1] if rec else None for rec in res["sse"]]
        checks(f"{label}: every SSE reader's last event shows the probes inside the quiet zone",
               all(x == want for x in last), f"{last}, expected {want}")
    page = res.get("page")
    if page:
        ch = page["changes"]
        lat["page"] = latencies(probes, base, before, [[(t, n) for t, n, _ in ch]])
        lat["page_frame"] = latencies(probes, base, before, [[(f, n) for _, n, f in ch if f is not None]])
        out["page"] = _rates([[(t, 0, 0) for t in page["views"]]], windows)
        out["page_clock"] = {"offset_ms": page["offset_s"] * 1000, "rtt_ms": page["rtt_s"] * 1000}
        checks(f"{label}: the page's last number for the quiet zone shows the probes inside",
               bool(ch) and ch[-1][1] == want, f"{ch[-1][1] if ch else None}, expected {want}")
    checks(f"{label}: no watcher failed", not res["errors"], "; ".join(res["errors"][:3]))
    return out


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def summarise(phases: list[dict], watched: list[dict]) -> dict:
    """Scans/s with watchers against without (means over the phases of each), the views
    pushed, and the probe latencies over every B phase."""
    out: dict[str, Any] = {}
    for part, key in (("stream", "shard_us_per_item"), ("unary", "shard_us_per_call")):
        a = [p[part] for p in phases if p["phase"].startswith("A")]
        b = [p[part] for p in phases if p["phase"].startswith("B")]
        out[part] = {"without": _mean([r["throughput_per_s"] for r in a]),
                     "with": _mean([r["throughput_per_s"] for r in b]),
                     "shard_us_without": _mean([r[key] for r in a]),
                     "shard_us_with": _mean([r[key] for r in b])}
        out[part]["ratio"] = out[part]["with"] / out[part]["without"] if a and b else float("nan")
    for kind in ("grpc", "sse", "page"):
        ws = [w[kind] for w in watched if kind in w]
        if ws:
            out[kind] = {"streams": ws[0]["streams"], "mean_per_s": _mean([w["mean_per_s"] for w in ws]),
                         "min_per_s": min(w["min_per_s"] for w in ws),
                         "total_per_s": _mean([w["total_per_s"] for w in ws]),
                         "max_gap_s": max(w["max_gap_s"] for w in ws),
                         "bytes_mean": _mean([w["bytes_mean"] for w in ws])}
    out["latency"] = {}
    for kind in ("grpc", "sse", "page", "page_frame"):
        values = [x for w in watched for x in w["latency_s"].get(kind, [])]
        if values:
            out["latency"][kind] = _lat(values)
    out["probes"] = sum(w["probes"] for w in watched)
    for kind in ("A", "B", "P"):
        cores: dict[str, list[float]] = {}
        for p in phases:
            if p["phase"].startswith(kind):
                for k, v in p["cores"].items():
                    cores.setdefault(k, []).append(v)
        if cores:
            out[f"cores_{kind}"] = {k: _mean(v) for k, v in cores.items()}
    return out


# -- output ----------------------------------------------------------------------------------------
def summary(res: dict) -> str:
    s = res["summary"]
    lines = [f"== live view under a gate storm ({res['watchers']} WatchLive, {res['sse_readers']} SSE, "
             f"{'a page in Chromium' if res['browser'] else 'no browser'}; {res['elapsed_s']:.0f} s)"]
    for p in res["phases"]:
        st, un = p["stream"], p["unary"]
        who = "the page, " if p.get("browser") else ""
        lines.append(f"  {p['phase']} {'with ' + who + 'watchers' if p['watchers'] else 'without watchers'}: VerifyStream "
                     f"{st['throughput_per_s']:,.0f} codes/s, Verify {un['throughput_per_s']:,.0f}/s "
                     f"(p99 {un['latency_us']['p99'] / 1000:.1f} ms); shard {st['shard_us_per_item']:.1f} "
                     f"µs/code, {un['shard_us_per_call']:,.0f} µs/call; shard cores {st['shard_cores']:.2f} / "
                     f"{un['shard_cores']:.2f}, client {st['client_cores']:.2f} / {un['client_cores']:.2f}; "
                     f"batch {st.get('batch', {}).get('mean', 0):.1f} / {un.get('batch', {}).get('mean', 0):.1f}; cores "
                     + ", ".join(f"{k} {v:.2f}" for k, v in p["cores"].items())
                     + f"; other load {p['others_cores']:.2f}")
    for w in res["watched"]:
        t0 = w["windows"][0][0]
        spans = ", ".join(f"{a - t0:.1f}-{b - t0:.1f} s" for a, b in w["windows"])
        lines.append(f"  {w['phase']}: watched {w['window_s']:.1f} s ({spans}), {w['probes']} probes; "
                     f"longest gap between views: "
                     + ", ".join(f"{k} {w[k]['max_gap_s'] * 1000:.0f} ms ending at {w[k]['max_gap_ended_at_s']:.1f} s"
                                 for k in ("grpc", "sse", "page") if k in w))
    for part in ("stream", "unary"):
        x = s[part]
        lines.append(f"  {part}: with/without = {x['with']:,.0f} / {x['without']:,.0f} = {x['ratio']:.3f}")
    for kind in ("grpc", "sse", "page"):
        if kind in s:
            x = s[kind]
            lines.append(f"  {kind}: {x['streams']} streams, {x['mean_per_s']:.2f} views/s each (min "
                         f"{x['min_per_s']:.2f}), {x['total_per_s']:.1f}/s in all, longest gap "
                         f"{x['max_gap_s'] * 1000:.0f} ms" + (f", {x['bytes_mean']:,.0f} B" if x["bytes_mean"] else ""))
    for kind, x in s["latency"].items():
        lines.append(f"  probe -> {kind}: p50 {x['p50_ms']:.0f} ms, p99 {x['p99_ms']:.0f} ms, "
                     f"max {x['max_ms']:.0f} ms (n {x['n']})")
    for p in res["phases"]:
        prof = p.get("profile")
        if prof and "components" in prof:
            lines.append(f"  py-spy {p['phase']}, shard main thread: " + "; ".join(
                f"{k} {v:.0%}" for k, v in prof["components"].items()))
            lines.append("    live views: " + ("; ".join(f"{k} {v:.1%}" for k, v in prof["live_views"].items())
                                              or "no sample"))
    for n in res["notes"]:
        lines.append(f"  note: {n}")
    for c in res["checks"]:
        lines.append(f"  [{'ok' if c['passed'] else 'FAIL'}] {c['check']}"
                     + (f" ({c['detail']})" if c["detail"] and not c["passed"] else ""))
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["watch"]:
        asyncio.run(watch_main())
        return 0
    ap = argparse.ArgumentParser(prog="python -m bench.live", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes (smoke, < 40 s)")
    ap.add_argument("--no-browser", action="store_true", help="no page in Chromium")
    ap.add_argument("--profile", action="store_true",
                    help="py-spy on the shard through the first A and B phases (diagnostic)")
    ap.add_argument("--json", default=None, help="write the result here as JSON")
    a = ap.parse_args(argv)
    result = live_bench(quick=a.quick, browser=not a.no_browser, profile=a.profile)
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
