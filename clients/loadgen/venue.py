"""The venue under load, read and set up through the API before and after a run: its
shard, catalog and stock; tickets bought through SalesService; reports and the audit log
for the checks.

Every call goes through clients.base (one `Connection` per API key: routing by venue or
shard, deadlines, retries of what is safe to repeat) and the role clients over it
(clients.admin, clients.channel, clients.reports). The load itself runs on grpc.aio
(load.py).
"""
from __future__ import annotations

import datetime as _dt
import time
from typing import Callable, Sequence, TypeVar

import grpc
from turnstile.v1 import admin_pb2

from ..admin import AdminClient, SlotSpec
from ..base import ApiError, Connection
from ..channel import ChannelClient, Item
from ..reports import ReportsClient
from .checks import IN, OUT
from .results import QUIET, Progress
from .target import CALL_TIMEOUT, MAX_QTY, SETUP_TIMEOUT, LoadgenError, Target, check_address

T = TypeVar("T")


def _epoch_day(date: _dt.date) -> int:
    return (date - _dt.date(1970, 1, 1)).days


def _call(name: str, fn: Callable[[], T]) -> T:
    """fn(), its failure a LoadgenError that names the call."""
    try:
        return fn()
    except ApiError as e:
        raise LoadgenError(f"{name} failed: {e.code.name}: {e.message}") from None


class Venue:
    """The venue's shard, catalog and stock, read and set up through blocking calls.

    `address` is where the venue's shard listens (checked like the target's); `conn` is
    the connection of `Keys.any()` (the admin key, else the gate key, else the first
    sales key), which also makes the grpc.aio channels of the loads that send several
    keys; `connection(key)` gives the connection of any other key."""

    def __init__(self, target: Target):
        self.target = target
        self.keys = target.keys
        self.venue = target.venue
        key = self.keys.any()
        self._conns: dict[tuple[str, float], Connection] = {}
        try:
            self.conn = self.connection(key)
            try:
                m = self.conn.shard_map()
            except ApiError as e:
                raise LoadgenError(f"{target.address}: GetShardMap failed: {e.code.name} "
                                   f"{e.message}") from None
            if self.venue not in m.venues:
                raise LoadgenError(f"no venue {self.venue!r} in the shard map of {target.address} "
                                   f"(venues: {', '.join(sorted(m.venues)) or 'none'})")
            self.shard = m.venues[self.venue]
            if self.shard not in m.shards:
                raise LoadgenError(f"shard {self.shard} of venue {self.venue} has no address")
            self.address = check_address(self.conn.address_of(venue=self.venue), target.allow_remote)
            cat = _call("GetCatalog", lambda: AdminClient(self.conn).catalog(self.venue))
        except BaseException:
            self.close()
            raise
        self.utc_offset_s = cat.venue.utc_offset_s
        self.zones = {z.zone_id: z for z in cat.zones}
        self.gates = list(cat.gates)
        self.products = {p.product_id: p for p in cat.products}

    def connection(self, key: str, timeout: float = CALL_TIMEOUT) -> Connection:
        """The connection of `key` whose calls have the deadline `timeout`, made once."""
        conn = self._conns.get((key, timeout))
        if conn is None:
            conn = self._conns[key, timeout] = self.target.connect(key, timeout)
        return conn

    def close(self) -> None:
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()

    def __enter__(self) -> "Venue":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _admin(self) -> AdminClient:
        return AdminClient(self.connection(self.keys.need("admin")))

    # the catalog ------------------------------------------------------------------------------
    def today(self) -> _dt.date:
        return _dt.datetime.fromtimestamp(time.time() + self.utc_offset_s, _dt.timezone.utc).date()

    def day_start(self, date: _dt.date) -> int:
        """UTC seconds of the venue-local midnight starting `date`."""
        return _epoch_day(date) * 86400 - self.utc_offset_s

    def product(self, product: str | None = None, zone: str | None = None):
        """The product to sell: the one named, or the first that admits one zone (`zone`
        if given), needs no holder, admits one person and is sold to every channel."""
        if product:
            p = self.products.get(product)
            if p is None:
                raise LoadgenError(f"no product {product!r} in venue {self.venue} "
                                   f"(products: {', '.join(self.products)})")
            if len(p.zone_ids) != 1:
                raise LoadgenError(f"product {product} admits {len(p.zone_ids)} zones; pick one "
                                   f"that admits one")
            if zone and p.zone_ids[0] != zone:
                raise LoadgenError(f"product {product} does not admit zone {zone}")
            return p
        for p in self.products.values():
            if (len(p.zone_ids) == 1 and not p.real_name and not p.channels
                    and (zone is None or p.zone_ids[0] == zone)):
                return p
        raise LoadgenError(f"no product in venue {self.venue} that admits one zone"
                           f"{' (' + zone + ')' if zone else ''}, sold to every channel, "
                           f"without real names; name one (--product)")

    def gate_ids(self, zone: str, direction: int, gate: str | None = None) -> list[str]:
        """Gates of `zone` that scan `direction` (or the one named)."""
        want = {IN: (admin_pb2.GATE_IN, admin_pb2.GATE_BOTH),
                OUT: (admin_pb2.GATE_OUT, admin_pb2.GATE_BOTH)}[direction]
        if gate:
            g = next((g for g in self.gates if g.gate_id == gate), None)
            if g is None:
                raise LoadgenError(f"no gate {gate!r} in venue {self.venue}")
            if g.zone_id != zone or g.mode not in want:
                raise LoadgenError(f"gate {gate} does not scan {'in' if direction == IN else 'out'} "
                                   f"of zone {zone}")
            return [gate]
        return [g.gate_id for g in self.gates if g.zone_id == zone and g.mode in want]

    # stock --------------------------------------------------------------------------------------
    def availability(self, date: _dt.date, zone: str, key: str | None = None) -> list[dict]:
        shop = ChannelClient(self.connection(key or self.keys.admin or self.keys.need("sales")))
        return [_stock(s) for s in _call("Availability", lambda: shop.availability(
            self.venue, date, zone=zone))]

    def slot(self, slot: str, date: _dt.date, zone: str, key: str | None = None) -> dict:
        for s in self.availability(date, zone, key):
            if s["slot"] == slot:
                return s
        raise LoadgenError(f"no slot {slot!r} of zone {zone} on {date} (give the slot's --date)")

    def create_slot(self, slot: str, zone: str, date: _dt.date, capacity: int) -> None:
        start = self.day_start(date)
        admin = self._admin()
        _call("CreateSlots", lambda: admin.create_slots(self.venue, [SlotSpec(
            slot, zone, date, start, start + 86400, capacity)], key=f"{slot}-create"))

    def buy(self, n: int, product, date: _dt.date, run: str, *, short_codes: bool = False,
            progress: Progress = QUIET) -> list[tuple[int, str, int]]:
        """Buy n tickets of `product` on `date` through SalesService Hold + Confirm (the
        first sales key), slot after slot of its zone (skipping those the server says are
        over); (ticket id, code, scan time) each, the scan time inside the ticket's slot."""
        key = self.keys.need("sales")
        shop = ChannelClient(self.connection(key, SETUP_TIMEOUT))
        zone = product.zone_ids[0]
        out: list[tuple[int, str, int]] = []
        progress.phase("buying tickets", n)
        k = 0
        for attempt in range(3):
            slots = self.availability(date, zone, key)
            if attempt == 0 and sum(s["remaining"] for s in slots) < n:
                raise LoadgenError(
                    f"only {sum(s['remaining'] for s in slots):,} tickets left for this channel "
                    f"on {date} in zone {zone}; lower the count or pick another date")
            for s in slots:
                left = s["remaining"]
                while left > 0 and len(out) < n:
                    q = min(left, n - len(out), MAX_QTY)
                    order = f"lg-{run}-buy-{k}"
                    try:
                        h = shop.hold(self.venue, [Item(product.product_id, s["slot"], q)], key=order)
                    except ApiError as e:
                        # sold meanwhile, or over by the server's clock: the next slot
                        if e.reason in ("SOLD_OUT", "SLOT_CLOSED"):
                            break
                        raise LoadgenError(f"Hold failed: {e.code.name}: {e.message}") from None
                    c = _call("Confirm", lambda: shop.confirm(
                        h, order, method="alipay", payment_reference=f"lg-{run}-{k}",
                        short_codes=short_codes))
                    # inside the slot, as near now as it allows: a server takes a scan
                    # time only near its own clock (a test server's may be set elsewhere)
                    edge = min(60, (s["end"] - s["start"]) // 2)
                    at = min(max(int(time.time()), s["start"] + edge), s["end"] - edge)
                    out += [(t.ticket_id, t.code, at) for t in c.tickets]
                    progress.advance(len(c.tickets))
                    left -= q
                    k += 1
                if len(out) >= n:
                    return out
        raise LoadgenError(f"could not buy {n:,} tickets on {date} in zone {zone} "
                           f"(got {len(out):,}); is other traffic selling the same stock?")

    # reports and the audit log (admin; None without an admin key) -------------------------------
    def ticket_counts(self, product: str) -> dict | None:
        if not self.keys.admin:
            return None
        reports = ReportsClient(self.connection(self.keys.admin))
        for p in _call("TicketCounts", lambda: reports.ticket_counts(self.venue)):
            if p.product_id == product:
                return {"issued": p.issued, "used": p.used, "voided": p.voided}
        raise LoadgenError(f"no product {product} in TicketCounts")

    def live_counts(self, date: _dt.date, zone: str) -> dict | None:
        """Tickets entered on `date` in `zone`, and persons inside now if `date` is the
        server's today at the venue (else inside is None)."""
        if not self.keys.admin:
            return None
        reports = ReportsClient(self.connection(self.keys.admin))
        out = {}
        for d in (date, None):
            r = _call("LiveCounts", lambda: reports.live_counts(self.venue, d))
            z = next((z for z in r.zones if z.zone_id == zone), None)
            if z is None:
                raise LoadgenError(f"no zone {zone} in LiveCounts")
            if d:
                out["entered"] = z.entered_tickets
            else:
                out["inside"] = z.inside if r.date == date else None
        return out

    def audit_end(self) -> int | None:
        """The last audit record's seq on the venue's shard (AdminService.QueryAudit;
        None if not allowed)."""
        if not self.keys.admin:
            return None
        admin = AdminClient(self.connection(self.keys.admin))

        def after(seq: int) -> bool:          # is there a record after seq?
            return bool(admin.query_audit(self.shard, after_seq=seq, limit=1))
        try:
            lo, hi = 0, 1
            while after(hi):
                lo, hi = hi, hi * 2
            while hi - lo > 1:          # after(lo) or lo == 0; not after(hi)
                mid = (lo + hi) // 2
                lo, hi = (mid, hi) if after(mid) else (lo, mid)
            return hi if after(lo) else lo
        except ApiError as e:
            if e.code == grpc.StatusCode.PERMISSION_DENIED:
                return None
            raise LoadgenError(f"QueryAudit failed: {e.code.name}: {e.message}") from None

    def principals(self, api_keys: Sequence[str]) -> set[str]:
        """The principals of API keys (tsk_<key id>_<secret>), as the admin lists them."""
        ids = {k.split("_")[1] for k in api_keys if k.count("_") >= 2}
        admin = self._admin()
        return {k.principal_id for k in _call("ListApiKeys", admin.list_api_keys) if k.key_id in ids}

    def audited(self, after_seq: int, principals: set[str], method: str) -> list[str]:
        """Results of the audited calls of `method` by `principals` after record
        `after_seq`, in the order the venue's shard applied them. (Request digests are
        keyed by the shard, so they can't be matched to requests here.)"""
        admin = self._admin()
        out: list[str] = []
        seq = after_seq
        while True:
            records = _call("QueryAudit", lambda: admin.query_audit(self.shard, after_seq=seq,
                                                                    limit=1000))
            if not records:
                return out
            out += [rec.result for rec in records
                    if rec.method == method and rec.principal_id in principals]
            seq = records[-1].seq


def _stock(s) -> dict:
    """A slot's stock (clients.channel.SlotAvailability) as a plain record, times in UTC
    seconds."""
    return {"slot": s.slot_id, "zone": s.zone_id, "date": s.date.isoformat(),
            "start": int(s.start.timestamp()), "end": int(s.end.timestamp()),
            "capacity": s.capacity, "sold": s.sold, "held": s.held, "remaining": s.remaining,
            "pool_remaining": s.pool_remaining,
            "allotments": {a.channel: {"capacity": a.capacity, "sold": a.sold, "held": a.held}
                           for a in s.allotments}}
