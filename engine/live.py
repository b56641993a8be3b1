"""The live view of a venue (客流监控): counts, gates, alerts, sales, controls.

Counts come from the core as they stand: persons inside per zone, today's passages per
zone (the flow counters of every gate of it), and the persons admitted per 10 seconds
over the last 64 minutes (Tickets.zone_ticks), from which the last minute's entries and
a per-minute series are added up. Sales are the finance ledger's rows of the day per
channel. None of it is a scan of tickets or orders.

What the shard's state does not hold lives here, in the shard process's memory:

- gate heartbeats (GateService.Heartbeat): the gate's own report (online or offline,
  its bundle, its queue, its last scan) and when it was heard. Not journaled: after a
  restart a gate is known again from its next heartbeat, and shows "unknown" until then;
- open alerts, re-decided at every view from the counts and the zone's settings
  (controls.py): a fill alert at the highest level reached (back a level only once the
  zone is 5 points below it, so a zone at the line does not flap), a rate alert while
  the last minute's entries reach the rate, a gate alert while a gate heard from before
  has been silent longer than `gate_down_after_s`. An alert keeps the time it was raised
  (or rose to its level) while it stays open.

A view is cached until the shard commits, a heartbeat arrives or the second changes; a
watcher that takes a view up to `max_age_s` old (WatchLive: 0.1 s) gets the cached one
through a storm of scans, so any number of watchers of a venue cost at most one
computation per change and per `max_age_s`.
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import numpy as np

from .errors import InvalidArgument, NotFound
from .model import Alert, ChannelSales, GateLive, GateStatus, LiveView, ZoneLive
from .state import controls, finance
from .state.controls import live_controls
from .state.catalog import find

if TYPE_CHECKING:
    from .state import ShardState

log = logging.getLogger("turnstile.live")

TICK_S = 10                     # native/tickets.pxi: persons admitted per TICK_S seconds
HYSTERESIS_PCT = 5              # a fill alert falls back a level this far below it
MAX_QUEUED = 10_000_000
MAX_VERSION = 64


class LiveBoard:
    """Gate heartbeats, open alerts and the cached views of one shard's venues."""

    def __init__(self, state: ShardState, *, gate_down_after_s: int = 30):
        if gate_down_after_s < 1:
            raise ValueError("gate_down_after_s must be at least 1")
        self.state = state
        self.gate_down_after_s = gate_down_after_s
        self.gates: dict[tuple[str, str], GateStatus] = {}
        self.alerts: dict[str, dict[str, Alert]] = {}
        self._heard = 0                     # heartbeats taken: a view depends on them
        self._cache: dict[str, tuple[tuple, LiveView, float]] = {}

    # -- heartbeats ------------------------------------------------------------------------
    def heartbeat(self, venue: str, gate: str, now: int, *, offline: bool = False,
                  bundle_cut_at: int = 0, queued: int = 0, last_scan: int = 0,
                  version: str = "") -> bool:
        """Take a gate's heartbeat; True if entry through it is closed now."""
        st = self.state
        key = find(st, "gate", st.gate_idx, venue, gate, "gate")
        if not 0 <= queued <= MAX_QUEUED:
            raise InvalidArgument(f"must be 0 to {MAX_QUEUED}", field="queued_scans")
        if len(version) > MAX_VERSION or not version.isprintable():
            raise InvalidArgument(f"at most {MAX_VERSION} printable characters", field="version")
        for name, t in (("bundle_cut_at", bundle_cut_at), ("last_scan", last_scan)):
            if not 0 <= t < 2**40:
                raise InvalidArgument("must be UTC seconds", field=name)
        self.gates[key] = GateStatus(now, offline, bundle_cut_at, queued, last_scan, version)
        self._heard += 1
        return controls.entry_closed(st, venue, st.gates[key].zone, gate)

    # -- the view --------------------------------------------------------------------------
    def view(self, venue: str, now: int, seq: int, max_age_s: float = 0.0) -> LiveView:
        """The live view of `venue` at `now` (UTC seconds), the shard at batch `seq`: the
        one taken last if nothing changed since (batch, heartbeats, second), or if it is
        less than `max_age_s` old and no heartbeat came since (a storm of scans moves the
        batch on every few milliseconds: watchers share one view per max_age_s)."""
        st = self.state
        v = st.venues.get(venue)
        if v is None:
            raise NotFound(f"no venue {venue}", field="venue_id")
        stamp = (seq, self._heard, now)
        hit = self._cache.get(venue)
        if hit is not None and (hit[0] == stamp or (
                hit[0][1] == self._heard and time.monotonic() - hit[2] < max_age_s)):
            return hit[1]
        day = (now + v.utc_offset_s) // 86400
        ctl = controls.of(st, venue)
        zones = self._zones(venue, day, now, ctl)
        gates = self._gates(venue, now, ctl)
        out = LiveView(venue, day, now, zones, gates, self._alerts(venue, now, zones, gates, ctl),
                       self._sales(venue, day), live_controls(st, venue))
        self._cache[venue] = (stamp, out, time.monotonic())
        return out

    def _zones(self, venue: str, day: int, now: int, ctl: dict) -> tuple[ZoneLive, ...]:
        st = self.state
        t = st.tickets
        passed: dict[int, np.ndarray] = {}
        flow = t.flow_counts(day)
        if flow is not None:
            # per gate: entries, re-entries, exits over the day's 24 hours (flow layout:
            # native/tickets.pxi)
            g_n, _, counts = flow
            per_gate = np.frombuffer(counts, dtype=np.int64)[2:2 + g_n * 72].reshape(g_n, 24, 3).sum(axis=1)
            for gi, gate in enumerate(st.gate_list[:g_n]):
                if gate.venue == venue:
                    zi = st.zone_idx[(venue, gate.zone)]
                    passed[zi] = passed.get(zi, 0) + per_gate[gi]
        out = []
        venue_paused = "" in ctl["sales"]
        minute_of: np.ndarray | None = None
        for key, z in st.zones.items():
            if z.venue != venue:
                continue
            zi = st.zone_idx[key]
            ticks = np.frombuffer(t.zone_ticks(zi, now), dtype=np.int64)
            if minute_of is None:
                # the minute (0: 59 minutes ago .. 59: this one) of each bucket, or -1
                first = now // TICK_S - len(ticks) + 1
                minute_of = (first + np.arange(len(ticks))) * TICK_S // 60 - now // 60 + 59
                minute_of[minute_of < 0] = 60
            per_minute = np.bincount(minute_of, weights=ticks, minlength=61)[:60]
            e, r, x = (int(n) for n in passed.get(zi, (0, 0, 0)))
            out.append(ZoneLive(
                z.id, z.name, t.zone_inside(zi, day), z.live_capacity, e, r, x,
                int(ticks[-(60 // TICK_S):].sum()), tuple(int(n) for n in per_minute),
                venue_paused or f"zone:{z.id}" in ctl["sales"], f"zone:{z.id}" in ctl["entry"]))
        return tuple(out)

    def _gates(self, venue: str, now: int, ctl: dict) -> tuple[GateLive, ...]:
        out = []
        for g in self.state.gate_list:
            if g.venue != venue:
                continue
            s = self.gates.get((venue, g.id))
            if s is None:
                state = "unknown"
            elif now - s.heard_at > self.gate_down_after_s:
                state = "down"
            else:
                state = "offline" if s.offline else "up"
            out.append(GateLive(g.id, g.zone, state, s,
                                f"gate:{g.id}" in ctl["entry"] or f"zone:{g.zone}" in ctl["entry"]))
        return tuple(out)

    def _alerts(self, venue: str, now: int, zones: tuple[ZoneLive, ...],
                gates: tuple[GateLive, ...], ctl: dict) -> tuple[Alert, ...]:
        before = self.alerts.get(venue, {})
        now_open: dict[str, Alert] = {}

        def keep(a: Alert) -> None:
            old = before.get(a.id)
            if old is not None and old.level_pct == a.level_pct:
                a = Alert(a.id, a.kind, a.zone, a.gate, a.level_pct, a.value, a.threshold,
                          old.raised_at, a.message)
            else:
                log.warning("venue %s: alert %s: %s", venue, a.id, a.message)
            now_open[a.id] = a

        for z in zones:
            setting = ctl["alerts"].get(z.zone)
            if setting is None:
                continue
            cap = z.live_capacity
            if cap > 0 and setting["fill_pct"]:
                reached = [lv for lv in setting["fill_pct"] if z.inside * 100 >= lv * cap]
                level = reached[-1] if reached else 0
                old = before.get(f"fill:{z.zone}")
                if old is not None and level < old.level_pct and \
                        z.inside * 100 >= (old.level_pct - HYSTERESIS_PCT) * cap:
                    level = old.level_pct
                if level:
                    keep(Alert(f"fill:{z.zone}", "fill", z.zone, "", level, z.inside,
                               -(-level * cap // 100), now,
                               f"{z.name}: {z.inside} of {cap} inside ({z.inside * 100 // cap} %), "
                               f"past the {level} % level"))
            rate = setting["rate"]
            if rate and z.last_minute >= rate:
                keep(Alert(f"rate:{z.zone}", "rate", z.zone, "", 0, z.last_minute, rate, now,
                           f"{z.name}: {z.last_minute} entries in the last minute "
                           f"(alert at {rate})"))
        for g in gates:
            if g.state == "down":
                silent = now - g.status.heard_at
                keep(Alert(f"gate:{g.gate}", "gate", g.zone, g.gate, 0, silent,
                           self.gate_down_after_s, now, f"gate {g.gate} silent for {silent} s"))
        for gone in before.keys() - now_open.keys():
            log.info("venue %s: alert %s cleared", venue, gone)
        self.alerts[venue] = now_open
        return tuple(sorted(now_open.values(), key=lambda a: (a.raised_at, a.id)))

    def _sales(self, venue: str, day: int) -> tuple[ChannelSales, ...]:
        rows, _ = finance.revenue(self.state, venue, day, day, "day", ["channel"])
        sold_t, sold_p = finance.FIELDS.index("sold_tickets"), finance.FIELDS.index("sold_persons")
        return tuple(ChannelSales(cut["channel"], v[sold_t], v[sold_p], v[finance.PAID],
                                  finance.net(v)) for _, cut, v in rows)
