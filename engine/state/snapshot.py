"""Snapshots: the state as blobs (the catalog as its records, bitmaps, counters, holds),
written by Storage.write_snapshot and loaded on open before the journal after it is
replayed."""
from __future__ import annotations

import heapq
import json
from typing import TYPE_CHECKING

from ..journal import Batch

if TYPE_CHECKING:
    from .core import ShardState


def dump(st: ShardState) -> dict[str, bytes]:
    slots, allots = st.slots.dump()
    t = st.tickets.dump()
    meta = {
        "next_hold_id": st.next_hold_id,
        "holds": list(st.holds.values()),
        "holders": st.holders,
        "faces": st.faces,
        "zones_inside": t["zones_inside"],
        "entered_days": sorted(t["entered"]),
    }
    # sort_keys: a replayed hold must serialise exactly like the live one
    out = {"catalog": b"".join(st.catalog_log), "slots": slots, "allots": allots,
           "meta": json.dumps(meta, sort_keys=True).encode(), "records": t["records"]}
    for name in ("used", "inside", "voided", "blocked"):
        out["bm." + name] = t[name]
    for d, b in t["entered"].items():
        out[f"entered.{d}"] = b
    return out


def load(st: ShardState, blobs: dict[str, bytes]) -> None:
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
    })
    st.next_hold_id = meta["next_hold_id"]
    st.holds = {h["id"]: h for h in meta["holds"]}
    st.expiry = [(h["expires_at"], h["id"]) for h in st.holds.values()]
    heapq.heapify(st.expiry)
    st.holders = {k: list(v) for k, v in meta["holders"].items()}
    st.faces = dict(meta.get("faces", {}))
