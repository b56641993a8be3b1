"""GateClient: what a gate controller (turnstile, handheld, ID-card reader, face
terminal) runs, online and offline (DESIGN.md sections 1 and 6).

Online, each scan is one ``GateService.Verify`` on the shard of the gate's venue, and
the server's decision is the answer. When the server cannot be reached or sheds load
(UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED) the client goes offline by itself and decides with its **offline
bundle** -- the venue's Ed25519 public keys, product rules, gates, slots, the
revocation set and today's used / entered / inside / exhausted ticket sets -- which it
keeps fresh while online (``maintain()``, incrementally: only what changed since the
bundle it holds). Offline it:

* checks the code's Ed25519 signature with the public keys alone (a stolen gate
  cannot mint tickets) and the entry rules, as the server would;
* refuses what the bundle or its own earlier offline scans say is used, inside,
  revoked or exhausted (a second use at the same gate is ALREADY_USED);
* queues every scan (gate, sequence, nonce, time, decision) in a local LMDB file,
  in the same transaction as its own record of what it admitted;
* refuses to decide at all (:class:`GateOffline`) when its bundle is older than
  ``max_bundle_age_s`` (default 4 h), or for ID numbers and face tokens (the
  holder index stays on the server).

While it runs its background thread (:meth:`start`), the gate also tells the server how
it is, every few seconds (``GateService.Heartbeat``, at the interval the server asks for):
online or deciding offline, the age of its bundle, the scans queued, its last scan -- what
the control room's dashboard shows, and how it sees a gate fall silent.

When the server answers again, the queue is uploaded first (``UploadScans``, once per
nonce, however often it is retried), then the bundle is refreshed, then scans go
online again. What the offline rules cannot know is listed in README.md (live
capacity is not enforced offline; a group is admitted whole).

    gate = GateClient("127.0.0.1:50051", key, gate_id="north-1", venue_id="westlake",
                      state_dir="/var/lib/turnstile-gate")
    gate.maintain()                         # fetch the bundle (call every minute or so)
    d = gate.verify(code=qr_text)           # Decision(reason="OK", admitted=True, ...)

Talks gRPC only; never imports the engine.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
import uuid
from typing import Callable

import grpc
import lmdb
from google.protobuf.timestamp_pb2 import Timestamp
from pyroaring import BitMap

from turnstile import ticketcode
from turnstile.v1 import common_pb2, gate_pb2, gate_pb2_grpc

from .base import ApiError, Connection, RetryPolicy, TlsConfig

__all__ = ["Decision", "GateClient", "GateOffline", "IN", "OUT"]
log = logging.getLogger("turnstile.gate")

IN, OUT = common_pb2.IN, common_pb2.OUT
DEFAULT_MAX_BUNDLE_AGE_S = 4 * 3600
# the server cannot answer now: decide offline (RESOURCE_EXHAUSTED: it sheds load)
UNREACHABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                         grpc.StatusCode.RESOURCE_EXHAUSTED})
SETS = ("voided", "blocked", "used", "entered", "inside", "exhausted")


class GateOffline(Exception):
    """The server is unreachable and this scan cannot be decided offline (no bundle, a
    bundle past its age, or a credential only the server can resolve). Show "see staff"."""


@dataclasses.dataclass(frozen=True)
class Decision:
    """The answer to one scan.

    reason: a ScanReason name (``OK``, ``OK_REENTRY``, ``ALREADY_USED``...).
    admitted: True for OK and OK_REENTRY. persons: persons let through.
    ticket_id: the code's ticket id, -1 if unreadable. offline: decided by the gate.
    seat: the ticket's seat in a session, for the usher (online only).
    """

    reason: str
    admitted: bool
    persons: int
    ticket_id: int = -1
    product_id: str = ""
    offline: bool = False
    seat: str = ""


def _admit(b: "_Bundle", gate, reason: int, base: int, comp: int, k: int, product):
    """An admission as the server makes it: ENTRY_CLOSED instead where an operator closed
    entry through the gate or its zone (AdminService.SetEntryClosed, in the bundle)."""
    if gate.entry_closed or b.zones[gate.zone_id].entry_closed:
        return common_pb2.ENTRY_CLOSED, base, comp, 0, product
    return reason, base, comp, k, product


def _ts(t: float) -> Timestamp:
    return Timestamp(seconds=int(t))


class _Bundle:
    """A held bundle, indexed for decisions."""

    def __init__(self, msg: gate_pb2.OfflineBundleResponse):
        self.msg = msg
        self.keys = dict(msg.public_keys)
        self.products = {p.index: p for p in msg.products}
        self.gates = {g.gate_id: g for g in msg.gates}
        self.zones = {z.zone_id: z for z in msg.zones}
        self.slots = {s.index: s for s in msg.slots}
        self.sets = {name: BitMap.deserialize(getattr(msg.sets, name)) if getattr(msg.sets, name)
                     else BitMap() for name in SETS}

    def merged(self, delta: gate_pb2.OfflineBundleResponse) -> gate_pb2.OfflineBundleResponse:
        """This bundle with a delta applied, as a whole bundle message."""
        changed = BitMap.deserialize(delta.sets.changed) if delta.sets.changed else BitMap()
        out = gate_pb2.OfflineBundleResponse()
        out.CopyFrom(delta)
        out.full = True
        out.sets.Clear()
        for name in SETS:
            new = BitMap.deserialize(getattr(delta.sets, name)) if getattr(delta.sets, name) else BitMap()
            setattr(out.sets, name, ((self.sets[name] - changed) | new).serialize())
        return out


class _Local:
    """What this gate admitted or let out offline since its last refresh after an upload
    (entered / put in / let out on `day`; exhausted on any day). Stored as meta rows
    local/<name>."""

    NAMES = ("entered", "put_in", "let_out", "exhausted")

    def __init__(self, txn=None, db=None):
        raw = txn.get(b"local/day", db=db) if txn is not None else None
        self.day = int(raw) if raw else -1
        for name in self.NAMES:
            blob = txn.get(b"local/" + name.encode(), db=db) if raw else None
            setattr(self, name, BitMap.deserialize(blob) if blob else BitMap())

    def store(self, txn, db) -> None:
        txn.put(b"local/day", str(self.day).encode(), db=db)
        for name in self.NAMES:
            txn.put(b"local/" + name.encode(), getattr(self, name).serialize(), db=db)

    @staticmethod
    def clear(txn, db) -> None:
        for name in ("day",) + _Local.NAMES:
            txn.delete(b"local/" + name.encode(), db=db)


class GateClient:
    """A gate controller's client; see the module docstring.

    Args:
        address: ``host:port`` of any shard of the node.
        api_key: a key of a principal with the gate role, scoped to the venue/gate.
        gate_id: this gate (a concentrator may pass another gate per scan).
        venue_id: the gate's venue (routes calls, names the bundle).
        state_dir: a directory of this gate's own (LMDB: the bundle and the queue).
        timeout: deadline of an online scan; past it the gate decides offline.
        max_bundle_age_s: offline, admit nobody with a bundle older than this.
        retry_online_s: offline, how often a scan first tries to get back online.
        tls: a :class:`clients.base.TlsConfig` for TLS / mTLS.
        clock: UTC seconds (tests may pass their own).
        version: the gate software's version, shown to operators with its status.
    """

    def __init__(self, address: str, api_key: str, gate_id: str, venue_id: str, *, state_dir: str,
                 timeout: float = 0.8, max_bundle_age_s: float = DEFAULT_MAX_BUNDLE_AGE_S,
                 retry_online_s: float = 5.0, tls: TlsConfig | None = None,
                 clock: Callable[[], float] = time.time, version: str = ""):
        self.gate_id = gate_id
        self.venue_id = venue_id
        self.max_bundle_age_s = max_bundle_age_s
        self.retry_online_s = retry_online_s
        self.clock = clock
        # reconnect within seconds of the server's return (gRPC's default backoff
        # grows to two minutes, a long time for a queue at a gate)
        self.conn = Connection(address, api_key, tls=tls, timeout=timeout,
                               retry=RetryPolicy(max_attempts=2, initial_backoff_s=0.05,
                                                 total_s=max(2 * timeout, 1.0)),
                               options=[("grpc.initial_reconnect_backoff_ms", 200),
                                        ("grpc.min_reconnect_backoff_ms", 200),
                                        ("grpc.max_reconnect_backoff_ms", 2000)])
        os.makedirs(state_dir, exist_ok=True)
        self._env = lmdb.open(os.path.join(state_dir, "gate.lmdb"), max_dbs=4, map_size=1 << 30,
                              subdir=True)
        self._meta = self._env.open_db(b"meta")
        self._queue = self._env.open_db(b"queue")
        self._rejected = self._env.open_db(b"rejected")
        self._lock = threading.RLock()
        self.online = True
        self._last_try = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_scan = 0.0                 # UTC seconds of the last scan decided (0: none)
        self.heartbeat_s = 10.0              # as the server last asked (HeartbeatResponse)
        self.entry_closed = False            # as the server last said (HeartbeatResponse)
        self.version = version
        with self._env.begin() as txn:
            raw = txn.get(b"bundle", db=self._meta)
            self.bundle = _Bundle(gate_pb2.OfflineBundleResponse.FromString(raw)) if raw else None
            self._local = _Local(txn, self._meta)
            self._seq = int(txn.get(b"seq", b"0", db=self._meta))

    # -- lifecycle -------------------------------------------------------------------
    def close(self) -> None:
        self.stop()
        self.conn.close()
        self._env.close()

    def __enter__(self) -> "GateClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self, every_s: float = 60.0) -> bool:
        """Run :meth:`maintain` once now, then in a background thread every ``every_s``
        seconds -- every ``retry_online_s`` while the server is unreachable -- and send a
        :meth:`heartbeat` now and then every ``heartbeat_s`` (what the server asks for).

        The first run is here, before returning, so a gate holds a bundle from its first
        scan on (a network lost in the first period must not leave it admitting nobody).
        A server that is down does not stop the gate from starting: start() returns
        False and the thread keeps trying. A refusal (a wrong key, an unknown venue)
        raises here, where the installer sees it. Returns :meth:`maintain`'s answer."""
        if self._thread is not None:
            raise RuntimeError("the gate's background thread already runs")
        online = self.maintain()
        self._beat()

        def period() -> float:            # offline, the gate tries again sooner
            return every_s if self.online else min(every_s, self.retry_online_s)

        def loop():
            due = time.monotonic() + period()
            while not self._stop.wait(min(self.heartbeat_s, max(0.0, due - time.monotonic()))):
                if time.monotonic() >= due:
                    try:
                        self.maintain()
                    except Exception:        # a dead thread would leave the bundle to age out
                        log.exception("gate %s: refreshing the bundle failed", self.gate_id)
                    due = time.monotonic() + period()
                self._beat()
        self._stop.clear()
        self._thread = threading.Thread(target=loop, name=f"gate-{self.gate_id}", daemon=True)
        self._thread.start()
        return online

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    # -- state -----------------------------------------------------------------------
    def pending(self) -> int:
        """Offline scans not yet uploaded."""
        with self._env.begin() as txn:
            return txn.stat(self._queue)["entries"]

    def queued(self, limit: int | None = None) -> list[tuple[str, gate_pb2.OfflineScan]]:
        """Offline scans not yet uploaded, oldest first: (gate id, scan)."""
        out = []
        with self._env.begin() as txn:
            for _, v in txn.cursor(db=self._queue):
                gate, _, raw = v.partition(b"\0")
                out.append((gate.decode(), gate_pb2.OfflineScan.FromString(raw)))
                if limit is not None and len(out) >= limit:
                    break
        return out

    def bundle_age(self) -> float | None:
        """Seconds since the server cut the bundle held, or None without one."""
        return None if self.bundle is None else self.clock() - self.bundle.msg.cut_at.seconds

    # -- talking to the server ---------------------------------------------------------
    def _call(self, method: str, request, *, retry: bool):
        return self.conn.call(gate_pb2_grpc.GateServiceStub, method, request, venue=self.venue_id,
                              retry=retry)

    def maintain(self) -> bool:
        """Upload queued offline scans, then refresh the bundle. True if the server
        answered both (the gate is online); False if it is unreachable or shedding load."""
        try:
            self.upload()
            self.refresh()
        except ApiError as e:
            if e.code not in UNREACHABLE:
                raise
            self.online = False
            return False
        self.online = True
        return True

    def heartbeat(self) -> gate_pb2.HeartbeatResponse:
        """Tell the server how this gate is: online or offline, its bundle, the scans
        queued, its last scan. The answer says how often to send it and whether entry
        through the gate is closed now (kept in :attr:`heartbeat_s`, :attr:`entry_closed`)."""
        req = gate_pb2.HeartbeatRequest(venue_id=self.venue_id, gate_id=self.gate_id,
                                        offline=not self.online, queued_scans=self.pending(),
                                        version=self.version)
        if self.bundle is not None:
            req.bundle_cut_at.CopyFrom(self.bundle.msg.cut_at)
        if self.last_scan:
            req.last_scan.CopyFrom(_ts(self.last_scan))
        r = self._call("Heartbeat", req, retry=False)
        self.heartbeat_s = float(max(1, r.interval_s or 10))
        self.entry_closed = r.entry_closed
        return r

    def _beat(self) -> None:
        """A heartbeat from the background thread: an unreachable server is simply not
        told (it sees the gate fall silent); anything else is logged."""
        try:
            self.heartbeat()
        except ApiError as e:
            if e.code not in UNREACHABLE:
                log.warning("gate %s: heartbeat refused: %s", self.gate_id, e)
        except Exception:
            log.exception("gate %s: heartbeat failed", self.gate_id)

    def refresh(self) -> gate_pb2.OfflineBundleResponse:
        """Fetch the bundle: a delta on the one held when the server can give one."""
        held = self.bundle
        req = gate_pb2.OfflineBundleRequest(venue_id=self.venue_id)
        if held is not None:
            req.since_epoch, req.since_version = held.msg.epoch, held.msg.version
        got = self._call("OfflineBundle", req, retry=True)
        with self._lock:
            if self.bundle is not held:          # another refresh won: merge onto nothing stale
                return self.bundle.msg
            whole = got if got.full or held is None else held.merged(got)
            with self._env.begin(write=True) as txn:
                txn.put(b"bundle", whole.SerializeToString(), db=self._meta)
                if txn.stat(self._queue)["entries"] == 0:
                    # every offline scan made before this bundle was cut is uploaded, so
                    # the bundle knows it: the gate's own record of them can go
                    self._local = _Local()
                    _Local.clear(txn, self._meta)
            self.bundle = _Bundle(whole)
            return whole

    def upload(self, batch: int = 1000) -> list[gate_pb2.UploadResult]:
        """Upload the queue, oldest first, one call per gate and batch; scans leave the
        queue once the server has answered for them. An upload cut short is simply
        sent again: the server applies each nonce once (DUPLICATE the next time). A
        batch the server refuses as wrong (say, a gate since removed) moves to
        :meth:`rejected` instead of blocking the queue. Returns the server's results."""
        out = []
        while True:
            with self._env.begin() as txn:
                rows, gate = [], None
                for k, v in txn.cursor(db=self._queue):
                    g, _, raw = v.partition(b"\0")
                    if gate is not None and g != gate:
                        break
                    gate = g
                    rows.append((k, v, gate_pb2.OfflineScan.FromString(raw)))
                    if len(rows) >= batch:
                        break
            if not rows:
                return out
            error = None
            try:
                resp = self._call("UploadScans", gate_pb2.UploadScansRequest(
                    gate_id=gate.decode(), venue_id=self.venue_id, scans=[s for _, _, s in rows]),
                    retry=True)
                out.extend(resp.results)
            except ApiError as e:
                if e.code in UNREACHABLE:
                    raise
                error = str(e).encode()
                log.error("gate %s: the server refused %d offline scans: %s", self.gate_id,
                          len(rows), e)
            with self._env.begin(write=True) as txn:
                for k, v, _ in rows:
                    txn.delete(k, db=self._queue)
                    if error is not None:
                        txn.put(k, error + b"\0" + v, db=self._rejected)

    def rejected(self) -> list[tuple[str, str, gate_pb2.OfflineScan]]:
        """Offline scans the server refused to take (error, gate id, scan): for an
        operator to look at; they are not retried."""
        out = []
        with self._env.begin() as txn:
            for _, v in txn.cursor(db=self._rejected):
                err, _, rest = v.partition(b"\0")
                gate, _, raw = rest.partition(b"\0")
                out.append((err.decode(), gate.decode(), gate_pb2.OfflineScan.FromString(raw)))
        return out

    # -- scanning --------------------------------------------------------------------
    def verify(self, code: str | None = None, *, id_number: str | None = None,
               face_token: str | None = None, face_id_number: str | None = None,
               direction: int = IN, persons: int = 0, gate_id: str | None = None) -> Decision:
        """Decide one scan: a QR ``code``, an ``id_number`` from an ID-card reader, the
        ``face_token`` a face terminal matched (enrolled with
        ``MembersClient.enroll_face``), or the ID number a face terminal that matches
        faces to ID numbers itself reports (``face_id_number``). Online the server
        decides; unreachable, the gate decides from its bundle (codes only).

        Offline, unless :meth:`start` runs a background thread for it, a scan first
        tries to get back online every ``retry_online_s``; queued scans are uploaded
        before any scan goes to the server again.

        Raises GateOffline when it can decide neither way; ApiError when the request
        itself is wrong (unknown gate, a direction the gate does not scan).
        """
        if sum(x is not None for x in (code, id_number, face_token, face_id_number)) != 1:
            raise ValueError("one of code, id_number, face_token, face_id_number")
        gate = gate_id or self.gate_id
        now = self.clock()
        self.last_scan = now
        if not self.online and self._thread is None \
                and time.monotonic() - self._last_try >= self.retry_online_s:
            self._last_try = time.monotonic()
            self.maintain()                      # uploads first, so the server knows
        if self.online and self.pending():
            self.maintain()
        # one id for this scan, online or off: a scan the server decided but whose answer
        # was lost, then queued offline, uploads as a DUPLICATE, not a conflict
        scan_id = uuid.uuid4().hex
        if self.online:
            # the server decides at its time; it takes this gate's within its allowed skew
            req = gate_pb2.VerifyRequest(gate_id=gate, venue_id=self.venue_id, direction=direction,
                                         persons=persons, scan_time=_ts(now), scan_id=scan_id)
            if code is not None:
                req.code = code
            elif face_token is not None:
                req.face_token = face_token
            else:
                req.id_number = id_number if id_number is not None else face_id_number
            try:
                r = self._call("Verify", req, retry=False)
            except ApiError as e:
                if e.code not in UNREACHABLE:
                    raise
                log.warning("gate %s: server unreachable (%s): deciding offline", self.gate_id, e.code.name)
                self.online = False
                self._last_try = time.monotonic()
            else:
                name = common_pb2.ScanReason.Name(r.reason)
                return Decision(name, name in ("OK", "OK_REENTRY"), r.persons, r.ticket_id,
                                r.product_id, seat=r.seat)
        if code is None:
            raise GateOffline("offline: ID numbers and faces are resolved by the server only")
        with self._lock:
            return self._offline(code, gate, direction, persons, now, scan_id)

    def _offline(self, code: str, gate_id: str, direction: int, persons: int, now: float,
                 scan_id: str) -> Decision:
        b = self.bundle
        if b is None:
            raise GateOffline("offline and no bundle: fetch one while online (maintain())")
        age = now - b.msg.cut_at.seconds
        if age > self.max_bundle_age_s:
            raise GateOffline(f"offline with a bundle {age / 3600:.1f} h old "
                              f"(limit {self.max_bundle_age_s / 3600:.1f} h): admitting nobody")
        gate = b.gates.get(gate_id)
        if gate is None:
            raise ValueError(f"gate {gate_id} is not in the bundle of {self.venue_id}")
        if not gate.mode & direction:
            raise ValueError(f"gate {gate_id} does not scan {common_pb2.Direction.Name(direction)}")
        reason, base, comp, k, product = self._decide(b, code, gate, direction, persons, int(now))
        self._record(gate_id, code, direction, persons, int(now), reason, base + comp, k, product,
                     scan_id)
        return Decision(common_pb2.ScanReason.Name(reason),
                        reason in (common_pb2.OK, common_pb2.OK_REENTRY), k, base,
                        product.product_id if product else "", offline=True)

    def _decide(self, b: _Bundle, code: str, gate, direction: int, persons: int, now: int):
        """(reason, code id or -1, component, persons, product): the server's rules
        (native/tickets.pxi), as far as a bundle and this gate's own scans tell them."""
        R = common_pb2
        refusal, f = ticketcode.check_offline(code, b.msg.shard, b.keys)
        if refusal is not None:
            # FORGED, or UNKNOWN for another shard's code: no ticket id here, as online
            return R.ScanReason.Value(refusal), -1, 0, 0, None
        product = b.products.get(f.product)
        if product is None:
            return R.UNKNOWN, f.ticket_id, 0, 0, None
        if gate.zone_id not in product.zone_ids:
            return R.WRONG_ZONE, f.ticket_id, 0, 0, product
        base, comp = f.ticket_id, list(product.zone_ids).index(gate.zone_id)
        tid = base + comp
        s, local = b.sets, self._local
        day = (now + b.msg.utc_offset_s) // 86400
        today = b.msg.day == day
        mine = local.day == day
        visit_open = (today and tid in s["entered"]) or (mine and tid in local.entered)
        inside = visit_open and ((mine and tid in local.put_in) or
                                 (today and tid in s["inside"] and not (mine and tid in local.let_out)))
        group = f.group
        k = group if persons <= 0 or persons > group else persons
        if direction == OUT:
            # letting someone out needs no valid ticket, only (where enforced) an entry
            if not inside:
                return (R.NOT_INSIDE if b.zones[gate.zone_id].enforce_exit else R.OK), base, comp, 0, product
            return R.OK, base, comp, k, product
        if tid in s["voided"]:
            return R.VOIDED, base, comp, 0, product
        if tid in s["blocked"]:
            return R.BLOCKED, base, comp, 0, product
        if day < f.first_day:
            return R.NOT_YET_VALID, base, comp, 0, product
        if day > f.last_day:
            return R.EXPIRED, base, comp, 0, product
        if inside:
            return R.ALREADY_USED, base, comp, 0, product          # anti-passback
        once = b.zones[gate.zone_id].once
        if once and (visit_open or tid in s["exhausted"] or tid in local.exhausted):
            # a merchant's consumption point: a ride or a meal is had once
            return R.ALREADY_USED, base, comp, 0, product
        if visit_open and product.reentry:
            return _admit(b, gate, R.OK_REENTRY, base, comp, k, product)
        if tid in s["exhausted"] or tid in local.exhausted:
            return (R.ALREADY_USED if product.max_entries == 1 else R.ENTRY_LIMIT), base, comp, 0, product
        if product.daily_entries == 1 and visit_open:
            return R.ENTRY_LIMIT, base, comp, 0, product
        slot = b.slots.get(f.slots[comp])
        if slot is not None and slot.day == day and not (
                slot.start.seconds - product.slot_grace_s <= now <= slot.end.seconds + product.slot_grace_s):
            return R.WRONG_SLOT, base, comp, 0, product
        return _admit(b, gate, R.OK, base, comp, k, product)

    def _record(self, gate_id, code, direction, persons, now, reason, tid, k, product,
                scan_id: str) -> None:
        """Queue the scan and what it changed, in one LMDB transaction."""
        local = self._local
        day = (now + self.bundle.msg.utc_offset_s) // 86400
        if local.day != day:
            local.day = day
            local.entered, local.put_in, local.let_out = BitMap(), BitMap(), BitMap()
        if reason in (common_pb2.OK, common_pb2.OK_REENTRY) and tid >= 0 and k:
            if direction == IN:
                local.entered.add(tid)
                local.put_in.add(tid)
                local.let_out.discard(tid)
                if product.max_entries == 1 or self.bundle.zones[self.bundle.gates[gate_id].zone_id].once:
                    local.exhausted.add(tid)
            else:
                local.let_out.add(tid)
                local.put_in.discard(tid)
        self._seq += 1
        scan = gate_pb2.OfflineScan(nonce=scan_id, sequence=self._seq, code=code,
                                    direction=direction, scan_time=_ts(now), persons=persons,
                                    admitted=k if reason in (common_pb2.OK, common_pb2.OK_REENTRY) else 0,
                                    reason=reason)
        with self._env.begin(write=True) as txn:
            txn.put(self._seq.to_bytes(8, "big"), gate_id.encode() + b"\0" + scan.SerializeToString(),
                    db=self._queue)
            txn.put(b"seq", str(self._seq).encode(), db=self._meta)
            local.store(txn, self._meta)
