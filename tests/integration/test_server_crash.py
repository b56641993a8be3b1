"""A server SIGKILLed under load restarts with every acknowledged call present."""
from __future__ import annotations

import random
import threading
import time

import grpc
import pytest

from turnstile.engine import demo
from tests.integration.conftest import kill_server, start_server, stop_server, venue_day
from turnstile.v1 import sales_pb2, sales_pb2_grpc


def _load(server, stop: threading.Event, acked: list, worker: int) -> None:
    ch = server.channel()
    stub = sales_pb2_grpc.SalesServiceStub(ch)
    meta = server.meta("demo-ota")
    slot = demo.slot_id("main", server.day, 14)
    n = 0
    while not stop.is_set():
        n += 1
        key = f"w{worker}-{n}-{random.random()}"
        try:
            h = stub.Hold(sales_pb2.HoldRequest(venue_id="westlake", idempotency_key=key, items=[
                sales_pb2.Item(product_id="adult", slot_ids=[slot], qty=1)]), metadata=meta, timeout=5)
            c = stub.Confirm(sales_pb2.ConfirmRequest(hold_id=h.hold_id, order_id=f"o-{key}",
                                                      payment=sales_pb2.Payment(method="card",
                                                                                amount_fen=h.amount_fen)),
                             metadata=meta, timeout=5)
        except grpc.RpcError:
            break                              # the server went away
        acked.append((c.order.order_id, [t.ticket_id for t in c.tickets]))
    ch.close()


def test_sigkill_under_load_keeps_acknowledged_orders(tmp_path):
    data = str(tmp_path / "data")
    acked: list = []
    rng = random.Random()
    for round_ in range(3):
        server = start_server(data, venue_day())
        stop = threading.Event()
        workers = [threading.Thread(target=_load, args=(server, stop, acked, w)) for w in range(8)]
        for w in workers:
            w.start()
        time.sleep(rng.uniform(0.5, 1.5))
        kill_server(server)
        stop.set()
        for w in workers:
            w.join(10)
    assert len(acked) > 20
    server = start_server(data, venue_day())
    try:
        ch = server.channel()
        stub = sales_pb2_grpc.SalesServiceStub(ch)
        for order_id, tickets in acked:
            got = stub.GetOrder(sales_pb2.GetOrderRequest(order_id=order_id),
                                metadata=server.meta("demo-ota"), timeout=5)
            assert [t.ticket_id for t in got.tickets] == tickets
        ch.close()
    finally:
        assert "stopped" in stop_server(server)


def test_tampered_audit_record_is_reported_by_the_server(tmp_path):
    import json
    import lmdb
    from turnstile.engine import audit
    from turnstile.v1 import admin_pb2, admin_pb2_grpc
    data = str(tmp_path / "data")
    server = start_server(data, venue_day())
    ch = server.channel()
    stub = sales_pb2_grpc.SalesServiceStub(ch)
    slot = demo.slot_id("main", server.day, 14)
    for k in range(3):
        stub.Hold(sales_pb2.HoldRequest(venue_id="westlake", idempotency_key=f"t{k}", items=[
            sales_pb2.Item(product_id="adult", slot_ids=[slot], qty=1)]), metadata=server.meta("demo-ota"))
    ch.close()
    assert "stopped" in stop_server(server)
    env = lmdb.open(f"{data}/shard-0", max_dbs=8)
    rows = env.open_db(b"rows")
    with env.begin(write=True, db=rows) as txn:
        rec = json.loads(txn.get(audit.key(2)))
        rec["result"] = "OK-but-changed"
        txn.put(audit.key(2), json.dumps(rec).encode())
    env.close()
    server = start_server(data, venue_day())
    try:
        ch = server.channel()
        v = admin_pb2_grpc.AdminServiceStub(ch).VerifyAudit(admin_pb2.VerifyAuditRequest(),
                                                            metadata=server.meta("admin"))
        assert (v.ok, v.first_bad_seq) == (False, 2)
        ch.close()
    finally:
        stop_server(server)


def test_full_queue_sheds_load_with_resource_exhausted(tmp_path):
    import asyncio
    from turnstile.v1 import admin_pb2, admin_pb2_grpc
    data = str(tmp_path / "data")
    server = start_server(data, venue_day(), ("--shards", "1", "--max-queue", "1"))

    async def flood():
        async with grpc.aio.insecure_channel(server.address) as ch:
            stub = sales_pb2_grpc.SalesServiceStub(ch)
            slot = demo.slot_id("main", server.day, 14)
            calls = [stub.Hold(sales_pb2.HoldRequest(venue_id="westlake", idempotency_key=f"f{k}", items=[
                sales_pb2.Item(product_id="adult", slot_ids=[slot], qty=1)]), metadata=server.meta("demo-ota"),
                timeout=10) for k in range(200)]
            return await asyncio.gather(*calls, return_exceptions=True)
    try:
        results = asyncio.run(flood())
        shed = [r for r in results if isinstance(r, grpc.RpcError)]
        ok = [r for r in results if not isinstance(r, BaseException)]
        assert ok and shed
        assert {r.code() for r in shed} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
        with grpc.insecure_channel(server.address) as ch:       # still serving afterwards
            m = admin_pb2_grpc.AdminServiceStub(ch).GetShardMap(admin_pb2.GetShardMapRequest(),
                                                               metadata=server.meta("admin"), timeout=5)
            assert m.venues["westlake"] == 0
    finally:
        stop_server(server)


def test_expired_deadline_is_not_applied(tmp_path):
    from turnstile.v1 import inventory_pb2, inventory_pb2_grpc
    data = str(tmp_path / "data")
    server = start_server(data, venue_day(), ("--shards", "1"))
    try:
        with grpc.insecure_channel(server.address) as ch:
            stub = sales_pb2_grpc.SalesServiceStub(ch)
            slot = demo.slot_id("main", server.day, 16)
            with pytest.raises(grpc.RpcError) as e:
                stub.Hold(sales_pb2.HoldRequest(venue_id="westlake", idempotency_key="late", items=[
                    sales_pb2.Item(product_id="adult", slot_ids=[slot], qty=1)]),
                    metadata=server.meta("demo-ota"), timeout=0.000001)
            assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            time.sleep(0.5)
            avail = inventory_pb2_grpc.InventoryServiceStub(ch).Availability(
                inventory_pb2.AvailabilityRequest(venue_id="westlake", date_from=server.day.isoformat()),
                metadata=server.meta("demo-ota"))
            assert next(s for s in avail.slots if s.slot_id == slot).held == 0
    finally:
        stop_server(server)
