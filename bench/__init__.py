"""Turnstile benchmarks (DESIGN.md section 9).

    python -m bench.run            # micro benches + scenarios, rewrites bench/RESULTS.md
    python -m bench.run --quick    # a smaller smoke run
    python -m bench.scenarios durable-scans --json out.json    # one scenario

`test_micro.py` holds the pytest-benchmark micro benches (kept out of the test
suite's `testpaths`); `scenarios.py` the load runs. This module builds the shards
they measure: the demo venue (engine.demo) plus a "plaza" zone without a live
capacity limit, so millions of single-use tickets can be admitted on one day.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import tempfile
import time

# the engine opens a data dir only with its master key: one for this bench run (and the
# processes it starts), from the environment, as an operator may give it
os.environ.setdefault("TURNSTILE_MASTER_KEY", os.urandom(32).hex())
from turnstile.engine import Shard, cmd, demo
from turnstile.engine.journal import Record, json_record
from turnstile.engine.model import EntryRule, GateMode, to_day
from turnstile.engine.state import Batch, MAX_QTY

# A fixed day keeps every run identical (codes, slots, scan times): National Day.
DAY = _dt.date(2025, 10, 1)
VENUE = demo.VENUE
PLAZA = "plaza"
PLAZA_IN = "plaza-in"
PLAZA_OUT = "plaza-out"
PLAZA_PRODUCT = "plaza-day"          # single use, one zone, one day
PLAZA_SLOT = f"plaza-{DAY:%Y%m%d}"   # the whole day
PLAZA_CAPACITY = 10 ** 9             # the largest slot capacity the engine accepts
SCAN_AT = demo.local_time(DAY, 9, 30)
MAX_ITEMS = 100                      # items per hold (engine limit)


def plaza_commands(day: _dt.date = DAY, capacity: int = PLAZA_CAPACITY) -> list:
    """A zone with no live-capacity limit (the demo's main zone stops at 30,000 inside),
    an entry and an exit gate, a single-use day product and a whole-day slot."""
    start = demo.local_time(day, 0)
    return [
        cmd.zone(VENUE, PLAZA, "Lakeside plaza"),
        cmd.gate(PLAZA, PLAZA_IN, GateMode.IN),
        cmd.gate(PLAZA, PLAZA_OUT, GateMode.OUT),
        cmd.product(VENUE, PLAZA_PRODUCT, [PLAZA], name="Plaza day ticket", price_fen=1000,
                    rule=EntryRule()),
        cmd.slots([{"id": f"plaza-{day:%Y%m%d}", "zone": PLAZA, "day": to_day(day),
                    "start": start, "end": start + 86400, "capacity": capacity}]),
    ]


_T0 = time.time()


def bench_clock() -> float:
    """The benches' clock: 07:00 venue-local on DAY when this process started, then
    real time passing (a slot that is over can't be sold)."""
    return demo.local_time(DAY, 7) + (time.time() - _T0)


def open_bench_shard(path: str, *, durable: bool, main_capacity: int = 1_000_000,
                     snapshot_every: int = 10 ** 12, **kw) -> Shard:
    """Open a new shard at `path` seeded with the demo venue and the plaza."""
    kw.setdefault("clock", bench_clock)
    shard = Shard.open(path, durable=durable, snapshot_every=snapshot_every, **kw)
    shard.run_many(demo.commands(DAY, days=1, main_capacity=main_capacity))
    shard.run_many(plaza_commands())
    return shard


def issue_bulk(shard: Shard, count: int, *, product: str = PLAZA_PRODUCT,
               slot: str = PLAZA_SLOT, channel: str = "bench") -> int:
    """Issue `count` tickets of a one-zone product fast; returns the first ticket id
    (ids are consecutive).

    Each block of up to 100 items x 10,000 tickets is a real `cmd.hold` (applied and
    journaled by the engine as any hold), then its confirmation applied through the
    engine's own recovery path: the CONFIRM journal record a real confirm writes, replayed
    by ShardState.replay (the same `sales.issue` takes the held stock into sold and issues the
    tickets) and committed to the journal as its own batch. What is skipped is what a
    buyer needs and a benchmark does not: rendering codes and writing the order and
    idempotency rows (tens of µs per ticket; see RESULTS.md). The state is reproducible
    by replay and check() holds (test_micro.test_issue_bulk_replays checks both).
    """
    st = shard.state
    if count <= 0:
        raise ValueError("count must be positive")
    first = st.tickets.n
    left = count
    while left:
        items, n = [], 0
        while left and len(items) < MAX_ITEMS:
            q = min(left, MAX_QTY)
            items.append({"product": product, "slots": [slot], "qty": q, "group": 1})
            left -= q
            n += q
        hold = shard.run(cmd.hold(channel, VENUE, items))
        blob = json_record(Record.CONFIRM, {"hold_id": hold.hold_id,
                                            "holder_keys": [[] for _ in items],
                                            "_now": int(shard.clock())})
        shard._usable()
        shard.seq += 1
        batch = Batch(shard.seq)
        st.replaying = True
        try:
            st.replay(blob, batch)
        finally:
            st.replaying = False
        shard.storage.commit(shard.seq, blob, {})
        shard.since_snapshot += 1
        if shard.state.tickets.n != first + count - left:
            raise RuntimeError("bulk issue: the engine did not issue what the CONFIRM record "
                               "asked (has the record format changed?)")
    return first


def render_codes(shard: Shard, first: int, count: int, *, signed: bool = True) -> list[str]:
    """The text codes of `count` consecutive one-zone tickets (as a confirm returns them)."""
    render = shard.state.render
    return [render(first + k, signed=signed) for k in range(count)]


def sell_codes(shard: Shard, count: int, *, signed: bool = True, channel: str = "web",
               order_prefix: str = "o") -> tuple[int, list[str]]:
    """Sell `count` plaza tickets through the real path (cmd.hold + cmd.confirm, 10,000
    per order); returns (first ticket id, codes)."""
    first = shard.state.tickets.n
    codes: list[str] = []
    k = 0
    while len(codes) < count:
        q = min(count - len(codes), MAX_QTY)
        h = shard.run(cmd.hold(channel, VENUE, [{"product": PLAZA_PRODUCT, "slots": [PLAZA_SLOT],
                                                  "qty": q, "group": 1}]))
        c = shard.run(cmd.confirm(h.hold_id, f"{order_prefix}{k}", channel, method="cash",
                                  amount_fen=h.amount_fen, signed=signed))
        codes += [t.code for t in c.tickets]
        k += 1
    assert shard.state.tickets.n == first + count
    return first, codes


class TempDir:
    """A temp directory removed on exit (data dirs of benchmark shards)."""

    def __init__(self, prefix: str = "turnstile-bench-"):
        self.path = tempfile.mkdtemp(prefix=prefix, dir=os.environ.get("TURNSTILE_BENCH_TMP"))

    def __enter__(self) -> str:
        return self.path

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def dumps(obj) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, default=str)
