"""Every role x method pair is allowed or denied exactly as server/auth.py's table says."""
from __future__ import annotations

import datetime as dt

import grpc
import pytest
from google.protobuf import message_factory

from server.auth import TABLE
from server.control import ROLES, ControlStore
from tests.integration.conftest import start_server, stop_server
from turnstile.v1 import admin_pb2, gate_pb2, inventory_pb2, member_pb2, report_pb2, sales_pb2

SERVICES = [gate_pb2.DESCRIPTOR.services_by_name["GateService"],
            sales_pb2.DESCRIPTOR.services_by_name["SalesService"],
            inventory_pb2.DESCRIPTOR.services_by_name["InventoryService"],
            admin_pb2.DESCRIPTOR.services_by_name["AdminService"],
            report_pb2.DESCRIPTOR.services_by_name["ReportService"],
            member_pb2.DESCRIPTOR.services_by_name["MemberService"]]
METHODS = [(f"/{svc.full_name}/{m.name}", m) for svc in SERVICES for m in svc.methods]


@pytest.fixture(scope="module")
def role_server(tmp_path_factory):
    data = str(tmp_path_factory.mktemp("roles"))
    store = ControlStore(f"{data}/control")
    keys = {}
    for role in ROLES:
        store.create_principal(f"p-{role}", role, channel="ota" if role in ("seller", "channel") else "")
        keys[role] = store.create_key(f"p-{role}")[1]
    store.close()
    server = start_server(data, dt.date.today())
    yield server, keys
    stop_server(server)


def call(channel, path, method, metadata):
    req_cls = message_factory.GetMessageClass(method.input_type)
    resp_cls = message_factory.GetMessageClass(method.output_type)
    if method.client_streaming:
        rpc = channel.stream_stream(path, request_serializer=req_cls.SerializeToString,
                                    response_deserializer=resp_cls.FromString)
        return list(rpc(iter([req_cls()]), metadata=metadata, timeout=10))
    rpc = channel.unary_unary(path, request_serializer=req_cls.SerializeToString,
                              response_deserializer=resp_cls.FromString)
    return rpc(req_cls(), metadata=metadata, timeout=10)


@pytest.mark.parametrize("path,method", METHODS, ids=[p for p, _ in METHODS])
def test_role_table(role_server, path, method):
    server, keys = role_server
    with grpc.insecure_channel(server.address) as ch:
        for role in ROLES:
            try:
                call(ch, path, method, (("authorization", f"Bearer {keys[role]}"),))
                code = grpc.StatusCode.OK
            except grpc.RpcError as e:
                code = e.code()
            allowed = role in TABLE.get(path, ())
            if allowed:
                # past the interceptor: the empty request may still be refused on its merits
                assert code not in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED), \
                    (role, code)
            else:
                assert code == grpc.StatusCode.PERMISSION_DENIED, (role, code)
        with pytest.raises(grpc.RpcError) as e:
            call(ch, path, method, ())
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
