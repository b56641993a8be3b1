"""Commands and their journal records.

A command is what a caller asks the shard to do; the writer applies commands in
batches and journals each applied one as a record `u32 length | u8 op | payload`.
Replaying the records of every batch after the last snapshot rebuilds memory exactly.
Scans (the bulk of the journal) have a fixed binary payload; the rest are JSON.
"""
from __future__ import annotations

import array
import enum
import json
import struct
from dataclasses import dataclass
from typing import Any, Iterator


class Op(enum.IntEnum):
    # catalog (kept in the snapshot as records, replayed on open)
    SECRETS = 1
    KEY = 2
    VENUE = 3
    ZONE = 4
    GATE = 5
    PRODUCT = 6
    SLOTS = 7
    SLOT_CAPACITY = 8
    ALLOTMENT = 9
    # sales
    HOLD = 20
    RELEASE = 21
    EXPIRE = 22
    CONFIRM = 23
    REFUND = 24
    BLOCK = 25
    FACE = 26                  # a face token bound to (or taken from) a real-name holder
    # gates
    SCAN = 30
    SCAN_BATCH = 31
    OFFLINE_SCANS = 32         # scans an offline gate made, uploaded later (JSON)
    # not journaled
    NOTE = 39                  # an audited call that changed nothing in the shard
    # not journaled: resolved to SCAN records
    VERIFY = 40
    VERIFY_HOLDER = 41
    VERIFY_BATCH = 42
    VERIFY_FACE = 43


LAST_CATALOG_OP = 9                      # ops 1..9 are catalog records (kept in snapshots)

_HDR = struct.Struct("<IB")
SCAN = struct.Struct("<IHBHqB")          # base, gate, direction, persons, at, reason
_SCAN_REC = struct.Struct("<IBIHBHqB")   # header + SCAN, packed at once
_BATCH = struct.Struct("<BqHIq")         # direction, at, persons, n, one gate (-1: per id)
_HOLD = struct.Struct("<qqqqHH")         # id, expires_at, created, amount, venue idx, n lines
_LINE = struct.Struct("<HIHqB")          # product idx, qty, group, unit price, n components
_COMP = struct.Struct("<Iq")             # slot idx, allotment idx (-1: pool)
NO_TICKET = 0xFFFFFFFF
OP_SCAN = int(Op.SCAN)


@dataclass(slots=True)
class Command:
    """One request to the shard's writer. `args` is a dict (JSON ops) or a tuple.
    `audit` (principal, method, request digest) makes the writer append an audit
    record for it, in the same transaction as its batch."""

    op: Op
    args: Any
    idem: str | None = None
    audit: tuple[str, str, str] | None = None


def record(op: Op, payload: bytes) -> bytes:
    return _HDR.pack(len(payload), op) + payload


def json_record(op: Op, args: dict) -> bytes:
    return record(op, json.dumps(args, separators=(",", ":")).encode())


def scan_record(base: int, gate: int, direction: int, persons: int, at: int, reason: int) -> bytes:
    return _SCAN_REC.pack(SCAN.size, OP_SCAN, base, gate, direction, persons, at, reason)


def hold_record(hold: dict, venue: int) -> bytes:
    """A hold as applied (resolved indices), so replay needs no look-ups."""
    ch = hold["channel"].encode()
    parts = [_HOLD.pack(hold["id"], hold["expires_at"], hold["created"], hold["amount"], venue,
                        len(hold["lines"])), bytes((len(ch),)), ch]
    for ln in hold["lines"]:
        parts.append(_LINE.pack(ln["p"], ln["qty"], ln["group"], ln["price"], len(ln["slots"])))
        for s, a in zip(ln["slots"], ln["allots"]):
            parts.append(_COMP.pack(s, a))
    payload = b"".join(parts)
    return _HDR.pack(len(payload), Op.HOLD) + payload


def decode_hold(payload: bytes) -> tuple[dict, int]:
    hid, expires, created, amount, venue, n = _HOLD.unpack_from(payload)
    off = _HOLD.size
    ln_ch = payload[off]
    channel = bytes(payload[off + 1:off + 1 + ln_ch]).decode()
    off += 1 + ln_ch
    lines = []
    for _ in range(n):
        p, qty, group, price, nc = _LINE.unpack_from(payload, off)
        off += _LINE.size
        slots, allots = [], []
        for _ in range(nc):
            s, a = _COMP.unpack_from(payload, off)
            off += _COMP.size
            slots.append(s)
            allots.append(a)
        lines.append({"p": p, "qty": qty, "group": group, "slots": slots, "allots": allots,
                      "price": price})
    return {"id": hid, "channel": channel, "expires_at": expires, "created": created,
            "amount": amount, "lines": lines}, venue


def scan_batch_record(ids: array.array, gates, direction: int, at: int, persons: int,
                      reasons: bytes) -> bytes:
    one = gates if isinstance(gates, int) else -1
    parts = [_BATCH.pack(direction, at, persons, len(ids), one), ids.tobytes()]
    if one < 0:
        parts.append(gates.tobytes())
    parts.append(reasons)
    return record(Op.SCAN_BATCH, b"".join(parts))


def decode_scan_batch(payload: bytes):
    direction, at, persons, n, one = _BATCH.unpack_from(payload)
    off = _BATCH.size
    ids = array.array("q")
    ids.frombytes(payload[off:off + 8 * n])
    off += 8 * n
    if one < 0:
        gates = array.array("q")
        gates.frombytes(payload[off:off + 8 * n])
        off += 8 * n
    else:
        gates = one
    return ids, gates, direction, at, persons, payload[off:off + n]


def records(blob: bytes) -> Iterator[tuple[int, memoryview]]:
    """(op, payload) of every record in a batch blob."""
    view = memoryview(blob)
    off, end = 0, len(blob)
    while off < end:
        n, op = _HDR.unpack_from(view, off)
        off += _HDR.size
        yield op, view[off:off + n]
        off += n
