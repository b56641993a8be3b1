"""The season soak (bench/season.py), small: a few thousand scans over three simulated days
with a retry window of half a day. Issue 12: rows kept only to answer retries (scan ids,
batch ids, offline nonces, idempotency keys, ended holds) expire after the window and the
writer prunes them, so they stop growing with the season; the answers stay right. Old
audit segments are archived to files (verified, then pruned from LMDB) and the chain,
archive and hot rows together, still verifies."""
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


@pytest.mark.skipif(not season.has_audit_archive(),
                    reason="Shard has no archive_audit yet: the audit log stays in LMDB")
def test_audit_log_moves_to_archive_files_and_verifies():
    # ~1,700 audited sales calls; checkpoints at 1000 then every 100; archive every
    # simulated hour keeping 200 records hot, segments of at least 200
    r = season.soak(scans=3000, days=3, window_days=0.5, durable=False, submitters=8,
                    archive_every_min=60, audit_keep=200, segment_records=200, audit_every=100,
                    verbose=False)
    assert r["ok"], [c for c in r["checks"] if not c["passed"]]
    a, days = r["audit"], r["per_day"]
    last = days[-1]
    # the whole chain verifies, most of it read from archive files
    assert a["ok"], a["summary"]
    assert a["segments"] >= 2 and a["archived"] >= a["head_seq"] // 2, a
    assert last["archive_files"] == a["segments"] and last["archive_bytes"] > 0, last
    assert last["disk_bytes"] == last["file_bytes"] + last["archive_bytes"]
    # archived records left LMDB: the hot ones are those not archived (or archived by the
    # night's run, pruned by the next audited batches), far fewer than were written
    hot = season.audit_rows(last)
    assert hot <= a["head_seq"] - a["archived"] + 200 + 100, (hot, a)
    assert hot < a["head_seq"] // 2, (hot, a)
    # checkpoints and head are audit rows, not "other"
    assert season.AUDIT_CP in last["row_kinds"], last["row_kinds"]
    assert not any(k.startswith("other: audit") for k in last["row_kinds"]), last["row_kinds"]
