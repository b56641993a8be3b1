"""A denied call leaves an audit record (docs/ROLES.md, "Denied calls are audited"):
PERMISSION_DENIED, and UNAUTHENTICATED for a key id the server knows (wrong secret,
revoked key), under the principal the key belongs to, with the method and the result.
Each denied call is recorded, also when repeated at once; calls with no key or an
unknown key id are not."""
from __future__ import annotations

import time

import grpc
import pytest

from turnstile.clients.admin import AdminClient
from turnstile.clients.base import Connection
from turnstile.v1 import (common_pb2, gate_pb2, gate_pb2_grpc, inventory_pb2, inventory_pb2_grpc,
                          report_pb2, report_pb2_grpc, sales_pb2, sales_pb2_grpc)

from tests.integration.conftest import AUTH_CACHE_S

LIVE = "/turnstile.v1.ReportService/LiveCounts"
AVAILABILITY = "/turnstile.v1.InventoryService/Availability"


@pytest.fixture(scope="module")
def admin(server):
    with Connection(server.address, server.keys["admin"]) as conn:
        yield AdminClient(conn)


def bearer(key: str) -> tuple:
    return (("authorization", f"Bearer {key}"),)


def records(admin, principal: str | None = None, after: int = 0):
    """The audit log of the shard the server's address serves (shard 0)."""
    return [r for r in admin.audit_records(0, principal_id=principal) if r.seq > after]


def last_seq(admin) -> int:
    recs = records(admin)
    return recs[-1].seq if recs else 0


def live_counts(ch, key: str) -> grpc.StatusCode:
    try:
        report_pb2_grpc.ReportServiceStub(ch).LiveCounts(
            report_pb2.LiveCountsRequest(venue_id="westlake"), metadata=bearer(key), timeout=10)
        return grpc.StatusCode.OK
    except grpc.RpcError as e:
        return e.code()


def test_a_denied_call_shows_who_tried_what(server, admin):
    before = last_seq(admin)
    with server.channel() as ch:
        # a channel may not read reports; twice at once: the second is answered from the
        # interceptor's decision cache and must be recorded all the same
        assert live_counts(ch, server.keys["demo-ota"]) == grpc.StatusCode.PERMISSION_DENIED
        assert live_counts(ch, server.keys["demo-ota"]) == grpc.StatusCode.PERMISSION_DENIED
    got = [(r.principal_id, r.method, r.result) for r in records(admin, "demo-ota", before)]
    assert got == [("demo-ota", LIVE, "PERMISSION_DENIED")] * 2
    assert all(r.request_digest for r in records(admin, "demo-ota", before))
    # an auditor reads it with its own key, and the chain still verifies
    admin.create_principal("auditor-1", "auditor")
    with Connection(server.address, admin.create_api_key("auditor-1").secret) as conn:
        seen = AdminClient(conn).query_audit(0, after_seq=before, principal_id="demo-ota")
        assert [(r.method, r.result) for r in seen] == [(LIVE, "PERMISSION_DENIED")] * 2
        assert all(c.ok for c in AdminClient(conn).verify_audit())


def test_denied_sales_scans_and_streams_are_recorded(server, admin):
    before = last_seq(admin)
    with server.channel() as ch:
        gate = server.keys["demo-gate"]
        with pytest.raises(grpc.RpcError) as e:            # a gate may not sell
            sales_pb2_grpc.SalesServiceStub(ch).Hold(sales_pb2.HoldRequest(
                venue_id="westlake", idempotency_key="gate-tries-1"), metadata=bearer(gate), timeout=10)
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.RpcError) as e:            # a channel may not scan
            list(gate_pb2_grpc.GateServiceStub(ch).VerifyStream(iter([gate_pb2.VerifyBatchRequest(
                gate_id="north-1", codes=["X"], direction=common_pb2.IN)]),
                metadata=bearer(server.keys["demo-ota"]), timeout=10))
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    got = {(r.principal_id, r.method, r.result) for r in records(admin, after=before)}
    assert got == {("demo-gate", "/turnstile.v1.SalesService/Hold", "PERMISSION_DENIED"),
                   ("demo-ota", "/turnstile.v1.GateService/VerifyStream", "PERMISSION_DENIED")}


def availability(ch, key: str) -> grpc.StatusCode:
    try:
        inventory_pb2_grpc.InventoryServiceStub(ch).Availability(inventory_pb2.AvailabilityRequest(
            venue_id="westlake", date_from="2026-01-01"), metadata=bearer(key), timeout=10)
        return grpc.StatusCode.OK
    except grpc.RpcError as e:
        return e.code()


def test_a_wrong_secret_and_a_revoked_key_are_recorded_under_their_principal(server, admin):
    admin.create_principal("agency-9", "channel", venue_ids=["westlake"], channel="agency-9")
    key = admin.create_api_key("agency-9")
    forged = f"tsk_{key.key_id}_{'x' * 43}"
    before = last_seq(admin)
    with server.channel() as ch:
        assert availability(ch, forged) == grpc.StatusCode.UNAUTHENTICATED
        got = [(r.principal_id, r.method, r.result) for r in records(admin, "agency-9", before)]
        assert got == [("agency-9", AVAILABILITY, "UNAUTHENTICATED")]

        assert availability(ch, key.secret) == grpc.StatusCode.OK     # reads are not audited
        admin.revoke_api_key(key.key_id)
        before = last_seq(admin)
        time.sleep(AUTH_CACHE_S)            # every cache of every shard ends within it
        assert availability(ch, key.secret) == grpc.StatusCode.UNAUTHENTICATED
    got = [(r.principal_id, r.method, r.result) for r in records(admin, "agency-9", before)]
    assert got == [("agency-9", AVAILABILITY, "UNAUTHENTICATED")]


def test_no_key_and_unknown_key_ids_leave_nothing(server, admin):
    before = last_seq(admin)
    with server.channel() as ch:
        for metadata in ((), bearer("tsk_000000000000_nope"), bearer("not-a-key"),
                         bearer("tsk__nope"), bearer(f"tsk_{'a' * 600}_nope")):
            with pytest.raises(grpc.RpcError) as e:
                report_pb2_grpc.ReportServiceStub(ch).LiveCounts(
                    report_pb2.LiveCountsRequest(venue_id="westlake"), metadata=metadata, timeout=10)
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert records(admin, after=before) == []
