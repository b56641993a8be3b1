"""Builders of the commands a shard applies (engine.journal.Command, by CommandKind).

Each function names one thing a caller can ask; `Shard.run(cmd)` applies it
synchronously, `await shard.writer().submit(cmd)` through group commit. Arguments
are checked when the command is applied, so a bad one is refused with a
TurnstileError naming the field, and nothing changes.
"""
from __future__ import annotations

import datetime as _dt
from typing import Iterable, Mapping, Sequence

from .journal import Command, CommandKind
from .model import (RULE_CONDITION, DatePrice, EarnRule, MemberLevel, PackagePart, Direction, EntryRule, GateMode,
                    HoldItem, PriceRule, RefundTier, Slot, to_day, vars_)


def _time(at) -> int | None:
    if at is None:
        return None
    if isinstance(at, _dt.datetime):
        if at.tzinfo is None:
            raise ValueError("scan times must be timezone-aware")
        return int(at.timestamp())
    return at if isinstance(at, int) and not isinstance(at, bool) else at


def venue(id: str, name: str | None = None, utc_offset_s: int = 8 * 3600) -> Command:
    return Command(CommandKind.VENUE, {"id": id, "name": name or id, "utc_offset_s": utc_offset_s})


def zone(venue: str, id: str, name: str | None = None, *, live_capacity: int = 0,
         enforce_exit: bool = False) -> Command:
    return Command(CommandKind.ZONE, {"venue": venue, "id": id, "name": name or id,
                             "live_capacity": live_capacity, "enforce_exit": enforce_exit})


def _in(venue: str | None, args: dict) -> dict:
    """Zone, gate, product and slot ids are unique within their venue: `venue` names
    it; without one, the id must name one object on the shard."""
    if venue is not None:
        args["venue"] = venue
    return args


def gate(zone: str, id: str, mode: GateMode = GateMode.BOTH, *, venue: str | None = None) -> Command:
    return Command(CommandKind.GATE, _in(venue, {"zone": zone, "id": id, "mode": int(mode)}))


def product(venue: str, id: str, zones: Sequence[str], *, name: str | None = None,
            rule: EntryRule = EntryRule(), price_fen: int = 0,
            channel_prices: dict[str, int] | None = None, channels: Iterable[str] = (),
            real_name: bool = False, max_group: int = 1, refundable: bool = True,
            refund_fee_pct: int = 0) -> Command:
    return Command(CommandKind.PRODUCT, {
        "venue": venue, "id": id, "name": name or id, "zones": list(zones),
        "rule": {"max_entries": rule.max_entries, "daily_entries": rule.daily_entries,
                 "reentry": rule.reentry, "valid_days": rule.valid_days,
                 "slot_grace_s": rule.slot_grace_s},
        "price_fen": price_fen, "channel_prices": dict(channel_prices or {}),
        "channels": list(channels), "real_name": real_name, "max_group": max_group,
        "refundable": refundable, "refund_fee_pct": refund_fee_pct})


def slots(items: Iterable[Slot | dict], *, venue: str | None = None) -> Command:
    """Create slots; each a model.Slot or a dict with id, zone, day, start, end, capacity."""
    out = []
    for s in items:
        if isinstance(s, Slot):
            s = {"id": s.id, "zone": s.zone, "day": s.day, "start": s.start, "end": s.end,
                 "capacity": s.capacity}
        elif isinstance(s, dict) and isinstance(s.get("day"), (str, _dt.date)):
            s = {**s, "day": to_day(s["day"])}
        out.append(s)
    return Command(CommandKind.SLOTS, _in(venue, {"slots": out}))


def slot_capacity(slot: str, capacity: int, *, venue: str | None = None) -> Command:
    return Command(CommandKind.SLOT_CAPACITY, _in(venue, {"slot": slot, "capacity": capacity}))


def allotment(slot: str, channel: str, capacity: int, *, venue: str | None = None) -> Command:
    """Reserve `capacity` of a slot for one channel (create or change)."""
    return Command(CommandKind.ALLOTMENT,
                   _in(venue, {"slot": slot, "channel": channel, "capacity": capacity}))


def rotate_key() -> Command:
    """New issuing ticket key; the previous ones stay accepted until retired."""
    return Command(CommandKind.KEY, {"action": "rotate"})


def retire_key(key_id: int) -> Command:
    """Stop accepting codes of a key (codes issued with it then read as FORGED)."""
    return Command(CommandKind.KEY, {"key_id": key_id, "state": 0})


def hold(channel: str, venue: str, items: Iterable[HoldItem | dict], *, ttl_s: int = 900,
         idempotency_key: str | None = None, quote_id: str | None = None,
         coupon: str | None = None, coupon_holder: str | None = None, member_level: int = 0,
         member: str = "", points: int = 0) -> Command:
    """Take stock for `ttl_s` seconds. With `quote_id` (from Shard.quote) the hold is
    charged exactly what that quote said, or refused (QuoteChanged, QuoteExpired).
    `coupon` (a code) is taken with the hold, after every pricing rule, and given back
    if the hold ends unpaid (CouponRefused if it can't be used); `coupon_holder` is the
    ID number of the person using it (needed where it is limited per person).
    `member` (a member id of the venue): the member buying, priced by member_level rules
    at their level (by spend), who may redeem `points` as money off after the coupon
    (taken with the hold, given back if it ends unpaid; enough make a ticket free).
    `member_level` sets a level without a member (engine callers only: the API never
    takes a level from callers)."""
    its = [({"product": i.product, "slots": list(i.slots), "qty": i.qty, "group": i.group}
            | ({"seats": list(i.seats), "qty": len(i.seats)} if i.seats else {}))
           if isinstance(i, HoldItem) else i for i in items]
    args = {"channel": channel, "venue": venue, "items": its, "ttl_s": ttl_s}
    if quote_id is not None:
        args["quote_id"] = quote_id
    if coupon is not None:
        args["coupon"] = coupon
    if coupon_holder is not None:
        args["coupon_holder"] = coupon_holder
    if member_level:
        args["member_level"] = member_level
    if member:
        args["member"] = member
    if points:
        args["points"] = points
    return Command(CommandKind.HOLD, args, idempotency_key)


def coupon(venue: str, id: str, kind: str, *, amount_fen: int = 0, pct: int = 0, cap_fen: int = 0,
           min_spend_fen: int = 0, valid_from: _dt.date | str | None = None,
           valid_to: _dt.date | str | None = None, products: Sequence[str] = (),
           channels: Sequence[str] = (), budget_fen: int = 0, per_holder: int = 0,
           single_use: bool = False, active: bool = True, name: str = "",
           idempotency_key: str | None = None) -> Command:
    """Create or change a venue's coupon (model.Coupon: fixed, pct or spend). A change
    applies to holds taken from then on; its use so far is kept."""
    def day(d):
        return None if d is None else to_day(d)
    return Command(CommandKind.COUPON, {
        "venue": venue, "id": id, "kind": kind, "name": name, "amount_fen": amount_fen,
        "pct": pct, "cap_fen": cap_fen, "min_spend_fen": min_spend_fen,
        "valid_from": day(valid_from), "valid_to": day(valid_to), "products": list(products),
        "channels": list(channels), "budget_fen": budget_fen, "per_holder": per_holder,
        "single_use": single_use, "active": active}, idempotency_key)


def coupon_codes(venue: str, coupon: str, count: int, *, idempotency_key: str | None = None) -> Command:
    """Issue `count` (at most 100,000) more single-use codes of a single_use coupon; the
    answer (model.CouponBatch) names their serials, Shard.coupon_codes gives their text."""
    return Command(CommandKind.COUPON_CODES, {"venue": venue, "coupon": coupon, "count": count},
                   idempotency_key)


def price_rules(venue: str, product: str, rules: Iterable[PriceRule | dict], *,
                idempotency_key: str | None = None) -> Command:
    """Replace a product's pricing rules (model.PriceRule: early_bird, time_of_day,
    fill_rate; at most one of each), applied after the price calendar in that order."""
    # a record carries every kind's condition: another kind's is left out when 0 (a
    # non-zero one is sent, and refused as not a field of this rule)
    rows = [{k: v for k, v in vars(r).items()
             if v or k in ("kind", "amount_fen", "pct", "cap_fen", RULE_CONDITION.get(r.kind))}
            if isinstance(r, PriceRule) else r for r in rules]
    return Command(CommandKind.PRICE_RULES, {"venue": venue, "product": product, "rules": rows},
                   idempotency_key)


def booking(venue: str, product: str, *, opens_days: int = 0, closes_minutes: int | None = None,
            weekdays: Sequence[int] = (), idempotency_key: str | None = None) -> Command:
    """Set a product's booking window (model.BookingWindow): bookable from `opens_days`
    days ahead (0: always), until `closes_minutes` before the slot starts (negative:
    after it started; None: until it ends), on the ISO `weekdays` (empty: all). Outside
    it a Quote or Hold is BOOKING_CLOSED."""
    return Command(CommandKind.BOOKING, {"venue": venue, "product": product, "opens_days": opens_days,
                                         "closes_minutes": closes_minutes, "weekdays": list(weekdays)},
                   idempotency_key)


def id_limits(venue: str, product: str, *, per_day: int = 0, per_slot: int = 0,
              idempotency_key: str | None = None) -> Command:
    """Set how many tickets of a real-name product one ID number may hold for a day and
    for a slot, across channels (0: no limit); checked at Confirm (ID_LIMIT)."""
    return Command(CommandKind.ID_LIMITS, {"venue": venue, "product": product, "per_day": per_day,
                                           "per_slot": per_slot}, idempotency_key)


def blacklist(venue: str, id_number: str, *, reason: str = "", until: int = 0,
              remove: bool = False, idempotency_key: str | None = None) -> Command:
    """Put a person (their ID number, kept only as a keyed hash) on the venue's blacklist
    until `until` (UTC seconds; 0: for good): no sale to them while listed (BLACKLISTED),
    and their tickets of the venue are blocked at once (the gate answers BLOCKED). With
    `remove`, take them off and unblock the tickets the entry blocked."""
    return Command(CommandKind.BLACKLIST, {"venue": venue, "id_number": id_number, "reason": reason,
                                           "until": until, "remove": remove}, idempotency_key)


def refund_policy(venue: str, product: str, tiers: Iterable[RefundTier | dict], *,
                  idempotency_key: str | None = None) -> Command:
    """Set a product's refund tiers, e.g. free until 24 h before the slot, 10 % until it
    starts, nothing after: [RefundTier(1440, 0), RefundTier(0, 10)]. No tiers: its flat
    refund_fee_pct at any time, as before."""
    rows = [vars(t) if isinstance(t, RefundTier) else t for t in tiers]
    return Command(CommandKind.REFUND_POLICY, {"venue": venue, "product": product, "tiers": rows},
                   idempotency_key)


def pass_dates(venue: str, product: str, valid_from: _dt.date | str | None = None,
               valid_to: _dt.date | str | None = None, *, idempotency_key: str | None = None) -> Command:
    """Make a product a pass with fixed calendar dates (e.g. 2027-01-01 to 2027-12-31):
    every ticket sold from now on is valid those days, whatever its slot's day (a hold
    for a slot after `valid_to` is BOOKING_CLOSED). Neither date: back to valid from the
    slot's day. Tickets sold before keep their days."""
    def day(d):
        return None if d is None else to_day(d)
    return Command(CommandKind.PASS_DATES, {"venue": venue, "product": product,
                                            "valid_from": day(valid_from), "valid_to": day(valid_to)},
                   idempotency_key)


def package(venue: str, product: str, parts: Iterable[PackagePart | dict], *,
            idempotency_key: str | None = None) -> Command:
    """Make a product a package (套票) of parts -- its zones or extras such as a boat ride or
    a meal voucher -- each settled to a merchant, a fixed amount per person or a percent
    of what the fixed parts leave (the percents add up to 100); every order line of it
    records the split of what was paid. No parts: not a package."""
    rows = [vars(p) if isinstance(p, PackagePart) else p for p in parts]
    return Command(CommandKind.PACKAGE, {"venue": venue, "product": product, "parts": rows},
                   idempotency_key)


def calendar(venue: str, days: Mapping[_dt.date | str | int, str], *,
             idempotency_key: str | None = None) -> Command:
    """Set the type of venue-local days (one of model.DATE_TYPES: weekday, weekend,
    holiday, peak, off); "" removes a day's entry (back to weekend on Saturday and
    Sunday, else weekday). The operator's holiday calendar is data, loaded per year."""
    return Command(CommandKind.CALENDAR, {
        "venue": venue, "days": {(d if isinstance(d, str) else _dt.date.isoformat(
            d if isinstance(d, _dt.date) else _dt.date(1970, 1, 1) + _dt.timedelta(days=d))): t
            for d, t in days.items()}}, idempotency_key)


def prices(venue: str, product: str, table: Iterable[DatePrice | dict], *,
           idempotency_key: str | None = None) -> Command:
    """Replace a product's prices by date type and channel ("" = any channel). A line is
    priced by (its channel, its day's type), else ("", type), else the product's channel
    price, else its base price."""
    rows = [vars(p) if isinstance(p, DatePrice) else p for p in table]
    return Command(CommandKind.PRICES, {"venue": venue, "product": product, "prices": rows},
                   idempotency_key)


def release(hold_id: int, channel: str, *, idempotency_key: str | None = None) -> Command:
    return Command(CommandKind.RELEASE, {"hold_id": hold_id, "channel": channel}, idempotency_key)


def expire() -> Command:
    """Release every hold whose time is up (the writer also does this by itself)."""
    return Command(CommandKind.EXPIRE, {})


def _shift(args: dict, shift: str, principal: str) -> dict:
    if shift:
        args["shift"] = shift
        args["principal"] = principal
    return args


def confirm(hold_id: int, order_id: str, channel: str, *, method: str, amount_fen: int,
            reference: str = "", holders: list[list[str]] | None = None,
            signed: bool = True, shift: str = "", principal: str = "", member: str = "") -> Command:
    """Pay a hold: tickets are issued. `order_id` (the channel's own) is the idempotency
    key: a retry returns the first answer. `holders` gives ID numbers per item line.
    `shift`: the open cash-desk shift it is rung up in, which `principal` opened.
    `member`: the venue's member (id) the order is sold to, who earns its points."""
    args = {"hold_id": hold_id, "order_id": order_id, "channel": channel,
            "payment": {"method": method, "reference": reference, "amount_fen": amount_fen},
            "signed": signed}
    if holders is not None:
        args["holders"] = holders
    if member:
        args["member"] = member
    return Command(CommandKind.CONFIRM, _shift(args, shift, principal), order_id)


def buy(channel: str, venue: str, items: Iterable[HoldItem | dict], order_id: str, *,
        method: str, amount_fen: int, reference: str = "", quote_id: str | None = None,
        coupon: str | None = None, coupon_holder: str | None = None,
        holders: list[list[str]] | None = None, signed: bool = True, shift: str = "",
        principal: str = "", member: str = "", points: int = 0) -> Command:
    """Hold `items` and pay them in one command: an order a channel pays at once (an OTA's
    prepaid order, a kiosk's card). As :func:`hold` then :func:`confirm`, or nothing: a
    refused confirmation releases the hold at once. `order_id` is the idempotency key.
    `member`: the venue's member buying, priced at their level, redeeming `points` and
    earning the points of what they pay."""
    h = hold(channel, venue, items, quote_id=quote_id, coupon=coupon, coupon_holder=coupon_holder,
             member=member, points=points).args
    del h["ttl_s"]                   # held for no time: paid in the same step
    c = confirm(0, order_id, channel, method=method, amount_fen=amount_fen, reference=reference,
                holders=holders, signed=signed, shift=shift, principal=principal, member=member).args
    del c["hold_id"]
    return Command(CommandKind.BUY, {**h, **c}, order_id)


def refund(order_id: str, refund_id: str, tickets: Sequence[int] = (), *,
           channel: str, persons: int = 0, shift: str = "", principal: str = "") -> Command:
    """Refund unused tickets (all unused ones of the order if `tickets` is empty) of
    the order `order_id` of `channel` (order ids are the channel's own). With `persons`,
    refund that many persons of the one group ticket named, which then admits the rest."""
    args = {"order_id": order_id, "refund_id": refund_id, "tickets": list(tickets),
            "channel": channel}
    if persons:
        args["persons"] = persons
    return Command(CommandKind.REFUND, _shift(args, shift, principal), f"{order_id}/{refund_id}")


def change(order_id: str, change_id: str, slots: Sequence[str], tickets: Sequence[int] = (), *,
           channel: str, method: str = "", amount_fen: int | None = None,
           reference: str = "", shift: str = "", principal: str = "") -> Command:
    """Move unused tickets of one line of the order `order_id` of `channel` (all its
    unused ones if `tickets` is empty) to `slots` (one per zone of the product), in one
    step: new codes issued, the old voided. Priced as a hold for those slots would be,
    with a fee by the product's refund policy; when the buyer owes more, pay exactly
    that (`method`, `amount_fen`; Shard.change_terms says it). `change_id` (unique in
    the order) makes a retry get the first answer."""
    args = {"order_id": order_id, "change_id": change_id, "slots": list(slots),
            "tickets": list(tickets), "channel": channel}
    if amount_fen is not None:
        args["payment"] = {"method": method, "reference": reference, "amount_fen": amount_fen}
    return Command(CommandKind.CHANGE, _shift(args, shift, principal), f"{order_id}/change/{change_id}")


# -- finance -------------------------------------------------------------------------------
def revenue_split(venue: str, product: str, shares: Iterable[Mapping], *,
                  idempotency_key: str | None = None) -> Command:
    """Set a product's revenue shares (分账), each {partner, kind: zone|merchant|partner,
    part: a package's part (only for a package), pct or per_person_fen}, taken in order
    from every sale and reversed at every refund; what they leave is the venue's. None:
    all the venue's (a package's parts still go to their merchants)."""
    return Command(CommandKind.SPLIT, {"venue": venue, "product": product,
                                       "shares": [dict(s) for s in shares]}, idempotency_key)


def open_shift(venue: str, station: str, shift: str, *, cashier: str = "", float_fen: int = 0,
               principal: str = "", channel: str = "", idempotency_key: str | None = None) -> Command:
    """Open a cash-desk shift at `station`; only `principal` sells into it (confirm, refund
    and change naming it), and a station has one open shift at a time. `channel`: the
    channel the principal sells as; a merchant's station opens only to its channel."""
    return Command(CommandKind.SHIFT, {"venue": venue, "station": station, "shift": shift,
                                       "cashier": cashier, "float_fen": float_fen,
                                       "principal": principal, "channel": channel},
                   idempotency_key or shift)


def close_shift(venue: str, shift: str, counted_cash_fen: int, *, principal: str = "",
                idempotency_key: str | None = None) -> Command:
    """Close a shift with the cash counted in the drawer (the answer says over/short)."""
    return Command(CommandKind.SHIFT, {"venue": venue, "shift": shift, "close": True,
                                       "counted_cash_fen": counted_cash_fen, "principal": principal},
                   idempotency_key or f"{shift}/close")


def statement(venue: str, method: str, day: _dt.date | str | int, lines: Iterable[Mapping], *,
              idempotency_key: str | None = None) -> Command:
    """Store a payment provider's statement of a venue-local day for `method`: lines
    {kind: payment|refund, trade_no, order_id, refund_id, at (UTC seconds), amount_fen,
    fee_fen}. The same lines again change nothing; other lines replace the day's."""
    return Command(CommandKind.STATEMENT, {"venue": venue, "method": method, "day": to_day(day),
                                           "lines": [dict(x) for x in lines]}, idempotency_key)


# -- live operation (一键管控) ---------------------------------------------------------------
def _opt(args: dict, **kw) -> dict:
    args.update({k: v for k, v in kw.items() if v is not None})
    return args


def pause_sales(venue: str, paused: bool = True, *, zone: str | None = None,
                slot: str | None = None, idempotency_key: str | None = None) -> Command:
    """Pause (or resume) sales of the venue, or of one zone or slot of it: Quote, Hold
    and Change for its slots answer SALES_PAUSED; holds taken before may be confirmed."""
    return Command(CommandKind.CONTROL, _opt({"venue": venue, "what": "sales", "paused": paused},
                                             zone=zone, slot=slot), idempotency_key)


def close_entry(venue: str, closed: bool = True, *, zone: str | None = None,
                gate: str | None = None, idempotency_key: str | None = None) -> Command:
    """Close (or reopen) entry through a zone or one gate: entries that would admit there
    answer ENTRY_CLOSED; exits pass."""
    return Command(CommandKind.CONTROL, _opt({"venue": venue, "what": "entry", "closed": closed},
                                             zone=zone, gate=gate), idempotency_key)


def live_capacity(venue: str, zone: str, capacity: int, *,
                  idempotency_key: str | None = None) -> Command:
    """Set a zone's live capacity (persons inside at most; 0: no limit) from now on."""
    return Command(CommandKind.CONTROL, {"venue": venue, "what": "capacity", "zone": zone,
                                         "live_capacity": capacity}, idempotency_key)


def flow_alerts(venue: str, zone: str, fill_pct: Sequence[int] = (), rate: int = 0, *,
                idempotency_key: str | None = None) -> Command:
    """Set a zone's flow alerts: fill levels in percent of its live capacity (rising, at
    most 4) and an entries-per-minute rate (0: none). Neither: no alerts."""
    return Command(CommandKind.CONTROL, {"venue": venue, "what": "alerts", "zone": zone,
                                         "fill_pct": list(fill_pct), "rate": rate}, idempotency_key)


def note(result: str = "OK") -> Command:
    """Changes nothing; with an audit tuple it records a call made outside the shard."""
    return Command(CommandKind.NOTE, {"result": result})


def block(ticket_id: int, blocked: bool = True) -> Command:
    return Command(CommandKind.BLOCK, {"ticket_id": ticket_id, "blocked": blocked})


def verify(code: str, gate: str | tuple[str, str], direction: Direction = Direction.IN, *, at=None,
           persons: int = 0, scan_id: str | None = None) -> Command:
    """Scan a code at a gate (its id, or (venue, id) where gate ids repeat across the
    shard's venues). `at` (UTC seconds or aware datetime) defaults to now;
    persons=0 admits (or lets out) the whole group. `scan_id` (the gate's own id for
    this scan, unique per gate) makes a retry get the first answer; it is also the
    nonce the scan would carry if the gate queued it offline."""
    return Command(CommandKind.VERIFY, (code, gate, int(direction), _time(at), persons), scan_id)


def verify_holder(id_number: str, gate: str, direction: Direction = Direction.IN, *, at=None,
                  persons: int = 0, scan_id: str | None = None) -> Command:
    """Scan a real-name holder's ID number (ID-card reader)."""
    return Command(CommandKind.VERIFY_HOLDER, (id_number, gate, int(direction), _time(at), persons),
                   scan_id)


def verify_face(face_token: str, gate: str, direction: Direction = Direction.IN, *, at=None,
                persons: int = 0, scan_id: str | None = None) -> Command:
    """Scan a face token (a face terminal's match, enrolled with `enroll_face`)."""
    return Command(CommandKind.VERIFY_FACE, (face_token, gate, int(direction), _time(at), persons),
                   scan_id)


def enroll_face(venue: str, face_token: str, id_number: str | None, *,
                idempotency_key: str | None = None) -> Command:
    """Bind a face token (what the venue's face platform returns for an enrolled face)
    to a real-name holder: a face terminal's scan of that token then verifies like the
    holder's ID card. `id_number=None` removes the token. Only for a holder with a
    ticket of `venue`. The shard keeps keyed hashes of both, never the token or the ID
    number."""
    return Command(CommandKind.FACE, {"venue": venue, "face_token": face_token, "id_number": id_number},
                   idempotency_key)


def verify_batch(codes: Sequence[str], gates: str | Sequence[str],
                 direction: Direction = Direction.IN, *, at=None, persons: int = 0,
                 batch_id: str | None = None) -> Command:
    """Scan many codes in order, at one gate or one gate per code. `batch_id` (unique
    per shard; a concentrator's own) makes a resent batch get its first answers."""
    return Command(CommandKind.VERIFY_BATCH, (list(codes), gates, int(direction), _time(at), persons),
                   batch_id)


def verify_packed(codes: bytes, code_size: int, gates: str | Sequence[str],
                  direction: Direction = Direction.IN, *, at=None, persons: int = 0,
                  batch_id: str | None = None) -> Command:
    """`verify_batch` of codes in their binary form (what a code's text encodes in
    base32), `code_size` bytes each, concatenated in `codes`: a concentrator's packed
    batch, decoded in one pass over the buffer. Decided and journaled as the same codes'
    text would be."""
    return Command(CommandKind.VERIFY_PACKED, ((codes, code_size), gates, int(direction), _time(at),
                                               persons), batch_id)


def offline_scans(gate: str, scans: Sequence[dict], *, venue: str | None = None) -> Command:
    """Scans an offline gate made, for upload. Each scan is a dict of nonce (unique per
    gate), seq (the gate's sequence number), code, direction, at (UTC seconds), persons
    (asked; 0 = the whole group), admitted (persons the gate let through; 0 if it
    refused) and reason (the gate's offline Reason)."""
    return Command(CommandKind.OFFLINE_SCANS,
                   _in(venue, {"gate": gate, "scans": [dict(s) for s in scans]}))


# -- members ----------------------------------------------------------------------------
def member_program(venue: str, *, levels: Iterable[MemberLevel | dict] = (), period_days: int = 365,
                   earn: Iterable[EarnRule | dict] = (), expiry: str = "year_end",
                   expiry_n: int | None = None, fen_per_point: int = 1,
                   idempotency_key: str | None = None) -> Command:
    """Set a venue's member programme (model.MemberProgram): levels by spend within
    `period_days`, points per yuan paid by product and channel, when points expire
    (`year_end`: at the end of the year `expiry_n` years after, default 1; `days`:
    `expiry_n` days after, default 365; `never`), what a point is worth. It applies to
    what is paid, refunded and asked from then on; balances and ledgers are kept."""
    args = {"venue": venue, "levels": [vars_(x) if isinstance(x, MemberLevel) else x for x in levels],
            "period_days": period_days,
            "earn": [vars_(x) if isinstance(x, EarnRule) else x for x in earn],
            "expiry": expiry, "fen_per_point": fen_per_point}
    if expiry_n is not None:
        args["expiry_n"] = expiry_n
    return Command(CommandKind.MEMBER_PROGRAM, args, idempotency_key)


def enrol(venue: str, *, id_number: str = "", phone: str = "",
          idempotency_key: str | None = None) -> Command:
    """Enrol a person as a member of a venue, by ID number, phone number or both (each
    names one member of the venue at most); the answer (model.MemberInfo) names the
    member id the shard gave."""
    args = {"venue": venue}
    if id_number:
        args["id_number"] = id_number
    if phone:
        args["phone"] = phone
    return Command(CommandKind.MEMBER, args, idempotency_key)


def adjust_points(venue: str, member: str, points: int, reason: str, *,
                  idempotency_key: str | None = None) -> Command:
    """An operator's adjustment of a member's points: a grant (points > 0) or a
    correction (< 0, refused INSUFFICIENT_POINTS below a zero balance), with a reason."""
    return Command(CommandKind.POINTS, {"venue": venue, "member": member, "points": points,
                                        "reason": reason}, idempotency_key)


# -- theatre seats ------------------------------------------------------------------------
def seat_map(venue: str, id: str, rows: Iterable[Mapping], zones: Iterable[Mapping], *,
             name: str = "", idempotency_key: str | None = None) -> Command:
    """Set a venue's seat map (model.SeatMap): `rows` of {section, row, layout}, a layout
    read left to right (a zone letter is a seat of that price zone, x a seat never sold,
    _ an aisle); `zones` of {zone, price_fen, name}, best first. A map with sessions is
    kept as it is: a changed hall is a new map."""
    return Command(CommandKind.SEAT_MAP, {"venue": venue, "id": id, "name": name,
                                          "rows": [dict(r) for r in rows],
                                          "zones": [dict(z) for z in zones]}, idempotency_key)


def seating(venue: str, slot: str, seat_map: str, *, idempotency_key: str | None = None) -> Command:
    """Make a slot a session of a seat map before its first sale: its capacity becomes
    the seats sold, each hold of it names its seats or asks the best available."""
    return Command(CommandKind.SEATING, {"venue": venue, "slot": slot, "seat_map": seat_map},
                   idempotency_key)


def merchant(venue: str, id: str, *, name: str = "", zones: Iterable[str] = (),
             stations: Iterable[str] = (), idempotency_key: str | None = None) -> Command:
    """Set a merchant inside a venue (a boat company, a restaurant; model.Merchant): the
    `zones` it runs become consumption points (each person of a ticket admitted once,
    ever; the zones' gates are its terminals), the `stations` its tills. Setting it again
    replaces both lists; a zone or station is one merchant's at most."""
    return Command(CommandKind.MERCHANT, {"venue": venue, "id": id, "name": name or id,
                                          "zones": list(zones), "stations": list(stations)},
                   idempotency_key)
