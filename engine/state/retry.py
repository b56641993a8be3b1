"""Rows kept only to answer retries (these answers, and what became of an ended hold) are
*retry rows*: they live in time buckets, `retry/<start>/<key>`, a bucket opening when
the first row is written a retry window (Shard.open's `retry_window_s`, default 7 days)
or more after the newest bucket opened. A look-up reads the newest two buckets only, and
the writer deletes the rows of older buckets a slice per batch (`prune`). So a row
answers retries for at least the window after it was written, and at most two windows
of rows are kept: the disk holds what the window needs, not the whole season. Rows from
before buckets (`idem/`, `offline/`, `scanbatch/`, `hold/` at the top level) are the
oldest bucket, start -1, read and pruned like the others.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .core import ShardState

RETRY = b"retry/"
LEGACY = (b"hold/", b"idem/", b"offline/", b"scanbatch/")     # rows from before buckets
DEFAULT_WINDOW_S = 7 * 86400
PRUNE_SLICE = 512          # retry rows a batch deletes at most


def retry_key(start: int, key: bytes) -> bytes:
    """Where the retry row `key` of the bucket opened at `start` is stored."""
    return key if start < 0 else b"retry/%011d/" % start + key


def get_retry(st: ShardState, key: bytes) -> bytes | None:
    """The retry row `key`, newest bucket first; None if it is not (or no longer) kept."""
    buckets = st.retry_buckets
    for start in buckets[:-3:-1]:
        row = st.get_row(retry_key(start, key))
        if row is not None:
            return row
    return None


def put_retry(st: ShardState, key: bytes, value: bytes) -> None:
    """Keep the retry row `key` in the newest bucket, opening one at the batch's time if
    the newest opened a window or more ago."""
    if st.replaying:
        return
    buckets, now = st.retry_buckets, st.now
    if not buckets or buckets[-1] < 0 or now >= buckets[-1] + st.retry_window:
        buckets.append(max(now, buckets[-1] + 1 if buckets else 0))
    st.put_row(retry_key(buckets[-1], key), value)


def find_buckets(rows_with_prefix) -> list[int]:
    """The buckets a shard's rows hold, oldest first (-1: rows from before buckets)."""
    out = []
    for prefix in LEGACY:
        it = rows_with_prefix(prefix)
        try:
            if next(it, None) is not None:
                out.append(-1)
                break
        finally:
            it.close()
    start = RETRY
    while True:
        it = rows_with_prefix(RETRY, start)
        try:
            first = next(it, None)
        finally:
            it.close()
        if first is None:
            return out
        b = int(first[0][len(RETRY):len(RETRY) + 11])
        out.append(b)
        start = b"retry/%011d0" % b      # past every key of bucket b ('0' > '/')


def prune(st: ShardState, rows_with_prefix, limit: int = PRUNE_SLICE) -> int:
    """Delete up to `limit` rows of the buckets older than the newest two, oldest first,
    in the batch being staged; a bucket with nothing left is forgotten. Returns how many
    rows were deleted. Rows this batch or one still committing wrote are left alone."""
    buckets = st.retry_buckets
    done = 0
    while len(buckets) > 2 and done < limit:
        old = buckets[0]
        prefixes = LEGACY if old < 0 else (b"retry/%011d/" % old,)
        for prefix in prefixes:
            it = rows_with_prefix(prefix, st.prune_from if st.prune_from.startswith(prefix) else None)
            try:
                for k, _ in it:
                    k = bytes(k)
                    if k in st.pending:
                        continue
                    st.put_row(k, None)
                    st.prune_from = k + b"\0"      # a batch still committing deleted it
                    done += 1
                    if done >= limit:
                        return done
            finally:
                it.close()
        buckets.pop(0)
        st.prune_from = b""
    return done


