"""`turnstile keys | report`: talk to a running server over gRPC, through clients/.

    turnstile keys create demo-ota              a new API key for a principal (shown once)
    turnstile keys revoke 3f2a9c1b04de          revoke an API key by its key id
    turnstile keys principals                   list principals, their roles and scopes
    turnstile keys rotate [--shard N]           a new issuing ticket key (every shard by default)
    turnstile keys retire --shard N KEY_ID      stop accepting codes of a ticket key
    turnstile report live --venue westlake      persons inside, tickets entered per zone
    turnstile report tickets --venue westlake --csv

Each takes --address (default 127.0.0.1:50051), the API key from --key-file FILE or
the TURNSTILE_API_KEY variable (or --key KEY, which every user of the machine sees in
`ps`), and TLS options for a server that serves TLS. Only
clients/admin.py and clients/reports.py are used: this is what any remote operator
can do, nothing that needs the data dir.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys

DEFAULT_ADDRESS = "127.0.0.1:50051"
KEY_ENV = "TURNSTILE_API_KEY"


@dataclasses.dataclass(frozen=True)
class KeyRow:
    """An API key as listed (never its secret)."""

    key_id: str
    principal: str
    state: str


@dataclasses.dataclass(frozen=True)
class PrincipalRow:
    """A principal flattened for a table or CSV."""

    principal: str
    role: str
    venues: str
    channel: str
    gates: str


def _common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("connection")
    g.add_argument("--address", default=os.environ.get("TURNSTILE_ADDRESS", DEFAULT_ADDRESS),
                   help="host:port of any shard of the server (default: $TURNSTILE_ADDRESS, "
                        f"else {DEFAULT_ADDRESS})")
    add_key_options(g)
    g.add_argument("--timeout", type=float, default=10.0,
                   help="deadline of each call attempt, seconds (default: %(default)s)")
    g.add_argument("--tls-ca", metavar="FILE",
                   help="PEM CA bundle that signs the server's certificate: connect over TLS")
    g.add_argument("--tls-cert", metavar="FILE",
                   help="PEM client certificate, for a server that requires one (mTLS)")
    g.add_argument("--tls-key", metavar="FILE", help="PEM private key of --tls-cert")


def add_key_options(g) -> None:
    """--key-file and --key: where the API key comes from (else TURNSTILE_API_KEY)."""
    g.add_argument("--key-file", metavar="FILE",
                   help=f"file holding the API key (tsk_...), as `turnstile keys create` prints "
                        f"it; keep it mode 0600 (default: the {KEY_ENV} variable)")
    g.add_argument("--key", default=None, metavar="KEY",
                   help=f"the API key itself; every user of the machine sees it in `ps`, so "
                        f"prefer --key-file or {KEY_ENV}")


def read_key_file(path: str, *, several: bool = False) -> list[str]:
    """The API keys in `path` (one, or with `several` one per line, each may be
    ROLE=KEY). ValueError says what is wrong and never echoes the file's content; a file
    other users may read is warned about on stderr."""
    try:
        with open(path) as f:
            text = f.read(65536)
        mode = os.stat(path).st_mode
    except OSError as e:
        raise ValueError(f"cannot read key file {path}: {e.strerror}") from None
    words = text.split()
    keys = [w.split("=", 1)[-1] for w in words] if several else words
    if not words or len(words) > 1 and not several or not all(k.startswith("tsk_") for k in keys):
        want = "API keys, one [ROLE=]tsk_... a line," if several else "one API key (tsk_...)"
        raise ValueError(f"{path}: expected {want} and nothing else")
    if mode & 0o077:
        print(f"turnstile: warning: {path} is readable by other users (chmod 600 {path})",
              file=sys.stderr)
    return words


def api_key(args, prog: str = "turnstile") -> str:
    """The API key of a command: --key or --key-file, else TURNSTILE_API_KEY."""
    if args.key and args.key_file:
        raise SystemExit(f"{prog}: give the API key once: --key or --key-file")
    if args.key_file:
        try:
            return read_key_file(args.key_file)[0]
        except ValueError as e:
            raise SystemExit(f"{prog}: {e}") from None
    key = args.key or os.environ.get(KEY_ENV, "").strip()
    if not key:
        raise SystemExit(f"{prog}: an API key is needed: --key-file FILE, the {KEY_ENV} "
                         f"variable, or --key tsk_...")
    return key


def _connect(args):
    from ..base import Connection, TlsConfig
    key = api_key(args)
    tls = None
    if args.tls_ca or args.tls_cert or args.tls_key:
        if bool(args.tls_cert) != bool(args.tls_key):
            raise SystemExit("turnstile: --tls-cert and --tls-key go together")
        tls = TlsConfig(root_certificates=args.tls_ca, certificate_chain=args.tls_cert,
                        private_key=args.tls_key)
    return Connection(args.address, key, tls=tls, timeout=args.timeout)


def _run(fn):
    """Run a subcommand with a connection; an API error is one line on stderr, exit 1."""
    def run(args) -> int:
        from ..base import ApiError
        try:
            with _connect(args) as conn:
                return fn(conn, args)
        except ApiError as e:
            print(f"turnstile: {e}", file=sys.stderr)        # the message carries any hint
            return 1
    return run


# -- keys ----------------------------------------------------------------------------------
def keys_create(conn, args) -> int:
    from ..admin import AdminClient
    k = AdminClient(conn).create_api_key(args.principal)
    print(f"created API key {k.key_id} for {k.principal_id}; it is shown only now:", file=sys.stderr)
    print(k.secret)
    return 0


def keys_revoke(conn, args) -> int:
    from ..admin import AdminClient
    admin = AdminClient(conn)
    for key_id in args.key_id:
        # a whole key is accepted too: tsk_<key id>_<secret>
        kid = key_id.split("_")[1] if key_id.startswith("tsk_") and key_id.count("_") >= 2 else key_id
        admin.revoke_api_key(kid)
        print(f"revoked API key {kid}")
    return 0


def keys_principals(conn, args) -> int:
    from ..admin import AdminClient
    from ..reports import to_csv, to_table
    rows = AdminClient(conn).list_principals()
    flat = [PrincipalRow(p.principal_id, p.role, ",".join(p.venue_ids) or "*", p.channel or "-",
                          ",".join(p.gate_ids) or "*") for p in rows]
    sys.stdout.write(to_csv(flat) if args.csv else to_table(flat))
    return 0


def keys_rotate(conn, args) -> int:
    from ..admin import AdminClient
    admin = AdminClient(conn)
    shards = [args.shard] if args.shard is not None else conn.shards()
    for shard in shards:
        k = admin.rotate_ticket_key(shard)
        print(f"shard {k.shard}: ticket key {k.key_id} is now {k.state}")
    return 0


def keys_retire(conn, args) -> int:
    from ..admin import AdminClient
    k = AdminClient(conn).retire_ticket_key(args.shard, args.key_id)
    print(f"shard {k.shard}: ticket key {k.key_id} is now {k.state}")
    return 0


# -- report --------------------------------------------------------------------------------
def report_live(conn, args) -> int:
    from ..reports import ReportsClient, to_csv, to_table
    live = ReportsClient(conn).live_counts(args.venue, args.date)
    if args.csv:
        sys.stdout.write(to_csv(live.zones))
    else:
        print(f"{args.venue} on {live.date}: {sum(z.inside for z in live.zones)} inside")
        sys.stdout.write(to_table(live.zones))
    return 0


def report_tickets(conn, args) -> int:
    from ..reports import ReportsClient, to_csv, to_table
    rows = ReportsClient(conn).ticket_counts(args.venue)
    sys.stdout.write(to_csv(rows) if args.csv else to_table(rows))
    return 0


def report_conflicts(conn, args) -> int:
    from ..reports import ReportsClient, to_csv, to_table
    rows = ReportsClient(conn).conflicts(args.venue)
    if args.csv:
        sys.stdout.write(to_csv(rows))
    elif rows:
        sys.stdout.write(to_table(rows))
    else:
        print(f"{args.venue}: no conflicts")
    return 0


def keys_list(conn, args) -> int:
    from ..admin import AdminClient
    from ..reports import to_csv, to_table
    rows = [KeyRow(k.key_id, k.principal_id, "revoked" if k.revoked else "active")
            for k in AdminClient(conn).list_api_keys(args.principal or "")]
    sys.stdout.write(to_csv(rows) if args.csv else to_table(rows))
    return 0


def register(sub) -> None:
    """Add this module's subcommands to the `turnstile` parser."""
    k = sub.add_parser("keys", help="API keys, principals and ticket keys of a running server",
                       description="Manage API keys and ticket keys of a running server over "
                                   "gRPC (AdminService). Needs an admin API key.")
    ks = k.add_subparsers(dest="keys_command", required=True, metavar="ACTION")

    c = ks.add_parser("create", help="create an API key for a principal",
                      description="Create an API key for PRINCIPAL and print it on stdout (its "
                                  "key id on stderr). The server keeps only a hash: the key is "
                                  "shown this once.")
    c.add_argument("principal", metavar="PRINCIPAL", help="principal id, e.g. demo-ota")
    _common(c)
    c.set_defaults(func=_run(keys_create))

    r = ks.add_parser("revoke", help="revoke API keys",
                      description="Revoke API keys by key id (the part after tsk_ in a key; a "
                                  "whole key is accepted too). Server processes cache keys "
                                  "briefly: a revoked key stops working within seconds.")
    r.add_argument("key_id", metavar="KEY_ID", nargs="+", help="key id, e.g. 3f2a9c1b04de")
    _common(r)
    r.set_defaults(func=_run(keys_revoke))

    p = ks.add_parser("principals", help="list principals",
                      description="List every principal: id, role, venues (* = all), the channel "
                                  "it sells as, gates (* = all).")
    p.add_argument("--csv", action="store_true", help="CSV with a header row instead of a table")
    _common(p)
    p.set_defaults(func=_run(keys_principals))

    li = ks.add_parser("list", help="list API keys (ids, never secrets)",
                       description="List API keys: key id, principal, active or revoked. Secrets "
                                   "are never stored, so never shown again.")
    li.add_argument("--principal", help="only this principal's keys")
    li.add_argument("--csv", action="store_true", help="CSV with a header row instead of a table")
    _common(li)
    li.set_defaults(func=_run(keys_list))

    ro = ks.add_parser("rotate", help="make a new ticket key the issuing one",
                       description="Make a new ticket key the issuing one; codes of earlier keys "
                                   "stay accepted until their key is retired.")
    ro.add_argument("--shard", type=int, default=None,
                    help="shard whose key rotates (default: every shard)")
    _common(ro)
    ro.set_defaults(func=_run(keys_rotate))

    re_ = ks.add_parser("retire", help="stop accepting codes of a ticket key",
                        description="Retire ticket key KEY_ID of a shard: its codes read FORGED "
                                    "at every gate from now on.")
    re_.add_argument("--shard", type=int, required=True, help="shard of the key")
    re_.add_argument("key_id", metavar="KEY_ID", type=int,
                     help="ticket key id, as printed by `keys rotate`")
    _common(re_)
    re_.set_defaults(func=_run(keys_retire))

    rep = sub.add_parser("report", help="live counts, ticket counts and offline conflicts of a venue",
                         description="Reports of a venue from a running server over gRPC "
                                     "(ReportService), as a table or CSV. Needs an admin, "
                                     "operator or finance API key.")
    rs = rep.add_subparsers(dest="report_command", required=True, metavar="REPORT")

    lv = rs.add_parser("live", help="persons inside and tickets entered, per zone",
                       description="Per zone of VENUE: persons inside now (0 for a day other "
                                   "than today), tickets that entered on the day, and the "
                                   "zone's flow limit (0 = none).")
    lv.add_argument("--venue", required=True, help="venue id, e.g. westlake")
    lv.add_argument("--date", help="venue-local day, YYYY-MM-DD (default: today at the venue)")
    lv.add_argument("--csv", action="store_true", help="CSV with a header row instead of a table")
    _common(lv)
    lv.set_defaults(func=_run(report_live))

    tc = rs.add_parser("tickets", help="tickets issued, used, voided and blocked, per product",
                       description="Per product of VENUE: codes issued, used at least once, "
                                   "refunded or cancelled (voided), and blocked now.")
    tc.add_argument("--venue", required=True, help="venue id, e.g. westlake")
    tc.add_argument("--csv", action="store_true", help="CSV with a header row instead of a table")
    _common(tc)
    tc.set_defaults(func=_run(report_tickets))

    cf = rs.add_parser("conflicts", help="offline admissions the server refused",
                       description="Scans offline gates of VENUE admitted that the server refused "
                                   "once they were uploaded: a ticket admitted at two offline "
                                   "gates (ALREADY_USED), or refunded or blocked while the gate "
                                   "was offline. Oldest first.")
    cf.add_argument("--venue", required=True, help="venue id, e.g. westlake")
    cf.add_argument("--csv", action="store_true", help="CSV with a header row instead of a table")
    _common(cf)
    cf.set_defaults(func=_run(report_conflicts))
