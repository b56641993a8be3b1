"""Sales: quotes, holds (take, release, expire), confirmation (tickets issued, order
written), orders, refunds and blocked tickets. A line's unit price comes from the price
calendar (catalog.date_type, catalog.price_of) by the day of its slot; a quote explains
it and names it by an id a hold can be held to (quote_id, check_quote).

An active hold (model.ActiveHold) is kept in `holds` (HoldStore) as the bytes of its HOLD
journal record (journal.hold_record: resolved indices, so replay needs no look-ups); the
snapshot stores it as JSON (ActiveHold.to_dict).
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import heapq
import hmac
import json
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import _core
from ..errors import (AlreadyExists, Blacklisted, BookingClosed, CorruptData, FailedPrecondition,
                      HoldNotActive, IdLimitExceeded, InvalidArgument, NotFound, PermissionDenied, QuoteChanged,
                      QuoteExpired, RefundClosed, SlotClosed, SoldOut, TicketUsed, TurnstileError)
from ..journal import _HDR, Record, decode_hold, hold_record, json_record
from ..model import (QUOTE_TTL_S, ActiveHold, HeldCoupon, HeldLine, BlacklistResult, BlockResult, ExpireResult, HoldInfo, HoldResult, IssuedTicket, Order,
                     PricedItem, Quote, QuoteLine, RefundResult, ReleaseResult, Venue)
from .catalog import (apply_rules, channel_of, check_booking, date_type, find, price_of,
                      refund_fee_pct, venue_of)
from . import controls, finance, members, merchants, promos, seating
from .retry import get_retry, put_retry
from .secrets import holder_key, mask_id, render, seal
from .validate import ID, U16, arg, ident_arg, int_arg, is_id_number, text_arg

if TYPE_CHECKING:
    from .core import ShardState

MAX_QTY = 10_000
MAX_TTL = 24 * 3600
DEFAULT_TTL = 15 * 60


@dataclass(frozen=True)
class ConfirmResult:
    order: Order
    tickets: list[IssuedTicket]

    def to_dict(self) -> dict:
        """Stored for idempotent retries without the codes: they are rendered again
        (deterministic), so an order of 100,000 tickets does not store 15 MB of text."""
        return {"order": vars(self.order),
                "tickets": [[t.ticket_id, t.product, t.persons, t.holder] for t in self.tickets]}


def order_key(channel: str, order_id: str) -> bytes:
    """Order ids are the channel's own: unique per channel (NUL: ids may hold '/')."""
    return f"order/{channel}\0{order_id}".encode()


# -- holds -----------------------------------------------------------------------------
class HoldStore:
    """The active holds of a shard by id (ShardState.holds), read as ActiveHold. Each is
    kept as the bytes of its HOLD journal record, the very record the journal gets: bytes
    are no object the cyclic GC tracks, and a dict of them stays untracked, so tens of
    thousands of active holds cost a collection nothing (a hold as a tree of dicts and
    lists made every full collection walk them all: 169 ms at p99.9 in a flash sale). A
    hold is written once and read back only when it ends or is looked at."""

    __slots__ = ("_records", "_venues")

    def __init__(self, venues: list[str]) -> None:
        """`venues` names the venue indices of the records (ShardState.venue_list)."""
        self._records: dict[int, bytes] = {}
        self._venues = venues

    def add(self, hold_id: int, record: bytes) -> None:
        """Hold `hold_id` is active, as HOLD record `record` (journal.hold_record) says."""
        self._records[hold_id] = record

    def get(self, hold_id: int, default: ActiveHold | None = None) -> ActiveHold | None:
        rec = self._records.get(hold_id)
        return default if rec is None else decode_hold(memoryview(rec)[_HDR.size:], self._venues)

    def __delitem__(self, hold_id: int) -> None:
        del self._records[hold_id]

    def __contains__(self, hold_id: object) -> bool:
        return hold_id in self._records

    def __len__(self) -> int:
        return len(self._records)

    def values(self):
        """Every active hold, in the order they were taken (or loaded)."""
        venues = self._venues
        return (decode_hold(memoryview(rec)[_HDR.size:], venues) for rec in self._records.values())

    def clear(self) -> None:
        self._records.clear()


def take_hold(st: ShardState, args: dict, now: int) -> HoldResult:
    channel = channel_of(st, args)
    venue = venue_of(st, args)
    ttl = int_arg(args, "ttl_s", 1, MAX_TTL, DEFAULT_TTL)
    seats: list = []
    lines = hold_lines(st, channel, venue, args, now, seats=seats)
    coupon = promos.evaluate(st, args, channel, venue, lines, now)
    if args.get("quote_id") is not None:
        check_quote(st, args["quote_id"], channel, venue.id, lines, now, coupon)
    red = redemption(st, venue.id, args, lines, coupon, st.next_hold_id, now)
    if seats:                       # the seats first, all or nothing (SEAT_TAKEN)
        seating.take(st, [(slot, xs) for _, slot, xs in seats])
    # take stock line by line, component by component; undo all if any is short
    slots = st.slots
    taken = []
    amount = 0
    for i, ln in enumerate(lines):
        need = ln.qty * ln.group
        amount += ln.price * need
        for s, a in zip(ln.slots, ln.allots):
            if not slots.take(s, a, need):
                for ts, ta, tq in taken:
                    slots.release(ts, ta, tq)
                for _, slot, xs in seats:
                    st.sessions[slot].seats.release(xs)
                raise SoldOut(f"slot {st.slot_list[s]} has not {need} left"
                              + (f" in the {channel} allotment" if a >= 0 else ""),
                              field=f"items[{i}].qty")
            taken.append((s, a, need))
    hid = st.next_hold_id
    st.next_hold_id += 1
    hold = ActiveHold(hid, channel, venue.id, now + ttl, now, amount, tuple(lines))
    if coupon is not None:
        promos.take(st, venue.id, coupon)
        hold = promos.with_coupon(hold, coupon)
    if red is not None:
        hold = hold._replace(amount=hold.amount - red["fen"])
    rec = hold_record(hold, st.venue_idx[venue.id])
    st.holds.add(hid, rec)
    heapq.heappush(st.expiry, (now + ttl, hid))
    st.journal(rec, Record.HOLD)
    if red is not None:
        eff = red.pop("pts")
        _redeemed(st, {**eff, "hold": hid, "redeem": red})
    if seats:
        seating.held(st, hid, seats)
    return hold_result(st, hold)


def redemption(st: ShardState, venue: str, args: dict, lines: list[HeldLine], coupon,
               hold_id: int, now: int) -> dict | None:
    """What the points a hold (or quote) redeems take off (members.py): the member, the
    points, what a point is worth, their split over the tickets, what they cost, the
    buckets they come from and the member's effects (`pts`); None without points.
    Refused before anything is taken: points without a member, more than the member
    holds (INSUFFICIENT_POINTS), more than the order is worth."""
    raw = args.get("points")
    if raw is None or (type(raw) is int and raw == 0):
        return None
    points = int_arg(args, "points", 1, members.MAX_POINTS)
    if args.get("member") is None:
        raise InvalidArgument("points are a member's: name the member", field="member")
    m = members.member_arg(st, venue, args)
    fpp = members.program_of(st, venue, "member").fen_per_point
    costs = [[ln.price * ln.group - (promos.line_share(coupon.lines[i], ln.qty, k) if coupon else 0)
              for k in range(ln.qty)] for i, ln in enumerate(lines)]
    split = members.split(costs, points, fpp)
    eff, taken = members.redeem(st, m, points, hold_id, now)
    return {"member": m.id, "points": points, "fpp": fpp, "fen": points * fpp, "split": split,
            "taken": taken, "pts": eff}


def held_points(st: ShardState, hold_id: int) -> dict | None:
    """What an active hold redeemed (_redeemed), or None."""
    raw = st.hold_points.get(hold_id)
    return None if raw is None else json.loads(raw)


def replay_points(st: ShardState, rec: dict, fmt: int) -> None:
    """A POINTS record: a hold's redemption (it names the hold), or an adjustment."""
    if "redeem" in rec:
        _redeemed(st, rec)
    else:
        members.replay_points(st, rec, fmt)


def _redeemed(st: ShardState, rec: dict) -> None:
    """A hold's points redeemed (a POINTS record naming the hold): the member's effects,
    and what the hold redeemed kept beside it until it is paid or ends."""
    members.apply(st, rec)
    red = rec["redeem"]
    st.hold_points[rec["hold"]] = json.dumps({k: red[k] for k in ("member", "points", "fpp", "fen", "split",
                                                                  "taken")}).encode()
    st.journal(json_record(Record.POINTS, rec), Record.POINTS)


def quote(st: ShardState, channel: str, venue_id: str, items: Any, now: int,
          coupon: dict | None = None, member_level: int = 0, member: str | None = None,
          points: int = 0) -> Quote:
    """What a hold of `items` would cost the channel now, by the same rules as a
    hold (validated alike), explained line by line, with the coupon `coupon` names
    ({"coupon": code, "coupon_holder": ID number}) taken off last, and the id a Hold
    may name to be charged exactly that for QUOTE_TTL_S; takes no stock. `member`: the
    venue's member buying, whose level (by spend) the member_level rules price by, and
    who may redeem `points` (taken off after the coupon, refused as a Hold refuses them;
    the quote takes none)."""
    venue = venue_of(st, {"venue": venue_id})
    channel = channel_of(st, {"channel": channel})
    explained: list[QuoteLine] = []
    who = {"member": member} if member is not None else {"member_level": member_level}
    seats: list = []
    lines = hold_lines(st, channel, venue, {"items": items, **who}, now, explained, seats)
    use = promos.evaluate(st, coupon or {}, channel, venue, lines, now)
    red = redemption(st, venue.id, {**who, "points": points}, lines, use, 0, now)
    expires = now + QUOTE_TTL_S
    return Quote(priced_items(st, lines, {i: (slot, xs) for i, slot, xs in seats}),
                 sum(ln.price * ln.qty * ln.group for ln in lines) - (use.discount if use else 0)
                 - (red["fen"] if red else 0),
                 quote_id(st, channel, venue.id, lines, expires, use), expires, explained,
                 promos.applied(use), red["points"] if red else 0, red["fen"] if red else 0)


_QUOTE = struct.Struct(">Q16s")


def _quote_mac(st: ShardState, channel: str, venue: str, lines: list[HeldLine], expires: int,
               coupon: HeldCoupon | None) -> bytes:
    body = [channel, venue, expires, [[ln.p, ln.qty, ln.group, ln.slots, ln.price] for ln in lines]]
    if coupon is not None:
        body.append([coupon.coupon, coupon.serial, coupon.discount])
    return hashlib.blake2b(json.dumps(body, separators=(",", ":")).encode(), key=st.holder_secret,
                           digest_size=16, person=b"turnstile-quote").digest()


def quote_id(st: ShardState, channel: str, venue: str, lines: list[HeldLine], expires: int,
             coupon: HeldCoupon | None = None) -> str:
    """A quote's id: its expiry and a MAC (keyed by the shard) over the channel, venue,
    items, unit prices and coupon discount it gave. Nothing is stored: a Hold naming it
    recomputes its lines by today's rules and compares (check_quote)."""
    return base64.urlsafe_b64encode(_QUOTE.pack(
        expires, _quote_mac(st, channel, venue, lines, expires, coupon))).decode().rstrip("=")


def check_quote(st: ShardState, qid: Any, channel: str, venue: str, lines: list[HeldLine], now: int,
                coupon: HeldCoupon | None = None) -> None:
    """A Hold naming quote `qid` is charged what it said, or refused: QuoteExpired past
    its expiry, QuoteChanged if the items, channel, prices or coupon are not those quoted."""
    try:
        expires, mac = _QUOTE.unpack(base64.urlsafe_b64decode(qid + "=" * (-len(qid) % 4)))
    except (TypeError, ValueError, struct.error, binascii.Error):
        raise InvalidArgument("not a quote id (SalesService.Quote gives one)", field="quote_id") from None
    if not hmac.compare_digest(mac, _quote_mac(st, channel, venue, lines, expires, coupon)):
        raise QuoteChanged("the prices or items are not those of this quote (the rules may have "
                           "changed since)", field="quote_id", hint="quote again")
    if now > expires:
        raise QuoteExpired(f"the quote expired at {expires}", field="quote_id", hint="quote again")


def hold_lines(st: ShardState, channel: str, venue: Venue, args: dict, now: int,
               explained: list | None = None, seats: list | None = None) -> list[HeldLine]:
    """The validated item lines of a hold (or quote): product, stock per component,
    unit price for the channel on the day of the line's (first) slot, by the price
    calendar (catalog.price_of); with `explained`, how each price came about. An item
    of a session (seating.py) gives a line per price zone of its seats, priced by the
    zone; with `seats`, (line index, slot index, seat indices) of each such line."""
    items = arg(args, "items", list)
    if not 1 <= len(items) <= 100:
        raise InvalidArgument("between 1 and 100 items", field="items")
    if args.get("member") is not None:
        # a named member's level is theirs, from their spend (members.py), not the caller's
        if args.get("member_level"):
            raise InvalidArgument("a named member's level comes from their spend",
                                  field="member_level")
        level = members.level_of(st, members.member_arg(st, venue.id, args), now)[0]
    else:
        level = int_arg(args, "member_level", 0, 99, 0) if "member_level" in args else 0
    lines = []
    for i, it in enumerate(items):
        f = f"items[{i}]"
        try:
            if type(it) is dict:
                pid, qty, group, slot_ids = (it.get("product"), it.get("qty", 1), it.get("group", 1),
                                             it.get("slots"))
            else:
                pid = qty = group = slot_ids = None
            # what a well-formed item has passes on these few type checks; anything else
            # goes through the validators, which refuse it naming the field
            if (venue.id, pid) not in st.products:
                pid = ident_arg(it, "product")
            if type(qty) is not int or not 1 <= qty <= MAX_QTY:
                qty = int_arg(it, "qty", 1, MAX_QTY, 1)
            if type(group) is not int or not 1 <= group <= U16:
                group = int_arg(it, "group", 1, U16, 1)
            if type(slot_ids) is not list:
                slot_ids = arg(it, "slots", list)
        except InvalidArgument as e:
            raise InvalidArgument(e.message, field=f"{f}.{e.field}") from None
        p = st.products.get((venue.id, pid))
        if p is None:
            raise NotFound(f"no product {pid} in venue {venue.id}", field=f"{f}.product")
        if p.channels and channel not in p.channels:
            raise PermissionDenied(f"channel {channel} may not sell {pid}", field="channel")
        if st.merchants:
            merchants.check_product(st, channel, p, f"{f}.product")
        if group > p.max_group:
            raise InvalidArgument(f"{pid} admits at most {p.max_group} per code", field=f"{f}.group")
        if len(slot_ids) != len(p.zones):
            raise InvalidArgument(f"{pid} needs one slot for each of its {len(p.zones)} zones",
                                  field=f"{f}.slots")
        sidx, allots = [], []
        for c, sid in enumerate(slot_ids):
            s = st.slot_defs.get((venue.id, sid)) if isinstance(sid, str) else None
            if s is None:
                find(st, "slot", st.slot_idx, venue.id, sid, f"{f}.slots[{c}]")
            if s.zone != p.zones[c]:
                raise InvalidArgument(f"slot {sid} is not in zone {p.zones[c]}", field=f"{f}.slots[{c}]")
            if s.end <= now:
                raise SlotClosed(f"slot {sid} ended at {s.end}: it can no longer be sold",
                                 field=f"{f}.slots[{c}]")
            controls.check_sale(st, venue.id, s.zone, sid, f"{f}.slots[{c}]")
            k = st.slot_idx[(venue.id, sid)]
            sidx.append(k)
            allots.append(st.allot_idx.get((k, channel), -1))
        if len(slot_ids) > 1:
            days = [st.slot_defs[(venue.id, s)].day for s in slot_ids]
            if max(days) - days[0] >= p.rule.valid_days or min(days) < days[0]:
                raise InvalidArgument("slots fall outside the ticket's validity", field=f"{f}.slots")
        first = st.slot_defs[(venue.id, slot_ids[0])]
        window = st.booking.get((venue.id, pid))
        if window is not None:
            check_booking(window, first, venue.utc_offset_s, now, f"{f}.slots[0]")
        fixed = st.pass_dates.get((venue.id, pid))
        if fixed is not None and first.day > fixed[1]:
            raise BookingClosed(f"{pid} is valid until day {fixed[1]}: not for this slot's day",
                                field=f"{f}.slots[0]")
        dtype = date_type(st, venue.id, first.day)[0]
        sess = None
        if st.sessions:                 # a shard with no session pays nothing for seats
            sess = st.sessions.get(sidx[0])
            if (sess is not None and len(sidx) > 1) or any(k in st.sessions for k in sidx[1:]):
                raise InvalidArgument("a session's seats are sold by a product of its zone alone",
                                      field=f"{f}.product")
        if sess is None:
            if type(it) is dict and it.get("seats"):
                raise InvalidArgument(f"slot {slot_ids[0]} has no seats", field=f"{f}.seats")
            parts = [(price_of(st, p, channel, dtype), qty, None)]
        else:
            parts = [(seating.zone_price(sess, z), len(xs), xs) for z, xs in seating.pick(
                st, sess, it, it.get("qty") if type(it) is dict else None, group, f)]
        for base, n, xs in parts:
            price, applied = base, []
            rules = st.price_rules.get((venue.id, pid))
            if rules:
                price, applied = apply_rules(
                    rules, price, days_ahead=first.day - (now + venue.utc_offset_s) // 86400,
                    start_minute=(first.start + venue.utc_offset_s) % 86400 // 60,
                    fill_pct=lambda k=sidx[0]: st.slots.fill_pct(k), member_level=level)
            if explained is not None:
                explained.append(QuoteLine(pid, dtype, base, applied, price))
            if xs is not None and seats is not None:
                seats.append((len(lines), sidx[0], xs))
            lines.append(HeldLine(st.product_idx[(venue.id, pid)], n, group, tuple(sidx), tuple(allots), price))
    return lines


def replay_hold(st: ShardState, payload) -> None:
    """A HOLD record: the hold as it was applied (resolved indices, no look-ups)."""
    hold = decode_hold(payload, st.venue_list)
    for ln in hold.lines:
        need = ln.qty * ln.group
        for s, a in zip(ln.slots, ln.allots):
            if not st.slots.take(s, a, need):
                raise CorruptData(f"replayed hold {hold.id} does not fit its slot")
    c = promos.held(hold)
    if c is not None:
        if (hold.venue, c.coupon) not in st.coupon_use:
            raise CorruptData(f"replayed hold {hold.id} took coupon {c.coupon}, which is not set")
        promos.take(st, hold.venue, c)
    st.holds.add(hold.id, _HDR.pack(len(payload), Record.HOLD) + bytes(payload))
    st.next_hold_id = max(st.next_hold_id, hold.id + 1)
    heapq.heappush(st.expiry, (hold.expires_at, hold.id))
    st.batch.n_commands += 1


def priced_items(st: ShardState, lines, seats: dict | None = None) -> list[PricedItem]:
    """Lines of a hold (or quote) as their channel reads them: ids, not indices; with
    `seats` (line index -> (slot index, seat indices)), each seated line's seats by name."""
    products, slot_list = st.product_list, st.slot_list
    if not seats:
        return [PricedItem(products[ln.p].id, ln.qty, ln.group, [slot_list[s] for s in ln.slots], ln.price)
                for ln in lines]
    return [PricedItem(products[ln.p].id, ln.qty, ln.group, [slot_list[s] for s in ln.slots], ln.price,
                       tuple(st.sessions[seats[i][0]].labels[x] for x in seats[i][1]) if i in seats else ())
            for i, ln in enumerate(lines)]


def hold_result(st: ShardState, hold: ActiveHold) -> HoldResult:
    red = held_points(st, hold.id)
    seats = seating.hold_lines_seats(st, hold.id) if hold.id in st.hold_seats else None
    return HoldResult(hold.id, hold.expires_at, hold.amount, priced_items(st, hold.lines, seats),
                      hold.coupon, hold.discount, red["points"] if red else 0, red["fen"] if red else 0)


def active_hold(st: ShardState, args: dict, now: int) -> ActiveHold:
    hid = int_arg(args, "hold_id", 1, 2**62)
    channel = channel_of(st, args)
    hold = st.holds.get(hid)
    if hold is not None and hold.expires_at <= now:
        hold = None                 # due: the next EXPIRE releases its stock
    if hold is None:
        if hid < st.next_hold_id:
            raise HoldNotActive(f"hold {hid} expired, was released or confirmed", field="hold_id")
        raise NotFound(f"no hold {hid}", field="hold_id")
    if hold.channel != channel:
        raise NotFound(f"no hold {hid} for channel {channel}", field="hold_id")
    return hold


def drop_hold(st: ShardState, hold: ActiveHold, status: str, now: int = 0,
              pts: dict | None = None) -> dict | None:
    """A hold that ends unpaid: its stock, its coupon's use and the points it redeemed
    back. The points' effects: `pts` as journaled (replay), else decided now; returned
    for the journal."""
    for ln in hold.lines:
        need = ln.qty * ln.group
        for s, a in zip(ln.slots, ln.allots):
            st.slots.release(s, a, need)
    if hold.coupon:
        promos.give_back(st, hold.venue, promos.held(hold))
    del st.holds[hold.id]
    end_hold(st, hold, status)
    if hold.id in st.hold_seats:
        seating.drop(st, hold.id)
    red = held_points(st, hold.id)
    if red is None:
        return None
    del st.hold_points[hold.id]
    if pts is None:
        if st.replaying:
            raise CorruptData(f"a replayed end of hold {hold.id} does not give its points back")
        pts = {**members.give_back(st, st.members[(hold.venue, red["member"])], red["taken"],
                                   f"hold:{hold.id}", now), "hold": hold.id}
    members.apply(st, pts)
    return pts


def end_hold(st: ShardState, hold: ActiveHold, status: str, order_id: str = "") -> None:
    """Keep what a hold was and what became of it (GetHold after it ended)."""
    put_retry(st, b"hold/%d" % hold.id, json.dumps({
        "status": status, "order_id": order_id, "channel": hold.channel,
        "venue": hold.venue, **hold_result(st, hold).to_dict()}).encode())


def hold_info(st: ShardState, hold_id: int, now: int) -> HoldInfo:
    """A hold as its channel may read it back: status active, confirmed, released
    or expired, with its items."""
    hold = st.holds.get(hold_id)
    if hold is not None:
        r = hold_result(st, hold)
        return HoldInfo("expired" if hold.expires_at <= now else "active", "", hold.channel,
                        hold.venue, r.hold_id, r.expires_at, r.amount_fen, r.items)
    row = get_retry(st, b"hold/%d" % hold_id)
    if row is None:
        raise NotFound(f"no hold {hold_id}", field="hold_id")
    return HoldInfo.from_dict(json.loads(row))


def release_hold(st: ShardState, args: dict, now: int) -> ReleaseResult:
    hold = active_hold(st, args, now)
    pts = drop_hold(st, hold, "released", now)
    rec = {"hold_id": hold.id, "channel": hold.channel}
    if pts is not None:             # format 6: the points it had redeemed, given back
        rec["pts"] = pts
    st.journal(json_record(Record.RELEASE, rec), Record.RELEASE)
    return ReleaseResult(hold.id, True)


def _replayed_hold(st: ShardState, hid: Any, what: str) -> ActiveHold:
    hold = st.holds.get(hid)
    if hold is None:
        raise CorruptData(f"a replayed {what} names hold {hid}, which is not held")
    return hold


def replay_release(st: ShardState, args: dict, fmt: int) -> None:
    """A RELEASE record (formats 1 and 2): the hold it names is dropped."""
    hold = _replayed_hold(st, args["hold_id"], "release")
    drop_hold(st, hold, "released", pts=args.get("pts"))
    st.journal(json_record(Record.RELEASE, args), Record.RELEASE)


def due_expiry(st: ShardState, now: int) -> bool:
    return bool(st.expiry) and st.expiry[0][0] <= now


def expire_holds(st: ShardState, args: dict, now: int) -> ExpireResult:
    at = now
    expired, gave = [], []
    while st.expiry and st.expiry[0][0] <= at:
        exp, hid = heapq.heappop(st.expiry)
        hold = st.holds.get(hid)
        if hold is not None and hold.expires_at == exp:
            pts = drop_hold(st, hold, "expired", now)
            expired.append(hid)
            if pts is not None:
                gave.append(pts)
    rec = {"_at": at, "holds": sorted(expired)}
    if gave:                        # format 6: the points they had redeemed, given back
        rec["pts"] = gave
    st.journal(json_record(Record.EXPIRE, rec), Record.EXPIRE)
    return ExpireResult(len(expired))


def replay_expire(st: ShardState, args: dict, fmt: int) -> None:
    """An EXPIRE record. Format 2 names the holds it expired: those are dropped. Format 1
    has the sweep's time only: the holds due then are dropped, as format 1 did."""
    at = args["_at"]
    due = []
    while st.expiry and st.expiry[0][0] <= at:
        exp, hid = heapq.heappop(st.expiry)
        hold = st.holds.get(hid)
        if hold is not None and hold.expires_at == exp:
            due.append((exp, hid))
    expired = [hid for _, hid in due] if fmt < 2 else args["holds"]
    gave = {p["hold"]: p for p in args.get("pts", ())}
    for hid in expired:
        drop_hold(st, _replayed_hold(st, hid, "expiry"), "expired", pts=gave.get(hid))
    for exp, hid in due:            # due then but not expired by the record: still held
        if hid in st.holds:
            heapq.heappush(st.expiry, (exp, hid))
    rec = {"_at": at, "holds": sorted(expired)}
    if gave:
        rec["pts"] = list(gave.values())
    st.journal(json_record(Record.EXPIRE, rec), Record.EXPIRE)


# -- orders ----------------------------------------------------------------------------
def payment_arg(args: dict) -> tuple[str, str, int]:
    """(method, reference, amount) of a request's payment, refused naming payment.*."""
    pay = arg(args, "payment", dict)
    try:
        return (ident_arg(pay, "method"), text_arg(pay, "reference", "", 128),
                int_arg(pay, "amount_fen", 0, 10**12))
    except InvalidArgument as e:
        raise InvalidArgument(e.message, field=f"payment.{e.field}") from None


def confirm_hold(st: ShardState, args: dict, now: int) -> ConfirmResult:
    order_id = ident_arg(args, "order_id")
    method, reference, amount = payment_arg(args)
    signed = bool(arg(args, "signed", bool, True))
    holders = arg(args, "holders", list, [])
    channel = channel_of(st, args)
    if order_row(st, channel, order_id)[1] is not None:
        raise AlreadyExists(f"order {order_id} exists", field="order_id",
                            hint="retry with the same idempotency key to get the first answer")
    hold = active_hold(st, args, now)
    shift, station = finance.shift_for_sale(st, args, hold.venue)
    # the member the order is sold to earns its points (the venue's programme)
    member = None
    if args.get("member") is not None:
        member = members.member_arg(st, hold.venue, args)
        members.program_of(st, hold.venue, "member")
    red = held_points(st, hold.id)            # the points the hold redeemed: that member's
    if red is not None:
        if member is None:
            member = st.members[(hold.venue, red["member"])]
        elif member.id != red["member"]:
            raise InvalidArgument(f"hold {hold.id} redeemed the points of member {red['member']}",
                                  field="member")
    for ln in hold.lines:
        for s in ln.slots:
            if st.slots.slot(s)["end"] <= now:
                raise SlotClosed(f"slot {st.slot_list[s]} ended while held: it can no longer "
                                 "be sold", field="hold_id", hint="release the hold")
    key = order_key(channel, order_id)
    if amount != hold.amount:
        raise InvalidArgument(f"paid {amount} fen, the hold costs {hold.amount} fen",
                              field="payment.amount_fen")
    # holder ID numbers per line for real-name products (or given anyway)
    per_line: list[list[str]] = []
    for i, ln in enumerate(hold.lines):
        p = st.product_list[ln.p]
        ids = holders[i] if i < len(holders) else []
        if not isinstance(ids, list) or not all(is_id_number(x) for x in ids):
            raise InvalidArgument("must be lists of ID numbers", field=f"holders[{i}]")
        if (p.real_name or ids) and len(ids) != ln.qty:
            raise InvalidArgument(f"{p.id} is real-name: one ID number per ticket",
                                  field=f"holders[{i}]")
        per_line.append([x.upper() for x in ids])
    # the journal carries holder keys, never ID numbers
    hkeys = [[holder_key(st, x) for x in ids] for ids in per_line]
    check_holders(st, hold.venue, hold.lines, hkeys, now)
    coupon = promos.held(hold)
    if coupon and coupon.holder and any(hkeys) and not any(coupon.holder in k for k in hkeys):
        raise InvalidArgument("the coupon was taken for a person who holds none of this order's "
                              "tickets", field="holders", hint="name them among the holders")
    end_hold(st, hold, "confirmed", order_id)

    def off_line(i: int) -> int:
        """What the coupon and the points took off line i."""
        return (coupon.lines[i] if coupon else 0) + (sum(red["split"][i]) * red["fpp"] if red else 0)
    issued = issue(st, hold, hkeys)
    key_id = st.codec.issuing_key if st.codec.keys else -1
    lines, tickets = [], []
    for i, (ln, ids, (first, _)) in enumerate(zip(hold.lines, per_line, issued)):
        p = st.product_list[ln.p]
        lines.append({"product": p.id, "qty": ln.qty, "group": ln.group,
                      "slots": [st.slot_list[s] for s in ln.slots], "allots": list(ln.allots),
                      "unit_price_fen": ln.price, "first_ticket": first,
                      "ncomp": len(p.zones), "key_id": key_id, "signed": signed})
        if coupon:
            lines[-1]["discount_fen"] = coupon.lines[i]
        if red is not None:         # the points each ticket was paid with, and their worth
            lines[-1]["points"], lines[-1]["fen_per_point"] = red["split"][i], red["fpp"]
        seats = [seating.seat_of(st, first + k * len(p.zones)) for k in range(ln.qty)] \
            if st.ticket_seats else []
        if any(seats):
            lines[-1]["seats"] = seats
        pkg = st.packages.get((p.venue, p.id))
        if pkg is not None:         # a package: its price split over its parts, as paid
            lines[-1]["split"] = pkg.split(ln.price * ln.qty * ln.group - off_line(i), ln.qty * ln.group)
        for k in range(ln.qty):
            tid = first + k * len(p.zones)
            code = "" if st.replaying else render(st, tid, key_id, signed)
            tickets.append(IssuedTicket(tid, p.id, ln.group, code,
                                        mask_id(ids[k]) if ids else "", seats[k] if any(seats) else ""))
    pts = per_ticket = None
    if member is not None:
        where, paid = order_tickets({"lines": lines, "refunds": []})
        pts, per_ticket = members.earn(st, member, hold.channel, lines, paid, where, order_id,
                                       amount, now)
    order = Order(order_id, hold.channel, hold.venue, hold.id, amount, 0,
                  {"method": method, "reference": reference, "amount_fen": amount},
                  lines, [], now, *((coupon.coupon, coupon.discount) if coupon else ("", 0)),
                  station=station, shift=shift, member=member.id if member else "",
                  points_earned=sum(per_ticket.values()) if per_ticket else 0,
                  points_redeemed=red["points"] if red else 0)
    fin = finance.sale_posting(st, hold, method, station,
                               [off_line(i) for i in range(len(hold.lines))] if coupon or red else None, now)
    finance.shift_move(fin, shift, method, True, amount)
    rec = confirm_record(hold, hkeys, now, issued)
    rec["fin"] = finance.as_record(fin)
    finance.book(st, rec["fin"])
    row = dict(vars(order))
    if pts is not None:
        members.apply(st, pts)
        rec["pts"] = pts
        # what each ticket earned: a refund takes back exactly that
        row["member_points"] = {str(t): n for t, n in per_ticket.items()}
    if red is not None:
        # the buckets the points came from (a refund gives a ticket's back to them), and
        # what of each ticket's points was given back so far
        row["redeemed"] = {"points": red["points"], "taken": red["taken"], "restored": {}}
    row["holders"] = [[seal(st, x) for x in ids] for ids in per_line]
    st.put_row(key, json.dumps(row).encode())
    finance.index_order(st, hold.venue, rec["fin"]["day"], hold.id, key)
    st.journal(json_record(Record.CONFIRM, rec), Record.CONFIRM)
    return ConfirmResult(order, tickets)


_HOLD_ARGS = ("channel", "venue", "items", "quote_id", "coupon", "coupon_holder", "member_level",
              "member", "points")
_PAY_ARGS = ("order_id", "channel", "payment", "signed", "holders", "shift", "principal", "member")


def buy(st: ShardState, args: dict, now: int) -> ConfirmResult:
    """Hold and pay in one command (cmd.buy): an order a channel pays at once. The hold
    is taken and confirmed as Hold and Confirm would (journaled as their HOLD and
    CONFIRM records, so replay needs nothing new); if the confirmation is refused (the
    payment is not the price, a holder's limit, a slot that ended), the hold is released
    at once and the refusal raised: no stock stays held."""
    for k in args:
        if k not in _HOLD_ARGS and k not in _PAY_ARGS:
            raise InvalidArgument("unknown field", field=k)
    order_id = ident_arg(args, "order_id")
    channel = channel_of(st, args)
    if order_row(st, channel, order_id)[1] is not None:
        raise AlreadyExists(f"order {order_id} exists", field="order_id",
                            hint="retry with the same order id and request to get the first answer")
    payment_arg(args)                    # a malformed payment is refused before any stock moves
    held = take_hold(st, {k: args[k] for k in _HOLD_ARGS if k in args}, now)
    try:
        return confirm_hold(st, {**{k: args[k] for k in _PAY_ARGS if k in args},
                                 "hold_id": held.hold_id}, now)
    except TurnstileError:
        release_hold(st, {"hold_id": held.hold_id, "channel": channel}, now)
        raise


def check_holders(st: ShardState, venue: str, lines: tuple[HeldLine, ...] | list[HeldLine],
                  hkeys: list[list[str]], now: int, excluding: set[int] = frozenset()) -> None:
    """Before a confirm (or change) issues anything: no holder on the venue's blacklist
    (Blacklisted), and no holder above a real-name product's limits per ID number for
    the day or the slot, counting their tickets of the product that are not voided (nor
    `excluding`: those a change gives up), across channels, and this order's
    (IdLimitExceeded)."""
    listed = st.blacklist.get(venue)
    counts: dict[tuple, int] = {}
    for i, (ln, keys) in enumerate(zip(lines, hkeys)):
        if not keys:
            continue
        p = st.product_list[ln.p]
        lim = st.id_limits.get((venue, p.id))
        day = st.slots.slot(ln.slots[0])["day"]
        for k, hk in enumerate(keys):
            entry = listed.get(hk) if listed else None
            if entry is not None and (not entry["until"] or entry["until"] > now):
                raise Blacklisted("this holder may not buy tickets of this venue",
                                  field=f"holders[{i}][{k}]")
            if lim is None:
                continue
            dk, sk = (hk, ln.p, "day", day), (hk, ln.p, "slot", ln.slots[0])
            if dk not in counts or sk not in counts:
                # the holder's tickets sold before; a count already begun (an earlier line
                # of this order on the same day or slot) goes on from where it is
                on_day = on_slot = 0
                for b in st.holders.get(hk, ()):
                    rec = st.tickets.record(b)
                    if (rec["product"] != ln.p or st.tickets.code_state(b) & _core.STATE_VOIDED
                            or b in excluding):
                        continue
                    on_day += rec["first_day"] == day
                    on_slot += rec["slot"] == ln.slots[0]
                counts.setdefault(dk, on_day)
                counts.setdefault(sk, on_slot)
            counts[dk] += 1
            counts[sk] += 1
            if lim.per_day and counts[dk] > lim.per_day:
                raise IdLimitExceeded(f"one ID number may hold {lim.per_day} tickets of {p.id} "
                                      f"a day", field=f"holders[{i}][{k}]")
            if lim.per_slot and counts[sk] > lim.per_slot:
                raise IdLimitExceeded(f"one ID number may hold {lim.per_slot} tickets of {p.id} "
                                      f"a slot", field=f"holders[{i}][{k}]")


def blacklist(st: ShardState, args: dict, now: int) -> BlacklistResult:
    """Put a holder on a venue's blacklist (blocking their tickets of the venue that are
    not voided or blocked already) or take them off (unblocking the tickets the entry
    blocked). The record carries the holder key and the tickets, never the ID number."""
    v = venue_of(st, args)
    id_number = arg(args, "id_number", str)
    if not is_id_number(id_number):
        raise InvalidArgument("must be an ID number", field="id_number")
    reason = text_arg(args, "reason", "", 200)
    until = int_arg(args, "until", 0, 2**40, 0)
    remove = bool(arg(args, "remove", bool, False))
    hk = holder_key(st, id_number)
    entry = st.blacklist.get(v.id, {}).get(hk)
    if remove:
        if entry is None:
            raise NotFound("this holder is not on the venue's blacklist", field="id_number")
        r = {"venue": v.id, "holder": hk, "listed": False, "reason": entry["reason"],
             "until": entry["until"], "tickets": entry["tickets"]}
    else:
        if entry is not None:
            raise AlreadyExists("this holder is on the venue's blacklist already",
                                field="id_number", hint="take them off first to change the entry")
        t = st.tickets
        tickets = [b for b in st.holders.get(hk, ())
                   if st.product_list[t.record(b)["product"]].venue == v.id
                   and not t.code_state(b) & (_core.STATE_VOIDED | _core.STATE_BLOCKED)]
        r = {"venue": v.id, "holder": hk, "listed": True, "reason": reason, "until": until,
             "tickets": tickets}
    _blacklist(st, r)
    return BlacklistResult(v.id, mask_id(id_number.upper()), r["listed"], r["reason"], r["until"],
                           list(r["tickets"]))


def _blacklist(st: ShardState, r: dict) -> None:
    listed = st.blacklist.setdefault(r["venue"], {})
    for b in r["tickets"]:
        if not st.tickets.is_code(b):
            raise CorruptData(f"a blacklist record names ticket {b}, which is no code")
        st.tickets.set_blocked(b, r["listed"])
    if r["listed"]:
        listed[r["holder"]] = {"reason": r["reason"], "until": r["until"], "tickets": r["tickets"]}
    else:
        listed.pop(r["holder"], None)
    st.journal(json_record(Record.BLACKLIST, r), Record.BLACKLIST)


def replay_blacklist(st: ShardState, r: dict, fmt: int) -> None:
    """A BLACKLIST record (format 3): the entry and exactly the tickets it (un)blocked."""
    _blacklist(st, r)


def confirm_record(hold: ActiveHold, hkeys: list[list[str]], now: int,
                   issued: list[tuple[int, tuple[int, int]]]) -> dict:
    """A CONFIRM record of format 2: the hold, holder keys, and per line the tickets
    issued (first id, first and last valid day: `issued`, as issue returned it)."""
    return {"hold_id": hold.id, "holder_keys": hkeys, "_now": now,
            "tickets": [[first, *days] for first, days in issued]}


def issue(st: ShardState, hold: ActiveHold, hkeys: list[list[str]],
          tickets: list[list[int]] | None = None) -> list[tuple[int, tuple[int, int]]]:
    """Issue the tickets of a hold and turn its held stock into sold stock; returns per
    line the first ticket id and the (first, last) valid days issued. `tickets` (replay
    of format 2): per line the first id and valid days issued then; without, the days
    are the first slot's and the product's validity."""
    issued = []
    for i, (ln, keys) in enumerate(zip(hold.lines, hkeys)):
        p = st.product_list[ln.p]
        if tickets is None:
            first_day = st.slots.slot(ln.slots[0])["day"]
            days = st.pass_dates.get((p.venue, p.id)) or (first_day, first_day + p.rule.valid_days - 1)
        else:
            days = (tickets[i][1], tickets[i][2])
        first = st.tickets.issue(ln.p, ln.group, days[0], days[1], list(ln.slots), ln.qty)
        issued.append((first, days))
        finance.issued(st, ln.p, days, first, ln.qty, len(p.zones))
        if tickets is not None and first != tickets[i][0]:
            raise CorruptData(f"replayed hold {hold.id} issued ticket {first}, "
                              f"the journal says {tickets[i][0]}")
        need = ln.qty * ln.group
        for s, a in zip(ln.slots, ln.allots):
            st.slots.sell(s, a, need)
        for k, hk in enumerate(keys):
            st.holders.setdefault(hk, []).append(first + k * len(p.zones))
        if hold.id in st.hold_seats:         # its seats sold, each ticket its own
            seating.sold(st, hold.id, i, first, len(p.zones))
    del st.holds[hold.id]
    st.hold_points.pop(hold.id, None)       # paid with them: the order keeps them now
    seating.paid(st, hold.id)
    return issued


def replay_confirm(st: ShardState, args: dict, fmt: int) -> None:
    """A CONFIRM record: the hold's tickets issued to the holder keys it carries; in
    format 2, exactly the tickets it names (format 1: as format 1 issued them)."""
    hold = _replayed_hold(st, args["hold_id"], "confirm")
    if len(args["holder_keys"]) != len(hold.lines):
        raise CorruptData(f"a replayed confirm of hold {hold.id} has holder keys for "
                          f"{len(args['holder_keys'])} lines, the hold has {len(hold.lines)}")
    issued = issue(st, hold, args["holder_keys"], args["tickets"] if fmt >= 2 else None)
    rec = confirm_record(hold, args["holder_keys"], args.get("_now", 0), issued)
    if "fin" in args:               # format 4: the finance posting as made
        finance.book(st, args["fin"])
        rec["fin"] = args["fin"]
    if "pts" in args:               # format 6: the member's points and spend as decided
        members.apply(st, args["pts"])
        rec["pts"] = args["pts"]
    st.journal(json_record(Record.CONFIRM, rec), Record.CONFIRM)


def order_row(st: ShardState, channel: str, order_id: str) -> tuple[bytes, bytes | None]:
    """(key, row) of a channel's order; orders confirmed before order ids were
    scoped by channel are found under their bare id."""
    key = order_key(channel, order_id)
    row = st.get_row(key)
    if row is None:
        old = st.get_row(b"order/" + order_id.encode())
        if old is not None and json.loads(old)["channel"] == channel:
            return b"order/" + order_id.encode(), old
    return key, row


def get_order(st: ShardState, order_id: str, channel: str) -> Order:
    if type(order_id) is not str or not ID.match(order_id):
        raise InvalidArgument("must be 1-64 letters, digits or ._:@/-", field="order_id")
    row = order_row(st, channel, order_id)[1]
    if row is None:
        raise NotFound(f"no order {order_id} of channel {channel}", field="order_id")
    return Order.from_row(json.loads(row))


def replay_refund(st: ShardState, args: dict, fmt: int) -> None:
    """A REFUND record (formats 1 to 3; format 3 also carries the amount refunded and the
    fee kept, as decided, and the group tickets made smaller): the tickets voided, the
    persons left on a group ticket, the stock returned."""
    _refund(st, args)


def order_tickets(row: dict) -> tuple[dict[int, tuple[int, int]], dict[int, int]]:
    """Of an order row: ticket -> (line index, index in the line), and ticket -> what it
    was paid and is not refunded yet (its price less its share of a coupon's discount,
    less the worth of the points it was paid with, less what refunds of some of its
    persons gave back and kept)."""
    where, paid = {}, {}
    for i, ln in enumerate(row["lines"]):
        points = ln.get("points")
        for k in range(ln["qty"]):
            t = ln["first_ticket"] + k * ln["ncomp"]
            where[t] = (i, k)
            paid[t] = ln["unit_price_fen"] * ln["group"] - promos.line_share(
                ln.get("discount_fen", 0), ln["qty"], k)
            if points:
                paid[t] -= points[k] * ln["fen_per_point"]
    for r in row["refunds"]:
        if r.get("persons"):
            paid[r["tickets"][0]] -= r["gross_fen"]
    return where, paid


def choose_tickets(st: ShardState, order_id: str, where: dict, want: list, gone: int,
                   why: str) -> list[int]:
    """The tickets of an order a refund or change acts on: those named in `want` (each of
    the order, once, none in a state of `gone`), or every one not in such a state."""
    if not want:
        chosen = [t for t in where if not st.tickets.code_state(t) & gone]
        if not chosen:
            raise TicketUsed(f"order {order_id} has no unused tickets left", field="tickets")
        return chosen
    for i, t in enumerate(want):
        if type(t) is not int or t not in where:
            raise InvalidArgument(f"ticket {t!r} is not in order {order_id}", field=f"tickets[{i}]")
    if len(set(want)) != len(want):
        raise InvalidArgument("a ticket is listed twice", field="tickets")
    for i, t in enumerate(want):
        if st.tickets.code_state(t) & gone:
            raise TicketUsed(f"ticket {t} {why}", field=f"tickets[{i}]")
    return list(want)


def refund_order(st: ShardState, args: dict, now: int) -> RefundResult:
    order_id = ident_arg(args, "order_id")
    refund_id = ident_arg(args, "refund_id")
    want = arg(args, "tickets", list, [])
    persons = int_arg(args, "persons", 0, U16, 0)
    channel = channel_of(st, args)
    key, raw = order_row(st, channel, order_id)
    if raw is None:
        raise NotFound(f"no order {order_id} of channel {channel}", field="order_id")
    row = json.loads(raw)
    shift, station = finance.shift_for_sale(st, args, row["venue"])
    if any(r["refund_id"] == refund_id for r in row["refunds"]):
        raise AlreadyExists(f"refund {refund_id} exists", field="refund_id")
    where, paid = order_tickets(row)
    by_ticket = {t: row["lines"][i] for t, (i, _) in where.items()}
    chosen = choose_tickets(st, order_id, where, want, _core.STATE_USED | _core.STATE_VOIDED,
                            "was used, refunded or changed")
    # a group ticket refunded in part: `persons` of the one ticket named, the rest keep it
    group = {t: st.tickets.record(t)["group"] for t in chosen}
    if persons:
        if len(want) != 1:
            raise InvalidArgument("refunding some persons of a group ticket names that one ticket",
                                  field="tickets")
        if persons >= group[chosen[0]]:
            raise InvalidArgument(f"the ticket admits {group[chosen[0]]}: refund fewer, or the whole "
                                  "ticket with persons 0", field="persons")
    fees = []
    for t in chosen:
        ln = by_ticket[t]
        p = st.products[(row["venue"], ln["product"])]
        if not p.refundable:
            raise FailedPrecondition(f"{p.id} is not refundable", field="tickets")
        start = st.slot_defs[(row["venue"], ln["slots"][0])].start
        pct = refund_fee_pct(st.refund_policy.get((p.venue, p.id)), p, start, now)
        if pct is None:
            raise RefundClosed(f"{p.id}'s refund policy gives nothing back this close to (or "
                               f"this long after) the slot's start", field="tickets")
        fees.append(pct)
    amount = fee = gross = 0
    returns = []
    method = row["payment"]["method"]
    fin = finance.posting(st, row["venue"], now)
    for t, pct in zip(chosen, fees):
        ln = by_ticket[t]
        # the persons' share of what the ticket was paid (the last person: all that is left)
        g = paid[t] * persons // group[t] if persons else paid[t]
        f = (g * pct + 50) // 100
        gross += g
        amount += g - f
        fee += f
        for sid, a in zip(ln["slots"], ln["allots"]):
            returns.append([st.slot_idx[(row["venue"], sid)], a, persons or group[t]])
        # counted at the station that gave the money back, else the one that sold it
        finance.add(fin, (row["channel"], station or row.get("station", ""), ln["product"], method),
                    refunded_tickets=0 if persons else 1, refunded_persons=persons or group[t],
                    refunded_fen=g - f, fee_fen=f)
        finance.add_split(st, fin, ln["product"], -(g - f), persons or group[t])
    finance.shift_move(fin, shift, method, False, amount)
    rec = {"order_id": order_id, "refund_id": refund_id, "tickets": [] if persons else chosen,
           "_returns": returns, "amount_fen": amount, "fee_fen": fee, "fin": finance.as_record(fin)}
    if persons:
        rec["groups"] = [[chosen[0], group[chosen[0]] - persons]]
    # the points the refunded tickets (persons) earned go back, and their money out of
    # the member's spend of the day of sale
    owed = back = 0
    if row.get("member"):
        owed, back, rec["pts"] = member_refund(st, row, chosen, where, group, persons, amount,
                                               refund_id, now)
    _refund(st, rec)
    result = RefundResult(order_id, refund_id, chosen, amount, fee, persons, owed, back)
    entry = {"refund_id": refund_id, "tickets": chosen, "amount_fen": amount, "fee_fen": fee, "at": now}
    if persons:
        entry.update(persons=persons, gross_fen=gross)
    if shift:
        entry.update(shift=shift, station=station)
    row["refunds"].append(entry)
    row["refunded_fen"] += amount
    st.put_row(key, json.dumps(row).encode())
    finance.index_event(st, b"rx/", row["venue"], rec["fin"]["day"], key, refund_id)
    return result


def member_refund(st: ShardState, row: dict, chosen: list[int], where: dict, group: dict,
                  persons: int, fen: int, ref: str, now: int,
                  take_earned: bool = True) -> tuple[int, int, dict]:
    """What a refund (or change) of tickets of a member's order does to the member: the
    points the tickets (or `persons` of a group ticket) redeemed given back, those they
    earned taken back (not by a change: they go with the new tickets), `fen` out of the
    spend of the day of sale. Updates the order row (what each ticket has left of both);
    returns (points taken back, points given back, the effects)."""
    earned = row.setdefault("member_points", {})
    red = row.get("redeemed")
    owed = back = 0
    for t in chosen:
        n = earned.get(str(t), 0) if take_earned else 0
        n = n * persons // group[t] if persons else n
        owed += n
        if n:
            earned[str(t)] -= n
        if red is not None:
            i, k = where[t]
            ln = row["lines"][i]
            left = ln["points"][k] - red["restored"].get(str(t), 0) if "points" in ln else 0
            n = left * persons // group[t] if persons else left
            back += n
            if n:
                red["restored"][str(t)] = red["restored"].get(str(t), 0) + n
    eff, left = members.reverse(st, st.members[(row["venue"], row["member"])], owed,
                                finance.local_day(st, row["venue"], row["created"]), fen, ref, now,
                                back, red["taken"] if red else None)
    if red is not None:
        red["taken"] = left
    return owed, back, eff


def _refund(st: ShardState, rec: dict) -> None:
    """A refund's effects: tickets voided (or a group ticket's persons made fewer), the
    stock returned."""
    for tid in rec["tickets"]:
        if not st.tickets.is_code(tid):
            raise CorruptData(f"a refund voids ticket {tid}, which is no code")
        st.tickets.void(tid)
        if tid in st.ticket_seats:      # its seat free again
            seating.freed(st, tid)
    for tid, persons in rec.get("groups", ()):
        if not st.tickets.is_code(tid) or not 0 < persons < st.tickets.record(tid)["group"]:
            raise CorruptData(f"a refund leaves ticket {tid} {persons} persons, which does not fit")
        st.tickets.set_group(tid, persons)
    for s, a, q in rec["_returns"]:
        st.slots.unsell(s, a, q)
    if "fin" in rec:                # format 4: the finance posting as made
        finance.book(st, rec["fin"])
    if "pts" in rec:                # format 6: the member's points and spend as decided
        members.apply(st, rec["pts"])
    st.journal(json_record(Record.REFUND, rec), Record.REFUND)


# -- tickets ---------------------------------------------------------------------------
def block_ticket(st: ShardState, args: dict, now: int) -> BlockResult:
    tid = int_arg(args, "ticket_id", 0, 2**32 - 2)
    blocked = bool(arg(args, "blocked", bool, True))
    if not st.tickets.is_code(tid):
        raise NotFound(f"no ticket {tid}", field="ticket_id")
    st.tickets.set_blocked(tid, blocked)
    st.journal(json_record(Record.BLOCK, {"ticket_id": tid, "blocked": blocked}), Record.BLOCK)
    return BlockResult(tid, blocked)


def replay_block(st: ShardState, args: dict, fmt: int) -> None:
    """A BLOCK record (formats 1 and 2; format 1 may leave `blocked` out: True)."""
    tid, blocked = args["ticket_id"], bool(args.get("blocked", True))
    if not st.tickets.is_code(tid):
        raise CorruptData(f"a replayed block names ticket {tid}, which is no code")
    st.tickets.set_blocked(tid, blocked)
    st.journal(json_record(Record.BLOCK, {"ticket_id": tid, "blocked": blocked}), Record.BLOCK)
