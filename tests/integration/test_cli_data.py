"""`turnstile backup | restore | shards` as an operator runs them: every command is a
subprocess of the real CLI, against real data dirs and a real server (DESIGN.md 8, 10)."""
from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import threading
import time

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from turnstile.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    common_pb2,
    gate_pb2,
    gate_pb2_grpc,
    inventory_pb2,
    inventory_pb2_grpc,
    sales_pb2,
    sales_pb2_grpc,
)

from turnstile.engine import Shard, demo
from tests.integration.conftest import ROOT, kill_server, start_server, stop_server, venue_day
from tests.conftest import add_hills, tree

OK = common_pb2.ScanReason.Value("OK")
HILLS_DAY = dt.date(2026, 11, 24)


def cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "turnstile.clients.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, check=False)


def ok(*args: str) -> subprocess.CompletedProcess:
    r = cli(*args)
    assert r.returncode == 0, f"turnstile {' '.join(args)}: {r.stdout}\n{r.stderr}"
    return r


def refused(*args: str, words: str) -> subprocess.CompletedProcess:
    r = cli(*args)
    assert r.returncode == 1, f"turnstile {' '.join(args)} was not refused: {r.stdout}\n{r.stderr}"
    assert words in r.stderr, r.stderr
    return r


@pytest.mark.parametrize("argv,words", [
    (["backup"], ["--out", "hot", "compacting copy", "one read transaction", "manifest.json",
                  "SHA-256", "owner.lock"]),
    (["restore"], ["--from", "--data", "SHA-256", "non-empty", "invariant", "Exit status 1"]),
    (["shards"], ["list", "set-count", "move", "offline"]),
    (["shards", "list"], ["--data", "--json", "venue map"]),
    (["shards", "set-count"], ["N", "--data", "recorded", "serve", "refuses"]),
    (["shards", "move"], ["VENUE", "--to", "issued tickets", "active holds", "engine commands",
                          "unmapped"]),
])
def test_help(argv, words):
    r = ok(*argv, "--help")
    text = " ".join(r.stdout.split())
    for w in words:
        assert w in text, f"{w!r} not in `turnstile {' '.join(argv)} --help`"


# -- backup and restore -------------------------------------------------------------------
def test_hot_backup_under_load_restores_every_acknowledged_order(tmp_path):
    data, backup, restored = (str(tmp_path / n) for n in ("data", "backup", "restored"))
    day = venue_day()
    server = start_server(data, day)
    stop = threading.Event()
    acked: list[tuple[str, list[int]]] = []           # (order id, ticket ids), as answered
    errors: list[BaseException] = []
    lock = threading.Lock()
    try:
        ch = server.channel()
        sales, gate = sales_pb2_grpc.SalesServiceStub(ch), gate_pb2_grpc.GateServiceStub(ch)
        ota, gate_key = server.meta("demo-ota"), server.meta("demo-gate")

        def load() -> None:
            i = 0
            try:
                while not stop.is_set():
                    i += 1
                    hour = 8 + 2 * (i % 5)
                    h = sales.Hold(sales_pb2.HoldRequest(
                        venue_id="westlake", idempotency_key=f"load-{i}",
                        items=[sales_pb2.Item(product_id="adult", slot_ids=[demo.slot_id("main", day, hour)],
                                              qty=1 + i % 2)]), metadata=ota, timeout=10)
                    c = sales.Confirm(sales_pb2.ConfirmRequest(
                        hold_id=h.hold_id, order_id=f"load-order-{i}",
                        payment=sales_pb2.Payment(method="alipay", reference=f"ref-{i}",
                                                  amount_fen=h.amount_fen)), metadata=ota, timeout=10)
                    with lock:
                        acked.append((c.order.order_id, [t.ticket_id for t in c.tickets]))
                    if i % 3 == 0:                   # scans are writes too
                        r = gate.Verify(gate_pb2.VerifyRequest(
                            code=c.tickets[0].code, gate_id="north-1", direction=common_pb2.IN,
                            scan_time=Timestamp(seconds=demo.local_time(day, hour, 30))),
                            metadata=gate_key, timeout=10)
                        assert r.reason == OK, r
            except BaseException as e:              # noqa: BLE001 (reported below)
                errors.append(e)

        worker = threading.Thread(target=load, daemon=True)
        worker.start()
        deadline = time.monotonic() + 60
        while len(acked) < 50 and time.monotonic() < deadline and not errors:
            time.sleep(0.05)
        assert not errors, errors
        with lock:
            before = list(acked)                     # acknowledged before the backup started
        t0 = time.perf_counter()
        b = cli("backup", "--data", data, "--out", backup)
        took = time.perf_counter() - t0
        with lock:
            during = len(acked) - len(before)
        time.sleep(0.3)
        stop.set()
        worker.join(30)
        assert not errors, errors
        assert b.returncode == 0, b.stdout + b.stderr
        assert during > 0, "no write was answered while the backup ran"
        ch.close()
    finally:
        stop.set()
        if server.proc.poll() is None:
            assert "stopped" in stop_server(server)
    print(f"\nbackup under load: {took:.2f} s, {len(before)} orders before, {during} during; "
          + b.stdout.splitlines()[0])

    with open(os.path.join(backup, "manifest.json")) as f:
        manifest = json.load(f)
    assert manifest["format"] == "turnstile-backup/1"
    assert set(manifest["files"]) >= {"shard-0/data.mdb", "shard-1/data.mdb", "control/data.mdb"}
    assert "demo-keys.txt" not in manifest["files"]        # API keys in clear stay behind
    s0 = manifest["shards"][0]
    assert s0["venues"] == ["westlake"] and s0["violations"] == []
    assert s0["orders"] >= len(before) + 1          # + the demo's order
    # a copy of one committed transaction: its counts are those of a state between the
    # orders answered before the backup and those answered by its end
    all_tickets = sum(len(t) for _, t in acked) + 2
    assert sum(len(t) for _, t in before) + 2 <= s0["tickets"] <= all_tickets

    r = ok("restore", "--from", backup, "--data", restored)
    assert "every shard opens, every invariant holds, counts match the manifest" in r.stdout
    ok("check", "--data", restored)
    ok("check", "--replay", "--data", restored)

    everything = dict(acked) | {"demo-" + day.strftime("%Y%m%d"): [0, 1],     # the demo's 2 tickets
                                "demo-" + (day + dt.timedelta(days=1)).strftime("%Y%m%d"): [0, 1]}
    for want in manifest["shards"]:
        shard = Shard.open(os.path.join(restored, want["dir"]), shard_id=want["shard"])
        try:
            st = shard.state
            codes = sum(r.issued for v in st.venues for r in shard.ticket_counts(v))
            # order rows: order/<channel>\0<order id> (order ids are the channel's own)
            orders = [k.decode()[6:].split("\0", 1) for k, _ in shard.storage.rows_with_prefix(b"order/")]
            assert (shard.storage.last_seq(), codes, len(st.holds), len(orders),
                    len(st.tickets.used), list(st.venues)) == (
                want["last_seq"], want["tickets"], want["holds"], want["orders"], want["used"],
                want["venues"])
            if want["shard"] == 0:
                for order_id, tickets in before:       # every order acknowledged before
                    assert shard.get_order(order_id, "ota").ticket_ids() == tickets
                    assert all(t in st.tickets.issued for t in tickets)
                for channel, order_id in orders:       # and nothing that was never answered
                    assert shard.get_order(order_id, channel).ticket_ids() == everything[order_id]
        finally:
            shard.close(snapshot=False)

    # the restored data dir serves, with its principals and keys (as the operator has them)
    again = start_server(restored, day)
    again.keys = server.keys
    try:
        ch = again.channel()
        order_id, tickets = before[0]
        o = sales_pb2_grpc.SalesServiceStub(ch).GetOrder(
            sales_pb2.GetOrderRequest(order_id=order_id), metadata=again.meta("demo-ota"), timeout=10)
        assert [t.ticket_id for t in o.tickets] == tickets
        ch.close()
    finally:
        assert "stopped" in stop_server(again)


WRITER = """
import sys, time
import datetime as dt
from turnstile.engine import Shard, cmd, demo, HoldItem, TurnstileError
# on the real clock: venue-local tomorrow, whose slots are on sale whatever the hour
DAY = dt.datetime.now(dt.timezone(dt.timedelta(hours=8))).date() + dt.timedelta(days=1)
s = Shard.open(sys.argv[1], shard_id=0, snapshot_every=400)     # snapshots: journal dropped often
s.run_many(demo.commands(DAY, 1, main_capacity=10**8))
slot = demo.slot_id("main", DAY, 8)
print("ready", flush=True)
i = 0
while time.monotonic() < float(sys.argv[2]):
    holds = s.run_many([cmd.hold("web", "westlake", [HoldItem("adult", (slot,), 1 + k % 3)])
                        for k in range(20)])
    s.run_many([cmd.confirm(h.hold_id, f"w-{i}-{k}", "web", method="cash", amount_fen=h.amount_fen)
                for k, h in enumerate(holds) if not isinstance(h, TurnstileError)])
    i += 1
s.close()
print("batches", 2 * i, flush=True)
"""


def test_backups_taken_across_snapshots_and_heavy_writes_are_consistent(tmp_path):
    """A writer commits a batch every millisecond or so and snapshots (rewriting the
    snapshot, dropping journal) every 400 commands; each backup taken meanwhile is one
    committed state: it restores, replays and checks clean, with its own counts."""
    data = tmp_path / "data"
    data.mkdir()
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(data / "shard-0"),
                               str(time.monotonic() + 60)], cwd=ROOT, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert writer.stdout.readline().strip() == "ready"
        manifests = []
        for n in range(3):
            ok("backup", "--data", str(data), "--out", str(tmp_path / f"b{n}"), "--quiet")
            with open(tmp_path / f"b{n}" / "manifest.json") as f:
                manifests.append(json.load(f)["shards"][0])
    finally:
        writer.kill()
        writer.wait(10)
    seqs = [m["last_seq"] for m in manifests]
    print("\nbackups at", [(m["last_seq"], m["snapshot_seq"], m["tickets"], m["copy_s"]) for m in manifests])
    assert seqs == sorted(seqs) and len(set(seqs)) == 3, seqs       # taken while it wrote
    assert any(m["snapshot_seq"] for m in manifests)
    for n, m in enumerate(manifests):
        assert m["violations"] == [] and m["tickets"] > 0
        r = ok("restore", "--from", str(tmp_path / f"b{n}"), "--data", str(tmp_path / f"r{n}"),
               "--replay")
        assert "counts match the manifest" in r.stdout


@pytest.fixture(scope="module")
def offline_backup(tmp_path_factory):
    """A backup of a freshly seeded data dir, taken with no server running."""
    base = tmp_path_factory.mktemp("offline")
    data, backup = str(base / "data"), str(base / "backup")
    ok("demo", "--data", data, "--start", venue_day().isoformat())
    r = ok("backup", "--data", data, "--out", backup, "--quiet")
    assert "backed up 1 shard" in r.stdout
    return data, backup


def test_backup_refuses_a_non_empty_directory(offline_backup, tmp_path):
    data, _ = offline_backup
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    refused("backup", "--data", data, "--out", str(out), words="is not empty")
    assert os.listdir(out) == ["keep.txt"]
    refused("backup", "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "o2"),
            words="no shards")


def test_restore_refuses_a_tampered_backup(offline_backup, tmp_path):
    _, backup = offline_backup
    bad = str(tmp_path / "bad")
    shutil.copytree(backup, bad)
    path = os.path.join(bad, "shard-0", "data.mdb")
    with open(path, "r+b") as f:                     # one byte, same size
        f.seek(os.path.getsize(path) // 2)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0xFF]))
    target = str(tmp_path / "target")
    r = refused("restore", "--from", bad, "--data", target, words="is damaged")
    assert "shard-0/data.mdb: sha256" in r.stderr
    assert not os.path.exists(target)
    assert not [d for d in os.listdir(tmp_path) if d.startswith(".turnstile-restore-")]

    os.remove(path)                                   # a missing file
    r = refused("restore", "--from", bad, "--data", target, words="is damaged")
    assert "shard-0/data.mdb: missing" in r.stderr
    os.remove(os.path.join(bad, "manifest.json"))     # no manifest: not a (finished) backup
    refused("restore", "--from", bad, "--data", target, words="has no manifest.json")
    assert not os.path.exists(target)


def test_restore_refuses_a_non_empty_target(offline_backup, tmp_path):
    _, backup = offline_backup
    target = tmp_path / "target"
    target.mkdir()
    (target / "shard-0").mkdir()
    (target / "shard-0" / "data.mdb").write_bytes(b"someone else's data")
    before = tree(str(target))
    refused("restore", "--from", backup, "--data", str(target), words="is not empty")
    assert tree(str(target)) == before
    empty = tmp_path / "empty"                        # an empty directory is fine
    empty.mkdir()
    r = ok("restore", "--from", backup, "--data", str(empty))
    assert "shard-0: ok" in r.stdout


# -- shards ---------------------------------------------------------------------------------
def _add_hills(data: str) -> None:
    """tests.conftest.add_hills on shard 0 of `data`."""
    with Shard.open(os.path.join(data, "shard-0"), shard_id=0) as s:
        add_hills(s, HILLS_DAY)


def _catalog(st, venue: str) -> dict:
    """A venue's catalog as the engine holds it (objects are keyed (venue, id))."""
    slots = {s.id: s for s in st.slot_defs.values() if s.venue == venue}
    slot_of = {st.slot_idx[(venue, sid)]: sid for sid in slots}
    return {
        "venue": st.venues[venue],
        "zones": {z.id: z for z in st.zones.values() if z.venue == venue},
        "gates": {g.id: g for g in st.gates.values() if g.venue == venue},
        "products": {p.id: p for p in st.product_list if p.venue == venue},
        # Slot.capacity is the one it was made with; the counters hold the current one
        "slots": {sid: (s.zone, s.day, s.start, s.end,
                        st.slots.slot(st.slot_idx[(venue, sid)])["capacity"]) for sid, s in slots.items()},
        "allotments": {(slot_of[s], ch): st.slots.allotment(a)["capacity"]
                       for (s, ch), a in st.allot_idx.items() if s in slot_of},
    }


def _listing(data: str) -> dict:
    return json.loads(ok("shards", "list", "--data", data, "--json").stdout)


def test_shards_set_count_list_move_and_refusals(tmp_path):
    data = str(tmp_path / "data")
    ok("demo", "--data", data, "--start", venue_day().isoformat())   # westlake, 2 tickets
    _add_hills(data)

    got = _listing(data)
    assert got["shard_count"] is None and [r["shard"] for r in got["shards"]] == [0]
    assert got["shards"][0]["venues"] == ["westlake", "hills"]
    assert got["shards"][0]["tickets_by_venue"] == {"westlake": 2, "hills": 0}
    assert got["shards"][0]["file_bytes"] > 0 and got["shards"][0]["orders"] == 1
    assert "westlake (2 tickets), hills (0 tickets)" in ok("shards", "list", "--data", data).stdout

    # grow, shrink (empty shards only), grow again
    assert "created shard 1, 2, 3" in ok("shards", "set-count", "4", "--data", data).stdout
    got = _listing(data)
    assert got["shard_count"] == 4 and [r["shard"] for r in got["shards"]] == [0, 1, 2, 3]
    assert [r["empty"] for r in got["shards"]] == [False, True, True, True]
    assert "removed empty shard 3" in ok("shards", "set-count", "3", "--data", data).stdout
    assert not os.path.exists(os.path.join(data, "shard-3"))
    assert _listing(data)["shard_count"] == 3
    refused("shards", "set-count", "0", "--data", data, words="at least 1")

    # a venue that has sold cannot move: its codes carry shard 0
    refused("shards", "move", "westlake", "--to", "1", "--data", data,
            words="venue westlake on shard 0 has 2 issued tickets")
    refused("shards", "move", "ghost", "--to", "1", "--data", data, words="no venue ghost")
    refused("shards", "move", "hills", "--to", "7", "--data", data, words="there is no shard 7")
    refused("shards", "move", "hills", "--to", "0", "--data", data, words="already on shard 0")

    r = ok("shards", "move", "hills", "--to", "2", "--data", data)
    assert "moved venue hills from shard 0 to shard 2" in r.stdout
    assert "no command to remove a venue" in r.stdout
    s0 = Shard.open(os.path.join(data, "shard-0"), shard_id=0)
    s2 = Shard.open(os.path.join(data, "shard-2"), shard_id=2)
    try:
        moved, original = _catalog(s2.state, "hills"), _catalog(s0.state, "hills")
        assert moved == original
        assert moved["slots"]["summit-0"][-1] == 150 and moved["allotments"] == {("summit-0", "ota"): 20}
        assert len(moved["gates"]) == 2 and moved["products"]["hike"].channel_prices == {"ota": 2800}
        assert s2.check() == []
    finally:
        s0.close(snapshot=False)
        s2.close(snapshot=False)
    got = _listing(data)
    assert got["venue_map"] == {"hills": 2}
    assert got["shards"][0]["unmapped"] == {"hills": 2} and got["shards"][0]["venues"] == ["westlake"]
    assert got["shards"][2]["venues"] == ["hills"] and not got["shards"][2]["empty"]
    assert got["problems"] == []

    refused("shards", "set-count", "2", "--data", data, words="shard 2 holds hills")
    refused("shards", "move", "hills", "--to", "2", "--data", data, words="already on shard 2")
    refused("shards", "move", "hills", "--to", "0", "--data", data,
            words="shard 0 already has venue hills")

    # serve runs the recorded count, routes hills to shard 2, and sells it there
    server = start_server(data, HILLS_DAY)   # its clock: that morning
    try:
        ch = server.channel()
        admin = server.meta("admin")
        smap = admin_pb2_grpc.AdminServiceStub(ch).GetShardMap(admin_pb2.GetShardMapRequest(),
                                                                metadata=admin, timeout=10)
        eps = {e.shard: e.address for e in smap.shards}
        assert sorted(eps) == [0, 1, 2]
        assert dict(smap.venues) == {"westlake": 0, "hills": 2}
        ch2 = grpc.insecure_channel(eps[2])
        avail = inventory_pb2_grpc.InventoryServiceStub(ch2).Availability(
            inventory_pb2.AvailabilityRequest(venue_id="hills", date_from=HILLS_DAY.isoformat()),
            metadata=admin, timeout=10)
        assert {s.slot_id: s.capacity for s in avail.slots} == {"summit-0": 150, "summit-2": 100}
        sales = sales_pb2_grpc.SalesServiceStub(ch2)
        h = sales.Hold(sales_pb2.HoldRequest(venue_id="hills", idempotency_key="hike-1", items=[
            sales_pb2.Item(product_id="hike", slot_ids=["summit-0"], qty=1)]), metadata=admin, timeout=10)
        c = sales.Confirm(sales_pb2.ConfirmRequest(hold_id=h.hold_id, order_id="hike-order-1",
                                                   payment=sales_pb2.Payment(method="cash",
                                                                             amount_fen=h.amount_fen)),
                          metadata=admin, timeout=10)
        v = gate_pb2_grpc.GateServiceStub(ch2).Verify(gate_pb2.VerifyRequest(
            code=c.tickets[0].code, gate_id="summit-in", direction=common_pb2.IN,
            scan_time=Timestamp(seconds=demo.local_time(HILLS_DAY, 9, 30))), metadata=admin, timeout=10)
        assert v.reason == OK
        # the shard it moved from still holds the old catalog but does not sell it
        with pytest.raises(grpc.RpcError) as e:
            sales_pb2_grpc.SalesServiceStub(ch).Hold(sales_pb2.HoldRequest(
                venue_id="hills", idempotency_key="hike-stale", items=[
                    sales_pb2.Item(product_id="hike", slot_ids=["summit-0"], qty=1)]),
                metadata=admin, timeout=10)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND and "on shard 2" in e.value.details()
        ch.close()
        ch2.close()

        # offline commands refuse while the server holds the shards, and change nothing
        for argv in (["list"], ["set-count", "5"], ["move", "hills", "--to", "1"]):
            refused("shards", *argv, "--data", data, words="held by a running server")
        assert not os.path.exists(os.path.join(data, "shard-4"))
        # a hot backup is the one that runs beside it
        ok("backup", "--data", data, "--out", str(tmp_path / "backup"))
    finally:
        if server.proc.poll() is None:
            assert "stopped" in stop_server(server)
        else:
            kill_server(server)
    assert _listing(data)["shard_count"] == 3

    # now hills has sold on shard 2: it cannot move back, nor can the count drop
    refused("shards", "move", "hills", "--to", "1", "--data", data,
            words="venue hills on shard 2 has 1 issued ticket")
    # serve refuses to run fewer shards than recorded
    r = cli("serve", "--data", data, "--port", "0", "--shards", "2", timeout=60)
    assert r.returncode != 0 and "has 3 shards" in r.stderr, r.stdout + r.stderr
    ok("check", "--data", data)
