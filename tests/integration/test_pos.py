"""The ticket window (clients/pos.py) against a real server: cart, checkout with each
payment method, receipts, QR PNG and PDF tickets, shifts, refunds at the window."""
from __future__ import annotations

import datetime as dt
import io
import re

import grpc
import png
import pytest
import qrcode.util
from google.protobuf.timestamp_pb2 import Timestamp
from turnstile.v1 import common_pb2, gate_pb2, gate_pb2_grpc

from turnstile.clients.base import ApiError, Connection
from turnstile.clients.channel import ChannelClient
from turnstile.clients.pos import (
    PaymentDeclined,
    SandboxPaymentAdapter,
    ShiftError,
    TicketView,
    Till,
    qr_code,
    qr_png,
    tickets_pdf,
)
from turnstile.engine import demo

VENUE = "westlake"
ALIPAY_CODE = "281234567890123456"          # an Alipay payment code: 18 digits, 25-30...
WECHAT_CODE = "134567890123456789"          # a WeChat Pay payment code: 18 digits, 10-15...


@pytest.fixture(scope="module")
def conn(server):
    c = Connection(server.address, server.keys["demo-window"])
    yield c
    c.close()


@pytest.fixture
def till(conn):
    t = Till(conn, VENUE, SandboxPaymentAdapter(seed=7), station="window-1")
    t.open_shift("alice", float_fen=50_000)
    yield t
    if t.shift is not None:         # the station's next till opens a shift of its own
        t.close_shift()


def stock(till: Till, slot_id: str, day: dt.date):
    return next(s for s in till.sales.availability(VENUE, day) if s.slot_id == slot_id)


def scan(server, code: str, hour: int, minute: int = 10) -> str:
    with server.channel() as ch:
        r = gate_pb2_grpc.GateServiceStub(ch).Verify(gate_pb2.VerifyRequest(
            code=code, gate_id="north-1", direction=common_pb2.IN,
            scan_time=Timestamp(seconds=demo.local_time(server.day, hour, minute))),
            metadata=server.meta("demo-gate"), timeout=10)
    return common_pb2.ScanReason.Name(r.reason)


def test_cash_sale_with_change_receipt_and_stock(server, till):
    rows = till.availability(server.day, zone="main")
    slot = next(r for r in rows if r.slot_id == demo.slot_id("main", server.day, 10))
    cart = till.cart().add("adult", slot, qty=2).add("child", slot.slot_id)
    assert till.quote(cart) == 2 * 8000 + 4000                  # window prices
    sale = till.checkout(cart, "cash", tendered_fen=25_000)
    assert (sale.payment.amount_fen, sale.payment.tendered_fen, sale.payment.change_fen) == (20_000, 25_000, 5_000)
    assert sale.order.order_id.startswith("window-1-") and sale.order.channel == "window"
    assert sale.order.payment.method == "cash" and sale.order.payment.reference == sale.payment.reference
    assert [t.product_id for t in sale.tickets] == ["adult", "adult", "child"]
    after = stock(till, slot.slot_id, server.day)
    assert after.sold == slot.sold + 3 and after.held == slot.held
    assert scan(server, sale.tickets[0].code, 10) == "OK"
    text = till.receipt(sale)
    lines = text.splitlines()
    assert lines[0].strip() == "West Lake Scenic Area"
    assert f"Order {sale.order.order_id}" in lines
    assert any(re.fullmatch(r"TOTAL CNY\s+200\.00", ln) for ln in lines)
    assert any(re.fullmatch(r"Paid by cash\s+250\.00", ln) for ln in lines)
    assert any(re.fullmatch(r"Change\s+50\.00", ln) for ln in lines)
    assert any(re.fullmatch(r"Adult day ticket  \d\d-\d\d 10:00", ln) for ln in lines)
    assert all(len(ln) <= 40 for ln in lines)


def test_qr_png_is_a_png_of_the_right_size_in_alphanumeric_mode(server, till):
    slot = demo.slot_id("main", server.day, 12)
    sale = till.checkout(till.cart().add("adult", slot), "card")
    code = sale.tickets[0].code
    assert re.fullmatch(r"[A-Z2-7]+", code)
    data = qr_png(code, box_size=4, border=4)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height, rows, _info = png.Reader(bytes=data).read()
    pixels = [list(r) for r in rows]
    qr = qr_code(code)
    modules = 4 * qr.version + 17
    assert width == height == (modules + 2 * 4) * 4 and len(pixels) == height
    # alphanumeric mode: a smaller symbol than the same text in byte mode
    byte_mode = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M)
    byte_mode.add_data(qrcode.util.QRData(code.encode(), mode=qrcode.util.MODE_8BIT_BYTE), optimize=0)
    byte_mode.make(fit=True)
    assert qr.version < byte_mode.version
    # quiet zone white, finder pattern's corner dark; the image is the symbol's modules
    assert pixels[0][0] != 0 and pixels[16][16] == 0
    matrix = qr_code(code, border=0).get_matrix()
    for r in range(0, modules, 7):
        for c in range(0, modules, 5):
            assert (pixels[(r + 4) * 4 + 1][(c + 4) * 4 + 1] == 0) == matrix[r][c]
    assert till.tickets_png(sale) == [data]


def test_pdf_has_one_page_per_ticket(server, till):
    day = server.day
    slots = [demo.slot_id("main", day, 14), demo.slot_id("pagoda", day, 14), demo.slot_id("boat", day, 14)]
    till.availability(day)
    cart = till.cart().add("combo", slots, qty=2).add("adult", slots[0])
    sale = till.checkout(cart, "wechat", auth_code=WECHAT_CODE)
    assert len(sale.tickets) == 3
    views = till.ticket_views(sale)
    assert [(v.product, v.date, v.window) for v in views] == [
        ("Lake combo (联票)", day.isoformat(), "14:00-16:00")] * 2 + [
        ("Adult day ticket", day.isoformat(), "14:00-16:00")]
    pdf = till.tickets_pdf(sale)
    assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF")
    assert len(re.findall(rb"/Type /Page\b(?!s)", pdf)) == 3
    assert re.search(rb"/Count 3\b", pdf)
    one = tickets_pdf([TicketView("ABC234", 1, "Adult")])
    assert len(re.findall(rb"/Type /Page\b(?!s)", one)) == 1
    with pytest.raises(ValueError):
        tickets_pdf([])


def test_each_payment_method_and_shift_totals(server, conn):
    day = server.day
    pay = SandboxPaymentAdapter(seed=3)
    till = Till(conn, VENUE, pay, station="window-2")
    with pytest.raises(ShiftError):
        till.checkout(till.cart().add("adult", demo.slot_id("main", day, 8)), "cash")
    till.open_shift("bob", float_fen=30_000)
    with pytest.raises(ShiftError):
        till.open_shift("carol")
    slot = demo.slot_id("main", day, 16)
    sales = [till.checkout(till.cart().add("adult", slot), "cash", tendered_fen=10_000),
             till.checkout(till.cart().add("child", slot, qty=2), "cash"),
             till.checkout(till.cart().add("adult", slot, qty=3), "card"),
             till.checkout(till.cart().add("child", slot), "alipay", auth_code=ALIPAY_CODE),
             till.checkout(till.cart().add("group", slot, group=15), "wechat", auth_code=WECHAT_CODE)]
    assert re.fullmatch(r"20\d{6}22001\d{15}", sales[3].payment.reference)      # an Alipay trade_no
    assert re.fullmatch(r"4200\d{24}", sales[4].payment.reference)               # a WeChat transaction_id
    assert re.fullmatch(r"CARD-\d{6}-\d{12}", sales[2].payment.reference)
    for s in sales:                     # the order records the payment as taken
        got = till.sales.get_order(VENUE, s.order.order_id)
        assert (got.payment.method, got.payment.reference, got.payment.amount_fen) == (
            s.payment.method, s.payment.reference, s.payment.amount_fen)
    refund = till.refund(sales[1].order.order_id, [sales[1].tickets[0].ticket_id])
    assert refund.payment.method == "cash" and refund.payment.amount_fen == 4000
    report = till.close_shift(counted_cash_fen=30_000 + 8_000 + 8_000 - 4_000 - 100)
    expected: dict[str, int] = {}
    for s in sales:
        expected[s.payment.method] = expected.get(s.payment.method, 0) + s.payment.amount_fen
    assert {m: t.sales_fen for m, t in report.totals.items()} == expected == {
        "cash": 16_000, "card": 24_000, "alipay": 4_000, "wechat": 15 * 6_000}
    assert {m: t.sales for m, t in report.totals.items()} == {"cash": 2, "card": 1, "alipay": 1, "wechat": 1}
    assert report.totals["cash"].refunds_fen == 4_000 and report.totals["cash"].net_fen == 12_000
    assert report.cash_expected_fen == 30_000 + 16_000 - 4_000
    assert report.over_short_fen == -100 and report.orders == 5
    assert report.net_fen == sum(expected.values()) - 4_000
    text = report.text()
    assert re.search(r"cash\s+2\s+160\.00\s+1\s+120\.00", text)
    assert re.search(r"Cash expected\s+420\.00", text) and re.search(r"Over/short\s+-1\.00", text)
    with pytest.raises(ShiftError):
        till.close_shift()


def test_a_failed_payment_releases_the_hold(server, till):
    day = server.day
    slot = demo.slot_id("main", day, 12)
    before = stock(till, slot, day)
    cart = till.cart().add("adult", slot, qty=4)
    till.payments.decline_next("card", "DO_NOT_HONOUR")
    with pytest.raises(PaymentDeclined) as e:
        till.checkout(cart, "card", order_id="window-1-declined-1")
    assert (e.value.method, e.value.reason) == ("card", "DO_NOT_HONOUR")
    with pytest.raises(PaymentDeclined) as e:
        till.checkout(cart, "cash", tendered_fen=10_000)
    assert e.value.reason == "INSUFFICIENT_CASH"
    with pytest.raises(PaymentDeclined) as e:
        till.checkout(cart, "alipay", auth_code=WECHAT_CODE)       # a WeChat code is no Alipay code
    assert e.value.reason == "INVALID_AUTH_CODE"
    after = stock(till, slot, day)
    assert (after.held, after.sold, after.remaining) == (before.held, before.sold, before.remaining)
    with pytest.raises(ApiError) as e2:
        till.sales.get_order(VENUE, "window-1-declined-1")
    assert e2.value.code == grpc.StatusCode.NOT_FOUND
    assert till.payments.charges == {} and till.shift.totals == {}


class HoldLostAdapter(SandboxPaymentAdapter):
    """Takes the money, but meanwhile the hold is gone (released, as an expired one
    would be): the confirmation will be refused."""

    def __init__(self, channel: ChannelClient, items):
        super().__init__(seed=1)
        self.channel, self.items = channel, items

    def charge(self, method, amount_fen, *, order_id, tendered_fen=None, auth_code=None):
        result = super().charge(method, amount_fen, order_id=order_id, tendered_fen=tendered_fen,
                                auth_code=auth_code)
        hold = self.channel.hold(VENUE, self.items, key=order_id)        # the till's own hold
        self.channel.release(hold)
        return result


def test_a_refused_confirmation_gives_the_money_back(server, conn):
    day = server.day
    slot = demo.slot_id("main", day, 14)
    cart = Till(conn, VENUE, SandboxPaymentAdapter()).cart().add("child", slot, qty=2)
    till = Till(conn, VENUE, HoldLostAdapter(ChannelClient(conn), cart.items()), station="window-3")
    till.open_shift("dave", 0)
    before = stock(till, slot, day)
    with pytest.raises(ApiError) as e:
        till.checkout(cart, "card", order_id="window-3-lost-hold")
    assert e.value.reason == "HOLD_NOT_ACTIVE"
    charged = till.payments.charges["window-3-lost-hold"]
    assert [(ref, r.amount_fen) for ref, r in till.payments.refunds.values()] == [
        (charged.reference, charged.amount_fen)]
    assert stock(till, slot, day).remaining == before.remaining and till.shift.totals == {}


def test_real_name_holders_are_required_before_any_money_is_taken(server, till):
    day = server.day
    slot = demo.slot_id("main", day, 16)
    before = stock(till, slot, day)
    with pytest.raises(ValueError, match="real-name"):
        till.checkout(till.cart().add("night", slot, qty=2), "cash")
    assert till.payments.charges == {} and stock(till, slot, day) == before
    with pytest.raises(ValueError):
        till.cart().add("night", slot, qty=2, holders=["110101199003071234"])
    sale = till.checkout(till.cart().add("night", slot, qty=2,
                                         holders=["110101199003071234", "310101198502024321"]), "cash")
    assert [t.holder for t in sale.tickets] == ["110***********1234", "310***********4321"]
    assert [v.holder for v in till.ticket_views(sale)] == ["110***********1234", "310***********4321"]


def test_refund_at_the_window(server, till):
    day = server.day
    slot = demo.slot_id("main", day, 8)
    sale = till.checkout(till.cart().add("adult", slot, qty=3), "alipay", auth_code=ALIPAY_CODE)
    used, a, b = sale.tickets
    assert scan(server, used.code, 8) == "OK"
    before = stock(till, slot, day)
    with pytest.raises(ApiError) as e:
        till.refund(sale.order.order_id, [used.ticket_id])
    assert e.value.reason == "TICKET_NOT_REFUNDABLE"
    assert till.payments.refunds == {}
    r = till.refund(sale.order.order_id, refund_id="desk-1")       # every unused ticket
    assert r.refund.ticket_ids == (a.ticket_id, b.ticket_id) and r.refund.amount_fen == 16_000
    assert (r.payment.method, r.payment.amount_fen) == ("alipay", 16_000)
    again = till.refund(sale.order.order_id, refund_id="desk-1")   # a retry gives nothing twice
    assert again == r and len(till.payments.refunds) == 1
    assert scan(server, a.code, 8, 20) == "VOIDED" and scan(server, b.code, 8, 20) == "VOIDED"
    assert stock(till, slot, day).sold == before.sold - 2
    assert till.shift.totals["alipay"].refunds_fen == 16_000
    # another channel's order is not the window's to refund
    other = ChannelClient(Connection(server.address, server.keys["demo-ota"])).buy(
        VENUE, till.cart().add("adult", slot).items(), "ota-not-yours")
    with pytest.raises(ApiError) as e:
        till.refund(other.order_id)
    assert e.value.code == grpc.StatusCode.NOT_FOUND


def test_sandbox_payments_are_idempotent_by_order_and_refund_id():
    pay = SandboxPaymentAdapter(seed=5)
    first = pay.charge("cash", 12_345, order_id="o-1", tendered_fen=20_000)
    assert (first.change_fen, first.tendered_fen) == (7_655, 20_000)
    assert pay.charge("cash", 12_345, order_id="o-1", tendered_fen=20_000) is first
    with pytest.raises(PaymentDeclined) as e:
        pay.charge("card", 12_345, order_id="o-1")
    assert e.value.reason == "DUPLICATE_ORDER"
    with pytest.raises(PaymentDeclined) as e:
        pay.charge("bitcoin", 100, order_id="o-2")
    assert e.value.reason == "UNSUPPORTED_METHOD"
    back = pay.refund(first, 10_000, refund_id="r-1")
    assert pay.refund(first, 10_000, refund_id="r-1") is back
    with pytest.raises(PaymentDeclined) as e:
        pay.refund(first, 2_346, refund_id="r-2")                   # 2,345 left
    assert e.value.reason == "REFUND_EXCEEDS_PAYMENT"
    assert io.BytesIO(qr_png("HELLO")).read(4) == b"\x89PNG"


def test_a_member_at_the_window_earns_pays_with_points_and_a_refund_gives_them_back(server, till):
    from turnstile.clients.members import EarnRule, MembersClient
    with Connection(server.address, server.keys["demo-operator"]) as op:
        desk = MembersClient(op)
        desk.set_program(VENUE, earn=[EarnRule(points_per_yuan=1)])
        m = desk.enrol(VENUE, phone="13512345678")
        desk.adjust(VENUE, m.member_id, 4500, "welcome points")
    member = MembersClient(till.sales.conn).get(VENUE, phone="13512345678")   # looked up at the window
    slot = demo.slot_id("main", server.day, 10)
    cart = till.cart().add("adult", slot)
    assert till.explain(cart, member_id=member.member_id, points=500).explain()[-2:] == \
        ["points 500 -5.00", "total 75.00"]
    sale = till.checkout(cart, "cash", tendered_fen=10_000, member_id=member.member_id, points=500)
    assert (sale.payment.amount_fen, sale.order.points_redeemed, sale.order.points_earned) == (7500, 500, 75)
    assert f"Member {member.member_id}: 500 points used, 75 earned" in till.receipt(sale).splitlines()
    # a child ticket with points alone: nothing charged, no provider asked
    free = till.checkout(till.cart().add("child", slot), "cash", member_id=member.member_id, points=4000)
    assert (free.payment.amount_fen, free.order.amount_fen, free.order.points_redeemed) == (0, 0, 4000)
    back = till.refund(sale.order.order_id)
    assert (back.refund.amount_fen, back.refund.points_restored, back.refund.points_reversed) == (7500, 500, 75)
    assert MembersClient(till.sales.conn).get(VENUE, member_id=member.member_id).balance == 500
