"""Every role x method cell of docs/ROLES.md holds on a real server: a ✗ answers
PERMISSION_DENIED (reason ROLE_NOT_ALLOWED), a ✓ gets past the role check. The
expectations are read from the committed doc, never from server/auth.py's table (a test
that read the table it checks could not catch a wrong cell); tests/unit/test_roles_doc.py
keeps the two equal."""
from __future__ import annotations

import os
import re

import grpc
import pytest
from google.protobuf import message_factory

from turnstile.clients.admin import AdminClient
from turnstile.clients.base import Connection, error_info
from tests.integration.conftest import ROOT, start_server, stop_server, venue_day
from turnstile.v1 import admin_pb2, gate_pb2, inventory_pb2, member_pb2, report_pb2, sales_pb2

DOC = os.path.join(ROOT, "docs", "ROLES.md")
ROW = re.compile(r"^\| `(\w+)\.(\w+)` \|((?: [✓✗] \|)+)\s*$")


def documented() -> tuple[list[str], dict[str, dict[str, bool]]]:
    """(roles, "Service.Method" -> role -> allowed), as docs/ROLES.md's table says."""
    roles: list[str] = []
    table: dict[str, dict[str, bool]] = {}
    with open(DOC, encoding="utf-8") as f:
        for line in f:
            if line.startswith("| method |"):
                roles = [c.strip() for c in line.strip().strip("|").split("|")[1:]]
            elif m := ROW.match(line):
                cells = [c.strip() for c in m.group(3).strip().strip("|").split("|")]
                assert len(cells) == len(roles), line
                table[f"{m.group(1)}.{m.group(2)}"] = dict(zip(roles, (c == "✓" for c in cells)))
    return roles, table


ROLES, DOCUMENTED = documented()
SERVICES = {svc.name: svc for svc in (
    gate_pb2.DESCRIPTOR.services_by_name["GateService"],
    sales_pb2.DESCRIPTOR.services_by_name["SalesService"],
    inventory_pb2.DESCRIPTOR.services_by_name["InventoryService"],
    admin_pb2.DESCRIPTOR.services_by_name["AdminService"],
    report_pb2.DESCRIPTOR.services_by_name["ReportService"],
    member_pb2.DESCRIPTOR.services_by_name["MemberService"])}


def test_the_doc_has_every_role_and_every_rpc():
    assert ROLES == ["admin", "operator", "seller", "channel", "gate", "finance", "auditor", "viewer",
                     "merchant"]
    rpcs = {f"{name}.{m.name}" for name, svc in SERVICES.items() for m in svc.methods}
    assert sorted(rpcs - set(DOCUMENTED)) == []


@pytest.fixture(scope="module")
def role_server(tmp_path_factory):
    """A real server with one principal per role, made over AdminService with the admin
    key. None is scoped (but the merchant, which must be, to the demo venue and its boat
    company), so a refusal can only come from the role check."""
    data = str(tmp_path_factory.mktemp("roles"))
    server = start_server(data, venue_day())
    try:
        keys = {"admin": server.keys["admin"]}
        with Connection(server.address, server.keys["admin"]) as conn:
            admin = AdminClient(conn)
            for role in ROLES[1:]:
                admin.create_principal(f"any-{role}", role,
                                       channel="ota" if role in ("seller", "channel") else
                                       "westlake-boats" if role == "merchant" else "",
                                       venue_ids=["westlake"] if role == "merchant" else ())
                keys[role] = admin.create_api_key(f"any-{role}").secret
        yield server, keys
    finally:
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


def code_of(channel, path, method, metadata) -> tuple[grpc.StatusCode, str]:
    """(status, ErrorInfo reason) of a call with an empty request."""
    try:
        call(channel, path, method, metadata)
        return grpc.StatusCode.OK, ""
    except grpc.RpcError as e:
        return e.code(), error_info(e)[0]


@pytest.mark.parametrize("name", list(DOCUMENTED))
def test_every_cell_as_documented(role_server, name):
    server, keys = role_server
    service, rpc_name = name.split(".")
    method = SERVICES[service].methods_by_name.get(rpc_name)
    if method is None:
        pytest.skip(f"{name} is documented but not in this build's proto yet")
    path = f"/{SERVICES[service].full_name}/{rpc_name}"
    with grpc.insecure_channel(server.address) as ch:
        got = {role: code_of(ch, path, method, (("authorization", f"Bearer {keys[role]}"),))
               for role in ROLES}
        wrong = {}
        for role, allowed in DOCUMENTED[name].items():
            if allowed:
                # past the role check: an empty request may still be refused on its merits
                if got[role][0] in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
                    wrong[role] = got[role]
            elif got[role] != (grpc.StatusCode.PERMISSION_DENIED, "ROLE_NOT_ALLOWED"):
                wrong[role] = got[role]
        assert wrong == {}, f"{name}: the doc says {DOCUMENTED[name]}"
        # no key, or a known key id with a wrong secret: nobody
        assert code_of(ch, path, method, ()) == (grpc.StatusCode.UNAUTHENTICATED, "API_KEY_MISSING")
        forged = "tsk_" + keys["admin"].split("_", 2)[1] + "_" + "A" * 43
        assert code_of(ch, path, method, (("authorization", f"Bearer {forged}"),)) \
            == (grpc.StatusCode.UNAUTHENTICATED, "API_KEY_INVALID")
