"""Screenshots of the control-room dashboard under load, for the README:

    .venv/bin/python -m docs.dashboard_shots     # docs/images/dashboard.png, dashboard-screen.png

A real server (the demo venue in a temp dir, its clock at 14:30 venue time, gates shown
down after 6 s of silence) and a real `turnstile dashboard`. The afternoon so far is
made through the API: three channels sell adult tickets and lake combos, the gates admit
them at times spread over the last hour (so the per-minute lines have a shape), some
visitors leave; the operator sets alert levels, a smaller live capacity for the pagoda
and the boats, pauses the boats' sales and closes their entry; gates send heartbeats (one
offline with a queue, one that falls silent). Then `turnstile loadgen gate-storm` scans
600 more tickets now (127.0.0.1, bounded) while headless chromium (Debian's
/usr/bin/chromium, driven by Playwright) takes the operator's control room and the big
screen. The numbers are made up; everything shown is what the server counts.
"""
from __future__ import annotations

import math
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid

from google.protobuf.timestamp_pb2 import Timestamp

from turnstile.clients.admin import AdminClient
from turnstile.clients.base import Connection
from turnstile.clients.channel import ChannelClient, Item
from turnstile.clients.dashboard.testing import start_dashboard, stop_dashboard
from turnstile.engine import demo
from turnstile.server.testing import start_server, stop_server
from turnstile.v1 import common_pb2, gate_pb2, gate_pb2_grpc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "docs", "images")
VENUE = demo.VENUE
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--hide-scrollbars"]
STORM = 600                     # tickets the load generator scans while the pictures are taken
MAX_QTY = 40                    # tickets per order


class Afternoon:
    """The venue's afternoon so far, made through the API."""

    def __init__(self, server):
        self.server = server
        self.rng = random.Random(2026)
        self.day = server.day
        admin = Connection(server.address, server.keys["admin"])
        self.admin = AdminClient(admin)
        self.op = AdminClient(Connection(server.address, server.keys["demo-operator"]))
        self.shops = {"ota": ChannelClient(Connection(server.address, server.keys["demo-ota"]))}
        for channel in ("miniprogram", "agency"):
            self.admin.create_principal(f"shots-{channel}", "channel", venue_ids=[VENUE], channel=channel)
            key = self.admin.create_api_key(f"shots-{channel}").secret
            self.shops[channel] = ChannelClient(Connection(server.address, key))
        self.gates = gate_pb2_grpc.GateServiceStub(Connection(server.address).channel())
        self.gate_meta = server.meta("demo-gate")

    def buy(self, channel: str, product: str, slots, n: int) -> list[str]:
        """Codes of n tickets sold through `channel`, in orders of MAX_QTY at most."""
        codes: list[str] = []
        while len(codes) < n:
            q = min(MAX_QTY, n - len(codes))
            order = self.shops[channel].buy(VENUE, [Item(product, slots, qty=q)],
                                            f"{channel}-{uuid.uuid4().hex[:10]}")
            codes += [t.code for t in order.tickets]
        return codes

    def scan(self, codes: list[str], gates: list[str], start: int, end: int,
             direction=common_pb2.IN, weight=lambda f: 1.0) -> None:
        """Scan `codes` at `gates` (taking turns) at times from `start` to `end` (UTC
        seconds), one batch a minute, as many per minute as `weight(fraction of the
        way)` says relative to the others."""
        minutes = max(1, (end - start) // 60)
        w = [max(0.05, weight(m / minutes) * self.rng.uniform(0.8, 1.2)) for m in range(minutes)]
        share = [round(len(codes) * x / sum(w)) for x in w]
        share[-1] = len(codes) - sum(share[:-1])
        i = 0
        for m, k in enumerate(share):
            batch, i = codes[i:i + k], i + k
            if not batch:
                continue
            r = self.gates.VerifyBatch(gate_pb2.VerifyBatchRequest(
                codes=batch, gate_id=gates[m % len(gates)], direction=direction,
                scan_time=Timestamp(seconds=start + m * 60 + 20)), metadata=self.gate_meta, timeout=30)
            refused = [common_pb2.ScanReason.Name(x) for x in r.reasons if x != common_pb2.OK]
            if refused:
                raise RuntimeError(f"scans refused: {refused[:5]}")

    def make(self) -> list[str]:
        """Sell, admit, set the controls; the codes left for the storm."""
        day, now = self.day, int(self.server.now())
        op = self.op
        op.set_live_capacity(VENUE, "main", 2500)
        op.set_flow_alerts(VENUE, "main", [80, 95], entries_per_minute=120)
        op.set_live_capacity(VENUE, "pagoda", 230)
        op.set_flow_alerts(VENUE, "pagoda", [80, 95])
        op.set_live_capacity(VENUE, "boat", 100)
        op.set_flow_alerts(VENUE, "boat", [80, 95], entries_per_minute=40)
        # the main park: adults through three channels, in over the last hour (rising),
        # some leaving in the last 40 minutes
        day_slot = demo.day_slot_id(day)
        adults = (self.buy("ota", "adult", day_slot, 520) + self.buy("miniprogram", "adult", day_slot, 300)
                  + self.buy("agency", "adult", day_slot, 120))
        self.rng.shuffle(adults)
        rising = lambda f: 0.6 + 1.6 * f ** 1.6 + 0.35 * math.sin(f * 14)   # noqa: E731
        self.scan(adults, ["north-1", "north-2", "east"], now - 3600, now - 30, weight=rising)
        self.scan(adults[:170], ["south-exit"], now - 2400, now - 30, direction=common_pb2.OUT)
        # the pagoda and the boats: lake combos of the 14:00 hour (its boat now, or later)
        slots = lambda boat: (day_slot, demo.slot_id("pagoda", day, 14), demo.slot_id("boat", day, boat))  # noqa: E731
        riding = self.buy("miniprogram", "combo", slots(14), 97)
        later = self.buy("ota", "combo", slots(15), 99)
        start = demo.local_time(day, 14)
        self.scan(riding + later, ["pagoda-1"], start, now - 30, weight=lambda f: 1 + f)
        self.scan(riding, ["pier-1"], start + 120, now - 30, weight=lambda f: 0.5 + f)
        # the operator acts: the boats are nearly full
        op.pause_sales(VENUE, zone_id="boat")
        op.close_entry(VENUE, zone_id="boat")
        return self.buy("ota", "adult", day_slot, STORM)


class Heartbeats(threading.Thread):
    """The gates' heartbeats: most up, `east` deciding offline with a queue, `pier-1`
    heard once and then silent (it goes down), `south-exit` never heard from."""

    STEADY = {"north-1": dict(), "north-2": dict(), "pagoda-1": dict(),
              "east": dict(offline=True, queued_scans=37)}

    def __init__(self, server, gates: gate_pb2_grpc.GateServiceStub, meta):
        super().__init__(name="heartbeats", daemon=True)
        self.server, self.gates, self.meta = server, gates, meta
        self.stop = threading.Event()

    def beat(self, gate: str, **kw) -> None:
        now = int(self.server.now())
        cut = now - (12 * 60 if kw.get("offline") else 3 * 60)
        self.gates.Heartbeat(gate_pb2.HeartbeatRequest(
            venue_id=VENUE, gate_id=gate, bundle_cut_at=Timestamp(seconds=cut),
            last_scan=Timestamp(seconds=now - 5), version="gate-fw 2.4.1", **kw),
            metadata=self.meta, timeout=5)

    def run(self) -> None:
        self.beat("pier-1")
        while not self.stop.is_set():
            for gate, kw in self.STEADY.items():
                self.beat(gate, **kw)
            self.stop.wait(1.5)


def shoot(url: str, key: str) -> None:
    """Log in as the operator; the control room (full page) and the big screen."""
    from playwright.sync_api import expect, sync_playwright
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for name, viewport, query, full in (
                    ("dashboard.png", {"width": 1600, "height": 1000}, "", True),
                    ("dashboard-screen.png", {"width": 1920, "height": 1080}, "?screen=1", False)):
                page = browser.new_page(viewport=viewport, timezone_id="Asia/Shanghai")
                page.goto(url + query)
                page.get_by_test_id("login-key").fill(key)
                page.get_by_test_id("login-submit").click()
                expect(page.get_by_test_id("live-status")).to_have_text("live", timeout=20_000)
                expect(page.get_by_test_id("alert-gate:pier-1")).to_be_visible(timeout=20_000)
                expect(page.get_by_test_id("alert-rate:main")).to_be_visible(timeout=20_000)
                page.wait_for_timeout(1200)              # a few more views: the storm goes on
                page.screenshot(path=os.path.join(OUT, name), full_page=full)
                print(f"wrote docs/images/{name}")
                page.close()
        finally:
            browser.close()


def main() -> int:
    day = demo.venue_today(time.time())
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "data")
        clock = ("--clock-offset-s", str(int(demo.local_time(day, 14, 30) - time.time())),
                 "--scan-skew-s", "86400")
        server = start_server(data, day, clock, env={"TURNSTILE_GATE_HEARTBEAT_S": "2",
                                                     "TURNSTILE_GATE_DOWN_AFTER_S": "6"},
                              die_with_parent=True)
        dash = beats = storm = None
        try:
            scene = Afternoon(server)
            storm_codes = scene.make()
            codes_file = os.path.join(tmp, "storm.txt")
            with open(codes_file, "w") as f:
                f.write("".join(c + "\n" for c in storm_codes))      # no scan time: the server's now
            beats = Heartbeats(server, scene.gates, scene.gate_meta)
            beats.start()
            dash = start_dashboard(server.address)
            storm = subprocess.Popen(
                [sys.executable, "-m", "turnstile.clients.cli", "loadgen", "gate-storm",
                 "--address", server.address, "--keys-file", os.path.join(data, "demo-keys.txt"),
                 "--venue", VENUE, "--codes-file", codes_file, "--product", "adult",
                 "--concurrency", "6", "--burst", "4", "--interval", "0.5", "--dupes", "0.02",
                 "--duration", "60"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            shoot(dash.url, server.keys["demo-operator"])
            out, _ = storm.communicate(timeout=120)
            print(out.strip())
            return storm.returncode
        finally:
            if storm is not None and storm.poll() is None:
                storm.kill()
                storm.wait()
            if beats is not None:
                beats.stop.set()
                beats.join()
            if dash is not None:
                stop_dashboard(dash)
            stop_server(server)


if __name__ == "__main__":
    sys.exit(main())
