"""clients/loadgen/ and `turnstile loadgen` against a real server (demo venue westlake).

Each scenario runs small (a few hundred calls, a few seconds); the test then asks the
server itself (ReportService, InventoryService) whether the counts match what the load
generator says it did. No timing thresholds: timings live in bench/.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections import Counter

import pytest

from turnstile.clients import loadgen
from turnstile.v1 import common_pb2, inventory_pb2, inventory_pb2_grpc, report_pb2, report_pb2_grpc

from .conftest import ROOT

VENUE = "westlake"
OK, ALREADY_USED = common_pb2.OK, common_pb2.ALREADY_USED


# -- the server's own view ----------------------------------------------------------------------
def ticket_counts(server, product: str = "adult") -> dict:
    with server.channel() as ch:
        r = report_pb2_grpc.ReportServiceStub(ch).TicketCounts(
            report_pb2.TicketCountsRequest(venue_id=VENUE), metadata=server.meta("admin"), timeout=10)
    p = next(p for p in r.products if p.product_id == product)
    return {"issued": p.issued, "used": p.used}


def slots(server, date: str, zone: str = "main") -> dict[str, dict]:
    with server.channel() as ch:
        r = inventory_pb2_grpc.InventoryServiceStub(ch).Availability(
            inventory_pb2.AvailabilityRequest(venue_id=VENUE, date_from=date, zone_id=zone),
            metadata=server.meta("admin"), timeout=10)
    return {s.slot_id: {"capacity": s.capacity, "sold": s.sold, "held": s.held} for s in r.slots}


def delta(before: dict, after: dict) -> dict:
    return {k: after[k] - before[k] for k in before}


@pytest.fixture(scope="module")
def target(server):
    return loadgen.Target(server.address, loadgen.Keys.from_file(os.path.join(server.data, "demo-keys.txt")),
                          VENUE)


def failed(r: loadgen.Result) -> list[str]:
    return [c.name for c in r.checks if not c.passed]


def admissions(r: loadgen.Result) -> Counter:
    return Counter(tid for tid, reason, _ in r.answers if reason == OK)


# -- the library ----------------------------------------------------------------------------------
def test_verify_unary(server, target):
    before = ticket_counts(server)
    r = loadgen.verify_unary(target, count=300, inflight=16, dupes=0.05, date=server.day,
                             duration_s=60)
    assert r.ok, r.summary()
    assert not r.cut and not r.errors
    assert len(r.tickets) == 300 and r.planned == 315 and r.calls == 315
    assert r.counts["admitted"] == 300 and r.counts["refused"] == {"ALREADY_USED": 15}
    # every ticket admitted exactly once, the 15 duplicates refused: from the raw answers
    adm = admissions(r)
    assert set(adm) == {t[0] for t in r.tickets} and set(adm.values()) == {1}
    assert Counter(reason for _, reason, _ in r.answers) == {OK: 300, ALREADY_USED: 15}
    # the server agrees: 300 issued (bought through Hold + Confirm), 300 used
    assert delta(before, ticket_counts(server)) == {"issued": 300, "used": 300}
    assert set(r.latency_us) == {"p50", "p99", "p999"}
    assert r.latency_us["p50"] <= r.latency_us["p99"] <= r.latency_us["p999"]
    assert r.throughput_per_s == r.ops / r.elapsed_s


def test_verify_stream(server, target):
    before = ticket_counts(server)
    r = loadgen.verify_stream(target, count=300, streams=3, per_call=50, window=2,
                              date=server.day, duration_s=60)
    assert r.ok, r.summary()
    assert (r.ops, r.calls, r.unit) == (300, 6, "codes")
    assert r.counts["admitted"] == 300 and r.counts["refused"] == {}
    assert set(admissions(r).values()) == {1} and len(admissions(r)) == 300
    assert delta(before, ticket_counts(server)) == {"issued": 300, "used": 300}


def test_scanning_used_tickets_fails_as_fresh_and_passes_as_used(server, target):
    """The checks can fail: codes already admitted, scanned again as if fresh."""
    first = loadgen.verify_unary(target, count=40, inflight=4, dupes=0.0, date=server.day)
    assert first.ok, first.summary()
    before = ticket_counts(server)
    again = loadgen.verify_unary(target, tickets=first.tickets, product="adult", inflight=4,
                                 dupes=0.0, date=server.day)
    assert not again.ok and again.verdict == "FAIL"
    assert "every scanned ticket admitted exactly once" in failed(again)
    assert "the only refusals are concurrent duplicates, ALREADY_USED" in failed(again)
    assert again.counts["refused"] == {"ALREADY_USED": 40} and again.counts["admitted"] == 0
    used = loadgen.verify_stream(target, tickets=first.tickets, product="adult", per_call=10,
                                 date=server.day, expect="used")
    assert used.ok, used.summary()
    assert used.counts["refused"] == {"ALREADY_USED": 40}
    assert delta(before, ticket_counts(server)) == {"issued": 0, "used": 0}


def test_gate_storm(server, target):
    before = ticket_counts(server)
    r = loadgen.gate_storm(target, count=300, gates=8, burst=5, interval_s=0.02, dupes=0.05,
                           date=server.day)
    assert r.ok, r.summary()
    x = r.extra
    assert x["terminals"] == 8 and x["bursts"] == math.ceil(300 / 40) and x["dupes"] == 15
    assert set(x["gates"]) == {"north-1", "north-2", "east"}      # the main zone's entry gates
    assert r.calls == 315 and r.counts["admitted"] == 300
    assert r.counts["refused"] == {"ALREADY_USED": 15}
    assert set(admissions(r).values()) == {1}
    assert delta(before, ticket_counts(server)) == {"issued": 300, "used": 300}


def test_flash_sale_grants_exactly_the_capacity(server, target):
    r = loadgen.flash_sale(target, capacity=100, count=150, inflight=16, date=server.day)
    assert r.ok, r.summary()
    assert r.counts["granted"] == 100 and r.counts["refused"] == {"SOLD_OUT": 50}
    names = {c.name for c in r.checks}
    assert "flash sale: in the shard's order (audit log) SOLD_OUT only once the slot was full" in names
    assert any(n.startswith("flash sale: retried holds") for n in names)
    granted = [res for _, res, _ in r.answers if isinstance(res, int)]
    assert len(set(granted)) == 100
    # the server's stock of the slot the sale created: full, not one over
    s = slots(server, server.day.isoformat())[r.extra["slot"]]
    assert s["capacity"] == 100 and s["sold"] + s["held"] == 100 and s["held"] == 100


def test_flash_sale_by_buy_sells_exactly_the_capacity_and_holds_nothing(server, target):
    """--buy: each ask an order (SalesService.Buy); the slot ends sold out with nothing
    held, and the server issued one ticket per order granted."""
    before = ticket_counts(server)
    r = loadgen.flash_sale(target, capacity=60, count=90, inflight=16, date=server.day, buy=True)
    assert r.ok, r.summary()
    assert r.counts["granted"] == 60 and r.counts["refused"] == {"SOLD_OUT": 30}
    assert slots(server, server.day.isoformat())[r.extra["slot"]] == {"capacity": 60, "sold": 60, "held": 0}
    assert delta(before, ticket_counts(server))["issued"] == 60
    with pytest.raises(loadgen.LoadgenError, match="nothing held"):
        loadgen.flash_sale(target, capacity=5, date=server.day, buy=True, release=True)


def test_flash_sale_release_returns_the_stock(server, target):
    r = loadgen.flash_sale(target, capacity=40, count=60, inflight=8, date=server.day, release=True)
    assert r.ok, r.summary()
    assert r.counts["granted"] == 40 and r.counts["released"] == 40
    assert slots(server, server.day.isoformat())[r.extra["slot"]] == {"capacity": 40, "sold": 0, "held": 0}


def test_flash_sale_on_a_given_slot_without_admin_key(server, target):
    # a whole-day slot of 30, made by the admin; the sale itself has channel keys only
    slot = "lg-test-given"
    with loadgen.Venue(target) as v:
        v.create_slot(slot, "main", server.day, 30)
    sellers = loadgen.Target(server.address, loadgen.Keys(sales=list(target.keys.sales)), VENUE)
    with pytest.raises(loadgen.LoadgenError, match="admin key"):
        loadgen.flash_sale(sellers, capacity=10, date=server.day)
    r = loadgen.flash_sale(sellers, slot=slot, count=45, inflight=8, date=server.day)
    assert r.ok, r.summary()
    assert r.counts["granted"] == 30 and r.counts["refused"] == {"SOLD_OUT": 15}
    assert any("audit-order check skipped" in n for n in r.notes)
    assert slots(server, server.day.isoformat())[slot] == {"capacity": 30, "sold": 0, "held": 30}


def test_holiday(server, target):
    day = server.day.isoformat()
    before, stock0 = ticket_counts(server), slots(server, day)
    r = loadgen.holiday(target, count=200, concurrency=12, exit_share=0.4, reentry_share=0.5,
                        dupes=0.1, date=server.day, duration_s=60)
    assert r.ok, r.summary()
    c = r.counts
    assert c["sold"] == 200 and c["admitted"] == 200 and c["not_scanned"] == 0
    assert c["exited"] > 0 and c["reentered"] > 0 and c["repeats_refused"] > 0
    # the visitors' stories, from the raw answers: one OK entry each, plus one OK exit for
    # those who left; re-entries OK_REENTRY, second tries ALREADY_USED
    oks = admissions(r)
    assert len(oks) == 200 and set(oks.values()) <= {1, 2}
    assert sum(1 for v in oks.values() if v == 2) == c["exited"]
    reasons = Counter(reason for _, reason, _ in r.answers)
    assert reasons[common_pb2.OK_REENTRY] == c["reentered"]
    assert reasons[ALREADY_USED] == c["repeats_refused"]
    assert reasons[OK] == c["admitted"] + c["exited"]          # entries and exits
    # the server agrees: 200 issued, 200 used, 200 more sold over the day's slots, no oversell
    assert delta(before, ticket_counts(server)) == {"issued": 200, "used": 200}
    stock1 = slots(server, day)
    assert sum(stock1[k]["sold"] - stock0[k]["sold"] for k in stock0) == 200
    assert all(s["sold"] + s["held"] <= s["capacity"] for s in stock1.values())


def test_only_loopback_unless_allowed(server):
    for addr in ("10.1.2.3:50051", "localhost:50051", "0.0.0.0:50051", "[::1]:50051"):
        with pytest.raises(loadgen.LoadgenError, match="allow-remote"):
            loadgen.Target(addr, loadgen.Keys(admin="k"))
    assert loadgen.Target("10.1.2.3:50051", loadgen.Keys(admin="k"), allow_remote=True)
    with pytest.raises(loadgen.LoadgenError, match="HOST:PORT"):
        loadgen.Target("127.0.0.1", loadgen.Keys(admin="k"))


def test_bounds_and_keys(server, target):
    with pytest.raises(loadgen.LoadgenError, match="count"):
        loadgen.verify_unary(target, count=loadgen.MAX_COUNT + 1)
    with pytest.raises(loadgen.LoadgenError, match="duration"):
        loadgen.verify_unary(target, count=10, duration_s=loadgen.MAX_DURATION_S + 1)
    gate_only = loadgen.Target(server.address, loadgen.Keys(gate=target.keys.gate), VENUE)
    with pytest.raises(loadgen.LoadgenError, match="sales key"):
        loadgen.verify_unary(gate_only, count=10, date=server.day)
    with pytest.raises(loadgen.LoadgenError, match="no venue 'nowhere'"):
        loadgen.verify_unary(loadgen.Target(server.address, target.keys, "nowhere"), count=10)
    k = loadgen.Keys.parse(["gate=tsk_g_1", "tsk_a_2,sales=tsk_s_3"])
    assert (k.gate, k.admin, k.sales) == ("tsk_g_1", "tsk_a_2", ["tsk_s_3", "tsk_a_2"])
    with pytest.raises(loadgen.LoadgenError, match="unknown key role"):
        loadgen.Keys.parse(["boss=tsk_x_1"])
    assert target.keys.admin == server.keys["admin"] and target.keys.gate == server.keys["demo-gate"]
    assert target.keys.sales == [server.keys["demo-ota"], server.keys["demo-window"]]


def test_clients_never_import_engine_or_server():
    """DESIGN.md 2: a gate vendor can ship clients/ without the engine."""
    code = ("import sys, clients.loadgen; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('engine', 'server', 'bench')); "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_scan_checks_catch_what_is_wrong():
    """The verdict fails on a double admission, a refusal without an admission, an answer
    about another ticket, and a server count that disagrees."""
    good = [(1, "A", OK, 1), (2, "B", OK, 2), (2, "B", ALREADY_USED, 2)]
    assert all(c.passed for c in loadgen.scan_checks(good)[0])
    cases = {
        "no ticket admitted twice": good + [(1, "A", OK, 1)],
        "the only refusals are concurrent duplicates, ALREADY_USED": good + [(3, "C", ALREADY_USED, 3)],
        "every answer names the ticket asked": [(1, "A", OK, 9)],
        "every scanned ticket admitted exactly once": good + [(4, "D", common_pb2.EXPIRED, 4)],
    }
    for name, answers in cases.items():
        checks, _ = loadgen.scan_checks(answers)
        assert name in [c.name for c in checks if not c.passed], name
    # a failed call's ticket may have been admitted: neither "never admitted" nor a count error
    checks, counts = loadgen.scan_checks(good + [(5, "E", None, None)])
    assert all(c.passed for c in checks) and counts["unknown"] == 1
    checks = loadgen.Checks()
    loadgen.count_checks(checks, "used rose", 10, 12, 3)
    loadgen.count_checks(checks, "used rose with slack", 10, 14, 3, slack=1)
    loadgen.count_checks(checks, "right", 10, 13, 3)
    assert [c.passed for c in checks] == [False, True, True]


# -- the CLI ----------------------------------------------------------------------------------------
def turnstile(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "turnstile.clients.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=180)


def loadgen_cli(server, *args: str) -> subprocess.CompletedProcess:
    return turnstile("loadgen", *args, "--address", server.address, "--keys-file",
                     os.path.join(server.data, "demo-keys.txt"), "--date", server.day.isoformat())


def test_cli_help():
    r = turnstile("loadgen", "--help")
    assert r.returncode == 0, r.stderr
    for word in ("usage: turnstile loadgen", "verify-unary", "verify-stream", "flash-sale",
                 "gate-storm", "holiday", "--keys-file", "--allow-remote", "--duration", "--count",
                 "--concurrency", "exit status"):
        assert word in r.stdout, word
    top = turnstile("--help")
    assert "loadgen" in top.stdout


@pytest.mark.parametrize("scenario,args", [
    ("verify-unary", ["-n", "200", "-c", "8", "--dupes", "0.05"]),
    ("verify-stream", ["-n", "200", "-c", "2", "--per-call", "40"]),
    ("gate-storm", ["-n", "200", "-c", "4", "--burst", "5", "--interval", "0.02"]),
    ("holiday", ["-n", "150", "-c", "8"]),
])
def test_cli_scan_scenarios(server, tmp_path, scenario, args):
    out = tmp_path / "result.json"
    before = ticket_counts(server)
    # no --quiet: stderr is not a terminal here, so there must be no progress bar either
    r = loadgen_cli(server, scenario, *args, "--json", str(out), "--loop", "asyncio")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "\r" not in r.stderr and "%|" not in r.stderr          # no tqdm bar
    assert "verdict: pass" in r.stdout and "p99.9" in r.stdout
    res = json.loads(out.read_text())
    assert res["ok"] and res["verdict"] == "pass" and res["scenario"] == scenario
    n = int(args[1])
    admitted = res["counts"]["admitted"]
    assert admitted == n
    issued = res["counts"]["sold"] if scenario == "holiday" else n
    assert issued == n
    assert delta(before, ticket_counts(server)) == {"issued": n, "used": n}


def test_cli_verify_stream_packed(server, tmp_path):
    """--packed: the concentrators' VerifyPacked, checked as VerifyStream is (each ticket
    admitted once; ReportService counted them)."""
    out = tmp_path / "packed.json"
    before = ticket_counts(server)
    r = loadgen_cli(server, "verify-stream", "--packed", "-n", "300", "-c", "2", "--per-call", "100",
                    "--json", str(out), "--loop", "asyncio")
    assert r.returncode == 0, r.stdout + r.stderr
    res = json.loads(out.read_text())
    assert res["ok"] and res["scenario"] == "verify-packed" and res["counts"]["admitted"] == 300
    assert res["calls"] == 3
    assert delta(before, ticket_counts(server)) == {"issued": 300, "used": 300}
    r = loadgen_cli(server, "flash-sale", "--packed", "--capacity", "5")
    assert r.returncode == 2 and "--packed is for verify-stream" in r.stdout + r.stderr


def test_cli_flash_sale(server, tmp_path):
    out = tmp_path / "flash.json"
    r = loadgen_cli(server, "flash-sale", "--capacity", "50", "-n", "80", "-c", "8", "--quiet",
                    "--json", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    res = json.loads(out.read_text())
    assert res["counts"]["granted"] == 50 and res["counts"]["refused"] == {"SOLD_OUT": 30}
    s = slots(server, server.day.isoformat())[res["extra"]["slot"]]
    assert s == {"capacity": 50, "sold": 0, "held": 50}
    assert "granted 50" in r.stdout and "verdict: pass" in r.stdout


def test_cli_exit_status_1_on_a_failed_check(server, tmp_path):
    codes = tmp_path / "codes.txt"
    r = loadgen_cli(server, "verify-unary", "-n", "30", "-c", "4", "--save-codes", str(codes), "-q")
    assert r.returncode == 0, r.stdout + r.stderr
    assert len([ln for ln in codes.read_text().splitlines() if not ln.startswith("#")]) == 30
    again = loadgen_cli(server, "verify-unary", "--codes-file", str(codes), "--product", "adult", "-q")
    assert again.returncode == 1, again.stdout + again.stderr
    assert "[FAIL] every scanned ticket admitted exactly once" in again.stdout
    assert "verdict: FAIL" in again.stdout
    used = loadgen_cli(server, "gate-storm", "--codes-file", str(codes), "--gate", "north-2",
                       "--expect", "used", "-q")
    assert used.returncode == 0, used.stdout + used.stderr
    assert "refused {'ALREADY_USED': 30}" in used.stdout


def test_cli_refuses_and_explains(server, tmp_path):
    r = turnstile("loadgen", "verify-unary", "--address", "192.0.2.1:50051", "--key", "tsk_x_y")
    assert r.returncode == 2 and "--allow-remote" in r.stderr and r.stdout == ""
    r = turnstile("loadgen", "flash-sale", "--address", server.address,
                  "--key", f"sales={server.keys['demo-ota']}")
    assert r.returncode == 2 and "admin key" in r.stderr
    r = turnstile("loadgen", "holiday", "--address", server.address, "--keys-file",
                  str(tmp_path / "missing.txt"))
    assert r.returncode == 2 and "cannot read keys file" in r.stderr
    r = turnstile("loadgen", "flash-sale", "--dupes", "0.1", "--address", server.address,
                  "--key", server.keys["admin"])
    assert r.returncode == 2 and "--dupes" in r.stderr
