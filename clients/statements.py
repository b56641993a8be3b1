"""Payment providers' daily statements (对账单), read and written, for reconciling
(自动对账) Turnstile's payments against what Alipay and WeChat Pay say they took.

Two layouts, modelled on the providers' published descriptions and sample files:

* **Alipay 业务明细** (the trade bill: ``alipay.data.dataservice.bill.downloadurl.query``
  with ``bill_type=trade``, or the merchant portal's download; the "业务明细" CSV of
  the zip). GBK-encoded. ``#`` comment lines first (``#支付宝业务明细查询``, ``#账号``,
  ``#起始日期：[...]   终止日期：[...]``, the ``#----业务明细列表----`` rule), then
  a header of 25 columns (支付宝交易号, 商户订单号, 业务类型, ..., 订单金额（元）,
  商家实收（元）, ..., 退款批次号/请求号, 服务费（元）, 分润（元）, 备注), one row per
  trade (业务类型 交易) or refund (业务类型 退款: 订单金额 and 商家实收 negative,
  完成时间 the refund's time), the id columns padded with a tab so that a spreadsheet
  keeps them as text; then ``#----业务明细列表结束----`` and the summary block:
  ``#交易合计：N笔，商家实收共X元，商家优惠共Y元``, ``#退款合计：M笔，商家实收退款共-Z元，
  商家优惠退款共W元``, ``#导出时间：[...]``. Modelled on the open-platform bill
  description and the downloaded files reproduced in public SDK tests.
* **WeChat Pay 交易账单, bill_type=ALL** (``/pay/downloadbill``, ``/v3/bill/tradebill``;
  pay.weixin.qq.com "交易账单详细说明", the format since the 2018 免充值券 change,
  and the ``bill.ALL.csv`` fixture of the official wechatpay-php SDK). A header of 27
  columns (交易时间, 公众账号ID, 商户号, 特约商户号, 设备号, 微信订单号, 商户订单号,
  用户标识, 交易类型, 交易状态, 付款银行, 货币种类, 应结订单金额, 代金券金额,
  微信退款单号, 商户退款单号, 退款金额, 充值券退款金额, 退款类型, 退款状态, 商品名称,
  商户数据包, 手续费, 费率, 订单金额, 申请退款金额, 费率备注), every value prefixed with
  a backtick (`) so that Excel keeps long numbers; payments are 交易状态 SUCCESS,
  refunds 交易状态 REFUND (amounts in 退款金额 / 申请退款金额, 应结订单金额 and
  订单金额 0.00); 手续费 has five decimals (0.01000) and is negative on a refund. Then
  the summary header (总交易单数, 应结订单总金额, 退款总金额, 充值券退款总金额,
  手续费总金额, 订单总金额, 申请退款总金额) and one line of totals over every row. The
  file does not name its day: it is the China-local day of its rows.

Amounts are yuan with two decimals in the files and integer fen here, converted
digit by digit (never through a float). Times in the files are China time (UTC+8);
:class:`StatementLine` holds them in UTC.

:func:`parse_statement` reads either layout from bytes (UTF-8 with or without BOM, or
GBK) or text, checks every row and that the summary adds up, and raises
:class:`StatementError` naming the line otherwise (either line end is read). Not read,
and refused as such: Alipay's 账务明细 (account) bill, WeChat Pay's SUCCESS-only and
REFUND-only bills and its pre-2018 layout (总金额 for 应结订单金额), and rows that are
neither a payment nor a refund (a WeChat Pay REVOKED row, an Alipay 业务类型 other
than 交易 / 退款). :func:`write_statement` writes the provider's layout and encoding:
Alipay in GBK, as its download is (CRLF line ends); WeChat Pay in UTF-8 with a BOM
(how a spreadsheet recognises UTF-8 in a CSV). The writer fills only what a
:class:`StatementLine` knows; the merchant's and buyer's identity columns (account,
appid, mch id, openid) are left blank.
:func:`sandbox_statement` is the bill a :class:`~turnstile.clients.pos.SandboxPaymentAdapter`
would give.
"""
from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

__all__ = [
    "CHINA",
    "PROVIDERS",
    "SANDBOX_FEE_PER_MILLE",
    "Statement",
    "StatementError",
    "StatementLine",
    "parse_statement",
    "sandbox_statement",
    "write_statement",
]

#: China Standard Time, the providers' clock (no daylight saving).
CHINA = dt.timezone(dt.timedelta(hours=8), "CST")
#: The providers whose statements this module reads and writes.
PROVIDERS = ("alipay", "wechat")
#: The sandbox's service fee: 6 per mille (0.6 %), the providers' usual standard rate.
SANDBOX_FEE_PER_MILLE = 6

_KINDS = ("payment", "refund")
_TIME = "%Y-%m-%d %H:%M:%S"


class StatementError(ValueError):
    """A statement file that cannot be trusted: an unknown layout, a malformed row, or
    a summary that does not agree with the rows. ``line`` is the 1-based line of the
    file at fault (None when the fault is the file as a whole)."""

    def __init__(self, message: str, line: int | None = None):
        self.line = line
        super().__init__(f"line {line}: {message}" if line is not None else message)


@dataclasses.dataclass(frozen=True)
class StatementLine:
    """One row of a provider's statement: a payment or a refund.

    ``trade_no``: the provider's trade number (支付宝交易号 / 微信订单号; a refund
    row carries the number of the payment it refunds). ``order_id``: 商户订单号,
    Turnstile's order id. ``refund_id``: 商户退款单号 / 退款批次号, Turnstile's refund
    id ("" for a payment). ``at``: when it happened, in UTC, to the second (the
    files' precision: a finer time is cut to the second). ``amount_fen``: what was
    paid, or what was refunded, always > 0: a payment's 订单金额 (the amount Turnstile
    asked for; discounts a provider funds are not modelled), a refund's 申请退款金额
    (WeChat Pay) or its 订单金额 without the minus (Alipay). ``fee_fen``: the
    provider's service fee (服务费 / 手续费) as the file gives it: what it kept on a
    payment, negative for the fee it returns with a refund.
    """

    kind: str
    trade_no: str
    order_id: str
    refund_id: str
    at: dt.datetime
    amount_fen: int
    fee_fen: int

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"kind must be 'payment' or 'refund', not {self.kind!r}")
        if (self.kind == "refund") != bool(self.refund_id):
            raise ValueError("a refund has a refund_id and a payment has none")
        if not self.trade_no or not self.order_id:
            raise ValueError("trade_no and order_id must not be empty")
        if type(self.amount_fen) is not int or self.amount_fen <= 0:
            raise ValueError(f"amount_fen must be a positive int, not {self.amount_fen!r}")
        if type(self.fee_fen) is not int:
            raise ValueError(f"fee_fen must be an int, not {self.fee_fen!r}")
        if self.at.tzinfo is None or self.at.utcoffset() is None:
            raise ValueError("at must be timezone-aware")
        object.__setattr__(self, "at", self.at.astimezone(dt.UTC).replace(microsecond=0))


@dataclasses.dataclass(frozen=True)
class Statement:
    """A provider's statement for one China-local ``day``: its rows in file order."""

    provider: str
    day: dt.date
    lines: tuple[StatementLine, ...]

    def __post_init__(self) -> None:
        if self.provider not in PROVIDERS:
            raise ValueError(f"provider must be one of {PROVIDERS}, not {self.provider!r}")
        object.__setattr__(self, "lines", tuple(self.lines))

    @property
    def paid_fen(self) -> int:
        """Total of the payments."""
        return sum(ln.amount_fen for ln in self.lines if ln.kind == "payment")

    @property
    def refunded_fen(self) -> int:
        """Total of the refunds (a positive number)."""
        return sum(ln.amount_fen for ln in self.lines if ln.kind == "refund")

    @property
    def fee_fen(self) -> int:
        """The provider's net service fee: kept on payments less returned with refunds."""
        return sum(ln.fee_fen for ln in self.lines)


# -- amounts and times -------------------------------------------------------------------
_AMOUNT = re.compile(r"(-?)(\d+)(?:\.(\d+))?")
_COUNT = re.compile(r"(\d+)(?:\.0+)?")


def _fen(text: str, line: int, column: str) -> int:
    """Yuan text as fen, exactly: '1234.50' -> 123450, '-0.07' -> -7, '100' -> 10000,
    '0.01000' -> 1. More than two decimals only when the extra ones are zeros (WeChat
    Pay writes fees with five)."""
    m = _AMOUNT.fullmatch(text)
    if m is None:
        raise StatementError(f"{column} {text!r} is not an amount in yuan", line)
    sign, whole, frac = m.group(1), m.group(2), m.group(3) or ""
    if frac[2:].strip("0"):
        raise StatementError(f"{column} {text!r} is not a whole number of fen", line)
    value = int(whole) * 100 + int(frac[:2].ljust(2, "0"))
    return -value if sign else value


def _count(text: str, line: int, column: str) -> int:
    """A count as the summaries write it: '45', or '45.0' in WeChat Pay's."""
    m = _COUNT.fullmatch(text)
    if m is None:
        raise StatementError(f"{column} {text!r} is not a count", line)
    return int(m.group(1))


def _yuan(fen: int, places: int = 2) -> str:
    """Fen as yuan text with ``places`` (>= 2) decimals: 123450 -> '1234.50', -7 -> '-0.07'."""
    sign = "-" if fen < 0 else ""
    a = abs(fen)
    return f"{sign}{a // 100}.{a % 100:02d}" + "0" * (places - 2)


def _china_time(text: str, line: int, column: str) -> dt.datetime:
    """A file's 'YYYY-MM-DD HH:MM:SS' (China time) as UTC."""
    try:
        local = dt.datetime.strptime(text, _TIME)
    except ValueError:
        raise StatementError(f"{column} {text!r} is not a time (YYYY-MM-DD HH:MM:SS)", line) from None
    return local.replace(tzinfo=CHINA).astimezone(dt.UTC)


def _china_day(at: dt.datetime) -> dt.date:
    return at.astimezone(CHINA).date()


# -- reading -----------------------------------------------------------------------------
def _decode(data: bytes | str) -> str:
    """The file's text: UTF-8 (a BOM allowed) or else GBK, the encoding of Alipay's
    downloads. Anything else is refused with the line of the first bad byte."""
    if isinstance(data, str):
        return data.removeprefix("\ufeff")
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("gbk")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise StatementError("the file is neither UTF-8 nor GBK text", line) from None


def _lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) for the file's non-blank lines, line ends removed."""
    for number, raw in enumerate(text.split("\n"), 1):
        line = raw.rstrip("\r")
        if line.strip():
            yield number, line


def _cells(line: str, number: int) -> list[str]:
    """A line's comma-separated cells (a quoted cell may hold a comma)."""
    try:
        return next(csv.reader([line]))
    except csv.Error as e:
        raise StatementError(f"not a CSV line ({e})", number) from None


def parse_statement(data: bytes | str, *, day: dt.date | None = None) -> Statement:
    """Read a provider's statement (Alipay 业务明细 or WeChat Pay ALL bill), telling
    which from its content.

    Every row must be well formed and the summary must agree with the rows (counts
    and every total it gives, to the fen), and every row must fall on the bill's day;
    otherwise :class:`StatementError` names the line. ``day``: the bill's China-local
    day if the caller knows it; a WeChat Pay bill does not state its own (it is taken
    from its rows), so an empty one needs it.
    """
    text = _decode(data)
    lines = list(_lines(text))
    if not lines:
        raise StatementError("the file is empty")
    number, first = lines[0]
    if first.startswith("#"):
        if "业务明细" in first and "支付宝" in first:
            return _parse_alipay(lines, day)
        if "账务明细" in first:
            raise StatementError("an Alipay 账务明细 (account) bill; reconciliation reads the "
                                 "业务明细 (trade) bill, bill_type=trade", number)
    elif _cells(first, number)[0].strip().lstrip("`") == "交易时间":
        return _parse_wechat(lines, day)
    raise StatementError(f"unknown statement layout (starts {first[:40]!r}); expected an "
                         "Alipay 业务明细 or a WeChat Pay ALL bill", number)


class _Columns:
    """A header row: the index of each column by name, with the ones a parser needs."""

    def __init__(self, names: list[str], needed: Sequence[str], line: int):
        self.names = names
        self.index = {n: i for i, n in enumerate(names)}
        self.line = line
        for n in needed:
            if n not in self.index:
                raise StatementError(f"column {n} missing from the header", line)

    def row(self, cells: list[str], line: int) -> Callable[[str], str]:
        if len(cells) != len(self.names):
            raise StatementError(f"{len(cells)} columns, the header (line {self.line}) has {len(self.names)}",
                                 line)
        return lambda name: cells[self.index[name]]


def _alipay_name(cell: str) -> str:
    return cell.strip().replace("(", "（").replace(")", "）")


_ALIPAY_NEEDED = ("支付宝交易号", "商户订单号", "业务类型", "完成时间", "订单金额（元）", "商家实收（元）",
                  "商家优惠（元）", "退款批次号/请求号", "服务费（元）")
_ALIPAY_PERIOD = re.compile(r"#起始日期[：:]\s*\[(.+?)\]\s*终止日期[：:]\s*\[(.+?)\]")
_ALIPAY_PERIOD_TIME = "%Y年%m月%d日 %H:%M:%S"
_ALIPAY_TOTAL = re.compile(r"#(交易|退款)合计[：:]\s*(\d+)\s*笔")
_ALIPAY_SUM = re.compile(r"(商家实收(?:退款)?|商家优惠(?:退款)?)共\s*(-?\d+(?:\.\d+)?)\s*元")


def _parse_alipay(lines: list[tuple[int, str]], day: dt.date | None) -> Statement:
    """An Alipay 业务明细: '#' head, rule, header, rows, end rule, '#' summary."""
    it = iter(lines[1:])
    period: tuple[dt.date, int] | None = None
    for number, line in it:
        if not line.startswith("#"):
            raise StatementError("the rows start before the #----业务明细列表---- line", number)
        if "业务明细列表" in line and "结束" not in line:
            break
        m = _ALIPAY_PERIOD.match(line)
        if m:
            try:
                start, end = (dt.datetime.strptime(t.strip(), _ALIPAY_PERIOD_TIME) for t in m.groups())
            except ValueError:
                raise StatementError(f"bad 起始日期 / 终止日期 {line!r}", number) from None
            if start.time() != dt.time(0) or end - start != dt.timedelta(days=1):
                raise StatementError(f"the bill covers {start} to {end}, not one day", number)
            period = (start.date(), number)
    else:
        raise StatementError("no #----业务明细列表---- line")
    if period is None:
        raise StatementError("no #起始日期：[...] 终止日期：[...] line before the rows", number)
    bill_day, period_line = period
    if day is not None and day != bill_day:
        raise StatementError(f"the bill is for {bill_day}, not {day}", period_line)

    number, line = next(it, (number + 1, ""))
    columns = _Columns([_alipay_name(c) for c in _cells(line, number)] if line else [], _ALIPAY_NEEDED, number)
    rows: list[StatementLine] = []
    sums = {"交易": [0, 0, 0], "退款": [0, 0, 0]}      # kind -> [rows, 商家实收, 商家优惠]
    for number, line in it:
        if line.startswith("#"):
            if "业务明细列表结束" not in line:
                raise StatementError(f"{line!r} among the rows", number)
            break
        col = columns.row([c.strip() for c in _cells(line, number)], number)
        kind = col("业务类型")
        if kind not in sums:
            raise StatementError(f"业务类型 {kind!r}: only 交易 and 退款 rows are known", number)
        at = _china_time(col("完成时间"), number, "完成时间")
        if _china_day(at) != bill_day:
            raise StatementError(f"完成时间 {col('完成时间')} is not on the bill's day {bill_day}", number)
        amount = _fen(col("订单金额（元）"), number, "订单金额（元）")
        received = _fen(col("商家实收（元）"), number, "商家实收（元）")
        discount = _fen(col("商家优惠（元）"), number, "商家优惠（元）")
        fee = _fen(col("服务费（元）"), number, "服务费（元）")
        refund_id = col("退款批次号/请求号")
        if kind == "交易" and amount <= 0:
            raise StatementError(f"a 交易 of {col('订单金额（元）')} yuan: a payment is positive", number)
        if kind == "退款":
            if amount >= 0:
                raise StatementError(f"a 退款 of {col('订单金额（元）')} yuan: a refund is negative", number)
            if not refund_id:
                raise StatementError("a 退款 without 退款批次号/请求号", number)
        if not col("支付宝交易号") or not col("商户订单号"):
            raise StatementError("支付宝交易号 or 商户订单号 is empty", number)
        s = sums[kind]
        s[0], s[1], s[2] = s[0] + 1, s[1] + received, s[2] + discount
        rows.append(StatementLine("payment" if kind == "交易" else "refund", col("支付宝交易号"),
                                  col("商户订单号"), refund_id if kind == "退款" else "", at,
                                  abs(amount), fee))
    else:
        raise StatementError("no #----业务明细列表结束---- line after the rows")

    seen: set[str] = set()
    for number, line in it:
        if not line.startswith("#"):
            raise StatementError(f"{line!r} after the rows", number)
        m = _ALIPAY_TOTAL.match(line)
        if m is None:
            continue                                     # 导出时间 and other notes
        kind, count = m.group(1), int(m.group(2))
        n, received, discount = sums[kind]
        if count != n:
            raise StatementError(f"{kind}合计 says {count} rows, the file has {n}", number)
        for name, total in _ALIPAY_SUM.findall(line):
            want = received if name.startswith("商家实收") else discount
            if _fen(total, number, name) != want:
                raise StatementError(f"{name}共 {total} yuan, the rows add up to {_yuan(want)}", number)
        seen.add(kind)
    for kind in ("交易", "退款"):
        if kind not in seen and (kind == "交易" or sums[kind][0]):
            raise StatementError(f"the summary has no #{kind}合计 line")
    return Statement("alipay", bill_day, tuple(rows))


_WECHAT_NEEDED = ("交易时间", "微信订单号", "商户订单号", "交易状态", "应结订单金额", "商户退款单号", "退款金额",
                  "充值券退款金额", "退款状态", "手续费", "订单金额", "申请退款金额")
# summary column -> the detail column it totals (总交易单数 counts the rows)
_WECHAT_TOTALS = {"应结订单总金额": "应结订单金额", "退款总金额": "退款金额",
                  "充值券退款总金额": "充值券退款金额", "手续费总金额": "手续费", "订单总金额": "订单金额",
                  "申请退款总金额": "申请退款金额"}
_WECHAT_REFUND_STATES = ("SUCCESS", "PROCESSING")


def _wechat_cell(cell: str) -> str:
    return cell.strip().removeprefix("`").strip()


def _parse_wechat(lines: list[tuple[int, str]], day: dt.date | None) -> Statement:
    """A WeChat Pay ALL bill: header, rows, summary header, summary."""
    number, line = lines[0]
    columns = _Columns([_wechat_cell(c) for c in _cells(line, number)], _WECHAT_NEEDED, number)
    rows: list[StatementLine] = []
    sums = dict.fromkeys(_WECHAT_TOTALS.values(), 0)
    bill_day = day
    it = iter(lines[1:])
    for number, line in it:
        cells = [_wechat_cell(c) for c in _cells(line, number)]
        if cells[0] == "总交易单数":
            break
        col = columns.row(cells, number)
        at = _china_time(col("交易时间"), number, "交易时间")
        if bill_day is None:
            bill_day = _china_day(at)
        elif _china_day(at) != bill_day:
            raise StatementError(f"交易时间 {col('交易时间')} is not on the bill's day {bill_day}", number)
        values = {c: _fen(col(c), number, c) for c in sums}
        for c, v in values.items():
            sums[c] += v
        state = col("交易状态")
        if not col("微信订单号") or not col("商户订单号"):
            raise StatementError("微信订单号 or 商户订单号 is empty", number)
        if state == "SUCCESS":
            kind, amount, refund_id = "payment", values["订单金额"], ""
        elif state == "REFUND":
            kind, amount, refund_id = "refund", values["申请退款金额"], col("商户退款单号")
            if col("退款状态") not in _WECHAT_REFUND_STATES:
                raise StatementError(f"退款状态 {col('退款状态')!r}: a refund row is SUCCESS or PROCESSING",
                                     number)
            if not refund_id:
                raise StatementError("a REFUND row without 商户退款单号", number)
        else:
            raise StatementError(f"交易状态 {state!r}: only SUCCESS and REFUND rows are known", number)
        if amount <= 0:
            column = "订单金额" if kind == "payment" else "申请退款金额"
            raise StatementError(f"{column} {col(column)}: the amount must be positive", number)
        rows.append(StatementLine(kind, col("微信订单号"), col("商户订单号"), refund_id, at, amount,
                                  values["手续费"]))
    else:
        raise StatementError("no summary (总交易单数,...) after the rows", number)

    head_line = number
    summary = _Columns(cells, ("总交易单数", *_WECHAT_TOTALS), head_line)
    number, line = next(it, (number + 1, ""))
    if not line:
        raise StatementError("the summary header has no line of totals after it", number)
    total = summary.row([_wechat_cell(c) for c in _cells(line, number)], number)
    if (count := _count(total("总交易单数"), number, "总交易单数")) != len(rows):
        raise StatementError(f"总交易单数 says {count} rows, the file has {len(rows)}", number)
    for name, column in _WECHAT_TOTALS.items():
        if _fen(total(name), number, name) != sums[column]:
            raise StatementError(f"{name} {total(name)} yuan, the rows add up to {_yuan(sums[column])}", number)
    extra = next(it, None)
    if extra is not None:
        raise StatementError(f"{extra[1]!r} after the summary", extra[0])
    if bill_day is None:
        raise StatementError("a WeChat Pay bill with no rows does not say its day: pass day=")
    return Statement("wechat", bill_day, tuple(rows))


# -- writing -----------------------------------------------------------------------------
_ALIPAY_HEADER = ("支付宝交易号,商户订单号,业务类型,商品名称,创建时间,完成时间,门店编号,门店名称,操作员,终端号,"
                  "对方账户,订单金额（元）,商家实收（元）,支付宝红包（元）,集分宝（元）,支付宝优惠（元）,"
                  "商家优惠（元）,券核销金额（元）,券名称,商家红包消费金额（元）,卡消费金额（元）,"
                  "退款批次号/请求号,服务费（元）,分润（元）,备注")
_WECHAT_HEADER = ("交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,"
                  "交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,"
                  "充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,"
                  "费率备注")
_WECHAT_SUMMARY = "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额"
_UNSAFE = re.compile(r"[,\"`\r\n\t]")


def write_statement(provider: str, day: dt.date, lines: Sequence[StatementLine]) -> bytes:
    """The statement ``provider`` ("alipay" or "wechat") gives for China-local ``day``
    with these rows, in its layout and encoding (Alipay: GBK; WeChat Pay: UTF-8 with
    a BOM). ``parse_statement`` gives the same rows back.

    What a line does not carry is written as a plain barcode payment would show it:
    no discounts, 创建时间 = 完成时间, WeChat Pay's 交易类型 MICROPAY and 费率 the
    sandbox's 0.60 %. Raises ValueError for a row not on ``day``, or an id that the
    layout cannot carry as it is (a comma, quote, backtick, tab or line break, or
    space at either end).
    """
    if provider not in PROVIDERS:
        raise ValueError(f"provider must be one of {PROVIDERS}, not {provider!r}")
    for ln in lines:
        if _china_day(ln.at) != day:
            raise ValueError(f"{ln.kind} {ln.order_id} at {ln.at} is not on {day} (China time)")
        for value in (ln.trade_no, ln.order_id, ln.refund_id):
            if _UNSAFE.search(value) or value != value.strip():
                raise ValueError(f"{value!r} cannot be written in a statement as it is")
    if provider == "alipay":
        text = _alipay_text(day, lines)
        try:
            return text.encode("gbk")
        except UnicodeEncodeError as e:
            raise ValueError(f"{text[e.start:e.end]!r} has no GBK encoding") from None
    return ("\ufeff" + _wechat_text(lines)).encode("utf-8")


def _alipay_text(day: dt.date, lines: Sequence[StatementLine]) -> str:
    end = day + dt.timedelta(days=1)
    out = ["#支付宝业务明细查询", "#账号：[]",
           f"#起始日期：[{day:%Y年%m月%d日} 00:00:00]   终止日期：[{end:%Y年%m月%d日} 00:00:00]",
           "#-----------------------------------------业务明细列表----------------------------------------",
           _ALIPAY_HEADER]
    totals = {"payment": [0, 0], "refund": [0, 0]}
    for ln in lines:
        signed = ln.amount_fen if ln.kind == "payment" else -ln.amount_fen
        when = ln.at.astimezone(CHINA).strftime(_TIME)
        # a barcode payment is created and completed together; a refund row's 创建时间 is
        # the payment's, which the line does not carry: its own time stands in
        out.append(",".join([
            ln.trade_no + "\t", ln.order_id + "\t", ("交易" if ln.kind == "payment" else "退款") + "\t", "",
            when, when, "\t", "\t", "\t", "\t", "\t", _yuan(signed), _yuan(signed), "0.00", "0.00", "0.00",
            "0.00", "0.00", "", "0.00\t", "0.00", ln.refund_id + "\t", _yuan(ln.fee_fen), "0.00", ""]))
        totals[ln.kind][0] += 1
        totals[ln.kind][1] += signed
    (paid_n, paid), (refund_n, refunded) = totals["payment"], totals["refund"]
    out += ["#-----------------------------------------业务明细列表结束------------------------------------",
            f"#交易合计：{paid_n}笔，商家实收共{_yuan(paid)}元，商家优惠共0.00元",
            f"#退款合计：{refund_n}笔，商家实收退款共{_yuan(refunded)}元，商家优惠退款共0.00元",
            # the end of the bill's day, so that the same rows always give the same file
            f"#导出时间：[{end:%Y年%m月%d日} 00:00:00]"]
    return "\r\n".join(out) + "\r\n"


def _wechat_text(lines: Sequence[StatementLine]) -> str:
    def row(values: Sequence[str]) -> str:
        return ",".join("`" + v for v in values)

    out = [_WECHAT_HEADER]
    settle = refunded = fees = 0
    for ln in lines:
        pay = ln.kind == "payment"
        amount, zero = _yuan(ln.amount_fen), "0.00"
        out.append(row([
            ln.at.astimezone(CHINA).strftime(_TIME), "", "", "0", "", ln.trade_no, ln.order_id, "",
            "MICROPAY", "SUCCESS" if pay else "REFUND", "OTHERS", "CNY", amount if pay else zero, zero,
            "0" if pay else "", "0" if pay else ln.refund_id, zero if pay else amount, zero,
            "" if pay else "ORIGINAL", "" if pay else "SUCCESS", "", "", _yuan(ln.fee_fen, 5),
            f"{SANDBOX_FEE_PER_MILLE / 10:.2f}%", amount if pay else zero, zero if pay else amount, ""]))
        settle += ln.amount_fen if pay else 0
        refunded += 0 if pay else ln.amount_fen
        fees += ln.fee_fen
    out += [_WECHAT_SUMMARY, row([str(len(lines)), _yuan(settle), _yuan(refunded), "0.00", _yuan(fees, 5),
                                  _yuan(settle), _yuan(refunded)])]
    return "\n".join(out) + "\n"


# -- the sandbox's statement -------------------------------------------------------------
def _sandbox_fee(amount_fen: int) -> int:
    """The sandbox's service fee on an amount: 0.6 %, rounded half up to the fen."""
    return (amount_fen * SANDBOX_FEE_PER_MILLE + 500) // 1000


def _utc(at: dt.datetime) -> dt.datetime:
    return at.replace(tzinfo=dt.UTC) if at.tzinfo is None else at


def sandbox_statement(adapter: Any, provider: str, day: dt.date) -> bytes:
    """The statement a :class:`~turnstile.clients.pos.SandboxPaymentAdapter` would let
    the merchant download from ``provider`` ("alipay" or "wechat") for China-local
    ``day``: every charge by that method made that day (order id = the key of
    ``adapter.charges``, trade number = the payment's ``reference``) and every refund
    of such a payment made that day (refund id = the key of ``adapter.refunds``), in
    the order they happened, with the provider's service fee of 0.6 % of the amount,
    rounded half up to the fen (a refund returns the fee of what it refunds, as a
    negative number). Times come from ``adapter.times`` (``"charge:" + order id``,
    ``"refund:" + refund id``). A zero amount moves no money and is not listed.

    ``adapter`` is taken duck-typed (``charges``, ``refunds``, ``times``), so that this
    module does not import the POS client.
    """
    if provider not in PROVIDERS:
        raise ValueError(f"provider must be one of {PROVIDERS}, not {provider!r}")
    orders = {p.reference: order_id for order_id, p in adapter.charges.items()}
    found: list[StatementLine] = []
    for order_id, p in adapter.charges.items():
        if p.method != provider or p.amount_fen <= 0:
            continue
        at = _utc(adapter.times["charge:" + order_id])
        if _china_day(at) == day:
            found.append(StatementLine("payment", p.reference, order_id, "", at, p.amount_fen,
                                       _sandbox_fee(p.amount_fen)))
    for refund_id, (reference, r) in adapter.refunds.items():
        if r.method != provider or r.amount_fen <= 0:
            continue
        at = _utc(adapter.times["refund:" + refund_id])
        if _china_day(at) == day:
            found.append(StatementLine("refund", reference, orders[reference], refund_id, at, r.amount_fen,
                                       -_sandbox_fee(r.amount_fen)))
    found.sort(key=lambda ln: ln.at)        # stable: same-second entries keep ledger order
    return write_statement(provider, day, found)
