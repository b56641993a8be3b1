"""A real server whose shard's LMDB map fills (issue 12): writes answer RESOURCE_EXHAUSTED
with the stable reason STORAGE_FULL and change nothing, reads go on, and the same data dir
served with a larger --map-size-mib takes writes again with every earlier one there."""
from __future__ import annotations

import uuid

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from turnstile.clients.base import error_info
from turnstile.v1 import common_pb2, gate_pb2, gate_pb2_grpc, report_pb2, report_pb2_grpc
from tests.integration.conftest import start_server, stop_server, venue_day


def _upload(server, stub, n):
    """n scans an offline gate made (unreadable codes): each keeps its nonce's answer."""
    at = Timestamp(seconds=int(server.now()) - 60)
    return stub.UploadScans(gate_pb2.UploadScansRequest(gate_id="north-1", scans=[
        gate_pb2.OfflineScan(nonce=uuid.uuid4().hex, sequence=i, code="X" * 40,
                             direction=common_pb2.IN, scan_time=at) for i in range(n)]),
        metadata=server.meta("demo-gate"), timeout=60)


def test_a_full_shard_refuses_writes_with_storage_full_and_a_larger_map_goes_on(tmp_path):
    data = str(tmp_path / "data")
    server = start_server(data, venue_day(), args=("--map-size-mib", "16"))
    accepted = 0
    try:
        with server.channel() as ch:
            gate = gate_pb2_grpc.GateServiceStub(ch)
            err = None
            for _ in range(400):
                try:
                    accepted += len(_upload(server, gate, 500).results)
                except grpc.RpcError as e:
                    err = e
                    break
            assert err is not None, "16 MiB never filled"
            assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert error_info(err)[0] == "STORAGE_FULL"
            assert accepted >= 5000, accepted
            # reads go on
            counts = report_pb2_grpc.ReportServiceStub(ch).LiveCounts(
                report_pb2.LiveCountsRequest(venue_id="westlake"), metadata=server.meta("demo-operator"),
                timeout=10)
            assert counts.zones
    finally:
        out = stop_server(server)
    assert "storage full" in out and "of the LMDB map in use" in out
    server = start_server(data, venue_day(), args=("--map-size-mib", "64"))
    try:
        with server.channel() as ch:
            gate = gate_pb2_grpc.GateServiceStub(ch)
            assert len(_upload(server, gate, 100).results) == 100
    finally:
        stop_server(server)
