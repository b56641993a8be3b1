"""Promotions: coupons. A coupon (model.Coupon) is set per venue (a COUPON catalog record);
its use lives in `ShardState.coupon_use` (codes issued, the bitmap of single-use serials
taken, uses, discount given, uses per holder), kept in the snapshot's meta.

A hold takes a coupon with its stock, after every pricing rule (`evaluate`, then `take`),
journaled in its HOLD record (journal.hold_record); the hold's amount is after the discount,
which is split over its lines (and an order line's over its tickets) so that refunds give
back what was paid, to the fen. A hold that ends unpaid (released, expired) gives the use
back, exactly once, through drop_hold; a confirmed one keeps it (a refund returns money,
not the coupon).

Single-use codes read `<coupon id>-<16 base32 characters>`: the serial and a MAC keyed by
the shard, so they are checked without a table and rendered again on demand; the public
code of a coupon that is not single-use is its id.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
from typing import TYPE_CHECKING

from pyroaring import BitMap

from ..errors import CorruptData, CouponRefused, FailedPrecondition, InvalidArgument, NotFound
from ..journal import Record, json_record
from ..model import (COUPON_KINDS, ActiveHold, Coupon, CouponApplied, CouponBatch, CouponStatus, HeldCoupon,
                     HeldLine, Venue)
from .catalog import venue_of
from .secrets import holder_key
from .validate import arg, ident_arg, int_arg, is_id_number, text_arg

if TYPE_CHECKING:
    from .core import ShardState

MAX_BATCH = 100_000              # codes one call issues
MAX_ISSUED = 10_000_000          # codes of one coupon
MAX_FEN = 10**12
_SERIAL = struct.Struct(">I")


class CouponUse:
    """How much of a coupon is used: codes issued, serials taken (a bitmap), uses taken
    by holds and orders, discount given, uses per holder key."""

    __slots__ = ("issued", "used", "uses", "spent", "holders")

    def __init__(self) -> None:
        self.issued = 0
        self.used = BitMap()
        self.uses = 0
        self.spent = 0
        self.holders: dict[str, int] = {}

    def dump(self) -> dict:
        return {"issued": self.issued, "used": base64.b64encode(self.used.serialize()).decode(),
                "uses": self.uses, "spent": self.spent, "holders": self.holders}

    @classmethod
    def load(cls, d: dict) -> "CouponUse":
        u = cls()
        u.issued, u.uses, u.spent, u.holders = d["issued"], d["uses"], d["spent"], dict(d["holders"])
        u.used = BitMap.deserialize(base64.b64decode(d["used"]))
        return u


# -- the coupon as set -------------------------------------------------------------------
def _day_arg(args: dict, name: str) -> int | None:
    return None if args.get(name) is None else int_arg(args, name, 0, 2**31 - 1)


def _ids(args: dict, name: str) -> list[str]:
    out = arg(args, name, list, [])
    if len(out) > 100:
        raise InvalidArgument("at most 100", field=name)
    for i, x in enumerate(out):
        ident_arg({f"{name}[{i}]": x}, f"{name}[{i}]")
        if x in out[:i]:
            raise InvalidArgument(f"{x} is given twice", field=f"{name}[{i}]")
    return list(out)


def set_coupon(st: ShardState, args: dict, now: int) -> Coupon:
    v = venue_of(st, args)
    cid = ident_arg(args, "id")
    if len(cid) > 40:
        raise InvalidArgument("at most 40 characters (codes are the id and 17 more)", field="id")
    kind = args.get("kind")
    if kind not in COUPON_KINDS:
        raise InvalidArgument(f"must be one of {', '.join(COUPON_KINDS)}", field="kind")
    r = {"venue": v.id, "id": cid, "kind": kind, "name": text_arg(args, "name", "", 100),
         "amount_fen": int_arg(args, "amount_fen", 0, 10**9, 0), "pct": int_arg(args, "pct", 0, 100, 0),
         "cap_fen": int_arg(args, "cap_fen", 0, 10**9, 0),
         "min_spend_fen": int_arg(args, "min_spend_fen", 0, MAX_FEN, 0),
         "valid_from": _day_arg(args, "valid_from"), "valid_to": _day_arg(args, "valid_to"),
         "products": _ids(args, "products"), "channels": _ids(args, "channels"),
         "budget_fen": int_arg(args, "budget_fen", 0, MAX_FEN, 0),
         "per_holder": int_arg(args, "per_holder", 0, 10_000, 0),
         "single_use": bool(arg(args, "single_use", bool, False)),
         "active": bool(arg(args, "active", bool, True))}
    for name in args:
        if name not in r:
            raise InvalidArgument("not a field of a coupon", field=name)
    if kind == "pct":
        if not r["pct"]:
            raise InvalidArgument("a pct coupon takes 1-100 percent off", field="pct")
        if r["amount_fen"]:
            raise InvalidArgument("a pct coupon takes pct off, not an amount", field="amount_fen")
    else:
        if not r["amount_fen"]:
            raise InvalidArgument(f"a {kind} coupon takes amount_fen off (more than 0)", field="amount_fen")
        for name in ("pct", "cap_fen"):
            if r[name]:
                raise InvalidArgument(f"only a pct coupon has {name}", field=name)
        if kind == "spend" and not r["min_spend_fen"]:
            raise InvalidArgument("a spend coupon (满减) needs the spend it takes effect at",
                                  field="min_spend_fen")
    if (r["valid_from"] is not None and r["valid_to"] is not None
            and r["valid_to"] < r["valid_from"]):
        raise InvalidArgument("must be on or after valid_from", field="valid_to")
    for i, pid in enumerate(r["products"]):
        if (v.id, pid) not in st.products:
            raise NotFound(f"no product {pid} in venue {v.id}", field=f"products[{i}]")
    old = st.coupons.get((v.id, cid))
    if old is not None and old.single_use != r["single_use"] and st.coupon_use[(v.id, cid)].issued:
        raise FailedPrecondition("codes of this coupon were issued: it stays single-use",
                                 field="single_use")
    return _coupon(st, r)


def _coupon(st: ShardState, r: dict) -> Coupon:
    key = (r["venue"], r["id"])
    if r["venue"] not in st.venues:
        raise NotFound(f"no venue {r['venue']}", field="venue")
    c = Coupon(**{**r, "products": tuple(r["products"]), "channels": tuple(r["channels"])})
    st.coupons[key] = c
    st.coupon_use.setdefault(key, CouponUse())
    st.journal(json_record(Record.COUPON, r), Record.COUPON)
    return c


def replay_coupon(st: ShardState, r: dict, fmt: int) -> None:
    try:
        _coupon(st, r)
    except (KeyError, TypeError, NotFound) as e:
        raise CorruptData(f"a COUPON record does not replay: {e!r}") from e


def coupon_arg(st: ShardState, args: dict) -> tuple[Venue, Coupon]:
    v = venue_of(st, args)
    cid = ident_arg(args, "coupon")
    c = st.coupons.get((v.id, cid))
    if c is None:
        raise NotFound(f"no coupon {cid} in venue {v.id}", field="coupon")
    return v, c


def status(st: ShardState, venue: str, cid: str) -> CouponStatus:
    c = st.coupons.get((venue, cid))
    if c is None:
        raise NotFound(f"no coupon {cid} in venue {venue}", field="coupon")
    u = st.coupon_use[(venue, cid)]
    return CouponStatus(c, u.issued, u.uses, u.spent)


# -- single-use codes ----------------------------------------------------------------------
def issue_codes(st: ShardState, args: dict, now: int) -> CouponBatch:
    v, c = coupon_arg(st, args)
    count = int_arg(args, "count", 1, MAX_BATCH)
    if not c.single_use:
        raise FailedPrecondition(f"coupon {c.id} is public: its code is its id", field="coupon",
                                 hint="set single_use to issue codes")
    u = st.coupon_use[(v.id, c.id)]
    if u.issued + count > MAX_ISSUED:
        raise FailedPrecondition(f"a coupon has at most {MAX_ISSUED} codes; {u.issued} are issued",
                                 field="count")
    r = {"venue": v.id, "coupon": c.id, "first": u.issued, "count": count}
    _codes(st, r)
    return CouponBatch(v.id, c.id, r["first"], count)


def _codes(st: ShardState, r: dict) -> None:
    u = st.coupon_use[(r["venue"], r["coupon"])]
    if r["first"] != u.issued:
        raise CorruptData(f"a COUPON_CODES record issues from {r['first']}, {u.issued} were issued")
    u.issued += r["count"]
    st.journal(json_record(Record.COUPON_CODES, r), Record.COUPON_CODES)


def replay_codes(st: ShardState, r: dict, fmt: int) -> None:
    if (r.get("venue"), r.get("coupon")) not in st.coupon_use:
        raise CorruptData(f"a COUPON_CODES record names coupon {r.get('coupon')}, which is not set")
    _codes(st, r)


def _mac(st: ShardState, venue: str, cid: str, serial: int) -> bytes:
    return hashlib.blake2b(f"{venue}\0{cid}\0{serial}".encode(), key=st.holder_secret,
                           digest_size=6, person=b"turnstile-cpn").digest()


def render_code(st: ShardState, venue: str, cid: str, serial: int) -> str:
    return f"{cid}-" + base64.b32encode(_SERIAL.pack(serial) + _mac(st, venue, cid, serial)).decode()


def codes(st: ShardState, venue: str, cid: str, first: int, count: int) -> list[str]:
    """The text of single-use codes first..first+count-1 of a coupon (issued ones only)."""
    c = st.coupons.get((venue, cid))
    if c is None:
        raise NotFound(f"no coupon {cid} in venue {venue}", field="coupon")
    issued = st.coupon_use[(venue, cid)].issued
    if not 0 <= first <= first + count <= issued or count > MAX_BATCH:
        raise InvalidArgument(f"codes 0 to {issued - 1} are issued (at most {MAX_BATCH} at a time)",
                              field="first")
    return [render_code(st, venue, cid, s) for s in range(first, first + count)]


def _parse(st: ShardState, venue: str, code: str) -> tuple[Coupon, int]:
    """The coupon a code names and its serial (-1: the public code)."""
    c = st.coupons.get((venue, code))
    if c is not None:
        if c.single_use:
            raise CouponRefused(f"coupon {code} is used through its issued codes", field="coupon")
        return c, -1
    cid, _, token = code.rpartition("-")
    c = st.coupons.get((venue, cid))
    try:
        raw = base64.b32decode(token) if c is not None and len(token) == 16 else b""
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 10 or not hmac.compare_digest(raw[4:], _mac(st, venue, cid, _SERIAL.unpack(raw[:4])[0])):
        raise CouponRefused("no such coupon code at this venue", field="coupon")
    serial = _SERIAL.unpack(raw[:4])[0]
    if serial >= st.coupon_use[(venue, cid)].issued:
        raise CouponRefused("no such coupon code at this venue", field="coupon")
    return c, serial


# -- taken by a hold -----------------------------------------------------------------------
def evaluate(st: ShardState, args: dict, channel: str, venue: Venue, lines: list[dict],
             now: int) -> HeldCoupon | None:
    """The coupon a hold (or quote) names in args["coupon"], checked against the order's
    lines: what it takes off and its split over the lines; None without one. Changes
    nothing (CouponRefused, InvalidArgument if it can't be used)."""
    code = args.get("coupon")
    if code is None or code == "":
        return None
    if type(code) is not str or not 1 <= len(code) <= 64 or not code.isprintable():
        raise InvalidArgument("must be a coupon code (1-64 characters)", field="coupon")
    c, serial = _parse(st, venue.id, code)
    u = st.coupon_use[(venue.id, c.id)]
    if not c.active:
        raise CouponRefused(f"coupon {c.id} was withdrawn", field="coupon")
    today = (now + venue.utc_offset_s) // 86400
    if c.valid_from is not None and today < c.valid_from or c.valid_to is not None and today > c.valid_to:
        raise CouponRefused(f"coupon {c.id} is not valid today", field="coupon", code="COUPON_NOT_APPLICABLE")
    if c.channels and channel not in c.channels:
        raise CouponRefused(f"channel {channel} may not take coupon {c.id}", field="coupon",
                            code="COUPON_NOT_APPLICABLE")
    totals = [ln.price * ln.qty * ln.group
              if not c.products or st.product_list[ln.p].id in c.products else 0 for ln in lines]
    subtotal = sum(totals)
    if not subtotal or subtotal < c.min_spend_fen:
        raise CouponRefused(f"coupon {c.id} needs {max(c.min_spend_fen, 1)} fen of the items it "
                            f"applies to; this order has {subtotal}", field="coupon",
                            code="COUPON_NOT_APPLICABLE")
    if c.kind == "pct":
        off = (subtotal * c.pct + 50) // 100
        if c.cap_fen:
            off = min(off, c.cap_fen)
    else:
        off = min(c.amount_fen, subtotal)
    if serial >= 0 and serial in u.used:
        raise CouponRefused("this coupon code was used", field="coupon", code="COUPON_USED")
    if c.budget_fen and u.spent + off > c.budget_fen:
        raise CouponRefused(f"coupon {c.id} has {c.budget_fen - u.spent} fen of budget left",
                            field="coupon", code="COUPON_EXHAUSTED")
    hk = ""
    who = args.get("coupon_holder")
    if who not in (None, ""):
        if not is_id_number(who):
            raise InvalidArgument("must be an ID number", field="coupon_holder")
        hk = holder_key(st, who)
    if c.per_holder:
        if not hk:
            raise InvalidArgument(f"coupon {c.id} is limited per person: give their ID number",
                                  field="coupon_holder")
        if u.holders.get(hk, 0) >= c.per_holder:
            raise CouponRefused(f"this person has used coupon {c.id} {c.per_holder} times",
                                field="coupon_holder", code="COUPON_LIMIT")
    if len(totals) == 1:
        return HeldCoupon(c.id, c.kind, serial, hk, off, (off,))
    # split over the lines in proportion to what they cost; the rest, fen by fen, from
    # the first line on (never more than a line costs)
    split = [off * t // subtotal for t in totals]
    rest = off - sum(split)
    for i, t in enumerate(totals):
        give = min(rest, t - split[i])
        split[i] += give
        rest -= give
    return HeldCoupon(c.id, c.kind, serial, hk, off, tuple(split))


def with_coupon(hold: ActiveHold, use: HeldCoupon) -> ActiveHold:
    """`hold` having taken coupon `use`: its fields kept in the hold as atoms, the split in
    its lines, the discount off its amount (no object per held coupon for the cyclic GC)."""
    return hold._replace(amount=hold.amount - use.discount,
                         lines=tuple(HeldLine(*ln[:6], d) for ln, d in zip(hold.lines, use.lines)),
                         coupon=use.coupon, coupon_kind=use.kind, coupon_serial=use.serial,
                         coupon_holder=use.holder, discount=use.discount)


def held(hold: ActiveHold) -> HeldCoupon | None:
    """The coupon a hold took (with_coupon), or None."""
    if not hold.coupon:
        return None
    return HeldCoupon(hold.coupon, hold.coupon_kind, hold.coupon_serial, hold.coupon_holder,
                      hold.discount, tuple(ln.discount for ln in hold.lines))


def applied(use: HeldCoupon | None) -> CouponApplied | None:
    return None if use is None else CouponApplied(use.coupon, use.kind, use.discount)


def take(st: ShardState, venue: str, use: HeldCoupon) -> None:
    u = st.coupon_use[(venue, use.coupon)]
    if use.serial >= 0:
        if use.serial in u.used:
            raise CorruptData(f"coupon {use.coupon} code {use.serial} is taken twice")
        u.used.add(use.serial)
    u.uses += 1
    u.spent += use.discount
    if use.holder:
        u.holders[use.holder] = u.holders.get(use.holder, 0) + 1


def give_back(st: ShardState, venue: str, use: HeldCoupon) -> None:
    """A hold that ends unpaid gives its coupon's use back (drop_hold)."""
    u = st.coupon_use[(venue, use.coupon)]
    if use.serial >= 0:
        u.used.discard(use.serial)
    u.uses -= 1
    u.spent -= use.discount
    if use.holder:
        n = u.holders.get(use.holder, 0) - 1
        if n > 0:
            u.holders[use.holder] = n
        else:
            u.holders.pop(use.holder, None)


def dump(st: ShardState) -> dict:
    return {f"{v}\0{c}": u.dump() for (v, c), u in st.coupon_use.items()}


def load(st: ShardState, d: dict) -> None:
    for key, u in d.items():
        v, _, c = key.partition("\0")
        st.coupon_use[(v, c)] = CouponUse.load(u)


def line_share(discount: int, qty: int, k: int) -> int:
    """What of a line's coupon discount its k-th ticket carries (the first ones a fen
    more), so that the shares of a line sum to its discount."""
    return discount // qty + (k < discount % qty)
