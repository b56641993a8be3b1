"""The finance reports' client side without a server: records rendered as tables, CSV,
XLSX and PNG charts; ReportsClient turning ReportService answers (built by hand, as
the proto contract describes them) into flat records; and the `turnstile report`
commands' options and output. The fake connection below stands in for the server in
this file only: the server side is tested against a real shard elsewhere."""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import io

import pytest

from turnstile.clients import reports as rp
from turnstile.clients.cli import build_parser, main
from turnstile.clients.cli import remote
from turnstile.v1 import report_pb2, sales_pb2

openpyxl = pytest.importorskip("openpyxl")
pytest.importorskip("matplotlib")
from PIL import Image  # noqa: E402  (pillow comes with matplotlib)

UTC = dt.timezone.utc
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def revenue_row(period: str, channel: str, net_fen: int) -> rp.RevenueRow:
    return rp.RevenueRow(period, channel, "", "", "", 4, 5, net_fen + 200, 200, net_fen,
                         0, 0, 0, 0, 0, 0, 0, net_fen)


def revenue_report(periods=("2026-12-01", "2026-12-02", "2026-12-03"),
                   channels=("ctrip", "window", "小程序")) -> rp.RevenueReport:
    rows = tuple(revenue_row(p, c, 100_000 * (i + 1) + 3_000 * j)
                 for j, p in enumerate(periods) for i, c in enumerate(channels))
    total = revenue_row("", "", sum(r.net_fen for r in rows))
    return rp.RevenueReport("westlake", dt.date.fromisoformat(periods[0]),
                            dt.date.fromisoformat(periods[-1]), "day", ("channel",), rows, total)


def entries_report() -> rp.EntriesReport:
    hours = tuple(rp.GateHour(zone, gate, h, 40 + 10 * h - (h - 11) ** 2, 3, 5 * (h - 8))
                  for zone, gate in (("north", "n1"), ("north", "n2"), ("水上乐园", "w1"))
                  for h in range(8, 18))
    zones = tuple(rp.ZoneDay(z, sum(g.entries for g in hours if g.zone_id == z),
                             sum(g.reentries for g in hours if g.zone_id == z),
                             sum(g.exits for g in hours if g.zone_id == z), 0, 0)
                  for z in ("north", "水上乐园"))
    return rp.EntriesReport("westlake", dt.date(2026, 12, 2), hours, zones)


def order_summary(order_id: str = "A-1") -> rp.OrderSummary:
    return rp.OrderSummary(order_id, dt.datetime(2026, 12, 2, 1, 30, 5, tzinfo=UTC), "window",
                           "window-1", "w1/am", "paid", "cash", "", "adult,child", 3, 4,
                           36_000, 2_000, 0, "WINTER", 0, 0)


def png_colours(data: bytes) -> tuple[tuple[int, int], int]:
    """(size, distinct colours) of a PNG, after checking it is one."""
    assert data[:8] == PNG_SIGNATURE
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        colours = im.convert("RGB").getcolors(maxcolors=1 << 20)
        return im.size, len(colours)


# -- tables, CSV, XLSX -----------------------------------------------------------------------
def test_csv_header_is_the_field_names_and_money_stays_integer_fen():
    text = rp.to_csv([order_summary()])
    header, row = text.splitlines()
    assert header.split(",") == ["order_id", "created", "channel", "station", "shift", "status",
                                 "method", "reference", "products", "tickets", "persons",
                                 "amount_fen", "discount_fen", "refunded_fen", "coupon",
                                 "refunds", "changes"]
    assert ",36000,2000,0," in row and '"adult,child"' in row


def test_nested_records_are_not_a_column_and_plain_tuples_join():
    method = rp.ShiftMethodRow("w1/am", "window-1", "alice", "cash", 3, 30_000, 1, 5_000, 25_000)
    shift = rp.ShiftSummary("w1/am", "window-1", "alice", "till-1",
                            dt.datetime(2026, 12, 2, 0, 0, tzinfo=UTC), None, True, 50_000,
                            30_000, 5_000, 75_000, 0, 0, 3, 30_000, 1, 5_000, 25_000, (method,))
    table = rp.to_table([shift])
    assert "methods" not in table and "cash_expected_fen" in table
    assert rp.to_csv([shift]).splitlines()[1].split(",")[5] == ""       # closed: None, still open
    assert rp.to_csv(rp.ShiftSummary.by_method([shift])).splitlines()[0] == (
        "shift_id,station,cashier,method,sales,sales_fen,refunds,refunds_fen,net_fen")
    report = revenue_report()
    assert rp.to_csv([report], fields=["venue_id", "group_by"]).splitlines()[1] == "westlake,channel"


def test_table_aligns_chinese_ids_by_their_display_width():
    rows = [rp.ProductCount("成人票", 12, 3, 0, 0), rp.ProductCount("adult", 7, 1, 0, 0)]
    lines = rp.to_table(rows).splitlines()
    # a CJK character takes two columns on a terminal; the numbers are right-aligned, so
    # every line ends in the same column
    width = [sum(2 if "\u4e00" <= c <= "\u9fff" else 1 for c in ln) for ln in lines]
    assert len(set(width)) == 1, lines
    assert lines[2].startswith("成人票    ")            # padded to "product_id"'s 10 columns


def test_revenue_columns_are_the_period_the_cuts_asked_for_and_the_numbers():
    cols = revenue_report().columns
    assert cols[:2] == ("period", "channel") and "product_id" not in cols and cols[-1] == "net_fen"


def test_xlsx_reads_back_with_a_bold_header_and_the_values():
    records = [order_summary("A-1"), order_summary("订单-2")]
    data = rp.to_xlsx(records, sheet="orders")
    wb = openpyxl.load_workbook(io.BytesIO(data))
    ws = wb["orders"]
    rows = list(ws.iter_rows(values_only=True))
    assert rows[0] == tuple(f.name for f in dataclasses.fields(rp.OrderSummary))
    assert all(c.font.bold for c in ws[1])
    head = rows[0]
    first = dict(zip(head, rows[1]))
    assert first["amount_fen"] == 36_000 and isinstance(first["amount_fen"], int)
    assert first["tickets"] == 3 and first["products"] == "adult,child"
    assert first["created"] == dt.datetime(2026, 12, 2, 1, 30, 5)           # UTC, as Excel keeps it
    assert "UTC" in ws.cell(row=2, column=head.index("created") + 1).number_format
    assert rows[2][0] == "订单-2"
    # fitted: the time column is wider than the short "shift" one
    letters = {name: openpyxl.utils.get_column_letter(i + 1) for i, name in enumerate(head)}
    assert ws.column_dimensions[letters["created"]].width > ws.column_dimensions[letters["shift"]].width


def test_xlsx_keeps_days_as_dates():
    rows = [rp.TicketStatusRow(dt.date(2026, 12, 2), "adult", 10, 6, 2, 1, 1)]
    ws = openpyxl.load_workbook(io.BytesIO(rp.to_xlsx(rows, sheet="tickets"))).active
    assert ws.title == "tickets"
    assert ws["A2"].value.date() == dt.date(2026, 12, 2) and ws["A2"].number_format == "yyyy-mm-dd"


# -- charts ----------------------------------------------------------------------------------
def test_revenue_chart_is_a_png_with_something_drawn():
    size, colours = png_colours(rp.revenue_chart_png(revenue_report(), title="December"))
    assert size[0] >= 600 and size[1] >= 400
    assert colours > 20            # bars in three colours, text, grid: far from blank


def test_revenue_chart_of_one_period_and_of_none():
    one = revenue_report(periods=("2026-12-01",))
    assert png_colours(rp.revenue_chart_png(one))[1] > 20
    empty = rp.RevenueReport("westlake", dt.date(2026, 12, 1), dt.date(2026, 12, 1), "day", (),
                             (), revenue_row("", "", 0))
    assert png_colours(rp.revenue_chart_png(empty))[0][0] > 0


def test_entries_chart_is_a_png_with_something_drawn():
    size, colours = png_colours(rp.entries_chart_png(entries_report(), title="2 December"))
    assert size[0] >= 600 and colours > 20
    empty = rp.EntriesReport("westlake", dt.date(2026, 12, 2), (), ())
    assert png_colours(rp.entries_chart_png(empty))[0][0] > 0


# -- the client, on answers built by hand ----------------------------------------------------
class FakeConn:
    """Answers ``call`` from ``answers[method]`` (a list: one answer per call, in turn),
    and keeps every request."""

    def __init__(self, **answers):
        self.answers = {k: list(v) for k, v in answers.items()}
        self.calls: list[tuple[str, object, str | None, bool]] = []

    def call(self, stub_class, method, request, *, venue=None, retry):
        copy = type(request)()
        copy.CopyFrom(request)
        self.calls.append((method, copy, venue, retry))
        return self.answers[method].pop(0)

    # what the CLI's connection is also used as
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


def ts(when: dt.datetime):
    from google.protobuf.timestamp_pb2 import Timestamp
    t = Timestamp()
    t.FromDatetime(when)
    return t


def test_revenue_request_and_rows():
    row = report_pb2.RevenueRow(period="2026-12", channel="ctrip", sold_tickets=10, paid_fen=9_000,
                                net_fen=8_500, refunded_fen=500)
    conn = FakeConn(Revenue=[report_pb2.RevenueResponse(rows=[row], total=row)])
    rep = rp.ReportsClient(conn).revenue("westlake", dt.date(2026, 12, 1), "2026-12-31",
                                         period="month", group_by=("channel", "product"))
    method, req, venue, retry = conn.calls[0]
    assert (method, venue, retry) == ("Revenue", "westlake", True)
    assert (req.date_from, req.date_to, req.period, list(req.group_by)) == (
        "2026-12-01", "2026-12-31", report_pb2.MONTH, ["channel", "product"])
    assert rep.rows[0].period == "2026-12" and rep.rows[0].net_fen == 8_500
    assert rep.total.refunded_fen == 500 and rep.date_to == dt.date(2026, 12, 31)
    with pytest.raises(ValueError):
        rp.ReportsClient(conn).revenue("westlake", "2026-12-01", "2026-12-31", period="week")
    with pytest.raises(ValueError):
        rp.ReportsClient(conn).revenue("westlake", "1 Dec", "2026-12-31")


def test_orders_page_on_with_next_and_flatten():
    created = dt.datetime(2026, 12, 2, 2, 0, tzinfo=UTC)
    order = sales_pb2.Order(
        order_id="A-1", channel="window", venue_id="westlake", amount_fen=34_000,
        refunded_fen=12_000, discount_fen=2_000, coupon_id="WINTER", station_id="window-1",
        shift_id="w1/am", status="partly_refunded", created=ts(created),
        payment=sales_pb2.Payment(method="alipay", reference="2026120222001", amount_fen=34_000),
        lines=[sales_pb2.OrderLine(product_id="adult", qty=2, group=1, unit_price_fen=12_000),
               sales_pb2.OrderLine(product_id="family", qty=1, group=3, unit_price_fen=4_000)],
        refunds=[sales_pb2.OrderRefund(refund_id="R-1", ticket_ids=[7], amount_fen=12_000)])
    conn = FakeConn(ListOrders=[report_pb2.ListOrdersResponse(orders=[order], next="k1"),
                                report_pb2.ListOrdersResponse(orders=[order], next="")])
    rows = rp.ReportsClient(conn).orders("westlake", "2026-12-02", "2026-12-02", status="partly_refunded")
    assert [c[1].after for c in conn.calls] == ["", "k1"]
    assert conn.calls[0][1].status == "partly_refunded" and conn.calls[0][1].limit == 1000
    o = rows[0]
    assert len(rows) == 2 and o.created == created and o.created.tzinfo is not None
    assert (o.station, o.shift, o.method, o.reference) == ("window-1", "w1/am", "alipay", "2026120222001")
    assert (o.tickets, o.persons, o.products, o.refunds) == (3, 5, "adult,family", 1)
    assert (o.amount_fen, o.discount_fen, o.refunded_fen, o.coupon) == (34_000, 2_000, 12_000, "WINTER")
    # a limit stops paging and asks only for what is left
    conn = FakeConn(ListOrders=[report_pb2.ListOrdersResponse(orders=[order], next="k1")])
    assert len(rp.ReportsClient(conn).orders("westlake", "2026-12-02", "2026-12-02", limit=1)) == 1
    assert conn.calls[0][1].limit == 1


def test_refunds_changes_and_shifts_flatten():
    at = dt.datetime(2026, 12, 2, 3, 0, tzinfo=UTC)
    refund = report_pb2.RefundEntry(order_id="A-1", channel="ctrip", method="wechat", reference="42",
                                    refund=sales_pb2.OrderRefund(refund_id="R-1", ticket_ids=[7, 8],
                                                                 amount_fen=20_000, fee_fen=1_000,
                                                                 at=ts(at)))
    change = report_pb2.ChangeEntry(order_id="A-2", station_id="window-1", change=sales_pb2.OrderChange(
        change_id="C-1", ticket_ids=[9], first_ticket_id=31, slot_ids=["main-1400"], fee_fen=500,
        due_fen=-1_500, at=ts(at)))
    shift = sales_pb2.Shift(shift_id="w1/am", station_id="window-1", cashier="alice", opened=ts(at),
                            closed=ts(at + dt.timedelta(hours=8)), float_fen=50_000,
                            cash_expected_fen=70_000, counted_cash_fen=69_900, over_short_fen=-100,
                            net_fen=40_000, methods=[
                                sales_pb2.ShiftMethod(method="alipay", sales=2, sales_fen=20_000),
                                sales_pb2.ShiftMethod(method="cash", sales=3, sales_fen=25_000,
                                                      refunds=1, refunds_fen=5_000)])
    conn = FakeConn(ListRefunds=[report_pb2.ListRefundsResponse(refunds=[refund])],
                    ListChanges=[report_pb2.ListChangesResponse(changes=[change])],
                    ListShifts=[report_pb2.ListShiftsResponse(shifts=[shift])])
    client = rp.ReportsClient(conn)
    r = client.refunds("westlake", "2026-12-02", "2026-12-02", channel="ctrip")[0]
    assert (r.refund_id, r.at, r.tickets, r.ticket_ids, r.amount_fen, r.fee_fen, r.method) == (
        "R-1", at, 2, "7,8", 20_000, 1_000, "wechat")
    c = client.changes("westlake", "2026-12-02", "2026-12-02")[0]
    assert (c.change_id, c.station, c.tickets, c.first_ticket_id, c.slots, c.due_fen) == (
        "C-1", "window-1", 1, 31, "main-1400", -1_500)
    s = client.shifts("westlake", "2026-12-02", "2026-12-02", station="window-1")[0]
    assert conn.calls[-1][1].station_id == "window-1"
    assert (s.cash_sales_fen, s.cash_refunds_fen, s.over_short_fen, s.sales, s.sales_fen) == (
        25_000, 5_000, -100, 5, 45_000)
    assert s.closed == at + dt.timedelta(hours=8) and [m.method for m in s.methods] == ["alipay", "cash"]
    assert s.methods[1].net_fen == 20_000


def test_entries_status_reconcile_and_settlement():
    conn = FakeConn(
        Entries=[report_pb2.EntriesResponse(date="2026-12-02", gate_hours=[report_pb2.GateHour(
            zone_id="north", gate_id="n1", hour=9, entries=12, reentries=1, exits=3)],
            zones=[report_pb2.ZoneDay(zone_id="north", entries=12, peak_inside=10)])],
        TicketStatus=[report_pb2.TicketStatusResponse(rows=[report_pb2.TicketStatusRow(
            date="2026-12-02", product_id="adult", sold=10, used=6, unused=2, refunded=1, expired=1)])],
        Reconcile=[report_pb2.ReconcileResponse(digest="d1", matched_payments=3, matched_paid_fen=9_000,
                                                mismatches=[report_pb2.Mismatch(
                                                    kind=report_pb2.AMOUNT_DIFFERS, reference="T9",
                                                    order_id="A-9", statement_fen=300,
                                                    turnstile_fen=200)])],
        Settlement=[report_pb2.SettlementResponse(net_fen=100_000, venue_fen=70_000, partners=[
            report_pb2.PartnerStatement(partner="boat-co", kind="merchant", amount_fen=30_000, lines=[
                report_pb2.SettlementLine(product_id="combo", persons=10, amount_fen=30_000)])])])
    client = rp.ReportsClient(conn)
    e = client.entries("westlake")
    assert conn.calls[0][1].date == "" and e.date == dt.date(2026, 12, 2)
    assert e.gate_hours[0] == rp.GateHour("north", "n1", 9, 12, 1, 3) and e.zones[0].peak_inside == 10
    assert client.ticket_status("westlake", "2026-12-01", "2026-12-02")[0] == rp.TicketStatusRow(
        dt.date(2026, 12, 2), "adult", 10, 6, 2, 1, 1)
    rec = client.reconcile("westlake", "alipay", dt.date(2026, 12, 2))
    assert not rec.balanced and rec.mismatches[0] == rp.Mismatch("AMOUNT_DIFFERS", "T9", "A-9", "",
                                                                 300, 200)
    s = client.settlement("westlake", "2026-12-01", "2026-12-31")
    assert [(r.partner, r.kind, r.amount_fen) for r in s.rows()] == [
        ("boat-co", "merchant", 30_000), ("westlake", "venue", 70_000)]
    assert sum(r.amount_fen for r in s.rows()) == s.net_fen


def test_import_statement_sends_the_statement_lines():
    statements = pytest.importorskip("turnstile.clients.statements")
    at = dt.datetime(2026, 12, 2, 2, 0, 1, tzinfo=UTC)
    data = statements.write_statement("alipay", dt.date(2026, 12, 2), [
        statements.StatementLine("payment", "2026120222001", "A-1", "", at, 12_000, 72),
        statements.StatementLine("refund", "2026120222001", "A-1", "R-1", at + dt.timedelta(hours=1),
                                 2_000, -12)])
    conn = FakeConn(ImportStatement=[report_pb2.ImportStatementResponse(lines=2, changed=True,
                                                                        digest="d1")])
    result = rp.ReportsClient(conn).import_statement("westlake", data)
    req = conn.calls[0][1]
    assert (req.method, req.date, req.idempotency_key) == ("alipay", "2026-12-02", "")
    assert [ln.kind for ln in req.lines] == [report_pb2.StatementLine.PAYMENT,
                                             report_pb2.StatementLine.REFUND]
    assert req.lines[0].at.ToDatetime(UTC) == at and req.lines[1].refund_id == "R-1"
    assert (req.lines[0].amount_fen, req.lines[1].fee_fen) == (12_000, -12)
    assert result == rp.ImportResult("alipay", dt.date(2026, 12, 2), 2, True, "d1")
    rp.ReportsClient(conn := FakeConn(ImportStatement=[report_pb2.ImportStatementResponse()])
                     ).import_statement("westlake", data, method="alipay-hk")
    assert conn.calls[0][1].method == "alipay-hk"


# -- the command line ------------------------------------------------------------------------
def test_png_is_refused_for_a_report_without_a_chart(capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["report", "orders", "--venue", "westlake", "--date", "2026-12-02",
                                   "--png", "orders.png"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--png" in err and "revenue" in err and "entries" in err


def test_revenue_help_names_its_options(capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["report", "revenue", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--period" in out and "--by" in out and "--png" in out and "--xlsx" in out


@pytest.mark.parametrize("argv, message", [
    (["--venue", "v"], "--date DAY, or --from"),
    (["--venue", "v", "--date", "2026-12-02", "--to", "2026-12-03"], "not both"),
    (["--venue", "v", "--from", "2026-12-03", "--to", "2026-12-02"], "before --from"),
    (["--venue", "v", "--date", "2026-02-30"], "not a day"),
    (["--venue", "v", "--date", "2026-12-02", "--by", "zone"], "--by"),
])
def test_revenue_days_and_cuts_are_checked_before_connecting(argv, message, capsys, monkeypatch):
    monkeypatch.setattr(remote, "_connect", lambda args: pytest.fail("connected"))
    with pytest.raises(SystemExit) as e:
        main(["report", "revenue", *argv])
    assert e.value.code == 2 and message in capsys.readouterr().err


def fake_server(monkeypatch, **answers) -> FakeConn:
    conn = FakeConn(**answers)
    monkeypatch.setattr(remote, "_connect", lambda args: contextlib.nullcontext(conn))
    return conn


def test_report_revenue_table_csv_and_files(monkeypatch, capsys, tmp_path):
    rows = [report_pb2.RevenueRow(period="2026-12-01", channel=c, net_fen=n, paid_fen=n)
            for c, n in (("ctrip", 150_000), ("window", 90_000))]
    total = report_pb2.RevenueRow(net_fen=240_000, paid_fen=240_000)
    answer = report_pb2.RevenueResponse(rows=rows, total=total)
    conn = fake_server(monkeypatch, Revenue=[answer] * 3)
    assert main(["report", "revenue", "--venue", "westlake", "--from", "2026-12-01"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:2] == ["period", "channel"] and "product_id" not in out[0]
    assert out[-1].split()[0] == "total" and out[-1].split()[-1] == "240000"
    req = conn.calls[0][1]
    assert (req.date_from, req.date_to, list(req.group_by)) == ("2026-12-01", "2026-12-01", ["channel"])

    assert main(["report", "revenue", "--venue", "westlake", "--date", "2026-12-01", "--csv",
                 "--by", "none", "--period", "month"]) == 0
    csv_lines = capsys.readouterr().out.splitlines()
    assert csv_lines[0].startswith("period,sold_tickets") and len(csv_lines) == 3     # no total row
    assert list(conn.calls[1][1].group_by) == [] and conn.calls[1][1].period == report_pb2.MONTH

    xlsx, png = tmp_path / "r.xlsx", tmp_path / "r.png"
    assert main(["report", "revenue", "--venue", "westlake", "--date", "2026-12-01",
                 "--xlsx", str(xlsx), "--png", str(png)]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and str(xlsx) in captured.err
    assert png.read_bytes()[:8] == PNG_SIGNATURE
    sheet = openpyxl.load_workbook(xlsx).active
    assert [c.value for c in sheet[1]][:2] == ["period", "channel"]
    assert sheet.cell(row=sheet.max_row, column=1).value == "total"


def test_report_reconcile_exit_status_says_whether_it_balanced(monkeypatch, capsys):
    balanced = report_pb2.ReconcileResponse(digest="d1", matched_payments=2, matched_paid_fen=24_000,
                                            statement_paid_fen=24_000, turnstile_paid_fen=24_000)
    off = report_pb2.ReconcileResponse(digest="d2", mismatches=[
        report_pb2.Mismatch(kind=report_pb2.PAID_NOT_IN_TURNSTILE, reference="T1", order_id="A-1",
                            statement_fen=12_050),
        report_pb2.Mismatch(kind=report_pb2.REFUND_MISSING_AT_PROVIDER, order_id="A-2",
                            refund_id="R-2", turnstile_fen=300)])
    conn = fake_server(monkeypatch, Reconcile=[balanced, off])
    args = ["report", "reconcile", "--venue", "westlake", "--method", "alipay", "--date", "2026-12-02"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "balanced" in out and "240.00" in out
    assert conn.calls[0][1].method == "alipay" and conn.calls[0][1].date == "2026-12-02"
    assert main(args) == 1
    lines = capsys.readouterr().out.splitlines()
    mismatch_lines = [ln for ln in lines if ln.startswith(("PAID_NOT", "REFUND_MISSING"))]
    assert len(mismatch_lines) == 2 and "120.50" in mismatch_lines[0] and "R-2" in mismatch_lines[1]


def test_report_reconcile_imports_the_statement_file_first(monkeypatch, capsys, tmp_path):
    statements = pytest.importorskip("turnstile.clients.statements")
    at = dt.datetime(2026, 12, 2, 2, 0, tzinfo=UTC)
    path = tmp_path / "wechat.csv"
    path.write_bytes(statements.write_statement("wechat", dt.date(2026, 12, 2), [
        statements.StatementLine("payment", "4200001", "A-1", "", at, 5_000, 30)]))
    conn = fake_server(monkeypatch,
                       ImportStatement=[report_pb2.ImportStatementResponse(lines=1, changed=True,
                                                                           digest="d1")],
                       Reconcile=[report_pb2.ReconcileResponse(digest="d1")])
    assert main(["report", "reconcile", "--venue", "westlake", "--statement", str(path)]) == 0
    assert [c[0] for c in conn.calls] == ["ImportStatement", "Reconcile"]
    assert (conn.calls[1][1].method, conn.calls[1][1].date) == ("wechat", "2026-12-02")
    assert "1 lines stored" in capsys.readouterr().err


def test_report_split_prints_each_partner_and_the_venue_share(monkeypatch, capsys):
    fake_server(monkeypatch, Settlement=[report_pb2.SettlementResponse(
        net_fen=100_000, venue_fen=70_000, partners=[report_pb2.PartnerStatement(
            partner="boat-co", kind="merchant", amount_fen=30_000,
            lines=[report_pb2.SettlementLine(product_id="combo", persons=10, amount_fen=30_000)])])])
    assert main(["report", "split", "--venue", "westlake", "--from", "2026-12-01",
                 "--to", "2026-12-31"]) == 0
    out = capsys.readouterr().out
    assert "boat-co (merchant) is owed 300.00 yuan" in out
    assert "net revenue 1,000.00 yuan" in out and "own share 700.00" in out
