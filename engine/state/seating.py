"""Theatre seats (剧场选座): a venue's seat maps, sessions (a slot bound to a seat map),
the seats a hold took and the seat each ticket has.

A seat map is rows of a hall, each a `layout` string read left to right: a letter is a
seat of that price zone (A-Z, as the map's `zones` name them, best first), `x` a seat
never sold (a wheelchair space, a technical position), `_` an aisle (no seat; seats on
either side of it are not adjacent). Seats are numbered from 1 along their row, `x`
included; a seat is named `<section>-<row>-<number>`. Each zone has its price per person,
which a hold line of that zone is priced by (the pricing rules and a coupon apply to it
as to any price).

A session is a slot whose stock is its seats: binding it to a map (cmd.seating) sets
its capacity to the seats that are sold. Its seats live in the core (`_core.Seats`):
free, held, sold or never sold. A hold of a session's product names its seats (all or
nothing: SEAT_TAKEN if any is not free) or asks the best available for its quantity
(`_core.Seats.best`: adjacent seats in one row of the best price zone that has them,
leaving the fewest single seats, front-most, nearest the middle). The seats are held
with the hold's stock, sold when it is paid (each ticket has its seat), freed when the
hold ends unpaid or the ticket is refunded. A seated ticket is not changed (改签): it
is refunded and another seat bought.

Journal: SEAT_MAP and SEATING records as validated; a SEATS record after a HOLD record
names the seats that hold took (replay takes them again); release, expiry, confirm and
refund follow from the hold's or ticket's seats, decided by nothing else.
"""
from __future__ import annotations

import base64
import json
import re
from typing import TYPE_CHECKING, Any

from .. import _core
from ..errors import CorruptData, FailedPrecondition, InvalidArgument, NotFound, SeatTaken, SoldOut
from ..journal import Record, json_record
from ..model import SeatMap, SeatZone, SessionSeat, Violation
from .catalog import find, venue_of
from .validate import arg, ident_arg, int_arg, text_arg

if TYPE_CHECKING:
    from .core import ShardState

LAYOUT = re.compile(r"[A-Zx_]{1,200}\Z")
MAX_SEATS = 20_000
_SHIFT = 20                     # a ticket's seat: slot index << _SHIFT | seat index


class Session:
    """A slot's seats: the map they follow and their states in the core."""

    __slots__ = ("map", "seats", "labels", "by_name")

    def __init__(self, seat_map: SeatMap) -> None:
        self.map = seat_map
        rows, self.labels = layout(seat_map)
        self.by_name = {name: i for i, name in enumerate(self.labels)}
        self.seats = _core.Seats(rows, len(seat_map.zones))


def layout(m: SeatMap) -> tuple[list[list[tuple[int, int, bool]]], list[str]]:
    """Per row its seats as (column, zone index, never sold), and every seat's name."""
    zones = {z.zone: i for i, z in enumerate(m.zones)}
    rows, labels = [], []
    for section, row, text in m.rows:
        seats, n = [], 0
        for col, ch in enumerate(text):
            if ch == "_":
                continue
            n += 1
            seats.append((col, 0 if ch == "x" else zones[ch], ch == "x"))
            labels.append(f"{section}-{row}-{n}")
        rows.append(seats)
    return rows, labels


# -- seat maps ---------------------------------------------------------------------------
def set_seat_map(st: ShardState, args: dict, now: int) -> SeatMap:
    v = venue_of(st, args)
    for name in args:
        if name not in ("venue", "id", "name", "rows", "zones"):
            raise InvalidArgument("not a field of a seat map", field=name)
    mid = ident_arg(args, "id")
    zones = []
    for i, z in enumerate(arg(args, "zones", list)):
        f = f"zones[{i}]"
        if not isinstance(z, dict) or set(z) - {"zone", "price_fen", "name"}:
            raise InvalidArgument("a zone is {zone, price_fen, name}", field=f)
        code = arg(z, "zone", str, "")
        if not re.fullmatch(r"[A-Z]", code):
            raise InvalidArgument("a zone is one capital letter A-Z", field=f"{f}.zone")
        if any(code == x.zone for x in zones):
            raise InvalidArgument(f"zone {code} is given twice", field=f"{f}.zone")
        try:
            zones.append(SeatZone(code, int_arg(z, "price_fen", 0, 10**9), text_arg(z, "name", "", 40)))
        except InvalidArgument as e:
            raise InvalidArgument(e.message, field=f"{f}.{e.field}") from None
    if not zones:
        raise InvalidArgument("a seat map has one price zone at least", field="zones")
    rows, seen, n = [], set(), 0
    spec = arg(args, "rows", list)
    if not 1 <= len(spec) <= 1000:
        raise InvalidArgument("1 to 1000 rows", field="rows")
    for i, r in enumerate(spec):
        f = f"rows[{i}]"
        if not isinstance(r, dict) or set(r) - {"section", "row", "layout"}:
            raise InvalidArgument("a row is {section, row, layout}", field=f)
        try:
            section, row = ident_arg(r, "section"), ident_arg(r, "row")
            text = arg(r, "layout", str)
        except InvalidArgument as e:
            raise InvalidArgument(e.message, field=f"{f}.{e.field}") from None
        if not LAYOUT.match(text):
            raise InvalidArgument("a layout is 1-200 characters: zone letters, x (never sold), _ (aisle)",
                                  field=f"{f}.layout")
        for ch in set(text) - {"x", "_"}:
            if not any(z.zone == ch for z in zones):
                raise InvalidArgument(f"zone {ch} is not one of the map's zones", field=f"{f}.layout")
        if (section, row) in seen:
            raise InvalidArgument(f"row {row} of {section} is given twice", field=f"{f}.row")
        seen.add((section, row))
        n += len(text) - text.count("_")
        rows.append((section, row, text))
    if n > MAX_SEATS:
        raise InvalidArgument(f"{n} seats: at most {MAX_SEATS}", field="rows")
    if (v.id, mid) in st.seat_maps and any(s.map.venue == v.id and s.map.id == mid
                                          for s in st.sessions.values()):
        raise FailedPrecondition(f"seat map {mid} has sessions: a new one is set up under another id",
                                 field="id")
    m = SeatMap(v.id, mid, text_arg(args, "name", "", 100), tuple(rows), tuple(zones))
    _seat_map(st, m)
    return m


def _seat_map(st: ShardState, m: SeatMap) -> None:
    st.seat_maps[(m.venue, m.id)] = m
    st.journal(json_record(Record.SEAT_MAP, m.to_dict()), Record.SEAT_MAP)


def replay_seat_map(st: ShardState, d: dict, fmt: int) -> None:
    if d["venue"] not in st.venues:
        raise CorruptData(f"a seat map of venue {d['venue']}, which is not on the shard")
    _seat_map(st, SeatMap.from_dict(d))


def set_seating(st: ShardState, args: dict, now: int) -> SessionSeat:
    """Bind a slot to a seat map: it becomes a session whose stock is the map's seats."""
    v = venue_of(st, args)
    for name in args:
        if name not in ("venue", "slot", "seat_map"):
            raise InvalidArgument("not a field of a session", field=name)
    key = find(st, "slot", st.slot_idx, v.id, args.get("slot"), "slot")
    idx = st.slot_idx[key]
    mid = ident_arg(args, "seat_map")
    m = st.seat_maps.get((v.id, mid))
    if m is None:
        raise NotFound(f"no seat map {mid} in venue {v.id}", field="seat_map")
    if idx in st.sessions:
        raise FailedPrecondition(f"slot {key[1]} is a session already", field="slot")
    c = st.slots.slot(idx)
    if c["sold"] or c["held"] or c["reserved"]:
        raise FailedPrecondition(f"slot {key[1]} has stock sold, held or allotted: seats are set "
                                 "before the first sale", field="slot")
    return _seating(st, {"venue": v.id, "slot": key[1], "seat_map": mid}, idx)


def _seating(st: ShardState, r: dict, idx: int | None = None) -> SessionSeat:
    if idx is None:
        idx = st.slot_idx[(r["venue"], r["slot"])]
    sess = Session(st.seat_maps[(r["venue"], r["seat_map"])])
    if not st.slots.set_capacity(idx, sess.seats.free_seats):
        raise CorruptData(f"session {r['slot']} does not fit its slot's stock")
    st.sessions[idx] = sess
    st.journal(json_record(Record.SEATING, r), Record.SEATING)
    return SessionSeat(r["venue"], r["slot"], r["seat_map"], sess.seats.free_seats)


def replay_seating(st: ShardState, r: dict, fmt: int) -> None:
    _seating(st, r)


# -- what a hold line takes ---------------------------------------------------------------
def pick(st: ShardState, sess: Session, item: dict, qty: Any, group: int,
         field: str) -> list[tuple[int, list[int]]]:
    """The seats an item of a hold (or quote) of a session takes, per price zone:
    [(zone index, seat indices)]. Named seats (`seats`) must be free (SEAT_TAKEN) and
    sellable; without, the best available for `qty` (SOLD_OUT when none)."""
    if group != 1:
        raise InvalidArgument("a seat admits one person", field=f"{field}.group")
    names = item.get("seats") if type(item) is dict else None
    seats = sess.seats
    if names is not None:
        if type(names) is not list or not 1 <= len(names) <= 100:
            raise InvalidArgument("1 to 100 seat names", field=f"{field}.seats")
        if qty not in (None, len(names)):
            raise InvalidArgument(f"{len(names)} seats named for {qty} tickets", field=f"{field}.qty")
        out = []
        for k, name in enumerate(names):
            s = sess.by_name.get(name, -1) if type(name) is str else -1
            if s < 0:
                raise NotFound(f"no seat {str(name)[:40]!r} in seat map {sess.map.id}",
                               field=f"{field}.seats[{k}]")
            if s in out:
                raise InvalidArgument(f"seat {name} is named twice", field=f"{field}.seats[{k}]")
            if seats.state(s) != 0:
                raise SeatTaken(f"seat {name} is {_core.SEAT_STATES[seats.state(s)]}",
                                field=f"{field}.seats[{k}]")
            out.append(s)
    else:
        best = seats.best(qty or 1)
        if best is None:
            raise SoldOut(f"session has {seats.free_seats} seats left, {qty} asked", field=f"{field}.qty")
        out = best
    by_zone: dict[int, list[int]] = {}
    for s in out:
        by_zone.setdefault(seats.zone_of(s), []).append(s)
    return sorted(by_zone.items())


def zone_price(sess: Session, zone: int) -> int:
    return sess.map.zones[zone].price_fen


def take(st: ShardState, seats: list[tuple[int, list[int]]]) -> None:
    """Hold the seats of a hold's lines ([(slot index, seats)]), all or nothing."""
    done = []
    for slot, xs in seats:
        if not st.sessions[slot].seats.take(xs):
            for s, ys in done:
                st.sessions[s].seats.release(ys)
            raise SeatTaken("a seat was taken meanwhile", field="items")
        done.append((slot, xs))


def held(st: ShardState, hold_id: int, lines: list[tuple[int, int, list[int]]]) -> None:
    """A hold's seats, kept beside it (and journaled: a SEATS record after its HOLD record)."""
    rec = {"hold": hold_id, "lines": [list(x) for x in lines]}
    st.hold_seats[hold_id] = json.dumps(rec["lines"]).encode()
    st.journal(json_record(Record.SEATS, rec), Record.SEATS)


def replay_seats(st: ShardState, rec: dict, fmt: int) -> None:
    for _, slot, xs in rec["lines"]:
        sess = st.sessions.get(slot)
        if sess is None or not sess.seats.take(xs):
            raise CorruptData(f"hold {rec['hold']} takes seats of slot {slot} that are not free")
    held(st, rec["hold"], rec["lines"])


def hold_lines_seats(st: ShardState, hold_id: int) -> dict[int, tuple[int, list[int]]]:
    """Line index -> (slot index, seats) of a hold's seated lines."""
    raw = st.hold_seats.get(hold_id)
    return {} if raw is None else {i: (slot, xs) for i, slot, xs in json.loads(raw)}


def drop(st: ShardState, hold_id: int) -> None:
    """A hold ends unpaid: its seats free again."""
    for slot, xs in hold_lines_seats(st, hold_id).values():
        st.sessions[slot].seats.release(xs)
    st.hold_seats.pop(hold_id, None)


def sold(st: ShardState, hold_id: int, line: int, first: int, ncomp: int) -> None:
    """A paid hold's line: its seats sold, each ticket given its seat (the line's k-th
    ticket the k-th seat)."""
    got = hold_lines_seats(st, hold_id).get(line)
    if got is None:
        return
    slot, xs = got
    st.sessions[slot].seats.sell(xs)
    for k, s in enumerate(xs):
        st.ticket_seats[first + k * ncomp] = slot << _SHIFT | s


def paid(st: ShardState, hold_id: int) -> None:
    st.hold_seats.pop(hold_id, None)


def _unpack(packed: int) -> tuple[int, int]:
    """(slot index, seat index) of a ticket's seat as ticket_seats keeps it."""
    return packed >> _SHIFT, packed & ((1 << _SHIFT) - 1)


def freed(st: ShardState, ticket: int) -> None:
    """A refunded ticket's seat free again."""
    packed = st.ticket_seats.pop(ticket, None)
    if packed is not None:
        slot, seat = _unpack(packed)
        st.sessions[slot].seats.unsell([seat])


def seat_of(st: ShardState, ticket: int) -> str:
    """The seat a ticket has, by name ("" if none)."""
    packed = st.ticket_seats.get(ticket)
    if packed is None:
        return ""
    slot, seat = _unpack(packed)
    return st.sessions[slot].labels[seat]


def check(st: ShardState) -> list[Violation]:
    """A session's held and sold seats are its slot's held and sold stock, each held seat
    an active hold's and each sold seat a live ticket's (Shard.check)."""
    out = []
    held: dict[int, int] = {}
    for hid in st.hold_seats:
        for slot, xs in hold_lines_seats(st, hid).values():
            held[slot] = held.get(slot, 0) + len(xs)
    sold: dict[int, int] = {}
    for t, packed in st.ticket_seats.items():
        if st.tickets.code_state(t) & _core.STATE_VOIDED:
            out.append(Violation("a seat is a live ticket's", f"ticket {t} is voided"))
        slot = _unpack(packed)[0]
        sold[slot] = sold.get(slot, 0) + 1
    for idx, sess in st.sessions.items():
        free, held_n, sold_n, _ = sess.seats.counts()
        c = st.slots.slot(idx)
        if (held_n, sold_n) != (c["held"], c["sold"]) or (held_n, sold_n) != (held.get(idx, 0), sold.get(idx, 0)) \
                or free != sess.seats.free_seats or free + held_n + sold_n != c["capacity"]:
            out.append(Violation("seats = the session's stock",
                                 f"slot {st.slot_list[idx]}: seats free/held/sold {free}/{held_n}/{sold_n}, "
                                 f"slot {c}, holds {held.get(idx, 0)}, tickets {sold.get(idx, 0)}"))
    return out


def session_seats(st: ShardState, venue: str, slot: str) -> tuple[SeatMap, list[tuple[str, str, str]]]:
    """A session's seats: (name, price zone, state) of each, in map order."""
    key = find(st, "slot", st.slot_idx, venue, slot, "slot")
    sess = st.sessions.get(st.slot_idx[key])
    if sess is None:
        raise NotFound(f"slot {slot} has no seats", field="slot")
    states = sess.seats.states()
    zones = [z.zone for z in sess.map.zones]
    out = []
    for i, name in enumerate(sess.labels):
        zone = sess.seats.zone_of(i)
        out.append((name, "" if states[i] == 3 else zones[zone], _core.SEAT_STATES[states[i]]))
    return sess.map, out


# -- snapshot ------------------------------------------------------------------------------
def dump(st: ShardState) -> dict:
    return {"maps": [m.to_dict() for m in st.seat_maps.values()],
            "sessions": [[idx, s.map.venue, s.map.id, base64.b64encode(s.seats.states()).decode()]
                         for idx, s in sorted(st.sessions.items())],
            "holds": [[hid, json.loads(raw)] for hid, raw in sorted(st.hold_seats.items())],
            "tickets": sorted(st.ticket_seats.items())}


def load(st: ShardState, d: dict) -> None:
    st.seat_maps = {}
    for x in d.get("maps", ()):
        m = SeatMap.from_dict(x)
        st.seat_maps[(m.venue, m.id)] = m
    st.sessions = {}
    for idx, venue, mid, states in d.get("sessions", ()):
        sess = Session(st.seat_maps[(venue, mid)])
        sess.seats.load(base64.b64decode(states))
        st.sessions[idx] = sess
    st.hold_seats = {hid: json.dumps(lines).encode() for hid, lines in d.get("holds", ())}
    st.ticket_seats = {t: packed for t, packed in d.get("tickets", ())}
