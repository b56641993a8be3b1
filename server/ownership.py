"""Who owns a shard, in etcd (DESIGN.md 7, issue 18): one lease per owner and a fencing
epoch that rises with every new owner.

Keys, under a cluster's prefix (`/turnstile/<cluster>/`):

    shards/<n>/owner   the owner's name (its address); bound to the owner's lease, so it
                       goes when the lease lapses or is revoked
    shards/<n>/epoch   the last epoch given out (a decimal integer); never goes down

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
take over (Shard.fence calls it before each batch is written).
"""
from __future__ import annotations

import asyncio
import logging
import time

from turnstile.engine.errors import NotPrimary

log = logging.getLogger(__name__)


class Ownership:
    """Shard `shard`'s ownership in the etcd at `endpoint` (host:port), as `me`."""

    def __init__(self, endpoint: str, shard: int, me: str, *, cluster: str = "default",
                 ttl: int = 5, margin_s: float = 1.0):
        if ttl < 2 or not 0 < margin_s < ttl:
            raise ValueError("ttl must be 2 s or more, and the margin less than it")
        host, _, port = endpoint.rpartition(":")
        self.host, self.port = host, int(port)
        self.shard = shard
        self.me = me
        self.ttl = ttl
        self.margin_s = margin_s
        self.shards_prefix = f"/turnstile/{cluster}/shards/".encode()
        self.control_prefix = f"/turnstile/{cluster}/control/".encode()
        prefix = f"/turnstile/{cluster}/shards/{shard}/"
        self.owner_key = (prefix + "owner").encode()
        self.epoch_key = (prefix + "epoch").encode()
        self.epoch = 0
        self.valid_until = 0.0          # monotonic seconds; 0: not the owner
        self.lost: str | None = None    # why ownership ended (None while held)
        self._client = None
        self._lease = None
        self._renewer: asyncio.Task | None = None
        self._lost = asyncio.Event()

    async def _connect(self):
        import aetcd
        if self._client is None:
            self._client = aetcd.Client(host=self.host, port=self.port, timeout=max(1, self.ttl // 3))
            await self._client.connect()
        return self._client

    async def close(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            await asyncio.gather(self._renewer, return_exceptions=True)
        if self._client is not None:
            await self._client.close()
            self._client = None

    # -- reading ----------------------------------------------------------------------------
    async def owner(self) -> str | None:
        """Who owns the shard now (None: nobody)."""
        c = await self._connect()
        got = await c.get(self.owner_key)
        return None if got is None else got.value.decode()

    async def owners(self) -> dict[int, str]:
        """Every shard of the cluster that has an owner now: shard -> its owner's name (the
        address its primary serves on). The shard map's endpoints in replicated mode."""
        c = await self._connect()
        out = {}
        for kv in await c.get_prefix(self.shards_prefix):
            parts = kv.key[len(self.shards_prefix):].split(b"/")
            if len(parts) == 2 and parts[1] == b"owner" and parts[0].isdigit():
                out[int(parts[0])] = kv.value.decode()
        return out

    async def sync_control(self, store) -> list[str]:
        """Principals and API keys both ways between this node's control store and etcd
        (replicated mode: every node accepts the keys any node made, and refuses a key
        revoked on any): etcd's are merged here (ControlStore.merge: added, revocations
        taken, nothing removed), then this node's that etcd lacks, or has unrevoked, are
        put there, each compared on the revision read (a concurrent change wins; the next
        sync merges it). Returns the ids that changed here."""
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
                if remote[kind].get(ident) == raw:
                    continue
                key = self.control_prefix + f"{kind}/{ident}".encode()
                cond = T.mod(key) == revs[key] if key in revs else T.create(key) == 0
                await c.transaction(compare=[cond], success=[T.put(key, raw)], failure=[])
        return changed

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
                self.lost = "the lease lapsed (etcd no longer knows it)"
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
