"""The catalog: venues, zones, gates, products, slots, slot capacities and allotments,
the price calendar (day types per venue, price tables per product), and the names they
are found by.

Zone, gate, product and slot ids are unique within their venue (DESIGN.md 4.1): objects
are keyed (venue, id); the index maps also hold the bare id while it names one object on
the shard (data dirs from before, single-venue callers). Catalog records are kept in
the snapshot and replayed on open.

Each command is checked (add_*, set_*) and then applied (`_venue`, `_zone` ...) from the
object as created, every field resolved: that is its journal record (format 2), and
replay applies it without checking it again (`replay`). A format-1 record holds the
request as given; `_V1` fills the defaults format 1 had and resolves bare ids.
"""
from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from .. import _core
from ..errors import (AlreadyExists, BookingClosed, CorruptData, FailedPrecondition, InvalidArgument,
                      NotFound, SoldOut)
from ..journal import Record, json_record
from ..model import (DATE_TYPES, RULE_KINDS, AllotmentCounters, AppliedRule, BookingWindow,
                     CalendarResult, DatePrice, IdLimits, PackagePart, PackageSplit, PassDates, RefundPolicy, RefundTier,
                     EntryRule, Gate, GateMode, PriceRule, PriceRules, PriceTable, Product, Slot,
                     SlotCounters, Venue, Zone)
from .validate import ID, U16, arg, ident_arg, int_arg, text_arg

if TYPE_CHECKING:
    from .core import ShardState


def add_venue(st: ShardState, args: dict, now: int) -> Venue:
    vid = ident_arg(args, "id")
    v = Venue(vid, text_arg(args, "name", vid),
              int_arg(args, "utc_offset_s", -14 * 3600, 14 * 3600, 8 * 3600))
    if vid in st.venues:
        raise AlreadyExists(f"venue {vid} exists", field="id")
    if len(st.venues) >= U16:
        raise FailedPrecondition("too many venues in this shard")
    return _venue(st, {"id": v.id, "name": v.name, "utc_offset_s": v.utc_offset_s})


def _venue(st: ShardState, r: dict) -> Venue:
    v = Venue(r["id"], r["name"], r["utc_offset_s"])
    st.venue_idx[v.id] = len(st.venue_idx)
    st.venue_list.append(v.id)
    st.venues[v.id] = v
    st.journal(json_record(Record.VENUE, r), Record.VENUE)
    return v


def venue_of(st: ShardState, args: dict, name: str = "venue") -> Venue:
    vid = args.get(name)
    v = st.venues.get(vid) if type(vid) is str else None
    if v is None:
        vid = ident_arg(args, name)            # a clear error for a malformed id
        raise NotFound(f"no venue {vid}", field=name)
    return v


def venue_arg(st: ShardState, args: dict) -> str | None:
    """The optional `venue` of a command naming a zone, gate or slot."""
    return venue_of(st, args).id if args.get("venue") is not None else None


def channel_of(st: ShardState, args: dict) -> str:
    ch = args.get("channel")
    if ch not in st.known_channels:
        ch = ident_arg(args, "channel")
        if len(st.known_channels) < 10_000:
            st.known_channels.add(ch)
    return ch


# -- names -----------------------------------------------------------------------------
def index_name(st: ShardState, kind: str, index: dict, key: tuple[str, str], idx: int) -> None:
    """Index a new zone/gate/product/slot by (venue, id), and by its bare id while
    that names one object on the shard."""
    index[key] = idx
    venues = st.names[kind].setdefault(key[1], [])
    venues.append(key[0])
    if len(venues) == 1:
        index[key[1]] = idx
    else:
        index.pop(key[1], None)


def find(st: ShardState, kind: str, index: dict, venue: Any, id_: Any, field: str) -> tuple[str, str]:
    """The (venue, id) key of a zone/gate/product/slot. Without a venue, the id must
    name exactly one on the shard."""
    if type(id_) is not str or not ID.match(id_):
        raise InvalidArgument(f"must be a {kind} id: 1-64 letters, digits or ._:@/-, "
                              "starting with a letter or digit", field=field)
    if venue is not None:
        if (venue, id_) not in index:
            raise NotFound(f"no {kind} {id_} in venue {venue}", field=field)
        return (venue, id_)
    venues = st.names[kind].get(id_)
    if not venues:
        raise NotFound(f"no {kind} {id_}", field=field)
    if len(venues) > 1:
        raise InvalidArgument(f"{kind} {id_} exists in {len(venues)} venues: name the venue",
                              field=field)
    return (venues[0], id_)


# -- zones and gates -------------------------------------------------------------------
def add_zone(st: ShardState, args: dict, now: int) -> Zone:
    v = venue_of(st, args)
    zid = ident_arg(args, "id")
    z = Zone(zid, v.id, text_arg(args, "name", zid), int_arg(args, "live_capacity", 0, 10**9, 0),
             bool(arg(args, "enforce_exit", bool, False)))
    if (v.id, zid) in st.zones:
        raise AlreadyExists(f"zone {zid} exists in venue {v.id}", field="id")
    if len(st.zones) >= U16:
        raise FailedPrecondition("too many zones in this shard")
    return _zone(st, {"venue": z.venue, "id": z.id, "name": z.name,
                      "live_capacity": z.live_capacity, "enforce_exit": z.enforce_exit})


def _zone(st: ShardState, r: dict) -> Zone:
    v = st.venues[r["venue"]]
    z = Zone(r["id"], v.id, r["name"], r["live_capacity"], r["enforce_exit"])
    idx = len(st.zones)
    index_name(st, "zone", st.zone_idx, (v.id, z.id), idx)
    st.zones[(v.id, z.id)] = z
    st.tickets.set_zone(idx, st.venue_idx[v.id], v.utc_offset_s, z.live_capacity, z.enforce_exit)
    st.journal(json_record(Record.ZONE, r), Record.ZONE)
    return z


def zone_of(st: ShardState, args: dict, name: str = "zone", venue: str | None = None) -> Zone:
    return st.zones[find(st, "zone", st.zone_idx, venue, args.get(name), name)]


def add_gate(st: ShardState, args: dict, now: int) -> Gate:
    z = zone_of(st, args, venue=venue_arg(st, args))
    gid = ident_arg(args, "id")
    mode = GateMode(int_arg(args, "mode", 1, 3, 3))
    if (z.venue, gid) in st.gates:
        raise AlreadyExists(f"gate {gid} exists in venue {z.venue}", field="id")
    if len(st.gates) >= U16:
        raise FailedPrecondition("too many gates in this shard")
    return _gate(st, {"venue": z.venue, "zone": z.id, "id": gid, "mode": int(mode)})


def _gate(st: ShardState, r: dict) -> Gate:
    g = Gate(r["id"], r["venue"], r["zone"], GateMode(r["mode"]))
    idx = len(st.gates)
    index_name(st, "gate", st.gate_idx, (g.venue, g.id), idx)
    st.gates[(g.venue, g.id)] = g
    st.gate_list.append(g)
    st.gate_mode.append(int(g.mode))
    st.tickets.set_gate(idx, st.zone_idx[(g.venue, g.zone)], st.venue_idx[g.venue])
    st.journal(json_record(Record.GATE, r), Record.GATE)
    return g


# -- products --------------------------------------------------------------------------
def add_product(st: ShardState, args: dict, now: int) -> Product:
    v = venue_of(st, args)
    pid = ident_arg(args, "id")
    zones = arg(args, "zones", list)
    if not 1 <= len(zones) <= _core.MAX_COMPONENTS:
        raise InvalidArgument("a product admits 1 to 8 zones", field="zones")
    for i, zid in enumerate(zones):
        find(st, "zone", st.zone_idx, v.id, zid, f"zones[{i}]")
    if len(set(zones)) != len(zones):
        raise InvalidArgument("a zone is listed twice", field="zones")
    r = arg(args, "rule", dict, {})
    try:
        rule = EntryRule(
            max_entries=int_arg(r, "max_entries", 0, U16, 1),
            daily_entries=int_arg(r, "daily_entries", 0, U16, 0),
            reentry=bool(arg(r, "reentry", bool, False)),
            valid_days=int_arg(r, "valid_days", 1, 3660, 1),
            slot_grace_s=int_arg(r, "slot_grace_s", 0, 86400, 1800))
    except InvalidArgument as e:
        raise InvalidArgument(e.message, field=f"rule.{e.field}") from None
    cp = arg(args, "channel_prices", dict, {})
    for ch, price in cp.items():
        if not isinstance(price, int) or isinstance(price, bool) or not 0 <= price <= 10**9:
            raise InvalidArgument("must be an amount in fen", field=f"channel_prices.{ch}")
    channels = arg(args, "channels", list, [])
    if not all(isinstance(c, str) and ID.match(c) for c in channels):
        raise InvalidArgument("must be channel ids", field="channels")
    p = Product(pid, v.id, text_arg(args, "name", pid), tuple(zones), rule,
                int_arg(args, "price_fen", 0, 10**9, 0), dict(cp), tuple(channels),
                bool(arg(args, "real_name", bool, False)), int_arg(args, "max_group", 1, U16, 1),
                bool(arg(args, "refundable", bool, True)), int_arg(args, "refund_fee_pct", 0, 100, 0))
    if (v.id, pid) in st.products:
        raise AlreadyExists(f"product {pid} exists in venue {v.id}", field="id")
    if len(st.products) >= U16:
        raise FailedPrecondition("too many products in this shard")
    return _product(st, {
        "venue": p.venue, "id": p.id, "name": p.name, "zones": list(p.zones),
        "rule": {"max_entries": rule.max_entries, "daily_entries": rule.daily_entries,
                 "reentry": rule.reentry, "valid_days": rule.valid_days,
                 "slot_grace_s": rule.slot_grace_s},
        "price_fen": p.price_fen, "channel_prices": dict(p.channel_prices),
        "channels": list(p.channels), "real_name": p.real_name, "max_group": p.max_group,
        "refundable": p.refundable, "refund_fee_pct": p.refund_fee_pct})


def _product(st: ShardState, r: dict) -> Product:
    rule = EntryRule(**r["rule"])
    vid = r["venue"]
    p = Product(r["id"], vid, r["name"], tuple(r["zones"]), rule, r["price_fen"],
                dict(r["channel_prices"]), tuple(r["channels"]), r["real_name"], r["max_group"],
                r["refundable"], r["refund_fee_pct"])
    idx = len(st.products)
    index_name(st, "product", st.product_idx, (vid, p.id), idx)
    st.products[(vid, p.id)] = p
    st.product_list.append(p)
    st.tickets.set_product(idx, st.venue_idx[vid], [st.zone_idx[(vid, z)] for z in p.zones],
                           rule.max_entries, rule.daily_entries, rule.reentry, rule.slot_grace_s)
    st.journal(json_record(Record.PRODUCT, r), Record.PRODUCT)
    return p


# -- slots and allotments --------------------------------------------------------------
def add_slots(st: ShardState, args: dict, now: int) -> list[Slot]:
    items = arg(args, "slots", list)
    if not 1 <= len(items) <= 100_000:
        raise InvalidArgument("between 1 and 100000 slots at once", field="slots")
    new: list[Slot] = []
    seen = set()
    venue = venue_arg(st, args)
    for i, s in enumerate(items):
        f = f"slots[{i}]"
        try:
            z = zone_of(st, s, venue=venue)
            sid = ident_arg(s, "id")
            day = int_arg(s, "day", 0, U16)
            start = int_arg(s, "start", 0, 2**40)
            end = int_arg(s, "end", start + 1, 2**40)
            cap = int_arg(s, "capacity", 0, 10**9)
        except (InvalidArgument, NotFound) as e:
            raise type(e)(e.message, field=f"{f}.{e.field}") from None
        if (z.venue, sid) in st.slot_defs or (z.venue, sid) in seen:
            raise AlreadyExists(f"slot {sid} exists in venue {z.venue}", field=f"{f}.id")
        seen.add((z.venue, sid))
        new.append(Slot(sid, z.id, day, start, end, cap, z.venue))
    return _slots(st, {"slots": [{"venue": s.venue, "zone": s.zone, "id": s.id, "day": s.day,
                                  "start": s.start, "end": s.end, "capacity": s.capacity}
                                 for s in new]})


def _slots(st: ShardState, r: dict) -> list[Slot]:
    new = [Slot(s["id"], s["zone"], s["day"], s["start"], s["end"], s["capacity"], s["venue"])
           for s in r["slots"]]
    for s in new:
        idx = st.slots.add(st.zone_idx[(s.venue, s.zone)], s.day, s.start, s.end, s.capacity)
        index_name(st, "slot", st.slot_idx, (s.venue, s.id), idx)
        st.slot_list.append(s.id)
        st.slot_defs[(s.venue, s.id)] = s
    st.journal(json_record(Record.SLOTS, r), Record.SLOTS)
    return new


def slot_key(st: ShardState, args: dict, name: str = "slot") -> tuple[str, str]:
    """The (venue, id) of the slot a command names."""
    return find(st, "slot", st.slot_idx, venue_arg(st, args), args.get(name), name)


def set_slot_capacity(st: ShardState, args: dict, now: int) -> SlotCounters:
    key = slot_key(st, args)
    idx = st.slot_idx[key]
    cap = int_arg(args, "capacity", 0, 10**9)
    if idx in st.sessions:
        raise FailedPrecondition(f"slot {key[1]} is a session: its seats are its capacity", field="slot")
    if not st.slots.set_capacity(idx, cap):
        raise FailedPrecondition("capacity below stock already sold, held or allotted",
                                 field="capacity")
    return _slot_capacity(st, {"venue": key[0], "slot": key[1], "capacity": cap}, idx)


def _slot_capacity(st: ShardState, r: dict, idx: int | None = None) -> SlotCounters:
    """Applied (idx given: set already) or replayed (CorruptData if it does not fit)."""
    if idx is None:
        idx = st.slot_idx[(r["venue"], r["slot"])]
        if not st.slots.set_capacity(idx, r["capacity"]):
            raise CorruptData(f"replayed capacity of slot {r['slot']} is below its stock")
    st.journal(json_record(Record.SLOT_CAPACITY, r), Record.SLOT_CAPACITY)
    return SlotCounters(**st.slots.slot(idx))


def set_allotment(st: ShardState, args: dict, now: int) -> AllotmentCounters:
    key = slot_key(st, args)
    channel = ident_arg(args, "channel")
    cap = int_arg(args, "capacity", 0, 10**9)
    if st.slot_idx[key] in st.sessions:
        raise FailedPrecondition(f"slot {key[1]} is a session: its seats are sold from one pool",
                                 field="slot")
    return _allotment(st, {"venue": key[0], "slot": key[1], "channel": channel,
                           "capacity": cap}, st.slot_idx[key])


def _allotment(st: ShardState, r: dict, idx: int | None = None) -> AllotmentCounters:
    """Applied (idx given) or replayed (CorruptData if it does not fit)."""
    replay = idx is None
    if replay:
        idx = st.slot_idx[(r["venue"], r["slot"])]
    channel, cap = r["channel"], r["capacity"]
    a = st.allot_idx.get((idx, channel))
    if a is None:
        a = st.slots.add_allotment(idx, cap)
        if a < 0:
            if replay:
                raise CorruptData(f"replayed allotment of slot {r['slot']} does not fit its pool")
            raise SoldOut("the slot's free pool is smaller than the allotment", field="capacity")
        st.allot_idx[(idx, channel)] = a
    elif not st.slots.set_allotment(a, cap):
        if replay:
            raise CorruptData(f"replayed allotment of slot {r['slot']} is below its stock")
        raise FailedPrecondition("allotment below its sold and held stock, or the pool is short",
                                 field="capacity")
    st.journal(json_record(Record.ALLOTMENT, r), Record.ALLOTMENT)
    return AllotmentCounters(**st.slots.allotment(a))


# -- replay ----------------------------------------------------------------------------
def _v1_in(st: ShardState, kind: str, index: dict, args: dict, name: str) -> tuple[str, str]:
    """A format-1 record's zone or slot: (venue, id), a bare id resolved as it was then
    (the records replay in order, so the names are the same)."""
    return find(st, kind, index, args.get("venue"), args[name], name)


def _v1_product(a: dict) -> dict:
    r = a.get("rule", {})
    return {"venue": a["venue"], "id": a["id"], "name": a.get("name", a["id"]),
            "zones": list(a["zones"]),
            "rule": {"max_entries": r.get("max_entries", 1), "daily_entries": r.get("daily_entries", 0),
                     "reentry": r.get("reentry", False), "valid_days": r.get("valid_days", 1),
                     "slot_grace_s": r.get("slot_grace_s", 1800)},
            "price_fen": a.get("price_fen", 0), "channel_prices": a.get("channel_prices", {}),
            "channels": a.get("channels", []), "real_name": a.get("real_name", False),
            "max_group": a.get("max_group", 1), "refundable": a.get("refundable", True),
            "refund_fee_pct": a.get("refund_fee_pct", 0)}


def _v1_slots(st: ShardState, a: dict) -> dict:
    out = []
    for s in a["slots"]:
        venue, zone = find(st, "zone", st.zone_idx, a.get("venue"), s["zone"], "zone")
        out.append({"venue": venue, "zone": zone, "id": s["id"], "day": s["day"],
                    "start": s["start"], "end": s["end"], "capacity": s["capacity"]})
    return {"slots": out}


def _v1_slot(st: ShardState, a: dict, **more) -> dict:
    venue, slot = _v1_in(st, "slot", st.slot_idx, a, "slot")
    return {"venue": venue, "slot": slot, **more, "capacity": a["capacity"]}


def _v1_gate(st: ShardState, a: dict) -> dict:
    venue, zone = _v1_in(st, "zone", st.zone_idx, a, "zone")
    return {"venue": venue, "zone": zone, "id": a["id"], "mode": a.get("mode", 3)}


# format 1: the request as given -> the record format 2 journals (defaults of format 1)
_V1 = {
    Record.VENUE: lambda st, a: {"id": a["id"], "name": a.get("name", a["id"]),
                                 "utc_offset_s": a.get("utc_offset_s", 8 * 3600)},
    Record.ZONE: lambda st, a: {"venue": a["venue"], "id": a["id"], "name": a.get("name", a["id"]),
                                "live_capacity": a.get("live_capacity", 0),
                                "enforce_exit": a.get("enforce_exit", False)},
    Record.GATE: _v1_gate,
    Record.PRODUCT: lambda st, a: _v1_product(a),
    Record.SLOTS: _v1_slots,
    Record.SLOT_CAPACITY: lambda st, a: _v1_slot(st, a),
    Record.ALLOTMENT: lambda st, a: _v1_slot(st, a, channel=a["channel"]),
}
_APPLY = {Record.VENUE: _venue, Record.ZONE: _zone, Record.GATE: _gate, Record.PRODUCT: _product,
          Record.SLOTS: _slots, Record.SLOT_CAPACITY: _slot_capacity, Record.ALLOTMENT: _allotment}


def replay(st: ShardState, kind: int, rec: dict, fmt: int) -> None:
    """Apply a catalog record (VENUE to PRICES) of format `fmt` as it was decided."""
    try:
        if fmt < 2:
            rec = _V1[kind](st, rec)
        _APPLY[kind](st, rec)
    except (KeyError, TypeError, ValueError, NotFound, InvalidArgument) as e:
        raise CorruptData(f"a {Record(kind).name} record of format {fmt} does not replay: {e!r}") from e


# -- the price calendar ------------------------------------------------------------------
MAX_CALENDAR_DAYS = 3660            # days one SetCalendar may set (ten years)
MAX_PRICES = 1000                   # rows of one product's price table


def product_arg(st: ShardState, args: dict) -> tuple[Venue, str]:
    """The venue and product id a product setting names; NotFound if it has no such
    product."""
    v = venue_of(st, args)
    pid = ident_arg(args, "product")
    if (v.id, pid) not in st.products:
        raise NotFound(f"no product {pid} in venue {v.id}", field="product")
    return v, pid


def known_product(st: ShardState, r: dict) -> tuple[str, str]:
    """(venue, product) of a product setting's record, which must name a product."""
    key = (r["venue"], r["product"])
    if key not in st.products:
        raise NotFound(f"no product {r['product']} in venue {r['venue']}", field="product")
    return key


def date_type(st: ShardState, venue: str, day: int) -> tuple[str, bool]:
    """The type of a venue-local day (days since 1970-01-01, a Thursday) and whether the
    operator's calendar says it: its entry, else weekend on Saturday and Sunday, else
    weekday."""
    t = st.calendar.get(venue, {}).get(day)
    if t is not None:
        return t, True
    return ("weekend" if (day + 3) % 7 >= 5 else "weekday"), False


def price_of(st: ShardState, p: Product, channel: str, dtype: str) -> int:
    """A product's unit price for `channel` on a day of type `dtype`: its price table's
    (channel, type), else ("", type), else the product's channel price, else its base."""
    table = st.price_idx.get((p.venue, p.id))
    if table:
        v = table.get((channel, dtype))
        if v is None:
            v = table.get(("", dtype))
        if v is not None:
            return v
    return p.price_for(channel)


def set_calendar(st: ShardState, args: dict, now: int) -> CalendarResult:
    v = venue_of(st, args)
    days = arg(args, "days", dict)
    if not 1 <= len(days) <= MAX_CALENDAR_DAYS:
        raise InvalidArgument(f"between 1 and {MAX_CALENDAR_DAYS} days", field="days")
    out = []
    for k, t in days.items():
        try:
            day = (dt.date.fromisoformat(k) - dt.date(1970, 1, 1)).days if isinstance(k, str) else None
        except ValueError:
            day = None
        if day is None or len(k) != 10:
            raise InvalidArgument("must be a date, YYYY-MM-DD", field=f"days[{str(k)[:16]!r}]")
        if t != "" and t not in DATE_TYPES:
            raise InvalidArgument(f"must be one of {', '.join(DATE_TYPES)} (or empty: no entry)",
                                  field=f"days[{k!r}]")
        out.append([day, t])
    out.sort()
    return _calendar(st, {"venue": v.id, "days": out})


def _calendar(st: ShardState, r: dict) -> CalendarResult:
    mine = st.calendar.setdefault(r["venue"], {})
    for day, t in r["days"]:
        if t:
            mine[day] = t
        else:
            mine.pop(day, None)
    st.journal(json_record(Record.CALENDAR, r), Record.CALENDAR)
    return CalendarResult(r["venue"], len(r["days"]))


def set_prices(st: ShardState, args: dict, now: int) -> PriceTable:
    v, pid = product_arg(st, args)
    rows = arg(args, "prices", list)
    if len(rows) > MAX_PRICES:
        raise InvalidArgument(f"at most {MAX_PRICES} prices", field="prices")
    out, seen = [], set()
    for i, row in enumerate(rows):
        f = f"prices[{i}]"
        if type(row) is not dict:
            raise InvalidArgument("must be an object", field=f)
        t = row.get("date_type")
        if t not in DATE_TYPES:
            raise InvalidArgument(f"must be one of {', '.join(DATE_TYPES)}", field=f"{f}.date_type")
        ch = row.get("channel", "")
        if ch != "":
            try:
                ch = ident_arg(row, "channel")
            except InvalidArgument as e:
                raise InvalidArgument(e.message, field=f"{f}.channel") from None
        try:
            price = int_arg(row, "price_fen", 0, 10**9)
        except InvalidArgument as e:
            raise InvalidArgument(e.message, field=f"{f}.price_fen") from None
        if (t, ch) in seen:
            raise InvalidArgument(f"{t} for channel {ch or '(any)'} is priced twice", field=f)
        seen.add((t, ch))
        out.append([t, ch, price])
    return _prices(st, {"venue": v.id, "product": pid, "prices": out})


def _prices(st: ShardState, r: dict) -> PriceTable:
    key = known_product(st, r)
    st.price_idx[key] = {(ch, t): price for t, ch, price in r["prices"]}
    st.journal(json_record(Record.PRICES, r), Record.PRICES)
    return price_table(st, *key)


def price_table(st: ShardState, venue: str, product: str) -> PriceTable:
    table = st.price_idx.get((venue, product), {})
    return PriceTable(venue, product, [DatePrice(t, ch, p) for (ch, t), p in
                                       sorted(table.items(), key=lambda kv: (DATE_TYPES.index(kv[0][1]), kv[0][0]))])


_RULE_FIELDS = {"early_bird": ("days_ahead", 1, 366), "time_of_day": ("from_minute", 0, 1439),
                "fill_rate": ("fill_pct", 1, 100), "member_level": ("member_level", 1, 99)}


def set_price_rules(st: ShardState, args: dict, now: int) -> PriceRules:
    v, pid = product_arg(st, args)
    rows = arg(args, "rules", list)
    out, seen = [], set()
    for i, row in enumerate(rows):
        f = f"rules[{i}]"
        if type(row) is not dict:
            raise InvalidArgument("must be an object", field=f)
        kind = row.get("kind")
        if kind not in RULE_KINDS:
            raise InvalidArgument(f"must be one of {', '.join(RULE_KINDS)}", field=f"{f}.kind")
        if kind in seen:
            raise InvalidArgument(f"a second {kind} rule", field=f"{f}.kind")
        seen.add(kind)
        cond, lo, hi = _RULE_FIELDS[kind]
        r = {"kind": kind}
        try:
            for name, a, b in (("amount_fen", -10**9, 10**9), ("pct", -100, 1000),
                               ("cap_fen", 0, 10**9), (cond, lo, hi)):
                r[name] = int_arg(row, name, a, b, *((0,) if name != cond else ()))
            for name in row:
                if name not in r:
                    raise InvalidArgument("not a field of this rule", field=name)
        except InvalidArgument as e:
            raise InvalidArgument(e.message, field=f"{f}.{e.field}") from None
        if (r["amount_fen"] != 0) == (r["pct"] != 0):
            raise InvalidArgument("give amount_fen or pct (one, not zero)", field=f"{f}.amount_fen")
        out.append(r)
    out.sort(key=lambda r: RULE_KINDS.index(r["kind"]))
    return _price_rules(st, {"venue": v.id, "product": pid, "rules": out})


def _price_rules(st: ShardState, r: dict) -> PriceRules:
    key = known_product(st, r)
    rules = [PriceRule(**x) for x in r["rules"]]
    if rules:
        st.price_rules[key] = rules
    else:
        st.price_rules.pop(key, None)
    st.journal(json_record(Record.PRICE_RULES, r), Record.PRICE_RULES)
    return PriceRules(r["venue"], r["product"], rules)


def apply_rules(rules: list[PriceRule], price: int, *, days_ahead: int, start_minute: int,
                fill_pct: Any, member_level: int = 0) -> tuple[int, list[AppliedRule]]:
    """A line's unit price after the product's rules (RULE_KINDS order) and the rules
    that changed it, each with its amount. `fill_pct` is called for a fill_rate rule
    only (the slot's counters are read then); `member_level` is the buyer's (0: none)."""
    applied = []
    for r in rules:
        if r.kind == "early_bird":
            hit = days_ahead >= r.days_ahead
        elif r.kind == "time_of_day":
            hit = start_minute >= r.from_minute
        elif r.kind == "fill_rate":
            hit = fill_pct() >= r.fill_pct
        else:
            hit = member_level >= r.member_level
        if not hit:
            continue
        change = r.amount_fen if r.amount_fen else price * r.pct // 100
        if r.cap_fen:
            change = max(-r.cap_fen, min(r.cap_fen, change))
        change = max(change, -price)
        if change:
            price += change
            applied.append(AppliedRule(r.kind, change))
    return price, applied


def set_booking(st: ShardState, args: dict, now: int) -> BookingWindow:
    v, pid = product_arg(st, args)
    opens = int_arg(args, "opens_days", 0, 3660, 0)
    closes = args.get("closes_minutes")
    if closes is not None:
        closes = int_arg(args, "closes_minutes", -7 * 1440, 366 * 1440)
    days = arg(args, "weekdays", list, [])
    if any(type(d) is not int or not 1 <= d <= 7 for d in days) or len(set(days)) != len(days):
        raise InvalidArgument("ISO days of the week, 1 (Monday) to 7 (Sunday), each once",
                              field="weekdays")
    return _booking(st, {"venue": v.id, "product": pid, "opens_days": opens,
                         "closes_minutes": closes, "weekdays": sorted(days)})


def _booking(st: ShardState, r: dict) -> BookingWindow:
    key = known_product(st, r)
    w = BookingWindow(r["venue"], r["product"], r["opens_days"], r["closes_minutes"],
                      tuple(r["weekdays"]))
    if w.opens_days or w.closes_minutes is not None or w.weekdays:
        st.booking[key] = w
    else:
        st.booking.pop(key, None)
    st.journal(json_record(Record.BOOKING, r), Record.BOOKING)
    return w


def check_booking(w: BookingWindow, slot: Slot, utc_offset_s: int, now: int, field: str) -> None:
    """BookingClosed unless `slot` may be booked now under window `w`."""
    iso = (slot.day + 3) % 7 + 1                      # 1970-01-01 was a Thursday (4)
    if w.weekdays and iso not in w.weekdays:
        raise BookingClosed(f"{w.product} is not sold for {_WEEKDAYS[iso - 1]}s", field=field)
    today = (now + utc_offset_s) // 86400
    if w.opens_days and slot.day - today > w.opens_days:
        raise BookingClosed(f"{w.product} opens for booking {w.opens_days} days before the "
                            f"visit", field=field)
    if w.closes_minutes is not None and now > slot.start - 60 * w.closes_minutes:
        when = (f"{w.closes_minutes} minutes before the slot starts" if w.closes_minutes >= 0
                else f"{-w.closes_minutes} minutes after the slot started")
        raise BookingClosed(f"booking of {w.product} for this slot closed {when}", field=field)


def set_id_limits(st: ShardState, args: dict, now: int) -> IdLimits:
    v, pid = product_arg(st, args)
    return _id_limits(st, {"venue": v.id, "product": pid,
                           "per_day": int_arg(args, "per_day", 0, MAX_QTY_PER_ID, 0),
                           "per_slot": int_arg(args, "per_slot", 0, MAX_QTY_PER_ID, 0)})


MAX_QTY_PER_ID = 10_000


def _id_limits(st: ShardState, r: dict) -> IdLimits:
    key = known_product(st, r)
    lim = IdLimits(r["venue"], r["product"], r["per_day"], r["per_slot"])
    if lim.per_day or lim.per_slot:
        st.id_limits[key] = lim
    else:
        st.id_limits.pop(key, None)
    st.journal(json_record(Record.ID_LIMITS, r), Record.ID_LIMITS)
    return lim


def set_refund_policy(st: ShardState, args: dict, now: int) -> RefundPolicy:
    v, pid = product_arg(st, args)
    rows = arg(args, "tiers", list)
    if len(rows) > 20:
        raise InvalidArgument("at most 20 tiers", field="tiers")
    out = []
    for i, row in enumerate(rows):
        if type(row) is not dict:
            raise InvalidArgument("must be an object", field=f"tiers[{i}]")
        try:
            out.append([int_arg(row, "before_minutes", -366 * 1440, 366 * 1440),
                        int_arg(row, "fee_pct", 0, 100)])
        except InvalidArgument as e:
            raise InvalidArgument(e.message, field=f"tiers[{i}].{e.field}") from None
    out.sort(key=lambda t: -t[0])
    if len({t[0] for t in out}) != len(out):
        raise InvalidArgument("two tiers at the same time", field="tiers")
    return _refund_policy(st, {"venue": v.id, "product": pid, "tiers": out})


def _refund_policy(st: ShardState, r: dict) -> RefundPolicy:
    key = known_product(st, r)
    pol = RefundPolicy(r["venue"], r["product"], [RefundTier(b, f) for b, f in r["tiers"]])
    if pol.tiers:
        st.refund_policy[key] = pol
    else:
        st.refund_policy.pop(key, None)
    st.journal(json_record(Record.REFUND_POLICY, r), Record.REFUND_POLICY)
    return pol


def refund_fee_pct(pol: RefundPolicy | None, p: Product, start: int, now: int) -> int | None:
    """The fee (percent) of refunding now a ticket whose slot starts at `start`: the
    first tier the refund is early enough for, None when it is later than every tier;
    without a policy the product's flat fee."""
    if pol is None:
        return p.refund_fee_pct
    for t in pol.tiers:
        if now <= start - 60 * t.before_minutes:
            return t.fee_pct
    return None


def set_pass_dates(st: ShardState, args: dict, now: int) -> PassDates:
    v, pid = product_arg(st, args)
    lo, hi = args.get("valid_from"), args.get("valid_to")
    if (lo is None) != (hi is None):
        raise InvalidArgument("give both dates or neither", field="valid_to" if hi is None else "valid_from")
    if lo is not None:
        lo = int_arg(args, "valid_from", 0, 2**31 - 1)
        hi = int_arg(args, "valid_to", 0, 2**31 - 1)
        if not 0 <= hi - lo < MAX_CALENDAR_DAYS:
            raise InvalidArgument(f"must be on or after valid_from, at most {MAX_CALENDAR_DAYS} "
                                  "days after it", field="valid_to")
    return _pass_dates(st, {"venue": v.id, "product": pid, "valid_from": lo, "valid_to": hi})


def _pass_dates(st: ShardState, r: dict) -> PassDates:
    key = known_product(st, r)
    if r["valid_from"] is None:
        st.pass_dates.pop(key, None)
        out = PassDates(*key)
    else:
        st.pass_dates[key] = (r["valid_from"], r["valid_to"])
        out = PassDates(*key, r["valid_from"], r["valid_to"])
    st.journal(json_record(Record.PASS_DATES, r), Record.PASS_DATES)
    return out


def set_package(st: ShardState, args: dict, now: int) -> PackageSplit:
    v, pid = product_arg(st, args)
    rows = arg(args, "parts", list)
    if len(rows) > 20:
        raise InvalidArgument("at most 20 parts", field="parts")
    out = []
    for i, row in enumerate(rows):
        if type(row) is not dict:
            raise InvalidArgument("must be an object", field=f"parts[{i}]")
        try:
            r = {"part": ident_arg(row, "part"), "merchant": ident_arg(row, "merchant"),
                 "amount_fen": int_arg(row, "amount_fen", 0, 10**9, 0), "pct": int_arg(row, "pct", 0, 100, 0)}
            for name in row:
                if name not in r:
                    raise InvalidArgument("not a field of a package part", field=name)
            if (r["amount_fen"] != 0) == (r["pct"] != 0):
                raise InvalidArgument("give amount_fen or pct (one, not zero)", field="amount_fen")
        except InvalidArgument as e:
            raise InvalidArgument(e.message, field=f"parts[{i}].{e.field}") from None
        if any(o["part"] == r["part"] for o in out):
            raise InvalidArgument(f"part {r['part']} is given twice", field=f"parts[{i}].part")
        out.append(r)
    if out and sum(r["pct"] for r in out) != 100:
        raise InvalidArgument("the parts' pct must add up to 100 (what the fixed parts leave is "
                              "split by them)", field="parts")
    return _package(st, {"venue": v.id, "product": pid, "parts": out})


def _package(st: ShardState, r: dict) -> PackageSplit:
    key = known_product(st, r)
    pkg = PackageSplit(r["venue"], r["product"], [PackagePart(**x) for x in r["parts"]])
    if pkg.parts:
        st.packages[key] = pkg
    else:
        st.packages.pop(key, None)
    st.journal(json_record(Record.PACKAGE, r), Record.PACKAGE)
    return pkg


_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_APPLY[Record.BOOKING] = _booking
_APPLY[Record.ID_LIMITS] = _id_limits
_APPLY[Record.REFUND_POLICY] = _refund_policy
_APPLY[Record.PASS_DATES] = _pass_dates
_APPLY[Record.PACKAGE] = _package
_APPLY[Record.CALENDAR] = _calendar
_APPLY[Record.PRICES] = _prices
_APPLY[Record.PRICE_RULES] = _price_rules
