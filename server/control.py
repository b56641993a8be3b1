"""The control store of a node (DATA/control): principals and API keys (DESIGN.md
section 5), the shard map (where each shard listens, which shard holds each venue),
and each shard process's status as its supervisor sees it (running, starting, in
backoff after a crash; restarts and their last cause). One LMDB environment shared by
every shard process of the node.

A principal has a role and a scope (venues, channel, gates; a merchant's channel is the
merchant's id). An API key is
`tsk_<key id>_<secret>`; only SHA-256 of the secret is stored (the secret is 32
random bytes, so a fast hash is enough: there is nothing to brute-force), and it
is shown once, when made.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass, asdict

import lmdb

from turnstile.engine.datadir import CONTROL_MAP_SIZE
from turnstile.engine.errors import AlreadyExists, InvalidArgument, NotFound

ROLES = ("admin", "operator", "seller", "channel", "gate", "finance", "auditor", "viewer", "merchant")
CACHE_S = 5.0          # default of ServerConfig.auth_cache_s: how long a key's principal is reused


def _id(value: str, field: str) -> bytes:
    """An id as a key: 1-64 characters, else INVALID_ARGUMENT (LMDB itself refuses empty
    and over-long keys, and an error must not quote a long request back)."""
    if not 0 < len(value) <= 64:
        raise InvalidArgument("must be 1-64 characters", field=field)
    return value.encode()


@dataclass(frozen=True)
class Principal:
    id: str
    role: str
    venues: tuple[str, ...] = ()     # empty: every venue
    channel: str = ""                # the channel a seller or channel sells as; a merchant's id
    gates: tuple[str, ...] = ()      # empty: every gate of its venues

    def may_use_venue(self, venue: str) -> bool:
        return not self.venues or venue in self.venues

    def may_use_gate(self, gate: str) -> bool:
        return not self.gates or gate in self.gates


class ControlStore:
    """Principals, hashed API keys and the shard map, in an LMDB environment of their own."""

    def __init__(self, path: str, cache_s: float = CACHE_S):
        os.makedirs(path, exist_ok=True)
        # a key's principal is reused for cache_s (0: read every time), so a revoked key
        # stops working in every server process within cache_s of its revocation
        self.cache_s = cache_s
        self.env = lmdb.open(path, map_size=CONTROL_MAP_SIZE, max_dbs=8, subdir=True)
        self.principals = self.env.open_db(b"principals")
        self.keys = self.env.open_db(b"keys")
        self.endpoints = self.env.open_db(b"endpoints")
        self.venue_map = self.env.open_db(b"venues")
        self.config = self.env.open_db(b"config")     # b"shards": the count `serve` runs
        self.status = self.env.open_db(b"status")     # shard -> its process's status (JSON)
        self._cache: dict[str, tuple[bytes, Principal, float]] = {}

    # -- shard map -----------------------------------------------------------------
    def set_endpoint(self, shard: int, address: str) -> None:
        with self.env.begin(write=True, db=self.endpoints) as txn:
            txn.put(b"%08d" % shard, address.encode())

    def place_venue(self, venue: str, shard: int) -> None:
        """Record that `shard` holds `venue`; AlreadyExists if another shard does."""
        with self.env.begin(write=True, db=self.venue_map) as txn:
            old = txn.get(venue.encode())
            if old is not None and int(old) != shard:
                raise AlreadyExists(f"venue {venue} exists on shard {int(old)}", field="venue_id")
            txn.put(venue.encode(), str(shard).encode())

    def route_venue(self, venue: str, shard: int) -> None:
        """Re-place `venue` on `shard` (`turnstile shards move`, once its catalog is there)."""
        with self.env.begin(write=True, db=self.venue_map) as txn:
            txn.put(venue.encode(), str(shard).encode())

    def venue_shard(self, venue: str) -> int | None:
        with self.env.begin(db=self.venue_map) as txn:
            v = txn.get(venue.encode())
        return None if v is None else int(v)

    def shard_map(self) -> tuple[dict[int, str], dict[str, int]]:
        """(shard -> address, venue -> shard)."""
        with self.env.begin() as txn:
            eps = {int(k): v.decode() for k, v in txn.cursor(db=self.endpoints)}
            venues = {k.decode(): int(v) for k, v in txn.cursor(db=self.venue_map)}
        return eps, venues

    def shard_count(self) -> int | None:
        """The shard count recorded by `turnstile shards set-count`, None if never set."""
        with self.env.begin(db=self.config) as txn:
            v = txn.get(b"shards")
        return None if v is None else int(v)

    def set_shard_count(self, n: int) -> None:
        """Record the shard count and drop the endpoints of shards >= n, in one transaction."""
        with self.env.begin(write=True) as txn:
            txn.put(b"shards", str(n).encode(), db=self.config)
            for db in (self.endpoints, self.status):
                for k in [k for k, _ in txn.cursor(db=db) if int(k) >= n]:
                    txn.delete(k, db=db)

    # -- shard process status (the supervisor writes, every shard process reads) ---------
    def set_shard_status(self, shard: int, status: dict) -> None:
        """Record shard `shard`'s process status, as `serve`'s supervisor sees it:
        {"state": "starting" | "running" | "backoff" | "stopped", "restarts": restarts
        since `serve` started, "last_cause": why it last died ("" if never), "since":
        epoch seconds of the last state change, "next_start_at": epoch seconds of the
        next start while in backoff (else None), "crash_loop": bool, "pid", "address"}."""
        with self.env.begin(write=True, db=self.status) as txn:
            txn.put(b"%08d" % shard, json.dumps(status, sort_keys=True).encode())

    def shard_status(self) -> dict[int, dict]:
        """Every shard's status row (set_shard_status): shard -> status dict."""
        with self.env.begin(db=self.status) as txn:
            return {int(k): json.loads(v) for k, v in txn.cursor()}

    def clear_shard_status(self, keep: int) -> None:
        """Drop the status rows of shards >= `keep` (a node now serving fewer)."""
        with self.env.begin(write=True, db=self.status) as txn:
            for k in [k for k, _ in txn.cursor() if int(k) >= keep]:
                txn.delete(k)

    def close(self) -> None:
        self.env.close()

    def create_principal(self, pid: str, role: str, *, venues=(), channel: str = "",
                         gates=(), retry: bool = False) -> Principal:
        """A new principal. With `retry`, one that exists exactly so is answered again."""
        if role not in ROLES:
            raise InvalidArgument(f"role must be one of {', '.join(ROLES)}", field="role")
        _id(pid, "principal_id")
        if role in ("seller", "channel") and not channel:
            raise InvalidArgument("a seller or channel principal sells as a channel", field="channel")
        if role == "merchant":
            # a merchant's staff sell as the merchant (its id is their channel), inside the
            # venues that have it
            if not channel:
                raise InvalidArgument("a merchant principal sells as its merchant: the channel is "
                                      "the merchant's id (AdminService.SetMerchant)", field="channel")
            if not venues:
                raise InvalidArgument("a merchant works inside venues: name them", field="venue_ids")
        p = Principal(pid, role, tuple(venues), channel, tuple(gates))
        with self.env.begin(write=True, db=self.principals) as txn:
            if not txn.put(pid.encode(), json.dumps(asdict(p)).encode(), overwrite=False):
                if retry and txn.get(pid.encode()) == json.dumps(asdict(p)).encode():
                    return p
                raise AlreadyExists(f"principal {pid} exists", field="principal_id")
        return p

    def get_principal(self, pid: str) -> Principal:
        key = _id(pid, "principal_id")
        with self.env.begin(db=self.principals) as txn:
            raw = txn.get(key)
        if raw is None:
            raise NotFound(f"no principal {pid}", field="principal_id")
        d = json.loads(raw)
        return Principal(d["id"], d["role"], tuple(d["venues"]), d["channel"], tuple(d["gates"]))

    def list_principals(self) -> list[Principal]:
        with self.env.begin(db=self.principals) as txn:
            return [self.get_principal(k.decode()) for k, _ in txn.cursor()]

    def create_key(self, pid: str) -> tuple[str, str]:
        """(key id, the whole key to hand over). The secret is not stored."""
        self.get_principal(pid)
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        digest = hashlib.sha256(secret.encode()).hexdigest()
        with self.env.begin(write=True, db=self.keys) as txn:
            txn.put(key_id.encode(), json.dumps({"principal": pid, "sha256": digest}).encode())
        return key_id, f"tsk_{key_id}_{secret}"

    def revoke_key(self, key_id: str) -> None:
        """Revoke a key; it stays listed as revoked, so revoking it again is a retry, not
        an error."""
        key = _id(key_id, "key_id")
        with self.env.begin(write=True, db=self.keys) as txn:
            raw = txn.get(key)
            if raw is None:
                raise NotFound(f"no API key {key_id}", field="key_id")
            d = json.loads(raw)
            d["revoked"] = True
            txn.put(key, json.dumps(d).encode())
        self._cache.pop(key_id, None)

    def list_keys(self, pid: str = "") -> list[tuple[str, str, bool]]:
        """(key id, principal, revoked) of every key, or of one principal's."""
        with self.env.begin(db=self.keys) as txn:
            rows = [(k.decode(), json.loads(v)) for k, v in txn.cursor()]
        return [(k, d["principal"], bool(d.get("revoked"))) for k, d in rows
                if not pid or d["principal"] == pid]

    # -- replicated mode: the principals and keys of every node (server/ownership.py) --------
    def records(self) -> dict[str, dict[str, bytes]]:
        """The principals and API keys as stored (a key's record holds its secret's hash
        only), by id: what replicated mode mirrors in etcd."""
        with self.env.begin() as txn:
            return {"principals": {k.decode(): bytes(v) for k, v in txn.cursor(db=self.principals)},
                    "keys": {k.decode(): bytes(v) for k, v in txn.cursor(db=self.keys)}}

    def merge(self, records: dict[str, dict[str, bytes]]) -> list[str]:
        """Take the principals and keys another node made: those this store lacks are
        added, a key revoked there is revoked here (a revocation is never undone), nothing
        is removed. Returns the ids that changed."""
        changed = []
        with self.env.begin(write=True) as txn:
            for pid, raw in records.get("principals", {}).items():
                if txn.get(pid.encode(), db=self.principals) is None:
                    txn.put(pid.encode(), raw, db=self.principals)
                    changed.append(pid)
            for kid, raw in records.get("keys", {}).items():
                mine = txn.get(kid.encode(), db=self.keys)
                if mine is None or (json.loads(raw).get("revoked") and not json.loads(mine).get("revoked")):
                    txn.put(kid.encode(), raw, db=self.keys)
                    changed.append(kid)
        for kid in changed:
            self._cache.pop(kid, None)
        return changed

    def authenticate(self, token: str) -> Principal | None:
        """The principal of a presented API key, or None. The secret's hash is compared in
        constant time (hmac.compare_digest), so timing tells nothing about it; whether a key
        id exists may show, but key ids are not secret (`turnstile keys list` shows them)."""
        return self.authenticate_until(token)[0]

    def authenticate_until(self, token: str) -> tuple[Principal | None, float]:
        """`authenticate`, and the time.monotonic() until which the answer may be reused:
        cache_s after the key was read, so a cache built on it ends no later than this one."""
        now = time.monotonic()
        parts = token.split("_", 2)
        if len(parts) != 3 or parts[0] != "tsk":
            return None, now + self.cache_s
        key_id, secret = parts[1], parts[2]
        if not 0 < len(key_id) <= 64:           # LMDB refuses empty and over-long keys
            return None, now + self.cache_s
        digest = hashlib.sha256(secret.encode()).digest()
        hit = self._cache.get(key_id)
        if hit is None or now - hit[2] >= self.cache_s:
            # the time is taken before the read: the entry never outlives a revocation
            # committed after it by more than cache_s
            with self.env.begin(db=self.keys) as txn:
                raw = txn.get(key_id.encode())
            if raw is None:
                return None, now + self.cache_s
            d = json.loads(raw)
            if d.get("revoked"):
                return None, now + self.cache_s
            try:
                hit = (bytes.fromhex(d["sha256"]), self.get_principal(d["principal"]), now)
            except NotFound:
                return None, now + self.cache_s
            if self.cache_s > 0:
                self._cache[key_id] = hit
        until = hit[2] + self.cache_s
        return (hit[1] if hmac.compare_digest(hit[0], digest) else None), until

    def key_principal(self, token: str) -> Principal | None:
        """The principal a presented key's id belongs to, whatever its secret and even if
        revoked (None for an unknown key id): whom a refused key is audited under. Never
        a grant: `authenticate` is."""
        parts = token.split("_", 2)
        if len(parts) != 3 or parts[0] != "tsk" or not 0 < len(parts[1]) <= 64:
            return None
        with self.env.begin(db=self.keys) as txn:
            raw = txn.get(parts[1].encode())
        if raw is None:
            return None
        try:
            return self.get_principal(json.loads(raw)["principal"])
        except NotFound:
            return None
