"""`turnstile backup | restore | shards | master-key`: work on a data dir directly (no gRPC).

    turnstile backup  --data data --out /backups/2026-11-23     hot: works while `serve` runs
    turnstile restore --from /backups/2026-11-23 --data data2    verify, copy, open, check
    turnstile shards list      --data data                        offline (no server on DATA)
    turnstile shards set-count 4 --data data
    turnstile shards move hills --to 2 --data data
    turnstile master-key create /etc/turnstile/master.key       64 hex digits, mode 0600
    turnstile master-key rotate --data data --new-key-file /etc/turnstile/master.key.new

Every command that opens a data dir needs its master key (--master-key-file,
TURNSTILE_MASTER_KEY_FILE or TURNSTILE_MASTER_KEY; engine/keyring.py) and checks it
against every shard before it opens, copies or writes anything.

A backup is LMDB's own compacting copy (mdb_env_copy2 with MDB_CP_COMPACT) of every
shard environment and of the control store, each taken inside ONE read transaction: a
consistent image of one committed batch of that shard. The environment is opened
read-only but WITH LMDB's lock file, so the copy's reader is registered in the reader
table and the server's writer never reuses a page the copy still reads (opening it
with lock=False would let the copy read pages being overwritten). It does not touch
the shard's owner.lock, so it runs beside `turnstile serve`. Shards are copied one
after another: each shard is consistent in itself, the backup is not one instant
across shards (shards share nothing but the control store). Long copies hold old pages,
so a shard's file may grow while a backup runs under heavy writes.

`shards` commands need the data dir offline: a running server holds every shard's
owner.lock (flock), and they refuse while any is held.
"""
from __future__ import annotations

import argparse
import datetime as dt
import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import struct
import sys
import tempfile
import time
from collections.abc import Iterable
from typing import Any

from engine.keyring import MasterKeyError
from engine.storage import _fsync

MANIFEST = "manifest.json"
FORMAT = "turnstile-backup/1"
SHARD_MAP_SIZE = 64 << 30        # what engine.storage.Storage opens a shard with
CONTROL_MAP_SIZE = 1 << 30       # what server.control.ControlStore opens with
CHUNK = 4 << 20
_U64 = struct.Struct(">Q")
_SHARD_DIR = re.compile(r"shard-(\d+)\Z")


class Refused(Exception):
    """A command refuses to act: its message goes to stderr and the exit status is 1."""


# -- helpers ----------------------------------------------------------------------------
def _bar(args, **kw):
    """A tqdm progress bar on stderr; off with --quiet or when stderr is not a terminal."""
    from tqdm import tqdm
    return tqdm(file=sys.stderr, disable=args.quiet or not sys.stderr.isatty(),
                dynamic_ncols=True, leave=False, **kw)


def _bytes_bar(args, total: int, desc: str):
    return _bar(args, total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024)


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _shard_ids(data: str) -> list[int]:
    """Ids of the shard-N directories of a data dir, in numeric order."""
    if not os.path.isdir(data):
        return []
    ids = []
    for d in os.listdir(data):
        m = _SHARD_DIR.match(d)
        if m and os.path.isdir(os.path.join(data, d)):
            ids.append(int(m.group(1)))
    return sorted(ids)


def _shard_path(data: str, k: int) -> str:
    return os.path.join(data, f"shard-{k}")


def _held_shards(data: str) -> list[int]:
    """Shards whose owner.lock another process holds (a running server)."""
    held = []
    for k in _shard_ids(data):
        path = os.path.join(_shard_path(data, k), "owner.lock")
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


def _require_offline(data: str) -> None:
    held = _held_shards(data)
    if held:
        raise Refused(f"{data} is in use: shard {', '.join(map(str, held))} "
                      f"{'is' if len(held) == 1 else 'are'} held by a running server "
                      f"(owner.lock); stop `turnstile serve --data {data}` first "
                      f"(`turnstile backup` is the one data command that runs beside a server)")


def _sha256(path: str, bar=None) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            if bar is not None:
                bar.update(len(chunk))
    return h.hexdigest()


def _empty_target(path: str, what: str) -> None:
    if os.path.lexists(path) and (not os.path.isdir(path) or os.listdir(path)):
        raise Refused(f"{what} {path} is not empty; give a new or empty directory "
                      f"(nothing was written)")


# -- the master key (engine/keyring.py) ---------------------------------------------------


def master_key_option(p) -> None:
    """--master-key-file, for every command that opens a data dir."""
    p.add_argument("--master-key-file", metavar="FILE", default=None,
                   help="file of the master key that wraps the shards' keys, kept outside the "
                        "data dir (default: $TURNSTILE_MASTER_KEY_FILE, else the key itself in "
                        "$TURNSTILE_MASTER_KEY)")


def _master(args) -> bytes:
    """The master key of this command; refused (before anything is opened) if none."""
    from engine import keyring
    try:
        return keyring.load_master_key(key_file=getattr(args, "master_key_file", None))
    except MasterKeyError as e:
        raise Refused(str(e)) from None


def keyring_state(path: str, master: bytes, *, lock: bool = True) -> str:
    """engine.keyring.shard_key_state, a wrong key refused as this command's error."""
    from engine import keyring
    try:
        return keyring.shard_key_state(path, master, lock=lock)
    except MasterKeyError as e:
        raise Refused(str(e)) from None


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


def cmd_master_key_create(args) -> int:
    from engine import keyring
    path = args.file
    if os.path.exists(path):
        if args.if_absent:
            print(f"master key {path} exists (mode {os.stat(path).st_mode & 0o777:04o}); "
                  f"using it")
            return 0
        raise Refused(f"{path} exists; a master key is never overwritten (it is the only way "
                      f"to open the data dirs it wraps)")
    try:
        key = keyring.create_key_file(path)
    except OSError as e:
        raise Refused(f"cannot create {path}: {e.strerror or e}") from None
    print(f"created master key {os.path.abspath(path)} (id {keyring.master_key_id(key)}, mode "
          f"0600): it opens every data dir and backup made with it; keep it outside the data "
          f"dir, and keep a copy apart from the backups")
    return 0


def cmd_master_key_rotate(args) -> int:
    from engine import Shard, keyring
    data = args.data
    ids = _shard_ids(data)
    if not ids:
        raise Refused(f"no shards in {data}")
    _require_offline(data)
    old = _master(args)
    try:
        new = keyring.read_key_file(args.new_key_file)
    except MasterKeyError as e:
        raise Refused(str(e)) from None
    if new == old:
        raise Refused("the new master key is the current one")
    # every shard opens with one of the two keys before any is changed, so a rotation
    # that stopped halfway is finished by running it again
    states = {}
    for k in ids:
        try:
            states[k] = keyring.shard_key_state(_shard_path(data, k), old)
        except MasterKeyError:
            try:
                keyring.shard_key_state(_shard_path(data, k), new)
            except MasterKeyError as e:
                raise Refused(f"{e}; neither key opens it, nothing was changed") from None
            states[k] = "already"
    for k in ids:
        path = _shard_path(data, k)
        if states[k] == "clear":                  # made before master keys: wrap it first
            Shard.open(path, shard_id=k, master_key=old).close(snapshot=False)
        result = keyring.rotate_master_key(path, old, new) if states[k] != "already" else "already"
        print(f"  shard-{k}: {'re-wrapped' if result == 'rotated' else 'already under the new key'}")
    print(f"{data}: every shard's key is wrapped under master key {keyring.master_key_id(new)} "
          f"({args.new_key_file}); the old key no longer opens it (backups taken before still "
          f"need the old one)")
    return 0


# -- read-only shards -------------------------------------------------------------------
def _readonly_storage(path: str, *, lock: bool):
    """engine Storage over an environment opened read-only, without the owner.lock."""
    import lmdb

    from engine.storage import Storage

    class ReadOnlyStorage(Storage):
        def __init__(self):
            self.env = lmdb.open(path, map_size=SHARD_MAP_SIZE, max_dbs=8, subdir=True,
                                 readonly=True, lock=lock, readahead=True)
            try:
                self.meta, self.journal, self.rows, self.snapshot = (
                    self.env.open_db(name, create=False)
                    for name in (b"meta", b"journal", b"rows", b"snapshot"))
            except lmdb.Error:
                self.env.close()
                raise
            self.path = path

        def close(self) -> None:
            self.env.close()

    return ReadOnlyStorage()


def _open_readonly(path: str, master: bytes, *, lock: bool = False):
    """Recover a shard from `path` without writing anything (what Shard.open does,
    minus the owner.lock, the meta check, the first-open secrets and the migration of
    a shard made before master keys). For backup copies (lock=False: nothing else opens
    them)."""
    from engine import Shard, keyring
    from engine.state import Batch, ShardState
    storage = _readonly_storage(path, lock=lock)
    try:
        shard_id = storage.get_meta("shard")
        if shard_id is None:
            raise Refused(f"{path} is not a shard (no shard id in its meta)")
        wrapped = storage.get_meta_bytes("dek")
        state = ShardState(int(shard_id), storage.get_row)
        # a copy without a wrapped key holds clear secrets, which replay without one
        state.keyring = keyring.Keyring(keyring.unwrap_dek(master, wrapped, path)
                                        if wrapped is not None else keyring.new_dek())
        seq = 0
        snap = storage.read_snapshot()
        if snap is not None:
            seq, blobs = snap
            state.load(blobs)
        state.replaying = True
        for n, blob in storage.journal_after(seq):
            state.replay(blob, Batch(n))
            seq = n
        state.replaying = False
        return Shard(storage, state, seq, clock=time.time, snapshot_every=1 << 62)
    except BaseException:
        storage.close()
        raise


def _close(shard, *, snapshot: bool = False) -> None:
    if not snapshot:
        shard.since_snapshot = 0
    shard.close(snapshot=snapshot)


def _summary(shard) -> dict[str, Any]:
    """What a shard holds: the numbers a backup records and a restore compares."""
    import numpy as np

    from engine.shard import RECORD_DTYPE
    st = shard.state
    t = st.tickets
    recs = np.frombuffer(t.records(), dtype=RECORD_DTYPE)
    codes = recs["comp"] == 0
    orders = sum(1 for _ in shard.storage.rows_with_prefix(b"order/"))
    per_venue = {}
    for v in st.venues:
        pis = [i for i, p in enumerate(st.product_list) if p.venue == v]
        per_venue[v] = int((codes & np.isin(recs["product"], pis)).sum()) if len(recs) else 0
    return {
        "shard": st.shard_id,
        "last_seq": shard.storage.last_seq(),
        "snapshot_seq": shard.storage.get_meta("snapshot_seq") or 0,
        "venues": list(st.venues),
        "tickets": int(codes.sum()),                 # codes (one per QR / group ticket)
        "ticket_ids": len(t.issued),                 # incl. the components of combo tickets
        "used": len(t.used), "inside": len(t.inside),
        "voided": len(t.voided), "blocked": len(t.blocked),
        "holds": len(st.holds), "orders": orders,
        "tickets_by_venue": per_venue,
        "audit_records": shard.audit_seq,
    }


COMPARED = ("shard", "last_seq", "snapshot_seq", "venues", "tickets", "ticket_ids", "used",
            "inside", "voided", "blocked", "holds", "orders", "tickets_by_venue", "audit_records")


def _read_control(path: str, *, lock: bool) -> dict[str, Any]:
    """Principals, keys, shard map and recorded shard count of a control environment,
    read-only."""
    import lmdb
    env = lmdb.open(path, map_size=CONTROL_MAP_SIZE, max_dbs=8, subdir=True, readonly=True,
                    lock=lock)
    try:
        out: dict[str, Any] = {"principals": 0, "keys": 0, "endpoints": {}, "venue_map": {},
                               "shard_count": None}
        dbs = {}
        for name in (b"principals", b"keys", b"endpoints", b"venues", b"config"):
            try:
                dbs[name] = env.open_db(name, create=False)
            except lmdb.NotFoundError:
                pass
        with env.begin() as txn:
            for name, key in ((b"principals", "principals"), (b"keys", "keys")):
                if name in dbs:
                    out[key] = txn.stat(dbs[name])["entries"]
            if b"endpoints" in dbs:
                out["endpoints"] = {str(int(k)): v.decode() for k, v in txn.cursor(db=dbs[b"endpoints"])}
            if b"venues" in dbs:
                out["venue_map"] = {k.decode(): int(v) for k, v in txn.cursor(db=dbs[b"venues"])}
            if b"config" in dbs:
                v = txn.get(b"shards", db=dbs[b"config"])
                out["shard_count"] = None if v is None else int(v)
        return out
    finally:
        env.close()


# -- backup -----------------------------------------------------------------------------
def _copy_env(src: str, dst: str, map_size: int, *, journal: bool) -> dict[str, Any]:
    """Compacting copy of one live environment, in one registered read transaction."""
    import lmdb
    env = lmdb.open(src, map_size=map_size, max_dbs=8, subdir=True, readonly=True, lock=True,
                    readahead=True)
    try:
        jdb = env.open_db(b"journal", create=False) if journal else None
        with env.begin() as txn:
            info: dict[str, Any] = {"txn_id": txn.id()}
            if jdb is not None:
                cur = txn.cursor(db=jdb)
                info["journal_last"] = _U64.unpack(cur.key())[0] if cur.last() else None
            env.copy(dst, compact=True, txn=txn)
        return info
    finally:
        env.close()


def cmd_backup(args) -> int:
    data, out = args.data, args.out
    control = os.path.join(data, "control")
    ids = _shard_ids(data)
    if not ids:
        raise Refused(f"no shards in {data} (expected {data}/shard-0 ...)")
    _empty_target(out, "backup directory")
    # the master key opens every shard before anything is copied: a backup is checked
    # by opening its copies, and restoring it will need the same key
    master = _master(args)
    for k in ids:
        if keyring_state(_shard_path(data, k), master) == "clear":
            raise Refused(f"shard-{k} of {data} keeps its keys in clear (made before master "
                          f"keys), and a backup must not: open it once with this version "
                          f"(`turnstile check --data {data}` or `serve`), which wraps them; "
                          f"nothing was written")
    t0 = time.perf_counter()
    started = dt.datetime.now(dt.UTC)
    os.makedirs(out, mode=0o700, exist_ok=True)
    envs = [(f"shard-{k}", _shard_path(data, k), SHARD_MAP_SIZE, True) for k in ids]
    if os.path.isdir(control):
        envs.append(("control", control, CONTROL_MAP_SIZE, False))
    copied: dict[str, dict] = {}
    with _bar(args, total=len(envs), desc="copying", unit="env") as bar:
        for name, src, map_size, is_shard in envs:
            bar.set_postfix_str(name)
            dst = os.path.join(out, name)
            os.mkdir(dst, 0o700)
            t = time.perf_counter()
            try:
                info = _copy_env(src, dst, map_size, journal=is_shard)
            except Exception as e:
                raise Refused(f"copying {src} failed: {e}; {out} is incomplete (no manifest)") from e
            info["copy_s"] = round(time.perf_counter() - t, 3)
            info["copied_at"] = dt.datetime.now(dt.UTC).isoformat()
            os.chmod(os.path.join(dst, "data.mdb"), 0o600)
            _fsync(os.path.join(dst, "data.mdb"))
            _fsync(dst)
            copied[name] = info
            bar.update(1)
    # DATA/demo-keys.txt (API keys in clear) is not copied: a backup carries no usable
    # secret; the principals and the hashes of their keys are in the control store

    # describe what was copied, from the copies themselves (not the live, moving data)
    shards, warnings = [], []
    with _bar(args, total=len(ids), desc="reading copies", unit="shard") as bar:
        for k in ids:
            name = f"shard-{k}"
            shard = _open_readonly(os.path.join(out, name), master)
            try:
                s = _summary(shard)
                violations = shard.check()
            finally:
                _close(shard)
            if s["shard"] != k:
                raise Refused(f"{data}/{name} holds shard {s['shard']}, not {k}")
            live_last = copied[name].get("journal_last")
            if live_last is not None and live_last != s["last_seq"]:
                raise Refused(f"{name}: the copy ends at batch {s['last_seq']}, its transaction "
                              f"saw {live_last}: the copy is not consistent")
            s.update(dir=name, copy_s=copied[name]["copy_s"], copied_at=copied[name]["copied_at"],
                     lmdb_txn_id=copied[name]["txn_id"],
                     violations=[f"{v.invariant}: {v.detail}" for v in violations])
            warnings += [f"{name}: {v}" for v in s["violations"]]
            shards.append(s)
            bar.update(1)
    ctl = _read_control(os.path.join(out, "control"), lock=False) if "control" in copied else None
    if ctl is not None:
        ctl.update(dir="control", copy_s=copied["control"]["copy_s"],
                   copied_at=copied["control"]["copied_at"])

    files = sorted(os.path.relpath(os.path.join(root, f), out)
                   for root, _, fs in os.walk(out) for f in fs)
    total = sum(os.path.getsize(os.path.join(out, f)) for f in files)
    listing = {}
    with _bytes_bar(args, total, "checksums") as bar:
        for rel in files:
            path = os.path.join(out, rel)
            listing[rel] = {"size": os.path.getsize(path), "sha256": _sha256(path, bar)}
    manifest = {
        "format": FORMAT, "created": started.isoformat(),
        "finished": dt.datetime.now(dt.UTC).isoformat(),
        "elapsed_s": round(time.perf_counter() - t0, 3),
        "source": os.path.abspath(data), "host": socket.gethostname(),
        "method": "LMDB compacting copy (mdb_env_copy2, MDB_CP_COMPACT), one read transaction "
                  "per environment",
        "shard_ids": ids, "shards": shards, "control": ctl, "files": listing,
        "total_bytes": total,
    }
    tmp = os.path.join(out, MANIFEST + ".tmp")
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, os.path.join(out, MANIFEST))
    _fsync(out)

    print(f"backed up {len(ids)} shard{'s' if len(ids) != 1 else ''}"
          f"{' and the control store' if ctl else ''} of {data} into {out}: "
          f"{_human(total)} in {time.perf_counter() - t0:.2f} s")
    for s in shards:
        print(f"  {s['dir']}: batch {s['last_seq']}, {s['tickets']} tickets, {s['holds']} holds, "
              f"{s['orders']} orders; venues {', '.join(s['venues']) or '-'}")
    if ctl:
        print(f"  control: {ctl['principals']} principals, {ctl['keys']} API keys, "
              f"{len(ctl['venue_map'])} venues mapped")
    for w in warnings:
        print(f"warning: {w} (the backup is a faithful copy; `turnstile check` the source)",
              file=sys.stderr)
    return 0


# -- restore ----------------------------------------------------------------------------
def _load_manifest(src: str) -> dict:
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


def cmd_restore(args) -> int:
    from engine import Shard

    from .control import ControlStore
    src, target = args.src, args.data
    m = _load_manifest(src)
    master = _master(args)
    files: dict[str, dict] = m["files"]
    _empty_target(target, "target data dir")
    total = sum(f["size"] for f in files.values())

    # 1. every file as the manifest says, before anything is written
    bad = []
    with _bytes_bar(args, total, "verifying") as bar:
        for rel, want in sorted(files.items()):
            path = os.path.join(src, rel)
            if not os.path.isfile(path):
                bad.append(f"{rel}: missing")
                continue
            size = os.path.getsize(path)
            if size != want["size"]:
                bad.append(f"{rel}: {size} bytes, the manifest says {want['size']}")
                bar.update(want["size"])
                continue
            got = _sha256(path, bar)
            if got != want["sha256"]:
                bad.append(f"{rel}: sha256 {got[:16]}..., the manifest says {want['sha256'][:16]}...")
    if bad:
        for b in bad:
            print(f"checksum: {b}", file=sys.stderr)
        raise Refused(f"the backup in {src} is damaged ({len(bad)} file{'s' if len(bad) > 1 else ''}); "
                      f"nothing was restored")
    # the master key must unwrap every shard's key before anything is written
    from engine import keyring
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
        with _bytes_bar(args, total, "restoring") as bar:
            for rel, want in sorted(files.items()):
                dst = os.path.join(staging, rel)
                os.makedirs(os.path.dirname(dst), mode=0o700, exist_ok=True)
                h = hashlib.sha256()
                fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with open(os.path.join(src, rel), "rb") as fin, os.fdopen(fd, "wb") as fout:
                    while chunk := fin.read(CHUNK):
                        h.update(chunk)
                        fout.write(chunk)
                        bar.update(len(chunk))
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
    print(f"restored {len(files)} files ({_human(total)}) from {src} (taken {m['created']}) "
          f"into {target}")

    # 3. open every shard with the engine, check it, compare with the manifest
    problems = []
    with _bar(args, total=len(m["shards"]), desc="checking", unit="shard") as bar:
        for want in m["shards"]:
            k = want["shard"]
            path = os.path.join(target, want["dir"])
            try:
                shard = Shard.open(path, shard_id=k, master_key=master)
            except Exception as e:  # noqa: BLE001 (reported: restore exits 1)
                problems.append(f"{want['dir']}: does not open: {e}")
                bar.update(1)
                continue
            try:
                violations = shard.check(replay=args.replay)
                got = _summary(shard)
            finally:
                _close(shard)
            for v in violations:
                problems.append(f"{want['dir']}: {v.invariant}: {v.detail}")
            # a backup from before master keys is wrapped as it opens: a new snapshot
            moved = {"snapshot_seq"} if wrapping[want["dir"]] == "clear" else set()
            diff = [f"{key} {got[key]!r} (manifest {want.get(key)!r})" for key in COMPARED
                    if key in want and key not in moved and got[key] != want[key]]
            if diff:
                problems.append(f"{want['dir']}: differs from the manifest: {'; '.join(diff)}")
            print(f"  {want['dir']}: {'ok' if not violations and not diff else 'PROBLEMS'}: "
                  f"batch {got['last_seq']}, {got['tickets']} tickets ({got['used']} used, "
                  f"{got['voided']} voided), {got['holds']} holds, {got['orders']} orders; "
                  f"venues {', '.join(got['venues']) or '-'}")
            bar.update(1)
    ctl = m.get("control")
    if ctl:
        store = ControlStore(os.path.join(target, "control"))
        try:
            principals = len(store.list_principals())
            _, venue_map = store.shard_map()
        finally:
            store.close()
        if principals != ctl["principals"] or venue_map != ctl["venue_map"]:
            problems.append(f"control: {principals} principals and map {venue_map}, the manifest "
                            f"says {ctl['principals']} and {ctl['venue_map']}")
        restored = {s["shard"]: s for s in m["shards"]}
        for venue, k in venue_map.items():
            if k not in restored or venue not in restored[k]["venues"]:
                problems.append(f"control: venue {venue} is mapped to shard {k}, which does not hold it")
        print(f"  control: {principals} principals, {len(venue_map)} venues mapped")
    for p in problems:
        print(f"problem: {p}", file=sys.stderr)
    if problems:
        print(f"restore of {target} FAILED the checks ({len(problems)} problems); do not serve it",
              file=sys.stderr)
        return 1
    print(f"{target}: every shard opens, every invariant holds, counts match the manifest")
    return 0


# -- shards -----------------------------------------------------------------------------
def _control(data: str):
    from .control import ControlStore
    return ControlStore(os.path.join(data, "control"))


def _is_empty(shard) -> bool:
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


def _open_shards(args, data: str, ids: Iterable[int], desc: str = "opening shards") -> dict:
    from engine import Shard, ShardUnavailable
    ids = list(ids)
    master = _master(args)
    opened = {}
    try:
        with _bar(args, total=len(ids), desc=desc, unit="shard") as bar:
            for k in ids:
                bar.set_postfix_str(f"shard-{k}")
                try:
                    opened[k] = Shard.open(_shard_path(data, k), shard_id=k, master_key=master)
                except ShardUnavailable as e:
                    raise Refused(f"{e.message}; stop `turnstile serve --data {data}` first") from e
                bar.update(1)
    except BaseException:
        for s in opened.values():
            _close(s)
        raise
    return opened


def _file_bytes(path: str) -> int:
    f = os.path.join(path, "data.mdb")
    return os.path.getsize(f) if os.path.exists(f) else 0


def _used_bytes(shard) -> int:
    info, stat = shard.storage.env.info(), shard.storage.env.stat()
    return (info["last_pgno"] + 1) * stat["psize"]


def cmd_shards_list(args) -> int:
    data = args.data
    _require_offline(data)
    ids = _shard_ids(data)
    if not ids:
        raise Refused(f"no shards in {data}")
    _master(args)
    ctl = (_read_control(os.path.join(data, "control"), lock=True)
           if os.path.isdir(os.path.join(data, "control")) else
           {"endpoints": {}, "venue_map": {}, "shard_count": None})
    venue_map = ctl["venue_map"]
    rows, problems = [], []
    shards = _open_shards(args, data, ids)
    try:
        for k, shard in shards.items():
            s = _summary(shard)
            mapped = [v for v in s["venues"] if venue_map.get(v, k) == k]
            left = {v: venue_map[v] for v in s["venues"] if venue_map.get(v, k) != k}
            rows.append({"shard": k, "dir": f"shard-{k}", "venues": mapped, "unmapped": left,
                         "tickets": s["tickets"], "tickets_by_venue": s["tickets_by_venue"],
                         "holds": s["holds"], "orders": s["orders"], "last_seq": s["last_seq"],
                         "file_bytes": _file_bytes(shard.storage.path),
                         "used_bytes": _used_bytes(shard),
                         "endpoint": ctl["endpoints"].get(str(k)), "empty": _is_empty(shard)})
    finally:
        for s in shards.values():
            _close(s)
    holding = {r["shard"]: set(r["venues"]) | set(r["unmapped"]) for r in rows}
    for v, k in sorted(venue_map.items()):
        if v not in holding.get(k, ()):
            problems.append(f"venue {v} is mapped to shard {k}, which does not hold it")
    count = ctl["shard_count"]
    if count is not None and ids != list(range(count)):
        problems.append(f"the recorded shard count is {count} but the dirs are shard "
                        f"{', '.join(map(str, ids))}")
    if args.json:
        json.dump({"data": data, "shard_count": count, "shards": rows, "venue_map": venue_map,
                   "problems": problems}, sys.stdout, indent=2, sort_keys=True)
        print()
        return 0
    print(f"{data}: {len(ids)} shards; "
          + (f"shard count {count} (set-count: `serve` runs that many)" if count is not None
             else "no shard count recorded (`serve` runs --shards, default one per core)"))
    print(f"{'shard':>5}  {'tickets':>8}  {'holds':>6}  {'orders':>7}  {'file':>10}  {'used':>10}  "
          f"{'endpoint':<21}  venues")
    for r in rows:
        venues = [f"{v} ({r['tickets_by_venue'][v]} tickets)" for v in r["venues"]]
        venues += [f"{v} (catalog left behind; mapped to shard {k})" for v, k in r["unmapped"].items()]
        print(f"{r['shard']:>5}  {r['tickets']:>8}  {r['holds']:>6}  {r['orders']:>7}  "
              f"{_human(r['file_bytes']):>10}  {_human(r['used_bytes']):>10}  "
              f"{r['endpoint'] or '-':<21}  {', '.join(venues) or '-'}")
    for p in problems:
        print(f"problem: {p}")
    return 0


def cmd_shards_set_count(args) -> int:
    data, n = args.data, args.count
    if n < 1:
        raise Refused("the shard count is at least 1")
    if not os.path.isdir(data):
        raise Refused(f"no data dir {data}")
    _require_offline(data)
    master = _master(args)
    for k in _shard_ids(data):                   # before any shard is dropped or made
        keyring_state(_shard_path(data, k), master)
    ids = _shard_ids(data)
    existing = [k for k in ids if k < n]
    beyond = [k for k in ids if k >= n]
    created, removed = [], []
    shards = _open_shards(args, data, beyond, desc="checking shards to drop")
    try:
        full = {k: s for k, s in shards.items() if not _is_empty(s)}
    finally:
        for s in shards.values():
            _close(s)
    store = _control(data)
    try:
        _, venue_map = store.shard_map()
        if full:
            top = max(full)
            venues = list(full[top].state.venues)
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
            shutil.rmtree(_shard_path(data, k))
            removed.append(k)
        missing = [k for k in range(n) if k not in existing]
        with _bar(args, total=len(missing), desc="creating shards", unit="shard") as bar:
            from engine import Shard
            for k in missing:
                Shard.open(_shard_path(data, k), shard_id=k, master_key=master).close()
                created.append(k)
                bar.update(1)
        store.set_shard_count(n)
    finally:
        store.close()
    _fsync(data)
    print(f"{data}: shard count {n}"
          + (f"; created shard {', '.join(map(str, created))}" if created else "")
          + (f"; removed empty shard {', '.join(map(str, removed))}" if removed else "")
          + (" (no change to the shard dirs)" if not created and not removed else ""))
    print(f"  recorded in {os.path.join(data, 'control')}: `turnstile serve --data {data}` now runs "
          f"{n} shard processes unless --shards/TURNSTILE_SHARDS/config says more "
          f"(it refuses fewer); endpoints of shard >= {n} were dropped, new shards record theirs "
          f"when they start")
    return 0


def _catalog_commands(st, venue: str) -> tuple[list, dict[str, int]]:
    """Engine commands that rebuild `venue`'s catalog: venue, zones, gates, products,
    slots (with their current capacity) and allotments. Zone, gate, product and slot ids
    are unique within their venue, so every command names the venue."""
    from engine import cmd
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


def cmd_shards_move(args) -> int:
    from engine import TurnstileError
    data, venue, to = args.data, args.venue, args.to
    _require_offline(data)
    _master(args)
    ids = _shard_ids(data)
    if to not in ids:
        raise Refused(f"there is no shard {to} in {data} (shards: {', '.join(map(str, ids)) or 'none'}); "
                      f"`turnstile shards set-count {to + 1} --data {data}` creates it")
    store = _control(data)
    try:
        count = store.shard_count()
        if count is not None and to >= count:
            raise Refused(f"shard {to} is beyond the recorded shard count {count}; "
                          f"`turnstile shards set-count {to + 1}` first")
        src = store.venue_shard(venue)
        with _bar(args, total=4, desc=f"moving {venue}", unit="step") as bar:
            if src is None:                  # never served: find the shard whose catalog has it
                found = []
                for k, shard in _open_shards(args, data, ids, desc="finding venue").items():
                    if venue in shard.state.venues:
                        found.append(k)
                    _close(shard)
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
            shards = _open_shards(args, data, [src, to])
            bar.update(1)
            source, target = shards[src], shards[to]
            applied = False
            try:
                st = source.state
                if venue not in st.venues:
                    raise Refused(f"the venue map puts {venue} on shard {src}, whose catalog lacks it")
                tickets = sum(r["issued"] for r in source.ticket_counts(venue))
                now = time.time()
                holds = sum(1 for h in st.holds.values() if h["expires_at"] > now and any(
                    st.product_list[ln["p"]].venue == venue for ln in h["lines"]))
                if tickets or holds:
                    what = " and ".join(x for x in (
                        f"{tickets} issued ticket{'s' if tickets != 1 else ''}" if tickets else "",
                        f"{holds} active hold{'s' if holds != 1 else ''}" if holds else "") if x)
                    raise Refused(
                        f"venue {venue} on shard {src} has {what}: ticket codes carry their shard "
                        f"id ({src}) and its orders and holds live there, so it cannot move without "
                        f"reissuing those codes; nothing was changed")
                commands, sizes = _catalog_commands(st, venue)
                # zone, gate, product and slot ids are per venue: only the venue id can clash
                if venue in target.state.venues:
                    raise Refused(f"shard {to} already has venue {venue} (a catalog left there by "
                                  f"an earlier move: the engine cannot remove it), so {venue} "
                                  f"cannot move there; nothing was changed")
                bar.update(1)
                results = target.run_many(commands)       # one batch: one durable transaction
                applied = True
                failed = [(c, r) for c, r in zip(commands, results) if isinstance(r, TurnstileError)]
                if failed:
                    c, r = failed[0]
                    raise Refused(f"shard {to} refused {c.op.name} ({r.code}: {r.message}); "
                                  f"{len(commands) - len(failed)} of {len(commands)} catalog "
                                  f"commands were applied there, the venue map is unchanged "
                                  f"(still shard {src})")
                bar.update(1)
                # the map is what routes; ControlStore.place_venue refuses a venue that is
                # already placed, so this re-placement writes the map entry itself
                with store.env.begin(write=True, db=store.venue_map) as txn:
                    txn.put(venue.encode(), str(to).encode())
                bar.update(1)
            finally:
                _close(target, snapshot=applied)
                _close(source)
    finally:
        store.close()
    print(f"moved venue {venue} from shard {src} to shard {to} ("
          + ", ".join(f"{k} {n}" for k, n in sizes.items()) + "); the venue map now routes it "
          f"to shard {to}")
    print(f"  the engine has no command to remove a venue: shard {src} keeps the old catalog of "
          f"{venue}, unmapped (`serve` no longer places it there; clients route by the map)")
    return 0


# -- the parser -------------------------------------------------------------------------
def _run(func):
    def wrapped(args) -> int:
        try:
            return func(args)
        except Refused as e:
            print(f"turnstile {args.command}{' ' + args.action if getattr(args, 'action', None) else ''}: "
                  f"{e}", file=sys.stderr)
            return 1
    return wrapped


def register(sub) -> None:
    """Add this module's subcommands to the `turnstile` parser."""
    fmt = argparse.RawDescriptionHelpFormatter
    quiet = argparse.ArgumentParser(add_help=False)
    quiet.add_argument("-q", "--quiet", action="store_true",
                       help="no progress bars (they are off anyway when stderr is not a terminal)")

    b = sub.add_parser("backup", parents=[quiet], formatter_class=fmt,
                       help="hot backup of a data dir (works while `serve` runs)",
                       description="""\
A hot backup: copy every shard of DATA and its control store into DIR, while
`turnstile serve` may be running on DATA and taking writes.

Each LMDB environment is copied with LMDB's compacting copy (free pages left out) inside
one read transaction: the copy of a shard is exactly one committed batch of it, never a
torn one. The environment is opened read-only but with LMDB's lock file, so the server's
writer does not reuse pages the copy still reads; the shard's owner.lock is not taken.
Shards are copied one after another (each is consistent in itself). DIR/manifest.json,
written last, records the time, each shard's last journal batch and counts (tickets,
holds, orders, venues), and the size and SHA-256 of every file; `turnstile restore`
checks them.

A backup holds each shard's keys only wrapped by the master key, which it does not
contain: the master key must open every shard before anything is copied, and restoring
needs it. DATA/demo-keys.txt (API keys in clear) is not copied. Files are created mode
0600 in a 0700 directory.""",
                       epilog="example: turnstile backup --data /var/lib/turnstile "
                              "--out /backups/turnstile-$(date +%F)")
    b.add_argument("--data", default="data", help="data dir to back up (default: %(default)s)")
    b.add_argument("--out", required=True, metavar="DIR",
                   help="backup directory: new or empty (refused otherwise)")
    master_key_option(b)
    b.set_defaults(func=_run(cmd_backup))

    r = sub.add_parser("restore", parents=[quiet], formatter_class=fmt,
                       help="restore a backup into a new data dir and check it",
                       description="""\
Restore a `turnstile backup` into a new data dir: verify the size and SHA-256 of every
file against DIR/manifest.json (a damaged backup is refused before anything is
written), check that the master key unwraps every shard's key (refused otherwise,
before anything is written), refuse a non-empty target, copy the files into a staging dir beside the
target and rename it into place, then open every shard with the engine, check every
invariant and compare its counts (last journal batch, tickets, holds, orders, venues)
and the control store's with the manifest. Exit status 1 if anything is wrong.""",
                       epilog="example: turnstile restore --from /backups/turnstile-2026-11-23 "
                              "--data /var/lib/turnstile-restored")
    r.add_argument("--from", dest="src", required=True, metavar="DIR", help="backup directory")
    r.add_argument("--data", required=True, metavar="NEWDATA",
                   help="the data dir to create: new or empty (refused otherwise)")
    r.add_argument("--replay", action="store_true",
                   help="also rebuild each shard from snapshot + journal and compare (slower)")
    master_key_option(r)
    r.set_defaults(func=_run(cmd_restore))

    s = sub.add_parser("shards", formatter_class=fmt,
                       help="list shards, move a venue, set the shard count (offline)",
                       description="""\
Inspect and change how DATA is split into shards. These commands need the data dir
offline: they refuse while a server holds any shard's owner.lock.""")
    ss = s.add_subparsers(dest="action", required=True, metavar="{list,set-count,move}")

    ls = ss.add_parser("list", parents=[quiet], formatter_class=fmt,
                       help="shards, their venues, ticket counts and sizes",
                       description="""\
Open every shard of DATA (offline) and list its venues (as the venue map routes them;
a catalog left behind by `shards move` is shown as such), tickets, holds, orders, the
size of its LMDB file and the part in use, and its last endpoint. Also shows the shard
count recorded by `shards set-count` and any disagreement between the venue map and
the shards.""")
    ls.add_argument("--data", default="data", help="data dir (default: %(default)s)")
    ls.add_argument("--json", action="store_true", help="print JSON instead of a table")
    master_key_option(ls)
    ls.set_defaults(func=_run(cmd_shards_list))

    sc = ss.add_parser("set-count", parents=[quiet], formatter_class=fmt,
                       help="create (or drop empty) shards up to N, record N for `serve`",
                       description="""\
Make DATA have shards 0..N-1 (offline).

Missing shards are created empty (each with its own ticket keys). Shards >= N are
removed only if they hold nothing (no venue, ticket, hold, order or audit record) and
the venue map routes nothing to them; otherwise the count is refused below the highest
such shard + 1. N is recorded in the control store (DATA/control, db "config", key
"shards") together with dropping the endpoints of removed shards; new shards record
their endpoint when they start.

`turnstile serve --data DATA` then runs N shard processes: the recorded count replaces
the default of one per core, --shards / TURNSTILE_SHARDS / the config file may ask for
more, and serve refuses to run fewer than the recorded count (their venues would be
unreachable).""")
    sc.add_argument("count", type=int, metavar="N", help="number of shards")
    sc.add_argument("--data", default="data", help="data dir (default: %(default)s)")
    master_key_option(sc)
    sc.set_defaults(func=_run(cmd_shards_set_count))

    mv = ss.add_parser("move", parents=[quiet], formatter_class=fmt,
                       help="move a venue's catalog to another shard (offline)",
                       description="""\
Move VENUE to shard K (offline): its catalog (venue, zones, gates, products, slots with
their current capacity, allotments) is re-created on shard K with engine commands, in
one batch (one durable transaction), then the venue map routes VENUE to K.

Refused when the venue has issued tickets or active holds: ticket codes carry their
shard id and orders live on their shard, so moving would need reissued codes. Refused
too when shard K already has a venue of that id (zone, gate, product and slot ids are
per venue, so they never clash). The engine has no command to remove a venue, so the
source shard keeps its catalog, unmapped: `serve` does not place it there any more and
clients route by the map.""")
    mv.add_argument("venue", metavar="VENUE", help="venue id")
    mv.add_argument("--to", type=int, required=True, metavar="K", help="target shard id")
    mv.add_argument("--data", default="data", help="data dir (default: %(default)s)")
    master_key_option(mv)
    mv.set_defaults(func=_run(cmd_shards_move))

    mk = sub.add_parser("master-key", formatter_class=fmt,
                        help="create a master key file, or rotate a data dir's master key",
                        description="""\
The master key wraps each shard's data key, which seals the shard's secrets (ticket MAC
keys and Ed25519 seeds, the holder secret, the ID-number data key). It lives outside the
data dir: a file (--master-key-file, TURNSTILE_MASTER_KEY_FILE) or the environment
(TURNSTILE_MASTER_KEY), as 64 hex digits. Without it a data dir or a backup reveals no
secret, and nothing opens one.""")
    mks = mk.add_subparsers(dest="action", required=True, metavar="{create,rotate}")
    mc = mks.add_parser("create", formatter_class=fmt, help="write a new random master key file",
                        description="""\
Write 32 random bytes as 64 hex digits to FILE, mode 0600; an existing FILE is never
overwritten (refused, or kept with --if-absent).""")
    mc.add_argument("file", metavar="FILE", help="the key file to create (outside any data dir)")
    mc.add_argument("--if-absent", action="store_true",
                    help="keep FILE if it exists (exit 0) instead of refusing")
    mc.set_defaults(func=_run(cmd_master_key_create))
    mr = mks.add_parser("rotate", formatter_class=fmt,
                        help="re-wrap every shard's key under a new master key (offline)",
                        description="""\
Re-wrap the data key of every shard of DATA under the master key in NEWFILE (offline:
refused while a server holds the data dir). The current key comes as for every command
(--master-key-file, TURNSTILE_MASTER_KEY_FILE, TURNSTILE_MASTER_KEY). Each shard is
re-wrapped in one transaction, then compacted so the old wrapping is not left in a free
page; every shard must open with one of the two keys before any is changed, so a
rotation that stopped halfway is finished by running it again. Afterwards the old key
no longer opens DATA; backups taken before still need it.""")
    mr.add_argument("--data", default="data", help="data dir (default: %(default)s)")
    mr.add_argument("--new-key-file", required=True, metavar="NEWFILE",
                    help="file of the new master key (`turnstile master-key create NEWFILE`)")
    master_key_option(mr)
    mr.set_defaults(func=_run(cmd_master_key_rotate))
