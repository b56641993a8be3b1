"""The log of record of a replicated shard (DESIGN.md 7, issue 18), in PostgreSQL.

Each committed batch -- its journal blob and its rows, exactly what the shard's own LMDB
transaction writes -- is one row of `turnstile_log`, written (by `append`, on the commit
thread) before the LMDB commit, and the batch's callers are answered only after both. The
database runs with a synchronous standby (synchronous_commit = on), so an appended batch
is on two machines before it is acknowledged. A standby shard reads the log by sequence
(`read`, woken by NOTIFY on `turnstile_log`) and replays each batch into its own LMDB as
recorded: it never decides again (engine/shard.py, Shard.follow).

Fencing: whoever owns a shard holds an epoch (server/ownership.py takes it from etcd; it
rises with every new owner). `claim(epoch)` raises the shard's row of `turnstile_epochs`
to it; `append` takes that row FOR SHARE in the transaction of its insert and is refused
(`Fenced`) unless the row names its own epoch. A deposed primary therefore writes
nothing once its successor has claimed, even if it still believes it owns the shard; and
a claim waits for an append in flight (the row lock orders them).

Durability under a failing database: an append whose connection breaks is retried on a
new connection until it succeeds or the log is closed -- the shard acknowledges nothing
meanwhile, and loses nothing. A retry finds a batch whose commit did happen (the answer
was lost) already there, identical, and takes it as written. A commit that waits for the
synchronous standby is never cancelled here: a cancelled wait leaves the row committed
on the primary alone, which must not be read as "not written".

Lineage: a shard's log belongs to one shard, made once (its secrets: Shard.lineage), and
copied to every node by backup and restore. The first claim records the claimer's
lineage; a node whose shard was made apart (another data dir seeded the same shard
number itself) is refused (`NotThisShard`) before it follows or claims, instead of
applying another shard's batches over its own secrets.

Pruning: `prune(upto)` deletes the batches up to `upto` -- what every standby and the
latest verified backup hold (server/ownership.py, prune_floor) -- and records `upto` as
the shard's `pruned_to`, under the pruner's epoch (a deposed primary prunes nothing). A
node behind `pruned_to` can't be brought up to date from the log: it is refused
(`LogPruned`) and must start again from a newer backup. The first claim sets `pruned_to`
to the batch its claimer held: the log starts after it, and a copy older than that is
refused the same way.

Position: every batch goes to the log before LMDB, and a shard's snapshot is taken as of
the last batch that wrote anything (a refused command's batch takes a number and writes
nothing), so an honest node never holds a batch past the log's end. One that does wrote
batches apart from the log (served standalone, or changed by an offline tool) and would
take the primary's batches of those numbers for its own: it is refused (`NotThisShard`)
before it follows or claims.
"""
from __future__ import annotations

import logging
import struct
import threading
import time
from typing import Iterator

from .errors import CorruptData, NotPrimary

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS turnstile_epochs (
    shard integer PRIMARY KEY,
    epoch bigint NOT NULL,
    owner text NOT NULL DEFAULT '',
    claimed_at timestamptz NOT NULL DEFAULT now(),
    lineage text NOT NULL DEFAULT '',
    pruned_to bigint NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS turnstile_log (
    shard integer NOT NULL,
    seq bigint NOT NULL,
    epoch bigint NOT NULL,
    body bytea NOT NULL,
    PRIMARY KEY (shard, seq));
"""
CHANNEL = "turnstile_log"
_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")


def _close(conn) -> None:
    """Close a connection that may be broken already, whatever it says."""
    if conn is not None:
        try:
            conn.close()
        except Exception:
            pass


def _direct(fn):
    return fn()


def apply_log(shard, log: "RecordLog", batch: int = 1000, run=_direct) -> int:
    """Apply to `shard` every batch of `log` after the shard's sequence (Shard.follow, as
    recorded); returns how many it had not had. LogPruned if the log no longer holds the
    batches after the shard's sequence. The log is read on this thread; each slice read
    is applied by `run(fn)`, which calls fn where the shard may be touched (a standby
    serving reads applies on its event loop, between two calls) and returns its result."""
    return sum(run(lambda got=got: _apply(shard, log, got)) for got in log.slices(shard.seq, batch))


def _apply(shard, log: "RecordLog", entries) -> int:
    if entries[0][0] > shard.seq + 1:
        # a gap is a batch that wrote nothing -- or batches pruned away
        log.check_position(shard.seq)
    return sum(bool(shard.follow(seq, journal, rows)) for seq, _epoch, journal, rows in entries)


class Fenced(NotPrimary):
    """A newer owner of the shard has claimed the log: this one may write no more."""


class NotThisShard(CorruptData):
    """The log of record belongs to a shard made apart from this node's (another lineage):
    this node's data dir must be restored from a backup of the primary's."""

    code = "NOT_THIS_SHARD"


class LogPruned(CorruptData):
    """The log of record no longer holds the batches this node lacks: it must start again
    from a newer backup."""

    code = "LOG_PRUNED"


def pack(journal: bytes | None, rows: dict[bytes, bytes | None]) -> bytes:
    """A batch as one log body: the journal blob, then each row (a deleted one as -1)."""
    j = journal or b""
    out = [_U32.pack(len(j)), j, _U32.pack(len(rows))]
    for k, v in rows.items():
        out += [_U32.pack(len(k)), k]
        if v is None:
            out.append(_I32.pack(-1))
        else:
            out += [_I32.pack(len(v)), v]
    return b"".join(out)


def unpack(body: bytes) -> tuple[bytes, dict[bytes, bytes | None]]:
    """(journal blob, rows) of a log body (pack's inverse); CorruptData if it is not one."""
    try:
        view = memoryview(body)
        n = _U32.unpack_from(view, 0)[0]
        off = 4 + n
        journal = bytes(view[4:off])
        if len(journal) != n:
            raise ValueError("short journal")
        count = _U32.unpack_from(view, off)[0]
        off += 4
        rows: dict[bytes, bytes | None] = {}
        for _ in range(count):
            kl = _U32.unpack_from(view, off)[0]
            k = bytes(view[off + 4:off + 4 + kl])
            off += 4 + kl
            vl = _I32.unpack_from(view, off)[0]
            off += 4
            if vl < 0:
                rows[k] = None
            else:
                rows[k] = bytes(view[off:off + vl])
                off += vl
        if off != len(body):
            raise ValueError("trailing bytes")
        return journal, rows
    except (struct.error, ValueError) as e:
        raise CorruptData(f"a log of record entry does not decode: {e}") from None


class RecordLog:
    """Shard `shard`'s log of record in the PostgreSQL database `dsn` (a libpq connection
    string). One connection, used by one thread at a time (the commit thread)."""

    def __init__(self, dsn: str, shard: int, *, retry_s: float = 0.2, owner: str = "",
                 lineage: str = "", slow_s: float = 5.0):
        self.dsn = dsn
        self.shard = shard
        self.slow_s = slow_s            # an append running this long is logged (not cancelled)
        self._writing: tuple[int, float] | None = None     # (seq, monotonic start) of an append
        self._warned = 0                # the seq the watchdog logged as slow
        self._watchdog: threading.Thread | None = None
        self.owner = owner
        self.lineage = lineage          # Shard.lineage of the node's shard ('' : not checked)
        self.retry_s = retry_s
        self.epoch = 0                  # the epoch claimed (0: none yet)
        self.closed = threading.Event()
        self._conn = None

    # -- connection ------------------------------------------------------------------------
    def _connect(self):
        import psycopg
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.dsn, autocommit=False)
        return self._conn

    def close(self) -> None:
        """Stop retrying and close the connection."""
        self.closed.set()
        _close(self._conn)

    def _retrying(self, what: str, fn):
        """fn(connection) until it gets through: a broken connection (the database
        stopped, restarted, unreachable) is dropped and tried again every retry_s;
        TurnstileErrors (Fenced) and SQL errors of the statement itself are raised."""
        import psycopg
        first = None
        while True:
            try:
                result = fn(self._connect())
            except psycopg.OperationalError as e:
                if self.closed.is_set():
                    raise Fenced(f"the log of record of shard {self.shard} is closed") from e
                if first is None:
                    first = time.monotonic()
                    log.error("shard %d: the log of record is not writable (%s): %s waits, "
                              "nothing is acknowledged meanwhile", self.shard, e, what)
                _close(self._conn)
                self._conn = None
                time.sleep(self.retry_s)
            else:
                if first is not None:
                    log.warning("shard %d: the log of record is writable again after %.1f s",
                                self.shard, time.monotonic() - first)
                return result

    def ensure_schema(self) -> None:
        def run(c):
            with c.transaction():
                # one creator at a time: concurrent CREATE TABLE IF NOT EXISTS can collide
                c.execute("SELECT pg_advisory_xact_lock(7237011)")
                c.execute(SCHEMA)
        self._retrying("creating its tables", run)

    # -- ownership ---------------------------------------------------------------------------
    def current_epoch(self) -> int:
        def run(c):
            with c.transaction():
                row = c.execute("SELECT epoch FROM turnstile_epochs WHERE shard = %s",
                                (self.shard,)).fetchone()
            return row[0] if row else 0
        return self._retrying("reading the epoch", run)

    def _shard_row(self, c, lock: str = "") -> tuple[int, str, int] | None:
        """(epoch, lineage, pruned_to) of the shard's row, None before its first claim."""
        return c.execute(f"SELECT epoch, lineage, pruned_to FROM turnstile_epochs WHERE shard = %s {lock}",
                         (self.shard,)).fetchone()

    def _mismatch(self, lineage: str) -> NotThisShard | None:
        if self.lineage and lineage and lineage != self.lineage:
            return NotThisShard(
                f"shard {self.shard} here (lineage {self.lineage}) is not the shard of the log of "
                f"record (lineage {lineage}): it was made apart from the primary's",
                hint="stop this node, restore its data dir from a `turnstile backup` of the "
                     "primary's and start it again")
        return None

    def check_position(self, seq: int) -> None:
        """Whether a node whose shard holds the batches up to `seq` can follow the log:
        NotThisShard if the log is another shard's, or if the node holds batches the log
        never had (`seq` past the log's end: written apart from it -- every batch goes to
        the log before LMDB); LogPruned if the log no longer holds the batches after
        `seq` (pruned, or before the batch its first owner started it from)."""
        def run(c):
            with c.transaction():
                row = self._shard_row(c)
                end = c.execute("SELECT coalesce(max(seq), 0) FROM turnstile_log WHERE shard = %s",
                                (self.shard,)).fetchone()[0]
            return row, end
        row, end = self._retrying("reading the shard's row", run)
        if row is None:
            return
        err = self._mismatch(row[1])
        if err is not None:
            raise err
        if seq < row[2]:
            raise LogPruned(f"the log of record of shard {self.shard} holds the batches after "
                            f"{row[2]} only; this node holds batches up to {seq}",
                            hint="start this node again from a newer `turnstile backup` "
                                 "(the latest verified one is never pruned past)")
        if seq > max(end, row[2]):
            raise NotThisShard(
                f"this node of shard {self.shard} holds batches up to {seq}, and its log of record "
                f"ends at {max(end, row[2])}: the node wrote batches the log never had (served "
                f"or changed apart from the cluster), and would miss the primary's of those numbers",
                hint="stop this node, restore its data dir from a `turnstile backup` of the "
                     "primary's and start it again")

    def pruned_to(self) -> int:
        def run(c):
            with c.transaction():
                row = self._shard_row(c)
            return row[2] if row else 0
        return self._retrying("reading how far it is pruned", run)

    def prune(self, upto: int) -> int:
        """Delete the batches up to `upto` (never past the log's end) under this log's
        epoch; returns how many went. Fenced unless this log's epoch holds the shard."""
        def run(c):
            with c.transaction():
                row = self._shard_row(c, "FOR UPDATE")
                if row is None or row[0] != self.epoch or not self.epoch:
                    raise Fenced(f"shard {self.shard}: only its owner prunes its log")
                end = c.execute("SELECT coalesce(max(seq), 0) FROM turnstile_log WHERE shard = %s",
                                (self.shard,)).fetchone()[0]
                to = min(upto, end)
                if to <= row[2]:
                    return 0
                c.execute("UPDATE turnstile_epochs SET pruned_to = %s WHERE shard = %s", (to, self.shard))
                return c.execute("DELETE FROM turnstile_log WHERE shard = %s AND seq <= %s",
                                 (self.shard, to)).rowcount
        return self._retrying(f"pruning up to {upto}", run)

    def claim(self, epoch: int, *, base: int) -> None:
        """Make `epoch` the shard's: from now on only appends of `epoch` are taken. Fenced
        if a newer epoch has claimed it already; claiming one's own epoch again is a no-op.
        NotThisShard if the log is another lineage's; the first claim records this one's,
        and `base`, the batch the claimer holds: the log starts after it (recorded as
        pruned up to it -- a node behind it could never follow the log)."""
        def run(c):
            with c.transaction():
                row = self._shard_row(c, "FOR UPDATE")
                if row is not None and (err := self._mismatch(row[1])) is not None:
                    raise err
                cur = c.execute(
                    "INSERT INTO turnstile_epochs (shard, epoch, owner, lineage, pruned_to) "
                    "VALUES (%s, %s, %s, %s, %s) "
                    "ON CONFLICT (shard) DO UPDATE SET epoch = EXCLUDED.epoch, owner = EXCLUDED.owner, "
                    "claimed_at = now(), lineage = CASE WHEN turnstile_epochs.lineage = '' "
                    "THEN EXCLUDED.lineage ELSE turnstile_epochs.lineage END "
                    "WHERE turnstile_epochs.epoch < EXCLUDED.epoch RETURNING epoch",
                    (self.shard, epoch, self.owner, self.lineage, base))
                if cur.fetchone() is None:
                    now = c.execute("SELECT epoch FROM turnstile_epochs WHERE shard = %s",
                                    (self.shard,)).fetchone()[0]
                    if now != epoch:
                        raise Fenced(f"shard {self.shard} is claimed by epoch {now}, newer than {epoch}")
        self._retrying(f"claiming epoch {epoch}", run)
        self.epoch = epoch

    # -- the log -----------------------------------------------------------------------------
    def append(self, seq: int, journal: bytes | None, rows: dict[bytes, bytes | None]) -> None:
        """Write batch `seq` under this log's epoch, durable on the primary and its
        synchronous standby when this returns. Fenced if another epoch holds the shard,
        or if another writer put a different batch at `seq`."""
        if not self.epoch:
            raise Fenced(f"shard {self.shard}: no epoch claimed: nothing may be written")
        body = pack(journal, rows)
        if self._watchdog is None:
            self._watchdog = threading.Thread(target=self._watch, daemon=True,
                                              name=f"turnstile-log-watchdog-{self.shard}")
            self._watchdog.start()

        def run(c):
            with c.transaction():
                row = c.execute("SELECT epoch FROM turnstile_epochs WHERE shard = %s FOR SHARE",
                                (self.shard,)).fetchone()
                if row is None or row[0] != self.epoch:
                    raise Fenced(f"shard {self.shard} is claimed by epoch {row[0] if row else 0}; "
                                 f"this writer holds epoch {self.epoch}")
                cur = c.execute("INSERT INTO turnstile_log (shard, seq, epoch, body) VALUES "
                                "(%s, %s, %s, %s) ON CONFLICT (shard, seq) DO NOTHING",
                                (self.shard, seq, self.epoch, body))
                if cur.rowcount == 0:
                    # there already: this batch retried after a lost answer, or another writer's
                    old = c.execute("SELECT epoch, body FROM turnstile_log WHERE shard = %s AND seq = %s",
                                    (self.shard, seq)).fetchone()
                    if old is None or old[0] != self.epoch or bytes(old[1]) != body:
                        raise Fenced(f"shard {self.shard}: batch {seq} of the log of record is "
                                     "another writer's")
                c.execute("SELECT pg_notify(%s, %s)", (CHANNEL, f"{self.shard}:{seq}"))
        self._writing = (seq, time.monotonic())
        try:
            self._retrying(f"batch {seq}", run)
        finally:
            began = self._writing[1]
            self._writing = None
            if self._warned == seq:
                log.warning("shard %d: batch %d is in the log of record after %.1f s", self.shard, seq,
                            time.monotonic() - began)

    def _watch(self) -> None:
        """Say so when an append has run slow_s (a database that does not answer, or a
        commit waiting for a synchronous standby that is not there): it is not cancelled
        -- a cancelled wait leaves the row on the primary alone -- but the operator reads
        why the shard acknowledges nothing."""
        while not self.closed.wait(min(1.0, self.slow_s / 2)):
            w = self._writing
            if w is not None and w[0] != self._warned and time.monotonic() - w[1] >= self.slow_s:
                self._warned = w[0]
                log.error("shard %d: batch %d has waited %.0f s for the log of record (its database "
                          "does not answer, or its commit waits for a synchronous standby that is not "
                          "there): nothing is acknowledged until it is written", self.shard, w[0],
                          time.monotonic() - w[1])

    def last_seq(self) -> int:
        """The highest sequence in the log (0: none)."""
        def run(c):
            with c.transaction():
                return c.execute("SELECT coalesce(max(seq), 0) FROM turnstile_log WHERE shard = %s",
                                 (self.shard,)).fetchone()[0]
        return self._retrying("reading its end", run)

    def read(self, after: int, limit: int = 1000) -> list[tuple[int, int, bytes, dict[bytes, bytes | None]]]:
        """Up to `limit` batches after sequence `after`, in order: (seq, epoch, journal, rows)."""
        def run(c):
            with c.transaction():
                return c.execute("SELECT seq, epoch, body FROM turnstile_log WHERE shard = %s AND seq > %s "
                                 "ORDER BY seq LIMIT %s", (self.shard, after, limit)).fetchall()
        return [(seq, epoch, *unpack(bytes(body))) for seq, epoch, body in self._retrying("reading", run)]

    def slices(self, after: int = 0, batch: int = 1000) -> Iterator[list[tuple[int, int, bytes, dict]]]:
        """Every batch after `after`, in order, as the lists `read` returns (`batch` at a
        time; none empty)."""
        while True:
            got = self.read(after, batch)
            if got:
                yield got
            if len(got) < batch:
                return
            after = got[-1][0]

    def entries(self, after: int = 0, batch: int = 1000) -> Iterator[tuple[int, int, bytes, dict]]:
        """Every batch after `after`, in order, read `batch` at a time."""
        for got in self.slices(after, batch):
            yield from got


class Follower:
    """Keeps a standby shard up with the primary's log of record: applies every batch after
    the shard's sequence (Shard.follow), woken by the NOTIFY each append sends, and by a
    poll every `poll_s` in case a notification was missed (a reconnect). Runs in one
    thread, the only one that touches the shard while it follows. `dsn` names the
    database's primary (NOTIFY is not replicated to its standby; a libpq string listing
    both hosts with target_session_attrs=read-write finds it after a database failover).
    `applied`: the batches it applied so far."""

    def __init__(self, shard, dsn: str, shard_no: int, *, poll_s: float = 1.0, batch: int = 1000,
                 run=_direct):
        self.shard = shard
        self.apply_in = run                 # applies a slice where the shard may be touched
        self.as_of = 0.0                    # time.time(): every batch logged before is applied
        self.log = RecordLog(dsn, shard_no, lineage=shard.lineage)
        self.dsn = dsn
        self.poll_s = poll_s
        self.batch = batch
        self.applied = 0
        self.error: Exception | None = None
        self.checked = threading.Event()    # the log is this shard's, and not pruned past it
        self.stop = threading.Event()
        self._listen = None

    def catch_up(self) -> int:
        """Apply what the log has after the shard's sequence; returns how many batches.
        `as_of` is then the time this began: the shard holds every batch logged before."""
        began = time.time()
        n = apply_log(self.shard, self.log, self.batch, self.apply_in)
        self.as_of = began
        self.applied += n
        return n

    def _wait(self) -> None:
        """Until an append is notified, or poll_s passed."""
        import psycopg
        try:
            if self._listen is None or self._listen.closed:
                self._listen = psycopg.connect(self.dsn, autocommit=True)
                self._listen.execute(f"LISTEN {CHANNEL}")
            for _ in self._listen.notifies(timeout=self.poll_s, stop_after=1):
                pass
        except psycopg.Error as e:
            # unreachable, or a hot standby of the database (LISTEN needs its primary:
            # notifications are not replicated): poll instead
            if self._listen is not None:
                log.warning("shard %d: not woken by the log (%s): polling every %.1f s",
                            self.log.shard, e, self.poll_s)
                _close(self._listen)
            self._listen = None
            self.stop.wait(self.poll_s)

    def run(self) -> None:
        """Follow until `stop` is set. NotThisShard or LogPruned (this node can't follow
        the log) end it: `error` holds them; else `checked` is set before the first batch."""
        try:
            self.log.check_position(self.shard.seq)
            self.checked.set()
            self._follow()
        except (NotThisShard, LogPruned) as e:
            log.error("shard %d: can't follow its log of record: %s", self.log.shard, e)
            self.error = e
            self.stop.set()

    def _follow(self) -> None:
        while not self.stop.is_set():
            self.catch_up()
            self._wait()

    def close(self) -> None:
        self.stop.set()
        self.log.close()
        _close(self._listen)


def promote(shard, log: RecordLog, epoch: int, run=_direct) -> int:
    """Make a following standby the primary: claim `epoch` in the log (from then on no
    older owner writes), apply what the log holds after the shard (the end is final once
    claimed), and write every later batch through the log. Returns the batches applied.
    NotThisShard or LogPruned, before claiming, if this shard can't take the log on.
    `run` as apply_log's."""
    log.check_position(shard.seq)
    log.claim(epoch, base=shard.seq)
    n = apply_log(shard, log, run=run)
    run(lambda: shard.promoted(log))
    return n
