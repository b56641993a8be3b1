"""The supervisor restarts a dead shard for ever, a shard whose writer fails exits to be
restarted from disk, and a shard that is down shows in every live shard's health
(issue 12, "Failure is loud and short"). Real `serve` processes, real signals."""
from __future__ import annotations

import os
import re
import signal
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from turnstile.engine import demo
from turnstile.server import testing
from turnstile.server.control import ControlStore
from tests.conftest import MASTER_KEY
from tests.integration.conftest import start_server, stop_server, venue_day
from turnstile.v1 import admin_pb2, admin_pb2_grpc, sales_pb2, sales_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def shard_pids(supervisor: int) -> dict[int, int]:
    """shard id -> pid of the supervisor's live `serve-shard` children (read from /proc)."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if fields[0] == "Z" or int(fields[1]) != supervisor:
                continue
            with open(f"/proc/{d}/cmdline") as f:
                argv = f.read().split("\0")
        except (OSError, IndexError, ValueError):
            continue                    # gone meanwhile
        if "serve-shard" in argv:
            out[int(argv[argv.index("--shard") + 1])] = int(d)
    return out


def wait_for(what, timeout: float, step: float = 0.05):
    """Poll `what()` until it returns a true value; that value, else fail after `timeout`."""
    end = time.monotonic() + timeout
    while True:
        try:
            got = what()
        except grpc.RpcError:
            got = None
        if got:
            return got
        if time.monotonic() > end:
            pytest.fail(f"not within {timeout} s: the wait of line {what.__code__.co_firstlineno}")
        time.sleep(step)


def fresh(address: str) -> grpc.Channel:
    """A channel that connects anew: not one sharing a subchannel (and its reconnect
    backoff, after the calls that found the shard down) with earlier channels."""
    return grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])


def catalog(server, address: str) -> bool:
    with fresh(address) as ch:
        cat = admin_pb2_grpc.AdminServiceStub(ch).GetCatalog(
            admin_pb2.GetCatalogRequest(venue_id="westlake"), metadata=server.meta("admin"),
            timeout=2)
    return "north-1" in {g.gate_id for g in cat.gates}      # a gate of the demo venue


def health(address: str, service: str) -> int:
    with fresh(address) as ch:
        return health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=2).status


def test_a_shard_sigkilled_six_times_comes_back_every_time(tmp_path):
    server = start_server(str(tmp_path / "data"), venue_day(),
                          ("--shards", "1", "--restart-backoff-s", "0.2",
                           "--restart-backoff-max-s", "0.4"))
    try:
        assert catalog(server, server.address)
        pid = shard_pids(server.proc.pid)[0]
        for n in range(1, 7):
            os.kill(pid, signal.SIGKILL)
            new = wait_for(lambda: (p := shard_pids(server.proc.pid).get(0)) != pid and p, 30)
            # back on its address, serving its venue
            wait_for(lambda: catalog(server, server.address), 30)
            assert server.proc.poll() is None
            pid = new
            deaths = [line for line in list(server.log)
                      if line.startswith("shard 0 ") and " died: " in line and "SIGKILL" in line]
            assert len(deaths) == n, "\n".join(server.log)
            assert re.search(rf"\brestart {n}\b", deaths[-1]), deaths[-1]
        log = "\n".join(server.log)
        assert "crash loop" in log               # 6 restarts in a few seconds
    finally:
        out = stop_server(server)
    assert "stopped" in out.splitlines()[-1]


def test_a_writer_failure_exits_and_the_shard_recovers_from_disk(tmp_path):
    server = start_server(str(tmp_path / "data"), venue_day(),
                          ("--shards", "1", "--restart-backoff-s", "0.2"),
                          env={"TURNSTILE_FAILPOINT": "commit-error-after=3"})
    meta = server.meta("demo-ota")
    slot = demo.slot_id("main", server.day, 14)

    def hold(key):
        return stub.Hold(sales_pb2.HoldRequest(venue_id="westlake", idempotency_key=key, items=[
            sales_pb2.Item(product_id="adult", slot_ids=[slot], qty=1)]), metadata=meta, timeout=5)

    def confirm(h, order_id):
        return stub.Confirm(sales_pb2.ConfirmRequest(
            hold_id=h.hold_id, order_id=order_id,
            payment=sales_pb2.Payment(method="card", amount_fen=h.amount_fen)),
            metadata=meta, timeout=5)
    try:
        pid = shard_pids(server.proc.pid)[0]
        ch = server.channel()
        stub = sales_pb2_grpc.SalesServiceStub(ch)
        a = hold("a")                                         # commit 1
        sold = confirm(a, "order-a")                          # commit 2
        b = hold("b")                                         # commit 3
        with pytest.raises(grpc.RpcError) as e:               # commit 4: the disk refuses it
            confirm(b, "order-b")
        assert e.value.code() != grpc.StatusCode.OK
        ch.close()
        # the failed process exits (it is not SIGKILLed: status 70) and is replaced
        new = wait_for(lambda: (p := shard_pids(server.proc.pid).get(0)) != pid and p, 30)
        assert new != pid
        wait_for(lambda: catalog(server, server.address), 30)
        log = "\n".join(server.log)
        assert "writer failed" in log and "injected commit failure" in log, log
        assert re.search(r"shard 0 .*exit status 70.*restart 1\b", log), log
        with fresh(server.address) as ch:
            stub = sales_pb2_grpc.SalesServiceStub(ch)
            got = stub.GetOrder(sales_pb2.GetOrderRequest(order_id="order-a"), metadata=meta,
                                timeout=5)
            assert [t.ticket_id for t in got.tickets] == [t.ticket_id for t in sold.tickets]
            with pytest.raises(grpc.RpcError) as e:
                stub.GetOrder(sales_pb2.GetOrderRequest(order_id="order-b"), metadata=meta,
                              timeout=5)
            assert e.value.code() == grpc.StatusCode.NOT_FOUND
            # hold b was acknowledged, so it is there: confirming it now works
            again = confirm(b, "order-b")
            assert again.order.order_id == "order-b" and len(again.tickets) == 1
    finally:
        out = stop_server(server)
    assert "stopped" in out.splitlines()[-1]


def test_the_health_of_a_live_shard_shows_another_shard_down(tmp_path):
    # backoff of 3 s: shard 1 stays down long enough to be seen down
    server = start_server(str(tmp_path / "data"), venue_day(),
                          ("--shards", "2", "--restart-backoff-s", "3",
                           "--restart-backoff-max-s", "3"))
    zero, one = server.shards[0], server.shards[1]
    try:
        wait_for(lambda: health(zero, "turnstile.shard.1") == SERVING, 10)
        wait_for(lambda: health(one, "turnstile.shard.0") == SERVING, 10)
        assert health(zero, "turnstile.shard.0") == SERVING
        pid = shard_pids(server.proc.pid)[1]
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: health(zero, "turnstile.shard.1") == NOT_SERVING, 5)
        assert 1 not in shard_pids(server.proc.pid)       # seen while it was down
        assert health(zero, "") == SERVING and health(zero, "turnstile.shard.0") == SERVING
        wait_for(lambda: health(zero, "turnstile.shard.1") == SERVING, 30)
        assert health(one, "") == SERVING                # back where it was
        assert health(one, "turnstile.shard.0") == SERVING
    finally:
        out = stop_server(server)
    assert "stopped" in out.splitlines()[-1]


def test_a_stop_during_a_backoff_is_prompt_and_the_status_row_shows_it(tmp_path):
    data = str(tmp_path / "data")
    server = start_server(data, venue_day(), ("--shards", "1", "--restart-backoff-s", "60"))
    try:
        os.kill(shard_pids(server.proc.pid)[0], signal.SIGKILL)
        store = ControlStore(os.path.join(data, "control"))
        try:
            row = wait_for(lambda: (r := store.shard_status().get(0)) and
                           r["state"] == "backoff" and r, 5)
        finally:
            store.close()
        assert row["restarts"] == 1 and "SIGKILL" in row["last_cause"]
        assert row["next_start_at"] > time.time() + 50     # 60 s after the crash
        t = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(10) == 0
        assert time.monotonic() - t < 5                     # not the backoff's 60 s
    finally:
        out = stop_server(server)
    assert out.splitlines()[-1] == "stopped"


def test_a_shard_that_cannot_start_is_retried_and_never_stops_the_others(tmp_path):
    import socket
    import threading
    # shard k's admin listener is on ADMIN_PORT+k: hold shard 1's, so it exits at start
    while True:
        held = socket.socket()
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port - 1))
                held.listen()       # listening: not even SO_REUSEADDR binds beside it
                break
            except OSError:
                held.close()
    data = str(tmp_path / "data")
    testing.seed_demo(data, venue_day(), master_key=MASTER_KEY)
    store = ControlStore(os.path.join(data, "control"))
    done = threading.Event()

    def release():             # once the supervisor has seen shard 1 fail to start
        while not done.wait(0.05):
            if store.shard_status().get(1, {}).get("restarts", 0) >= 1:
                break
        held.close()
    releaser = threading.Thread(target=release)
    releaser.start()
    try:
        server = start_server(data, venue_day(),
                              ("--shards", "2", "--admin-port", str(port - 1),
                               "--restart-backoff-s", "0.2", "--restart-backoff-max-s", "0.5"))
    finally:
        done.set()
        releaser.join()
        store.close()
    try:
        failed = [line for line in server.log
                  if line.startswith("shard 1 ") and "before it listened" in line]
        assert failed, "\n".join(server.log)               # it failed, and was retried
        assert server.proc.poll() is None
        assert catalog(server, server.shards[0])
        assert health(server.shards[1], "") == SERVING      # up once its port was free
    finally:
        out = stop_server(server)
    assert out.splitlines()[-1] == "stopped"
