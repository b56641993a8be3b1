"""A shard: one single-writer state machine over one LMDB environment.

    shard = Shard.open("data/shard-0")
    shard.run(cmd.venue("westlake", "West Lake"))     # synchronous: one command, one commit
    async with shard.writer() as w:                     # asyncio group commit
        result = await w.submit(cmd.verify(code, gate="north-1"))

Opening recovers the state: the last snapshot, then the journal after it. Every
command goes through ShardState.apply; a batch of commands is journaled and
committed in one durable LMDB transaction before any of them is answered.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections import Counter
from typing import Any, Callable, Iterable

import numpy as np
from pyroaring import BitMap

from . import _core, audit, keyring
from .errors import (CorruptData, ShardUnavailable, StorageFull, TurnstileError, NotFound,
                     InvalidArgument)
from .journal import Command, CommandKind
from .live import LiveBoard, live_controls
from .model import (RECORD_DTYPE, day_to_date, AllotmentStock, AuditNote, CouponStatus, PackageSplit, AuditRecord, BundleGate, BundleProduct, BundleSlot,
                    BundleZone, BookingWindow, CalendarDay, IdLimits, Catalog, Conflict, HoldInfo, HolderTicket, OfflineBundle,
                    Order, OrderTicket, PriceRules, PriceTable, ProductCount, PassDates, RefundPolicy, Quote, ShardCounts, SlotStock,
                    TicketRecord, Violation, ZoneCount, LiveControls, LiveView, MemberInfo, MemberProgram, PointsEntry, SeatMap,
                    to_day)
from .state import Batch, ShardState, catalog, controls, finance, mask_id, members, merchants, promos, retry, seating
from .storage import SHARD_MAP_SIZE, Storage

log = logging.getLogger(__name__)
_FIRST_VERIFY, _LAST_VERIFY = CommandKind.VERIFY, CommandKind.VERIFY_PACKED
MAP_WARN = (0.8, 0.9, 0.95)        # map use at which a shard warns, once per level


def map_reserve(map_size: int) -> int:
    """Bytes of the map kept free: commands are refused (StorageFull) once less is free,
    before LMDB itself would fail. A write transaction needs room for a new copy of every
    page it changes beside the old one (a page per changed row at worst), so the reserve
    must hold the biggest batch: 64 MiB holds 10,000 scattered rows (an offline upload of
    10,000 scans). A batch that still does not fit makes LMDB fail its transaction:
    nothing of it is written, and the shard stops and is restarted (loud, not torn)."""
    return min(max(64 << 20, map_size // 100), map_size // 4)
# a ticket's state as GetOrder shows it: the first of these that holds, else issued
_STATES = (("voided", _core.STATE_VOIDED), ("blocked", _core.STATE_BLOCKED),
           ("inside", _core.STATE_INSIDE), ("used", _core.STATE_USED))


def _recover(storage: Storage, shard_id: int,
             ring: keyring.Keyring) -> tuple[ShardState, int, int, tuple[float, float, float]]:
    """The state of the shard in `storage`: its last snapshot loaded, then every journal
    batch after it replayed. Returns (state, last batch, commands replayed, the
    perf_counter times at which the snapshot was read, loaded and the journal replayed)."""
    state = ShardState(shard_id, storage.get_row)
    state.keyring = ring
    snap = storage.read_snapshot()
    seq = 0
    t1 = time.perf_counter()
    if snap is not None:
        seq, blobs = snap
        state.load(blobs)
    t2 = time.perf_counter()
    replayed = 0
    state.replaying = True
    try:
        for seq, blob in storage.journal_after(seq):
            b = Batch(seq)
            state.replay(blob, b)
            replayed += b.n_commands
    finally:
        state.replaying = False
    return state, seq, replayed, (t1, t2, time.perf_counter())


class _Stopped:
    """The state of a shard that stopped after a failure: its memory may hold a batch
    that never became durable, so nothing is read from it any more. Every query (and
    command) is ShardUnavailable until the shard is opened again from disk."""

    __slots__ = ("_why",)

    def __init__(self, why: BaseException):
        self._why = why

    def __getattr__(self, name):
        raise ShardUnavailable(f"the shard stopped after a failure: {self._why!r}",
                               hint="reopen it to recover from disk")


class Shard:
    """One shard; see the module docstring. Not thread-safe: one writer at a time."""

    def __init__(self, storage: Storage, state: ShardState, seq: int, *,
                 clock: Callable[[], float], snapshot_every: int):
        self.storage = storage
        self.state = state
        self.seq = seq
        # the last batch that wrote anything (LMDB, and in replicated mode the log of
        # record): a refused command's batch writes nothing but takes a number; snapshots
        # are taken as of this one, so a reopened shard's sequence is never one its log lacks
        self.written_seq = seq
        self.clock = clock
        self.snapshot_every = snapshot_every
        self.since_snapshot = 0
        self.failed: BaseException | None = None
        self._shard_id = state.shard_id
        self.closed = False
        self.batch_sizes: Counter[int] = Counter()
        # a replicated shard's log of record (engine/recordlog.py): each batch goes there
        # before LMDB; None: a shard of its own. `fence`, if set, is called before each
        # append and raises NotPrimary when this process may no longer count itself the
        # owner (server/ownership.py, Ownership.check)
        self.record_log = None
        self.fence: Callable[[], None] | None = None
        self.recovery: dict[str, float] = {}
        self._writer = None
        # offline bundles: ids changed per cut since open; a gate's bundle of another
        # incarnation (or day) gets a full bundle, one of this one a delta
        self._incarnation = int.from_bytes(os.urandom(4), "little")
        self._cuts: list[tuple[int, BitMap]] = []
        self._cut_floor = seq
        state.tickets.changed = BitMap()
        state.retry_buckets = retry.find_buckets(storage.rows_with_prefix)
        self.pruned = 0                  # retry rows deleted since open
        self.map_used = 0.0              # the file's high-water mark / the map, after each commit
        self.storage_full = False
        self._warned = 0                 # MAP_WARN levels warned of
        if not storage.readonly:
            self._measure()
        self._audit_open(state.keyring)
        self.board = LiveBoard(state)     # gate heartbeats and open alerts (engine/live.py)

    # -- open / close ----------------------------------------------------------------
    @classmethod
    def open(cls, path: str, *, shard_id: int = 0, clock: Callable[[], float] = time.time,
             durable: bool = True, map_size: int = SHARD_MAP_SIZE,
             snapshot_every: int = 1_000_000, master_key: bytes | str | None = None,
             retry_window_s: int = retry.DEFAULT_WINDOW_S) -> "Shard":
        """Open (creating if needed) the shard in directory `path` and recover it.

        `master_key` (32 bytes or 64 hex digits; default: the file TURNSTILE_MASTER_KEY_FILE
        names, else TURNSTILE_MASTER_KEY) unwraps the shard's data key (engine/keyring.py).
        Without one, or with another key than the shard is wrapped under, MasterKeyError is
        raised and nothing is opened or created. A shard made before master keys (secrets
        in clear) is migrated on open: its data key is made and wrapped, its catalog sealed
        into a new snapshot, its journal dropped and its file compacted.

        `retry_window_s`: how long rows kept only to answer retries (idempotency keys,
        scan ids, batch ids, offline nonces, ended holds) are kept at least; they are
        pruned after at most twice that (engine/state/retry.py)."""
        if type(retry_window_s) is not int or retry_window_s < 1:
            raise InvalidArgument("must be a positive number of seconds", field="retry_window_s")
        master = keyring.load_master_key(master_key)
        t0 = time.perf_counter()
        storage = Storage(path, map_size=map_size, durable=durable)
        try:
            wrapped = storage.get_meta_bytes("dek")
            legacy = False
            if wrapped is not None:
                dek = keyring.unwrap_dek(master, wrapped, path)
            else:
                dek, legacy = keyring.new_dek(), not storage.is_new()
                wrapped = keyring.wrap_dek(master, dek)
            storage.init_meta(shard_id, dek=None if legacy else wrapped)
            if storage.get_meta_bytes("compact") is not None:   # a migration or rotation
                storage.compact()                              # stopped before compacting
                storage.put_meta({"compact": None})
            state, seq, replayed, (t1, t2, t3) = _recover(storage, shard_id, keyring.Keyring(dek))
            shard = cls(storage, state, seq, clock=clock, snapshot_every=snapshot_every)
            state.retry_window = retry_window_s
            shard.since_snapshot = replayed
            shard.recovery = {"read_snapshot_s": t1 - t0, "load_snapshot_s": t2 - t1,
                              "replay_s": t3 - t2, "replayed": replayed, "total_s": t3 - t0}
            if not state.holder_secret:
                shard.run_many([Command(CommandKind.SECRETS, ShardState.new_secrets()),
                                Command(CommandKind.KEY, {"action": "rotate"})])
            if legacy:
                # the catalog in memory was sealed as it replayed: the snapshot of it, the
                # wrapped data key and the mark to compact go in one transaction, the journal
                # with the clear records is dropped, and compaction leaves no freed page
                # holding them
                storage.write_snapshot(shard.seq, state.dump(),
                                       meta={"dek": wrapped, "compact": b"1"})
                shard.since_snapshot = 0
                storage.compact()
                storage.put_meta({"compact": None})
        except BaseException:
            storage.close()
            raise
        return shard

    @classmethod
    def open_readonly(cls, path: str, *, lock: bool = True, clock: Callable[[], float] = time.time,
                      master_key: bytes | str | None = None) -> "Shard":
        """Recover the shard in `path` as Shard.open recovers it, without writing its
        data: the environment read-only, its owner.lock not taken (a running server may
        hold it), its shard id from its meta. With `lock` its readers are registered in
        LMDB's lock file, so a server writing it meanwhile never reuses a page they read;
        lock=False is for a copy nobody else opens (a backup), which it leaves untouched.

        Queries, check() and summaries work; commands and snapshots are refused
        (ShardUnavailable), and closing writes nothing. A shard made before master keys
        replays its secrets as they are, in clear (Shard.open would migrate it). The
        master key as for Shard.open; CorruptData if `path` holds no shard id."""
        master = keyring.load_master_key(master_key)
        storage = Storage(path, readonly=True, lock=lock)
        try:
            shard_id = storage.get_meta("shard")
            if shard_id is None:
                raise CorruptData(f"{path} is not a shard (no shard id in its meta)")
            wrapped = storage.get_meta_bytes("dek")
            dek = (keyring.unwrap_dek(master, wrapped, path) if wrapped is not None
                   else keyring.new_dek())
            state, seq = _recover(storage, int(shard_id), keyring.Keyring(dek))[:2]
            return cls(storage, state, seq, clock=clock, snapshot_every=1 << 62)
        except BaseException:
            storage.close()
            raise

    @property
    def readonly(self) -> bool:
        """Opened with open_readonly: no command, no snapshot."""
        return self.storage.readonly

    def request_digest(self, data: bytes) -> str:
        """The audit log's digest of a request (DESIGN.md 5): keyed -- BLAKE2b under the
        shard's holder secret, personalised for this use -- so that nobody who reads the
        log can test guesses of the ID numbers or codes a request carried."""
        return hashlib.blake2b(data, key=self.state.holder_secret, digest_size=32,
                               person=b"turnstile-audit").hexdigest()

    def close(self, *, snapshot: bool = True) -> None:
        """Close; with `snapshot`, first write a snapshot so the next open is fast."""
        if self.closed:
            return
        if self._writer is not None and self._writer.running:
            raise ShardUnavailable("stop the writer before closing the shard")
        self._audit_close()
        if snapshot and self.failed is None and self.since_snapshot and not self.readonly:
            self.snapshot()
        self.closed = True
        self.storage.close()

    def __enter__(self) -> "Shard":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the write path ---------------------------------------------------------------
    def _usable(self) -> None:
        if self.closed:
            raise ShardUnavailable("the shard is closed")
        if self.readonly:
            raise ShardUnavailable("the shard is open read-only")
        if self.failed is not None:
            raise ShardUnavailable(f"the shard stopped after a failure: {self.failed}",
                                   hint="reopen it to recover from disk")

    def _stage(self, cmds: Iterable[Command], batch: Batch | None = None) -> tuple[Batch, list[Any]]:
        """Apply commands to memory (writer thread); nothing is answered yet. With `batch`,
        the commands join that batch, still open (the writer grows the next batch while
        the previous one commits); `_seal` closes it before its commit."""
        self._usable()
        if batch is None:
            self.seq += 1
            batch = Batch(self.seq)
        now = int(self.clock())
        state = self.state
        state.now, state.batch = now, batch
        results: list[Any] = []
        n_before = batch.n_commands
        try:
            if n_before == 0 and len(state.retry_buckets) > 2:
                self.pruned += retry.prune(state, self.storage.rows_with_prefix)
            if self.storage_full:
                # refused whole, before any of it is applied: nothing half-written
                full = StorageFull(f"storage full ({self.map_used:.0%} of the LMDB map in use)",
                                   hint="the operator must restart the shard with a larger map (map_size)")
                results = [full for _ in cmds]
                batch.n_calls += len(results)
                return batch, results
            if state.due_expiry(now):
                state.apply(Command(CommandKind.EXPIRE, {}), now, batch)
            for c in cmds:
                try:
                    r = state.apply(c, now, batch)
                except TurnstileError as e:
                    # a refusal is an answer, not a crash: without its traceback (which holds
                    # this frame, which holds `results`, which holds it) it makes no
                    # reference cycle for the cyclic GC to find
                    r = e.with_traceback(None)
                results.append(r)
                if c.audit is not None and not _FIRST_VERIFY <= c.op <= _LAST_VERIFY:
                    # the record of a scan is its journal record: the audit log is for
                    # administrative and sales changes
                    self._audit(c.audit, now, r, batch)
        except BaseException as e:
            # memory may be half-changed: stop, so nothing untrue is ever answered
            self._fail(e)
            raise ShardUnavailable(f"the shard stopped: {e!r}") from e
        self.since_snapshot += batch.n_commands - n_before
        batch.n_calls += len(results)
        return batch, results

    def _fail(self, exc: BaseException) -> None:
        """Stop after an unexpected failure (a commit that did not happen, a command that
        broke off half-applied): memory is dropped -- queries are ShardUnavailable, never
        an answer from a batch that is not durable -- and the writer, if any, is told
        (GroupCommit.wait_failed), so that whoever serves the shard stops serving it."""
        if self.failed is None:
            self.failed = exc
            self.state = _Stopped(exc)
            if self._writer is not None:
                self._writer._failed(exc)

    def _seal(self, batch: Batch) -> None:
        """No more commands join `batch`: it goes to commit."""
        self.batch_sizes[batch.n_calls] += 1

    # -- the audit log (engine/audit.py) -------------------------------------------------
    AUDIT_PRUNE_SLICE = 512         # archived audit rows a batch deletes at most

    def _audit_open(self, ring: keyring.Keyring) -> None:
        """The audit log's state: its head (the head row; a shard from before it: the
        last record), its signing key (made now for a new shard or one from before
        checkpoints), when the next checkpoint is due, and what is archived but still
        to prune. Reads a few rows; writes only a new key and its head row."""
        storage = self.storage
        self.audit_every = audit.EVERY          # records between checkpoints
        self.audit_dir = os.path.join(storage.path, audit.ARCHIVE_DIR)
        self._audit_ring = ring
        raw_head = storage.get_row(audit.HEAD)
        last = raw_head if raw_head is not None else (storage.last_row(audit.PREFIX) or (b"", None))[1]
        if last is None:
            self.audit_seq, self.audit_head = 0, audit.GENESIS
        else:
            rec = json.loads(last)
            self.audit_seq, self.audit_head = rec["seq"], rec["hash"]
        self._audit_signer, self._audit_kid, due = None, "", 0
        raw_key = storage.get_meta_bytes(audit.KEY_META)
        if storage.readonly:
            pass                                # verifies, never signs
        elif raw_key is not None and storage.get_meta_bytes("dek") is not None:
            try:
                k = audit.AuditKey.parse(raw_key)
                self._audit_signer, self._audit_kid, due = k.signer(ring), k.key, k.first_by
            except (ValueError, CorruptData) as e:
                # the shard serves on; its checkpoints stop and verification says why
                import logging
                logging.getLogger(__name__).error(
                    "shard %s: its audit key does not open (%s): no audit checkpoints are "
                    "signed; `turnstile check` reports the chain", self._shard_id, e)
        elif raw_head is None or raw_key is not None:
            # a new shard, or one from before checkpoints: its chain from here on is signed
            # (or one being given its first data key, Shard.open: no key sealed before
            # it can open)
            due = self.audit_seq + self.audit_every
            self._audit_signer, row = audit.new_key(ring, self._shard_id, due)
            self._audit_kid = audit.AuditKey.parse(row).key
            audit.install_key(storage.env, storage.meta, storage.rows, row, self.audit_seq,
                              self.audit_head)
        # (a head row without a key row: the key was removed; nothing is signed again)
        cp = storage.last_row(audit.CP_PREFIX)
        self._audit_cp_seq = 0
        if cp is not None:
            cp = json.loads(cp[1])
            self._audit_cp_seq, due = cp["seq"], cp["next_by"]
        self._audit_cp_due = due
        self._audit_archived = audit.archived_end(self.audit_dir)
        first = storage.rows_with_prefix(audit.PREFIX)
        try:
            hot = next(first, None)
        finally:
            first.close()
        self._audit_pruned = min(self._audit_archived,
                                 self._audit_archived if hot is None else json.loads(hot[1])["seq"] - 1)
        self._audit_prune_batch = -1

    def _audit(self, who: tuple[str, str, str], now: int, result: Any, batch: Batch) -> None:
        self.audit_seq += 1
        if isinstance(result, TurnstileError):
            outcome = result.code
        elif isinstance(result, AuditNote):
            outcome = result.audit_result
        else:
            outcome = "OK"
        self.audit_head, row = audit.make(self.audit_seq, self.audit_head, now, who[0], who[1],
                                          who[2], outcome)
        state = self.state
        state.batch = batch
        state.put_row(audit.key(self.audit_seq), row)
        state.put_row(audit.HEAD, audit.head_row(self.audit_seq, self.audit_head))
        if self.audit_seq >= self._audit_cp_due and self._audit_signer is not None:
            self._audit_checkpoint(now, state.put_row)
        if self._audit_pruned < self._audit_archived and batch.seq != self._audit_prune_batch:
            self._audit_prune_batch = batch.seq
            for k in self._audit_prune_slice():
                state.put_row(k, None)

    def _audit_checkpoint(self, now: int, put: Callable[[bytes, bytes], None]) -> None:
        """Sign the chain as it stands: a checkpoint row, the next one due `audit_every`
        records later."""
        next_by = self.audit_seq + max(int(self.audit_every), 1)
        put(audit.cp_key(self.audit_seq),
            audit.make_checkpoint(self._audit_signer, self._audit_kid, self._shard_id,
                                  self.audit_seq, self.audit_head, now, next_by))
        self._audit_cp_seq, self._audit_cp_due = self.audit_seq, next_by

    def _audit_prune_slice(self) -> list[bytes]:
        """Keys of the next slice of hot audit rows the archive holds (records at or
        before its end, checkpoints before it). They were committed before they were
        archived, so no batch still being written holds them."""
        lo, upto = self._audit_pruned + 1, self._audit_archived
        hi = min(upto, lo + self.AUDIT_PRUNE_SLICE - 1)
        keys = [audit.key(s) for s in range(lo, hi + 1)]
        if hi == upto:
            with self.storage.env.begin(db=self.storage.rows) as txn:
                keys += audit.prune_keys(txn, self.storage.rows, upto, 1 << 30,
                                         records=False)
        self._audit_pruned = hi
        return keys

    def archive_audit(self, *, keep: int = 10_000, segment_records: int = 10_000) -> list[audit.Segment]:
        """Archive the old part of the audit log to files in DIR/audit (engine/audit.py):
        every record up to a checkpoint at least `keep` records behind the head, in files
        of at least `segment_records` records that each end at a checkpoint, each
        fsync'd, read back and verified before it counts. Their rows are then pruned a
        slice per audited batch (AUDIT_PRUNE_SLICE), or at once by prune_audit when no
        writer runs. It reads one LMDB read transaction and touches no memory of the
        writer, so it may run in a thread beside it. CorruptData if the records to
        archive do not verify (they stay hot, as evidence)."""
        if self.readonly:
            raise ShardUnavailable("the shard is open read-only")
        self._writes_here()             # its primary archives, pruning through the log
        written = audit.archive(self._shard_id, self.storage.env, self.storage.rows,
                                self.storage.meta, self.audit_dir, keep=keep,
                                segment_records=segment_records)
        self._audit_archived = audit.archived_end(self.audit_dir)
        return written

    def prune_audit(self) -> int:
        """Delete every hot audit row the archive holds, a slice per transaction (no
        writer may run). Returns the rows deleted."""
        if self._writer is not None and self._writer.running:
            raise ShardUnavailable("the async writer owns this shard; it prunes as it goes")
        self._usable()
        self._writes_here()
        n = 0
        while self._audit_pruned < self._audit_archived:
            keys = self._audit_prune_slice()
            self.storage.commit(self.seq, None, dict.fromkeys(keys))
            n += len(keys)
        return n

    def _audit_close(self) -> None:
        """On close: sign the records after the last checkpoint."""
        if self._audit_signer is not None and self.audit_seq > self._audit_cp_seq \
                and self.failed is None and not self.readonly:
            rows: dict[bytes, bytes | None] = {}
            self._audit_checkpoint(int(self.clock()), rows.__setitem__)
            self.storage.commit(self.seq, None, rows)

    def audit_records(self, after_seq: int = 0, limit: int = 100,
                      principal: str | None = None) -> list[AuditRecord]:
        """Audit records after `after_seq`, oldest first: archived ones from their files,
        then the committed rows, read in ONE LMDB read transaction. It touches no memory
        of the writer: safe in a thread beside it."""
        out: list[AuditRecord] = []

        def take(rec: dict) -> bool:
            if not principal or rec["principal"] == principal:
                out.append(AuditRecord.from_dict(rec))
            return len(out) >= limit

        st = self.storage
        with st.env.begin(db=st.rows) as txn:
            cur = txn.cursor()
            first = None
            if cur.set_range(audit.PREFIX) and cur.key().startswith(audit.PREFIX):
                first = int(cur.key()[len(audit.PREFIX):], 16)
            if first is None or after_seq + 1 < first:
                try:
                    for rec in audit.iter_archived(self.audit_dir, after_seq):
                        if first is not None and rec["seq"] >= first:
                            break
                        if take(rec):
                            return out
                except (OSError, ValueError) as e:
                    raise CorruptData(f"the audit archive in {self.audit_dir} is unreadable: {e}") from None
            if cur.set_range(audit.key(after_seq + 1)):
                for k, raw in cur:
                    if not k.startswith(audit.PREFIX):
                        break
                    if take(json.loads(raw)):
                        break
        return out

    def check_audit(self) -> audit.Report:
        """Verify the whole audit log (engine/audit.py verify_chain): the archive files
        and the hot rows as one chain, every checkpoint's signature, the head, the key
        row against its sealed seed; in ONE LMDB read transaction, touching no memory
        of the writer: safe in a thread beside it."""
        st = self.storage
        with st.env.begin() as txn:
            return audit.verify_chain(self._shard_id, txn, st.rows, st.meta, self.audit_dir,
                                      self._audit_ring)

    def verify_audit(self) -> tuple[bool, int, int]:
        """check_audit in short: (ok, records checked, first bad seq or 0)."""
        r = self.check_audit()
        return r.ok, r.checked, r.first_bad_seq

    def _commit(self, batch: Batch) -> None:
        """Make a staged batch durable (I/O thread): one LMDB transaction, fsync'd. A
        replicated shard (`record_log` set) writes it to its log of record first, so that
        the log holds every batch the LMDB file does (engine/recordlog.py): a batch in the
        log and not here is replayed from the log; none is here and not in the log."""
        if batch.records or batch.rows:
            blob = batch.blob()
            if self.record_log is not None:
                if self.fence is not None:
                    self.fence()            # NotPrimary once the owner's lease may lapse
                self.record_log.append(batch.seq, blob, batch.rows)
            self.storage.commit(batch.seq, blob, batch.rows)
            self.written_seq = batch.seq
            self._measure()

    def mark_replicated(self, cluster: str) -> None:
        """Record in the shard's meta that it is a replicated shard of `cluster` (its
        batches go through a log of record): offline tools that would write batches past
        the log refuse it (datadir.move_venue). Kept by backups and restores."""
        if self.replicated() != cluster:
            self.storage.put_meta({"replicated": json.dumps(cluster).encode()})

    def replicated(self) -> str | None:
        """The cluster this shard is replicated in (mark_replicated), None if never."""
        return self.storage.get_meta("replicated")

    def _writes_here(self) -> None:
        """ShardUnavailable if a batch written here would bypass the shard's log of record:
        a replicated shard is written by its primary only, through the log (`record_log`,
        set on promotion). Written apart from it -- by an offline tool, or a server not in
        replicated mode -- a batch would reach neither the log nor the shard's other
        nodes, and this node would hold a batch number the log gives another batch (the
        log then refuses it: engine/recordlog.py, check_position)."""
        if self.record_log is None and (cluster := self.replicated()) is not None:
            raise ShardUnavailable(
                f"shard {self._shard_id} is replicated (cluster {cluster}): its batches are "
                f"written by its primary, through its log of record, not here",
                hint="change it through the cluster (turnstile serve --etcd --pg); "
                     "`turnstile shards detach` makes the data dir's shards stand alone again")

    @property
    def lineage(self) -> str:
        """Which shard this is, whatever copy of it: a digest of the secrets it was made
        with (the same in every backup, restore and standby of it, another in a shard made
        apart). The log of record refuses a node of another lineage."""
        secret = self.state.holder_secret
        return hashlib.blake2b(secret, digest_size=8, person=b"turnstile-lineag").hexdigest() if secret else ""

    def promoted(self, record_log) -> None:
        """A standby that applied the whole log (engine/recordlog.py, promote) becomes the
        primary: its audit chain goes on from the last record the log brought, and every
        later batch goes through `record_log`."""
        self._usable()
        self._audit_open(self._audit_ring)
        self.record_log = record_log

    def follow(self, seq: int, journal: bytes, rows: dict[bytes, bytes | None]) -> bool:
        """Apply batch `seq` of the primary's log of record (a standby): written to LMDB as
        the primary wrote it, replayed into memory by what its records say was decided --
        never decided again. A batch at or below the shard's sequence is had already
        (False). Batches come in sequence order; a gap is a batch that wrote nothing."""
        self._usable()
        if seq <= self.seq:
            return False
        self._archive_before_pruned(rows)
        b = Batch(seq)
        self.storage.commit(seq, journal or None, rows)
        self.written_seq = seq
        st = self.state
        st.replaying = True
        try:
            st.replay(journal, b)
        except BaseException as e:
            self._fail(e)
            raise
        finally:
            st.replaying = False
        self.seq = seq
        self.since_snapshot += b.n_commands
        if self._snapshot_due():
            self.storage.write_snapshot(seq, st.dump())
            self.since_snapshot = 0
        return True

    def _archive_before_pruned(self, rows: dict[bytes, bytes | None]) -> None:
        """A followed batch that deletes audit records the primary archived to files of its
        own (on its machine): archive them here first, into this shard's DIR/audit, so its
        chain stays whole (cut at every checkpoint: this copy's files end where the
        primary's do, and further)."""
        cut = len(audit.PREFIX)
        gone = max((int(k[cut:], 16) for k, v in rows.items()
                    if v is None and k.startswith(audit.PREFIX) and len(k) == cut + 16), default=0)
        if gone <= self._audit_archived:
            return
        audit.archive(self._shard_id, self.storage.env, self.storage.rows, self.storage.meta,
                      self.audit_dir, keep=0, segment_records=1)
        self._audit_archived = audit.archived_end(self.audit_dir)
        if gone > self._audit_archived:
            log.error("shard %d: the primary prunes audit records up to %d, archived here only up "
                      "to %d: the records between are in the primary's archive files alone",
                      self._shard_id, gone, self._audit_archived)

    def _measure(self) -> None:
        """How full the LMDB map is (after a commit, on the I/O thread): a warning in the
        log at 80, 90 and 95 % in use, and `storage_full` once less than the reserve is
        free -- from then on each batch is refused whole (StorageFull) until the shard is
        opened with a larger map_size (pruning keeps the mark from rising; it never
        lowers it: LMDB files do not shrink)."""
        # the file's high-water mark, not the pages holding data: LMDB fails a write once
        # it must grow past the map, and freed pages do not always serve (a large value
        # needs a run of them), so the mark is what must stay below the map
        used, total = self.storage.usage()
        use = used / total
        self.map_used = use
        full = total - used < map_reserve(total)
        if full != self.storage_full:
            self.storage_full = full
            if full:
                log.error("shard %d: storage full: %.1f %% of the LMDB map in use; every "
                          "command is refused (RESOURCE_EXHAUSTED, STORAGE_FULL) until the "
                          "shard is restarted with a larger map size (--map-size-mib)",
                          self._shard_id, use * 100)
            else:
                log.warning("shard %d: storage no longer full (%.1f %% in use)",
                            self._shard_id, use * 100)
        level = sum(use >= w for w in MAP_WARN)
        if level > self._warned:
            self._warned = level
            log.warning("shard %d: %.1f %% of the LMDB map in use (%d MiB of %d MiB); raise "
                        "the map size (--map-size-mib) before it fills", self._shard_id,
                        use * 100, used >> 20, total >> 20)
        elif use < MAP_WARN[0] - 0.05:
            self._warned = 0

    def _committed(self, batch: Batch) -> None:
        self.state.committed(batch)

    def _snapshot_due(self) -> bool:
        return self.since_snapshot >= self.snapshot_every

    def run_many(self, cmds: list[Command]) -> list[Any]:
        """Apply and commit commands as one batch; returns results (errors as values)."""
        if self._writer is not None and self._writer.running:
            raise ShardUnavailable("the async writer owns this shard; submit to it instead")
        self._writes_here()
        batch, results = self._stage(cmds)
        self._seal(batch)
        try:
            self._commit(batch)
        except BaseException as e:
            self._fail(e)
            raise
        self._committed(batch)
        if self._snapshot_due():
            self.snapshot()
        return results

    def run(self, command: Command) -> Any:
        """Apply and commit one command; raises its TurnstileError if it failed."""
        r = self.run_many([command])[0]
        if isinstance(r, TurnstileError):
            raise r
        return r

    def snapshot(self) -> None:
        """Write a snapshot of memory after the last batch and drop the journal before it
        (as of the last batch that wrote anything: those after it changed nothing)."""
        self._usable()
        self.storage.write_snapshot(self.written_seq, self.state.dump())
        self.since_snapshot = 0

    def writer(self, **kw):
        """The asyncio group-commit writer of this shard (see engine.writer)."""
        from .writer import GroupCommit
        self._writer = GroupCommit(self, **kw)
        return self._writer

    # -- queries (memory and committed rows; no writer needed) --------------------------
    def availability(self, venue: str, day_from, day_to=None,
                     channel: str | None = None) -> list[SlotStock]:
        """Stock of every slot of `venue` between two venue-local days (inclusive), by
        day, start and id; with `channel`, what is left for that channel too."""
        st = self.state
        if venue not in st.venues:
            raise NotFound(f"no venue {venue}", field="venue")
        lo = to_day(day_from)
        hi = lo if day_to is None else to_day(day_to)
        if hi < lo:
            raise InvalidArgument("day_to is before day_from", field="day_to")
        allots: dict[int, dict[str, int]] = {}
        for (s, ch), a in st.allot_idx.items():
            allots.setdefault(s, {})[ch] = a
        out = []
        for key, s in st.slot_defs.items():
            if s.venue != venue or not lo <= s.day <= hi:
                continue
            idx = st.slot_idx[key]
            c = st.slots.slot(idx)
            mine = allots.get(idx, {})
            pool = st.slots.pool_free(idx)
            remaining = None
            if channel is not None:
                a = mine.get(channel)
                remaining = st.slots.allot_free(a) if a is not None else pool
            stock = {}
            for ch, a in mine.items():
                ac = st.slots.allotment(a)
                stock[ch] = AllotmentStock(ac["capacity"], ac["sold"], ac["held"], st.slots.allot_free(a))
            out.append(SlotStock(s.id, s.zone, s.day, s.start, s.end, c["capacity"], c["sold"],
                                 c["held"], pool, stock, remaining))
        out.sort(key=lambda r: (r.day, r.start, r.slot))
        return out

    def get_order(self, order_id: str, channel: str) -> Order:
        """A channel's order (order ids are the channel's own)."""
        return self.state.get_order(order_id, channel)

    def order_codes(self, order_id: str, channel: str) -> list[str]:
        """The codes of an order's tickets, rendered again (deterministic)."""
        order = self.get_order(order_id, channel)
        return [self.state.render_if_valid(line["first_ticket"] + k * line["ncomp"],
                                           line["key_id"], line["signed"])
                for line in order.lines for k in range(line["qty"])]

    def order_tickets(self, order_id: str, channel: str) -> tuple[Order, list[OrderTicket]]:
        """An order and its tickets as they are now: id, product, persons, code, masked
        holder, state (voided, blocked, inside, used or issued: the first that holds)
        and visits left (-1: unlimited)."""
        st = self.state
        order = self.get_order(order_id, channel)       # checks the id; NotFound
        row = json.loads(st.order_row(channel, order_id)[1])   # its sealed holders
        t = st.tickets
        out = []
        for i, line in enumerate(order.lines):
            sealed = row.get("holders", [])
            sealed = sealed[i] if i < len(sealed) else []
            p = st.products[(order.venue, line["product"])]
            for k in range(line["qty"]):
                tid = line["first_ticket"] + k * line["ncomp"]
                bits = t.code_state(tid)
                state = next((name for name, bit in _STATES if bits & bit), "issued")
                used = max(t.record(tid + c)["entries"] for c in range(line["ncomp"]))
                out.append(OrderTicket(
                    tid, line["product"], t.record(tid)["group"],     # fewer after a partial refund
                    st.render_if_valid(tid, line["key_id"], line["signed"]),
                    mask_id(st.unseal(sealed[k]).upper()) if sealed else "", state,
                    -1 if p.rule.max_entries == 0 else max(p.rule.max_entries - used, 0)))
        return order, out

    def hold(self, hold_id: int) -> dict | None:
        """A copy of an active hold as the state keeps it (and snapshots it): id, channel,
        venue, expires_at, created, amount, lines of resolved indices. For tests and
        checks; hold_info is what a channel reads."""
        h = self.state.holds.get(hold_id)
        return None if h is None else h.to_dict()

    def hold_info(self, hold_id: int) -> HoldInfo:
        """A hold as its channel may read it back (status active, confirmed, released
        or expired; items, amount, expiry; the order that paid it)."""
        if type(hold_id) is not int or not 1 <= hold_id < 2**62:
            raise InvalidArgument("must be a hold id", field="hold_id")
        return self.state.hold_info(hold_id, int(self.clock()))

    def quote(self, venue: str, channel: str, items: list, *, coupon: str | None = None,
              coupon_holder: str | None = None, member_level: int = 0,
              member: str | None = None, points: int = 0) -> Quote:
        """Prices of `items` for `channel` now, by the rules a hold applies, explained per
        line (date type, base price, rules), the coupon `coupon` names taken off last, with
        a quote id a hold can be held to for QUOTE_TTL_S (cmd.hold(quote_id=...)); takes
        no stock and no coupon. `member`: the venue's member buying (member prices by
        their level), who may redeem `points` (taken off last; the quote takes none)."""
        return self.state.quote(channel, venue, items, int(self.clock()),
                                {"coupon": coupon, "coupon_holder": coupon_holder}, member_level,
                                member, points)

    def coupon(self, venue: str, coupon: str) -> CouponStatus:
        """A coupon as set and its use now (codes issued, uses, discount given)."""
        return promos.status(self.state, venue, coupon)

    def coupon_codes(self, venue: str, coupon: str, first: int, count: int) -> list[str]:
        """The text of a single-use coupon's issued codes first..first+count-1 (at most
        100,000): what cmd.coupon_codes issued, rendered again whenever asked."""
        return promos.codes(self.state, venue, coupon, first, count)

    def calendar(self, venue: str, day_from, day_to=None) -> list[CalendarDay]:
        """Each venue-local day from `day_from` to `day_to` (inclusive, at most 3660) with
        its date type, and whether the operator's calendar says it (else weekend on
        Saturday and Sunday, weekday otherwise)."""
        if venue not in self.state.venues:
            raise NotFound(f"no venue {venue}", field="venue")
        lo = to_day(day_from)
        hi = lo if day_to is None else to_day(day_to)
        if not 0 <= hi - lo < catalog.MAX_CALENDAR_DAYS:
            raise InvalidArgument(f"day_to must be 0 to {catalog.MAX_CALENDAR_DAYS - 1} days "
                                  "after day_from", field="day_to")
        return [CalendarDay(d, *catalog.date_type(self.state, venue, d)) for d in range(lo, hi + 1)]

    def pass_dates(self, venue: str, product: str) -> PassDates:
        """A pass's fixed dates (both 0: none; its tickets are valid from their slot's day)."""
        if (venue, product) not in self.state.products:
            raise NotFound(f"no product {product} in venue {venue}", field="product")
        d = self.state.pass_dates.get((venue, product))
        return PassDates(venue, product, *d) if d else PassDates(venue, product)

    def change_terms(self, order_id: str, change_id: str, slots: list[str], tickets: list[int] = (),
                     *, channel: str):
        """What cmd.change with these arguments would do and cost now (state.changes.
        ChangeTerms: the tickets given up, the new unit price, the fee, what the buyer
        owes or gets back), changing nothing; refused as the change would be, except
        for stock, which is taken only by the change."""
        return self.state.change_terms({"order_id": order_id, "change_id": change_id, "slots": list(slots),
                                        "tickets": list(tickets), "channel": channel}, int(self.clock()))

    def package(self, venue: str, product: str) -> PackageSplit:
        """A package product's parts and how its price is split (no parts: not a package)."""
        if (venue, product) not in self.state.products:
            raise NotFound(f"no product {product} in venue {venue}", field="product")
        return self.state.packages.get((venue, product)) or PackageSplit(venue, product, [])

    def refund_policy(self, venue: str, product: str) -> RefundPolicy:
        """A product's refund tiers (none: its flat refund_fee_pct at any time)."""
        if (venue, product) not in self.state.products:
            raise NotFound(f"no product {product} in venue {venue}", field="product")
        return self.state.refund_policy.get((venue, product)) or RefundPolicy(venue, product, [])

    def booking(self, venue: str, product: str) -> BookingWindow:
        """A product's booking window (the default: any time until its slot ends)."""
        if (venue, product) not in self.state.products:
            raise NotFound(f"no product {product} in venue {venue}", field="product")
        return self.state.booking.get((venue, product)) or BookingWindow(venue, product)

    def id_limits(self, venue: str, product: str) -> IdLimits:
        """How many tickets of a real-name product one ID number may hold a day and a
        slot (cmd.id_limits; 0: no limit, also when none were set)."""
        if (venue, product) not in self.state.products:
            raise NotFound(f"no product {product} in venue {venue}", field="product")
        return self.state.id_limits.get((venue, product)) or IdLimits(venue, product)

    def price_rules(self, venue: str, product: str) -> PriceRules:
        """A product's pricing rules (applied after its price table, in RULE_KINDS order)."""
        if (venue, product) not in self.state.products:
            raise NotFound(f"no product {product} in venue {venue}", field="product")
        return PriceRules(venue, product, list(self.state.price_rules.get((venue, product), [])))

    def price_table(self, venue: str, product: str) -> PriceTable:
        """A product's prices by date type and channel (empty: its base and channel
        prices apply every day)."""
        if (venue, product) not in self.state.products:
            raise NotFound(f"no product {product} in venue {venue}", field="product")
        return catalog.price_table(self.state, venue, product)

    def _product_of_code(self, ticket_id: int):
        """The Product of the code whose ticket id is `ticket_id`, or None."""
        t = self.state.tickets
        if type(ticket_id) is not int or not 0 <= ticket_id < 2**32 - 1 or not t.is_code(ticket_id):
            return None
        return self.state.product_list[t.record(ticket_id)["product"]]

    def ticket_venue(self, ticket_id: int) -> str:
        """The venue whose ticket (code) `ticket_id` is; NotFound if none."""
        p = self._product_of_code(ticket_id)
        if p is None:
            raise NotFound(f"no ticket {ticket_id}", field="ticket_id")
        return p.venue

    @property
    def shard_id(self) -> int:
        return self._shard_id

    def venues(self) -> list[str]:
        """The ids of the venues this shard holds."""
        return list(self.state.venues)

    def has_venue(self, venue: str) -> bool:
        return venue in self.state.venues

    def today(self, venue: str) -> int:
        """The venue-local day (days since 1970-01-01) at the shard's clock."""
        return (int(self.clock()) + self.state.venues[venue].utc_offset_s) // 86400

    def product_of(self, ticket_id: int) -> str:
        """The product id of a code's ticket, or "" if `ticket_id` is not one."""
        p = self._product_of_code(ticket_id)
        return "" if p is None else p.id

    def summary(self) -> ShardCounts:
        """What the shard holds, counted: catalog, active holds, ticket sets, persons
        inside per (venue, zone), ticket keys, LMDB map use."""
        st, t = self.state, self.state.tickets
        return ShardCounts(
            len(st.venues), len(st.zones), len(st.gates), len(st.products), len(st.slot_defs),
            len(st.holds), len(t.issued), len(t.used), len(t.inside), len(t.voided), len(t.blocked),
            {key: self.inside(key[1], key[0]) for key in st.zones}, sorted(st.codec.keys),
            st.codec.issuing_key, self.storage.map_use())

    def venue_offset(self, venue: str) -> int:
        """Seconds the venue's local time is ahead of UTC."""
        return self.state.venues[venue].utc_offset_s

    def venues_with(self, kind: str, id_: str) -> list[str]:
        """The venues that have a zone, gate, product or slot (`kind`) of this id."""
        return list(self.state.names[kind].get(id_, ()))

    def catalog(self, venue: str) -> Catalog:
        """A venue's catalog: the venue, its zones, gates, products and merchants."""
        st = self.state
        if venue not in st.venues:
            raise NotFound(f"no venue {venue}", field="venue_id")
        return Catalog(st.venues[venue], [z for z in st.zones.values() if z.venue == venue],
                       [g for g in st.gates.values() if g.venue == venue],
                       [p for p in st.products.values() if p.venue == venue],
                       merchants.listed(st, venue))

    def gate_merchant(self, venue: str, gate: str) -> str:
        """The merchant whose terminal a gate is (it runs the gate's zone), or ""."""
        return merchants.of_gate(self.state, venue, gate)

    def ticket(self, ticket_id: int) -> TicketRecord:
        """A code's state: its components' records and state flags."""
        t = self.state.tickets
        if not t.is_code(ticket_id):
            raise NotFound(f"no ticket {ticket_id}", field="ticket_id")
        comps = [t.record(ticket_id + c) for c in range(t.ncomp(ticket_id))]
        p = self.state.product_list[comps[0]["product"]]
        return TicketRecord(ticket_id, p.id, comps, list(p.zones), t.code_state(ticket_id))

    def inside(self, zone: str, venue: str | None = None) -> int:
        """Persons inside a zone now (live head count). The count starts afresh on each
        venue-local day: whoever was not scanned out by then has left the count."""
        st = self.state
        key = st.find("zone", st.zone_idx, venue, zone, "zone")
        return st.tickets.zone_inside(st.zone_idx[key], self.today(key[0]))

    def _zone_table(self) -> np.ndarray:
        """zone index of (product, component)"""
        st = self.state
        table = np.zeros((max(len(st.product_list), 1), _core.MAX_COMPONENTS), dtype=np.int64)
        for pi, p in enumerate(st.product_list):
            for c, z in enumerate(p.zones):
                table[pi, c] = st.zone_idx[(p.venue, z)]
        return table

    def live_counts(self, venue: str, day=None) -> list[ZoneCount]:
        """Per zone of `venue`: persons inside (today) and tickets entered on `day`."""
        st = self.state
        v = st.venues.get(venue)
        if v is None:
            raise NotFound(f"no venue {venue}", field="venue_id")
        today = self.today(venue)
        day = today if day is None else to_day(day)
        entered = st.tickets.entered.get(day)
        per_zone = [0] * len(st.zones)
        if entered is not None and len(entered):
            # counted in the core, over the bitmap's ids: ~0.45 s of the shard's event loop
            # at 2 M tickets entered when numpy gathered a copy of the records
            table = self._zone_table()
            per_zone = st.tickets.zone_counts(entered.to_array(), table.reshape(-1),
                                              table.shape[1], len(st.zones))
        out = []
        for key, z in st.zones.items():
            if z.venue == venue:
                zi = st.zone_idx[key]
                out.append(ZoneCount(z.id, st.tickets.zone_inside(zi, day) if day == today else 0,
                                     int(per_zone[zi]), z.live_capacity))
        return out

    # -- live operation (engine/live.py, engine/state/controls.py) --------------------
    def live(self, venue: str, *, max_age_s: float = 0.0) -> LiveView:
        """The live view of `venue` now: per zone persons inside, today's passages and the
        entries per minute, per gate its heartbeat state, the open alerts, today's sales
        per channel and the controls as set. With `max_age_s`, a view taken that recently
        may be answered again (engine/live.py)."""
        self._usable()
        return self.board.view(venue, int(self.clock()), self.seq, max_age_s)

    def heartbeat(self, venue: str, gate: str, *, offline: bool = False, bundle_cut_at: int = 0,
                  queued: int = 0, last_scan: int = 0, version: str = "") -> bool:
        """Take a gate's heartbeat (kept in memory, not journaled); True if entry through
        the gate is closed now."""
        self._usable()
        return self.board.heartbeat(venue, gate, int(self.clock()), offline=offline,
                                    bundle_cut_at=bundle_cut_at, queued=queued,
                                    last_scan=last_scan, version=version)

    def live_controls(self, venue: str) -> LiveControls:
        """`venue`'s live controls as set: sales paused, entry closed, capacities, alerts."""
        if venue not in self.state.venues:
            raise NotFound(f"no venue {venue}", field="venue_id")
        return live_controls(self.state, venue)

    def ticket_counts(self, venue: str) -> list[ProductCount]:
        """Per product of `venue`: codes issued, used (through any of its components),
        voided, blocked: one pass over the ticket records in the core (~10 ms at 2 M
        tickets on the bench machine, where a copy of the records and numpy's sort took
        0.5 s of the shard's event loop, and so of every gate)."""
        st = self.state
        if venue not in st.venues:
            raise NotFound(f"no venue {venue}", field="venue_id")
        counts = st.tickets.product_counts(len(st.product_list))
        return [ProductCount(p.id, *counts[pi]) for pi, p in enumerate(st.product_list)
                if p.venue == venue]

    def holder_tickets(self, id_number: str) -> list[HolderTicket]:
        """The codes bound to a real-name holder's ID number."""
        st = self.state
        if not isinstance(id_number, str) or not 6 <= len(id_number) <= 32:
            raise InvalidArgument("must be an ID number", field="id_number")
        out = []
        for base in st.holders.get(st.holder_key(id_number), []):
            rec = st.tickets.record(base)
            p = st.product_list[rec["product"]]
            state = st.tickets.code_state(base)
            out.append(HolderTicket(base, p.id, p.venue, rec["first_day"], rec["last_day"],
                                    bool(state & _core.STATE_USED), bool(state & _core.STATE_VOIDED),
                                    bool(state & _core.STATE_BLOCKED)))
        return out

    # -- theatre seats (engine/state/seating.py) -----------------------------------------
    def session_seats(self, venue: str, slot: str) -> tuple[SeatMap, list[tuple[str, str, str]]]:
        """A session's seat map and its seats now: (name, price zone, state: free, held,
        sold or never) of each, in map order (NOT_FOUND for a slot without seats)."""
        st = self.state
        catalog.venue_of(st, {"venue": venue})
        return seating.session_seats(st, venue, slot)

    def seat_of(self, ticket_id: int) -> str:
        """The seat a ticket has ("" if none)."""
        return seating.seat_of(self.state, ticket_id)

    # -- members (engine/state/members.py) ----------------------------------------------
    def member_program(self, venue: str) -> MemberProgram:
        """A venue's member programme (FAILED_PRECONDITION if it has none)."""
        st = self.state
        catalog.venue_of(st, {"venue": venue})
        return members.program_of(st, venue)

    def member(self, venue: str, member_id: str = "", id_number: str = "",
               phone: str = "") -> MemberInfo:
        """A member of a venue, found by exactly one of member id, ID number and phone
        number: masked numbers, level and spend as of now, balance and what expires when."""
        st = self.state
        catalog.venue_of(st, {"venue": venue})
        return members.info(st, members.find(st, venue, member_id, id_number, phone),
                            int(self.clock()))

    def member_ledger(self, venue: str, member_id: str, after: int = 0,
                      limit: int = 100) -> list[PointsEntry]:
        """A member's points ledger, oldest first: the entries after sequence `after`, at
        most `limit` (committed entries: what a caller was answered)."""
        st = self.state
        catalog.venue_of(st, {"venue": venue})
        m = members.find(st, venue, member_id=member_id)
        if type(after) is not int or not 0 <= after < 2**63:
            raise InvalidArgument("must be a sequence number, 0 or more", field="after")
        if type(limit) is not int or not 1 <= limit <= 1000:
            raise InvalidArgument("must be 1 to 1000", field="limit")
        return members.ledger(st, venue, m.id, after, limit, self.storage.rows_with_prefix)

    def members_report(self, venue: str) -> dict:
        """Members of a venue by level (as of now), and points by kind: earned, taken back
        by refunds, adjusted, expired; the balance of them all."""
        st = self.state
        catalog.venue_of(st, {"venue": venue})
        return members.report(st, venue, int(self.clock()))

    def public_keys(self) -> dict[int, bytes]:
        return self.state.codec.public_keys()

    # -- offline gates ----------------------------------------------------------------
    MAX_CUTS = 4096
    MAX_CUT_IDS = 4_000_000

    def _cut(self) -> None:
        """Close the set of ids changed since the previous cut, as of batch self.seq."""
        t = self.state.tickets
        if len(t.changed):
            if self._cuts and self._cuts[-1][0] == self.seq:
                self._cuts[-1][1].update(t.changed)
            else:
                self._cuts.append((self.seq, t.changed))
            t.changed = BitMap()
        while len(self._cuts) > self.MAX_CUTS or \
                sum(len(b) for _, b in self._cuts) > self.MAX_CUT_IDS:
            self._cut_floor = self._cuts.pop(0)[0]

    def offline_bundle(self, venue: str, since_epoch: int = 0, since_version: int = 0) -> OfflineBundle:
        """What an offline gate of `venue` needs (DESIGN.md 6): public keys, the rules of
        its zones, gates and products, today's slots, and the ticket sets of today --
        voided, blocked, used, entered today, inside, exhausted (no visit left).

        Given the epoch and version of the bundle a gate holds, and if that bundle is of
        this process and this venue-local day, the sets are a delta: `changed` lists the
        ids whose membership may differ, and each set gives its members among them.
        Otherwise the whole bundle (`changed` is None, `full` True)."""
        st = self.state
        v = st.venues.get(venue)
        if v is None:
            raise NotFound(f"no venue {venue}", field="venue_id")
        now = int(self.clock())
        day = (now + v.utc_offset_s) // 86400
        epoch = self._incarnation << 16 | (day & 0xFFFF)
        self._cut()
        t = st.tickets
        vi = st.venue_idx[venue]
        full = not (since_epoch == epoch and self._cut_floor <= since_version <= self.seq)
        if full:
            changed = None
            scope = {"voided": t.voided, "blocked": t.blocked, "used": t.used}
        else:
            changed = BitMap()
            for seq, ids in reversed(self._cuts):
                if seq <= since_version:
                    break
                changed |= ids
            changed = t.select(changed, vi)
            scope = {"voided": t.voided & changed, "blocked": t.blocked & changed,
                     "used": t.used & changed}
        sets = {name: t.select(bm, vi) for name, bm in scope.items()}
        entered = t.entered.get(day) or BitMap()
        sets["entered"] = t.select(entered if full else entered & changed, vi)
        sets["inside"] = t.inside & sets["entered"]
        sets["exhausted"] = t.select(sets["used"], vi, True)
        sets["changed"] = changed
        return OfflineBundle(
            venue, st.shard_id, day, epoch, self.seq, full, now, v.utc_offset_s,
            st.codec.public_keys(),
            [BundleZone(z.id, z.enforce_exit, controls.entry_closed(st, venue, z.id),
                        (venue, z.id) in st.zone_merchant)
             for z in st.zones.values() if z.venue == venue],
            [BundleGate(g.id, g.zone, int(g.mode), controls.entry_closed(st, venue, "", g.id))
             for g in st.gates.values() if g.venue == venue],
            [BundleProduct(i, p.id, list(p.zones), p.rule.max_entries, p.rule.daily_entries,
                           p.rule.reentry, p.rule.slot_grace_s)
             for i, p in enumerate(st.product_list) if p.venue == venue],
            [BundleSlot(st.slot_idx[key], s.id, s.zone, s.day, s.start, s.end)
             for key, s in st.slot_defs.items() if s.venue == venue and abs(s.day - day) <= 1],
            sets)

    def conflicts(self, venue: str, after: str = "", limit: int = 1000) -> list[Conflict]:
        """Offline scans the server refused though a gate admitted them (a ticket admitted
        at two offline gates, a ticket revoked while the gate was offline), oldest first.
        `after` is the `key` of the last conflict already seen."""
        if venue not in self.state.venues:
            raise NotFound(f"no venue {venue}", field="venue_id")
        prefix = f"conflict/{venue}/".encode()
        start = after.encode() + b"\0" if after else prefix
        out = []
        for key, raw in self.storage.rows_with_prefix(prefix, start):
            out.append(Conflict.from_dict(json.loads(raw), key.decode()))
            if len(out) >= limit:
                break
        return out

    # -- invariants ---------------------------------------------------------------------
    # -- finance (engine/state/finance.py) ----------------------------------------------
    MAX_REPORT_DAYS = 3660
    REVENUE_FIELDS = finance.FIELDS     # the order of a revenue row's counters
    net_revenue = staticmethod(finance.net)     # of a revenue row's counters

    def _days(self, venue: str, day_from, day_to) -> tuple[int, int]:
        if venue not in self.state.venues:
            raise NotFound(f"no venue {venue}", field="venue_id")
        lo = to_day(day_from)
        hi = to_day(day_to)
        if hi < lo:
            raise InvalidArgument("is before date_from", field="date_to")
        if hi - lo >= self.MAX_REPORT_DAYS:
            raise InvalidArgument(f"at most {self.MAX_REPORT_DAYS} days at once", field="date_to")
        return lo, hi

    def revenue(self, venue: str, day_from, day_to, period: str = "day",
                group_by: Iterable[str] = ()) -> tuple[list[tuple[str, dict, list[int]]], list[int]]:
        """Money of `venue` per period ("day", "month", "year") of sale and the cuts of
        `group_by` (any of finance.DIMS): [(period, {cut: value}, counters of
        finance.FIELDS)], and their total. From the ledger's counters."""
        lo, hi = self._days(venue, day_from, day_to)
        if period not in ("day", "month", "year"):
            raise InvalidArgument("must be day, month or year", field="period")
        group_by = list(group_by)
        for i, d in enumerate(group_by):
            if d not in finance.DIMS or group_by.index(d) != i:
                raise InvalidArgument(f"must be some of {', '.join(finance.DIMS)}, each once",
                                      field=f"group_by[{i}]")
        return finance.revenue(self.state, venue, lo, hi, period, group_by)

    def ticket_status(self, venue: str, day_from, day_to) -> list[dict]:
        """Codes of `venue` per visit day and product: sold, used, unused, refunded, expired
        (expired: neither used nor refunded, past their last valid day at the venue today)."""
        lo, hi = self._days(venue, day_from, day_to)
        return finance.ticket_status(self.state, venue, lo, hi, self.today(venue))

    def entries(self, venue: str, day=None) -> dict:
        """Passages of `venue` on a venue-local day: per gate and hour persons admitted on
        a visit, re-admitted and let out; per zone those, the tickets entered and the peak
        inside."""
        st = self.state
        if venue not in st.venues:
            raise NotFound(f"no venue {venue}", field="venue_id")
        day = self.today(venue) if day is None else to_day(day)
        flow = st.tickets.flow_counts(day)
        gate_hours, per_zone = [], {}
        for key, z in st.zones.items():
            if z.venue == venue:
                per_zone[z.id] = {"zone": z.id, "entries": 0, "reentries": 0, "exits": 0,
                                  "entered_tickets": 0, "peak_inside": 0}
        if flow is not None:
            g_n, z_n, counts = flow
            for gi, gate in enumerate(st.gate_list[:g_n]):
                if gate.venue != venue:
                    continue
                for h in range(24):
                    e, r, x = counts[2 + (gi * 24 + h) * 3:5 + (gi * 24 + h) * 3]
                    if e or r or x:
                        gate_hours.append({"zone": gate.zone, "gate": gate.id, "hour": h,
                                           "entries": e, "reentries": r, "exits": x})
                        z = per_zone[gate.zone]
                        z["entries"] += e
                        z["reentries"] += r
                        z["exits"] += x
            for key, z in st.zones.items():
                zi = st.zone_idx[key]
                if z.venue == venue and zi < z_n:
                    per_zone[z.id]["peak_inside"] = counts[2 + g_n * 72 + zi]
        for c in self.live_counts(venue, day):
            per_zone[c.zone]["entered_tickets"] = c.entered
        gate_hours.sort(key=lambda g: (g["zone"], g["gate"], g["hour"]))
        return {"day": day, "gate_hours": gate_hours, "zones": list(per_zone.values())}

    def _index(self, kind: bytes, venue: str, day_from, day_to, after: str,
               limit: int) -> tuple[list[tuple[bytes, bytes]], str]:
        """Entries of an export index in the day range, from the cursor `after`: at most
        `limit` scanned (filtering is the caller's), and the cursor after the last."""
        lo, hi = self._days(venue, day_from, day_to)
        prefix = kind + venue.encode() + b"\0"
        start = finance.cursor_start(kind, venue, lo, after)
        out = []
        for k, v in self.storage.rows_with_prefix(prefix, start):
            if finance.key_day(k) > hi:
                return out, ""
            out.append((k, v))
            if len(out) >= limit:
                return out, finance.cursor(k)
        return out, ""

    def list_orders(self, venue: str, day_from, day_to, *, channel: str = "", station: str = "",
                    status: str = "", after: str = "", limit: int = 100) -> tuple[list[Order], str]:
        """Orders of `venue` confirmed on the days (venue-local), oldest first, those of
        `channel`, `station` and `status` (paid, partly_refunded, refunded, changed) if
        given; at most `limit`, and the cursor of the next page ("" at the end; a page
        may hold fewer than `limit` when filters leave some out)."""
        if status and status not in finance.STATUSES:
            raise InvalidArgument(f"must be one of {', '.join(finance.STATUSES)}", field="status")
        rows, nxt = self._index(b"ox/", venue, day_from, day_to, after, limit)
        out = []
        for _, key in rows:
            raw = self.storage.get_row(bytes(key))
            if raw is None:
                continue
            o = Order.from_row(json.loads(raw))
            if (channel and o.channel != channel) or (station and o.station != station) \
                    or (status and o.status != status):
                continue
            out.append(o)
        return out, nxt

    def _events(self, kind: bytes, what: str, venue: str, day_from, day_to, channel: str,
                station: str, after: str, limit: int) -> tuple[list[dict], str]:
        rows, nxt = self._index(kind, venue, day_from, day_to, after, limit)
        out = []
        for _, v in rows:
            key, event_id = json.loads(v)
            raw = self.storage.get_row(key.encode())
            if raw is None:
                continue
            row = json.loads(raw)
            ev = next((e for e in row.get(what, ()) if e[what[:-1] + "_id"] == event_id), None)
            at_station = (ev or {}).get("station") or row.get("station", "")
            if ev is None or (channel and row["channel"] != channel) or (station and at_station != station):
                continue
            out.append({"order_id": row["order_id"], "channel": row["channel"], "station": at_station,
                        "shift": ev.get("shift", row.get("shift", "")),
                        "method": row["payment"]["method"], "reference": row["payment"]["reference"],
                        what[:-1]: ev})
        return out, nxt

    def list_refunds(self, venue: str, day_from, day_to, *, channel: str = "", station: str = "",
                     after: str = "", limit: int = 100) -> tuple[list[dict], str]:
        """Refunds made on the days, oldest first: {order_id, channel, station, shift,
        method, reference, refund}; paged as list_orders."""
        return self._events(b"rx/", "refunds", venue, day_from, day_to, channel, station, after, limit)

    def list_changes(self, venue: str, day_from, day_to, *, channel: str = "", station: str = "",
                     after: str = "", limit: int = 100) -> tuple[list[dict], str]:
        """Changes made on the days, oldest first: {order_id, channel, station, shift,
        method, reference, change}; paged as list_orders."""
        return self._events(b"cx/", "changes", venue, day_from, day_to, channel, station, after, limit)

    def shift(self, venue: str, shift: str) -> dict:
        """A cash-desk shift with its totals (finance.shift_view)."""
        if venue not in self.state.venues:
            raise NotFound(f"no venue {venue}", field="venue_id")
        return finance.shift_view(self.state, venue, shift)

    def shifts(self, venue: str, day_from, day_to, station: str = "") -> list[dict]:
        """Shifts of `venue` opened on the days (at `station` if given), by opening time."""
        lo, hi = self._days(venue, day_from, day_to)
        st = self.state
        out = [finance.shift_view(st, v, s) for (v, s), sh in st.shifts.items()
               if v == venue and (not station or sh["station"] == station)
               and lo <= finance.local_day(st, venue, sh["opened"]) <= hi]
        return sorted(out, key=lambda x: (x["opened"], x["shift"]))

    def reconcile(self, venue: str, method: str, day) -> dict:
        """The stored statement of `method` for the day matched against the day's payments
        and refunds by that method (finance.reconcile)."""
        lo, _ = self._days(venue, day, day)
        raw = self.storage.get_row(finance.statement_key(venue, method, lo))
        if raw is None:
            raise NotFound(f"no {method} statement of {day_to_date(lo)} was imported", field="date",
                           hint="ReportService.ImportStatement first")
        payments, refunds = [], []
        orders, _ = self.list_orders(venue, lo, lo, limit=10**9)
        for o in orders:
            if o.payment["method"] == method:
                payments.append({"reference": o.payment["reference"], "order_id": o.order_id,
                                 "amount": o.amount_fen})
        rs, _ = self.list_refunds(venue, lo, lo, limit=10**9)
        for r in rs:
            if r["method"] == method:
                refunds.append({"order_id": r["order_id"], "refund_id": r["refund"]["refund_id"],
                                "amount": r["refund"]["amount_fen"], "reference": r["reference"]})
        cs, _ = self.list_changes(venue, lo, lo, limit=10**9)
        for c in cs:
            ch = c["change"]
            if ch["due_fen"] > 0 and ch["payment"]["method"] == method:
                payments.append({"reference": ch["payment"]["reference"], "order_id": c["order_id"],
                                 "amount": ch["due_fen"]})
            elif ch["due_fen"] < 0 and c["method"] == method:
                refunds.append({"order_id": c["order_id"], "refund_id": ch["change_id"],
                                "amount": -ch["due_fen"], "reference": c["reference"]})
        return finance.reconcile(json.loads(raw), payments, refunds)

    def settlement(self, venue: str, day_from, day_to, partner: str = "") -> tuple[list[dict], int, int]:
        """Per partner what the revenue split gives it over the days of sale, the days' net
        revenue, and the venue's own share (net less every partner's): to the fen."""
        lo, hi = self._days(venue, day_from, day_to)
        return finance.settlement(self.state, venue, lo, hi, partner)

    def revenue_split(self, venue: str, product: str) -> list[dict]:
        """A product's revenue shares, in order (none: all the venue's)."""
        if (venue, product) not in self.state.products:
            raise NotFound(f"no product {product} in venue {venue}", field="product")
        return [dict(s) for s in self.state.split_rules.get((venue, product), ())]

    def check(self, *, replay: bool = False) -> list[Violation]:
        """Verify the invariants of DESIGN.md 4.2; every violation found is reported.

        With replay=True, also rebuild the state from disk (snapshot + journal) and
        compare it with memory (call it with no writer running).
        """
        st = self.state
        out: list[Violation] = []
        t = st.tickets
        recs = np.frombuffer(t.records(), dtype=RECORD_DTYPE)
        state = recs["state"]

        def bm_of(mask: int) -> BitMap:
            return BitMap(np.flatnonzero(state & mask).astype(np.uint32))

        for name, mask in (("used", _core.STATE_USED), ("inside", _core.STATE_INSIDE),
                           ("voided", _core.STATE_VOIDED), ("blocked", _core.STATE_BLOCKED)):
            bm = getattr(t, name)
            if bm != bm_of(mask):
                out.append(Violation(f"{name} bitmap = records",
                                     f"{len(bm ^ bm_of(mask))} tickets differ"))
        if t.issued != BitMap(range(len(recs))):
            out.append(Violation("issued = all ids", "issued bitmap has gaps"))
        for name in ("used", "voided", "blocked"):
            if not getattr(t, name) <= t.issued:
                out.append(Violation(f"{name} ⊆ issued", f"{len(getattr(t, name) - t.issued)} extra"))
        if not t.inside <= t.used:
            out.append(Violation("inside ⊆ used", f"{len(t.inside - t.used)} tickets"))
        if not t.voided.isdisjoint(t.used):
            out.append(Violation("voided ∩ used = ∅", f"{len(t.voided & t.used)} tickets"))
        over = np.flatnonzero((recs["persons_in"] > recs["group"]) | (recs["visit_admitted"] > recs["group"]))
        if len(over):
            out.append(Violation("persons ≤ group", f"tickets {over[:10].tolist()}"))
        # zone head counts = persons inside by ticket
        if len(recs):
            zones = self._zone_table()[recs["product"], recs["comp"]]
            inside_by_zone = np.bincount(zones, weights=recs["persons_in"], minlength=len(st.zones))
        else:
            inside_by_zone = np.zeros(len(st.zones))
        counters = t.zone_counters()
        for (v, z), zi in ((key, st.zone_idx[key]) for key in st.zones):
            if counters[zi][0] != int(inside_by_zone[zi]):
                out.append(Violation("zone inside = Σ persons inside",
                                     f"zone {z} of {v}: counter {counters[zi][0]}, tickets {int(inside_by_zone[zi])}"))
        # stock
        n_slots = st.slots.n
        live = (state & _core.STATE_VOIDED) == 0
        has_slot = recs["slot"] != _core.NO_SLOT
        sold_by_tickets = np.bincount(recs["slot"][live & has_slot],
                                      weights=recs["group"][live & has_slot], minlength=n_slots)
        held = np.zeros(n_slots, dtype=np.int64)
        held_a = np.zeros(st.slots.n_allot, dtype=np.int64)
        for h in st.holds.values():
            for ln in h.lines:
                for s, a in zip(ln.slots, ln.allots):
                    held[s] += ln.qty * ln.group
                    if a >= 0:
                        held_a[a] += ln.qty * ln.group
        reserved = np.zeros(n_slots, dtype=np.int64)
        allot_used = np.zeros(n_slots, dtype=np.int64)
        for a in range(st.slots.n_allot):
            c = st.slots.allotment(a)
            name = f"allotment {a} of slot {st.slot_list[c['slot']]}"
            reserved[c["slot"]] += c["capacity"]
            allot_used[c["slot"]] += c["sold"] + c["held"]
            if c["sold"] < 0 or c["held"] < 0 or c["sold"] + c["held"] > c["capacity"]:
                out.append(Violation("allotment sold + held ≤ capacity", f"{name}: {c}"))
            if c["held"] != held_a[a]:
                out.append(Violation("allotment held = Σ holds", f"{name}: {c['held']} vs {held_a[a]}"))
        for i in range(n_slots):
            c = st.slots.slot(i)
            name = f"slot {st.slot_list[i]}"
            if c["sold"] < 0 or c["held"] < 0 or c["sold"] + c["held"] > c["capacity"]:
                out.append(Violation("sold + held ≤ capacity", f"{name}: {c}"))
            if c["sold"] + c["held"] - c["allot_used"] > c["capacity"] - c["reserved"]:
                out.append(Violation("pool used ≤ pool", f"{name}: {c}"))
            if c["reserved"] != reserved[i] or c["allot_used"] != allot_used[i]:
                out.append(Violation("slot allotment totals", f"{name}: {c}"))
            if c["sold"] != int(sold_by_tickets[i]):
                out.append(Violation("sold = tickets issued - refunded",
                                     f"{name}: counter {c['sold']}, tickets {int(sold_by_tickets[i])}"))
            if c["held"] != held[i]:
                out.append(Violation("held = Σ active holds", f"{name}: counter {c['held']}, holds {held[i]}"))
        out += seating.check(st)
        out += merchants.check(st)
        # points: never negative (a balance is the sum of its expiry buckets)
        for m in st.members.values():
            if m.debt < 0 or any(n <= 0 for n in m.buckets.values()):
                out.append(Violation("points ≥ 0", f"member {m.id} of {m.venue}: buckets {m.buckets}, "
                                                   f"debt {m.debt}"))
        if replay:
            out += self._check_replay()
        return out

    def _check_replay(self) -> list[Violation]:
        fresh = _recover(self.storage, self.state.shard_id, self.state.keyring)[0]
        mine, theirs = self.state.dump(), fresh.dump()
        return [Violation("journal replay reproduces state", f"{k} differs")
                for k in sorted(set(mine) | set(theirs))
                if k != "catalog" and mine.get(k) != theirs.get(k)]

