"""`turnstile dashboard`: serve the control-room web page (clients/dashboard/) for a node.

    turnstile dashboard                                  http://127.0.0.1:8080/ for 127.0.0.1:50051
    turnstile dashboard --address 10.0.0.5:50051 --port 0 --tls-ca ca.pem

The page's users log in with their own API keys (an operator's steers, a viewer's
watches); the dashboard has no key of its own. It serves plain HTTP: keep it on
127.0.0.1, or put a TLS proxy in front of it for other machines.
"""
from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import signal
import sys

from .remote import DEFAULT_ADDRESS, add_tls_options, tls_config


def _port(text: str) -> int:
    """An argparse type: a TCP port, 0 for any free one."""
    try:
        n = int(text)
    except ValueError:
        n = -1
    if not 0 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"not a port (0 to 65535): {text!r}")
    return n


def _interval(text: str) -> int:
    """An argparse type: WatchLive's least interval, 100 to 60000 ms."""
    try:
        n = int(text)
    except ValueError:
        n = -1
    if not 100 <= n <= 60_000:
        raise argparse.ArgumentTypeError(f"100 to 60000 ms, not {text!r}")
    return n


def register(sub) -> None:
    """Add `dashboard` to the `turnstile` parser."""
    p = sub.add_parser(
        "dashboard", help="serve the control-room web page (live counts, alerts, controls)",
        description="Serve the control-room dashboard: a web page that shows a venue live "
                    "(ReportService.WatchLive) and, for a key whose role may, pauses sales, "
                    "closes entry, sets live capacities and flow alerts. Users log in on the "
                    "page with their API keys. Prints 'dashboard on http://HOST:PORT/' once "
                    "it listens; runs until interrupted. Needs `pip install turnstile[dashboard]`.")
    g = p.add_argument_group("the node")
    g.add_argument("--address", default=os.environ.get("TURNSTILE_ADDRESS", DEFAULT_ADDRESS),
                   help="host:port of any shard of the node (default: $TURNSTILE_ADDRESS, "
                        f"else {DEFAULT_ADDRESS}); it need not be up yet")
    g.add_argument("--timeout", type=float, default=5.0,
                   help="deadline of each call attempt, seconds (default: %(default)s)")
    add_tls_options(g)
    w = p.add_argument_group("the web page")
    w.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: %(default)s; plain HTTP, so another "
                        "address only behind a TLS proxy)")
    w.add_argument("--port", type=_port, default=8080,
                   help="port to listen on, 0 for any free one (default: %(default)s)")
    w.add_argument("--min-interval-ms", type=_interval, default=250, metavar="MS",
                   help="least time between two live views pushed to a page, 100 to 60000 "
                        "(default: %(default)s)")
    p.set_defaults(func=run)


def run(args) -> int:
    """Serve until SIGINT or SIGTERM."""
    if args.timeout <= 0:
        raise SystemExit("turnstile: --timeout must be positive")
    try:
        from ..dashboard.app import Dashboard, serve
    except ImportError as e:
        if (e.name or "").split(".")[0] != "aiohttp":
            raise
        raise SystemExit("turnstile: the dashboard needs aiohttp: pip install 'turnstile[dashboard]'") \
            from None
    tls = tls_config(args)
    if not _loopback(args.host):
        print(f"turnstile: warning: the dashboard serves plain HTTP on {args.host}: API keys "
              f"typed into it cross the network unencrypted unless a TLS proxy is in front",
              file=sys.stderr)
    dash = Dashboard(args.address, tls=tls, timeout=args.timeout,
                     min_interval_ms=args.min_interval_ms)

    def listening(url: str) -> None:
        print(f"dashboard on {url}", flush=True)

    try:
        asyncio.run(_serve_until_signal(serve(dash, args.host, args.port, listening)))
    except OSError as e:
        raise SystemExit(f"turnstile: cannot listen on {args.host}:{args.port}: {e.strerror}") from None
    return 0


async def _serve_until_signal(serving) -> None:
    """Run ``serving`` until SIGINT or SIGTERM, then let it clean up."""
    task = asyncio.ensure_future(serving)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        pass


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
