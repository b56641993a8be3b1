"""Every rpc on a shard's standby (issue 18; the contract at the top of each proto file):
a call the proto marks `idempotency_level = NO_SIDE_EFFECTS` is answered by the standby
from what it applied; every other call is refused with NOT_PRIMARY (UNAVAILABLE), nothing
done. Each rpc is sent to a real standby node with a valid request, built on the primary
by the fuzz's builders (tests/fuzz/builders.py) -- a read the proto leaves unmarked, or a
write it marks, shows here. And a Connection that prefers standbys sends the reads there
and the writes to the primary alone: with the standby frozen, a sale goes through."""
from __future__ import annotations

import os
import random
import signal
import time

import grpc
from google.rpc import error_details_pb2

from turnstile.clients.base import ApiError, Connection, changes_nothing
from turnstile.clients.channel import ChannelClient, Item
from turnstile.engine import demo

from tests.fuzz.builders import BUILDERS
from tests.fuzz.checks import call
from tests.fuzz.protos import methods
from tests.fuzz.world import World
from tests.replication.test_serve_failover import SLOT, end_nodes, kill_node, node_processes, two_nodes


def reason(out) -> str:
    for d in out.status.details if out.status is not None else ():
        info = error_details_pb2.ErrorInfo()
        if d.Unpack(info):
            return info.reason
    return ""


def on_standby(channel, w, m, request, want, timeout: float = 15.0):
    """The standby's answer to `request`, asked again while it may lag the primary (an id
    the builder just made there is not known here yet) until `want(outcome)`."""
    deadline = time.monotonic() + timeout
    while True:
        out = call(channel, m, [request.SerializeToString()], w.meta(BUILDERS[m.key].principal), 10)
        if want(out) or time.monotonic() > deadline:
            return out
        time.sleep(0.2)


def test_a_standby_answers_every_read_and_refuses_every_write(etcd, pg, tmp_path):
    a, b_thread, b_started = two_nodes(etcd, pg, tmp_path, "rpcs")
    w = None
    try:
        w = World(a, seed=11)
        w.now = lambda: int(a.now())        # the builders' scan times: the servers' clock
        rng = random.Random(11)
        with grpc.insecure_channel(a.standby_address) as b:
            not_primary = lambda out: (out.code, reason(out)) == (grpc.StatusCode.UNAVAILABLE, "NOT_PRIMARY")
            wrong = []
            all_methods = methods()
            for m in all_methods:
                request = BUILDERS[m.key].build(w, rng, m.input)
                if changes_nothing(m.path):
                    out = on_standby(b, w, m, request, lambda out: out.ok)
                    if not out.ok:
                        wrong.append(f"{m.key} (a read): {out.code.name} {reason(out)} {out.message[:100]}")
                else:
                    out = on_standby(b, w, m, request, not_primary)
                    if not not_primary(out):
                        wrong.append(f"{m.key} (a write): {out.code.name} {reason(out)} {out.message[:100]}")
            assert not wrong, "\n".join(wrong)
            reads = [m for m in all_methods if changes_nothing(m.path)]
            assert len(reads) >= 30 and len(all_methods) - len(reads) >= 40   # both kinds tried
    finally:
        if w is not None:
            w.close()
        end_nodes(a, b_started, a.standby_dir)


def test_a_connection_preferring_standbys_sends_writes_to_the_primary_alone(etcd, pg, tmp_path):
    """A Connection that prefers standbys reads from the standby the map names, and sends a
    sale to the primary alone. With the standby frozen (SIGSTOP: it takes connections and
    answers nothing), a read that finds it silent is asked of the primary, the standby is
    passed over for a while, and the sale goes through: a frozen standby costs a
    reader one deadline, a seller nothing."""
    a, b_thread, b_started = two_nodes(etcd, pg, tmp_path, "prefer")
    frozen = []
    try:
        with Connection(f"{a.address},{a.standby_address}", a.keys["demo-ota"], timeout=3,
                        prefer_standby=True) as conn:
            ota = ChannelClient(conn)
            deadline = time.monotonic() + 30
            while conn.standby_of(venue=demo.VENUE) is None and time.monotonic() < deadline:
                time.sleep(0.5)
                conn.shard_map(refresh=True)
            assert conn.standby_of(venue=demo.VENUE) == a.standby_address
            first = ota.buy(demo.VENUE, [Item("adult", SLOT, 1)], "p-1")
            # read on the standby once it has applied the sale (a few ms behind)
            got, deadline = None, time.monotonic() + 10
            while got is None and time.monotonic() < deadline:
                try:
                    got = ota.get_order(demo.VENUE, "p-1")
                except ApiError as e:
                    assert e.reason == "NOT_FOUND", e
                    time.sleep(0.05)
            assert got is not None and got.order_id == first.order_id
            assert conn.standby_state() is not None     # the read was the standby's
            for pid in node_processes(a.standby_dir, "serve-shard"):
                os.kill(pid, signal.SIGSTOP)
                frozen.append(pid)
            assert frozen
            # a sale (its price known: no quote first) goes to the primary alone
            paid = first.amount_fen
            sold = ota.buy(demo.VENUE, [Item("adult", SLOT, 1)], "p-2", amount_fen=paid)
            assert sold.order_id == "p-2" and conn.standby_state() is None
            # a read finds the standby silent and is asked of the primary; then the standby
            # is passed over for a while: the next read goes to the primary at once
            assert ota.get_order(demo.VENUE, "p-2").order_id == "p-2" and conn.standby_state() is None
            quoted = ota.quote(demo.VENUE, [Item("adult", SLOT, 1)])
            assert quoted.amount_fen == paid and conn.standby_state() is None
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
        end_nodes(a, b_started, a.standby_dir)
        kill_node(a.standby_dir)


def test_a_reader_bounds_how_stale_a_standbys_answer_may_be(etcd, pg, tmp_path):
    """A reader may bound a standby's lag (metadata turnstile-max-lag-ms; Connection
    max_lag_ms, `turnstile report --max-lag-ms`). With the log of record's database
    stopped, the standby can't look at the log and the lag it states grows: past the
    bound it refuses the read (UNAVAILABLE, STANDBY_BEHIND, nothing read), and a
    Connection preferring standbys gets the answer from the primary; without a bound,
    the standby answers, stating its lag. A bound that is not a number is refused."""
    from turnstile.clients.base import StandbyState
    from turnstile.v1 import sales_pb2, sales_pb2_grpc
    a, b_thread, b_started = two_nodes(etcd, pg, tmp_path, "lag")
    both = f"{a.address},{a.standby_address}"
    try:
        with Connection(a.address, a.keys["demo-ota"], timeout=10) as conn:
            ChannelClient(conn).buy(demo.VENUE, [Item("adult", SLOT, 1)], "l-1")

        def read(bound: str | None):
            md = (*a.meta("demo-ota"), *((("turnstile-max-lag-ms", bound),) if bound is not None else ()))
            with grpc.insecure_channel(a.standby_address) as ch:
                try:
                    _, call_ = sales_pb2_grpc.SalesServiceStub(ch).GetOrder.with_call(
                        sales_pb2.GetOrderRequest(order_id="l-1"), metadata=md, timeout=5)
                    return "OK", StandbyState.of(call_.trailing_metadata())
                except grpc.RpcError as e:
                    err = ApiError.from_rpc(e)
                    return err.code.name, err.reason
        deadline = time.monotonic() + 10
        while read("60000")[0] != "OK" and time.monotonic() < deadline:
            time.sleep(0.1)                      # the standby applies the sale
        code, state = read("60000")
        assert code == "OK" and 0 <= state.lag_ms <= 60000
        assert read("ten")[0] == "INVALID_ARGUMENT" and read("-1")[0] == "INVALID_ARGUMENT"
        pg.stop_primary()
        try:
            time.sleep(2.5)                      # nothing can be read from the log meanwhile
            assert read("1000") == ("UNAVAILABLE", "STANDBY_BEHIND")
            code, state = read(None)
            assert code == "OK" and state.lag_ms > 1000
            with Connection(both, a.keys["demo-ota"], timeout=5, prefer_standby=True, max_lag_ms=1000) as conn:
                assert ChannelClient(conn).get_order(demo.VENUE, "l-1").order_id == "l-1"
                assert conn.standby_state() is None               # the primary answered
            with Connection(both, a.keys["demo-ota"], timeout=5, prefer_standby=True) as conn:
                assert ChannelClient(conn).get_order(demo.VENUE, "l-1").order_id == "l-1"
                assert conn.standby_state().lag_ms > 1000           # the standby answered
        finally:
            pg.start_primary()
    finally:
        end_nodes(a, b_started, a.standby_dir)
        kill_node(a.standby_dir)


def test_the_map_names_a_standby_while_it_runs(etcd, pg, tmp_path):
    """GetShardMap names a shard's standby while it runs (its lease-bound live key in etcd,
    renewed as it reports -- no clock compared across machines); killed, it drops out of
    the map once its lease lapses, while etcd still records it as a node of the shard (it
    holds back pruning until it is back or forgotten), and `shards list` says it is not
    running."""
    from tests.replication.test_serve_map import listing, turnstile, until
    a, b_thread, b_started = two_nodes(etcd, pg, tmp_path, "live")
    b_name = a.standby_address
    try:
        with Connection(a.address, a.keys["demo-ota"], timeout=5) as conn:
            def standbys():
                return conn.shard_map(refresh=True).standbys.get(0, [])
            assert until(lambda: standbys() == [b_name], 30), standbys()
            text = turnstile("shards", "list", "--etcd", etcd.endpoint, "--cluster", "live").stdout
            line = next(x for x in text.splitlines() if b_name in x)
            assert "standby" in line and "not running" not in line, text
            kill_node(a.standby_dir)
            assert until(lambda: standbys() == [], 30), standbys()
            s = listing(etcd, "live")["shards"]["0"]
            assert b_name in s["nodes"] and b_name not in s["live"] and a.address in s["live"]
            text = turnstile("shards", "list", "--etcd", etcd.endpoint, "--cluster", "live").stdout
            line = next(x for x in text.splitlines() if b_name in x)
            assert "not running" in line, text
    finally:
        end_nodes(a, b_started, a.standby_dir)
