"""Commands, their journal records, and the batches that carry both.

A command is what a caller asks the shard to do; its kind is a `CommandKind`. The writer
applies commands in batches and journals what each applied one decided as records
`u32 length | u8 kind | payload`, the kind a `Record`. Replaying the records of every
batch after the last snapshot rebuilds memory exactly. Scans (the bulk of the journal)
have a fixed binary payload; the rest are JSON.

Formats. Every batch (and the catalog blob of a snapshot) starts with a FORMAT record,
`u16 format`, that says how its records read; a blob without one is format 1 (what
builds up to commit 56c9ac5 wrote). This build writes FORMAT and reads 1..FORMAT;
a newer one is refused (CorruptData), as is a data dir whose meta says it holds one
(engine/storage.py). The other snapshot blobs carry theirs in the snapshot's `versions`
blob (engine/state/snapshot.py). `turnstile migrate` rewrites a data dir so that no
record of an older format is left (engine/datadir.py).

Effects, not decisions: replay applies what a command decided, never decides it again
with the rules of the build that replays it, so that a data dir that crashed before an
upgrade opens after it. What each record kind carries, per format:

  SECRETS, KEY        1 = 2: the secrets and keys made, sealed; a key rotation as the
                      demotions and the new key it resolved to. Replay sets them.
  VENUE .. ALLOTMENT  1: the request as the caller gave it (defaults left out, a zone,
                      gate or slot possibly named by its bare id); its v1 decoder fills
                      the defaults of format 1, not today's, and resolves bare ids as
                      they resolved then (replay order). 2: the object as created,
                      every field resolved (venue, defaults, mode, rule), applied
                      without validation; a capacity or allotment that does not fit is
                      CorruptData.
  HOLD                1 = 2 (binary): the hold as applied (indices, prices, expiry).
                      3: after its lines, the coupon it took, if any (id, kind, the
                      code's serial (-1: its public code), the holder key, the discount
                      and its split over the lines); replay takes the coupon's use, the
                      hold's RELEASE or EXPIRE gives it back (drop_hold).
  RELEASE             1 = 2: the hold released; replay drops it (no channel check).
  EXPIRE              1: the time of the sweep (replay expires the holds due then).
                      2: also the ids of the holds it expired; replay drops those.
  CONFIRM             1: the hold confirmed and its holder keys (replay issues its
                      tickets, days from the slot and the product's valid days). 2: also
                      per line the first ticket id and first/last valid day; replay
                      issues exactly those (CorruptData if the ids differ).
  REFUND              1 = 2: the tickets voided and the stock returned. 3: also the
                      amount refunded and the fee kept, and `groups`, the group tickets
                      refunded in part with the persons they admit now (set_group).
  BLOCK, FACE         1 = 2: the ticket (un)blocked; the face and holder keys bound.
  SCAN, SCAN_BATCH    1 = 2 (binary): the scan's inputs (ticket, gate, direction, time,
                      persons asked) and its decision (reason). Replay applies the
                      reason, never the rules (native/tickets.pxi: a live scan is
                      _decide_* then _apply; replay is _apply alone): a refusal changes
                      nothing; an admission makes the change the live scan made, the
                      persons it let in following from the ticket's record and state
                      (group, persons inside, the visit) as they did live. A record that
                      can't fit the state (an admission of no ticket, or at a gate whose
                      zone the ticket has no part in) is CorruptData.
  CALENDAR, PRICES,   3 (new in format 3; formats 1 and 2 have none): a venue's day types
  PRICE_RULES,        as set, by day number; a product's whole price table, resolved
  BOOKING, ID_LIMITS, (venue, product, [date type, channel, price]); its pricing rules,
  REFUND_POLICY,      booking window, limits per ID number, refund tiers and a pass's
  PASS_DATES          fixed dates as validated. Replay sets them.
  BLACKLIST           3 (new in format 3): a holder key put on a venue's blacklist (reason,
                      until) with the tickets that blocked, or taken off with those it
                      unblocked; replay applies exactly those.
  COUPON, PACKAGE     3 (new in format 3; catalog records): a coupon as validated; a package
                      product's parts with their merchants and shares. Replay sets them.
  COUPON_CODES        3 (new): the serials of a batch of single-use codes issued.
  CONFIRM, REFUND,     4: also `fin`, what the step posted to the finance counters
  CHANGE              (engine/state/finance.py): the venue, the venue-local day, rows of
                      (channel, station, product, method, counters), the revenue split
                      (partner, kind, product, persons, fen) and the shift's totals moved;
                      replay adds them up as they are.
  SPLIT               4 (new; a catalog record): a product's revenue shares as validated.
  SHIFT               4 (new): a cash-desk shift opened (station, cashier, float, the
                      principal that alone sells into it) or closed (cash counted).
  CONTROL             5 (new): a venue's live control as set (engine/state/controls.py):
                      sales paused or resumed (venue, zone or slot), entry closed or
                      reopened (zone or gate), a zone's live capacity, a zone's flow
                      alert levels and rate. Replay sets it.
  MEMBER_PROGRAM      6 (new): a venue's member programme as validated (levels, period,
                      earn rules, expiry rule, what a point is worth). Replay sets it.
  MEMBER              6 (new): a member enrolled: the id the shard gave, the keyed hashes
                      of the ID and phone numbers and the numbers sealed. Replay enrols.
  POINTS              6 (new): an operator's adjustment as its effects on the member
                      (engine/state/members.py: ledger entries with the expiry buckets
                      they moved, debt, spend), or the points a hold redeemed (it names
                      the hold, with their split over its tickets and the buckets they
                      came from; it follows the hold's HOLD record). Replay applies them.
  SEAT_MAP, SEATING   6 (new): a venue's seat map as validated (rows and layouts, price
                      zones); a slot bound to one (its capacity set to the seats sold).
                      Replay sets them.
  SEATS               6 (new): the seats a hold took (per seated line, the slot and seat
                      indices; it follows the hold's HOLD record). Replay takes them; the
                      hold's release, expiry or confirm and a ticket's refund follow from
                      them.
  MERCHANT            7 (new): a merchant of a venue as validated (name, the zones it runs:
                      consumption points, its stations). Replay sets it, and its zones'
                      once-only flag in the core (engine/state/merchants.py).
  CONFIRM, REFUND,    6: also `pts`, a member's effects as for POINTS (points earned by the
  CHANGE, RELEASE,    order, taken back and given back by a refund or change, given back by
  EXPIRE              a hold that ends unpaid; spend) when the order or hold has a member.
  OFFLINE_SCANS       1: the gate's scans as uploaded, codes included, not the server's
                      decision; its v1 decoder decodes and decides them again, as format 1
                      did (the one record kind replayed by rules). 2: per scan the server's
                      decision (ticket id, reason, persons) and the gate's claims, no code;
                      replay applies the reason as for SCAN and checks the persons.
"""
from __future__ import annotations

import array
import enum
import json
import struct
from dataclasses import dataclass
from typing import Any, Iterator

from .model import ActiveHold, HeldLine


FORMAT = 7            # the journal and snapshot format this build writes (reads 1..FORMAT)


class Record(enum.IntEnum):
    """The kind of a journal record: the u8 of its header, on disk (never renumbered).

    A command that changes the shard is journaled as records of its own number (SECRETS
    to FACE, and OFFLINE_SCANS, are both a CommandKind and a Record). A record holds what
    the command decided, not what it asked (a key rotation as the keys it made, a
    confirm with holder keys, a refund with the stock it returned), and replay applies
    it (engine/state/core.py REPLAY; the module docstring says what each kind carries,
    per format). The VERIFY commands are
    journaled as SCAN and SCAN_BATCH records, which no command asks for by name."""

    FORMAT = 0                 # u16: the format of the records after it (first of a batch)
    # catalog (kept in the snapshot as records, replayed on open)
    SECRETS = 1
    KEY = 2
    VENUE = 3
    ZONE = 4
    GATE = 5
    PRODUCT = 6
    SLOTS = 7
    SLOT_CAPACITY = 8
    ALLOTMENT = 9
    CALENDAR = 10              # format 3: a venue's day types set
    PRICES = 11                # format 3: a product's price table
    PRICE_RULES = 12           # format 3: a product's pricing rules
    BOOKING = 13               # format 3: a product's booking window
    ID_LIMITS = 14             # format 3: a real-name product's limits per ID number
    REFUND_POLICY = 15         # format 3: a product's refund tiers
    PASS_DATES = 16            # format 3: a pass's fixed calendar dates
    COUPON = 17                # format 3: a coupon as set
    PACKAGE = 18               # format 3: a package product's split over its parts
    SPLIT = 19                 # format 4: a product's revenue shares (分账)
    # sales
    HOLD = 20                  # binary: the hold as applied (hold_record)
    RELEASE = 21
    EXPIRE = 22
    CONFIRM = 23
    REFUND = 24
    BLOCK = 25
    FACE = 26                  # a face key bound to (or taken from) a holder key
    BLACKLIST = 27             # format 3: a person put on (or taken off) a venue's blacklist
    COUPON_CODES = 28          # format 3: a batch of a coupon's single-use codes issued
    # gates
    SCAN = 30                  # binary, fixed size (scan_record); native/tickets.pxi replays runs of them
    SCAN_BATCH = 31            # binary (scan_batch_record)
    OFFLINE_SCANS = 32         # scans an offline gate made, uploaded later (JSON)
    # after-sale
    CHANGE = 33                # format 3: tickets of an order moved to other slots (改签)
    # finance
    SHIFT = 34                 # format 4: a cash-desk shift opened or closed
    # live operation
    CONTROL = 35               # format 5: a venue's live control set (sales, entry, capacity, alerts)
    # members
    MEMBER_PROGRAM = 45        # format 6: a venue's member programme set
    MEMBER = 46                # format 6: a member enrolled
    POINTS = 47                # format 6: a member's points adjusted by an operator
    # theatre seats
    SEAT_MAP = 48              # format 6: a venue's seat map set
    SEATING = 49               # format 6: a slot made a session of a seat map
    SEATS = 50                 # format 6: the seats a hold took (after its HOLD record)
    # merchants inside a venue
    MERCHANT = 51              # format 7: a merchant set (the zones it runs, its stations)


class CommandKind(enum.IntEnum):
    """What a command asks (`Command.op`): what engine/cmd.py builds and
    ShardState.apply dispatches on. The numbers are kept too: idempotency rows are keyed
    and fingerprinted by them, and each kind from SECRETS to FACE, and OFFLINE_SCANS, is
    journaled as the Record of the same number."""

    # catalog
    SECRETS = 1
    KEY = 2
    VENUE = 3
    ZONE = 4
    GATE = 5
    PRODUCT = 6
    SLOTS = 7
    SLOT_CAPACITY = 8
    ALLOTMENT = 9
    CALENDAR = 10
    PRICES = 11
    PRICE_RULES = 12
    BOOKING = 13
    ID_LIMITS = 14
    REFUND_POLICY = 15
    PASS_DATES = 16
    COUPON = 17
    PACKAGE = 18
    SPLIT = 19                 # set a product's revenue shares
    # sales
    HOLD = 20
    RELEASE = 21
    EXPIRE = 22
    CONFIRM = 23
    REFUND = 24
    BLOCK = 25
    FACE = 26                  # bind a face token to (or take it from) a real-name holder
    BLACKLIST = 27             # put a person on (or take them off) a venue's blacklist
    COUPON_CODES = 28          # issue a batch of a coupon's single-use codes
    # gates
    OFFLINE_SCANS = 32         # scans an offline gate made, uploaded later
    # after-sale
    CHANGE = 33                # move unused tickets of an order to other slots (改签)
    # finance
    SHIFT = 34                 # open or close a cash-desk shift
    # live operation
    CONTROL = 35               # pause sales, close entry, set a live capacity or flow alerts
    # journaled as the HOLD and CONFIRM records it resolves to (RELEASE too if refused)
    BUY = 36                   # hold and pay in one command
    # not journaled
    STATEMENT = 38             # store a payment provider's statement of a day (rows only)
    NOTE = 39                  # an audited call that changed nothing in the shard
    # journaled as the SCAN or SCAN_BATCH records they resolve to
    VERIFY = 40
    VERIFY_HOLDER = 41
    VERIFY_BATCH = 42
    VERIFY_FACE = 43
    VERIFY_PACKED = 44         # a batch of codes in their binary form, packed in one buffer
    # members (journaled as the Record of the same number)
    MEMBER_PROGRAM = 45        # set a venue's member programme
    MEMBER = 46                # enrol a member
    POINTS = 47                # adjust a member's points
    # theatre seats (journaled as the Record of the same number)
    SEAT_MAP = 48              # set a venue's seat map
    SEATING = 49               # make a slot a session of a seat map
    # merchants (journaled as the Record of the same number)
    MERCHANT = 51              # set a merchant of a venue


LAST_CATALOG = int(Record.SPLIT)         # records 1..19 are catalog records (kept in snapshots)

_HDR = struct.Struct("<IB")
SCAN = struct.Struct("<IHBHqB")          # base, gate, direction, persons, at, reason
_SCAN_REC = struct.Struct("<IBIHBHqB")   # header + SCAN, packed at once
_BATCH = struct.Struct("<BqHIq")         # direction, at, persons, n, one gate (-1: per id)
_HOLD = struct.Struct("<qqqqHH")         # id, expires_at, created, amount, venue idx, n lines
_LINE = struct.Struct("<HIHqB")          # product idx, qty, group, unit price, n components
_COMP = struct.Struct("<Iq")             # slot idx, allotment idx (-1: pool)
_CPN = struct.Struct("<iqBBB")           # a hold's coupon: serial, discount, len of id, kind, holder
NO_TICKET = 0xFFFFFFFF
_SCAN_KIND = int(Record.SCAN)
_U16 = struct.Struct("<H")
FORMAT_RECORD = _HDR.pack(_U16.size, Record.FORMAT) + _U16.pack(FORMAT)


@dataclass(slots=True)
class Command:
    """One request to the shard's writer: `op` is what it asks, `args` a dict (the JSON
    kinds) or a tuple (the VERIFY kinds). `audit` (principal, method, request digest)
    makes the writer append an audit record for it, in the same transaction as its batch."""

    op: CommandKind
    args: Any
    idem: str | None = None
    audit: tuple[str, str, str] | None = None


class Batch:
    """What one writer batch will write in its one LMDB transaction: its journal records
    and the rows it changed."""

    __slots__ = ("seq", "records", "rows", "n_commands", "n_calls")

    def __init__(self, seq: int):
        self.seq = seq
        self.records: list[bytes] = []
        self.rows: dict[bytes, bytes | None] = {}
        self.n_commands = 0          # journaled commands (an expiry sweep counts too)
        self.n_calls = 0             # commands submitted, answered when the batch commits

    def blob(self) -> bytes:
        """The batch's journal entry: its FORMAT record, then its records (b"" if none)."""
        if not self.records:
            return b""
        return FORMAT_RECORD + b"".join(self.records)


def record(kind: Record, payload: bytes) -> bytes:
    return _HDR.pack(len(payload), kind) + payload


def json_record(kind: Record, args: dict) -> bytes:
    return record(kind, json.dumps(args, separators=(",", ":")).encode())


def scan_record(base: int, gate: int, direction: int, persons: int, at: int, reason: int) -> bytes:
    return _SCAN_REC.pack(SCAN.size, _SCAN_KIND, base, gate, direction, persons, at, reason)


# channel -> its part of a HOLD record (length byte, UTF-8): a bounded memo of a pure function
_CHANNELS: dict[str, bytes] = {}


def hold_record(hold: ActiveHold, venue: int) -> bytes:
    """A hold as applied (resolved indices), so replay needs no look-ups."""
    lines = hold.lines
    ch = _CHANNELS.get(hold.channel)
    if ch is None:
        ch = hold.channel.encode()
        ch = bytes((len(ch),)) + ch
        if len(_CHANNELS) >= 4096:
            _CHANNELS.clear()
        _CHANNELS[hold.channel] = ch
    parts = [_HOLD.pack(hold.id, hold.expires_at, hold.created, hold.amount, venue, len(lines)), ch]
    for ln in lines:
        slots = ln.slots
        parts.append(_LINE.pack(ln.p, ln.qty, ln.group, ln.price, len(slots)))
        for s, a in zip(slots, ln.allots):
            parts.append(_COMP.pack(s, a))
    if hold.coupon:             # format 3: the coupon it took (state/promos.py), after its lines
        parts.append(_coupon_part(hold.coupon, hold.coupon_kind, hold.coupon_serial,
                                  hold.coupon_holder, hold.discount,
                                  tuple(ln.discount for ln in lines)))
    payload = b"".join(parts)
    return _HDR.pack(len(payload), Record.HOLD) + payload


_COUPON_PARTS: dict[tuple, bytes] = {}


def _coupon_part(cid: str, kind: str, serial: int, holder: str, discount: int, split: tuple) -> bytes:
    """The coupon part of a HOLD record. A public coupon on a busy slot gives every hold the
    same part: packed once and kept (a bounded memo of a pure function)."""
    key = (cid, kind, serial, holder, discount, split)
    part = _COUPON_PARTS.get(key)
    if part is None:
        b_id, b_kind, b_holder = cid.encode(), kind.encode(), bytes.fromhex(holder)
        part = b"".join((_CPN.pack(serial, discount, len(b_id), len(b_kind), len(b_holder)), b_id, b_kind,
                         b_holder, struct.pack(f"<{len(split)}q", *split)))
        if len(_COUPON_PARTS) >= 4096:
            _COUPON_PARTS.clear()
        _COUPON_PARTS[key] = part
    return part


def decode_hold(payload: bytes, venues: list[str]) -> ActiveHold:
    """A HOLD record's hold; `venues` names the venue indices (ShardState.venue_list)."""
    hid, expires, created, amount, venue, n = _HOLD.unpack_from(payload)
    off = _HOLD.size
    ln_ch = payload[off]
    channel = bytes(payload[off + 1:off + 1 + ln_ch]).decode()
    off += 1 + ln_ch
    lines = []
    for _ in range(n):
        p, qty, group, price, nc = _LINE.unpack_from(payload, off)
        off += _LINE.size
        slots, allots = [], []
        for _ in range(nc):
            s, a = _COMP.unpack_from(payload, off)
            off += _COMP.size
            slots.append(s)
            allots.append(a)
        lines.append((p, qty, group, tuple(slots), tuple(allots), price))
    if off >= len(payload):
        return ActiveHold(hid, channel, venues[venue], expires, created, amount,
                          tuple(HeldLine(*ln) for ln in lines))
    serial, discount, n_id, n_kind, n_holder = _CPN.unpack_from(payload, off)
    off += _CPN.size
    cid = bytes(payload[off:off + n_id]).decode()
    kind = bytes(payload[off + n_id:off + n_id + n_kind]).decode()
    off += n_id + n_kind
    holder = bytes(payload[off:off + n_holder]).hex()
    off += n_holder
    split = struct.unpack_from(f"<{n}q", payload, off)
    return ActiveHold(hid, channel, venues[venue], expires, created, amount,
                      tuple(HeldLine(*ln, d) for ln, d in zip(lines, split)),
                      cid, kind, serial, holder, discount)


def scan_batch_record(ids: array.array, gates, direction: int, at: int, persons: int,
                      reasons: bytes) -> bytes:
    one = gates if isinstance(gates, int) else -1
    parts = [_BATCH.pack(direction, at, persons, len(ids), one), ids.tobytes()]
    if one < 0:
        parts.append(gates.tobytes())
    parts.append(reasons)
    return record(Record.SCAN_BATCH, b"".join(parts))


def decode_scan_batch(payload: bytes):
    direction, at, persons, n, one = _BATCH.unpack_from(payload)
    off = _BATCH.size
    ids = array.array("q")
    ids.frombytes(payload[off:off + 8 * n])
    off += 8 * n
    if one < 0:
        gates = array.array("q")
        gates.frombytes(payload[off:off + 8 * n])
        off += 8 * n
    else:
        gates = one
    return ids, gates, direction, at, persons, payload[off:off + n]


def decode_format(payload) -> int:
    """The format a FORMAT record names."""
    return _U16.unpack_from(payload)[0]


def blob_format(blob: bytes) -> int:
    """The format of a batch blob (or snapshot catalog): its FORMAT record's, else 1."""
    if len(blob) >= _HDR.size + _U16.size:
        n, kind = _HDR.unpack_from(blob)
        if kind == Record.FORMAT:
            return decode_format(memoryview(blob)[_HDR.size:])
    return 1


def records(blob: bytes) -> Iterator[tuple[int, memoryview]]:
    """(kind, payload) of every record in a batch blob (its FORMAT record left out)."""
    view = memoryview(blob)
    off, end = 0, len(blob)
    while off < end:
        n, kind = _HDR.unpack_from(view, off)
        off += _HDR.size
        if kind != Record.FORMAT:
            yield kind, view[off:off + n]
        off += n
