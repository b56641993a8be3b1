"""Who owns a shard, and the cluster's shard map, in etcd (DESIGN.md 7, issue 18): one
lease per owner, a fencing epoch that rises with every new owner, where every node of a
shard stands, and which shard holds each venue.

Keys, under a cluster's prefix (`/turnstile/<cluster>/`):

    shards/<n>/owner         the owner's name (its address); bound to the owner's lease, so
                             it goes when the lease lapses or is revoked
    shards/<n>/epoch         the last epoch given out (a decimal integer); never goes down
    shards/<n>/nodes/<name>  each node of the shard, primary or standby (JSON: role, seq --
                             the last batch it holds --, at); kept when the node stops, so a
                             node that is down still holds back pruning, until `turnstile
                             shards forget` drops it
    shards/<n>/live/<name>   the node's role while it runs (primary, standby), bound to a lease
                             of its own (LIVE_TTL_S) it renews with each report: it goes when
                             the node stops, or that long after it died or froze -- whatever
                             the machines' clocks say (GetShardMap names the live standbys)
    shards/<n>/backup        the latest verified backup of the shard (JSON: seq, at, out),
                             recorded by `turnstile backup --etcd`; only ever raised
    venues/<venue>           the shard that holds the venue (a decimal integer)
    control/<kind>/<id>      principals and API keys (ControlStore.records)

`acquire` puts the owner key if nobody has it (a transaction comparing its create
revision with 0), then raises the epoch by one (a transaction comparing the epoch key's
mod revision with the one read): only the owner raises it, and two owners never hold the
same epoch. The epoch is then claimed in the log of record (engine/recordlog.py), which
refuses every write of an older one: that, not the lease, is what keeps a deposed owner
from writing.

The lease is renewed every ttl/3. Before each renewal is sent the time is noted; a
renewal answered with the lease's TTL moves `valid_until` to that time plus the TTL. The
owner counts itself valid only until `margin_s` before `valid_until` -- before etcd can
let the lease lapse, whatever happens to its renewals -- and `check()` raises NotPrimary
from then on, so a primary that can't renew stops acknowledging writes before another can
take over (Shard.fence calls it before each batch is written). A lease revoked from
outside (`turnstile shards step-down`) is noticed at the next renewal the same way.

The log of record is pruned up to `prune_floor()`: the lowest batch that every recorded
node of the shard and its latest verified backup hold (none before a backup is recorded).
"""
from __future__ import annotations

import asyncio
import json
import logging
import time

from turnstile.engine.errors import NotPrimary

log = logging.getLogger(__name__)

LIVE_TTL_S = 10                 # a node's live/<name> key outlives its last report this long


def _json(raw: bytes) -> dict:
    try:
        got = json.loads(raw)
    except ValueError:
        return {}
    return got if isinstance(got, dict) else {}


class Cluster:
    """The cluster `cluster` in the etcd at `endpoint` (host:port): its shard map, read and
    changed (`turnstile shards ... --etcd`, GetShardMap, the shard processes)."""

    def __init__(self, endpoint: str, *, cluster: str = "default", timeout: int = 2):
        host, _, port = endpoint.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"etcd endpoint {endpoint!r} is not host:port")
        self.host, self.port = host, int(port)
        self.timeout = timeout
        self.root = f"/turnstile/{cluster}/".encode()
        self.shards_prefix = self.root + b"shards/"
        self.control_prefix = self.root + b"control/"
        self.venues_prefix = self.root + b"venues/"
        self.conflicts: set[str] = set()    # principal ids made apart on two nodes (logged)
        self._client = None

    async def _connect(self):
        import aetcd
        if self._client is None:
            self._client = aetcd.Client(host=self.host, port=self.port, timeout=self.timeout)
            await self._client.connect()
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    def _shard_key(self, shard: int, *rest: str) -> bytes:
        return self.shards_prefix + "/".join((str(shard), *rest)).encode()

    # -- the shard map ---------------------------------------------------------------------
    async def shards(self) -> dict[int, dict]:
        """Every shard etcd knows: shard -> {"owner": name or None, "epoch": int, "nodes":
        {name: {"role", "seq", "at", ...}}, "live": {name: role} (the nodes running now),
        "backup": {"seq", "at", "out"} or None}."""
        c = await self._connect()
        out: dict[int, dict] = {}
        for kv in await c.get_prefix(self.shards_prefix):
            parts = kv.key[len(self.shards_prefix):].decode().split("/", 2)
            if not parts[0].isdigit() or len(parts) < 2:
                continue
            s = out.setdefault(int(parts[0]), {"owner": None, "epoch": 0, "nodes": {}, "live": {},
                                               "backup": None})
            if parts[1:] == ["owner"]:
                s["owner"] = kv.value.decode()
            elif parts[1:] == ["epoch"] and kv.value.isdigit():
                s["epoch"] = int(kv.value)
            elif parts[1:] == ["backup"]:
                s["backup"] = _json(kv.value)
            elif parts[1] == "nodes" and len(parts) == 3:
                s["nodes"][parts[2]] = _json(kv.value)
            elif parts[1] == "live" and len(parts) == 3:
                s["live"][parts[2]] = kv.value.decode()
        return out

    async def venues(self) -> dict[str, int]:
        """The venue map: venue -> the shard that holds it."""
        c = await self._connect()
        return {kv.key[len(self.venues_prefix):].decode(): int(kv.value)
                for kv in await c.get_prefix(self.venues_prefix) if kv.value.isdigit()}

    async def place_venue(self, venue: str, shard: int) -> int:
        """Map `venue` to `shard` unless it is mapped already; returns the shard it is
        mapped to (another one: the venue is that shard's)."""
        c = await self._connect()
        T = c.transactions
        key = self.venues_prefix + venue.encode()
        ok, _ = await c.transaction(compare=[T.create(key) == 0],
                                    success=[T.put(key, str(shard).encode())], failure=[])
        if ok:
            return shard
        got = await c.get(key)
        return int(got.value) if got is not None else await self.place_venue(venue, shard)

    async def record_backup(self, shard: int, seq: int, out: str) -> bool:
        """Record a verified backup holding shard `shard` up to batch `seq` -- unless one of
        a later batch is recorded already (False then)."""
        c = await self._connect()
        T = c.transactions
        key = self._shard_key(shard, "backup")
        body = json.dumps({"seq": seq, "at": time.time(), "out": out}).encode()
        while True:
            got = await c.get(key)
            if got is not None and _json(got.value).get("seq", 0) > seq:
                return False
            cond = T.create(key) == 0 if got is None else T.mod(key) == got.mod_revision
            ok, _ = await c.transaction(compare=[cond], success=[T.put(key, body)], failure=[])
            if ok:
                return True

    async def forget(self, shard: int, name: str) -> bool:
        """Drop node `name`'s record from shard `shard` (a node taken out of service: it no
        longer holds back pruning). False if there was none."""
        c = await self._connect()
        return bool(await c.delete(self._shard_key(shard, "nodes", name)))

    async def step_down(self, shard: int) -> str | None:
        """Revoke the lease of shard `shard`'s owner: it stops writing at its next renewal
        (ttl/3 at most; fenced in the log before that, once a standby claims), and a
        standby takes the shard over. Returns the owner stepped down (None: no owner)."""
        c = await self._connect()
        got = await c.get(self._shard_key(shard, "owner"))
        if got is None:
            return None
        await c.revoke_lease(got.lease)
        return got.value.decode()

    async def sync_control(self, store) -> list[str]:
        """Principals and API keys both ways between this node's control store and etcd
        (replicated mode: every node accepts the keys any node made, and refuses a key
        revoked on any): etcd's are merged here (ControlStore.merge: added, revocations
        taken, nothing removed), then this node's that etcd lacks, and revocations etcd
        lacks, are put there, each compared on the revision read (a concurrent change
        wins; the next sync merges it). A principal is never replaced in etcd: one id made
        apart on two nodes (a partition) keeps the first in etcd, the other node keeps its
        own, and the conflict is logged as an error once (`conflicts`). Returns the ids
        that changed here."""
        c = await self._connect()
        T = c.transactions
        remote: dict[str, dict[str, bytes]] = {"principals": {}, "keys": {}}
        revs: dict[bytes, int] = {}
        for kv in await c.get_prefix(self.control_prefix):
            kind, _, ident = kv.key[len(self.control_prefix):].decode().partition("/")
            if kind in remote and ident:
                remote[kind][ident] = kv.value
                revs[kv.key] = kv.mod_revision
        changed = store.merge(remote)
        for kind, rows in store.records().items():
            for ident, raw in rows.items():
                there = remote[kind].get(ident)
                if there == raw:
                    continue
                if there is not None and kind == "principals":
                    if ident not in self.conflicts:
                        self.conflicts.add(ident)
                        log.error("principal %s was made apart on two nodes: etcd (and every node "
                                  "that took it from there) has another one than this node; "
                                  "revoke its keys and make it again under one id", ident)
                    continue
                if there is not None and not _json(raw).get("revoked"):
                    continue        # etcd's key is revoked, or another: merge took etcd's
                key = self.control_prefix + f"{kind}/{ident}".encode()
                cond = T.mod(key) == revs[key] if key in revs else T.create(key) == 0
                await c.transaction(compare=[cond], success=[T.put(key, raw)], failure=[])
        return changed


class Ownership(Cluster):
    """Shard `shard`'s ownership in the etcd at `endpoint` (host:port), as `me`."""

    def __init__(self, endpoint: str, shard: int, me: str, *, cluster: str = "default",
                 ttl: int = 5, margin_s: float = 1.0):
        if ttl < 2 or not 0 < margin_s < ttl:
            raise ValueError("ttl must be 2 s or more, and the margin less than it")
        super().__init__(endpoint, cluster=cluster, timeout=max(1, ttl // 3))
        self.shard = shard
        self.me = me
        self.ttl = ttl
        self.margin_s = margin_s
        self.owner_key = self._shard_key(shard, "owner")
        self.epoch_key = self._shard_key(shard, "epoch")
        self.node_key = self._shard_key(shard, "nodes", me)
        self.live_key = self._shard_key(shard, "live", me)
        self._live = None               # the lease live_key is bound to
        self.epoch = 0
        self.valid_until = 0.0          # monotonic seconds; 0: not the owner
        self.lost: str | None = None    # why ownership ended (None while held)
        self._lease = None
        self._renewer: asyncio.Task | None = None
        self._lost = asyncio.Event()

    async def close(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            await asyncio.gather(self._renewer, return_exceptions=True)
        if self._live is not None:
            try:                        # no longer running: out of the map at once
                await self._client.revoke_lease(self._live.id)
            except Exception as e:
                log.warning("shard %d: %s stays live in etcd for %d s more (%s)", self.shard,
                            self.me, LIVE_TTL_S, e)
            self._live = None
        await super().close()

    # -- reading ----------------------------------------------------------------------------
    async def owner(self) -> str | None:
        """Who owns the shard now (None: nobody)."""
        c = await self._connect()
        got = await c.get(self.owner_key)
        return None if got is None else got.value.decode()

    async def report(self, role: str, seq: int) -> None:
        """Record where this node of the shard stands: `role` (primary, standby) and `seq`,
        the last batch it holds (what pruning waits for); and that it runs, in that role
        (live/<name>, its lease renewed; a new one if it lapsed while this node froze)."""
        c = await self._connect()
        await c.put(self.node_key, json.dumps({"role": role, "seq": seq, "at": time.time()}).encode())
        if self._live is not None and (await c.refresh_lease(self._live.id)).TTL <= 0:
            self._live = None
        if self._live is None:
            self._live = await c.lease(LIVE_TTL_S)
        await c.put(self.live_key, role.encode(), lease=self._live)

    async def prune_floor(self) -> int:
        """The batch up to which the shard's log of record may be pruned: the lowest `seq`
        of every recorded node and of the latest verified backup; 0 before a backup is
        recorded (a new standby starts from one and reads the log after it)."""
        s = (await self.shards()).get(self.shard)
        if s is None or not s["backup"]:
            return 0
        return max(0, min([int(s["backup"].get("seq", 0))]
                          + [int(n.get("seq", 0)) for n in s["nodes"].values()]))

    async def last_epoch(self) -> int:
        c = await self._connect()
        got = await c.get(self.epoch_key)
        return 0 if got is None else int(got.value)

    # -- owning ------------------------------------------------------------------------------
    async def acquire(self, *, wait: bool = True, poll_s: float = 0.2) -> int | None:
        """Become the owner and take a new epoch; returns it. With `wait`, waits until the
        owner key is free (its owner released it, or its lease lapsed); without, None if
        another owns the shard."""
        c = await self._connect()
        T = c.transactions
        while True:
            sent = time.monotonic()
            lease = await c.lease(self.ttl)
            ok, _ = await c.transaction(compare=[T.create(self.owner_key) == 0],
                                        success=[T.put(self.owner_key, self.me.encode(), lease=lease)],
                                        failure=[])
            if ok:
                break
            await c.revoke_lease(lease.id)
            if not wait:
                return None
            await asyncio.sleep(poll_s)
        while True:
            got = await c.get(self.epoch_key)
            cur = 0 if got is None else int(got.value)
            cond = T.create(self.epoch_key) == 0 if got is None else T.mod(self.epoch_key) == got.mod_revision
            ok, _ = await c.transaction(compare=[cond], success=[T.put(self.epoch_key, str(cur + 1).encode())],
                                        failure=[])
            if ok:
                break
        self.epoch = cur + 1
        self._lease = lease
        self.valid_until = sent + self.ttl
        self.lost = None
        self._renewer = asyncio.create_task(self._renew(), name=f"lease-shard-{self.shard}")
        log.info("shard %d: owned by %s, epoch %d (lease %x, %d s)", self.shard, self.me, self.epoch,
                 lease.id, self.ttl)
        return self.epoch

    async def _renew(self) -> None:
        c = self._client
        while self.lost is None:
            await asyncio.sleep(self.ttl / 3)
            sent = time.monotonic()
            try:
                r = await asyncio.wait_for(c.refresh_lease(self._lease.id), self.ttl / 3)
            except asyncio.CancelledError:
                raise
            except Exception as e:          # etcd unreachable: try again; valid() runs out
                log.warning("shard %d: lease renewal failed (%s); owner for %.1f s more at most",
                            self.shard, e, self.valid_until - self.margin_s - time.monotonic())
                if not self.valid():
                    self.lost = "the lease could not be renewed"
                continue
            if r.TTL <= 0:
                self.lost = "the lease lapsed or was revoked (etcd no longer knows it)"
            else:
                self.valid_until = sent + r.TTL
        log.error("shard %d: %s is no longer its owner: %s", self.shard, self.me, self.lost)
        self._lost.set()

    async def wait_lost(self) -> str:
        """Wait until ownership is lost (not by release); returns why."""
        await self._lost.wait()
        return self.lost or ""

    def valid(self) -> bool:
        """Owner now, and for margin_s at least (before etcd can let the lease lapse)."""
        return self.lost is None and time.monotonic() < self.valid_until - self.margin_s

    def check(self) -> None:
        """NotPrimary unless valid(): a batch may be written only by a valid owner."""
        if not self.valid():
            # what callers read: no node address, no exception text (those are logged)
            raise NotPrimary(f"shard {self.shard}: this process is no longer its primary",
                             hint="route by the shard map (AdminService.GetShardMap) and ask again")

    async def release(self) -> None:
        """Stop owning: the lease revoked, the owner key gone (a standby may take over)."""
        self.lost = self.lost or "released"
        if self._renewer is not None:
            self._renewer.cancel()
            await asyncio.gather(self._renewer, return_exceptions=True)
            self._renewer = None
        if self._lease is not None:
            try:
                await self._client.revoke_lease(self._lease.id)
            except Exception as e:
                log.warning("shard %d: revoking the lease failed (%s); it lapses in %d s",
                            self.shard, e, self.ttl)
            self._lease = None
