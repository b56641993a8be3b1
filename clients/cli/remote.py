"""`turnstile keys | report`: talk to a running server over gRPC, through clients/.

    turnstile keys create demo-ota              a new API key for a principal (shown once)
    turnstile keys revoke 3f2a9c1b04de          revoke an API key by its key id
    turnstile keys principals                   list principals, their roles and scopes
    turnstile keys rotate [--shard N]           a new issuing ticket key (every shard by default)
    turnstile keys retire --shard N KEY_ID      stop accepting codes of a ticket key
    turnstile report live --venue westlake      persons inside, tickets entered per zone
    turnstile report tickets --venue westlake --csv
    turnstile report revenue --venue westlake --from 2026-12-01 --to 2026-12-31 --by channel,product
    turnstile report revenue --venue westlake --from 2026-01-01 --period month --png 2026.png
    turnstile report status --venue westlake --date 2026-12-02      tickets by what became of them
    turnstile report entries --venue westlake --png entries.png     entries per zone and hour
    turnstile report orders --venue westlake --date 2026-12-02 --status refunded --xlsx orders.xlsx
    turnstile report refunds --venue westlake --from 2026-12-01 --to 2026-12-07 --csv
    turnstile report changes --venue westlake --date 2026-12-02
    turnstile report shifts --venue westlake --date 2026-12-02 --by-method
    turnstile report reconcile --venue westlake --statement alipay-20261202.csv   (exit 1: mismatches)
    turnstile report split --venue westlake --from 2026-12-01 --to 2026-12-31     partners' shares

Each takes --address (default 127.0.0.1:50051), the API key from --key-file FILE or
the TURNSTILE_API_KEY variable (or --key KEY, which every user of the machine sees in
`ps`), and TLS options for a server that serves TLS. Only
clients/admin.py and clients/reports.py (with clients/statements.py, which reads a
provider's statement) are used: this is what any remote operator can do, nothing that
needs the data dir.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
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
    g.add_argument("--standby", action="store_true",
                   help="replicated mode: read from a standby of the venue's shard when the "
                        "shard map names one (else from its primary), off the primary; how "
                        "stale its answer may be is said on stderr")
    g.add_argument("--max-lag-ms", type=_lag_ms, metavar="MS",
                   help="with --standby: read from a standby only if its answer is at most MS "
                        "ms stale (an idle standby's is up to about 250 ms), else from the primary")
    add_tls_options(g)


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


def add_tls_options(g) -> None:
    """--tls-ca, --tls-cert, --tls-key: how a command reaches a node over TLS."""
    g.add_argument("--tls-ca", metavar="FILE",
                   help="PEM CA bundle that signs the server's certificate: connect over TLS")
    g.add_argument("--tls-cert", metavar="FILE",
                   help="PEM client certificate, for a server that requires one (mTLS)")
    g.add_argument("--tls-key", metavar="FILE", help="PEM private key of --tls-cert")


def tls_config(args):
    """The TlsConfig the --tls-* options ask for, or None (insecure)."""
    from ..base import TlsConfig
    if not (args.tls_ca or args.tls_cert or args.tls_key):
        return None
    if bool(args.tls_cert) != bool(args.tls_key):
        raise SystemExit("turnstile: --tls-cert and --tls-key go together")
    return TlsConfig(root_certificates=args.tls_ca, certificate_chain=args.tls_cert,
                     private_key=args.tls_key)


def _connect(args):
    from ..base import Connection
    key = api_key(args)
    return Connection(args.address, key, tls=tls_config(args), timeout=args.timeout,
                      prefer_standby=getattr(args, "standby", False),
                      max_lag_ms=getattr(args, "max_lag_ms", None))


def _run(fn):
    """Run a subcommand with a connection; an API error is one line on stderr, exit 1."""
    def run(args) -> int:
        from ..base import ApiError
        try:
            with _connect(args) as conn:
                status = fn(conn, args)
                if getattr(args, "standby", False):
                    said = conn.standby_state()
                    print("turnstile: answered by the primary (the shard map names no standby)"
                          if said is None else
                          f"turnstile: answered by a standby at batch {said.batch}, "
                          + (f"up to {said.lag_ms} ms behind its primary" if said.lag_ms >= 0
                             else "not yet caught up with its primary"), file=sys.stderr)
                return status
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


def _day(text: str) -> dt.date:
    """An argparse type: a venue-local day, YYYY-MM-DD."""
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a day (YYYY-MM-DD): {text!r}") from None


def _lag_ms(text: str) -> int:
    """An argparse type: a standby's lag bound, 0 to 999999999 ms."""
    n = _count(text)
    if n > 999_999_999:
        raise argparse.ArgumentTypeError(f"0 to 999999999 ms, not {text!r}")
    return n


def _count(text: str) -> int:
    """An argparse type: a count, 0 or more."""
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"not a count (0 or more): {text!r}")
    return n


def _cuts(text: str) -> tuple[str, ...]:
    """An argparse type: revenue's cuts, comma-separated (``none``: no cut)."""
    from ..reports import REVENUE_CUTS
    cuts = tuple(c.strip() for c in text.split(",") if c.strip() and c.strip() != "none")
    if bad := [c for c in cuts if c not in REVENUE_CUTS]:
        raise argparse.ArgumentTypeError(f"cut by {', '.join(REVENUE_CUTS)} or none, "
                                         f"not {', '.join(bad)}")
    return tuple(dict.fromkeys(cuts))


def _yuan(fen: int) -> str:
    """Fen as yuan for people: 1,234.50 (-0.30 for a negative amount)."""
    return f"{'-' if fen < 0 else ''}{abs(fen) // 100:,}.{abs(fen) % 100:02d}"


def _aligned(rows: list[list[str]], right: frozenset[int]) -> str:
    """Rows of cells as aligned lines, the columns in ``right`` right-aligned."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "".join("  ".join(c.rjust(w) if i in right else c.ljust(w)
                             for i, (c, w) in enumerate(zip(r, widths))).rstrip() + "\n"
                   for r in rows)


def _write(path: str, make) -> None:
    """Write the bytes ``make()`` renders to ``path``; say so on stderr. A missing
    optional dependency or an unwritable file ends the command with one line."""
    try:
        data = make()
        with open(path, "wb") as f:
            f.write(data)
    except RuntimeError as e:                    # openpyxl or matplotlib not installed
        raise SystemExit(f"turnstile: {e}") from None
    except OSError as e:
        raise SystemExit(f"turnstile: cannot write {path}: {e.strerror}") from None
    print(f"wrote {path}", file=sys.stderr)


def _emit(args, records, *, sheet: str, fields=None, table=None, chart=None) -> None:
    """A report's records as the options ask: an Excel sheet to --xlsx FILE, a chart
    (``chart()``) to --png FILE, CSV on stdout with --csv; with none of these, an
    aligned table (of ``table``, default the records) on stdout."""
    from ..reports import to_csv, to_table, to_xlsx
    if args.xlsx:
        _write(args.xlsx, lambda: to_xlsx(table or records, sheet, fields=fields))
    if chart is not None and args.png:
        _write(args.png, chart)
    if args.csv:
        sys.stdout.write(to_csv(records, fields=fields))
    elif not (args.xlsx or (chart is not None and args.png)):
        sys.stdout.write(to_table(table or records, fields=fields))


def report_revenue(conn, args) -> int:
    from ..reports import ReportsClient, revenue_chart_png
    rep = ReportsClient(conn).revenue(args.venue, args.date_from, args.date_to, period=args.period,
                                      group_by=args.by)
    total = dataclasses.replace(rep.total, period="total")
    _emit(args, rep.rows, sheet="revenue", fields=rep.columns, table=list(rep.rows) + [total],
          chart=lambda: revenue_chart_png(rep, title=args.title))
    return 0


def report_status(conn, args) -> int:
    from ..reports import ReportsClient
    _emit(args, ReportsClient(conn).ticket_status(args.venue, args.date_from, args.date_to),
          sheet="tickets")
    return 0


def report_entries(conn, args) -> int:
    from ..reports import ReportsClient, entries_chart_png
    rep = ReportsClient(conn).entries(args.venue, args.date)
    if not (args.csv or args.xlsx or args.png):
        print(f"{args.venue} on {rep.date}")
    _emit(args, rep.gate_hours if args.hours else rep.zones, sheet=f"entries {rep.date}",
          chart=lambda: entries_chart_png(rep, title=args.title))
    return 0


def report_orders(conn, args) -> int:
    from ..reports import ReportsClient
    _emit(args, ReportsClient(conn).orders(args.venue, args.date_from, args.date_to,
                                           channel=args.channel or "", station=args.station or "",
                                           status=args.status or "", limit=args.limit),
          sheet="orders")
    return 0


def report_refunds(conn, args) -> int:
    from ..reports import ReportsClient
    _emit(args, ReportsClient(conn).refunds(args.venue, args.date_from, args.date_to,
                                            channel=args.channel or "", station=args.station or "",
                                            limit=args.limit), sheet="refunds")
    return 0


def report_changes(conn, args) -> int:
    from ..reports import ReportsClient
    _emit(args, ReportsClient(conn).changes(args.venue, args.date_from, args.date_to,
                                            channel=args.channel or "", station=args.station or "",
                                            limit=args.limit), sheet="changes")
    return 0


def report_shifts(conn, args) -> int:
    from ..reports import ReportsClient, ShiftSummary
    shifts = ReportsClient(conn).shifts(args.venue, args.date_from, args.date_to,
                                        station=args.station or "")
    _emit(args, ShiftSummary.by_method(shifts) if args.by_method else shifts, sheet="shifts")
    return 0


def report_reconcile(conn, args) -> int:
    from ..reports import ReportsClient
    reports = ReportsClient(conn)
    if args.statement:
        try:
            with open(args.statement, "rb") as f:
                data = f.read()
        except OSError as e:
            raise SystemExit(f"turnstile: cannot read {args.statement}: {e.strerror}") from None
        try:
            imp = reports.import_statement(args.venue, data, method=args.method)
        except ValueError as e:                  # not a statement the parser knows
            raise SystemExit(f"turnstile: {args.statement}: {e}") from None
        print(f"{imp.method} statement of {imp.date}: {imp.lines} lines "
              f"{'stored' if imp.changed else 'already stored, unchanged'} (digest {imp.digest})",
              file=sys.stderr)
        method, day = imp.method, imp.date
    else:
        method, day = args.method, args.date
    rec = reports.reconcile(args.venue, method, day)
    if args.csv or args.xlsx:
        _emit(args, rec.mismatches, sheet=f"{method} {day}")
    else:
        print(f"{args.venue}, {method}, {day} (statement {rec.digest})")
        sys.stdout.write(_aligned([
            ["", "matched", "yuan", "statement", "turnstile"],
            ["payments", str(rec.matched_payments), _yuan(rec.matched_paid_fen),
             _yuan(rec.statement_paid_fen), _yuan(rec.turnstile_paid_fen)],
            ["refunds", str(rec.matched_refunds), _yuan(rec.matched_refunded_fen),
             _yuan(rec.statement_refunded_fen), _yuan(rec.turnstile_refunded_fen)],
            ["provider fees", "", "", _yuan(rec.statement_fee_fen), ""]], frozenset({1, 2, 3, 4})))
        if rec.balanced:
            print("balanced to the fen")
        else:
            print(f"{len(rec.mismatches)} mismatch{'es' if len(rec.mismatches) > 1 else ''} "
                  f"(yuan):")
            sys.stdout.write(_aligned(
                [["kind", "reference", "order", "refund", "statement", "turnstile"]]
                + [[m.kind, m.reference or "-", m.order_id or "-", m.refund_id or "-",
                    _yuan(m.statement_fen), _yuan(m.turnstile_fen)] for m in rec.mismatches],
                frozenset({4, 5})))
    return 0 if rec.balanced else 1


def report_split(conn, args) -> int:
    from ..reports import ReportsClient
    s = ReportsClient(conn).settlement(args.venue, args.date_from, args.date_to,
                                       partner=args.partner or "")
    _emit(args, s.rows(), sheet="settlement")
    if not (args.csv or args.xlsx):
        print()
        for p in s.partners:
            print(f"{p.partner} ({p.kind}) is owed {_yuan(p.amount_fen)} yuan")
        if args.partner:
            print(f"net revenue {_yuan(s.net_fen)} yuan, {args.venue}'s own share "
                  f"{_yuan(s.venue_fen)} yuan")
        else:
            print(f"net revenue {_yuan(s.net_fen)} yuan = partners "
                  f"{_yuan(sum(p.amount_fen for p in s.partners))} + {args.venue}'s own share "
                  f"{_yuan(s.venue_fen)}")
    return 0


def keys_list(conn, args) -> int:
    from ..admin import AdminClient
    from ..reports import to_csv, to_table
    rows = [KeyRow(k.key_id, k.principal_id, "revoked" if k.revoked else "active")
            for k in AdminClient(conn).list_api_keys(args.principal or "")]
    sys.stdout.write(to_csv(rows) if args.csv else to_table(rows))
    return 0


class _NoChart(argparse.Action):
    """--png on a report that has no chart: refused, saying which reports have one."""

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f"{option_string}: only `report revenue` and `report entries` draw a chart; "
                     "use --csv or --xlsx FILE")


def _days_options(p: argparse.ArgumentParser, what: str) -> None:
    """--venue, and the days: --date for one, or --from and --to."""
    p.add_argument("--venue", required=True, help="venue id, e.g. westlake")
    g = p.add_argument_group(f"days of {what} (venue-local, YYYY-MM-DD; --date, or --from and --to)")
    g.add_argument("--date", type=_day, metavar="DAY", help="one day")
    g.add_argument("--from", dest="date_from", type=_day, metavar="DAY", help="the first day")
    g.add_argument("--to", dest="date_to", type=_day, metavar="DAY",
                   help="the last day, included (default: the --from day)")


def _filters(p: argparse.ArgumentParser) -> None:
    """--channel, --station and --limit of the order, refund and change lists."""
    p.add_argument("--channel", help="only this channel's (default: all)")
    p.add_argument("--station", help="only this station's, e.g. window-1 (default: all)")
    p.add_argument("--limit", type=_count, default=0, metavar="N",
                   help="at most N rows, the oldest (default: 0, every one)")


def _outputs(p: argparse.ArgumentParser, chart: str | None = None) -> None:
    """--csv and --xlsx FILE; --png FILE where ``chart`` says what it draws (elsewhere
    --png is refused with a clear message)."""
    g = p.add_argument_group("output (default: an aligned table on stdout)")
    g.add_argument("--csv", action="store_true", help="CSV with a header row on stdout")
    g.add_argument("--xlsx", metavar="FILE",
                   help="write an Excel workbook to FILE (bold header, money as integer fen)")
    if chart:
        g.add_argument("--png", metavar="FILE", help=chart)
        g.add_argument("--title", help="the chart's title (default: the venue and the days)")
    else:
        g.add_argument("--png", nargs="?", action=_NoChart, help=argparse.SUPPRESS)


def _check_days(p: argparse.ArgumentParser, args) -> None:
    """--date, or --from [--to]: set args.date_from and args.date_to, or stop with usage."""
    if args.date and (args.date_from or args.date_to):
        p.error("give --date, or --from and --to, not both")
    if args.date:
        args.date_from = args.date_to = args.date
    elif not args.date_from:
        p.error("which days? --date DAY, or --from DAY [--to DAY]")
    args.date_to = args.date_to or args.date_from
    if args.date_to < args.date_from:
        p.error(f"--to {args.date_to} is before --from {args.date_from}")


def _check_reconcile(p: argparse.ArgumentParser, args) -> None:
    """A statement file, or the method and day of one stored already."""
    if args.statement and args.date:
        p.error("--date is the statement's own day: give it only without --statement")
    if not args.statement and not (args.method and args.date):
        p.error("--statement FILE, or --method and --date of a statement imported already")


def _report(p: argparse.ArgumentParser, fn, *, days: bool = True, check=None) -> None:
    """Make ``fn`` the subcommand of ``p``: its options are checked (the days, or
    ``check``) before any connection is made, then it runs with one (--address, the key,
    TLS: the connection options every report takes)."""
    _common(p)
    run = _run(fn)

    def go(args) -> int:
        if days:
            _check_days(p, args)
        if check is not None:
            check(p, args)
        return run(args)
    p.set_defaults(func=go)


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

    rep = sub.add_parser("report", help="counts, money, orders and reconciliation of a venue",
                         description="Reports of a venue from a running server over gRPC "
                                     "(ReportService): as an aligned table, CSV, an Excel "
                                     "workbook, and charts of revenue and entries. Needs an API "
                                     "key whose role may read reports (admin, operator, "
                                     "finance). Days are venue-local, YYYY-MM-DD; money is "
                                     "integer fen in tables and files.")
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

    rv = rs.add_parser(
        "revenue", help="money per day, month or year and channel, station, product, method",
        description="Money of VENUE's sale days per --period and the cuts of --by: tickets and "
                    "persons sold, gross, coupon discounts, paid, refunded (tickets, persons, "
                    "fen), fees kept, changes (tickets, paid in, given back) and net = paid - "
                    "refunded + change_in - change_out, in fen. The table and the workbook end "
                    "with a total row; the CSV has the rows only. --png draws net revenue per "
                    "channel in yuan: a bar per channel for one period, else a bar per period "
                    "stacked by channel.")
    _days_options(rv, "sale")
    rv.add_argument("--period", choices=("day", "month", "year"), default="day",
                    help="a row per venue-local day, calendar month or year (default: day)")
    rv.add_argument("--by", type=_cuts, default=("channel",), metavar="CUT[,CUT...]",
                    help="cut each period further by any of channel, station, product, method, "
                         "comma-separated; none: one row a period (default: channel)")
    _outputs(rv, chart="write a bar chart of net revenue per channel (yuan) to FILE, a PNG")
    _report(rv, report_revenue)

    st = rs.add_parser(
        "status", help="tickets per visit day and product: sold, used, unused, refunded, expired",
        description="Codes of VENUE per visit day (a ticket's first valid day) and product: "
                    "sold (or issued by a change), used at least once, unused and still valid, "
                    "refunded or changed away, expired unused.")
    _days_options(st, "visit")
    _outputs(st)
    _report(st, report_status)

    en = rs.add_parser(
        "entries", help="entries, re-entries and exits per zone (or gate and hour) of a day",
        description="Passages at VENUE on a venue-local day: per zone, persons admitted on a "
                    "visit, re-admitted after an exit, let out, tickets entered and the peak "
                    "inside; with --hours a row per zone, gate and hour instead. --png draws "
                    "per hour the persons admitted per zone (re-entries hatched) and the exits.")
    en.add_argument("--venue", required=True, help="venue id, e.g. westlake")
    en.add_argument("--date", type=_day, metavar="DAY",
                    help="venue-local day, YYYY-MM-DD (default: today at the venue)")
    en.add_argument("--hours", action="store_true",
                    help="a row per zone, gate and hour with a passage, not one per zone")
    _outputs(en, chart="write a chart of entries per hour and zone, with the exits, to FILE, a PNG")
    _report(en, report_entries, days=False)

    od = rs.add_parser(
        "orders", help="orders confirmed in a day range, one row each",
        description="Orders of VENUE confirmed in the days given, oldest first, one row each: "
                    "id, time (UTC), channel, station, shift, status, payment method and "
                    "reference, products, tickets and persons, paid, coupon discount and "
                    "refunded (fen), coupon, how many refunds and changes.")
    _days_options(od, "sale")
    od.add_argument("--status", choices=("paid", "partly_refunded", "refunded", "changed"),
                    help="only orders in this state (default: all)")
    _filters(od)
    _outputs(od)
    _report(od, report_orders)

    rf = rs.add_parser(
        "refunds", help="refunds made in a day range, one row each",
        description="Refunds of VENUE made in the days given, oldest first, one row each: "
                    "refund id, time (UTC), the order's id, channel, station, shift and payment, "
                    "the tickets voided, persons of a group ticket, returned and fee kept (fen).")
    _days_options(rf, "refund")
    _filters(rf)
    _outputs(rf)
    _report(rf, report_refunds)

    ch = rs.add_parser(
        "changes", help="changes (rebookings) made in a day range, one row each",
        description="Changes of VENUE made in the days given, oldest first, one row each: "
                    "change id, time (UTC), the order's id, channel, station and shift, the "
                    "tickets given up, the first new ticket, the new slots and price, the fee "
                    "kept, and the due paid (> 0, with its method) or returned (< 0), in fen.")
    _days_options(ch, "change")
    _filters(ch)
    _outputs(ch)
    _report(ch, report_changes)

    sh = rs.add_parser(
        "shifts", help="cash-desk shifts opened in a day range, with their totals",
        description="Cash-desk shifts of VENUE opened in the days given, by opening time, a "
                    "row each: station, cashier, opened and closed (UTC), the cash drawer "
                    "(float, cash taken and given back, expected, counted, over/short: "
                    "negative is short) and every method together (sales, refunds, net), in "
                    "fen. --by-method: a row per shift and payment method instead.")
    _days_options(sh, "opening")
    sh.add_argument("--station", help="only this station's shifts (default: all)")
    sh.add_argument("--by-method", action="store_true",
                    help="a row per shift and payment method (sales, refunds, net)")
    _outputs(sh)
    _report(sh, report_shifts)

    rc = rs.add_parser(
        "reconcile", help="import a payment provider's statement and match it to the fen",
        description="Import a payment provider's daily statement (--statement FILE, as Alipay "
                    "or WeChat Pay exports it; storing the same one again changes nothing), "
                    "then match it to the day's payments and refunds of that method by "
                    "reference: the totals matched, each side's totals, then one line per "
                    "mismatch. Without --statement, match the statement already stored for "
                    "--method and --date. Exit status 0 when balanced to the fen, 1 when "
                    "anything mismatches (or the call fails). --csv and --xlsx give the "
                    "mismatches.")
    rc.add_argument("--venue", required=True, help="venue id, e.g. westlake")
    rc.add_argument("--statement", metavar="FILE",
                    help="the provider's statement file; its day is the statement's")
    rc.add_argument("--method", help="payment method the statement is of, as orders record it "
                                     "(alipay, wechat; default: the statement's provider)")
    rc.add_argument("--date", type=_day, metavar="DAY",
                    help="venue-local day of a stored statement, YYYY-MM-DD (without --statement)")
    _outputs(rc)
    _report(rc, report_reconcile, days=False, check=_check_reconcile)

    sp = rs.add_parser(
        "split", help="what each partner is owed by the revenue split, and the venue's share",
        description="Settlement of VENUE's sale days: per partner (zone, merchant, partner) and "
                    "product, persons (sold less refunded) and the amount owed (fen) by the "
                    "revenue split rules, then a row of the venue's own share; the amounts add "
                    "up to the period's net revenue. The table is followed by each partner's "
                    "total and the net revenue, in yuan.")
    _days_options(sp, "sale")
    sp.add_argument("--partner", help="only this partner's statement (default: every partner's)")
    _outputs(sp)
    _report(sp, report_split)
