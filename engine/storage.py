"""LMDB storage of one shard: journal, rows, snapshot, in one environment.

Databases:
  meta      schema (the newest journal/snapshot format written here, engine/journal.py),
            oldest (the oldest format that may be left: absent = 1; `turnstile migrate`
            raises it), shard id, the sequence number of the last snapshot, the shard's
            data-encryption key wrapped by the master key (`dek`, engine/keyring.py)
  journal   u64 big-endian batch sequence -> the batch's journal records
  rows      keyed rows written with the batch that changed them (orders, idempotency)
  snapshot  the last snapshot, as named chunks

Every batch is ONE write transaction (journal record + its rows), committed with
LMDB's full sync: when commit() returns, the batch survives kill -9 and power loss.

A shard dir (and any missing parent) is created mode 0700 and its files 0600, whatever
the umask: the dir holds wrapped keys, sealed ID numbers and the business itself.

Opened read-only (`readonly=True`) a shard's data is not written: it is read beside
whoever owns it (a running server: its owner.lock is not taken, its readers are
registered in LMDB's lock file) or, with `lock=False`, as a copy nobody else opens (a
backup), whose lock file is not touched either.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import struct
import tempfile
from typing import Iterator

import lmdb

from .errors import StorageError, CorruptData
from .journal import FORMAT

# the data dir's format: what this build writes, and the newest it opens. A dir opened
# read-write is marked with it (builds that read less then refuse it, before they
# misread a record); its older records stay readable until `turnstile migrate`.
SCHEMA = FORMAT
SHARD_MAP_SIZE = 64 << 30        # the LMDB map size a shard opens with (a sparse file)
CHUNK = 64 << 20
_U64 = struct.Struct(">Q")


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_private_dir(path: str) -> None:
    """Create `path` and its missing parents mode 0700 (chmod: the umask does not apply)."""
    path = os.path.abspath(path)
    if os.path.isdir(path):
        return
    make_private_dir(os.path.dirname(path))
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        return
    os.chmod(path, 0o700)


class FormatTooNew(CorruptData):
    """The data dir was written by a newer build (a format this one does not read)."""


def format_error(path: str, schema: int) -> FormatTooNew:
    return FormatTooNew(f"{path} holds data of format {schema}; this build reads formats 1 "
                        f"to {SCHEMA}", hint="run the newer turnstile that wrote it (or restore "
                                             "a backup taken before it)")


class Storage:
    def __init__(self, path: str, *, map_size: int = SHARD_MAP_SIZE, durable: bool = True,
                 readonly: bool = False, lock: bool = True):
        """Open the shard environment in `path`, creating it unless `readonly`.

        Read-write, the shard's owner.lock is taken (ShardUnavailable if a running server
        holds it). `readonly` opens an existing environment without its owner.lock and
        writes nothing; `lock` (read-only only) registers its readers in LMDB's lock file,
        so a writer in another process never reuses a page they still read: lock=False is
        for a copy nobody else opens."""
        self.path = path
        self.readonly = readonly
        self._map_size, self._durable, self._lmdb_lock = map_size, durable, lock
        self._lock = None
        if readonly:
            self._open_env()
            try:
                self._check_format()
            except BaseException:
                self.env.close()
                raise
            return
        make_private_dir(path)
        # one process per shard: a second one would hold its own, diverging memory
        lock_path = os.path.join(path, "owner.lock")
        self._lock = os.fdopen(os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600), "a+")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            from .errors import ShardUnavailable
            raise ShardUnavailable(f"{path} is in use by another process (a running "
                                   f"`turnstile serve` holds its shards)",
                                   hint="stop that server first, or use `turnstile backup`, "
                                        "which runs beside it") from None
        try:
            self._open_env()
            self._check_format()
        except BaseException:
            if getattr(self, "env", None) is not None:
                self.env.close()
            self._lock.close()
            raise

    def _check_format(self) -> None:
        """FormatTooNew for a dir a newer build wrote."""
        raw = self.get_meta_bytes("schema")
        if raw is not None and int(raw) > SCHEMA:
            raise format_error(self.path, int(raw))

    def formats(self) -> tuple[int, int]:
        """(newest, oldest) format of the records this dir may hold; (SCHEMA, SCHEMA)
        for a new one."""
        raw = self.get_meta_bytes("schema")
        if raw is None:
            return SCHEMA, SCHEMA
        oldest = self.get_meta_bytes("oldest")
        return int(raw), 1 if oldest is None else int(oldest)

    def _open_env(self) -> None:
        if self.readonly:
            self.env = lmdb.open(self.path, map_size=self._map_size, max_dbs=8, subdir=True,
                                 readonly=True, lock=self._lmdb_lock, readahead=True, mode=0o600)
            try:
                self.meta, self.journal, self.rows, self.snapshot = (
                    self.env.open_db(name, create=False)
                    for name in (b"meta", b"journal", b"rows", b"snapshot"))
            except lmdb.Error:
                self.env.close()
                raise
            return
        new = {f for f in ("data.mdb", "lock.mdb") if not os.path.exists(os.path.join(self.path, f))}
        # durable=False trades D of ACID for speed: a crash may lose the last batches
        # that were acknowledged (never a torn state); only for benchmarks/tests.
        # readahead stays on: opening reads the snapshot sequentially (with it off, a
        # cold open of a 10M-ticket shard faulted its pages in one at a time: 13 s)
        self.env = lmdb.open(self.path, map_size=self._map_size, max_dbs=8, subdir=True,
                             sync=self._durable, metasync=self._durable, writemap=False,
                             map_async=False, readahead=True, lock=True, mode=0o600)
        for f in new:                          # LMDB's mode is subject to the umask
            os.chmod(os.path.join(self.path, f), 0o600)
        self.meta = self.env.open_db(b"meta")
        self.journal = self.env.open_db(b"journal")
        self.rows = self.env.open_db(b"rows")
        self.snapshot = self.env.open_db(b"snapshot")

    @staticmethod
    def peek_meta(path: str, key: str, *, lock: bool = True) -> bytes | None:
        """A meta row of the shard in `path`, read-only and without its owner.lock (a
        running server may hold it: `lock` registers the read in LMDB's lock file; a copy
        nobody else opens is read with lock=False, writing nothing); None if there is no
        shard there or no such row."""
        if not os.path.exists(os.path.join(path, "data.mdb")):
            return None
        env = lmdb.open(path, map_size=SHARD_MAP_SIZE, max_dbs=8, subdir=True, readonly=True,
                        lock=lock)
        try:
            try:
                db = env.open_db(b"meta", create=False)
            except lmdb.NotFoundError:
                return None
            with env.begin(db=db) as txn:
                return txn.get(key.encode())
        finally:
            env.close()

    # -- meta -------------------------------------------------------------------
    def get_meta(self, key: str):
        with self.env.begin(db=self.meta) as txn:
            v = txn.get(key.encode())
        return None if v is None else json.loads(v)

    def get_meta_bytes(self, key: str) -> bytes | None:
        with self.env.begin(db=self.meta) as txn:
            return txn.get(key.encode())

    def put_meta(self, rows: dict[str, bytes | None]) -> None:
        """Write (None: delete) meta rows in one durable transaction."""
        try:
            with self.env.begin(write=True, db=self.meta) as txn:
                for k, v in rows.items():
                    if v is None:
                        txn.delete(k.encode())
                    else:
                        txn.put(k.encode(), v)
        except lmdb.Error as e:
            raise StorageError(str(e)) from e

    def is_new(self) -> bool:
        """Nothing was ever written here (not even the schema row)."""
        return self.get_meta_bytes("schema") is None

    def init_meta(self, shard_id: int, dek: bytes | None = None) -> None:
        """Record schema, oldest format and shard id on a new dir (with `dek`, the wrapped
        data key, in the same transaction); on an existing one, check the shard id and
        that this build reads it (FormatTooNew), and mark a dir of an older format with
        this build's (it writes records of it from now on; `oldest` stays, for migrate)."""
        with self.env.begin(write=True, db=self.meta) as txn:
            schema = txn.get(b"schema")
            if schema is None:
                txn.put(b"schema", str(SCHEMA).encode())
                txn.put(b"oldest", str(SCHEMA).encode())
                txn.put(b"shard", str(shard_id).encode())
                if dek is not None:
                    txn.put(b"dek", dek)
                return
            if int(schema) > SCHEMA:
                raise format_error(self.path, int(schema))
            if int(txn.get(b"shard")) != shard_id:
                raise CorruptData(f"data dir belongs to shard {int(txn.get(b'shard'))}, not {shard_id}")
            if int(schema) < SCHEMA:
                txn.put(b"schema", str(SCHEMA).encode())

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

    def row_count(self) -> int:
        """Rows of every kind (orders, idempotency, audit, scan ids...)."""
        with self.env.begin() as txn:
            return txn.stat(self.rows)["entries"]

    # -- snapshots ----------------------------------------------------------------
    def write_snapshot(self, seq: int, blobs: dict[str, bytes], prune: bool = True,
                       meta: dict[str, bytes] | None = None) -> None:
        """Replace the snapshot by `blobs` taken after batch `seq`; drop older journal.
        `meta` rows are written in the same transaction."""
        try:
            with self.env.begin(write=True) as txn:
                for k, v in (meta or {}).items():
                    txn.put(k.encode(), v, db=self.meta)
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
    def used_bytes(self) -> int:
        """The part of the LMDB file in use (its pages up to the last one written)."""
        return self.usage()[0]

    def usage(self) -> tuple[int, int]:
        """(used_bytes, the map size), from one look at the environment."""
        info = self.env.info()
        return (info["last_pgno"] + 1) * self.env.stat()["psize"], info["map_size"]

    def map_use(self) -> float:
        """The file's high-water mark over the map size: what must stay below the map
        (pages freed below the mark are reused, but not every write fits in them)."""
        used, total = self.usage()
        return used / total

    def copy(self, dst: str) -> tuple[int, int | None]:
        """LMDB's compacting copy (mdb_env_copy2, MDB_CP_COMPACT: free pages left out) of
        the environment into the directory `dst`, inside ONE read transaction: one
        committed batch of the shard, never a torn one. Returns that transaction's id and
        the last journal batch it saw (None: an empty journal). Beside a running server,
        open the storage read-only with its lock (readers registered): the server's
        writer then never reuses a page the copy still reads."""
        with self.env.begin() as txn:
            cur = txn.cursor(db=self.journal)
            last = _U64.unpack(cur.key())[0] if cur.last() else None
            self.env.copy(dst, compact=True, txn=txn)
            return txn.id(), last

    def compact(self) -> None:
        """Rewrite the file with its live pages only (LMDB's compacting copy), so that
        nothing freed -- records in clear from before master keys, a data key wrapped
        under a rotated-out master key -- is left in a free page. Needs the shard to
        itself (owner.lock); a reader that has the old file open keeps reading it."""
        tmp = tempfile.mkdtemp(prefix=".compact-", dir=self.path)
        copy = os.path.join(tmp, "data.mdb")
        try:
            self.env.copy(tmp, compact=True)
            os.chmod(copy, 0o600)
            _fsync(copy)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.env.close()
        try:
            os.replace(copy, os.path.join(self.path, "data.mdb"))
            # the lock file describes the old file (its transaction ids): start afresh
            os.remove(os.path.join(self.path, "lock.mdb"))
            _fsync(self.path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            self._open_env()

    def close(self) -> None:
        self.env.close()
        if self._lock is not None:
            self._lock.close()
