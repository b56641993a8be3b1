"""The `turnstile` command: operate a data dir of shards.

    turnstile serve --data data     serve every shard over gRPC on 127.0.0.1
    turnstile demo  --data data     seed the demo venue into an empty data dir
    turnstile info  --data data     what each shard holds
    turnstile check --data data     verify every invariant (exit 1 on a violation)
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import sys

from engine import Shard, TurnstileError, cmd, demo, HoldItem, keyring


def _shard_dirs(data: str) -> list[str]:
    if not os.path.isdir(data):
        return []
    return sorted(os.path.join(data, d) for d in os.listdir(data) if d.startswith("shard-"))


def _open(path: str, args) -> Shard:
    return Shard.open(path, shard_id=int(os.path.basename(path).split("-")[1]),
                      master_key=keyring.load_master_key(key_file=args.master_key_file))


def cmd_demo(args) -> int:
    path = os.path.join(args.data, "shard-0")
    shard = _open(path, args)
    try:
        if shard.state.venues:
            print(f"{path}: already seeded ({', '.join(shard.state.venues)}); left as it is")
            return 0
        start = dt.date.fromisoformat(args.start) if args.start else dt.date.today()
        shard.run_many(demo.commands(start, args.days))
        print(f"{path}: seeded venue {demo.VENUE} with {len(shard.state.slot_defs)} slots over "
              f"{args.days} days from {start}")
        # a slot that is over can't be sold: the demo order takes the first one still open
        slot = demo.first_open_main_slot(start, args.days, shard.clock())
        if slot is None:
            print("every demo slot is over: no demo order")
            return 0
        h = shard.run(cmd.hold("web", demo.VENUE, [HoldItem("adult", (slot,), 2)]))
        r = shard.run(cmd.confirm(h.hold_id, "demo-order-1", "web", method="cash",
                                  amount_fen=h.amount_fen))
        print(f"demo order demo-order-1 of 2 adult tickets in slot {slot}:")
        for t in r.tickets:
            print(f"  ticket {t.ticket_id}: {t.code}")
        return 0
    finally:
        shard.close()


def cmd_info(args) -> int:
    dirs = _shard_dirs(args.data)
    if not dirs:
        print(f"no shards in {args.data}; run `turnstile demo --data {args.data}` first", file=sys.stderr)
        return 1
    keyring.load_master_key(key_file=args.master_key_file)   # before any shard
    for path in dirs:
        shard = _open(path, args)
        try:
            st = shard.state
            t = st.tickets
            print(f"{path}: opened in {shard.recovery['total_s'] * 1000:.1f} ms "
                  f"({shard.recovery['replayed']} journal records replayed)")
            print(f"  venues {len(st.venues)}, zones {len(st.zones)}, gates {len(st.gates)}, "
                  f"products {len(st.products)}, slots {len(st.slot_defs)}, active holds {len(st.holds)}")
            print(f"  tickets issued {len(t.issued)}, used {len(t.used)}, inside {len(t.inside)}, "
                  f"voided {len(t.voided)}, blocked {len(t.blocked)}")
            for venue, z in st.zones:
                print(f"  zone {z} of {venue}: {shard.inside(z, venue)} inside")
            print(f"  ticket keys {sorted(st.codec.keys)} (issuing {st.codec.issuing_key}); "
                  f"LMDB map used {shard.storage.map_use():.2%}")
        finally:
            shard.close(snapshot=False)
    return 0


def cmd_check(args) -> int:
    dirs = _shard_dirs(args.data)
    if not dirs:
        print(f"no shards in {args.data}", file=sys.stderr)
        return 1
    bad = 0
    keyring.load_master_key(key_file=args.master_key_file)   # before any shard
    for path in dirs:
        shard = _open(path, args)
        try:
            found = shard.check(replay=args.replay)
        finally:
            shard.close(snapshot=False)
        for v in found:
            print(f"{path}: {v.invariant}: {v.detail}")
        bad += len(found)
        if not found:
            print(f"{path}: ok")
    from .cli_data import mode_warnings
    for w in mode_warnings(args.data, keyring.key_source(args.master_key_file)):
        print(f"warning: {w}", file=sys.stderr)
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
        kind = {int: int, float: float}.get(f.annotation, str)
        if f.annotation == (int | None):
            kind = int
        default = "" if f.default is None else f" (default: {f.default})"
        s.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, default=None,
                       metavar=name.upper(),
                       help=f"{f.description}{default}; env TURNSTILE_{name.upper()}")


def _master_key_option(p) -> None:
    from .cli_data import master_key_option
    master_key_option(p)


def build_parser() -> argparse.ArgumentParser:
    """The `turnstile` parser with every subcommand."""
    p = argparse.ArgumentParser(prog="turnstile", description="Operate a Turnstile data dir: "
                                "serve it, seed it, check it, back it up, run load against it.")
    sub = p.add_subparsers(dest="command", required=True)

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

    d = sub.add_parser("demo", help="seed the demo venue into an empty data dir",
                       description="Seed the demo venue (West Lake: 3 zones, 6 gates, 7 products, "
                                   "a week of slots) and one demo order into DATA/shard-0, "
                                   "unless it already holds a venue.")
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
                                   "state sets, head counts); exit status 1 if any is violated.")
    c.add_argument("--data", default="data", help="data dir (default: %(default)s)")
    c.add_argument("--replay", action="store_true",
                   help="also rebuild each shard from snapshot + journal and compare")
    _master_key_option(c)
    c.set_defaults(func=cmd_check)

    from . import cli_data, cli_loadgen, cli_remote
    cli_data.register(sub)       # backup, restore, shards: a data dir, offline
    cli_remote.register(sub)     # keys, report: a running server, over gRPC
    cli_loadgen.register(sub)    # loadgen: scenario load against a running server
    return p


def commands(parser: argparse.ArgumentParser | None = None, prefix: tuple[str, ...] = ()):
    """Every command path of the CLI, nested subcommands included: ("shards", "move")..."""
    parser = parser or build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield prefix + (name,)
                yield from commands(sub, prefix + (name,))


def main(argv: list[str] | None = None) -> int:
    # whatever the caller's umask, what turnstile creates (data dirs, LMDB files, the
    # control store, demo-keys.txt, backups, key files) is readable by its owner only
    os.umask(0o077)
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except TurnstileError as e:
        # a missing or wrong master key, a shard held by a running server...: one line
        print(f"turnstile {args.command}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
