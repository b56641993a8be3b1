"""Fixtures of the micro benches: one in-memory-fast shard per module (durable=False:
these benches time the core and the state machine, not the disk; the disk is timed by
test_commit_durable and by the scenarios)."""
from __future__ import annotations

import os

import pytest

from bench import TempDir, open_bench_shard

QUICK = os.environ.get("TURNSTILE_BENCH_QUICK") == "1"


def scaled(full: int, quick: int) -> int:
    """Rounds of a bench: `full` by default, `quick` with --quick (CI smoke)."""
    return quick if QUICK else full


@pytest.fixture(scope="module")
def shard():
    with TempDir() as path:
        s = open_bench_shard(path, durable=False)
        yield s
        # every bench leaves the shard consistent: the invariants of DESIGN.md 4.2 hold
        assert s.check() == [], s.check()
        s.close(snapshot=False)
