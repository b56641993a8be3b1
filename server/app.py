"""Serve a node: one OS process per shard (DESIGN.md 4.1), under a supervisor.

Each shard serves GateService, SalesService, InventoryService, AdminService,
ReportService, MemberService and gRPC health.

    turnstile serve --data data --shards 2 --port 50051

The supervisor creates the admin and demo principals on a new data dir, starts one
`turnstile serve-shard` process per shard (shard k on port+k, or any free port with
--port 0), records where each listens in the control store (the shard map), prints
`listening on HOST:PORT` (shard 0; every shard answers AdminService.GetShardMap), and
restarts a shard process that dies. SIGTERM or SIGINT drains every shard: health
NOT_SERVING, in-flight calls finish, the last batch commits, the shard closes.
"""
from __future__ import annotations

import asyncio
import gc
import os
import signal
import subprocess
import sys
import threading
import time

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from turnstile.engine import Shard, keyring
from turnstile.v1 import (admin_pb2_grpc, gate_pb2_grpc, inventory_pb2_grpc, member_pb2_grpc,
                          report_pb2_grpc, sales_pb2_grpc)

from .auth import AuthInterceptor
from .config import ServerConfig
from .control import ControlStore
from .services import (AdminService, GateService, InventoryService, MemberService, ReportService,
                       SalesService, ShardNode)

MAX_MESSAGE = 16 << 20
# one principal per role (docs/ROLES.md), all but admin scoped to the demo venue
DEMO_PRINCIPALS = [
    ("admin", "admin", {}),
    ("demo-operator", "operator", {"venues": ["westlake"]}),
    ("demo-ota", "channel", {"venues": ["westlake"], "channel": "ota"}),
    ("demo-window", "seller", {"venues": ["westlake"], "channel": "window"}),
    ("demo-gate", "gate", {"venues": ["westlake"]}),
    ("demo-finance", "finance", {"venues": ["westlake"]}),
    ("demo-auditor", "auditor", {}),
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
def _grpc_server(node: ShardNode, store: ControlStore, health_servicer, *, reflect: bool):
    server = grpc.aio.server(
        interceptors=[AuthInterceptor(store, node)],   # node: denied calls are audited
        options=[("grpc.max_receive_message_length", MAX_MESSAGE),
                 ("grpc.max_send_message_length", MAX_MESSAGE)])
    gate_pb2_grpc.add_GateServiceServicer_to_server(GateService(node), server)
    sales_pb2_grpc.add_SalesServiceServicer_to_server(SalesService(node), server)
    inventory_pb2_grpc.add_InventoryServiceServicer_to_server(InventoryService(node), server)
    admin_pb2_grpc.add_AdminServiceServicer_to_server(AdminService(node, store), server)
    report_pb2_grpc.add_ReportServiceServicer_to_server(ReportService(node), server)
    member_pb2_grpc.add_MemberServiceServicer_to_server(MemberService(node), server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if reflect:
        from grpc_reflection.v1alpha import reflection
        from turnstile.v1 import admin_pb2, gate_pb2, inventory_pb2, member_pb2, report_pb2, sales_pb2
        names = [m.DESCRIPTOR.services_by_name[n].full_name for m, n in (
            (gate_pb2, "GateService"), (sales_pb2, "SalesService"),
            (inventory_pb2, "InventoryService"), (admin_pb2, "AdminService"),
            (report_pb2, "ReportService"), (member_pb2, "MemberService"))]
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


async def serve_shard(cfg: ServerConfig, shard_id: int = 0) -> None:
    offset = cfg.clock_offset_s
    shard = Shard.open(os.path.join(cfg.data, f"shard-{shard_id}"), shard_id=shard_id,
                       master_key=keyring.load_master_key(key_file=cfg.master_key_file),
                       clock=(lambda: time.time() + offset) if offset else time.time)
    store = ControlStore(os.path.join(cfg.data, "control"), cache_s=cfg.auth_cache_s)
    moved = set()
    for venue in shard.venues():
        home = store.venue_shard(venue)
        if home is not None and home != shard_id:
            # left behind by `turnstile shards move`: the map routes it to its new shard
            print(f"shard {shard_id}: venue {venue} is mapped to shard {home}; not served here",
                  file=sys.stderr, flush=True)
            moved.add(venue)
            continue
        store.place_venue(venue, shard_id)
    writer = shard.writer(max_queue=cfg.max_queue)
    await writer.start()
    node = ShardNode(shard, writer, store, moved=frozenset(moved), scan_skew_s=cfg.scan_skew_s,
                     offline_window_s=cfg.offline_window_s)
    health_servicer = health.aio.HealthServicer()
    tls = cfg.tls()
    servers = [_grpc_server(node, store, health_servicer, reflect=False)]
    bound = _listen(servers[0], cfg.host, cfg.port, tls)
    if bound == 0:
        raise SystemExit(f"shard {shard_id}: cannot listen on {cfg.host}:{cfg.port}")
    node.address = f"{cfg.host}:{bound}"
    admin_address = ""
    if cfg.admin_port:
        servers.append(_grpc_server(node, store, health_servicer, reflect=True))
        admin_bound = _listen(servers[1], cfg.host, cfg.admin_port, tls)
        if admin_bound == 0:
            raise SystemExit(f"shard {shard_id}: cannot listen on {cfg.host}:{cfg.admin_port}")
        admin_address = f", admin {cfg.host}:{admin_bound}"
    store.set_endpoint(shard_id, node.address)
    for server in servers:
        await server.start()
    # the state just loaded and the code: out of the cyclic GC's way (full collections
    # of the shard took 35-55 ms each without this, ~1 ms with it)
    gc.collect()
    gc.freeze()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    print(f"listening on {node.address} (shard {shard_id}, {len(shard.venues())} venues"
          f"{admin_address}{', TLS' if tls else ''})", flush=True)

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
    await stop.wait()
    watch.cancel()
    await health_servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    await asyncio.gather(*(server.stop(cfg.grace_s) for server in servers))
    await writer.stop()
    shard.close()
    store.close()
    print(f"shard {shard_id} stopped", flush=True)


def run_shard(cfg: ServerConfig, shard_id: int) -> None:
    import uvloop
    uvloop.run(serve_shard(cfg, shard_id))


# -- the supervisor ----------------------------------------------------------------------
class _Child:
    def __init__(self, shard: int, argv: list[str]):
        self.shard = shard
        self.argv = argv
        self.proc: subprocess.Popen | None = None
        self.address = ""
        self.restarts = 0

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=None, text=True)
        for line in self.proc.stdout:
            if line.startswith("listening on "):
                self.address = line.split()[2]
                # keep passing its output on, so a full pipe never blocks it
                threading.Thread(target=self._relay, args=(self.proc,), daemon=True).start()
                return
        raise SystemExit(f"shard {self.shard} did not start (exit {self.proc.wait()})")

    @staticmethod
    def _relay(proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()


def supervise(cfg: ServerConfig, config_file: str | None = None) -> int:
    cfg.tls()                                    # refuse a half TLS set-up before starting
    data = cfg.data
    # no master key, or not the one the shards are wrapped under: refuse before anything
    # is created or started (each shard process loads it again, from the same place)
    master = keyring.load_master_key(key_file=cfg.master_key_file)
    for name in sorted(os.listdir(data)) if os.path.isdir(data) else []:
        if name.startswith("shard-"):
            keyring.shard_key_state(os.path.join(data, name), master)
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
    store.close()
    children = []
    for k in range(shards):
        own = cfg.model_copy(update={"port": cfg.port + k if cfg.port else 0,
                                     "admin_port": cfg.admin_port + k if cfg.admin_port else 0})
        argv = [sys.executable, "-m", "turnstile.server.cli", "serve-shard", "--shard", str(k)]
        for name, value in own.model_dump().items():
            if value is not None:
                argv += ["--" + name.replace("_", "-"), str(value)]
        children.append(_Child(k, argv))
    stopping = False

    def on_signal(signum, frame):
        nonlocal stopping
        stopping = True
        for c in children:
            if c.proc and c.proc.poll() is None:
                c.proc.send_signal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for c in children:
        c.start()
    print(f"listening on {children[0].address} ({shards} shards: "
          + ", ".join(f"{c.shard}@{c.address}" for c in children)
          + f"; demo keys in {os.path.join(data, 'demo-keys.txt')})", flush=True)
    while True:
        alive = [c for c in children if c.proc.poll() is None]
        if stopping and not alive:
            break
        if not stopping:
            for c in children:
                if c.proc.poll() is not None and c.restarts < 5:
                    c.restarts += 1
                    print(f"shard {c.shard} exited ({c.proc.returncode}); restarting", flush=True)
                    c.start()
        time.sleep(0.2)
    print("stopped", flush=True)
    return 0
