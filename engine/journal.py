"""Commands, their journal records, and the batches that carry both.

A command is what a caller asks the shard to do; its kind is a `CommandKind`. The writer
applies commands in batches and journals what each applied one decided as records
`u32 length | u8 kind | payload`, the kind a `Record`. Replaying the records of every
batch after the last snapshot rebuilds memory exactly. Scans (the bulk of the journal)
have a fixed binary payload; the rest are JSON.
"""
from __future__ import annotations

import array
import enum
import json
import struct
from dataclasses import dataclass
from typing import Any, Iterator


class Record(enum.IntEnum):
    """The kind of a journal record: the u8 of its header, on disk (never renumbered).

    A command that changes the shard is journaled as records of its own number (SECRETS
    to FACE, and OFFLINE_SCANS, are both a CommandKind and a Record). A record holds what
    the command decided, not what it asked (a key rotation as the keys it made, a
    confirm with holder keys, a refund with the stock it returned), and replay hands a
    JSON record to the handler of the command of its number. The VERIFY commands are
    journaled as SCAN and SCAN_BATCH records, which no command asks for by name."""

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
    HOLD = 20                  # binary: the hold as applied (hold_record)
    RELEASE = 21
    EXPIRE = 22
    CONFIRM = 23
    REFUND = 24
    BLOCK = 25
    FACE = 26                  # a face key bound to (or taken from) a holder key
    # gates
    SCAN = 30                  # binary, fixed size (scan_record); native/tickets.pxi replays runs of them
    SCAN_BATCH = 31            # binary (scan_batch_record)
    OFFLINE_SCANS = 32         # scans an offline gate made, uploaded later (JSON)


class CommandKind(enum.IntEnum):
    """What a command asks (`Command.op`): what engine/cmd.py builds and
    ShardState.apply dispatches on. The numbers are kept too: idempotency rows are keyed
    and fingerprinted by them, and each kind from SECRETS to FACE, and OFFLINE_SCANS, is
    journaled as the Record of the same number."""

    # catalog
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
    FACE = 26                  # bind a face token to (or take it from) a real-name holder
    # gates
    OFFLINE_SCANS = 32         # scans an offline gate made, uploaded later
    # not journaled
    NOTE = 39                  # an audited call that changed nothing in the shard
    # journaled as the SCAN or SCAN_BATCH records they resolve to
    VERIFY = 40
    VERIFY_HOLDER = 41
    VERIFY_BATCH = 42
    VERIFY_FACE = 43


LAST_CATALOG = int(Record.ALLOTMENT)     # records 1..9 are catalog records (kept in snapshots)

_HDR = struct.Struct("<IB")
SCAN = struct.Struct("<IHBHqB")          # base, gate, direction, persons, at, reason
_SCAN_REC = struct.Struct("<IBIHBHqB")   # header + SCAN, packed at once
_BATCH = struct.Struct("<BqHIq")         # direction, at, persons, n, one gate (-1: per id)
_HOLD = struct.Struct("<qqqqHH")         # id, expires_at, created, amount, venue idx, n lines
_LINE = struct.Struct("<HIHqB")          # product idx, qty, group, unit price, n components
_COMP = struct.Struct("<Iq")             # slot idx, allotment idx (-1: pool)
NO_TICKET = 0xFFFFFFFF
_SCAN_KIND = int(Record.SCAN)


@dataclass(slots=True)
class Command:
    """One request to the shard's writer: `op` is what it asks, `args` a dict (the JSON
    kinds) or a tuple (the VERIFY kinds). `audit` (principal, method, request digest)
    makes the writer append an audit record for it, in the same transaction as its batch."""

    op: CommandKind
    args: Any
    idem: str | None = None
    audit: tuple[str, str, str] | None = None


class Batch:
    """What one writer batch will write in its one LMDB transaction: its journal records
    and the rows it changed."""

    __slots__ = ("seq", "records", "rows", "n_commands", "n_calls")

    def __init__(self, seq: int):
        self.seq = seq
        self.records: list[bytes] = []
        self.rows: dict[bytes, bytes | None] = {}
        self.n_commands = 0          # journaled commands (an expiry sweep counts too)
        self.n_calls = 0             # commands submitted, answered when the batch commits

    def blob(self) -> bytes:
        return b"".join(self.records)


def record(kind: Record, payload: bytes) -> bytes:
    return _HDR.pack(len(payload), kind) + payload


def json_record(kind: Record, args: dict) -> bytes:
    return record(kind, json.dumps(args, separators=(",", ":")).encode())


def scan_record(base: int, gate: int, direction: int, persons: int, at: int, reason: int) -> bytes:
    return _SCAN_REC.pack(SCAN.size, _SCAN_KIND, base, gate, direction, persons, at, reason)


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
    return _HDR.pack(len(payload), Record.HOLD) + payload


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
    return record(Record.SCAN_BATCH, b"".join(parts))


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
    """(kind, payload) of every record in a batch blob."""
    view = memoryview(blob)
    off, end = 0, len(blob)
    while off < end:
        n, kind = _HDR.unpack_from(view, off)
        off += _HDR.size
        yield kind, view[off:off + n]
        off += n
