"""GateService.VerifyPacked, a concentrator's packed stream, against a real server: the
codes' binary form (DESIGN.md 4.4: what a code's text encodes in base32) packed in one
field, answers in packed little-endian arrays (gate.proto). Each batch must be decided
exactly as the same codes' text is by VerifyStream and by unary Verify, retried by its
batch id, refused whole when malformed, and durable."""
from __future__ import annotations

import base64
import itertools
import struct

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from turnstile.clients.base import ApiError, Connection, error_info
from turnstile.clients.concentrator import Concentrator, PackedAnswers, pack, request
from turnstile.engine import demo
from turnstile.v1 import common_pb2, gate_pb2, gate_pb2_grpc, sales_pb2, sales_pb2_grpc

from .conftest import kill_server, start_server, venue_day

IN = common_pb2.IN
R = common_pb2.ScanReason
OK, USED, FORGED, UNKNOWN = (R.Value(n) for n in ("OK", "ALREADY_USED", "FORGED", "UNKNOWN"))
GATE = "north-1"
_orders = itertools.count()


def at(server, hour: int, minute: int = 0) -> Timestamp:
    return Timestamp(seconds=demo.local_time(server.day, hour, minute))


def buy(server, qty: int, key: str) -> list:
    """`qty` adult tickets of today's 08:00 slot, sold to the demo OTA: (ticket id, code)."""
    sales = sales_pb2_grpc.SalesServiceStub(server.channel())
    meta = server.meta("demo-ota")
    h = sales.Hold(sales_pb2.HoldRequest(
        venue_id="westlake", idempotency_key=key,
        items=[sales_pb2.Item(product_id="adult", slot_ids=[demo.slot_id("main", server.day, 8)],
                              qty=qty)]), metadata=meta, timeout=10)
    c = sales.Confirm(sales_pb2.ConfirmRequest(
        hold_id=h.hold_id, order_id=key,
        payment=sales_pb2.Payment(method="alipay", reference=key, amount_fen=h.amount_fen)),
        metadata=meta, timeout=10)
    return [(t.ticket_id, t.code) for t in c.tickets]


def binary(text: str) -> bytes:
    """A code's binary form, by RFC 4648 (the code's text is unpadded base32)."""
    return base64.b32decode(text + "=" * (-len(text) % 8))


def text(raw: bytes) -> str:
    return base64.b32encode(raw).decode().rstrip("=")


def flipped(raw: bytes, bit: int) -> bytes:
    b = bytearray(raw)
    b[bit // 8] ^= 1 << (bit % 8)
    return bytes(b)


def other_shard(raw: bytes) -> bytes:
    """The code moved to another shard (layout: shard is the u16 at byte 2)."""
    shard, = struct.unpack_from("<H", raw, 2)
    return raw[:2] + struct.pack("<H", shard + 1) + raw[4:]


def answers(server, reqs, principal: str = "demo-gate"):
    """The answers of a VerifyPacked stream of `reqs`, as they come."""
    stub = gate_pb2_grpc.GateServiceStub(server.channel())
    for m in stub.VerifyPacked(iter(reqs), metadata=server.meta(principal), timeout=30):
        yield PackedAnswers.of(m)


def packed_stream(server, reqs, principal: str = "demo-gate") -> list[PackedAnswers]:
    return list(answers(server, reqs, principal))


def text_stream(server, batches: list[list[str]], scan_time) -> list[gate_pb2.VerifyBatchResponse]:
    stub = gate_pb2_grpc.GateServiceStub(server.channel())
    reqs = [gate_pb2.VerifyBatchRequest(codes=b, gate_id=GATE, direction=IN, scan_time=scan_time)
            for b in batches]
    return list(stub.VerifyStream(iter(reqs), metadata=server.meta("demo-gate"), timeout=30))


def unary(server, code: str, scan_time) -> gate_pb2.VerifyResponse:
    return gate_pb2_grpc.GateServiceStub(server.channel()).Verify(
        gate_pb2.VerifyRequest(code=code, gate_id=GATE, direction=IN, scan_time=scan_time),
        metadata=server.meta("demo-gate"), timeout=10)


def mixed(tickets: list) -> tuple[list[bytes], list[int], list[int]]:
    """Codes of every kind in one batch, and the answers the contract gives them: three
    valid codes, a forged one (a MAC bit changed), another shard's, garbage of a code's
    size, and the first code again (used by then)."""
    (a, ca), (b, cb), (c, cc), (_, cd), (_, ce) = tickets
    raw = [binary(x) for x in (ca, cb, cc, cd, ce)]
    n = len(raw[0])
    codes = [raw[0], raw[1], raw[2], flipped(raw[3], 8 * (n - 1)), other_shard(raw[4]),
             bytes(range(7, 7 + n)), raw[0]]
    return codes, [OK, OK, OK, FORGED, UNKNOWN, FORGED, USED], [a, b, c, -1, -2, -1, a]


def test_packed_decides_as_the_text_stream_and_verify(server):
    when = at(server, 9)
    mine, theirs = buy(server, 5, "packed-mixed-1"), buy(server, 5, "packed-mixed-2")
    codes, reasons, ids = mixed(mine)
    with Connection(server.address, server.keys["demo-gate"]) as conn:
        c = Concentrator(conn, venue_id="westlake", gate_id=GATE)
        got, = c.verify([request(pack(codes), gate_id=GATE, venue_id="westlake", scan_time=when.seconds)])
    assert list(got.reasons) == reasons
    assert list(got.ticket_ids) == ids
    assert list(got.persons) == [1, 1, 1, 0, 0, 0, 0]
    # the same kinds of codes as text, on VerifyStream and one by one on Verify
    other, want, other_ids = mixed(theirs)
    texts = [text(x) for x in other]
    r, = text_stream(server, [texts], when)
    assert list(r.reasons) == reasons and list(r.ticket_ids) == other_ids
    for code, reason in zip(texts[3:6], reasons[3:6]):
        assert unary(server, code, when).reason == reason
    # what the packed batch admitted is used for every other way in
    for _, code in mine[:3]:
        assert unary(server, code, when).reason == USED
    # a refused batch ends the concentrator's stream with the API's error, naming the field
    with Connection(server.address, server.keys["demo-gate"]) as conn:
        bad = request(pack(codes), gate_id="no-such-gate", venue_id="westlake")
        with pytest.raises(ApiError) as e:
            list(Concentrator(conn, venue_id="westlake").verify([bad]))
    assert (e.value.code, e.value.field) == (grpc.StatusCode.NOT_FOUND, "gate_id")


def test_every_single_bit_flip_is_refused(server):
    when = at(server, 9, 5)
    (tid, code), = buy(server, 1, "packed-flips")
    raw = binary(code)
    flips = [flipped(raw, bit) for bit in range(8 * len(raw))]
    got, = packed_stream(server, [request(pack(flips), gate_id=GATE, scan_time=when.seconds)])
    assert len(got) == 8 * len(raw)
    assert not {OK, R.Value("OK_REENTRY")} & set(got.reasons)
    assert set(got.reasons) <= {FORGED, UNKNOWN}
    assert tid not in got.ticket_ids
    r, = text_stream(server, [[text(x) for x in flips]], when)
    assert bytes(r.reasons) == got.reasons            # the text's decisions, code for code
    assert unary(server, code, when).reason == OK     # none of them was taken for it


def test_a_batch_of_1000_and_read_ahead_order(server):
    """1,000 codes in a batch (ten tickets, each a hundred times), and several batches in
    flight on one stream decided in the order they were sent."""
    when = at(server, 9, 10)
    tickets = buy(server, 10, "packed-thousand")
    codes = [binary(c) for _, c in tickets] * 100
    reqs = [request(pack(codes), gate_id=GATE, scan_time=when.seconds)]
    reqs += [request(pack([binary(c)]), gate_id=GATE, scan_time=when.seconds) for _, c in tickets]
    first, *rest = packed_stream(server, reqs)
    assert list(first.reasons) == [OK] * 10 + [USED] * 990
    assert list(first.ticket_ids) == [t for t, _ in tickets] * 100
    assert [list(a.reasons) for a in rest] == [[USED]] * 10


def status(e: grpc.RpcError) -> tuple:
    return (e.code().name, *error_info(e))


@pytest.mark.parametrize("change,field", [
    ({"code_size": 0}, "code_size"),
    ({"code_size": 123}, "code_size"),
    ({"trim": 1}, "codes"),                       # a buffer not a whole number of codes
    ({"gate_id": "no-such-gate"}, "gate_id"),
    ({"gate_ids": [GATE, GATE]}, "gate_id"),       # both gate_id and gate_ids
    ({"gate_id": "", "gate_ids": [GATE] * 3}, "gate_ids"),   # not one per code
    ({"venue_id": "nowhere"}, "venue_id"),
    ({"direction": 0}, "direction"),
    ({"batch_id": "no spaces"}, "batch_id"),
])
def test_a_malformed_batch_is_refused_whole(server, change, field):
    """A wrong request is an error naming its field, after the answers of the batches
    before it; it changes nothing (its valid codes stay unused)."""
    when = at(server, 9, 15)
    tickets = buy(server, 2, f"packed-bad-{next(_orders)}")
    raw = [binary(c) for _, c in tickets]
    good = request(pack(raw[:1]), gate_id=GATE, scan_time=when.seconds)
    bad = request(pack(raw[1:]), gate_id=GATE, scan_time=when.seconds)
    trim = change.pop("trim", 0)
    for k, v in change.items():
        if k == "gate_ids":
            bad.gate_ids.extend(v)
        else:
            setattr(bad, k, v)
    bad.codes = bad.codes[:len(bad.codes) - trim]
    got = []
    with pytest.raises(grpc.RpcError) as e:
        for a in answers(server, [good, bad]):
            got.append(a)
    assert [list(a.reasons) for a in got] == [[OK]]
    code, reason, got_field = status(e.value)
    assert got_field == field
    assert code in ("INVALID_ARGUMENT", "NOT_FOUND")
    assert unary(server, tickets[1][1], when).reason == OK          # not applied


def test_only_gate_keys_scan(server):
    (_, code), = buy(server, 1, "packed-roles")
    req = request(pack([binary(code)]), gate_id=GATE, scan_time=at(server, 9, 20).seconds)
    for principal in ("demo-ota", "demo-window", "demo-operator", "demo-finance", "demo-viewer",
                      "demo-auditor"):
        with pytest.raises(grpc.RpcError) as e:
            packed_stream(server, [req], principal)
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED, principal
    assert [list(a.reasons) for a in packed_stream(server, [req])] == [[OK]]


def test_over_the_message_limit(server):
    """A batch over the server's largest message (16 MiB) is refused by gRPC, as a
    VerifyStream batch is."""
    huge = request(pack([bytes(30)] * ((17 << 20) // 30)), gate_id=GATE)
    with pytest.raises(grpc.RpcError) as e:
        packed_stream(server, [huge])
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_a_resent_batch_gets_its_first_answers(server):
    when = at(server, 9, 25)
    tickets = buy(server, 3, "packed-retry")
    raw = [binary(c) for _, c in tickets]
    first = request(pack(raw[:2] + raw[:1]), gate_id=GATE, scan_time=when.seconds, batch_id="conc-7/0001")
    a, = packed_stream(server, [first])
    again, = packed_stream(server, [first])
    assert list(a.reasons) == [OK, OK, USED]
    assert (again.reasons, again.ticket_ids, again.persons) == (a.reasons, a.ticket_ids, a.persons)
    other = request(pack(raw[2:]), gate_id=GATE, scan_time=when.seconds, batch_id="conc-7/0001")
    with pytest.raises(grpc.RpcError) as e:
        packed_stream(server, [other])
    assert status(e.value) == ("FAILED_PRECONDITION", "IDEMPOTENCY_KEY_REUSED", "batch_id")
    # batch ids are the caller's, whichever stream: the text of another batch is refused too
    with pytest.raises(grpc.RpcError) as e:
        gate_pb2_grpc.GateServiceStub(server.channel()).VerifyBatch(gate_pb2.VerifyBatchRequest(
            codes=[tickets[2][1]], gate_id=GATE, scan_time=when, batch_id="conc-7/0001"),
            metadata=server.meta("demo-gate"), timeout=10)
    assert status(e.value) == ("FAILED_PRECONDITION", "IDEMPOTENCY_KEY_REUSED", "batch_id")
    assert unary(server, tickets[2][1], when).reason == OK


def test_answered_scans_survive_a_crash(tmp_path):
    """An answered packed batch is durable: after a SIGKILL and a restart (the journal
    replayed) its tickets are still used, and what it refused is still unused."""
    data = str(tmp_path / "data")
    s = start_server(data, venue_day())
    try:
        tickets = buy(s, 4, "packed-crash")
        raw = [binary(c) for _, c in tickets]
        got, = packed_stream(s, [request(pack(raw[:3]), gate_id=GATE, scan_time=at(s, 9).seconds)])
        assert list(got.reasons) == [OK] * 3
    finally:
        kill_server(s)
    s = start_server(data, venue_day())
    try:
        assert [unary(s, c, at(s, 9, 1)).reason for _, c in tickets] == [USED] * 3 + [OK]
    finally:
        kill_server(s)
