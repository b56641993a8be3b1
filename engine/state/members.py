"""Members and points (会员, 积分, 等级): a venue's members, its programme, and each
member's points ledger.

A member is a real person of one venue, found by the keyed hash of their ID number (the
holder key sales and gates use) or of their phone number; both are kept sealed under the
shard's data key, like the ID numbers of orders, and shown masked. The shard numbers its
members (M1, M2, ...).

Points move only by ledger entries, each journaled with the command that made it (a
MEMBER, POINTS, CONFIRM or REFUND record carries the member's effects, `pts`, as decided)
and kept as a row per entry (`mled/<venue>\\0<member>/<seq>`), so replay never decides
again. An entry says its kind, the points it moved (signed), which expiry buckets it
moved them in and between, and what it refers to:

  earn      at Confirm: per ticket, what was paid for it times the programme's rate for
            its product and channel (points per yuan), rounded down; the per-ticket
            points stay on the order row, so a refund takes back exactly theirs
  reverse   at Refund: the points the refunded tickets (or persons of a group ticket)
            earned
  adjust    an operator's grant (+) or correction (-), with a reason
  redeem    at Hold (or Buy): points spent as money off the order, after the coupon
            (`points` x the programme's `fen_per_point`), split over its tickets in
            proportion to what each costs, never more than a ticket costs; enough
            points make a ticket free (a ticket bought with points alone)
  restore   redeemed points given back: all of them when the hold ends unpaid
            (released, expired), a ticket's when it is refunded or changed
  expire    a bucket past its last valid day, written when the member is next touched
            (its balance as shown leaves it out from the day after already)

Points earned on a day fall in the bucket of their last valid day (the programme's
expiry rule); taking points (redeem, reverse, a negative adjust) empties the
soonest-expiring buckets first, and restored points go back to the buckets they were
redeemed from (the last taken first). A balance never goes negative: a reversal that finds fewer points than it
takes back (they were spent) takes what there is and records the rest as the member's
`debt`, which the next points earned pay off first. So for every member the ledger's
points add up to the balance (the sum of the buckets, none below zero).

Levels are by spend: what the member paid (less refunds) within the last `period_days`
venue-local days, against the programme's thresholds; they are worked out when asked,
never stored, so they fall as well as rise with time.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import re
import struct
from typing import TYPE_CHECKING, Any

from ..errors import AlreadyExists, CorruptData, FailedPrecondition, InsufficientPoints, InvalidArgument, NotFound
from ..journal import Record, json_record
from ..model import (EXPIRY_KINDS, NEVER_EXPIRES, POINT_KINDS, EarnRule, MemberInfo, MemberLevel, MemberProgram,
                     PointsEntry, PointsResult, day_to_date, vars_)
from .catalog import venue_of
from .secrets import holder_key, mask_id, seal, unseal
from .validate import arg, ident_arg, int_arg, is_id_number, text_arg

if TYPE_CHECKING:
    from .core import ShardState

NEVER = NEVER_EXPIRES          # the bucket of points that never expire
KEEP_SPEND_DAYS = 3660         # spend per day kept (the longest period a programme may have)
MAX_POINTS = 10**12
PHONE = re.compile(r"\+?[0-9]{6,20}\Z")
_SEQ = struct.Struct(">Q")
MEMBER_ID = re.compile(r"M[1-9][0-9]{0,9}\Z")


class Member:
    """A member's state in memory (kept in the snapshot's meta)."""

    __slots__ = ("venue", "id", "holder_key", "phone_key", "id_sealed", "phone_sealed",
                 "enrolled_at", "debt", "buckets", "spend", "seq")

    def __init__(self, venue: str, mid: str, holder_key: str, phone_key: str, id_sealed: str,
                 phone_sealed: str, enrolled_at: int) -> None:
        self.venue, self.id = venue, mid
        self.holder_key, self.phone_key = holder_key, phone_key
        self.id_sealed, self.phone_sealed = id_sealed, phone_sealed
        self.enrolled_at = enrolled_at
        self.debt = 0
        self.buckets: dict[int, int] = {}      # last valid day -> points
        self.spend: dict[int, int] = {}        # venue-local day -> fen paid, net of refunds
        self.seq = 0                           # ledger entries written

    @property
    def balance(self) -> int:
        """The points held: the buckets' (expired ones not written yet included)."""
        return sum(self.buckets.values())

    def dump(self) -> dict:
        return {"venue": self.venue, "id": self.id, "holder_key": self.holder_key,
                "phone_key": self.phone_key, "id_sealed": self.id_sealed,
                "phone_sealed": self.phone_sealed, "enrolled_at": self.enrolled_at,
                "debt": self.debt,
                "buckets": sorted(self.buckets.items()), "spend": sorted(self.spend.items()),
                "seq": self.seq}

    @classmethod
    def load(cls, d: dict) -> "Member":
        m = cls(d["venue"], d["id"], d["holder_key"], d["phone_key"], d["id_sealed"],
                d["phone_sealed"], d["enrolled_at"])
        m.debt, m.seq = d["debt"], d["seq"]
        m.buckets = {int(k): v for k, v in d["buckets"]}
        m.spend = {int(k): v for k, v in d["spend"]}
        return m


# -- the programme ---------------------------------------------------------------------
def set_program(st: ShardState, args: dict, now: int) -> MemberProgram:
    v = venue_of(st, args)
    for name in args:
        if name not in ("venue", "levels", "period_days", "earn", "expiry", "expiry_n",
                        "fen_per_point"):
            raise InvalidArgument("not a field of a member programme", field=name)
    levels = []
    for i, x in enumerate(arg(args, "levels", list, [])):
        f = f"levels[{i}]"
        if not isinstance(x, dict) or set(x) - {"level", "name", "min_spend_fen"}:
            raise InvalidArgument("a level is {level, name, min_spend_fen}", field=f)
        try:
            lv = MemberLevel(int_arg(x, "level", 1, 99), text_arg(x, "name", "", 40),
                             int_arg(x, "min_spend_fen", 0, MAX_POINTS))
        except InvalidArgument as e:
            raise InvalidArgument(e.message, field=f"{f}.{e.field}") from None
        if levels and lv.level <= levels[-1].level:
            raise InvalidArgument("levels go up one after another", field=f"{f}.level")
        if levels and lv.min_spend_fen <= levels[-1].min_spend_fen:
            raise InvalidArgument("a higher level needs a higher spend", field=f"{f}.min_spend_fen")
        levels.append(lv)
    if len(levels) > 20:
        raise InvalidArgument("at most 20 levels", field="levels")
    earn, seen = [], set()
    rules = arg(args, "earn", list, [])
    if len(rules) > 500:
        raise InvalidArgument("at most 500 rules", field="earn")
    for i, x in enumerate(rules):
        f = f"earn[{i}]"
        if not isinstance(x, dict) or set(x) - {"product", "channel", "points_per_yuan"}:
            raise InvalidArgument("a rule is {product, channel, points_per_yuan}", field=f)
        try:
            product = ident_arg(x, "product") if x.get("product", "") != "" else ""
            channel = ident_arg(x, "channel") if x.get("channel", "") != "" else ""
            r = EarnRule(product, channel, int_arg(x, "points_per_yuan", 0, 10_000))
        except InvalidArgument as e:
            raise InvalidArgument(e.message, field=f"{f}.{e.field}") from None
        if product and (v.id, product) not in st.products:
            raise NotFound(f"no product {product} in venue {v.id}", field=f"{f}.product")
        if (product, channel) in seen:
            raise InvalidArgument("the same product and channel twice", field=f)
        seen.add((product, channel))
        earn.append(r)
    expiry = arg(args, "expiry", str, "year_end")
    if expiry not in EXPIRY_KINDS:
        raise InvalidArgument(f"must be one of {', '.join(EXPIRY_KINDS)}", field="expiry")
    if expiry == "year_end":
        n = int_arg(args, "expiry_n", 0, 10, 1)
    elif expiry == "days":
        n = int_arg(args, "expiry_n", 1, KEEP_SPEND_DAYS, 365)
    else:
        n = int_arg(args, "expiry_n", 0, 0, 0)
    p = MemberProgram(v.id, tuple(levels), int_arg(args, "period_days", 1, KEEP_SPEND_DAYS, 365),
                      tuple(earn), expiry, n, int_arg(args, "fen_per_point", 1, 10_000, 1))
    _program(st, p)
    return p


def _program(st: ShardState, p: MemberProgram) -> None:
    st.member_programs[p.venue] = p
    st.journal(json_record(Record.MEMBER_PROGRAM, p.to_dict()), Record.MEMBER_PROGRAM)


def replay_program(st: ShardState, args: dict, fmt: int) -> None:
    if args["venue"] not in st.venues:
        raise CorruptData(f"a member programme of venue {args['venue']}, which is not on the shard")
    _program(st, MemberProgram.from_dict(args))


def program_of(st: ShardState, venue: str, field: str = "venue") -> MemberProgram:
    p = st.member_programs.get(venue)
    if p is None:
        raise FailedPrecondition(f"venue {venue} has no member programme", field=field,
                                 hint="an operator sets one up first (SetMemberProgram)")
    return p


def rate(p: MemberProgram, product: str, channel: str) -> int:
    """Points per yuan for a product sold through a channel: the most specific rule."""
    best, score = 0, -1
    for r in p.earn:
        if r.product in ("", product) and r.channel in ("", channel):
            s = (r.product != "") * 2 + (r.channel != "")
            if s > score:
                best, score = r.points_per_yuan, s
    return best


def expires(p: MemberProgram, day: int) -> int:
    """The last valid day of points earned on `day`."""
    if p.expiry == "never":
        return NEVER
    if p.expiry == "days":
        return day + p.expiry_n
    year = day_to_date(day).year + p.expiry_n
    return (_dt.date(min(year, 9999), 12, 31) - _dt.date(1970, 1, 1)).days


# -- members ---------------------------------------------------------------------------
def phone_key(st: ShardState, phone: str) -> str:
    return hashlib.blake2b(phone.encode(), key=st.holder_secret, digest_size=16,
                           person=b"turnstile-phone").hexdigest()


def mask_phone(phone: str) -> str:
    return phone[:3] + "*" * max(len(phone) - 7, 0) + phone[-4:]


def _phone_arg(args: dict) -> str:
    phone = arg(args, "phone", str, "")
    if phone and not PHONE.match(phone):
        raise InvalidArgument("must be 6-20 digits, a leading + allowed", field="phone")
    return phone


def _id_arg(args: dict) -> str:
    idn = arg(args, "id_number", str, "")
    if idn and not is_id_number(idn):
        raise InvalidArgument("must be 6-32 letters or digits", field="id_number")
    return idn.upper()


def enrol(st: ShardState, args: dict, now: int) -> MemberInfo:
    v = venue_of(st, args)
    for name in args:
        if name not in ("venue", "id_number", "phone"):
            raise InvalidArgument("not a field of an enrolment", field=name)
    program_of(st, v.id)
    idn, phone = _id_arg(args), _phone_arg(args)
    if not idn and not phone:
        raise InvalidArgument("a member is enrolled by ID number, phone number or both",
                              field="id_number")
    hk = holder_key(st, idn) if idn else ""
    pk = phone_key(st, phone) if phone else ""
    for key, field in ((hk, "id_number"), (pk, "phone")):
        if key and (v.id, key) in st.member_index:
            raise AlreadyExists(f"a member of venue {v.id} has this {field.replace('_', ' ')}: "
                                f"{st.member_index[(v.id, key)]}", field=field)
    rec = {"venue": v.id, "id": f"M{st.next_member}", "holder_key": hk, "phone_key": pk,
           "id_sealed": seal(st, idn) if idn else "", "phone_sealed": seal(st, phone) if phone else "",
           "at": now}
    m = _enrol(st, rec)
    return info(st, m, now)


def _enrol(st: ShardState, rec: dict) -> Member:
    m = Member(rec["venue"], rec["id"], rec["holder_key"], rec["phone_key"], rec["id_sealed"],
               rec["phone_sealed"], rec["at"])
    if not MEMBER_ID.match(m.id) or (m.venue, m.id) in st.members:
        raise CorruptData(f"member {m.id} of venue {m.venue} is enrolled twice or misnamed")
    st.members[(m.venue, m.id)] = m
    st.next_member = max(st.next_member, int(m.id[1:]) + 1)
    for key in (m.holder_key, m.phone_key):
        if key:
            st.member_index[(m.venue, key)] = m.id
    st.journal(json_record(Record.MEMBER, rec), Record.MEMBER)
    return m


def replay_enrol(st: ShardState, rec: dict, fmt: int) -> None:
    if rec["venue"] not in st.venues:
        raise CorruptData(f"a member of venue {rec['venue']}, which is not on the shard")
    _enrol(st, rec)


def member_arg(st: ShardState, venue: str, args: dict, name: str = "member") -> Member:
    mid = arg(args, name, str)
    m = st.members.get((venue, mid))
    if m is None:
        if not MEMBER_ID.match(mid):
            raise InvalidArgument("must be a member id (M and a number)", field=name)
        raise NotFound(f"no member {mid} in venue {venue}", field=name)
    return m


def find(st: ShardState, venue: str, member_id: str = "", id_number: str = "",
         phone: str = "") -> Member:
    """A member of a venue by member id, ID number or phone number (exactly one given)."""
    given = [x for x in (member_id, id_number, phone) if x]
    if len(given) != 1:
        raise InvalidArgument("name the member by exactly one of member_id, id_number and phone",
                              field="member_id")
    if member_id:
        return member_arg(st, venue, {"member_id": member_id}, "member_id")
    if id_number:
        key = holder_key(st, _id_arg({"id_number": id_number}))
        field = "id_number"
    else:
        key = phone_key(st, _phone_arg({"phone": phone}))
        field = "phone"
    mid = st.member_index.get((venue, key))
    if mid is None:
        raise NotFound(f"no member of venue {venue} has this {field.replace('_', ' ')}", field=field)
    return st.members[(venue, mid)]


def today(st: ShardState, venue: str, now: int) -> int:
    return (now + st.venues[venue].utc_offset_s) // 86400


def spend(p: MemberProgram | None, m: Member, day: int) -> int:
    period = p.period_days if p is not None else 365
    return sum(f for d, f in m.spend.items() if day - period < d <= day)


def level_of(st: ShardState, m: Member, now: int) -> tuple[int, str, int]:
    """(level, its name, the spend that decides it) of a member at `now`."""
    p = st.member_programs.get(m.venue)
    s = spend(p, m, today(st, m.venue, now))
    level, name = 0, ""
    for lv in (p.levels if p is not None else ()):
        if s >= lv.min_spend_fen:
            level, name = lv.level, lv.name
    return level, name, s


def info(st: ShardState, m: Member, now: int) -> MemberInfo:
    level, name, s = level_of(st, m, now)
    day = today(st, m.venue, now)
    live = sorted((d, n) for d, n in m.buckets.items() if d >= day)
    return MemberInfo(m.venue, m.id, mask_id(unseal(st, m.id_sealed)) if m.id_sealed else "",
                      mask_phone(unseal(st, m.phone_sealed)) if m.phone_sealed else "",
                      m.enrolled_at, level, name, s, sum(n for _, n in live), m.debt, tuple(live))


# -- the ledger ------------------------------------------------------------------------
def ledger_prefix(venue: str, member: str) -> bytes:
    return b"mled/" + venue.encode() + b"\0" + member.encode() + b"/"


def _entry(kind: str, points: int, buckets: list[list[int]], debt: int = 0, ref: str = "",
           reason: str = "") -> list:
    return [kind, points, buckets, debt, ref, reason]


class Plan:
    """The effects of one command on one member, worked out before anything changes:
    the expiries due first, then the entries the command makes; `apply` makes them."""

    def __init__(self, st: ShardState, m: Member, now: int) -> None:
        self.m = m
        self.now = now
        self.day = today(st, m.venue, now)
        self.buckets = {d: n for d, n in m.buckets.items() if d >= self.day}
        self.debt = m.debt
        self.entries = [_entry("expire", -n, [[d, -n]]) for d, n in sorted(m.buckets.items())
                        if d < self.day]
        self.spend: list[list[int]] = []
        self.taken: list[list[int]] = []       # [bucket, points] take() took, in order

    @property
    def balance(self) -> int:
        return sum(self.buckets.values())

    def credit(self, kind: str, points: int, day: int, ref: str = "", reason: str = "") -> None:
        """Points in, to the bucket of last valid day `day`: a debt is paid off first."""
        paid = min(self.debt, points)
        self.debt -= paid
        rest = points - paid
        if rest:
            self.buckets[day] = self.buckets.get(day, 0) + rest
        if points:
            self.entries.append(_entry(kind, rest, [[day, rest]] if rest else [], -paid, ref, reason))

    def credit_to(self, kind: str, buckets: list[list[int]], ref: str = "") -> None:
        """Points in, back to the buckets they came from (`buckets`: [last valid day,
        points]); a debt is paid off first, out of the first of them."""
        moved, paid = [], 0
        for d, n in buckets:
            x = min(self.debt - paid, n)
            paid += x
            if n - x:
                moved.append([d, n - x])
                self.buckets[d] = self.buckets.get(d, 0) + n - x
        if buckets:
            self.entries.append(_entry(kind, sum(n for _, n in moved), moved, -paid, ref))
        self.debt -= paid

    def take(self, kind: str, points: int, ref: str = "", reason: str = "",
             owe: bool = False) -> int:
        """Points out of the soonest-expiring buckets; what the balance can't cover is
        owed (`owe`) or refused. Returns the points taken."""
        have = self.balance
        if points > have and not owe:
            raise InsufficientPoints(f"member {self.m.id} has {have} points, {points} asked",
                                     field="points")
        took = min(points, have)
        moved, left = [], took
        for d in sorted(self.buckets):
            if not left:
                break
            x = min(left, self.buckets[d])
            moved.append([d, -x])
            self.taken.append([d, x])
            left -= x
            if x == self.buckets[d]:
                del self.buckets[d]
            else:
                self.buckets[d] -= x
        self.debt += points - took
        if points:
            self.entries.append(_entry(kind, -took, moved, points - took, ref, reason))
        return took

    def record(self) -> dict:
        return {"venue": self.m.venue, "member": self.m.id, "at": self.now,
                "entries": self.entries, "spend": self.spend}


def apply(st: ShardState, eff: dict) -> list[PointsEntry]:
    """Make a member's effects (a Plan's record, or the one a journal record carries):
    balance, buckets, debt and spend, and (live) a ledger row per entry."""
    m = st.members.get((eff["venue"], eff["member"]))
    if m is None:
        raise CorruptData(f"points of member {eff['member']} of venue {eff['venue']}, who is not enrolled")
    out = []
    totals = st.points_totals.setdefault(m.venue, dict.fromkeys(POINT_KINDS, 0))
    prefix = ledger_prefix(m.venue, m.id)
    for kind, points, moved, debt, ref, reason in eff["entries"]:
        if sum(d for _, d in moved) != points or kind not in totals:
            raise CorruptData(f"a points entry of member {m.id} does not add up")
        for day, d in moved:
            n = m.buckets.get(day, 0) + d
            if n < 0:
                raise CorruptData(f"a points entry of member {m.id} takes from an empty bucket")
            if n:
                m.buckets[day] = n
            else:
                m.buckets.pop(day, None)
        m.debt += debt
        if m.debt < 0:
            raise CorruptData(f"points entries of member {m.id} leave a negative debt")
        m.seq += 1
        totals[kind] += points
        e = PointsEntry(m.seq, eff["at"], kind, points, m.balance, m.debt, ref, reason)
        st.put_row(prefix + _SEQ.pack(m.seq), json.dumps(vars_(e)).encode())
        out.append(e)
    for day, fen in eff["spend"]:
        n = m.spend.get(day, 0) + fen
        if n > 0:
            m.spend[day] = n
        else:
            m.spend.pop(day, None)
    cut = today(st, m.venue, eff["at"]) - KEEP_SPEND_DAYS
    for day in [d for d in m.spend if d <= cut]:
        del m.spend[day]
    return out


def adjust(st: ShardState, args: dict, now: int) -> PointsResult:
    """An operator's points adjustment: a grant (+, in the bucket of today's points) or
    a correction (-, never below zero), with a reason."""
    v = venue_of(st, args)
    for name in args:
        if name not in ("venue", "member", "points", "reason"):
            raise InvalidArgument("not a field of an adjustment", field=name)
    p = program_of(st, v.id)
    m = member_arg(st, v.id, args)
    points = int_arg(args, "points", -MAX_POINTS, MAX_POINTS)
    if not points:
        raise InvalidArgument("an adjustment moves some points", field="points")
    reason = text_arg(args, "reason", ..., 200)
    if not reason.strip():
        raise InvalidArgument("say why (an operator's adjustment is audited)", field="reason")
    plan = Plan(st, m, now)
    if points > 0:
        plan.credit("adjust", points, expires(p, plan.day), reason=reason)
    else:
        plan.take("adjust", -points, reason=reason)
    eff = plan.record()
    apply(st, eff)
    st.journal(json_record(Record.POINTS, eff), Record.POINTS)
    return PointsResult(m.id, points, m.balance, m.debt, m.seq)


def replay_points(st: ShardState, eff: dict, fmt: int) -> None:
    apply(st, eff)
    st.journal(json_record(Record.POINTS, eff), Record.POINTS)


# -- points at Confirm and Refund (sales.py) ----------------------------------------------
def earn(st: ShardState, m: Member, channel: str, lines: list[dict], paid: dict[int, int],
         where: dict[int, tuple[int, int]], order_id: str, amount: int, now: int) -> tuple[dict, dict[int, int]]:
    """The effects of an order paid by a member: per ticket what it paid times its rate,
    and the spend. Returns (the effects, ticket -> points)."""
    p = program_of(st, m.venue, "member")
    rates = [rate(p, ln["product"], channel) for ln in lines]
    per: dict[int, int] = {}
    for t, (i, _) in where.items():
        n = paid[t] * rates[i] // 100
        if n:
            per[t] = n
    plan = Plan(st, m, now)
    plan.credit("earn", sum(per.values()), expires(p, plan.day), ref=order_id)
    if amount:
        plan.spend.append([plan.day, amount])
    return plan.record(), per


def reverse(st: ShardState, m: Member, points: int, sale_day: int, fen: int, refund_id: str,
            now: int, restore: int = 0, redeemed: list[list[int]] | None = None) -> tuple[dict, list]:
    """The effects of a refund (or change) of a member's order: the points its tickets
    redeemed given back (`restore` of them, into the buckets `redeemed` still names, the
    last taken first), the points they earned taken back (what the balance lacks owed),
    the money given back out of the sale day's spend. Returns (the effects, what of
    `redeemed` is left)."""
    plan = Plan(st, m, now)
    left = [list(x) for x in redeemed or ()]
    if restore:
        back, left = unredeem(left, restore)
        plan.credit_to("restore", back, ref=refund_id)
    plan.take("reverse", points, ref=refund_id, owe=True)
    back_fen = min(fen, m.spend.get(sale_day, 0))
    if back_fen:
        plan.spend.append([sale_day, -back_fen])
    return plan.record(), left


def unredeem(redeemed: list[list[int]], n: int) -> tuple[list[list[int]], list[list[int]]]:
    """`n` of the points a redemption took from the buckets `redeemed` ([last valid day,
    points], in the order taken), the last taken first: (the buckets they go back to,
    what is left)."""
    left = [list(x) for x in redeemed]
    back = []
    while n:
        d, x = left[-1]
        y = min(n, x)
        back.append([d, y])
        n -= y
        if y == x:
            left.pop()
        else:
            left[-1][1] -= y
    return back, left


def split(costs: list[list[int]], points: int, fen_per_point: int) -> list[list[int]]:
    """`points` spread over tickets (`costs`: per line, what each ticket costs after the
    coupon) in proportion to their cost, no ticket given more points than it costs;
    refused (naming `points`) when the order can't take that many."""
    caps = [[c // fen_per_point for c in line] for line in costs]
    cap = sum(map(sum, caps))
    if points > cap:
        raise InvalidArgument(f"{points} points are worth more than the order ({cap} at most)",
                              field="points")
    out = [[points * c // cap if cap else 0 for c in line] for line in caps]
    rest = points - sum(map(sum, out))
    for line, lcap in zip(out, caps):
        for k, c in enumerate(lcap):
            if not rest:
                return out
            more = min(rest, c - line[k])
            line[k] += more
            rest -= more
    return out


def redeem(st: ShardState, m: Member, points: int, hold_id: int, now: int) -> tuple[dict, list[list[int]]]:
    """The effects of points redeemed by a hold (refused INSUFFICIENT_POINTS when the
    balance is short): (the effects, the buckets taken, in the order taken)."""
    plan = Plan(st, m, now)
    plan.take("redeem", points, ref=f"hold:{hold_id}")
    return plan.record(), plan.taken


def give_back(st: ShardState, m: Member, redeemed: list[list[int]], ref: str, now: int) -> dict:
    """The effects of a hold that ends unpaid: every point it redeemed back."""
    plan = Plan(st, m, now)
    plan.credit_to("restore", unredeem(redeemed, sum(n for _, n in redeemed))[0], ref=ref)
    return plan.record()


def ledger(st: ShardState, venue: str, member: str, after: int, limit: int,
           rows: Any) -> list[PointsEntry]:
    """A member's ledger entries after `after`, oldest first (`rows`: the committed rows
    with a prefix, from the storage)."""
    prefix = ledger_prefix(venue, member)
    out = []
    for _, raw in rows(prefix, prefix + _SEQ.pack(after + 1)):
        out.append(PointsEntry(**json.loads(raw)))
        if len(out) >= limit:
            break
    return out


def report(st: ShardState, venue: str, now: int) -> dict:
    """Members by level, and the points earned, taken back, adjusted and expired (the
    expiries not written yet included, as balances show them)."""
    by_level: dict[int, int] = {}
    pending = 0
    day = today(st, venue, now)
    for (v, _), m in st.members.items():
        if v != venue:
            continue
        lv = level_of(st, m, now)[0]
        by_level[lv] = by_level.get(lv, 0) + 1
        pending += sum(n for d, n in m.buckets.items() if d < day)
    t = dict(st.points_totals.get(venue, {}))
    t["expire"] = t.get("expire", 0) - pending
    balance = sum(m.balance for (v, _), m in st.members.items() if v == venue) - pending
    return {"by_level": sorted(by_level.items()), "totals": t, "balance": balance,
            "members": sum(by_level.values())}


# -- snapshot --------------------------------------------------------------------------
def dump(st: ShardState) -> dict:
    return {"programs": [p.to_dict() for p in st.member_programs.values()],
            "members": [m.dump() for m in st.members.values()],
            "next": st.next_member,
            "totals": st.points_totals,
            "holds": [[hid, json.loads(red)] for hid, red in sorted(st.hold_points.items())]}


def load(st: ShardState, d: dict) -> None:
    st.member_programs = {p["venue"]: MemberProgram.from_dict(p) for p in d.get("programs", ())}
    st.members, st.member_index = {}, {}
    for x in d.get("members", ()):
        m = Member.load(x)
        st.members[(m.venue, m.id)] = m
        for key in (m.holder_key, m.phone_key):
            if key:
                st.member_index[(m.venue, key)] = m.id
    st.next_member = d.get("next", 1)
    st.points_totals = {v: dict(t) for v, t in d.get("totals", {}).items()}
    st.hold_points = {hid: json.dumps(red).encode() for hid, red in d.get("holds", ())}
