"""`turnstile backup | restore | migrate | shards | master-key`: work on a data dir directly (no gRPC).

    turnstile backup  --data data --out /backups/2026-11-23     hot: works while `serve` runs
    turnstile restore --from /backups/2026-11-23 --data data2    verify, copy, open, check
    turnstile migrate --data data                                 offline: upgrade its format
    turnstile shards list      --data data                        offline (no server on DATA)
    turnstile shards set-count 4 --data data
    turnstile shards move hills --to 2 --data data
    turnstile shards list --etcd 10.0.0.5:2379 --cluster prod    replicated: the map in etcd
    turnstile shards place lingyin --to 1 --etcd ...   | step-down 0 | forget 0 NODE
    turnstile master-key create /etc/turnstile/master.key       64 hex digits, mode 0600
    turnstile master-key rotate --data data --new-key-file /etc/turnstile/master.key.new

Every command that opens a data dir needs its master key (--master-key-file,
TURNSTILE_MASTER_KEY_FILE or TURNSTILE_MASTER_KEY; engine/keyring.py) and checks it
against every shard before it opens, copies or writes anything.

The operations themselves are engine/datadir.py's (how a backup is a consistent copy
beside a running server is told there); this module is their shell: it parses the
arguments, shows their progress as bars on stderr, prints what they did and turns a
refusal into one line on stderr and exit status 1.

`shards` commands and `master-key rotate` need the data dir offline: a running server
holds every shard's owner.lock (flock), and they refuse while any is held.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict

from turnstile.engine import datadir, keyring
from turnstile.engine.datadir import Refused
from .control import ControlStore


# -- helpers ----------------------------------------------------------------------------
class _Bars:
    """engine.datadir's progress as tqdm bars on stderr, one per phase; off with --quiet
    or when stderr is not a terminal."""

    def __init__(self, args):
        self.off = getattr(args, "quiet", False) or not sys.stderr.isatty()
        self.bar = None
        self.phase = None

    def __call__(self, step: datadir.Step) -> None:
        if self.off:
            return
        if step.phase != self.phase:
            from tqdm import tqdm
            self.close()
            self.phase = step.phase
            scale = {"unit_scale": True, "unit_divisor": 1024} if step.unit == "B" else {}
            self.bar = tqdm(file=sys.stderr, dynamic_ncols=True, leave=False, total=step.total,
                            initial=step.done, desc=step.phase, unit=step.unit, **scale)
        if step.item:
            self.bar.set_postfix_str(step.item, refresh=False)
        self.bar.update(step.done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.bar = self.phase = None

    def __enter__(self) -> "_Bars":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


# -- the master key (engine/keyring.py) ---------------------------------------------------
def master_key_option(p) -> None:
    """--master-key-file, for every command that opens a data dir."""
    p.add_argument("--master-key-file", metavar="FILE", default=None,
                   help="file of the master key that wraps the shards' keys, kept outside the "
                        "data dir (default: $TURNSTILE_MASTER_KEY_FILE, else the key itself in "
                        "$TURNSTILE_MASTER_KEY)")


def _key(args) -> dict:
    """The master key options of a command, as engine.datadir takes them."""
    return {"master_key_file": getattr(args, "master_key_file", None)}


def cmd_master_key_create(args) -> int:
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
    r = datadir.rotate_master_key(args.data, args.new_key_file, **_key(args))
    for k, result in r.shards.items():
        print(f"  shard-{k}: {'re-wrapped' if result == 'rotated' else 'already under the new key'}")
    print(f"{args.data}: every shard's key is wrapped under master key {r.key_id} "
          f"({args.new_key_file}); the old key no longer opens it (backups taken before still "
          f"need the old one)")
    return 0


# -- backup and restore -------------------------------------------------------------------
def cmd_backup(args) -> int:
    data, out = args.data, args.out
    with _Bars(args) as bars:
        b = datadir.backup(data, out, progress=bars, **_key(args))
    n = len(b.shards)
    print(f"backed up {n} shard{'s' if n != 1 else ''}"
          f"{' and the control store' if b.control else ''} of {data} into {out}: "
          f"{_human(b.total_bytes)} in {b.elapsed_s:.2f} s")
    for s in b.shards:
        print(f"  shard-{s.shard}: batch {s.last_seq}, {s.tickets} tickets, {s.holds} holds, "
              f"{s.orders} orders; venues {', '.join(s.venues) or '-'}")
    if b.control:
        print(f"  control: {b.control.principals} principals, {b.control.keys} API keys, "
              f"{len(b.control.venue_map)} venues mapped")
    for w in b.warnings:
        print(f"warning: {w} (the backup is a faithful copy; `turnstile check` the source)",
              file=sys.stderr)
    if args.etcd:
        _record_backup(args, b)
    return 0


def _record_backup(args, b) -> None:
    """Replicated mode: each shard of the backup whose copy checked clean is recorded in
    etcd as its latest verified backup -- the position the log of record may be pruned
    up to (server/ownership.py). A shard with problems is not."""
    bad = {e["shard"] for e in b.manifest["shards"] if e.get("violations")}
    out = os.path.abspath(b.out)

    async def run(cluster) -> list[str]:
        said = []
        for s in b.shards:
            if s.shard in bad:
                said.append(f"  shard-{s.shard}: NOT recorded as a verified backup in etcd "
                            f"(its copy has problems)")
            elif await cluster.record_backup(s.shard, s.last_seq, out):
                said.append(f"  shard-{s.shard}: recorded in etcd as its latest verified backup "
                            f"(batch {s.last_seq}): its log of record may be pruned up to it")
            else:
                said.append(f"  shard-{s.shard}: etcd records a backup of a later batch; kept")
        return said
    for line in _etcd_call(args, run):
        print(line)


def cmd_restore(args) -> int:
    src, target = args.src, args.data
    try:
        with _Bars(args) as bars:
            r = datadir.restore(src, target, replay=args.replay, progress=bars, **_key(args))
    except datadir.BackupDamaged as e:
        for d in e.damaged:
            print(f"checksum: {d}", file=sys.stderr)
        raise
    print(f"restored {r.files} files ({_human(r.total_bytes)}) from {src} (taken {r.created}) "
          f"into {target}")
    for s in r.shards:
        got = s.summary
        if got is None:                          # did not open: a problem below
            continue
        print(f"  {s.dir}: {'ok' if s.ok else 'PROBLEMS'}: "
              f"batch {got.last_seq}, {got.tickets} tickets ({got.used} used, "
              f"{got.voided} voided), {got.holds} holds, {got.orders} orders; "
              f"venues {', '.join(got.venues) or '-'}")
    if r.control:
        print(f"  control: {r.control.principals} principals, {len(r.control.venue_map)} "
              f"venues mapped")
    for p in r.problems:
        print(f"problem: {p}", file=sys.stderr)
    if r.problems:
        print(f"restore of {target} FAILED the checks ({len(r.problems)} problems); do not serve it",
              file=sys.stderr)
        return 1
    print(f"{target}: every shard opens, every invariant holds, counts match the manifest")
    return 0


def cmd_migrate(args) -> int:
    data = args.data
    with _Bars(args) as bars:
        m = datadir.migrate(data, backup_to=args.backup_to, progress=bars, **_key(args))
    if m.backup is None:
        print(f"{data}: every shard is already of format {m.format}; nothing to do")
        return 0
    print(f"backed up {data} into {m.backup} (verified against its manifest)")
    for s in m.shards:
        newest, oldest = s.before
        was = f"format {oldest}" + (f" to {newest}" if newest != oldest else "")
        if s.action == "migrated":
            print(f"  shard-{s.shard}: {was} -> {m.format}: a new snapshot, {s.journal_batches} "
                  f"journal batches folded into it")
        else:
            print(f"  shard-{s.shard}: already format {m.format}")
    print(f"{data} is of format {m.format} (in {m.elapsed_s:.2f} s); builds before it no longer "
          f"open it: the backup is the way back")
    return 0


# -- shards -----------------------------------------------------------------------------
def cmd_shards_list(args) -> int:
    data = args.data
    with _Bars(args) as bars:
        listing = datadir.list_shards(data, progress=bars, **_key(args))
    if args.json:
        json.dump(asdict(listing), sys.stdout, indent=2, sort_keys=True)
        print()
        return 0
    count = listing.shard_count
    print(f"{data}: {len(listing.shards)} shards; "
          + (f"shard count {count} (set-count: `serve` runs that many)" if count is not None
             else "no shard count recorded (`serve` runs --shards, default one per core)"))
    print(f"{'shard':>5}  {'tickets':>8}  {'holds':>6}  {'orders':>7}  {'file':>10}  {'used':>10}  "
          f"{'endpoint':<21}  venues")
    for r in listing.shards:
        venues = [f"{v} ({r.tickets_by_venue[v]} tickets)" for v in r.venues]
        venues += [f"{v} (catalog left behind; mapped to shard {k})" for v, k in r.unmapped.items()]
        print(f"{r.shard:>5}  {r.tickets:>8}  {r.holds:>6}  {r.orders:>7}  "
              f"{_human(r.file_bytes):>10}  {_human(r.used_bytes):>10}  "
              f"{r.endpoint or '-':<21}  {', '.join(venues) or '-'}")
    for p in listing.problems:
        print(f"problem: {p}")
    return 0


def cmd_shards_set_count(args) -> int:
    data, n = args.data, args.count
    with _Bars(args) as bars:
        r = datadir.set_shard_count(data, n, open_map=ControlStore, progress=bars, **_key(args))
    print(f"{data}: shard count {n}"
          + (f"; created shard {', '.join(map(str, r.created))}" if r.created else "")
          + (f"; removed empty shard {', '.join(map(str, r.removed))}" if r.removed else "")
          + (" (no change to the shard dirs)" if not r.created and not r.removed else ""))
    print(f"  recorded in {os.path.join(data, 'control')}: `turnstile serve --data {data}` now runs "
          f"{n} shard processes unless --shards/TURNSTILE_SHARDS/config says more "
          f"(it refuses fewer); endpoints of shard >= {n} were dropped, new shards record theirs "
          f"when they start")
    return 0


def cmd_shards_move(args) -> int:
    with _Bars(args) as bars:
        m = datadir.move_venue(args.data, args.venue, args.to, open_map=ControlStore,
                               progress=bars, **_key(args))
    print(f"moved venue {m.venue} from shard {m.source} to shard {m.target} ("
          + ", ".join(f"{k} {n}" for k, n in m.sizes.items()) + "); the venue map now routes it "
          f"to shard {m.target}")
    print(f"  the engine has no command to remove a venue: shard {m.source} keeps the old catalog "
          f"of {m.venue}, unmapped (`serve` no longer places it there; clients route by the map)")
    return 0


# -- the shard map in etcd (replicated mode) ------------------------------------------------
def etcd_options(p, *, required: bool = False) -> None:
    """--etcd and --cluster, as `turnstile serve` takes them (env TURNSTILE_ETCD,
    TURNSTILE_CLUSTER)."""
    env = os.environ.get("TURNSTILE_ETCD") or None
    p.add_argument("--etcd", metavar="HOST:PORT", default=env, required=required and env is None,
                   help="etcd endpoint of a replicated cluster (default: $TURNSTILE_ETCD)")
    p.add_argument("--cluster", default=os.environ.get("TURNSTILE_CLUSTER", "default"),
                   help="the cluster's name in etcd, as `serve --cluster` (default: "
                        "$TURNSTILE_CLUSTER, else %(default)s)")


def _cluster(args):
    from .ownership import Cluster
    try:
        return Cluster(args.etcd, cluster=args.cluster)
    except ValueError as e:
        raise Refused(str(e)) from None


def _etcd_call(args, work):
    """await work(cluster) on the cluster of --etcd/--cluster, then close it; etcd
    unreachable or refusing: Refused, one line."""
    import asyncio

    async def run():
        cluster = _cluster(args)
        try:
            return await work(cluster)
        finally:
            await cluster.close()
    try:
        return asyncio.run(run())
    except Refused:
        raise
    except Exception as e:
        raise Refused(f"etcd at {args.etcd} (cluster {args.cluster}): {type(e).__name__}: "
                      f"{e or 'no answer'}") from None


def _ago(at) -> str:
    import time
    if not at:
        return "never"
    d = max(0.0, time.time() - float(at))
    return f"{d:.0f} s ago" if d < 120 else f"{d / 60:.0f} min ago" if d < 7200 else f"{d / 3600:.0f} h ago"


def cmd_shards_detach(args) -> int:
    gone = datadir.detach(args.data)
    if not gone:
        print(f"{args.data}: no shard is replicated; nothing to do")
        return 0
    for k, cluster in sorted(gone.items()):
        print(f"shard-{k}: detached from cluster {cluster}: it stands alone from now on")
    print(f"{args.data} is served without --etcd/--pg from now on; the cluster's log of record "
          f"and other nodes no longer get these shards' changes, and once it has written on its "
          f"own this copy can't rejoin the cluster (start a node from a new backup instead)")
    return 0


def cmd_shards_list_etcd(args) -> int:
    async def run(cluster):
        return await cluster.shards(), await cluster.venues()
    shards, venues = _etcd_call(args, run)
    if args.json:
        json.dump({"cluster": args.cluster, "shards": {str(k): v for k, v in sorted(shards.items())},
                   "venues": venues}, sys.stdout, indent=2, sort_keys=True)
        print()
        return 0
    print(f"cluster {args.cluster} in etcd at {args.etcd}: {len(shards)} shards, {len(venues)} venues")
    for k, s in sorted(shards.items()):
        primary = s["owner"] or "NONE (no owner: a standby takes over once it can)"
        print(f"shard {k}: primary {primary}, epoch {s['epoch']}")
        end = max([int(n.get("seq", 0)) for n in s["nodes"].values()] or [0])
        for name, n in sorted(s["nodes"].items()):
            role = "primary" if name == s["owner"] else \
                "was primary" if n.get("role") == "primary" else n.get("role", "?")
            behind = end - int(n.get("seq", 0))
            print(f"  {role:<12} {name:<21}  batch {n.get('seq', 0)}"
                  + (f" ({behind} behind)" if behind else "") + f", seen {_ago(n.get('at'))}"
                  + ("" if name in s["live"] else ", not running"))
        b = s["backup"]
        print("  backup       " + (f"batch {b.get('seq', 0)} in {b.get('out', '?')}, {_ago(b.get('at'))}"
                                   if b else "none recorded (the log of record is not pruned)"))
        mine = sorted(v for v, h in venues.items() if h == k)
        print(f"  venues       {', '.join(mine) or '-'}")
    for v, h in sorted(venues.items()):
        if h not in shards:
            print(f"venue {v}: mapped to shard {h}, which has no node")
    return 0


def cmd_shards_place(args) -> int:
    from turnstile.engine import ID_PATTERN
    if not ID_PATTERN.match(args.venue):
        raise Refused(f"{args.venue!r} is not a venue id (1-64 letters, digits or ._:@/-, "
                      f"a letter or digit first)")
    if args.to < 0:
        raise Refused(f"no shard {args.to}")
    home = _etcd_call(args, lambda cluster: cluster.place_venue(args.venue, args.to))
    if home != args.to:
        raise Refused(f"venue {args.venue} is mapped to shard {home} already (a venue of a "
                      f"replicated cluster does not move: `shards move` refuses its shards)")
    print(f"venue {args.venue} is mapped to shard {home} in cluster {args.cluster}: "
          f"CreateVenue is taken by shard {home}'s primary only")
    return 0


def cmd_shards_step_down(args) -> int:
    if args.shard < 0:
        raise Refused(f"no shard {args.shard}")

    owner = _etcd_call(args, lambda cluster: cluster.step_down(args.shard))
    if owner is None:
        raise Refused(f"shard {args.shard} has no primary in cluster {args.cluster}")
    print(f"shard {args.shard}: the lease of its primary {owner} is revoked; it stops writing "
          f"at its next renewal and comes back as a standby, and a standby takes the shard "
          f"over (`turnstile shards list --etcd` shows which)")
    return 0


def cmd_shards_forget(args) -> int:
    if args.shard < 0 or not args.node or "/" in args.node:
        raise Refused(f"no node {args.node!r} of shard {args.shard}")

    if not _etcd_call(args, lambda cluster: cluster.forget(args.shard, args.node)):
        raise Refused(f"shard {args.shard} has no node {args.node} in cluster {args.cluster}")
    print(f"shard {args.shard}: node {args.node} forgotten; its log of record is no longer kept "
          f"for it (a node that comes back records itself again, and is refused if the log "
          f"was pruned past it)")
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
0600 in a 0700 directory.

Replicated mode (--etcd): each shard whose copy checked clean is then recorded in etcd
as the shard's latest verified backup, with its last batch. A primary prunes its log of
record only up to what every node of the shard and that backup hold, so a new standby
restored from it can always follow the log after it.""",
                       epilog="example: turnstile backup --data /var/lib/turnstile "
                              "--out /backups/turnstile-$(date +%F)")
    b.add_argument("--data", default="data", help="data dir to back up (default: %(default)s)")
    b.add_argument("--out", required=True, metavar="DIR",
                   help="backup directory: new or empty (refused otherwise)")
    master_key_option(b)
    etcd_options(b)
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

    mg = sub.add_parser("migrate", parents=[quiet], formatter_class=fmt,
                        help="upgrade a data dir to this version's format (offline)",
                        description="""\
Upgrade every shard of DATA in place to the journal and snapshot format of this version.

A newer version opens an older data dir as it is (it replays its old records by what
they say was decided), but keeps them, and once it has opened it the older version no
longer does. `migrate` leaves no record of an older format: it refuses while a server
holds any shard, refuses a data dir of a newer format than its own, does nothing if
every shard is current (running it twice is fine), and otherwise first backs DATA up
(as `turnstile backup`, into --backup-to) and verifies the backup's files against its
manifest. Then each shard is opened, checked, and rewritten in one transaction as a
snapshot of this format (its journal folded into it), opened again and compared. If
anything differs it stops and names the backup to restore.""",
                        epilog="example: turnstile migrate --data /var/lib/turnstile "
                               "--backup-to /backups/turnstile-before-upgrade")
    mg.add_argument("--data", default="data", help="data dir to upgrade (default: %(default)s)")
    mg.add_argument("--backup-to", metavar="DIR", default=None,
                    help="where the backup goes: new or empty (default: DATA.pre-migrate-<UTC "
                         "time> beside DATA)")
    master_key_option(mg)
    mg.set_defaults(func=_run(cmd_migrate))

    s = sub.add_parser("shards", formatter_class=fmt,
                       help="list shards, move a venue, set the shard count; the map in etcd",
                       description="""\
Inspect and change how DATA is split into shards. `list` (without --etcd), `set-count`,
`move` and `detach` work on the data dir and need it offline: they refuse while a server
holds any shard's owner.lock.

In replicated mode (`serve --etcd --pg`) the shard map is the cluster's, in etcd:
`list --etcd` reads it (each shard's primary and epoch, every node with the batch it
holds, the latest verified backup, the venues), `place` maps a new venue to a shard,
`step-down` hands a shard over to a standby, `forget` drops a node taken out of service.""")
    ss = s.add_subparsers(dest="action", required=True,
                          metavar="{list,set-count,move,detach,place,step-down,forget}")

    ls = ss.add_parser("list", parents=[quiet], formatter_class=fmt,
                       help="shards, their venues, ticket counts and sizes; or the map in etcd",
                       description="""\
Open every shard of DATA (offline) and list its venues (as the venue map routes them;
a catalog left behind by `shards move` is shown as such), tickets, holds, orders, the
size of its LMDB file and the part in use, and its last endpoint. Also shows the shard
count recorded by `shards set-count` and any disagreement between the venue map and
the shards.

With --etcd (replicated mode): the cluster's map in etcd instead, with no data dir --
each shard's primary and epoch; each node of it (primary, standby, or a former primary
not back yet) with the last batch it holds, how far behind the most advanced it is,
when it last said so, and whether it runs now (its lease-bound key in etcd); the latest
verified backup; the venues mapped to it.""")
    ls.add_argument("--data", default="data", help="data dir (default: %(default)s)")
    ls.add_argument("--json", action="store_true", help="print JSON instead of a table")
    master_key_option(ls)
    etcd_options(ls)
    ls.set_defaults(func=_run(lambda a: (cmd_shards_list_etcd if a.etcd else cmd_shards_list)(a)))

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
clients route by the map. Refused on a shard of a replicated cluster (it has served or
followed with --etcd --pg): the batch would bypass its log of record and its standbys.""")
    mv.add_argument("venue", metavar="VENUE", help="venue id")
    mv.add_argument("--to", type=int, required=True, metavar="K", help="target shard id")
    mv.add_argument("--data", default="data", help="data dir (default: %(default)s)")
    master_key_option(mv)
    mv.set_defaults(func=_run(cmd_shards_move))

    dt_ = ss.add_parser("detach", formatter_class=fmt,
                        help="make the replicated shards of DATA stand alone again (offline)",
                        description="""\
Make every replicated shard of DATA (one that has served or followed with --etcd --pg)
a shard of its own again, offline. A replicated shard is written by its primary only,
through its log of record: offline tools that write batches (`demo`, `shards move`)
refuse it, and `serve` without --etcd refuses to start on it. After `detach` they
take it again.

For leaving replicated mode on this machine. Stop the cluster's other nodes of these
shards first: they would still take a shard over. Once it has written on its own, this
copy cannot rejoin the cluster (it holds batches the log of record lacks, and the log
refuses it); a node of the cluster starts from a new backup instead.""",
                        epilog="example: turnstile shards detach --data data")
    dt_.add_argument("--data", default="data", help="data dir (default: %(default)s)")
    dt_.set_defaults(func=_run(cmd_shards_detach))

    pl = ss.add_parser("place", formatter_class=fmt, help="map a new venue to a shard (etcd)",
                       description="""\
Replicated mode: map VENUE to shard K in the cluster's venue map in etcd, before the
venue is created; AdminService.CreateVenue is then taken by shard K's primary only (the
others answer ALREADY_EXISTS naming K). Refused if VENUE is mapped already: a venue of
a replicated cluster does not move (`shards move` refuses its shards). Without `place`,
a venue is mapped to the shard whose primary creates it.""",
                       epilog="example: turnstile shards place lingyin --to 1 --etcd 10.0.0.5:2379")
    pl.add_argument("venue", metavar="VENUE", help="venue id")
    pl.add_argument("--to", type=int, required=True, metavar="K", help="shard id")
    etcd_options(pl, required=True)
    pl.set_defaults(func=_run(cmd_shards_place))

    sd = ss.add_parser("step-down", formatter_class=fmt,
                       help="hand shard K over to a standby (etcd)",
                       description="""\
Replicated mode: revoke the etcd lease of shard K's primary. It stops acknowledging
writes at its next renewal (a third of the lease at most; a write it still sends is
refused by the log of record once a standby has claimed the shard), exits, and its node
restarts it as a standby; a standby takes the shard over with a new epoch, as after a
failure. For a planned switch (maintenance of the primary's machine).""",
                       epilog="example: turnstile shards step-down 0 --etcd 10.0.0.5:2379")
    sd.add_argument("shard", type=int, metavar="K", help="shard id")
    etcd_options(sd, required=True)
    sd.set_defaults(func=_run(cmd_shards_step_down))

    fg = ss.add_parser("forget", formatter_class=fmt,
                       help="drop a node taken out of service from shard K (etcd)",
                       description="""\
Replicated mode: drop NODE (its address, as `list --etcd` shows it) from shard K's
nodes in etcd. A node that is down still holds back the pruning of the log of record at
the last batch it held, so it can come back and catch up; forget one that will not come
back. If it does, it records itself again -- and is refused if the log was pruned past
it (restore it from a newer backup).""",
                       epilog="example: turnstile shards forget 0 10.0.0.7:50051 --etcd 10.0.0.5:2379")
    fg.add_argument("shard", type=int, metavar="K", help="shard id")
    fg.add_argument("node", metavar="NODE", help="the node's name (its address)")
    etcd_options(fg, required=True)
    fg.set_defaults(func=_run(cmd_shards_forget))

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
