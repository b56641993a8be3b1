"""The shard state machine: catalog, stock, holds, orders, tickets and scans.

ShardState.apply(cmd, now, batch) is the only way state changes. Each handler first
validates everything (raising a TurnstileError and changing nothing), then mutates
memory and appends the journal record (and rows) to the batch. The same handlers
replay the journal on open, with `replaying` set: then rows are not rewritten (they
were committed with the batch that made them) and no codes are rendered.
"""
from __future__ import annotations

import array
import base64
import hashlib
import heapq
import json
import os
from dataclasses import asdict, dataclass, is_dataclass
from typing import Any, Callable

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from . import _core
from .codes import TicketCodec, TicketKey, KEY_ACTIVE, KEY_ACCEPTING
from .errors import (AlreadyExists, CorruptData, FailedPrecondition, HoldNotActive,
                     IdempotencyMismatch, InvalidArgument, NotFound, PermissionDenied,
                     SlotClosed, SoldOut, TicketUsed)
from .journal import _HDR, Op, Command, LAST_CATALOG_OP, NO_TICKET, json_record, scan_record, \
    scan_batch_record, decode_scan_batch, hold_record, decode_hold
from .model import (ID_PATTERN, EntryRule, Gate, GateMode, HoldResult, IssuedTicket, Order, Product,
                    Reason, RefundResult, ScanResult, Slot, Venue, Zone, Direction, REASON_OF)

_VERIFY, _VERIFY_BATCH, _VERIFY_FACE = int(Op.VERIFY), int(Op.VERIFY_BATCH), int(Op.VERIFY_FACE)
_OP_SCAN = int(Op.SCAN)

_ID = ID_PATTERN
MAX_QTY = 10_000
MAX_TTL = 24 * 3600
DEFAULT_TTL = 15 * 60
U16 = 65535


class Batch:
    """What one writer batch will write in its one LMDB transaction."""

    __slots__ = ("seq", "records", "rows", "n_commands", "n_calls")

    def __init__(self, seq: int):
        self.seq = seq
        self.records: list[bytes] = []
        self.rows: dict[bytes, bytes | None] = {}
        self.n_commands = 0          # journaled commands (an expiry sweep counts too)
        self.n_calls = 0             # commands submitted, answered when the batch commits

    def blob(self) -> bytes:
        return b"".join(self.records)


@dataclass(frozen=True)
class ConfirmResult:
    order: Order
    tickets: list[IssuedTicket]

    def to_dict(self) -> dict:
        """Stored for idempotent retries without the codes: they are rendered again
        (deterministic), so an order of 100,000 tickets does not store 15 MB of text."""
        return {"order": vars(self.order),
                "tickets": [[t.ticket_id, t.product, t.persons, t.holder] for t in self.tickets]}


@dataclass(frozen=True)
class BatchScanResult:
    """Answers of a batch verify, in request order."""

    reasons: bytes              # Reason value per scan
    tickets: array.array        # code ticket id per scan, -1 if unreadable
    persons: array.array        # persons admitted or let out per scan

    def __len__(self) -> int:
        return len(self.reasons)

    def __getitem__(self, i: int) -> ScanResult:
        return ScanResult(Reason(self.reasons[i]), self.tickets[i], self.persons[i])


# -- argument checks -------------------------------------------------------------------
def _get(args: dict, name: str, kind, default: Any = ...) -> Any:
    if not isinstance(args, dict):
        raise InvalidArgument("request must be an object")
    v = args.get(name, default)
    if v is ...:
        raise InvalidArgument("is required", field=name)
    if kind is int and isinstance(v, bool) or not isinstance(v, kind):
        raise InvalidArgument(f"must be {getattr(kind, '__name__', kind)}", field=name)
    return v


def _int(args: dict, name: str, lo: int, hi: int, default: Any = ...) -> int:
    v = _get(args, name, int, default)
    if not lo <= v <= hi:
        raise InvalidArgument(f"must be between {lo} and {hi}, got {v}", field=name)
    return v


def _ident(args: dict, name: str, default: Any = ...) -> str:
    v = _get(args, name, str, default)
    if not _ID.match(v):
        raise InvalidArgument("must be 1-64 letters, digits or ._:@/- starting with a letter or digit",
                              field=name)
    return v


def _text(args: dict, name: str, default: Any = ..., limit: int = 200) -> str:
    v = _get(args, name, str, default)
    if len(v) > limit:
        raise InvalidArgument(f"longer than {limit} characters", field=name)
    return v


def fingerprint(op: int, args: Any, secret: bytes) -> str:
    """Keyed digest of a request (requests may carry ID numbers: never a plain hash)."""
    body = json.dumps([op, args], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(body.encode(), key=secret, digest_size=20).hexdigest()


def order_key(channel: str, order_id: str) -> bytes:
    """Order ids are the channel's own: unique per channel (NUL: ids may hold '/')."""
    return f"order/{channel}\0{order_id}".encode()


def offline_key(gate: Gate, nonce: str) -> bytes:
    """The row of a gate's scan id / offline nonce (ids may hold '/': NUL separates)."""
    return f"offline/{gate.venue}\0{gate.id}\0{nonce}".encode()


def mask_id(id_number: str) -> str:
    return id_number[:3] + "*" * max(len(id_number) - 7, 0) + id_number[-4:]


class ShardState:
    """All state of one shard; see the module docstring."""

    def __init__(self, shard_id: int, read_row: Callable[[bytes], bytes | None]):
        self.shard_id = shard_id
        self._read_committed = read_row
        self.slots = _core.Slots()
        self.tickets = _core.Tickets(self.slots)
        self.codec = TicketCodec(shard_id)
        self.venues: dict[str, Venue] = {}
        # zone, gate, product and slot ids are unique within their venue (DESIGN.md 4.1):
        # objects are keyed (venue, id); the index maps also hold the bare id while it
        # names one object on the shard (data dirs from before, single-venue callers)
        self.zones: dict[tuple[str, str], Zone] = {}
        self.gates: dict[tuple[str, str], Gate] = {}
        self.products: dict[tuple[str, str], Product] = {}
        self.slot_defs: dict[tuple[str, str], Slot] = {}
        self.venue_idx: dict[str, int] = {}
        self.zone_idx: dict[Any, int] = {}
        self.gate_idx: dict[Any, int] = {}
        self.product_idx: dict[Any, int] = {}
        self.product_list: list[Product] = []
        self.slot_idx: dict[Any, int] = {}
        self.slot_list: list[str] = []
        self.gate_list: list[Gate] = []
        self.gate_mode: list[int] = []
        self._names: dict[str, dict[str, list[str]]] = {k: {} for k in ("zone", "gate", "product", "slot")}
        self.allot_idx: dict[tuple[int, str], int] = {}
        self.holds: dict[int, dict] = {}
        self.expiry: list[tuple[int, int]] = []
        self.next_hold_id = 1
        self.holders: dict[str, list[int]] = {}
        # "venue\0face key" -> holder key: a face is enrolled for one venue's terminals
        # (a bare face key: enrolled shard-wide, before faces were per venue)
        self.faces: dict[str, str] = {}
        self.holder_secret = b""
        self.data_key = b""
        self.keyring = None        # engine.keyring.Keyring: seals SECRETS/KEY records (Shard.open)
        self.catalog_log: list[bytes] = []
        self.venue_list: list[str] = []
        self._known_channels: set[str] = set()
        self.replaying = False
        self.pending: dict[bytes, tuple[int, bytes | None]] = {}
        self.batch: Batch | None = None
        self._handlers = {
            Op.SECRETS: self._secrets, Op.KEY: self._key, Op.VENUE: self._venue,
            Op.ZONE: self._zone, Op.GATE: self._gate, Op.PRODUCT: self._product,
            Op.SLOTS: self._slots, Op.SLOT_CAPACITY: self._slot_capacity,
            Op.ALLOTMENT: self._allotment, Op.HOLD: self._hold, Op.RELEASE: self._release,
            Op.EXPIRE: self._expire, Op.CONFIRM: self._confirm, Op.REFUND: self._refund,
            Op.BLOCK: self._block, Op.NOTE: self._note, Op.OFFLINE_SCANS: self._offline_scans,
            Op.FACE: self._face,
        }
        self._scanners = {_VERIFY: self._verify, _VERIFY_BATCH: self._verify_batch,
                          int(Op.VERIFY_HOLDER): self._verify_holder, _VERIFY_FACE: self._verify_face}

    # -- the one entry point --------------------------------------------------------
    def apply(self, cmd: Command, now: int, batch: Batch) -> Any:
        """Apply one command at time `now`, journaling into `batch`; returns its result."""
        self.batch = batch
        op = cmd.op
        if _VERIFY <= op <= _VERIFY_FACE:
            what, gate, direction, at, persons = cmd.args
            if at is None:
                at = now
            elif type(at) is not int or not 0 <= at < 2**40:
                raise InvalidArgument("must be UTC seconds", field="at")
            if cmd.idem is not None:
                return self._scan_once(cmd, op, what, gate, direction, at, persons)
            if op == _VERIFY:
                return self._verify(what, gate, direction, at, persons)
            return self._scanners[op](what, gate, direction, at, persons)
        handler = self._handlers.get(op)
        if handler is None:
            raise InvalidArgument(f"unknown operation {op}")
        if not isinstance(cmd.args, dict):
            raise InvalidArgument("request must be an object")
        for k in cmd.args:
            if not isinstance(k, str) or k.startswith("_"):
                raise InvalidArgument("unknown field", field=str(k))
        if cmd.idem is None:
            return handler(cmd.args, now)
        if not isinstance(cmd.idem, str) or not 1 <= len(cmd.idem) <= 128:
            raise InvalidArgument("must be 1-128 characters", field="idempotency_key")
        # scoped by the calling principal (DESIGN.md 4.6); engine callers by channel
        scope = cmd.audit[0] if cmd.audit is not None else cmd.args.get("channel", "")
        return self._once(
            f"idem/{int(op)}/{scope}\0{cmd.idem}".encode(), fingerprint(op, cmd.args, self.holder_secret),
            "idempotency_key", lambda: handler(cmd.args, now),
            lambda r: {"result": self._serialise(r)}, lambda row: self._restore(op, row["result"]))

    def _once(self, key: bytes, fp: str, field: str, run: Callable[[], Any],
              dump: Callable[[Any], dict], load: Callable[[dict], Any]) -> Any:
        """Idempotency, the one mechanism: the first request under `key` runs and its
        answer is stored (`dump`, with the request's fingerprint); a retry gets it back
        (`load`); another request under the same key is refused, naming `field`. A row
        without a fingerprint (an offline scan's) is answered to any request."""
        row = self.get_row(key)
        if row is not None:
            stored = json.loads(row)
            if stored.get("fp", fp) != fp:
                raise IdempotencyMismatch(f"this {field.replace('_', ' ')} was used with a different request",
                                          field=field, hint="use a new key for a new request")
            return load(stored)
        result = run()
        self.put_row(key, json.dumps({**dump(result), "fp": fp}).encode())
        return result

    @classmethod
    def _serialise(cls, result: Any) -> Any:
        if hasattr(result, "to_dict"):
            return result.to_dict()
        if is_dataclass(result):
            return asdict(result)
        if isinstance(result, list):
            return [cls._serialise(x) for x in result]
        return result

    def _restore(self, op: Op, data: Any) -> Any:
        if op == Op.HOLD:
            return HoldResult(**data)
        if op == Op.CONFIRM:
            order = Order(**data["order"])
            lines = [(ln["first_ticket"], ln["first_ticket"] + ln["qty"] * ln["ncomp"], ln)
                     for ln in order.lines]
            tickets = []
            for tid, product, persons, holder in data["tickets"]:
                ln = next(ln for lo, hi, ln in lines if lo <= tid < hi)
                tickets.append(IssuedTicket(tid, product, persons,
                                            self.render_if_valid(tid, ln["key_id"], ln["signed"]),
                                            holder))
            return ConfirmResult(order, tickets)
        if op == Op.REFUND:
            return RefundResult(**data)
        return data

    def journal(self, rec: bytes, op: int) -> None:
        batch = self.batch
        batch.n_commands += 1
        if op <= LAST_CATALOG_OP:
            self.catalog_log.append(rec)
        if not self.replaying:
            batch.records.append(rec)

    # -- rows ------------------------------------------------------------------------
    def get_row(self, key: bytes) -> bytes | None:
        p = self.pending.get(key)
        if p is not None:
            return p[1]
        return self._read_committed(key)

    def put_row(self, key: bytes, value: bytes | None) -> None:
        if self.replaying:
            return
        self.batch.rows[key] = value
        self.pending[key] = (self.batch.seq, value)

    def committed(self, batch: Batch) -> None:
        """Rows of `batch` are durable: reads may go to storage again."""
        for k in batch.rows:
            p = self.pending.get(k)
            if p is not None and p[0] == batch.seq:
                del self.pending[k]

    # -- catalog ---------------------------------------------------------------------
    def _secrets(self, args: dict, now: int) -> None:
        """The holder secret and the ID-number data key, journaled sealed under the
        shard's data key (engine/keyring.py). A clear record (a data dir from before
        master keys) replays too, and is sealed for the snapshot that migrates it."""
        sealed = args.get("sealed")
        if sealed is not None:
            if not self.replaying:
                raise InvalidArgument("unknown field", field="sealed")
            args = self.keyring.open_json(sealed, b"turnstile/secrets")
        else:
            sealed = self.keyring.seal_json({"holder_secret": args["holder_secret"],
                                             "data_key": args["data_key"]}, b"turnstile/secrets")
        self.holder_secret = bytes.fromhex(args["holder_secret"])
        self.data_key = bytes.fromhex(args["data_key"])
        self.journal(json_record(Op.SECRETS, {"sealed": sealed}), Op.SECRETS)

    @staticmethod
    def new_secrets() -> dict:
        return {"holder_secret": os.urandom(16).hex(), "data_key": os.urandom(32).hex()}

    def _key(self, args: dict, now: int) -> dict:
        """Create, rotate, demote or retire a ticket key. A rotation makes a new key the
        issuing one and keeps the previous ones accepted; it is journaled as the explicit
        records it resolves to, so replay never generates key material."""
        if args.get("action") == "rotate":
            ids = sorted(self.codec.keys)
            new_id = next(((ids[-1] + 1 + i) % 256 for i in range(256)
                           if (ids[-1] + 1 + i) % 256 not in self.codec.keys), None) if ids else 0
            if new_id is None:
                raise FailedPrecondition("all 256 key ids are in use; retire old keys first")
            for kid, k in sorted(self.codec.keys.items()):
                if k.state == KEY_ACTIVE:
                    self._key({"key_id": kid, "state": KEY_ACCEPTING, "action": "demote"}, now)
            fresh = TicketKey.generate(new_id)
            return self._key({"key_id": new_id, "state": KEY_ACTIVE, "mac_key": fresh.mac_key.hex(),
                              "seed": fresh.seed.hex()}, now)
        key_id = _int(args, "key_id", 0, 255)
        state = _int(args, "state", 0, 2)
        old = self.codec.keys.get(key_id)
        # the MAC key and seed are journaled sealed under the shard's data key, bound to
        # the key id (engine/keyring.py); clear ones (from before master keys) replay too
        label = b"turnstile/key/%d" % key_id
        sealed = args.get("sealed")
        if sealed is not None:
            if not self.replaying:
                raise InvalidArgument("unknown field", field="sealed")
            args = {**args, **self.keyring.open_json(sealed, label)}
        if "mac_key" in args:
            if old is not None:
                raise AlreadyExists(f"ticket key {key_id} exists", field="key_id")
            try:
                mac, seed = bytes.fromhex(args["mac_key"]), bytes.fromhex(args["seed"])
            except (TypeError, ValueError, KeyError):
                raise InvalidArgument("mac_key and seed must be hex", field="mac_key") from None
            if len(mac) != 16 or len(seed) != 32:
                raise InvalidArgument("mac_key is 16 bytes, seed 32", field="mac_key")
            key = TicketKey(key_id, mac, seed, state)
        elif old is None:
            raise NotFound(f"no ticket key {key_id}", field="key_id")
        else:
            if state != KEY_ACTIVE and old.state == KEY_ACTIVE and not self.replaying and \
                    sum(k.state == KEY_ACTIVE for k in self.codec.keys.values()) == 1 and \
                    args.get("action") != "demote":
                raise FailedPrecondition("the only issuing key cannot be retired; rotate first",
                                         field="key_id")
            key = TicketKey(key_id, old.mac_key, old.seed, state)
        self.codec.set_key(key)
        rec = {k: v for k, v in args.items() if k not in ("action", "mac_key", "seed", "sealed")}
        if "mac_key" in args:
            rec["sealed"] = sealed or self.keyring.seal_json(
                {"mac_key": args["mac_key"], "seed": args["seed"]}, label)
        self.journal(json_record(Op.KEY, rec), Op.KEY)
        return {"key_id": key_id, "state": state}

    def _venue(self, args: dict, now: int) -> Venue:
        vid = _ident(args, "id")
        v = Venue(vid, _text(args, "name", vid), _int(args, "utc_offset_s", -14 * 3600, 14 * 3600, 8 * 3600))
        if vid in self.venues:
            raise AlreadyExists(f"venue {vid} exists", field="id")
        if len(self.venues) >= U16:
            raise FailedPrecondition("too many venues in this shard")
        self.venue_idx[vid] = len(self.venue_idx)
        self.venue_list.append(vid)
        self.venues[vid] = v
        self.journal(json_record(Op.VENUE, args), Op.VENUE)
        return v

    def _venue_of(self, args: dict, name: str = "venue") -> Venue:
        vid = args.get(name)
        v = self.venues.get(vid) if type(vid) is str else None
        if v is None:
            vid = _ident(args, name)            # a clear error for a malformed id
            raise NotFound(f"no venue {vid}", field=name)
        return v

    def _channel(self, args: dict) -> str:
        ch = args.get("channel")
        if ch not in self._known_channels:
            ch = _ident(args, "channel")
            if len(self._known_channels) < 10_000:
                self._known_channels.add(ch)
        return ch

    # -- names -----------------------------------------------------------------------
    def _name(self, kind: str, index: dict, key: tuple[str, str], idx: int) -> None:
        """Index a new zone/gate/product/slot by (venue, id), and by its bare id while
        that names one object on the shard."""
        index[key] = idx
        venues = self._names[kind].setdefault(key[1], [])
        venues.append(key[0])
        if len(venues) == 1:
            index[key[1]] = idx
        else:
            index.pop(key[1], None)

    def find(self, kind: str, index: dict, venue: Any, id_: Any, field: str) -> tuple[str, str]:
        """The (venue, id) key of a zone/gate/product/slot. Without a venue, the id must
        name exactly one on the shard."""
        if type(id_) is not str or not _ID.match(id_):
            raise InvalidArgument(f"must be a {kind} id: 1-64 letters, digits or ._:@/-, "
                                  "starting with a letter or digit", field=field)
        if venue is not None:
            if (venue, id_) not in index:
                raise NotFound(f"no {kind} {id_} in venue {venue}", field=field)
            return (venue, id_)
        venues = self._names[kind].get(id_)
        if not venues:
            raise NotFound(f"no {kind} {id_}", field=field)
        if len(venues) > 1:
            raise InvalidArgument(f"{kind} {id_} exists in {len(venues)} venues: name the venue",
                                  field=field)
        return (venues[0], id_)

    def _venue_arg(self, args: dict) -> str | None:
        """The optional `venue` of a command naming a zone, gate or slot."""
        return self._venue_of(args).id if args.get("venue") is not None else None

    def _zone(self, args: dict, now: int) -> Zone:
        v = self._venue_of(args)
        zid = _ident(args, "id")
        z = Zone(zid, v.id, _text(args, "name", zid), _int(args, "live_capacity", 0, 10**9, 0),
                 bool(_get(args, "enforce_exit", bool, False)))
        if (v.id, zid) in self.zones:
            raise AlreadyExists(f"zone {zid} exists in venue {v.id}", field="id")
        if len(self.zones) >= U16:
            raise FailedPrecondition("too many zones in this shard")
        idx = len(self.zones)
        self._name("zone", self.zone_idx, (v.id, zid), idx)
        self.zones[(v.id, zid)] = z
        self.tickets.set_zone(idx, self.venue_idx[v.id], v.utc_offset_s, z.live_capacity, z.enforce_exit)
        self.journal(json_record(Op.ZONE, args), Op.ZONE)
        return z

    def _zone_of(self, args: dict, name: str = "zone", venue: str | None = None) -> Zone:
        return self.zones[self.find("zone", self.zone_idx, venue, args.get(name), name)]

    def _gate(self, args: dict, now: int) -> Gate:
        z = self._zone_of(args, venue=self._venue_arg(args))
        gid = _ident(args, "id")
        mode = GateMode(_int(args, "mode", 1, 3, 3))
        if (z.venue, gid) in self.gates:
            raise AlreadyExists(f"gate {gid} exists in venue {z.venue}", field="id")
        if len(self.gates) >= U16:
            raise FailedPrecondition("too many gates in this shard")
        g = Gate(gid, z.venue, z.id, mode)
        idx = len(self.gates)
        self._name("gate", self.gate_idx, (z.venue, gid), idx)
        self.gates[(z.venue, gid)] = g
        self.gate_list.append(g)
        self.gate_mode.append(int(mode))
        self.tickets.set_gate(idx, self.zone_idx[(z.venue, z.id)], self.venue_idx[z.venue])
        self.journal(json_record(Op.GATE, args), Op.GATE)
        return g

    def _product(self, args: dict, now: int) -> Product:
        v = self._venue_of(args)
        pid = _ident(args, "id")
        zones = _get(args, "zones", list)
        if not 1 <= len(zones) <= _core.MAX_COMPONENTS:
            raise InvalidArgument("a product admits 1 to 8 zones", field="zones")
        for i, zid in enumerate(zones):
            self.find("zone", self.zone_idx, v.id, zid, f"zones[{i}]")
        if len(set(zones)) != len(zones):
            raise InvalidArgument("a zone is listed twice", field="zones")
        r = _get(args, "rule", dict, {})
        try:
            rule = EntryRule(
                max_entries=_int(r, "max_entries", 0, U16, 1),
                daily_entries=_int(r, "daily_entries", 0, U16, 0),
                reentry=bool(_get(r, "reentry", bool, False)),
                valid_days=_int(r, "valid_days", 1, 3660, 1),
                slot_grace_s=_int(r, "slot_grace_s", 0, 86400, 1800))
        except InvalidArgument as e:
            raise InvalidArgument(e.message, field=f"rule.{e.field}") from None
        cp = _get(args, "channel_prices", dict, {})
        for ch, price in cp.items():
            if not isinstance(price, int) or isinstance(price, bool) or not 0 <= price <= 10**9:
                raise InvalidArgument("must be an amount in fen", field=f"channel_prices.{ch}")
        channels = _get(args, "channels", list, [])
        if not all(isinstance(c, str) and _ID.match(c) for c in channels):
            raise InvalidArgument("must be channel ids", field="channels")
        p = Product(pid, v.id, _text(args, "name", pid), tuple(zones), rule,
                    _int(args, "price_fen", 0, 10**9, 0), dict(cp), tuple(channels),
                    bool(_get(args, "real_name", bool, False)), _int(args, "max_group", 1, U16, 1),
                    bool(_get(args, "refundable", bool, True)), _int(args, "refund_fee_pct", 0, 100, 0))
        if (v.id, pid) in self.products:
            raise AlreadyExists(f"product {pid} exists in venue {v.id}", field="id")
        if len(self.products) >= U16:
            raise FailedPrecondition("too many products in this shard")
        idx = len(self.products)
        self._name("product", self.product_idx, (v.id, pid), idx)
        self.products[(v.id, pid)] = p
        self.product_list.append(p)
        self.tickets.set_product(idx, self.venue_idx[v.id], [self.zone_idx[(v.id, z)] for z in zones],
                                 rule.max_entries, rule.daily_entries, rule.reentry, rule.slot_grace_s)
        self.journal(json_record(Op.PRODUCT, args), Op.PRODUCT)
        return p

    def _slots(self, args: dict, now: int) -> list[Slot]:
        items = _get(args, "slots", list)
        if not 1 <= len(items) <= 100_000:
            raise InvalidArgument("between 1 and 100000 slots at once", field="slots")
        new: list[Slot] = []
        seen = set()
        venue = self._venue_arg(args)
        for i, s in enumerate(items):
            f = f"slots[{i}]"
            try:
                z = self._zone_of(s, venue=venue)
                sid = _ident(s, "id")
                day = _int(s, "day", 0, U16)
                start = _int(s, "start", 0, 2**40)
                end = _int(s, "end", start + 1, 2**40)
                cap = _int(s, "capacity", 0, 10**9)
            except (InvalidArgument, NotFound) as e:
                raise type(e)(e.message, field=f"{f}.{e.field}") from None
            if (z.venue, sid) in self.slot_defs or (z.venue, sid) in seen:
                raise AlreadyExists(f"slot {sid} exists in venue {z.venue}", field=f"{f}.id")
            seen.add((z.venue, sid))
            new.append(Slot(sid, z.id, day, start, end, cap, z.venue))
        for s in new:
            idx = self.slots.add(self.zone_idx[(s.venue, s.zone)], s.day, s.start, s.end, s.capacity)
            self._name("slot", self.slot_idx, (s.venue, s.id), idx)
            self.slot_list.append(s.id)
            self.slot_defs[(s.venue, s.id)] = s
        self.journal(json_record(Op.SLOTS, args), Op.SLOTS)
        return new

    def _slot_of(self, args: dict, name: str = "slot") -> int:
        return self.slot_idx[self.find("slot", self.slot_idx, self._venue_arg(args), args.get(name), name)]

    def _slot_capacity(self, args: dict, now: int) -> dict:
        idx = self._slot_of(args)
        cap = _int(args, "capacity", 0, 10**9)
        if not self.slots.set_capacity(idx, cap):
            raise FailedPrecondition("capacity below stock already sold, held or allotted",
                                     field="capacity")
        self.journal(json_record(Op.SLOT_CAPACITY, args), Op.SLOT_CAPACITY)
        return self.slots.slot(idx)

    def _allotment(self, args: dict, now: int) -> dict:
        idx = self._slot_of(args)
        channel = _ident(args, "channel")
        cap = _int(args, "capacity", 0, 10**9)
        a = self.allot_idx.get((idx, channel))
        if a is None:
            a = self.slots.add_allotment(idx, cap)
            if a < 0:
                raise SoldOut("the slot's free pool is smaller than the allotment", field="capacity")
            self.allot_idx[(idx, channel)] = a
        elif not self.slots.set_allotment(a, cap):
            raise FailedPrecondition("allotment below its sold and held stock, or the pool is short",
                                     field="capacity")
        self.journal(json_record(Op.ALLOTMENT, args), Op.ALLOTMENT)
        return self.slots.allotment(a)

    # -- sales -----------------------------------------------------------------------
    def _hold(self, args: dict, now: int) -> HoldResult:
        channel = self._channel(args)
        venue = self._venue_of(args)
        ttl = _int(args, "ttl_s", 1, MAX_TTL, DEFAULT_TTL)
        lines = self._lines(channel, venue, args, now)
        # take stock line by line, component by component; undo all if any is short
        taken = []
        for i, ln in enumerate(lines):
            need = ln["qty"] * ln["group"]
            for s, a in zip(ln["slots"], ln["allots"]):
                if not self.slots.take(s, a, need):
                    for ts, ta, tq in taken:
                        self.slots.release(ts, ta, tq)
                    raise SoldOut(f"slot {self.slot_list[s]} has not {need} left"
                                  + (f" in the {channel} allotment" if a >= 0 else ""),
                                  field=f"items[{i}].qty")
                taken.append((s, a, need))
        hid = self.next_hold_id
        self.next_hold_id += 1
        amount = 0
        for ln in lines:
            amount += ln["price"] * ln["qty"] * ln["group"]
        hold = {"id": hid, "channel": channel, "venue": venue.id, "expires_at": now + ttl,
                "created": now, "amount": amount, "lines": lines}
        self.holds[hid] = hold
        heapq.heappush(self.expiry, (now + ttl, hid))
        self.journal(hold_record(hold, self.venue_idx[venue.id]), Op.HOLD)
        return self._hold_result(hold)

    def quote(self, channel: str, venue_id: str, items: Any, now: int) -> tuple[list[dict], int]:
        """What a hold of `items` would cost the channel now, by the same rules as a
        hold (validated alike); takes no stock. ([{product, slots, qty, group,
        unit_price_fen}], total fen)"""
        venue = self._venue_of({"venue": venue_id})
        lines = self._lines(self._channel({"channel": channel}), venue, {"items": items}, now)
        return self._hold_result({"id": 0, "expires_at": 0, "amount": 0, "lines": lines}).items, \
            sum(ln["price"] * ln["qty"] * ln["group"] for ln in lines)

    def _lines(self, channel: str, venue: Venue, args: dict, now: int) -> list[dict]:
        """The validated item lines of a hold (or quote): product, stock per component,
        price for the channel."""
        items = _get(args, "items", list)
        if not 1 <= len(items) <= 100:
            raise InvalidArgument("between 1 and 100 items", field="items")
        lines = []
        for i, it in enumerate(items):
            f = f"items[{i}]"
            try:
                pid = it.get("product") if type(it) is dict else None
                if (venue.id, pid) not in self.products:
                    pid = _ident(it, "product")
                qty = _int(it, "qty", 1, MAX_QTY, 1)
                group = _int(it, "group", 1, U16, 1)
                slot_ids = _get(it, "slots", list)
            except InvalidArgument as e:
                raise InvalidArgument(e.message, field=f"{f}.{e.field}") from None
            p = self.products.get((venue.id, pid))
            if p is None:
                raise NotFound(f"no product {pid} in venue {venue.id}", field=f"{f}.product")
            if p.channels and channel not in p.channels:
                raise PermissionDenied(f"channel {channel} may not sell {pid}", field="channel")
            if group > p.max_group:
                raise InvalidArgument(f"{pid} admits at most {p.max_group} per code", field=f"{f}.group")
            if len(slot_ids) != len(p.zones):
                raise InvalidArgument(f"{pid} needs one slot for each of its {len(p.zones)} zones",
                                      field=f"{f}.slots")
            sidx, allots = [], []
            for c, sid in enumerate(slot_ids):
                s = self.slot_defs.get((venue.id, sid)) if isinstance(sid, str) else None
                if s is None:
                    self.find("slot", self.slot_idx, venue.id, sid, f"{f}.slots[{c}]")
                if s.zone != p.zones[c]:
                    raise InvalidArgument(f"slot {sid} is not in zone {p.zones[c]}", field=f"{f}.slots[{c}]")
                if s.end <= now:
                    raise SlotClosed(f"slot {sid} ended at {s.end}: it can no longer be sold",
                                     field=f"{f}.slots[{c}]")
                k = self.slot_idx[(venue.id, sid)]
                sidx.append(k)
                allots.append(self.allot_idx.get((k, channel), -1))
            if len(slot_ids) > 1:
                days = [self.slot_defs[(venue.id, s)].day for s in slot_ids]
                if max(days) - days[0] >= p.rule.valid_days or min(days) < days[0]:
                    raise InvalidArgument("slots fall outside the ticket's validity", field=f"{f}.slots")
            lines.append({"p": self.product_idx[(venue.id, pid)], "qty": qty, "group": group, "slots": sidx,
                          "allots": allots, "price": p.price_for(channel)})
        return lines

    def _replay_hold(self, payload) -> None:
        hold, venue = decode_hold(payload)
        hold["venue"] = self.venue_list[venue]
        for ln in hold["lines"]:
            need = ln["qty"] * ln["group"]
            for s, a in zip(ln["slots"], ln["allots"]):
                if not self.slots.take(s, a, need):
                    raise CorruptData(f"replayed hold {hold['id']} does not fit its slot")
        self.holds[hold["id"]] = hold
        self.next_hold_id = max(self.next_hold_id, hold["id"] + 1)
        heapq.heappush(self.expiry, (hold["expires_at"], hold["id"]))
        self.batch.n_commands += 1

    def _hold_result(self, hold: dict) -> HoldResult:
        return HoldResult(hold["id"], hold["expires_at"], hold["amount"], [
            {"product": self.product_list[ln["p"]].id, "qty": ln["qty"], "group": ln["group"],
             "slots": [self.slot_list[s] for s in ln["slots"]], "unit_price_fen": ln["price"]}
            for ln in hold["lines"]])

    def _active_hold(self, args: dict, now: int) -> dict:
        hid = _int(args, "hold_id", 1, 2**62)
        channel = self._channel(args)
        hold = self.holds.get(hid)
        if hold is not None and hold["expires_at"] <= now:
            hold = None                 # due: the next EXPIRE releases its stock
        if hold is None:
            if hid < self.next_hold_id:
                raise HoldNotActive(f"hold {hid} expired, was released or confirmed", field="hold_id")
            raise NotFound(f"no hold {hid}", field="hold_id")
        if hold["channel"] != channel:
            raise NotFound(f"no hold {hid} for channel {channel}", field="hold_id")
        return hold

    def _drop_hold(self, hold: dict, status: str) -> None:
        for ln in hold["lines"]:
            need = ln["qty"] * ln["group"]
            for s, a in zip(ln["slots"], ln["allots"]):
                self.slots.release(s, a, need)
        del self.holds[hold["id"]]
        self._end_hold(hold, status)

    def _end_hold(self, hold: dict, status: str, order_id: str = "") -> None:
        """Keep what a hold was and what became of it (GetHold after it ended)."""
        self.put_row(b"hold/%d" % hold["id"], json.dumps({
            "status": status, "order_id": order_id, "channel": hold["channel"],
            "venue": hold["venue"], **self._hold_result(hold).to_dict()}).encode())

    def hold_info(self, hold_id: int, now: int) -> dict:
        """A hold as its channel may read it back: status active, confirmed, released
        or expired, with its items."""
        hold = self.holds.get(hold_id)
        if hold is not None:
            status = "expired" if hold["expires_at"] <= now else "active"
            return {"status": status, "order_id": "", "channel": hold["channel"],
                    "venue": hold["venue"], **self._hold_result(hold).to_dict()}
        row = self.get_row(b"hold/%d" % hold_id)
        if row is None:
            raise NotFound(f"no hold {hold_id}", field="hold_id")
        return json.loads(row)

    def _release(self, args: dict, now: int) -> dict:
        hold = self._active_hold(args, now)
        self._drop_hold(hold, "released")
        self.journal(json_record(Op.RELEASE, args), Op.RELEASE)
        return {"hold_id": hold["id"], "released": True}

    def due_expiry(self, now: int) -> bool:
        return bool(self.expiry) and self.expiry[0][0] <= now

    def _expire(self, args: dict, now: int) -> dict:
        at = args.get("_at", now)          # set in journal records only
        n = 0
        while self.expiry and self.expiry[0][0] <= at:
            exp, hid = heapq.heappop(self.expiry)
            hold = self.holds.get(hid)
            if hold is not None and hold["expires_at"] == exp:
                self._drop_hold(hold, "expired")
                n += 1
        self.journal(json_record(Op.EXPIRE, {"_at": at}), Op.EXPIRE)
        return {"expired": n}

    def _confirm(self, args: dict, now: int) -> ConfirmResult:
        order_id = _ident(args, "order_id")
        pay = _get(args, "payment", dict)
        try:
            method = _ident(pay, "method")
            reference = _text(pay, "reference", "", 128)
            amount = _int(pay, "amount_fen", 0, 10**12)
        except InvalidArgument as e:
            raise InvalidArgument(e.message, field=f"payment.{e.field}") from None
        signed = bool(_get(args, "signed", bool, True))
        holders = _get(args, "holders", list, [])
        channel = self._channel(args)
        if self._order_row(channel, order_id)[1] is not None:
            raise AlreadyExists(f"order {order_id} exists", field="order_id",
                                hint="retry with the same idempotency key to get the first answer")
        hold = self._active_hold(args, now)
        for ln in hold["lines"]:
            for s in ln["slots"]:
                if self.slots.slot(s)["end"] <= now:
                    raise SlotClosed(f"slot {self.slot_list[s]} ended while held: it can no longer "
                                     "be sold", field="hold_id", hint="release the hold")
        key = order_key(channel, order_id)
        if amount != hold["amount"]:
            raise InvalidArgument(f"paid {amount} fen, the hold costs {hold['amount']} fen",
                                  field="payment.amount_fen")
        # holder ID numbers per line for real-name products (or given anyway)
        per_line: list[list[str]] = []
        for i, ln in enumerate(hold["lines"]):
            p = self.product_list[ln["p"]]
            ids = holders[i] if i < len(holders) else []
            if not isinstance(ids, list) or not all(isinstance(x, str) and 6 <= len(x) <= 32
                                                    and x.isalnum() for x in ids):
                raise InvalidArgument("must be lists of ID numbers", field=f"holders[{i}]")
            if (p.real_name or ids) and len(ids) != ln["qty"]:
                raise InvalidArgument(f"{p.id} is real-name: one ID number per ticket",
                                      field=f"holders[{i}]")
            per_line.append([x.upper() for x in ids])
        # the journal carries holder keys, never ID numbers
        hkeys = [[self.holder_key(x) for x in ids] for ids in per_line]
        self._end_hold(hold, "confirmed", order_id)
        self._issue(hold, hkeys)
        key_id = self.codec.issuing_key if self.codec.keys else -1
        lines, tickets = [], []
        for ln, ids, keys in zip(hold["lines"], per_line, hkeys):
            p = self.product_list[ln["p"]]
            lines.append({"product": p.id, "qty": ln["qty"], "group": ln["group"],
                          "slots": [self.slot_list[s] for s in ln["slots"]], "allots": ln["allots"],
                          "unit_price_fen": ln["price"], "first_ticket": ln["first"],
                          "ncomp": len(p.zones), "key_id": key_id, "signed": signed})
            for k in range(ln["qty"]):
                tid = ln["first"] + k * len(p.zones)
                code = "" if self.replaying else self.render(tid, key_id, signed)
                tickets.append(IssuedTicket(tid, p.id, ln["group"], code,
                                            mask_id(ids[k]) if ids else ""))
        order = Order(order_id, hold["channel"], hold["venue"], hold["id"], amount, 0,
                      {"method": method, "reference": reference, "amount_fen": amount},
                      lines, [], now)
        if not self.replaying:
            row = dict(vars(order))
            row["holders"] = [[self.seal(x) for x in ids] for ids in per_line]
            self.put_row(key, json.dumps(row).encode())
        self.journal(json_record(Op.CONFIRM, {"hold_id": hold["id"], "holder_keys": hkeys,
                                              "_now": now}), Op.CONFIRM)
        return ConfirmResult(order, tickets)

    def _issue(self, hold: dict, hkeys: list[list[str]]) -> None:
        """Issue the tickets of a hold and turn its held stock into sold stock."""
        for ln, keys in zip(hold["lines"], hkeys):
            p = self.product_list[ln["p"]]
            first_day = self.slots.slot(ln["slots"][0])["day"]
            ln["first"] = self.tickets.issue(ln["p"], ln["group"], first_day,
                                             first_day + p.rule.valid_days - 1, ln["slots"], ln["qty"])
            need = ln["qty"] * ln["group"]
            for s, a in zip(ln["slots"], ln["allots"]):
                self.slots.sell(s, a, need)
            for k, hk in enumerate(keys):
                self.holders.setdefault(hk, []).append(ln["first"] + k * len(p.zones))
        del self.holds[hold["id"]]

    def render(self, ticket_id: int, key_id: int | None = None, signed: bool = True) -> str:
        """The text code of the ticket (code) whose id is ticket_id."""
        rec = self.tickets.record(ticket_id)
        p = self.product_list[rec["product"]]
        slots = [self.tickets.record(ticket_id + c)["slot"] for c in range(len(p.zones))]
        return self.codec.issue(ticket_id, rec["product"], rec["first_day"], rec["last_day"],
                                rec["group"], tuple(slots), real_name=p.real_name, signed=signed,
                                key_id=None if key_id is None or key_id < 0 else key_id)

    def render_if_valid(self, ticket_id: int, key_id: int, signed: bool) -> str:
        """The code, or "" if its key has been retired since (such codes read FORGED)."""
        if key_id >= 0 and key_id not in self.codec.keys:
            return ""
        return self.render(ticket_id, key_id, signed)

    def holder_key(self, id_number: str) -> str:
        return hashlib.blake2b(id_number.upper().encode(), key=self.holder_secret,
                               digest_size=16).hexdigest()

    def seal(self, id_number: str) -> str:
        nonce = os.urandom(12)
        return base64.b64encode(nonce + AESGCM(self.data_key).encrypt(nonce, id_number.encode(), None)).decode()

    def unseal(self, sealed: str) -> str:
        raw = base64.b64decode(sealed)
        return AESGCM(self.data_key).decrypt(raw[:12], raw[12:], None).decode()

    def _order_row(self, channel: str, order_id: str) -> tuple[bytes, bytes | None]:
        """(key, row) of a channel's order; orders confirmed before order ids were
        scoped by channel are found under their bare id."""
        key = order_key(channel, order_id)
        row = self.get_row(key)
        if row is None:
            old = self.get_row(b"order/" + order_id.encode())
            if old is not None and json.loads(old)["channel"] == channel:
                return b"order/" + order_id.encode(), old
        return key, row

    def get_order(self, order_id: str, channel: str) -> Order:
        if type(order_id) is not str or not _ID.match(order_id):
            raise InvalidArgument("must be 1-64 letters, digits or ._:@/-", field="order_id")
        row = self._order_row(channel, order_id)[1]
        if row is None:
            raise NotFound(f"no order {order_id} of channel {channel}", field="order_id")
        return Order.from_row(json.loads(row))

    def _refund(self, args: dict, now: int) -> RefundResult:
        if "_returns" in args:      # replay: the journal carries the resolved effects
            for tid in args["tickets"]:
                self.tickets.void(tid)
            for s, a, q in args["_returns"]:
                self.slots.unsell(s, a, q)
            self.journal(json_record(Op.REFUND, args), Op.REFUND)
            return RefundResult(args["order_id"], args["refund_id"], args["tickets"], 0, 0)
        order_id = _ident(args, "order_id")
        refund_id = _ident(args, "refund_id")
        want = _get(args, "tickets", list, [])
        channel = self._channel(args)
        key, raw = self._order_row(channel, order_id)
        if raw is None:
            raise NotFound(f"no order {order_id} of channel {channel}", field="order_id")
        row = json.loads(raw)
        if any(r["refund_id"] == refund_id for r in row["refunds"]):
            raise AlreadyExists(f"refund {refund_id} exists", field="refund_id")
        by_ticket = {}
        for ln in row["lines"]:
            for k in range(ln["qty"]):
                by_ticket[ln["first_ticket"] + k * ln["ncomp"]] = ln
        refunded = {t for r in row["refunds"] for t in r["tickets"]}
        if want:
            for i, t in enumerate(want):
                if not isinstance(t, int) or t not in by_ticket:
                    raise InvalidArgument(f"ticket {t!r} is not in order {order_id}", field=f"tickets[{i}]")
            if len(set(want)) != len(want):
                raise InvalidArgument("a ticket is listed twice", field="tickets")
            for i, t in enumerate(want):
                st = self.tickets.code_state(t)
                if t in refunded or st & (_core.STATE_USED | _core.STATE_VOIDED):
                    raise TicketUsed(f"ticket {t} was used or refunded", field=f"tickets[{i}]")
            chosen = list(want)
        else:
            chosen = [t for t in by_ticket if t not in refunded
                      and not self.tickets.code_state(t) & (_core.STATE_USED | _core.STATE_VOIDED)]
            if not chosen:
                raise TicketUsed(f"order {order_id} has no unused tickets left", field="tickets")
        for t in chosen:
            p = self.products[(row["venue"], by_ticket[t]["product"])]
            if not p.refundable:
                raise FailedPrecondition(f"{p.id} is not refundable", field="tickets")
        amount = fee = 0
        returns = []
        for t in chosen:
            ln = by_ticket[t]
            p = self.products[(row["venue"], ln["product"])]
            price = ln["unit_price_fen"] * ln["group"]
            f = (price * p.refund_fee_pct + 50) // 100
            amount += price - f
            fee += f
            for sid, a in zip(ln["slots"], ln["allots"]):
                returns.append([self.slot_idx[(row["venue"], sid)], a, ln["group"]])
        for t in chosen:
            self.tickets.void(t)
        for s, a, q in returns:
            self.slots.unsell(s, a, q)
        result = RefundResult(order_id, refund_id, chosen, amount, fee)
        row["refunds"].append({"refund_id": refund_id, "tickets": chosen, "amount_fen": amount,
                               "fee_fen": fee, "at": now})
        row["refunded_fen"] += amount
        self.put_row(key, json.dumps(row).encode())
        self.journal(json_record(Op.REFUND, {"order_id": order_id, "refund_id": refund_id,
                                             "tickets": chosen, "_returns": returns}), Op.REFUND)
        return result

    def _note(self, args: dict, now: int) -> dict:
        """Changes nothing: carries the audit record of a change made outside the shard
        (principals, API keys), with that change's result."""
        result = _text(args, "result", "OK", 64)
        return {"audit_result": result}

    def _block(self, args: dict, now: int) -> dict:
        tid = _int(args, "ticket_id", 0, 2**32 - 2)
        blocked = bool(_get(args, "blocked", bool, True))
        if not self.tickets.is_code(tid):
            raise NotFound(f"no ticket {tid}", field="ticket_id")
        self.tickets.set_blocked(tid, blocked)
        self.journal(json_record(Op.BLOCK, args), Op.BLOCK)
        return {"ticket_id": tid, "blocked": blocked}

    def face_key(self, face_token: Any) -> str:
        if not isinstance(face_token, str) or not 8 <= len(face_token) <= 128 \
                or not face_token.isprintable():
            raise InvalidArgument("must be 8-128 printable characters", field="face_token")
        return hashlib.blake2b(face_token.encode(), key=self.holder_secret, digest_size=16,
                               person=b"turnstile-face").hexdigest()

    def _face(self, args: dict, now: int) -> dict:
        """Enroll or remove a face token. Journaled as keyed hashes only, so replay
        needs neither the token nor the ID number."""
        if self.replaying:
            venue, fk, hk = args.get("venue", ""), args["face_key"], args["holder_key"]
        else:
            # enrolled for a holder of the caller's venue only, for that venue's face
            # terminals only: a face token can't be bound to a stranger's tickets, nor
            # tell who holds tickets elsewhere, nor touch another venue's enrolment
            venue = self._venue_of(args).id
            fk = self.face_key(args.get("face_token"))
            id_number = args.get("id_number")
            if id_number is None:
                if f"{venue}\0{fk}" not in self.faces:
                    raise NotFound("no such face token enrolled", field="face_token")
                hk = None
            elif not isinstance(id_number, str) or not 6 <= len(id_number) <= 32 \
                    or not id_number.isalnum():
                raise InvalidArgument("must be an ID number", field="id_number")
            else:
                hk = self.holder_key(id_number)
                if not self._holds_in(hk, venue):
                    raise NotFound(f"the holder has no ticket of venue {venue}", field="id_number")
        key = f"{venue}\0{fk}" if venue else fk
        if hk is None:
            self.faces.pop(key, None)
        else:
            self.faces[key] = hk
        self.journal(json_record(Op.FACE, {"venue": venue, "face_key": fk, "holder_key": hk}), Op.FACE)
        if self.replaying:
            return {}
        id_number = args.get("id_number")
        return {"enrolled": hk is not None,
                "holder": mask_id(id_number.upper()) if id_number else "",
                "tickets": self._holds_in(hk, args["venue"]) if hk else 0}

    def _holds_in(self, hk: str, venue: str) -> int:
        """How many tickets of `venue` the holder has."""
        return sum(self.product_list[self.tickets.record(t)["product"]].venue == venue
                   for t in self.holders.get(hk, ()))

    # -- scans -----------------------------------------------------------------------
    def gate_index(self, gate: Any, direction: int) -> int:
        """The index of a gate named by its id (unique on the shard) or (venue, id)."""
        if type(gate) is tuple and len(gate) == 2 and type(gate[0]) is str:
            idx = self.gate_idx[self.find("gate", self.gate_idx, self._venue_of({"venue": gate[0]}).id,
                                          gate[1], "gate")]
        else:
            idx = self.gate_idx[self.find("gate", self.gate_idx, None, gate, "gate")]
        if direction not in (1, 2):
            raise InvalidArgument("must be IN (1) or OUT (2)", field="direction")
        if not self.gate_mode[idx] & direction:
            raise InvalidArgument(f"gate {self.gate_list[idx].id} does not scan {Direction(direction).name}",
                                  field="direction")
        return idx

    @staticmethod
    def _persons(persons: Any) -> int:
        if not isinstance(persons, int) or isinstance(persons, bool) or not 0 <= persons <= U16:
            raise InvalidArgument("must be 0 (the whole group) to 65535", field="persons")
        return persons

    def _scan_once(self, cmd: Command, op: int, what: Any, gate: Any, direction: int, at: int,
                   persons: int) -> ScanResult | BatchScanResult:
        """A scan (or batch) with the gate's own id for it: decided once; a retry after a
        lost answer gets the first answer, not ALREADY_USED. A single scan's id shares
        the key space of offline nonces (`offline/<gate>/<id>`), so a scan decided online
        whose answer the gate never saw, then queued offline under the same id, uploads
        as DUPLICATE instead of a false conflict."""
        field = "batch_id" if op == _VERIFY_BATCH else "scan_id"
        scan_id = _ident({field: cmd.idem}, field)
        fp = fingerprint(op, list(cmd.args), self.holder_secret)
        run = lambda: self._scanners[op](what, gate, direction, at, persons)   # noqa: E731
        if op == _VERIFY_BATCH:
            return self._once(
                f"scanbatch/{cmd.audit[0] if cmd.audit else ''}\0{scan_id}".encode(), fp, field, run,
                lambda r: {"reasons": base64.b64encode(r.reasons).decode(),
                           "tickets": base64.b64encode(r.tickets.tobytes()).decode(),
                           "persons": base64.b64encode(r.persons.tobytes()).decode()},
                lambda row: BatchScanResult(base64.b64decode(row["reasons"]),
                                            array.array("q", base64.b64decode(row["tickets"])),
                                            array.array("i", base64.b64decode(row["persons"]))))
        g = self.gate_list[self.gate_index(gate, direction)]
        # the row an offline upload of the same scan reads (_offline_scans)
        return self._once(
            offline_key(g, scan_id), fp, field, run,
            lambda r: {"nonce": scan_id, "status": "APPLIED", "reason": int(r.reason),
                       "ticket_id": r.ticket, "persons": r.persons},
            lambda row: ScanResult(REASON_OF[row["reason"]], row["ticket_id"], row["persons"]))

    def _verify(self, text: Any, gate: str, direction: int, at: int, persons: int) -> ScanResult:
        try:
            g = self.gate_idx.get(gate)
        except TypeError:               # not hashable: gate_index says what is wrong
            g = None
        if g is None or direction not in (1, 2) or not self.gate_mode[g] & direction:
            g = self.gate_index(gate, direction)         # raises the precise error
        if type(persons) is not int or not 0 <= persons <= U16:
            persons = self._persons(persons)
        if type(text) is not str:
            raise InvalidArgument("must be a string", field="code")
        reason, base, k = self.tickets.verify(self.codec.core, text, self.shard_id, g,
                                              direction, at, persons)
        batch = self.batch
        batch.n_commands += 1
        batch.records.append(scan_record(NO_TICKET if base < 0 else base, g, direction, persons,
                                         at, reason))
        return ScanResult(REASON_OF[reason], base, k)

    def _verify_holder(self, id_number: Any, gate: str, direction: int, at: int,
                       persons: int) -> ScanResult:
        """Verify by a real-name holder's ID number (an ID-card reader)."""
        g = self.gate_index(gate, direction)
        persons = self._persons(persons)
        if not isinstance(id_number, str) or not 6 <= len(id_number) <= 32:
            raise InvalidArgument("must be an ID number", field="id_number")
        return self._verify_holder_key(self.holder_key(id_number), g, direction, at, persons)

    def _verify_face(self, face_token: Any, gate: str, direction: int, at: int,
                     persons: int) -> ScanResult:
        """Verify by a face token: the holder it is enrolled to, as by the ID card; a
        token enrolled to nobody is UNKNOWN."""
        g = self.gate_index(gate, direction)
        persons = self._persons(persons)
        fk = self.face_key(face_token)
        hk = self.faces.get(f"{self.gate_list[g].venue}\0{fk}") or self.faces.get(fk)
        return self._verify_holder_key(hk, g, direction, at, persons)

    def _verify_holder_key(self, hk: str | None, g: int, direction: int, at: int,
                           persons: int) -> ScanResult:
        """The newest ticket of the holder that this gate admits, or the refusal of the
        newest one."""
        candidates = self.holders.get(hk, []) if hk is not None else []
        venue = self.venue_idx[self.gate_list[g].venue]
        best = None
        for base in reversed(candidates):
            p = self.product_list[self.tickets.record(base)["product"]]
            if self.venue_idx[p.venue] != venue or self.tickets.code_state(base) & _core.STATE_VOIDED:
                continue
            reason, k = self.tickets.scan(base, g, direction, at, persons)
            self.journal(scan_record(base, g, direction, persons, at, reason), Op.SCAN)
            best = ScanResult(REASON_OF[reason], base, k)
            if best.admitted:
                return best
            if reason not in (Reason.NOT_YET_VALID, Reason.EXPIRED, Reason.WRONG_ZONE,
                              Reason.WRONG_SLOT, Reason.ALREADY_USED, Reason.ENTRY_LIMIT):
                return best
        if best is None:
            self.journal(scan_record(NO_TICKET, g, direction, persons, at, Reason.UNKNOWN), Op.SCAN)
            return ScanResult(Reason.UNKNOWN)
        return best

    def _verify_batch(self, codes: Any, gates: Any, direction: int, at: int,
                      persons: int) -> BatchScanResult:
        persons = self._persons(persons)
        if not isinstance(codes, (list, tuple)) or not all(isinstance(c, str) for c in codes):
            raise InvalidArgument("must be a list of strings", field="codes")
        if not isinstance(gates, list):        # one gate: an id or (venue, id)
            g: Any = self.gate_index(gates, direction)
        else:
            if len(gates) != len(codes):
                raise InvalidArgument("one gate, or one gate per code", field="gates")
            try:
                g = array.array("q", [self.gate_index(x, direction) for x in gates])
            except InvalidArgument as e:
                raise InvalidArgument(e.message, field="gates") from None
        ids = self.tickets_of(codes)
        reasons, admitted = self.tickets.scan_batch(ids, g, direction, at, persons)
        self.journal(scan_batch_record(ids, g, direction, at, persons, reasons), Op.SCAN_BATCH)
        return BatchScanResult(reasons, ids, admitted)

    def _offline_scans(self, args: dict, now: int) -> list[dict]:
        """Scans an offline gate made (DESIGN.md 6), uploaded once it is back online.

        They are facts: each is decided again in scan-time order (live capacity aside:
        the persons are inside), so used/inside and the head counts catch up. A scan the
        gate admitted but the server refuses (most often: the ticket was admitted at
        another gate too) is recorded as a conflict. Idempotent by gate and nonce: a scan
        uploaded twice is applied once and answered DUPLICATE with its first result."""
        g = self.gate_idx[self.find("gate", self.gate_idx, self._venue_arg(args), args.get("gate"), "gate")]
        gate_def = self.gate_list[g]
        gate, venue = gate_def.id, gate_def.venue
        items = _get(args, "scans", list)
        if not 1 <= len(items) <= 10_000:
            raise InvalidArgument("between 1 and 10000 scans at once", field="scans")
        scans = []
        for i, s in enumerate(items):
            try:
                nonce = _ident(s, "nonce")
                direction = _int(s, "direction", 1, 2)
                scan = (_int(s, "at", 0, 2**40 - 1), _int(s, "seq", 0, 2**63 - 1), nonce,
                        _text(s, "code", limit=512), direction, _int(s, "persons", 0, U16, 0),
                        _int(s, "admitted", 0, U16), _int(s, "reason", 0, len(Reason) - 1))
            except InvalidArgument as e:
                raise InvalidArgument(e.message, field=f"scans[{i}].{e.field}") from None
            if not self.gate_mode[g] & direction:
                raise InvalidArgument(f"gate {gate} does not scan {Direction(direction).name}",
                                      field=f"scans[{i}].direction")
            scans.append((scan, i))
        results: list[dict | None] = [None] * len(scans)
        applied, seen = [], {}
        tickets = self.tickets
        tickets.facts = True
        try:
            for (at, seq, nonce, code, direction, persons, admitted, offline_reason), i \
                    in sorted(scans, key=lambda x: x[0][:2]):
                key = offline_key(gate_def, nonce)
                first = seen.get(nonce) if not self.replaying else None
                if first is None and not self.replaying:
                    # rows from before per-venue gate ids were keyed by the bare gate id
                    row = self.get_row(key) or self.get_row(f"offline/{gate}/{nonce}".encode())
                    first = json.loads(row) if row is not None else None
                if first is not None:
                    results[i] = {**first, "status": "DUPLICATE"}
                    continue
                reason, base, k = tickets.verify(self.codec.core, code, self.shard_id, g,
                                                 direction, at, persons)
                conflict = admitted > 0 and not REASON_OF[reason].admitted
                res = {"nonce": nonce, "status": "CONFLICT" if conflict else "APPLIED",
                       "reason": reason, "ticket_id": base, "persons": k}
                results[i] = seen[nonce] = res
                self.put_row(key, json.dumps(res).encode())
                if conflict:
                    self.put_row(f"conflict/{venue}/{at:012d}/{gate}/{nonce}".encode(), json.dumps({
                        "venue": venue, "gate": gate, "nonce": nonce, "seq": seq, "at": at,
                        "ticket_id": base, "direction": direction, "persons": admitted,
                        "offline_reason": offline_reason, "server_reason": reason}).encode())
                applied.append({"nonce": nonce, "seq": seq, "code": code, "direction": direction,
                                "at": at, "persons": persons, "admitted": admitted,
                                "reason": offline_reason})
        finally:
            tickets.facts = False
        if applied:
            self.journal(json_record(Op.OFFLINE_SCANS, {"venue": venue, "gate": gate, "scans": applied}),
                         Op.OFFLINE_SCANS)
        return results

    def tickets_of(self, codes) -> array.array:
        return self.codec.core.decode_ids(codes, self.shard_id)

    # -- replay ----------------------------------------------------------------------
    def replay(self, blob: bytes, batch: Batch) -> None:
        """Re-apply the records of one committed batch. Runs of scan records are
        replayed in the core; the rest here."""
        self.batch = batch
        off, end = 0, len(blob)
        view = memoryview(blob)
        while off < end:
            off, n, bad = self.tickets.replay_scans(blob, off)
            batch.n_commands += n
            if bad >= 0:
                raise CorruptData(f"a replayed scan of ticket {bad} disagrees with the journal")
            if off >= end:
                break
            length, op = _HDR.unpack_from(view, off)
            payload = view[off + _HDR.size:off + _HDR.size + length]
            off += _HDR.size + length
            if op == Op.SCAN_BATCH:
                ids, gates, direction, at, persons, reasons = decode_scan_batch(bytes(payload))
                got, _ = self.tickets.scan_batch(ids, gates, direction, at, persons)
                if got != reasons:
                    raise CorruptData("a replayed scan batch disagrees with the journal")
                batch.n_commands += 1
            elif op == Op.HOLD:
                self._replay_hold(payload)
            else:
                args = json.loads(bytes(payload))
                if op == Op.CONFIRM:
                    self._replay_confirm(args, batch)
                else:
                    self._handlers[op](args, 0)

    def _replay_confirm(self, args: dict, batch: Batch) -> None:
        self.batch = batch
        hold = self.holds[args["hold_id"]]
        self._issue(hold, args["holder_keys"])
        self.journal(json_record(Op.CONFIRM, args), Op.CONFIRM)

    # -- snapshots -------------------------------------------------------------------
    def dump(self) -> dict[str, bytes]:
        slots, allots = self.slots.dump()
        t = self.tickets.dump()
        meta = {
            "next_hold_id": self.next_hold_id,
            "holds": list(self.holds.values()),
            "holders": self.holders,
            "faces": self.faces,
            "zones_inside": t["zones_inside"],
            "entered_days": sorted(t["entered"]),
        }
        # sort_keys: a replayed hold must serialise exactly like the live one
        out = {"catalog": b"".join(self.catalog_log), "slots": slots, "allots": allots,
               "meta": json.dumps(meta, sort_keys=True).encode(), "records": t["records"]}
        for name in ("used", "inside", "voided", "blocked"):
            out["bm." + name] = t[name]
        for d, b in t["entered"].items():
            out[f"entered.{d}"] = b
        return out

    def load(self, blobs: dict[str, bytes]) -> None:
        batch = Batch(0)
        self.replaying = True
        try:
            self.replay(blobs.get("catalog", b""), batch)
        finally:
            self.replaying = False
        self.slots.load(blobs["slots"], blobs["allots"])
        meta = json.loads(blobs["meta"])
        self.tickets.load({
            "records": blobs["records"], "zones_inside": meta["zones_inside"],
            "used": blobs["bm.used"], "inside": blobs["bm.inside"], "voided": blobs["bm.voided"],
            "blocked": blobs["bm.blocked"],
            "entered": {d: blobs[f"entered.{d}"] for d in meta["entered_days"]},
        })
        self.next_hold_id = meta["next_hold_id"]
        self.holds = {h["id"]: h for h in meta["holds"]}
        self.expiry = [(h["expires_at"], h["id"]) for h in self.holds.values()]
        heapq.heapify(self.expiry)
        self.holders = {k: list(v) for k, v in meta["holders"].items()}
        self.faces = dict(meta.get("faces", {}))
