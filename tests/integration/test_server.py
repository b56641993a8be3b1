"""The server as gates, channels and POS see it: a real process, real gRPC."""
from __future__ import annotations

import time

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc

from turnstile.clients.base import error_info
from turnstile.engine import demo
from tests.integration.conftest import AUTH_CACHE_S
from turnstile.v1 import (admin_pb2, admin_pb2_grpc, common_pb2, gate_pb2, gate_pb2_grpc,
                          inventory_pb2, inventory_pb2_grpc, report_pb2, report_pb2_grpc, sales_pb2,
                          sales_pb2_grpc)

IN, OUT = common_pb2.IN, common_pb2.OUT
R = common_pb2.ScanReason


@pytest.fixture(scope="module")
def stubs(server):
    ch = server.channel()
    yield {"gate": gate_pb2_grpc.GateServiceStub(ch), "sales": sales_pb2_grpc.SalesServiceStub(ch),
           "inventory": inventory_pb2_grpc.InventoryServiceStub(ch),
           "admin": admin_pb2_grpc.AdminServiceStub(ch), "health": health_pb2_grpc.HealthStub(ch)}
    ch.close()


def at(server, hour, minute=0):
    return Timestamp(seconds=demo.local_time(server.day, hour, minute))


def buy(server, stubs, qty=2, key="cart-1", order="ota-1"):
    slot = demo.slot_id("main", server.day, 8)
    meta = server.meta("demo-ota")
    h = stubs["sales"].Hold(sales_pb2.HoldRequest(
        venue_id="westlake", idempotency_key=key,
        items=[sales_pb2.Item(product_id="adult", slot_ids=[slot], qty=qty)]), metadata=meta, timeout=10)
    c = stubs["sales"].Confirm(sales_pb2.ConfirmRequest(
        hold_id=h.hold_id, order_id=order,
        payment=sales_pb2.Payment(method="alipay", reference="2026112322001", amount_fen=h.amount_fen)),
        metadata=meta, timeout=10)
    return h, c


def verify(server, stubs, code, gate="north-1", direction=IN, hour=8, minute=40):
    return stubs["gate"].Verify(gate_pb2.VerifyRequest(code=code, gate_id=gate, direction=direction,
                                                       scan_time=at(server, hour, minute)),
                                metadata=server.meta("demo-gate"), timeout=10)


def test_sale_entry_exit_reentry_refund(server, stubs):
    h, c = buy(server, stubs)
    assert h.amount_fen == 2 * 7600                       # the OTA's channel price
    assert c.order.order_id == "ota-1" and len(c.tickets) == 2
    a, b = c.tickets
    assert verify(server, stubs, a.code).reason == R.Value("OK")
    assert verify(server, stubs, a.code, "north-2").reason == R.Value("ALREADY_USED")
    assert verify(server, stubs, a.code, "south-exit", OUT, 11).reason == R.Value("OK")
    r = verify(server, stubs, a.code, hour=13)
    assert (r.reason, r.product_id, r.persons) == (R.Value("OK_REENTRY"), "adult", 1)
    meta = server.meta("demo-ota")
    with pytest.raises(grpc.RpcError) as e:
        stubs["sales"].Refund(sales_pb2.RefundRequest(order_id="ota-1", refund_id="r1",
                                                      ticket_ids=[a.ticket_id]), metadata=meta)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(e.value) == ("TICKET_NOT_REFUNDABLE", "ticket_ids[0]")
    rf = stubs["sales"].Refund(sales_pb2.RefundRequest(order_id="ota-1", refund_id="r2"), metadata=meta)
    assert list(rf.ticket_ids) == [b.ticket_id] and rf.amount_fen == 7600
    assert verify(server, stubs, b.code).reason == R.Value("VOIDED")
    order = stubs["sales"].GetOrder(sales_pb2.GetOrderRequest(order_id="ota-1"), metadata=meta)
    assert order.refunded_fen == 7600 and [t.code for t in order.tickets] == [a.code, b.code]


def test_batch_and_stream(server, stubs):
    _, c = buy(server, stubs, qty=5, key="cart-batch", order="ota-batch")
    codes = [t.code for t in c.tickets]
    meta = server.meta("demo-gate")
    r = stubs["gate"].VerifyBatch(gate_pb2.VerifyBatchRequest(
        codes=codes[:3] + ["NOT-A-CODE"], gate_id="north-1", direction=IN,
        scan_time=at(server, 9)), metadata=meta)
    assert list(r.reasons) == [R.Value("OK")] * 3 + [R.Value("FORGED")]
    reqs = [gate_pb2.VerifyBatchRequest(codes=[code], gate_id="east", direction=IN, scan_time=at(server, 9))
            for code in codes[2:]]
    got = [list(resp.reasons) for resp in stubs["gate"].VerifyStream(iter(reqs), metadata=meta)]
    assert got == [[R.Value("ALREADY_USED")], [R.Value("OK")], [R.Value("OK")]]


def test_stream_read_ahead_keeps_request_order(server, stubs):
    """Many batches in flight on one stream are decided in the order they were sent:
    each code's first batch admits it, its second (sent later) finds it inside."""
    _, c = buy(server, stubs, qty=30, key="cart-ahead", order="ota-ahead")
    codes = [t.code for t in c.tickets]
    reqs = [gate_pb2.VerifyBatchRequest(codes=[codes[i % 30]], gate_id="east", direction=IN,
                                        scan_time=at(server, 9)) for i in range(60)]
    got = [list(resp.reasons) for resp in stubs["gate"].VerifyStream(iter(reqs),
                                                                     metadata=server.meta("demo-gate"))]
    assert got == [[R.Value("OK")]] * 30 + [[R.Value("ALREADY_USED")]] * 30


def test_a_retried_scan_gets_its_first_answer(server, stubs):
    """A gate resends a scan whose answer it lost (same scan id): the visitor is let in,
    not told ALREADY_USED; the same id for another ticket is refused; a queued offline
    copy of the scan uploads as DUPLICATE, so no false conflict shows in the report. A
    concentrator's resent batch (same batch id) gets its first answers too."""
    _, c = buy(server, stubs, qty=4, key="cart-retry", order="ota-retry")
    a, b, x, y = (t.code for t in c.tickets)
    meta = server.meta("demo-gate")

    def scan(code, scan_id):
        return stubs["gate"].Verify(gate_pb2.VerifyRequest(
            code=code, gate_id="north-1", direction=IN, scan_time=at(server, 8, 41), scan_id=scan_id),
            metadata=meta, timeout=10)

    first = scan(a, "n1-retry-1")
    assert first.reason == R.Value("OK")
    assert scan(a, "n1-retry-1").SerializeToString() == first.SerializeToString()
    with pytest.raises(grpc.RpcError) as e:
        scan(b, "n1-retry-1")
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(e.value) == ("IDEMPOTENCY_KEY_REUSED", "scan_id")
    up = stubs["gate"].UploadScans(gate_pb2.UploadScansRequest(gate_id="north-1", scans=[
        gate_pb2.OfflineScan(nonce="n1-retry-1", sequence=1, code=a, direction=IN,
                             scan_time=at(server, 8, 41), admitted=1, reason=R.Value("OK"))]),
        metadata=meta, timeout=10)
    assert gate_pb2.UploadStatus.Name(up.results[0].status) == "DUPLICATE"
    conflicts = report_pb2_grpc.ReportServiceStub(server.channel()).Conflicts(
        report_pb2.ConflictsRequest(venue_id="westlake"), metadata=server.meta("admin"), timeout=10)
    assert all(k.nonce != "n1-retry-1" for k in conflicts.conflicts)
    req = gate_pb2.VerifyBatchRequest(codes=[x, y, x], gate_id="north-1", direction=IN,
                                      scan_time=at(server, 9), batch_id="conc-1/7")
    r1 = stubs["gate"].VerifyBatch(req, metadata=meta, timeout=10)
    r2 = stubs["gate"].VerifyBatch(req, metadata=meta, timeout=10)
    assert list(r1.reasons) == [R.Value("OK"), R.Value("OK"), R.Value("ALREADY_USED")]
    assert r2.SerializeToString() == r1.SerializeToString()


def test_idempotent_hold_is_byte_identical_and_reuse_is_refused(server, stubs):
    slot = demo.slot_id("main", server.day, 10)
    meta = server.meta("demo-window")
    req = sales_pb2.HoldRequest(venue_id="westlake", idempotency_key="till-7-cart-1",
                                items=[sales_pb2.Item(product_id="child", slot_ids=[slot], qty=3)])
    first = stubs["sales"].Hold(req, metadata=meta)
    again = stubs["sales"].Hold(req, metadata=meta)
    assert first.SerializeToString() == again.SerializeToString()
    req.items[0].qty = 4
    with pytest.raises(grpc.RpcError) as e:
        stubs["sales"].Hold(req, metadata=meta)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(e.value)[0] == "IDEMPOTENCY_KEY_REUSED"
    avail = stubs["inventory"].Availability(inventory_pb2.AvailabilityRequest(
        venue_id="westlake", date_from=server.day.isoformat(), zone_id="main"), metadata=meta)
    row = next(s for s in avail.slots if s.slot_id == slot)
    assert row.held == 3


@pytest.mark.parametrize("field,mutate", [
    ("items[0].qty", lambda r: setattr(r.items[0], "qty", 0)),
    ("items[0].product_id", lambda r: setattr(r.items[0], "product_id", "ghost")),
    ("items[0].slot_ids[0]", lambda r: r.items[0].slot_ids.__setitem__(0, "nope")),
    ("venue_id", lambda r: setattr(r, "venue_id", "atlantis")),
    ("idempotency_key", lambda r: setattr(r, "idempotency_key", "")),
])
def test_bad_hold_names_the_field_and_changes_nothing(server, stubs, field, mutate):
    slot = demo.slot_id("main", server.day, 12)
    meta = server.meta("demo-ota")
    req = sales_pb2.HoldRequest(venue_id="westlake", idempotency_key=f"bad-{field}",
                                items=[sales_pb2.Item(product_id="adult", slot_ids=[slot], qty=1)])
    mutate(req)
    avail = inventory_pb2.AvailabilityRequest(venue_id="westlake", date_from=server.day.isoformat())
    before = stubs["inventory"].Availability(avail, metadata=meta)
    with pytest.raises(grpc.RpcError) as e:
        stubs["sales"].Hold(req, metadata=meta)
    assert e.value.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)
    assert error_info(e.value)[1] == field
    assert stubs["inventory"].Availability(avail, metadata=meta) == before


def test_auth(server, stubs):
    hold = sales_pb2.HoldRequest(venue_id="westlake", idempotency_key="x")
    with pytest.raises(grpc.RpcError) as e:
        stubs["sales"].Hold(hold)
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as e:
        stubs["sales"].Hold(hold, metadata=(("authorization", "Bearer tsk_00_forged"),))
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as e:
        stubs["sales"].Hold(hold, metadata=server.meta("demo-gate"))
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as e:
        stubs["gate"].Verify(gate_pb2.VerifyRequest(code="X", gate_id="north-1", direction=IN),
                             metadata=server.meta("demo-ota"))
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    ok = stubs["health"].Check(health_pb2.HealthCheckRequest())
    assert ok.status == health_pb2.HealthCheckResponse.SERVING
    m = stubs["admin"].GetShardMap(admin_pb2.GetShardMapRequest(), metadata=server.meta("demo-gate"))
    assert m.venues["westlake"] == 0 and m.shards[0].address == server.address


def test_every_mutating_call_is_audited_and_the_chain_verifies(server, stubs):
    meta = server.meta("demo-window")
    slot = demo.slot_id("main", server.day, 16)
    req = sales_pb2.HoldRequest(venue_id="westlake", idempotency_key="audit-1",
                                items=[sales_pb2.Item(product_id="adult", slot_ids=[slot], qty=1)])
    stubs["sales"].Hold(req, metadata=meta)
    admin = server.meta("admin")
    recs = stubs["admin"].QueryAudit(admin_pb2.QueryAuditRequest(principal_id="demo-window", limit=1000),
                                     metadata=admin).records
    import hashlib
    assert (recs[-1].method, recs[-1].result) == ("/turnstile.v1.SalesService/Hold", "OK")
    # keyed: a plain hash of the request would let anyone holding the log test guesses of
    # what a request carried (an ID number)
    assert recs[-1].request_digest and \
        recs[-1].request_digest != hashlib.sha256(req.SerializeToString()).hexdigest()
    v = stubs["admin"].VerifyAudit(admin_pb2.VerifyAuditRequest(), metadata=admin)
    assert v.ok and v.checked >= len(recs)
    with pytest.raises(grpc.RpcError) as e:
        stubs["admin"].VerifyAudit(admin_pb2.VerifyAuditRequest(), metadata=meta)
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_operator_sets_up_a_venue_and_sells_it(server, stubs):
    from google.protobuf.timestamp_pb2 import Timestamp as TS
    admin = server.meta("admin")
    a = stubs["admin"]
    v = a.CreateVenue(admin_pb2.CreateVenueRequest(venue_id="museum", name="City Museum",
                                                   utc_offset_s=28800, idempotency_key="v1"), metadata=admin)
    again = a.CreateVenue(admin_pb2.CreateVenueRequest(venue_id="museum", name="City Museum",
                                                       utc_offset_s=28800, idempotency_key="v1"), metadata=admin)
    assert v.shard == 0 and again == v
    a.CreateZone(admin_pb2.CreateZoneRequest(venue_id="museum", zone_id="hall", live_capacity=100),
                 metadata=admin)
    a.CreateGate(admin_pb2.CreateGateRequest(venue_id="museum", zone_id="hall", gate_id="hall-1",
                                             mode=admin_pb2.GATE_BOTH), metadata=admin)
    p = a.CreateProduct(admin_pb2.CreateProductRequest(
        venue_id="museum", product_id="museum-adult", zone_ids=["hall"], price_fen=3000,
        rule=admin_pb2.EntryRule(max_entries=1, valid_days=1, slot_grace_s=600)), metadata=admin)
    assert p.rule.slot_grace_s == 600 and p.price_fen == 3000
    start = demo.local_time(server.day, 9)
    made = a.CreateSlots(admin_pb2.CreateSlotsRequest(venue_id="museum", slots=[admin_pb2.SlotSpec(
        slot_id="museum-am", zone_id="hall", date=server.day.isoformat(), start=TS(seconds=start),
        end=TS(seconds=start + 3 * 3600), capacity=50)]), metadata=admin)
    assert made.created == 1
    cat = a.GetCatalog(admin_pb2.GetCatalogRequest(venue_id="museum"), metadata=admin)
    assert [g.gate_id for g in cat.gates] == ["hall-1"]
    with pytest.raises(grpc.RpcError) as e:          # the demo gate is scoped to westlake
        a.GetCatalog(admin_pb2.GetCatalogRequest(venue_id="museum"), metadata=server.meta("demo-gate"))
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # a new seller for the museum, with a key made over the API
    a.CreatePrincipal(admin_pb2.CreatePrincipalRequest(principal_id="museum-till", role=admin_pb2.SELLER,
                                                       venue_ids=["museum"], channel="window"), metadata=admin)
    key = a.CreateApiKey(admin_pb2.CreateApiKeyRequest(principal_id="museum-till"), metadata=admin)
    till = (("authorization", f"Bearer {key.secret}"),)
    h = stubs["sales"].Hold(sales_pb2.HoldRequest(venue_id="museum", idempotency_key="m1", items=[
        sales_pb2.Item(product_id="museum-adult", slot_ids=["museum-am"], qty=2)]), metadata=till)
    assert h.amount_fen == 6000
    with pytest.raises(grpc.RpcError) as e:          # its scope is the museum only
        stubs["sales"].Hold(sales_pb2.HoldRequest(venue_id="westlake", idempotency_key="m2"), metadata=till)
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    a.RevokeApiKey(admin_pb2.RevokeApiKeyRequest(key_id=key.key_id), metadata=admin)
    time.sleep(AUTH_CACHE_S)                          # every cache of every shard ends within it
    with pytest.raises(grpc.RpcError) as e:
        stubs["sales"].Quote(sales_pb2.QuoteRequest(venue_id="museum"), metadata=till)
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    recs = a.QueryAudit(admin_pb2.QueryAuditRequest(principal_id="admin", limit=1000), metadata=admin).records
    methods = [r.method.rsplit("/", 1)[1] for r in recs]
    for m in ("CreateVenue", "CreateZone", "CreatePrincipal", "CreateApiKey", "RevokeApiKey"):
        assert m in methods
    assert a.VerifyAudit(admin_pb2.VerifyAuditRequest(), metadata=admin).ok


def test_shard_map_routes_every_venue(server, stubs):
    import os
    m = stubs["admin"].GetShardMap(admin_pb2.GetShardMapRequest(), metadata=server.meta("demo-gate"))
    assert len(m.shards) == (os.cpu_count() or 1)
    assert m.venues["westlake"] == 0
    other = next(s for s in m.shards if s.shard != 0) if len(m.shards) > 1 else None
    if other is not None:        # a venue asked of the wrong shard says where it is
        with grpc.insecure_channel(other.address) as ch:
            with pytest.raises(grpc.RpcError) as e:
                inventory_pb2_grpc.InventoryServiceStub(ch).Availability(
                    inventory_pb2.AvailabilityRequest(venue_id="westlake", date_from=server.day.isoformat()),
                    metadata=server.meta("demo-ota"))
            assert e.value.code() == grpc.StatusCode.NOT_FOUND and "shard 0" in e.value.details()


def test_reports_and_holder_lookup(server, stubs):
    from turnstile.v1 import member_pb2, member_pb2_grpc, report_pb2, report_pb2_grpc
    ch = server.channel()
    reports = report_pb2_grpc.ReportServiceStub(ch)
    admin = server.meta("admin")
    before = {z.zone_id: z.entered_tickets for z in reports.LiveCounts(
        report_pb2.LiveCountsRequest(venue_id="westlake", date=server.day.isoformat()), metadata=admin).zones}
    counts_before = {p.product_id: p for p in reports.TicketCounts(
        report_pb2.TicketCountsRequest(venue_id="westlake"), metadata=admin).products}
    # a real-name night ticket, sold at the window, scanned by the gate
    slot = demo.slot_id("main", server.day, 8)
    meta = server.meta("demo-window")
    h = stubs["sales"].Hold(sales_pb2.HoldRequest(venue_id="westlake", idempotency_key="night-1", items=[
        sales_pb2.Item(product_id="night", slot_ids=[slot], qty=1)]), metadata=meta)
    c = stubs["sales"].Confirm(sales_pb2.ConfirmRequest(
        hold_id=h.hold_id, order_id="win-night-1", payment=sales_pb2.Payment(method="cash", amount_fen=h.amount_fen),
        holders=[sales_pb2.Holders(id_numbers=["110101199003074321"])]), metadata=meta)
    assert c.tickets[0].holder == "110***********4321"
    r = stubs["gate"].Verify(gate_pb2.VerifyRequest(id_number="110101199003074321", gate_id="north-1",
                                                    direction=IN, scan_time=at(server, 8, 20)),
                             metadata=server.meta("demo-gate"))
    assert (r.reason, r.ticket_id) == (R.Value("OK"), c.tickets[0].ticket_id)
    after = {z.zone_id: z.entered_tickets for z in reports.LiveCounts(
        report_pb2.LiveCountsRequest(venue_id="westlake", date=server.day.isoformat()), metadata=admin).zones}
    assert after["main"] == before["main"] + 1 and after["pagoda"] == before["pagoda"]
    counts = {p.product_id: p for p in reports.TicketCounts(
        report_pb2.TicketCountsRequest(venue_id="westlake"), metadata=admin).products}
    assert counts["night"].issued == counts_before["night"].issued + 1
    assert counts["night"].used == counts_before["night"].used + 1
    found = member_pb2_grpc.MemberServiceStub(ch).HolderTickets(
        member_pb2.HolderTicketsRequest(id_number="110101199003074321"), metadata=meta)
    assert found.holder == "110***********4321"
    assert [(t.ticket_id, t.used) for t in found.tickets] == [(c.tickets[0].ticket_id, True)]
    ch.close()


def _snapshot(server, stubs):
    from turnstile.v1 import report_pb2, report_pb2_grpc
    with server.channel() as ch:
        counts = report_pb2_grpc.ReportServiceStub(ch).TicketCounts(
            report_pb2.TicketCountsRequest(venue_id="westlake"), metadata=server.meta("admin"))
    avail = stubs["inventory"].Availability(inventory_pb2.AvailabilityRequest(
        venue_id="westlake", date_from=server.day.isoformat()), metadata=server.meta("demo-ota"))
    return counts, avail


BAD_CALLS = [
    # (stub, method, principal, request maker, expected code, field)
    ("gate", "Verify", "demo-gate", lambda s: gate_pb2.VerifyRequest(code="X", gate_id="north-1"),
     grpc.StatusCode.INVALID_ARGUMENT, "direction"),
    ("gate", "Verify", "demo-gate", lambda s: gate_pb2.VerifyRequest(code="X", gate_id="nowhere", direction=IN),
     grpc.StatusCode.NOT_FOUND, "gate_id"),
    ("gate", "Verify", "demo-gate", lambda s: gate_pb2.VerifyRequest(gate_id="north-1", direction=IN),
     grpc.StatusCode.INVALID_ARGUMENT, "credential"),
    ("gate", "Verify", "demo-gate", lambda s: gate_pb2.VerifyRequest(code="X", gate_id="south-exit", direction=IN),
     grpc.StatusCode.INVALID_ARGUMENT, "direction"),
    ("gate", "VerifyBatch", "demo-gate", lambda s: gate_pb2.VerifyBatchRequest(
        codes=["A", "B"], gate_ids=["north-1"], direction=IN), grpc.StatusCode.INVALID_ARGUMENT, "gate_ids"),
    ("sales", "Confirm", "demo-ota", lambda s: sales_pb2.ConfirmRequest(
        hold_id=999999, order_id="o-bad", payment=sales_pb2.Payment(method="cash")),
     grpc.StatusCode.NOT_FOUND, "hold_id"),
    ("sales", "Confirm", "demo-ota", lambda s: sales_pb2.ConfirmRequest(
        hold_id=1, order_id="bad id", payment=sales_pb2.Payment(method="cash")),
     grpc.StatusCode.INVALID_ARGUMENT, "order_id"),
    ("sales", "Refund", "demo-ota", lambda s: sales_pb2.RefundRequest(order_id="nope", refund_id="r"),
     grpc.StatusCode.NOT_FOUND, "order_id"),
    ("inventory", "Availability", "demo-ota", lambda s: inventory_pb2.AvailabilityRequest(
        venue_id="westlake", date_from="23/11/2026"), grpc.StatusCode.INVALID_ARGUMENT, "date_from"),
    ("admin", "CreateSlots", "admin", lambda s: admin_pb2.CreateSlotsRequest(venue_id="westlake", slots=[
        admin_pb2.SlotSpec(slot_id="bad-slot", zone_id="main", date=s.day.isoformat(), capacity=5)]),
     grpc.StatusCode.INVALID_ARGUMENT, "slots[0].end"),
    ("admin", "SetSlotCapacity", "admin", lambda s: admin_pb2.SetSlotCapacityRequest(
        venue_id="westlake", slot_id=demo.slot_id("main", s.day, 8), capacity=-1),
     grpc.StatusCode.INVALID_ARGUMENT, "capacity"),
]


@pytest.mark.parametrize("stub,method,who,make,code,field", BAD_CALLS,
                         ids=[f"{m}-{f}" for _, m, _, _, _, f in BAD_CALLS])
def test_bad_input_field_by_field(server, stubs, stub, method, who, make, code, field):
    before = _snapshot(server, stubs)
    with pytest.raises(grpc.RpcError) as e:
        getattr(stubs[stub], method)(make(server), metadata=server.meta(who), timeout=10)
    assert e.value.code() == code
    assert error_info(e.value)[1] == field
    assert _snapshot(server, stubs) == before
