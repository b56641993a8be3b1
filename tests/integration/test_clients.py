"""The role clients (clients/base, channel, admin, reports, members) against a real
server process with two shards: what an OTA, an operator and a member desk notice."""
from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import ipaddress
import itertools
import socket
import threading
import time

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
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
)

from turnstile.clients.admin import AdminClient, SlotSpec
from turnstile.clients.base import ApiError, Connection, RetryPolicy, TlsConfig
from turnstile.clients.channel import ChannelClient, Item
from turnstile.clients.gate import GateClient
from turnstile.clients.members import MembersClient
from turnstile.clients.reports import ReportsClient, to_csv, to_table
from turnstile.engine import demo
from tests.integration.conftest import AUTH_CACHE_S, start_server, stop_server, venue_day

VENUE = "westlake"
FAST = RetryPolicy(max_attempts=6, initial_backoff_s=0.05, max_backoff_s=0.5, total_s=20)


@pytest.fixture(scope="module")
def conns(server):
    made = {p: Connection(server.address, key, retry=FAST) for p, key in server.keys.items()}
    yield made
    for c in made.values():
        c.close()


@pytest.fixture(scope="module")
def ota(conns):
    return ChannelClient(conns["demo-ota"])


@pytest.fixture(scope="module")
def admin(conns):
    return AdminClient(conns["admin"])


def scan(server, code: str, gate: str = "north-1", at: int | None = None,
         direction=common_pb2.IN, address: str | None = None, principal: str = "demo-gate") -> str:
    """One gate scan (raw gRPC, as a turnstile would send it, to shard 0 unless
    `address` says otherwise); the reason's name."""
    with grpc.insecure_channel(address or server.address) as ch:
        r = gate_pb2_grpc.GateServiceStub(ch).Verify(
            gate_pb2.VerifyRequest(code=code, gate_id=gate, direction=direction,
                                   scan_time=Timestamp(seconds=at) if at else None),
            metadata=server.meta(principal), timeout=10)
    return common_pb2.ScanReason.Name(r.reason)


def slot_row(client: ChannelClient, slot_id: str, day: dt.date, venue: str = VENUE):
    return next(s for s in client.availability(venue, day) if s.slot_id == slot_id)


# -- a second venue on shard 1, set up through AdminClient ---------------------------------
@pytest.fixture(scope="module")
def museum(server, admin):
    """Venue `museum` placed on shard 1 and set up through the routed admin client; a
    channel principal `museum-ota` scoped to it, with a key made over the API."""
    day = server.day
    v = admin.create_venue("museum", "City Museum", shard=1)
    assert v.shard == 1
    admin.create_zone("museum", "hall", "Great Hall", live_capacity=500)
    admin.create_gate("museum", "hall", "hall-1", mode="both")
    admin.create_product("museum", "museum-adult", ["hall"], name="Museum adult", price_fen=3000,
                         refundable=True)
    admin.create_product("museum", "museum-vip", ["hall"], name="Museum VIP, real-name",
                         price_fen=9000, real_name=True, refundable=True)
    start = demo.local_time(day, 9)
    assert admin.create_slots("museum", [
        SlotSpec("hall-am", "hall", day, start, start + 3 * 3600, 50),
        SlotSpec("hall-pm", "hall", day, dt.datetime.fromtimestamp(start + 4 * 3600, dt.UTC),
                 dt.datetime.fromtimestamp(start + 7 * 3600, dt.UTC), 50)]) == 2
    admin.create_principal("museum-ota", "channel", venue_ids=["museum"], channel="ota")
    key = admin.create_api_key("museum-ota")
    conn = Connection(server.address, key.secret, retry=FAST)
    yield {"day": day, "client": ChannelClient(conn), "conn": conn, "key": key}
    conn.close()


def test_shard_map_and_routing_by_venue(server, conns, admin, museum):
    conn = conns["admin"]
    m = conn.shard_map(refresh=True)
    assert sorted(m.shards) == [0, 1] and m.venues == {"westlake": 0, "museum": 1}
    assert m.shards[0] == server.address and m.shards[1] != server.address
    # each venue's calls reach its own shard: the catalog says where it lives
    assert admin.catalog("museum").venue.shard == 1
    assert admin.catalog("westlake").venue.shard == 0
    assert [g.gate_id for g in admin.catalog("museum").gates] == ["hall-1"]
    # the museum channel sells on shard 1 through the bootstrap address of shard 0
    mus = museum["client"]
    before = slot_row(mus, "hall-am", museum["day"], "museum")
    hold = mus.hold("museum", [Item("museum-adult", "hall-am", qty=4)])
    assert hold.amount_fen == 4 * 3000
    assert slot_row(mus, "hall-am", museum["day"], "museum").remaining == before.remaining - 4
    mus.release(hold)
    assert slot_row(mus, "hall-am", museum["day"], "museum").remaining == before.remaining
    # one channel per shard address, reused
    assert conn.channel(m.shards[1]) is conn.channel(m.shards[1])
    assert conn.stub(gate_pb2_grpc.GateServiceStub, venue="museum") is \
        conn.stub(gate_pb2_grpc.GateServiceStub, shard=1)


def test_stock_goes_down_on_hold_and_back_on_release(server, ota):
    slot = demo.slot_id("main", server.day, 10)
    before = slot_row(ota, slot, server.day)
    assert before.allotment is None and before.remaining == before.pool_remaining
    hold = ota.hold(VENUE, [Item("adult", slot, qty=3)])
    assert hold.amount_fen == 3 * 7600                 # the OTA's channel price
    assert hold.expires_at > dt.datetime.fromtimestamp(server.now(), dt.UTC) + dt.timedelta(minutes=14)
    mid = slot_row(ota, slot, server.day)
    assert (mid.held, mid.remaining) == (before.held + 3, before.remaining - 3)
    assert ota.hold_status(VENUE, hold.hold_id).status == "active"
    ota.release(hold)
    ota.release(hold)                                  # a repeated release is answered the same
    after = slot_row(ota, slot, server.day)
    assert (after.held, after.remaining) == (before.held, before.remaining)
    gone = ota.hold_status(VENUE, hold.hold_id)         # what became of it, read back
    assert (gone.status, gone.amount_fen, gone.items) == ("released", hold.amount_fen, hold.items)


def test_quote_takes_no_stock_and_prices_per_channel(server, conns, ota):
    slot = demo.slot_id("main", server.day, 12)
    before = slot_row(ota, slot, server.day)
    q = ota.quote(VENUE, [Item("adult", slot, qty=2), Item("child", slot, qty=1)])
    assert q.amount_fen == 2 * 7600 + 4000 and [i.unit_price_fen for i in q.items] == [7600, 4000]
    window = ChannelClient(conns["demo-window"]).quote(VENUE, [Item("adult", slot, qty=2)])
    assert window.amount_fen == 2 * 8000
    assert slot_row(ota, slot, server.day) == before


def test_allotment_is_what_the_channel_sells_from(server, conns, ota, admin):
    day = server.day
    slot = demo.slot_id("main", day, 8)               # the demo gives `ota` 300 of it
    mine = slot_row(ota, slot, day)
    assert mine.allotment is not None and mine.allotment.channel == "ota"
    assert mine.remaining == mine.allotment_remaining
    hold = ota.hold(VENUE, [Item("adult", slot, qty=2)])
    after = slot_row(ota, slot, day)
    assert after.allotment_remaining == mine.allotment_remaining - 2
    assert after.pool_remaining == mine.pool_remaining            # the pool is untouched
    # the window has no allotment: it sees and sells the pool, and not the OTA's quota
    win = slot_row(ChannelClient(conns["demo-window"]), slot, day)
    assert win.allotment is None and win.allotments == () and win.remaining == win.pool_remaining
    ota.release(hold)
    # an allotment of 2 on a slot with plenty of pool: the OTA may hold 2, not 3
    small = demo.slot_id("main", day + dt.timedelta(days=1), 10)
    admin.set_allotment(VENUE, small, "ota", 2)
    row = slot_row(ota, small, day + dt.timedelta(days=1))
    assert row.allotment_remaining == 2 and row.remaining == 2 and row.pool_remaining > 100
    with pytest.raises(ApiError) as e:
        ota.hold(VENUE, [Item("adult", small, qty=3)])
    assert (e.value.code, e.value.reason, e.value.field) == (
        grpc.StatusCode.FAILED_PRECONDITION, "SOLD_OUT", "items[0].qty")
    two = ota.hold(VENUE, [Item("adult", small, qty=2)])
    assert slot_row(ota, small, day + dt.timedelta(days=1)).allotment_remaining == 0
    ota.release(two)


def test_same_key_same_order_and_nothing_sold_twice(server, conns, ota):
    day = server.day
    slot = demo.slot_id("main", day, 14)
    reports = ReportsClient(conns["admin"])
    issued = {p.product_id: p.issued for p in reports.ticket_counts(VENUE)}["adult"]
    before = slot_row(ota, slot, day)
    hold = ota.hold(VENUE, [Item("adult", slot, qty=2)], key="ota-order-7001")
    again = ota.hold(VENUE, [Item("adult", slot, qty=2)], key="ota-order-7001")
    assert again == hold
    order = ota.confirm(hold, "ota-order-7001", payment_reference="2026112322001400007001")
    retry = ota.confirm(hold, "ota-order-7001", payment_reference="2026112322001400007001")
    assert retry.order_id == order.order_id == "ota-order-7001"
    assert [t.code for t in retry.tickets] == [t.code for t in order.tickets] and len(order.tickets) == 2
    assert order.payment.reference == "2026112322001400007001" and order.amount_fen == 2 * 7600
    after = slot_row(ota, slot, day)
    assert (after.sold, after.held) == (before.sold + 2, before.held)
    assert {p.product_id: p.issued for p in reports.ticket_counts(VENUE)}["adult"] == issued + 2
    # the same key for another request is refused, and changes nothing
    with pytest.raises(ApiError) as e:
        ota.hold(VENUE, [Item("adult", slot, qty=5)], key="ota-order-7001")
    assert (e.value.code, e.value.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "IDEMPOTENCY_KEY_REUSED")
    assert e.value.field == "idempotency_key" and e.value.attempts == 1
    assert slot_row(ota, slot, day) == after
    # buy() (SalesService.Buy) with the id of an order confirmed before is ALREADY_EXISTS,
    # selling and holding nothing
    with pytest.raises(ApiError) as e:
        ota.buy(VENUE, [Item("adult", slot, qty=2)], "ota-order-7001",
                payment_reference="2026112322001400007001")
    assert (e.value.code, e.value.field) == (grpc.StatusCode.ALREADY_EXISTS, "order_id")
    assert slot_row(ota, slot, day) == after


def test_buy_is_one_order_or_nothing_and_its_retry_the_first_answer(server, conns, ota):
    """SalesService.Buy (sales.proto): held and confirmed in one call; the same request
    again is the first answer, selling nothing more; the order id with another request
    is IDEMPOTENCY_KEY_REUSED; a payment that is not the price, or too little stock, is
    refused holding nothing; the order reads back as any other (GetOrder)."""
    day = server.day
    slot = demo.slot_id("main", day, 12)
    before = slot_row(ota, slot, day)
    items = [Item("adult", slot, qty=3)]
    order = ota.buy(VENUE, items, "ota-buy-1", payment_reference="pay-1", amount_fen=3 * 7600)
    assert (order.order_id, order.amount_fen, len(order.tickets)) == ("ota-buy-1", 3 * 7600, 3)
    assert order.payment.reference == "pay-1"
    after = slot_row(ota, slot, day)
    assert (after.sold, after.held) == (before.sold + 3, before.held)
    again = ota.buy(VENUE, items, "ota-buy-1", payment_reference="pay-1", amount_fen=3 * 7600)
    assert [t.code for t in again.tickets] == [t.code for t in order.tickets]
    assert slot_row(ota, slot, day) == after
    assert [t.code for t in ota.get_order(VENUE, "ota-buy-1").tickets] == [t.code for t in order.tickets]
    for kw, want in [(dict(order_id="ota-buy-1", amount_fen=4 * 7600, qty=4),
                      (grpc.StatusCode.FAILED_PRECONDITION, "IDEMPOTENCY_KEY_REUSED", "order_id")),
                     (dict(order_id="ota-buy-2", amount_fen=3 * 7600 - 1, qty=3),
                      (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", "payment.amount_fen")),
                     (dict(order_id="ota-buy-3", amount_fen=7600 * 10**6, qty=10**6),
                      (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", "items[0].qty")),
                     (dict(order_id="ota-buy-4", amount_fen=7600 * 9000, qty=9000),
                      (grpc.StatusCode.FAILED_PRECONDITION, "SOLD_OUT", "items[0].qty"))]:
        with pytest.raises(ApiError) as e:
            ota.buy(VENUE, [Item("adult", slot, qty=kw["qty"])], kw["order_id"], amount_fen=kw["amount_fen"])
        assert (e.value.code, e.value.reason, e.value.field) == want, kw
        assert slot_row(ota, slot, day) == after, kw


class FlakyProxy:
    """A TCP proxy in front of the server. On its first connection, once the client has
    sent a call (HTTP/2 handshake done, more than `handshake` bytes sent), whatever the
    server sends back is swallowed, and after `blackout_s` seconds the connection is
    cut: the request arrives, its answer is lost, as on a bad mobile network."""

    handshake = 150

    def __init__(self, target: str, blackout_s: float = 1.5):
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.blackout_s = blackout_s
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections = 0
        self.swallowed = 0
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            upstream = socket.create_connection(self.target)
            lossy = self.connections == 1
            sent = [0]
            threading.Thread(target=self._pipe, args=(client, upstream, None, sent), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, lossy and sent, None),
                             daemon=True).start()
            if lossy:
                threading.Timer(self.blackout_s, self._cut, args=(client, upstream)).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, lossy, count) -> None:
        """Copy src to dst; `count` adds up what passed; with `lossy` (the client's
        count), drop what passes once the client has sent a call."""
        try:
            while data := src.recv(65536):
                if count is not None:
                    count[0] += len(data)
                if lossy and lossy[0] > self.handshake:
                    self.swallowed += len(data)
                else:
                    dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    @staticmethod
    def _cut(*socks: socket.socket) -> None:
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self._stop = True
        self.sock.close()


def test_a_lost_answer_is_retried_with_the_same_key_and_sells_once(server, conns, ota):
    """The server takes the hold but its answer is lost (deadline passes, connection
    drops): the client retries with the same key and gets the hold, held once."""
    day = server.day
    slot = demo.slot_id("main", day, 16)
    before = slot_row(ota, slot, day)
    mark = max((r.seq for r in AdminClient(conns["admin"]).audit_records(0)), default=0)
    proxy = FlakyProxy(server.address)
    flaky = Connection(server.address, server.keys["demo-ota"], timeout=1.0, retry=FAST,
                       rewrite_address=lambda a: proxy.address if a == server.address else a)
    try:
        flaky.shard_map()                          # from the server itself (bootstrap address)
        hold = ChannelClient(flaky).hold(VENUE, [Item("child", slot, qty=3)], key="cart-lossy-1")
    finally:
        flaky.close()
        proxy.close()
    assert proxy.connections >= 2 and proxy.swallowed > 0
    after = slot_row(ota, slot, day)
    assert after.held == before.held + 3 and after.remaining == before.remaining - 3
    # the server saw the request more than once (audited each time) and held once
    req = sales_pb2.HoldRequest(venue_id=VENUE, items=[sales_pb2.Item(product_id="child", slot_ids=[slot],
                                                                      qty=3)], idempotency_key="cart-lossy-1")
    # the digest is keyed (not sha256 of the request), but the same for the same request
    seen = [r for r in AdminClient(conns["admin"]).audit_records(0, principal_id="demo-ota")
            if r.method.endswith("/Hold") and r.seq > mark]
    digest = seen[-1].request_digest
    assert digest != hashlib.sha256(req.SerializeToString()).hexdigest()
    seen = [r for r in seen if r.request_digest == digest]
    assert len(seen) >= 2 and {r.result for r in seen} == {"OK"}
    assert ota.hold(VENUE, [Item("child", slot, qty=3)], key="cart-lossy-1") == hold
    ota.release(hold)


def test_refund_voids_tickets_and_returns_stock(server, ota):
    day = server.day
    slot = demo.slot_id("main", day, 8)
    order = ota.buy(VENUE, [Item("adult", slot, qty=2)], "ota-order-7100", payment_reference="ref-7100")
    a, b = order.tickets
    start = demo.local_time(day, 8, 30)
    assert scan(server, a.code, at=start) == "OK"
    before = slot_row(ota, slot, day)
    with pytest.raises(ApiError) as e:                 # a used ticket is not refunded
        ota.refund(VENUE, order.order_id, [a.ticket_id])
    assert e.value.reason == "TICKET_NOT_REFUNDABLE" and e.value.field == "ticket_ids[0]"
    r = ota.refund(VENUE, order.order_id, refund_id="rf-1")
    assert r.ticket_ids == (b.ticket_id,) and r.amount_fen == 7600 and r.fee_fen == 0
    assert ota.refund(VENUE, order.order_id, refund_id="rf-1") == r        # a retry: same answer
    assert scan(server, b.code, at=start) == "VOIDED"
    assert slot_row(ota, slot, day).sold == before.sold - 1
    got = ota.get_order(VENUE, order.order_id)
    assert got.refunded_fen == 7600 and [x.refund_id for x in got.refunds] == ["rf-1"]
    assert [t.code for t in got.tickets] == [a.code, b.code]
    assert [(t.state, t.entries_left) for t in got.tickets] == [("inside", 0), ("voided", 1)]
    assert got.line_of(b).product_id == "adult"


def test_errors_carry_code_reason_and_field(server, conns, ota):
    with pytest.raises(ApiError) as e:
        ota.hold(VENUE, [Item("adult", "no-such-slot")])
    err = e.value
    assert err.code == grpc.StatusCode.NOT_FOUND and err.field == "items[0].slot_ids[0]"
    assert err.violations[0].field == "items[0].slot_ids[0]" and "no-such-slot" in err.violations[0].description
    assert err.domain == "turnstile" and err.method == "/turnstile.v1.SalesService/Hold"
    with pytest.raises(ApiError) as e:
        ota.get_order(VENUE, "never-sold")
    assert e.value.code == grpc.StatusCode.NOT_FOUND and e.value.attempts == 1
    with pytest.raises(ApiError) as e:
        AdminClient(conns["demo-ota"]).list_principals()
    assert e.value.code == grpc.StatusCode.PERMISSION_DENIED and e.value.reason == "ROLE_NOT_ALLOWED"
    with Connection(server.address, "tsk_000000000000_forged") as bad, pytest.raises(ApiError) as e:
        ChannelClient(bad).availability(VENUE, server.day)
    assert e.value.code == grpc.StatusCode.UNAUTHENTICATED


def test_retries_are_bounded_and_only_for_safe_calls():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead = f"127.0.0.1:{s.getsockname()[1]}"           # bound, not listening: refused
    policy = RetryPolicy(max_attempts=3, initial_backoff_s=0.01, max_backoff_s=0.05, total_s=5)
    try:
        with Connection(dead, "tsk_x_y", timeout=1, retry=policy) as conn:
            t0 = time.monotonic()
            with pytest.raises(ApiError) as e:          # a read: retried, 3 attempts in all
                AdminClient(conn).list_principals()
            assert e.value.code == grpc.StatusCode.UNAVAILABLE and e.value.attempts == 3
            assert time.monotonic() - t0 < 5
            with pytest.raises(ApiError) as e:          # no idempotency on the server: once
                AdminClient(conn).create_api_key("demo-ota")
            assert e.value.code == grpc.StatusCode.UNAVAILABLE and e.value.attempts == 1
    finally:
        s.close()


def test_admin_keys_principals_and_blocks(server, conns, admin, ota):
    p = admin.create_principal("agency-7", "channel", venue_ids=[VENUE], channel="agency")
    assert p.role == "channel" and p.channel == "agency" and p.venue_ids == (VENUE,)
    assert "agency-7" in {x.principal_id for x in admin.list_principals()}
    key = admin.create_api_key("agency-7")
    assert key.secret.startswith(f"tsk_{key.key_id}_")
    with Connection(server.address, key.secret) as conn:
        agency = ChannelClient(conn)
        slot = demo.slot_id("main", server.day, 10)
        order = agency.buy(VENUE, [Item("group", slot, qty=1, group=20)], "agency-tour-1")
        assert order.channel == "agency" and order.tickets[0].persons == 20
        assert order.amount_fen == 20 * 6000
        assert admin.revoke_api_key(key.key_id) == key.key_id
        time.sleep(AUTH_CACHE_S)                  # every cache of every shard ends within it
        with pytest.raises(ApiError) as e:
            agency.availability(VENUE, server.day)
        assert e.value.code == grpc.StatusCode.UNAUTHENTICATED
    # the same principal again is a retry, answered alike; another one under its id is not
    again = admin.create_principal("agency-7", "channel", venue_ids=[VENUE], channel="agency")
    assert again == p
    with pytest.raises(ApiError) as e:
        admin.create_principal("agency-7", "channel", channel="agency")
    assert e.value.code == grpc.StatusCode.ALREADY_EXISTS
    assert [(k.key_id, k.revoked) for k in admin.list_api_keys("agency-7")] == [(key.key_id, True)]
    # block a ticket: the gate refuses it, the report counts it; unblock: it admits
    t = ota.buy(VENUE, [Item("adult", demo.slot_id("main", server.day, 12))], "ota-order-7200").tickets[0]
    at = demo.local_time(server.day, 12, 5)
    blocked_before = {c.product_id: c.blocked for c in ReportsClient(conns["admin"]).ticket_counts(VENUE)}
    assert admin.block_ticket(VENUE, t.ticket_id) is True
    assert scan(server, t.code, at=at) == "BLOCKED"
    counts = {c.product_id: c.blocked for c in ReportsClient(conns["admin"]).ticket_counts(VENUE)}
    assert counts["adult"] == blocked_before["adult"] + 1
    assert admin.block_ticket(VENUE, t.ticket_id, False) is False
    assert scan(server, t.code, at=at) == "OK"


def test_capacity_and_catalog(server, admin, ota):
    slot = demo.slot_id("boat", server.day + dt.timedelta(days=2), 10)
    c = admin.set_slot_capacity(VENUE, slot, 5)
    assert (c.slot_id, c.capacity) == (slot, 5)
    assert slot_row(ota, slot, server.day + dt.timedelta(days=2)).remaining == 5
    with pytest.raises(ApiError) as e:
        admin.set_slot_capacity(VENUE, slot, -1)
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
    cat = admin.catalog(VENUE)
    assert cat.venue.name == "West Lake Scenic Area"
    assert {p.product_id for p in cat.products} >= {"adult", "combo", "night"}


def test_ticket_key_rotation_and_retirement(server, admin, museum):
    """On shard 1 (the museum's): codes of a rotated-out key still admit until that key
    is retired; then they read FORGED, while codes of the new key admit."""
    mus, day = museum["client"], museum["day"]
    at = demo.local_time(day, 9, 30)
    shard1 = admin.shard_map().shards[1]

    def scan1(code: str) -> str:
        return scan(server, code, "hall-1", at, address=shard1, principal="admin")

    first = admin.rotate_ticket_key(1)
    assert (first.shard, first.state) == (1, "issuing")
    old = mus.buy("museum", [Item("museum-adult", "hall-am", qty=2)], "m-key-old").tickets
    second = admin.rotate_ticket_key(1)
    assert second.key_id != first.key_id and second.state == "issuing"
    new = mus.buy("museum", [Item("museum-adult", "hall-am")], "m-key-new").tickets[0]
    assert scan1(old[0].code) == "OK"
    retired = admin.retire_ticket_key(1, first.key_id)
    assert (retired.key_id, retired.state) == (first.key_id, "retired")
    assert scan1(old[1].code) == "FORGED"
    assert scan1(new.code) == "OK"
    with pytest.raises(ApiError) as e:                # a shard's keys are changed on that shard
        admin.conn.call(admin_pb2_grpc.AdminServiceStub, "RotateTicketKey",
                        admin_pb2.RotateTicketKeyRequest(shard=1, idempotency_key="x"), shard=0, retry=True)
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT and e.value.field == "shard"


def test_audit_query_and_verify(server, admin):
    checks = admin.verify_audit()
    assert [c.shard for c in checks] == [0, 1] and all(c.ok and c.checked > 0 for c in checks)
    recs = list(admin.audit_records(0, principal_id="admin", page=3))
    assert len(recs) > 3 and [r.seq for r in recs] == sorted({r.seq for r in recs})
    assert all(r.principal_id == "admin" for r in recs)
    assert any(r.method == "/turnstile.v1.AdminService/CreateApiKey" for r in recs)
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(recs) if b.seq == a.seq + 1)
    with pytest.raises(ApiError) as e:
        AdminClient(Connection(server.address, server.keys["demo-window"])).verify_audit()
    assert e.value.code == grpc.StatusCode.PERMISSION_DENIED


def test_live_and_ticket_counts(server, conns, ota):
    today = server.day                      # the server's clock: LiveCounts counts by that day
    reports = ReportsClient(conns["admin"])
    before = {z.zone_id: z for z in reports.live_counts(VENUE).zones}
    counts = {p.product_id: p for p in reports.ticket_counts(VENUE)}
    slot = demo.slot_id("main", today, 12)
    order = ota.buy(VENUE, [Item("adult", slot, qty=2)], "ota-order-7300")
    assert scan(server, order.tickets[0].code, "north-2", demo.local_time(today, 12, 10)) == "OK"
    live = reports.live_counts(VENUE)
    assert live.date == today and [z.zone_id for z in live.zones] == ["main", "pagoda", "boat"]
    main = live.zones[0]
    assert main.inside == before["main"].inside + 1
    assert main.entered_tickets == before["main"].entered_tickets + 1 and main.live_capacity == 30_000
    assert reports.live_counts(VENUE, today - dt.timedelta(days=30)).zones[0].inside == 0
    after = {p.product_id: p for p in reports.ticket_counts(VENUE)}
    assert after["adult"].issued == counts["adult"].issued + 2
    assert after["adult"].used == counts["adult"].used + 1
    ota.refund(VENUE, order.order_id, [order.tickets[1].ticket_id])
    assert ReportsClient(conns["admin"]).ticket_counts(VENUE)[0].voided == after["adult"].voided + 1
    csv_text = to_csv(live.zones)
    assert csv_text.splitlines()[0] == "zone_id,inside,entered_tickets,live_capacity"
    assert csv_text.splitlines()[1] == f"main,{main.inside},{main.entered_tickets},30000"
    table = to_table(live.zones).splitlines()
    assert table[0].split() == ["zone_id", "inside", "entered_tickets", "live_capacity"]
    assert table[2].split() == ["main", str(main.inside), str(main.entered_tickets), "30000"]
    with pytest.raises(ApiError) as e:                  # a channel sees no reports
        ReportsClient(conns["demo-ota"]).live_counts(VENUE)
    assert e.value.code == grpc.StatusCode.PERMISSION_DENIED


def test_holder_tickets_across_shards(server, conns, museum):
    """A real-name holder's tickets at two venues on two shards, in one answer."""
    ids = ["110101199003071234", "11010119900307567X"]
    window = ChannelClient(conns["demo-window"])
    slot = demo.slot_id("main", server.day, 18 - 2)
    order = window.buy(VENUE, [Item("night", slot, qty=2)], "win-night-1", method="cash",
                       holders=[ids])
    assert [t.holder for t in order.tickets] == ["110***********1234", "110***********567X"]
    mus = museum["client"]
    mus.buy("museum", [Item("museum-vip", "hall-pm")], "m-vip-1", holders=[[ids[0]]])
    h = MembersClient(conns["admin"]).holder_tickets(ids[0])
    assert h.holder == "110***********1234" and ids[0] not in repr(h)
    assert sorted((t.venue_id, t.shard, t.product_id) for t in h.tickets) == [
        ("museum", 1, "museum-vip"), (VENUE, 0, "night")]
    assert all(t.first_day == server.day and not t.voided for t in h.tickets)
    assert len(h.valid_on(server.day)) == 2 and h.valid_on(server.day - dt.timedelta(days=1)) == []
    # the window sees its own venue only; a refund shows as voided
    window.refund(VENUE, "win-night-1", [order.tickets[0].ticket_id])
    mine = MembersClient(conns["demo-window"]).holder_tickets(ids[0])
    assert [(t.venue_id, t.voided, t.usable) for t in mine.tickets] == [(VENUE, True, False)]
    assert MembersClient(conns["admin"]).holder_tickets("999999999999999999").tickets == ()


def test_face_terminal_admits_an_enrolled_holder(server, conns, museum, tmp_path):
    """A visitor enrolls a face at the window; the face terminal's token then admits
    the holder's real-name ticket once, as their ID card would; taken back, it names
    nobody. Only callers scoped to the venue may enroll there."""
    holder, token = "11010119850101002X", "hik-face-5e1c0d77"
    window = ChannelClient(conns["demo-window"])
    slot = demo.slot_id("main", server.day, 18 - 2)
    order = window.buy(VENUE, [Item("night", slot)], "win-face-1", method="cash", holders=[[holder]])
    members = MembersClient(conns["demo-window"])
    e = members.enroll_face(VENUE, token, holder.lower(), key="face-enrol-1")
    assert (e.enrolled, e.holder, e.tickets) == (True, "110***********002X", 1)
    assert members.enroll_face(VENUE, token, holder.lower(), key="face-enrol-1") == e   # a retry
    with pytest.raises(ApiError) as err:                 # the key reused for another request
        members.enroll_face(VENUE, token + "-2", holder, key="face-enrol-1")
    assert err.value.reason == "IDEMPOTENCY_KEY_REUSED"
    with pytest.raises(ApiError) as err:                 # a channel never meets the holder
        MembersClient(museum["conn"]).enroll_face(VENUE, token, holder)
    assert err.value.code == grpc.StatusCode.PERMISSION_DENIED
    at = demo.local_time(server.day, 16, 30)              # inside the ticket's slot
    gate = GateClient(server.address, server.keys["demo-gate"], "north-1", VENUE,
                      state_dir=str(tmp_path / "face-gate"), timeout=10, clock=lambda: at)
    try:
        d = gate.verify(face_token=token)
        assert (d.reason, d.admitted, d.ticket_id, d.offline) == \
            ("OK", True, order.tickets[0].ticket_id, False)
        assert gate.verify(face_token=token).reason == "ALREADY_USED"
        assert gate.verify(face_token="hik-face-unknown").reason == "UNKNOWN"
        with pytest.raises(ApiError) as err:
            gate.verify(face_token="short")
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT and err.value.field == "face_token"
        gone = members.remove_face(VENUE, token)
        assert (gone.enrolled, gone.holder) == (False, "")
        assert gate.verify(face_token=token).reason == "UNKNOWN"
    finally:
        gate.close()


# -- TLS and mTLS ------------------------------------------------------------------------
def _cert(name, key, issuer, issuer_key, *, ca=False, san=None):
    now = dt.datetime.now(dt.UTC)
    b = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
         .issuer_name(issuer).public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if san:
        b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return b.sign(issuer_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def test_mtls_connection(tmp_path):
    ca_key, srv_key, cli_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "client test CA")])
    files = {"ca.pem": _cert("client test CA", ca_key, ca_name, ca_key, ca=True),
             "srv.pem": _cert("localhost", srv_key, ca_name, ca_key,
                              san=[x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
             "srv.key": _key_pem(srv_key),
             "cli.pem": _cert("till-9", cli_key, ca_name, ca_key), "cli.key": _key_pem(cli_key)}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    srv = start_server(str(tmp_path / "data"), venue_day(),
                       ("--shards", "1", "--tls-cert", str(tmp_path / "srv.pem"),
                        "--tls-key", str(tmp_path / "srv.key"), "--tls-client-ca", str(tmp_path / "ca.pem")))
    try:
        tls = TlsConfig(root_certificates=str(tmp_path / "ca.pem"),       # a path ...
                        certificate_chain=files["cli.pem"], private_key=files["cli.key"])  # ... or PEM
        with Connection(srv.address, srv.keys["demo-ota"], tls=tls) as conn:
            rows = ChannelClient(conn).availability(VENUE, srv.day, zone="pagoda")
            assert len(rows) == 8 and all(r.zone_id == "pagoda" for r in rows)

            async def availability_over_aio():
                """The load generator's channel (Connection.aio_channel): the same TLS."""
                async with conn.aio_channel(venue=VENUE) as ch:
                    return await inventory_pb2_grpc.InventoryServiceStub(ch).Availability(
                        inventory_pb2.AvailabilityRequest(venue_id=VENUE, zone_id="pagoda",
                                                          date_from=srv.day.isoformat()),
                        metadata=conn.metadata, timeout=10)
            assert len(asyncio.run(availability_over_aio()).slots) == 8
        no_cert = TlsConfig(root_certificates=files["ca.pem"])
        with Connection(srv.address, srv.keys["demo-ota"], tls=no_cert, timeout=2,
                        retry=RetryPolicy(max_attempts=2, total_s=5)) as conn, pytest.raises(ApiError) as e:
            ChannelClient(conn).availability(VENUE, srv.day)
        assert e.value.code == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(ValueError):
            TlsConfig(certificate_chain=files["cli.pem"]).credentials()
    finally:
        stop_server(srv)


def test_clients_never_import_the_engine_or_the_server():
    """DESIGN.md 2: a gate vendor or an OTA packages clients/ without the engine."""
    import subprocess
    import sys

    from tests.integration.conftest import ROOT
    code = ("import sys, clients.base, clients.channel, clients.pos, clients.admin, clients.reports, "
            "clients.members; print(sorted(m for m in sys.modules if m.split('.')[0] in ('engine', 'server')))")
    r = subprocess.run([sys.executable, "-c", code], check=False, cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_a_restarted_shard_is_found_at_its_new_address(server, museum):
    """Shard 1's process dies and its port is taken meanwhile, so the supervisor restarts
    it on a new one (--port 0: any free port; a shard comes back where it was when it
    can). A call about a venue of that shard fails UNAVAILABLE, the client asks for the
    shard map again and the retry reaches the shard where it listens now."""
    import os
    import pathlib
    import signal
    import socket
    conn = Connection(server.address, server.keys["admin"],
                      retry=RetryPolicy(max_attempts=30, initial_backoff_s=0.1, max_backoff_s=1, total_s=60))
    try:
        old = conn.shard_map().shards[1]
        assert AdminClient(conn).catalog("museum").venue.shard == 1
        proc = pathlib.Path("/proc")
        children = (proc / str(server.proc.pid) / "task" / str(server.proc.pid) / "children").read_text()
        shard1 = [int(p) for p in children.split()    # the supervisor's `serve-shard --shard 1`
                  if (proc / p / "cmdline").read_bytes().split(b"\0")[4:6] == [b"--shard", b"1"]]
        assert len(shard1) == 1
        os.kill(shard1[0], signal.SIGKILL)
        taken = socket.socket()
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # past its TIME_WAITs
        host, port = old.rsplit(":", 1)
        for _ in range(100):                # until the dead process's listener is gone
            try:
                taken.bind((host, int(port)))
                break
            except OSError:
                time.sleep(0.02)
        taken.listen()
        try:
            rows = ReportsClient(conn).live_counts("museum")      # retried until the shard is back
        finally:
            taken.close()
        assert [z.zone_id for z in rows.zones] == ["hall"]
        assert conn.shard_map().shards[1] != old
    finally:
        conn.close()
