"""The catalog: venues, zones, gates, products, slots, slot capacities and allotments,
and the names they are found by.

Zone, gate, product and slot ids are unique within their venue (DESIGN.md 4.1): objects
are keyed (venue, id); the index maps also hold the bare id while it names one object on
the shard (data dirs from before, single-venue callers). Catalog records are kept in
the snapshot and replayed on open.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import _core
from ..errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, SoldOut
from ..journal import Record, json_record
from ..model import (AllotmentCounters, EntryRule, Gate, GateMode, Product, Slot, SlotCounters, Venue,
                     Zone)
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
    st.venue_idx[vid] = len(st.venue_idx)
    st.venue_list.append(vid)
    st.venues[vid] = v
    st.journal(json_record(Record.VENUE, args), Record.VENUE)
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
    idx = len(st.zones)
    index_name(st, "zone", st.zone_idx, (v.id, zid), idx)
    st.zones[(v.id, zid)] = z
    st.tickets.set_zone(idx, st.venue_idx[v.id], v.utc_offset_s, z.live_capacity, z.enforce_exit)
    st.journal(json_record(Record.ZONE, args), Record.ZONE)
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
    g = Gate(gid, z.venue, z.id, mode)
    idx = len(st.gates)
    index_name(st, "gate", st.gate_idx, (z.venue, gid), idx)
    st.gates[(z.venue, gid)] = g
    st.gate_list.append(g)
    st.gate_mode.append(int(mode))
    st.tickets.set_gate(idx, st.zone_idx[(z.venue, z.id)], st.venue_idx[z.venue])
    st.journal(json_record(Record.GATE, args), Record.GATE)
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
    idx = len(st.products)
    index_name(st, "product", st.product_idx, (v.id, pid), idx)
    st.products[(v.id, pid)] = p
    st.product_list.append(p)
    st.tickets.set_product(idx, st.venue_idx[v.id], [st.zone_idx[(v.id, z)] for z in zones],
                           rule.max_entries, rule.daily_entries, rule.reentry, rule.slot_grace_s)
    st.journal(json_record(Record.PRODUCT, args), Record.PRODUCT)
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
    for s in new:
        idx = st.slots.add(st.zone_idx[(s.venue, s.zone)], s.day, s.start, s.end, s.capacity)
        index_name(st, "slot", st.slot_idx, (s.venue, s.id), idx)
        st.slot_list.append(s.id)
        st.slot_defs[(s.venue, s.id)] = s
    st.journal(json_record(Record.SLOTS, args), Record.SLOTS)
    return new


def slot_of(st: ShardState, args: dict, name: str = "slot") -> int:
    return st.slot_idx[find(st, "slot", st.slot_idx, venue_arg(st, args), args.get(name), name)]


def set_slot_capacity(st: ShardState, args: dict, now: int) -> SlotCounters:
    idx = slot_of(st, args)
    cap = int_arg(args, "capacity", 0, 10**9)
    if not st.slots.set_capacity(idx, cap):
        raise FailedPrecondition("capacity below stock already sold, held or allotted",
                                 field="capacity")
    st.journal(json_record(Record.SLOT_CAPACITY, args), Record.SLOT_CAPACITY)
    return SlotCounters(**st.slots.slot(idx))


def set_allotment(st: ShardState, args: dict, now: int) -> AllotmentCounters:
    idx = slot_of(st, args)
    channel = ident_arg(args, "channel")
    cap = int_arg(args, "capacity", 0, 10**9)
    a = st.allot_idx.get((idx, channel))
    if a is None:
        a = st.slots.add_allotment(idx, cap)
        if a < 0:
            raise SoldOut("the slot's free pool is smaller than the allotment", field="capacity")
        st.allot_idx[(idx, channel)] = a
    elif not st.slots.set_allotment(a, cap):
        raise FailedPrecondition("allotment below its sold and held stock, or the pool is short",
                                 field="capacity")
    st.journal(json_record(Record.ALLOTMENT, args), Record.ALLOTMENT)
    return AllotmentCounters(**st.slots.allotment(a))
