"""Visitors as people, over ``MemberService``: the tickets bound to a real-name
holder's ID number (DESIGN.md 4.4: the number is stored only encrypted and shown
masked), and the face tokens that let face terminals admit a holder.

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
"""
from __future__ import annotations

import dataclasses
import datetime as dt

from turnstile.v1 import member_pb2, member_pb2_grpc

from .base import Connection

__all__ = ["FaceEnrolment", "HolderTicket", "HolderTickets", "MembersClient"]

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
