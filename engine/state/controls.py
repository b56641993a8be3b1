"""Live controls of a venue (一键管控) and its flow alert settings (客流预警).

An operator steers the day with four settings, each one CONTROL command, journaled as
the setting it made (a CONTROL record, format 5) and kept in the snapshot's meta:

- sales paused for the whole venue, a zone (every slot of it) or one slot: a Quote, a
  Hold or a Change that would take stock of such a slot is refused SALES_PAUSED (the
  check sits in sales.hold_lines, the one path all three take). Holds taken before the
  pause may still be confirmed: their buyers are paying.
- entry closed through a zone (every gate of it) or one gate: an entry scan that would
  admit answers ENTRY_CLOSED (native/tickets.pxi; exits pass, offline uploads are facts);
  offline bundles carry the flags, so offline gates follow at their next refresh.
- a zone's live capacity (the flow limit, ZONE_FULL), changed during the day.
- a zone's flow alerts: fill levels in percent of its live capacity and an
  entries-per-minute rate, which engine/live.py raises and clears.

Replay applies the record as it is (the setting is the effect).
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from ..errors import CorruptData, InvalidArgument, SalesPaused
from ..journal import Record, json_record
from ..model import LiveControls, ZoneControl
from .catalog import find, venue_of
from .validate import arg, int_arg

if TYPE_CHECKING:
    from .core import ShardState

WHATS = ("sales", "entry", "capacity", "alerts")
MAX_LEVELS = 4
MAX_RATE = 10_000_000


def _empty() -> dict[str, Any]:
    return {"sales": set(), "entry": set(), "capacity": {}, "alerts": {}}


def of(st: ShardState, venue: str) -> dict[str, Any]:
    """The controls of `venue`: sales (set of "" for the venue, "zone:Z", "slot:S"),
    entry (set of "zone:Z", "gate:G"), capacity (zone -> live capacity set here),
    alerts (zone -> {"fill_pct": [...], "rate": n})."""
    c = st.controls.get(venue)
    if c is None:
        c = st.controls[venue] = _empty()
    return c


def set_control(st: ShardState, args: dict, now: int) -> LiveControls:
    """Validate one CONTROL command and apply it; returns the venue's controls."""
    v = venue_of(st, args)
    what = arg(args, "what", str)
    if what not in WHATS:
        raise InvalidArgument(f"must be one of {', '.join(WHATS)}", field="what")
    r: dict[str, Any] = {"venue": v.id, "what": what}
    allowed = {"venue", "what"}
    if what == "sales":
        zone, slot = args.get("zone"), args.get("slot")
        allowed |= {"zone", "slot", "paused"}
        if zone is not None and slot is not None:
            raise InvalidArgument("a zone or a slot, not both", field="slot")
        if zone is not None:
            r["zone"] = find(st, "zone", st.zone_idx, v.id, zone, "zone")[1]
        elif slot is not None:
            r["slot"] = find(st, "slot", st.slot_idx, v.id, slot, "slot")[1]
        r["paused"] = arg(args, "paused", bool)
    elif what == "entry":
        zone, gate = args.get("zone"), args.get("gate")
        allowed |= {"zone", "gate", "closed"}
        if (zone is None) == (gate is None):
            raise InvalidArgument("a zone or a gate (one of them)", field="zone")
        if zone is not None:
            r["zone"] = find(st, "zone", st.zone_idx, v.id, zone, "zone")[1]
        else:
            r["gate"] = find(st, "gate", st.gate_idx, v.id, gate, "gate")[1]
        r["closed"] = arg(args, "closed", bool)
    else:
        allowed.add("zone")
        r["zone"] = find(st, "zone", st.zone_idx, v.id, args.get("zone"), "zone")[1]
        if what == "capacity":
            allowed.add("live_capacity")
            r["live_capacity"] = int_arg(args, "live_capacity", 0, 10**9)
        else:
            allowed |= {"fill_pct", "rate"}
            levels = arg(args, "fill_pct", list, [])
            if len(levels) > MAX_LEVELS:
                raise InvalidArgument(f"at most {MAX_LEVELS} levels", field="fill_pct")
            for i, x in enumerate(levels):
                if type(x) is not int or not 1 <= x <= 100:
                    raise InvalidArgument("must be 1 to 100 (percent)", field=f"fill_pct[{i}]")
                if i and x <= levels[i - 1]:
                    raise InvalidArgument("levels must rise", field=f"fill_pct[{i}]")
            r["fill_pct"] = list(levels)
            r["rate"] = int_arg(args, "rate", 0, MAX_RATE, 0)
    for name in args:
        if name not in allowed:
            raise InvalidArgument("not a field of this control", field=name)
    apply(st, r)
    return live_controls(st, v.id)


def apply(st: ShardState, r: dict) -> None:
    """Apply a CONTROL setting (live or replayed) and journal it."""
    venue, what = r["venue"], r["what"]
    if venue not in st.venues:
        raise CorruptData(f"a control of venue {venue}, which the shard does not have")
    c = of(st, venue)
    if what == "sales":
        key = f"zone:{r['zone']}" if "zone" in r else f"slot:{r['slot']}" if "slot" in r else ""
        (c["sales"].add if r["paused"] else c["sales"].discard)(key)
    elif what == "entry":
        key = f"zone:{r['zone']}" if "zone" in r else f"gate:{r['gate']}"
        (c["entry"].add if r["closed"] else c["entry"].discard)(key)
        _entry_to_core(st, venue, key, r["closed"])
    elif what == "capacity":
        c["capacity"][r["zone"]] = r["live_capacity"]
        _capacity_to_core(st, venue, r["zone"], r["live_capacity"])
    elif what == "alerts":
        if r["fill_pct"] or r["rate"]:
            c["alerts"][r["zone"]] = {"fill_pct": list(r["fill_pct"]), "rate": r["rate"]}
        else:
            c["alerts"].pop(r["zone"], None)
    else:
        raise CorruptData(f"a control of unknown kind {what!r}")
    st.journal(json_record(Record.CONTROL, r), Record.CONTROL)


def _entry_to_core(st: ShardState, venue: str, key: str, closed: bool) -> None:
    kind, _, id_ = key.partition(":")
    index = st.zone_idx if kind == "zone" else st.gate_idx
    if (venue, id_) not in index:
        raise CorruptData(f"a control of {kind} {id_}, which venue {venue} does not have")
    st.tickets.set_entry_closed(kind == "gate", index[(venue, id_)], closed)


def _capacity_to_core(st: ShardState, venue: str, zone: str, cap: int) -> None:
    z = st.zones.get((venue, zone))
    if z is None:
        raise CorruptData(f"a capacity of zone {zone}, which venue {venue} does not have")
    z = st.zones[(venue, zone)] = dataclasses.replace(z, live_capacity=cap)
    st.tickets.set_zone(st.zone_idx[(venue, zone)], st.venue_idx[venue],
                        st.venues[venue].utc_offset_s, cap, z.enforce_exit)


def replay_control(st: ShardState, r: dict, fmt: int) -> None:
    """A CONTROL record (format 5): the setting as made."""
    apply(st, r)


def check_sale(st: ShardState, venue: str, zone: str, slot: str, field: str) -> None:
    """SalesPaused if sales of the venue, `zone` or `slot` are paused."""
    c = st.controls.get(venue)
    if c is None or not c["sales"]:
        return
    paused = c["sales"]
    if "" in paused or f"zone:{zone}" in paused or f"slot:{slot}" in paused:
        what = ("venue " + venue if "" in paused else
                "zone " + zone if f"zone:{zone}" in paused else "slot " + slot)
        raise SalesPaused(f"sales of {what} are paused by an operator", field=field)


def entry_closed(st: ShardState, venue: str, zone: str, gate: str | None = None) -> bool:
    """Is entry through `zone` (or through `gate` of it) closed?"""
    c = st.controls.get(venue)
    if c is None:
        return False
    return f"zone:{zone}" in c["entry"] or (gate is not None and f"gate:{gate}" in c["entry"])


def dump(st: ShardState) -> dict[str, Any]:
    return {v: {"sales": sorted(c["sales"]), "entry": sorted(c["entry"]),
                "capacity": c["capacity"], "alerts": c["alerts"]}
            for v, c in st.controls.items()}


def load(st: ShardState, saved: dict[str, Any]) -> None:
    """The controls of a snapshot's meta (none before format 5), pushed to the core."""
    st.controls = {}
    for venue, c in saved.items():
        mine = of(st, venue)
        mine["sales"] = set(c["sales"])
        mine["entry"] = set(c["entry"])
        mine["alerts"] = {z: dict(a) for z, a in c["alerts"].items()}
        for key in mine["entry"]:
            _entry_to_core(st, venue, key, True)
        for zone, cap in c["capacity"].items():
            mine["capacity"][zone] = cap
            _capacity_to_core(st, venue, zone, cap)


def live_controls(st: ShardState, venue: str) -> LiveControls:
    """A venue's controls as set (controls.py), in zone order."""
    c = of(st, venue)

    def ids(prefix: str, keys: set) -> tuple[str, ...]:
        return tuple(sorted(k[len(prefix):] for k in keys if k.startswith(prefix)))

    zones = []
    for z in st.zones.values():
        if z.venue == venue:
            a = c["alerts"].get(z.id, {"fill_pct": [], "rate": 0})
            zones.append(ZoneControl(z.id, z.live_capacity, tuple(a["fill_pct"]), a["rate"]))
    return LiveControls(venue, "" in c["sales"], ids("zone:", c["sales"]), ids("slot:", c["sales"]),
                        ids("zone:", c["entry"]), ids("gate:", c["entry"]), tuple(zones))
