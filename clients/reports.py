"""Reports of a venue over ``ReportService`` (DESIGN.md 4.7): who is inside now and
what entered today per zone (``LiveCounts``), and tickets issued, used, voided and
blocked per product (``TicketCounts``), with table and CSV rendering for people and
spreadsheets.

    from turnstile.clients.reports import ReportsClient, to_csv, to_table

    reports = ReportsClient(Connection("127.0.0.1:50051", finance_key))
    live = reports.live_counts("westlake")
    print(to_table(live.zones))
    open("tickets.csv", "w").write(to_csv(reports.ticket_counts("westlake")))
"""
from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
from collections.abc import Sequence

from turnstile.v1 import common_pb2, report_pb2, report_pb2_grpc

from .base import Connection

__all__ = ["Conflict", "LiveCounts", "ProductCount", "ReportsClient", "ZoneCount", "to_csv",
           "to_table"]

Reports = report_pb2_grpc.ReportServiceStub


@dataclasses.dataclass(frozen=True)
class ZoneCount:
    """One zone on one day: persons inside now (0 for a day other than today),
    tickets that entered on the day, and the zone's flow limit (0: none)."""

    zone_id: str
    inside: int
    entered_tickets: int
    live_capacity: int


@dataclasses.dataclass(frozen=True)
class LiveCounts:
    """Per-zone counts of a venue on a venue-local day, in zone order."""

    venue_id: str
    date: dt.date
    zones: tuple[ZoneCount, ...]


@dataclasses.dataclass(frozen=True)
class ProductCount:
    """Codes of one product: issued, used at least once, refunded or cancelled
    (voided), and blocked now."""

    product_id: str
    issued: int
    used: int
    voided: int
    blocked: int


@dataclasses.dataclass(frozen=True)
class Conflict:
    """An offline admission the server refused: the ticket (code id) a gate admitted
    while offline, when, and why the server would not have (``ALREADY_USED``: it was
    admitted at another gate too; ``VOIDED``: refunded meanwhile). ``key`` pages on."""

    scan_time: dt.datetime
    gate_id: str
    ticket_id: int
    direction: str
    persons: int
    offline_reason: str
    server_reason: str
    nonce: str
    key: str


class ReportsClient:
    """Typed calls of ``ReportService``, routed to the venue's shard; reads, so retried."""

    def __init__(self, conn: Connection):
        self.conn = conn

    def live_counts(self, venue: str, date: dt.date | str | None = None) -> LiveCounts:
        """Persons inside and tickets entered per zone of ``venue`` on ``date`` (a
        venue-local day; default: today at the venue)."""
        day = date.isoformat() if isinstance(date, dt.date) else (date or "")
        r = self.conn.call(Reports, "LiveCounts", report_pb2.LiveCountsRequest(venue_id=venue, date=day),
                           venue=venue, retry=True)
        return LiveCounts(venue, dt.date.fromisoformat(r.date), tuple(
            ZoneCount(z.zone_id, z.inside, z.entered_tickets, z.live_capacity) for z in r.zones))

    def ticket_counts(self, venue: str) -> list[ProductCount]:
        """Codes issued, used, voided and blocked per product of ``venue``, in product order."""
        r = self.conn.call(Reports, "TicketCounts", report_pb2.TicketCountsRequest(venue_id=venue),
                           venue=venue, retry=True)
        return [ProductCount(p.product_id, p.issued, p.used, p.voided, p.blocked) for p in r.products]

    def conflicts(self, venue: str, *, after: str = "", limit: int = 0) -> list[Conflict]:
        """Offline admissions of ``venue`` the server refused, oldest first: every one
        (``limit`` 0), or up to ``limit`` after the conflict whose ``key`` is ``after``."""
        out: list[Conflict] = []
        while True:
            r = self.conn.call(Reports, "Conflicts", report_pb2.ConflictsRequest(
                venue_id=venue, after=after, limit=min(limit - len(out), 1000) if limit else 1000),
                venue=venue, retry=True)
            out += [Conflict(c.scan_time.ToDatetime(dt.timezone.utc), c.gate_id, c.ticket_id,
                             common_pb2.Direction.Name(c.direction), c.persons,
                             common_pb2.ScanReason.Name(c.offline_reason),
                             common_pb2.ScanReason.Name(c.server_reason), c.nonce, c.key)
                    for c in r.conflicts]
            if not r.conflicts or len(r.conflicts) < 1000 or (limit and len(out) >= limit):
                return out
            after = out[-1].key


def _rows(records: Sequence) -> tuple[list[str], list[list]]:
    if not records:
        return [], []
    fields = [f.name for f in dataclasses.fields(records[0])]
    return fields, [[getattr(r, f) for f in fields] for r in records]


def to_csv(records: Sequence) -> str:
    """Dataclass records (ZoneCount, ProductCount...) as CSV with a header row of
    their field names; empty for no records."""
    fields, rows = _rows(records)
    if not fields:
        return ""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(fields)
    w.writerows(rows)
    return out.getvalue()


def to_table(records: Sequence) -> str:
    """Dataclass records as an aligned text table (numbers right-aligned)."""
    fields, rows = _rows(records)
    if not fields:
        return "(none)\n"
    cells = [fields] + [[str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(fields))]
    numeric = [all(isinstance(row[i], int) for row in rows) for i in range(len(fields))]

    def line(r: list[str]) -> str:
        return "  ".join(c.rjust(w) if n else c.ljust(w)
                         for c, w, n in zip(r, widths, numeric)).rstrip()
    return "\n".join([line(cells[0]), line(["-" * w for w in widths])]
                     + [line(r) for r in cells[1:]]) + "\n"
