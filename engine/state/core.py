"""The shard's one state object and its one dispatch table.

ShardState holds all state of one shard. `apply(cmd, now, batch)` is the only way it
changes and `replay(blob, batch)` the way the journal rebuilds it. Commands go through
HANDLERS, command kind -> the function, in the module of its concern, that validates the
command and applies it to the state; records through REPLAY, record kind -> the function
that applies what the record says was decided, by the record's format (journal.py).
"""
from __future__ import annotations

import json
from typing import Any, Callable

from .. import _core
from ..codes import TicketCodec
from ..errors import CorruptData, InvalidArgument
from ..journal import _HDR, FORMAT, LAST_CATALOG, Batch, Command, CommandKind, Record, decode_format
from ..model import AuditNote, Gate, Product, Slot, Venue, Zone
from . import (catalog, changes, controls, finance, idem, members, merchants, offline, promos, retry, sales, scans, seating,
               secrets, snapshot)
from .validate import text_arg

_VERIFY, _VERIFY_LAST = int(CommandKind.VERIFY), int(CommandKind.VERIFY_PACKED)
_verify = scans.verify                  # the hot path, called without a table look-up


def note(st: ShardState, args: dict, now: int) -> AuditNote:
    """Changes nothing: carries the audit record of a change made outside the shard
    (principals, API keys), with that change's result."""
    result = text_arg(args, "result", "OK", 64)
    return AuditNote(result)


# The one dispatch table. The JSON kinds are called handler(state, args, now), the VERIFY
# kinds handler(state, what, gate, direction, at, persons). Replay goes through REPLAY.
HANDLERS: dict[int, Callable[..., Any]] = {
    CommandKind.SECRETS: secrets.set_secrets,
    CommandKind.KEY: secrets.set_key,
    CommandKind.VENUE: catalog.add_venue,
    CommandKind.ZONE: catalog.add_zone,
    CommandKind.GATE: catalog.add_gate,
    CommandKind.PRODUCT: catalog.add_product,
    CommandKind.SLOTS: catalog.add_slots,
    CommandKind.SLOT_CAPACITY: catalog.set_slot_capacity,
    CommandKind.ALLOTMENT: catalog.set_allotment,
    CommandKind.CALENDAR: catalog.set_calendar,
    CommandKind.PRICES: catalog.set_prices,
    CommandKind.PRICE_RULES: catalog.set_price_rules,
    CommandKind.BOOKING: catalog.set_booking,
    CommandKind.ID_LIMITS: catalog.set_id_limits,
    CommandKind.REFUND_POLICY: catalog.set_refund_policy,
    CommandKind.PASS_DATES: catalog.set_pass_dates,
    CommandKind.PACKAGE: catalog.set_package,
    CommandKind.COUPON: promos.set_coupon,
    CommandKind.COUPON_CODES: promos.issue_codes,
    CommandKind.BLACKLIST: sales.blacklist,
    CommandKind.HOLD: sales.take_hold,
    CommandKind.RELEASE: sales.release_hold,
    CommandKind.EXPIRE: sales.expire_holds,
    CommandKind.CONFIRM: sales.confirm_hold,
    CommandKind.BUY: sales.buy,
    CommandKind.REFUND: sales.refund_order,
    CommandKind.CHANGE: changes.change_order,
    CommandKind.SPLIT: finance.set_split,
    CommandKind.SHIFT: lambda st, args, now: (finance.close_shift if args.get("close") is True
                                              else finance.open_shift)(st, args, now),
    CommandKind.STATEMENT: finance.import_statement,
    CommandKind.CONTROL: controls.set_control,
    CommandKind.BLOCK: sales.block_ticket,
    CommandKind.FACE: scans.enrol_face,
    CommandKind.OFFLINE_SCANS: offline.upload,
    CommandKind.NOTE: note,
    CommandKind.MEMBER_PROGRAM: members.set_program,
    CommandKind.MEMBER: members.enrol,
    CommandKind.POINTS: members.adjust,
    CommandKind.SEAT_MAP: seating.set_seat_map,
    CommandKind.SEATING: seating.set_seating,
    CommandKind.MERCHANT: merchants.set_merchant,
    CommandKind.VERIFY: scans.verify,
    CommandKind.VERIFY_HOLDER: scans.verify_holder,
    CommandKind.VERIFY_BATCH: scans.verify_batch,
    CommandKind.VERIFY_FACE: scans.verify_face,
    CommandKind.VERIFY_PACKED: scans.verify_packed,
}


def _handler(kind: int) -> Callable[[Any, dict, int], None]:
    """Replay by the command's own handler, with `replaying` set: for the records that
    carry the decided effects in both formats and whose handler applies them as they
    are when replaying (secrets and keys made, a face bound)."""
    handler = HANDLERS[kind]
    return lambda st, args, fmt: handler(st, args, 0)


# record kind -> replay(state, record, format) for the JSON records (journal.py)
REPLAY: dict[int, Callable[..., None]] = {
    Record.SECRETS: _handler(CommandKind.SECRETS),
    Record.KEY: _handler(CommandKind.KEY),
    **{kind: (lambda k: lambda st, args, fmt: catalog.replay(st, k, args, fmt))(kind)
       for kind in (Record.VENUE, Record.ZONE, Record.GATE, Record.PRODUCT, Record.SLOTS,
                    Record.SLOT_CAPACITY, Record.ALLOTMENT, Record.CALENDAR, Record.PRICES,
                    Record.PRICE_RULES, Record.BOOKING, Record.ID_LIMITS,
                    Record.REFUND_POLICY, Record.PASS_DATES, Record.PACKAGE)},
    Record.RELEASE: sales.replay_release,
    Record.EXPIRE: sales.replay_expire,
    Record.CONFIRM: sales.replay_confirm,
    Record.REFUND: sales.replay_refund,
    Record.CHANGE: changes.replay_change,
    Record.SPLIT: finance.replay_split,
    Record.SHIFT: finance.replay_shift,
    Record.CONTROL: controls.replay_control,
    Record.BLOCK: sales.replay_block,
    Record.FACE: _handler(CommandKind.FACE),
    Record.BLACKLIST: sales.replay_blacklist,
    Record.COUPON: promos.replay_coupon,
    Record.COUPON_CODES: promos.replay_codes,
    Record.OFFLINE_SCANS: offline.replay_upload,
    Record.MEMBER_PROGRAM: members.replay_program,
    Record.MEMBER: members.replay_enrol,
    Record.POINTS: sales.replay_points,
    Record.SEAT_MAP: seating.replay_seat_map,
    Record.SEATING: seating.replay_seating,
    Record.SEATS: seating.replay_seats,
    Record.MERCHANT: merchants.replay_merchant,
}


class ShardState:
    """All state of one shard; see the package docstring (engine/state/__init__.py)."""

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
        # kind -> id -> the venues with an object of that kind and id (catalog.find)
        self.names: dict[str, dict[str, list[str]]] = {k: {} for k in ("zone", "gate", "product", "slot")}
        self.allot_idx: dict[tuple[int, str], int] = {}
        # the price calendar: venue -> day -> date type (the operator's entries), and
        # (venue, product) -> (channel, date type) -> unit price (catalog.price_of)
        self.calendar: dict[str, dict[int, str]] = {}
        self.price_idx: dict[tuple[str, str], dict[tuple[str, str], int]] = {}
        self.price_rules: dict[tuple[str, str], list] = {}     # (venue, product) -> PriceRules
        self.booking: dict[tuple[str, str], Any] = {}          # (venue, product) -> BookingWindow
        self.id_limits: dict[tuple[str, str], Any] = {}        # (venue, product) -> IdLimits
        self.refund_policy: dict[tuple[str, str], Any] = {}    # (venue, product) -> RefundPolicy
        self.pass_dates: dict[tuple[str, str], tuple[int, int]] = {}   # -> (first, last day)
        self.packages: dict[tuple[str, str], Any] = {}         # (venue, product) -> PackageSplit
        # (venue, coupon id) -> the coupon as set, and its use (promos.CouponUse)
        self.coupons: dict[tuple[str, str], Any] = {}
        self.coupon_use: dict[tuple[str, str], promos.CouponUse] = {}
        # venue -> holder key -> {reason, until, tickets it blocked}
        self.blacklist: dict[str, dict[str, dict]] = {}
        # finance (finance.py): venue -> day -> (channel, station, product, method) ->
        # counters; venue -> day -> (partner, kind, product) -> [persons, fen]; the
        # products' revenue shares; shifts (venue, shift) -> shift, and the open shift of
        # each (venue, station); codes by (product, first day, last day)
        self.ledger: dict[str, dict[int, dict[tuple, list[int]]]] = {}
        self.split_ledger: dict[str, dict[int, dict[tuple, list[int]]]] = {}
        self.split_rules: dict[tuple[str, str], list[dict]] = {}
        self.shifts: dict[tuple[str, str], dict] = {}
        self.open_shifts: dict[tuple[str, str], str] = {}
        self.by_day: dict[tuple[int, int, int], Any] = {}
        # members (members.py): venue -> its programme; (venue, member id) -> the member;
        # (venue, keyed hash of an ID or phone number) -> member id; the next member
        # number; venue -> points moved by kind
        self.member_programs: dict[str, Any] = {}
        self.members: dict[tuple[str, str], members.Member] = {}
        self.member_index: dict[tuple[str, str], str] = {}
        self.next_member = 1
        self.points_totals: dict[str, dict[str, int]] = {}
        # hold id -> the points an active hold redeemed (sales.redemption), as JSON bytes:
        # no object per hold for the cyclic GC (as the holds themselves, sales.HoldStore)
        self.hold_points: dict[int, bytes] = {}
        # theatre seats (seating.py): (venue, id) -> seat map; slot index -> its session
        # (seats in the core); hold id -> its seats (JSON bytes); ticket -> its seat
        self.seat_maps: dict[tuple[str, str], Any] = {}
        self.sessions: dict[int, seating.Session] = {}
        self.hold_seats: dict[int, bytes] = {}
        self.ticket_seats: dict[int, int] = {}
        # merchants (merchants.py): (venue, id) -> merchant; (venue, zone) and (venue,
        # station) -> the merchant that runs it
        self.merchants: dict[tuple[str, str], Any] = {}
        self.zone_merchant: dict[tuple[str, str], str] = {}
        self.station_merchant: dict[tuple[str, str], str] = {}
        # venue -> its live controls (controls.py: sales paused, entry closed, live
        # capacities set, flow alert settings)
        self.controls: dict[str, dict[str, Any]] = {}
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
        self.holds = sales.HoldStore(self.venue_list)
        self.known_channels: set[str] = set()
        self.replaying = False
        self.pending: dict[bytes, tuple[int, bytes | None]] = {}
        # retry rows (retry.py): the buckets kept, oldest first; the window; where
        # pruning goes on; the time of the batch being staged (Shard._stage sets it)
        self.retry_buckets: list[int] = []
        self.retry_window = retry.DEFAULT_WINDOW_S
        self.prune_from = b""
        self.now = 0
        self.batch: Batch | None = None

    # -- the entry points ------------------------------------------------------------
    def apply(self, cmd: Command, now: int, batch: Batch) -> Any:
        """Apply one command at time `now`, journaling into `batch`; returns its result."""
        self.batch = batch
        op = cmd.op
        if _VERIFY <= op <= _VERIFY_LAST:
            what, gate, direction, at, persons = cmd.args
            if at is None:
                at = now
            elif type(at) is not int or not 0 <= at < 2**40:
                raise InvalidArgument("must be UTC seconds", field="at")
            if cmd.idem is not None:
                return scans.scan_once(self, cmd, HANDLERS[op], what, gate, direction, at, persons)
            if op == _VERIFY:
                return _verify(self, what, gate, direction, at, persons)
            return HANDLERS[op](self, what, gate, direction, at, persons)
        handler = HANDLERS.get(op)
        if handler is None:
            raise InvalidArgument(f"unknown operation {op}")
        if not isinstance(cmd.args, dict):
            raise InvalidArgument("request must be an object")
        for k in cmd.args:
            if not isinstance(k, str) or k.startswith("_"):
                raise InvalidArgument("unknown field", field=str(k))
        if cmd.idem is None:
            return handler(self, cmd.args, now)
        return idem.command_once(self, cmd, handler, now)

    def replay(self, blob: bytes, batch: Batch) -> None:
        """Re-apply the records of one committed batch (or a snapshot's catalog), of the
        format its FORMAT record names (none: format 1), by what they say was decided
        (REPLAY; journal.py tells it per record kind). Runs of scan records are replayed
        in the core; the rest here."""
        self.batch = batch
        off, end = 0, len(blob)
        view = memoryview(blob)
        fmt = 1
        while off < end:
            off, n, bad = self.tickets.replay_scans(blob, off)
            batch.n_commands += n
            if bad >= 0:
                raise CorruptData(f"a journaled scan of ticket {bad} does not fit the state")
            if off >= end:
                break
            length, kind = _HDR.unpack_from(view, off)
            payload = view[off + _HDR.size:off + _HDR.size + length]
            off += _HDR.size + length
            if kind == Record.FORMAT:
                fmt = decode_format(payload)
                if not 1 <= fmt <= FORMAT:
                    raise CorruptData(f"the journal holds records of format {fmt}; this build "
                                      f"reads formats 1 to {FORMAT}",
                                      hint="open it with the newer build that wrote it")
            elif kind == Record.SCAN_BATCH:
                scans.replay_batch(self, payload)
            elif kind == Record.HOLD:
                sales.replay_hold(self, payload)
            else:
                replay = REPLAY.get(kind)
                if replay is None:
                    raise CorruptData(f"the journal holds a record of unknown kind {kind}")
                replay(self, json.loads(bytes(payload)), fmt)

    # -- journal and rows --------------------------------------------------------------
    def journal(self, rec: bytes, kind: int) -> None:
        """Count a journaled command, keep a catalog record for snapshots, and (unless
        replaying it) append `rec`, a record of `kind`, to the batch."""
        batch = self.batch
        batch.n_commands += 1
        if kind <= LAST_CATALOG:
            self.catalog_log.append(rec)
        if not self.replaying:
            batch.records.append(rec)

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

    # -- what the shard reads and calls, each defined with its concern -----------------
    new_secrets = staticmethod(secrets.new_secrets)
    holder_key = secrets.holder_key
    unseal = secrets.unseal
    render = secrets.render
    render_if_valid = secrets.render_if_valid
    find = catalog.find
    quote = sales.quote
    hold_info = sales.hold_info
    due_expiry = sales.due_expiry
    order_row = sales.order_row
    get_order = sales.get_order
    change_terms = changes.change_terms
    tickets_of = scans.tickets_of
    dump = snapshot.dump
    load = snapshot.load
