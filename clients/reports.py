"""Reports of a venue over ``ReportService`` (DESIGN.md 4.7), with table, CSV and XLSX
rendering for people and spreadsheets, and PNG charts for people who would rather look:

* who is inside now and what entered today per zone (``LiveCounts``), tickets issued,
  used, voided and blocked per product (``TicketCounts``), offline conflicts;
* money: revenue per day, month or year and channel, station, product or payment method
  (``Revenue``), what each partner is owed by the revenue split (``Settlement``);
* tickets per visit day by what became of them (``TicketStatus``), entries per zone,
  gate and hour (``Entries``);
* the orders, refunds, changes and cash-desk shifts of a day range, flattened to one
  row each (``ListOrders``, ``ListRefunds``, ``ListChanges``, ``ListShifts``);
* a payment provider's statement imported and matched to the fen (``ImportStatement``,
  ``Reconcile``).

Money is integer fen in every record (fields named ``*_fen``); days are venue-local and
taken as ``datetime.date`` or ``"YYYY-MM-DD"``; times are aware UTC datetimes. XLSX
needs openpyxl and the charts matplotlib (``pip install 'turnstile[reports]'``).

    from turnstile.clients.reports import (ReportsClient, revenue_chart_png, to_csv, to_table,
                                           to_xlsx)

    reports = ReportsClient(Connection("127.0.0.1:50051", finance_key))
    live = reports.live_counts("westlake")
    print(to_table(live.zones))
    open("tickets.csv", "w").write(to_csv(reports.ticket_counts("westlake")))
    rev = reports.revenue("westlake", "2026-12-01", "2026-12-31", group_by=("channel",))
    open("december.png", "wb").write(revenue_chart_png(rev, title="December"))
    open("orders.xlsx", "wb").write(to_xlsx(reports.orders("westlake", "2026-12-01",
                                                           "2026-12-31"), sheet="orders"))
"""
from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import functools
import importlib.resources
import io
import logging
import shutil
import subprocess
import typing
import unicodedata
import warnings
from collections.abc import Iterator, Sequence

import grpc

from turnstile.v1 import common_pb2, report_pb2, report_pb2_grpc, sales_pb2

from .base import ApiError, Connection

__all__ = ["CUT_FIELDS", "REVENUE_CUTS", "ChangeSummary", "Conflict", "EntriesReport", "GateHour",
           "ImportResult", "LiveCounts", "Mismatch", "OrderSummary", "PartnerStatement",
           "ProductCount", "Reconciliation", "RefundSummary", "ReportsClient", "RevenueReport",
           "RevenueRow", "Settlement", "SettlementLine", "SettlementRow", "ShiftMethodRow",
           "ShiftSummary", "TicketStatusRow", "ZoneCount", "ZoneDay", "entries_chart_png",
           "revenue_chart_png", "to_csv", "to_table", "to_xlsx"]

Reports = report_pb2_grpc.ReportServiceStub

#: Revenue's cuts besides the period, as ``group_by`` names them.
REVENUE_CUTS = ("channel", "station", "product", "method")
#: The RevenueRow field each cut fills.
CUT_FIELDS = {"channel": "channel", "station": "station_id", "product": "product_id",
              "method": "method"}
_PAGE = 1000          # the most ListOrders, ListRefunds and ListChanges answer at once


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


# -- money -----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class RevenueRow:
    """Money of one period and cut. ``period`` is YYYY-MM-DD, YYYY-MM or YYYY (empty in
    a report's total); ``channel``, ``station_id``, ``product_id`` and ``method`` are
    the cuts asked for (empty when not grouped by them). Net = paid - refunded +
    change_in - change_out; ``fee_fen`` is what refunds and changes kept (inside net);
    paid = gross - discount."""

    period: str
    channel: str
    station_id: str
    product_id: str
    method: str
    sold_tickets: int
    sold_persons: int
    gross_fen: int
    discount_fen: int
    paid_fen: int
    refunded_tickets: int
    refunded_persons: int
    refunded_fen: int
    fee_fen: int
    changed_tickets: int
    change_in_fen: int
    change_out_fen: int
    net_fen: int


@dataclasses.dataclass(frozen=True)
class RevenueReport:
    """Revenue of a venue's sale days ``date_from`` to ``date_to`` per ``period``
    (day, month or year) and the cuts in ``group_by``: ``rows`` in period order, then
    by the cuts, and their ``total``."""

    venue_id: str
    date_from: dt.date
    date_to: dt.date
    period: str
    group_by: tuple[str, ...]
    rows: tuple[RevenueRow, ...]
    total: RevenueRow

    @property
    def columns(self) -> tuple[str, ...]:
        """The RevenueRow fields worth showing: the period, the cuts asked for, every
        number (for ``to_table(..., fields=report.columns)``)."""
        cuts = {CUT_FIELDS[c] for c in self.group_by}
        return tuple(f.name for f in dataclasses.fields(RevenueRow)
                     if f.name not in CUT_FIELDS.values() or f.name in cuts)


@dataclasses.dataclass(frozen=True)
class SettlementLine:
    """What a partner is owed for one product: persons sold less persons refunded,
    and the partner's shares of sales less those reversed at refunds, fen."""

    product_id: str
    persons: int
    amount_fen: int


@dataclasses.dataclass(frozen=True)
class PartnerStatement:
    """One partner's (a zone, merchant or partner: ``kind``) statement for the period:
    per product, and owed in all."""

    partner: str
    kind: str
    lines: tuple[SettlementLine, ...]
    amount_fen: int


@dataclasses.dataclass(frozen=True)
class SettlementRow:
    """One line of a settlement, flat for a table or spreadsheet: a partner's product,
    or (``kind`` "venue", no product) what is left for the venue itself."""

    partner: str
    kind: str
    product_id: str
    persons: int
    amount_fen: int


@dataclasses.dataclass(frozen=True)
class Settlement:
    """What each partner is owed for sale days ``date_from`` to ``date_to`` by the
    revenue split rules, by partner name; the period's ``net_fen`` (Revenue's net) and
    ``venue_fen``, what is left for the venue: net less every partner's amount."""

    venue_id: str
    date_from: dt.date
    date_to: dt.date
    partners: tuple[PartnerStatement, ...]
    net_fen: int
    venue_fen: int

    def rows(self) -> list[SettlementRow]:
        """One row per partner and product, then the venue's share (partner: the venue
        id, kind "venue"): their amounts add up to ``net_fen``."""
        return [SettlementRow(p.partner, p.kind, ln.product_id, ln.persons, ln.amount_fen)
                for p in self.partners for ln in p.lines] + [
            SettlementRow(self.venue_id, "venue", "", 0, self.venue_fen)]


# -- tickets and entries ---------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class TicketStatusRow:
    """Codes of one product for one visit day by what became of them: issued (sold,
    or issued by a change), used at least once, unused and still valid, refunded or
    changed away, expired unused."""

    date: dt.date
    product_id: str
    sold: int
    used: int
    unused: int
    refunded: int
    expired: int


@dataclasses.dataclass(frozen=True)
class GateHour:
    """Passages at one gate in one venue-local hour (0-23): persons admitted on a
    visit, admitted again after an exit, let out."""

    zone_id: str
    gate_id: str
    hour: int
    entries: int
    reentries: int
    exits: int


@dataclasses.dataclass(frozen=True)
class ZoneDay:
    """A zone's day: persons admitted on a visit, re-admitted, let out; tickets that
    entered; the most persons inside at once."""

    zone_id: str
    entries: int
    reentries: int
    exits: int
    entered_tickets: int
    peak_inside: int


@dataclasses.dataclass(frozen=True)
class EntriesReport:
    """Entries of a venue on a venue-local day: every gate and hour with a passage (by
    zone, gate, hour) and each zone's day (in zone order)."""

    venue_id: str
    date: dt.date
    gate_hours: tuple[GateHour, ...]
    zones: tuple[ZoneDay, ...]


# -- orders, refunds, changes, shifts --------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class OrderSummary:
    """An order flattened to one spreadsheet row.

    ``station`` and ``shift`` are empty for a remote channel's sale; ``status`` is paid,
    partly_refunded, refunded or changed; ``method`` and ``reference`` are the payment's;
    ``products`` the distinct products of its lines, comma-separated; ``tickets`` and
    ``persons`` the codes and persons of its lines (a change's new codes are a line too);
    ``amount_fen`` what was paid (after the coupon ``coupon`` took ``discount_fen`` off),
    ``refunded_fen`` what refunds gave back; ``refunds`` and ``changes`` how many."""

    order_id: str
    created: dt.datetime
    channel: str
    station: str
    shift: str
    status: str
    method: str
    reference: str
    products: str
    tickets: int
    persons: int
    amount_fen: int
    discount_fen: int
    refunded_fen: int
    coupon: str
    refunds: int
    changes: int


@dataclasses.dataclass(frozen=True)
class RefundSummary:
    """A refund flattened to one row: when, its order's keys and payment (the money
    goes back that way), the tickets voided (``ticket_ids`` comma-separated), persons
    refunded of one group ticket (0: whole tickets), returned and fee kept, fen."""

    refund_id: str
    at: dt.datetime
    order_id: str
    channel: str
    station: str
    shift: str
    method: str
    reference: str
    tickets: int
    ticket_ids: str
    persons: int
    amount_fen: int
    fee_fen: int


@dataclasses.dataclass(frozen=True)
class ChangeSummary:
    """A change (改签) flattened to one row: when, its order's keys, the tickets given up
    (``ticket_ids`` comma-separated), the first new ticket, the new slots
    (comma-separated) and price per person, the fee kept, and ``due_fen`` paid by the
    buyer (> 0, by ``method``/``reference``) or returned to them (< 0)."""

    change_id: str
    at: dt.datetime
    order_id: str
    channel: str
    station: str
    shift: str
    tickets: int
    ticket_ids: str
    first_ticket_id: int
    slots: str
    unit_price_fen: int
    fee_fen: int
    due_fen: int
    method: str
    reference: str


@dataclasses.dataclass(frozen=True)
class ShiftMethodRow:
    """What one shift took and gave back by one payment method: sales (orders and
    changes paid) and refunds (and changes returned), how many and fen, and the net."""

    shift_id: str
    station: str
    cashier: str
    method: str
    sales: int
    sales_fen: int
    refunds: int
    refunds_fen: int
    net_fen: int


@dataclasses.dataclass(frozen=True)
class ShiftSummary:
    """A cash-desk shift as a finance clerk checks it, one row per shift.

    The cash drawer first: the float, cash taken and given back, the cash expected
    (float + taken - given back), counted at the close and over/short (negative:
    short; both 0 while ``open``). Then every method together: sales and refunds, how
    many and fen, and the net taken. ``closed`` is None while open. Per-method totals
    are in ``methods`` (not a table column; :meth:`ShiftSummary.by_method` flattens)."""

    shift_id: str
    station: str
    cashier: str
    principal: str
    opened: dt.datetime
    closed: dt.datetime | None
    open: bool
    float_fen: int
    cash_sales_fen: int
    cash_refunds_fen: int
    cash_expected_fen: int
    counted_cash_fen: int
    over_short_fen: int
    sales: int
    sales_fen: int
    refunds: int
    refunds_fen: int
    net_fen: int
    methods: tuple[ShiftMethodRow, ...]

    @staticmethod
    def by_method(shifts: Sequence[ShiftSummary]) -> list[ShiftMethodRow]:
        """One row per shift and payment method, shifts in order."""
        return [m for s in shifts for m in s.methods]


# -- statements ------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ImportResult:
    """A statement stored: its method and day, lines stored, False in ``changed`` when
    this very statement was stored already, and its digest."""

    method: str
    date: dt.date
    lines: int
    changed: bool
    digest: str


@dataclasses.dataclass(frozen=True)
class Mismatch:
    """One thing a statement and Turnstile disagree on. ``kind``: PAID_NOT_IN_TURNSTILE,
    IN_TURNSTILE_NOT_PAID, AMOUNT_DIFFERS, REFUND_MISSING_AT_PROVIDER or
    REFUND_MISSING_IN_TURNSTILE; ``reference`` the provider's trade number or the
    payment reference Turnstile recorded; what each side says, fen (0 where it has none)."""

    kind: str
    reference: str
    order_id: str
    refund_id: str
    statement_fen: int
    turnstile_fen: int


@dataclasses.dataclass(frozen=True)
class Reconciliation:
    """A stored statement (``digest``) matched to the day's payments and refunds of
    ``method``: what matched, each side's totals, and every mismatch (none: balanced to
    the fen)."""

    method: str
    date: dt.date
    digest: str
    matched_payments: int
    matched_paid_fen: int
    matched_refunds: int
    matched_refunded_fen: int
    statement_paid_fen: int
    statement_refunded_fen: int
    statement_fee_fen: int
    turnstile_paid_fen: int
    turnstile_refunded_fen: int
    mismatches: tuple[Mismatch, ...]

    @property
    def balanced(self) -> bool:
        """True when nothing mismatches."""
        return not self.mismatches


# -- the client ------------------------------------------------------------------------------
def _day(day: dt.date | str) -> str:
    """A venue-local day as the API spells it (YYYY-MM-DD), from a date or that string."""
    if isinstance(day, dt.datetime):
        return day.date().isoformat()
    if isinstance(day, dt.date):
        return day.isoformat()
    try:
        return dt.date.fromisoformat(day).isoformat()
    except (TypeError, ValueError):
        raise ValueError(f"a day is a datetime.date or 'YYYY-MM-DD', not {day!r}") from None


def _utc(ts) -> dt.datetime:
    return ts.ToDatetime(dt.timezone.utc)


def _revenue_row(r: report_pb2.RevenueRow) -> RevenueRow:
    return RevenueRow(*(getattr(r, f.name) for f in dataclasses.fields(RevenueRow)))


def _order_summary(o: sales_pb2.Order) -> OrderSummary:
    products = ",".join(dict.fromkeys(ln.product_id for ln in o.lines))
    return OrderSummary(
        o.order_id, _utc(o.created), o.channel, o.station_id, o.shift_id, o.status,
        o.payment.method, o.payment.reference, products, sum(ln.qty for ln in o.lines),
        sum(ln.qty * ln.group for ln in o.lines), o.amount_fen, o.discount_fen, o.refunded_fen,
        o.coupon_id, len(o.refunds), len(o.changes))


def _ids(ids) -> str:
    return ",".join(str(i) for i in ids)


def _refund_summary(e: report_pb2.RefundEntry) -> RefundSummary:
    r = e.refund
    return RefundSummary(r.refund_id, _utc(r.at), e.order_id, e.channel, e.station_id, e.shift_id,
                         e.method, e.reference, len(r.ticket_ids), _ids(r.ticket_ids), r.persons,
                         r.amount_fen, r.fee_fen)


def _change_summary(e: report_pb2.ChangeEntry) -> ChangeSummary:
    c = e.change
    return ChangeSummary(c.change_id, _utc(c.at), e.order_id, e.channel, e.station_id, e.shift_id,
                         len(c.ticket_ids), _ids(c.ticket_ids), c.first_ticket_id, ",".join(c.slot_ids),
                         c.unit_price_fen, c.fee_fen, c.due_fen, c.payment.method,
                         c.payment.reference)


def _shift_summary(s: sales_pb2.Shift) -> ShiftSummary:
    methods = tuple(ShiftMethodRow(s.shift_id, s.station_id, s.cashier, m.method, m.sales,
                                   m.sales_fen, m.refunds, m.refunds_fen, m.sales_fen - m.refunds_fen)
                    for m in s.methods)
    cash = [m for m in methods if m.method == "cash"]
    return ShiftSummary(
        s.shift_id, s.station_id, s.cashier, s.principal, _utc(s.opened),
        _utc(s.closed) if s.HasField("closed") else None, s.open, s.float_fen,
        sum(m.sales_fen for m in cash), sum(m.refunds_fen for m in cash), s.cash_expected_fen,
        s.counted_cash_fen, s.over_short_fen, sum(m.sales for m in methods),
        sum(m.sales_fen for m in methods), sum(m.refunds for m in methods),
        sum(m.refunds_fen for m in methods), s.net_fen, methods)


_STATEMENT_KINDS = {"payment": report_pb2.StatementLine.PAYMENT,
                    "refund": report_pb2.StatementLine.REFUND}


class ReportsClient:
    """Typed calls of ``ReportService``, routed to the venue's shard; reads, so retried.
    Every day argument is a venue-local ``datetime.date`` or ``"YYYY-MM-DD"``; a range
    includes both ends."""

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

    def watch_live(self, venue: str, *, min_interval_ms: int = 0,
                   timeout: float | None = None) -> Iterator[report_pb2.LiveView]:
        """The live view of ``venue`` as the server pushes it (``ReportService.WatchLive``):
        the current view at once, then one whenever something changed (at most one per
        ``min_interval_ms``; 0: the server's 250 ms). Runs until the caller stops
        iterating (the stream is then cancelled) or ``timeout`` seconds pass; a refusal
        raises :class:`ApiError`."""
        stub = self.conn.stub(report_pb2_grpc.ReportServiceStub, venue=venue)
        call = stub.WatchLive(report_pb2.WatchLiveRequest(venue_id=venue, min_interval_ms=min_interval_ms),
                              metadata=self.conn.metadata, timeout=timeout)
        try:
            yield from call
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.DEADLINE_EXCEEDED or timeout is None:
                raise ApiError.from_rpc(e, method="WatchLive") from None
        finally:
            call.cancel()

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

    def revenue(self, venue: str, date_from: dt.date | str, date_to: dt.date | str, *,
                period: str = "day", group_by: Sequence[str] = ("channel",)) -> RevenueReport:
        """Money of ``venue``'s sale days ``date_from`` to ``date_to`` (at most 3,660 days)
        per ``period`` ("day", "month" or "year") and the cuts in ``group_by`` (any of
        channel, station, product, method; none: one row a period): sold, discounts,
        refunds and their fees, changes, net. From the server's counters, so cheap."""
        if period not in ("day", "month", "year"):
            raise ValueError(f"period is day, month or year, not {period!r}")
        group_by = tuple(group_by)
        if unknown := [c for c in group_by if c not in REVENUE_CUTS]:
            raise ValueError(f"group_by takes {', '.join(REVENUE_CUTS)}, not {', '.join(unknown)}")
        lo, hi = _day(date_from), _day(date_to)
        r = self.conn.call(Reports, "Revenue", report_pb2.RevenueRequest(
            venue_id=venue, date_from=lo, date_to=hi, period=report_pb2.Period.Value(period.upper()),
            group_by=group_by), venue=venue, retry=True)
        return RevenueReport(venue, dt.date.fromisoformat(lo), dt.date.fromisoformat(hi), period,
                             group_by, tuple(_revenue_row(x) for x in r.rows), _revenue_row(r.total))

    def ticket_status(self, venue: str, date_from: dt.date | str,
                      date_to: dt.date | str) -> list[TicketStatusRow]:
        """Codes of ``venue`` whose visit day (first valid day) is ``date_from`` to
        ``date_to``, per day and product: sold, used, unused, refunded, expired."""
        r = self.conn.call(Reports, "TicketStatus", report_pb2.TicketStatusRequest(
            venue_id=venue, date_from=_day(date_from), date_to=_day(date_to)), venue=venue, retry=True)
        return [TicketStatusRow(dt.date.fromisoformat(x.date), x.product_id, x.sold, x.used, x.unused,
                                x.refunded, x.expired) for x in r.rows]

    def entries(self, venue: str, date: dt.date | str | None = None) -> EntriesReport:
        """Entries, re-entries and exits per zone, gate and hour of ``venue`` on ``date``
        (default: today at the venue), and each zone's day with its peak inside."""
        r = self.conn.call(Reports, "Entries", report_pb2.EntriesRequest(
            venue_id=venue, date=_day(date) if date else ""), venue=venue, retry=True)
        return EntriesReport(
            venue, dt.date.fromisoformat(r.date),
            tuple(GateHour(g.zone_id, g.gate_id, g.hour, g.entries, g.reentries, g.exits)
                  for g in r.gate_hours),
            tuple(ZoneDay(z.zone_id, z.entries, z.reentries, z.exits, z.entered_tickets, z.peak_inside)
                  for z in r.zones))

    def _pages(self, method: str, request: report_pb2.ListOrdersRequest, items: str,
               limit: int) -> list:
        """Every item of a ListOrders-like call (``limit`` 0), or the first ``limit``,
        a page of up to 1,000 at a time, each page after the last one's ``next``."""
        out: list = []
        while True:
            request.limit = min(limit - len(out), _PAGE) if limit else _PAGE
            r = self.conn.call(Reports, method, request, venue=request.venue_id, retry=True)
            out += getattr(r, items)
            if not r.next or (limit and len(out) >= limit):
                return out
            request.after = r.next

    def orders(self, venue: str, date_from: dt.date | str, date_to: dt.date | str, *,
               channel: str = "", station: str = "", status: str = "",
               limit: int = 0) -> list[OrderSummary]:
        """Orders of ``venue`` confirmed on ``date_from`` to ``date_to``, oldest first,
        one flat row each: all of them (``limit`` 0) or the first ``limit``; only
        ``channel``'s, ``station``'s, or those of ``status`` (paid, partly_refunded,
        refunded, changed) when given."""
        req = report_pb2.ListOrdersRequest(venue_id=venue, date_from=_day(date_from),
                                           date_to=_day(date_to), channel=channel,
                                           station_id=station, status=status)
        return [_order_summary(o) for o in self._pages("ListOrders", req, "orders", limit)]

    def refunds(self, venue: str, date_from: dt.date | str, date_to: dt.date | str, *,
                channel: str = "", station: str = "", limit: int = 0) -> list[RefundSummary]:
        """Refunds of ``venue`` made on ``date_from`` to ``date_to``, oldest first, one flat
        row each (``limit`` 0: all), only ``channel``'s or ``station``'s when given."""
        req = report_pb2.ListOrdersRequest(venue_id=venue, date_from=_day(date_from),
                                           date_to=_day(date_to), channel=channel, station_id=station)
        return [_refund_summary(e) for e in self._pages("ListRefunds", req, "refunds", limit)]

    def changes(self, venue: str, date_from: dt.date | str, date_to: dt.date | str, *,
                channel: str = "", station: str = "", limit: int = 0) -> list[ChangeSummary]:
        """Changes of ``venue`` made on ``date_from`` to ``date_to``, oldest first, one flat
        row each (``limit`` 0: all), only ``channel``'s or ``station``'s when given."""
        req = report_pb2.ListOrdersRequest(venue_id=venue, date_from=_day(date_from),
                                           date_to=_day(date_to), channel=channel, station_id=station)
        return [_change_summary(e) for e in self._pages("ListChanges", req, "changes", limit)]

    def shifts(self, venue: str, date_from: dt.date | str, date_to: dt.date | str, *,
               station: str = "") -> list[ShiftSummary]:
        """Cash-desk shifts of ``venue`` opened on ``date_from`` to ``date_to`` (only
        ``station``'s when given), by opening time, with their totals so far."""
        r = self.conn.call(Reports, "ListShifts", report_pb2.ListShiftsRequest(
            venue_id=venue, date_from=_day(date_from), date_to=_day(date_to), station_id=station),
            venue=venue, retry=True)
        return [_shift_summary(s) for s in r.shifts]

    def import_statement(self, venue: str, data: bytes, *, method: str | None = None) -> ImportResult:
        """Store a payment provider's statement of one day (the file's bytes, as the
        provider exports it; ``clients.statements`` reads it) for ``method`` (default: the
        provider the file is from). The same statement again changes nothing, so the
        call is retried like a read."""
        from .statements import parse_statement
        st = parse_statement(data)
        method = method or st.provider
        day = _day(st.day)
        lines = []
        for ln in st.lines:
            if ln.kind not in _STATEMENT_KINDS:
                raise ValueError(f"statement line kind is payment or refund, not {ln.kind!r}")
            line = report_pb2.StatementLine(kind=_STATEMENT_KINDS[ln.kind], trade_no=ln.trade_no,
                                            order_id=ln.order_id, refund_id=ln.refund_id,
                                            amount_fen=ln.amount_fen, fee_fen=ln.fee_fen)
            line.at.FromDatetime(ln.at)
            lines.append(line)
        r = self.conn.call(Reports, "ImportStatement", report_pb2.ImportStatementRequest(
            venue_id=venue, method=method, date=day, lines=lines), venue=venue, retry=True)
        return ImportResult(method, dt.date.fromisoformat(day), r.lines, r.changed, r.digest)

    def reconcile(self, venue: str, method: str, date: dt.date | str) -> Reconciliation:
        """Match the stored statement of ``method`` (alipay, wechat) for ``date`` to that
        day's payments and refunds by ``method``, to the fen."""
        day = _day(date)
        r = self.conn.call(Reports, "Reconcile", report_pb2.ReconcileRequest(
            venue_id=venue, method=method, date=day), venue=venue, retry=True)
        return Reconciliation(
            method, dt.date.fromisoformat(day), r.digest, r.matched_payments, r.matched_paid_fen,
            r.matched_refunds, r.matched_refunded_fen, r.statement_paid_fen,
            r.statement_refunded_fen, r.statement_fee_fen, r.turnstile_paid_fen,
            r.turnstile_refunded_fen,
            tuple(Mismatch(report_pb2.MismatchKind.Name(m.kind), m.reference, m.order_id,
                           m.refund_id, m.statement_fen, m.turnstile_fen) for m in r.mismatches))

    def settlement(self, venue: str, date_from: dt.date | str, date_to: dt.date | str, *,
                   partner: str = "") -> Settlement:
        """What each partner (only ``partner`` when given) is owed for ``venue``'s sale
        days ``date_from`` to ``date_to`` by the revenue split rules, and the venue's own
        share of the period's net revenue."""
        lo, hi = _day(date_from), _day(date_to)
        r = self.conn.call(Reports, "Settlement", report_pb2.SettlementRequest(
            venue_id=venue, date_from=lo, date_to=hi, partner=partner), venue=venue, retry=True)
        return Settlement(
            venue, dt.date.fromisoformat(lo), dt.date.fromisoformat(hi),
            tuple(PartnerStatement(p.partner, p.kind,
                                   tuple(SettlementLine(x.product_id, x.persons, x.amount_fen)
                                         for x in p.lines), p.amount_fen) for p in r.partners),
            r.net_fen, r.venue_fen)


# -- tables, CSV, XLSX -----------------------------------------------------------------------
@functools.cache
def _columns(cls: type) -> tuple[str, ...]:
    """The fields of a record class a table shows: all but those holding nested records
    (a tuple of dataclasses, such as ShiftSummary.methods). A class whose annotations
    do not resolve (one made inside a function) shows every field."""
    try:
        hints = typing.get_type_hints(cls)
    except NameError:
        return tuple(f.name for f in dataclasses.fields(cls))

    def nested(t) -> bool:
        return (typing.get_origin(t) in (tuple, list)
                and any(dataclasses.is_dataclass(a) for a in typing.get_args(t)))
    return tuple(f.name for f in dataclasses.fields(cls) if not nested(hints[f.name]))


def _rows(records: Sequence, fields: Sequence[str] | None = None) -> tuple[list[str], list[list]]:
    """Header and rows of dataclass records: ``fields`` in that order (default: every
    field but nested records); a tuple of plain values becomes one comma-separated
    string, None an empty cell."""
    if not records:
        return [], []
    names = list(fields) if fields is not None else list(_columns(type(records[0])))

    def cell(v):
        if v is None:
            return ""
        if isinstance(v, (tuple, list)):
            return ",".join(str(x) for x in v)
        return v
    return names, [[cell(getattr(r, f)) for f in names] for r in records]


def to_csv(records: Sequence, *, fields: Sequence[str] | None = None) -> str:
    """Dataclass records (ZoneCount, OrderSummary...) as CSV with a header row of
    their field names (``fields`` only, in that order, when given); empty for no
    records. Money stays integer fen; times are ISO-like UTC with their offset."""
    names, rows = _rows(records, fields)
    if not names:
        return ""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(names)
    w.writerows(rows)
    return out.getvalue()


def _width(s: str) -> int:
    """Columns ``s`` takes on a terminal or in a spreadsheet: a CJK character takes two."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in s)


def to_table(records: Sequence, *, fields: Sequence[str] | None = None) -> str:
    """Dataclass records as an aligned text table (numbers right-aligned; ``fields``
    only, in that order, when given)."""
    names, rows = _rows(records, fields)
    if not names:
        return "(none)\n"
    cells = [names] + [[str(v) for v in row] for row in rows]
    widths = [max(_width(r[i]) for r in cells) for i in range(len(names))]
    numeric = [all(isinstance(row[i], int) for row in rows) for i in range(len(names))]

    def line(r: list[str]) -> str:
        pads = [" " * (w - _width(c)) for c, w in zip(r, widths)]
        return "  ".join(p + c if n else c + p for c, p, n in zip(r, pads, numeric)).rstrip()
    return "\n".join([line(cells[0]), line(["-" * w for w in widths])]
                     + [line(r) for r in cells[1:]]) + "\n"


def _need(module: str, what: str):
    """Import an optional dependency of the reports extra, or say how to get it."""
    try:
        return __import__(module)
    except ImportError:
        raise RuntimeError(f"{what} needs {module}: pip install 'turnstile[reports]'") from None


def to_xlsx(records: Sequence, sheet: str = "report", *,
            fields: Sequence[str] | None = None) -> bytes:
    """Dataclass records as an Excel workbook of one sheet named ``sheet`` (its first 31
    characters): a bold header row of their field names (``fields`` only, in that order,
    when given) that stays in view, a row per record, columns as wide as their text.
    Numbers stay numbers (money in integer fen), days are dates, times UTC date-times
    (Excel has no time zones: shown with a "UTC" suffix). No records: the header-less
    empty sheet."""
    _need("openpyxl", "XLSX export")
    from openpyxl import Workbook
    from openpyxl.styles import Font
    from openpyxl.utils import get_column_letter

    names, rows = _rows(records, fields)
    wb = Workbook()
    ws = wb.active
    ws.title = sheet[:31]
    if names:
        ws.append(names)
        for c in ws[1]:
            c.font = Font(bold=True)
        ws.freeze_panes = "A2"
    widths = [_width(n) for n in names]
    for row in rows:
        out, formats = [], []
        for i, v in enumerate(row):
            fmt, text = None, str(v)
            if isinstance(v, dt.datetime):
                v = v.astimezone(dt.timezone.utc).replace(tzinfo=None) if v.tzinfo else v
                fmt, text = 'yyyy-mm-dd hh:mm:ss "UTC"', v.strftime("%Y-%m-%d %H:%M:%S UTC")
            elif isinstance(v, dt.date):
                fmt = "yyyy-mm-dd"
            widths[i] = max(widths[i], _width(text))
            out.append(v)
            formats.append(fmt)
        ws.append(out)
        for c, fmt in zip(ws[ws.max_row], formats):
            if fmt:
                c.number_format = fmt
    for i, w in enumerate(widths, 1):
        ws.column_dimensions[get_column_letter(i)].width = min(w, 60) + 2
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


# -- charts ----------------------------------------------------------------------------------
_FONT_PACKAGE, _FONT_FILE = "paperang_p2_fonts_cjk", "fonts/wqy-microhei.ttc"


@functools.cache
def _cjk_font() -> str | None:
    """The name of a font with Chinese glyphs, registered with matplotlib: the one the
    POS package installs (WenQuanYi Micro Hei), else the first fontconfig lists for
    zh; None when neither is there (ids in Chinese then show as boxes)."""
    from matplotlib import font_manager
    paths = []
    try:
        packaged = importlib.resources.files(_FONT_PACKAGE).joinpath(_FONT_FILE)
        if packaged.is_file():
            paths.append(str(packaged))
    except ModuleNotFoundError:
        pass
    if fc_list := shutil.which("fc-list"):
        try:
            listed = subprocess.run([fc_list, ":lang=zh", "file"], capture_output=True, text=True,
                                    timeout=10, check=False).stdout
        except (OSError, subprocess.SubprocessError):
            listed = ""
        paths += sorted(p.rstrip(":") for p in listed.split() if p.endswith(":"))
    for path in paths:
        try:
            font_manager.fontManager.addfont(path)
            return font_manager.FontProperties(fname=path).get_name()
        except (OSError, RuntimeError, ValueError):
            continue
    return None


def _chart(draw, *, width: float, height: float = 4.8) -> bytes:
    """A PNG of a ``width`` x ``height`` inch figure that ``draw(fig)`` fills, drawn
    off screen by Agg with DejaVu Sans and a CJK font as fallback for Chinese."""
    _need("matplotlib", "Charts")
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cjk = _cjk_font()
    rc = {"font.family": ["DejaVu Sans"] + ([cjk] if cjk else []), "font.size": 10,
          "axes.spines.top": False, "axes.spines.right": False, "axes.axisbelow": True}
    # quiet: a CJK face without bold is set regular, a glyph no font has is a box
    fonts_log = logging.getLogger("matplotlib.font_manager")
    level = fonts_log.level
    fonts_log.setLevel(logging.ERROR)
    try:
        with matplotlib.rc_context(rc), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from")
            fig = Figure(figsize=(width, height), dpi=120, layout="constrained")
            FigureCanvasAgg(fig)
            draw(fig)
            buf = io.BytesIO()
            fig.savefig(buf, format="png")
    finally:
        fonts_log.setLevel(level)
    return buf.getvalue()


def _yuan_axis(ax, axis: str = "y") -> None:
    """Label ``ax``'s axis in yuan (its data are yuan): ¥1,234, or ¥12.50 for small steps."""
    from matplotlib.ticker import FuncFormatter

    def fmt(v: float, _pos) -> str:
        lo, hi = sorted(getattr(ax, f"get_{axis}lim")())
        decimals = 2 if hi - lo < 10 else 0
        return f"{'-' if v < 0 else ''}¥{abs(v):,.{decimals}f}"
    getattr(ax, f"{axis}axis").set_major_formatter(FuncFormatter(fmt))


def _stack(ax, x, series: dict[str, list[float]], colors) -> tuple[list[float], list[float]]:
    """Stacked bars at ``x`` of each series, positives up from 0 and negatives down from
    0; the tops and bottoms reached."""
    up, down = [0.0] * len(x), [0.0] * len(x)
    for (name, values), color in zip(series.items(), colors):
        bottom = [d if v < 0 else u for v, u, d in zip(values, up, down)]
        ax.bar(x, values, bottom=bottom, label=name, color=color, width=0.7, edgecolor="white",
               linewidth=0.6)
        up = [u + max(v, 0) for u, v in zip(up, values)]
        down = [d + min(v, 0) for d, v in zip(down, values)]
    return up, down


def _palette(n: int) -> list:
    import matplotlib
    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def revenue_chart_png(report: RevenueReport, *, title: str | None = None) -> bytes:
    """A bar chart (PNG) of net revenue per channel, in yuan: one bar per channel for a
    report of one period; with several periods a bar per period, stacked by channel
    (largest channel at the bottom; a negative net goes below zero), with each
    period's total on top while there is room. Not grouped by channel: one series.
    ``title`` defaults to the venue and the days."""
    periods = list(dict.fromkeys(r.period for r in report.rows))
    by_channel = "channel" in report.group_by
    net: dict[str, dict[str, float]] = {}
    for r in report.rows:
        name = (r.channel or "(none)") if by_channel else "all channels"
        per = net.setdefault(name, {})
        per[r.period] = per.get(r.period, 0.0) + r.net_fen / 100
    channels = sorted(net, key=lambda c: -sum(net[c].values()))
    span = (f"{report.date_from}" if report.date_from == report.date_to
            else f"{report.date_from} to {report.date_to}")
    title = title if title is not None else f"Net revenue of {report.venue_id}, {span}"
    single = len(periods) == 1
    bars = len(channels) if single else len(periods)

    def draw(fig) -> None:
        ax = fig.add_subplot()
        ax.set_title(title, loc="left", fontweight="bold")
        ax.yaxis.grid(True, color="#dddddd", linewidth=0.8)
        if not periods:
            ax.text(0.5, 0.5, "no sales in these days", transform=ax.transAxes, ha="center",
                    va="center", color="#666666")
            ax.set_axis_off()
            return
        colors = _palette(len(channels))
        if single:
            x = list(range(len(channels)))
            values = [net[c].get(periods[0], 0.0) for c in channels]
            ax.bar(x, values, color=colors, width=0.6)
            ax.set_xticks(x, channels)
            tops = values
            ax.set_xlabel(f"channel ({periods[0]})")
        else:
            x = list(range(len(periods)))
            series = {c: [net[c].get(p, 0.0) for p in periods] for c in channels}
            up, down = _stack(ax, x, series, colors)
            tops = [u + d for u, d in zip(up, down)]
            step = max(1, len(periods) // 24)        # at most ~24 period labels
            ax.set_xticks(x[::step], periods[::step], rotation=45 if len(periods) > 6 else 0,
                          ha="right" if len(periods) > 6 else "center")
            ax.set_xlabel({"day": "day of sale", "month": "month", "year": "year"}[report.period])
            if len(channels) > 1 or by_channel:
                ax.legend(title="channel", loc="upper left", bbox_to_anchor=(1.01, 1),
                          frameon=False, reverse=True)
        if bars <= 16:
            for xi, v in zip(x, tops):
                ax.annotate(f"¥{v:,.0f}", (xi, max(v, 0)), xytext=(0, 3), textcoords="offset points",
                            ha="center", va="bottom", fontsize=8, color="#333333")
            ax.margins(y=0.12)
        if min(tops, default=0) < 0 or any(v < 0 for s in net.values() for v in s.values()):
            ax.axhline(0, color="#444444", linewidth=0.8)
        ax.set_ylabel("net revenue (yuan)")
        _yuan_axis(ax)

    # room for the totals on top (about 0.07 inch a character at 8 points) or the bars
    label = max((len(f"¥{sum(s.get(p, 0.0) for s in net.values()):,.0f}") for p in periods), default=0)
    per_bar = max(0.42, 0.07 * label + 0.2) if bars <= 16 else 0.42
    legend = 1.6 if not single and len(channels) > 1 else 0.0
    return _chart(draw, width=max(6.4, min(16.0, 2.5 + per_bar * bars + legend)))


def entries_chart_png(report: EntriesReport, *, title: str | None = None) -> bytes:
    """A chart (PNG) of a day's passages per venue-local hour: per zone a stacked bar of
    persons admitted, re-entries hatched on top of first entries, and exits of every
    zone as a line. Hours from the first to the last with a passage; zones with a
    passage only (in the report's zone order). ``title`` defaults to the venue and the day."""
    passed = {g.zone_id for g in report.gate_hours}
    zones = [z for z in dict.fromkeys([z.zone_id for z in report.zones]
                                      + [g.zone_id for g in report.gate_hours]) if z in passed]
    hours_seen = sorted({g.hour for g in report.gate_hours})
    hours = list(range(hours_seen[0], hours_seen[-1] + 1)) if hours_seen else []
    at = {h: i for i, h in enumerate(hours)}
    first = {z: [0] * len(hours) for z in zones}
    again = {z: [0] * len(hours) for z in zones}
    exits = [0] * len(hours)
    for g in report.gate_hours:
        first[g.zone_id][at[g.hour]] += g.entries
        again[g.zone_id][at[g.hour]] += g.reentries
        exits[at[g.hour]] += g.exits
    title = title if title is not None else f"Entries at {report.venue_id} on {report.date}"

    def draw(fig) -> None:
        from matplotlib.patches import Patch
        ax = fig.add_subplot()
        ax.set_title(title, loc="left", fontweight="bold")
        ax.yaxis.grid(True, color="#dddddd", linewidth=0.8)
        if not hours:
            ax.text(0.5, 0.5, "no passages on this day", transform=ax.transAxes, ha="center",
                    va="center", color="#666666")
            ax.set_axis_off()
            return
        bottom = [0] * len(hours)
        handles = []
        for zone, color in zip(zones, _palette(len(zones))):
            ax.bar(hours, first[zone], bottom=bottom, color=color, width=0.8, edgecolor="white",
                   linewidth=0.5)
            bottom = [b + v for b, v in zip(bottom, first[zone])]
            ax.bar(hours, again[zone], bottom=bottom, color=color, alpha=0.55, width=0.8,
                   hatch="///", edgecolor="white", linewidth=0.5)
            bottom = [b + v for b, v in zip(bottom, again[zone])]
            handles.append(Patch(color=color, label=f"{zone}: {sum(first[zone]):,} entries, "
                                                    f"{sum(again[zone]):,} re-entries"))
        handles.append(Patch(facecolor="#bbbbbb", hatch="///", edgecolor="white",
                             label="hatched: re-entries"))
        (line,) = ax.plot(hours, exits, color="#222222", marker="o", markersize=3.5, linewidth=1.6,
                          label=f"exits, all zones: {sum(exits):,}")
        handles.append(line)
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
        ax.set_xticks(hours, [f"{h:02d}:00" for h in hours], rotation=45 if len(hours) > 12 else 0,
                      ha="right" if len(hours) > 12 else "center")
        ax.set_xlabel("hour (venue-local)")
        ax.set_ylabel("persons")
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.yaxis.set_major_formatter("{x:,.0f}")

    return _chart(draw, width=max(7.5, min(16.0, 4.5 + 0.45 * len(hours))))
