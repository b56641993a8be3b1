"""Snapshots: the state as blobs (the catalog as its records, bitmaps, counters, holds),
written by Storage.write_snapshot and loaded on open before the journal after it is
replayed.

Every blob carries a version: the `versions` blob maps each blob's name (entered.<day>
blobs under "entered") to the version of its layout, and the catalog blob starts with
its FORMAT record as a journal batch does. A snapshot without `versions` is format 1:
every blob of version 1. A blob of a version this build does not read is refused
(CorruptData), never guessed at.
"""
from __future__ import annotations

import heapq
import json
from typing import TYPE_CHECKING

from ..errors import CorruptData
from ..journal import FORMAT, FORMAT_RECORD, Batch, hold_record
from ..model import ActiveHold
from . import controls, finance, members, merchants, promos, seating

# blob -> the version of its layout this build writes (and the newest it reads)
# (meta 2: with the venues' blacklists; 3: with the coupons' use; 4: with the finance
# counters and shifts; 5: with the venues' live controls; a meta of version 1 has none,
# of version 2 no coupons, of 3 no finance: its counters start from the journal after it;
# of 4 no controls: none were set; 6: with the members, their programmes and points, and
# the seat maps, sessions and seats; of 5 none: none were enrolled or set; 7: with the
# merchants; of 6 none: none were set)
VERSIONS = {"catalog": FORMAT, "slots": 1, "allots": 1, "meta": 7, "records": 1,
            "bm.used": 1, "bm.inside": 1, "bm.voided": 1, "bm.blocked": 1, "entered": 1,
            "flow": 1, "by_day": 1}

if TYPE_CHECKING:
    from .core import ShardState


def dump(st: ShardState) -> dict[str, bytes]:
    slots, allots = st.slots.dump()
    t = st.tickets.dump()
    meta = {
        "next_hold_id": st.next_hold_id,
        "holds": [h.to_dict() for h in st.holds.values()],
        "holders": st.holders,
        "faces": st.faces,
        "blacklist": st.blacklist,
        "coupons": promos.dump(st),
        "finance": finance.dump(st),
        "controls": controls.dump(st),
        "members": members.dump(st),
        "seating": seating.dump(st),
        "merchants": merchants.dump(st),
        "zones_inside": t["zones_inside"],
        "entered_days": sorted(t["entered"]),
        "flow_days": sorted(t["flow"]),
    }
    # sort_keys: a replayed hold must serialise exactly like the live one
    out = {"catalog": FORMAT_RECORD + b"".join(st.catalog_log), "slots": slots, "allots": allots,
           "meta": json.dumps(meta, sort_keys=True).encode(), "records": t["records"],
           "versions": json.dumps(VERSIONS, sort_keys=True).encode()}
    for name in ("used", "inside", "voided", "blocked"):
        out["bm." + name] = t[name]
    for d, b in t["entered"].items():
        out[f"entered.{d}"] = b
    for d, b in t["flow"].items():
        out[f"flow.{d}"] = b
    out["by_day"] = finance.dump_by_day(st)
    return out


def versions(blobs: dict[str, bytes]) -> dict[str, int]:
    """The version of every blob of a snapshot (1 for all without a `versions` blob)."""
    raw = blobs.get("versions")
    if raw is None:
        return {name: 1 for name in VERSIONS}
    try:
        got = json.loads(raw)
        return {name: int(got.get(name, 1)) for name in set(VERSIONS) | set(got)}
    except (ValueError, TypeError, AttributeError) as e:
        raise CorruptData(f"the snapshot's versions blob is unreadable: {e}") from e


def load(st: ShardState, blobs: dict[str, bytes]) -> None:
    have = versions(blobs)
    newer = sorted(f"{name} (version {v})" for name, v in have.items()
                   if v > VERSIONS.get(name, 0) or v < 1)
    if newer:
        raise CorruptData(f"the snapshot holds blobs this build does not read: {', '.join(newer)}",
                          hint="open it with the newer build that wrote it")
    batch = Batch(0)
    st.replaying = True
    try:
        st.replay(blobs.get("catalog", b""), batch)
    finally:
        st.replaying = False
    st.slots.load(blobs["slots"], blobs["allots"])
    meta = json.loads(blobs["meta"])
    st.tickets.load({
        "records": blobs["records"], "zones_inside": meta["zones_inside"],
        "used": blobs["bm.used"], "inside": blobs["bm.inside"], "voided": blobs["bm.voided"],
        "blocked": blobs["bm.blocked"],
        "entered": {d: blobs[f"entered.{d}"] for d in meta["entered_days"]},
        # passage counters per day (none in a snapshot older than them: counted from then on)
        "flow": {d: blobs[f"flow.{d}"] for d in meta.get("flow_days", ())},
    })
    st.next_hold_id = meta["next_hold_id"]
    st.holds.clear()
    st.expiry = []
    for d in meta["holds"]:
        h = ActiveHold.from_dict(d)
        st.holds.add(h.id, hold_record(h, st.venue_idx[h.venue]))
        st.expiry.append((h.expires_at, h.id))
    heapq.heapify(st.expiry)
    st.holders = {k: list(v) for k, v in meta["holders"].items()}
    st.faces = dict(meta.get("faces", {}))
    st.blacklist = {v: dict(e) for v, e in meta.get("blacklist", {}).items()}
    promos.load(st, meta.get("coupons", {}))
    finance.load(st, meta.get("finance", {}))
    controls.load(st, meta.get("controls", {}))
    members.load(st, meta.get("members", {}))
    seating.load(st, meta.get("seating", {}))
    merchants.load(st, meta.get("merchants", []))
    finance.load_by_day(st, blobs.get("by_day"))
