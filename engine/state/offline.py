"""Uploads of offline gates (DESIGN.md 6): the scans a gate decided on its own, decided
again here as facts, once per gate and nonce, with conflicts kept for review."""
from __future__ import annotations

import json
from typing import TYPE_CHECKING

from ..errors import CorruptData, InvalidArgument
from ..journal import Record, json_record
from ..model import REASON_OF, Direction, Reason, UploadResult
from .catalog import find, venue_arg
from .retry import get_retry, put_retry
from .scans import offline_key
from .validate import U16, arg, ident_arg, int_arg, text_arg

if TYPE_CHECKING:
    from .core import ShardState


def upload(st: ShardState, args: dict, now: int) -> list[UploadResult]:
    """Scans an offline gate made, uploaded once it is back online.

    They are facts: each is decided again in scan-time order (live capacity aside:
    the persons are inside), so used/inside and the head counts catch up. A scan the
    gate admitted but the server refuses (most often: the ticket was admitted at
    another gate too) is recorded as a conflict. Idempotent by gate and nonce: a scan
    uploaded twice is applied once and answered DUPLICATE with its first result."""
    g = st.gate_idx[find(st, "gate", st.gate_idx, venue_arg(st, args), args.get("gate"), "gate")]
    gate_def = st.gate_list[g]
    gate, venue = gate_def.id, gate_def.venue
    items = arg(args, "scans", list)
    if not 1 <= len(items) <= 10_000:
        raise InvalidArgument("between 1 and 10000 scans at once", field="scans")
    scans = []
    for i, s in enumerate(items):
        try:
            nonce = ident_arg(s, "nonce")
            direction = int_arg(s, "direction", 1, 2)
            scan = (int_arg(s, "at", 0, 2**40 - 1), int_arg(s, "seq", 0, 2**63 - 1), nonce,
                    text_arg(s, "code", limit=512), direction, int_arg(s, "persons", 0, U16, 0),
                    int_arg(s, "admitted", 0, U16), int_arg(s, "reason", 0, len(Reason) - 1))
        except InvalidArgument as e:
            raise InvalidArgument(e.message, field=f"scans[{i}].{e.field}") from None
        if not st.gate_mode[g] & direction:
            raise InvalidArgument(f"gate {gate} does not scan {Direction(direction).name}",
                                  field=f"scans[{i}].direction")
        scans.append((scan, i))
    results: list[UploadResult | None] = [None] * len(scans)
    applied, seen = [], {}
    tickets = st.tickets
    tickets.facts = True
    try:
        for (at, seq, nonce, code, direction, persons, admitted, offline_reason), i \
                in sorted(scans, key=lambda x: x[0][:2]):
            key = offline_key(gate_def, nonce)
            first = seen.get(nonce) if not st.replaying else None
            if first is None and not st.replaying:
                # rows from before per-venue gate ids were keyed by the bare gate id
                row = get_retry(st, key) or get_retry(st, f"offline/{gate}/{nonce}".encode())
                first = json.loads(row) if row is not None else None
            if first is not None:
                results[i] = UploadResult.from_dict({**first, "status": "DUPLICATE"})
                continue
            reason, base, k = tickets.verify(st.codec.core, code, st.shard_id, g,
                                             direction, at, persons)
            conflict = admitted > 0 and not REASON_OF[reason].admitted
            res = {"nonce": nonce, "status": "CONFLICT" if conflict else "APPLIED",
                   "reason": reason, "ticket_id": base, "persons": k}
            seen[nonce] = res
            results[i] = UploadResult.from_dict(res)
            put_retry(st, key, json.dumps(res).encode())
            if conflict:
                st.put_row(f"conflict/{venue}/{at:012d}/{gate}/{nonce}".encode(), json.dumps({
                    "venue": venue, "gate": gate, "nonce": nonce, "seq": seq, "at": at,
                    "ticket_id": base, "direction": direction, "persons": admitted,
                    "offline_reason": offline_reason, "server_reason": reason}).encode())
            # format 2: the decision, never the code (journal.py)
            applied.append({"nonce": nonce, "seq": seq, "direction": direction, "at": at,
                            "persons": persons, "admitted": admitted, "reason": offline_reason,
                            "ticket": base, "result": reason, "k": k})
    finally:
        tickets.facts = False
    if applied:
        st.journal(json_record(Record.OFFLINE_SCANS, {"venue": venue, "gate": gate, "scans": applied}),
                   Record.OFFLINE_SCANS)
    return results


def replay_upload(st: ShardState, args: dict, fmt: int) -> None:
    """An OFFLINE_SCANS record. Format 2 carries each scan's decision (ticket, reason,
    persons): it is applied as decided, at the gate's time, never decided again; a
    refusal changes nothing, an admission must let in the persons the journal says
    (CorruptData if it does not fit the state). Format 1 carries only the codes and the
    gate's claims: they are decoded and decided again, as format 1 replayed them."""
    if fmt < 2:
        upload(st, args, 0)
        return
    g = st.gate_idx.get((args["venue"], args["gate"]))
    if g is None:
        raise CorruptData(f"an offline upload names gate {args['gate']} of {args['venue']}, "
                          "which does not exist")
    apply_scan = st.tickets.apply_scan
    for s in args["scans"]:
        base, result = s["ticket"], s["result"]
        if base < 0:
            if result not in (Reason.FORGED, Reason.UNKNOWN):
                raise CorruptData(f"an offline scan of no ticket is journaled as {result}")
            continue
        if apply_scan(base, g, s["direction"], s["at"], s["persons"], result) != s["k"]:
            raise CorruptData(f"a journaled offline scan of ticket {base} does not fit the state")
    st.journal(json_record(Record.OFFLINE_SCANS, args), Record.OFFLINE_SCANS)
