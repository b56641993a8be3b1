"""Finance (DESIGN.md 4.7): what money did, counted as it happens, so that a day's, a
month's or a year's report adds up counters, never scans orders.

- The ledger: per venue and venue-local day of the sale (refund, change), per channel,
  station, product and payment method, the counters of FIELDS. A confirm, a refund and a
  change each post their rows in the writer step that makes them; the posting rides in
  their journal record as `fin` (what was decided) and replay posts it again as it is.
- Revenue split (分账): a product's shares (SetRevenueSplit: zones, merchants, partners,
  a percent or a fixed amount per person, taken in order) and a package's parts (each
  to its merchant) are applied to every money movement -- the amount a sale paid, the
  amount a refund gives back (negated), a change's new price less the old tickets' paid
  net of the fee -- and counted per day, partner and product. What no share takes is the
  venue's own: a settlement's partners and the venue add up to the net to the fen.
- Shifts: a cash desk's shift opened at a station by a principal (SHIFT records), its
  sales and refunds per payment method counted from the `fin` of the records naming it.
- Tickets by visit day: per (product, first and last valid day) the bitmap of codes
  issued, for sold / used / unused / refunded / expired counts by bitmap cardinalities.
- Indexes for export: per venue and day the orders confirmed (`ox/`), refunds (`rx/`)
  and changes (`cx/`) as rows written with the order, listed by cursor.
- Statements: a payment provider's statement of a day, stored as its lines (`stmt/`),
  and reconciliation against the day's payments and refunds by reference.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import struct
from collections import defaultdict
from typing import TYPE_CHECKING, Iterable

import numpy as np
from pyroaring import BitMap

from ..errors import AlreadyExists, CorruptData, FailedPrecondition, InvalidArgument, NotFound
from ..journal import Record, json_record
from ..model import RECORD_DTYPE, ActiveHold, day_to_date
from . import merchants
from .catalog import product_arg, venue_of
from .validate import ID, arg, ident_arg, int_arg, text_arg

if TYPE_CHECKING:
    from .core import ShardState

# the ledger's counters, per (venue, day, channel, station, product, method)
FIELDS = ("sold_tickets", "sold_persons", "gross_fen", "discount_fen", "paid_fen",
          "refunded_tickets", "refunded_persons", "refunded_fen", "fee_fen",
          "changed_tickets", "change_in_fen", "change_out_fen")
PAID, REFUNDED, CHANGE_IN, CHANGE_OUT = (FIELDS.index(f) for f in (
    "paid_fen", "refunded_fen", "change_in_fen", "change_out_fen"))
DIMS = ("channel", "station", "product", "method")
SPLIT_KINDS = ("zone", "merchant", "partner")
STATUSES = ("paid", "partly_refunded", "refunded", "changed")
MAX_SHARES = 20
MAX_STATEMENT_LINES = 200_000


def net(v: list[int]) -> int:
    """Net revenue of a counter row: paid - refunded + paid on changes - returned on them."""
    return v[PAID] - v[REFUNDED] + v[CHANGE_IN] - v[CHANGE_OUT]


def local_day(st: ShardState, venue: str, now: int) -> int:
    return (now + st.venues[venue].utc_offset_s) // 86400


# -- revenue split rules -------------------------------------------------------------------
def set_split(st: ShardState, args: dict, now: int) -> dict:
    """A product's revenue shares, validated: each names a partner and its kind, a percent
    or a fixed amount per person, and (for a package, only then) the part it shares."""
    v, pid = product_arg(st, args)
    rows = arg(args, "shares", list)
    if len(rows) > MAX_SHARES:
        raise InvalidArgument(f"at most {MAX_SHARES} shares", field="shares")
    pkg = st.packages.get((v.id, pid))
    parts = {p.part for p in pkg.parts} if pkg else set()
    out = []
    for i, row in enumerate(rows):
        if type(row) is not dict:
            raise InvalidArgument("must be an object", field=f"shares[{i}]")
        try:
            r = {"partner": ident_arg(row, "partner"), "kind": arg(row, "kind", str),
                 "part": text_arg(row, "part", "", 64), "pct": int_arg(row, "pct", 0, 100, 0),
                 "per_person_fen": int_arg(row, "per_person_fen", 0, 10**9, 0)}
            for name in row:
                if name not in r:
                    raise InvalidArgument("not a field of a share", field=name)
            if r["kind"] not in SPLIT_KINDS:
                raise InvalidArgument(f"must be one of {', '.join(SPLIT_KINDS)}", field="kind")
            if (r["pct"] != 0) == (r["per_person_fen"] != 0):
                raise InvalidArgument("give pct or per_person_fen (one, not zero)", field="pct")
            if pkg is not None and r["part"] not in parts:
                raise InvalidArgument(f"{pid} is a package: name one of its parts "
                                      f"({', '.join(sorted(parts))})", field="part")
            if pkg is None and r["part"]:
                raise InvalidArgument(f"{pid} is no package: a share of it names no part",
                                      field="part")
            if r["partner"] == v.id:
                raise InvalidArgument("the venue's own share is what the shares leave",
                                      field="partner")
        except InvalidArgument as e:
            raise InvalidArgument(e.message, field=f"shares[{i}].{e.field}") from None
        out.append(r)
    r = {"venue": v.id, "product": pid, "shares": out}
    apply_split(st, r)
    return r


def apply_split(st: ShardState, r: dict) -> None:
    key = (r["venue"], r["product"])
    if key not in st.products:
        raise CorruptData(f"a SPLIT record names product {r['product']}, which is not set")
    if r["shares"]:
        st.split_rules[key] = r["shares"]
    else:
        st.split_rules.pop(key, None)
    st.journal(json_record(Record.SPLIT, r), Record.SPLIT)


def replay_split(st: ShardState, r: dict, fmt: int) -> None:
    """A SPLIT record (format 4): a product's shares as validated."""
    apply_split(st, r)


def shares_of(st: ShardState, venue: str, product: str, amount: int, persons: int) -> list[list]:
    """Who gets what of `amount` fen paid (> 0) or given back (< 0) for `persons` persons of
    `product`: [partner, kind, fen] (a package's parts to their merchants, less the shares
    of each part; the shares in order, each a percent of what the ones before it leave, or
    a fixed amount per person, never more than that). What is not listed is the venue's
    own."""
    if amount == 0 and persons == 0:
        return []
    sign = -1 if amount < 0 else 1
    amount = abs(amount)
    pkg = st.packages.get((venue, product))
    rules = st.split_rules.get((venue, product), ())
    parts = pkg.split(amount, persons) if pkg else [["", venue, amount]]
    out: list[list] = []
    for part, merchant, fen in parts:
        left = fen
        for s in rules:
            if s["part"] != part:
                continue
            take = left * s["pct"] // 100 if s["pct"] else min(left, s["per_person_fen"] * persons)
            left -= take
            out.append([s["partner"], s["kind"], sign * take])
        if merchant != venue and left:
            out.append([merchant, "merchant", sign * left])
    return out


# -- postings ------------------------------------------------------------------------------
def posting(st: ShardState, venue: str, now: int) -> dict:
    """An empty posting of `venue` at `now`: rows keyed (channel, station, product,
    method), split rows keyed (partner, kind, product) as [persons, fen], and the shift
    totals it adds to ([shift, method, sales, sales fen, refunds, refunds fen])."""
    return {"venue": venue, "day": local_day(st, venue, now), "rows": {}, "split": {}, "shift": None}


def add(p: dict, key: tuple, **counts: int) -> None:
    row = p["rows"].get(key)
    if row is None:
        row = p["rows"][key] = [0] * len(FIELDS)
    for name, n in counts.items():
        row[FIELDS.index(name)] += n


def add_split(st: ShardState, p: dict, product: str, amount: int, persons: int) -> None:
    for partner, kind, fen in shares_of(st, p["venue"], product, amount, persons):
        cell = p["split"].setdefault((partner, kind, product), [0, 0])
        cell[0] += persons if amount >= 0 else -persons
        cell[1] += fen


def as_record(p: dict) -> dict:
    """A posting as a record's `fin` part (lists, for JSON); book() applies it."""
    fin = {"venue": p["venue"], "day": p["day"],
           "rows": [[*k, v] for k, v in p["rows"].items()],
           "split": [[*k, *v] for k, v in p["split"].items()]}
    if p["shift"] is not None:
        fin["shift"] = p["shift"]
    return fin


def book(st: ShardState, fin: dict) -> None:
    """Add a `fin` part (a confirm's, refund's or change's, live or replayed) up to the
    ledger, the split and the shift."""
    venue, day = fin["venue"], fin["day"]
    days = st.ledger.setdefault(venue, {}).setdefault(day, {})
    for channel, station, product, method, v in fin["rows"]:
        row = days.get((channel, station, product, method))
        if row is None:
            days[(channel, station, product, method)] = list(v)
        else:
            for i, n in enumerate(v):
                row[i] += n
    if fin["split"]:
        sdays = st.split_ledger.setdefault(venue, {}).setdefault(day, {})
        for partner, kind, product, persons, fen in fin["split"]:
            cell = sdays.setdefault((partner, kind, product), [0, 0])
            cell[0] += persons
            cell[1] += fen
    if "shift" in fin:
        shift_id, method, sales, sales_fen, refunds, refunds_fen = fin["shift"]
        sh = st.shifts.get((venue, shift_id))
        if sh is None:
            raise CorruptData(f"a posting names shift {shift_id} of {venue}, which was never opened")
        m = sh["methods"].setdefault(method, [0, 0, 0, 0])
        m[0] += sales
        m[1] += sales_fen
        m[2] += refunds
        m[3] += refunds_fen


def sale_posting(st: ShardState, hold: ActiveHold, method: str, station: str, coupon_lines: list[int] | None,
                 now: int) -> dict:
    """What a confirm posts: per line its tickets, persons, price before the coupon, the
    coupon's share and what was paid; the split of what was paid."""
    p = posting(st, hold.venue, now)
    for i, ln in enumerate(hold.lines):
        product = st.product_list[ln.p].id
        persons = ln.qty * ln.group
        gross = ln.price * persons
        disc = coupon_lines[i] if coupon_lines else 0
        add(p, (hold.channel, station, product, method), sold_tickets=ln.qty,
            sold_persons=persons, gross_fen=gross, discount_fen=disc, paid_fen=gross - disc)
        add_split(st, p, product, gross - disc, persons)
    return p


def shift_move(p: dict, shift: str, method: str, sale: bool, fen: int) -> None:
    """A sale taking `fen` (or a refund giving it back) counted in `shift`, if any."""
    if shift:
        p["shift"] = [shift, method, int(sale), fen if sale else 0, int(not sale), 0 if sale else fen]


# -- shifts --------------------------------------------------------------------------------
def shift_for_sale(st: ShardState, args: dict, venue: str) -> tuple[str, str]:
    """(shift id, station) of a confirm, refund or change naming `shift`: the shift must be
    open, of the venue, and opened by the principal asking (`principal`)."""
    shift = args.get("shift")
    if shift is None or shift == "":
        return "", ""
    if type(shift) is not str or not ID.match(shift):
        raise InvalidArgument("must be 1-64 letters, digits or ._:@/-", field="shift")
    sh = st.shifts.get((venue, shift))
    if sh is None or sh["principal"] != args.get("principal", ""):
        # another's shift is no business of the caller's: not even whether it exists
        raise NotFound(f"no shift {shift} of this caller in venue {venue}", field="shift")
    if sh["closed"]:
        raise FailedPrecondition(f"shift {shift} is closed", field="shift",
                                 hint="open a new shift")
    return shift, sh["station"]


def open_shift(st: ShardState, args: dict, now: int) -> dict:
    v = venue_of(st, args)
    shift = ident_arg(args, "shift")
    station = ident_arg(args, "station")
    cashier = text_arg(args, "cashier", "", 64)
    float_fen = int_arg(args, "float_fen", 0, 10**10, 0)
    principal = text_arg(args, "principal", "", 128)
    merchants.check_station(st, v.id, station, text_arg(args, "channel", "", 64))
    if (v.id, shift) in st.shifts:
        raise AlreadyExists(f"shift {shift} exists", field="shift")
    busy = st.open_shifts.get((v.id, station))
    if busy is not None:
        raise FailedPrecondition(f"station {station} has shift {busy} open", field="station",
                                 hint="close it first")
    r = {"op": "open", "venue": v.id, "shift": shift, "station": station, "cashier": cashier,
         "float_fen": float_fen, "principal": principal, "at": now}
    apply_shift(st, r)
    return shift_view(st, v.id, shift)


def close_shift(st: ShardState, args: dict, now: int) -> dict:
    v = venue_of(st, args)
    shift = ident_arg(args, "shift")
    counted = int_arg(args, "counted_cash_fen", 0, 10**10)
    sh = st.shifts.get((v.id, shift))
    if sh is None or sh["principal"] != args.get("principal", ""):
        raise NotFound(f"no shift {shift} of this caller in venue {v.id}", field="shift")
    if sh["closed"]:
        raise FailedPrecondition(f"shift {shift} is closed already", field="shift")
    apply_shift(st, {"op": "close", "venue": v.id, "shift": shift, "counted_cash_fen": counted,
                     "at": now})
    return shift_view(st, v.id, shift)


def apply_shift(st: ShardState, r: dict) -> None:
    key = (r["venue"], r["shift"])
    if r["op"] == "open":
        st.shifts[key] = {"station": r["station"], "cashier": r["cashier"], "principal": r["principal"],
                          "float_fen": r["float_fen"], "opened": r["at"], "closed": 0, "counted": 0,
                          "methods": {}}
        st.open_shifts[(r["venue"], r["station"])] = r["shift"]
    else:
        sh = st.shifts.get(key)
        if sh is None or sh["closed"]:
            raise CorruptData(f"a SHIFT record closes shift {r['shift']}, which is not open")
        sh["closed"] = r["at"]
        sh["counted"] = r["counted_cash_fen"]
        st.open_shifts.pop((r["venue"], sh["station"]), None)
    st.journal(json_record(Record.SHIFT, r), Record.SHIFT)


def replay_shift(st: ShardState, r: dict, fmt: int) -> None:
    """A SHIFT record (format 4): a shift opened or closed."""
    apply_shift(st, r)


def shift_view(st: ShardState, venue: str, shift: str) -> dict:
    """A shift with its totals: per method, cash expected, over/short, net."""
    sh = st.shifts.get((venue, shift))
    if sh is None:
        raise NotFound(f"no shift {shift} in venue {venue}", field="shift")
    cash = sh["methods"].get("cash", [0, 0, 0, 0])
    expected = sh["float_fen"] + cash[1] - cash[3]
    return {"venue": venue, "shift": shift, "station": sh["station"], "cashier": sh["cashier"],
            "principal": sh["principal"], "opened": sh["opened"], "closed": sh["closed"],
            "float_fen": sh["float_fen"],
            "methods": [[m, *v] for m, v in sorted(sh["methods"].items())],
            "cash_expected_fen": expected, "counted_cash_fen": sh["counted"],
            "over_short_fen": sh["counted"] - expected if sh["closed"] else 0,
            "net_fen": sum(v[1] - v[3] for v in sh["methods"].values()), "open": not sh["closed"]}


# -- tickets by visit day --------------------------------------------------------------------
def issued(st: ShardState, product: int, days: tuple[int, int] | list[int], first: int, qty: int,
           ncomp: int) -> None:
    """Codes issued: `qty` codes of `product` from id `first`, `ncomp` ids apart."""
    bm = st.by_day.get((product, days[0], days[1]))
    if bm is None:
        bm = st.by_day[(product, days[0], days[1])] = BitMap()
    if ncomp == 1:
        bm.add_range(first, first + qty)
    else:
        bm.update(range(first, first + qty * ncomp, ncomp))


def rebuild_issued(st: ShardState) -> None:
    """The codes by (product, first, last day), from the ticket records (after a snapshot):
    one sort of a packed key, not a look-up per code."""
    st.by_day = {}
    recs = np.frombuffer(st.tickets.records(), dtype=RECORD_DTYPE)
    ids = np.flatnonzero(recs["comp"] == 0).astype(np.uint32)
    if not len(ids):
        return
    codes = recs[ids]
    # days since 1970 fit in 20 bits for 2,800 years; products in 16
    keys = ((codes["product"].astype(np.int64) << 40) | (codes["first_day"].astype(np.int64) << 20)
            | codes["last_day"].astype(np.int64))
    order = np.argsort(keys, kind="stable")
    keys, ids = keys[order], ids[order]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    ends = np.r_[starts[1:], len(keys)]
    for a, b in zip(starts.tolist(), ends.tolist()):
        k = int(keys[a])
        st.by_day[(k >> 40, (k >> 20) & 0xFFFFF, k & 0xFFFFF)] = BitMap(ids[a:b])


def ticket_status(st: ShardState, venue: str, day_from: int, day_to: int, today: int) -> list[dict]:
    """Per visit day and product of `venue`: codes sold, used, unused, refunded, expired."""
    t = st.tickets
    out = {}
    for (p, first, last), bm in st.by_day.items():
        prod = st.product_list[p]
        if prod.venue != venue or not day_from <= first <= day_to:
            continue
        ncomp = len(prod.zones)
        used = bm & t.used
        for c in range(1, ncomp):
            used |= (bm.shift(c) & t.used).shift(-c)
        voided = bm & t.voided
        rest = len(bm) - len(used | voided)
        row = out.setdefault((first, p), {"day": first, "product": prod.id, "sold": 0, "used": 0,
                                          "unused": 0, "refunded": 0, "expired": 0})
        row["sold"] += len(bm)
        row["used"] += len(used - voided)
        row["refunded"] += len(voided)
        row["expired" if last < today else "unused"] += rest
    return [out[k] for k in sorted(out)]


# -- reports from the ledger -----------------------------------------------------------------
def _period(day: int, period: str) -> str:
    d = day_to_date(day)
    return d.isoformat() if period == "day" else f"{d:%Y-%m}" if period == "month" else f"{d:%Y}"


def revenue(st: ShardState, venue: str, day_from: int, day_to: int, period: str,
            group_by: Iterable[str]) -> tuple[list[tuple[str, dict, list[int]]], list[int]]:
    """Ledger rows of `venue` from `day_from` to `day_to` added up per period and the
    dimensions of `group_by`: [(period, {dim: value}, counters)] in order, and the total."""
    dims = [DIMS.index(d) for d in group_by]
    out: dict[tuple, list[int]] = {}
    total = [0] * len(FIELDS)
    for day, rows in st.ledger.get(venue, {}).items():
        if not day_from <= day <= day_to:
            continue
        per = _period(day, period)
        for key, v in rows.items():
            k = (per, *(key[i] for i in dims))
            acc = out.get(k)
            if acc is None:
                out[k] = list(v)
            else:
                for i, n in enumerate(v):
                    acc[i] += n
            for i, n in enumerate(v):
                total[i] += n
    names = [DIMS[i] for i in dims]
    return [(k[0], dict(zip(names, k[1:])), out[k]) for k in sorted(out)], total


def settlement(st: ShardState, venue: str, day_from: int, day_to: int,
               partner: str = "") -> tuple[list[dict], int, int]:
    """Per partner (or the one named) what the split gives it over the days: lines per
    product (persons, fen); the net revenue of the days; the venue's own share."""
    acc: dict[tuple[str, str], dict[str, list[int]]] = defaultdict(dict)
    for day, cells in st.split_ledger.get(venue, {}).items():
        if not day_from <= day <= day_to:
            continue
        for (who, kind, product), (persons, fen) in cells.items():
            line = acc[(who, kind)].setdefault(product, [0, 0])
            line[0] += persons
            line[1] += fen
    _, total = revenue(st, venue, day_from, day_to, "day", ())
    net_fen = net(total)
    everyone = sum(fen for lines in acc.values() for _, fen in lines.values())
    partners = [{"partner": who, "kind": kind,
                 "lines": [{"product": p, "persons": n, "amount_fen": fen}
                           for p, (n, fen) in sorted(lines.items())],
                 "amount_fen": sum(fen for _, fen in lines.values())}
                for (who, kind), lines in sorted(acc.items()) if not partner or who == partner]
    return partners, net_fen, net_fen - everyone


# -- snapshots -------------------------------------------------------------------------------
def dump(st: ShardState) -> dict:
    return {"ledger": {v: {str(d): [[*k, r] for k, r in rows.items()] for d, rows in days.items()}
                       for v, days in st.ledger.items()},
            "split": {v: {str(d): [[*k, *c] for k, c in cells.items()] for d, cells in days.items()}
                      for v, days in st.split_ledger.items()},
            "shifts": [[v, s, sh] for (v, s), sh in st.shifts.items()]}


def load(st: ShardState, d: dict) -> None:
    st.ledger = {v: {int(day): {tuple(r[:4]): list(r[4]) for r in rows} for day, rows in days.items()}
                 for v, days in d.get("ledger", {}).items()}
    st.split_ledger = {v: {int(day): {tuple(c[:3]): [c[3], c[4]] for c in cells}
                           for day, cells in days.items()}
                       for v, days in d.get("split", {}).items()}
    st.shifts = {(v, s): sh for v, s, sh in d.get("shifts", ())}
    st.open_shifts = {(v, sh["station"]): s for (v, s), sh in st.shifts.items() if not sh["closed"]}


_GROUP = struct.Struct("<HiiI")      # product, first day, last day, length of the bitmap


def dump_by_day(st: ShardState) -> bytes:
    """The codes by (product, first, last day) as one snapshot blob: per group its key and
    its roaring bitmap serialized (runs of consecutive ids: a few bytes a sale)."""
    out = []
    for (p, f, l), bm in sorted(st.by_day.items()):
        b = bm.serialize()
        out += [_GROUP.pack(p, f, l, len(b)), b]
    return b"".join(out)


def load_by_day(st: ShardState, blob: bytes | None) -> None:
    """Restore dump_by_day's blob; without one (a snapshot older than it), rebuild the
    groups from the ticket records."""
    if blob is None:
        rebuild_issued(st)
        return
    st.by_day = {}
    off, view = 0, memoryview(blob)
    while off < len(blob):
        p, f, l, n = _GROUP.unpack_from(view, off)
        off += _GROUP.size
        st.by_day[(p, f, l)] = BitMap.deserialize(bytes(view[off:off + n]))
        off += n


# -- indexes for export ----------------------------------------------------------------------
def _ix(kind: bytes, venue: str, day: int, tail: str) -> bytes:
    return kind + venue.encode() + b"\0%06d\0" % day + tail.encode()


def index_order(st: ShardState, venue: str, day: int, hold_id: int, key: bytes) -> None:
    st.put_row(_ix(b"ox/", venue, day, "%012d" % hold_id), key)


def index_event(st: ShardState, kind: bytes, venue: str, day: int, key: bytes, event_id: str) -> None:
    """A refund (`rx/`) or change (`cx/`) of the order at `key`, in the order made."""
    b = st.batch
    st.put_row(_ix(kind, venue, day, "%012d%06d" % (b.seq, len(b.rows))),
               json.dumps([key.decode(), event_id]).encode())


def cursor_start(kind: bytes, venue: str, day_from: int, after: str) -> bytes:
    """Where a listing starts: the first key of `day_from`, or just after `after`."""
    if not after:
        return _ix(kind, venue, day_from, "")
    try:
        key = base64.urlsafe_b64decode(after + "=" * (-len(after) % 4))
    except (binascii.Error, ValueError):
        raise InvalidArgument("not a cursor (a page's `next`)", field="after") from None
    if not key.startswith(kind + venue.encode() + b"\0"):
        raise InvalidArgument("not a cursor of this listing", field="after")
    return key + b"\0"


def cursor(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).decode().rstrip("=")


def key_day(key: bytes) -> int:
    return int(key.split(b"\0")[1])


# -- statements and reconciliation -----------------------------------------------------------
def statement_key(venue: str, method: str, day: int) -> bytes:
    return b"stmt/" + venue.encode() + b"\0" + method.encode() + b"\0%06d" % day


def import_statement(st: ShardState, args: dict, now: int) -> dict:
    """Store a provider's statement of a day (its lines, validated); the same lines again
    change nothing."""
    v = venue_of(st, args)
    method = ident_arg(args, "method")
    day = int_arg(args, "day", 0, 10**6)
    rows = arg(args, "lines", list)
    if len(rows) > MAX_STATEMENT_LINES:
        raise InvalidArgument(f"at most {MAX_STATEMENT_LINES} lines", field="lines")
    lines = []
    for i, row in enumerate(rows):
        if type(row) is not dict:
            raise InvalidArgument("must be an object", field=f"lines[{i}]")
        try:
            kind = arg(row, "kind", str)
            if kind not in ("payment", "refund"):
                raise InvalidArgument("must be PAYMENT or REFUND", field="kind")
            ln = {"kind": kind, "trade_no": text_arg(row, "trade_no", "", 64),
                  "order_id": text_arg(row, "order_id", "", 64),
                  "refund_id": text_arg(row, "refund_id", "", 64),
                  "at": int_arg(row, "at", 0, 2**40, 0),
                  "amount_fen": int_arg(row, "amount_fen", 1, 10**12),
                  "fee_fen": int_arg(row, "fee_fen", -10**12, 10**12, 0)}
            for name in row:
                if name not in ln:
                    raise InvalidArgument("not a field of a statement line", field=name)
            if not ln["trade_no"] and not ln["order_id"]:
                raise InvalidArgument("a line names its trade number or order id", field="trade_no")
            if kind == "refund" and not ln["refund_id"]:
                raise InvalidArgument("a refund line names the merchant refund id", field="refund_id")
        except InvalidArgument as e:
            raise InvalidArgument(e.message, field=f"lines[{i}].{e.field}") from None
        lines.append(ln)
    body = json.dumps(lines, sort_keys=True, separators=(",", ":")).encode()
    digest = hashlib.sha256(body).hexdigest()[:32]
    key = statement_key(v.id, method, day)
    old = st.get_row(key)
    changed = old is None or json.loads(old)["digest"] != digest
    if changed:
        st.put_row(key, json.dumps({"digest": digest, "imported": now, "lines": lines}).encode())
    return {"lines": len(lines), "changed": changed, "digest": digest}


def reconcile(statement: dict, payments: list[dict], refunds: list[dict]) -> dict:
    """Match a statement's lines to Turnstile's payments ({reference, order_id, amount})
    and refunds ({order_id, refund_id, amount}) of the same method and day, by reference
    (a payment by the provider's trade number, else by the order id where Turnstile has no
    reference for it; a refund by order and refund id), to the fen. Every line and every
    payment is matched at most once."""
    out = {"digest": statement["digest"], "matched_payments": 0, "matched_paid_fen": 0,
           "matched_refunds": 0, "matched_refunded_fen": 0, "statement_paid_fen": 0,
           "statement_refunded_fen": 0, "statement_fee_fen": 0,
           "turnstile_paid_fen": sum(p["amount"] for p in payments),
           "turnstile_refunded_fen": sum(r["amount"] for r in refunds), "mismatches": []}
    by_ref = {p["reference"]: p for p in payments if p["reference"]}
    # by order id only a payment Turnstile recorded no reference for: one with another
    # reference is another payment, whatever order it names
    by_order = {p["order_id"]: p for p in payments if not p["reference"]}
    refs = {(r["order_id"], r["refund_id"]): r for r in refunds}
    seen_p: set[int] = set()
    seen_r: set[int] = set()
    miss = out["mismatches"]
    for ln in statement["lines"]:
        out["statement_fee_fen"] += ln["fee_fen"]
        if ln["kind"] == "payment":
            out["statement_paid_fen"] += ln["amount_fen"]
            p = by_ref.get(ln["trade_no"]) or by_order.get(ln["order_id"])
            if p is None or id(p) in seen_p:
                miss.append({"kind": "PAID_NOT_IN_TURNSTILE", "reference": ln["trade_no"],
                             "order_id": ln["order_id"], "refund_id": "",
                             "statement_fen": ln["amount_fen"], "turnstile_fen": 0})
                continue
            seen_p.add(id(p))
            if p["amount"] != ln["amount_fen"]:
                miss.append({"kind": "AMOUNT_DIFFERS", "reference": ln["trade_no"] or p["reference"],
                             "order_id": p["order_id"], "refund_id": "",
                             "statement_fen": ln["amount_fen"], "turnstile_fen": p["amount"]})
            else:
                out["matched_payments"] += 1
                out["matched_paid_fen"] += p["amount"]
        else:
            out["statement_refunded_fen"] += ln["amount_fen"]
            r = refs.get((ln["order_id"], ln["refund_id"]))
            if r is None or id(r) in seen_r:
                miss.append({"kind": "REFUND_MISSING_IN_TURNSTILE", "reference": ln["trade_no"],
                             "order_id": ln["order_id"], "refund_id": ln["refund_id"],
                             "statement_fen": ln["amount_fen"], "turnstile_fen": 0})
                continue
            seen_r.add(id(r))
            if r["amount"] != ln["amount_fen"]:
                miss.append({"kind": "AMOUNT_DIFFERS", "reference": ln["trade_no"],
                             "order_id": r["order_id"], "refund_id": r["refund_id"],
                             "statement_fen": ln["amount_fen"], "turnstile_fen": r["amount"]})
            else:
                out["matched_refunds"] += 1
                out["matched_refunded_fen"] += r["amount"]
    for p in payments:
        if id(p) not in seen_p:
            miss.append({"kind": "IN_TURNSTILE_NOT_PAID", "reference": p["reference"],
                         "order_id": p["order_id"], "refund_id": "", "statement_fen": 0,
                         "turnstile_fen": p["amount"]})
    for r in refunds:
        if id(r) not in seen_r:
            miss.append({"kind": "REFUND_MISSING_AT_PROVIDER", "reference": r.get("reference", ""),
                         "order_id": r["order_id"], "refund_id": r["refund_id"], "statement_fen": 0,
                         "turnstile_fen": r["amount"]})
    return out
