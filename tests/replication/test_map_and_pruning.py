"""The cluster's shard map in etcd and the pruning of the log of record (issue 18), on a real
etcd and a real PostgreSQL primary with its synchronous standby. The contract
(server/ownership.py, engine/recordlog.py):

- the venue map: the first shard to place a venue has it; nobody re-places it;
- every node of a shard records the batch it holds; the latest verified backup is
  recorded and only ever raised;
- the log is pruned up to what every node and the latest verified backup hold -- never
  before a backup is recorded, and only by the shard's owner;
- a node the log was pruned past is refused, and so is a node whose shard was made apart
  (another lineage): neither applies a batch;
- `step-down` revokes the owner's lease: it stops counting itself the owner and a standby
  takes the shard with a higher epoch."""
from __future__ import annotations

import asyncio
import contextlib
import shutil
import threading

import psycopg
import pytest

from turnstile.engine import HoldItem, Shard, cmd, demo
from turnstile.engine.recordlog import (Fenced, Follower, LogPruned, NotThisShard, RecordLog,
                                        apply_log, promote)
from turnstile.server.ownership import Cluster, Ownership

from tests.conftest import TODAY, Clock

SLOT = demo.slot_id("main", TODAY, 8)


def run(coro):
    return asyncio.run(coro)


def logged(pg, shard: int) -> list[int]:
    with psycopg.connect(pg.dsn()) as c:
        return [r[0] for r in c.execute("SELECT seq FROM turnstile_log WHERE shard = %s ORDER BY seq",
                                        (shard,))]


def refused_follower(shard, pg, shard_no: int) -> Exception | None:
    """Follow shard `shard_no`'s log with `shard` (a Follower in its thread): the error it
    ended with; it must end by itself within 10 s."""
    f = Follower(shard, pg.dsn(), shard_no, poll_s=0.1)
    t = threading.Thread(target=f.run, daemon=True)
    t.start()
    t.join(10)
    f.close()
    assert not t.is_alive(), "the follower did not stop"
    return f.error


# -- the map in etcd ----------------------------------------------------------------------
def test_a_venue_is_the_first_placers_and_is_not_placed_again(etcd):
    async def go():
        c = Cluster(etcd.endpoint, cluster="venues")
        other = Cluster(etcd.endpoint, cluster="venues-elsewhere")
        try:
            assert await c.venues() == {}
            assert await c.place_venue("lingyin", 1) == 1
            assert await c.place_venue("lingyin", 0) == 1          # mapped already: stays on 1
            assert await c.place_venue("lingyin", 1) == 1
            assert await c.place_venue("westlake", 0) == 0
            assert await c.venues() == {"lingyin": 1, "westlake": 0}
            assert await other.venues() == {}                      # another cluster's map
        finally:
            await c.close()
            await other.close()
    run(go())


def test_the_latest_verified_backup_is_only_ever_raised(etcd):
    async def go():
        c = Cluster(etcd.endpoint, cluster="backups")
        try:
            assert await c.record_backup(0, 50, "/b/1")
            assert not await c.record_backup(0, 40, "/b/older")    # an older one: kept
            assert (await c.shards())[0]["backup"]["seq"] == 50
            assert await c.record_backup(0, 70, "/b/2")
            got = (await c.shards())[0]["backup"]
            assert (got["seq"], got["out"]) == (70, "/b/2")
        finally:
            await c.close()
    run(go())


@contextlib.asynccontextmanager
async def two_owners(etcd, shard_no: int, cluster: str):
    """Nodes a and b of shard `shard_no` (ownership, 3 s leases) and the cluster's map."""
    a = Ownership(etcd.endpoint, shard_no, "node-a", cluster=cluster, ttl=3)
    b = Ownership(etcd.endpoint, shard_no, "node-b", cluster=cluster, ttl=3)
    c = Cluster(etcd.endpoint, cluster=cluster)
    try:
        yield a, b, c
    finally:
        for x in (a, b, c):
            await x.close()


def test_the_prune_floor_waits_for_a_backup_and_for_every_node(etcd, shard_no):
    async def go():
        async with two_owners(etcd, shard_no, "floor") as (a, b, c):
            await a.report("primary", 120)
            await b.report("standby", 90)
            assert await a.prune_floor() == 0                      # no backup: nothing pruned
            await c.record_backup(shard_no, 100, "/b")
            assert await a.prune_floor() == 90                     # the standby is behind it
            await b.report("standby", 118)
            assert await a.prune_floor() == 100                    # now the backup is
            await b.report("standby", 80)                          # a node that went back
            assert await a.prune_floor() == 80
            assert await c.forget(shard_no, "node-b")              # taken out of service
            assert not await c.forget(shard_no, "node-b")
            assert await a.prune_floor() == 100
            nodes = (await c.shards())[shard_no]["nodes"]
            assert set(nodes) == {"node-a"} and nodes["node-a"]["role"] == "primary"
    run(go())


def test_step_down_hands_the_shard_to_a_standby_with_a_higher_epoch(etcd, shard_no):
    async def go():
        async with two_owners(etcd, shard_no, "stepdown") as (a, b, c):
            first = await a.acquire()
            taker = asyncio.create_task(b.acquire(poll_s=0.05))
            await asyncio.sleep(0.3)
            assert not taker.done()
            assert await c.step_down(shard_no) == "node-a"
            assert await asyncio.wait_for(taker, 5) == first + 1
            assert "revoked" in await asyncio.wait_for(a.wait_lost(), 3)   # its next renewal
            assert not a.valid()
            assert (await c.shards())[shard_no]["owner"] == "node-b"
            assert await c.step_down(999) is None                  # no owner: nothing to do
    run(go())


# -- the log: lineage and pruning ------------------------------------------------------------
def test_a_shard_made_apart_can_neither_claim_nor_follow_the_log(pg, shard_no, tmp_path):
    clock = Clock(demo.local_time(TODAY, 8, 30))
    p = Shard.open(str(tmp_path / "p"), clock=clock)
    apart = Shard.open(str(tmp_path / "apart"), clock=clock)       # the same number, made apart
    try:
        assert p.lineage and apart.lineage and p.lineage != apart.lineage
        log = RecordLog(pg.dsn(), shard_no, lineage=p.lineage)
        log.ensure_schema()
        log.claim(1, base=p.seq)
        p.record_log = log
        p.run_many(demo.commands(TODAY))
        before = apart.state.dump()
        assert isinstance(refused_follower(apart, pg, shard_no), NotThisShard)
        assert apart.state.dump() == before and not apart.venues()  # nothing applied
        with pytest.raises(NotThisShard):                           # nor takes the shard over
            promote(apart, RecordLog(pg.dsn(), shard_no, lineage=apart.lineage), 2)
        assert RecordLog(pg.dsn(), shard_no).current_epoch() == 1   # p's claim stands
        p.run(cmd.hold("web", demo.VENUE, [HoldItem("adult", (SLOT,), 1)]))   # p writes on
        log.close()
    finally:
        p.close(snapshot=False)
        apart.close(snapshot=False)


def test_the_log_is_pruned_by_its_owner_and_a_node_pruned_past_is_refused(pg, shard_no, tmp_path):
    clock = Clock(demo.local_time(TODAY, 8, 30))
    pdir = str(tmp_path / "p")
    p = Shard.open(pdir, clock=clock)
    p.close(snapshot=False)
    shutil.copytree(pdir, str(tmp_path / "early"))              # a copy from before the log
    p = Shard.open(pdir, clock=clock)
    log = RecordLog(pg.dsn(), shard_no, lineage=p.lineage)
    log.ensure_schema()
    log.claim(1, base=p.seq)
    p.record_log = log
    try:
        p.run_many(demo.commands(TODAY))
        for i in range(5):
            p.run(cmd.hold("web", demo.VENUE, [HoldItem("adult", (SLOT,), 1)]))
        p.close(snapshot=False)                  # a copy at this batch: "the backup"
        shutil.copytree(pdir, str(tmp_path / "backup"))
        p = Shard.open(pdir, clock=clock)
        p.record_log = log
        floor = p.seq
        for i in range(5):
            p.run(cmd.hold("web", demo.VENUE, [HoldItem("adult", (SLOT,), 1)]))
        whole = logged(pg, shard_no)
        assert whole[-1] == p.seq and whole[0] < floor

        deposed = RecordLog(pg.dsn(), shard_no)
        deposed.epoch = 0                        # never claimed: not the owner
        with pytest.raises(Fenced):
            deposed.prune(floor)
        assert logged(pg, shard_no) == whole

        pruner = RecordLog(pg.dsn(), shard_no)
        pruner.epoch = 1
        assert pruner.prune(floor) == len([s for s in whole if s <= floor])
        assert logged(pg, shard_no) == [s for s in whole if s > floor]
        assert pruner.pruned_to() == floor
        assert pruner.prune(floor) == 0          # again: nothing more
        pruner.close()

        early = Shard.open(str(tmp_path / "early"), clock=clock)      # behind what was pruned
        try:
            before = early.state.dump()
            assert isinstance(refused_follower(early, pg, shard_no), LogPruned)
            with pytest.raises(LogPruned):                          # read directly, too
                apply_log(early, RecordLog(pg.dsn(), shard_no))
            with pytest.raises(LogPruned):
                promote(early, RecordLog(pg.dsn(), shard_no, lineage=early.lineage), 2)
            assert early.state.dump() == before                        # nothing applied
        finally:
            early.close(snapshot=False)

        b = Shard.open(str(tmp_path / "backup"), clock=clock)         # at the floor: follows on
        try:
            assert b.seq == floor
            reader = RecordLog(pg.dsn(), shard_no, lineage=b.lineage)
            assert apply_log(b, reader) == len([s for s in whole if s > floor])
            assert b.seq == p.seq and b.state.dump() == p.state.dump()
            assert b.check(replay=True) == []
            reader.close()
        finally:
            b.close(snapshot=False)
    finally:
        p.close(snapshot=False)
        log.close()


def test_a_principal_made_apart_on_two_nodes_keeps_the_first_and_does_not_flip(etcd, tmp_path):
    """One id made on two nodes before either synced (a partition): etcd keeps the first
    one put there, for good -- no node's sync replaces it back and forth -- each node keeps
    its own, and the second node names the conflict. Keys still travel both ways."""
    from turnstile.server.control import ControlStore

    async def go():
        a_store, b_store = ControlStore(str(tmp_path / "a")), ControlStore(str(tmp_path / "b"))
        a, b = Cluster(etcd.endpoint, cluster="apart"), Cluster(etcd.endpoint, cluster="apart")
        client = await a._connect()
        try:
            a_store.create_principal("ops", "admin")
            b_store.create_principal("ops", "viewer", venues=["westlake"])
            b_store.create_principal("gate-7", "gate", venues=["westlake"])
            _, b_key = b_store.create_key("gate-7")
            await a.sync_control(a_store)
            key = a.control_prefix + b"principals/ops"
            first = await client.get(key)
            for _ in range(2):
                await b.sync_control(b_store)
                await a.sync_control(a_store)
            again = await client.get(key)
            assert (again.value, again.mod_revision) == (first.value, first.mod_revision)
            assert a_store.get_principal("ops").role == "admin"
            assert b_store.get_principal("ops").role == "viewer"
            assert b.conflicts == {"ops"} and a.conflicts == set()
            # the rest goes on: B's gate principal and its key work on A
            assert a_store.get_principal("gate-7").role == "gate"
            assert a_store.authenticate(b_key).id == "gate-7"
        finally:
            await a.close()
            await b.close()
            a_store.close()
            b_store.close()
    run(go())


def test_an_offline_move_refuses_a_replicated_shard(tmp_path):
    """`turnstile shards move` writes a batch straight into the target shard's LMDB: on a
    replicated shard that batch would never reach its log of record nor its standbys, so
    the move is refused there (a shard becomes replicated when a node first follows or
    serves it in replicated mode: Shard.mark_replicated), and nothing changes."""
    import os
    import subprocess
    import sys
    from tests.conftest import add_hills
    from tests.integration.test_cli_data import HILLS_DAY
    from turnstile.server import testing
    data = str(tmp_path / "data")
    for k in (0, 1):
        with Shard.open(os.path.join(data, f"shard-{k}"), shard_id=k) as s:
            if k == 0:
                add_hills(s, HILLS_DAY)
            else:
                s.mark_replicated("prod")
    before = Shard.open(os.path.join(data, "shard-1"), shard_id=1)
    seq = before.seq
    before.close()
    r = subprocess.run([sys.executable, "-m", "turnstile.server.cli", "shards", "move", "hills", "--to", "1",
                        "--data", data], cwd=testing.ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "shard 1 is replicated (cluster prod)" in r.stderr, r.stderr
    with Shard.open(os.path.join(data, "shard-1"), shard_id=1) as s:
        assert s.seq == seq and not s.has_venue("hills")


def test_a_replicated_data_dir_is_written_through_its_cluster_only_until_detached(tmp_path):
    """A replicated shard's batches go through its log of record, written by its primary:
    `turnstile demo` (which seeds with engine commands) and `turnstile audit archive`
    (which prunes the archived records) refuse it and change nothing, and
    `turnstile serve` without --etcd/--pg refuses to start on it, naming the cluster and
    the way out. `turnstile shards detach` makes the data dir stand alone again: it says
    which shards it detached from which cluster, and `demo` then seeds it."""
    import os
    import subprocess
    import sys
    from turnstile.server import testing
    data = str(tmp_path / "data")
    with Shard.open(os.path.join(data, "shard-0"), shard_id=0) as s:
        s.mark_replicated("prod")
        seq = s.seq

    def turnstile(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "turnstile.server.cli", *argv, "--data", data],
                              cwd=testing.ROOT, capture_output=True, text=True, timeout=120)
    r = turnstile("demo")
    assert r.returncode == 1 and "shard 0 is replicated (cluster prod)" in r.stderr, r.stderr
    r = turnstile("audit", "archive")        # its primary archives, pruning through the log
    assert r.returncode == 1 and "shard 0 is replicated (cluster prod)" in r.stderr, r.stderr
    r = turnstile("serve", "--port", "0")
    assert r.returncode != 0 and "replicated (cluster prod)" in r.stderr and "shards detach" in r.stderr, r.stderr
    assert "listening" not in r.stdout
    with Shard.open(os.path.join(data, "shard-0"), shard_id=0) as s:
        assert (s.seq, s.venues()) == (seq, [])
    r = turnstile("shards", "detach")
    assert r.returncode == 0 and "shard-0: detached from cluster prod" in r.stdout, r.stderr
    r = turnstile("demo")
    assert r.returncode == 0 and "seeded venue" in r.stdout, r.stderr
    with Shard.open(os.path.join(data, "shard-0"), shard_id=0) as s:
        assert s.replicated() is None and s.venues() == [demo.VENUE]
    r = turnstile("shards", "detach")
    assert r.returncode == 0 and "no shard is replicated" in r.stdout
