"""Gates through a network outage (DESIGN.md 6): real server process, real gRPC, real
LMDB queues. The server is stopped while gates go on admitting, then started again
on the same port; the queues upload exactly once and a double admission across two
offline gates shows as one conflict."""
from __future__ import annotations

import csv
import datetime as dt
import io
import socket
import subprocess
import sys
import time

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from turnstile.clients.base import Connection
from turnstile.clients.gate import GateClient, GateOffline, OUT
from tests.integration.conftest import ROOT, start_server, stop_server, venue_day
from turnstile.v1 import (admin_pb2, admin_pb2_grpc, gate_pb2, gate_pb2_grpc, report_pb2,
                          report_pb2_grpc, sales_pb2, sales_pb2_grpc)

VENUE = "westlake"
OFFSET = 8 * 3600


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def local_day(t: float) -> dt.date:
    return dt.date(1970, 1, 1) + dt.timedelta(days=int((t + OFFSET) // 86400))


@pytest.fixture(scope="module")
def outage(tmp_path_factory):
    """A server on a fixed port (so it can come back on it), with a product of its own:
    single use, no re-entry, a slot covering the whole venue-local day."""
    data = str(tmp_path_factory.mktemp("gate-data"))
    port = free_port()
    args = ("--port", str(port), "--shards", "1")
    server = start_server(data, venue_day(), args, clock=False)
    address = f"127.0.0.1:{port}"
    conn = Connection(address, server.keys["admin"], timeout=10)
    admin = admin_pb2_grpc.AdminServiceStub(conn.channel())
    meta = conn.metadata
    admin.CreateProduct(admin_pb2.CreateProductRequest(
        venue_id=VENUE, product_id="gate-test", zone_ids=["main"], price_fen=1000,
        rule=admin_pb2.EntryRule(max_entries=1, valid_days=1)), metadata=meta, timeout=10)
    today = local_day(time.time())
    slots = []
    for d in (today, today + dt.timedelta(days=1)):
        midnight = (d - dt.date(1970, 1, 1)).days * 86400 - OFFSET
        slots.append(admin_pb2.SlotSpec(slot_id=f"allday-{d:%Y%m%d}", zone_id="main",
                                        date=d.isoformat(), start=Timestamp(seconds=midnight),
                                        end=Timestamp(seconds=midnight + 86400), capacity=100))
    admin.CreateSlots(admin_pb2.CreateSlotsRequest(venue_id=VENUE, slots=slots), metadata=meta,
                      timeout=10)
    state = {"server": server, "data": data, "args": args, "address": address, "day": today,
             "conn": conn, "keys": server.keys}
    yield state
    conn.close()
    if state["server"].proc.poll() is None:
        stop_server(state["server"])


def buy(state, qty: int, order: str) -> list[str]:
    conn = Connection(state["address"], state["keys"]["admin"], timeout=10)
    try:
        sales = sales_pb2_grpc.SalesServiceStub(conn.channel())
        h = sales.Hold(sales_pb2.HoldRequest(venue_id=VENUE, idempotency_key=f"h-{order}", items=[
            sales_pb2.Item(product_id="gate-test", slot_ids=[f"allday-{state['day']:%Y%m%d}"], qty=qty)]),
            metadata=conn.metadata, timeout=10)
        c = sales.Confirm(sales_pb2.ConfirmRequest(
            hold_id=h.hold_id, order_id=order,
            payment=sales_pb2.Payment(method="cash", amount_fen=h.amount_fen)),
            metadata=conn.metadata, timeout=10)
        return [t.code for t in c.tickets]
    finally:
        conn.close()


def gate(state, tmp_path, gate_id: str, **kw) -> GateClient:
    return GateClient(state["address"], state["keys"]["demo-gate"], gate_id, VENUE,
                      state_dir=str(tmp_path / gate_id), timeout=2.0, retry_online_s=0.0, **kw)


def forge(code: str) -> str:
    i = len(code) // 2
    return code[:i] + ("A" if code[i] != "A" else "B") + code[i + 1:]


def test_gates_through_an_outage(outage, tmp_path):
    codes = buy(outage, 6, "gate-order-1")
    a, b = gate(outage, tmp_path, "north-1"), gate(outage, tmp_path, "north-2")
    try:
        assert a.maintain() and b.maintain()
        assert a.bundle.msg.full and a.pending() == 0
        # online: the server decides
        d = a.verify(codes[0])
        assert (d.reason, d.offline) == ("OK", False)
        # the bundle catches up incrementally with what happened online
        before = a.bundle.msg.version
        assert a.maintain()
        assert a.bundle.msg.version > before

        stop_server(outage["server"])                     # the network is gone

        d = a.verify(codes[0])                            # used online before the outage
        assert (d.reason, d.offline) == ("ALREADY_USED", True)
        d = a.verify(codes[1])
        assert (d.reason, d.admitted, d.offline, d.persons) == ("OK", True, True, 1)
        assert a.verify(codes[1]).reason == "ALREADY_USED"          # second use, same gate
        assert a.verify(forge(codes[2])).reason == "FORGED"
        assert a.verify(codes[2], direction=OUT, gate_id="south-exit").reason == "OK"
        # one ticket at two offline gates: each admits it, neither can know
        d3 = a.verify(codes[3])
        assert d3.reason == "OK"
        assert b.verify(codes[3]).reason == "OK"
        assert a.pending() == 6 and b.pending() == 1
        with pytest.raises(GateOffline):
            a.verify(id_number="110101199003071234")      # the holder index is the server's
        with pytest.raises(GateOffline):
            a.verify(face_token="hik-face-5e1c0d77")      # so are face tokens
        # a gate whose bundle is past its age admits nobody offline
        late = gate(outage, tmp_path, "north-1-late", clock=lambda: time.time() + 5 * 3600)
        late.bundle = a.bundle
        with pytest.raises(GateOffline, match="old"):
            late.verify(codes[4])
        assert late.pending() == 0
        late.close()
        # the queue survives the gate process
        a.close()
        a = gate(outage, tmp_path, "north-1")
        assert a.pending() == 6
        assert a.verify(codes[1]).reason == "ALREADY_USED"
        assert a.pending() == 7
        b_queue = b.queued()

        outage["server"] = start_server(outage["data"], venue_day(), outage["args"], clock=False)

        # back online: gate b's next sync and gate a's next scan upload their queues
        # first, then ask the server
        deadline = time.monotonic() + 20
        while not b.maintain():
            assert time.monotonic() < deadline, "the gate did not get back online"
            time.sleep(0.2)
        assert b.pending() == 0
        d = a.verify(codes[5])
        assert (d.reason, d.offline) == ("OK", False)
        assert a.pending() == 0 and a.online
        # the server knows what the gates admitted while it was away
        assert a.verify(codes[1]).reason == "ALREADY_USED"
        conn = outage["conn"]
        rep = report_pb2_grpc.ReportServiceStub(conn.channel())

        def conflicts():
            return rep.Conflicts(report_pb2.ConflictsRequest(venue_id=VENUE), metadata=conn.metadata,
                                 timeout=10).conflicts

        def used():
            counts = rep.TicketCounts(report_pb2.TicketCountsRequest(venue_id=VENUE),
                                      metadata=conn.metadata, timeout=10)
            return {p.product_id: p.used for p in counts.products}["gate-test"]

        found = conflicts()
        assert len(found) == 1
        c = found[0]
        assert (c.gate_id, c.ticket_id, c.offline_reason, c.server_reason) == \
            ("north-1", d3.ticket_id, 0, 6)                # admitted offline, ALREADY_USED
        assert used() == 4                                 # codes 0, 1, 3, 5 (2 only went out)
        # the operator's view of it
        r = subprocess.run([sys.executable, "-m", "turnstile.clients.cli", "report", "conflicts", "--venue", VENUE,
                            "--csv", "--address", outage["address"], "--key", outage["keys"]["admin"]],
                           cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        rows = list(csv.DictReader(io.StringIO(r.stdout)))
        assert [(x["gate_id"], x["ticket_id"], x["offline_reason"], x["server_reason"]) for x in rows] \
            == [("north-1", str(d3.ticket_id), "OK", "ALREADY_USED")]
        # an upload whose answer was lost is sent again: nothing is applied twice
        again = gate_pb2_grpc.GateServiceStub(conn.channel()).UploadScans(
            gate_pb2.UploadScansRequest(gate_id="north-2", scans=[s for _, s in b_queue]),
            metadata=(("authorization", f"Bearer {outage['keys']['demo-gate']}"),),
            timeout=10)
        assert [r.status for r in again.results] == [gate_pb2.DUPLICATE]
        assert len(conflicts()) == 1 and used() == 4
    finally:
        a.close()
        b.close()


def test_an_upload_the_server_refuses_does_not_block_the_queue(outage, tmp_path):
    """A gate whose key no longer covers a gate it scanned for offline: that batch is
    set aside (rejected, with the server's reason), the rest uploads."""
    conn = outage["conn"]
    admin = admin_pb2_grpc.AdminServiceStub(conn.channel())
    admin.CreatePrincipal(admin_pb2.CreatePrincipalRequest(
        principal_id="gate-n1-only", role=admin_pb2.Role.Value("GATE"), venue_ids=[VENUE],
        gate_ids=["north-1"]), metadata=conn.metadata, timeout=10)
    key = admin.CreateApiKey(admin_pb2.CreateApiKeyRequest(principal_id="gate-n1-only"),
                             metadata=conn.metadata, timeout=10).secret
    codes = buy(outage, 2, "gate-order-2")
    g = GateClient(outage["address"], key, "north-1", VENUE, state_dir=str(tmp_path / "n1"),
                   timeout=2.0, retry_online_s=1e9)
    try:
        assert g.maintain()
        g.online = False                 # as after a failed call: decide offline
        assert g.verify(codes[0]).reason == "OK"
        assert g.verify(codes[1], gate_id="east").reason == "OK"     # a concentrator's other gate
        g.online = True
        assert g.maintain()
        assert g.pending() == 0
        rejected = g.rejected()
        assert [(gate, s.code) for _, gate, s in rejected] == [("east", codes[1])]
        assert "PERMISSION_DENIED" in rejected[0][0]
        assert g.verify(codes[0]).reason == "ALREADY_USED"      # north-1's scan did upload
        assert g.verify(codes[1]).reason == "OK"                 # east's did not
    finally:
        g.close()


def test_a_started_gate_holds_a_bundle_from_its_first_moment(outage, tmp_path):
    """start() fetches the bundle at once, not after its first period: a gate whose
    network goes in its first minute still admits a valid code, offline."""
    codes = buy(outage, 1, "gate-order-3")
    g = GateClient(outage["address"], outage["keys"]["demo-gate"], "north-1", VENUE,
                   state_dir=str(tmp_path / "started"), timeout=2.0)
    try:
        g.start(every_s=3600)
        stop_server(outage["server"])                     # the network is gone at once
        d = g.verify(codes[0])
        assert (d.reason, d.admitted, d.offline) == ("OK", True, True)
        assert g.pending() == 1
    finally:
        g.close()
        outage["server"] = start_server(outage["data"], venue_day(), outage["args"], clock=False)


def test_a_gate_started_while_the_server_is_down_starts_and_keeps_trying(outage, tmp_path):
    """No server at start: start() returns, the gate says it is offline, admits nobody
    (it holds no bundle) and gets its bundle once the server is back, by itself."""
    codes = buy(outage, 1, "gate-order-4")
    stop_server(outage["server"])
    g = GateClient(outage["address"], outage["keys"]["demo-gate"], "north-1", VENUE,
                   state_dir=str(tmp_path / "started"), timeout=2.0, retry_online_s=0.5)
    try:
        g.start(every_s=3600)
        assert not g.online and g.bundle is None
        with pytest.raises(GateOffline, match="no bundle"):
            g.verify(codes[0])
        outage["server"] = start_server(outage["data"], venue_day(), outage["args"], clock=False)
        deadline = time.monotonic() + 30
        while g.bundle is None:                           # the thread's retry, not an hour
            assert time.monotonic() < deadline, "the started gate never fetched its bundle"
            time.sleep(0.1)
        d = g.verify(codes[0])
        assert (d.reason, d.offline) == ("OK", False)
    finally:
        g.close()
        if outage["server"].proc.poll() is not None:
            outage["server"] = start_server(outage["data"], venue_day(), outage["args"],
                                            clock=False)
