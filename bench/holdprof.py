"""Where a hold's CPU goes, outside asyncio and the commit: `python -m bench.holdprof
[--profile out]` stages N holds of one ticket on one slot through Shard._stage in batches of
1,000 (what the writer does with 1,000 callers in flight), in memory, with the cyclic GC off
(the scenarios measure it), and prints µs per hold for the command's construction and for
the staging (CPU time of the process: what other load on the machine changes least); with --profile, a cProfile of the staging sorted by own time."""
from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import time

from bench import PLAZA_PRODUCT, PLAZA_SLOT, TempDir, VENUE, open_bench_shard
from turnstile.engine import cmd
from turnstile.engine.model import HoldItem, HoldResult

N, BATCH = 50_000, 1_000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default=None)
    ap.add_argument("-n", type=int, default=N)
    a = ap.parse_args()
    with TempDir() as path:
        shard = open_bench_shard(path, durable=False)
        gc.collect()
        gc.disable()        # the CPU of the path alone: its GC is measured by the scenarios
        t = time.process_time()
        cmds = [cmd.hold(f"ch{k % 8}", VENUE, [HoldItem(PLAZA_PRODUCT, (PLAZA_SLOT,), qty=1)]) for k in range(a.n)]
        build = time.process_time() - t
        prof = cProfile.Profile() if a.profile else None
        t = time.process_time()
        if prof:
            prof.enable()
        out = []
        for lo in range(0, a.n, BATCH):
            out += shard._stage(cmds[lo:lo + BATCH])[1]
        if prof:
            prof.disable()
        stage = time.process_time() - t
        bad = [r for r in out if not isinstance(r, HoldResult)]
        assert not bad, bad[:3]
        print(f"cmd.hold {build / a.n * 1e6:.2f} µs, _stage {stage / a.n * 1e6:.2f} µs per hold"
              f" ({a.n:,} holds, batches of {BATCH:,})")
        if prof:
            prof.dump_stats(a.profile)
            pstats.Stats(a.profile).sort_stats("tottime").print_stats(25)
        shard.close(snapshot=False)
        gc.enable()


if __name__ == "__main__":
    main()
