"""The `turnstile` command, the one entry point for both kinds of command.

    turnstile serve | serve-shard | demo | info | check     server/cli.py: a data dir
    turnstile backup | restore | shards | master-key        server/cli_data.py: a data dir
    turnstile keys | report                                 clients/cli/remote.py: over gRPC
    turnstile loadgen                                       clients/cli/loadgen.py: over gRPC
    turnstile dashboard                                     clients/cli/dashboard.py: a web page, over gRPC

The remote commands are clients of the API like any other and need only the base
install. The data-dir commands belong to the server: they are added from `turnstile.server.cli`
when the server is installed (`turnstile[server]`), and run there. The arrows point
one way: this module knows `turnstile.server.cli`'s `register` and `run`, the server never
imports `clients`.
"""
from __future__ import annotations

import argparse
import os
import sys

from . import dashboard, loadgen, remote


def _server_cli():
    """`turnstile.server.cli`, or None on an install without the server (a gate vendor's)."""
    try:
        from turnstile.server import cli
    except ImportError as e:
        if (e.name or "").split(".")[0] == "turnstile":
            raise                    # our own code is broken: say so, don't hide the commands
        return None                  # a dependency of turnstile[server] is not installed
    return cli


def build_parser() -> argparse.ArgumentParser:
    """The `turnstile` parser with every subcommand this install has."""
    server_cli = _server_cli()
    p = argparse.ArgumentParser(
        prog="turnstile",
        description="Operate Turnstile: serve a data dir, seed it, check it, back it up; "
                    "manage keys, read reports and run load against a running server.",
        epilog=None if server_cli else "serve, demo, check, backup and the other data-dir "
                                       "commands come with `pip install turnstile[server]`.")
    sub = p.add_subparsers(dest="command", required=True)
    if server_cli is not None:
        server_cli.register(sub)     # serve, demo, info, check; backup, restore, shards, master-key
    remote.register(sub)             # keys, report: a running server, over gRPC
    loadgen.register(sub)            # loadgen: scenario load against a running server
    dashboard.register(sub)          # dashboard: the control-room web page
    p.set_defaults(server_cli=server_cli)
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
    """Run one command; its exit status. A reader that stops reading (``turnstile info |
    head -1``) ends the command quietly with 141, as a shell reports `cat` or `grep`
    ended by SIGPIPE (128 + 13): no traceback, and `set -o pipefail` still tells."""
    # whatever the caller's umask, what turnstile creates (data dirs, LMDB files, the
    # control store, demo-keys.txt, backups, key files) is readable by its owner only
    os.umask(0o077)
    try:
        args = build_parser().parse_args(argv)
        try:
            if getattr(args, "server_command", False):
                return args.server_cli.run(args)
            return args.func(args)
        finally:
            sys.stdout.flush()           # a closed pipe shows here, not at interpreter exit
    except BrokenPipeError:
        # Python's recipe (signal docs, "Note on SIGPIPE"): what is still buffered goes to
        # /dev/null, so the flush at exit does not fail again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
