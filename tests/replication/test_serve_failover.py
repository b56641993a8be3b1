"""`turnstile serve` in replicated mode (issue 18), two nodes of one shard on a real etcd and
a real PostgreSQL primary with its synchronous standby: node A owns the shard and serves;
node B, started from the same data, follows the log of record. Node A is killed with
SIGKILL (supervisor and shard process at once, as a machine dies) under a mixed load of
sales and scans; B takes the shard over within 30 s, and every sale and admission A
acknowledged is there: no acknowledged order lost, no admitted ticket admitted again."""
from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import grpc

from turnstile.clients.base import ApiError, Connection, RetryPolicy
from turnstile.clients.channel import ChannelClient, Item
from turnstile.engine import demo
from turnstile.server.app import bootstrap_principals
from turnstile.server.control import ControlStore
from turnstile.server import testing
from turnstile.v1 import common_pb2, gate_pb2, gate_pb2_grpc, sales_pb2, sales_pb2_grpc
from tests.integration.conftest import MASTER_KEY, kill_server, start_server, stop_server
from tests.services import free_ports

DAY = dt.date(2026, 12, 29)
PASSWORD = "pg-secret-never-in-ps"
SLOT = demo.day_slot_id(DAY)


def verify(server, code: str) -> str:
    with server.channel() as ch:
        r = gate_pb2_grpc.GateServiceStub(ch).Verify(
            gate_pb2.VerifyRequest(code=code, gate_id="north-1", direction=common_pb2.IN),
            metadata=server.meta("demo-gate"), timeout=5)
    return common_pb2.ScanReason.Name(r.reason)


def seeded(data: str) -> None:
    """The demo in `data`, with its principals and keys made (as the first serve would)."""
    testing.seed_demo(data, DAY, master_key=MASTER_KEY)
    store = ControlStore(f"{data}/control")
    bootstrap_principals(store, data)
    store.close()


def buy_meanwhile(server, order: str, timeout: float) -> tuple[threading.Thread, list]:
    """A Buy by the demo OTA in a thread of its own; its order, or ApiError, in the list."""
    got: list = []

    def buy() -> None:
        try:
            with Connection(server.address, server.keys["demo-ota"], timeout=timeout) as conn:
                got.append(ChannelClient(conn).buy(demo.VENUE, [Item("adult", SLOT, 1)], order))
        except ApiError as e:
            got.append(e)
    t = threading.Thread(target=buy, daemon=True)
    t.start()
    return t, got


def node_processes(data: str, command: str = "serve") -> list[int]:
    """The processes of `turnstile.server.cli COMMAND` (serve, or a shard's serve-shard)
    with --data `data`, found by their command line."""
    want, cmd = f"\0--data\0{data}\0".encode(), f"turnstile.server.cli\0{command}\0".encode()
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                line = f.read()
        except OSError:
            continue
        if cmd in line and want in line:
            out.append(int(pid))
    return out


def kill_node(data: str) -> None:
    """SIGKILL every `serve` of data dir `data` this test started and its shard processes
    (a standby that never served was never handed back by start_server), each ended by its
    own process group (start_server starts each in a session of its own)."""
    for pid in node_processes(data):
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def end_nodes(a, b_started: list, b_dir: str) -> None:
    """A test's end: node A and node B killed (B by its data dir too: a standby that never
    served was never handed back)."""
    for s in (a, *b_started):
        if s.proc.poll() is None:
            kill_server(s)
    kill_node(b_dir)


def two_nodes(etcd, pg, tmp_path, name: str, extra: tuple = ()):
    """Node A (serving, the shard's owner) and node B (started from the same data, a
    standby following the log; its Server once it serves, in the returned list), with a
    database and an etcd cluster name of their own (`extra`: more serve options)."""
    a_dir, b_dir = str(tmp_path / "a"), str(tmp_path / "b")
    seeded(a_dir)
    shutil.copytree(a_dir, b_dir)                # the same principals and keys on both nodes
    shutil.copy(testing.master_key_file(a_dir, MASTER_KEY), testing.master_key_file(b_dir, MASTER_KEY))
    args = ("--shards", "1", "--etcd", etcd.endpoint, "--cluster", name, "--lease-ttl-s", "3", *extra)
    # the connection string as an operator gives one with a password: in the environment
    # (the database trusts 127.0.0.1, so the password is carried and never checked)
    env = {"TURNSTILE_PG": f"{pg.create_database(name)} password={PASSWORD}"}
    a = start_server(a_dir, DAY, args, env)
    b_started: list = []
    b_port = free_ports(1)[0]                    # known before it serves: the clients name it
    def start_b() -> None:
        try:
            b_started.append(start_server(b_dir, DAY, (*args, "--port", str(b_port)), env, timeout=180))
        except RuntimeError:
            pass                                 # ended before it served (kill_node)
    b_thread = threading.Thread(target=start_b, daemon=True)
    b_thread.start()
    time.sleep(2)
    assert not b_started                         # a standby: it follows, it does not take writes
    a.standby_address = f"127.0.0.1:{b_port}"
    a.standby_dir = b_dir
    a.dsn = env["TURNSTILE_PG"]
    return a, b_thread, b_started


def shard_pid(server) -> int:
    """The shard process of a one-shard `serve` (the supervisor's child)."""
    with open(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children") as f:
        return int(f.read().split()[0])


def test_the_standby_node_takes_over_a_killed_primary_with_every_acknowledged_write(etcd, pg, tmp_path):
    a, b_thread, b_started = two_nodes(etcd, pg, tmp_path, "killed")

    acked: dict[str, list[str]] = {}             # orders acknowledged -> codes
    killed_at: list[float] = []
    admitted: list[str] = []
    stop = threading.Event()

    after_kill: list[str] = []                   # orders acknowledged by the new primary

    def load() -> None:
        # the OTA knows both nodes: its calls follow the shard to its new primary
        i = 0
        with Connection(f"{a.address},{a.standby_address}", a.keys["demo-ota"], timeout=3,
                        retry=RetryPolicy(max_attempts=40, max_backoff_s=1.0, total_s=60)) as conn:
            ota = ChannelClient(conn)
            while not stop.is_set():
                i += 1
                try:
                    o = ota.buy(demo.VENUE, [Item("adult", SLOT, 1)], f"ota-{i}")
                except ApiError:
                    continue
                acked[f"ota-{i}"] = [t.code for t in o.tickets]
                if killed_at:
                    after_kill.append(f"ota-{i}")
                    if len(after_kill) >= 5:
                        return
                elif i % 2 == 0:
                    try:
                        if verify(a, acked[f"ota-{i}"][0]) == "OK":
                            admitted.append(acked[f"ota-{i}"][0])
                    except grpc.RpcError:
                        pass
    loader = threading.Thread(target=load, daemon=True)
    try:
        loader.start()
        deadline = time.monotonic() + 60
        while len(acked) < 40 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(acked) >= 40 and admitted
        for pid in (a.proc.pid, shard_pid(a)):   # the password is in no command line
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                assert PASSWORD.encode() not in f.read()
        killed_at.append(time.monotonic())
        kill_server(a)                           # the primary's machine dies, mid-load
        killed = time.monotonic()
        b_thread.join(60)
        took = time.monotonic() - killed
        loader.join(60)
        stop.set()
        assert len(after_kill) >= 5              # the OTA's calls went on, to the new primary
        assert b_started, "the standby did not take over"
        b = b_started[0]
        assert took < 30, took
        try:
            with Connection(b.address, b.keys["demo-ota"], timeout=10) as conn:
                ota = ChannelClient(conn)
                for order, codes in acked.items():
                    assert [t.code for t in ota.get_order(demo.VENUE, order).tickets] == codes
                for code in admitted:
                    assert verify(b, code) == "ALREADY_USED"
                ota.buy(demo.VENUE, [Item("adult", SLOT, 1)], "after-failover")
            print(f"failover after SIGKILL: {took:.1f} s; {len(acked)} orders ({len(after_kill)} after the kill, "
                  f"re-routed), {len(admitted)} "
                  "admissions acknowledged before, all there")
        finally:
            assert "stopped" in stop_server(b)
    finally:
        stop.set()
        if a.proc.poll() is None:
            kill_server(a)
        if b_started and b_started[0].proc.poll() is None:
            kill_server(b_started[0])
        kill_node(a.standby_dir)


def test_a_primary_stopped_past_its_lease_is_refused_when_it_resumes_and_steps_down(etcd, pg, tmp_path):
    """SIGSTOP the primary's shard process past its lease: the standby takes the shard;
    SIGCONT: what the old primary was asked meanwhile is refused (NOT_PRIMARY: its lease
    may have lapsed, and the log takes no write of its epoch), and it steps down -- its
    supervisor starts it again as a standby."""
    a, b_thread, b_started = two_nodes(etcd, pg, tmp_path, "stopped")
    try:
        with Connection(a.address, a.keys["demo-ota"], timeout=5) as conn:
            ota_a = ChannelClient(conn)
            before = ota_a.buy(demo.VENUE, [Item("adult", SLOT, 1)], "before-stop")
            price = ota_a.quote(demo.VENUE, [Item("adult", SLOT, 1)]).amount_fen
        pid = shard_pid(a)
        os.kill(pid, signal.SIGSTOP)
        stopped = time.monotonic()
        # a Buy pinned to the frozen primary, tried once: no client re-routing it (a client
        # that retries finds the new primary and buys there, as it should)
        late: list = []

        def pinned() -> None:
            with grpc.insecure_channel(a.address) as ch:
                try:
                    late.append(sales_pb2_grpc.SalesServiceStub(ch).Buy(sales_pb2.BuyRequest(
                        venue_id=demo.VENUE, order_id="while-stopped",
                        items=[sales_pb2.Item(product_id="adult", slot_ids=[SLOT], qty=1)],
                        payment=sales_pb2.Payment(method="channel", amount_fen=price)),
                        metadata=a.meta("demo-ota"), timeout=30))
                except grpc.RpcError as e:
                    late.append(e)
        caller = threading.Thread(target=pinned, daemon=True)
        caller.start()
        b_thread.join(60)
        assert b_started, "the standby did not take over"
        b = b_started[0]
        took = time.monotonic() - stopped
        os.kill(pid, signal.SIGCONT)
        caller.join(60)
        assert len(late) == 1 and isinstance(late[0], grpc.RpcError), late
        # not acknowledged: NOT_PRIMARY from the resumed process, or no answer at all (once
        # a CI run: DEADLINE_EXCEEDED, the process stepping down before it answered); that
        # nothing was written is checked on the new primary below
        assert late[0].code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED), late[0]
        # it steps down: the process exits and comes back as a standby
        deadline = time.monotonic() + 30
        while sum("standby of shard 0" in line for line in a.log) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sum("standby of shard 0" in line for line in a.log) >= 2, "\n".join(a.log[-20:])
        with Connection(b.address, b.keys["demo-ota"], timeout=10) as conn:
            ota = ChannelClient(conn)
            assert [t.code for t in ota.get_order(demo.VENUE, "before-stop").tickets] \
                == [t.code for t in before.tickets]
            assert refused_not_found(ota, "while-stopped")
        print(f"SIGSTOP past the lease: the standby served after {took:.1f} s")
        assert "stopped" in stop_server(b)
    finally:
        for s in (a, *(b_started or [])):
            if s.proc.poll() is None:
                kill_server(s)
        kill_node(a.standby_dir)


def refused_not_found(ota, order: str) -> bool:
    try:
        ota.get_order(demo.VENUE, order)
    except ApiError as e:
        return e.code.name == "NOT_FOUND"
    return False


def test_with_the_databases_primary_stopped_the_shard_acknowledges_nothing_and_loses_nothing(etcd, pg, tmp_path):
    a, b_thread, b_started = two_nodes(etcd, pg, tmp_path, "nodb")
    try:
        pg.stop_primary()
        try:
            t, got = buy_meanwhile(a, "during-outage", 30)
            time.sleep(3)
            assert got == []                     # not acknowledged while the log is not writable
        finally:
            pg.start_primary()
        t.join(60)
        assert len(got) == 1 and not isinstance(got[0], ApiError), got
        with Connection(a.address, a.keys["demo-ota"], timeout=10) as conn:
            assert ChannelClient(conn).get_order(demo.VENUE, "during-outage").tickets
        assert not b_started                     # the primary kept its lease throughout
    finally:
        for s in (a, *(b_started or [])):
            if s.proc.poll() is None:
                kill_server(s)
        kill_node(a.standby_dir)


def test_the_shard_map_names_each_shards_primary_across_nodes(etcd, pg, tmp_path):
    """Two nodes of two shards: A owns both; its shard 1 process dies (and its supervisor
    is frozen, so it can't start it again), B's shard 1 takes over while A still serves
    shard 0. Each node's GetShardMap names the primary of each shard, from etcd: a client
    that asks either finds shard 1 on B."""
    from turnstile.engine import Shard
    from turnstile.v1 import admin_pb2, admin_pb2_grpc
    a_dir, b_dir = str(tmp_path / "a"), str(tmp_path / "b")
    seeded(a_dir)
    Shard.open(os.path.join(a_dir, "shard-1"), shard_id=1, master_key=MASTER_KEY).close()
    shutil.copytree(a_dir, b_dir)                # both shards made once, then copied
    shutil.copy(testing.master_key_file(a_dir, MASTER_KEY), testing.master_key_file(b_dir, MASTER_KEY))
    env = {"TURNSTILE_PG": pg.create_database("map")}
    args = ("--shards", "2", "--etcd", etcd.endpoint, "--cluster", "map", "--lease-ttl-s", "3")
    a = start_server(a_dir, DAY, args, env)
    b_port = free_ports(1)[0]                    # its shard k listens on b_port + k
    # B never serves both shards here, so it never says "listening on": started by hand
    b = subprocess.Popen([sys.executable, "-m", "turnstile.server.cli", "serve", "--data", b_dir,
                          "--master-key-file", testing.master_key_file(b_dir, MASTER_KEY),
                          *testing.day_clock(DAY), *args, "--port", str(b_port)],
                         cwd=testing.ROOT, env=testing._env(env), stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)

    def shard_map(address: str) -> dict[int, str]:
        with grpc.insecure_channel(address) as ch:
            m = admin_pb2_grpc.AdminServiceStub(ch).GetShardMap(admin_pb2.GetShardMapRequest(),
                                                               metadata=a.meta("demo-ota"), timeout=5)
        return {e.shard: e.address for e in m.shards}
    try:
        time.sleep(2)                            # B's shard processes follow
        assert shard_map(a.address) == a.shards
        os.kill(a.proc.pid, signal.SIGSTOP)      # A's supervisor frozen: no restart
        with open(f"/proc/{a.proc.pid}/task/{a.proc.pid}/children") as f:
            children = [int(x) for x in f.read().split()]
        one = [pid for pid in children if b"--shard\x001\x00" in open(f"/proc/{pid}/cmdline", "rb").read()]
        os.kill(one[0], signal.SIGKILL)
        b1 = f"127.0.0.1:{b_port + 1}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if shard_map(a.address).get(1) == b1:
                    break
            except grpc.RpcError:
                pass
            time.sleep(0.2)
        assert shard_map(a.address) == {0: a.shards[0], 1: b1}      # A names B for shard 1
        assert shard_map(b1) == {0: a.shards[0], 1: b1}             # and B names A for shard 0
    finally:
        try:
            os.kill(a.proc.pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
        kill_server(a)
        os.killpg(b.pid, signal.SIGKILL)
        b.wait(10)


def test_a_gate_decides_offline_through_a_failover_and_uploads_to_the_new_primary(etcd, pg, tmp_path):
    from turnstile.clients.gate import GateClient
    a, b_thread, b_started = two_nodes(etcd, pg, tmp_path, "gate")
    gate = GateClient(f"{a.address},{a.standby_address}", a.keys["demo-gate"], "north-1", demo.VENUE,
                      state_dir=str(tmp_path / "gate"), timeout=1.0, retry_online_s=0.5,
                      clock=lambda: time.time() + a.offset)
    try:
        with Connection(a.address, a.keys["demo-ota"], timeout=10) as conn:
            codes = [t.code for t in ChannelClient(conn).buy(demo.VENUE, [Item("adult", SLOT, 3)], "gate-1").tickets]
        assert gate.maintain()
        d0 = gate.verify(codes[0])
        assert (d0.reason, d0.offline) == ("OK", False)
        assert gate.maintain()                   # the bundle knows the admission
        kill_server(a)
        # no server: the gate decides from its bundle
        d1 = gate.verify(codes[1])
        assert (d1.reason, d1.offline) == ("OK", True)
        assert (gate.verify(codes[0]).reason, gate.verify(codes[1]).reason) == ("ALREADY_USED", "ALREADY_USED")
        b_thread.join(60)
        assert b_started
        b = b_started[0]
        deadline = time.monotonic() + 30
        while gate.pending() and time.monotonic() < deadline:
            gate.maintain()                      # back online: to the new primary
            time.sleep(0.2)
        assert gate.pending() == 0 and gate.online
        # the new primary knows the offline admission, and decides the rest
        again, fresh = gate.verify(codes[1]), gate.verify(codes[2])
        assert [(d.reason, d.offline) for d in (again, fresh)] == [("ALREADY_USED", False), ("OK", False)]
        assert "stopped" in stop_server(b)
    finally:
        gate.close()
        end_nodes(a, b_started, a.standby_dir)


def test_keys_made_and_revoked_on_one_node_hold_on_the_other(etcd, pg, tmp_path):
    """Principals and API keys live in each node's control store, mirrored through etcd:
    a key made on the primary after the nodes were set up works on the standby once it
    serves, and a key revoked on the primary -- one made there, and one both nodes had
    from the start -- is refused there."""
    from turnstile.clients.admin import AdminClient
    a, b_thread, b_started = two_nodes(etcd, pg, tmp_path, "keys")
    try:
        with Connection(a.address, a.keys["admin"], timeout=10) as conn:
            admin = AdminClient(conn)
            admin.create_principal("late-agency", "channel", venue_ids=[demo.VENUE], channel="agency")
            kept = admin.create_api_key("late-agency").secret
            dropped = admin.create_api_key("late-agency")
            admin.revoke_api_key(dropped.key_id)
            # a key both nodes had from the start, revoked on A: B's own copy is unrevoked
            viewer = a.keys["demo-viewer"]
            admin.revoke_api_key(viewer.split("_")[1])
        kill_server(a)
        b_thread.join(60)
        assert b_started
        b = b_started[0]
        with Connection(b.address, kept, timeout=10) as conn:
            assert AdminClient(conn).whoami().principal_id == "late-agency"
        for secret in (dropped.secret, viewer):
            with Connection(b.address, secret, timeout=10) as conn:
                try:
                    AdminClient(conn).whoami()
                    raise AssertionError("a revoked key was taken")
                except ApiError as e:
                    assert (e.code.name, e.reason) == ("UNAUTHENTICATED", "API_KEY_INVALID")
        assert "stopped" in stop_server(b)
    finally:
        end_nodes(a, b_started, a.standby_dir)


def test_a_new_standby_starts_from_a_hot_backup_and_the_log_after_it(etcd, pg, tmp_path):
    """A standby made while the primary serves: `turnstile backup` beside it, `turnstile
    restore` on the new node, which follows the log from the backup's last batch and, when
    the primary dies, has the sales from before the backup and from after it."""
    a_dir, b_dir, bk = str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "backup")
    seeded(a_dir)
    key = testing.master_key_file(a_dir, MASTER_KEY)
    env = {"TURNSTILE_PG": pg.create_database("backup")}
    args = ("--shards", "1", "--etcd", etcd.endpoint, "--cluster", "backup", "--lease-ttl-s", "3")
    a = start_server(a_dir, DAY, args, env)
    b_started: list = []
    try:
        with Connection(a.address, a.keys["demo-ota"], timeout=10) as conn:
            ota = ChannelClient(conn)
            orders = [ota.buy(demo.VENUE, [Item("adult", SLOT, 1)], f"pre-{i}").order_id for i in range(10)]
            cli = [sys.executable, "-m", "turnstile.server.cli"]
            for argv in ([*cli, "backup", "--data", a_dir, "--out", bk, "--master-key-file", key],
                         [*cli, "restore", "--from", bk, "--data", b_dir, "--master-key-file", key]):
                r = subprocess.run(argv, cwd=testing.ROOT, env=testing._env(None), capture_output=True,
                                   text=True, timeout=120)
                assert r.returncode == 0, r.stdout + r.stderr
            orders += [ota.buy(demo.VENUE, [Item("adult", SLOT, 1)], f"post-{i}").order_id for i in range(10)]
        shutil.copy(key, testing.master_key_file(b_dir, MASTER_KEY))
        t = threading.Thread(target=lambda: b_started.append(start_server(b_dir, DAY, args, env, timeout=120)),
                             daemon=True)
        t.start()
        time.sleep(2)
        kill_server(a)
        t.join(60)
        assert b_started
        with Connection(b_started[0].address, a.keys["demo-ota"], timeout=10) as conn:
            ota = ChannelClient(conn)
            assert all(ota.get_order(demo.VENUE, o).tickets for o in orders)
        assert "stopped" in stop_server(b_started[0])
    finally:
        end_nodes(a, b_started, b_dir)
