"""Replicated mode against a node of its own (issue 18, DESIGN.md 7 and 9), on this machine:
a real etcd and a real PostgreSQL primary with its synchronous standby on 127.0.0.1
(tests/services.py).

    python -m bench.replicated [--quick] [--out bench/RESULTS.md]

1. The PostgreSQL round trip per batch: `RecordLog.append` (one transaction: the epoch
   row FOR SHARE, the insert, NOTIFY, a commit the synchronous standby confirms) of a
   small, a sale-sized and a large batch, against the same batch's LMDB commit
   (`Storage.commit`, fsync'd).
2. The same server scenarios on `turnstile serve` of its own and in replicated mode (one
   node, --etcd and --pg): real sales through Hold + Confirm, unary Verify at 16 in flight,
   VerifyStream, and a flash sale of 10,000 holds from 8 channels (clients.loadgen, every
   answer checked; the flash sale grants exactly the stock).
3. Failover over repeated kills: two nodes of one shard; each round SIGKILLs the node
   that serves (supervisor and shard), times until the other serves, checks that every
   order acknowledged before is there, and starts the killed node again as the standby.
4. Reads on the standby: sales one after another on the primary; after each, the
   standby is asked for the order until it has it (GetOrder every millisecond): the time
   from the primary's acknowledgement to the standby's answer, the lag the standby
   stated in that answer, and that every order is there with the codes the primary gave.

`--out` writes the section between the markers below into that file (bench/run.py keeps
it when `make bench` rewrites the rest).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench import TempDir
from bench.server_scenarios import (FLASH_CAPACITY, GATE_IN, PRODUCT, setup_catalog, sell_real, target)
from turnstile.clients import loadgen
from turnstile.clients.base import Connection
from turnstile.clients.channel import ChannelClient, Item
from turnstile.engine import demo
from turnstile.engine.recordlog import RecordLog
from turnstile.engine.storage import Storage
from turnstile.server import testing
from turnstile.server.app import bootstrap_principals
from turnstile.server.control import ControlStore
from turnstile.server.testing import day_clock, kill_server, seed_demo, start_server, stop_server

BEGIN = "<!-- replicated: begin (written by bench/replicated.py --out; bench/run.py keeps it) -->"
END = "<!-- replicated: end -->"


def _q(values: list[float]) -> dict:
    v = sorted(values)
    return {"median": statistics.median(v), "p99": v[min(len(v) - 1, int(len(v) * 0.99))], "max": v[-1]}


def round_trip(pg, n: int) -> list[dict]:
    """Per batch size: append to the log of record vs the LMDB commit, microseconds."""
    out = []
    dsn = pg.create_database("bench_round_trip")
    log = RecordLog(dsn, 0)
    log.ensure_schema()
    log.claim(1, base=0)
    with tempfile.TemporaryDirectory() as d:
        st = Storage(d, durable=True)
        st.init_meta(0)
        seq = 0
        for name, journal, rows in (("one scan", b"s" * 40, {}),
                                    ("a sale (order and idempotency rows)", b"c" * 900,
                                     {b"order/%d" % i: b"o" * 600 for i in range(4)}),
                                    ("a batch of 64 scans", b"s" * (64 * 40), {})):
            app, lmdb = [], []
            for _ in range(n):
                seq += 1
                t = time.perf_counter()
                log.append(seq, journal, rows)
                app.append(time.perf_counter() - t)
                t = time.perf_counter()
                st.commit(seq, journal, rows)
                lmdb.append(time.perf_counter() - t)
            out.append({"batch": name, "bytes": len(journal) + sum(len(k) + len(v) for k, v in rows.items()),
                        "append_us": {k: v * 1e6 for k, v in _q(app).items()},
                        "lmdb_us": {k: v * 1e6 for k, v in _q(lmdb).items()}})
        st.close()
    log.close()
    return out


def scenarios(mode: str, extra: tuple, *, quick: bool) -> dict:
    day = demo.venue_today(time.time())
    at = demo.local_time(day, 9, 30)
    n_sell = 1_500 if quick else 6_000
    flash_slot = demo.slot_id("main", day, 12)
    res: dict = {"mode": mode}
    with TempDir(prefix=f"turnstile-bench-{mode}-") as data:
        seed_demo(data, day)
        server = start_server(data, day, (*day_clock(day), *extra), die_with_parent=True)
        try:
            cat = setup_catalog(server, day, flash_slot)
            t = time.perf_counter()
            codes = sell_real(server, day, n_sell)
            res["sell_per_s"] = n_sell / (time.perf_counter() - t)
            half = len(codes) // 2
            r = loadgen.verify_unary(target(server), tickets=codes[:half], at=at, gate=GATE_IN,
                                     product=PRODUCT, date=day, inflight=16, dupes=0.01, seed=7,
                                     loop="uvloop", duration_s=120)
            res["verify16"] = {"per_s": r.throughput_per_s, "latency_us": r.latency_us, "ok": r.ok}
            r = loadgen.verify_stream(target(server), tickets=codes[half:], at=at, gate=GATE_IN,
                                      product=PRODUCT, date=day, streams=4, per_call=100, window=4,
                                      loop="uvloop", duration_s=120)
            res["stream"] = {"per_s": r.throughput_per_s, "latency_us": r.latency_us, "ok": r.ok}
            r = loadgen.flash_sale(target(server, cat["channel_keys"]), slot=flash_slot,
                                   capacity=FLASH_CAPACITY, product="adult", date=day,
                                   count=int(FLASH_CAPACITY * 1.2), inflight=64, loop="uvloop",
                                   duration_s=180, ttl_s=3600, retries=200, seed=11)
            res["flash"] = {"granted_per_s": r.extra["granted_per_s"], "granted": r.counts["granted"],
                            "ok": r.ok and not r.errors}
        finally:
            stop_server(server)
    return res


def best(runs: list[dict]) -> dict:
    """Per measure the better of the runs (their checks all kept)."""
    out = dict(runs[0])
    out["sell_per_s"] = max(r["sell_per_s"] for r in runs)
    for k, rate in (("verify16", "per_s"), ("stream", "per_s"), ("flash", "granted_per_s")):
        top = max(runs, key=lambda r: r[k][rate])[k]
        out[k] = {**top, "ok": all(r[k]["ok"] for r in runs)}
    out["flash"]["granted"] = min(r["flash"]["granted"] for r in runs)
    return out


def _node(data: str, day: _dt.date, args: tuple, port: int | None, out: list) -> threading.Thread:
    more = ("--port", str(port)) if port else ()
    # not die_with_parent: that ties the server to the thread that starts it, which ends here
    t = threading.Thread(target=lambda: out.append(start_server(data, day, (*args, *more), timeout=240)),
                         daemon=True)
    t.start()
    return t


def _pair(base: str, day: _dt.date, etcd, pg, name: str) -> tuple[list[str], list[int], tuple]:
    """Two data dirs of one demo shard (A seeded with its principals, B a copy), two free
    ports, and the replicated `serve` options of both (database and cluster `name`)."""
    from tests.services import free_ports
    dirs = [os.path.join(base, "a"), os.path.join(base, "b")]
    seed_demo(dirs[0], day)
    store = ControlStore(os.path.join(dirs[0], "control"))
    bootstrap_principals(store, dirs[0])
    store.close()
    shutil.copytree(dirs[0], dirs[1])
    shutil.copy(testing.master_key_file(dirs[0]), testing.master_key_file(dirs[1]))
    args = ("--shards", "1", "--etcd", etcd.endpoint, "--pg", pg.create_database(name),
            "--cluster", name.replace("_", "-"), "--lease-ttl-s", "3", *day_clock(day))
    return dirs, free_ports(2), args


def failovers(etcd, pg, rounds: int) -> dict:
    day = demo.venue_today(time.time())
    slot = demo.day_slot_id(day)
    times, orders = [], 0
    with TempDir(prefix="turnstile-bench-failover-") as base:
        dirs, ports, args = _pair(base, day, etcd, pg, "bench_failover")
        serving: list = []
        _node(dirs[0], day, args, ports[0], serving).join(240)
        primary, idx = serving[0], 0
        acked: list[str] = []
        try:
            for k in range(rounds):
                other: list = []
                _node(dirs[1 - idx], day, args, ports[1 - idx], other)
                time.sleep(2)                       # the standby follows
                with Connection(primary.address, primary.keys["demo-ota"], timeout=10) as conn:
                    ota = ChannelClient(conn)
                    for i in range(20):
                        acked.append(ota.buy(demo.VENUE, [Item("adult", slot, 1)], f"r{k}-{i}").order_id)
                kill_server(primary)
                t = time.monotonic()
                while not other and time.monotonic() - t < 120:
                    time.sleep(0.02)
                if not other:
                    raise RuntimeError("the standby did not take over")
                times.append(time.monotonic() - t)
                primary, idx = other[0], 1 - idx
                with Connection(primary.address, primary.keys["demo-ota"], timeout=10) as conn:
                    ota = ChannelClient(conn)
                    missing = [o for o in acked if not ota.get_order(demo.VENUE, o).tickets]
                if missing:
                    raise RuntimeError(f"acknowledged orders lost: {missing[:5]}")
                orders = len(acked)
        finally:
            stop_server(primary)
    return {"rounds": rounds, "seconds": times, "orders_checked": orders,
            "min": min(times), "median": statistics.median(times), "max": max(times)}


def standby_reads(etcd, pg, n: int) -> dict:
    import grpc
    from turnstile.v1 import sales_pb2, sales_pb2_grpc
    day = demo.venue_today(time.time())
    slot = demo.day_slot_id(day)
    seen_us, stated_ms = [], []
    with TempDir(prefix="turnstile-bench-standby-") as base:
        dirs, ports, args = _pair(base, day, etcd, pg, "bench_standby")
        serving: list = []
        _node(dirs[0], day, args, ports[0], serving).join(240)
        primary, other, standby, b_dir = serving[0], [], f"127.0.0.1:{ports[1]}", dirs[1]
        _node(b_dir, day, args, ports[1], other)
        try:
            meta = primary.meta("demo-ota")
            with grpc.insecure_channel(standby) as ch, \
                    Connection(primary.address, primary.keys["demo-ota"], timeout=10) as conn:
                get = sales_pb2_grpc.SalesServiceStub(ch).GetOrder
                ota = ChannelClient(conn)
                deadline = time.monotonic() + 60
                while True:                         # until the standby answers at all
                    try:
                        get(sales_pb2.GetOrderRequest(order_id="none"), metadata=meta, timeout=2)
                    except grpc.RpcError as e:
                        if e.code() == grpc.StatusCode.NOT_FOUND:
                            break
                        if time.monotonic() > deadline:
                            raise
                    time.sleep(0.1)
                for i in range(n):
                    sold = ota.buy(demo.VENUE, [Item("adult", slot, 1)], f"s-{i}")
                    t = time.perf_counter()
                    while True:
                        try:
                            got, call = get.with_call(sales_pb2.GetOrderRequest(order_id=f"s-{i}"),
                                                      metadata=meta, timeout=5)
                            break
                        except grpc.RpcError as e:
                            if e.code() != grpc.StatusCode.NOT_FOUND or time.perf_counter() - t > 30:
                                raise
                            time.sleep(0.001)
                    seen_us.append((time.perf_counter() - t) * 1e6)
                    if [x.code for x in got.tickets] != [x.code for x in sold.tickets]:
                        raise RuntimeError(f"order s-{i} differs on the standby")
                    stated_ms.append(int(dict(call.trailing_metadata())["turnstile-standby-lag-ms"]))
        finally:
            kill_server(primary)
            for s in other:
                kill_server(s)
            from tests.replication.test_serve_failover import kill_node
            kill_node(b_dir)
    return {"orders": n, "seen_us": _q(seen_us), "max_seen_us": max(seen_us),
            "stated_ms": {"median": statistics.median(stated_ms), "max": max(stated_ms)}}


def section(rt: list[dict], scen: list[dict], fo: dict, minutes: float, quick: bool,
            sr: dict | None = None) -> str:
    L = [BEGIN, "## Replicated mode (issue 18)", "",
         f"`python -m bench.replicated{' --quick' if quick else ''}` ({minutes:.1f} min, "
         f"{time.strftime('%Y-%m-%d')}): a real etcd and a PostgreSQL 15 primary with its synchronous "
         "standby on this machine (fsync off in the database: the tests' set-up), every answer checked.",
         "", "### The PostgreSQL round trip per batch", "",
         "| batch | bytes | log append median / p99 | LMDB commit median / p99 |", "|---|---|---|---|"]
    for r in rt:
        a, m = r["append_us"], r["lmdb_us"]
        L.append(f"| {r['batch']} | {r['bytes']:,} | {a['median']:,.0f} / {a['p99']:,.0f} µs | "
                 f"{m['median']:,.0f} / {m['p99']:,.0f} µs |")
    L += ["", "### The same scenarios, a node of its own and replicated", "",
          "Each mode run twice, alternating; the better run of each is shown.", "",
          "| scenario | own node | replicated | ratio |", "|---|---|---|---|"]
    own, rep = scen
    rows = [("sales, Hold + Confirm (tickets/s)", own["sell_per_s"], rep["sell_per_s"]),
            ("unary Verify, 16 in flight (calls/s)", own["verify16"]["per_s"], rep["verify16"]["per_s"]),
            ("VerifyStream, batches of 100 (codes/s)", own["stream"]["per_s"], rep["stream"]["per_s"]),
            ("flash sale, 10,000 holds, 64 in flight (granted/s)", own["flash"]["granted_per_s"],
             rep["flash"]["granted_per_s"])]
    for name, a, b in rows:
        L.append(f"| {name} | {a:,.0f} | {b:,.0f} | {b / a:.2f} |")
    ok = all(s[k]["ok"] for s in scen for k in ("verify16", "stream", "flash"))
    L += ["", f"Checks: {'every answer as expected' if ok else '**FAILED**'}; the flash sales granted "
          f"{own['flash']['granted']:,} and {rep['flash']['granted']:,} holds at least (the stock is "
          f"{FLASH_CAPACITY:,}; every run checks that no more were granted).",
          "", "### Failover over repeated kills", "",
          f"{fo['rounds']} rounds: two nodes of one shard (lease 3 s); the node that serves is killed "
          "with SIGKILL (supervisor and shard), the other serves after "
          f"**min {fo['min']:.1f} s, median {fo['median']:.1f} s, max {fo['max']:.1f} s**; "
          f"all {fo['orders_checked']} orders acknowledged before the kills were there after them.",
          ""]
    if sr:
        L += ["### Reads on the standby", "",
              f"{sr['orders']:,} sales one after another on the primary; after each, the standby asked "
              "for the order every millisecond until it had it: the order was readable there "
              f"**{sr['seen_us']['median'] / 1000:.1f} ms** after the primary acknowledged it (median; "
              f"p99 {sr['seen_us']['p99'] / 1000:.1f} ms, max {sr['max_seen_us'] / 1000:.1f} ms), "
              f"and its answer stated a lag of {sr['stated_ms']['median']:.0f} ms (median; max "
              f"{sr['stated_ms']['max']:.0f} ms). Every order was there with the codes the primary "
              "gave.", ""]
    L += [END]
    return "\n".join(L)


def write(path: Path, block: str) -> None:
    text = path.read_text() if path.exists() else "# Turnstile benchmark results\n\n"
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + block + text[text.index(END) + len(END):]
    elif "## Reproduce" in text:
        i = text.index("## Reproduce")
        text = text[:i] + block + "\n\n" + text[i:]
    else:
        text += "\n" + block + "\n"
    path.write_text(text)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.replicated", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes (smoke)")
    ap.add_argument("--out", default=None, help="write the section into this results file")
    a = ap.parse_args(argv)
    from tests.services import Etcd, PostgresPair
    t0 = time.perf_counter()
    with TempDir(prefix="turnstile-bench-etcd-") as etcd_dir, Etcd(etcd_dir) as etcd, PostgresPair() as pg:
        rt = round_trip(pg, 100 if a.quick else 400)
        print("round trip:", rt, flush=True)
        # alternated, twice each, the better run of each mode kept: the first server run of a
        # process pays for warming up, and this machine's speed drifts
        runs: dict[str, list[dict]] = {"own": [], "replicated": []}
        for k in range(2):
            runs["own"].append(scenarios("own", (), quick=a.quick))
            runs["replicated"].append(scenarios(
                "replicated", ("--etcd", etcd.endpoint, "--pg", pg.create_database(f"bench_scen{k}"),
                               "--cluster", f"bench-scen{k}"), quick=a.quick))
        scen = [best(runs["own"]), best(runs["replicated"])]
        print("scenarios:", scen, flush=True)
        fo = failovers(etcd, pg, 3 if a.quick else 5)
        print("failover:", fo, flush=True)
        sr = standby_reads(etcd, pg, 100 if a.quick else 500)
        print("standby reads:", sr, flush=True)
    block = section(rt, scen, fo, (time.perf_counter() - t0) / 60, a.quick, sr)
    print(block)
    if a.out:
        write(Path(a.out), block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
