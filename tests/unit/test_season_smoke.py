"""The season soak (bench/season.py), small: under a thousand scans over three simulated days
with a retry window of half a day. Issue 12: rows kept only to answer retries (scan ids,
batch ids, offline nonces, idempotency keys, ended holds) expire after the window and the
writer prunes them, so they stop growing with the season; the answers stay right."""
from __future__ import annotations

import pytest

from bench import season


def _retry_rows(day: dict) -> int:
    return season.retry_rows(day)


@pytest.mark.skipif(not season.has_retry_window(),
                    reason="Shard.open has no retry_window_s yet: retry rows are never pruned")
def test_retry_rows_stop_growing_once_pruning_runs():
    r = season.soak(scans=600, days=3, window_days=0.5, durable=False, submitters=8,
                    verbose=False)
    assert r["ok"], [c for c in r["checks"] if not c["passed"]]
    days = r["per_day"]
    assert [d["day"] for d in days] == [1, 2, 3]
    c = r["counts"]
    assert c["scans"] >= 300 and c["orders"] >= 60, c
    # what was keyed for retries over the run: every scan id, batch id, offline nonce,
    # hold and confirm (its idempotency key, its order id), release and refund
    keyed = c["scans"] + 2 * c["holds"]
    rows = [_retry_rows(d) for d in days]
    assert rows[0] > 0
    # the same traffic every day: without pruning day 3 holds 1.5x day 2's rows (every
    # day's); with a half-day window at most two windows' worth is kept, about a day's
    assert rows[2] <= 1.25 * rows[1], rows
    assert rows[2] < 0.6 * keyed, (rows, keyed)
    # and the gate calls left no audit row each (the journal's scan record is the record)
    gate_audit = days[-1]["row_kinds"].get("audit: gate calls", {}).get("rows", 0)
    assert gate_audit < c["scans"] // 10, (gate_audit, c["scans"])
