"""Idempotency, the one mechanism: a request under a key (an idempotency key, a channel's
order id, a gate's scan id or batch id, an offline nonce) is decided once; its answer is
kept in a row, and a retry gets that answer back. These are retry rows: they live in
time buckets and are pruned once older than the retry window live in time buckets and are pruned (retry.py).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, is_dataclass
from typing import TYPE_CHECKING, Any, Callable

from ..errors import IdempotencyMismatch, InvalidArgument
from ..journal import Command, CommandKind
from ..model import (MemberInfo, MemberProgram, PointsResult, AllotmentCounters, Coupon, CouponBatch, AuditNote, BlacklistResult, BlockResult, BookingWindow, IdLimits, CalendarResult, DatePrice, EntryRule,
                     ExpireResult, FaceResult, Gate, GateMode, HoldResult, IssuedTicket, KeyResult,
                     Order, PackagePart, PackageSplit, PassDates, PriceRule, PriceRules, PriceTable, Product, RefundPolicy,
                     RefundTier, RefundResult, ReleaseResult, Slot, SlotCounters,
                     UploadResult, Venue, Zone, LiveControls, ZoneControl)
from . import changes
from .sales import ConfirmResult
from .retry import get_retry, put_retry
from .secrets import render_if_valid

if TYPE_CHECKING:
    from .core import ShardState


def fingerprint(op: int, args: Any, secret: bytes) -> str:
    """Keyed digest of a request (requests may carry ID numbers: never a plain hash).
    Bytes (a packed batch's codes) go in as their own BLAKE2b digest, inside the keyed
    one: their repr, JSON-escaped, took milliseconds for a batch of 1,000 codes."""
    body = json.dumps([op, args], sort_keys=True, separators=(",", ":"), default=_plain)
    return hashlib.blake2b(body.encode(), key=secret, digest_size=20).hexdigest()


def _plain(value: Any) -> str:
    if isinstance(value, bytes):
        return "blake2b:" + hashlib.blake2b(value, digest_size=32).hexdigest()
    return str(value)


def once(st: ShardState, key: bytes, fp: str, field: str, run: Callable[[], Any],
         dump: Callable[[Any], dict], load: Callable[[dict], Any]) -> Any:
    """The first request under `key` runs and its answer is stored (`dump`, with the
    request's fingerprint); a retry gets it back (`load`); another request under the
    same key is refused, naming `field`. A row without a fingerprint (an offline
    scan's) is answered to any request."""
    row = get_retry(st, key)
    if row is not None:
        stored = json.loads(row)
        if stored.get("fp", fp) != fp:
            raise IdempotencyMismatch(f"this {field.replace('_', ' ')} was used with a different request",
                                      field=field, hint="use a new key for a new request")
        return load(stored)
    result = run()
    put_retry(st, key, json.dumps({**dump(result), "fp": fp}).encode())
    return result


def command_once(st: ShardState, cmd: Command, handler: Callable[..., Any], now: int) -> Any:
    """A command with an idempotency key (`cmd.idem`), scoped by the calling principal
    (DESIGN.md 4.6), or by channel for engine callers."""
    if not isinstance(cmd.idem, str) or not 1 <= len(cmd.idem) <= 128:
        raise InvalidArgument("must be 1-128 characters", field="idempotency_key")
    op = cmd.op
    scope = cmd.audit[0] if cmd.audit is not None else cmd.args.get("channel", "")
    return once(
        st, f"idem/{int(op)}/{scope}\0{cmd.idem}".encode(), fingerprint(op, cmd.args, st.holder_secret),
        "idempotency_key", lambda: handler(st, cmd.args, now),
        lambda r: {"result": serialise(r)}, lambda row: restore(st, op, row["result"]))


def serialise(result: Any) -> Any:
    """A command's answer as the JSON value its idempotency row stores."""
    if hasattr(result, "to_dict"):
        return result.to_dict()
    if is_dataclass(result):
        return asdict(result)
    if hasattr(result, "_asdict"):              # a NamedTuple record
        return result._asdict()
    if isinstance(result, list):
        return [serialise(x) for x in result]
    return result


def _confirmed(st: ShardState, data: dict) -> ConfirmResult:
    order = Order(**data["order"])
    lines = [(ln["first_ticket"], ln["first_ticket"] + ln["qty"] * ln["ncomp"], ln)
             for ln in order.lines]
    tickets = []
    for tid, product, persons, holder in data["tickets"]:
        ln = next(ln for lo, hi, ln in lines if lo <= tid < hi)
        seats = ln.get("seats")
        tickets.append(IssuedTicket(tid, product, persons,
                                    render_if_valid(st, tid, ln["key_id"], ln["signed"]), holder,
                                    seats[(tid - ln["first_ticket"]) // ln["ncomp"]] if seats else ""))
    return ConfirmResult(order, tickets)


def _product(d: dict) -> Product:
    return Product(**{**d, "zones": tuple(d["zones"]), "rule": EntryRule(**d["rule"]),
                      "channels": tuple(d["channels"])})


# command kind -> the record its stored answer is built into again (from the dict
# `serialise` stored, rows written before answers were records included)
_RESTORE: dict[int, Callable[[ShardState, Any], Any]] = {
    CommandKind.SECRETS: lambda st, d: d,
    CommandKind.KEY: lambda st, d: KeyResult(**d),
    CommandKind.VENUE: lambda st, d: Venue(**d),
    CommandKind.ZONE: lambda st, d: Zone(**d),
    CommandKind.GATE: lambda st, d: Gate(d["id"], d["venue"], d["zone"], GateMode(d["mode"])),
    CommandKind.PRODUCT: lambda st, d: _product(d),
    CommandKind.SLOTS: lambda st, d: [Slot(**s) for s in d],
    CommandKind.SLOT_CAPACITY: lambda st, d: SlotCounters(**d),
    CommandKind.ALLOTMENT: lambda st, d: AllotmentCounters(**d),
    CommandKind.CALENDAR: lambda st, d: CalendarResult(**d),
    CommandKind.PRICE_RULES: lambda st, d: PriceRules(d["venue"], d["product"],
                                                      [PriceRule(**r) for r in d["rules"]]),
    CommandKind.ID_LIMITS: lambda st, d: IdLimits(**d),
    CommandKind.PASS_DATES: lambda st, d: PassDates(**d),
    CommandKind.PACKAGE: lambda st, d: PackageSplit(d["venue"], d["product"],
                                                    [PackagePart(**x) for x in d["parts"]]),
    CommandKind.REFUND_POLICY: lambda st, d: RefundPolicy(d["venue"], d["product"],
                                                          [RefundTier(**t) for t in d["tiers"]]),
    CommandKind.BLACKLIST: lambda st, d: BlacklistResult(**d),
    CommandKind.COUPON: lambda st, d: Coupon(**{**d, "products": tuple(d["products"]),
                                                "channels": tuple(d["channels"])}),
    CommandKind.COUPON_CODES: lambda st, d: CouponBatch(**d),
    CommandKind.BOOKING: lambda st, d: BookingWindow(d["venue"], d["product"], d["opens_days"],
                                                     d["closes_minutes"], tuple(d["weekdays"])),
    CommandKind.PRICES: lambda st, d: PriceTable(d["venue"], d["product"],
                                                 [DatePrice(**p) for p in d["prices"]]),
    CommandKind.HOLD: lambda st, d: HoldResult.from_dict(d),
    CommandKind.RELEASE: lambda st, d: ReleaseResult(**d),
    CommandKind.EXPIRE: lambda st, d: ExpireResult(**d),
    CommandKind.CONFIRM: _confirmed,
    CommandKind.BUY: _confirmed,
    CommandKind.REFUND: lambda st, d: RefundResult(**d),
    CommandKind.CHANGE: changes.restore,
    CommandKind.BLOCK: lambda st, d: BlockResult(**d),
    CommandKind.FACE: lambda st, d: FaceResult(**d),
    CommandKind.OFFLINE_SCANS: lambda st, d: [UploadResult.from_dict(r) for r in d],
    CommandKind.NOTE: lambda st, d: AuditNote(**d),
    CommandKind.MEMBER_PROGRAM: lambda st, d: MemberProgram.from_dict(d),
    CommandKind.MEMBER: lambda st, d: MemberInfo.from_dict(d),
    CommandKind.POINTS: lambda st, d: PointsResult(**d),
    CommandKind.CONTROL: lambda st, d: LiveControls(**{
        **d, **{k: tuple(d[k]) for k in ("paused_zones", "paused_slots", "closed_zones", "closed_gates")},
        "zones": tuple(ZoneControl(**{**z, "fill_pct": tuple(z["fill_pct"])}) for z in d["zones"])}),
}


def restore(st: ShardState, op: CommandKind, data: Any) -> Any:
    """The result `serialise` stored, as the command first returned it."""
    return _RESTORE[op](st, data)
