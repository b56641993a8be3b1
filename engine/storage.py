"""LMDB storage of one shard: journal, rows, snapshot, in one environment.

Databases:
  meta      schema version, shard id, the sequence number of the last snapshot
  journal   u64 big-endian batch sequence -> the batch's journal records
  rows      keyed rows written with the batch that changed them (orders, idempotency)
  snapshot  the last snapshot, as named chunks

Every batch is ONE write transaction (journal record + its rows), committed with
LMDB's full sync: when commit() returns, the batch survives kill -9 and power loss.
"""
from __future__ import annotations

import fcntl
import json
import os
import struct
from typing import Iterator

import lmdb

from .errors import StorageError, CorruptData

SCHEMA = 1
CHUNK = 64 << 20
_U64 = struct.Struct(">Q")


class Storage:
    def __init__(self, path: str, *, map_size: int = 64 << 30, durable: bool = True):
        os.makedirs(path, exist_ok=True)
        # one process per shard: a second one would hold its own, diverging memory
        self._lock = open(os.path.join(path, "owner.lock"), "a+")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            from .errors import ShardUnavailable
            raise ShardUnavailable(f"{path} is open in another process",
                                   hint="stop that server first (turnstile serve holds its shards)")
        # durable=False trades D of ACID for speed: a crash may lose the last batches
        # that were acknowledged (never a torn state); only for benchmarks/tests.
        # readahead stays on: opening reads the snapshot sequentially (with it off, a
        # cold open of a 10M-ticket shard faulted its pages in one at a time: 13 s)
        self.env = lmdb.open(path, map_size=map_size, max_dbs=8, subdir=True,
                             sync=durable, metasync=durable, writemap=False,
                             map_async=False, readahead=True, lock=True)
        self.meta = self.env.open_db(b"meta")
        self.journal = self.env.open_db(b"journal")
        self.rows = self.env.open_db(b"rows")
        self.snapshot = self.env.open_db(b"snapshot")
        self.path = path

    # -- meta -------------------------------------------------------------------
    def get_meta(self, key: str):
        with self.env.begin(db=self.meta) as txn:
            v = txn.get(key.encode())
        return None if v is None else json.loads(v)

    def init_meta(self, shard_id: int) -> None:
        with self.env.begin(write=True, db=self.meta) as txn:
            schema = txn.get(b"schema")
            if schema is None:
                txn.put(b"schema", str(SCHEMA).encode())
                txn.put(b"shard", str(shard_id).encode())
            elif int(schema) != SCHEMA:
                raise CorruptData(f"data dir has schema {int(schema)}, this build reads {SCHEMA}")
            elif int(txn.get(b"shard")) != shard_id:
                raise CorruptData(f"data dir belongs to shard {int(txn.get(b'shard'))}, not {shard_id}")

    # -- batches ----------------------------------------------------------------
    def commit(self, seq: int, journal: bytes | None, rows: dict[bytes, bytes | None]) -> None:
        """Write one batch in one durable transaction."""
        try:
            with self.env.begin(write=True) as txn:
                if journal:
                    txn.put(_U64.pack(seq), journal, db=self.journal)
                for k, v in rows.items():
                    if v is None:
                        txn.delete(k, db=self.rows)
                    else:
                        txn.put(k, v, db=self.rows)
        except lmdb.MapFullError as e:
            raise StorageError(str(e), hint="Please use a larger map_size") from e
        except lmdb.Error as e:
            raise StorageError(str(e)) from e

    def get_row(self, key: bytes) -> bytes | None:
        with self.env.begin(db=self.rows, buffers=False) as txn:
            return txn.get(key)

    def rows_with_prefix(self, prefix: bytes, start: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        """Rows whose key starts with prefix, in key order, from `start` if given."""
        with self.env.begin(db=self.rows) as txn:
            cur = txn.cursor()
            if cur.set_range(start or prefix):
                for k, v in cur:
                    if not k.startswith(prefix):
                        break
                    yield k, v

    def last_row(self, prefix: bytes) -> tuple[bytes, bytes] | None:
        """The row with the greatest key starting with prefix."""
        with self.env.begin(db=self.rows) as txn:
            cur = txn.cursor()
            if cur.set_range(prefix + b"\xff"):
                if not cur.prev():
                    return None
            elif not cur.last():
                return None
            k = cur.key()
            return (k, cur.value()) if k.startswith(prefix) else None

    def journal_after(self, seq: int) -> Iterator[tuple[int, bytes]]:
        """Batches with a sequence number above seq, in order."""
        with self.env.begin(db=self.journal) as txn:
            cur = txn.cursor()
            if cur.set_range(_U64.pack(seq + 1)):
                for k, v in cur:
                    yield _U64.unpack(k)[0], v

    def last_seq(self) -> int:
        with self.env.begin(db=self.journal) as txn:
            cur = txn.cursor()
            if cur.last():
                return _U64.unpack(cur.key())[0]
        return self.get_meta("snapshot_seq") or 0

    def journal_count(self) -> int:
        """Batches in the journal (after the snapshot): the benchmarks' recovery size."""
        with self.env.begin() as txn:
            return txn.stat(self.journal)["entries"]

    # -- snapshots ----------------------------------------------------------------
    def write_snapshot(self, seq: int, blobs: dict[str, bytes], prune: bool = True) -> None:
        """Replace the snapshot by `blobs` taken after batch `seq`; drop older journal."""
        try:
            with self.env.begin(write=True) as txn:
                txn.drop(self.snapshot, delete=False)
                for name, blob in blobs.items():
                    for i in range(0, max(len(blob), 1), CHUNK):
                        txn.put(f"{name}/{i // CHUNK:06d}".encode(), blob[i:i + CHUNK],
                                db=self.snapshot)
                txn.put(b"snapshot_seq", json.dumps(seq).encode(), db=self.meta)
                if prune:
                    cur = txn.cursor(db=self.journal)
                    while cur.first() and _U64.unpack(cur.key())[0] <= seq:
                        cur.delete()
        except lmdb.Error as e:
            raise StorageError(str(e)) from e

    def read_snapshot(self) -> tuple[int, dict[str, bytes]] | None:
        seq = self.get_meta("snapshot_seq")
        if seq is None:
            return None
        parts: dict[str, list] = {}
        with self.env.begin(db=self.snapshot, buffers=True) as txn:
            for k, v in txn.cursor():
                name = bytes(k).decode().rsplit("/", 1)[0]
                parts.setdefault(name, []).append(v)
            # one copy out of the map, while the buffers are valid
            return seq, {n: b"".join(p) for n, p in parts.items()}

    # -- ops ----------------------------------------------------------------------
    def map_use(self) -> float:
        info = self.env.info()
        stat = self.env.stat()
        return (info["last_pgno"] + 1) * stat["psize"] / info["map_size"]

    def close(self) -> None:
        self.env.close()
        self._lock.close()
