"""Vocabulary of DESIGN.md section 3 as Python types: catalog, reasons, results."""
from __future__ import annotations

import datetime as _dt
import enum
import re
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from . import _core

DAY = 86400

# the native core's per-ticket record (native/tickets.pxi TicketRec), as numpy reads it
RECORD_DTYPE = np.dtype([
    ("slot", "<u4"), ("first_day", "<i4"), ("last_day", "<i4"), ("visit_day", "<i4"),
    ("product", "<u2"), ("group", "<u2"), ("persons_in", "<u2"), ("visit_admitted", "<u2"),
    ("entries", "<u2"), ("day_entries", "<u2"), ("comp", "u1"), ("state", "u1")])
assert RECORD_DTYPE.itemsize == _core.RECORD_SIZE


class Reason(enum.IntEnum):
    """Why a scan was admitted or refused: the closed set shared by API, reports, tests."""

    OK = 0
    OK_REENTRY = 1
    FORGED = 2
    UNKNOWN = 3
    VOIDED = 4
    BLOCKED = 5
    ALREADY_USED = 6
    NOT_YET_VALID = 7
    EXPIRED = 8
    WRONG_SLOT = 9
    WRONG_ZONE = 10
    NOT_INSIDE = 11
    ZONE_FULL = 12
    ENTRY_LIMIT = 13
    ENTRY_CLOSED = 14

    @property
    def admitted(self) -> bool:
        return self in (Reason.OK, Reason.OK_REENTRY)


assert tuple(r.name for r in Reason) == _core.REASONS, "Reason and the core disagree"
REASON_OF = tuple(Reason)       # Reason by value, without Enum.__call__ on the hot path


class Direction(enum.IntEnum):
    IN = 1
    OUT = 2


class GateMode(enum.IntEnum):
    """Which directions a gate scans."""

    IN = 1
    OUT = 2
    BOTH = 3


def to_day(d: _dt.date | str | int) -> int:
    """A venue-local calendar day as days since 1970-01-01."""
    if isinstance(d, int):
        return d
    if isinstance(d, str):
        d = _dt.date.fromisoformat(d)
    return (d - _dt.date(1970, 1, 1)).days


def day_to_date(day: int) -> _dt.date:
    return _dt.date(1970, 1, 1) + _dt.timedelta(days=day)


# what an id (venue, zone, gate, product, slot, order, channel...) may be
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/-]{0,63}\Z")


@dataclass(frozen=True)
class EntryRule:
    """How a ticket admits.

    max_entries: visits over the whole validity (1 = single use, N = punch card,
    0 = unlimited). daily_entries: visits per day (0 = unlimited). reentry: after an
    exit, the same visit may re-enter on the same day (OK_REENTRY) without using a
    visit. valid_days: days of validity from the visit day. slot_grace_s: seconds a
    holder may arrive before or after the slot window.
    """

    max_entries: int = 1
    daily_entries: int = 0
    reentry: bool = False
    valid_days: int = 1
    slot_grace_s: int = 1800


@dataclass(frozen=True)
class Venue:
    id: str
    name: str
    utc_offset_s: int = 8 * 3600


@dataclass(frozen=True)
class Zone:
    id: str
    venue: str
    name: str
    live_capacity: int = 0
    enforce_exit: bool = False


@dataclass(frozen=True)
class Gate:
    id: str
    venue: str
    zone: str
    mode: GateMode = GateMode.BOTH


@dataclass(frozen=True)
class Product:
    """A sellable ticket type. Each zone in `zones` is one admission right (a combo
    lists several); a hold needs one slot per zone."""

    id: str
    venue: str
    name: str
    zones: tuple[str, ...]
    rule: EntryRule = EntryRule()
    price_fen: int = 0
    channel_prices: dict[str, int] = field(default_factory=dict)
    channels: tuple[str, ...] = ()          # empty: every channel may sell it
    real_name: bool = False
    max_group: int = 1                      # persons one code may admit
    refundable: bool = True
    refund_fee_pct: int = 0

    def price_for(self, channel: str) -> int:
        return self.channel_prices.get(channel, self.price_fen)


@dataclass(frozen=True)
class Slot:
    """Stock of one zone on one day in one time window (UTC seconds)."""

    id: str
    zone: str
    day: int
    start: int
    end: int
    capacity: int
    venue: str = ""             # the venue of its zone (ids are unique within a venue)


@dataclass(frozen=True)
class HoldItem:
    """qty codes of product, each admitting `group` persons, one slot per zone; in a
    session (a slot with seats), the `seats` named (qty: as many), else the best
    available for qty persons."""

    product: str
    slots: tuple[str, ...]
    qty: int = 1
    group: int = 1
    seats: tuple[str, ...] = ()


class ScanResult(NamedTuple):
    """The answer to one scan (a tuple: cheap to make on the hot path)."""

    reason: Reason
    ticket: int = -1            # the code's ticket id, -1 if it could not be read
    persons: int = 0            # persons admitted (entry) or let out (exit)

    @property
    def admitted(self) -> bool:
        return self.reason <= Reason.OK_REENTRY


# -- what commands answer (Shard.run, GroupCommit.submit) --------------------------------
# Each is the answer of one command kind. An answer kept for idempotent retries is stored
# as JSON -- its to_dict(), else dataclasses.asdict or NamedTuple._asdict, keys in field
# order -- and built again from that (engine/state/idem.py): its fields are the stored keys.

class PricedItem(NamedTuple):
    """One item line of a hold or quote, priced for the channel (a tuple: a hold makes
    one per line)."""

    product: str
    qty: int
    group: int
    slots: list[str]
    unit_price_fen: int
    seats: tuple[str, ...] = ()     # in a session: the line's seats, by name

    def to_dict(self) -> dict:
        d = {"product": self.product, "qty": self.qty, "group": self.group,
             "slots": self.slots, "unit_price_fen": self.unit_price_fen}
        if self.seats:
            d["seats"] = list(self.seats)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "PricedItem":
        return cls(d["product"], d["qty"], d["group"], d["slots"], d["unit_price_fen"],
                   tuple(d.get("seats", ())))


@dataclass(slots=True)
class HoldResult:
    hold_id: int
    expires_at: int
    amount_fen: int                 # after the coupon's discount
    items: list[PricedItem]
    coupon: str = ""                # the coupon the hold took, if any
    discount_fen: int = 0           # what it took off
    points: int = 0                 # a member's points it redeemed (amount_fen is after them)
    points_fen: int = 0             # what they took off

    def to_dict(self) -> dict:
        # what the idempotency row stores; dataclasses.asdict's deep copy was half the
        # engine's cost of an idempotent hold
        d = {"hold_id": self.hold_id, "expires_at": self.expires_at,
             "amount_fen": self.amount_fen, "items": [it.to_dict() for it in self.items]}
        if self.coupon:
            d["coupon"], d["discount_fen"] = self.coupon, self.discount_fen
        if self.points:
            d["points"], d["points_fen"] = self.points, self.points_fen
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "HoldResult":
        return cls(d["hold_id"], d["expires_at"], d["amount_fen"],
                   [PricedItem.from_dict(it) for it in d["items"]], d.get("coupon", ""),
                   d.get("discount_fen", 0), d.get("points", 0), d.get("points_fen", 0))


# the kinds of day a venue prices by (Shard.calendar): an operator's calendar entry for a
# day, else weekend on Saturday and Sunday, else weekday
DATE_TYPES = ("weekday", "weekend", "holiday", "peak", "off")


@dataclass(frozen=True)
class CalendarResult:
    """SetCalendar's answer: the days whose entry was set or removed."""
    venue: str
    days: int


@dataclass(frozen=True)
class CalendarDay:
    """A venue-local day and its type; `explicit` if the operator's calendar says it."""
    day: int
    date_type: str
    explicit: bool


@dataclass(frozen=True)
class DatePrice:
    """A product's price per person on days of `date_type`, for `channel` ("" = any)."""
    date_type: str
    channel: str
    price_fen: int


@dataclass(frozen=True)
class PriceTable:
    """A product's prices by date type and channel (SetPrices; Shard.price_table)."""
    venue: str
    product: str
    prices: list[DatePrice]

    def to_dict(self) -> dict:
        return {"venue": self.venue, "product": self.product,
                "prices": [vars(p) for p in self.prices]}


class AppliedRule(NamedTuple):
    """A pricing rule that changed a line's unit price, by `amount_fen` (negative: off)."""
    rule: str
    amount_fen: int


class QuoteLine(NamedTuple):
    """How one item line's unit price came about: the date type of its day, the price of
    the product on that type of day for the channel, each rule applied in order."""
    product: str
    date_type: str
    base_price_fen: int
    rules: list[AppliedRule]
    unit_price_fen: int


QUOTE_TTL_S = 600          # how long a quote id holds

# the pricing rules, in the order they apply to a line's price (a coupon, promos.py, is
# taken off the order after all of them)
RULE_KINDS = ("early_bird", "time_of_day", "fill_rate", "member_level")
# the field of a rule's condition, by kind (the others stay 0)
RULE_CONDITION = {"early_bird": "days_ahead", "time_of_day": "from_minute", "fill_rate": "fill_pct",
                  "member_level": "member_level"}


@dataclass(frozen=True)
class PriceRule:
    """A product's pricing rule (cmd.price_rules), applied in RULE_KINDS order to the
    price of the line's day type, each on the price the one before left:

      early_bird   booked `days_ahead` or more days before the slot's day
      time_of_day  the slot starts at `from_minute` (minutes after venue-local
                   midnight) or later
      fill_rate    the slot is `fill_pct` percent or more sold and held
      member_level the buyer's member level is `member_level` or higher: the level the
                   spend of the member a hold names reached (cmd.hold(member=),
                   members.level_of); engine callers may give a level alone
                   (member_level=); without either, 0, no member price applies

    changing the price by `amount_fen` (negative: off) or by `pct` percent of it, the
    change at most `cap_fen` (0: no cap); a price never goes below 0."""

    kind: str
    amount_fen: int = 0
    pct: int = 0
    cap_fen: int = 0
    days_ahead: int = 0
    from_minute: int = 0
    fill_pct: int = 0
    member_level: int = 0


@dataclass(frozen=True)
class BookingWindow:
    """When a product may be booked for a slot (cmd.booking): from `opens_days` days
    before the slot's day (0: any time before), until `closes_minutes` minutes before the
    slot starts (negative: after it started; None: until the slot ends), for slots on
    the ISO `weekdays` listed (1 = Monday .. 7 = Sunday; empty: every day)."""
    venue: str
    product: str
    opens_days: int = 0
    closes_minutes: int | None = None
    weekdays: tuple[int, ...] = ()

    def to_dict(self) -> dict:
        return {"venue": self.venue, "product": self.product, "opens_days": self.opens_days,
                "closes_minutes": self.closes_minutes, "weekdays": list(self.weekdays)}


@dataclass(frozen=True)
class RefundTier:
    """Refunds made `before_minutes` or more before the ticket's slot starts (negative:
    up to that long after it started) keep a fee of `fee_pct` percent."""
    before_minutes: int
    fee_pct: int


@dataclass(frozen=True)
class RefundPolicy:
    """A product's refund tiers (cmd.refund_policy), from the earliest: a refund takes
    the first tier it is early enough for; later than every tier it is refused
    (REFUND_CLOSED). With no tiers the product's flat refund_fee_pct applies at any time."""
    venue: str
    product: str
    tiers: list[RefundTier]

    def to_dict(self) -> dict:
        return {"venue": self.venue, "product": self.product, "tiers": [vars(t) for t in self.tiers]}


@dataclass(frozen=True)
class PassDates:
    """Fixed calendar dates a product's tickets are valid (a season or annual pass,
    cmd.pass_dates): venue-local days since 1970-01-01, both inclusive; both 0: none set
    (valid from the slot's day for the rule's valid_days, as any ticket)."""
    venue: str
    product: str
    valid_from: int = 0
    valid_to: int = 0


@dataclass(frozen=True)
class IdLimits:
    """How many tickets of a real-name product one ID number may hold (cmd.id_limits),
    across every channel, for one venue-local day and for one slot (0: no limit);
    checked at Confirm, where the ID numbers are given, against the holder's tickets
    that are not voided."""
    venue: str
    product: str
    per_day: int = 0
    per_slot: int = 0


@dataclass(frozen=True)
class PackagePart:
    """One part of a package (套票): a zone of the product or an extra (a boat ride, a
    meal voucher), the merchant it is settled to, and its share of the price: a fixed
    `amount_fen` per person, or `pct` percent of what the fixed parts leave."""
    part: str
    merchant: str
    amount_fen: int = 0
    pct: int = 0


@dataclass(frozen=True)
class PackageSplit:
    """How a package product's price is split over its parts (cmd.package), recorded on
    every order line of it (`split`: [part, merchant, fen]); no parts: not a package."""
    venue: str
    product: str
    parts: list[PackagePart]

    def to_dict(self) -> dict:
        return {"venue": self.venue, "product": self.product, "parts": [vars(p) for p in self.parts]}

    def split(self, total: int, persons: int) -> list[list]:
        """`total` fen paid for `persons` split over the parts, summing to `total`: the
        fixed parts first (never more than is left), then the rest by percent, the fen
        that percentages leave going to the first percent part."""
        out, left = [], total
        for p in self.parts:
            if p.amount_fen:
                fen = min(p.amount_fen * persons, left)
                left -= fen
                out.append([p.part, p.merchant, fen])
        rest, first = left, None
        for p in self.parts:
            if p.pct:
                fen = rest * p.pct // 100
                left -= fen
                out.append([p.part, p.merchant, fen])
                first = out[-1] if first is None else first
        if first is not None:
            first[2] += left
        return out


# what a coupon takes off (cmd.coupon), applied last, after every pricing rule
COUPON_KINDS = ("fixed", "pct", "spend")


@dataclass(frozen=True)
class Coupon:
    """A venue's coupon (cmd.coupon), applied to a hold's order after every pricing rule:

      fixed   `amount_fen` off the order's lines it applies to
      pct     `pct` percent off them, at most `cap_fen` (0: no cap)
      spend   `amount_fen` off once they come to `min_spend_fen` (满减)

    Every kind needs those lines to come to `min_spend_fen` (0: any). It may be used on
    the venue-local days `valid_from` to `valid_to` (None: open), for `products` and by
    `channels` (empty: all), until `budget_fen` of discount is given (0: no budget), at
    most `per_holder` times per person (0: no limit; the Hold then names the person).
    A `single_use` coupon is used through codes issued in batches (cmd.coupon_codes),
    each once; else its id is the public code anyone may enter. `active` False: no new
    hold takes it."""
    venue: str
    id: str
    kind: str
    amount_fen: int = 0
    pct: int = 0
    cap_fen: int = 0
    min_spend_fen: int = 0
    valid_from: int | None = None
    valid_to: int | None = None
    products: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()
    budget_fen: int = 0
    per_holder: int = 0
    single_use: bool = False
    active: bool = True
    name: str = ""

    def to_dict(self) -> dict:
        return {**vars(self), "products": list(self.products), "channels": list(self.channels)}


@dataclass(frozen=True)
class CouponStatus:
    """A coupon and its use now (Shard.coupon): codes issued (single-use), uses taken by
    holds and orders (a hold that ends unpaid gives its use back), discount given."""
    coupon: Coupon
    issued: int
    uses: int
    spent_fen: int


@dataclass(frozen=True)
class CouponBatch:
    """Single-use codes issued (cmd.coupon_codes): serials `first` to first+count-1;
    Shard.coupon_codes renders their text."""
    venue: str
    coupon: str
    first: int
    count: int


class HeldCoupon(NamedTuple):
    """The coupon a hold took (promos.evaluate): its id and kind, the code's serial (-1:
    its public code), the holder key of the person using it ("" if none), the discount
    and its split over the hold's lines. A tuple of atoms: the cyclic GC stops tracking
    it, so tens of thousands of held coupons cost a full collection nothing."""
    coupon: str
    kind: str
    serial: int
    holder: str
    discount: int
    lines: tuple[int, ...]


class HeldLine(NamedTuple):
    """One line of an active hold, as applied: product index, quantity, persons per
    ticket, the stock it took (slot index and allotment index, -1: none, per component),
    unit price and its share of the hold's coupon discount. Atoms and tuples of atoms
    only: the cyclic GC untracks it at its first collection."""
    p: int
    qty: int
    group: int
    slots: tuple[int, ...]
    allots: tuple[int, ...]
    price: int
    discount: int = 0

    def to_dict(self, coupon: bool) -> dict:
        """The line as snapshots store it (`discount` only in a hold that took a coupon)."""
        d = {"p": self.p, "qty": self.qty, "group": self.group, "slots": list(self.slots),
             "allots": list(self.allots), "price": self.price}
        if coupon:
            d["discount"] = self.discount
        return d


class ActiveHold(NamedTuple):
    """A hold while it is active (ShardState.holds): what it took and costs. A compact
    record, not a tree of dicts and lists: a tuple of atoms and HeldLines. `coupon` is "" without one; with one, its kind, serial and holder
    key (promos.HeldCoupon) and the discount (`amount` is after it). Snapshots keep it
    as the dict of to_dict/from_dict; the journal as a HOLD record (journal.hold_record),
    and so does the shard's store of active holds (sales.HoldStore)."""
    id: int
    channel: str
    venue: str
    expires_at: int
    created: int
    amount: int
    lines: tuple[HeldLine, ...]
    coupon: str = ""
    coupon_kind: str = ""
    coupon_serial: int = -1
    coupon_holder: str = ""
    discount: int = 0

    def to_dict(self) -> dict:
        """The hold as snapshots store it (JSON, unchanged since holds were dicts)."""
        c = bool(self.coupon)
        d = {"id": self.id, "channel": self.channel, "venue": self.venue,
             "expires_at": self.expires_at, "created": self.created, "amount": self.amount,
             "lines": [ln.to_dict(c) for ln in self.lines]}
        if c:
            d.update(coupon=self.coupon, coupon_kind=self.coupon_kind,
                     coupon_serial=self.coupon_serial, coupon_holder=self.coupon_holder,
                     discount=self.discount)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ActiveHold":
        """A hold from a snapshot's dict (to_dict)."""
        lines = tuple(HeldLine(ln["p"], ln["qty"], ln["group"], tuple(ln["slots"]), tuple(ln["allots"]),
                               ln["price"], ln.get("discount", 0)) for ln in d["lines"])
        if "coupon" in d:
            return cls(d["id"], d["channel"], d["venue"], d["expires_at"], d["created"], d["amount"],
                       lines, d["coupon"], d["coupon_kind"], d["coupon_serial"], d["coupon_holder"],
                       d["discount"])
        return cls(d["id"], d["channel"], d["venue"], d["expires_at"], d["created"], d["amount"], lines)


class CouponApplied(NamedTuple):
    """What a coupon took off an order (in a Quote, a hold, an order)."""
    coupon: str
    kind: str
    discount_fen: int


@dataclass(frozen=True)
class BlacklistResult:
    """A person put on or taken off a venue's blacklist (cmd.blacklist), with the
    tickets of theirs that were blocked or unblocked by it; `holder` is masked."""
    venue: str
    holder: str
    listed: bool
    reason: str
    until: int
    tickets: list[int]


@dataclass(frozen=True)
class PriceRules:
    """A product's pricing rules (SetPriceRules; Shard.price_rules)."""
    venue: str
    product: str
    rules: list[PriceRule]

    def to_dict(self) -> dict:
        return {"venue": self.venue, "product": self.product, "rules": [vars(r) for r in self.rules]}


class Quote(NamedTuple):
    """What a hold of some items would cost a channel now (Shard.quote), explained
    (`lines`), with the id a Hold may name to be charged exactly that (until
    `expires_at`, UTC seconds)."""

    items: list[PricedItem]
    amount_fen: int
    quote_id: str = ""
    expires_at: int = 0
    lines: list[QuoteLine] = []
    coupon: CouponApplied | None = None     # amount_fen is after its discount
    points: int = 0                         # a member's points redeemed (after the coupon)
    points_fen: int = 0                     # what they take off (amount_fen is after it)


@dataclass(frozen=True)
class ReleaseResult:
    hold_id: int
    released: bool = True


@dataclass(frozen=True)
class ExpireResult:
    expired: int                # holds expired (their stock released)


@dataclass(frozen=True)
class KeyResult:
    """A ticket key after a rotation (the new issuing key) or a retirement."""

    key_id: int
    state: int                  # 0 retired, 1 accepting (engine.codes KEY_ACCEPTING), 2 issuing


@dataclass(frozen=True)
class BlockResult:
    ticket_id: int
    blocked: bool


@dataclass(frozen=True)
class FaceResult:
    """A face token enrolled (or removed, enrolled=False) for a venue's terminals."""

    enrolled: bool
    holder: str                 # the holder's masked ID number, "" on removal
    tickets: int                # the holder's tickets of the venue


@dataclass(frozen=True)
class AuditNote:
    """The answer of a NOTE: the outcome its audit record carries."""

    audit_result: str


@dataclass(frozen=True)
class SlotCounters:
    """A slot's counters as the core keeps them (zone: the zone's index in the shard)."""

    zone: int
    day: int
    start: int
    end: int
    capacity: int
    reserved: int               # allotted to channels
    sold: int
    held: int
    allot_used: int             # sold + held within allotments


@dataclass(frozen=True)
class AllotmentCounters:
    """A channel's allotment of a slot as the core keeps it (slot: the slot's index)."""

    slot: int
    capacity: int
    sold: int
    held: int


class UploadResult(NamedTuple):
    """What became of one scan an offline gate uploaded."""

    nonce: str
    status: str                 # APPLIED, CONFLICT or DUPLICATE
    reason: int                 # Reason value, as decided here (or first, for a DUPLICATE)
    ticket_id: int
    persons: int

    @classmethod
    def from_dict(cls, d: dict) -> "UploadResult":
        return cls(d["nonce"], d["status"], d["reason"], d["ticket_id"], d["persons"])


@dataclass(frozen=True)
class IssuedTicket:
    ticket_id: int
    product: str
    persons: int
    code: str
    holder: str = ""            # masked ID number for real-name tickets
    seat: str = ""              # its seat (<section>-<row>-<number>) in a session, if any


@dataclass(frozen=True)
class Order:
    order_id: str
    channel: str
    venue: str
    hold_id: int
    amount_fen: int
    refunded_fen: int
    payment: dict
    lines: list[dict]
    refunds: list[dict]
    created: int
    coupon: str = ""                # the coupon it was sold with, if any
    discount_fen: int = 0           # what the coupon took off (amount_fen is after it)
    changes: list[dict] = field(default_factory=list)   # its changes (改签), as made
    station: str = ""               # the station it was sold at (its shift's); "": none
    shift: str = ""                 # the cash-desk shift it was rung up in; "": none
    member: str = ""                # the member it was sold to (points earned), if any
    points_earned: int = 0          # points the member earned by it (refunds take theirs back)
    points_redeemed: int = 0        # points the member paid part of it with (amount_fen is after them)

    @classmethod
    def from_row(cls, row: dict) -> "Order":
        return cls(**{k: row[k] for k in cls.__dataclass_fields__ if k in row})

    def ticket_ids(self) -> list[int]:
        return [line["first_ticket"] + i * line["ncomp"]
                for line in self.lines for i in range(line["qty"])]

    @property
    def status(self) -> str:
        """paid; partly_refunded (some refunded); refunded (every ticket refunded or
        changed away, at least one refunded); changed (a change made, nothing refunded)."""
        if self.refunds:
            gone = {t for r in self.refunds if not r.get("persons") for t in r["tickets"]}
            gone |= {t for c in self.changes for t in c["tickets"]}
            return "refunded" if set(self.ticket_ids()) <= gone else "partly_refunded"
        return "changed" if self.changes else "paid"


@dataclass(frozen=True)
class RefundResult:
    order_id: str
    refund_id: str
    tickets: list[int]
    amount_fen: int
    fee_fen: int
    persons: int = 0            # of a group ticket refunded in part: the persons refunded
    points_reversed: int = 0    # points the order's member earned on them, taken back
    points_restored: int = 0    # points they were paid with, given back to the member

    def to_dict(self) -> dict:
        d = {"order_id": self.order_id, "refund_id": self.refund_id,
             "tickets": list(self.tickets), "amount_fen": self.amount_fen, "fee_fen": self.fee_fen}
        if self.persons:
            d["persons"] = self.persons
        if self.points_reversed:
            d["points_reversed"] = self.points_reversed
        if self.points_restored:
            d["points_restored"] = self.points_restored
        return d


# -- what the shard's queries answer -----------------------------------------------------
@dataclass(frozen=True)
class HoldInfo:
    """A hold as its channel may read it back (Shard.hold_info)."""

    status: str                 # active, expired, released or confirmed
    order_id: str               # the order that paid it (confirmed), else ""
    channel: str
    venue: str
    hold_id: int
    expires_at: int
    amount_fen: int
    items: list[PricedItem]

    @classmethod
    def from_dict(cls, d: dict) -> "HoldInfo":
        """From a stored hold row (engine/state/sales.py end_hold)."""
        return cls(d["status"], d["order_id"], d["channel"], d["venue"], d["hold_id"],
                   d["expires_at"], d["amount_fen"], [PricedItem.from_dict(it) for it in d["items"]])


@dataclass(frozen=True)
class AllotmentStock:
    capacity: int
    sold: int
    held: int
    remaining: int


@dataclass(frozen=True)
class SlotStock:
    """Stock of one slot (Shard.availability)."""

    slot: str
    zone: str
    day: int
    start: int
    end: int
    capacity: int
    sold: int
    held: int
    pool_remaining: int                     # left outside the allotments
    allotments: dict[str, AllotmentStock]   # by channel
    remaining: int | None = None            # left for the channel asked about, if one was


@dataclass(frozen=True)
class OrderTicket:
    """A ticket of an order as it is now (Shard.order_tickets)."""

    ticket_id: int
    product: str
    persons: int
    code: str                   # "" if its key was retired since
    holder: str                 # masked ID number of a real-name ticket
    state: str                  # voided, blocked, inside, used or issued: the first that holds
    entries_left: int           # -1: unlimited


@dataclass(frozen=True)
class TicketRecord:
    """A code's state (Shard.ticket): the core's records of its components, one per zone."""

    ticket_id: int
    product: str
    components: list[dict]
    zones: list[str]
    state: int                  # _core.STATE_* bits of the code


@dataclass(frozen=True)
class ZoneCount:
    zone: str
    inside: int                 # persons inside now (0 for another day than today)
    entered: int                # tickets entered on the day
    live_capacity: int


@dataclass(frozen=True)
class ProductCount:
    product: str
    issued: int                 # codes
    used: int
    voided: int
    blocked: int


@dataclass(frozen=True)
class HolderTicket:
    """A code bound to a real-name holder (Shard.holder_tickets)."""

    ticket_id: int
    product: str
    venue: str
    first_day: int
    last_day: int
    used: bool
    voided: bool
    blocked: bool


@dataclass(frozen=True)
class Conflict:
    """An offline scan the server refused though the gate admitted it (Shard.conflicts)."""

    key: str                    # its row: the `after` of the next page
    venue: str
    gate: str
    nonce: str
    seq: int                    # the gate's sequence number of the scan
    at: int
    ticket_id: int
    direction: int
    persons: int                # persons the gate admitted
    offline_reason: int
    server_reason: int

    @classmethod
    def from_dict(cls, d: dict, key: str) -> "Conflict":
        return cls(key, d["venue"], d["gate"], d["nonce"], d["seq"], d["at"], d["ticket_id"],
                   d["direction"], d["persons"], d["offline_reason"], d["server_reason"])


@dataclass(frozen=True)
class AuditRecord:
    """One record of the audit log (engine/audit.py)."""

    seq: int
    at: int
    principal: str
    method: str
    digest: str
    result: str
    prev: str
    hash: str

    @classmethod
    def from_dict(cls, d: dict) -> "AuditRecord":
        return cls(d["seq"], d["at"], d["principal"], d["method"], d["digest"], d["result"],
                   d["prev"], d["hash"])


@dataclass(frozen=True)
class Catalog:
    """A venue's catalog (Shard.catalog)."""

    venue: Venue
    zones: list[Zone]
    gates: list[Gate]
    products: list[Product]
    merchants: list["Merchant"] = field(default_factory=list)


@dataclass(frozen=True)
class Merchant:
    """A merchant inside a venue (二次消费: a boat company, a cable car, a restaurant) as
    set (engine/state/merchants.py): the zones it runs, each a consumption point where
    each person of a ticket is admitted once (its terminals are the zones' gates), and
    the stations (tills) it sells at. Its principals sell as channel `id`."""

    venue: str
    id: str
    name: str
    zones: tuple[str, ...] = ()
    stations: tuple[str, ...] = ()


@dataclass(frozen=True)
class ShardCounts:
    """What a shard holds, counted (Shard.summary)."""

    venues: int
    zones: int
    gates: int
    products: int
    slots: int
    holds: int                  # active
    issued: int                 # ticket ids (components included)
    used: int
    inside: int
    voided: int
    blocked: int
    inside_by_zone: dict[tuple[str, str], int]      # (venue, zone) -> persons inside
    keys: list[int]             # ticket key ids
    issuing_key: int
    map_use: float              # share of the LMDB map in use


# what an offline gate needs (Shard.offline_bundle, DESIGN.md 6)
@dataclass(frozen=True)
class BundleZone:
    id: str
    enforce_exit: bool
    entry_closed: bool = False
    once: bool = False           # a merchant's consumption point (merchants.py)


@dataclass(frozen=True)
class BundleGate:
    id: str
    zone: str
    mode: int
    entry_closed: bool = False


@dataclass(frozen=True)
class BundleProduct:
    index: int                  # the product's index in codes
    id: str
    zones: list[str]
    max_entries: int
    daily_entries: int
    reentry: bool
    slot_grace_s: int


@dataclass(frozen=True)
class BundleSlot:
    index: int                  # the slot's index in codes
    id: str
    zone: str
    day: int
    start: int
    end: int


@dataclass(frozen=True)
class OfflineBundle:
    """See Shard.offline_bundle. `sets` maps voided, blocked, used, entered, inside,
    exhausted and changed to BitMaps of ticket ids (changed: None in a whole bundle)."""

    venue: str
    shard: int
    day: int
    epoch: int
    version: int
    full: bool
    cut_at: int
    utc_offset_s: int
    public_keys: dict[int, bytes]
    zones: list[BundleZone]
    gates: list[BundleGate]
    products: list[BundleProduct]
    slots: list[BundleSlot]
    sets: dict[str, Any]


@dataclass(frozen=True)
class Violation:
    """One broken invariant found by check()."""

    invariant: str
    detail: str


# -- the live view (engine/live.py, ReportService.WatchLive) --------------------------------
@dataclass(frozen=True)
class ZoneControl:
    zone: str
    live_capacity: int
    fill_pct: tuple[int, ...]
    rate: int                   # entries per minute to warn at (0: never)


@dataclass(frozen=True)
class LiveControls:
    """A venue's live controls as set (engine/state/controls.py)."""

    venue: str
    sales_paused: bool
    paused_zones: tuple[str, ...]
    paused_slots: tuple[str, ...]
    closed_zones: tuple[str, ...]
    closed_gates: tuple[str, ...]
    zones: tuple[ZoneControl, ...]


@dataclass(frozen=True)
class GateStatus:
    """What a gate last said of itself (GateService.Heartbeat), and when."""

    heard_at: int
    offline: bool
    bundle_cut_at: int          # 0: it holds no bundle
    queued: int
    last_scan: int              # 0: none
    version: str


@dataclass(frozen=True)
class ZoneLive:
    zone: str
    name: str
    inside: int
    live_capacity: int
    entries: int                # persons admitted on a visit today
    reentries: int
    exits: int
    last_minute: int            # persons admitted in the last 60 s
    per_minute: tuple[int, ...]  # the last 60 minutes, oldest first (the last under way)
    sales_paused: bool
    entry_closed: bool


@dataclass(frozen=True)
class GateLive:
    gate: str
    zone: str
    state: str                  # "unknown", "up", "offline", "down"
    status: GateStatus | None
    entry_closed: bool


@dataclass(frozen=True)
class Alert:
    id: str                     # "fill:ZONE", "rate:ZONE", "gate:GATE"
    kind: str                   # "fill", "rate", "gate"
    zone: str
    gate: str
    level_pct: int
    value: int
    threshold: int
    raised_at: int
    message: str


@dataclass(frozen=True)
class ChannelSales:
    channel: str
    tickets: int
    persons: int
    paid_fen: int
    net_fen: int


@dataclass(frozen=True)
class LiveView:
    venue: str
    day: int
    at: int
    zones: tuple[ZoneLive, ...]
    gates: tuple[GateLive, ...]
    alerts: tuple[Alert, ...]
    sales: tuple[ChannelSales, ...]
    controls: LiveControls


# -- members and points (engine/state/members.py) --------------------------------------
POINT_KINDS = ("earn", "reverse", "redeem", "restore", "adjust", "expire")
NEVER_EXPIRES = 2**31 - 1       # the last valid day of points that never expire
EXPIRY_KINDS = ("year_end", "days", "never")


@dataclass(frozen=True)
class MemberLevel:
    """A member level: reached by spending `min_spend_fen` within the programme's period."""

    level: int                  # 1..99; the pricing rules' member_level
    name: str
    min_spend_fen: int


@dataclass(frozen=True)
class EarnRule:
    """Points earned per yuan (100 fen) paid, for a product and channel ("": any)."""

    product: str = ""
    channel: str = ""
    points_per_yuan: int = 0


@dataclass(frozen=True)
class MemberProgram:
    """A venue's membership programme (会员体系), as an operator set it (cmd.member_program):

      levels        by spend within the last `period_days` venue-local days, lowest first
      earn          points per yuan paid at Confirm; the most specific rule applies
                    (product and channel, product, channel, neither); none: no points
      expiry        points earned on a day expire: `year_end` at the end of the year
                    `expiry_n` years after (1: the end of the next year); `days`:
                    `expiry_n` days after; `never`
      fen_per_point what a point is worth when redeemed"""

    venue: str
    levels: tuple[MemberLevel, ...] = ()
    period_days: int = 365
    earn: tuple[EarnRule, ...] = ()
    expiry: str = "year_end"
    expiry_n: int = 1
    fen_per_point: int = 1

    def to_dict(self) -> dict:
        return {"venue": self.venue, "levels": [vars_(x) for x in self.levels],
                "period_days": self.period_days, "earn": [vars_(x) for x in self.earn],
                "expiry": self.expiry, "expiry_n": self.expiry_n, "fen_per_point": self.fen_per_point}

    @classmethod
    def from_dict(cls, d: dict) -> "MemberProgram":
        return cls(d["venue"], tuple(MemberLevel(**x) for x in d["levels"]), d["period_days"],
                   tuple(EarnRule(**x) for x in d["earn"]), d["expiry"], d["expiry_n"],
                   d["fen_per_point"])


def vars_(x: Any) -> dict:
    return {k: getattr(x, k) for k in x.__dataclass_fields__}


@dataclass(frozen=True)
class MemberInfo:
    """A member as shown: the ID number and phone masked, the level as of the asking
    time, the points balance with what expires when (venue-local day numbers)."""

    venue: str
    member_id: str
    holder: str                 # masked ID number ("" if enrolled by phone only)
    phone: str                  # masked phone number ("" if enrolled by ID number only)
    enrolled_at: int
    level: int                  # 0: below the first level (or no programme)
    level_name: str
    spend_fen: int              # paid within the programme's period up to today
    balance: int
    debt: int                   # points refunds took back that the balance could not cover
    expiring: tuple[tuple[int, int], ...] = ()   # (last valid day, points), soonest first

    def to_dict(self) -> dict:
        d = vars_(self)
        d["expiring"] = [list(x) for x in self.expiring]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "MemberInfo":
        return cls(**{**d, "expiring": tuple(tuple(x) for x in d["expiring"])})


@dataclass(frozen=True)
class PointsEntry:
    """One entry of a member's points ledger: what changed the balance, by how much
    (`points`, signed), the balance and debt after it, and what it refers to (an order
    id, a refund id, an operator's reason)."""

    seq: int
    at: int
    kind: str                   # POINT_KINDS
    points: int
    balance: int
    debt: int
    ref: str = ""
    reason: str = ""


@dataclass(frozen=True)
class PointsResult:
    """An adjustment made (cmd.adjust_points): the member's balance after it."""

    member_id: str
    points: int
    balance: int
    debt: int
    seq: int


# -- theatre seats (engine/state/seating.py) -----------------------------------------------
@dataclass(frozen=True)
class SeatZone:
    """A price zone of a seat map: its letter, its price per person, its name."""

    zone: str
    price_fen: int
    name: str = ""


@dataclass(frozen=True)
class SeatMap:
    """A hall (cmd.seat_map): rows of (section, row, layout), the price zones best first.
    A layout reads left to right: a zone letter is a seat, x a seat never sold, _ an aisle."""

    venue: str
    id: str
    name: str
    rows: tuple[tuple[str, str, str], ...]
    zones: tuple[SeatZone, ...]

    def to_dict(self) -> dict:
        return {"venue": self.venue, "id": self.id, "name": self.name,
                "rows": [list(r) for r in self.rows], "zones": [vars_(z) for z in self.zones]}

    @classmethod
    def from_dict(cls, d: dict) -> "SeatMap":
        return cls(d["venue"], d["id"], d["name"], tuple(tuple(r) for r in d["rows"]),
                   tuple(SeatZone(**z) for z in d["zones"]))


@dataclass(frozen=True)
class SessionSeat:
    """A slot made a session (cmd.seating): its seat map and the seats it sells."""

    venue: str
    slot: str
    seat_map: str
    seats: int
