"""Serve a node: one OS process per shard (DESIGN.md 4.1), under a supervisor.

Each shard serves GateService, SalesService, InventoryService, AdminService,
ReportService, MemberService and gRPC health.

    turnstile serve --data data --shards 2 --port 50051

The supervisor creates the admin and demo principals on a new data dir, starts one
`turnstile serve-shard` process per shard (shard k on port+k, or any free port with
--port 0), records where each listens in the control store (the shard map), prints
`listening on HOST:PORT` (shard 0; every shard answers AdminService.GetShardMap), and
restarts a shard process that dies, for ever, on the port it had: after a backoff of
--restart-backoff-s that doubles with each crash in a row up to --restart-backoff-max-s
(back to the start once the shard has run STABLE_S), never holding up the other shards.
Each restart is logged with its cause (the signal's name or the exit status) and count;
CRASH_LOOP_RESTARTS restarts of one shard within CRASH_LOOP_WINDOW_S log a crash-loop
warning. SIGTERM or SIGINT drains every shard: health NOT_SERVING, in-flight calls
finish, the last batch commits, the shard closes; during a backoff, it stops at once.

The supervisor records each shard process's status in the control store
(ControlStore.shard_status: running, starting, backoff; restarts, last cause, next
start). Every shard process serves gRPC health for "" (itself) and, re-read each
HEALTH_REFRESH_S, "turnstile.shard.<k>" for every shard k of the node: SERVING while
shard k's process is running, else NOT_SERVING, so a health check against any live
shard shows one that is down or crash-looping.

A shard whose writer fails (a commit that did not happen, a command that broke off
half-applied: its memory is gone) logs the cause on stderr, goes NOT_SERVING at once,
stops its listeners without grace, closes without a snapshot and exits with status 70
(EXIT_FAILED); the supervisor restarts it and the new process recovers from disk.

Each shard process also serves Prometheus metrics on --metrics-port + k (server/metrics.py,
when given), logs a line per call (server/logs.py: text or JSON lines, no request
contents), and archives its old audit records to files every --audit-archive-s seconds.

Replicated mode (--etcd and --pg; DESIGN.md 7): each shard process is first a standby of
its shard -- it follows the log of record in PostgreSQL, records its position in etcd,
and answers reads, stating their lag, while writes are NOT_PRIMARY and health NOT_SERVING
-- until it owns the shard in etcd; then it applies the log to its end under a new epoch,
serves as the primary (it says `listening on` only then), prunes the log as far as every
node and the latest verified backup allow, and exits EXIT_FAILED if it loses ownership.

Drill and test hook, never for production: TURNSTILE_FAILPOINT=commit-error-after=N in
a shard process's environment (`serve` passes its own on) makes that process's commits
after its first N fail with a StorageError, as a disk that refuses writes would; it
counts from 0 in every process, so a restarted shard fails again after N more.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import logging
import os
import signal
import subprocess
import sys
import threading
import time

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from turnstile.engine import Shard, keyring
from turnstile.engine.datadir import replicated_shards
from turnstile.engine.errors import NotPrimary, StorageError
from turnstile.engine.recordlog import Follower, LogPruned, NotThisShard, RecordLog, promote
from turnstile.v1 import (admin_pb2_grpc, gate_pb2_grpc, inventory_pb2_grpc, member_pb2_grpc,
                          report_pb2_grpc, sales_pb2_grpc)

from .auth import AuthInterceptor
from .config import ServerConfig
from . import logs
from .control import ControlStore
from .ownership import Ownership
from .metrics import NULL as NULL_METRICS, CallObserver, ShardMetrics, call_log
from .services import (AdminService, GateService, InventoryService, MemberService, ReportService,
                       SalesService, ShardNode)

log = logging.getLogger("turnstile.server")
MAX_MESSAGE = 16 << 20
EXIT_FAILED = 70                # a shard process whose writer failed (EX_SOFTWARE)
FAILED_GRACE_S = 0.5            # ...answers the calls in flight this long before it exits
FAILPOINT_ENV = "TURNSTILE_FAILPOINT"
SECRET_OPTIONS = ("pg",)        # passed to the shard processes as TURNSTILE_PG, not argv
SHARD_SERVICE = "turnstile.shard."     # gRPC health service name of shard k: this + k
HEALTH_REFRESH_S = 1.0          # how often a shard process re-reads every shard's status
POSITION_S = 1.0                # replicated: how often a node records its position in etcd
STANDBY_DEFER = 3               # --standby: leases a shard nobody owns is left to other nodes
STANDBY_POLL_S = 0.25           # a standby looks at the log this often besides its NOTIFYs: the
                                # lag an idle standby states climbs to this between two looks
# one principal per role (docs/ROLES.md), all but admin scoped to the demo venue
DEMO_PRINCIPALS = [
    ("admin", "admin", {}),
    ("demo-operator", "operator", {"venues": ["westlake"]}),
    ("demo-ota", "channel", {"venues": ["westlake"], "channel": "ota"}),
    ("demo-window", "seller", {"venues": ["westlake"], "channel": "window"}),
    ("demo-gate", "gate", {"venues": ["westlake"]}),
    ("demo-finance", "finance", {"venues": ["westlake"]}),
    ("demo-auditor", "auditor", {}),
    ("demo-viewer", "viewer", {"venues": ["westlake"]}),
    # the boat company's terminals at the pier (its zone's gate) and its till
    ("demo-boats", "merchant", {"venues": ["westlake"], "channel": "westlake-boats"}),
]


def bootstrap_principals(store: ControlStore, data: str) -> list[tuple[str, str, str]]:
    """On a new data dir: an admin and demo principals, their keys written to
    DATA/demo-keys.txt (mode 0600). Returns (principal, role, key) when created."""
    if store.list_principals():
        return []
    made = []
    for pid, role, scope in DEMO_PRINCIPALS:
        store.create_principal(pid, role, **scope)
        made.append((pid, role, store.create_key(pid)[1]))
    path = os.path.join(data, "demo-keys.txt")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("# principal\trole\tAPI key (clients.base.read_keys_file reads this file)\n")
        for pid, role, key in made:
            f.write(f"{pid}\t{role}\t{key}\n")
    return made


# -- one shard process -------------------------------------------------------------------
class _GenericOnly:
    """What the generated `add_*Servicer_to_server` functions register, as generic handlers
    only (looked up by full method name, GateService first), not as registered methods.

    grpc.aio's server keeps one pending future per registered method and, for EVERY
    incoming call, runs `asyncio.wait` over all of them (grpc
    `_cygrpc/aio/server.pyx.pxi` `_server_main_loop`): with our ~85 rpcs that cost about
    110 µs of the event loop's CPU per call against 14 µs for the one generic future
    (uvloop, measured on the 2-core bench machine; issue 16) -- more than the whole
    engine spends on a scan. Unknown methods are UNIMPLEMENTED either way."""

    def __init__(self, server):
        self._server = server

    def add_generic_rpc_handlers(self, handlers) -> None:
        self._server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, service: str, handlers) -> None:
        pass        # served by the generic handler added just before, same methods


def _grpc_server(node: ShardNode, store: ControlStore, health_servicer, *, reflect: bool):
    server = grpc.aio.server(
        # CallObserver outermost: it counts and logs the calls auth denies too
        interceptors=[*_observer(node), AuthInterceptor(store, node)],   # node: denied calls are audited
        options=[("grpc.max_receive_message_length", MAX_MESSAGE),
                 ("grpc.max_send_message_length", MAX_MESSAGE)])
    rpcs = _GenericOnly(server)
    gate_pb2_grpc.add_GateServiceServicer_to_server(GateService(node), rpcs)   # first: the hot path
    sales_pb2_grpc.add_SalesServiceServicer_to_server(SalesService(node), rpcs)
    inventory_pb2_grpc.add_InventoryServiceServicer_to_server(InventoryService(node), rpcs)
    admin_pb2_grpc.add_AdminServiceServicer_to_server(AdminService(node, store), rpcs)
    report_pb2_grpc.add_ReportServiceServicer_to_server(ReportService(node), rpcs)
    member_pb2_grpc.add_MemberServiceServicer_to_server(MemberService(node), rpcs)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, rpcs)
    if reflect:
        from grpc_reflection.v1alpha import reflection
        from turnstile.v1 import admin_pb2, gate_pb2, inventory_pb2, member_pb2, report_pb2, sales_pb2
        names = [m.DESCRIPTOR.services_by_name[n].full_name for m, n in (
            (gate_pb2, "GateService"), (sales_pb2, "SalesService"),
            (inventory_pb2, "InventoryService"), (admin_pb2, "AdminService"),
            (report_pb2, "ReportService"), (member_pb2, "MemberService"))]
        # the real server: grpc_reflection picks its asyncio servicer by the server's type
        # (served on the admin port only, where a registered method or two costs nothing)
        reflection.enable_server_reflection(names + ["grpc.health.v1.Health",
                                                     reflection.SERVICE_NAME], server)
    return server


def _listen(server, host: str, port: int, tls) -> int:
    addr = f"{host}:{port}"
    if tls is None:
        return server.add_insecure_port(addr)
    cert, key, client_ca = tls
    creds = grpc.ssl_server_credentials([(key, cert)], root_certificates=client_ca,
                                        require_client_auth=client_ca is not None)
    return server.add_secure_port(addr, creds)


def _observer(node: ShardNode) -> list:
    """The call-counting and -logging interceptor, unless there is neither a metrics
    endpoint nor a call log line to write (--log-level WARNING and up)."""
    if node.metrics is NULL_METRICS and not call_log.isEnabledFor(logging.INFO):
        return []
    return [CallObserver(node.shard_id, node.metrics)]


async def serve_shard(cfg: ServerConfig, shard_id: int = 0) -> int:
    logs.configure(cfg.log_format, cfg.log_level, shard=shard_id)
    offset = cfg.clock_offset_s
    shard = Shard.open(os.path.join(cfg.data, f"shard-{shard_id}"), shard_id=shard_id,
                       master_key=keyring.load_master_key(key_file=cfg.master_key_file),
                       clock=(lambda: time.time() + offset) if offset else time.time,
                       retry_window_s=cfg.retry_window_s, map_size=cfg.map_size_mib << 20)
    store = ControlStore(os.path.join(cfg.data, "control"), cache_s=cfg.auth_cache_s)
    moved = set()
    for venue in shard.venues():
        home = store.venue_shard(venue)
        if home is not None and home != shard_id:
            # left behind by `turnstile shards move`: the map routes it to its new shard
            log.warning("venue %s is mapped to shard %s; not served here", venue, home)
            moved.add(venue)
            continue
        store.place_venue(venue, shard_id)
    drill = os.environ.get(FAILPOINT_ENV)
    if drill:
        _arm_failpoint(shard, drill)
    writer = shard.writer(max_queue=cfg.max_queue)
    node = ShardNode(shard, writer, store, moved=frozenset(moved), scan_skew_s=cfg.scan_skew_s,
                     offline_window_s=cfg.offline_window_s, gate_heartbeat_s=cfg.gate_heartbeat_s,
                     gate_down_after_s=cfg.gate_down_after_s)
    if cfg.metrics_port:
        node.metrics = writer.observer = ShardMetrics(shard_id, writer=writer, shard=shard,
                                                      store=store)
    health_servicer = health.aio.HealthServicer()
    tls = cfg.tls()
    servers = [_grpc_server(node, store, health_servicer, reflect=False)]
    bound = _listen(servers[0], cfg.host, cfg.port, tls)
    if bound == 0:
        raise SystemExit(f"shard {shard_id}: cannot listen on {cfg.host}:{cfg.port}")
    node.address = f"{cfg.host}:{bound}"
    advertised = f"{cfg.advertised}:{bound}"     # its name in the shard map (and in etcd)
    admin_address = ""
    if cfg.admin_port:
        servers.append(_grpc_server(node, store, health_servicer, reflect=True))
        admin_bound = _listen(servers[1], cfg.host, cfg.admin_port, tls)
        if admin_bound == 0:
            raise SystemExit(f"shard {shard_id}: cannot listen on {cfg.host}:{cfg.admin_port}")
        admin_address = f", admin {cfg.host}:{admin_bound}"
    metrics_http, metrics_address = None, ""
    if cfg.metrics_port:
        try:
            metrics_http, metrics_bound = node.metrics.serve(cfg.metrics_host, cfg.metrics_port)
        except (OSError, OverflowError) as e:
            raise SystemExit(f"shard {shard_id}: cannot serve metrics on "
                             f"{cfg.metrics_host}:{cfg.metrics_port} ({e})") from None
        metrics_address = f", metrics {cfg.metrics_host}:{metrics_bound}"
    ownership = control_sync = duties = None
    if cfg.replicated:
        # a standby until this process owns the shard in etcd, then its primary; while a
        # standby it answers reads (node.standby), not health checks or writes
        await health_servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        await health_servicer.set(f"{SHARD_SERVICE}{shard_id}", health_pb2.HealthCheckResponse.NOT_SERVING)
        for server in servers:
            await server.start()
        ownership = Ownership(cfg.etcd, shard_id, advertised, cluster=cfg.cluster, ttl=cfg.lease_ttl_s)
        node.ownership = ownership              # GetShardMap reads etcd's map, standby too
        # the principals and keys of every node, from now on (a standby's reads need them)
        control_sync = asyncio.create_task(_sync_control(ownership, store, max(1.0, cfg.auth_cache_s)))
        await _become_primary(cfg, shard, ownership, node)
        # and once more before its first write: a key made on the old primary in the last
        # period works here from the start
        await _sync_once(ownership, store)
        node.moved = frozenset(moved | await _place_venues(ownership, shard, shard_id))
        await writer.start()
        node.standby = None                     # writes are taken from now on
    else:
        await writer.start()
        for server in servers:
            await server.start()
    store.set_endpoint(shard_id, advertised)
    # the state just loaded and the code: out of the cyclic GC's way (full collections
    # of the shard took 35-55 ms each without this, ~1 ms with it)
    gc.collect()
    gc.freeze()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    await health_servicer.set(f"{SHARD_SERVICE}{shard_id}", health_pb2.HealthCheckResponse.SERVING)
    print(f"listening on {node.address} (shard {shard_id}, {len(shard.venues())} venues"
          f"{admin_address}{metrics_address}{', TLS' if tls else ''})", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    parent = os.getppid()

    async def orphaned() -> None:
        # the supervisor is gone (killed): stop rather than serve unsupervised
        while os.getppid() == parent:
            await asyncio.sleep(0.5)
        stop.set()
    watch = asyncio.create_task(orphaned())
    archiver = asyncio.create_task(_archive_audit(shard, cfg.audit_archive_s))
    if ownership is not None:
        duties = asyncio.create_task(_primary_duties(ownership, shard, cfg))
    peers = asyncio.create_task(_refresh_health(health_servicer, store, shard_id))
    stopped = asyncio.create_task(stop.wait())
    failed = asyncio.create_task(writer.wait_failed())
    waits = [stopped, failed]
    if ownership is not None:
        # ownership lost (the lease could not be renewed): stop as after a failure; the
        # supervisor starts the shard again, as a standby
        lost = asyncio.create_task(ownership.wait_lost())
        waits.append(lost)
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for task in (watch, archiver, peers, stopped, control_sync, duties):
        if task is not None:
            task.cancel()
    cause = failed.result() if failed.done() else None
    if cause is None and ownership is not None and lost.done():
        cause = NotPrimary(f"shard {shard_id}: {lost.result()}")
    for task in waits[1:]:
        task.cancel()
    # NOT_SERVING for every service name, and no later set changes it
    await health_servicer.enter_graceful_shutdown()
    node.stopping.set()         # live streams end now; unary calls get the grace
    # the metrics endpoint stops too (its thread polls every 0.5 s), before the shard closes
    metrics_down = loop.run_in_executor(None, metrics_http.shutdown) if metrics_http else None
    if cause is not None:
        # its memory is gone (Shard._fail), or it is no longer the primary: stop soon, no
        # snapshot; the supervisor restarts the shard and the new process recovers it from
        # disk. Calls in flight are answered first, within FAILED_GRACE_S (the failed
        # batch's callers are refused already, a read of the failed shard is refused),
        # not cut off: a caller reads UNAVAILABLE with its reason, not CANCELLED
        log.error("the writer failed (%r); exiting with status %d to be restarted from disk",
                  cause, EXIT_FAILED)
        await asyncio.gather(*(server.stop(FAILED_GRACE_S) for server in servers))
    else:
        await asyncio.gather(*(server.stop(cfg.grace_s) for server in servers))
    await writer.stop()
    if metrics_down is not None:
        await metrics_down
    shard.close()               # a failed shard writes no snapshot (Shard.close)
    store.close()
    if ownership is not None:
        # the last batch is written: a standby may take over at once
        await ownership.release()
        await ownership.close()
        if shard.record_log is not None:
            shard.record_log.close()
    if cause is not None:
        return EXIT_FAILED
    print(f"shard {shard_id} stopped", flush=True)
    return 0


async def _become_primary(cfg: ServerConfig, shard: Shard, ownership: Ownership, node: ShardNode) -> None:
    """Replicated mode (DESIGN.md 7): follow the shard's log of record as a standby
    (engine/recordlog.py, Follower), recording in etcd how far it got every POSITION_S
    and answering reads meanwhile (node.standby: each batch is applied on the event loop,
    between two calls; writes are NOT_PRIMARY), until this process owns the shard in
    etcd (`ownership`, server/ownership.py); then apply the log
    to its end under the new epoch and write every later batch through it, asking the
    ownership before each (Shard.fence). A node that can't follow the log (another
    shard's, or pruned past this one) stops with the reason and never takes over."""
    loop = asyncio.get_running_loop()

    def on_loop(fn):
        """fn() on the event loop (where calls read the shard), from the follower's thread."""
        done: concurrent.futures.Future = concurrent.futures.Future()

        def go() -> None:
            try:
                done.set_result(fn())
            except BaseException as e:
                done.set_exception(e)
        loop.call_soon_threadsafe(go)
        return done.result()

    shard_id, address = ownership.shard, ownership.me
    record_log = RecordLog(cfg.pg, shard_id, owner=address, lineage=shard.lineage)
    await loop.run_in_executor(None, record_log.ensure_schema)
    shard.mark_replicated(cfg.cluster)      # offline tools that would bypass the log refuse it
    follower = Follower(shard, cfg.pg, shard_id, run=on_loop, poll_s=STANDBY_POLL_S)
    node.standby = follower
    thread = threading.Thread(target=follower.run, name="turnstile-follower", daemon=True)
    thread.start()
    print(f"standby of shard {shard_id} at {address}: following its log of record, serving reads"
          + (" (--standby: a node without it takes the shard first)" if cfg.standby else ""), flush=True)
    # not a candidate before the log is known to be this shard's and followable from here
    while not follower.checked.wait(0) and follower.error is None:
        await asyncio.sleep(0.05)
    if cfg.standby:
        # the preferred standby: a shard nobody owns is left to a node without --standby
        # for STANDBY_DEFER leases; once someone owns it, this node waits for it to lapse
        until = time.monotonic() + STANDBY_DEFER * cfg.lease_ttl_s
        while follower.error is None and time.monotonic() < until and await ownership.owner() is None:
            await _report(ownership, "standby", shard.seq)
            await asyncio.sleep(0.2)
    acquired = asyncio.create_task(ownership.acquire())
    try:
        while not acquired.done():
            if follower.error is not None:
                acquired.cancel()
                raise SystemExit(f"shard {shard_id}: {follower.error}")
            await _report(ownership, "standby", shard.seq)
            await asyncio.wait([acquired], timeout=POSITION_S)
        epoch = acquired.result()
    finally:
        acquired.cancel()
        follower.stop.set()
        await loop.run_in_executor(None, thread.join)
        follower.close()
    t = time.monotonic()
    try:
        applied = await loop.run_in_executor(None, lambda: promote(shard, record_log, epoch, run=on_loop))
    except (NotThisShard, LogPruned) as e:
        await ownership.release()
        raise SystemExit(f"shard {shard_id}: {e}") from None
    shard.fence = ownership.check
    log.warning("shard %d: primary at %s, epoch %d (followed %d batches, %d more on taking over in "
                "%.3f s)", shard_id, address, epoch, follower.applied, applied, time.monotonic() - t)


async def _report(ownership: Ownership, role: str, seq: int) -> None:
    """Where this node of the shard stands, in etcd; a failure is logged (pruning waits)."""
    try:
        await ownership.report(role, seq)
    except Exception as e:
        log.warning("shard %d: position not recorded in etcd (%s)", ownership.shard, e)


async def _place_venues(ownership: Ownership, shard: Shard, shard_id: int) -> set[str]:
    """Replicated mode: the shard's venues in etcd's venue map (the cluster's, read by
    GetShardMap on every node). Returns those the map gives another shard: left behind by
    a move, not served here."""
    moved = set()
    for venue in shard.venues():
        home = await ownership.place_venue(venue, shard_id)
        if home != shard_id:
            log.warning("venue %s is mapped to shard %s in etcd; not served here", venue, home)
            moved.add(venue)
    return moved


async def _primary_duties(ownership: Ownership, shard: Shard, cfg: ServerConfig) -> None:
    """A primary's background work in replicated mode: its position in etcd every
    POSITION_S, and every cfg.log_prune_s (0: never) the log of record pruned up to what
    every node of the shard and its latest verified backup hold (Ownership.prune_floor),
    on a connection of its own, under its epoch. Failures are logged and tried again."""
    loop = asyncio.get_running_loop()
    pruner = RecordLog(cfg.pg, ownership.shard, owner=ownership.me, lineage=shard.lineage)
    pruner.epoch = ownership.epoch
    next_prune = time.monotonic() + cfg.log_prune_s
    try:
        while True:
            await _report(ownership, "primary", shard.seq)
            if cfg.log_prune_s and time.monotonic() >= next_prune:
                next_prune = time.monotonic() + cfg.log_prune_s
                try:
                    floor = await ownership.prune_floor()
                    if floor:
                        gone = await loop.run_in_executor(None, pruner.prune, floor)
                        if gone:
                            log.info("shard %d: log of record pruned up to batch %d (%d batches)",
                                     ownership.shard, floor, gone)
                except Exception as e:
                    log.warning("shard %d: log of record not pruned (%s)", ownership.shard, e)
            await asyncio.sleep(POSITION_S)
    finally:
        await loop.run_in_executor(None, pruner.close)


async def _sync_control(ownership: Ownership, store: ControlStore, every_s: float) -> None:
    """Replicated mode: principals and API keys synced with etcd at once and then every
    `every_s` seconds, as a standby and as the primary (a key made or revoked on another
    node works, or stops working, here within that and the auth cache's life). A failure
    is logged and tried again."""
    while True:
        await _sync_once(ownership, store)
        await asyncio.sleep(every_s)


async def _sync_once(ownership: Ownership, store: ControlStore) -> None:
    """Principals and API keys synced with etcd once; a failure is logged (the periodic
    sync tries again)."""
    try:
        await ownership.sync_control(store)
    except Exception as e:
        log.warning("principals and keys not synced with etcd (%s); the periodic sync tries again", e)


async def _archive_audit(shard: Shard, every_s: float) -> None:
    """Every `every_s` seconds (0: never): the old part of the audit log archived to
    files in DATA/shard-N/audit (Shard.archive_audit: verified, then pruned a slice per
    audited batch), in a thread, beside the writer. A failure is logged, never fatal:
    the records stay hot."""
    if not every_s:
        return
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(every_s)
        try:
            written = await loop.run_in_executor(None, shard.archive_audit)
        except Exception as e:
            log.warning("audit archive not written (%s); the records stay in the shard", e)
        else:
            if written:
                log.info("audit archived: %d segment(s) up to record %d", len(written),
                         written[-1].last)


async def _refresh_health(health_servicer, store: ControlStore, shard_id: int) -> None:
    """Every HEALTH_REFRESH_S: each shard's service name (turnstile.shard.<k>) SERVING
    while the supervisor's status row says its process is running, else NOT_SERVING
    (starting, in backoff after a crash), so a health check against any live shard
    shows one that is down. This shard's own name stays SERVING: it answers."""
    shown: dict[int, int] = {shard_id: health_pb2.HealthCheckResponse.SERVING}
    while True:
        try:
            rows = store.shard_status()
        except Exception as e:          # never the reason a shard stops serving
            log.warning("cannot read the shards' status (%s)", e)
            rows = {}
        for k, row in rows.items():
            up = k == shard_id or row.get("state") == "running"
            status = (health_pb2.HealthCheckResponse.SERVING if up
                      else health_pb2.HealthCheckResponse.NOT_SERVING)
            if shown.get(k) != status:
                shown[k] = status
                await health_servicer.set(f"{SHARD_SERVICE}{k}", status)
        await asyncio.sleep(HEALTH_REFRESH_S)


def _arm_failpoint(shard: Shard, spec: str) -> None:
    """The drill hook of FAILPOINT_ENV (see the module docstring)."""
    name, _, value = spec.partition("=")
    if name != "commit-error-after" or not value.isdigit():
        raise SystemExit(f"{FAILPOINT_ENV}={spec!r}: the one failpoint is commit-error-after=N")
    left = int(value)
    commit = shard.storage.commit

    def failing(*args, **kw):           # on the writer's I/O thread, one at a time
        nonlocal left
        if left <= 0:
            raise StorageError(f"failpoint {spec}: an injected commit failure")
        left -= 1
        return commit(*args, **kw)
    shard.storage.commit = failing
    log.warning("failpoint armed: %s (%s; a drill, never in production)", spec, FAILPOINT_ENV)


def run_shard(cfg: ServerConfig, shard_id: int) -> None:
    import uvloop
    status = uvloop.run(serve_shard(cfg, shard_id))
    if status:
        sys.exit(status)


# -- the supervisor ----------------------------------------------------------------------
STABLE_S = 60.0                 # a shard up this long: its next crash backs off from the start
CRASH_LOOP_RESTARTS = 5         # this many restarts of one shard within CRASH_LOOP_WINDOW_S...
CRASH_LOOP_WINDOW_S = 300.0     # ...is a crash loop: a warning, and crash_loop in its status
TICK_S = 0.1                    # how often the supervisor looks at its shard processes


def _say(msg: str, *, err: bool = False) -> None:
    print(msg, file=sys.stderr if err else sys.stdout, flush=True)


def _cause(returncode: int) -> str:
    """Why a shard process ended, from its exit status: the signal's name, or the status."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    if returncode == EXIT_FAILED:
        return f"exit status {returncode} (its writer failed)"
    return f"exit status {returncode}"


class _Child:
    """One shard process: started without waiting for it (a reader thread hears its
    "listening on" line and passes the rest of its output on), restarted after capped
    exponential backoff whenever it ends -- before or after it listened -- for ever."""

    def __init__(self, shard: int, argv, port: int, cfg: ServerConfig):
        self.shard = shard
        self.argv = argv            # port -> the command line
        self.port = self.conf_port = port
        self.backoff = cfg.restart_backoff_s
        self.backoff_max = max(cfg.restart_backoff_max_s, cfg.restart_backoff_s)
        self.proc: subprocess.Popen | None = None
        self.address = ""
        self.state = "starting"
        self.since = time.time()
        self.restarts = 0           # since `serve` started, for ever
        self.streak = 0             # crashes in a row, without STABLE_S up between them
        self.recent: list[float] = []
        self.last_cause = ""
        self.crash_loop = False
        self.next_start = 0.0       # time.monotonic() of the next start, in backoff
        self.next_start_at: float | None = None
        self.running_since: float | None = None
        self._heard: list[str] = []
        self._ready = threading.Event()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def status(self) -> dict:
        return {"state": self.state, "restarts": self.restarts, "last_cause": self.last_cause,
                "since": self.since, "next_start_at": self.next_start_at,
                "crash_loop": self.crash_loop, "pid": self.proc.pid if self.proc else None,
                "address": self.address}

    def _to(self, state: str) -> None:
        self.state = state
        self.since = time.time()

    def start(self) -> None:
        heard, ready = self._heard, self._ready = [], threading.Event()
        self.proc = subprocess.Popen(self.argv(self.port), stdout=subprocess.PIPE, stderr=None,
                                     text=True)
        self.next_start_at = None
        self.running_since = None
        self._to("starting")
        threading.Thread(target=self._read, args=(self.proc, heard, ready), daemon=True,
                         name=f"turnstile-shard-{self.shard}-output").start()

    @staticmethod
    def _read(proc: subprocess.Popen, heard: list, ready: threading.Event) -> None:
        # to the end, passing its output on, so a full pipe never blocks it
        for line in proc.stdout:
            if not ready.is_set() and line.startswith("listening on "):
                heard.append(line.split()[2])
                ready.set()
                continue
            sys.stdout.write(line)
            sys.stdout.flush()

    def step(self, now: float, stopping: bool) -> bool:
        """Look at the process once; True if its status changed."""
        if self.state in ("starting", "running") and self.proc.poll() is not None:
            if stopping:
                self._to("stopped")
                return True
            self._crashed(now)
            return True
        if self.state == "starting" and self._ready.is_set():
            self._listened(now)
            self._to("running")
            if self.restarts:
                _say(f"shard {self.shard} is back: pid {self.proc.pid} listening on "
                     f"{self.address} (restart {self.restarts}, after {self.last_cause})")
            return True
        if self.state == "backoff" and not stopping and now >= self.next_start:
            self.start()
            return True
        if self.state == "backoff" and stopping:
            self.next_start_at = None
            self._to("stopped")
            return True
        return False

    def _listened(self, now: float) -> None:
        self.address = self._heard[0]
        if self.conf_port == 0:               # come back where the clients know it is
            self.port = int(self.address.rsplit(":", 1)[1])
        self.running_since = now

    def _crashed(self, now: float) -> None:
        rc = self.proc.returncode
        if self.running_since is None and self._ready.is_set():
            self._listened(now)               # it listened, just before it died
        up = None if self.running_since is None else now - self.running_since
        if up is not None and up >= STABLE_S:
            self.streak = 0
        if up is None and rc > 0 and self.conf_port == 0:
            self.port = 0                     # it could not start there: any free port
        delay = min(self.backoff_max, self.backoff * 2 ** min(self.streak, 32))
        self.streak += 1
        self.restarts += 1
        self.last_cause = _cause(rc)
        self.recent = [t for t in self.recent if now - t < CRASH_LOOP_WINDOW_S] + [now]
        self.crash_loop = len(self.recent) >= CRASH_LOOP_RESTARTS
        self.next_start = now + delay
        self.next_start_at = time.time() + delay
        self._to("backoff")
        ran = "before it listened" if up is None else f"after {up:.1f} s up"
        _say(f"shard {self.shard} (pid {self.proc.pid}) died: {self.last_cause}, {ran}; "
             f"restart {self.restarts} in {delay:g} s", err=True)
        if self.crash_loop:
            _say(f"warning: shard {self.shard} is in a crash loop: {len(self.recent)} restarts "
                 f"in the last {CRASH_LOOP_WINDOW_S:g} s (last: {self.last_cause})", err=True)


def _record(store: ControlStore, c: _Child) -> None:
    try:
        store.set_shard_status(c.shard, c.status())
    except Exception as e:      # the shards' health lags; supervising goes on
        _say(f"warning: shard {c.shard}'s status not recorded ({e})", err=True)


def supervise(cfg: ServerConfig, config_file: str | None = None) -> int:
    cfg.tls()                                    # refuse a half TLS set-up before starting
    logs.configure(cfg.log_format, cfg.log_level)
    data = cfg.data
    # no master key, or not the one the shards are wrapped under: refuse before anything
    # is created or started (each shard process loads it again, from the same place)
    master = keyring.load_master_key(key_file=cfg.master_key_file)
    for name in sorted(os.listdir(data)) if os.path.isdir(data) else []:
        if name.startswith("shard-"):
            keyring.shard_key_state(os.path.join(data, name), master)
    if not cfg.replicated:
        # a replicated shard is written through its log of record only (Shard._writes_here):
        # refused here, before a shard process would fail to start for ever
        marked = replicated_shards(data)
        if marked:
            raise SystemExit(
                f"{data}: shard {', '.join(map(str, marked))} of it "
                f"{'is' if len(marked) == 1 else 'are'} replicated (cluster "
                f"{', '.join(sorted(set(marked.values())))}): serve it with that cluster's "
                f"--etcd and --pg, or make it stand alone first (`turnstile shards detach`)")
    source = keyring.key_source(cfg.master_key_file)
    print(f"master key {keyring.master_key_id(master)} from "
          f"{os.path.abspath(source) if source else keyring.ENV_KEY}", flush=True)
    store = ControlStore(os.path.join(data, "control"))
    recorded = store.shard_count()               # `turnstile shards set-count`
    shards = cfg.shards or recorded or os.cpu_count() or 1
    if recorded and shards < recorded:
        store.close()
        raise SystemExit(f"{data} has {recorded} shards (turnstile shards set-count); serving "
                         f"{shards} would leave shard {shards}..{recorded - 1} unserved")
    for pid, role, key in bootstrap_principals(store, data):
        print(f"created principal {pid} ({role}) with API key {key}", flush=True)
    children = []
    for k in range(shards):
        def argv(port: int, k: int = k) -> list[str]:
            own = cfg.model_copy(update={"port": port, "admin_port":
                                         cfg.admin_port + k if cfg.admin_port else 0,
                                         "metrics_port": cfg.metrics_port + k if cfg.metrics_port else 0})
            out = [sys.executable, "-m", "turnstile.server.cli", "serve-shard", "--shard", str(k)]
            for name, value in own.model_dump().items():
                if isinstance(value, bool):
                    out.append(("--" if value else "--no-") + name.replace("_", "-"))
                elif value is not None and name not in SECRET_OPTIONS:
                    out += ["--" + name.replace("_", "-"), str(value)]
            return out
        children.append(_Child(k, argv, cfg.port + k if cfg.port else 0, cfg))
    # options that may hold a password reach the shard processes in their environment, never
    # on their command lines (which every user of the machine can read in `ps`)
    for name in SECRET_OPTIONS:
        value = getattr(cfg, name)
        if value:
            os.environ[f"TURNSTILE_{name.upper()}"] = str(value)
    stopping = False

    def on_signal(signum, frame):
        nonlocal stopping
        stopping = True
        for c in children:
            if c.alive():
                c.proc.send_signal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    store.clear_shard_status(shards)
    for c in children:
        c.start()
        _record(store, c)
    announced = False
    while True:
        now = time.monotonic()
        for c in children:
            # one shard's backoff is a time to start it at, never a wait for the others
            if c.step(now, stopping):
                if stopping and c.alive():    # started as the signal came
                    c.proc.send_signal(signal.SIGTERM)
                _record(store, c)
        if not announced and not stopping and all(c.state == "running" for c in children):
            announced = True
            _say(f"listening on {children[0].address} ({shards} shards: "
                 + ", ".join(f"{c.shard}@{c.address}" for c in children)
                 + f"; demo keys in {os.path.join(data, 'demo-keys.txt')})")
        if stopping and not any(c.alive() for c in children):
            break
        time.sleep(TICK_S)
    for c in children:
        if c.state != "stopped":
            c.next_start_at = None
            c._to("stopped")
            _record(store, c)
    store.close()
    _say("stopped")
    return 0
