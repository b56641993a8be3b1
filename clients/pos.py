"""The ticket window / kiosk client (POS; DESIGN.md section 1): sell on the spot and
print the tickets.

* a :class:`Cart` of lines (product, slots, quantity, holders' ID numbers for a
  real-name product);
* :meth:`Till.checkout` = Hold + payment + Confirm. A declined or failed payment
  releases the hold; a confirmation the server refuses gives the money back;
* payments by cash, bank card, Alipay and WeChat Pay behind one interface,
  :class:`PaymentAdapter`. :class:`SandboxPaymentAdapter` simulates all four
  locally (no network): cash computes the change, card, Alipay and WeChat Pay
  return references shaped like the real ones and can be told to decline. A real
  terminal or provider SDK is wired in by writing another adapter;
* a text receipt (:meth:`Till.receipt`), tickets as QR PNG (:func:`qr_png`, the code
  in QR alphanumeric mode) and as a printable PDF, one ticket per 80 x 120 mm label
  with its price and entry rule (:func:`tickets_pdf`), Chinese included: the font
  (WenQuanYi Micro Hei, from a package the project installs) is embedded in the file;
* shifts: :meth:`Till.open_shift` with a cash float, :meth:`Till.close_shift` with
  totals per payment method and the cash expected in the drawer;
* refunds at the window (:meth:`Till.refund`): the server voids the tickets, the
  money goes back the way it came.

    from turnstile.clients.base import Connection
    from turnstile.clients.pos import Till, SandboxPaymentAdapter

    till = Till(Connection("127.0.0.1:50051", window_key), "westlake",
                SandboxPaymentAdapter(), station="window-1")
    till.open_shift("alice", float_fen=50_000)
    slot = till.availability("2026-11-23", zone="main")[0]
    cart = till.cart().add("adult", slot, qty=2)
    sale = till.checkout(cart, "cash", tendered_fen=20_000)
    print(till.receipt(sale))                    # change: 40.00
    open("tickets.pdf", "wb").write(till.tickets_pdf(sale))
    report = till.close_shift(counted_cash_fen=66_000)

The till keeps its shift in memory; a kiosk that must survive a restart saves
:meth:`ShiftReport.text` (or the :class:`Shift` fields) itself.
"""
from __future__ import annotations

import abc
import dataclasses
import datetime as dt
import enum
import importlib.resources
import io
import itertools
import random
import re
import threading
import uuid
from collections.abc import Sequence

import qrcode
import qrcode.constants
import qrcode.image.pure
import qrcode.util
from turnstile.v1 import admin_pb2, sales_pb2, sales_pb2_grpc

from .admin import AdminClient
from .base import ApiError, Connection, new_key
from .channel import ChannelClient, Hold, Item, Order, Quote, Refund, SlotAvailability, Ticket

_Sales = sales_pb2_grpc.SalesServiceStub

__all__ = [
    "Cart",
    "CartLine",
    "MethodTotals",
    "PaymentAdapter",
    "PaymentDeclined",
    "PaymentMethod",
    "PaymentResult",
    "Sale",
    "SandboxPaymentAdapter",
    "Shift",
    "ShiftError",
    "ShiftReport",
    "TicketView",
    "Till",
    "WindowRefund",
    "entry_rule_lines",
    "fen",
    "qr_code",
    "qr_png",
    "tickets_pdf",
]


def fen(amount_fen: int) -> str:
    """Fen as yuan text: 12345 -> '123.45', -50 -> '-0.50'."""
    sign = "-" if amount_fen < 0 else ""
    a = abs(amount_fen)
    return f"{sign}{a // 100}.{a % 100:02d}"


# -- payments ----------------------------------------------------------------------------
class PaymentMethod(str, enum.Enum):
    """The ways a customer pays at the window; the value is what the order records."""

    CASH = "cash"
    CARD = "card"
    ALIPAY = "alipay"
    WECHAT = "wechat"


@dataclasses.dataclass(frozen=True)
class PaymentResult:
    """A payment (or a refund of one) the provider accepted.

    ``reference``: the provider's id (card terminal RRN, Alipay trade_no, WeChat
    transaction_id, a cash slip number), recorded on the order. For cash,
    ``tendered_fen`` is what the customer handed over and ``change_fen`` what goes
    back; the drawer keeps ``amount_fen``.
    """

    method: str
    amount_fen: int
    reference: str
    tendered_fen: int = 0
    change_fen: int = 0


class PaymentDeclined(Exception):
    """The payment (or its refund) did not go through; nothing was taken.

    ``reason``: a stable code: INSUFFICIENT_CASH, INVALID_AUTH_CODE, DECLINED,
    UNSUPPORTED_METHOD, UNKNOWN_PAYMENT, REFUND_EXCEEDS_PAYMENT, or a provider's own.
    """

    def __init__(self, method: str, reason: str, message: str = ""):
        self.method = method
        self.reason = reason
        self.message = message or reason
        super().__init__(f"{method} payment declined: {reason}" + (f" ({message})" if message else ""))


class PaymentAdapter(abc.ABC):
    """How a till takes and returns money: one interface for cash, bank cards, Alipay
    and WeChat Pay. An adapter for a real card terminal or a provider's
    face-to-face (barcode) payment API implements these two methods.

    Both must be idempotent on their key (``order_id`` for a charge, ``refund_id``
    for a refund): a till retries with the same key after a failure whose outcome it
    cannot know, and must not take or give money twice.
    """

    #: Methods this adapter takes (PaymentMethod values).
    methods: frozenset[str] = frozenset(m.value for m in PaymentMethod)

    @abc.abstractmethod
    def charge(self, method: str, amount_fen: int, *, order_id: str, tendered_fen: int | None = None,
               auth_code: str | None = None) -> PaymentResult:
        """Take ``amount_fen`` by ``method`` for ``order_id``.

        ``tendered_fen``: cash handed over (cash only). ``auth_code``: the customer's
        payment code scanned from their phone (Alipay / WeChat Pay barcode payment).
        Raises :class:`PaymentDeclined` if nothing was taken.
        """

    @abc.abstractmethod
    def refund(self, payment: PaymentResult, amount_fen: int, *, refund_id: str) -> PaymentResult:
        """Give back ``amount_fen`` (at most what is left of ``payment``) the way it was
        paid. Raises :class:`PaymentDeclined` if nothing was given back."""


_ALIPAY_CODE = re.compile(r"(2[5-9]|30)\d{14,22}")      # Alipay 付款码: 16-24 digits, 25-30...
_WECHAT_CODE = re.compile(r"1[0-5]\d{16}")              # WeChat Pay 付款码: 18 digits, 10-15...


class SandboxPaymentAdapter(PaymentAdapter):
    """Every payment method, simulated locally with no network, for training mode,
    demos and tests.

    * cash: ``tendered_fen`` (default: the exact amount) must cover the amount
      (else INSUFFICIENT_CASH); the change is computed;
    * card: approved with a terminal-style reference (``CARD-<auth no>-<RRN>``);
    * alipay / wechat: the customer's payment code must look like a real one
      (Alipay: 16-24 digits starting 25-30; WeChat Pay: 18 digits starting 10-15),
      else INVALID_AUTH_CODE; a 28-digit trade number is returned.

    :meth:`decline_next` makes the next charge by a method fail, as a card refused by
    the bank or a customer who cancels on the phone would. Charges are idempotent by
    order id and refunds by refund id, as real providers are by out-trade-no.
    ``charges`` and ``refunds`` are the sandbox's ledger, ``times`` when each entry was
    made; :meth:`statement` is the day's Alipay or WeChat Pay bill built from them.
    """

    def __init__(self, seed: int | None = None, clock=None):
        self._rng = random.Random(seed)
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._lock = threading.Lock()
        self._declines: dict[str, list[str]] = {}
        self.charges: dict[str, PaymentResult] = {}          # order id -> payment
        self.refunds: dict[str, tuple[str, PaymentResult]] = {}  # refund id -> (payment ref, refund)
        # when each ledger entry was made (the clock's UTC time): "charge:" + order id,
        # "refund:" + refund id; a retry with the same key keeps the first time
        self.times: dict[str, dt.datetime] = {}

    def decline_next(self, method: str | PaymentMethod, reason: str = "DECLINED") -> None:
        """Make the next charge by ``method`` fail with ``reason``."""
        with self._lock:
            self._declines.setdefault(PaymentMethod(method).value, []).append(reason)

    def _digits(self, n: int) -> str:
        return "".join(self._rng.choice("0123456789") for _ in range(n))

    def charge(self, method, amount_fen, *, order_id, tendered_fen=None, auth_code=None):
        method = PaymentMethod(method).value if method in {m.value for m in PaymentMethod} else method
        if method not in self.methods:
            raise PaymentDeclined(str(method), "UNSUPPORTED_METHOD")
        if amount_fen < 0:
            raise ValueError("amount_fen must not be negative")
        with self._lock:
            done = self.charges.get(order_id)
            if done is not None:
                if (done.method, done.amount_fen) != (method, amount_fen):
                    raise PaymentDeclined(method, "DUPLICATE_ORDER",
                                          f"order {order_id} was paid differently")
                return done
            queued = self._declines.get(method)
            if queued:
                raise PaymentDeclined(method, queued.pop(0))
            now = self._clock()
            today = now.strftime("%Y%m%d")
            if method == "cash":
                tendered = amount_fen if tendered_fen is None else tendered_fen
                if tendered < amount_fen:
                    raise PaymentDeclined(method, "INSUFFICIENT_CASH",
                                          f"{fen(tendered)} tendered for {fen(amount_fen)}")
                result = PaymentResult(method, amount_fen, f"CASH-{today}-{self._digits(8)}",
                                       tendered, tendered - amount_fen)
            elif method == "card":
                result = PaymentResult(method, amount_fen, f"CARD-{self._digits(6)}-{self._digits(12)}")
            else:
                pattern = _ALIPAY_CODE if method == "alipay" else _WECHAT_CODE
                if not auth_code or not pattern.fullmatch(auth_code):
                    raise PaymentDeclined(method, "INVALID_AUTH_CODE",
                                          "scan the customer's payment code again")
                prefix = today + "22001" if method == "alipay" else "4200" + self._digits(6) + today[2:]
                result = PaymentResult(method, amount_fen, prefix + self._digits(28 - len(prefix)))
            self.charges[order_id] = result
            self.times["charge:" + order_id] = now
            return result

    def refund(self, payment, amount_fen, *, refund_id):
        with self._lock:
            done = self.refunds.get(refund_id)
            if done is not None:
                return done[1]
            paid = next((p for p in self.charges.values() if p.reference == payment.reference), None)
            if paid is None:
                raise PaymentDeclined(payment.method, "UNKNOWN_PAYMENT", payment.reference)
            back = sum(r.amount_fen for ref, r in self.refunds.values() if ref == payment.reference)
            if amount_fen > paid.amount_fen - back:
                raise PaymentDeclined(payment.method, "REFUND_EXCEEDS_PAYMENT",
                                      f"{fen(amount_fen)} asked, {fen(paid.amount_fen - back)} left")
            result = PaymentResult(paid.method, amount_fen, f"RF-{paid.reference}-{len(self.refunds) + 1}")
            self.refunds[refund_id] = (payment.reference, result)
            self.times["refund:" + refund_id] = self._clock()
            return result

    def statement(self, provider: str, day: dt.date) -> bytes:
        """The bill ``provider`` ("alipay" or "wechat") would let the merchant download
        for China-local ``day``: that method's charges and refunds of the day, with the
        provider's service fee (see :func:`turnstile.clients.statements.sandbox_statement`).
        Reconciliation is tried against it as against a real download."""
        from .statements import sandbox_statement

        with self._lock:        # a consistent ledger while the bill is written
            return sandbox_statement(self, provider, day)


# -- the cart ----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class CartLine:
    """Codes of one product in the same slots; ``holders``: one ID number per code
    for a real-name product (empty otherwise)."""

    product_id: str
    slot_ids: tuple[str, ...]
    qty: int = 1
    group: int = 0
    holders: tuple[str, ...] = ()


class Cart:
    """What a customer at the window is buying, line by line."""

    def __init__(self) -> None:
        self.lines: list[CartLine] = []
        self.slots: dict[str, SlotAvailability] = {}     # slots given as availability rows

    def add(self, product_id: str, slots: str | SlotAvailability | Sequence[str | SlotAvailability],
            qty: int = 1, *, group: int = 0, holders: Sequence[str] = ()) -> Cart:
        """Add a line: ``slots`` is one slot per zone the product admits (a slot id or
        an availability row, or a sequence of them for a combo); ``holders`` one ID
        number per code for a real-name product. Returns the cart, for chaining."""
        if qty < 1:
            raise ValueError("qty must be at least 1")
        if holders and len(holders) != qty:
            raise ValueError("one holder ID number per code")
        seq = [slots] if isinstance(slots, (str, SlotAvailability)) else list(slots)
        ids = []
        for s in seq:
            if isinstance(s, SlotAvailability):
                self.slots[s.slot_id] = s
                ids.append(s.slot_id)
            else:
                ids.append(s)
        self.lines.append(CartLine(product_id, tuple(ids), qty, group, tuple(holders)))
        return self

    def remove(self, index: int) -> CartLine:
        """Take line ``index`` out of the cart."""
        return self.lines.pop(index)

    def clear(self) -> None:
        self.lines.clear()

    def __len__(self) -> int:
        return len(self.lines)

    def items(self) -> list[Item]:
        return [Item(ln.product_id, ln.slot_ids, ln.qty, ln.group) for ln in self.lines]

    def holders(self) -> list[list[str]] | None:
        """ID numbers per line (None when no line has any)."""
        if not any(ln.holders for ln in self.lines):
            return None
        return [list(ln.holders) for ln in self.lines]


# -- sales, refunds, shifts --------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Sale:
    """A completed sale at the window: the order with its tickets, and the payment."""

    order: Order
    payment: PaymentResult
    station: str
    cashier: str
    at: dt.datetime

    @property
    def tickets(self) -> tuple[Ticket, ...]:
        return self.order.tickets


@dataclasses.dataclass(frozen=True)
class WindowRefund:
    """A refund made at the window: the server's refund (voided tickets, amount, fee)
    and the money given back."""

    refund: Refund
    payment: PaymentResult | None        # None when nothing was due (a 100 % fee)


@dataclasses.dataclass
class MethodTotals:
    """One payment method's totals over a shift, in fen."""

    sales: int = 0
    sales_fen: int = 0
    refunds: int = 0
    refunds_fen: int = 0

    @property
    def net_fen(self) -> int:
        return self.sales_fen - self.refunds_fen


class ShiftError(Exception):
    """Selling without an open shift, opening a second one, or closing none."""


@dataclasses.dataclass(frozen=True)
class Shift:
    """A cashier's shift at a station as the server keeps it (SalesService.OpenShift):
    the float put in the drawer at the start and every payment and refund rung up in it
    since, per method. A till that restarts picks it up again (Till.resume_shift)."""

    shift_id: str
    station: str
    cashier: str
    float_fen: int
    opened_at: dt.datetime
    totals: dict[str, MethodTotals]
    cash_expected_fen: int
    open: bool
    closed_at: dt.datetime | None = None

    @classmethod
    def from_proto(cls, m: sales_pb2.Shift) -> "Shift":
        return cls(m.shift_id, m.station_id, m.cashier, m.float_fen, m.opened.ToDatetime(dt.UTC),
                   {x.method: MethodTotals(x.sales, x.sales_fen, x.refunds, x.refunds_fen) for x in m.methods},
                   m.cash_expected_fen, m.open, m.closed.ToDatetime(dt.UTC) if m.HasField("closed") else None)


@dataclasses.dataclass(frozen=True)
class ShiftReport:
    """A closed shift: totals per payment method, the cash expected in the drawer,
    and, if the cashier counted it, how far the count is over (+) or short (-)."""

    station: str
    cashier: str
    opened_at: dt.datetime
    closed_at: dt.datetime
    float_fen: int
    totals: dict[str, MethodTotals]
    orders: int
    cash_expected_fen: int
    counted_cash_fen: int | None = None

    @property
    def over_short_fen(self) -> int | None:
        return None if self.counted_cash_fen is None else self.counted_cash_fen - self.cash_expected_fen

    @property
    def net_fen(self) -> int:
        return sum(t.net_fen for t in self.totals.values())

    def text(self) -> str:
        """The shift report as printed at the end of a shift."""
        w = 40
        out = [f"SHIFT REPORT  {self.station}", f"Cashier {self.cashier}",
               f"Opened  {self.opened_at:%Y-%m-%d %H:%M} UTC", f"Closed  {self.closed_at:%Y-%m-%d %H:%M} UTC",
               "-" * w, f"{'method':<8}{'sales':>6}{'taken':>10}{'refunds':>8}{'net':>8}"]
        for m in sorted(self.totals):
            t = self.totals[m]
            out.append(f"{m:<8}{t.sales:>6}{fen(t.sales_fen):>10}{t.refunds:>8}{fen(t.net_fen):>8}")
        out += ["-" * w, _lr("Orders", str(self.orders), w), _lr("Net", fen(self.net_fen), w),
                _lr("Float", fen(self.float_fen), w), _lr("Cash expected", fen(self.cash_expected_fen), w)]
        if self.counted_cash_fen is not None:
            out += [_lr("Cash counted", fen(self.counted_cash_fen), w),
                    _lr("Over/short", fen(self.over_short_fen or 0), w)]
        return "\n".join(out) + "\n"


def _lr(left: str, right: str, width: int) -> str:
    return left + " " * max(1, width - len(left) - len(right)) + right


# -- QR and PDF --------------------------------------------------------------------------
def qr_code(code: str, *, box_size: int = 4, border: int = 4,
            error_correction: int = qrcode.constants.ERROR_CORRECT_M) -> qrcode.QRCode:
    """The QR symbol of a ticket code, its data in alphanumeric mode (ticket codes are
    upper-case base32, which that mode packs 5.5 bits a character, against 8 in byte
    mode: a smaller symbol that scans faster). Text outside that alphabet falls back
    to the most compact mode that holds it."""
    qr = qrcode.QRCode(error_correction=error_correction, box_size=box_size, border=border,
                       image_factory=qrcode.image.pure.PyPNGImage)
    data = code.encode("ascii") if code.isascii() else code.encode()
    mode = qrcode.util.optimal_mode(data)
    qr.add_data(qrcode.util.QRData(data, mode=max(mode, qrcode.util.MODE_ALPHA_NUM)), optimize=0)
    qr.make(fit=True)
    return qr


def qr_png(code: str, *, box_size: int = 4, border: int = 4) -> bytes:
    """A ticket code as a QR PNG (pure Python: qrcode with its PyPNG image factory).
    The image is ``(modules + 2 * border) * box_size`` pixels square."""
    img = qr_code(code, box_size=box_size, border=border).make_image()
    out = io.BytesIO()
    img.save(out)
    return out.getvalue()


@dataclasses.dataclass(frozen=True)
class TicketView:
    """What is printed on one ticket."""

    code: str
    ticket_id: int
    product: str
    venue: str = ""
    date: str = ""              # venue-local day, YYYY-MM-DD
    window: str = ""            # venue-local time window, "08:00-10:00", or the slot id
    persons: int = 1
    holder: str = ""            # masked ID number of a real-name ticket
    order_id: str = ""
    price_fen: int | None = None        # what the ticket cost, all its persons; None: not printed
    entry_rule: tuple[str, ...] = ()    # how it admits, a line per language (entry_rule_lines)
    seat: str = ""              # its seat in a session (<section>-<row>-<number>), printed large


def entry_rule_lines(rule: admin_pb2.EntryRule) -> tuple[str, str]:
    """A product's entry rule as printed on its tickets: a Chinese line and its English
    twin, e.g. ``("单次入园 · 当日有效", "single entry · valid on the day")``,
    ``("1 次 · 可再入园 · 当日有效", "1 visit · re-entry · valid on the day")`` or
    ``("10 次 · 180 日有效", "10 visits · valid 180 days")``."""
    n = rule.max_entries
    if n == 1 and not rule.reentry:
        zh, en = ["单次入园"], ["single entry"]
    elif n == 0:
        zh, en = ["不限次数"], ["unlimited visits"]
    else:
        zh, en = [f"{n} 次"], [f"{n} visit{'s' if n != 1 else ''}"]
    if rule.daily_entries and n != 1:
        zh.append(f"每日 {rule.daily_entries} 次")
        en.append(f"{rule.daily_entries} a day")
    if rule.reentry:
        zh.append("可再入园")
        en.append("re-entry")
    days = max(rule.valid_days, 1)
    zh.append("当日有效" if days == 1 else f"{days} 日有效")
    en.append("valid on the day" if days == 1 else f"valid {days} days")
    return " · ".join(zh), " · ".join(en)


# The label font: WenQuanYi Micro Hei (Apache-2.0; Latin and some 21,000 Hanzi) from the
# paperang-p2-fonts-cjk package, a project dependency. Its outlines are TrueType, which
# reportlab embeds as a subset of the glyphs used, so the ticket shows the same on any
# viewer or printer; a CID font such as STSong-Light is only named in the file and shows
# as empty boxes wherever the viewer lacks Adobe's Asian font pack.
_FONT = "WenQuanYiMicroHei"
_FONT_PACKAGE, _FONT_FILE = "paperang_p2_fonts_cjk", "fonts/wqy-microhei.ttc"
_font_lock = threading.Lock()


def _font() -> str:
    """The label font's name, registered with reportlab on first use."""
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont
    with _font_lock:
        if _FONT not in pdfmetrics.getRegisteredFontNames():
            try:
                path = importlib.resources.files(_FONT_PACKAGE).joinpath(_FONT_FILE)
            except ModuleNotFoundError:
                raise RuntimeError("printing tickets needs the font package paperang-p2-fonts-cjk "
                                   "(a dependency of turnstile: pip install -e .)") from None
            pdfmetrics.registerFont(TTFont(_FONT, str(path), subfontIndex=0))
    return _FONT


def tickets_pdf(tickets: Sequence[TicketView], *, width_mm: float = 80, height_mm: float = 120,
                title: str = "Tickets") -> bytes:
    """A printable PDF of ``tickets``, one per page sized as a ticket label (80 x 120 mm
    by default, the width of a thermal ticket printer): venue, product, date and time
    window, the QR code (drawn as vectors, sharp at any printer resolution, with its
    4-module quiet zone), the price in yuan, the entry rule, persons, holder and the
    ticket id. Every text is set in one font embedded in the file (a subset), Chinese
    included; a line too long for the label is set smaller."""
    from reportlab.lib.units import mm
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfgen import canvas

    if not tickets:
        raise ValueError("no tickets to print")
    font = _font()
    out = io.BytesIO()
    W, H = width_mm * mm, height_mm * mm
    # the label font from the start too: by default every page opens with Helvetica,
    # a font that is only named, never embedded
    c = canvas.Canvas(out, pagesize=(W, H), pageCompression=1, initialFontName=font)
    c.setTitle(title)
    c.setCreator("Turnstile POS")
    margin = 5 * mm

    def fit(s: str, size: float) -> float:
        while size > 5 and pdfmetrics.stringWidth(s, font, size) > W - 2 * margin:
            size -= 0.5
        return size

    def text(y: float, s: str, size: float, bold: bool = False) -> None:
        """One centred line with its baseline at ``y``."""
        c.saveState()                 # the render mode outlives the text object: keep it here
        line = c.beginText()
        line.setFont(font, size)
        if bold:                      # the face has one weight: stroke the outlines too
            c.setLineWidth(size * 0.045)
            line.setTextRenderMode(2)
        line.setTextOrigin((W - pdfmetrics.stringWidth(s, font, size)) / 2, y)
        line.textOut(s)
        c.drawText(line)
        c.restoreState()

    for t in tickets:
        when = " ".join(x for x in (t.date, t.window) if x)
        above = [(s, fit(s, size), bold) for s, size, bold in
                 ((t.venue, 12, True), (t.product, 10.5, False), (when, 10, True),
                  (f"座位 Seat {t.seat}" if t.seat else "", 12, True)) if s]
        below = [] if t.price_fen is None else [(f"¥{fen(t.price_fen)}", 14, True)]
        below += [(s, 8.5 if i == 0 else 7.5, False) for i, s in enumerate(t.entry_rule) if s]
        below.append((f"{t.persons} 人 / {t.persons} person{'s' if t.persons != 1 else ''}"
                      + (f"  |  {t.holder}" if t.holder else ""), 8.5, False))
        below.append((f"Ticket {t.ticket_id}" + (f"  |  Order {t.order_id}" if t.order_id else ""),
                      7, False))
        below = [(s, fit(s, size), bold) for s, size, bold in below]
        # lines above the code from the top down, below it from the bottom up; a line
        # takes 1.4 times its size, its baseline 0.3 of its size above the line's foot
        top = H - margin
        for s, size, bold in above:
            top -= 1.4 * size
            text(top + 0.3 * size, s, size, bold)
        foot = margin
        for s, size, bold in reversed(below):
            text(foot + 0.3 * size, s, size, bold)
            foot += 1.4 * size
        # the QR code in the space between, with 4 modules of quiet zone all round; dark
        # runs of a row as one rectangle (no hairlines between modules when rasterised)
        matrix = qr_code(t.code, border=0).get_matrix()
        n = len(matrix)
        cell = min(W - 2 * margin, top - foot) / (n + 8)
        x0, y0 = (W - n * cell) / 2, foot + (top - foot - n * cell) / 2
        c.setFillColorRGB(0, 0, 0)
        for r, row in enumerate(matrix):
            y = y0 + (n - r - 1) * cell
            for k, run in itertools.groupby(enumerate(row), key=lambda kv: kv[1]):
                run = list(run)
                if k:
                    c.rect(x0 + run[0][0] * cell, y, len(run) * cell, cell, stroke=0, fill=1)
        c.showPage()
    c.save()
    return out.getvalue()


# -- the till ----------------------------------------------------------------------------
class Till:
    """A ticket window or kiosk selling for one venue.

    Args:
        conn: a connection with a seller key (its channel, e.g. ``window``, is what
            the sales are counted against) or an admin key.
        venue: the venue sold.
        payments: the :class:`PaymentAdapter` (a :class:`SandboxPaymentAdapter` for
            training and tests).
        station: this terminal's name; order ids start with it.
    """

    def __init__(self, conn: Connection, venue: str, payments: PaymentAdapter, *,
                 station: str = "window"):
        self.conn = conn
        self.venue = venue
        self.payments = payments
        self.station = station
        self.sales = ChannelClient(conn)
        self._shift_id: str | None = None
        self._cashier = ""
        self._catalog: admin_pb2.Catalog | None = None
        self._slots: dict[str, SlotAvailability] = {}

    # -- what there is to sell -----------------------------------------------------------
    def catalog(self, refresh: bool = False) -> admin_pb2.Catalog:
        """The venue's set-up (names, products, prices), asked once."""
        if self._catalog is None or refresh:
            self._catalog = AdminClient(self.conn).catalog(self.venue)
        return self._catalog

    def product(self, product_id: str) -> admin_pb2.Product | None:
        return next((p for p in self.catalog().products if p.product_id == product_id), None)

    def availability(self, date: dt.date | str, *, zone: str | None = None) -> list[SlotAvailability]:
        """Stock of the venue's slots on ``date`` (a venue-local day) as this till may
        sell it; the rows are remembered to print times on tickets."""
        rows = self.sales.availability(self.venue, date, zone=zone)
        self._slots.update((s.slot_id, s) for s in rows)
        return rows

    def cart(self) -> Cart:
        """A new, empty cart."""
        return Cart()

    def quote(self, cart: Cart, *, coupon: str | None = None) -> int:
        """What the cart costs at this window, in fen (``coupon`` taken off); takes no
        stock."""
        return self.explain(cart, coupon=coupon).amount_fen

    def explain(self, cart: Cart, *, coupon: str | None = None,
                coupon_holder: str | None = None, member_id: str = "", points: int = 0) -> Quote:
        """The cart's quote as the window shows it to the buyer: per line the day's date
        type, the base price, every rule with its amount (``Quote.explain()`` gives the
        lines to display), the coupon, the member's points and the total; takes no
        stock and no points. ``member_id``: the member buying (member prices)."""
        return self.sales.quote(self.venue, cart.items(), coupon=coupon, coupon_holder=coupon_holder,
                                member_id=member_id, points=points)

    # -- shifts --------------------------------------------------------------------------
    def open_shift(self, cashier: str, float_fen: int = 0, *, shift_id: str | None = None) -> Shift:
        """Start a shift at this station with ``float_fen`` of change in the drawer. The
        server keeps it (its sales and refunds per method), so a till that crashes loses
        nothing; ``shift_id`` (default ``<station>-<UTC time>-<random>``) names it."""
        if self._shift_id is not None:
            raise ShiftError(f"shift {self._shift_id} is open; close it first")
        if float_fen < 0:
            raise ValueError("float_fen must not be negative")
        shift_id = shift_id or f"{self.station}-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M}-{uuid.uuid4().hex[:6]}"
        r = self.conn.call(_Sales, "OpenShift", sales_pb2.OpenShiftRequest(
            venue_id=self.venue, station_id=self.station, shift_id=shift_id, cashier=cashier,
            float_fen=float_fen), venue=self.venue, retry=True)
        self._shift_id = shift_id
        self._cashier = r.cashier
        return Shift.from_proto(r)

    def resume_shift(self, shift_id: str) -> Shift:
        """Go on with an open shift of this till's key (after a restart)."""
        r = self.conn.call(_Sales, "GetShift", sales_pb2.GetShiftRequest(venue_id=self.venue, shift_id=shift_id),
                           venue=self.venue, retry=True)
        if not r.open:
            raise ShiftError(f"shift {shift_id} is closed")
        self._shift_id = shift_id
        self._cashier = r.cashier
        return Shift.from_proto(r)

    @property
    def shift(self) -> Shift | None:
        """The open shift as the server has it now (None: no shift open)."""
        if self._shift_id is None:
            return None
        return Shift.from_proto(self.conn.call(_Sales, "GetShift", sales_pb2.GetShiftRequest(
            venue_id=self.venue, shift_id=self._shift_id), venue=self.venue, retry=True))

    def close_shift(self, counted_cash_fen: int | None = None) -> ShiftReport:
        """End the shift: totals per payment method and the cash expected in the drawer
        (with the cashier's count, if given, how far it is over or short)."""
        shift_id = self._open()
        r = self.conn.call(_Sales, "CloseShift", sales_pb2.CloseShiftRequest(
            venue_id=self.venue, shift_id=shift_id, counted_cash_fen=counted_cash_fen or 0),
            venue=self.venue, retry=True)
        self._shift_id = None
        s = Shift.from_proto(r)
        return ShiftReport(s.station, s.cashier, s.opened_at, s.closed_at or dt.datetime.now(dt.UTC),
                           s.float_fen, s.totals, sum(t.sales for t in s.totals.values()),
                           s.cash_expected_fen, counted_cash_fen)

    def _open(self) -> str:
        if self._shift_id is None:
            raise ShiftError("no shift is open: open_shift(cashier, float_fen) first")
        return self._shift_id

    # -- selling -------------------------------------------------------------------------
    def _check_holders(self, cart: Cart) -> None:
        """Refuse a real-name line without one holder per code before money is taken."""
        for i, ln in enumerate(cart.lines):
            p = self.product(ln.product_id)
            if p is not None and p.real_name and len(ln.holders) != ln.qty:
                raise ValueError(f"line {i}: {ln.product_id} is real-name: "
                                 f"one holder ID number per code ({ln.qty})")

    def checkout(self, cart: Cart, method: str | PaymentMethod, *, tendered_fen: int | None = None,
                 auth_code: str | None = None, order_id: str | None = None,
                 coupon: str | None = None, coupon_holder: str | None = None,
                 member_id: str = "", points: int = 0) -> Sale:
        """Sell the cart: Hold the stock, take the payment, Confirm the order.

        ``method``: cash, card, alipay or wechat. ``tendered_fen``: cash handed over
        (the change is on the returned sale's payment). ``auth_code``: the customer's
        Alipay / WeChat Pay payment code. ``order_id``: default
        ``<station>-<random>``; giving the same one again after a failure resumes
        that sale instead of selling twice. ``coupon``: a coupon code the buyer shows
        (``coupon_holder``: their ID number, where it is limited per person), taken off
        before the charge. ``member_id``: the member buying (looked up with
        MembersClient.get by phone or ID card): member prices, the points earned;
        ``points``: theirs to pay with, taken off before the charge (enough of them
        leave nothing to charge, and no provider is asked).

        Raises ApiError (e.g. ``SOLD_OUT``, ``COUPON_USED``) before any money is taken;
        :class:`PaymentDeclined` after releasing the hold; ApiError from Confirm after
        giving the money back and releasing the hold.
        """
        shift = self._open()
        if not cart.lines:
            raise ValueError("the cart is empty")
        self._check_holders(cart)
        method = PaymentMethod(method).value
        order_id = order_id or f"{self.station}-{uuid.uuid4().hex[:16]}"
        self._slots.update(cart.slots)
        hold = self.sales.hold(self.venue, cart.items(), key=order_id, coupon=coupon,
                               coupon_holder=coupon_holder, member_id=member_id, points=points)
        try:
            if hold.amount_fen == 0:        # points paid it all: nothing to charge
                payment = PaymentResult(method, 0, "", tendered_fen or 0, tendered_fen or 0)
            else:
                payment = self.payments.charge(method, hold.amount_fen, order_id=order_id,
                                               tendered_fen=tendered_fen, auth_code=auth_code)
        except BaseException:
            self._release(hold)
            raise
        try:
            order = self.sales.confirm(hold, order_id, method=method, payment_reference=payment.reference,
                                       amount_fen=payment.amount_fen, holders=cart.holders(),
                                       shift_id=shift, member_id=member_id)
        except ApiError as e:
            if e.retryable:           # the outcome is unknown: did the order go through?
                try:
                    order = self.sales.get_order(self.venue, order_id)
                except ApiError:
                    order = None
                if order is not None:
                    return self._sold(order, payment)
            if payment.amount_fen:
                self.payments.refund(payment, payment.amount_fen, refund_id=f"void-{order_id}")
            self._release(hold)
            raise
        return self._sold(order, payment)

    def _sold(self, order: Order, payment: PaymentResult) -> Sale:
        return Sale(order, payment, self.station, self._cashier, dt.datetime.now(dt.UTC))

    def _release(self, hold: Hold) -> None:
        try:
            self.sales.release(hold)
        except ApiError:
            pass                       # expired or gone already: the stock is back either way

    def refund(self, order_id: str, ticket_ids: Sequence[int] = (), *,
               refund_id: str | None = None) -> WindowRefund:
        """Refund unused tickets of an order sold at this window (all unused ones if
        ``ticket_ids`` is empty): the server voids them and returns their stock, and
        the amount due (price less the product's refund fee) goes back the way it was
        paid. Giving the same ``refund_id`` again repeats nothing.

        Raises ApiError ``TICKET_NOT_REFUNDABLE`` for a used ticket (nothing changes).
        """
        shift = self._open()
        order = self.sales.get_order(self.venue, order_id)
        r = self.sales.refund(self.venue, order_id, ticket_ids, refund_id=refund_id or new_key(),
                              shift_id=shift)
        if r.amount_fen == 0:
            return WindowRefund(r, None)
        paid = PaymentResult(order.payment.method, order.payment.amount_fen, order.payment.reference)
        # the provider's refund is keyed by Turnstile's refund id (the merchant refund number
        # a statement lists it under; a till's refund ids are UUIDs unless given)
        back = self.payments.refund(paid, r.amount_fen, refund_id=r.refund_id)
        return WindowRefund(r, back)

    # -- printing ------------------------------------------------------------------------
    def _local(self, t: dt.datetime) -> dt.datetime:
        offset = self.catalog().venue.utc_offset_s
        return t.astimezone(dt.timezone(dt.timedelta(seconds=offset)))

    def ticket_views(self, order: Order | Sale) -> list[TicketView]:
        """What to print for each ticket of an order: with the price the order line
        charged for it (all its persons) and its product's entry rule from the catalog
        (asked once per till, not per ticket)."""
        order = order.order if isinstance(order, Sale) else order
        cat = self.catalog()
        products = {p.product_id: p for p in cat.products}
        out = []
        for t in order.tickets:
            line = order.line_of(t)
            slot = self._slots.get(line.slot_ids[0]) if line.slot_ids else None
            if slot is not None:
                date = slot.date.isoformat()
                window = f"{self._local(slot.start):%H:%M}-{self._local(slot.end):%H:%M}"
            else:
                date, window = "", " ".join(line.slot_ids)
            p = products.get(t.product_id)
            out.append(TicketView(t.code, t.ticket_id, (p.name if p else "") or t.product_id,
                                  cat.venue.name or cat.venue.venue_id, date, window, t.persons,
                                  t.holder, order.order_id,
                                  price_fen=line.unit_price_fen * max(line.group, 1),
                                  entry_rule=entry_rule_lines(p.rule) if p else (), seat=t.seat))
        return out

    def tickets_pdf(self, sale: Sale | Order) -> bytes:
        """The sale's tickets as a PDF, one label per ticket."""
        order = sale.order if isinstance(sale, Sale) else sale
        return tickets_pdf(self.ticket_views(sale), title=f"Tickets {order.order_id}")

    def tickets_png(self, sale: Sale | Order) -> list[bytes]:
        """The sale's tickets as QR PNGs, one per ticket, in ticket order."""
        order = sale.order if isinstance(sale, Sale) else sale
        return [qr_png(t.code) for t in order.tickets]

    def receipt(self, sale: Sale, width: int = 40) -> str:
        """The customer's receipt as text, ``width`` characters wide."""
        cat = self.catalog()
        names = {p.product_id: p.name or p.product_id for p in cat.products}
        o, p = sale.order, sale.payment
        out = [(cat.venue.name or cat.venue.venue_id).center(width).rstrip(),
               _lr(f"Station {sale.station}", f"Cashier {sale.cashier}", width),
               f"{self._local(sale.at):%Y-%m-%d %H:%M} (venue time)", f"Order {o.order_id}", "-" * width]
        for ln in o.lines:
            slot = self._slots.get(ln.slot_ids[0]) if ln.slot_ids else None
            when = (f"{slot.date:%m-%d} {self._local(slot.start):%H:%M}" if slot is not None
                    else " ".join(ln.slot_ids))
            persons = ln.qty * max(ln.group, 1)
            out.append(f"{names.get(ln.product_id, ln.product_id)}  {when}")
            label = f"  {ln.qty} x {fen(ln.unit_price_fen)}" + (f" x {ln.group} persons" if ln.group > 1 else "")
            out.append(_lr(label, fen(ln.unit_price_fen * persons), width))
        out += ["-" * width, _lr("TOTAL CNY", fen(o.amount_fen), width),
                _lr(f"Paid by {p.method}", fen(p.tendered_fen if p.method == "cash" else p.amount_fen), width)]
        if p.method == "cash":
            out.append(_lr("Change", fen(p.change_fen), width))
        if o.member_id:
            out.append(f"Member {o.member_id}: {o.points_redeemed} points used, {o.points_earned} earned")
        out += [f"Ref {p.reference}", "-" * width,
                "Tickets " + ", ".join(str(t.ticket_id) for t in o.tickets), ""]
        return "\n".join(out)

