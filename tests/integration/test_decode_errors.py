"""Request bytes that do not decode, or carry invalid UTF-8 in a string field, are
answered INVALID_ARGUMENT with a stable reason (MALFORMED_REQUEST) on every method,
unary and streaming, never UNKNOWN "Unexpected DecodeError"; the server goes on serving."""
from __future__ import annotations

import grpc
import pytest
from google.protobuf.descriptor import FieldDescriptor

from turnstile.clients.base import error_info
from turnstile.v1 import admin_pb2, common_pb2, gate_pb2, inventory_pb2, member_pb2, report_pb2, sales_pb2

SERVICES = [m.DESCRIPTOR.services_by_name[n] for m, n in (
    (gate_pb2, "GateService"), (sales_pb2, "SalesService"), (inventory_pb2, "InventoryService"),
    (admin_pb2, "AdminService"), (report_pb2, "ReportService"), (member_pb2, "MemberService"))]
UNARY = [(f"/{s.full_name}/{m.name}", m) for s in SERVICES for m in s.methods
         if not m.client_streaming]
CORRUPT = b"\xff\xff\xff\xff"          # a tag whose varint never ends: no message decodes it
BAD_UTF8 = b"\x0a\x02\xff\xfe"         # field 1, length 2, bytes that are not UTF-8


def _string_field_1(method) -> bool:
    f = method.input_type.fields_by_number.get(1)
    return f is not None and f.type == FieldDescriptor.TYPE_STRING


def raw_unary(ch, path: str, body: bytes, metadata):
    """Send `body` as the request, as it is: no serializer on our side."""
    return ch.unary_unary(path, request_serializer=None, response_deserializer=None)(
        body, metadata=metadata, timeout=10)


def assert_malformed(err: grpc.RpcError) -> None:
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (err.code(), err.details())
    assert error_info(err)[0] == "MALFORMED_REQUEST"
    assert "does not decode" in err.details() and "DecodeError" not in err.details()


CASES = [(path, m, CORRUPT) for path, m in UNARY] + \
        [(path, m, BAD_UTF8) for path, m in UNARY if _string_field_1(m)]


@pytest.mark.parametrize("path,method,body", CASES,
                         ids=[f"{p}-{'utf8' if b == BAD_UTF8 else 'corrupt'}" for p, _, b in CASES])
def test_every_unary_method_refuses_undecodable_bytes(server, path, method, body):
    with server.channel() as ch:
        with pytest.raises(grpc.RpcError) as e:
            raw_unary(ch, path, body, server.meta("admin"))
        assert_malformed(e.value)


def test_the_utf8_cases_cover_every_service():
    assert {p.split("/")[1] for p, _, b in CASES if b == BAD_UTF8} == {s.full_name for s in SERVICES}


def test_invalid_utf8_names_the_cause(server):
    with server.channel() as ch, pytest.raises(grpc.RpcError) as e:
        raw_unary(ch, "/turnstile.v1.GateService/Verify", BAD_UTF8, server.meta("demo-gate"))
    assert_malformed(e.value)
    assert "UTF-8" in e.value.details()


def test_the_key_is_checked_before_the_bytes(server):
    """A caller without a key, or without the role, learns nothing from its bytes."""
    with server.channel() as ch:
        with pytest.raises(grpc.RpcError) as e:
            raw_unary(ch, "/turnstile.v1.GateService/Verify", CORRUPT, ())
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as e:
            raw_unary(ch, "/turnstile.v1.GateService/Verify", CORRUPT, server.meta("demo-ota"))
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize("body", [CORRUPT, BAD_UTF8], ids=["corrupt", "utf8"])
def test_verify_stream_refuses_undecodable_bytes(server, body):
    with server.channel() as ch:
        stream = ch.stream_stream("/turnstile.v1.GateService/VerifyStream",
                                  request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.RpcError) as e:
            list(stream(iter([body]), metadata=server.meta("demo-gate"), timeout=10))
        assert_malformed(e.value)
        # a good batch first, then a bad one: the good one is answered, the bad one ends it
        good = gate_pb2.VerifyBatchRequest(gate_id="north-1", codes=["AAAA"],
                                           direction=common_pb2.IN).SerializeToString()
        answers = []
        with pytest.raises(grpc.RpcError) as e:
            for r in stream(iter([good, body]), metadata=server.meta("demo-gate"), timeout=10):
                answers.append(gate_pb2.VerifyBatchResponse.FromString(r))
        assert_malformed(e.value)
        assert len(answers) == 1 and len(answers[0].reasons) == 1


def test_the_server_serves_on(server):
    with server.channel() as ch:
        for _ in range(3):
            with pytest.raises(grpc.RpcError):
                raw_unary(ch, "/turnstile.v1.AdminService/GetShardMap", CORRUPT, server.meta("admin"))
        m = admin_pb2.ShardMap.FromString(
            raw_unary(ch, "/turnstile.v1.AdminService/GetShardMap", b"", server.meta("admin")))
        assert "westlake" in m.venues


@pytest.mark.parametrize("path", ["/turnstile.v1.GateService/NoSuchMethod",
                                  "/turnstile.v1.NoSuchService/Verify", "/grpc.health.v1.Health/Nope"])
def test_an_unknown_method_is_unimplemented(server, path):
    """The rpcs are served through generic handlers (server/app.py _GenericOnly): a method
    no service has is still UNIMPLEMENTED, and the known ones answer (the cases above)."""
    with server.channel() as ch:
        with pytest.raises(grpc.RpcError) as e:
            raw_unary(ch, path, b"", server.meta("admin"))
        assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED, (e.value.code(), e.value.details())
