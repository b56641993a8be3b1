"""The audit log: one hash-chained record per audited command (DESIGN.md section 5).

A record is {seq, at, principal, method, digest, result, prev}; its hash is
SHA-256 over the previous record's hash and the record's canonical JSON, so changing,
removing or reordering any record breaks every hash after it. Records are rows of
the shard's LMDB environment (`audit/<seq>`), written in the same transaction as the
batch of the commands they describe.
"""
from __future__ import annotations

import hashlib
import json
from typing import Iterator

PREFIX = b"audit/"
GENESIS = "0" * 64


def key(seq: int) -> bytes:
    return PREFIX + b"%016x" % seq


def _canonical(record: dict) -> str:
    """The JSON a record's hash covers: every field but the hash, keys sorted."""
    return json.dumps({k: v for k, v in record.items() if k != "hash"}, sort_keys=True,
                      separators=(",", ":"))


def chain_hash(prev: str, record: dict) -> str:
    return hashlib.sha256((prev + _canonical(record)).encode()).hexdigest()


def make(seq: int, prev: str, at: int, principal: str, method: str, digest: str,
         result: str) -> tuple[str, bytes]:
    """(hash, stored row) of a new record: the canonical JSON the hash covers, with the
    hash added last (one encoding per record, on the writer's hot path)."""
    body = _canonical({"seq": seq, "at": at, "principal": principal, "method": method,
                       "digest": digest, "result": result, "prev": prev})
    h = hashlib.sha256((prev + body).encode()).hexdigest()
    return h, f'{body[:-1]},"hash":"{h}"}}'.encode()


def verify(records: Iterator[dict]) -> tuple[bool, int, int]:
    """(ok, records checked, first bad seq or 0)."""
    prev, expect, n = GENESIS, 1, 0
    for rec in records:
        n += 1
        if rec.get("seq") != expect or rec.get("prev") != prev or chain_hash(prev, rec) != rec.get("hash"):
            return False, n, expect
        prev, expect = rec["hash"], expect + 1
    return True, n, 0
