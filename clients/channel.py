"""The sales channel client: an OTA, a mini-program, a travel agency, the official site
(DESIGN.md sections 1 and 4.6) over ``InventoryService`` and ``SalesService``.

    from turnstile.clients.base import Connection
    from turnstile.clients.channel import ChannelClient, Item

    with Connection("127.0.0.1:50051", ota_key) as conn:
        ota = ChannelClient(conn)
        slots = ota.availability("westlake", "2026-11-23", zone="main")
        slot = next(s for s in slots if s.remaining >= 2)
        hold = ota.hold("westlake", [Item("adult", slot.slot_id, qty=2)], key="ota-order-991")
        # ... the buyer pays ...
        order = ota.confirm(hold, "ota-order-991", payment_reference="2026112322001")
        codes = [t.code for t in order.tickets]

Idempotency: every mutating call carries a key, and a call is retried (on
UNAVAILABLE, RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED) with the same key, so the server
answers a retry with its first answer and never sells twice. ``hold`` takes the
caller's key (its cart or order id) or makes a UUID and keeps it on the returned
:class:`Hold`; ``confirm`` uses the order id; ``release`` a key derived from the hold
id; ``refund`` the order id and refund id (a UUID unless given). To repeat a logical
call from another process after a crash, pass the same key again.

Allotments: a channel with an allotment on a slot is sold from its allotment only.
:attr:`SlotAvailability.remaining` is what this channel can still hold (its
allotment's remaining, else the shared pool) and :attr:`SlotAvailability.allotment`
its own allotment's counters.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Sequence

from turnstile.v1 import inventory_pb2, inventory_pb2_grpc, sales_pb2, sales_pb2_grpc

from .base import Connection, new_key

__all__ = ["AllotmentStock", "AppliedRule", "Change", "ChannelClient", "CouponApplied", "Hold", "Item",
           "Order", "OrderChange", "OrderLine", "OrderRefund", "Payment", "PricedItem", "Quote", "QuoteLine",
           "Refund", "SessionSeats", "SlotAvailability", "Ticket"]

Sales = sales_pb2_grpc.SalesServiceStub
Inventory = inventory_pb2_grpc.InventoryServiceStub


def _utc(ts) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts.seconds, dt.UTC)


def _day(d: dt.date | str) -> str:
    return d.isoformat() if isinstance(d, dt.date) else d


# -- what is sold ------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Item:
    """Codes of one product, all in the same slots.

    ``slot_ids``: one slot id per zone the product admits, in the product's zone
    order; a single string for a one-zone product. ``qty``: number of codes.
    ``group``: persons each code admits (group tickets); 0 means 1. In a session (a slot
    with seats): ``seat_ids``, the seats wanted by name (all or nothing; ``qty`` then
    counts them), else the best available for ``qty`` persons.
    """

    product_id: str
    slot_ids: tuple[str, ...] | str
    qty: int = 1
    group: int = 0
    seat_ids: tuple[str, ...] = ()

    def to_proto(self) -> sales_pb2.Item:
        slots = (self.slot_ids,) if isinstance(self.slot_ids, str) else tuple(self.slot_ids)
        return sales_pb2.Item(product_id=self.product_id, slot_ids=slots,
                              qty=len(self.seat_ids) if self.seat_ids else self.qty,
                              group=self.group, seat_ids=self.seat_ids)


@dataclasses.dataclass(frozen=True)
class SessionSeats:
    """A session's seats: its seat map, the price per person of each zone (best first),
    and every seat as (name, zone, state: free, held, sold or never), row by row."""

    seat_map_id: str
    zone_prices: dict[str, int]
    seats: tuple[tuple[str, str, str], ...]

    def free(self, zone: str | None = None) -> list[str]:
        """The free seats (of ``zone``), in map order."""
        return [n for n, z, st in self.seats if st == "free" and (zone is None or z == zone)]


@dataclasses.dataclass(frozen=True)
class AllotmentStock:
    """One channel's allotment on a slot."""

    channel: str
    capacity: int
    sold: int
    held: int
    remaining: int


@dataclasses.dataclass(frozen=True)
class SlotAvailability:
    """Stock of one slot as the calling channel sees it.

    ``remaining`` is what this channel can still hold: its allotment's remaining if
    it has one on the slot, else the shared pool's (``pool_remaining``).
    ``allotment`` is this channel's allotment (None if it has none here);
    ``allotments`` every allotment the caller may see (a channel or seller key sees
    its own only; admins, operators and finance see all). Times are UTC.
    """

    slot_id: str
    zone_id: str
    date: dt.date
    start: dt.datetime
    end: dt.datetime
    capacity: int
    sold: int
    held: int
    remaining: int
    pool_remaining: int
    allotments: tuple[AllotmentStock, ...] = ()
    allotment: AllotmentStock | None = None

    @property
    def allotment_remaining(self) -> int | None:
        """What is left in this channel's allotment, or None if it has none here."""
        return None if self.allotment is None else self.allotment.remaining

    @classmethod
    def from_proto(cls, s: inventory_pb2.SlotStock, channel: str | None = None) -> SlotAvailability:
        allots = tuple(AllotmentStock(a.channel, a.capacity, a.sold, a.held, a.remaining)
                       for a in s.allotments)
        if channel is not None:
            mine = next((a for a in allots if a.channel == channel), None)
        else:                       # a channel or seller key is shown its own allotment only
            mine = allots[0] if len(allots) == 1 and allots[0].remaining == s.remaining else None
        return cls(s.slot_id, s.zone_id, dt.date.fromisoformat(s.date), _utc(s.start), _utc(s.end),
                   s.capacity, s.sold, s.held, s.remaining, s.pool_remaining, allots, mine)


@dataclasses.dataclass(frozen=True)
class PricedItem:
    """An item with its price for the caller's channel (fen per person)."""

    product_id: str
    slot_ids: tuple[str, ...]
    qty: int
    group: int
    unit_price_fen: int
    seat_ids: tuple[str, ...] = ()  # in a session: the line's seats

    @property
    def amount_fen(self) -> int:
        """unit price x qty x persons per code."""
        return self.unit_price_fen * self.qty * max(self.group, 1)

    @classmethod
    def from_proto(cls, p) -> PricedItem:
        return cls(p.product_id, tuple(p.slot_ids), p.qty, p.group, p.unit_price_fen, tuple(p.seat_ids))


@dataclasses.dataclass(frozen=True)
class AppliedRule:
    """A pricing rule that changed a line's price per person by ``amount_fen``
    (negative: a discount)."""

    rule: str
    amount_fen: int


@dataclasses.dataclass(frozen=True)
class QuoteLine:
    """How one item's price per person was decided: the date type of its slot's day
    (weekday, weekend, holiday, peak or off), the product's price for this channel on
    that type of day (``base_price_fen``), each rule applied in order, and the price
    charged (``unit_price_fen``)."""

    product_id: str
    date_type: str
    base_price_fen: int
    rules: tuple[AppliedRule, ...]
    unit_price_fen: int


@dataclasses.dataclass(frozen=True)
class CouponApplied:
    """What a coupon took off an order (``kind`` fixed, pct or spend)."""

    coupon_id: str
    kind: str
    discount_fen: int


@dataclasses.dataclass(frozen=True)
class Quote:
    """Prices of items, explained (``lines``, one per item in item order; ``coupon``,
    taken off last); takes no stock. ``quote_id`` makes a :meth:`ChannelClient.hold`
    charge exactly this until ``expires_at`` (UTC), or be refused (``QUOTE_CHANGED``,
    ``QUOTE_EXPIRED``)."""

    items: tuple[PricedItem, ...]
    amount_fen: int
    lines: tuple[QuoteLine, ...] = ()
    quote_id: str = ""
    expires_at: dt.datetime | None = None
    coupon: CouponApplied | None = None
    points: int = 0                 # a member's points redeemed, after the coupon
    points_fen: int = 0             # what they take off

    @classmethod
    def from_proto(cls, r: sales_pb2.QuoteResponse) -> Quote:
        c = r.coupon if r.HasField("coupon") else None
        return cls(tuple(PricedItem.from_proto(p) for p in r.items), r.amount_fen,
                   tuple(QuoteLine(ln.product_id, ln.date_type, ln.base_price_fen,
                                   tuple(AppliedRule(x.rule, x.amount_fen) for x in ln.rules),
                                   ln.unit_price_fen) for ln in r.lines),
                   r.quote_id, _utc(r.expires_at) if r.HasField("expires_at") else None,
                   CouponApplied(c.coupon_id, c.kind, c.discount_fen) if c else None,
                   r.points, r.points_fen)

    def explain(self) -> list[str]:
        """The quote as lines a person reads: each item's date type, base price, every rule
        with its amount and the price charged; the coupon; the points; the total (yuan)."""
        out = []
        for item, ln in zip(self.items, self.lines):
            rules = "".join(f" {r.rule} {r.amount_fen / 100:+.2f}" for r in ln.rules)
            out.append(f"{ln.product_id} x{item.qty * item.group} ({ln.date_type}): "
                       f"{ln.base_price_fen / 100:.2f}{rules} = {ln.unit_price_fen / 100:.2f} each")
        if self.coupon:
            out.append(f"coupon {self.coupon.coupon_id} ({self.coupon.kind}) "
                       f"-{self.coupon.discount_fen / 100:.2f}")
        if self.points:
            out.append(f"points {self.points} -{self.points_fen / 100:.2f}")
        out.append(f"total {self.amount_fen / 100:.2f}")
        return out


@dataclasses.dataclass(frozen=True)
class Hold:
    """Stock taken until ``expires_at`` (UTC) while the buyer pays.

    ``idempotency_key`` is the key it was made with: holding again with it returns
    this same hold.
    """

    hold_id: int
    venue_id: str
    expires_at: dt.datetime
    amount_fen: int
    items: tuple[PricedItem, ...]
    idempotency_key: str
    coupon_id: str = ""             # the coupon it took
    discount_fen: int = 0           # what the coupon took off (amount_fen is after it)
    points: int = 0                 # a member's points it redeemed
    points_fen: int = 0             # what they took off (amount_fen is after them)

    @classmethod
    def from_proto(cls, venue: str, key: str, h: sales_pb2.HoldResponse) -> Hold:
        return cls(h.hold_id, venue, _utc(h.expires_at), h.amount_fen,
                   tuple(PricedItem.from_proto(i) for i in h.items), key, h.coupon_id, h.discount_fen,
                   h.points, h.points_fen)


@dataclasses.dataclass(frozen=True)
class Payment:
    """How an order was paid: method (cash, card, alipay, wechat, or a channel's own
    settlement), the provider's reference, the amount in fen."""

    method: str
    reference: str
    amount_fen: int


@dataclasses.dataclass(frozen=True)
class Ticket:
    """One issued ticket: its id in its shard, product, persons it admits, the code
    (text for a QR code; empty if its ticket key was retired since) and the holder's
    masked ID number for a real-name ticket."""

    ticket_id: int
    product_id: str
    persons: int
    code: str
    holder: str = ""
    state: str = "issued"       # issued, used, inside, voided or blocked (as of the answer)
    entries_left: int = -1      # visits left over its validity, -1 unlimited (GetOrder only)
    seat: str = ""              # its seat in a session (<section>-<row>-<number>)

    @classmethod
    def from_proto(cls, t: sales_pb2.Ticket) -> Ticket:
        state = sales_pb2.TicketState.Name(t.state).removeprefix("TICKET_").lower() \
            if t.state else "issued"
        return cls(t.ticket_id, t.product_id, t.persons, t.code, t.holder, state, t.entries_left, t.seat)


@dataclasses.dataclass(frozen=True)
class HoldStatus:
    """What a hold is now: ``status`` active, confirmed (by ``order_id``), released or
    expired, with what it held."""

    hold_id: int
    venue_id: str
    status: str
    expires_at: dt.datetime
    amount_fen: int
    items: tuple[PricedItem, ...]
    order_id: str

    @classmethod
    def from_proto(cls, h: sales_pb2.HoldInfo) -> HoldStatus:
        return cls(h.hold_id, h.venue_id, sales_pb2.HoldStatus.Name(h.status).removeprefix("HOLD_").lower(),
                   _utc(h.expires_at), h.amount_fen, tuple(PricedItem.from_proto(i) for i in h.items),
                   h.order_id)


@dataclasses.dataclass(frozen=True)
class OrderLine:
    """One line of an order."""

    product_id: str
    slot_ids: tuple[str, ...]
    qty: int
    group: int
    unit_price_fen: int
    discount_fen: int = 0           # the line's share of the order's coupon discount
    split: tuple[tuple[str, str, int], ...] = ()     # a package: (part, merchant, fen) of what was paid
    seat_ids: tuple[str, ...] = ()  # in a session: its tickets' seats


@dataclasses.dataclass(frozen=True)
class OrderRefund:
    """A refund of an order (``persons``: of a group ticket refunded in part)."""

    refund_id: str
    ticket_ids: tuple[int, ...]
    amount_fen: int
    fee_fen: int
    at: dt.datetime
    persons: int = 0


@dataclasses.dataclass(frozen=True)
class OrderChange:
    """A change (改签) of an order: the tickets given up, the first new ticket, the new
    slots and price, the fee, what the buyer paid (> 0) or got back (< 0)."""

    change_id: str
    ticket_ids: tuple[int, ...]
    first_ticket_id: int
    slot_ids: tuple[str, ...]
    unit_price_fen: int
    fee_fen: int
    due_fen: int
    at: dt.datetime


@dataclasses.dataclass(frozen=True)
class Order:
    """What a buyer bought, with its tickets."""

    order_id: str
    channel: str
    venue_id: str
    hold_id: int
    amount_fen: int
    refunded_fen: int
    payment: Payment
    lines: tuple[OrderLine, ...]
    refunds: tuple[OrderRefund, ...]
    created: dt.datetime
    tickets: tuple[Ticket, ...]
    coupon_id: str = ""
    discount_fen: int = 0
    changes: tuple[OrderChange, ...] = ()
    member_id: str = ""             # the venue's member it was sold to, if any
    points_earned: int = 0          # points that member earned by it
    points_redeemed: int = 0        # points that member paid part of it with

    def line_of(self, ticket: Ticket | int) -> OrderLine:
        """The line a ticket of this order was sold on (tickets come in line order)."""
        tid = ticket if isinstance(ticket, int) else ticket.ticket_id
        i = next(k for k, t in enumerate(self.tickets) if t.ticket_id == tid)
        for line in self.lines:
            if i < line.qty:
                return line
            i -= line.qty
        raise LookupError(tid)

    @classmethod
    def from_proto(cls, o: sales_pb2.Order, tickets: Iterable[sales_pb2.Ticket] = ()) -> Order:
        return cls(
            o.order_id, o.channel, o.venue_id, o.hold_id, o.amount_fen, o.refunded_fen,
            Payment(o.payment.method, o.payment.reference, o.payment.amount_fen),
            tuple(OrderLine(ln.product_id, tuple(ln.slot_ids), ln.qty, ln.group, ln.unit_price_fen,
                            ln.discount_fen, tuple((p.part, p.merchant, p.amount_fen) for p in ln.split),
                            tuple(ln.seat_ids))
                  for ln in o.lines),
            tuple(OrderRefund(r.refund_id, tuple(r.ticket_ids), r.amount_fen, r.fee_fen, _utc(r.at),
                              r.persons) for r in o.refunds),
            _utc(o.created), tuple(Ticket.from_proto(t) for t in (list(tickets) or o.tickets)),
            o.coupon_id, o.discount_fen,
            tuple(OrderChange(c.change_id, tuple(c.ticket_ids), c.first_ticket_id, tuple(c.slot_ids),
                              c.unit_price_fen, c.fee_fen, c.due_fen, _utc(c.at)) for c in o.changes),
            o.member_id, o.points_earned, o.points_redeemed)


@dataclasses.dataclass(frozen=True)
class Refund:
    """A refund made: the now voided tickets (or, with ``persons``, the group ticket
    that admits that many fewer), the amount returned and the fee kept."""

    order_id: str
    refund_id: str
    ticket_ids: tuple[int, ...]
    amount_fen: int
    fee_fen: int
    persons: int = 0
    points_reversed: int = 0        # points the order's member earned on them, taken back
    points_restored: int = 0        # points they were paid with, given back


@dataclasses.dataclass(frozen=True)
class Change:
    """A change (改签) made or previewed: the tickets given up, the new slots and price
    per person, what the old tickets were paid, what the new cost, the fee, and
    ``due_fen`` (new + fee - old: the buyer pays it when positive, gets it back when
    negative); ``tickets``, the new ones with their codes (none for a preview)."""

    order_id: str
    change_id: str
    product_id: str
    ticket_ids: tuple[int, ...]
    slot_ids: tuple[str, ...]
    unit_price_fen: int
    old_paid_fen: int
    new_amount_fen: int
    fee_fen: int
    due_fen: int
    tickets: tuple[Ticket, ...]

    @classmethod
    def from_proto(cls, r: sales_pb2.ChangeResponse) -> Change:
        return cls(r.order_id, r.change_id, r.product_id, tuple(r.ticket_ids), tuple(r.slot_ids),
                   r.unit_price_fen, r.old_paid_fen, r.new_amount_fen, r.fee_fen, r.due_fen,
                   tuple(Ticket.from_proto(t) for t in r.tickets))


# -- the client --------------------------------------------------------------------------
class ChannelClient:
    """What a sales channel asks of Turnstile: availability, quote, hold, confirm,
    release, refund, order lookup. Every call is routed to the venue's shard.

    Args:
        conn: the :class:`~clients.base.Connection` (its API key decides the channel
            the server sells as: a channel or seller principal's channel).
        channel: the channel name, used only to pick this channel's allotment out of
            availability answers when the key sees several (an admin's); a channel or
            seller key is shown its own allotment only, so it may be left None.
    """

    def __init__(self, conn: Connection, channel: str | None = None):
        self.conn = conn
        self.channel = channel

    # -- reads ---------------------------------------------------------------------------
    def availability(self, venue: str, date_from: dt.date | str, date_to: dt.date | str | None = None,
                     *, zone: str | None = None) -> list[SlotAvailability]:
        """Stock of every slot of ``venue`` from ``date_from`` to ``date_to`` (venue-local
        days, inclusive; default: ``date_from`` alone), optionally of one zone, in day,
        start, slot id order."""
        req = inventory_pb2.AvailabilityRequest(venue_id=venue, date_from=_day(date_from),
                                                date_to=_day(date_to) if date_to else "",
                                                zone_id=zone or "")
        r = self.conn.call(Inventory, "Availability", req, venue=venue, retry=True)
        return [SlotAvailability.from_proto(s, self.channel) for s in r.slots]

    def session_seats(self, venue: str, slot_id: str) -> SessionSeats:
        """The seats of a session now: each seat's name, price zone and state (free,
        held, sold, never), with the zones' prices; ApiError NOT_FOUND for a slot
        without seats."""
        r = self.conn.call(Inventory, "SessionSeats", inventory_pb2.SessionSeatsRequest(
            venue_id=venue, slot_id=slot_id), venue=venue, retry=True)
        return SessionSeats(r.seat_map_id, {z.zone: z.price_fen for z in r.zones},
                            tuple((x.seat_id, x.zone, x.state) for x in r.seats))

    def quote(self, venue: str, items: Sequence[Item], *, coupon: str | None = None,
              coupon_holder: str | None = None, member_id: str = "", points: int = 0) -> Quote:
        """Prices of ``items`` for this channel, explained line by line (date type, base
        price, rules) with ``coupon`` (a code) taken off last, and a quote id for
        :meth:`hold`; takes no stock and no coupon. A coupon that can't be used raises
        as :meth:`hold` does. ``member_id``: the venue's member buying (member prices
        at their level), who may redeem ``points`` (taken off last; the quote takes none)."""
        r = self.conn.call(Sales, "Quote", sales_pb2.QuoteRequest(
            venue_id=venue, items=[i.to_proto() for i in items], coupon=coupon or "",
            coupon_holder=coupon_holder or "", member_id=member_id, points=points), venue=venue, retry=True)
        return Quote.from_proto(r)

    def get_order(self, venue: str, order_id: str) -> Order:
        """An order of this channel as it is now, with its tickets and their codes."""
        r = self.conn.call(Sales, "GetOrder", sales_pb2.GetOrderRequest(order_id=order_id),
                           venue=venue, retry=True)
        return Order.from_proto(r)

    def hold_status(self, venue: str, hold_id: int) -> HoldStatus:
        """What became of one of this channel's holds (after a lost answer, say):
        active, confirmed, released or expired."""
        r = self.conn.call(Sales, "GetHold", sales_pb2.GetHoldRequest(hold_id=hold_id),
                           venue=venue, retry=True)
        return HoldStatus.from_proto(r)

    # -- mutations (each with an idempotency key, so each is retried safely) ------------
    def hold(self, venue: str, items: Sequence[Item], *, key: str | None = None,
             ttl_s: int = 0, quote_id: str | Quote | None = None, coupon: str | None = None,
             coupon_holder: str | None = None, member_id: str = "", points: int = 0) -> Hold:
        """Take stock of every item, all or nothing, for ``ttl_s`` seconds (0: the
        server's default, 15 minutes).

        ``quote_id``: a :meth:`quote`'s id (or the Quote) for the same items: the hold
        charges exactly what it said, or raises ApiError ``QUOTE_CHANGED`` (prices,
        rules or items differ) or ``QUOTE_EXPIRED`` (FAILED_PRECONDITION) and holds
        nothing. None: the prices now.

        ``coupon``: a coupon code, taken with the hold after every pricing rule (the
        hold's ``amount_fen`` is after it) and given back if the hold is released or
        expires; ``coupon_holder``: the ID number of the person using it, where it is
        limited per person. One that can't be used raises ApiError (FAILED_PRECONDITION)
        ``COUPON_INVALID``, ``COUPON_NOT_APPLICABLE``, ``COUPON_USED``,
        ``COUPON_EXHAUSTED`` or ``COUPON_LIMIT``, holding nothing.

        ``member_id``: the venue's member buying, priced at the level their spend
        reached (member_level pricing rules). ``points``: that member's points to
        redeem (积分抵扣), taken off after the coupon (the hold's ``amount_fen`` is after
        them) and given back if the hold is released or expires; ApiError
        ``INSUFFICIENT_POINTS`` beyond the balance, holding nothing.

        ``key``: the idempotency key, e.g. the channel's cart or order id; a UUID if
        None. Holding again with the same key and items returns the same hold; the
        same key with other items is refused (``IDEMPOTENCY_KEY_REUSED``).
        Raises ApiError ``SOLD_OUT`` (FAILED_PRECONDITION) when a slot, or this
        channel's allotment on it, has too little left.
        """
        key = key or new_key()
        if isinstance(quote_id, Quote):
            quote_id = quote_id.quote_id
        r = self.conn.call(Sales, "Hold", sales_pb2.HoldRequest(
            venue_id=venue, items=[i.to_proto() for i in items], ttl_s=ttl_s, idempotency_key=key,
            quote_id=quote_id or "", coupon=coupon or "", coupon_holder=coupon_holder or "",
            member_id=member_id, points=points), venue=venue, retry=True)
        return Hold.from_proto(venue, key, r)

    def confirm(self, hold: Hold, order_id: str, *, payment_reference: str = "",
                method: str = "channel", amount_fen: int | None = None,
                holders: Sequence[Sequence[str]] | None = None, short_codes: bool = False,
                key: str | None = None, shift_id: str = "", member_id: str = "") -> Order:
        """Record the payment of ``hold`` as order ``order_id`` and issue its tickets.

        ``method``: how it was paid (cash, card, alipay, wechat; default ``channel``,
        the channel's own settlement). ``payment_reference``: the payment provider's
        reference. ``amount_fen``: default the hold's amount (it must equal it).
        ``holders``: for real-name products, ID numbers per item, one per code, in the
        hold's item order. ``short_codes``: MAC-only codes (no offline verification).
        ``key``: the idempotency key; default the order id, so confirming the same
        order again returns the same order and tickets and sells nothing more.
        ``shift_id``: the cash-desk shift (opened by this key) the sale is rung up in.
        ``member_id``: the venue's member it is sold to, who earns its points.
        """
        req = sales_pb2.ConfirmRequest(
            hold_id=hold.hold_id, order_id=order_id,
            payment=sales_pb2.Payment(method=method, reference=payment_reference,
                                      amount_fen=hold.amount_fen if amount_fen is None else amount_fen),
            holders=[sales_pb2.Holders(id_numbers=list(h)) for h in holders or ()],
            short_codes=short_codes, idempotency_key=key or "", shift_id=shift_id, member_id=member_id)
        r = self.conn.call(Sales, "Confirm", req, venue=hold.venue_id, retry=True)
        return Order.from_proto(r.order, r.tickets)

    def release(self, hold: Hold, *, key: str | None = None) -> None:
        """Give the hold's stock back before it expires. Releasing it again (with the
        same key; default ``release-<hold id>``) is answered as the first time."""
        self.conn.call(Sales, "Release", sales_pb2.ReleaseRequest(
            hold_id=hold.hold_id, idempotency_key=key or f"release-{hold.hold_id}"),
            venue=hold.venue_id, retry=True)

    def refund(self, venue: str, order_id: str, ticket_ids: Sequence[int] = (), *,
               refund_id: str | None = None, key: str | None = None, persons: int = 0,
               shift_id: str = "") -> Refund:
        """Refund unused tickets of an order (all of its unused tickets if
        ``ticket_ids`` is empty): their stock returns and they are voided at every gate.
        With ``persons``, that many persons of the one group ticket named: it admits the
        rest.

        ``refund_id``: the channel's own refund id, unique in the order (a UUID if
        None); with ``key`` (default order id/refund id) it makes a retry safe.
        Raises ApiError ``TICKET_NOT_REFUNDABLE`` for a used or refunded ticket or a
        product that is not refundable, ``REFUND_CLOSED`` past the refund policy's tiers.
        ``shift_id``: the cash-desk shift the money is given back from.
        """
        req = sales_pb2.RefundRequest(order_id=order_id, refund_id=refund_id or new_key(),
                                      ticket_ids=list(ticket_ids), idempotency_key=key or "",
                                      persons=persons, shift_id=shift_id)
        r = self.conn.call(Sales, "Refund", req, venue=venue, retry=True)
        return Refund(r.order_id, r.refund_id, tuple(r.ticket_ids), r.amount_fen, r.fee_fen, r.persons,
                      r.points_reversed, r.points_restored)

    def change(self, venue: str, order_id: str, slot_ids: Sequence[str], ticket_ids: Sequence[int] = (),
               *, change_id: str | None = None, preview: bool = False, method: str = "channel",
               payment_reference: str = "", amount_fen: int | None = None,
               key: str | None = None, shift_id: str = "") -> Change:
        """Change (改签): move unused tickets of one line of an order (all of its unused
        tickets if ``ticket_ids`` is empty) to ``slot_ids`` (one per zone of the
        product) in one step; new codes are issued, the old voided.

        ``preview``: what it would do and cost, changing nothing. Otherwise, when the
        change costs the buyer more (``due_fen`` > 0), it is paid with it: ``amount_fen``
        (default: what a preview says is due) by ``method``. Raises ApiError
        ``CHANGE_CLOSED`` when a refund would be closed, ``SOLD_OUT`` when the new slot
        has too little left. ``change_id`` (a UUID if None) with ``key`` (default order
        id/change/change id) makes a retry safe. ``shift_id``: the cash-desk shift the
        due is paid into or returned from.
        """
        change_id = change_id or new_key()
        req = sales_pb2.ChangeRequest(order_id=order_id, change_id=change_id, slot_ids=list(slot_ids),
                                      ticket_ids=list(ticket_ids), preview=True)
        if not preview and amount_fen is None:
            amount_fen = max(self.conn.call(Sales, "Change", req, venue=venue, retry=True).due_fen, 0)
        if not preview:
            req.preview = False
            req.idempotency_key = key or ""
            req.shift_id = shift_id
            if amount_fen:
                req.payment.CopyFrom(sales_pb2.Payment(method=method, reference=payment_reference,
                                                       amount_fen=amount_fen))
        return Change.from_proto(self.conn.call(Sales, "Change", req, venue=venue, retry=True))

    def buy(self, venue: str, items: Sequence[Item], order_id: str, *, payment_reference: str = "",
            method: str = "channel", amount_fen: int | None = None,
            holders: Sequence[Sequence[str]] | None = None, short_codes: bool = False,
            coupon: str | None = None, coupon_holder: str | None = None,
            shift_id: str = "", member_id: str = "", points: int = 0) -> Order:
        """Hold and pay at once (``SalesService.Buy``: one call, one commit), for a
        channel that is paid already (a prepaid agency account, a card taken at a kiosk):
        the order ``order_id`` and its tickets, or an ApiError and nothing held.

        ``amount_fen``: what was paid; it must be the price (after ``coupon``), else
        INVALID_ARGUMENT naming ``payment.amount_fen``. None: the price a :meth:`quote`
        gives now (one more call, which takes nothing). The order id is the retry key:
        calling ``buy`` again with the same order id and request returns the same
        order and sells nothing more. ``member_id``: the venue's member buying, priced
        at their level, redeeming ``points`` and earning the points of what they pay."""
        if amount_fen is None:
            amount_fen = self.quote(venue, items, coupon=coupon, coupon_holder=coupon_holder,
                                    member_id=member_id, points=points).amount_fen
        r = self.conn.call(Sales, "Buy", sales_pb2.BuyRequest(
            venue_id=venue, items=[i.to_proto() for i in items], order_id=order_id,
            payment=sales_pb2.Payment(method=method, reference=payment_reference, amount_fen=amount_fen),
            coupon=coupon or "", coupon_holder=coupon_holder or "",
            holders=[sales_pb2.Holders(id_numbers=list(h)) for h in holders or ()],
            short_codes=short_codes, shift_id=shift_id, member_id=member_id, points=points),
            venue=venue, retry=True)
        return Order.from_proto(r.order, r.tickets)
