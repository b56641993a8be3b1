"""gRPC services of one shard: GateService, SalesService, InventoryService and the
shard map of AdminService. Each handler checks the caller's scope, turns the
request into an engine command, submits it to the shard's group-commit writer and
turns the result into the response; an engine error becomes a gRPC status through
server/errors.py (the `rpc` decorator)."""
from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import sys
import time
from array import array
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from turnstile.engine import cmd, Shard, GroupCommit, TurnstileError, NotFound, InvalidArgument, AlreadyExists, \
    PermissionDenied, ShardUnavailable, EntryRule, ID_PATTERN, mask_id, to_day, day_to_date
from turnstile.engine.errors import NotPrimary, StandbyBehind
from turnstile.engine.model import DATE_TYPES, NEVER_EXPIRES, DatePrice, HoldInfo, OfflineBundle, PriceRule, PricedItem
from turnstile.v1 import (admin_pb2, admin_pb2_grpc, gate_pb2, gate_pb2_grpc, inventory_pb2,
                          inventory_pb2_grpc, member_pb2, member_pb2_grpc, report_pb2,
                          report_pb2_grpc, sales_pb2, sales_pb2_grpc)

from . import auth, errors, metrics

log = logging.getLogger(__name__)


# (principal, method, request digest) of the call being handled: every command it
# submits is audited with it
_call: contextvars.ContextVar[tuple[str, str, str]] = contextvars.ContextVar("turnstile_call")


def _audit_info(service: str, name: str, request,
                node: "ShardNode | None" = None) -> tuple[str, str, str]:
    # the digest is keyed by the shard (Shard.request_digest): a plain hash of a request
    # that carries an ID number would give it away to a few seconds of guessing. Without
    # the node no digest is recorded rather than an unkeyed one.
    digest = node.shard.request_digest(request.SerializeToString()) if node is not None else ""
    return auth.current().id, f"/turnstile.v1.{service}/{name}", digest


MIN_LEFT_S = 0.001      # a call that arrives with less time left is not started


# a standby's answers (replicated mode) carry these in their metadata (trailing; initial
# for server streams): the last batch of the log it holds, and how stale that may be in
# ms (since it last held every batch the log had; -1 before it first caught up)
STANDBY_BATCH_MD = "turnstile-standby-batch"
STANDBY_LAG_MD = "turnstile-standby-lag-ms"
MAX_LAG_MD = "turnstile-max-lag-ms"     # a reader's bound on a standby's lag (request metadata)


def rpc(fn=None, *, scans: bool = False):
    """Engine errors end the call with their gRPC status and google.rpc details; the
    call's commands are audited under its principal and method. `scans`: a method whose
    commands are scans, whose record is their journal record and never the audit log
    (Shard._stage), so no keyed digest of its request is made for nothing."""
    if fn is None:
        return functools.partial(rpc, scans=scans)

    @functools.wraps(fn)
    async def wrapper(self, request, context):
        left = context.time_remaining()
        if left is not None and left < MIN_LEFT_S:
            # it can't be answered in time (a commit alone takes longer): not applied at all,
            # rather than applied with its answer lost (grpc's timers are coarser than 1 ms)
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed before the call ran")
        info = _audit_info(type(self).__name__, fn.__name__, request, None if scans else self.node)
        token = _call.set(info)
        metrics.note(info[0])
        try:
            if self.node.standby is not None:
                context.set_trailing_metadata(self.node.standby_metadata(context))
            return await fn(self, request, context)
        except TurnstileError as e:
            e.field = proto_path(fn.__name__, e.field)
            metrics.note(reason=e.code)
            await context.abort_with_status(errors.to_status(e))
        finally:
            _call.reset(token)
    return wrapper


# The engine names a command's fields in its own words (product, slots, at...); an
# error names the request field by its proto path (items[0].product_id, scan_time...).
_FIELDS = {"venue": "venue_id", "zone": "zone_id", "zones": "zone_ids", "gate": "gate_id",
           "gates": "gate_ids", "product": "product_id", "slot": "slot_id", "slots": "slot_ids",
           "tickets": "ticket_ids", "at": "scan_time", "seq": "sequence", "day_to": "date_to",
           "day_from": "date_from", "day": "date", "shift": "shift_id", "station": "station_id",
           "member": "member_id", "seats": "seat_ids", "seat_map": "seat_map_id"}
_FIELDS_OF = {   # where a method's request says it otherwise
    "CreateVenue": {"id": "venue_id"}, "CreateZone": {"id": "zone_id"},
    "CreateGate": {"id": "gate_id"}, "CreateProduct": {"id": "product_id"},
    "CreateSlots": {"slots": "slots", "id": "slot_id"},
    "ImportStatement": {"at": "at"},
    "SetFlowAlerts": {"rate": "entries_per_minute"},
    # the programme's fields are the request's program.*
    "SetSeatMap": {"id": "seat_map_id", "zones": "zones", "zone": "zone"},
    "SetMerchant": {"id": "merchant_id", "stations": "station_ids"},
    "SetMemberProgram": {k: f"program.{v}" for k, v in (
        ("venue", "venue_id"), ("levels", "levels"), ("period_days", "period_days"), ("earn", "earn"),
        ("expiry", "expiry"), ("expiry_n", "expiry_n"), ("fen_per_point", "fen_per_point"))},
}


# the engine's lists of lists that a request gives as a message per outer item: the
# engine's holders[i][k] is ConfirmRequest.holders[i].id_numbers[k]
_INNER = {"holders": "id_numbers"}


def proto_path(method: str, field: str | None) -> str | None:
    """The proto path of an engine error's field, for method's request."""
    if not field:
        return field
    names = _FIELDS_OF.get(method, {})
    out = []
    for part in field.split("."):
        name, bracket, rest = part.partition("[")
        if name in _INNER and rest.count("[") == 1:          # "i][k]"
            i, _, k = rest.partition("][")
            rest = f"{i}].{_INNER[name]}[{k}"
        name = names.get(name, _FIELDS.get(name, name))
        out.append(name + bracket + rest)
    return ".".join(out)


_TS_MIN, _TS_MAX = -62135596800, 253402300799     # 0001-01-01 .. 9999-12-31 (Timestamp's range)


def _seconds(ts, field: str) -> int:
    """A request Timestamp as UTC seconds; an invalid one is INVALID_ARGUMENT."""
    if not 0 <= ts.nanos <= 999_999_999 or not _TS_MIN <= ts.seconds <= _TS_MAX:
        raise InvalidArgument("not a valid Timestamp (seconds within years 1-9999, nanos "
                              "0..999999999)", field=field)
    return ts.seconds


def _id(value: str, field: str) -> str:
    """An id from a request: 1-64 letters, digits or ._:@/-. Checked before it goes
    anywhere (a store lookup, an error message)."""
    if not ID_PATTERN.match(value):
        raise InvalidArgument("must be 1-64 letters, digits or ._:@/-, starting with a letter "
                              "or digit" if value else "is required", field=field)
    return value


def _ts(seconds: int) -> Timestamp:
    return Timestamp(seconds=seconds)


def _le(values: array) -> bytes:
    """An array's values as packed little-endian bytes (PackedVerifyResponse)."""
    if sys.byteorder == "big":
        values = array(values.typecode, values)
        values.byteswap()
    return values.tobytes()


class ShardNode:
    """One shard as served: the shard, its writer, and its address."""

    metrics: metrics.NullMetrics = metrics.NULL     # server/metrics.py: ShardMetrics to count

    def __init__(self, shard: Shard, writer: GroupCommit, store, address: str = "",
                 moved: frozenset[str] = frozenset(), *, scan_skew_s: int = 300,
                 offline_window_s: int = 7 * 86400, gate_heartbeat_s: int = 10,
                 gate_down_after_s: int = 30):
        self.scan_skew_s = scan_skew_s
        self.offline_window_s = offline_window_s
        self.gate_heartbeat_s = gate_heartbeat_s
        shard.board.gate_down_after_s = gate_down_after_s
        # (principal id, gate id, venue id) -> (venue, gate) of gates a caller scanned at;
        # cleared when a gate is created (an id may then name gates of two venues)
        self._gates: dict[tuple, tuple[str, str]] = {}
        self.shard = shard
        self.writer = writer
        self.store = store
        self.ownership = None           # replicated mode: this shard's Ownership (etcd)
        # replicated mode, while this process is the shard's standby: its Follower. Reads
        # are answered (with the lag stated: standby_metadata), every write is NOT_PRIMARY
        self.standby = None
        self.address = address
        self.shard_id = shard.shard_id
        # venues this shard still holds but the map routes elsewhere (`turnstile shards
        # move` leaves the old catalog behind): served as absent
        self.moved = moved
        # set when the shard starts to stop: live streams end then (SHARD_UNAVAILABLE, a
        # watcher watches again) rather than hold the stop for its whole grace
        self.stopping = asyncio.Event()

    async def submit(self, command) -> Any:
        """Apply a command through group commit, audited under the current call. If the
        call is cancelled (deadline, client gone) before its batch, it is not applied."""
        if self.standby is not None:        # the scan path pays one attribute test
            self.writable()
        command.audit = _call.get(None)
        return await self.writer.submit(command)

    def writable(self) -> None:
        """NotPrimary while this node is the shard's standby (it serves reads only)."""
        if self.standby is not None:
            raise NotPrimary(f"shard {self.shard_id}: this node is its standby and serves reads only",
                             hint="route by the shard map (AdminService.GetShardMap) and ask again")

    def standby_metadata(self, context) -> tuple[tuple[str, str], ...]:
        """What a standby's answers carry: the last batch it holds and how stale it may be
        (ms since it last had every batch the log held; STANDBY_LAG_MD). StandbyBehind,
        nothing read, if the call bounds the lag (MAX_LAG_MD) below that -- or at all
        before the standby caught up with the log; InvalidArgument for a bound that is
        not a number of ms."""
        f = self.standby
        if f is None:
            return ()
        lag = max(0, int((time.time() - f.as_of) * 1000)) if f.as_of else -1
        bound = next((v for k, v in context.invocation_metadata() or () if k == MAX_LAG_MD), None)
        if bound is not None:
            if not bound.isdigit() or len(bound) > 9:
                raise InvalidArgument(f"metadata {MAX_LAG_MD} must be a number of milliseconds "
                                      f"(0 to 999999999)")
            if lag < 0 or lag > int(bound):
                raise StandbyBehind(
                    f"shard {self.shard_id}: this standby's answer may be {lag} ms stale, over the "
                    f"{bound} ms asked" if lag >= 0 else
                    f"shard {self.shard_id}: this standby has not caught up with its log yet",
                    hint="ask the primary (the shard map names it), or another standby")
        return ((STANDBY_BATCH_MD, str(self.shard.seq)), (STANDBY_LAG_MD, str(lag)))

    # scope checks ------------------------------------------------------------------
    def venue(self, venue_id: str, field: str = "venue_id") -> str:
        p = auth.current()
        _id(venue_id, field)
        if not self.shard.has_venue(venue_id) or venue_id in self.moved:
            home = self.store.venue_shard(venue_id)
            if home is None or home == self.shard_id:
                raise NotFound(f"no venue {venue_id!r}", field=field)
            raise NotFound(f"no venue {venue_id!r} on shard {self.shard_id}; it is on shard {home}",
                           field=field, hint="route by the shard map (AdminService.GetShardMap)")
        if not p.may_use_venue(venue_id):
            raise PermissionDenied(f"{p.id} may not act on venue {venue_id}", field=field)
        return venue_id

    def gate(self, gate_id: str, venue_id: str = "", field: str = "gate_id") -> tuple[str, str]:
        """(venue, gate) of a gate the caller may scan at. Gate ids are unique within
        their venue: without a venue, the one venue of the caller's that has it."""
        p = auth.current()
        hit = self._gates.get((p.id, gate_id, venue_id))     # principals never change
        if hit is not None:
            return hit
        _id(gate_id, field)
        if venue_id:
            venue_id = self.venue(venue_id)
            venues = [venue_id] if venue_id in self.shard.venues_with("gate", gate_id) else []
        else:
            venues = [v for v in self.shard.venues_with("gate", gate_id)
                      if p.may_use_venue(v) and v not in self.moved]
        if not venues:
            raise NotFound(f"no gate {gate_id} in the venues of {p.id} on shard {self.shard_id}",
                           field=field)
        if len(venues) > 1:
            raise InvalidArgument(f"gate {gate_id} is in {len(venues)} of your venues: set venue_id",
                                  field="venue_id")
        if not p.may_use_gate(gate_id) or (
                p.role == "merchant" and self.shard.gate_merchant(venues[0], gate_id) != p.channel):
            # a merchant's terminals are the gates of the zones it runs, no others
            raise PermissionDenied(f"{p.id} may not scan at gate {gate_id}", field=field)
        key = self._gates[(p.id, gate_id, venue_id)] = (venues[0], gate_id)
        if len(self._gates) > 10_000:
            self._gates.clear()
        return key

    def forget_gates(self) -> None:
        """Resolve gates afresh (a new gate may share its id with another venue's)."""
        self._gates.clear()

    def scan_time(self, request, venue: str) -> int | None:
        """When an online scan is decided: the server's now, or the caller's scan_time
        if that is within the allowed skew of it and on the same venue-local day (a
        gate's clock never moves a scan to another day); else INVALID_ARGUMENT."""
        if not request.HasField("scan_time"):
            return None
        at = _seconds(request.scan_time, "scan_time")
        now = int(self.shard.clock())
        if abs(at - now) > self.scan_skew_s:
            raise InvalidArgument(f"more than {self.scan_skew_s} s from the server's clock "
                                  "(online scans are decided at the server's time)", field="scan_time")
        offset = self.shard.venue_offset(venue)
        if (at + offset) // 86400 != (now + offset) // 86400:
            # a gate's clock never moves a scan to another day: not forward (a used pass
            # admitted "tomorrow"), not back (a pass used today admitted "yesterday")
            raise InvalidArgument("on another venue-local day than the server's clock",
                                  field="scan_time")
        return at

    def channel(self) -> str:
        p = auth.current()
        return p.channel or p.role          # an admin sells as "admin"

    def order(self, order_id: str, channel: str = ""):
        """An order of `channel` (order ids are the channel's own), if the caller may see
        it: a seller or channel only its own channel's, anyone only its venues'."""
        p = auth.current()
        _id(order_id, "order_id")
        if channel:
            _id(channel, "channel")
        if p.role in auth.SELLS_AS_CHANNEL:
            if channel and channel != p.channel:
                raise NotFound(f"no order {order_id} of channel {channel}", field="order_id")
            channel = p.channel
        elif not channel:
            if p.role != "admin":
                raise InvalidArgument("order ids are the channel's own: name the channel",
                                      field="channel")
            channel = self.channel()
        _id(channel, "channel")
        order = self.shard.get_order(order_id, channel)
        if not p.may_use_venue(order.venue):
            raise NotFound(f"no order {order_id} of channel {channel}", field="order_id")
        return order

    def hold(self, hold_id: int, *, known: bool = True) -> HoldInfo | None:
        """A hold the caller may act on: its channel's own, in its venues. With
        known=False, a hold the shard has no record of is left to the command to refuse."""
        p = auth.current()
        try:
            h = self.shard.hold_info(hold_id)
        except NotFound:
            if known:
                raise
            return None
        if p.role != "admin" and h.channel != self.channel() or not p.may_use_venue(h.venue):
            raise NotFound(f"no hold {hold_id}", field="hold_id")
        return h


class GateService(gate_pb2_grpc.GateServiceServicer):
    def __init__(self, node: ShardNode):
        self.node = node

    @rpc(scans=True)
    async def Verify(self, request, context):
        gate = self.node.gate(request.gate_id, request.venue_id)
        at = self.node.scan_time(request, gate[0])
        kind = request.WhichOneof("credential")
        scan_id = request.scan_id or None
        if kind == "code":
            c = cmd.verify(request.code, gate, request.direction, at=at, persons=request.persons,
                           scan_id=scan_id)
        elif kind == "id_number":
            c = cmd.verify_holder(request.id_number, gate, request.direction, at=at,
                                  persons=request.persons, scan_id=scan_id)
        elif kind == "face_token":
            c = cmd.verify_face(request.face_token, gate, request.direction, at=at,
                                persons=request.persons, scan_id=scan_id)
        else:
            raise InvalidArgument("a code, an ID number or a face token is required",
                                  field="credential")
        r = await self.node.submit(c)
        self.node.metrics.scan(r.reason)
        shard = self.node.shard
        return gate_pb2.VerifyResponse(reason=int(r.reason), ticket_id=r.ticket, persons=r.persons,
                                       product_id=shard.product_of(r.ticket), shard=self.node.shard_id,
                                       seat=shard.seat_of(r.ticket))

    def _batch_gates(self, request) -> tuple[Any, int | None]:
        """(gates, scan time) of a batch request (VerifyBatchRequest, PackedVerifyRequest):
        one gate, or a list of one per code."""
        if request.gate_ids:
            if request.gate_id:
                raise InvalidArgument("one gate for every code, or gate_ids: not both", field="gate_id")
            gates: Any = [self.node.gate(g, request.venue_id, f"gate_ids[{i}]")
                          for i, g in enumerate(request.gate_ids)]
        else:
            gates = self.node.gate(request.gate_id, request.venue_id)
        return gates, self.node.scan_time(request, (gates[0] if request.gate_ids else gates)[0])

    async def _batch(self, request) -> gate_pb2.VerifyBatchResponse:
        gates, at = self._batch_gates(request)
        r = await self.node.submit(cmd.verify_batch(list(request.codes), gates, request.direction,
                                                    at=at, persons=request.persons,
                                                    batch_id=request.batch_id or None))
        self.node.metrics.scans(r.reasons)
        return gate_pb2.VerifyBatchResponse(reasons=list(r.reasons), ticket_ids=list(r.tickets),
                                            persons=list(r.persons))

    async def _packed(self, request) -> gate_pb2.PackedVerifyResponse:
        """A packed batch: the buffer goes to the core as it came, and the answers come
        back as the core's arrays' bytes (no object per code on either way)."""
        gates, at = self._batch_gates(request)
        r = await self.node.submit(cmd.verify_packed(request.codes, request.code_size, gates,
                                                     request.direction, at=at,
                                                     persons=request.persons,
                                                     batch_id=request.batch_id or None))
        self.node.metrics.scans(r.reasons)
        return gate_pb2.PackedVerifyResponse(reasons=r.reasons, ticket_ids=_le(r.tickets),
                                             persons=_le(r.persons))

    @rpc(scans=True)
    async def VerifyBatch(self, request, context):
        return await self._batch(request)

    STREAM_AHEAD = 16

    async def VerifyStream(self, request_iterator, context):
        async for answer in self._stream(request_iterator, context, "VerifyStream", "VerifyBatch",
                                         self._batch):
            yield answer

    async def VerifyPacked(self, request_iterator, context):
        async for answer in self._stream(request_iterator, context, "VerifyPacked", "VerifyPacked",
                                         self._packed):
            yield answer

    async def _stream(self, request_iterator, context, method: str, path: str,
                      handle: Callable[[Any], Awaitable[Any]]):
        """A stream of batches, each answered by `handle`. Requests are read ahead while
        earlier batches commit (up to STREAM_AHEAD in flight per stream), so one
        concentrator's stream is not bound by one commit round trip per batch; answers
        go back in request order. `path` names the request message in errors."""
        ahead: asyncio.Queue = asyncio.Queue(maxsize=self.STREAM_AHEAD)
        metrics.note(auth.current().id)
        # the commands of a scan stream are scans, whose record is their journal record,
        # never the audit log (Shard._stage): no request digest, the keyed hash of every
        # batch (a tenth of the shard's CPU under a packed stream) would be spent for nothing
        info = _audit_info("GateService", method, None)

        async def read() -> None:
            try:
                async for request in request_iterator:
                    token = _call.set(info)
                    try:
                        # submits in request order: a task's first step runs in FIFO order
                        task = asyncio.ensure_future(handle(request))
                    finally:
                        _call.reset(token)
                    await ahead.put(task)
            finally:
                await ahead.put(None)

        reader = asyncio.ensure_future(read())
        try:
            while (task := await ahead.get()) is not None:
                try:
                    yield await task
                except TurnstileError as e:
                    e.field = proto_path(path, e.field)
                    metrics.note(reason=e.code)
                    await context.abort_with_status(errors.to_status(e))
            await reader                # a broken request stream ends the call with its error
        finally:
            reader.cancel()
            while not ahead.empty():
                t = ahead.get_nowait()
                if t is not None:
                    t.cancel()          # not yet in a batch: not applied

    @rpc
    async def OfflineBundle(self, request, context):
        venue = self.node.venue(request.venue_id)
        return bundle_message(self.node.shard.offline_bundle(venue, request.since_epoch,
                                                             request.since_version))

    @rpc
    async def UploadScans(self, request, context):
        venue, gate = self.node.gate(request.gate_id, request.venue_id)
        now = self.node.shard.clock()
        scans = []
        for i, s in enumerate(request.scans):
            # facts, at the gate's times: but never from the future, nor older than the
            # offline window
            field = f"scans[{i}].scan_time"
            if not s.HasField("scan_time"):
                raise InvalidArgument("is required", field=field)
            at = _seconds(s.scan_time, field)
            if not now - self.node.offline_window_s <= at <= now + self.node.scan_skew_s:
                raise InvalidArgument(f"outside the offline window ({self.node.offline_window_s} s "
                                      f"back, {self.node.scan_skew_s} s ahead of the server's clock)",
                                      field=field)
            scans.append({"nonce": s.nonce, "seq": s.sequence, "code": s.code,
                          "direction": s.direction, "at": at,
                          "persons": s.persons, "admitted": s.admitted, "reason": s.reason})
        results = await self.node.submit(cmd.offline_scans(gate, scans, venue=venue))
        self.node.metrics.uploads(r.status for r in results)
        return gate_pb2.UploadScansResponse(results=[
            gate_pb2.UploadResult(nonce=r.nonce, status=gate_pb2.UploadStatus.Value(r.status),
                                  reason=r.reason, ticket_id=r.ticket_id, persons=r.persons)
            for r in results])


    @rpc
    async def Heartbeat(self, request, context):
        self.node.writable()            # a gate's liveness is the primary's to keep
        venue, gate = self.node.gate(request.gate_id, request.venue_id)
        times = {name: _seconds(getattr(request, name), name) if request.HasField(name) else 0
                 for name in ("bundle_cut_at", "last_scan")}
        closed = self.node.shard.heartbeat(venue, gate, offline=request.offline,
                                           queued=request.queued_scans, version=request.version,
                                           **times)
        return gate_pb2.HeartbeatResponse(interval_s=self.node.gate_heartbeat_s, entry_closed=closed)


def bundle_message(b: OfflineBundle) -> gate_pb2.OfflineBundleResponse:
    """Shard.offline_bundle() as the GateService.OfflineBundle answer."""
    return gate_pb2.OfflineBundleResponse(
        venue_id=b.venue, shard=b.shard, day=b.day, epoch=b.epoch, version=b.version,
        full=b.full, cut_at=_ts(b.cut_at), utc_offset_s=b.utc_offset_s,
        public_keys=b.public_keys,
        zones=[gate_pb2.BundleZone(zone_id=z.id, enforce_exit=z.enforce_exit,
                                   entry_closed=z.entry_closed, once=z.once) for z in b.zones],
        gates=[gate_pb2.BundleGate(gate_id=g.id, zone_id=g.zone, mode=g.mode,
                                   entry_closed=g.entry_closed) for g in b.gates],
        products=[gate_pb2.BundleProduct(
            index=p.index, product_id=p.id, zone_ids=p.zones, max_entries=p.max_entries,
            daily_entries=p.daily_entries, reentry=p.reentry, slot_grace_s=p.slot_grace_s)
            for p in b.products],
        slots=[gate_pb2.BundleSlot(index=s.index, slot_id=s.id, zone_id=s.zone, day=s.day,
                                   start=_ts(s.start), end=_ts(s.end))
               for s in b.slots],
        sets=gate_pb2.TicketSets(**{name: bm.serialize() for name, bm in b.sets.items()
                                    if bm is not None}))


def _items(request_items) -> list[dict]:
    out = []
    for it in request_items:
        d = {"product": it.product_id, "slots": list(it.slot_ids), "qty": it.qty, "group": it.group or 1}
        if it.seat_ids:                 # named seats: qty 0 or as many
            d["seats"] = list(it.seat_ids)
            d["qty"] = it.qty or len(it.seat_ids)
        out.append(d)
    return out


def _priced(items: list[PricedItem]) -> list[sales_pb2.PricedItem]:
    return [sales_pb2.PricedItem(product_id=it.product, slot_ids=it.slots, qty=it.qty,
                                 group=it.group, unit_price_fen=it.unit_price_fen, seat_ids=it.seats)
            for it in items]


class SalesService(sales_pb2_grpc.SalesServiceServicer):
    def __init__(self, node: ShardNode):
        self.node = node

    @rpc
    async def Quote(self, request, context):
        venue = self.node.venue(request.venue_id)
        q = self.node.shard.quote(venue, self.node.channel(), _items(request.items),
                                  coupon=request.coupon or None,
                                  coupon_holder=request.coupon_holder or None,
                                  member=request.member_id or None, points=request.points)
        c = q.coupon
        return sales_pb2.QuoteResponse(
            items=_priced(q.items), amount_fen=q.amount_fen, quote_id=q.quote_id,
            expires_at=_ts(q.expires_at), lines=[sales_pb2.QuoteLine(
                product_id=ln.product, date_type=ln.date_type, base_price_fen=ln.base_price_fen,
                rules=[sales_pb2.AppliedRule(rule=r.rule, amount_fen=r.amount_fen) for r in ln.rules],
                unit_price_fen=ln.unit_price_fen) for ln in q.lines],
            coupon=sales_pb2.CouponApplied(coupon_id=c.coupon, kind=c.kind, discount_fen=c.discount_fen)
            if c else None, points=q.points, points_fen=q.points_fen)

    @rpc
    async def Hold(self, request, context):
        venue = self.node.venue(request.venue_id)
        if not request.idempotency_key:
            raise InvalidArgument("every hold needs one (e.g. the cart id)", field="idempotency_key")
        quote = _quote_id(request)
        h = await self.node.submit(cmd.hold(self.node.channel(), venue, _items(request.items),
                                            ttl_s=request.ttl_s or 900,
                                            idempotency_key=request.idempotency_key,
                                            quote_id=quote,
                                            coupon=request.coupon or None,
                                            coupon_holder=request.coupon_holder or None,
                                            member=request.member_id, points=request.points))
        self.node.metrics.hold()
        return sales_pb2.HoldResponse(hold_id=h.hold_id, expires_at=_ts(h.expires_at),
                                      amount_fen=h.amount_fen, items=_priced(h.items),
                                      coupon_id=h.coupon, discount_fen=h.discount_fen,
                                      points=h.points, points_fen=h.points_fen)

    @rpc
    async def Confirm(self, request, context):
        _id(request.order_id, "order_id")
        self.node.hold(request.hold_id, known=False)
        pay = request.payment
        c = cmd.confirm(request.hold_id, request.order_id, self.node.channel(), method=pay.method,
                        amount_fen=pay.amount_fen, reference=pay.reference,
                        holders=[list(h.id_numbers) for h in request.holders] or None,
                        signed=not request.short_codes, shift=request.shift_id,
                        principal=auth.current().id, member=request.member_id)
        if request.idempotency_key:
            c.idem = request.idempotency_key
        try:
            r = await self.node.submit(c)
        except TurnstileError as e:
            if e.field == "idempotency_key" and not request.idempotency_key:
                e.field = "order_id"            # the order id was the retry key
            raise
        self.node.metrics.sale()
        return _confirmed(r)

    @rpc
    async def Buy(self, request, context):
        venue = self.node.venue(request.venue_id)
        _id(request.order_id, "order_id")
        quote = _quote_id(request)
        pay = request.payment
        try:
            r = await self.node.submit(cmd.buy(
                self.node.channel(), venue, _items(request.items), request.order_id,
                method=pay.method, amount_fen=pay.amount_fen, reference=pay.reference,
                quote_id=quote, coupon=request.coupon or None,
                coupon_holder=request.coupon_holder or None,
                holders=[list(h.id_numbers) for h in request.holders] or None,
                signed=not request.short_codes, shift=request.shift_id,
                principal=auth.current().id, member=request.member_id, points=request.points))
        except TurnstileError as e:
            if e.field == "idempotency_key":
                e.field = "order_id"            # the order id is the retry key
            raise
        self.node.metrics.hold()
        self.node.metrics.sale()
        return _confirmed(r)

    @rpc
    async def Release(self, request, context):
        self.node.hold(request.hold_id, known=False)
        r = await self.node.submit(cmd.release(request.hold_id, self.node.channel(),
                                               idempotency_key=request.idempotency_key or None))
        return sales_pb2.ReleaseResponse(hold_id=r.hold_id)

    @rpc
    async def Refund(self, request, context):
        _id(request.refund_id, "refund_id")
        order = self.node.order(request.order_id, request.channel)
        c = cmd.refund(order.order_id, request.refund_id, list(request.ticket_ids), channel=order.channel,
                       persons=request.persons, shift=request.shift_id, principal=auth.current().id)
        if request.idempotency_key:
            c.idem = request.idempotency_key
        r = await self.node.submit(c)
        self.node.metrics.refund()
        return sales_pb2.RefundResponse(order_id=r.order_id, refund_id=r.refund_id,
                                        ticket_ids=r.tickets, amount_fen=r.amount_fen, fee_fen=r.fee_fen,
                                        persons=r.persons, points_reversed=r.points_reversed,
                                        points_restored=r.points_restored)

    @rpc
    async def Change(self, request, context):
        _id(request.change_id, "change_id")
        order = self.node.order(request.order_id, request.channel)
        slots, tickets = list(request.slot_ids), list(request.ticket_ids)
        if not slots:
            raise InvalidArgument("is required: one slot per zone of the product", field="slot_ids")
        for i, s in enumerate(slots):
            _id(s, f"slot_ids[{i}]")
        if request.preview:
            t = self.node.shard.change_terms(order.order_id, request.change_id, slots, tickets,
                                             channel=order.channel)
            return _change_msg(t, [])
        pay = request.payment if request.HasField("payment") else None
        c = cmd.change(order.order_id, request.change_id, slots, tickets, channel=order.channel,
                       method=pay.method if pay else "", reference=pay.reference if pay else "",
                       amount_fen=pay.amount_fen if pay else None, shift=request.shift_id,
                       principal=auth.current().id)
        if request.idempotency_key:
            c.idem = request.idempotency_key
        r = await self.node.submit(c)
        return _change_msg(r.terms, [_ticket(t) for t in r.new_tickets])

    @rpc
    async def GetOrder(self, request, context):
        order = self.node.order(request.order_id, request.channel)
        order, tickets = self.node.shard.order_tickets(order.order_id, order.channel)
        msg = _order(order)
        msg.tickets.extend(sales_pb2.Ticket(
            ticket_id=t.ticket_id, product_id=t.product, persons=t.persons, code=t.code,
            holder=t.holder, state=sales_pb2.TicketState.Value("TICKET_" + t.state.upper()),
            entries_left=t.entries_left, seat=self.node.shard.seat_of(t.ticket_id)) for t in tickets)
        return msg

    @rpc
    async def GetHold(self, request, context):
        h = self.node.hold(request.hold_id)
        return sales_pb2.HoldInfo(
            hold_id=h.hold_id, status=sales_pb2.HoldStatus.Value("HOLD_" + h.status.upper()),
            expires_at=_ts(h.expires_at), amount_fen=h.amount_fen, items=_priced(h.items),
            order_id=h.order_id, venue_id=h.venue)

    # cash-desk shifts: a shift is its opener's (the principal that sells into it)
    @rpc
    async def OpenShift(self, request, context):
        venue = self.node.venue(request.venue_id)
        _id(request.station_id, "station_id")
        _id(request.shift_id, "shift_id")
        c = cmd.open_shift(venue, request.station_id, request.shift_id, cashier=request.cashier,
                           float_fen=request.float_fen, principal=auth.current().id,
                           channel=self.node.channel(), idempotency_key=request.idempotency_key or None)
        return _shift_msg(await self.node.submit(c))

    @rpc
    async def CloseShift(self, request, context):
        venue = self.node.venue(request.venue_id)
        _id(request.shift_id, "shift_id")
        c = cmd.close_shift(venue, request.shift_id, request.counted_cash_fen,
                            principal=auth.current().id, idempotency_key=request.idempotency_key or None)
        return _shift_msg(await self.node.submit(c))

    @rpc
    async def GetShift(self, request, context):
        venue = self.node.venue(request.venue_id)
        _id(request.shift_id, "shift_id")
        sh = self.node.shard.shift(venue, request.shift_id)
        p = auth.current()
        if p.role in auth.SELLS_AS_CHANNEL and sh["principal"] != p.id:
            raise NotFound(f"no shift {request.shift_id} of this caller", field="shift_id")
        return _shift_msg(sh)


def _shift_msg(sh: dict) -> sales_pb2.Shift:
    return sales_pb2.Shift(
        venue_id=sh["venue"], shift_id=sh["shift"], station_id=sh["station"], cashier=sh["cashier"],
        principal=sh["principal"], opened=_ts(sh["opened"]),
        closed=_ts(sh["closed"]) if sh["closed"] else None, float_fen=sh["float_fen"],
        methods=[sales_pb2.ShiftMethod(method=m, sales=a, sales_fen=b, refunds=c, refunds_fen=d)
                 for m, a, b, c, d in sh["methods"]],
        cash_expected_fen=sh["cash_expected_fen"], counted_cash_fen=sh["counted_cash_fen"],
        over_short_fen=sh["over_short_fen"], net_fen=sh["net_fen"], open=sh["open"])


def _ticket(t) -> sales_pb2.Ticket:
    return sales_pb2.Ticket(ticket_id=t.ticket_id, product_id=t.product, persons=t.persons,
                            code=t.code, holder=t.holder, state=sales_pb2.TICKET_ISSUED, seat=t.seat)


def _payment(p: dict) -> sales_pb2.Payment:
    return sales_pb2.Payment(method=p["method"], reference=p["reference"], amount_fen=p["amount_fen"])


def _quote_id(request) -> str | None:
    """A Hold's or Buy's quote id (None: the prices now); one far too long to be one is
    refused before it goes anywhere."""
    if len(request.quote_id) > 128:
        raise InvalidArgument("not a quote id (SalesService.Quote's quote_id)", field="quote_id")
    return request.quote_id or None


def _confirmed(r) -> sales_pb2.ConfirmResponse:
    """An order just paid (Confirm, Buy) and its tickets."""
    return sales_pb2.ConfirmResponse(order=_order(r.order), tickets=[_ticket(t) for t in r.tickets])


def _order(o) -> sales_pb2.Order:
    return sales_pb2.Order(
        order_id=o.order_id, channel=o.channel, venue_id=o.venue, hold_id=o.hold_id,
        amount_fen=o.amount_fen, refunded_fen=o.refunded_fen, payment=_payment(o.payment),
        lines=[sales_pb2.OrderLine(product_id=ln["product"], slot_ids=ln["slots"], qty=ln["qty"],
                                   group=ln["group"], unit_price_fen=ln["unit_price_fen"],
                                   discount_fen=ln.get("discount_fen", 0), seat_ids=ln.get("seats", ()),
                                   split=[sales_pb2.SplitPart(part=p, merchant=m, amount_fen=f)
                                          for p, m, f in ln.get("split", ())])
               for ln in o.lines],
        refunds=[_refund_msg(r) for r in o.refunds],
        created=_ts(o.created), coupon_id=o.coupon, discount_fen=o.discount_fen,
        station_id=o.station, shift_id=o.shift, status=o.status,
        changes=[_change_entry_msg(c) for c in o.changes], member_id=o.member,
        points_earned=o.points_earned, points_redeemed=o.points_redeemed)


def _change_msg(t, tickets: list) -> sales_pb2.ChangeResponse:
    return sales_pb2.ChangeResponse(
        order_id=t.order_id, change_id=t.change_id, product_id=t.product, ticket_ids=t.tickets,
        slot_ids=t.slots, unit_price_fen=t.unit_price_fen, old_paid_fen=t.old_paid_fen,
        new_amount_fen=t.new_amount_fen, fee_fen=t.fee_fen, due_fen=t.due_fen, tickets=tickets)


class InventoryService(inventory_pb2_grpc.InventoryServiceServicer):
    def __init__(self, node: ShardNode):
        self.node = node

    @rpc
    async def Availability(self, request, context):
        venue = self.node.venue(request.venue_id)
        if request.zone_id:
            _id(request.zone_id, "zone_id")
        lo, hi = _date_range(request)
        p = auth.current()
        mine = p.channel if p.role in auth.SELLS_AS_CHANNEL else None
        out = []
        for row in self.node.shard.availability(venue, lo, hi, channel=self.node.channel()):
            if request.zone_id and row.zone != request.zone_id:
                continue
            allots = [inventory_pb2.AllotmentStock(channel=ch, capacity=a.capacity, sold=a.sold,
                                                   held=a.held, remaining=a.remaining)
                      for ch, a in sorted(row.allotments.items()) if mine is None or ch == mine]
            out.append(inventory_pb2.SlotStock(
                slot_id=row.slot, zone_id=row.zone, date=day_to_date(row.day).isoformat(),
                start=_ts(row.start), end=_ts(row.end), capacity=row.capacity,
                sold=row.sold, held=row.held, remaining=row.remaining,
                pool_remaining=row.pool_remaining, allotments=allots))
        return inventory_pb2.AvailabilityResponse(slots=out)

    @rpc
    async def SessionSeats(self, request, context):
        venue = self.node.venue(request.venue_id)
        _id(request.slot_id, "slot_id")
        m, seats = self.node.shard.session_seats(venue, request.slot_id)
        return inventory_pb2.SessionSeatsResponse(
            seat_map_id=m.id, zones=[inventory_pb2.SeatZone(zone=z.zone, name=z.name, price_fen=z.price_fen)
                                     for z in m.zones],
            seats=[inventory_pb2.Seat(seat_id=n, zone=z, state=state) for n, z, state in seats])


def _date_range(request) -> tuple[int, int]:
    """A request's date_from and date_to (default: date_from) as venue-local days, at
    most 367 days in all."""
    lo = _date(request.date_from, "date_from")
    hi = _date(request.date_to, "date_to") if request.date_to else lo
    if hi < lo:
        raise InvalidArgument("is before date_from", field="date_to")
    if hi - lo > 366:
        raise InvalidArgument("at most 367 days at once", field="date_to")
    return lo, hi


def _date(text: str, field: str) -> int:
    """A venue-local calendar day from YYYY-MM-DD."""
    try:
        if len(text) != 10:
            raise ValueError
        return to_day(text)
    except ValueError:
        raise InvalidArgument("must be a date YYYY-MM-DD", field=field) from None


def _venue_msg(v, shard: int) -> admin_pb2.Venue:
    return admin_pb2.Venue(venue_id=v.id, name=v.name, utc_offset_s=v.utc_offset_s, shard=shard)


def _zone_msg(z) -> admin_pb2.Zone:
    return admin_pb2.Zone(zone_id=z.id, venue_id=z.venue, name=z.name, live_capacity=z.live_capacity,
                          enforce_exit=z.enforce_exit)


def _gate_msg(g) -> admin_pb2.Gate:
    return admin_pb2.Gate(gate_id=g.id, venue_id=g.venue, zone_id=g.zone, mode=int(g.mode))


def _product_msg(p) -> admin_pb2.Product:
    r = p.rule
    return admin_pb2.Product(
        product_id=p.id, venue_id=p.venue, name=p.name, zone_ids=list(p.zones),
        rule=admin_pb2.EntryRule(max_entries=r.max_entries, daily_entries=r.daily_entries,
                                 reentry=r.reentry, valid_days=r.valid_days, slot_grace_s=r.slot_grace_s),
        price_fen=p.price_fen, channel_prices=p.channel_prices, channels=list(p.channels),
        real_name=p.real_name, max_group=p.max_group, refundable=p.refundable,
        refund_fee_pct=p.refund_fee_pct)


MAX_CALENDAR_DAYS = 3660        # days one SetCalendar may set (the engine's limit: ten years)


def _price_table_msg(t) -> admin_pb2.PriceTable:
    return admin_pb2.PriceTable(venue_id=t.venue, product_id=t.product, prices=[
        admin_pb2.DatePrice(date_type=p.date_type, channel=p.channel, price_fen=p.price_fen)
        for p in t.prices])


# a pricing rule's condition field by kind (admin.proto PriceRule); the others stay 0


def _price_rules_msg(r) -> admin_pb2.PriceRules:
    return admin_pb2.PriceRules(venue_id=r.venue, product_id=r.product, rules=[
        admin_pb2.PriceRule(kind=x.kind, amount_fen=x.amount_fen, pct=x.pct, cap_fen=x.cap_fen,
                            days_ahead=x.days_ahead, from_minute=x.from_minute, fill_pct=x.fill_pct,
                            member_level=x.member_level)
        for x in r.rules])


def _booking_msg(w) -> admin_pb2.BookingWindow:
    return admin_pb2.BookingWindow(venue_id=w.venue, product_id=w.product, opens_days=w.opens_days,
                                   closes_minutes=w.closes_minutes, weekdays=list(w.weekdays))


def _refund_policy_msg(pol) -> admin_pb2.RefundPolicy:
    return admin_pb2.RefundPolicy(venue_id=pol.venue, product_id=pol.product, tiers=[
        admin_pb2.RefundTier(before_minutes=t.before_minutes, fee_pct=t.fee_pct) for t in pol.tiers])


def _id_limits_msg(lim) -> admin_pb2.IdLimits:
    return admin_pb2.IdLimits(venue_id=lim.venue, product_id=lim.product, per_day=lim.per_day,
                              per_slot=lim.per_slot)


def _blacklist_msg(r) -> admin_pb2.BlacklistEntry:
    # r.holder is masked by the engine: the answer never carries the ID number
    return admin_pb2.BlacklistEntry(venue_id=r.venue, holder=r.holder, listed=r.listed,
                                    reason=r.reason, until=_ts(r.until) if r.until else None,
                                    ticket_ids=list(r.tickets))


def _day_text(day: int | None) -> str:
    return "" if day is None else day_to_date(day).isoformat()


def _pass_dates_msg(d) -> admin_pb2.PassDates:
    on = bool(d.valid_from or d.valid_to)
    return admin_pb2.PassDates(venue_id=d.venue, product_id=d.product,
                               valid_from=_day_text(d.valid_from) if on else "",
                               valid_to=_day_text(d.valid_to) if on else "")


def _package_msg(pkg) -> admin_pb2.PackageSplit:
    return admin_pb2.PackageSplit(venue_id=pkg.venue, product_id=pkg.product, parts=[
        admin_pb2.PackagePart(part=p.part, merchant=p.merchant, amount_fen=p.amount_fen, pct=p.pct)
        for p in pkg.parts])


# the engine's names of a coupon's fields that the Coupon message names otherwise
_COUPON_FIELDS = {"id": "coupon_id", "products": "product_ids", "venue": "venue_id"}


def _merchant_msg(m) -> admin_pb2.Merchant:
    return admin_pb2.Merchant(venue_id=m.venue, merchant_id=m.id, name=m.name, zone_ids=list(m.zones),
                              station_ids=list(m.stations))


def _split_msg(venue: str, product: str, shares: list[dict]) -> admin_pb2.RevenueSplit:
    return admin_pb2.RevenueSplit(venue_id=venue, product_id=product, shares=[
        admin_pb2.SplitShare(partner=x["partner"], kind=x["kind"], part=x["part"], pct=x["pct"],
                             per_person_fen=x["per_person_fen"]) for x in shares])


def _coupon_msg(c) -> admin_pb2.Coupon:
    return admin_pb2.Coupon(
        venue_id=c.venue, coupon_id=c.id, kind=c.kind, name=c.name, amount_fen=c.amount_fen, pct=c.pct,
        cap_fen=c.cap_fen, min_spend_fen=c.min_spend_fen, valid_from=_day_text(c.valid_from),
        valid_to=_day_text(c.valid_to), product_ids=list(c.products), channels=list(c.channels),
        budget_fen=c.budget_fen, per_holder=c.per_holder, single_use=c.single_use, active=c.active)


def _id_number(value: str) -> str:
    """A person's ID number from a request, as SalesService.Confirm takes it: 6-32
    letters or digits. The error never repeats it."""
    if not 6 <= len(value) <= 32 or not value.isalnum():
        raise InvalidArgument("must be an ID number: 6-32 letters or digits" if value
                              else "is required", field="id_number")
    return value


def _controls_msg(c) -> admin_pb2.LiveControls:
    return admin_pb2.LiveControls(
        venue_id=c.venue, sales_paused=c.sales_paused, paused_zones=c.paused_zones,
        paused_slots=c.paused_slots, closed_zones=c.closed_zones, closed_gates=c.closed_gates,
        zones=[admin_pb2.ZoneControl(zone_id=z.zone, live_capacity=z.live_capacity,
                                     fill_pct=z.fill_pct, entries_per_minute=z.rate)
               for z in c.zones])


def _opt_id(value: str, field: str) -> str | None:
    """An optional id of a request: None when empty, else checked."""
    return _id(value, field) if value else None


def _principal_msg(p) -> admin_pb2.Principal:
    return admin_pb2.Principal(principal_id=p.id, role=admin_pb2.Role.Value(p.role.upper()),
                               venue_ids=list(p.venues), channel=p.channel, gate_ids=list(p.gates))


class AdminService(admin_pb2_grpc.AdminServiceServicer):
    """Set-up of venues and stock, ticket keys, principals and API keys, the audit log
    and the shard map."""

    def __init__(self, node: ShardNode, store):
        self.node = node
        self.store = store

    def _idem(self, c, request):
        c.idem = request.idempotency_key or None
        return c

    async def _venue_home(self, venue: str) -> int | None:
        """The shard the venue map gives `venue` (replicated mode: etcd's, the cluster's)."""
        if self.node.ownership is None:
            return self.node.store.venue_shard(venue)
        return (await self._etcd(self.node.ownership.venues)).get(venue)

    async def _etcd(self, read):
        try:
            return await read()
        except Exception as e:
            log.warning("etcd not readable (%r)", e)
            raise ShardUnavailable("the shard map is not readable now",
                                   hint="retry; ask another node") from None

    @rpc
    async def CreateVenue(self, request, context):
        _id(request.venue_id, "venue_id")
        if request.HasField("shard") and request.shard != self.node.shard_id:
            raise InvalidArgument(f"this is shard {self.node.shard_id}; send it to shard {request.shard}",
                                  field="shard")
        home = await self._venue_home(request.venue_id)
        if home is not None and home != self.node.shard_id:
            raise AlreadyExists(f"venue {request.venue_id} is mapped to shard {home}", field="venue_id",
                                hint="route by the shard map (AdminService.GetShardMap)")
        await self.node.submit(self._idem(cmd.venue(request.venue_id, request.name or None,
                                                    request.utc_offset_s), request))
        self.node.store.place_venue(request.venue_id, self.node.shard_id)
        if self.node.ownership is not None:
            home = await self.node.ownership.place_venue(request.venue_id, self.node.shard_id)
            if home != self.node.shard_id:      # placed elsewhere meanwhile: the map wins
                log.error("venue %s was created on shard %d while etcd's map placed it on shard %d",
                          request.venue_id, self.node.shard_id, home)
        return _venue_msg(self.node.shard.catalog(request.venue_id).venue, self.node.shard_id)

    def _created(self, venue: str, kind: str, id_: str):
        """The zone, gate or product (`kind`: zones, gates or products) just created (or
        answered to a retry)."""
        return next(x for x in getattr(self.node.shard.catalog(venue), kind) if x.id == id_)

    @rpc
    async def CreateZone(self, request, context):
        venue = self.node.venue(request.venue_id)
        await self.node.submit(self._idem(cmd.zone(venue, request.zone_id, request.name or None,
                                                   live_capacity=request.live_capacity,
                                                   enforce_exit=request.enforce_exit), request))
        return _zone_msg(self._created(venue, "zones", request.zone_id))

    @rpc
    async def CreateGate(self, request, context):
        venue = self.node.venue(request.venue_id)
        await self.node.submit(self._idem(cmd.gate(request.zone_id, request.gate_id, request.mode,
                                                   venue=venue), request))
        self.node.forget_gates()        # the id may now name gates of two venues
        return _gate_msg(self._created(venue, "gates", request.gate_id))

    @rpc
    async def CreateProduct(self, request, context):
        venue = self.node.venue(request.venue_id)
        r = request.rule
        rule = EntryRule(max_entries=r.max_entries if request.HasField("rule") else 1,
                         daily_entries=r.daily_entries, reentry=r.reentry, valid_days=r.valid_days or 1,
                         slot_grace_s=r.slot_grace_s if request.HasField("rule") else 1800)
        await self.node.submit(self._idem(cmd.product(
            request.venue_id, request.product_id, list(request.zone_ids), name=request.name or None,
            rule=rule, price_fen=request.price_fen, channel_prices=dict(request.channel_prices),
            channels=list(request.channels), real_name=request.real_name,
            max_group=request.max_group or 1, refundable=request.refundable,
            refund_fee_pct=request.refund_fee_pct), request))
        return _product_msg(self._created(venue, "products", request.product_id))

    @rpc
    async def CreateSlots(self, request, context):
        venue = self.node.venue(request.venue_id)
        slots = []
        for i, sp in enumerate(request.slots):
            slots.append({"id": sp.slot_id, "zone": sp.zone_id, "day": _date(sp.date, f"slots[{i}].date"),
                          "start": _seconds(sp.start, f"slots[{i}].start"),
                          "end": _seconds(sp.end, f"slots[{i}].end"), "capacity": sp.capacity})
        created = await self.node.submit(self._idem(cmd.slots(slots, venue=venue), request))
        return admin_pb2.CreateSlotsResponse(created=len(created))

    @rpc
    async def SetSlotCapacity(self, request, context):
        venue = self.node.venue(request.venue_id)
        c = await self.node.submit(self._idem(cmd.slot_capacity(request.slot_id, request.capacity,
                                                                venue=venue), request))
        return admin_pb2.SlotCounters(slot_id=request.slot_id, capacity=c.capacity,
                                      reserved=c.reserved, sold=c.sold, held=c.held)

    @rpc
    async def SetAllotment(self, request, context):
        venue = self.node.venue(request.venue_id)
        a = await self.node.submit(self._idem(cmd.allotment(request.slot_id, request.channel,
                                                            request.capacity, venue=venue), request))
        return admin_pb2.AllotmentCounters(slot_id=request.slot_id, channel=request.channel,
                                           capacity=a.capacity, sold=a.sold, held=a.held)

    @rpc
    async def BlockTicket(self, request, context):
        # scope on the object: the venue that owns the ticket, not the one the request names
        venue = self.node.venue(request.venue_id)
        if self.node.shard.ticket_venue(request.ticket_id) != venue:
            raise NotFound(f"no ticket {request.ticket_id} in venue {venue}", field="ticket_id")
        r = await self.node.submit(self._idem(cmd.block(request.ticket_id, request.blocked), request))
        return admin_pb2.BlockTicketResponse(ticket_id=r.ticket_id, blocked=r.blocked)

    @rpc
    async def GetCatalog(self, request, context):
        c = self.node.shard.catalog(self.node.venue(request.venue_id))
        return admin_pb2.Catalog(
            venue=_venue_msg(c.venue, self.node.shard_id), zones=[_zone_msg(z) for z in c.zones],
            gates=[_gate_msg(g) for g in c.gates], products=[_product_msg(p) for p in c.products],
            merchants=[_merchant_msg(m) for m in c.merchants])

    @rpc
    async def SetCalendar(self, request, context):
        venue = self.node.venue(request.venue_id)
        if not request.days:
            raise InvalidArgument("is required: at least one day", field="days")
        if len(request.days) > MAX_CALENDAR_DAYS:
            raise InvalidArgument(f"at most {MAX_CALENDAR_DAYS} days at once", field="days")
        days: dict[str, str] = {}
        for i, d in enumerate(request.days):
            _date(d.date, f"days[{i}].date")
            if d.date_type and d.date_type not in DATE_TYPES:
                raise InvalidArgument(f"must be one of {', '.join(DATE_TYPES)}, or empty to remove "
                                      "the day's entry", field=f"days[{i}].date_type")
            if d.date in days:
                raise InvalidArgument(f"{d.date} is given twice", field=f"days[{i}].date")
            days[d.date] = d.date_type
        r = await self.node.submit(self._idem(cmd.calendar(venue, days), request))
        return admin_pb2.SetCalendarResponse(days=r.days)

    @rpc
    async def GetCalendar(self, request, context):
        venue = self.node.venue(request.venue_id)
        lo, hi = _date_range(request)
        return admin_pb2.GetCalendarResponse(days=[
            admin_pb2.CalendarDay(date=day_to_date(d.day).isoformat(), date_type=d.date_type,
                                  explicit=d.explicit)
            for d in self.node.shard.calendar(venue, lo, hi)])

    @rpc
    async def SetPrices(self, request, context):
        venue = self.node.venue(request.venue_id)
        _id(request.product_id, "product_id")
        # the engine checks every row (date type, channel, price, a row twice), naming
        # prices[i].* as the request does
        prices = [DatePrice(p.date_type, p.channel, p.price_fen) for p in request.prices]
        t = await self.node.submit(self._idem(cmd.prices(venue, request.product_id, prices), request))
        return _price_table_msg(t)

    @rpc
    async def SetPriceRules(self, request, context):
        venue = self.node.venue(request.venue_id)
        _id(request.product_id, "product_id")
        # the engine checks every rule (kind, one of each, amount or pct, its condition and
        # no other, the ranges), naming rules[i].* as the request does
        rules = [PriceRule(r.kind, r.amount_fen, r.pct, r.cap_fen, r.days_ahead, r.from_minute,
                           r.fill_pct, r.member_level) for r in request.rules]
        out = await self.node.submit(self._idem(cmd.price_rules(venue, request.product_id, rules),
                                                request))
        return _price_rules_msg(out)

    @rpc
    async def SetBookingWindow(self, request, context):
        venue = self.node.venue(request.venue_id)
        _id(request.product_id, "product_id")
        if request.opens_days > 3660:
            raise InvalidArgument("must be between 0 and 3660 days", field="opens_days")
        closes = request.closes_minutes if request.HasField("closes_minutes") else None
        if closes is not None and not -7 * 1440 <= closes <= 366 * 1440:
            raise InvalidArgument(f"must be between {-7 * 1440} and {366 * 1440} minutes",
                                  field="closes_minutes")
        for i, d in enumerate(request.weekdays):
            if not 1 <= d <= 7:
                raise InvalidArgument("an ISO day of the week: 1 (Monday) to 7 (Sunday)",
                                      field=f"weekdays[{i}]")
            if d in request.weekdays[:i]:
                raise InvalidArgument(f"day {d} is given twice", field=f"weekdays[{i}]")
        w = await self.node.submit(self._idem(cmd.booking(
            venue, request.product_id, opens_days=request.opens_days, closes_minutes=closes,
            weekdays=list(request.weekdays)), request))
        return _booking_msg(w)

    @rpc
    async def GetProductPricing(self, request, context):
        venue = self.node.venue(request.venue_id)
        pid = _id(request.product_id, "product_id")
        shard = self.node.shard
        return admin_pb2.ProductPricing(prices=_price_table_msg(shard.price_table(venue, pid)),
                                        rules=_price_rules_msg(shard.price_rules(venue, pid)),
                                        booking=_booking_msg(shard.booking(venue, pid)),
                                        id_limits=_id_limits_msg(shard.id_limits(venue, pid)),
                                        refund_policy=_refund_policy_msg(shard.refund_policy(venue, pid)),
                                        pass_dates=_pass_dates_msg(shard.pass_dates(venue, pid)),
                                        package=_package_msg(shard.package(venue, pid)),
                                        revenue_split=_split_msg(venue, pid, shard.revenue_split(venue, pid)))

    @rpc
    async def SetRevenueSplit(self, request, context):
        venue = self.node.venue(request.venue_id)
        _id(request.product_id, "product_id")
        # the engine checks each share (partner, kind, part, pct or per_person_fen), naming
        # shares[i].* as the request does
        r = await self.node.submit(self._idem(cmd.revenue_split(venue, request.product_id, [
            {"partner": x.partner, "kind": x.kind, "part": x.part, "pct": x.pct,
             "per_person_fen": x.per_person_fen} for x in request.shares]), request))
        return _split_msg(r["venue"], r["product"], r["shares"])

    @rpc
    async def SetPassDates(self, request, context):
        venue = self.node.venue(request.venue_id)
        _id(request.product_id, "product_id")
        lo = _date(request.valid_from, "valid_from") if request.valid_from else None
        hi = _date(request.valid_to, "valid_to") if request.valid_to else None
        # the engine checks both-or-neither and the span, naming valid_from / valid_to
        d = await self.node.submit(self._idem(cmd.pass_dates(
            venue, request.product_id, day_to_date(lo) if lo is not None else None,
            day_to_date(hi) if hi is not None else None), request))
        return _pass_dates_msg(d)

    @rpc
    async def SetPackage(self, request, context):
        venue = self.node.venue(request.venue_id)
        _id(request.product_id, "product_id")
        # the engine checks each part (ids, amount or pct, a part twice, pct adding up to
        # 100), naming parts[i].* as the request does
        pkg = await self.node.submit(self._idem(cmd.package(venue, request.product_id, [
            {"part": p.part, "merchant": p.merchant, "amount_fen": p.amount_fen, "pct": p.pct}
            for p in request.parts]), request))
        return _package_msg(pkg)

    @rpc
    async def SetCoupon(self, request, context):
        c = request.coupon
        venue = self.node.venue(c.venue_id, "coupon.venue_id")
        _id(c.coupon_id, "coupon.coupon_id")
        days = {name: _date(getattr(c, name), f"coupon.{name}") if getattr(c, name) else None
                for name in ("valid_from", "valid_to")}
        try:        # the engine checks the rest, naming its fields as the Coupon message does
            out = await self.node.submit(self._idem(cmd.coupon(
                venue, c.coupon_id, c.kind, name=c.name, amount_fen=c.amount_fen, pct=c.pct,
                cap_fen=c.cap_fen, min_spend_fen=c.min_spend_fen,
                valid_from=day_to_date(days["valid_from"]) if days["valid_from"] is not None else None,
                valid_to=day_to_date(days["valid_to"]) if days["valid_to"] is not None else None,
                products=list(c.product_ids), channels=list(c.channels), budget_fen=c.budget_fen,
                per_holder=c.per_holder, single_use=c.single_use, active=c.active), request))
        except TurnstileError as e:
            if e.field and e.field != "idempotency_key":
                head, bracket, rest = e.field.partition("[")
                e.field = f"coupon.{_COUPON_FIELDS.get(head, head)}{bracket}{rest}"
            raise
        return _coupon_msg(out)

    @rpc
    async def GetCoupon(self, request, context):
        venue = self.node.venue(request.venue_id)
        cid = _id(request.coupon_id, "coupon_id")
        try:
            s = self.node.shard.coupon(venue, cid)
        except NotFound as e:
            e.field = "coupon_id"
            raise
        return admin_pb2.CouponStatus(coupon=_coupon_msg(s.coupon), issued=s.issued, uses=s.uses,
                                      spent_fen=s.spent_fen)

    @rpc
    async def SetSeatMap(self, request, context):
        venue = self.node.venue(request.venue_id)
        m = await self.node.submit(self._idem(cmd.seat_map(
            venue, request.seat_map_id,
            [{"section": r.section, "row": r.row, "layout": r.layout} for r in request.rows],
            [{"zone": z.zone, "price_fen": z.price_fen, "name": z.name} for z in request.zones],
            name=request.name), request))
        return admin_pb2.SeatMapResponse(
            venue_id=m.venue, seat_map_id=m.id, name=m.name,
            rows=[admin_pb2.SeatRow(section=a, row=b, layout=c) for a, b, c in m.rows],
            zones=[admin_pb2.SeatMapZone(zone=z.zone, price_fen=z.price_fen, name=z.name) for z in m.zones])

    @rpc
    async def SetSeating(self, request, context):
        venue = self.node.venue(request.venue_id)
        _id(request.slot_id, "slot_id")
        r = await self.node.submit(self._idem(cmd.seating(venue, request.slot_id, request.seat_map_id),
                                              request))
        return admin_pb2.SetSeatingResponse(venue_id=r.venue, slot_id=r.slot, seat_map_id=r.seat_map,
                                            seats=r.seats)

    @rpc
    async def SetMerchant(self, request, context):
        venue = self.node.venue(request.venue_id)
        _id(request.merchant_id, "merchant_id")
        m = await self.node.submit(self._idem(cmd.merchant(
            venue, request.merchant_id, name=request.name or request.merchant_id,
            zones=list(request.zone_ids), stations=list(request.station_ids)), request))
        self.node.forget_gates()        # a merchant's principals scan at its zones' gates alone
        return _merchant_msg(m)

    @rpc
    async def IssueCouponCodes(self, request, context):
        venue = self.node.venue(request.venue_id)
        cid = _id(request.coupon_id, "coupon_id")
        try:
            b = await self.node.submit(self._idem(cmd.coupon_codes(venue, cid, request.count), request))
        except TurnstileError as e:
            if e.field == "coupon":
                e.field = "coupon_id"
            raise
        return admin_pb2.CouponCodes(venue_id=b.venue, coupon_id=b.coupon, first=b.first,
                                     codes=self.node.shard.coupon_codes(b.venue, b.coupon, b.first, b.count))

    @rpc
    async def SetRefundPolicy(self, request, context):
        venue = self.node.venue(request.venue_id)
        _id(request.product_id, "product_id")
        # the engine checks each tier (ranges, two at the same time), naming tiers[i].*
        pol = await self.node.submit(self._idem(cmd.refund_policy(
            venue, request.product_id, [{"before_minutes": t.before_minutes, "fee_pct": t.fee_pct}
                                        for t in request.tiers]), request))
        return _refund_policy_msg(pol)

    @rpc
    async def SetIdLimits(self, request, context):
        venue = self.node.venue(request.venue_id)
        _id(request.product_id, "product_id")
        # the engine checks the ranges (0-10000), naming per_day and per_slot
        lim = await self.node.submit(self._idem(cmd.id_limits(
            venue, request.product_id, per_day=request.per_day, per_slot=request.per_slot), request))
        return _id_limits_msg(lim)

    @rpc
    async def Blacklist(self, request, context):
        venue = self.node.venue(request.venue_id)
        _id_number(request.id_number)
        until = 0
        if request.HasField("until"):
            until = _seconds(request.until, "until")
            if until <= int(self.node.shard.clock()):
                raise InvalidArgument("must be in the future (unset: for good)", field="until")
        r = await self.node.submit(self._idem(cmd.blacklist(
            venue, request.id_number, reason=request.reason, until=until), request))
        return _blacklist_msg(r)

    @rpc
    async def Unblacklist(self, request, context):
        venue = self.node.venue(request.venue_id)
        _id_number(request.id_number)
        r = await self.node.submit(self._idem(cmd.blacklist(venue, request.id_number, remove=True),
                                              request))
        return _blacklist_msg(r)

    def _own_shard(self, shard: int) -> None:
        if shard != self.node.shard_id:
            raise InvalidArgument(f"this is shard {self.node.shard_id}", field="shard")

    @rpc
    async def RotateTicketKey(self, request, context):
        self._own_shard(request.shard)
        r = await self.node.submit(self._idem(cmd.rotate_key(), request))
        return admin_pb2.TicketKeyInfo(shard=self.node.shard_id, key_id=r.key_id, state=r.state)

    @rpc
    async def RetireTicketKey(self, request, context):
        self._own_shard(request.shard)
        r = await self.node.submit(self._idem(cmd.retire_key(request.key_id), request))
        return admin_pb2.TicketKeyInfo(shard=self.node.shard_id, key_id=r.key_id, state=r.state)

    async def _store_change(self, change):
        """Run a change of the principal store and audit it through the shard. Replicated
        mode: what etcd holds is taken first, so a principal id another node made is
        refused here (ALREADY_EXISTS) instead of made twice."""
        self.node.writable()                    # on a standby it could not be audited
        if self.node.ownership is not None:
            await self._etcd(lambda: self.node.ownership.sync_control(self.store))
        try:
            result = change()
        except TurnstileError as e:
            await self.node.submit(cmd.note(e.code))
            raise
        await self.node.submit(cmd.note("OK"))
        if self.node.ownership is not None:
            # replicated mode: every node takes the change (a failure is retried by the
            # periodic sync: the change is made here either way)
            try:
                await self.node.ownership.sync_control(self.store)
            except Exception as e:
                log.warning("principals and keys not synced to etcd now (%s); the next sync "
                            "carries them", e)
        return result

    @rpc
    async def CreatePrincipal(self, request, context):
        for name in ("venue_ids", "gate_ids"):
            for i, x in enumerate(getattr(request, name)):
                _id(x, f"{name}[{i}]")
        if request.channel:
            _id(request.channel, "channel")
        if request.role not in admin_pb2.Role.values():
            raise InvalidArgument("not a Role", field="role")
        role = admin_pb2.Role.Name(request.role).lower() if request.role else ""
        p = await self._store_change(lambda: self.store.create_principal(
            request.principal_id, role, venues=list(request.venue_ids), channel=request.channel,
            gates=list(request.gate_ids), retry=bool(request.idempotency_key)))
        return _principal_msg(p)

    @rpc
    async def ListPrincipals(self, request, context):
        return admin_pb2.ListPrincipalsResponse(principals=[_principal_msg(p)
                                                            for p in self.store.list_principals()])

    @rpc
    async def CreateApiKey(self, request, context):
        key_id, secret = await self._store_change(lambda: self.store.create_key(request.principal_id))
        return admin_pb2.ApiKey(key_id=key_id, principal_id=request.principal_id, secret=secret)

    @rpc
    async def RevokeApiKey(self, request, context):
        await self._store_change(lambda: self.store.revoke_key(request.key_id))
        return admin_pb2.RevokeApiKeyResponse(key_id=request.key_id)

    @rpc
    async def ListApiKeys(self, request, context):
        if request.principal_id:
            self.store.get_principal(request.principal_id)      # NOT_FOUND names the field
        return admin_pb2.ListApiKeysResponse(keys=[
            admin_pb2.ApiKeyInfo(key_id=k, principal_id=p, revoked=r)
            for k, p, r in self.store.list_keys(request.principal_id)])

    @rpc
    async def QueryAudit(self, request, context):
        if request.principal_id:
            _id(request.principal_id, "principal_id")
        limit = min(request.limit or 100, 1000)
        # read in a thread, in one LMDB read transaction (and the archive files): the
        # event loop, and with it the writer and the gates, goes on meanwhile
        recs = await asyncio.get_running_loop().run_in_executor(
            None, self.node.shard.audit_records, request.after_seq, limit,
            request.principal_id or None)
        return admin_pb2.QueryAuditResponse(records=[admin_pb2.AuditRecord(
            seq=r.seq, at=_ts(r.at), principal_id=r.principal, method=r.method,
            request_digest=r.digest, result=r.result, prev_hash=r.prev, hash=r.hash)
            for r in recs])

    @rpc
    async def VerifyAudit(self, request, context):
        # the whole chain (archive files, hot rows, checkpoints) is walked in a thread,
        # in one LMDB read transaction: an auditor never stalls the writer or the gates
        ok, checked, bad = await asyncio.get_running_loop().run_in_executor(
            None, self.node.shard.verify_audit)
        return admin_pb2.VerifyAuditResponse(ok=ok, checked=checked, first_bad_seq=bad)

    # -- live controls (一键管控) --------------------------------------------------------------
    @rpc
    async def SetSalesPaused(self, request, context):
        venue = self.node.venue(request.venue_id)
        c = await self.node.submit(self._idem(cmd.pause_sales(
            venue, request.paused, zone=_opt_id(request.zone_id, "zone_id"),
            slot=_opt_id(request.slot_id, "slot_id")), request))
        return _controls_msg(c)

    @rpc
    async def SetEntryClosed(self, request, context):
        venue = self.node.venue(request.venue_id)
        c = await self.node.submit(self._idem(cmd.close_entry(
            venue, request.closed, zone=_opt_id(request.zone_id, "zone_id"),
            gate=_opt_id(request.gate_id, "gate_id")), request))
        return _controls_msg(c)

    @rpc
    async def SetLiveCapacity(self, request, context):
        venue = self.node.venue(request.venue_id)
        c = await self.node.submit(self._idem(cmd.live_capacity(
            venue, _id(request.zone_id, "zone_id"), request.live_capacity), request))
        return _controls_msg(c)

    @rpc
    async def SetFlowAlerts(self, request, context):
        venue = self.node.venue(request.venue_id)
        c = await self.node.submit(self._idem(cmd.flow_alerts(
            venue, _id(request.zone_id, "zone_id"), list(request.fill_pct),
            request.entries_per_minute), request))
        return _controls_msg(c)

    @rpc
    async def GetLiveControls(self, request, context):
        return _controls_msg(self.node.shard.live_controls(self.node.venue(request.venue_id)))

    @rpc
    async def WhoAmI(self, request, context):
        p = auth.current()
        return admin_pb2.WhoAmIResponse(
            principal_id=p.id, role=p.role, venues=list(p.venues), channel=p.channel,
            gates=list(p.gates), methods=sorted(m for m, roles in auth.TABLE.items() if p.role in roles))

    @rpc
    async def GetShardMap(self, request, context):
        endpoints, venues = self.store.shard_map()
        standbys: dict[int, list[str]] = {}
        if self.node.ownership is not None:
            # replicated mode: the map is etcd's -- each shard's primary is its owner, its
            # standbys the nodes running as such (live in etcd), each venue where the
            # cluster placed it (this node's own store knows only the shards it served itself)
            for k, sh in (await self._etcd(self.node.ownership.shards)).items():
                if sh["owner"]:
                    endpoints[k] = sh["owner"]
                standbys[k] = sorted(name for name, role in sh["live"].items()
                                     if name != sh["owner"] and role == "standby")
            venues.update(await self._etcd(self.node.ownership.venues))
        return admin_pb2.ShardMap(
            shards=[admin_pb2.ShardEndpoint(shard=k, address=a, standbys=standbys.get(k, []))
                    for k, a in sorted(endpoints.items())],
            venues=venues, version=len(endpoints) + len(venues))


class ReportService(report_pb2_grpc.ReportServiceServicer):
    def __init__(self, node: ShardNode):
        self.node = node

    @rpc
    async def LiveCounts(self, request, context):
        venue = self.node.venue(request.venue_id)
        day = _date(request.date, "date") if request.date else None
        rows = self.node.shard.live_counts(venue, day)
        if day is None:
            day = self.node.shard.today(venue)
        return report_pb2.LiveCountsResponse(date=day_to_date(day).isoformat(), zones=[
            report_pb2.ZoneCount(zone_id=r.zone, inside=r.inside, entered_tickets=r.entered,
                                 live_capacity=r.live_capacity) for r in rows])

    @rpc
    async def TicketCounts(self, request, context):
        venue = self.node.venue(request.venue_id)
        return report_pb2.TicketCountsResponse(products=[
            report_pb2.ProductCount(product_id=r.product, issued=r.issued, used=r.used,
                                    voided=r.voided, blocked=r.blocked)
            for r in self.node.shard.ticket_counts(venue)])

    @rpc
    async def Conflicts(self, request, context):
        venue = self.node.venue(request.venue_id)
        rows = self.node.shard.conflicts(venue, request.after, min(request.limit or 1000, 10_000))
        return report_pb2.ConflictsResponse(conflicts=[
            report_pb2.Conflict(key=r.key, gate_id=r.gate, nonce=r.nonce, sequence=r.seq,
                                scan_time=_ts(r.at), ticket_id=r.ticket_id,
                                direction=r.direction, persons=r.persons,
                                offline_reason=r.offline_reason, server_reason=r.server_reason)
            for r in rows])


    # -- finance ---------------------------------------------------------------------------
    def _range(self, request) -> tuple[str, int, int]:
        venue = self.node.venue(request.venue_id)
        lo = _date(request.date_from, "date_from")
        hi = _date(request.date_to, "date_to") if request.date_to else lo
        return venue, lo, hi

    @rpc
    async def Revenue(self, request, context):
        venue, lo, hi = self._range(request)
        period = {0: "day", 1: "day", 2: "month", 3: "year"}.get(request.period)
        if period is None:
            raise InvalidArgument("must be DAY, MONTH or YEAR", field="period")
        rows, total = self.node.shard.revenue(venue, lo, hi, period, list(request.group_by))
        return report_pb2.RevenueResponse(
            rows=[_revenue_row(per, cut, v) for per, cut, v in rows], total=_revenue_row("", {}, total))

    @rpc
    async def TicketStatus(self, request, context):
        venue, lo, hi = self._range(request)
        return report_pb2.TicketStatusResponse(rows=[
            report_pb2.TicketStatusRow(date=day_to_date(r["day"]).isoformat(), product_id=r["product"],
                                       sold=r["sold"], used=r["used"], unused=r["unused"],
                                       refunded=r["refunded"], expired=r["expired"])
            for r in self.node.shard.ticket_status(venue, lo, hi)])

    @rpc
    async def Entries(self, request, context):
        venue = self.node.venue(request.venue_id)
        day = _date(request.date, "date") if request.date else None
        e = self.node.shard.entries(venue, day)
        return report_pb2.EntriesResponse(
            date=day_to_date(e["day"]).isoformat(),
            gate_hours=[report_pb2.GateHour(zone_id=g["zone"], gate_id=g["gate"], hour=g["hour"],
                                            entries=g["entries"], reentries=g["reentries"],
                                            exits=g["exits"]) for g in e["gate_hours"]],
            zones=[report_pb2.ZoneDay(zone_id=z["zone"], entries=z["entries"], reentries=z["reentries"],
                                      exits=z["exits"], entered_tickets=z["entered_tickets"],
                                      peak_inside=z["peak_inside"]) for z in e["zones"]])

    def _list_args(self, request) -> tuple[str, int, int, dict]:
        venue, lo, hi = self._range(request)
        if request.limit > 1000:
            raise InvalidArgument("at most 1000", field="limit")
        kw = {"after": request.after, "limit": request.limit or 100}
        for name, field in (("channel", "channel"), ("station", "station_id")):
            value = getattr(request, field)
            if value:
                kw[name] = _id(value, field)
        if len(request.after) > 512:
            raise InvalidArgument("not a cursor (a page's `next`)", field="after")
        return venue, lo, hi, kw

    @rpc
    async def ListOrders(self, request, context):
        venue, lo, hi, kw = self._list_args(request)
        orders, nxt = self.node.shard.list_orders(venue, lo, hi, status=request.status, **kw)
        return report_pb2.ListOrdersResponse(orders=[_order(o) for o in orders], next=nxt)

    async def StreamOrders(self, request, context):
        # a server stream: each page's errors end the stream with the status the unary
        # calls answer (rpc() wraps unary handlers only)
        metrics.note(auth.current().id)
        try:
            if self.node.standby is not None:
                await context.send_initial_metadata(self.node.standby_metadata(context))
            venue, lo, hi, kw = self._list_args(request)
            kw["limit"] = 1000
            while True:
                orders, nxt = self.node.shard.list_orders(venue, lo, hi, status=request.status, **kw)
                for o in orders:
                    yield _order(o)
                if not nxt:
                    return
                kw["after"] = nxt
                await asyncio.sleep(0)
        except TurnstileError as e:
            e.field = proto_path("ListOrders", e.field)
            metrics.note(reason=e.code)
            await context.abort_with_status(errors.to_status(e))

    LIVE_KEEPALIVE_S = 15.0
    LIVE_SHARED_S = 0.1         # watchers of a venue share a view this young (engine/live.py)

    async def WatchLive(self, request, context):
        """The live view, pushed when it changes (at most one per min_interval_ms, and
        one every LIVE_KEEPALIVE_S when nothing did). Views are taken from the shard's
        memory on the event loop (a cached view costs nothing; a new one a few hundred
        microseconds) and never wait for the writer."""
        metrics.note(auth.current().id)
        try:
            if self.node.standby is not None:
                await context.send_initial_metadata(self.node.standby_metadata(context))
            venue = self.node.venue(request.venue_id)
            ms = request.min_interval_ms or 250
            if not 100 <= ms <= 60_000:
                raise InvalidArgument("must be 100 to 60000 (ms), or 0 for 250", field="min_interval_ms")
            seq, last, sent = 0, b"", 0.0
            loop = asyncio.get_running_loop()
            while True:
                # the first view is taken afresh (it shows all committed before the call)
                msg = _live_msg(self.node.shard.live(venue, max_age_s=self.LIVE_SHARED_S if seq else 0))
                body = msg.SerializeToString()
                now = loop.time()
                if body != last or now - sent >= self.LIVE_KEEPALIVE_S:
                    seq += 1
                    last, sent = body, now
                    msg.seq = seq
                    msg.at.FromSeconds(int(self.node.shard.clock()))
                    yield msg
                try:
                    await asyncio.wait_for(self.node.stopping.wait(), ms / 1000)
                except TimeoutError:
                    continue
                raise ShardUnavailable("the shard is stopping; watch again")
        except TurnstileError as e:
            e.field = proto_path("WatchLive", e.field)
            metrics.note(reason=e.code)
            await context.abort_with_status(errors.to_status(e))

    @rpc
    async def ListRefunds(self, request, context):
        venue, lo, hi, kw = self._list_args(request)
        rows, nxt = self.node.shard.list_refunds(venue, lo, hi, **kw)
        return report_pb2.ListRefundsResponse(next=nxt, refunds=[report_pb2.RefundEntry(
            order_id=r["order_id"], channel=r["channel"], station_id=r["station"], shift_id=r["shift"],
            method=r["method"], reference=r["reference"], refund=_refund_msg(r["refund"])) for r in rows])

    @rpc
    async def ListChanges(self, request, context):
        venue, lo, hi, kw = self._list_args(request)
        rows, nxt = self.node.shard.list_changes(venue, lo, hi, **kw)
        return report_pb2.ListChangesResponse(next=nxt, changes=[report_pb2.ChangeEntry(
            order_id=r["order_id"], channel=r["channel"], station_id=r["station"], shift_id=r["shift"],
            change=_change_entry_msg(r["change"])) for r in rows])

    @rpc
    async def ListShifts(self, request, context):
        venue, lo, hi = self._range(request)
        station = _id(request.station_id, "station_id") if request.station_id else ""
        return report_pb2.ListShiftsResponse(shifts=[
            _shift_msg(sh) for sh in self.node.shard.shifts(venue, lo, hi, station)])

    @rpc
    async def ImportStatement(self, request, context):
        venue = self.node.venue(request.venue_id)
        method = _id(request.method, "method")
        day = _date(request.date, "date")
        if len(request.lines) > 200_000:
            raise InvalidArgument("at most 200000 lines", field="lines")
        lines = []
        for i, ln in enumerate(request.lines):
            if ln.kind not in (report_pb2.StatementLine.PAYMENT, report_pb2.StatementLine.REFUND):
                raise InvalidArgument("must be PAYMENT or REFUND", field=f"lines[{i}].kind")
            lines.append({"kind": "payment" if ln.kind == report_pb2.StatementLine.PAYMENT else "refund",
                          "trade_no": ln.trade_no, "order_id": ln.order_id, "refund_id": ln.refund_id,
                          "at": _seconds(ln.at, f"lines[{i}].at") if ln.HasField("at") else 0,
                          "amount_fen": ln.amount_fen, "fee_fen": ln.fee_fen})
        r = await self.node.submit(cmd.statement(venue, method, day, lines,
                                                 idempotency_key=request.idempotency_key or None))
        return report_pb2.ImportStatementResponse(lines=r["lines"], changed=r["changed"], digest=r["digest"])

    @rpc
    async def Reconcile(self, request, context):
        venue = self.node.venue(request.venue_id)
        method = _id(request.method, "method")
        day = _date(request.date, "date")
        r = self.node.shard.reconcile(venue, method, day)
        return report_pb2.ReconcileResponse(
            digest=r["digest"], matched_payments=r["matched_payments"], matched_paid_fen=r["matched_paid_fen"],
            matched_refunds=r["matched_refunds"], matched_refunded_fen=r["matched_refunded_fen"],
            statement_paid_fen=r["statement_paid_fen"], statement_refunded_fen=r["statement_refunded_fen"],
            statement_fee_fen=r["statement_fee_fen"], turnstile_paid_fen=r["turnstile_paid_fen"],
            turnstile_refunded_fen=r["turnstile_refunded_fen"], mismatches=[
                report_pb2.Mismatch(kind=report_pb2.MismatchKind.Value(m["kind"]), reference=m["reference"],
                                    order_id=m["order_id"], refund_id=m["refund_id"],
                                    statement_fen=m["statement_fen"], turnstile_fen=m["turnstile_fen"])
                for m in r["mismatches"]])

    @rpc
    async def Settlement(self, request, context):
        venue, lo, hi = self._range(request)
        partner = _id(request.partner, "partner") if request.partner else ""
        who = auth.current()
        if who.role == "merchant":
            # a merchant reads its own statement, and not the venue's totals
            if partner and partner != who.channel:
                raise PermissionDenied(f"{who.id} reads the statement of {who.channel} alone",
                                       field="partner")
            partners, _, _ = self.node.shard.settlement(venue, lo, hi, who.channel)
            net_fen = venue_fen = 0
        else:
            partners, net_fen, venue_fen = self.node.shard.settlement(venue, lo, hi, partner)
        return report_pb2.SettlementResponse(net_fen=net_fen, venue_fen=venue_fen, partners=[
            report_pb2.PartnerStatement(partner=p["partner"], kind=p["kind"], amount_fen=p["amount_fen"], lines=[
                report_pb2.SettlementLine(product_id=ln["product"], persons=ln["persons"],
                                          amount_fen=ln["amount_fen"]) for ln in p["lines"]])
            for p in partners])


_GATE_STATE = {"unknown": report_pb2.GATE_STATE_UNSPECIFIED, "up": report_pb2.GATE_UP,
               "offline": report_pb2.GATE_OFFLINE, "down": report_pb2.GATE_DOWN}
_ALERT_KIND = {"fill": report_pb2.ZONE_FILL, "rate": report_pb2.ENTRY_RATE,
               "gate": report_pb2.GATE_SILENT}


def _gate_live(g) -> report_pb2.GateLive:
    m = report_pb2.GateLive(gate_id=g.gate, zone_id=g.zone, state=_GATE_STATE[g.state],
                            entry_closed=g.entry_closed)
    s = g.status
    if s is not None:
        m.last_heartbeat.FromSeconds(s.heard_at)
        if s.bundle_cut_at:
            m.bundle_cut_at.FromSeconds(s.bundle_cut_at)
        if s.last_scan:
            m.last_scan.FromSeconds(s.last_scan)
        m.queued_scans, m.version = s.queued, s.version
    return m


def _live_msg(v) -> report_pb2.LiveView:
    """Shard.live() as a LiveView message, without `at` and `seq` (the stream's own)."""
    return report_pb2.LiveView(
        venue_id=v.venue, date=day_to_date(v.day).isoformat(),
        zones=[report_pb2.ZoneLive(
            zone_id=z.zone, name=z.name, inside=z.inside, live_capacity=z.live_capacity,
            entries_today=z.entries, reentries_today=z.reentries, exits_today=z.exits,
            entries_last_minute=z.last_minute, entries_per_minute=z.per_minute,
            sales_paused=z.sales_paused, entry_closed=z.entry_closed) for z in v.zones],
        gates=[_gate_live(g) for g in v.gates],
        alerts=[report_pb2.Alert(id=a.id, kind=_ALERT_KIND[a.kind], zone_id=a.zone, gate_id=a.gate,
                                 level_pct=a.level_pct, value=a.value, threshold=a.threshold,
                                 raised_at=_ts(a.raised_at), message=a.message) for a in v.alerts],
        sales=[report_pb2.ChannelSales(channel=s.channel, tickets=s.tickets, persons=s.persons,
                                       paid_fen=s.paid_fen, net_fen=s.net_fen) for s in v.sales],
        controls=_controls_msg(v.controls),
        inside=sum(z.inside for z in v.zones), entries_today=sum(z.entries for z in v.zones))


def _revenue_row(period: str, cut: dict, v: list[int]) -> report_pb2.RevenueRow:
    return report_pb2.RevenueRow(period=period, channel=cut.get("channel", ""),
                                 station_id=cut.get("station", ""), product_id=cut.get("product", ""),
                                 method=cut.get("method", ""), net_fen=Shard.net_revenue(v),
                                 **dict(zip(Shard.REVENUE_FIELDS, v)))


def _refund_msg(r: dict) -> sales_pb2.OrderRefund:
    return sales_pb2.OrderRefund(refund_id=r["refund_id"], ticket_ids=r["tickets"], amount_fen=r["amount_fen"],
                                 fee_fen=r["fee_fen"], at=_ts(r["at"]), persons=r.get("persons", 0))


def _change_entry_msg(c: dict) -> sales_pb2.OrderChange:
    return sales_pb2.OrderChange(
        change_id=c["change_id"], ticket_ids=c["tickets"], first_ticket_id=c["first_ticket"],
        slot_ids=c["slots"], unit_price_fen=c["unit_price_fen"], fee_fen=c["fee_fen"],
        due_fen=c["due_fen"], payment=_payment(c["payment"]), at=_ts(c["at"]))


class MemberService(member_pb2_grpc.MemberServiceServicer):
    def __init__(self, node: ShardNode):
        self.node = node

    @rpc
    async def HolderTickets(self, request, context):
        p = auth.current()
        rows = [r for r in self.node.shard.holder_tickets(request.id_number) if p.may_use_venue(r.venue)]
        return member_pb2.HolderTicketsResponse(holder=mask_id(request.id_number.upper()), tickets=[
            member_pb2.HolderTicket(ticket_id=r.ticket_id, product_id=r.product, venue_id=r.venue,
                                    first_day=day_to_date(r.first_day).isoformat(),
                                    last_day=day_to_date(r.last_day).isoformat(), used=r.used,
                                    voided=r.voided, blocked=r.blocked) for r in rows])

    @rpc
    async def EnrollFace(self, request, context):
        venue = self.node.venue(request.venue_id)
        r = await self.node.submit(cmd.enroll_face(venue, request.face_token, request.id_number,
                                                   idempotency_key=request.idempotency_key or None))
        return member_pb2.EnrollFaceResponse(enrolled=r.enrolled, holder=r.holder, tickets=r.tickets)

    @rpc
    async def RemoveFace(self, request, context):
        venue = self.node.venue(request.venue_id)
        r = await self.node.submit(cmd.enroll_face(venue, request.face_token, None,
                                                   idempotency_key=request.idempotency_key or None))
        return member_pb2.EnrollFaceResponse(enrolled=r.enrolled, holder=r.holder, tickets=r.tickets)

    # -- members and points (engine/state/members.py) ------------------------------------
    @rpc
    async def SetMemberProgram(self, request, context):
        p = request.program
        venue = self.node.venue(p.venue_id, "program.venue_id")
        r = await self.node.submit(cmd.member_program(
            venue, levels=[{"level": x.level, "name": x.name, "min_spend_fen": x.min_spend_fen}
                           for x in p.levels],
            period_days=p.period_days or 365,
            earn=[{"product": x.product_id, "channel": x.channel, "points_per_yuan": x.points_per_yuan}
                  for x in p.earn],
            expiry=p.expiry or "year_end", expiry_n=p.expiry_n if p.HasField("expiry_n") else None,
            fen_per_point=p.fen_per_point or 1, idempotency_key=request.idempotency_key or None))
        return _program_msg(r)

    @rpc
    async def GetMemberProgram(self, request, context):
        return _program_msg(self.node.shard.member_program(self.node.venue(request.venue_id)))

    @rpc
    async def Enrol(self, request, context):
        venue = self.node.venue(request.venue_id)
        r = await self.node.submit(cmd.enrol(venue, id_number=request.id_number, phone=request.phone,
                                             idempotency_key=request.idempotency_key or None))
        return _member_msg(r)

    @rpc
    async def GetMember(self, request, context):
        venue = self.node.venue(request.venue_id)
        return _member_msg(self.node.shard.member(venue, request.member_id, request.id_number,
                                                  request.phone))

    @rpc
    async def ListPoints(self, request, context):
        venue = self.node.venue(request.venue_id)
        _id(request.member_id, "member_id")
        limit = request.limit or 100
        entries = self.node.shard.member_ledger(venue, request.member_id, request.after, limit)
        return member_pb2.ListPointsResponse(
            entries=[member_pb2.PointsEntry(seq=e.seq, at=_ts(e.at), kind=e.kind, points=e.points,
                                            balance=e.balance, debt=e.debt, ref=e.ref, reason=e.reason)
                     for e in entries],
            next_after=entries[-1].seq if len(entries) == limit else 0)

    @rpc
    async def AdjustPoints(self, request, context):
        venue = self.node.venue(request.venue_id)
        _id(request.member_id, "member_id")
        r = await self.node.submit(cmd.adjust_points(venue, request.member_id, request.points,
                                                     request.reason,
                                                     idempotency_key=request.idempotency_key or None))
        return member_pb2.AdjustPointsResponse(member_id=r.member_id, points=r.points,
                                               balance=r.balance, debt=r.debt, seq=r.seq)

    @rpc
    async def MemberReport(self, request, context):
        r = self.node.shard.members_report(self.node.venue(request.venue_id))
        t = r["totals"]
        return member_pb2.MemberReportResponse(
            members=r["members"], by_level=[member_pb2.LevelCount(level=lv, members=n)
                                            for lv, n in r["by_level"]],
            earned=t.get("earn", 0), reversed=t.get("reverse", 0), adjusted=t.get("adjust", 0),
            expired=t.get("expire", 0), balance=r["balance"], redeemed=t.get("redeem", 0),
            restored=t.get("restore", 0))


def _program_msg(p) -> member_pb2.MemberProgram:
    return member_pb2.MemberProgram(
        venue_id=p.venue, levels=[member_pb2.MemberLevel(level=x.level, name=x.name,
                                                         min_spend_fen=x.min_spend_fen) for x in p.levels],
        period_days=p.period_days, earn=[member_pb2.EarnRule(product_id=x.product, channel=x.channel,
                                                             points_per_yuan=x.points_per_yuan)
                                         for x in p.earn],
        expiry=p.expiry, expiry_n=p.expiry_n, fen_per_point=p.fen_per_point)


def _member_msg(m) -> member_pb2.Member:
    return member_pb2.Member(
        venue_id=m.venue, member_id=m.member_id, holder=m.holder, phone=m.phone,
        enrolled_at=_ts(m.enrolled_at), level=m.level, level_name=m.level_name, spend_fen=m.spend_fen,
        balance=m.balance, debt=m.debt,
        expiring=[member_pb2.ExpiringPoints(last_day="" if d == NEVER_EXPIRES else day_to_date(d).isoformat(),
                                            points=n) for d, n in m.expiring])
