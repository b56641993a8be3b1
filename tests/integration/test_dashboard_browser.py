"""The dashboard's page in a real browser: Debian's headless chromium driven by Playwright,
against a real server (demo venue westlake) with traffic from `turnstile loadgen`.

What an operator notices: the numbers follow the scans, an alert shows when a zone passes
its fill level, a click on the page stops sales (the next Hold answers SALES_PAUSED) and
another resumes them; a viewer sees the numbers and no control. Every expectation is
what the page shows against what the node itself counts or answers.

Needs /usr/bin/chromium (`apt-get install chromium`; .ci/run installs it) and the
playwright package (the `dev` extra); never Playwright's own browser download.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from turnstile.clients.base import ApiError, Connection
from turnstile.clients.channel import ChannelClient, Item
from turnstile.clients.reports import ReportsClient
from turnstile.engine import demo
from turnstile.v1 import common_pb2, gate_pb2, gate_pb2_grpc

from .conftest import ROOT

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

if not os.path.exists(CHROMIUM):
    pytest.skip("install Debian's package chromium (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
pytest.importorskip("aiohttp", reason="pip install aiohttp (turnstile[dashboard])")

from turnstile.clients.dashboard.testing import start_dashboard, stop_dashboard  # noqa: E402

expect = sync_api.expect
expect.set_options(timeout=20_000)
VENUE = "westlake"


# -- the node's own view, and traffic ---------------------------------------------------------
@pytest.fixture(scope="module")
def conns(server):
    made = {p: Connection(server.address, k) for p, k in server.keys.items()}
    yield made
    for c in made.values():
        c.close()


def inside(conns, zone: str) -> int:
    """Persons inside `zone` as the node counts them (ReportService.LiveCounts)."""
    return next(z.inside for z in ReportsClient(conns["admin"]).live_counts(VENUE).zones
                if z.zone_id == zone)


def buy(conns, product: str, slots, qty: int) -> list[str]:
    """Codes of `qty` fresh tickets, sold through the OTA."""
    order = ChannelClient(conns["demo-ota"]).buy(VENUE, [Item(product, slots, qty=qty)],
                                                 f"dash-{uuid.uuid4().hex[:12]}")
    return [t.code for t in order.tickets]


def scan(server, code: str, gate: str, at: int | None = None) -> str:
    """One entry scan at a gate (raw GateService.Verify, as a turnstile sends it)."""
    with server.channel() as ch:
        r = gate_pb2_grpc.GateServiceStub(ch).Verify(
            gate_pb2.VerifyRequest(code=code, gate_id=gate, direction=common_pb2.IN,
                                   scan_time=Timestamp(seconds=at) if at else None),
            metadata=server.meta("demo-gate"), timeout=10)
    return common_pb2.ScanReason.Name(r.reason)


# -- the page -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dash(server):
    d = start_dashboard(server.address)
    yield d
    stop_dashboard(d)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def open_page(browser, dash):
    """open_page(key, query="") -> a page logged in with `key` (through the login form),
    its stream live; every URL the page asked for is in page.requested, every script
    error and Content-Security-Policy refusal in page.problems."""
    contexts = []

    def open_(key: str, query: str = ""):
        ctx = browser.new_context(viewport={"width": 1600, "height": 1000}, timezone_id="Asia/Shanghai")
        contexts.append(ctx)
        page = ctx.new_page()
        page.requested, page.problems = [], []
        page.on("request", lambda r: page.requested.append(r.url))
        page.on("pageerror", lambda e: page.problems.append(str(e)))
        page.on("console", lambda m: page.problems.append(m.text)
                if "Content Security Policy" in m.text else None)
        page.goto(dash.url + query)
        page.get_by_test_id("login-key").fill(key)
        page.get_by_test_id("login-submit").click()
        expect(page.get_by_test_id("live-status")).to_have_text("live")
        return page

    yield open_
    for ctx in contexts:
        ctx.close()


def test_the_numbers_follow_the_scans_under_load(server, conns, dash, open_page):
    page = open_page(server.keys["demo-operator"])
    main = page.get_by_test_id("zone-inside-main")
    before = inside(conns, "main")
    expect(main).to_have_text(f"{before:,}")
    # a gate storm from the load generator while the page watches
    out = os.path.join(server.data, "..", "storm.json")
    r = subprocess.run([sys.executable, "-m", "turnstile.clients.cli", "loadgen", "gate-storm",
                        "--address", server.address, "--keys-file", os.path.join(server.data, "demo-keys.txt"),
                        "--venue", VENUE, "--date", server.day.isoformat(), "--count", "240",
                        "--concurrency", "4", "--burst", "5", "--interval", "0.05", "--duration", "30",
                        "--json", out], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    with open(out) as f:
        admitted = json.load(f)["counts"]["admitted"]
    assert admitted == 240
    assert inside(conns, "main") == before + admitted
    expect(main).to_have_text(f"{before + admitted:,}")
    expect(page.get_by_test_id("total-inside")).to_have_text(
        f"{sum(inside(conns, z) for z in ('main', 'pagoda', 'boat')):,}")
    # then one scan at a time, now
    spark = page.get_by_test_id("zone-main")
    expect(spark).to_contain_text("peak 0/min")         # the storm's scans were timed in its slot
    for n, code in enumerate(buy(conns, "adult", demo.day_slot_id(server.day), 3), 1):
        assert scan(server, code, "north-1") == "OK"
        expect(main).to_have_text(f"{before + admitted + n:,}")
    # and they show in the main zone's entries per minute of the last hour
    expect(spark).not_to_contain_text("peak 0/min")
    # everything the page loaded came from the dashboard itself, under its strict CSP
    assert page.requested and all(u.startswith(dash.url) for u in page.requested), page.requested
    assert page.problems == []


def test_an_alert_shows_when_a_zone_passes_its_fill_level(server, conns, open_page):
    page = open_page(server.keys["demo-operator"])
    # through the page's controls: the pagoda holds 300 persons now, warn at 1 % (3 persons)
    page.get_by_test_id("control-capacity-pagoda").fill("300")
    page.get_by_test_id("control-capacity-set-pagoda").click()
    expect(page.get_by_test_id("zone-capacity-pagoda")).to_have_text("300")
    page.get_by_test_id("control-alerts-fill-pagoda").fill("1")
    page.get_by_test_id("control-alerts-rate-pagoda").fill("0")
    page.get_by_test_id("control-alerts-set-pagoda").click()
    expect(page.get_by_test_id("control-alerts-fill-pagoda")).to_have_value("1")
    alert = page.get_by_test_id("alert-fill:pagoda")
    assert inside(conns, "pagoda") == 0
    expect(alert).to_have_count(0)
    # three visitors climb the pagoda with the lake combo (its 10:00 hour)
    slots = (demo.slot_id("main", server.day, 10), demo.slot_id("pagoda", server.day, 10),
             demo.slot_id("boat", server.day, 11))
    at = demo.local_time(server.day, 10, 10)
    for code in buy(conns, "combo", slots, 3):
        assert scan(server, code, "pagoda-1", at) == "OK"
    expect(page.get_by_test_id("zone-inside-pagoda")).to_have_text("3")
    expect(alert).to_be_visible()
    expect(alert).to_contain_text("pagoda")
    expect(page.get_by_test_id("zone-fill-pagoda")).to_have_text("1.0%")


def test_a_click_stops_sales_and_another_resumes_them(server, conns, open_page):
    page = open_page(server.keys["demo-operator"])
    ota = ChannelClient(conns["demo-ota"])
    slot = demo.slot_id("main", server.day, 14)
    pause = page.get_by_test_id("control-pause-venue")
    expect(pause).to_have_text("Pause sales")
    pause.click()
    expect(pause).to_have_text("Resume sales")
    expect(page.get_by_test_id("venue-sales-state")).to_have_text("PAUSED")
    expect(page.get_by_test_id("zone-paused-main")).to_be_visible()
    with pytest.raises(ApiError) as e:
        ota.hold(VENUE, [Item("adult", slot)])
    assert (e.value.code, e.value.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "SALES_PAUSED")
    pause.click()
    expect(pause).to_have_text("Pause sales")
    expect(page.get_by_test_id("zone-paused-main")).to_be_hidden()
    ota.release(ota.hold(VENUE, [Item("adult", slot)]))
    # one slot only, picked on the page
    page.get_by_test_id("control-slot").select_option(slot)
    page.get_by_test_id("control-pause-slot").click()
    expect(page.get_by_test_id("control-pause-slot")).to_have_text("Resume slot")
    with pytest.raises(ApiError) as e:
        ota.hold(VENUE, [Item("adult", slot)])
    assert e.value.reason == "SALES_PAUSED"
    ota.release(ota.hold(VENUE, [Item("adult", demo.slot_id("main", server.day, 16))]))
    page.get_by_test_id("control-pause-slot").click()
    expect(page.get_by_test_id("control-pause-slot")).to_have_text("Pause slot")
    ota.release(ota.hold(VENUE, [Item("adult", slot)]))


def test_the_big_screen_shows_the_numbers_without_controls(server, conns, open_page):
    page = open_page(server.keys["demo-operator"], "?screen=1")
    expect(page.get_by_test_id("zone-inside-main")).to_have_text(f"{inside(conns, 'main'):,}")
    expect(page.get_by_test_id("control-pause-venue")).to_be_hidden()
    expect(page.get_by_test_id("control-capacity-main")).to_be_hidden()


def test_a_viewer_sees_the_numbers_and_no_control(server, conns, open_page):
    page = open_page(server.keys["demo-viewer"])
    expect(page.get_by_test_id("role")).to_have_text("viewer")
    expect(page.get_by_test_id("zone-inside-main")).to_have_text(f"{inside(conns, 'main'):,}")
    expect(page.get_by_test_id("zone-inside-pagoda")).to_have_text(f"{inside(conns, 'pagoda'):,}")
    expect(page.locator("[data-testid^='control-']")).to_have_count(0)
    expect(page.get_by_test_id("venue-controls")).to_be_hidden()
    assert page.problems == []


def test_a_wrong_key_shows_the_nodes_message(browser, dash):
    ctx = browser.new_context()
    try:
        page = ctx.new_page()
        page.goto(dash.url)
        page.get_by_test_id("login-key").fill("tsk_000000000000_" + "0" * 32)
        page.get_by_test_id("login-submit").click()
        expect(page.get_by_test_id("login-error")).to_contain_text("API_KEY_INVALID")
        expect(page.get_by_test_id("login-key")).to_have_value("")      # the key is not kept
    finally:
        ctx.close()
