"""The venue operator's and administrator's client over ``AdminService`` (DESIGN.md
sections 1 and 5): the shard map, venue set-up (venues, zones, gates, products,
slots, capacity, allotments, the price calendar, price tables, pricing rules, booking
windows and real-name limits), ticket blocks, the person blacklist, ticket keys,
principals and API keys, and the audit log.

    from turnstile.clients.admin import AdminClient, DatePrice, PriceRule, SlotSpec

    admin = AdminClient(Connection("127.0.0.1:50051", admin_key))
    admin.create_venue("museum", "City Museum")
    admin.create_zone("museum", "hall", live_capacity=300)
    admin.create_gate("museum", "hall", "hall-1", mode="both")
    admin.create_product("museum", "adult", ["hall"], price_fen=3000)
    admin.create_slots("museum", [SlotSpec("hall-am", "hall", "2026-11-23",
                                           start=..., end=..., capacity=200)])
    admin.set_calendar("museum", {"2027-01-01": "holiday"})
    admin.set_prices("museum", "adult", [DatePrice("weekend", "", 3500)])
    admin.set_price_rules("museum", "adult", [PriceRule("early_bird", pct=-10, days_ahead=7)])
    admin.set_booking_window("museum", "adult", opens_days=30, closes_minutes=60)
    admin.set_id_limits("museum", "night", per_day=2, per_slot=1)    # a real-name product
    admin.blacklist("museum", "110101199001011234", reason="resold tickets")
    key = admin.create_api_key("museum-till")        # key.secret is shown once

Set-up objects come back as the generated messages (``turnstile.v1.admin_pb2``:
Venue, Zone, Gate, Product, Catalog...). Principals, API keys, ticket keys, calendar
days, price tables, pricing rules, booking windows, real-name limits, blacklist entries
and audit answers come back as small dataclasses. Every mutating call carries an
idempotency key (a UUID unless given), so it is retried safely; the principal and
API key calls are the exception: the server does not honour their idempotency key
yet, so they are tried once (a retried CreateApiKey could make a second key).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator, Mapping, Sequence

from turnstile.v1 import admin_pb2, admin_pb2_grpc

from .base import Connection, ShardMap, new_key

__all__ = [
    "ROLES",
    "AdminClient",
    "ApiKey",
    "AuditCheck",
    "AuditRecord",
    "BlacklistEntry",
    "BookingWindow",
    "CalendarDay",
    "Coupon",
    "CouponStatus",
    "DATE_TYPES",
    "DatePrice",
    "IdLimits",
    "PackagePart",
    "PackageSplit",
    "PassDates",
    "PriceRule",
    "PriceRules",
    "PriceTable",
    "ProductPricing",
    "RefundPolicy",
    "RefundTier",
    "RULE_KINDS",
    "Principal",
    "SlotSpec",
    "TicketKey",
]

Admin = admin_pb2_grpc.AdminServiceStub
#: Role names of DESIGN.md section 5, as accepted by :meth:`AdminClient.create_principal`.
ROLES = ("admin", "operator", "seller", "channel", "gate", "finance", "auditor", "viewer", "merchant")
_MODES = {"in": admin_pb2.GATE_IN, "out": admin_pb2.GATE_OUT, "both": admin_pb2.GATE_BOTH}
_KEY_STATES = {2: "issuing", 1: "accepted", 0: "retired"}
#: The date types a venue prices by (AdminService.SetCalendar): a day's type is the
#: operator's calendar entry for it, else ``weekend`` on Saturday and Sunday, else
#: ``weekday``.
DATE_TYPES = ("weekday", "weekend", "holiday", "peak", "off")
#: The kinds of pricing rule (AdminService.SetPriceRules), in the order they apply.
RULE_KINDS = ("early_bird", "time_of_day", "fill_rate", "member_level")


def _ts(t: dt.datetime | int) -> dict:
    if isinstance(t, dt.datetime):
        if t.tzinfo is None:
            raise ValueError("slot times must be timezone-aware (or UTC seconds)")
        return {"seconds": int(t.timestamp())}
    return {"seconds": int(t)}


def _utc(ts) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts.seconds, dt.UTC)


@dataclasses.dataclass(frozen=True)
class SlotSpec:
    """Stock of one zone on one venue-local day in one time window. ``start`` and
    ``end`` are aware datetimes or UTC seconds; ``capacity`` is in persons."""

    slot_id: str
    zone_id: str
    date: dt.date | str
    start: dt.datetime | int
    end: dt.datetime | int
    capacity: int

    def to_proto(self) -> admin_pb2.SlotSpec:
        date = self.date.isoformat() if isinstance(self.date, dt.date) else self.date
        return admin_pb2.SlotSpec(slot_id=self.slot_id, zone_id=self.zone_id, date=date,
                                  start=_ts(self.start), end=_ts(self.end), capacity=self.capacity)


@dataclasses.dataclass(frozen=True)
class CalendarDay:
    """A venue-local day and its date type (one of :data:`DATE_TYPES`); ``explicit``
    when an operator's calendar entry says it (else it follows the day of the week)."""

    date: dt.date
    date_type: str
    explicit: bool = False


@dataclasses.dataclass(frozen=True)
class DatePrice:
    """A product's price per person in fen on days of ``date_type``, for ``channel``
    (empty: every channel)."""

    date_type: str
    channel: str
    price_fen: int

    def to_proto(self) -> admin_pb2.DatePrice:
        return admin_pb2.DatePrice(date_type=self.date_type, channel=self.channel,
                                   price_fen=self.price_fen)


@dataclasses.dataclass(frozen=True)
class PriceTable:
    """A product's prices by date type and channel."""

    venue_id: str
    product_id: str
    prices: tuple[DatePrice, ...]

    @classmethod
    def from_proto(cls, t: admin_pb2.PriceTable) -> PriceTable:
        return cls(t.venue_id, t.product_id,
                   tuple(DatePrice(p.date_type, p.channel, p.price_fen) for p in t.prices))


@dataclasses.dataclass(frozen=True)
class PriceRule:
    """A pricing rule, one of :data:`RULE_KINDS`; the rules apply in that order after the
    price table, each to the price the one before left, when its condition holds:

      early_bird   the booking is made ``days_ahead`` (1-366) or more days before the
                   slot's venue-local day
      time_of_day  the slot starts at ``from_minute`` (venue-local minutes after
                   midnight, 0-1439) or later
      fill_rate    ``fill_pct`` percent (1-100) or more of the slot is sold or held
      member_level the buyer's member level is ``member_level`` (1-99) or higher: the
                   level the spend of the member a sale names reached (``member_id``;
                   MembersClient.set_program sets the levels)

    It changes the price per person by ``amount_fen`` or by ``pct`` percent of it
    (exactly one non-zero; negative: a discount), the change at most ``cap_fen`` either
    way (0: no cap); a price never goes below 0. Give only the kind's own condition."""

    kind: str
    amount_fen: int = 0
    pct: int = 0
    cap_fen: int = 0
    days_ahead: int = 0
    from_minute: int = 0
    fill_pct: int = 0
    member_level: int = 0

    def to_proto(self) -> admin_pb2.PriceRule:
        return admin_pb2.PriceRule(**dataclasses.asdict(self))

    @classmethod
    def from_proto(cls, r: admin_pb2.PriceRule) -> PriceRule:
        return cls(r.kind, r.amount_fen, r.pct, r.cap_fen, r.days_ahead, r.from_minute, r.fill_pct,
                   r.member_level)


@dataclasses.dataclass(frozen=True)
class PriceRules:
    """A product's pricing rules, in the order they apply."""

    venue_id: str
    product_id: str
    rules: tuple[PriceRule, ...]

    @classmethod
    def from_proto(cls, r: admin_pb2.PriceRules) -> PriceRules:
        return cls(r.venue_id, r.product_id, tuple(PriceRule.from_proto(x) for x in r.rules))


@dataclasses.dataclass(frozen=True)
class BookingWindow:
    """When a product may be booked for a slot: from ``opens_days`` days before the
    slot's day (0: any time before), until ``closes_minutes`` minutes before the slot
    starts (negative: after it started; None: until the slot ends), for slots on the ISO
    ``weekdays`` (1 = Monday .. 7 = Sunday; empty: every day). Outside it a quote or hold
    is refused ``BOOKING_CLOSED`` (FAILED_PRECONDITION)."""

    venue_id: str
    product_id: str
    opens_days: int = 0
    closes_minutes: int | None = None
    weekdays: tuple[int, ...] = ()

    @classmethod
    def from_proto(cls, w: admin_pb2.BookingWindow) -> BookingWindow:
        return cls(w.venue_id, w.product_id, w.opens_days,
                   w.closes_minutes if w.HasField("closes_minutes") else None, tuple(w.weekdays))


@dataclasses.dataclass(frozen=True)
class IdLimits:
    """How many tickets of a real-name product one ID number may hold, across every
    channel, for one venue-local day and for one slot (0: no limit). A confirm beyond
    them is refused ``ID_LIMIT`` (FAILED_PRECONDITION), naming the holder
    (``holders[i].id_numbers[k]``), and issues nothing."""

    venue_id: str
    product_id: str
    per_day: int = 0
    per_slot: int = 0

    @classmethod
    def from_proto(cls, m: admin_pb2.IdLimits) -> IdLimits:
        return cls(m.venue_id, m.product_id, m.per_day, m.per_slot)


@dataclasses.dataclass(frozen=True)
class BlacklistEntry:
    """A person put on (``listed``) or taken off a venue's blacklist: ``holder`` is their
    ID number masked, ``until`` the entry's expiry for sales (None: for good), and
    ``ticket_ids`` their tickets of the venue the entry blocked or unblocked."""

    venue_id: str
    holder: str
    listed: bool
    reason: str
    until: dt.datetime | None
    ticket_ids: tuple[int, ...]

    @classmethod
    def from_proto(cls, m: admin_pb2.BlacklistEntry) -> BlacklistEntry:
        return cls(m.venue_id, m.holder, m.listed, m.reason,
                   _utc(m.until) if m.HasField("until") else None, tuple(m.ticket_ids))


@dataclasses.dataclass(frozen=True)
class RefundTier:
    """A refund made ``before_minutes`` or more before the ticket's slot starts
    (negative: up to that long after it started) keeps ``fee_pct`` percent."""

    before_minutes: int
    fee_pct: int


@dataclasses.dataclass(frozen=True)
class RefundPolicy:
    """A product's refund tiers, earliest first; a refund later than every tier is
    refused ``REFUND_CLOSED``; no tiers: the flat refund fee at any time."""

    venue_id: str
    product_id: str
    tiers: tuple[RefundTier, ...] = ()

    @classmethod
    def from_proto(cls, m: admin_pb2.RefundPolicy) -> RefundPolicy:
        return cls(m.venue_id, m.product_id, tuple(RefundTier(t.before_minutes, t.fee_pct)
                                                   for t in m.tiers))


@dataclasses.dataclass(frozen=True)
class PassDates:
    """A season or annual pass's fixed validity (YYYY-MM-DD, inclusive); both empty:
    tickets are valid from their slot's day."""

    venue_id: str
    product_id: str
    valid_from: str = ""
    valid_to: str = ""

    @classmethod
    def from_proto(cls, m: admin_pb2.PassDates) -> PassDates:
        return cls(m.venue_id, m.product_id, m.valid_from, m.valid_to)


@dataclasses.dataclass(frozen=True)
class PackagePart:
    """A part of a package (a zone or an extra), the merchant it is settled to and its
    share: a fixed ``amount_fen`` per person, or ``pct`` of what the fixed parts leave."""

    part: str
    merchant: str
    amount_fen: int = 0
    pct: int = 0


@dataclasses.dataclass(frozen=True)
class PackageSplit:
    """A package product's parts (none: not a package)."""

    venue_id: str
    product_id: str
    parts: tuple[PackagePart, ...] = ()

    @classmethod
    def from_proto(cls, m: admin_pb2.PackageSplit) -> PackageSplit:
        return cls(m.venue_id, m.product_id, tuple(PackagePart(p.part, p.merchant, p.amount_fen, p.pct)
                                                   for p in m.parts))


@dataclasses.dataclass(frozen=True)
class Coupon:
    """A venue's coupon: ``kind`` fixed (``amount_fen`` off), pct (``pct`` percent off,
    at most ``cap_fen``) or spend (满减: ``amount_fen`` off at ``min_spend_fen``); when,
    for what and whom, its budget and limit per person; single-use (codes issued in
    batches) or public (its id is the code)."""

    venue_id: str
    coupon_id: str
    kind: str
    amount_fen: int = 0
    pct: int = 0
    cap_fen: int = 0
    min_spend_fen: int = 0
    valid_from: str = ""
    valid_to: str = ""
    product_ids: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()
    budget_fen: int = 0
    per_holder: int = 0
    single_use: bool = False
    active: bool = True
    name: str = ""

    def to_proto(self) -> admin_pb2.Coupon:
        return admin_pb2.Coupon(
            venue_id=self.venue_id, coupon_id=self.coupon_id, kind=self.kind, name=self.name,
            amount_fen=self.amount_fen, pct=self.pct, cap_fen=self.cap_fen, min_spend_fen=self.min_spend_fen,
            valid_from=_date(self.valid_from), valid_to=_date(self.valid_to), product_ids=list(self.product_ids),
            channels=list(self.channels), budget_fen=self.budget_fen, per_holder=self.per_holder,
            single_use=self.single_use, active=self.active)

    @classmethod
    def from_proto(cls, m: admin_pb2.Coupon) -> Coupon:
        return cls(m.venue_id, m.coupon_id, m.kind, m.amount_fen, m.pct, m.cap_fen, m.min_spend_fen,
                   m.valid_from, m.valid_to, tuple(m.product_ids), tuple(m.channels), m.budget_fen,
                   m.per_holder, m.single_use, m.active, m.name)


@dataclasses.dataclass(frozen=True)
class CouponStatus:
    """A coupon and its use now: codes issued, uses taken by holds and orders, discount
    given."""

    coupon: Coupon
    issued: int
    uses: int
    spent_fen: int


@dataclasses.dataclass(frozen=True)
class ProductPricing:
    """How a product is priced and when it may be booked, as set, its real-name limits,
    its refund tiers, its pass dates and its package parts."""

    prices: PriceTable
    rules: PriceRules
    booking: BookingWindow
    id_limits: IdLimits
    refund_policy: RefundPolicy | None = None
    pass_dates: PassDates | None = None
    package: PackageSplit | None = None


def _date(d: dt.date | str) -> str:
    return d.isoformat() if isinstance(d, dt.date) else d


@dataclasses.dataclass(frozen=True)
class Principal:
    """Someone or something that calls the API: a role and a scope (venues, the
    channel it sells as, gates; an empty scope means all)."""

    principal_id: str
    role: str
    venue_ids: tuple[str, ...] = ()
    channel: str = ""
    gate_ids: tuple[str, ...] = ()

    @classmethod
    def from_proto(cls, p: admin_pb2.Principal) -> Principal:
        return cls(p.principal_id, admin_pb2.Role.Name(p.role).lower(), tuple(p.venue_ids),
                   p.channel, tuple(p.gate_ids))


@dataclasses.dataclass(frozen=True)
class ApiKey:
    """An API key: ``key_id`` is public (used to revoke it); ``secret`` is the whole
    key to send as ``authorization: Bearer <secret>``, shown only when it is made
    (the server stores a hash)."""

    key_id: str
    principal_id: str
    secret: str = ""
    revoked: bool = False


@dataclasses.dataclass(frozen=True)
class TicketKey:
    """A ticket key of a shard: ``state`` is ``issuing`` (new codes use it),
    ``accepted`` (its codes still verify) or ``retired`` (its codes read FORGED)."""

    shard: int
    key_id: int
    state: str

    @classmethod
    def from_proto(cls, k: admin_pb2.TicketKeyInfo) -> TicketKey:
        return cls(k.shard, k.key_id, _KEY_STATES.get(k.state, str(k.state)))


@dataclasses.dataclass(frozen=True)
class AuditRecord:
    """One audited call of a shard's hash-chained audit log."""

    shard: int
    seq: int
    at: dt.datetime
    principal_id: str
    method: str
    request_digest: str
    result: str
    prev_hash: str
    hash: str


@dataclasses.dataclass(frozen=True)
class AuditCheck:
    """The result of verifying one shard's audit chain."""

    shard: int
    ok: bool
    checked: int
    first_bad_seq: int


class AdminClient:
    """Typed calls of ``AdminService``. Venue calls go to the venue's shard; ticket
    key and audit calls to the shard named; principals and API keys (kept once per
    node) to any shard."""

    def __init__(self, conn: Connection):
        self.conn = conn

    def _call(self, method: str, request, *, venue: str | None = None, shard: int | None = None,
              retry: bool = True):
        return self.conn.call(Admin, method, request, venue=venue, shard=shard, retry=retry)

    # -- the node ------------------------------------------------------------------------
    def shard_map(self, refresh: bool = True) -> ShardMap:
        """Where each shard listens and which shard holds each venue (asked anew unless
        ``refresh`` is False)."""
        return self.conn.shard_map(refresh=refresh)

    # -- venue set-up --------------------------------------------------------------------
    def create_venue(self, venue_id: str, name: str = "", *, utc_offset_s: int = 8 * 3600,
                     shard: int | None = None, key: str | None = None) -> admin_pb2.Venue:
        """Create a venue on ``shard`` (default: the shard this connection's address
        serves). ``utc_offset_s``: venue-local time minus UTC (28800 for China)."""
        req = admin_pb2.CreateVenueRequest(venue_id=venue_id, name=name, utc_offset_s=utc_offset_s,
                                           idempotency_key=key or new_key())
        if shard is not None:
            req.shard = shard
        v = self._call("CreateVenue", req, shard=shard)
        self.conn.shard_map(refresh=True)           # the map now places it
        return v

    def create_zone(self, venue: str, zone_id: str, name: str = "", *, live_capacity: int = 0,
                    enforce_exit: bool = False, key: str | None = None) -> admin_pb2.Zone:
        """Create a zone. ``live_capacity``: persons inside at most (0: no limit);
        ``enforce_exit``: refuse exits of tickets that did not enter."""
        return self._call("CreateZone", admin_pb2.CreateZoneRequest(
            venue_id=venue, zone_id=zone_id, name=name, live_capacity=live_capacity,
            enforce_exit=enforce_exit, idempotency_key=key or new_key()), venue=venue)

    def create_gate(self, venue: str, zone_id: str, gate_id: str, *, mode: str = "both",
                    key: str | None = None) -> admin_pb2.Gate:
        """Create a gate of a zone; ``mode`` is ``in``, ``out`` or ``both``."""
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {', '.join(_MODES)}")
        return self._call("CreateGate", admin_pb2.CreateGateRequest(
            venue_id=venue, zone_id=zone_id, gate_id=gate_id, mode=_MODES[mode],
            idempotency_key=key or new_key()), venue=venue)

    def create_product(self, venue: str, product_id: str, zone_ids: Sequence[str], *,
                       name: str = "", price_fen: int, rule: admin_pb2.EntryRule | None = None,
                       channel_prices: Mapping[str, int] | None = None,
                       channels: Sequence[str] = (), real_name: bool = False, max_group: int = 0,
                       refundable: bool = False, refund_fee_pct: int = 0,
                       key: str | None = None) -> admin_pb2.Product:
        """Create a product admitting ``zone_ids`` (one admission right each; a combo
        lists several) at ``price_fen`` per person. ``rule``: an
        ``admin_pb2.EntryRule`` (default: single use, one day, 30 min slot grace).
        ``channels``: who may sell it (empty: all)."""
        req = admin_pb2.CreateProductRequest(
            venue_id=venue, product_id=product_id, name=name, zone_ids=list(zone_ids),
            price_fen=price_fen, channel_prices=dict(channel_prices or {}), channels=list(channels),
            real_name=real_name, max_group=max_group, refundable=refundable,
            refund_fee_pct=refund_fee_pct, idempotency_key=key or new_key())
        if rule is not None:
            req.rule.CopyFrom(rule)
        return self._call("CreateProduct", req, venue=venue)

    def create_slots(self, venue: str, slots: Sequence[SlotSpec], *, key: str | None = None) -> int:
        """Create slots, all or nothing; returns how many were created."""
        return self._call("CreateSlots", admin_pb2.CreateSlotsRequest(
            venue_id=venue, slots=[s.to_proto() for s in slots], idempotency_key=key or new_key()),
            venue=venue).created

    def set_slot_capacity(self, venue: str, slot_id: str, capacity: int, *,
                          key: str | None = None) -> admin_pb2.SlotCounters:
        """Change a slot's capacity (not below what is sold, held or allotted)."""
        return self._call("SetSlotCapacity", admin_pb2.SetSlotCapacityRequest(
            venue_id=venue, slot_id=slot_id, capacity=capacity, idempotency_key=key or new_key()),
            venue=venue)

    # -- live controls (一键管控) -----------------------------------------------------------
    def pause_sales(self, venue: str, paused: bool = True, *, zone_id: str = "", slot_id: str = "",
                    key: str | None = None) -> admin_pb2.LiveControls:
        """Pause (or resume) sales of the venue, or of one zone or slot of it: Quote, Hold
        and Change for its slots answer SALES_PAUSED; holds taken before may be confirmed."""
        return self._call("SetSalesPaused", admin_pb2.SetSalesPausedRequest(
            venue_id=venue, zone_id=zone_id, slot_id=slot_id, paused=paused,
            idempotency_key=key or new_key()), venue=venue)

    def close_entry(self, venue: str, closed: bool = True, *, zone_id: str = "", gate_id: str = "",
                    key: str | None = None) -> admin_pb2.LiveControls:
        """Close (or reopen) entry through a zone or one gate: entries that would admit
        there answer ENTRY_CLOSED; exits pass; offline gates follow at their next refresh."""
        return self._call("SetEntryClosed", admin_pb2.SetEntryClosedRequest(
            venue_id=venue, zone_id=zone_id, gate_id=gate_id, closed=closed,
            idempotency_key=key or new_key()), venue=venue)

    def set_live_capacity(self, venue: str, zone_id: str, live_capacity: int, *,
                          key: str | None = None) -> admin_pb2.LiveControls:
        """Change a zone's live capacity (persons inside at most; 0: no limit) from now on."""
        return self._call("SetLiveCapacity", admin_pb2.SetLiveCapacityRequest(
            venue_id=venue, zone_id=zone_id, live_capacity=live_capacity,
            idempotency_key=key or new_key()), venue=venue)

    def set_flow_alerts(self, venue: str, zone_id: str, fill_pct: Sequence[int] = (),
                        entries_per_minute: int = 0, *, key: str | None = None) -> admin_pb2.LiveControls:
        """Set a zone's flow alerts: fill levels in percent of its live capacity (rising,
        at most 4) and an entries-per-minute rate; neither: none."""
        return self._call("SetFlowAlerts", admin_pb2.SetFlowAlertsRequest(
            venue_id=venue, zone_id=zone_id, fill_pct=list(fill_pct),
            entries_per_minute=entries_per_minute, idempotency_key=key or new_key()), venue=venue)

    def live_controls(self, venue: str) -> admin_pb2.LiveControls:
        """The venue's live controls as set now."""
        return self._call("GetLiveControls", admin_pb2.GetLiveControlsRequest(venue_id=venue),
                          venue=venue, retry=True)

    def whoami(self) -> admin_pb2.WhoAmIResponse:
        """This key's principal, role, scope and the methods its role may call."""
        return self._call("WhoAmI", admin_pb2.WhoAmIRequest(), retry=True)

    def set_allotment(self, venue: str, slot_id: str, channel: str, capacity: int, *,
                      key: str | None = None) -> admin_pb2.AllotmentCounters:
        """Reserve ``capacity`` of a slot for ``channel`` (or change that reservation)."""
        return self._call("SetAllotment", admin_pb2.SetAllotmentRequest(
            venue_id=venue, slot_id=slot_id, channel=channel, capacity=capacity,
            idempotency_key=key or new_key()), venue=venue)

    def block_ticket(self, venue: str, ticket_id: int, blocked: bool = True, *,
                     key: str | None = None) -> bool:
        """Block (freeze, blacklist) or unblock a ticket; returns whether it is blocked now."""
        return self._call("BlockTicket", admin_pb2.BlockTicketRequest(
            venue_id=venue, ticket_id=ticket_id, blocked=blocked, idempotency_key=key or new_key()),
            venue=venue).blocked

    def catalog(self, venue: str) -> admin_pb2.Catalog:
        """Everything set up for a venue: the venue, its zones, gates and products."""
        return self._call("GetCatalog", admin_pb2.GetCatalogRequest(venue_id=venue), venue=venue)

    # -- prices --------------------------------------------------------------------------
    def set_calendar(self, venue: str, days: Mapping[dt.date | str, str], *,
                     key: str | None = None) -> int:
        """Set the date type of venue-local days (``{date: type}``, type one of
        :data:`DATE_TYPES`; "" removes the day's entry, so it follows the day of the week
        again), all or nothing; returns how many days were set. Load a year's holidays
        (and working weekends as ``weekday``) in one call."""
        return self._call("SetCalendar", admin_pb2.SetCalendarRequest(
            venue_id=venue, days=[admin_pb2.CalendarDay(date=_date(d), date_type=t)
                                  for d, t in days.items()],
            idempotency_key=key or new_key()), venue=venue).days

    def calendar(self, venue: str, date_from: dt.date | str,
                 date_to: dt.date | str | None = None) -> list[CalendarDay]:
        """The date type of every venue-local day from ``date_from`` to ``date_to``
        (inclusive; default ``date_from`` alone, at most 367 days), in date order."""
        r = self._call("GetCalendar", admin_pb2.GetCalendarRequest(
            venue_id=venue, date_from=_date(date_from), date_to=_date(date_to) if date_to else ""),
            venue=venue)
        return [CalendarDay(dt.date.fromisoformat(d.date), d.date_type, d.explicit) for d in r.days]

    def set_prices(self, venue: str, product_id: str, prices: Sequence[DatePrice], *,
                   key: str | None = None) -> PriceTable:
        """Replace a product's price table. A line is priced by the entry for its
        channel and its day's date type, else the entry for any channel ("") and that
        type, else the product's channel price, else its base price."""
        return PriceTable.from_proto(self._call("SetPrices", admin_pb2.SetPricesRequest(
            venue_id=venue, product_id=product_id, prices=[p.to_proto() for p in prices],
            idempotency_key=key or new_key()), venue=venue))

    def set_price_rules(self, venue: str, product_id: str, rules: Sequence[PriceRule], *,
                        key: str | None = None) -> PriceRules:
        """Replace a product's pricing rules (at most one of each kind; empty removes
        them). A quote lists each rule that changed a line, with its amount."""
        return PriceRules.from_proto(self._call("SetPriceRules", admin_pb2.SetPriceRulesRequest(
            venue_id=venue, product_id=product_id, rules=[r.to_proto() for r in rules],
            idempotency_key=key or new_key()), venue=venue))

    def set_booking_window(self, venue: str, product_id: str, *, opens_days: int = 0,
                           closes_minutes: int | None = None, weekdays: Sequence[int] = (),
                           key: str | None = None) -> BookingWindow:
        """Set when a product may be booked (see :class:`BookingWindow`); the defaults
        restore bookable any time until the slot ends, every day."""
        return BookingWindow.from_proto(self._call("SetBookingWindow", admin_pb2.SetBookingWindowRequest(
            venue_id=venue, product_id=product_id, opens_days=opens_days,
            closes_minutes=closes_minutes, weekdays=list(weekdays),
            idempotency_key=key or new_key()), venue=venue))

    def product_pricing(self, venue: str, product_id: str) -> ProductPricing:
        """A product's price table, pricing rules, booking window and real-name limits."""
        r = self._call("GetProductPricing", admin_pb2.GetProductPricingRequest(
            venue_id=venue, product_id=product_id), venue=venue)
        return ProductPricing(PriceTable.from_proto(r.prices), PriceRules.from_proto(r.rules),
                              BookingWindow.from_proto(r.booking), IdLimits.from_proto(r.id_limits),
                              RefundPolicy.from_proto(r.refund_policy), PassDates.from_proto(r.pass_dates),
                              PackageSplit.from_proto(r.package))

    def set_pass_dates(self, venue: str, product_id: str, valid_from: dt.date | str | None = None,
                       valid_to: dt.date | str | None = None, *, key: str | None = None) -> PassDates:
        """Make a product a season or annual pass valid from ``valid_from`` to ``valid_to``
        (venue-local dates, inclusive) for every ticket sold from now on; neither: no
        fixed dates. Renewing is setting the next season's dates and selling again."""
        return PassDates.from_proto(self._call("SetPassDates", admin_pb2.SetPassDatesRequest(
            venue_id=venue, product_id=product_id, valid_from=_date(valid_from) if valid_from else "",
            valid_to=_date(valid_to) if valid_to else "", idempotency_key=key or new_key()), venue=venue))

    def set_package(self, venue: str, product_id: str, parts: Sequence[PackagePart], *,
                    key: str | None = None) -> PackageSplit:
        """Make a product a package of ``parts`` (see :class:`PackagePart`; the pcts add up
        to 100); every order line of it records the split of what was paid. None: no
        package."""
        return PackageSplit.from_proto(self._call("SetPackage", admin_pb2.SetPackageRequest(
            venue_id=venue, product_id=product_id, parts=[admin_pb2.PackagePart(
                part=p.part, merchant=p.merchant, amount_fen=p.amount_fen, pct=p.pct) for p in parts],
            idempotency_key=key or new_key()), venue=venue))

    def set_seat_map(self, venue: str, seat_map_id: str, rows: Sequence[tuple[str, str, str]],
                     zones: Sequence[tuple[str, int]], *, name: str = "",
                     key: str | None = None) -> admin_pb2.SeatMapResponse:
        """Set a hall's seat map: ``rows`` of (section, row, layout), front first, a layout
        read left to right (a zone letter is a seat of that price zone, ``x`` a seat never
        sold, ``_`` an aisle; seats numbered from 1 along the row, ``x`` included);
        ``zones`` of (zone letter, price per person in fen), best first."""
        return self._call("SetSeatMap", admin_pb2.SetSeatMapRequest(
            venue_id=venue, seat_map_id=seat_map_id, name=name,
            rows=[admin_pb2.SeatRow(section=a, row=b, layout=c) for a, b, c in rows],
            zones=[admin_pb2.SeatMapZone(zone=z, price_fen=f) for z, f in zones],
            idempotency_key=key or new_key()), venue=venue)

    def set_seating(self, venue: str, slot_id: str, seat_map_id: str, *,
                    key: str | None = None) -> int:
        """Make a slot (before its first sale) a session of a seat map; returns the seats
        it sells (its capacity now)."""
        return self._call("SetSeating", admin_pb2.SetSeatingRequest(
            venue_id=venue, slot_id=slot_id, seat_map_id=seat_map_id,
            idempotency_key=key or new_key()), venue=venue).seats

    def set_merchant(self, venue: str, merchant_id: str, *, name: str = "", zones: Sequence[str] = (),
                     stations: Sequence[str] = (), key: str | None = None) -> admin_pb2.Merchant:
        """Set a merchant inside a venue (a boat company, a restaurant): the ``zones`` it
        runs become consumption points (each person of a ticket admitted once; their
        gates are its terminals), the ``stations`` its tills. Setting it again replaces
        both lists. Its principals: role ``merchant``, channel ``merchant_id``."""
        return self._call("SetMerchant", admin_pb2.SetMerchantRequest(
            venue_id=venue, merchant_id=merchant_id, name=name, zone_ids=list(zones),
            station_ids=list(stations), idempotency_key=key or new_key()), venue=venue)

    def set_coupon(self, coupon: Coupon, *, key: str | None = None) -> Coupon:
        """Create or change a coupon (its use so far is kept)."""
        return Coupon.from_proto(self._call("SetCoupon", admin_pb2.SetCouponRequest(
            coupon=coupon.to_proto(), idempotency_key=key or new_key()), venue=coupon.venue_id))

    def coupon(self, venue: str, coupon_id: str) -> CouponStatus:
        """A coupon as set and its use now."""
        r = self._call("GetCoupon", admin_pb2.GetCouponRequest(venue_id=venue, coupon_id=coupon_id),
                       venue=venue)
        return CouponStatus(Coupon.from_proto(r.coupon), r.issued, r.uses, r.spent_fen)

    def issue_coupon_codes(self, venue: str, coupon_id: str, count: int, *,
                           key: str | None = None) -> list[str]:
        """Issue ``count`` (at most 100,000) more codes of a single-use coupon; each is used
        once. A retry with the same ``key`` answers the same codes."""
        r = self._call("IssueCouponCodes", admin_pb2.IssueCouponCodesRequest(
            venue_id=venue, coupon_id=coupon_id, count=count, idempotency_key=key or new_key()), venue=venue)
        return list(r.codes)

    def set_refund_policy(self, venue: str, product_id: str, tiers: Sequence[RefundTier], *,
                          key: str | None = None) -> RefundPolicy:
        """Set a product's refund tiers (see :class:`RefundPolicy`); none restores the
        flat refund fee at any time."""
        return RefundPolicy.from_proto(self._call("SetRefundPolicy", admin_pb2.SetRefundPolicyRequest(
            venue_id=venue, product_id=product_id,
            tiers=[admin_pb2.RefundTier(before_minutes=t.before_minutes, fee_pct=t.fee_pct)
                   for t in tiers], idempotency_key=key or new_key()), venue=venue))

    def set_id_limits(self, venue: str, product_id: str, *, per_day: int = 0, per_slot: int = 0,
                      key: str | None = None) -> IdLimits:
        """Set how many tickets of a real-name product one ID number may hold a day and a
        slot, across channels (see :class:`IdLimits`); both 0 removes the limits."""
        return IdLimits.from_proto(self._call("SetIdLimits", admin_pb2.SetIdLimitsRequest(
            venue_id=venue, product_id=product_id, per_day=per_day, per_slot=per_slot,
            idempotency_key=key or new_key()), venue=venue))

    def blacklist(self, venue: str, id_number: str, *, reason: str = "",
                  until: dt.datetime | int | None = None, key: str | None = None) -> BlacklistEntry:
        """Put a person (by ID number) on the venue's blacklist until ``until`` (an aware
        datetime or UTC seconds, in the future; None: for good): no sale to them while
        listed (``BLACKLISTED``), and their tickets of the venue are blocked at once (the
        gate answers BLOCKED). The answer shows the ID number masked."""
        if isinstance(until, dt.datetime) and until.tzinfo is None:
            raise ValueError("until must be timezone-aware (or UTC seconds)")
        req = admin_pb2.BlacklistRequest(venue_id=venue, id_number=id_number, reason=reason,
                                         idempotency_key=key or new_key())
        if until is not None:
            req.until.seconds = int(until.timestamp() if isinstance(until, dt.datetime) else until)
        return BlacklistEntry.from_proto(self._call("Blacklist", req, venue=venue))

    def unblacklist(self, venue: str, id_number: str, *, key: str | None = None) -> BlacklistEntry:
        """Take a person off the venue's blacklist, unblocking the tickets the entry
        blocked (``NOT_FOUND`` if they are not on it)."""
        return BlacklistEntry.from_proto(self._call("Unblacklist", admin_pb2.UnblacklistRequest(
            venue_id=venue, id_number=id_number, idempotency_key=key or new_key()), venue=venue))

    # -- ticket keys ---------------------------------------------------------------------
    def rotate_ticket_key(self, shard: int, *, key: str | None = None) -> TicketKey:
        """Make a new ticket key the issuing one on ``shard``; earlier keys stay accepted."""
        return TicketKey.from_proto(self._call("RotateTicketKey", admin_pb2.RotateTicketKeyRequest(
            shard=shard, idempotency_key=key or new_key()), shard=shard))

    def retire_ticket_key(self, shard: int, key_id: int, *, key: str | None = None) -> TicketKey:
        """Stop accepting codes of ticket key ``key_id`` on ``shard`` (they read FORGED)."""
        return TicketKey.from_proto(self._call("RetireTicketKey", admin_pb2.RetireTicketKeyRequest(
            shard=shard, key_id=key_id, idempotency_key=key or new_key()), shard=shard))

    # -- principals and API keys (not retried: see the module docstring) -----------------
    def create_principal(self, principal_id: str, role: str, *, venue_ids: Sequence[str] = (),
                         channel: str = "", gate_ids: Sequence[str] = ()) -> Principal:
        """Create a principal with a role (one of :data:`ROLES`) and a scope. A seller
        or channel principal needs the ``channel`` it sells as; a merchant's staff
        their venue and the merchant's id as ``channel``."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        return Principal.from_proto(self._call("CreatePrincipal", admin_pb2.CreatePrincipalRequest(
            principal_id=principal_id, role=admin_pb2.Role.Value(role.upper()),
            venue_ids=list(venue_ids), channel=channel, gate_ids=list(gate_ids),
            idempotency_key=f"principal-{principal_id}"), retry=True))

    def list_principals(self) -> list[Principal]:
        """Every principal of the node."""
        r = self._call("ListPrincipals", admin_pb2.ListPrincipalsRequest())
        return [Principal.from_proto(p) for p in r.principals]

    def create_api_key(self, principal_id: str) -> ApiKey:
        """A new API key for a principal; its ``secret`` is shown this once."""
        k = self._call("CreateApiKey", admin_pb2.CreateApiKeyRequest(principal_id=principal_id),
                       retry=False)
        return ApiKey(k.key_id, k.principal_id, k.secret)

    def revoke_api_key(self, key_id: str) -> str:
        """Revoke an API key by its key id (the part after ``tsk_`` in the key). Every
        server process stops accepting it within seconds (their key cache)."""
        return self._call("RevokeApiKey", admin_pb2.RevokeApiKeyRequest(key_id=key_id),
                          retry=True).key_id          # revoking twice is answered alike

    def list_api_keys(self, principal_id: str = "") -> list[ApiKey]:
        """The keys of a principal (or every key), without secrets; ``revoked`` ones too."""
        r = self._call("ListApiKeys", admin_pb2.ListApiKeysRequest(principal_id=principal_id))
        return [ApiKey(k.key_id, k.principal_id, revoked=k.revoked) for k in r.keys]

    # -- audit ---------------------------------------------------------------------------
    def query_audit(self, shard: int = 0, *, after_seq: int = 0, limit: int = 100,
                    principal_id: str | None = None) -> list[AuditRecord]:
        """Up to ``limit`` (at most 1000) records of ``shard``'s audit log after
        ``after_seq``, oldest first, optionally of one principal."""
        r = self._call("QueryAudit", admin_pb2.QueryAuditRequest(
            after_seq=after_seq, limit=limit, principal_id=principal_id or ""), shard=shard)
        return [AuditRecord(shard, a.seq, _utc(a.at), a.principal_id, a.method, a.request_digest,
                            a.result, a.prev_hash, a.hash) for a in r.records]

    def audit_records(self, shard: int = 0, *, principal_id: str | None = None,
                      page: int = 1000) -> Iterator[AuditRecord]:
        """Every record of ``shard``'s audit log, oldest first, asked ``page`` at a time."""
        after = 0
        while True:
            recs = self.query_audit(shard, after_seq=after, limit=page, principal_id=principal_id)
            yield from recs
            if len(recs) < page:
                return
            after = recs[-1].seq

    def verify_audit(self, shard: int | None = None) -> list[AuditCheck]:
        """Verify the audit hash chain of ``shard``, or of every shard (None)."""
        shards = self.conn.shards() if shard is None else [shard]
        out = []
        for k in shards:
            r = self._call("VerifyAudit", admin_pb2.VerifyAuditRequest(), shard=k)
            out.append(AuditCheck(k, r.ok, r.checked, r.first_bad_seq))
        return out
