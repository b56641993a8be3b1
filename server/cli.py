"""The data-dir commands of `turnstile` (clients/cli is the entry point; it adds these).

    turnstile serve --data data     serve every shard over gRPC on 127.0.0.1
    turnstile demo  --data data     seed the demo venue into an empty data dir
    turnstile info  --data data     what each shard holds
    turnstile check --data data     verify every invariant and audit chain (exit 1 if broken)
    turnstile audit verify|archive  verify the audit chains read-only; archive old segments
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import sys

import qrcode
import qrcode.image.pure

from turnstile.engine import Shard, TurnstileError, NotFound, cmd, demo, HoldItem, keyring


def _shard_dirs(data: str) -> list[str]:
    """DATA/shard-N, by N; NotFound (one line, exit 1) if there is none."""
    names = os.listdir(data) if os.path.isdir(data) else []
    ids = sorted(int(n[6:]) for n in names if n.startswith("shard-") and n[6:].isdigit())
    if not ids:
        raise NotFound(f"no shards in {data}", hint=f"run `turnstile demo --data {data}` first")
    return [os.path.join(data, f"shard-{k}") for k in ids]


def _open(path: str, args) -> Shard:
    return Shard.open(path, shard_id=int(os.path.basename(path).split("-")[1]),
                      master_key=keyring.load_master_key(key_file=args.master_key_file))


def cmd_demo(args) -> int:
    """Seed the demo venue into DATA/shard-0 once; on every run keep its slots a week
    ahead of today and print today's demo tickets: codes that verify now, with a QR."""
    path = os.path.join(args.data, "shard-0")
    shard = _open(path, args)
    try:
        today = demo.venue_today(shard.clock())
        start = dt.date.fromisoformat(args.start) if args.start else today
        if not shard.venues():
            shard.run_many(demo.commands(start, args.days))
            print(f"{path}: seeded venue {demo.VENUE} with {args.days} days of slots from {start}")
        else:
            print(f"{path}: already seeded ({', '.join(shard.venues())}); its catalog left as it is")
            new = demo.slot_commands(today, args.days,
                                     skip=lambda sid: demo.VENUE in shard.venues_with("slot", sid))
            if new:
                shard.run_many(new)
                print(f"  added the demo's slots up to {today + dt.timedelta(days=args.days - 1)}")
        if demo.VENUE not in shard.venues_with("slot", demo.day_slot_id(today)):
            print(f"no demo tickets: the demo has no slots on {today} (venue time)")
            return 0
        # two adult tickets of today's whole-day slot: they verify now, whatever the hour
        order_id = f"demo-{today:%Y%m%d}"
        try:
            codes = shard.order_codes(order_id, "web")
        except NotFound:
            h = shard.run(cmd.hold("web", demo.VENUE, [HoldItem("adult", (demo.day_slot_id(today),), 2)]))
            codes = [t.code for t in shard.run(cmd.confirm(h.hold_id, order_id, "web", method="cash",
                                                           amount_fen=h.amount_fen)).tickets]
        print(f"demo order {order_id}: 2 adult tickets for today ({today}, venue time), each "
              f"admits once (re-entry after an exit) until midnight at gate north-1:")
        for code in codes:
            print(f"  {code}")
        with open(os.path.join(args.data, "demo-tickets.txt"), "w") as f:
            f.write("".join(c + "\n" for c in codes))
        print(f"  also in {os.path.join(args.data, 'demo-tickets.txt')}")
        png = os.path.join(args.data, "demo-ticket.png")
        with open(png, "wb") as f:
            qrcode.make(codes[0], image_factory=qrcode.image.pure.PyPNGImage).save(f)
        print(f"  the first as a QR code: {png}")
        return 0
    finally:
        shard.close()


def cmd_info(args) -> int:
    dirs = _shard_dirs(args.data)
    keyring.load_master_key(key_file=args.master_key_file)   # before any shard
    for path in dirs:
        shard = _open(path, args)
        try:
            n = shard.summary()
            print(f"{path}: opened in {shard.recovery['total_s'] * 1000:.1f} ms "
                  f"({shard.recovery['replayed']} journal records replayed)")
            print(f"  venues {n.venues}, zones {n.zones}, gates {n.gates}, "
                  f"products {n.products}, slots {n.slots}, active holds {n.holds}")
            print(f"  tickets issued {n.issued}, used {n.used}, inside {n.inside}, "
                  f"voided {n.voided}, blocked {n.blocked}")
            for (venue, z), inside in n.inside_by_zone.items():
                print(f"  zone {z} of {venue}: {inside} inside")
            print(f"  ticket keys {n.keys} (issuing {n.issuing_key}); "
                  f"LMDB map used {n.map_use:.2%}")
        finally:
            shard.close(snapshot=False)
    return 0


def cmd_check(args) -> int:
    dirs = _shard_dirs(args.data)
    bad = 0
    keyring.load_master_key(key_file=args.master_key_file)   # before any shard
    for path in dirs:
        shard = _open(path, args)
        try:
            found = shard.check(replay=args.replay)
            chain = shard.check_audit()
        finally:
            shard.close(snapshot=False)
        for v in found:
            print(f"{path}: {v.invariant}: {v.detail}")
        print(f"{path}: {chain.summary()}")
        bad += len(found) + (not chain.ok)
        if not found and chain.ok:
            print(f"{path}: ok")
    from turnstile.engine.datadir import mode_warnings
    for w in mode_warnings(args.data, keyring.key_source(args.master_key_file)):
        print(f"warning: {w}", file=sys.stderr)
    return 1 if bad else 0


def cmd_audit_verify(args) -> int:
    """Verify every shard's audit chain read-only, beside a running server or not."""
    from turnstile.engine import audit
    from turnstile.engine.storage import Storage
    dirs = _shard_dirs(args.data)
    try:
        master = keyring.load_master_key(key_file=args.master_key_file)
    except keyring.MasterKeyError:
        if args.master_key_file:
            raise
        master = None
        print("no master key: checkpoints are verified with each shard's public audit key; "
              "that key row itself is checked against its sealed seed only with the master "
              "key", file=sys.stderr)
    bad = 0
    for path in dirs:
        if not os.path.exists(os.path.join(path, "data.mdb")):
            print(f"{path}: not a shard (no data.mdb)")
            bad += 1
            continue
        storage = Storage(path, readonly=True, lock=True)
        try:
            ring = None
            wrapped = storage.get_meta_bytes("dek")
            if master is not None and wrapped is not None:
                ring = keyring.Keyring(keyring.unwrap_dek(master, wrapped, path))
            with storage.env.begin() as txn:
                chain = audit.verify_chain(int(os.path.basename(path).split("-")[1]), txn,
                                           storage.rows, storage.meta,
                                           os.path.join(path, audit.ARCHIVE_DIR), ring)
        finally:
            storage.close()
        print(f"{path}: {chain.summary()}")
        bad += not chain.ok
    return 1 if bad else 0


def cmd_audit_archive(args) -> int:
    """Archive every shard's old audit segments to files, verified, then prune them."""
    from turnstile.engine.datadir import require_offline
    dirs = _shard_dirs(args.data)
    require_offline(args.data)
    keyring.load_master_key(key_file=args.master_key_file)   # before any shard
    bad = 0
    for path in dirs:
        shard = _open(path, args)
        try:
            written = shard.archive_audit(keep=args.keep, segment_records=args.segment)
            pruned = shard.prune_audit()
            chain = shard.check_audit()
        finally:
            shard.close(snapshot=False)
        n = sum(s.last - s.first + 1 for s in written)
        print(f"{path}: archived {n} records in {len(written)} new segments, pruned "
              f"{pruned} rows; {chain.summary()}")
        bad += not chain.ok
    return 1 if bad else 0


def _config(args):
    from .config import ServerConfig, load
    return load(args.config, **{name: getattr(args, name) for name in ServerConfig.model_fields})


def cmd_serve(args) -> int:
    from .app import supervise
    return supervise(_config(args), args.config)


def cmd_serve_shard(args) -> int:
    from .app import run_shard
    run_shard(_config(args), args.shard)
    return 0


def _serve_options(s) -> None:
    """One option per ServerConfig field; None means: not given (env, TOML, default)."""
    from .config import ServerConfig
    s.add_argument("--config", metavar="FILE", help="TOML file of these options (keys as below, "
                                                    "with _ for -); TURNSTILE_<NAME> variables "
                                                    "override it, options override both")
    for name, f in ServerConfig.model_fields.items():
        default = "" if f.default is None else f" (default: {f.default})"
        if f.annotation is bool:
            s.add_argument("--" + name.replace("_", "-"), dest=name, default=None,
                           action=argparse.BooleanOptionalAction,
                           help=f"{f.description} (default: no); env TURNSTILE_{name.upper()}")
            continue
        kind = {int: int, float: float}.get(f.annotation, str)
        if f.annotation == (int | None):
            kind = int
        s.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, default=None,
                       metavar=name.upper(),
                       help=f"{f.description}{default}; env TURNSTILE_{name.upper()}")


def _master_key_option(p) -> None:
    from .cli_data import master_key_option
    master_key_option(p)


def register(sub) -> None:
    """Add the data-dir commands to the `turnstile` parser's subcommands `sub` (the
    one entry point is clients/cli; `main` below parses these alone, for `serve`'s
    own shard processes). Each is marked to run through `run`."""
    before = set(sub.choices)

    s = sub.add_parser("serve", help="serve every shard of a data dir over gRPC",
                       description="Serve DATA over gRPC: one process per shard (GateService, "
                                   "SalesService, InventoryService, AdminService, health), shard k "
                                   "on PORT+k. On a new data dir it creates an admin and demo "
                                   "principals and writes their API keys to DATA/demo-keys.txt. "
                                   "A shard process that dies is restarted; SIGTERM or SIGINT "
                                   "drains every shard and stops.")
    _serve_options(s)
    s.set_defaults(func=cmd_serve)

    ss = sub.add_parser("serve-shard", help="serve one shard (what `serve` starts per shard)",
                        description="Serve DATA/shard-N in this process; `turnstile serve` runs "
                                    "one of these per shard, with PORT already its own. It stops "
                                    "if its parent dies.")
    _serve_options(ss)
    ss.add_argument("--shard", type=int, default=0, help="shard id (default: %(default)s)")
    ss.set_defaults(func=cmd_serve_shard)

    d = sub.add_parser("demo", help="seed the demo venue; print tickets that verify now",
                       description="Seed the demo venue (West Lake: 3 zones, 6 gates, 7 products, "
                                   "weekend and holiday prices, a week of slots) into DATA/shard-0 unless it already holds a "
                                   "venue; on every run add the demo's slots up to DAYS days from "
                                   "today, and print today's demo order (2 adult tickets of the "
                                   "whole-day slot, sold once a day: codes that verify now) with "
                                   "the first as a QR code in DATA/demo-ticket.png.")
    d.add_argument("--data", default="data", help="data dir (default: %(default)s)")
    d.add_argument("--days", type=int, default=7, help="days of slots (default: %(default)s)")
    d.add_argument("--start", help="first day, YYYY-MM-DD (default: today)")
    _master_key_option(d)
    d.set_defaults(func=cmd_demo)

    i = sub.add_parser("info", help="what each shard holds",
                       description="Open every shard of DATA and print its contents and recovery time.")
    i.add_argument("--data", default="data", help="data dir (default: %(default)s)")
    _master_key_option(i)
    i.set_defaults(func=cmd_info)

    c = sub.add_parser("check", help="verify every invariant",
                       description="Verify the invariants of every shard in DATA (stock, ticket "
                                   "state sets, head counts) and its audit chain (archive files "
                                   "and hot rows, signed checkpoints, head); exit status 1 if "
                                   "any is violated.")
    c.add_argument("--data", default="data", help="data dir (default: %(default)s)")
    c.add_argument("--replay", action="store_true",
                   help="also rebuild each shard from snapshot + journal and compare")
    _master_key_option(c)
    c.set_defaults(func=cmd_check)

    a = sub.add_parser("audit", help="verify or archive the audit log",
                       description="The audit log of each shard is hash-chained with signed "
                                   "checkpoints (every 1000 records and on close); old segments "
                                   "are archived to files in DATA/shard-N/audit and pruned from "
                                   "the shard. `check` verifies the chain too.")
    acts = a.add_subparsers(dest="action", required=True, metavar="{verify,archive}")
    av = acts.add_parser("verify", help="verify every shard's audit chain (read-only)",
                         description="Verify the audit chain of every shard in DATA -- archive "
                                     "files and hot rows as one chain, every checkpoint's "
                                     "signature, the head -- read-only, beside a running server "
                                     "or not, and print the last checkpoint (note it: a later "
                                     "rollback to before it is found by comparing). Without a "
                                     "master key the checkpoints are verified with the public "
                                     "key the shard keeps; with it, that key is also checked "
                                     "against its sealed seed. Exit status 1 if a chain is "
                                     "broken.")
    av.add_argument("--data", default="data", help="data dir (default: %(default)s)")
    _master_key_option(av)
    av.set_defaults(func=cmd_audit_verify)
    aa = acts.add_parser("archive", help="archive old audit segments to files, then prune them "
                                         "(offline)",
                         description="For every shard of DATA (offline: refused while a server "
                                     "holds it): write the audit records up to a checkpoint at "
                                     "least KEEP records behind the head to files of at least "
                                     "SEGMENT records in DATA/shard-N/audit (JSON lines, each "
                                     "ending with the checkpoint that closes it), fsync and "
                                     "verify each by reading it back, then delete their rows "
                                     "from the shard a slice per transaction, and verify the "
                                     "whole chain. Backups copy these files with the shard.")
    aa.add_argument("--data", default="data", help="data dir (default: %(default)s)")
    aa.add_argument("--keep", type=int, default=10_000,
                    help="records kept in the shard behind the head (default: %(default)s)")
    aa.add_argument("--segment", type=int, default=10_000,
                    help="records per archive file, at least (default: %(default)s)")
    _master_key_option(aa)
    aa.set_defaults(func=cmd_audit_archive)

    from . import cli_data
    cli_data.register(sub)       # backup, restore, shards, master-key: a data dir, offline
    for name in set(sub.choices) - before:
        sub.choices[name].set_defaults(server_command=True)


def build_parser() -> argparse.ArgumentParser:
    """A parser of the data-dir commands alone (`turnstile` itself is clients/cli)."""
    p = argparse.ArgumentParser(prog="turnstile", description="Operate a Turnstile data dir: "
                                "serve it, seed it, check it, back it up.")
    register(p.add_subparsers(dest="command", required=True))
    return p


def run(args) -> int:
    """Run a parsed data-dir command; an engine refusal (a missing or wrong master key,
    a shard held by a running server...) is one line on stderr and exit status 1."""
    try:
        return args.func(args)
    except TurnstileError as e:
        print(f"turnstile {args.command}: {e}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    """Run one data-dir command (`python -m turnstile.server.cli serve-shard ...`, as `serve`
    starts its shards); people run `turnstile`, which is clients/cli."""
    os.umask(0o077)
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
