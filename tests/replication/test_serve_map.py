"""The shard map in etcd, operated with `turnstile shards ... --etcd` and `turnstile backup
--etcd`, against two real nodes of one shard (issue 18; real etcd, real PostgreSQL primary
and synchronous standby). The contract (`turnstile shards --help`, server/ownership.py):

- `shards list --etcd` shows each shard's primary and epoch, every node with the batch it
  holds, the latest verified backup and the venues;
- a venue created on the primary is in the cluster's map, which every node answers in
  GetShardMap; `place` maps a new venue and refuses one mapped already;
- after a verified backup is recorded, the primary prunes its log of record up to what
  every node and the backup hold, and no further;
- `step-down` hands the shard to the standby, which has every acknowledged write; the old
  primary comes back as a standby, and takes the shard back with every sale made meanwhile;
- a node whose shard was made apart (seeded on its own) is refused and never serves."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import grpc
import psycopg

from turnstile.clients.base import Connection
from turnstile.clients.channel import ChannelClient, Item
from turnstile.engine import demo
from turnstile.server import testing
from turnstile.v1 import admin_pb2, admin_pb2_grpc

from tests.integration.conftest import MASTER_KEY, kill_server, start_server, stop_server
from tests.replication.test_serve_failover import DAY, SLOT, end_nodes, kill_node, seeded, two_nodes

CLI = [sys.executable, "-m", "turnstile.server.cli"]


def turnstile(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *argv], cwd=testing.ROOT, env=testing._env(None),
                          capture_output=True, text=True, timeout=120)


def listing(etcd, cluster: str) -> dict:
    r = turnstile("shards", "list", "--etcd", etcd.endpoint, "--cluster", cluster, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def until(what, timeout: float = 30.0, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        got = what()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(every)


class Output:
    """A process's output lines, read by a thread of their own (so a wait has a deadline)."""

    def __init__(self, proc: subprocess.Popen):
        import queue
        import threading
        self.lines: queue.Queue = queue.Queue()
        self.said: list[str] = []
        threading.Thread(target=lambda: [self.lines.put(x) for x in proc.stdout], daemon=True).start()

    def until(self, found, timeout: float = 60.0) -> str | None:
        """The first line from now for which found(line) holds; None after `timeout`."""
        import queue
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            self.said.append(line)
            if found(line):
                return line
        return None


def shard_map(address: str, key: str) -> tuple[dict[int, str], dict[str, int]]:
    with grpc.insecure_channel(address) as ch:
        m = admin_pb2_grpc.AdminServiceStub(ch).GetShardMap(
            admin_pb2.GetShardMapRequest(), metadata=(("authorization", f"Bearer {key}"),), timeout=5)
    return {e.shard: e.address for e in m.shards}, dict(m.venues)


def logged(dsn: str) -> list[int]:
    with psycopg.connect(dsn) as c:
        return [r[0] for r in c.execute("SELECT seq FROM turnstile_log WHERE shard = 0 ORDER BY seq")]


def api_error_of(fn):
    from turnstile.clients.base import ApiError
    try:
        fn()
    except ApiError as e:
        return e
    raise AssertionError("not refused")


def pruned_to(dsn: str) -> int:
    """How far the log of record says it is pruned (turnstile_epochs, engine/recordlog.py)."""
    with psycopg.connect(dsn) as c:
        return c.execute("SELECT pruned_to FROM turnstile_epochs WHERE shard = 0").fetchone()[0]


def test_the_map_backup_pruning_and_step_down_across_two_nodes(etcd, pg, tmp_path):
    a, b_thread, b_started = two_nodes(etcd, pg, tmp_path, "ops", ("--log-prune-s", "1"))
    b_name = a.standby_address
    try:
        with Connection(a.address, a.keys["demo-ota"], timeout=10) as conn:
            ota = ChannelClient(conn)
            orders = [ota.buy(demo.VENUE, [Item("adult", SLOT, 1)], "o-0").order_id]
            first = logged(a.dsn)[0]                          # the first batch A logged
            orders += [ota.buy(demo.VENUE, [Item("adult", SLOT, 1)], f"o-{i}").order_id for i in range(1, 6)]
        with grpc.insecure_channel(a.address) as ch:         # a venue made after B started
            admin_pb2_grpc.AdminServiceStub(ch).CreateVenue(
                admin_pb2.CreateVenueRequest(venue_id="lingyin", name="Lingyin", utc_offset_s=28800),
                metadata=a.meta("admin"), timeout=5)

        # the map: A the primary, B a standby that holds what A holds
        def caught_up():
            s = listing(etcd, "ops")["shards"]["0"]
            nodes = s["nodes"]
            return s if b_name in nodes and nodes[b_name]["seq"] == nodes[a.address]["seq"] else None
        s = until(caught_up)
        assert s, listing(etcd, "ops")
        assert s["owner"] == a.address and s["epoch"] == 1
        assert (s["nodes"][a.address]["role"], s["nodes"][b_name]["role"]) == ("primary", "standby")
        assert s["backup"] is None
        assert listing(etcd, "ops")["venues"] == {"westlake": 0, "lingyin": 0}
        text = turnstile("shards", "list", "--etcd", etcd.endpoint, "--cluster", "ops").stdout
        assert f"primary {a.address}, epoch 1" in text and "standby" in text and b_name in text

        # place: a new venue on shard 3; one mapped already is refused
        r = turnstile("shards", "place", "hills", "--to", "3", "--etcd", etcd.endpoint, "--cluster", "ops")
        assert r.returncode == 0, r.stderr
        r = turnstile("shards", "place", "lingyin", "--to", "3", "--etcd", etcd.endpoint, "--cluster", "ops")
        assert r.returncode == 1 and "mapped to shard 0 already" in r.stderr
        assert shard_map(a.address, a.keys["demo-ota"])[1] == {"westlake": 0, "lingyin": 0, "hills": 3}
        with grpc.insecure_channel(a.address) as ch:         # hills is shard 3's to create
            try:
                admin_pb2_grpc.AdminServiceStub(ch).CreateVenue(
                    admin_pb2.CreateVenueRequest(venue_id="hills", name="Hills", utc_offset_s=28800),
                    metadata=a.meta("admin"), timeout=5)
                raise AssertionError("created a venue the map gives shard 3")
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.ALREADY_EXISTS and "shard 3" in e.details()

        # no backup recorded: nothing pruned, whatever the nodes hold (the log starts after
        # the batch A held when it first claimed it: the seeded demo)
        time.sleep(2.5)                                       # two pruning rounds more
        whole = logged(a.dsn)
        start = pruned_to(a.dsn)
        assert whole[0] == first and 0 < start < first

        # a verified hot backup of A, recorded in etcd; then the log pruned up to it
        key = testing.master_key_file(a.data, MASTER_KEY)
        r = turnstile("backup", "--data", a.data, "--out", str(tmp_path / "bk"), "--master-key-file", key,
                      "--etcd", etcd.endpoint, "--cluster", "ops")
        assert r.returncode == 0, r.stderr
        assert "recorded in etcd as its latest verified backup" in r.stdout
        backup = listing(etcd, "ops")["shards"]["0"]["backup"]
        assert backup["seq"] > 0 and backup["out"] == str(tmp_path / "bk")
        with Connection(a.address, a.keys["demo-ota"], timeout=10) as conn:
            orders += [ChannelClient(conn).buy(demo.VENUE, [Item("adult", SLOT, 1)], f"p-{i}").order_id
                       for i in range(3)]
        assert until(lambda: pruned_to(a.dsn) == backup["seq"], 15)
        time.sleep(2.5)                                       # and no further
        assert pruned_to(a.dsn) == backup["seq"]
        assert min(logged(a.dsn)) == min(s for s in whole + logged(a.dsn) if s > backup["seq"])
        assert max(logged(a.dsn)) > backup["seq"]             # what the backup lacks stays

        # step-down: B takes the shard with every order; A comes back as a standby
        r = turnstile("shards", "step-down", "0", "--etcd", etcd.endpoint, "--cluster", "ops")
        assert r.returncode == 0 and a.address in r.stdout, r.stderr
        b_thread.join(60)
        assert b_started, "the standby did not take over"
        b = b_started[0]
        with Connection(b.address, a.keys["demo-ota"], timeout=10) as conn:
            ota = ChannelClient(conn)
            assert all(ota.get_order(demo.VENUE, o).tickets for o in orders)
        endpoints, venues = shard_map(b.address, a.keys["demo-ota"])
        assert endpoints[0] == b.address and venues == {"westlake": 0, "lingyin": 0, "hills": 3}

        def a_is_standby():
            s = listing(etcd, "ops")["shards"]["0"]
            return s if s["nodes"][a.address]["role"] == "standby" else None
        s = until(a_is_standby)
        assert s and s["owner"] == b.address and s["epoch"] == 2
        assert a.proc.poll() is None                          # A's node runs on, a standby
        from turnstile.engine import Shard                    # both copies marked replicated
        for d in (a.data, a.standby_dir):
            s = Shard.open_readonly(os.path.join(d, "shard-0"), master_key=MASTER_KEY)
            try:
                assert s.replicated() == "ops"
            finally:
                s.close()
        assert "stopped" in stop_server(b)
    finally:
        end_nodes(a, b_started, a.standby_dir)


def test_a_primary_that_stepped_down_takes_the_shard_back_with_its_successors_sales(etcd, pg, tmp_path):
    """A hands the shard to B and comes back as its standby; B sells; B hands it back. A
    must have followed B from the last batch both had: it serves B's sale -- the order is
    there, its ticket admits once -- and sells on without selling B's tickets again.
    (engine/recordlog.py: a node's shard holds no batch the log lacks; test_recordlog.py
    tries the refused batches that take a number and write nothing.)"""
    from tests.replication.test_serve_failover import verify
    a, b_thread, b_started = two_nodes(etcd, pg, tmp_path, "roundtrip")
    b_name = a.standby_address
    try:
        with Connection(a.address, a.keys["demo-ota"], timeout=10) as conn:
            ChannelClient(conn).buy(demo.VENUE, [Item("adult", SLOT, 1)], "a-1")
        r = turnstile("shards", "step-down", "0", "--etcd", etcd.endpoint, "--cluster", "roundtrip")
        assert r.returncode == 0, r.stderr
        b_thread.join(60)
        assert b_started, "the standby did not take over"
        b = b_started[0]
        with Connection(b.address, a.keys["demo-ota"], timeout=10) as conn:
            sold = ChannelClient(conn).buy(demo.VENUE, [Item("adult", SLOT, 1)], "b-1")

        def a_caught_up():
            s = listing(etcd, "roundtrip")["shards"]["0"]
            n = s["nodes"]
            return s if (s["owner"] == b_name and n.get(a.address, {}).get("role") == "standby"
                         and n[a.address]["seq"] == n[b_name]["seq"]) else None
        assert until(a_caught_up, 60), listing(etcd, "roundtrip")
        r = turnstile("shards", "step-down", "0", "--etcd", etcd.endpoint, "--cluster", "roundtrip")
        assert r.returncode == 0 and b_name in r.stdout, r.stderr
        assert until(lambda: listing(etcd, "roundtrip")["shards"]["0"]["owner"] == a.address, 60)

        def on_a(fn):
            with Connection(a.address, a.keys["demo-ota"], timeout=10) as conn:
                return fn(ChannelClient(conn))
        # A takes writes once it has applied the log to its end (one order id: asked again
        # until then, it is one sale)
        again = until(lambda: _answered(lambda: on_a(
            lambda ota: ota.buy(demo.VENUE, [Item("adult", SLOT, 1)], "a-3"))), 30)
        assert again and {t.code for t in again.tickets}.isdisjoint({t.code for t in sold.tickets})
        got = on_a(lambda ota: ota.get_order(demo.VENUE, "b-1"))
        assert [t.code for t in got.tickets] == [t.code for t in sold.tickets]
        code = sold.tickets[0].code
        assert [verify(a, code), verify(a, code)] == ["OK", "ALREADY_USED"]
    finally:
        end_nodes(a, b_started, a.standby_dir)


def _answered(call):
    """call()'s answer; None while the node refuses it as not (yet) the primary."""
    from turnstile.clients.base import ApiError
    try:
        return call()
    except ApiError as e:
        if e.reason in ("NOT_PRIMARY", "SHARD_UNAVAILABLE") or e.code == grpc.StatusCode.UNAVAILABLE:
            return None
        raise


def test_a_node_whose_shard_was_made_apart_is_refused_and_never_serves(etcd, pg, tmp_path):
    a_dir, c_dir = str(tmp_path / "a"), str(tmp_path / "c")
    seeded(a_dir)
    seeded(c_dir)                                # the same shard number, made on its own
    env = {"TURNSTILE_PG": pg.create_database("apart")}
    args = ("--shards", "1", "--etcd", etcd.endpoint, "--cluster", "apart", "--lease-ttl-s", "3")
    a = start_server(a_dir, DAY, args, env)
    c = subprocess.Popen([*CLI, "serve", "--data", c_dir, "--master-key-file",
                          testing.master_key_file(c_dir, MASTER_KEY), *testing.day_clock(DAY), *args,
                          "--port", "0"], cwd=testing.ROOT, env=testing._env(env),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         start_new_session=True)
    try:
        out = Output(c)
        line = out.until(lambda x: "is not the shard of the log of record" in x)
        assert line and "restore" in line, "".join(out.said)
        assert not any(x.startswith("listening on") for x in out.said)
        kill_server(a)                           # even with the primary gone: C takes nothing
        time.sleep(5)
        with psycopg.connect(env["TURNSTILE_PG"]) as conn:
            assert conn.execute("SELECT epoch FROM turnstile_epochs WHERE shard = 0").fetchone()[0] == 1
        s = listing(etcd, "apart")["shards"]["0"]
        assert s["owner"] is None and s["epoch"] == 1
    finally:
        if a.proc.poll() is None:
            kill_server(a)
        kill_node(c_dir)
        c.wait(10)


def test_bad_values_are_refused_in_a_line_and_change_nothing(etcd, capsys):
    from turnstile.server.cli import main            # in this process: quicker than 11 starts

    def shards(*argv: str) -> tuple[int, str]:
        rc = main(["shards", *argv])
        return rc, capsys.readouterr().err
    base = ("--etcd", etcd.endpoint, "--cluster", "bad")
    assert shards("place", "westlake", "--to", "0", *base)[0] == 0
    before = listing(etcd, "bad")
    for argv, said in ((("place", "../x", "--to", "0"), "is not a venue id"),
                       (("place", "", "--to", "0"), "is not a venue id"),
                       (("place", "westlake", "--to", "-1"), "no shard -1"),
                       (("place", "westlake", "--to", "1"), "mapped to shard 0 already"),
                       (("step-down", "-1"), "no shard -1"),
                       (("step-down", "7"), "has no primary"),
                       (("forget", "0", "a/b"), "no node"),
                       (("forget", "0", "10.0.0.9:1"), "no node")):
        rc, err = shards(*argv, *base)
        assert rc == 1 and said in err and "Traceback" not in err, (argv, err)
    rc, err = shards("list", "--etcd", "127.0.0.1:1", "--cluster", "bad")
    assert rc == 1 and "etcd at 127.0.0.1:1" in err
    rc, err = shards("list", "--etcd", "no-port", "--cluster", "bad")
    assert rc == 1 and "not host:port" in err
    assert listing(etcd, "bad") == before == {"cluster": "bad", "shards": {}, "venues": {"westlake": 0}}


def test_a_preferred_standby_started_first_leaves_the_shard_to_the_other_node(etcd, pg, tmp_path):
    """`serve --standby` on B, started before A: B follows and does not take the shard
    nobody owns; A, started after, owns it. When A stops, B takes it over."""
    import shutil
    a_dir, b_dir = str(tmp_path / "a"), str(tmp_path / "b")
    seeded(a_dir)
    shutil.copytree(a_dir, b_dir)
    shutil.copy(testing.master_key_file(a_dir, MASTER_KEY), testing.master_key_file(b_dir, MASTER_KEY))
    env = {"TURNSTILE_PG": pg.create_database("prefer")}
    args = ("--shards", "1", "--etcd", etcd.endpoint, "--cluster", "prefer", "--lease-ttl-s", "3")
    b = subprocess.Popen([*CLI, "serve", "--data", b_dir, "--master-key-file",
                          testing.master_key_file(b_dir, MASTER_KEY), *testing.day_clock(DAY), *args,
                          "--port", "0", "--standby"], cwd=testing.ROOT, env=testing._env(env),
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                         start_new_session=True)
    a = None
    try:
        out = Output(b)
        line = out.until(lambda x: x.startswith("standby of shard 0"))
        assert line and "--standby" in line, "".join(out.said)
        time.sleep(2)
        assert listing(etcd, "prefer")["shards"]["0"]["owner"] is None    # B left it
        a = start_server(a_dir, DAY, args, env)
        assert listing(etcd, "prefer")["shards"]["0"]["owner"] == a.address
        with Connection(a.address, a.keys["demo-ota"], timeout=10) as conn:
            order = ChannelClient(conn).buy(demo.VENUE, [Item("adult", SLOT, 1)], "pref-1").order_id
        assert "stopped" in stop_server(a)
        line = out.until(lambda x: x.startswith("listening on"), 30)   # B takes over once A released
        assert line, "".join(out.said)
        b_address = line.split()[2]
        with Connection(b_address, a.keys["demo-ota"], timeout=10) as conn:
            assert ChannelClient(conn).get_order(demo.VENUE, order).tickets
        assert listing(etcd, "prefer")["shards"]["0"]["owner"] == b_address
    finally:
        if a is not None and a.proc.poll() is None:
            kill_server(a)
        kill_node(b_dir)
        b.wait(10)


def test_nodes_are_named_in_the_map_by_the_host_they_advertise(etcd, pg, tmp_path):
    """Two machines listening on 0.0.0.0 would both be "0.0.0.0:50051" in etcd: replicated
    mode on a wildcard host is refused without --advertise-host, and with it the map names
    the node by that host (here one no client could dial: the map is read, not used)."""
    env = {"TURNSTILE_PG": pg.create_database("advertise")}
    args = ("--shards", "1", "--etcd", etcd.endpoint, "--cluster", "advertise", "--lease-ttl-s", "3")
    r = subprocess.run([*CLI, "serve", "--data", str(tmp_path / "wild"), *args, "--host", "0.0.0.0"],
                       cwd=testing.ROOT, env=testing._env(env), capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "advertise_host" in r.stderr + r.stdout
    assert not (tmp_path / "wild" / "shard-0").exists()
    a = start_server(str(tmp_path / "a"), DAY, (*args, "--advertise-host", "turnstile-a.invalid"), env)
    try:
        port = a.address.rsplit(":", 1)[1]
        assert listing(etcd, "advertise")["shards"]["0"]["owner"] == f"turnstile-a.invalid:{port}"
        assert shard_map(a.address, a.keys["demo-ota"])[0] == {0: f"turnstile-a.invalid:{port}"}
    finally:
        kill_server(a)


def test_a_standby_answers_reads_with_its_lag_and_refuses_writes(etcd, pg, tmp_path):
    """While B follows, it answers reads (availability, orders, who am I) from what it
    applied, each answer stating the last batch it holds and how stale it may be; a write
    is UNAVAILABLE with reason NOT_PRIMARY and changes nothing; its health is NOT_SERVING
    (a load balancer sends it nothing). A later sale on A is read on B."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from turnstile.v1 import inventory_pb2, inventory_pb2_grpc, sales_pb2, sales_pb2_grpc
    from turnstile.clients.base import ApiError
    a, b_thread, b_started = two_nodes(etcd, pg, tmp_path, "reads")
    try:
        with Connection(a.address, a.keys["demo-ota"], timeout=10) as conn:
            sold = ChannelClient(conn).buy(demo.VENUE, [Item("adult", SLOT, 2)], "r-1")
        with grpc.insecure_channel(a.standby_address) as ch:
            meta = a.meta("demo-ota")

            def sold_on_b() -> tuple[int, dict]:
                r, call = inventory_pb2_grpc.InventoryServiceStub(ch).Availability.with_call(
                    inventory_pb2.AvailabilityRequest(venue_id=demo.VENUE, date_from=DAY.isoformat()),
                    metadata=meta, timeout=5)
                return next(s.sold for s in r.slots if s.slot_id == SLOT), dict(call.trailing_metadata())
            def answers_2() -> bool:
                try:
                    return sold_on_b()[0] == 2
                except grpc.RpcError:
                    return False                          # B still starting
            assert until(answers_2, 30)
            n, md = sold_on_b()
            assert int(md["turnstile-standby-batch"]) > 0 and int(md["turnstile-standby-lag-ms"]) >= 0
            order, call = sales_pb2_grpc.SalesServiceStub(ch).GetOrder.with_call(
                sales_pb2.GetOrderRequest(order_id="r-1"), metadata=meta, timeout=5)
            assert sorted(t.code for t in order.tickets) == sorted(t.code for t in sold.tickets)
            assert "turnstile-standby-lag-ms" in dict(call.trailing_metadata())

            # a write on the standby: refused, nothing sold there or anywhere
            try:
                sales_pb2_grpc.SalesServiceStub(ch).Buy(
                    sales_pb2.BuyRequest(venue_id=demo.VENUE, order_id="r-2", items=[
                        sales_pb2.Item(product_id="adult", slot_ids=[SLOT], qty=1)]),
                    metadata=meta, timeout=5)
                raise AssertionError("the standby took a sale")
            except grpc.RpcError as e:
                err = ApiError.from_rpc(e, method="Buy")
                assert (err.code, err.reason) == (grpc.StatusCode.UNAVAILABLE, "NOT_PRIMARY")
            assert sold_on_b()[0] == 2
            admin = admin_pb2_grpc.AdminServiceStub(ch)      # nor a principal made there
            try:
                admin.CreatePrincipal(admin_pb2.CreatePrincipalRequest(principal_id="on-b", role=admin_pb2.ADMIN),
                                      metadata=a.meta("admin"), timeout=5)
                raise AssertionError("the standby made a principal")
            except grpc.RpcError as e:
                assert ApiError.from_rpc(e, method="CreatePrincipal").reason == "NOT_PRIMARY"
            listed = admin.ListPrincipals(admin_pb2.ListPrincipalsRequest(), metadata=a.meta("admin"), timeout=5)
            assert "on-b" not in {p.principal_id for p in listed.principals} and len(listed.principals) > 3
            h = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
            assert h.status == health_pb2.HealthCheckResponse.NOT_SERVING

            # more sales on A are read on B, soon
            with Connection(a.address, a.keys["demo-ota"], timeout=10) as conn:
                ChannelClient(conn).buy(demo.VENUE, [Item("adult", SLOT, 3)], "r-3")
            assert until(lambda: sold_on_b()[0] == 5, 10, every=0.05)
        # the client library and the CLI, pinned to the standby
        with Connection(a.standby_address, a.keys["demo-ota"], timeout=10, pinned=True) as conn:
            ota = ChannelClient(conn)
            assert len(ota.get_order(demo.VENUE, "r-3").tickets) == 3
            said = conn.standby_state()
            assert said is not None and said.batch > 0 and said.lag_ms >= 0      # caught up
            e = api_error_of(lambda: ota.buy(demo.VENUE, [Item("adult", SLOT, 1)], "r-4"))
            assert (e.code, e.reason) == (grpc.StatusCode.UNAVAILABLE, "NOT_PRIMARY")
        with open(tmp_path / "finance.key", "w") as f:
            f.write(a.keys["demo-finance"])
        # routed by the map (asked of A): the map names B as shard 0's standby
        with Connection(a.address, a.keys["demo-ota"], timeout=10, prefer_standby=True) as conn:
            assert conn.shard_map().standbys == {0: [a.standby_address]}
            ota = ChannelClient(conn)
            assert len(ota.get_order(demo.VENUE, "r-3").tickets) == 3
            assert conn.standby_state() is not None                    # B answered
            ota.buy(demo.VENUE, [Item("adult", SLOT, 1)], "r-5")      # B refused it, A took it
            assert conn.standby_state() is None
        with Connection(a.address, a.keys["demo-ota"], timeout=10) as conn:
            assert len(ChannelClient(conn).get_order(demo.VENUE, "r-5").tickets) == 1
        with Connection(a.standby_address, a.keys["demo-ota"], timeout=10, pinned=True) as conn:

            def b_has_it() -> bool:
                try:
                    return bool(ChannelClient(conn).get_order(demo.VENUE, "r-5").tickets)
                except ApiError:
                    return False
            assert until(b_has_it, 10, every=0.05)
        r = subprocess.run([sys.executable, "-m", "turnstile.clients.cli", "report", "tickets", "--venue",
                            demo.VENUE, "--address", a.address, "--key-file",
                            str(tmp_path / "finance.key"), "--standby", "--csv"],
                           cwd=testing.ROOT, env=testing._env(None), capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert "answered by a standby at batch" in r.stderr and "ms behind its primary" in r.stderr
        adult = next(line for line in r.stdout.splitlines() if line.startswith("adult,"))
        assert adult.split(",")[1] == "6"                 # issued: 2 + 3 + 1, as on the primary
        assert not b_started                              # still a standby
        with Connection(a.address, a.keys["demo-ota"], timeout=10) as conn:
            assert ChannelClient(conn).get_order(demo.VENUE, "r-3").tickets    # A untouched
    finally:
        end_nodes(a, b_started, a.standby_dir)
