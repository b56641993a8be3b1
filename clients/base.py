"""The connection layer every Turnstile client is built on (DESIGN.md sections 2 and 5).

A :class:`Connection` is one caller (one API key) talking to one Turnstile node:

* it connects to a bootstrap address (or several, comma-separated: the nodes of a
  replicated platform, DESIGN.md 7), insecure or over TLS (server roots, and a
  client certificate and key for mTLS), and sends the API key on every call as
  ``authorization: Bearer <key>`` metadata;
* it asks the node for its shard map once (``AdminService.GetShardMap``: where each
  shard listens, which shard holds each venue) and routes each call by venue
  (sales, inventory, reports, a venue's set-up) or by shard id (ticket keys, audit,
  the shard carried in a ticket code); it keeps one gRPC channel per shard address
  and reuses it;
* every call has a deadline (``timeout``, per attempt);
* a call that is safe to repeat - a read, or a mutation that carries an idempotency
  key, which the server answers byte for byte the same on a retry - is retried on
  UNAVAILABLE, RESOURCE_EXHAUSTED and DEADLINE_EXCEEDED with exponential backoff and
  full jitter, within a bounded number of attempts and a bounded total time
  (:class:`RetryPolicy`); a call that is not safe to repeat is tried once;
* every gRPC failure reaches the caller as one exception type, :class:`ApiError`,
  with the status code, the server's stable ``google.rpc.ErrorInfo`` reason and its
  ``BadRequest`` field violations.

The role clients (``channel``, ``pos``, ``admin``, ``reports``, ``members``, and the
gate client) wrap :meth:`Connection.call`::

    from turnstile.clients.base import Connection
    from turnstile.v1 import inventory_pb2, inventory_pb2_grpc

    with Connection("127.0.0.1:50051", api_key) as conn:
        r = conn.call(inventory_pb2_grpc.InventoryServiceStub, "Availability",
                      inventory_pb2.AvailabilityRequest(venue_id="westlake", date_from="2026-11-23"),
                      venue="westlake", retry=True)

Streaming calls (a gate concentrator's ``VerifyStream``) take a stub bound to the
right shard from :meth:`Connection.stub` and pass :attr:`Connection.metadata` and a
deadline themselves; asyncio callers (the load generator's hot loops) take a
``grpc.aio`` channel from :meth:`Connection.aio_channel`, with the same options, TLS
and routing as the blocking channels. This module imports only grpc, the generated
``turnstile.v1`` modules and google.rpc: never the engine or the server.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Self, TypeVar

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from turnstile.v1 import admin_pb2, admin_pb2_grpc

__all__ = [
    "RETRYABLE_CODES",
    "ApiError",
    "Connection",
    "FieldViolation",
    "RetryPolicy",
    "ShardMap",
    "StandbyState",
    "TlsConfig",
    "auth_metadata",
    "error_info",
    "new_key",
]

#: Status codes after which a call that is safe to repeat is tried again.
RETRYABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED,
                             grpc.StatusCode.DEADLINE_EXCEEDED})
#: The server's own message limit (server/app.py); answers up to it are accepted.
MAX_MESSAGE = 16 << 20
STANDBY_AWAY_S = 30.0   # prefer_standby: a standby that failed a read is passed over this long

Stub = TypeVar("Stub")


def read_keys_file(path: str) -> dict[str, tuple[str, str]]:
    """principal -> (role, API key), from a keys file as `turnstile serve` writes
    DATA/demo-keys.txt: one principal a line, tab-separated principal, role and key;
    lines starting with '#' are comments."""
    out = {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if line.strip() and not line.startswith("#"):
                parts = line.split()
                if len(parts) != 3:
                    raise ValueError(f"{path}:{n}: expected 'principal role key'")
                out[parts[0]] = (parts[1], parts[2])
    return out


def auth_metadata(api_key: str | None) -> tuple[tuple[str, str], ...]:
    """The metadata that makes a call the caller's: ``authorization: Bearer <key>``
    (none without a key)."""
    return (("authorization", f"Bearer {api_key}"),) if api_key else ()


def new_key() -> str:
    """A fresh idempotency key (a UUID4 in hex). Keep it for every retry of the same
    logical call: a new key makes a new request."""
    return uuid.uuid4().hex


# -- errors ------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class FieldViolation:
    """One ``google.rpc.BadRequest`` field violation: the request field at fault."""

    field: str
    description: str


class ApiError(Exception):
    """A Turnstile call failed. The one exception type of the clients.

    Attributes:
        code: the ``grpc.StatusCode`` (from the server's one error table).
        message: the status message.
        reason: the stable ``google.rpc.ErrorInfo`` reason (``SOLD_OUT``,
            ``HOLD_NOT_ACTIVE``, ``IDEMPOTENCY_KEY_REUSED``, ``API_KEY_INVALID``,
            ``ROLE_NOT_ALLOWED``...), or ``""`` when the status carries none (transport
            errors, deadlines).
        domain: the ErrorInfo domain (``"turnstile"``), or ``""``.
        metadata: the ErrorInfo metadata (``field``, ``hint``).
        violations: the ``google.rpc.BadRequest`` field violations.
        method: the full gRPC method name of the call.
        attempts: how many times it was tried.
    """

    def __init__(self, code: grpc.StatusCode, message: str = "", *, reason: str = "",
                 domain: str = "", metadata: dict[str, str] | None = None,
                 violations: Sequence[FieldViolation] = (), method: str = "", attempts: int = 1):
        self.code = code
        self.message = message
        self.reason = reason
        self.domain = domain
        self.metadata = dict(metadata or {})
        self.violations = list(violations)
        self.method = method
        self.attempts = attempts
        super().__init__(str(self))

    @property
    def field(self) -> str | None:
        """The request field at fault (first violation, else ErrorInfo ``field``), or None."""
        if self.violations:
            return self.violations[0].field
        return self.metadata.get("field")

    @property
    def hint(self) -> str | None:
        """What the server suggests doing about it, if anything."""
        return self.metadata.get("hint")

    @property
    def retryable(self) -> bool:
        """True for UNAVAILABLE, RESOURCE_EXHAUSTED and DEADLINE_EXCEEDED."""
        return self.code in RETRYABLE_CODES

    def __str__(self) -> str:
        what = self.reason or self.code.name
        if self.reason and self.reason != self.code.name:
            what = f"{self.reason} ({self.code.name})"
        where = f" in {self.method.rsplit('.', 1)[-1]}" if self.method else ""
        return f"{what}{where}: {self.message}" if self.message else f"{what}{where}"

    @classmethod
    def from_rpc(cls, err: grpc.RpcError, *, method: str = "", attempts: int = 1) -> ApiError:
        """Convert a ``grpc.RpcError`` (a failed blocking call) into an ApiError, with the
        ``google.rpc.Status`` details the server put in the trailers. The one parser of
        those details: the server, the loadgen and the tests read them through it."""
        code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
        message = (err.details() if hasattr(err, "details") else str(err)) or ""
        reason, domain, meta, violations = "", "", {}, []
        try:
            status = rpc_status.from_call(err) if hasattr(err, "trailing_metadata") else None
        except (ValueError, DecodeError):   # details that contradict the status, or are not
            status = None                     # a Status at all: keep the status
        if status is not None:
            message = status.message or message
            for detail in status.details:
                if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    info = error_details_pb2.ErrorInfo()
                    detail.Unpack(info)
                    reason, domain, meta = info.reason, info.domain, dict(info.metadata)
                elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                    br = error_details_pb2.BadRequest()
                    detail.Unpack(br)
                    violations += [FieldViolation(v.field, v.description) for v in br.field_violations]
        return cls(code, message, reason=reason, domain=domain, metadata=meta, violations=violations,
                   method=method, attempts=attempts)


def error_info(err: grpc.RpcError) -> tuple[str, str | None]:
    """(ErrorInfo reason, field at fault) of a failed call made on a raw stub; ``""`` and
    None when the status carries no details."""
    e = ApiError.from_rpc(err)
    return e.reason, e.field


# -- configuration -----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class StandbyState:
    """What a standby's answer says of itself (replicated mode; its metadata
    turnstile-standby-batch and turnstile-standby-lag-ms): the last batch of the log of
    record it held, and how stale the answer may be, in ms (-1: it had not caught up
    with the log yet)."""
    batch: int
    lag_ms: int

    @classmethod
    def of(cls, metadata) -> "StandbyState | None":
        md = dict(metadata or ())
        try:
            return cls(int(md["turnstile-standby-batch"]), int(md["turnstile-standby-lag-ms"]))
        except (KeyError, ValueError):
            return None


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """How a call that is safe to repeat is retried.

    Attempt n (1-based) that fails with a code in ``codes`` waits a random time in
    ``[0, min(max_backoff_s, initial_backoff_s * multiplier ** (n - 1))]`` ("full
    jitter") and tries again, until ``max_attempts`` attempts are made or the next
    wait would end after ``total_s`` seconds from the first attempt. Each attempt's
    deadline is the call's timeout, cut to what is left of ``total_s``.
    """

    max_attempts: int = 5
    initial_backoff_s: float = 0.05
    max_backoff_s: float = 2.0
    multiplier: float = 2.0
    total_s: float = 30.0
    codes: frozenset = RETRYABLE_CODES

    def backoff(self, attempt: int, rng: Callable[[float, float], float] = random.uniform) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        cap = min(self.max_backoff_s, self.initial_backoff_s * self.multiplier ** (attempt - 1))
        return rng(0.0, cap)


#: Try once, never again.
NO_RETRY = RetryPolicy(max_attempts=1)


def _read(value: bytes | str | None) -> bytes | None:
    """PEM bytes as given, or read from a file path."""
    if value is None or isinstance(value, bytes):
        return value
    with open(value, "rb") as f:
        return f.read()


@dataclasses.dataclass(frozen=True)
class TlsConfig:
    """TLS towards the server. Each value is PEM bytes or a file path.

    ``root_certificates``: CAs that sign the server's certificate (None: the system
    roots). ``certificate_chain`` and ``private_key``: this client's certificate and
    key, for a server that requires client certificates (mTLS; ``turnstile serve
    --tls-client-ca``). ``server_name``: the name to check the server's certificate
    against when it differs from the host in the address.
    """

    root_certificates: bytes | str | None = None
    certificate_chain: bytes | str | None = None
    private_key: bytes | str | None = None
    server_name: str | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        if (self.certificate_chain is None) != (self.private_key is None):
            raise ValueError("a client certificate and its private key go together")
        return grpc.ssl_channel_credentials(root_certificates=_read(self.root_certificates),
                                            private_key=_read(self.private_key),
                                            certificate_chain=_read(self.certificate_chain))


@dataclasses.dataclass(frozen=True)
class ShardMap:
    """Where each shard listens (``shards``: shard id -> host:port), which shard holds
    each venue (``venues``: venue id -> shard id), and in replicated mode where each
    shard's standbys answer reads (``standbys``: shard id -> host:port list)."""

    shards: dict[int, str]
    venues: dict[str, int]
    version: int = 0
    standbys: dict[int, list[str]] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_proto(cls, m: admin_pb2.ShardMap) -> ShardMap:
        return cls({e.shard: e.address for e in m.shards}, dict(m.venues), m.version,
                   {e.shard: list(e.standbys) for e in m.shards if e.standbys})


def _host_port(address: str) -> tuple[str, str]:
    host, _, port = address.rpartition(":")
    return host, port


# -- the connection ----------------------------------------------------------------------
class Connection:
    """One caller's connection to a Turnstile node (see the module docstring).

    Args:
        address: ``host:port`` of any shard of the node (each answers GetShardMap); in
            replicated mode, the nodes' addresses comma-separated: the map is asked of
            the first that answers, and asked again (of any of them, and of the shards
            it named) when a shard goes away or answers NOT_PRIMARY, so calls follow a
            shard to its new primary.
        api_key: the ``tsk_...`` key sent as ``authorization: Bearer <key>``; None
            sends no key (only health checks pass without one).
        tls: a :class:`TlsConfig` to connect over TLS; None connects insecure.
        timeout: default deadline of one attempt of a call, in seconds.
        retry: the :class:`RetryPolicy` of calls that are safe to repeat.
        metadata: more metadata sent with every call.
        options: more gRPC channel options (they override the defaults: 16 MiB
            messages, reconnect backoff from 100 ms up to the policy's max backoff).
        rewrite_address: maps an address from the shard map to the one to dial (for
            NAT or port forwarding). By default a shard listening on a wildcard host
            (``0.0.0.0``, ``::``) is dialled on the host of ``address``.
        pinned: send every call to ``address`` itself, never routed by the shard map:
            to read from a standby in replicated mode (``address`` is a standby's shard),
            which answers reads from what it applied and refuses writes (UNAVAILABLE,
            NOT_PRIMARY); :meth:`standby_state` tells how stale the last answer may be.
        prefer_standby: replicated mode, for reports and other readers that may read a
            little behind: a read (a method the proto marks ``idempotency_level =
            NO_SIDE_EFFECTS``) routed to a shard whose map entry names standbys goes to
            one of them first, and on to the primary if it can't take it (it is down,
            or does not answer within the deadline: it is then passed over for
            STANDBY_AWAY_S); every other call goes to the primary.
        max_lag_ms: with ``pinned`` or ``prefer_standby``, the stalest answer a standby
            may give, in ms (its stated lag; an idle standby's climbs to about 250 ms
            between two looks at the log: server/app.py STANDBY_POLL_S): a standby
            further behind reads nothing and refuses (UNAVAILABLE, STANDBY_BEHIND) --
            the call then goes to the primary (prefer_standby), or is retried as the
            policy says (pinned). None: any lag.
            :meth:`standby_state` tells whether, and how stale, a standby answered.

    Thread-safe: channels and stubs are shared, the shard map is replaced whole.
    """

    def __init__(self, address: str, api_key: str | None = None, *, tls: TlsConfig | None = None,
                 timeout: float = 5.0, retry: RetryPolicy = RetryPolicy(),
                 metadata: Iterable[tuple[str, str]] = (), options: Iterable[tuple[str, Any]] = (),
                 rewrite_address: Callable[[str], str] | None = None, pinned: bool = False,
                 prefer_standby: bool = False, max_lag_ms: int | None = None):
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.addresses = [a.strip() for a in address.split(",") if a.strip()]
        if not self.addresses:
            raise ValueError("no address")
        self.address = self.addresses[0]
        self.pinned = pinned
        self.prefer_standby = prefer_standby
        self._standby_away: dict[str, float] = {}   # a standby that did not answer -> until when
        self._last = threading.local()      # the last answer's StandbyState, per thread
        self.timeout = timeout
        self.retry = retry
        self.tls = tls
        if max_lag_ms is not None and not 0 <= max_lag_ms <= 999_999_999:
            raise ValueError("max_lag_ms must be 0 to 999999999")
        bound = (("turnstile-max-lag-ms", str(max_lag_ms)),) if max_lag_ms is not None else ()
        self.metadata: tuple[tuple[str, str], ...] = tuple(metadata) + bound + auth_metadata(api_key)
        # reconnect soon after a refused connection (gRPC's default waits 1 s and more,
        # and a call on a channel that waits fails at once: retries would be wasted)
        opts = {"grpc.max_receive_message_length": MAX_MESSAGE,
                "grpc.max_send_message_length": MAX_MESSAGE,
                "grpc.initial_reconnect_backoff_ms": 100,
                "grpc.max_reconnect_backoff_ms": max(100, int(retry.max_backoff_s * 1000))}
        if tls is not None and tls.server_name:
            opts["grpc.ssl_target_name_override"] = tls.server_name
        opts.update(options)
        self._options = list(opts.items())
        self._credentials = tls.credentials() if tls is not None else None
        self._rewrite = rewrite_address or self._default_rewrite
        self._lock = threading.RLock()
        self._channels: dict[str, grpc.Channel] = {}
        self._stubs: dict[tuple[str, type], Any] = {}
        self._map: ShardMap | None = None
        self._stale = False
        self._rng = random.Random()
        self._closed = False

    # -- lifecycle -----------------------------------------------------------------------
    def close(self) -> None:
        """Close every channel. Calls in flight end with CANCELLED."""
        with self._lock:
            self._closed = True
            for ch in self._channels.values():
                ch.close()
            self._channels.clear()
            self._stubs.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- channels and stubs --------------------------------------------------------------
    def _default_rewrite(self, address: str) -> str:
        host, port = _host_port(address)
        if host in ("0.0.0.0", "::", "[::]", ""):
            return f"{_host_port(self.address)[0]}:{port}"
        return address

    def channel(self, address: str | None = None) -> grpc.Channel:
        """The channel to ``address`` (default: the bootstrap address), made once."""
        address = address or self.address
        with self._lock:
            if self._closed:
                raise ValueError("connection is closed")
            ch = self._channels.get(address)
            if ch is None:
                if self._credentials is None:
                    ch = grpc.insecure_channel(address, options=self._options)
                else:
                    ch = grpc.secure_channel(address, self._credentials, options=self._options)
                self._channels[address] = ch
            return ch

    def aio_channel(self, *, venue: str | None = None, shard: int | None = None,
                    address: str | None = None, own_connection: bool = False) -> grpc.aio.Channel:
        """A new ``grpc.aio`` channel to the shard of ``venue``, or to shard ``shard``, or
        to ``address`` (none given: the bootstrap address), with this connection's
        options and TLS. It is not kept: the caller closes it (``async with``) in the
        event loop that uses it, and sends :attr:`metadata` and a deadline with each
        call. ``own_connection``: a TCP connection of its own, not shared with other
        channels to the same address (``grpc.use_local_subchannel_pool``)."""
        if address is not None and (venue is not None or shard is not None):
            raise ValueError("give an address, or route by venue or shard, not both")
        if self._closed:
            raise ValueError("connection is closed")
        target = address or self.address_of(venue=venue, shard=shard)
        options = self._options + ([("grpc.use_local_subchannel_pool", 1)] if own_connection else [])
        if self._credentials is None:
            return grpc.aio.insecure_channel(target, options=options)
        return grpc.aio.secure_channel(target, self._credentials, options=options)

    def stub(self, stub_class: type[Stub], *, venue: str | None = None,
             shard: int | None = None) -> Stub:
        """A stub of ``stub_class`` on the shard of ``venue``, or on shard ``shard``, or
        (neither given) on the bootstrap address. Stubs are made once per address."""
        return self._stub_at(stub_class, self.address_of(venue=venue, shard=shard))

    # -- the shard map -------------------------------------------------------------------
    def shard_map(self, refresh: bool = False) -> ShardMap:
        """The node's shard map, asked for once (again with ``refresh=True``)."""
        with self._lock:
            m = self._map
        if m is not None and not refresh:
            return m
        return self._set_map(self._fetch_map(self.retry))

    def _set_map(self, m: ShardMap) -> ShardMap:
        with self._lock:
            self._map = m
            self._stale = False
        return m

    def _fetch_map(self, policy: RetryPolicy) -> ShardMap:
        """GetShardMap from the bootstrap address, retried as a read; if the bootstrap
        shard is down, the other bootstrap addresses and any shard known from an earlier
        map answer too."""
        with self._lock:
            known = [] if self._map is None else [self._rewrite(a) for a in self._map.shards.values()]
        addresses = self.addresses + [a for a in known if a not in self.addresses]
        method = "/turnstile.v1.AdminService/GetShardMap"
        last: ApiError | None = None
        # several places to ask: each once first (a dead one costs one refused connection,
        # not a whole retry policy), then each with the policy
        for p in (NO_RETRY, policy) if len(addresses) > 1 and policy is not NO_RETRY else (policy,):
            for address in addresses:
                stub = self._stub_at(admin_pb2_grpc.AdminServiceStub, address)
                try:
                    return ShardMap.from_proto(self._attempts(
                        lambda timeout, stub=stub: stub.GetShardMap(admin_pb2.GetShardMapRequest(),
                                                                    metadata=self.metadata,
                                                                    timeout=timeout),
                        method, p, self.timeout))
                except ApiError as e:
                    last = e
                    if e.code != grpc.StatusCode.UNAVAILABLE:
                        raise
        assert last is not None
        raise last

    def _stub_at(self, stub_class: type[Stub], address: str) -> Stub:
        with self._lock:
            key = (address, stub_class)
            s = self._stubs.get(key)
            if s is None:
                s = self._stubs[key] = stub_class(self.channel(address))
            return s

    def shards(self) -> list[int]:
        """Every shard id of the node, ascending."""
        return sorted(self.shard_map().shards)

    def shard_of(self, venue: str) -> int | None:
        """The shard holding ``venue`` (the map is asked again once for a venue it does
        not know, which may be new), or None if the node has no such venue."""
        m = self.shard_map()
        if venue not in m.venues:
            m = self.shard_map(refresh=True)
        return m.venues.get(venue)

    def address_of(self, *, venue: str | None = None, shard: int | None = None) -> str:
        """Where a call about ``venue`` or ``shard`` goes. A venue or shard the map does
        not know goes to the bootstrap address, whose answer (NOT_FOUND, naming the
        field) is the caller's error."""
        if venue is not None and shard is not None:
            raise ValueError("route by venue or by shard, not both")
        if (venue is None and shard is None) or self.pinned:
            return self.address
        with self._lock:
            stale, m0 = self._stale, self._map
        if stale and m0 is not None:
            try:                    # one quick try: a shard that restarted may have moved
                m = self._set_map(self._fetch_map(NO_RETRY))
            except ApiError:
                m = m0
        else:
            m = self.shard_map()
        if venue is not None:
            shard = m.venues.get(venue)
            if shard is None:
                m = self.shard_map(refresh=True)
                shard = m.venues.get(venue)
                if shard is None:
                    return self.address
        if shard not in m.shards:
            m = self.shard_map(refresh=True)
            if shard not in m.shards:
                return self.address
        return self._rewrite(m.shards[shard])

    def standby_state(self) -> "StandbyState | None":
        """A pinned or prefer_standby connection: what the last answer on this thread said
        of its standby (the batch it held, how stale it may be); None if a primary
        answered (or the connection is neither)."""
        return getattr(self._last, "state", None)

    def standby_of(self, *, venue: str | None = None, shard: int | None = None) -> str | None:
        """A standby of the shard of ``venue`` or ``shard`` the map names (one at random,
        of those that did not fail to answer in the last STANDBY_AWAY_S), None if none."""
        m = self.shard_map()
        if venue is not None:
            shard = m.venues.get(venue)
        now = time.monotonic()
        names = [a for a in map(self._rewrite, m.standbys.get(shard) or ())
                 if self._standby_away.get(a, 0) <= now] if shard is not None else ()
        return self._rng.choice(names) if names else None

    # -- calls ---------------------------------------------------------------------------
    def call(self, stub_class: type, method: str, request, *, venue: str | None = None,
             shard: int | None = None, retry: bool, timeout: float | None = None,
             address: str | None = None):
        """Make one unary call and return its answer.

        Args:
            stub_class: the generated stub class, e.g. ``sales_pb2_grpc.SalesServiceStub``.
            method: the method name on it, e.g. ``"Hold"``.
            request: the request message.
            venue: route to the shard holding this venue.
            shard: route to this shard (by id).
            address: send to this address instead (neither venue nor shard given).
            retry: True if the call is safe to repeat (a read, or a mutation carrying an
                idempotency key the server honours): it is retried per the policy.
                False: tried once, whatever happens.
            timeout: deadline of each attempt in seconds (default: the connection's).

        Raises:
            ApiError: the call failed (after its retries).
        """
        full = method_name(stub_class, method)
        policy = self.retry if retry else NO_RETRY
        routed = venue is not None or shard is not None
        used: list[str] = []

        def send(target: str, deadline: float):
            fn = getattr(self._stub_at(stub_class, target), method)
            if not (self.pinned or self.prefer_standby):
                return fn(request, metadata=self.metadata, timeout=deadline)
            self._last.state = None
            answer, call = fn.with_call(request, metadata=self.metadata, timeout=deadline)
            self._last.state = StandbyState.of(call.trailing_metadata())
            return answer

        def once(deadline: float):
            if address is None and routed and self.prefer_standby and changes_nothing(full):
                standby = self.standby_of(venue=venue, shard=shard)
                if standby is not None:
                    try:
                        return send(standby, deadline)
                    except grpc.RpcError as e:
                        if e.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                            raise
                        # the primary is asked (a read: safe to ask again); a standby that
                        # is away or silent (no reason given) is passed over for a while,
                        # one behind the bound asked (STANDBY_BEHIND) is not
                        if not ApiError.from_rpc(e).reason:
                            with self._lock:
                                self._standby_away[standby] = time.monotonic() + STANDBY_AWAY_S
            target = address or self.address_of(venue=venue, shard=shard)
            used.append(target)
            return send(target, deadline)

        try:
            return self._attempts(once, full, policy, timeout or self.timeout, routed=routed)
        except ApiError as e:
            # the venue is not on the shard the map named (ops moved it): ask the map
            # again, and if it now names another shard, send the call there, once
            if venue is None or e.code != grpc.StatusCode.NOT_FOUND or e.field != "venue_id":
                raise
            self.shard_map(refresh=True)
            if self.address_of(venue=venue) == used[-1]:
                raise
        return self._attempts(once, full, policy, timeout or self.timeout, routed=routed)

    def _attempts(self, once: Callable[[float], Any], method: str, policy: RetryPolicy,
                  timeout: float, routed: bool = False):
        """Run ``once(deadline_s)`` until it answers or the policy gives up."""
        start = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            left = policy.total_s - (time.monotonic() - start)
            try:
                return once(max(0.001, min(timeout, left)))
            except grpc.RpcError as rpc_err:
                err = ApiError.from_rpc(rpc_err, method=method, attempts=attempt)
            if err.code not in policy.codes or attempt >= policy.max_attempts:
                raise err
            if err.code == grpc.StatusCode.UNAVAILABLE and routed:
                with self._lock:            # a restarted shard may listen elsewhere now
                    self._stale = True
            wait = policy.backoff(attempt, self._rng.uniform)
            if time.monotonic() - start + wait >= policy.total_s:
                raise err
            time.sleep(wait)


@functools.cache
def changes_nothing(method: str) -> bool:
    """Whether the proto marks method ``/pkg.Service/Method`` ``idempotency_level =
    NO_SIDE_EFFECTS``: a read, which a standby answers in replicated mode."""
    from google.protobuf import descriptor_pb2, descriptor_pool
    service, _, name = method.strip("/").partition("/")
    try:
        m = descriptor_pool.Default().FindServiceByName(service).methods_by_name[name]
    except KeyError:
        return False
    return m.GetOptions().idempotency_level == descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS


@functools.cache
def method_name(stub_class: type, method: str) -> str:
    """The full gRPC name of a method: ``/turnstile.v1.SalesService/Hold`` for
    (``SalesServiceStub``, ``"Hold"``)."""
    pb2 = importlib.import_module(stub_class.__module__.removesuffix("_grpc"))
    service = pb2.DESCRIPTOR.services_by_name[stub_class.__name__.removesuffix("Stub")]
    return f"/{service.full_name}/{service.methods_by_name[method].name}"
