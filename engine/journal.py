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
from dataclasses import dataclass, field
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
    # gates
    SCAN = 30
    SCAN_BATCH = 31
    # not journaled: resolved to SCAN records
    VERIFY = 40
    VERIFY_HOLDER = 41
    VERIFY_BATCH = 42


CATALOG_OPS = frozenset({Op.SECRETS, Op.KEY, Op.VENUE, Op.ZONE, Op.GATE, Op.PRODUCT, Op.SLOTS,
                         Op.SLOT_CAPACITY, Op.ALLOTMENT})

_HDR = struct.Struct("<IB")
SCAN = struct.Struct("<IHBHqB")          # base, gate, direction, persons, at, reason
_BATCH = struct.Struct("<BqhIq")         # direction, at, persons, n, one gate (-1: per id)
NO_TICKET = 0xFFFFFFFF


@dataclass(slots=True)
class Command:
    """One request to the shard's writer. `args` is a dict (JSON ops) or a tuple."""

    op: Op
    args: Any
    idem: str | None = None


def record(op: Op, payload: bytes) -> bytes:
    return _HDR.pack(len(payload), op) + payload


def json_record(op: Op, args: dict) -> bytes:
    return record(op, json.dumps(args, separators=(",", ":"), sort_keys=True).encode())


def scan_record(base: int, gate: int, direction: int, persons: int, at: int, reason: int) -> bytes:
    return _HDR.pack(SCAN.size, Op.SCAN) + SCAN.pack(base, gate, direction, persons, at, reason)


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
