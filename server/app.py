"""Serve one shard over gRPC (grpc.aio on uvloop).

    turnstile serve --data data --port 50051

On start it opens (recovering) DATA/shard-N and the principal store DATA/control,
starts the shard's group-commit writer and the gRPC server, marks health SERVING and
prints `listening on HOST:PORT`. On SIGTERM or SIGINT it drains: health NOT_SERVING,
no new calls, in-flight calls finish, the last batch commits, the shard closes.
"""
from __future__ import annotations

import asyncio
import os
import signal
import sys

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from engine import Shard
from turnstile.v1 import admin_pb2_grpc, gate_pb2_grpc, inventory_pb2_grpc, sales_pb2_grpc

from .auth import AuthInterceptor
from .principals import PrincipalStore
from .services import AdminService, GateService, InventoryService, SalesService, ShardNode

MAX_MESSAGE = 16 << 20
DEMO_PRINCIPALS = [
    ("admin", "admin", {}),
    ("demo-gate", "gate", {"venues": ["westlake"]}),
    ("demo-ota", "channel", {"venues": ["westlake"], "channel": "ota"}),
    ("demo-window", "seller", {"venues": ["westlake"], "channel": "window"}),
]


def bootstrap_principals(store: PrincipalStore, data: str) -> list[tuple[str, str, str]]:
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
        for pid, role, key in made:
            f.write(f"{pid}\t{role}\t{key}\n")
    return made


async def serve(data: str, *, host: str = "127.0.0.1", port: int = 50051, shard_id: int = 0,
                max_queue: int = 100_000, grace_s: float = 5.0) -> None:
    shard = Shard.open(os.path.join(data, f"shard-{shard_id}"), shard_id=shard_id)
    store = PrincipalStore(os.path.join(data, "control"))
    for pid, role, key in bootstrap_principals(store, data):
        print(f"created principal {pid} ({role}) with API key {key}", flush=True)
    writer = shard.writer(max_queue=max_queue)
    await writer.start()
    server = grpc.aio.server(
        interceptors=[AuthInterceptor(store)],
        options=[("grpc.max_receive_message_length", MAX_MESSAGE),
                 ("grpc.max_send_message_length", MAX_MESSAGE)])
    node = ShardNode(shard, writer)
    gate_pb2_grpc.add_GateServiceServicer_to_server(GateService(node), server)
    sales_pb2_grpc.add_SalesServiceServicer_to_server(SalesService(node), server)
    inventory_pb2_grpc.add_InventoryServiceServicer_to_server(InventoryService(node), server)
    admin_pb2_grpc.add_AdminServiceServicer_to_server(AdminService(node, store), server)
    health_servicer = health.aio.HealthServicer() if hasattr(health, "aio") else health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise SystemExit(f"cannot listen on {host}:{port}")
    node.address = f"{host}:{bound}"
    await server.start()
    await _set_health(health_servicer, health_pb2.HealthCheckResponse.SERVING)
    print(f"listening on {node.address} (shard {shard_id}, {len(shard.state.venues)} venues; "
          f"demo keys in {os.path.join(data, 'demo-keys.txt')})", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    # drain: say so, refuse new calls, let in-flight ones finish, flush the last batch
    await _set_health(health_servicer, health_pb2.HealthCheckResponse.NOT_SERVING)
    await server.stop(grace_s)
    await writer.stop()
    shard.close()
    store.close()
    print("stopped", flush=True)


async def _set_health(servicer, status) -> None:
    r = servicer.set("", status)
    if asyncio.iscoroutine(r):
        await r


def run(data: str, **kw) -> None:
    try:
        import uvloop
    except ImportError:          # pragma: no cover - uvloop is a dependency
        asyncio.run(serve(data, **kw))
    else:
        uvloop.run(serve(data, **kw))
