"""Scans at gates: a code, a real-name holder's ID number, a face token, or a batch of
codes, decided by the native core and journaled as SCAN / SCAN_BATCH records; the gate's
own scan id or batch id makes a retry get the first answer. Face enrolment lives here too:
what a face terminal's scan resolves to.

The hot path is `verify` (ShardState.apply calls it directly): one gate look-up, the
core's decode-and-decide, one fixed-size record.
"""
from __future__ import annotations

import array
import base64
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from .. import _core
from ..errors import CorruptData, InvalidArgument, NotFound
from ..journal import (NO_TICKET, Command, CommandKind, Record, decode_scan_batch, json_record,
                       scan_batch_record, scan_record)
from ..model import REASON_OF, Direction, FaceResult, Gate, Reason, ScanResult
from .catalog import find, venue_of
from .idem import fingerprint, once
from .secrets import face_key, holder_key, mask_id
from .validate import U16, ident_arg, persons_arg

if TYPE_CHECKING:
    from .core import ShardState

_VERIFY_BATCH = int(CommandKind.VERIFY_BATCH)
_VERIFY_PACKED = int(CommandKind.VERIFY_PACKED)


@dataclass(frozen=True)
class BatchScanResult:
    """Answers of a batch verify, in request order."""

    reasons: bytes              # Reason value per scan
    tickets: array.array        # code ticket id per scan, -1 if unreadable
    persons: array.array        # persons admitted or let out per scan

    def __len__(self) -> int:
        return len(self.reasons)

    def __getitem__(self, i: int) -> ScanResult:
        return ScanResult(Reason(self.reasons[i]), self.tickets[i], self.persons[i])


def offline_key(gate: Gate, nonce: str) -> bytes:
    """The row of a gate's scan id / offline nonce (ids may hold '/': NUL separates)."""
    return f"offline/{gate.venue}\0{gate.id}\0{nonce}".encode()


def gate_index(st: ShardState, gate: Any, direction: int) -> int:
    """The index of a gate named by its id (unique on the shard) or (venue, id)."""
    if type(gate) is tuple and len(gate) == 2 and type(gate[0]) is str:
        idx = st.gate_idx[find(st, "gate", st.gate_idx, venue_of(st, {"venue": gate[0]}).id,
                               gate[1], "gate")]
    else:
        idx = st.gate_idx[find(st, "gate", st.gate_idx, None, gate, "gate")]
    if direction not in (1, 2):
        raise InvalidArgument("must be IN (1) or OUT (2)", field="direction")
    if not st.gate_mode[idx] & direction:
        raise InvalidArgument(f"gate {st.gate_list[idx].id} does not scan {Direction(direction).name}",
                              field="direction")
    return idx


def scan_once(st: ShardState, cmd: Command, scan: Callable[..., Any], what: Any, gate: Any,
              direction: int, at: int, persons: int) -> ScanResult | BatchScanResult:
    """A scan (or batch) with the gate's own id for it: decided once; a retry after a
    lost answer gets the first answer, not ALREADY_USED. A single scan's id shares
    the key space of offline nonces (`offline/<gate>/<id>`), so a scan decided online
    whose answer the gate never saw, then queued offline under the same id, uploads
    as DUPLICATE instead of a false conflict."""
    op = cmd.op
    batch = op == _VERIFY_BATCH or op == _VERIFY_PACKED
    field = "batch_id" if batch else "scan_id"
    scan_id = ident_arg({field: cmd.idem}, field)
    fp = fingerprint(op, list(cmd.args), st.holder_secret)
    run = lambda: scan(st, what, gate, direction, at, persons)   # noqa: E731
    if batch:
        return once(
            st, f"scanbatch/{cmd.audit[0] if cmd.audit else ''}\0{scan_id}".encode(), fp, field, run,
            lambda r: {"reasons": base64.b64encode(r.reasons).decode(),
                       "tickets": base64.b64encode(r.tickets.tobytes()).decode(),
                       "persons": base64.b64encode(r.persons.tobytes()).decode()},
            lambda row: BatchScanResult(base64.b64decode(row["reasons"]),
                                        array.array("q", base64.b64decode(row["tickets"])),
                                        array.array("i", base64.b64decode(row["persons"]))))
    g = st.gate_list[gate_index(st, gate, direction)]
    # the row an offline upload of the same scan reads (offline.upload)
    return once(
        st, offline_key(g, scan_id), fp, field, run,
        lambda r: {"nonce": scan_id, "status": "APPLIED", "reason": int(r.reason),
                   "ticket_id": r.ticket, "persons": r.persons},
        lambda row: ScanResult(REASON_OF[row["reason"]], row["ticket_id"], row["persons"]))


def verify(st: ShardState, text: Any, gate: str, direction: int, at: int, persons: int) -> ScanResult:
    try:
        g = st.gate_idx.get(gate)
    except TypeError:               # not hashable: gate_index says what is wrong
        g = None
    if g is None or direction not in (1, 2) or not st.gate_mode[g] & direction:
        g = gate_index(st, gate, direction)          # raises the precise error
    if type(persons) is not int or not 0 <= persons <= U16:
        persons = persons_arg(persons)
    if type(text) is not str:
        raise InvalidArgument("must be a string", field="code")
    reason, base, k = st.tickets.verify(st.codec.core, text, st.shard_id, g,
                                        direction, at, persons)
    batch = st.batch
    batch.n_commands += 1
    batch.records.append(scan_record(NO_TICKET if base < 0 else base, g, direction, persons,
                                     at, reason))
    return ScanResult(REASON_OF[reason], base, k)


def verify_holder(st: ShardState, id_number: Any, gate: str, direction: int, at: int,
                  persons: int) -> ScanResult:
    """Verify by a real-name holder's ID number (an ID-card reader)."""
    g = gate_index(st, gate, direction)
    persons = persons_arg(persons)
    if not isinstance(id_number, str) or not 6 <= len(id_number) <= 32:
        raise InvalidArgument("must be an ID number", field="id_number")
    return verify_holder_key(st, holder_key(st, id_number), g, direction, at, persons)


def verify_face(st: ShardState, face_token: Any, gate: str, direction: int, at: int,
                persons: int) -> ScanResult:
    """Verify by a face token: the holder it is enrolled to, as by the ID card; a
    token enrolled to nobody is UNKNOWN."""
    g = gate_index(st, gate, direction)
    persons = persons_arg(persons)
    fk = face_key(st, face_token)
    hk = st.faces.get(f"{st.gate_list[g].venue}\0{fk}") or st.faces.get(fk)
    return verify_holder_key(st, hk, g, direction, at, persons)


def verify_holder_key(st: ShardState, hk: str | None, g: int, direction: int, at: int,
                      persons: int) -> ScanResult:
    """The newest ticket of the holder that this gate admits, or the refusal of the
    newest one."""
    candidates = st.holders.get(hk, []) if hk is not None else []
    venue = st.venue_idx[st.gate_list[g].venue]
    best = None
    for base in reversed(candidates):
        p = st.product_list[st.tickets.record(base)["product"]]
        if st.venue_idx[p.venue] != venue or st.tickets.code_state(base) & _core.STATE_VOIDED:
            continue
        reason, k = st.tickets.scan(base, g, direction, at, persons)
        st.journal(scan_record(base, g, direction, persons, at, reason), Record.SCAN)
        best = ScanResult(REASON_OF[reason], base, k)
        if best.admitted:
            return best
        if reason not in (Reason.NOT_YET_VALID, Reason.EXPIRED, Reason.WRONG_ZONE,
                          Reason.WRONG_SLOT, Reason.ALREADY_USED, Reason.ENTRY_LIMIT):
            return best
    if best is None:
        st.journal(scan_record(NO_TICKET, g, direction, persons, at, Reason.UNKNOWN), Record.SCAN)
        return ScanResult(Reason.UNKNOWN)
    return best


def verify_batch(st: ShardState, codes: Any, gates: Any, direction: int, at: int,
                 persons: int) -> BatchScanResult:
    persons = persons_arg(persons)
    if not isinstance(codes, (list, tuple)) or not all(isinstance(c, str) for c in codes):
        raise InvalidArgument("must be a list of strings", field="codes")
    g = batch_gates(st, gates, len(codes), direction)
    return scan_ids(st, tickets_of(st, codes), g, direction, at, persons)


def verify_packed(st: ShardState, packed: Any, gates: Any, direction: int, at: int,
                  persons: int) -> BatchScanResult:
    """A batch of codes in their binary form, `size` bytes each in one buffer: decoded
    in the core in one pass (the text decode's checks without its base32), then decided
    and journaled as verify_batch does: the journal holds the same SCAN_BATCH record."""
    persons = persons_arg(persons)
    if not (isinstance(packed, tuple) and len(packed) == 2 and type(packed[0]) is bytes
            and type(packed[1]) is int):
        raise InvalidArgument("must be (codes as bytes, code size)", field="codes")
    codes, size = packed
    if not 1 <= size <= _core.MAX_CODE_LEN:
        raise InvalidArgument(f"must be 1 to {_core.MAX_CODE_LEN} (bytes per code)", field="code_size")
    if len(codes) % size:
        raise InvalidArgument(f"{len(codes)} bytes are not a whole number of {size}-byte codes",
                              field="codes")
    g = batch_gates(st, gates, len(codes) // size, direction)
    ids = st.codec.core.decode_packed_ids(codes, size, st.shard_id)
    return scan_ids(st, ids, g, direction, at, persons)


def batch_gates(st: ShardState, gates: Any, n: int, direction: int) -> Any:
    """The gate index of a batch (one gate: an id or (venue, id)), or array('q') of
    one per scan (a list of n)."""
    if not isinstance(gates, list):
        return gate_index(st, gates, direction)
    if len(gates) != n:
        raise InvalidArgument("one gate, or one gate per code", field="gates")
    try:
        return array.array("q", [gate_index(st, x, direction) for x in gates])
    except InvalidArgument as e:
        raise InvalidArgument(e.message, field="gates") from None


def scan_ids(st: ShardState, ids: array.array, g: Any, direction: int, at: int,
             persons: int) -> BatchScanResult:
    """Decide a batch of decoded codes (ids as decode_ids gives them) in order and
    journal it as one SCAN_BATCH record."""
    reasons, admitted = st.tickets.scan_batch(ids, g, direction, at, persons)
    st.journal(scan_batch_record(ids, g, direction, at, persons, reasons), Record.SCAN_BATCH)
    return BatchScanResult(reasons, ids, admitted)


def replay_batch(st: ShardState, payload) -> None:
    """A SCAN_BATCH record: each scan applied as it was decided (its journaled reason),
    not decided again (journal.py); CorruptData if one does not fit the state."""
    ids, gates, direction, at, persons, reasons = decode_scan_batch(bytes(payload))
    try:
        bad = st.tickets.replay_batch(ids, gates, direction, at, persons, bytes(reasons))
    except ValueError as e:
        raise CorruptData(f"a journaled scan batch is malformed: {e}") from None
    if bad >= 0:
        raise CorruptData(f"scan {bad} of a journaled scan batch (ticket {ids[bad]}) does not "
                          "fit the state")
    st.batch.n_commands += 1


def tickets_of(st: ShardState, codes) -> array.array:
    return st.codec.core.decode_ids(codes, st.shard_id)


# -- faces -----------------------------------------------------------------------------
def enrol_face(st: ShardState, args: dict, now: int) -> FaceResult | None:
    """Enroll or remove a face token. Journaled as keyed hashes only, so replay
    needs neither the token nor the ID number (and answers nothing)."""
    if st.replaying:
        venue, fk, hk = args.get("venue", ""), args["face_key"], args["holder_key"]
    else:
        # enrolled for a holder of the caller's venue only, for that venue's face
        # terminals only: a face token can't be bound to a stranger's tickets, nor
        # tell who holds tickets elsewhere, nor touch another venue's enrolment
        venue = venue_of(st, args).id
        fk = face_key(st, args.get("face_token"))
        id_number = args.get("id_number")
        if id_number is None:
            if f"{venue}\0{fk}" not in st.faces:
                raise NotFound("no such face token enrolled", field="face_token")
            hk = None
        elif not isinstance(id_number, str) or not 6 <= len(id_number) <= 32 \
                or not id_number.isalnum():
            raise InvalidArgument("must be an ID number", field="id_number")
        else:
            hk = holder_key(st, id_number)
            if not holds_in(st, hk, venue):
                raise NotFound(f"the holder has no ticket of venue {venue}", field="id_number")
    key = f"{venue}\0{fk}" if venue else fk
    if hk is None:
        st.faces.pop(key, None)
    else:
        st.faces[key] = hk
    st.journal(json_record(Record.FACE, {"venue": venue, "face_key": fk, "holder_key": hk}), Record.FACE)
    if st.replaying:
        return None
    id_number = args.get("id_number")
    return FaceResult(hk is not None, mask_id(id_number.upper()) if id_number else "",
                      holds_in(st, hk, args["venue"]) if hk else 0)


def holds_in(st: ShardState, hk: str, venue: str) -> int:
    """How many tickets of `venue` the holder has."""
    return sum(st.product_list[st.tickets.record(t)["product"]].venue == venue
               for t in st.holders.get(hk, ()))
