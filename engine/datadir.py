"""Operations on a data dir, without a server: back it up, restore it, list its shards,
set their count, move a venue between them, rotate its master key, check its modes.

A data dir DATA holds one LMDB environment per shard in DATA/shard-N (engine/storage.py)
and the node's control store in DATA/control (server/control.py: principals, API keys and
the shard map). These are the functions `turnstile backup | restore | shards | master-key`
run; server/cli_data.py is their shell (arguments, progress bars, output). They print
nothing: each returns a typed record of what it did, and refuses with `Refused`, whose
message is the operator's (it says what was not done). A long one reports how far it is
through its optional `progress` callback, one `Step` at a time.

The master key comes as for Shard.open (`master_key`, else `master_key_file`, else
TURNSTILE_MASTER_KEY_FILE or TURNSTILE_MASTER_KEY; engine/keyring.py), and is checked
against every shard before anything is opened, copied or written. `backup` runs beside a
server; the shard operations and the master key rotation need the data dir offline (a
running server holds every shard's owner.lock: they refuse while any is held).
"""
from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, Iterable, Protocol

import lmdb
import numpy as np

from . import cmd, keyring
from .errors import FailedPrecondition, ShardUnavailable, TurnstileError
from .journal import Command
from .keyring import MasterKeyError
from .shard import RECORD_DTYPE, Shard
from .storage import Storage, _fsync

MANIFEST = "manifest.json"
FORMAT = "turnstile-backup/1"
CONTROL = "control"              # DATA/control: the node's control store
CONTROL_MAP_SIZE = 1 << 30       # DATA/control's map size (server.control.ControlStore)
CHUNK = 4 << 20
_SHARD_DIR = re.compile(r"shard-(\d+)\Z")


class Refused(FailedPrecondition):
    """An operation on a data dir refuses to act; the message says why and what was
    left undone."""


class BackupDamaged(Refused):
    """A backup's files differ from its manifest (`damaged`: one line per file)."""

    def __init__(self, message: str, damaged: list[str]):
        super().__init__(message)
        self.damaged = damaged


# -- progress -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Step:
    """How far an operation is: `done` of `total` `unit`s ("B", "shard", "env", "step")
    of its current `phase` ("copying", "checksums"...), working on `item` if named."""
    phase: str
    done: int
    total: int
    unit: str
    item: str = ""


Progress = Callable[[Step], None]


class _Phase:
    """One phase of an operation, reported to `progress` (if any) as it starts and
    advances."""

    def __init__(self, progress: Progress | None, phase: str, total: int, unit: str):
        self.progress, self.phase, self.total, self.unit = progress, phase, total, unit
        self.done, self.item = 0, ""
        self._report()

    def at(self, item: str) -> None:
        self.item = item
        self._report()

    def advance(self, n: int = 1) -> None:
        self.done += n
        self._report()

    def _report(self) -> None:
        if self.progress is not None:
            self.progress(Step(self.phase, self.done, self.total, self.unit, self.item))


# -- the layout -----------------------------------------------------------------------------
def shard_ids(data: str) -> list[int]:
    """Ids of the shard-N directories of a data dir, in numeric order."""
    if not os.path.isdir(data):
        return []
    ids = []
    for d in os.listdir(data):
        m = _SHARD_DIR.match(d)
        if m and os.path.isdir(os.path.join(data, d)):
            ids.append(int(m.group(1)))
    return sorted(ids)


def shard_path(data: str, k: int) -> str:
    return os.path.join(data, f"shard-{k}")


def held_shards(data: str) -> list[int]:
    """Shards whose owner.lock another process holds (a running server)."""
    held = []
    for k in shard_ids(data):
        path = os.path.join(shard_path(data, k), "owner.lock")
        if not os.path.exists(path):
            continue
        with open(path, "a+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                held.append(k)
            else:
                fcntl.flock(f, fcntl.LOCK_UN)
    return held


def replicated_shards(data: str) -> dict[int, str]:
    """The shards of `data` that are replicated (Shard.mark_replicated), with their
    cluster; read without taking them (a server may run)."""
    from .storage import Storage
    out = {}
    for k in shard_ids(data):
        raw = Storage.peek_meta(shard_path(data, k), "replicated")
        if raw is not None:
            out[k] = json.loads(raw)
    return out


def detach(data: str) -> dict[int, str]:
    """Make every replicated shard of `data` stand alone again (offline): its mark
    (Shard.mark_replicated) is removed, so offline tools and a server without --etcd
    write it again. Returns the shards detached, with the cluster each was of. The
    cluster's log of record and other nodes are not told: a standby of the cluster would
    still take the shard over, so stop them first; and once it has written on its own,
    this copy can't rejoin the cluster (it holds batches the log lacks: refused)."""
    from .storage import Storage
    require_offline(data)
    marked = replicated_shards(data)
    for k in marked:
        st = Storage(shard_path(data, k))
        try:
            st.put_meta({"replicated": None})
        finally:
            st.close()
    return marked


def require_offline(data: str) -> None:
    """Refused while a running server holds any shard of `data`."""
    held = held_shards(data)
    if held:
        raise Refused(f"{data} is in use: shard {', '.join(map(str, held))} "
                      f"{'is' if len(held) == 1 else 'are'} held by a running server "
                      f"(owner.lock); stop `turnstile serve --data {data}` first "
                      f"(`turnstile backup` and `turnstile audit verify` run beside a server)")


def _empty_target(path: str, what: str) -> None:
    if os.path.lexists(path) and (not os.path.isdir(path) or os.listdir(path)):
        raise Refused(f"{what} {path} is not empty; give a new or empty directory "
                      f"(nothing was written)")


def _sha256(path: str, phase: _Phase | None = None) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            if phase is not None:
                phase.advance(len(chunk))
    return h.hexdigest()


def mode_warnings(data: str, key_file: str | None = None) -> list[str]:
    """What `turnstile check` warns about: a dir of DATA that group or others may enter
    (or list), a file they may read or write, and a master key file in the data dir or
    open to others."""
    out = []
    for root, _, files in os.walk(data):
        for path, want in [(root, 0o700)] + [(os.path.join(root, f), 0o600) for f in files]:
            mode = os.lstat(path).st_mode & 0o777
            if mode & 0o077:
                out.append(f"{path} is mode {mode:04o}, open to group or others; "
                           f"`chmod {want:o} {path}` (data dirs are 0700, their files 0600)")
    if key_file and os.path.exists(key_file):
        mode = os.stat(key_file).st_mode & 0o777
        if mode & 0o077:
            out.append(f"master key file {key_file} is mode {mode:04o}, open to group or "
                       f"others; `chmod 600 {key_file}`")
        here, key = os.path.realpath(data), os.path.realpath(key_file)
        if os.path.commonpath([here, key]) == here:
            out.append(f"master key file {key_file} is inside the data dir {data}: whoever "
                       f"copies the data dir has every key; keep it elsewhere")
    return out


# -- the master key -------------------------------------------------------------------------
def _master(master_key: bytes | str | None, master_key_file: str | None) -> bytes:
    """The master key of this operation; refused (before anything is opened) if none."""
    try:
        return keyring.load_master_key(master_key, key_file=master_key_file)
    except MasterKeyError as e:
        raise Refused(str(e)) from None


def _key_state(path: str, master: bytes, *, lock: bool = True) -> str:
    """keyring.shard_key_state, a wrong key refused."""
    try:
        return keyring.shard_key_state(path, master, lock=lock)
    except MasterKeyError as e:
        raise Refused(str(e)) from None


@dataclass(frozen=True, slots=True)
class Rotation:
    """A master key rotation: the new key's id, and per shard "rotated" or "already"
    (wrapped under the new key before this run)."""
    key_id: str
    shards: dict[int, str]


def rotate_master_key(data: str, new_key_file: str, *, master_key: bytes | str | None = None,
                      master_key_file: str | None = None) -> Rotation:
    """Re-wrap the data key of every shard of `data` (offline) under the master key in
    `new_key_file` (keyring.rotate_master_key: one transaction, then compaction). Every
    shard must open with the current or the new key before any is changed, so a rotation
    that stopped halfway is finished by running it again. A shard made before master
    keys is first opened (which wraps its key) under the current one."""
    ids = shard_ids(data)
    if not ids:
        raise Refused(f"no shards in {data}")
    require_offline(data)
    old = _master(master_key, master_key_file)
    try:
        new = keyring.read_key_file(new_key_file)
    except MasterKeyError as e:
        raise Refused(str(e)) from None
    if new == old:
        raise Refused("the new master key is the current one")
    states = {}
    for k in ids:
        try:
            states[k] = keyring.shard_key_state(shard_path(data, k), old)
        except MasterKeyError:
            try:
                keyring.shard_key_state(shard_path(data, k), new)
            except MasterKeyError as e:
                raise Refused(f"{e}; neither key opens it, nothing was changed") from None
            states[k] = "already"
    done = {}
    for k in ids:
        path = shard_path(data, k)
        if states[k] == "clear":                  # made before master keys: wrap it first
            Shard.open(path, shard_id=k, master_key=old).close(snapshot=False)
        done[k] = keyring.rotate_master_key(path, old, new) if states[k] != "already" else "already"
    return Rotation(keyring.master_key_id(new), done)


# -- what a shard and the control store hold ------------------------------------------------
@dataclass(frozen=True, slots=True)
class ShardSummary:
    """What a shard holds: the numbers a backup records and a restore compares."""
    shard: int
    last_seq: int                       # its last journal batch
    snapshot_seq: int
    venues: list[str]
    tickets: int                        # codes (one per QR / group ticket)
    ticket_ids: int                     # incl. the components of combo tickets
    used: int
    inside: int
    voided: int
    blocked: int
    holds: int
    orders: int
    tickets_by_venue: dict[str, int]
    audit_records: int


COMPARED = tuple(f.name for f in fields(ShardSummary))


def summarize(shard: Shard) -> ShardSummary:
    """The ShardSummary of an open shard."""
    st = shard.state
    t = st.tickets
    recs = np.frombuffer(t.records(), dtype=RECORD_DTYPE)
    codes = recs["comp"] == 0
    # order rows are order/<channel>\0<order id> (engine/state)
    orders = sum(1 for _ in shard.storage.rows_with_prefix(b"order/"))
    per_venue = {}
    for v in st.venues:
        pis = [i for i, p in enumerate(st.product_list) if p.venue == v]
        per_venue[v] = int((codes & np.isin(recs["product"], pis)).sum()) if len(recs) else 0
    return ShardSummary(
        shard=st.shard_id, last_seq=shard.storage.last_seq(),
        snapshot_seq=shard.storage.get_meta("snapshot_seq") or 0, venues=list(st.venues),
        tickets=int(codes.sum()), ticket_ids=len(t.issued), used=len(t.used),
        inside=len(t.inside), voided=len(t.voided), blocked=len(t.blocked), holds=len(st.holds),
        orders=orders, tickets_by_venue=per_venue, audit_records=shard.audit_seq)


def is_empty(shard: Shard) -> bool:
    """A shard that holds nothing to lose: no venue, ticket, hold, order, audit record or
    other row (its own ticket keys and secrets excepted)."""
    st = shard.state
    if st.venues or len(st.tickets.issued) or st.holds:
        return False
    rows = shard.storage.rows_with_prefix(b"")
    try:
        return next(rows, None) is None
    finally:
        rows.close()                            # ends its read transaction


@dataclass(frozen=True, slots=True)
class ControlSummary:
    """What a control store holds: principals and API keys (counted), each shard's last
    endpoint, the venue map and the shard count `shards set-count` recorded."""
    principals: int
    keys: int
    endpoints: dict[str, str]           # shard id (as a string) -> address
    venue_map: dict[str, int]
    shard_count: int | None


def read_control(path: str, *, lock: bool = True) -> ControlSummary:
    """The ControlSummary of the control store in `path` (server/control.py keeps it),
    read-only: `lock` as for Shard.open_readonly (lock=False: a copy nobody else opens)."""
    env = lmdb.open(path, map_size=CONTROL_MAP_SIZE, max_dbs=8, subdir=True, readonly=True,
                    lock=lock, mode=0o600)
    try:
        dbs = {}
        for name in (b"principals", b"keys", b"endpoints", b"venues", b"config"):
            try:
                dbs[name] = env.open_db(name, create=False)
            except lmdb.NotFoundError:
                pass
        counts = {"principals": 0, "keys": 0}
        endpoints: dict[str, str] = {}
        venue_map: dict[str, int] = {}
        shard_count = None
        with env.begin() as txn:
            for name, key in ((b"principals", "principals"), (b"keys", "keys")):
                if name in dbs:
                    counts[key] = txn.stat(dbs[name])["entries"]
            if b"endpoints" in dbs:
                endpoints = {str(int(k)): v.decode() for k, v in txn.cursor(db=dbs[b"endpoints"])}
            if b"venues" in dbs:
                venue_map = {k.decode(): int(v) for k, v in txn.cursor(db=dbs[b"venues"])}
            if b"config" in dbs:
                v = txn.get(b"shards", db=dbs[b"config"])
                shard_count = None if v is None else int(v)
        return ControlSummary(counts["principals"], counts["keys"], endpoints, venue_map,
                              shard_count)
    finally:
        env.close()


# -- backup ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Backup:
    """A finished backup: what its manifest records, and the invariant violations found in
    its copies (the copies are faithful: `turnstile check` the source)."""
    out: str
    manifest: dict[str, Any]            # as written to OUT/manifest.json
    shards: list[ShardSummary]
    control: ControlSummary | None
    total_bytes: int
    elapsed_s: float
    warnings: list[str]


def _copy_env(name: str, src: str, dst: str) -> dict[str, Any]:
    """Compacting copy of one live environment, in one registered read transaction."""
    if name != CONTROL:
        storage = Storage(src, readonly=True, lock=True)
        try:
            txn_id, last = storage.copy(dst)
        finally:
            storage.close()
        return {"txn_id": txn_id, "journal_last": last}
    env = lmdb.open(src, map_size=CONTROL_MAP_SIZE, max_dbs=8, subdir=True, readonly=True,
                    lock=True, readahead=True)
    try:
        with env.begin() as txn:
            env.copy(dst, compact=True, txn=txn)
            return {"txn_id": txn.id()}
    finally:
        env.close()


def _copy_audit_archive(src: str, dst: str) -> int:
    """Copy a shard's audit archive files (engine/audit.py: written once, never changed)
    from `src` into `dst`, fsync'd; returns how many."""
    from . import audit
    segs = audit.segments(os.path.join(src, audit.ARCHIVE_DIR))
    if not segs:
        return 0
    to = os.path.join(dst, audit.ARCHIVE_DIR)
    os.mkdir(to, 0o700)
    for seg in segs:
        path = os.path.join(to, os.path.basename(seg.path))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with open(seg.path, "rb") as fin, os.fdopen(fd, "wb") as fout:
            shutil.copyfileobj(fin, fout, CHUNK)
            fout.flush()
            os.fsync(fout.fileno())
    _fsync(to)
    return len(segs)


def backup(data: str, out: str, *, master_key: bytes | str | None = None,
           master_key_file: str | None = None, progress: Progress | None = None) -> Backup:
    """A hot backup of `data` into the new or empty directory `out`: it runs beside a
    server serving `data` and taking writes.

    Each LMDB environment (every shard's, then the control store's) is copied with LMDB's
    own compacting copy (mdb_env_copy2 with MDB_CP_COMPACT) inside ONE read transaction:
    a consistent image of one committed batch of that shard. The environment is opened
    read-only but WITH LMDB's lock file, so the copy's reader is registered in the reader
    table and the server's writer never reuses a page the copy still reads (opening it
    with lock=False would let the copy read pages being overwritten). It does not touch
    the shard's owner.lock. Shards are copied one after another: each shard is consistent
    in itself, the backup is not one instant across shards (shards share nothing but the
    control store). Long copies hold old pages, so a shard's file may grow while a backup
    runs under heavy writes. A shard's audit archive files (DATA/shard-N/audit, written
    once and never changed: engine/audit.py) are copied after its environment, so a
    segment archived meanwhile overlaps rows the copy holds and none is missing.

    The copies are then opened read-only and checked (invariants and the audit chain);
    OUT/manifest.json, written last,
    records the time, each shard's ShardSummary and violations, the ControlSummary, and
    the size and SHA-256 of every file. A backup holds each shard's keys only wrapped by
    the master key, which it does not contain (a shard from before master keys, with its
    keys in clear, is refused); DATA/demo-keys.txt (API keys in clear) is not copied.
    Files are created mode 0600 in 0700 directories."""
    control = os.path.join(data, CONTROL)
    ids = shard_ids(data)
    if not ids:
        raise Refused(f"no shards in {data} (expected {data}/shard-0 ...)")
    _empty_target(out, "backup directory")
    # the master key opens every shard before anything is copied: a backup is checked
    # by opening its copies, and restoring it will need the same key
    master = _master(master_key, master_key_file)
    for k in ids:
        if _key_state(shard_path(data, k), master) == "clear":
            raise Refused(f"shard-{k} of {data} keeps its keys in clear (made before master "
                          f"keys), and a backup must not: open it once with this version "
                          f"(`turnstile check --data {data}` or `serve`), which wraps them; "
                          f"nothing was written")
    t0 = time.perf_counter()
    started = dt.datetime.now(dt.UTC)
    os.makedirs(out, mode=0o700, exist_ok=True)
    envs = [(f"shard-{k}", shard_path(data, k)) for k in ids]
    if os.path.isdir(control):
        envs.append((CONTROL, control))
    copied: dict[str, dict] = {}
    phase = _Phase(progress, "copying", len(envs), "env")
    for name, src in envs:
        phase.at(name)
        dst = os.path.join(out, name)
        os.mkdir(dst, 0o700)
        t = time.perf_counter()
        try:
            info = _copy_env(name, src, dst)
            if name != CONTROL:
                # after the shard's copy: a segment archived meanwhile overlaps rows the
                # copy still holds (verified as one chain), none is missing
                info["audit_segments"] = _copy_audit_archive(src, dst)
        except Exception as e:
            raise Refused(f"copying {src} failed: {e}; {out} is incomplete (no manifest)") from e
        info["copy_s"] = round(time.perf_counter() - t, 3)
        info["copied_at"] = dt.datetime.now(dt.UTC).isoformat()
        os.chmod(os.path.join(dst, "data.mdb"), 0o600)
        _fsync(os.path.join(dst, "data.mdb"))
        _fsync(dst)
        copied[name] = info
        phase.advance()

    # describe what was copied, from the copies themselves (not the live, moving data)
    summaries, entries, warnings = [], [], []
    phase = _Phase(progress, "reading copies", len(ids), "shard")
    for k in ids:
        name = f"shard-{k}"
        shard = Shard.open_readonly(os.path.join(out, name), lock=False, master_key=master)
        try:
            s = summarize(shard)
            violations = shard.check()
            chain = shard.check_audit()
        finally:
            shard.close()
        if s.shard != k:
            raise Refused(f"{data}/{name} holds shard {s.shard}, not {k}")
        live_last = copied[name].get("journal_last")
        if live_last is not None and live_last != s.last_seq:
            raise Refused(f"{name}: the copy ends at batch {s.last_seq}, its transaction "
                          f"saw {live_last}: the copy is not consistent")
        found = [f"{v.invariant}: {v.detail}" for v in violations]
        if not chain.ok:
            found.append(f"audit chain: {chain.summary()}")
        entries.append(asdict(s) | {"dir": name, "copy_s": copied[name]["copy_s"],
                                    "audit": {"ok": chain.ok, "records": chain.checked,
                                              "segments": chain.segments,
                                              "last_checkpoint": chain.last_checkpoint},
                                    "copied_at": copied[name]["copied_at"],
                                    "lmdb_txn_id": copied[name]["txn_id"], "violations": found})
        warnings += [f"{name}: {v}" for v in found]
        summaries.append(s)
        phase.advance()
    ctl = read_control(os.path.join(out, CONTROL), lock=False) if CONTROL in copied else None

    files = sorted(os.path.relpath(os.path.join(root, f), out)
                   for root, _, fs in os.walk(out) for f in fs)
    total = sum(os.path.getsize(os.path.join(out, f)) for f in files)
    listing = {}
    phase = _Phase(progress, "checksums", total, "B")
    for rel in files:
        path = os.path.join(out, rel)
        listing[rel] = {"size": os.path.getsize(path), "sha256": _sha256(path, phase)}
    manifest = {
        "format": FORMAT, "created": started.isoformat(),
        "finished": dt.datetime.now(dt.UTC).isoformat(),
        "elapsed_s": round(time.perf_counter() - t0, 3),
        "source": os.path.abspath(data), "host": socket.gethostname(),
        "method": "LMDB compacting copy (mdb_env_copy2, MDB_CP_COMPACT), one read transaction "
                  "per environment",
        "shard_ids": ids, "shards": entries,
        "control": None if ctl is None else asdict(ctl) | {
            "dir": CONTROL, "copy_s": copied[CONTROL]["copy_s"],
            "copied_at": copied[CONTROL]["copied_at"]},
        "files": listing, "total_bytes": total,
    }
    tmp = os.path.join(out, MANIFEST + ".tmp")
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, os.path.join(out, MANIFEST))
    _fsync(out)
    return Backup(out, manifest, summaries, ctl, total, time.perf_counter() - t0, warnings)


# -- restore --------------------------------------------------------------------------------
def load_manifest(src: str) -> dict[str, Any]:
    """The manifest of the backup in `src`, checked to be one `backup` writes (format,
    file names inside the backup, a data file per shard); refused otherwise."""
    path = os.path.join(src, MANIFEST)
    if not os.path.isfile(path):
        raise Refused(f"{src} has no {MANIFEST}: not a backup, or an unfinished one")
    try:
        with open(path) as f:
            m = json.load(f)
    except ValueError as e:
        raise Refused(f"{path} is not valid JSON: {e}") from e
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise Refused(f"{path} is not a {FORMAT} manifest")
    try:
        for rel, f in m["files"].items():
            parts = rel.split("/")
            if os.path.isabs(rel) or ".." in parts or rel == MANIFEST:
                raise Refused(f"{path} lists a bad file name {rel!r}")
            int(f["size"]), str(f["sha256"])
        for s in m["shards"]:
            int(s["shard"])
            if f"{s['dir']}/data.mdb" not in m["files"]:
                raise Refused(f"{path}: shard {s['dir']} has no data file listed")
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise Refused(f"{path} is incomplete or malformed ({e!r})") from e
    return m


@dataclass(frozen=True, slots=True)
class RestoredShard:
    """One restored shard: its summary (None if it did not open) and whether it passed
    (every invariant holds, its audit chain verifies, the counts match the manifest)."""
    dir: str
    summary: ShardSummary | None
    ok: bool


@dataclass(frozen=True, slots=True)
class Restore:
    """A restored data dir and what its checks found (`problems`: do not serve it if any)."""
    target: str
    created: str                        # when the backup was taken
    files: int
    total_bytes: int
    shards: list[RestoredShard]
    control: ControlSummary | None      # the restored control store, if the backup had one
    problems: list[str]


def restore(src: str, target: str, *, replay: bool = False,
            master_key: bytes | str | None = None, master_key_file: str | None = None,
            progress: Progress | None = None) -> Restore:
    """Restore the backup in `src` into the new data dir `target` (new or empty).

    First every file's size and SHA-256 is verified against the manifest (BackupDamaged,
    before anything is written), and the master key must unwrap every shard's key. The
    files are copied into a staging dir beside the target, which is then renamed into
    place. Then every shard is opened with the engine, checked (its audit chain too;
    with `replay`, also
    rebuilt from snapshot + journal and compared) and its ShardSummary compared with the
    manifest's, and the control store's principals and venue map too: what differs is in
    the result's `problems`."""
    m = load_manifest(src)
    master = _master(master_key, master_key_file)
    files: dict[str, dict] = m["files"]
    _empty_target(target, "target data dir")
    total = sum(f["size"] for f in files.values())

    # 1. every file as the manifest says, before anything is written
    bad = []
    phase = _Phase(progress, "verifying", total, "B")
    for rel, want in sorted(files.items()):
        path = os.path.join(src, rel)
        if not os.path.isfile(path):
            bad.append(f"{rel}: missing")
            continue
        size = os.path.getsize(path)
        if size != want["size"]:
            bad.append(f"{rel}: {size} bytes, the manifest says {want['size']}")
            phase.advance(want["size"])
            continue
        got = _sha256(path, phase)
        if got != want["sha256"]:
            bad.append(f"{rel}: sha256 {got[:16]}..., the manifest says {want['sha256'][:16]}...")
    if bad:
        raise BackupDamaged(f"the backup in {src} is damaged ({len(bad)} "
                            f"file{'s' if len(bad) > 1 else ''}); nothing was restored", bad)
    # the master key must unwrap every shard's key before anything is written
    wrapping = {}
    for want in m["shards"]:
        try:
            wrapping[want["dir"]] = keyring.shard_key_state(os.path.join(src, want["dir"]), master,
                                                            lock=False)
        except MasterKeyError as e:
            raise Refused(f"{e}; nothing was restored") from None

    # 2. copy into a staging dir beside the target, then rename it into place
    parent = os.path.dirname(os.path.abspath(target))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".turnstile-restore-", dir=parent)
    try:
        bad = []
        phase = _Phase(progress, "restoring", total, "B")
        for rel, want in sorted(files.items()):
            dst = os.path.join(staging, rel)
            os.makedirs(os.path.dirname(dst), mode=0o700, exist_ok=True)
            h = hashlib.sha256()
            fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with open(os.path.join(src, rel), "rb") as fin, os.fdopen(fd, "wb") as fout:
                while chunk := fin.read(CHUNK):
                    h.update(chunk)
                    fout.write(chunk)
                    phase.advance(len(chunk))
                fout.flush()
                os.fsync(fout.fileno())
            if h.hexdigest() != want["sha256"]:
                bad.append(rel)
        if bad:
            raise Refused(f"{', '.join(bad)} changed while being restored; nothing was restored")
        for root, _, _ in os.walk(staging, topdown=False):
            _fsync(root)
        if os.path.isdir(target):
            os.rmdir(target)                    # empty (checked): the rename takes its place
        os.rename(staging, target)
        _fsync(parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

    # 3. open every shard with the engine, check it, compare with the manifest
    problems, shards = [], []
    phase = _Phase(progress, "checking", len(m["shards"]), "shard")
    for want in m["shards"]:
        k = want["shard"]
        path = os.path.join(target, want["dir"])
        try:
            shard = Shard.open(path, shard_id=k, master_key=master)
        except Exception as e:  # noqa: BLE001 (a problem of this restore)
            problems.append(f"{want['dir']}: does not open: {e}")
            shards.append(RestoredShard(want["dir"], None, False))
            phase.advance()
            continue
        try:
            violations = shard.check(replay=replay)
            got = summarize(shard)
            chain = shard.check_audit()
        finally:
            shard.close(snapshot=False)
        for v in violations:
            problems.append(f"{want['dir']}: {v.invariant}: {v.detail}")
        if not chain.ok:
            problems.append(f"{want['dir']}: {chain.summary()}")
        # a backup from before master keys is wrapped as it opens: a new snapshot
        moved = {"snapshot_seq"} if wrapping[want["dir"]] == "clear" else set()
        diff = [f"{key} {getattr(got, key)!r} (manifest {want.get(key)!r})" for key in COMPARED
                if key in want and key not in moved and getattr(got, key) != want[key]]
        if diff:
            problems.append(f"{want['dir']}: differs from the manifest: {'; '.join(diff)}")
        shards.append(RestoredShard(want["dir"], got, not violations and not diff and chain.ok))
        phase.advance()
    ctl = m.get("control")
    restored_ctl = None
    if ctl:
        restored_ctl = read_control(os.path.join(target, CONTROL))
        principals, venue_map = restored_ctl.principals, restored_ctl.venue_map
        if principals != ctl["principals"] or venue_map != ctl["venue_map"]:
            problems.append(f"control: {principals} principals and map {venue_map}, the manifest "
                            f"says {ctl['principals']} and {ctl['venue_map']}")
        restored = {s["shard"]: s for s in m["shards"]}
        for venue, k in venue_map.items():
            if k not in restored or venue not in restored[k]["venues"]:
                problems.append(f"control: venue {venue} is mapped to shard {k}, which does not hold it")
    return Restore(target, m["created"], len(files), total, shards, restored_ctl, problems)


# -- shards ---------------------------------------------------------------------------------
class ShardMap(Protocol):
    """The node's shard map as `set_shard_count` and `move_venue` change it: the control
    store's (server.control.ControlStore), opened by the caller's `open_map(path)` only
    once the refusals that need no map have passed (opening creates DATA/control)."""

    def shard_count(self) -> int | None: ...

    def set_shard_count(self, n: int) -> None: ...

    def venue_shard(self, venue: str) -> int | None: ...

    def shard_map(self) -> tuple[dict[int, str], dict[str, int]]: ...

    def route_venue(self, venue: str, shard: int) -> None:
        """Route `venue` to `shard`, wherever the map placed it before."""

    def close(self) -> None: ...


def _open_shards(data: str, ids: Iterable[int], master: bytes, progress: Progress | None,
                 desc: str = "opening shards") -> dict[int, Shard]:
    """Open shards of `data` (offline: their owner.lock taken); refused if a server holds one."""
    ids = list(ids)
    opened: dict[int, Shard] = {}
    try:
        phase = _Phase(progress, desc, len(ids), "shard")
        for k in ids:
            phase.at(f"shard-{k}")
            try:
                opened[k] = Shard.open(shard_path(data, k), shard_id=k, master_key=master)
            except ShardUnavailable as e:
                raise Refused(f"{e.message}; stop `turnstile serve --data {data}` first") from e
            phase.advance()
    except BaseException:
        for s in opened.values():
            s.close(snapshot=False)
        raise
    return opened


def _file_bytes(path: str) -> int:
    f = os.path.join(path, "data.mdb")
    return os.path.getsize(f) if os.path.exists(f) else 0


@dataclass(frozen=True, slots=True)
class ShardRow:
    """One shard as `shards list` shows it. `venues` are those the venue map routes to it
    (or leaves unmapped); `unmapped` the catalogs it keeps of venues the map routes
    elsewhere (left behind by `move_venue`), with the shard they are routed to."""
    shard: int
    dir: str
    venues: list[str]
    unmapped: dict[str, int]
    tickets: int
    tickets_by_venue: dict[str, int]
    holds: int
    orders: int
    last_seq: int
    file_bytes: int                     # the size of its LMDB file
    used_bytes: int                     # the part of it in use
    endpoint: str | None                # its last address, as the control store has it
    empty: bool                         # is_empty: nothing to lose


@dataclass(frozen=True, slots=True)
class ShardList:
    """The shards of a data dir, the recorded shard count and venue map, and where the
    map and the shards disagree (`problems`)."""
    data: str
    shard_count: int | None
    shards: list[ShardRow]
    venue_map: dict[str, int]
    problems: list[str]


def list_shards(data: str, *, master_key: bytes | str | None = None,
                master_key_file: str | None = None,
                progress: Progress | None = None) -> ShardList:
    """Open every shard of `data` (offline) and list what it holds."""
    require_offline(data)
    ids = shard_ids(data)
    if not ids:
        raise Refused(f"no shards in {data}")
    master = _master(master_key, master_key_file)
    ctl = (read_control(os.path.join(data, CONTROL))
           if os.path.isdir(os.path.join(data, CONTROL)) else ControlSummary(0, 0, {}, {}, None))
    venue_map = ctl.venue_map
    rows, problems = [], []
    shards = _open_shards(data, ids, master, progress)
    try:
        for k, shard in shards.items():
            s = summarize(shard)
            rows.append(ShardRow(
                shard=k, dir=f"shard-{k}",
                venues=[v for v in s.venues if venue_map.get(v, k) == k],
                unmapped={v: venue_map[v] for v in s.venues if venue_map.get(v, k) != k},
                tickets=s.tickets, tickets_by_venue=s.tickets_by_venue, holds=s.holds,
                orders=s.orders, last_seq=s.last_seq, file_bytes=_file_bytes(shard.storage.path),
                used_bytes=shard.storage.used_bytes(), endpoint=ctl.endpoints.get(str(k)),
                empty=is_empty(shard)))
    finally:
        for s in shards.values():
            s.close(snapshot=False)
    holding = {r.shard: set(r.venues) | set(r.unmapped) for r in rows}
    for v, k in sorted(venue_map.items()):
        if v not in holding.get(k, ()):
            problems.append(f"venue {v} is mapped to shard {k}, which does not hold it")
    count = ctl.shard_count
    if count is not None and ids != list(range(count)):
        problems.append(f"the recorded shard count is {count} but the dirs are shard "
                        f"{', '.join(map(str, ids))}")
    return ShardList(data, count, rows, venue_map, problems)


@dataclass(frozen=True, slots=True)
class ShardCount:
    """The shard count set: the shards made and the empty ones removed."""
    count: int
    created: list[int]
    removed: list[int]


def set_shard_count(data: str, n: int, *, open_map: Callable[[str], ShardMap],
                    master_key: bytes | str | None = None, master_key_file: str | None = None,
                    progress: Progress | None = None) -> ShardCount:
    """Make `data` have shards 0..n-1 (offline) and record n in its shard map.

    Missing shards are created empty (each with its own ticket keys). Shards >= n are
    removed only if they hold nothing (is_empty) and the venue map routes nothing to
    them; otherwise the count is refused below the highest such shard + 1. Recording n
    drops the endpoints of removed shards (ShardMap.set_shard_count)."""
    if n < 1:
        raise Refused("the shard count is at least 1")
    if not os.path.isdir(data):
        raise Refused(f"no data dir {data}")
    require_offline(data)
    master = _master(master_key, master_key_file)
    for k in shard_ids(data):                    # before any shard is dropped or made
        _key_state(shard_path(data, k), master)
    ids = shard_ids(data)
    existing = [k for k in ids if k < n]
    beyond = [k for k in ids if k >= n]
    created, removed = [], []
    shards = _open_shards(data, beyond, master, progress, desc="checking shards to drop")
    try:
        full = {k: s.venues() for k, s in shards.items() if not is_empty(s)}
    finally:
        for s in shards.values():
            s.close(snapshot=False)
    store = open_map(os.path.join(data, CONTROL))
    try:
        _, venue_map = store.shard_map()
        if full:
            top = max(full)
            venues = full[top]
            if not venues:
                what = "orders, holds or audit records"
            elif all(venue_map.get(v, top) != top for v in venues):
                what = (f"the catalog of {', '.join(venues)}, left behind by `shards move` "
                        f"(the engine cannot remove a venue)")
            else:
                what = f"{', '.join(venues)} (move them away first: `turnstile shards move`)"
            raise Refused(f"shard {top} holds {what}; the count cannot go below {top + 1}")
        # the map must not route a venue to a shard being dropped
        routed = sorted(v for v, k in venue_map.items() if k >= n)
        if routed:
            raise Refused(f"the venue map routes {', '.join(routed)} to a shard >= {n}; "
                          f"the count cannot go below {max(venue_map[v] for v in routed) + 1}")
        for k in beyond:
            shutil.rmtree(shard_path(data, k))
            removed.append(k)
        missing = [k for k in range(n) if k not in existing]
        phase = _Phase(progress, "creating shards", len(missing), "shard")
        for k in missing:
            Shard.open(shard_path(data, k), shard_id=k, master_key=master).close()
            created.append(k)
            phase.advance()
        store.set_shard_count(n)
    finally:
        store.close()
    _fsync(data)
    return ShardCount(n, created, removed)


def catalog_commands(shard: Shard, venue: str) -> tuple[list[Command], dict[str, int]]:
    """Engine commands that rebuild `venue`'s catalog as `shard` holds it: venue, zones,
    gates, products, slots (with their current capacity) and allotments; and how many of
    each. Zone, gate, product and slot ids are unique within their venue, so every
    command names the venue."""
    st = shard.state
    v = st.venues[venue]
    zones = [z for z in st.zones.values() if z.venue == venue]
    gates = [g for g in st.gates.values() if g.venue == venue]
    products = [p for p in st.product_list if p.venue == venue]
    slots = sorted((s for s in st.slot_defs.values() if s.venue == venue),
                   key=lambda s: st.slot_idx[(venue, s.id)])
    slot_of = {st.slot_idx[(venue, s.id)]: s.id for s in slots}
    allots = [(slot_of[s], ch, st.slots.allotment(a)["capacity"])
              for (s, ch), a in sorted(st.allot_idx.items(), key=lambda kv: kv[1]) if s in slot_of]
    out = [cmd.venue(v.id, v.name, v.utc_offset_s)]
    out += [cmd.zone(venue, z.id, z.name, live_capacity=z.live_capacity,
                     enforce_exit=z.enforce_exit) for z in zones]
    out += [cmd.gate(g.zone, g.id, g.mode, venue=venue) for g in gates]
    out += [cmd.product(venue, p.id, p.zones, name=p.name, rule=p.rule, price_fen=p.price_fen,
                        channel_prices=p.channel_prices, channels=p.channels,
                        real_name=p.real_name, max_group=p.max_group, refundable=p.refundable,
                        refund_fee_pct=p.refund_fee_pct) for p in products]
    rows = [{"id": s.id, "zone": s.zone, "day": s.day, "start": s.start, "end": s.end,
             "capacity": st.slots.slot(st.slot_idx[(venue, s.id)])["capacity"]} for s in slots]
    for i in range(0, len(rows), 100_000):
        out.append(cmd.slots(rows[i:i + 100_000], venue=venue))
    out += [cmd.allotment(sid, ch, cap, venue=venue) for sid, ch, cap in allots]
    return out, {"zones": len(zones), "gates": len(gates), "products": len(products),
                 "slots": len(slots), "allotments": len(allots)}


def _active_holds(shard: Shard, venue: str, now: float) -> int:
    """Holds of `venue` on `shard` that have not expired by `now`."""
    st = shard.state
    return sum(1 for h in st.holds.values() if h.expires_at > now and any(
        st.product_list[ln.p].venue == venue for ln in h.lines))


@dataclass(frozen=True, slots=True)
class VenueMove:
    """A venue moved from shard `source` to shard `target`, with how many zones, gates,
    products, slots and allotments its catalog has."""
    venue: str
    source: int
    target: int
    sizes: dict[str, int]


def move_venue(data: str, venue: str, to: int, *, open_map: Callable[[str], ShardMap],
               master_key: bytes | str | None = None, master_key_file: str | None = None,
               progress: Progress | None = None) -> VenueMove:
    """Move `venue` to shard `to` (offline): its catalog (catalog_commands) is re-created
    on shard `to` in one batch (one durable transaction), then the shard map routes the
    venue there. A venue the map does not route is looked for in every shard's catalog.

    Refused when the venue has issued tickets or active holds (ticket codes carry their
    shard id and orders live on their shard), when shard `to` already has a venue of that
    id, or is beyond the recorded shard count, or when either shard is replicated (the
    batch would bypass its log of record). The engine has no command to remove a venue,
    so the source shard keeps its catalog, unmapped."""
    require_offline(data)
    master = _master(master_key, master_key_file)
    ids = shard_ids(data)
    if to not in ids:
        raise Refused(f"there is no shard {to} in {data} (shards: {', '.join(map(str, ids)) or 'none'}); "
                      f"`turnstile shards set-count {to + 1} --data {data}` creates it")
    store = open_map(os.path.join(data, CONTROL))
    try:
        count = store.shard_count()
        if count is not None and to >= count:
            raise Refused(f"shard {to} is beyond the recorded shard count {count}; "
                          f"`turnstile shards set-count {to + 1}` first")
        src = store.venue_shard(venue)
        steps = _Phase(progress, f"moving {venue}", 4, "step")
        if src is None:                  # never served: find the shard whose catalog has it
            found = []
            for k, shard in _open_shards(data, ids, master, progress, desc="finding venue").items():
                if shard.has_venue(venue):
                    found.append(k)
                shard.close(snapshot=False)
            if not found:
                raise Refused(f"no venue {venue} in {data} (not in the venue map, in no shard)")
            if len(found) > 1:
                raise Refused(f"venue {venue} is in shards {found} and not in the venue map; "
                              f"cannot tell which one is its home")
            src = found[0]
        if src == to:
            raise Refused(f"venue {venue} is already on shard {to}")
        if src not in ids:
            raise Refused(f"the venue map puts {venue} on shard {src}, which does not exist")
        shards = _open_shards(data, [src, to], master, progress)
        steps.advance()
        source, target = shards[src], shards[to]
        applied = False
        try:
            if not source.has_venue(venue):
                raise Refused(f"the venue map puts {venue} on shard {src}, whose catalog lacks it")
            for k, s in ((src, source), (to, target)):
                if s.replicated():
                    raise Refused(
                        f"shard {k} is replicated (cluster {s.replicated()}): its batches go through "
                        f"its log of record, which a move made here offline would bypass -- its "
                        f"standbys would never have it; nothing was changed")
            tickets = sum(r.issued for r in source.ticket_counts(venue))
            holds = _active_holds(source, venue, time.time())
            if tickets or holds:
                what = " and ".join(x for x in (
                    f"{tickets} issued ticket{'s' if tickets != 1 else ''}" if tickets else "",
                    f"{holds} active hold{'s' if holds != 1 else ''}" if holds else "") if x)
                raise Refused(
                    f"venue {venue} on shard {src} has {what}: ticket codes carry their shard "
                    f"id ({src}) and its orders and holds live there, so it cannot move without "
                    f"reissuing those codes; nothing was changed")
            commands, sizes = catalog_commands(source, venue)
            # zone, gate, product and slot ids are per venue: only the venue id can clash
            if target.has_venue(venue):
                raise Refused(f"shard {to} already has venue {venue} (a catalog left there by "
                              f"an earlier move: the engine cannot remove it), so {venue} "
                              f"cannot move there; nothing was changed")
            steps.advance()
            results = target.run_many(commands)       # one batch: one durable transaction
            applied = True
            failed = [(c, r) for c, r in zip(commands, results) if isinstance(r, TurnstileError)]
            if failed:
                c, r = failed[0]
                raise Refused(f"shard {to} refused {c.op.name} ({r.code}: {r.message}); "
                              f"{len(commands) - len(failed)} of {len(commands)} catalog "
                              f"commands were applied there, the venue map is unchanged "
                              f"(still shard {src})")
            steps.advance()
            store.route_venue(venue, to)              # the map is what routes
            steps.advance()
        finally:
            target.close(snapshot=applied)
            source.close(snapshot=False)
    finally:
        store.close()
    return VenueMove(venue, src, to, sizes)


# -- format upgrades ------------------------------------------------------------------------
def verify_backup(src: str, progress: Progress | None = None) -> dict[str, Any]:
    """Check every file of the backup in `src` against its manifest (size and SHA-256);
    BackupDamaged (one line per bad file) if any differs. Returns the manifest."""
    m = load_manifest(src)
    files: dict[str, dict] = m["files"]
    bad = []
    phase = _Phase(progress, "verifying backup", sum(f["size"] for f in files.values()), "B")
    for rel, want in sorted(files.items()):
        path = os.path.join(src, rel)
        if not os.path.isfile(path):
            bad.append(f"{rel}: missing")
        elif os.path.getsize(path) != want["size"]:
            bad.append(f"{rel}: {os.path.getsize(path)} bytes, the manifest says {want['size']}")
        elif (got := _sha256(path, phase)) != want["sha256"]:
            bad.append(f"{rel}: sha256 {got[:16]}..., the manifest says {want['sha256'][:16]}...")
    if bad:
        raise BackupDamaged(f"the backup in {src} is damaged ({len(bad)} file"
                            f"{'s' if len(bad) > 1 else ''})", bad)
    return m


@dataclass(frozen=True, slots=True)
class MigratedShard:
    """One shard of a migration: the formats it held before (newest, oldest: see
    engine/storage.py), what was done ("migrated" or "current": nothing to do), and for a
    migrated one the journal batches folded into its new snapshot."""
    shard: int
    before: tuple[int, int]
    action: str
    journal_batches: int = 0


@dataclass(frozen=True, slots=True)
class Migration:
    """A migrated data dir: the format it now holds, the verified backup taken first
    (None if every shard was current: nothing was written), each shard."""
    data: str
    format: int
    backup: str | None
    shards: list[MigratedShard]
    elapsed_s: float


def migrate(data: str, *, backup_to: str | None = None, master_key: bytes | str | None = None,
            master_key_file: str | None = None, progress: Progress | None = None) -> Migration:
    """Upgrade every shard of `data` in place to this build's journal and snapshot format
    (engine/journal.py), so that no record of an older format is left.

    Needs the data dir offline (refused while a server holds a shard). Refused, before
    anything is written, if a shard is of a format newer than this build's. If every
    shard is current it does nothing (running it twice is fine). Otherwise it first makes
    a backup into `backup_to` (default: DATA.pre-migrate-<UTC time> beside DATA) with
    `backup` and verifies its files against the manifest; refused if the backup found a
    violated invariant or is damaged. Then each old shard is opened (its snapshot loaded,
    its journal replayed as the format it was written in), checked, and written as ONE
    transaction: a snapshot of this format, the journal before it dropped, and its meta
    marked `oldest` = this format. It is opened again from disk and must come out the
    same, or the migration stops (refused) with the backup named to restore from."""
    from .storage import SCHEMA, FormatTooNew
    t0 = time.perf_counter()
    ids = shard_ids(data)
    if not ids:
        raise Refused(f"no shards in {data} (expected {data}/shard-0 ...)")
    require_offline(data)
    master = _master(master_key, master_key_file)
    before: dict[int, tuple[int, int]] = {}
    for k in ids:
        try:
            storage = Storage(shard_path(data, k), readonly=True, lock=True)
        except FormatTooNew as e:
            raise Refused(f"shard-{k}: {e.message}; nothing was migrated") from None
        try:
            before[k] = storage.formats()
        finally:
            storage.close()
    todo = [k for k in ids if before[k] != (SCHEMA, SCHEMA)]
    shards = [MigratedShard(k, before[k], "current") for k in ids if k not in todo]
    if not todo:
        return Migration(data, SCHEMA, None, shards, time.perf_counter() - t0)
    out = backup_to or (f"{os.path.abspath(data).rstrip(os.sep)}.pre-migrate-"
                        f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}")
    b = backup(data, out, master_key=master, progress=progress)
    if b.warnings:
        raise Refused(f"the backup {out} found problems ({'; '.join(b.warnings)}); "
                      f"`turnstile check --data {data}` and mend them first; nothing was migrated")
    verify_backup(out, progress)
    phase = _Phase(progress, "migrating", len(todo), "shard")
    for k in todo:
        path = shard_path(data, k)
        phase.at(f"shard-{k}")
        shard = Shard.open(path, shard_id=k, master_key=master)
        try:
            violations = shard.check()
            if violations:
                raise Refused(f"shard-{k}: {violations[0].invariant}: {violations[0].detail}; "
                              f"not migrated (the backup is {out})")
            batches = shard.storage.journal_count()
            blobs = shard.state.dump()
            shard.storage.write_snapshot(shard.seq, blobs, meta={"oldest": str(SCHEMA).encode()})
            shard.since_snapshot = 0
        finally:
            shard.close(snapshot=False)
        again = Shard.open_readonly(path, lock=True, master_key=master)
        try:
            theirs = again.state.dump()
            differ = sorted(n for n in set(blobs) | set(theirs) if blobs.get(n) != theirs.get(n))
            after = again.storage.formats()
        finally:
            again.close()
        if differ or after != (SCHEMA, SCHEMA):
            raise Refused(f"shard-{k} reads back differently after its migration ({', '.join(differ)}"
                          f"{'; format ' + str(after) if after != (SCHEMA, SCHEMA) else ''}): "
                          f"stop, and restore the backup {out} (`turnstile restore --from {out}`)")
        shards.append(MigratedShard(k, before[k], "migrated", batches))
        phase.advance()
    shards.sort(key=lambda s: s.shard)
    return Migration(data, SCHEMA, out, shards, time.perf_counter() - t0)
