"""`turnstile loadgen`: run a scenario of clients/loadgen/ against a running server."""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import textwrap
import traceback

SCENARIOS = {
    "verify-unary": "unary GateService.Verify, C calls in flight; a share of the codes (--dupes) "
                    "also sent by a second caller at once: exactly one may admit",
    "verify-stream": "GateService.VerifyStream, batches of --per-call codes, C streams with "
                     "--window batches in flight on each (--packed: GateService.VerifyPacked, "
                     "the codes' binary form packed in one field)",
    "flash-sale": "SalesService.Hold (--buy: SalesService.Buy, an order in one call) of one "
                  "ticket on ONE slot, C callers at once, more asks than stock: exactly the free "
                  "stock granted, the rest SOLD_OUT, never oversold",
    "gate-storm": "the gates open: C gate terminals (a connection each) scan --burst codes each "
                  "every --interval seconds; a share (--dupes) shown at two gates at once",
    "holiday": "a holiday day compressed: channels sell (Hold + Confirm) while gates admit what "
               "was sold; some visitors exit and come back, some try twice",
}
DEFAULTS = {  # scenario: (count, concurrency)
    "verify-unary": (1000, 64), "verify-stream": (10_000, 8), "flash-sale": (None, 64),
    "gate-storm": (2000, 16), "holiday": (1000, 16),
}
SCANS = ("verify-unary", "verify-stream", "gate-storm")

EPILOG = """\
keys:
  A key is [ROLE=]KEY. ROLE is gate (scans), sales (buys; several sales keys are several
  channels; also: channel, seller) or admin (creates the flash-sale slot, reads reports
  and the audit log; also: operator). A key without a role serves every role (an admin
  key can do everything). Keys come from --keys-file DATA/demo-keys.txt (written by
  `turnstile serve` on a new data dir: the demo principals admin, demo-gate, demo-ota
  and demo-window), --key-file FILE (one [ROLE=]KEY a line, mode 0600), or --key
  (repeated or comma-separated; every user of the machine sees it in `ps`). With none
  of these, the TURNSTILE_API_KEY variable ([ROLE=]KEY, comma-separated).

what it does to the server:
  scan scenarios first buy their tickets (SalesService Hold + Confirm, the first sales
  key) on --date in the product's zone; the flash sale creates a new whole-day slot of
  --capacity (admin key) unless --slot names one. Checks against ReportService and
  Availability assume the run is the only traffic on the venue. Every scenario targets
  127.0.0.1 only (--allow-remote for another host), stops issuing calls after
  --duration seconds, and gives every call a deadline.

exit status: 0 every check passed, 1 a correctness check failed (oversell, double
admission, a count the server disagrees with), 2 the run could not be set up.

examples:
  turnstile loadgen flash-sale --keys-file data/demo-keys.txt --capacity 1000
  turnstile loadgen verify-unary --keys-file data/demo-keys.txt --count 5000 -c 64
  turnstile loadgen gate-storm --keys-file data/demo-keys.txt -c 32 --burst 10 --interval 0.2
  turnstile loadgen holiday --address 127.0.0.1:50051 --key tsk_...   # an admin key
"""


def _date(s: str) -> dt.date:
    try:
        return dt.date.fromisoformat(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a YYYY-MM-DD date: {s!r}") from None


def _share(s: str) -> float:
    v = float(s)
    if not 0 <= v <= 1:
        raise argparse.ArgumentTypeError("a share between 0 and 1")
    return v


def _positive(kind):
    def conv(s: str):
        v = kind(s)
        if v <= 0:
            raise argparse.ArgumentTypeError("must be positive")
        return v
    return conv


def register(sub) -> None:
    """Add this module's subcommand to the `turnstile` parser."""
    p = sub.add_parser(
        "loadgen", help="run a load scenario against a running server (127.0.0.1)",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description=textwrap.fill(
            "Run a scenario of the load generator (clients/loadgen/, the one bench/ uses) "
            "against a running server over gRPC, then print throughput, latency p50/p99/p99.9 "
            "and the correctness verdict.", 88) + "\n\nscenarios:\n" + "\n".join(
                textwrap.fill(v, 88, initial_indent=f"  {k:15}", subsequent_indent=" " * 17)
                for k, v in SCENARIOS.items()))
    p.add_argument("scenario", choices=list(SCENARIOS), metavar="SCENARIO",
                   help="one of: " + ", ".join(SCENARIOS))
    t = p.add_argument_group("target")
    t.add_argument("--address", default=os.environ.get("TURNSTILE_ADDRESS", "127.0.0.1:50051"),
                   help="HOST:PORT of any shard of the server (default: $TURNSTILE_ADDRESS, "
                        "else 127.0.0.1:50051)")
    t.add_argument("--key-file", metavar="FILE",
                   help="file of API keys, one [ROLE=]KEY a line; see 'keys' below")
    t.add_argument("--key", action="append", default=[], metavar="[ROLE=]KEY",
                   help="API key(s), visible in `ps`: prefer a file; see 'keys' below")
    t.add_argument("--keys-file", metavar="FILE", help="keys of the demo principals, as "
                   "`turnstile serve` writes DATA/demo-keys.txt")
    t.add_argument("--venue", default="westlake", help="venue (default: %(default)s)")
    t.add_argument("--allow-remote", action="store_true",
                   help="allow a host other than 127.0.0.1 (only a server you run; never "
                        "production)")
    b = p.add_argument_group("size and pace (every run is bounded)")
    b.add_argument("-n", "--count", type=_positive(int), metavar="N",
                   help="tickets to scan, asks of the flash sale, tickets to sell on the holiday "
                        "(default: verify-unary 1000, verify-stream 10000, gate-storm 2000, "
                        "holiday 1000, flash-sale 1.2 x the free stock)")
    b.add_argument("-d", "--duration", type=_positive(float), default=30.0, metavar="S",
                   help="stop issuing calls after S seconds of load (default: %(default)s)")
    b.add_argument("-c", "--concurrency", type=_positive(int), metavar="C",
                   help="calls in flight (verify-unary, flash-sale; default 64), streams "
                        "(verify-stream; 8), gate terminals (gate-storm; 16), workers (holiday; 16)")
    b.add_argument("--rate", type=_positive(float), metavar="R",
                   help="pace to R calls/s (batches/s for verify-stream, orders/s for holiday); "
                        "latency then counts from each call's due time (default: as fast as "
                        "answers come)")
    w = p.add_argument_group("what to use")
    w.add_argument("--date", type=_date, help="venue-local day of the tickets and slots, YYYY-MM-DD "
                                              "(default: today at the venue)")
    w.add_argument("--product", help="product to sell (default: the first one that admits one zone, "
                                     "for every channel, without real names; the demo's adult)")
    w.add_argument("--gate", help="entry gate (default: the zone's entry gates)")
    w.add_argument("--dupes", type=_share, metavar="SHARE",
                   help="share of codes shown twice at once (verify-unary 0.01, gate-storm 0.02) or "
                        "again after entry (holiday 0.05)")
    w.add_argument("--short-codes", action="store_true", help="buy MAC-only codes (not signed)")
    w.add_argument("--codes-file", metavar="FILE",
                   help="scan these tickets instead of buying (verify-*, gate-storm): lines of "
                        "CODE or TICKET_ID CODE [SCAN_TIME], as --save-codes writes; needs "
                        "--product or --gate")
    w.add_argument("--save-codes", metavar="FILE", help="write the scanned tickets to FILE")
    w.add_argument("--expect", choices=["admit", "used"], default="admit",
                   help="scans: fresh tickets, each admitted once (admit, default), or tickets "
                        "already used, each refused ALREADY_USED (used)")
    s = p.add_argument_group("scenario options")
    s.add_argument("--per-call", type=_positive(int), default=100,
                   help="verify-stream: codes per batch (default: %(default)s)")
    s.add_argument("--window", type=_positive(int), default=2,
                   help="verify-stream: batches in flight per stream (default: %(default)s)")
    s.add_argument("--packed", action="store_true",
                   help="verify-stream: a concentrator's GateService.VerifyPacked (codes in their "
                        "binary form packed in one field, answers in packed arrays) instead")
    s.add_argument("--burst", type=_positive(int), default=8,
                   help="gate-storm: scans per terminal per burst (default: %(default)s)")
    s.add_argument("--interval", type=float, default=0.25, metavar="S",
                   help="gate-storm: seconds between bursts (default: %(default)s)")
    s.add_argument("--capacity", type=_positive(int), default=1000,
                   help="flash-sale: capacity of the slot it creates (default: %(default)s)")
    s.add_argument("--slot", help="flash-sale: an existing slot (without allotments) instead")
    s.add_argument("--ttl", type=_positive(int), default=900,
                   help="flash-sale: seconds the holds last (default: %(default)s)")
    s.add_argument("--release", action="store_true",
                   help="flash-sale: release every granted hold at the end (checked)")
    s.add_argument("--buy", action="store_true",
                   help="flash-sale: every ask an order, SalesService.Buy (held and paid in one "
                        "call, at the price the channel's Quote gave), instead of a Hold")
    s.add_argument("--exit-share", type=_share, default=0.3, metavar="SHARE",
                   help="holiday: share of visitors who exit (default: %(default)s)")
    s.add_argument("--reentry-share", type=_share, default=0.5, metavar="SHARE",
                   help="holiday: share of those who come back (default: %(default)s)")
    o = p.add_argument_group("output")
    o.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop",
                   help="the load generator's event loop (default: %(default)s)")
    o.add_argument("--seed", type=int, help="random seed (who is duplicated, which slot, ...)")
    o.add_argument("--json", metavar="FILE", help="also write the result as JSON")
    o.add_argument("-q", "--quiet", action="store_true",
                   help="no progress bar (there is none either when stderr is not a terminal)")
    p.set_defaults(func=cmd_loadgen)


class _Bar:
    """A tqdm progress bar per phase, on stderr."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bar = None

    def phase(self, name: str, total: int | None) -> None:
        self.close()
        if self.enabled:
            from tqdm import tqdm
            self.bar = tqdm(total=total, desc=name, unit=" calls", file=sys.stderr,
                            dynamic_ncols=True, leave=False, mininterval=0.2)

    def advance(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _kwargs(a, lg) -> dict:
    count, conc = DEFAULTS[a.scenario]
    count = a.count or count
    conc = a.concurrency or conc
    kw: dict = {"duration_s": a.duration, "loop": a.loop}
    if a.seed is not None:
        kw["seed"] = a.seed
    if a.scenario in SCANS:
        kw.update(date=a.date, product=a.product, gate=a.gate, expect=a.expect,
                  short_codes=a.short_codes)
        if a.codes_file:
            if not (a.product or a.gate):
                raise lg.LoadgenError("--codes-file needs --product or --gate (which zone they enter)")
            kw["tickets"] = lg.read_codes(a.codes_file)
            if a.count:
                kw["tickets"] = kw["tickets"][:a.count]
        else:
            kw["count"] = count
    elif a.codes_file or a.save_codes or a.expect != "admit":
        raise lg.LoadgenError("--codes-file, --save-codes and --expect are for verify-unary, "
                              "verify-stream and gate-storm")
    if a.scenario == "verify-unary":
        kw.update(inflight=conc, rate=a.rate)
        if a.dupes is not None:
            kw["dupes"] = a.dupes
    elif a.scenario == "verify-stream":
        kw.update(streams=conc, per_call=a.per_call, window=a.window, rate=a.rate, packed=a.packed)
    elif a.scenario == "gate-storm":
        kw.update(gates=conc, burst=a.burst, interval_s=a.interval)
        if a.dupes is not None:
            kw["dupes"] = a.dupes
    elif a.scenario == "flash-sale":
        kw.update(capacity=a.capacity, count=a.count, inflight=conc, slot=a.slot, product=a.product,
                  date=a.date, ttl_s=a.ttl, release=a.release, rate=a.rate, buy=a.buy)
    elif a.scenario == "holiday":
        kw.update(count=count, concurrency=conc, exit_share=a.exit_share,
                  reentry_share=a.reentry_share, product=a.product, date=a.date, rate=a.rate)
        if a.dupes is not None:
            kw["dupes"] = a.dupes
    if a.packed and a.scenario != "verify-stream":
        raise lg.LoadgenError("--packed is for verify-stream")
    if a.dupes is not None and a.scenario not in ("verify-unary", "gate-storm", "holiday"):
        raise lg.LoadgenError("--dupes is for verify-unary, gate-storm and holiday")
    if a.rate is not None and a.scenario == "gate-storm":
        raise lg.LoadgenError("gate-storm is paced by --burst and --interval, not --rate")
    return kw


def _keys(a, lg):
    """The run's keys from --keys-file, --key-file and --key, else TURNSTILE_API_KEY."""
    from .remote import KEY_ENV, read_key_file
    keys = lg.Keys()
    if a.keys_file:
        lg.Keys.from_file(a.keys_file, keys)
    specs = list(a.key)
    if a.key_file:
        try:
            specs += read_key_file(a.key_file, several=True)
        except ValueError as e:
            raise lg.LoadgenError(str(e)) from None
    if not (a.keys_file or specs):
        specs = [os.environ.get(KEY_ENV, "").strip()]
        if not specs[0]:
            raise lg.LoadgenError(f"an API key is needed: --keys-file DATA/demo-keys.txt, "
                                  f"--key-file FILE, the {KEY_ENV} variable, or --key")
    return lg.Keys.parse(specs, keys)


def cmd_loadgen(a) -> int:
    from .. import loadgen as lg
    bar = _Bar(enabled=not a.quiet and sys.stderr.isatty())
    try:
        keys = _keys(a, lg)
        target = lg.Target(a.address, keys, a.venue, a.allow_remote)
        kw = _kwargs(a, lg)
        if a.loop == "uvloop":
            try:
                import uvloop  # noqa: F401
            except ImportError:
                kw["loop"] = "asyncio"
        result = lg.SCENARIOS[a.scenario](target, progress=bar, **kw)
    except lg.LoadgenError as e:
        bar.close()
        print(f"turnstile loadgen: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        bar.close()
        print("turnstile loadgen: interrupted", file=sys.stderr)
        return 130
    except Exception:              # not a verdict: exit 1 is kept for correctness failures
        bar.close()
        traceback.print_exc()
        print("turnstile loadgen: the run failed (above)", file=sys.stderr)
        return 2
    finally:
        bar.close()
    print(f"turnstile loadgen {a.scenario} against {a.address} (venue {a.venue})")
    print(result.summary())
    if a.save_codes and result.tickets:
        n = lg.save_codes(a.save_codes, result.tickets)
        print(f"wrote {n:,} tickets to {a.save_codes}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result.to_dict(), f, indent=2, sort_keys=True, default=str)
    return 0 if result.ok else 1
