"""gRPC services of one shard: GateService, SalesService, InventoryService and the
shard map of AdminService. Each handler checks the caller's scope, turns the
request into an engine command, submits it to the shard's group-commit writer and
turns the result into the response; an engine error becomes a gRPC status through
server/errors.py (the `rpc` decorator)."""
from __future__ import annotations

import contextvars
import functools
import hashlib
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from engine import cmd, Shard, GroupCommit, TurnstileError, NotFound, InvalidArgument, \
    PermissionDenied, to_day, day_to_date
from turnstile.v1 import (admin_pb2, admin_pb2_grpc, gate_pb2, gate_pb2_grpc, inventory_pb2,
                          inventory_pb2_grpc, sales_pb2, sales_pb2_grpc)

from . import auth, errors


# (principal, method, request digest) of the call being handled: every command it
# submits is audited with it
_call: contextvars.ContextVar[tuple[str, str, str]] = contextvars.ContextVar("turnstile_call")


def _audit_info(service: str, name: str, request) -> tuple[str, str, str]:
    return (auth.current().id, f"/turnstile.v1.{service}/{name}",
            hashlib.sha256(request.SerializeToString()).hexdigest())


def rpc(fn):
    """Engine errors end the call with their gRPC status and google.rpc details; the
    call's commands are audited under its principal and method."""
    @functools.wraps(fn)
    async def wrapper(self, request, context):
        token = _call.set(_audit_info(type(self).__name__, fn.__name__, request))
        try:
            return await fn(self, request, context)
        except TurnstileError as e:
            await context.abort_with_status(errors.to_status(e))
        finally:
            _call.reset(token)
    return wrapper


def _ts(seconds: int) -> Timestamp:
    return Timestamp(seconds=seconds)


def _at(msg, name: str) -> int | None:
    return getattr(msg, name).seconds if msg.HasField(name) else None


class ShardNode:
    """One shard as served: the shard, its writer, and its address."""

    def __init__(self, shard: Shard, writer: GroupCommit, address: str = ""):
        self.shard = shard
        self.writer = writer
        self.address = address
        self.shard_id = shard.state.shard_id

    async def submit(self, command) -> Any:
        command.audit = _call.get(None)
        return await self.writer.submit(command)

    # scope checks ------------------------------------------------------------------
    def venue(self, venue_id: str) -> str:
        p = auth.current()
        if venue_id not in self.shard.state.venues:
            raise NotFound(f"no venue {venue_id!r} on shard {self.shard_id}", field="venue_id",
                           hint="route by the shard map (AdminService.GetShardMap)")
        if not p.may_use_venue(venue_id):
            raise PermissionDenied(f"{p.id} may not act on venue {venue_id}", field="venue_id")
        return venue_id

    def gate(self, gate_id: str) -> str:
        p = auth.current()
        g = self.shard.state.gates.get(gate_id)
        if g is None:
            raise NotFound(f"no gate {gate_id!r} on shard {self.shard_id}", field="gate_id")
        if not p.may_use_venue(g.venue) or not p.may_use_gate(gate_id):
            raise PermissionDenied(f"{p.id} may not scan at gate {gate_id}", field="gate_id")
        return gate_id

    def channel(self) -> str:
        p = auth.current()
        return p.channel or p.role          # an admin sells as "admin"

    def order(self, order_id: str):
        p = auth.current()
        order = self.shard.get_order(order_id)
        if p.role in ("seller", "channel") and order.channel != p.channel \
                or not p.may_use_venue(order.venue):
            raise NotFound(f"no order {order_id}", field="order_id")
        return order


class GateService(gate_pb2_grpc.GateServiceServicer):
    def __init__(self, node: ShardNode):
        self.node = node

    def _product_of(self, ticket: int) -> str:
        t = self.node.shard.state.tickets
        if ticket < 0 or not t.is_code(ticket):
            return ""
        return self.node.shard.state.product_list[t.record(ticket)["product"]].id

    @rpc
    async def Verify(self, request, context):
        gate = self.node.gate(request.gate_id)
        at = _at(request, "scan_time")
        kind = request.WhichOneof("credential")
        if kind == "code":
            c = cmd.verify(request.code, gate, request.direction, at=at, persons=request.persons)
        elif kind == "id_number":
            c = cmd.verify_holder(request.id_number, gate, request.direction, at=at,
                                  persons=request.persons)
        else:
            raise InvalidArgument("a code or an ID number is required", field="credential")
        r = await self.node.submit(c)
        return gate_pb2.VerifyResponse(reason=int(r.reason), ticket_id=r.ticket, persons=r.persons,
                                       product_id=self._product_of(r.ticket),
                                       shard=self.node.shard_id)

    async def _batch(self, request) -> gate_pb2.VerifyBatchResponse:
        if request.gate_ids:
            gates: Any = [self.node.gate(g) for g in request.gate_ids]
        else:
            gates = self.node.gate(request.gate_id)
        r = await self.node.submit(cmd.verify_batch(list(request.codes), gates, request.direction,
                                                    at=_at(request, "scan_time"),
                                                    persons=request.persons))
        return gate_pb2.VerifyBatchResponse(reasons=list(r.reasons), ticket_ids=list(r.tickets),
                                            persons=list(r.persons))

    @rpc
    async def VerifyBatch(self, request, context):
        return await self._batch(request)

    async def VerifyStream(self, request_iterator, context):
        async for request in request_iterator:
            token = _call.set(_audit_info("GateService", "VerifyStream", request))
            try:
                yield await self._batch(request)
            except TurnstileError as e:
                await context.abort_with_status(errors.to_status(e))
            finally:
                _call.reset(token)


def _items(request_items) -> list[dict]:
    return [{"product": it.product_id, "slots": list(it.slot_ids), "qty": it.qty,
             "group": it.group or 1} for it in request_items]


def _priced(items: list[dict]) -> list[sales_pb2.PricedItem]:
    return [sales_pb2.PricedItem(product_id=it["product"], slot_ids=it["slots"], qty=it["qty"],
                                 group=it["group"], unit_price_fen=it["unit_price_fen"])
            for it in items]


class SalesService(sales_pb2_grpc.SalesServiceServicer):
    def __init__(self, node: ShardNode):
        self.node = node

    @rpc
    async def Quote(self, request, context):
        venue = self.node.venue(request.venue_id)
        channel = self.node.channel()
        st = self.node.shard.state
        out, total = [], 0
        for i, it in enumerate(request.items):
            p = st.products.get(it.product_id)
            if p is None or p.venue != venue:
                raise NotFound(f"no product {it.product_id!r} in venue {venue}",
                               field=f"items[{i}].product_id")
            group = it.group or 1
            if not 1 <= it.qty <= 10_000:
                raise InvalidArgument("must be between 1 and 10000", field=f"items[{i}].qty")
            price = p.price_for(channel)
            total += price * it.qty * group
            out.append(sales_pb2.PricedItem(product_id=p.id, slot_ids=list(it.slot_ids), qty=it.qty,
                                            group=group, unit_price_fen=price))
        return sales_pb2.QuoteResponse(items=out, amount_fen=total)

    @rpc
    async def Hold(self, request, context):
        venue = self.node.venue(request.venue_id)
        if not request.idempotency_key:
            raise InvalidArgument("every hold needs one (e.g. the cart id)", field="idempotency_key")
        h = await self.node.submit(cmd.hold(self.node.channel(), venue, _items(request.items),
                                            ttl_s=request.ttl_s or 900,
                                            idempotency_key=request.idempotency_key))
        return sales_pb2.HoldResponse(hold_id=h.hold_id, expires_at=_ts(h.expires_at),
                                      amount_fen=h.amount_fen, items=_priced(h.items))

    @rpc
    async def Confirm(self, request, context):
        pay = request.payment
        c = cmd.confirm(request.hold_id, request.order_id, self.node.channel(), method=pay.method,
                        amount_fen=pay.amount_fen, reference=pay.reference,
                        holders=[list(h.id_numbers) for h in request.holders] or None,
                        signed=not request.short_codes)
        if request.idempotency_key:
            c.idem = request.idempotency_key
        r = await self.node.submit(c)
        return sales_pb2.ConfirmResponse(order=_order(r.order), tickets=[_ticket(t) for t in r.tickets])

    @rpc
    async def Release(self, request, context):
        r = await self.node.submit(cmd.release(request.hold_id, self.node.channel(),
                                               idempotency_key=request.idempotency_key or None))
        return sales_pb2.ReleaseResponse(hold_id=r["hold_id"])

    @rpc
    async def Refund(self, request, context):
        order = self.node.order(request.order_id)
        c = cmd.refund(order.order_id, request.refund_id, list(request.ticket_ids), channel=order.channel)
        if request.idempotency_key:
            c.idem = request.idempotency_key
        r = await self.node.submit(c)
        return sales_pb2.RefundResponse(order_id=r.order_id, refund_id=r.refund_id,
                                        ticket_ids=r.tickets, amount_fen=r.amount_fen, fee_fen=r.fee_fen)

    @rpc
    async def GetOrder(self, request, context):
        order = self.node.order(request.order_id)
        codes = self.node.shard.order_codes(order.order_id)
        msg = _order(order)
        for tid, code in zip(order.ticket_ids(), codes):
            line = next(ln for ln in order.lines
                        if ln["first_ticket"] <= tid < ln["first_ticket"] + ln["qty"] * ln["ncomp"])
            msg.tickets.append(sales_pb2.Ticket(ticket_id=tid, product_id=line["product"],
                                                persons=line["group"], code=code))
        return msg


def _ticket(t) -> sales_pb2.Ticket:
    return sales_pb2.Ticket(ticket_id=t.ticket_id, product_id=t.product, persons=t.persons,
                            code=t.code, holder=t.holder)


def _order(o) -> sales_pb2.Order:
    return sales_pb2.Order(
        order_id=o.order_id, channel=o.channel, venue_id=o.venue, hold_id=o.hold_id,
        amount_fen=o.amount_fen, refunded_fen=o.refunded_fen,
        payment=sales_pb2.Payment(method=o.payment["method"], reference=o.payment["reference"],
                                  amount_fen=o.payment["amount_fen"]),
        lines=[sales_pb2.OrderLine(product_id=ln["product"], slot_ids=ln["slots"], qty=ln["qty"],
                                   group=ln["group"], unit_price_fen=ln["unit_price_fen"])
               for ln in o.lines],
        refunds=[sales_pb2.OrderRefund(refund_id=r["refund_id"], ticket_ids=r["tickets"],
                                       amount_fen=r["amount_fen"], fee_fen=r["fee_fen"], at=_ts(r["at"]))
                 for r in o.refunds],
        created=_ts(o.created))


class InventoryService(inventory_pb2_grpc.InventoryServiceServicer):
    def __init__(self, node: ShardNode):
        self.node = node

    @rpc
    async def Availability(self, request, context):
        venue = self.node.venue(request.venue_id)
        try:
            lo = to_day(request.date_from)
            hi = to_day(request.date_to) if request.date_to else lo
        except ValueError:
            raise InvalidArgument("dates are YYYY-MM-DD", field="date_from") from None
        if hi - lo > 366:
            raise InvalidArgument("at most 366 days at once", field="date_to")
        p = auth.current()
        mine = p.channel if p.role in ("seller", "channel") else None
        out = []
        for row in self.node.shard.availability(venue, lo, hi, channel=self.node.channel()):
            if request.zone_id and row["zone"] != request.zone_id:
                continue
            allots = [inventory_pb2.AllotmentStock(channel=ch, capacity=a["capacity"], sold=a["sold"],
                                                   held=a["held"], remaining=a["remaining"])
                      for ch, a in sorted(row["allotments"].items()) if mine is None or ch == mine]
            out.append(inventory_pb2.SlotStock(
                slot_id=row["slot"], zone_id=row["zone"], date=day_to_date(row["day"]).isoformat(),
                start=_ts(row["start"]), end=_ts(row["end"]), capacity=row["capacity"],
                sold=row["sold"], held=row["held"], remaining=row["remaining"],
                pool_remaining=row["pool_remaining"], allotments=allots))
        return inventory_pb2.AvailabilityResponse(slots=out)


class AdminService(admin_pb2_grpc.AdminServiceServicer):
    """The shard map and the audit log for now; set-up and keys follow."""

    def __init__(self, node: ShardNode):
        self.node = node

    @rpc
    async def QueryAudit(self, request, context):
        limit = min(request.limit or 100, 1000)
        recs = self.node.shard.audit_records(request.after_seq, limit, request.principal_id or None)
        return admin_pb2.QueryAuditResponse(records=[admin_pb2.AuditRecord(
            seq=r["seq"], at=_ts(r["at"]), principal_id=r["principal"], method=r["method"],
            request_digest=r["digest"], result=r["result"], prev_hash=r["prev"], hash=r["hash"])
            for r in recs])

    @rpc
    async def VerifyAudit(self, request, context):
        ok, checked, bad = self.node.shard.verify_audit()
        return admin_pb2.VerifyAuditResponse(ok=ok, checked=checked, first_bad_seq=bad)

    @rpc
    async def GetShardMap(self, request, context):
        return admin_pb2.ShardMap(
            shards=[admin_pb2.ShardEndpoint(shard=self.node.shard_id, address=self.node.address)],
            venues={v: self.node.shard_id for v in self.node.shard.state.venues}, version=1)
