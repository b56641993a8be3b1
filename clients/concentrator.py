"""A gate concentrator's packed scan stream (``GateService.VerifyPacked``).

A concentrator collects the scans of many gates and sends them in batches. When it holds
codes in their binary form (what a code's text encodes in base32, DESIGN.md 4.4), it
sends each batch's codes concatenated in one bytes field and gets the answers back as
packed arrays: no message or object per code on the wire or in either process. Each
batch is decided, journaled and retried (``batch_id``) exactly as the same codes' text
would be in ``VerifyStream``.

    with Connection("127.0.0.1:50051", gate_key) as conn:
        c = Concentrator(conn, venue_id="westlake", gate_id="north-1")
        for answers in c.verify([pack(texts[:1000]), pack(texts[1000:2000])]):
            answers.reasons[0], answers.ticket_ids[0], answers.admitted(0)

Talks gRPC only; never imports the engine.
"""
from __future__ import annotations

import sys
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from turnstile import ticketcode
from turnstile.v1 import common_pb2, gate_pb2, gate_pb2_grpc

from .base import ApiError, Connection

ADMITS = frozenset({common_pb2.OK, common_pb2.OK_REENTRY})


@dataclass(frozen=True)
class Packed:
    """One batch's codes in their binary form: `size` bytes each, concatenated."""

    codes: bytes
    size: int

    def __len__(self) -> int:
        return len(self.codes) // self.size if self.size else 0


def pack(codes: Sequence[str | bytes]) -> Packed:
    """Codes (their text, or their binary form) as one packed batch. ValueError if a
    text is not a code's canonical text, or the codes are not all of one size (codes
    of another size go in a batch of their own)."""
    raw = []
    for i, c in enumerate(codes):
        b = c if isinstance(c, bytes) else ticketcode.b32decode(c)
        if b is None:
            raise ValueError(f"codes[{i}] is not a ticket code's text")
        raw.append(b)
    sizes = {len(b) for b in raw}
    if len(sizes) > 1:
        raise ValueError(f"codes of {len(sizes)} sizes ({sorted(sizes)}): one size per batch")
    return Packed(b"".join(raw), sizes.pop() if sizes else 0)


def _unpack(data: bytes, typecode: str) -> array:
    a = array(typecode, data)
    if sys.byteorder == "big":          # the fields are little-endian
        a.byteswap()
    return a


@dataclass(frozen=True)
class PackedAnswers:
    """A PackedVerifyResponse read: one entry per code, in the batch's order."""

    reasons: bytes          # ScanReason value per code
    ticket_ids: array       # int64 per code; -1: not a code, -2: a code of another shard
    persons: array          # persons admitted or let out per code

    @classmethod
    def of(cls, msg: gate_pb2.PackedVerifyResponse) -> "PackedAnswers":
        return cls(msg.reasons, _unpack(msg.ticket_ids, "q"), _unpack(msg.persons, "I"))

    def __len__(self) -> int:
        return len(self.reasons)

    def admitted(self, i: int) -> bool:
        """Whether code i was let through."""
        return self.reasons[i] in ADMITS


def request(batch: Packed, *, gate_id: str = "", gate_ids: Sequence[str] = (), venue_id: str = "",
            direction: int = common_pb2.IN, scan_time: float | None = None, persons: int = 0,
            batch_id: str = "") -> gate_pb2.PackedVerifyRequest:
    """The PackedVerifyRequest of a batch (scan_time None: the server's now)."""
    req = gate_pb2.PackedVerifyRequest(codes=batch.codes, code_size=batch.size, gate_id=gate_id,
                                       gate_ids=gate_ids, venue_id=venue_id, direction=direction,
                                       persons=persons, batch_id=batch_id)
    if scan_time is not None:
        req.scan_time.CopyFrom(Timestamp(seconds=int(scan_time)))
    return req


class Concentrator:
    """One concentrator's packed stream to the shard of its venue, as `conn`'s caller
    (a gate key)."""

    def __init__(self, conn: Connection, *, venue_id: str, gate_id: str = ""):
        self.conn = conn
        self.venue_id = venue_id
        self.gate_id = gate_id

    def verify(self, batches: Iterable[Packed | gate_pb2.PackedVerifyRequest], *,
               direction: int = common_pb2.IN, timeout: float = 60.0) -> Iterator[PackedAnswers]:
        """Send the batches on one stream (a Packed goes at this concentrator's gate, now)
        and yield each one's answers, in order. A refused request (a malformed batch, an
        unknown gate) ends the stream with an ApiError (its status, reason and field) after
        the answers before it, as every client's calls do."""
        stub = self.conn.stub(gate_pb2_grpc.GateServiceStub, venue=self.venue_id)
        reqs = (b if isinstance(b, gate_pb2.PackedVerifyRequest)
                else request(b, gate_id=self.gate_id, venue_id=self.venue_id, direction=direction)
                for b in batches)
        call = stub.VerifyPacked(reqs, metadata=self.conn.metadata, timeout=timeout)
        try:
            for msg in call:
                yield PackedAnswers.of(msg)
        except grpc.RpcError as e:
            raise ApiError.from_rpc(e, method="VerifyPacked") from None
        finally:
            call.cancel()
