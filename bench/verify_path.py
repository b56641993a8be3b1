"""What a unary Verify costs us, without grpcio: the server's handler path in one process.

    python -m bench.verify_path [--inflight 64] [--calls 30000] [--no-sync] [--cprofile]

`GateService.Verify` (the `rpc` wrapper, the gate lookup, the scan time) -> `ShardNode.submit`
-> `GroupCommit` (durable unless --no-sync) -> the answer, with `--inflight` callers at once
on a fresh bench shard (a plaza gate, MAC-only codes issued in bulk). Prints calls/s, the
process CPU per call (user + system: an fsync's kernel time counts) and the writer's mean
batch. What grpcio adds on top is bench/server_scenarios.py's floor-server.

Why (issue 16): on the real server at 64 calls in flight a writer batch holds ~2 scans, and
per call this path costs ~240 µs of CPU at batches of 2 against ~40 µs at batches of 64:
the per-batch cost (the LMDB commit with its fsync, the hand-off to the commit thread and
back) is most of what a unary scan adds over grpcio's own floor.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import os
import resource
import threading
import time
from collections import Counter

import uvloop

from bench.cpu import thread_cpu_s
from bench import PLAZA_IN, VENUE, TempDir, issue_bulk, open_bench_shard, render_codes
from turnstile.engine import GroupCommit
from turnstile.server import auth, services
from turnstile.server.control import Principal
from turnstile.v1 import common_pb2, gate_pb2


class _Context:
    """The part of a grpc.aio ServicerContext the handler path reads."""

    def time_remaining(self) -> None:
        return None

    async def abort(self, *args) -> None:
        raise RuntimeError(args)

    async def abort_with_status(self, status) -> None:
        raise RuntimeError(status)


async def run(path: str, inflight: int, calls: int, sync: bool, profile: bool) -> dict:
    shard = open_bench_shard(path, durable=sync)
    codes = render_codes(shard, issue_bulk(shard, calls), calls, signed=False)
    writer = GroupCommit(shard)
    await writer.start()
    node = services.ShardNode(shard, writer, store=None, scan_skew_s=10 ** 9)
    gate = services.GateService(node)
    auth._current.set(Principal("bench-gate", "gate", venues=(VENUE,)))
    reqs = [gate_pb2.VerifyRequest(code=c, gate_id=PLAZA_IN, venue_id=VENUE, direction=common_pb2.IN)
            for c in codes]
    ctx, reasons = _Context(), Counter()

    async def caller(k: int) -> None:
        for i in range(k, calls, inflight):
            reasons[(await gate.Verify(reqs[i], ctx)).reason] += 1

    gc.collect()
    gc.freeze()
    prof = None
    if profile:
        import cProfile
        prof = cProfile.Profile()
        prof.enable()
    th0 = thread_cpu_s(os.getpid())
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    await asyncio.gather(*(caller(k) for k in range(inflight)))
    elapsed, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
    th1 = thread_cpu_s(os.getpid())
    main_cpu = th1[threading.get_native_id()][1] - th0[threading.get_native_id()][1]
    if prof is not None:
        prof.disable()
    stats = writer.stats()
    await writer.stop()
    shard.close(snapshot=False)
    if prof is not None:
        import pstats
        pstats.Stats(prof).sort_stats("tottime").print_stats(20)
    cpu = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
    return {"calls_per_s": calls / elapsed, "cpu_us_per_call": cpu / calls * 1e6,
            "sys_us_per_call": (r1.ru_stime - r0.ru_stime) / calls * 1e6,
            "main_us_per_call": main_cpu / calls * 1e6,
            "mean_batch": stats["mean_batch"], "reasons": dict(reasons)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.verify_path", description=__doc__.split("\n")[0])
    ap.add_argument("--inflight", type=int, default=64, help="callers at once (default: %(default)s)")
    ap.add_argument("--calls", type=int, default=30_000, help="scans in all (default: %(default)s)")
    ap.add_argument("--no-sync", action="store_true", help="commit without fsync (diagnostic)")
    ap.add_argument("--cprofile", action="store_true", help="print cProfile's top functions")
    a = ap.parse_args(argv)
    with TempDir() as path:
        r = uvloop.run(run(path, a.inflight, a.calls, not a.no_sync, a.cprofile))
    ok = r["reasons"] == {common_pb2.OK: a.calls}
    print(f"{a.inflight} in flight{' (no fsync)' if a.no_sync else ''}: {r['calls_per_s']:,.0f} calls/s, "
          f"CPU {r['cpu_us_per_call']:.1f} µs per call (system {r['sys_us_per_call']:.1f}, "
          f"event loop's thread {r['main_us_per_call']:.0f}), "
          f"mean batch {r['mean_batch']:.1f}; every scan admitted once: {'yes' if ok else r['reasons']}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
