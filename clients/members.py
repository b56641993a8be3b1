"""Visitors as people, over ``MemberService``: the tickets bound to a real-name
holder's ID number (DESIGN.md 4.4: the number is stored only encrypted and shown
masked), the face tokens that let face terminals admit a holder, and a venue's members
(会员): its programme, members found by ID or phone number, their points and levels.

    from turnstile.clients.members import MembersClient

    members = MembersClient(Connection("127.0.0.1:50051", window_key))
    h = members.holder_tickets("110101199003071234")
    h.holder                          # '110***********1234'
    [t.ticket_id for t in h.valid_on(date.today())]
    members.enroll_face("westlake", face_token, "110101199003071234", key="enrol-8812")
    members.remove_face("westlake", face_token)

Each shard answers for its own venues only, so ``holder_tickets`` asks every shard of
the node and merges the answers; a face token is enrolled on the shard of the venue
whose face terminals scan it.

Members belong to a venue (and live on its shard)::

    members.set_program("westlake", levels=[Level(1, "silver", 100_00)],
                        earn=[EarnRule(points_per_yuan=1)])
    m = members.enrol("westlake", phone="13812345678", key="signup-1")
    channel.buy("westlake", items, "order-1", member_id=m.member_id)   # earns points
    members.get("westlake", phone="13812345678").balance
    [e.kind for e in members.points("westlake", m.member_id)]          # ['earn']
    members.adjust("westlake", m.member_id, -50, "redeemed at the shop", key="adj-1")
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator, Sequence

from turnstile.v1 import member_pb2, member_pb2_grpc

from .base import Connection

__all__ = ["EarnRule", "FaceEnrolment", "HolderTicket", "HolderTickets", "Level", "Member",
           "MemberReport", "MembersClient", "PointsEntry", "Program"]

Members = member_pb2_grpc.MemberServiceStub


@dataclasses.dataclass(frozen=True)
class HolderTicket:
    """One ticket of a holder: validity (venue-local days, inclusive) and state."""

    ticket_id: int
    product_id: str
    venue_id: str
    shard: int
    first_day: dt.date
    last_day: dt.date
    used: bool
    voided: bool
    blocked: bool

    @property
    def usable(self) -> bool:
        """Neither refunded nor blocked (it may still be used up or out of date)."""
        return not (self.voided or self.blocked)


@dataclasses.dataclass(frozen=True)
class HolderTickets:
    """A holder (ID number masked) and their tickets at the caller's venues."""

    holder: str
    tickets: tuple[HolderTicket, ...]

    def valid_on(self, day: dt.date) -> list[HolderTicket]:
        """Tickets that are usable and valid on ``day``."""
        return [t for t in self.tickets if t.usable and t.first_day <= day <= t.last_day]


@dataclasses.dataclass(frozen=True)
class FaceEnrolment:
    """A face token's binding at one venue's shard after an enrol or a removal."""

    venue_id: str
    enrolled: bool
    holder: str               # the holder's ID number, masked; "" once removed
    tickets: int              # the holder's tickets on that shard


@dataclasses.dataclass(frozen=True)
class Level:
    """A level of a member programme, reached by ``min_spend_fen`` paid within its period."""

    level: int
    name: str
    min_spend_fen: int


@dataclasses.dataclass(frozen=True)
class EarnRule:
    """Points per yuan paid for a product and channel ("": any)."""

    product_id: str = ""
    channel: str = ""
    points_per_yuan: int = 0


@dataclasses.dataclass(frozen=True)
class Program:
    """A venue's member programme (MemberService.GetMemberProgram)."""

    venue_id: str
    levels: tuple[Level, ...]
    period_days: int
    earn: tuple[EarnRule, ...]
    expiry: str                 # year_end, days or never
    expiry_n: int
    fen_per_point: int

    @classmethod
    def from_proto(cls, p: member_pb2.MemberProgram) -> "Program":
        return cls(p.venue_id, tuple(Level(x.level, x.name, x.min_spend_fen) for x in p.levels),
                   p.period_days, tuple(EarnRule(x.product_id, x.channel, x.points_per_yuan) for x in p.earn),
                   p.expiry, p.expiry_n, p.fen_per_point)


@dataclasses.dataclass(frozen=True)
class Member:
    """A member as shown: numbers masked, level and spend as of now, the balance, a debt
    refunds left, and the balance by last valid day (None: never expires)."""

    venue_id: str
    member_id: str
    holder: str
    phone: str
    enrolled_at: dt.datetime
    level: int
    level_name: str
    spend_fen: int
    balance: int
    debt: int
    expiring: tuple[tuple[dt.date | None, int], ...]

    @classmethod
    def from_proto(cls, m: member_pb2.Member) -> "Member":
        return cls(m.venue_id, m.member_id, m.holder, m.phone,
                   m.enrolled_at.ToDatetime(dt.timezone.utc), m.level, m.level_name, m.spend_fen,
                   m.balance, m.debt,
                   tuple((dt.date.fromisoformat(e.last_day) if e.last_day else None, e.points)
                         for e in m.expiring))


@dataclasses.dataclass(frozen=True)
class PointsEntry:
    """One entry of a member's points ledger."""

    seq: int
    at: dt.datetime
    kind: str                   # earn, reverse, redeem, restore, adjust, expire
    points: int
    balance: int
    debt: int
    ref: str
    reason: str


@dataclasses.dataclass(frozen=True)
class MemberReport:
    """A venue's members by level and its points by kind (MemberService.MemberReport)."""

    members: int
    by_level: dict[int, int]
    earned: int
    reversed: int
    adjusted: int
    expired: int
    balance: int
    redeemed: int = 0
    restored: int = 0


class MembersClient:
    """Typed calls of ``MemberService`` over every shard."""

    def __init__(self, conn: Connection):
        self.conn = conn

    def holder_tickets(self, id_number: str) -> HolderTickets:
        """Tickets bound to ``id_number`` at the caller's venues on every shard, by first
        valid day then venue and ticket id."""
        holder, tickets = "", []
        for shard in self.conn.shards():
            r = self.conn.call(Members, "HolderTickets",
                               member_pb2.HolderTicketsRequest(id_number=id_number),
                               shard=shard, retry=True)
            holder = holder or r.holder
            tickets += [HolderTicket(t.ticket_id, t.product_id, t.venue_id, shard,
                                     dt.date.fromisoformat(t.first_day), dt.date.fromisoformat(t.last_day),
                                     t.used, t.voided, t.blocked) for t in r.tickets]
        tickets.sort(key=lambda t: (t.first_day, t.venue_id, t.ticket_id))
        return HolderTickets(holder, tuple(tickets))

    def enroll_face(self, venue_id: str, face_token: str, id_number: str, *,
                    key: str | None = None) -> FaceEnrolment:
        """Bind ``face_token`` (the face platform's name for an enrolled face) to the
        holder of ``id_number`` for the face terminals of ``venue_id``. With ``key``
        (an idempotency key) the call is retried safely on a lost answer."""
        r = self.conn.call(Members, "EnrollFace", member_pb2.EnrollFaceRequest(
            venue_id=venue_id, face_token=face_token, id_number=id_number,
            idempotency_key=key or ""), venue=venue_id, retry=key is not None)
        return FaceEnrolment(venue_id, r.enrolled, r.holder, r.tickets)

    def remove_face(self, venue_id: str, face_token: str, *, key: str | None = None) -> FaceEnrolment:
        """Take ``face_token`` back: face terminals then read it as UNKNOWN."""
        r = self.conn.call(Members, "RemoveFace", member_pb2.RemoveFaceRequest(
            venue_id=venue_id, face_token=face_token, idempotency_key=key or ""),
            venue=venue_id, retry=key is not None)
        return FaceEnrolment(venue_id, r.enrolled, r.holder, r.tickets)

    # -- members and points --------------------------------------------------------------
    def set_program(self, venue_id: str, *, levels: Sequence[Level] = (), period_days: int = 365,
                    earn: Sequence[EarnRule] = (), expiry: str = "year_end",
                    expiry_n: int | None = None, fen_per_point: int = 1,
                    key: str | None = None) -> Program:
        """Set the venue's member programme (an operator's): levels by spend within
        ``period_days``, points per yuan by product and channel, when points expire
        (``year_end`` at the end of the year ``expiry_n`` years on, default 1; ``days``;
        ``never``), what a point is worth in fen."""
        p = member_pb2.MemberProgram(
            venue_id=venue_id, levels=[member_pb2.MemberLevel(level=x.level, name=x.name,
                                                              min_spend_fen=x.min_spend_fen) for x in levels],
            period_days=period_days, earn=[member_pb2.EarnRule(product_id=x.product_id, channel=x.channel,
                                                               points_per_yuan=x.points_per_yuan) for x in earn],
            expiry=expiry, fen_per_point=fen_per_point)
        if expiry_n is not None:
            p.expiry_n = expiry_n
        r = self.conn.call(Members, "SetMemberProgram", member_pb2.SetMemberProgramRequest(
            program=p, idempotency_key=key or ""), venue=venue_id, retry=key is not None)
        return Program.from_proto(r)

    def program(self, venue_id: str) -> Program:
        """The venue's member programme (ApiError FAILED_PRECONDITION if it has none)."""
        return Program.from_proto(self.conn.call(
            Members, "GetMemberProgram", member_pb2.GetMemberProgramRequest(venue_id=venue_id),
            venue=venue_id, retry=True))

    def enrol(self, venue_id: str, *, id_number: str = "", phone: str = "",
              key: str | None = None) -> Member:
        """Enrol a person as a member of the venue by ID number, phone number or both
        (ApiError ALREADY_EXISTS naming the field if one is a member's already). With
        ``key`` a lost answer is retried safely."""
        r = self.conn.call(Members, "Enrol", member_pb2.EnrolRequest(
            venue_id=venue_id, id_number=id_number, phone=phone, idempotency_key=key or ""),
            venue=venue_id, retry=key is not None)
        return Member.from_proto(r)

    def get(self, venue_id: str, *, member_id: str = "", id_number: str = "",
            phone: str = "") -> Member:
        """A member of the venue by exactly one of member id, ID number and phone number
        (ApiError NOT_FOUND naming it if none)."""
        return Member.from_proto(self.conn.call(Members, "GetMember", member_pb2.GetMemberRequest(
            venue_id=venue_id, member_id=member_id, id_number=id_number, phone=phone),
            venue=venue_id, retry=True))

    def points(self, venue_id: str, member_id: str, *, after: int = 0,
               page: int = 100) -> Iterator[PointsEntry]:
        """The member's points ledger, oldest first, fetched ``page`` entries at a time."""
        while True:
            r = self.conn.call(Members, "ListPoints", member_pb2.ListPointsRequest(
                venue_id=venue_id, member_id=member_id, after=after, limit=page),
                venue=venue_id, retry=True)
            for e in r.entries:
                yield PointsEntry(e.seq, e.at.ToDatetime(dt.timezone.utc), e.kind, e.points, e.balance,
                                  e.debt, e.ref, e.reason)
            if not r.next_after:
                return
            after = r.next_after

    def adjust(self, venue_id: str, member_id: str, points: int, reason: str, *,
               key: str | None = None) -> tuple[int, int]:
        """An operator's adjustment (a grant, or a correction: ApiError
        INSUFFICIENT_POINTS below zero), with a reason; returns (balance, debt) after."""
        r = self.conn.call(Members, "AdjustPoints", member_pb2.AdjustPointsRequest(
            venue_id=venue_id, member_id=member_id, points=points, reason=reason,
            idempotency_key=key or ""), venue=venue_id, retry=key is not None)
        return r.balance, r.debt

    def report(self, venue_id: str) -> MemberReport:
        """The venue's members by level (as of now) and points by kind."""
        r = self.conn.call(Members, "MemberReport", member_pb2.MemberReportRequest(venue_id=venue_id),
                           venue=venue_id, retry=True)
        return MemberReport(r.members, {x.level: x.members for x in r.by_level}, r.earned, r.reversed,
                            r.adjusted, r.expired, r.balance, r.redeemed, r.restored)
