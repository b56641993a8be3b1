"""Payment providers' statements (clients/statements.py): files in the layouts Alipay
(业务明细, bill_type=trade) and WeChat Pay (交易账单, bill_type=ALL) publish, read to
the fen; the writer's files read back the same; broken files refused naming the line;
and the sandbox adapter's bill of a day lists exactly that provider's money of the day.

The sample files below are written by hand after the providers' published samples:
made-up ids and amounts, the providers' header and summary lines."""
from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from turnstile.clients.pos import SandboxPaymentAdapter
from turnstile.clients.statements import (
    Statement,
    StatementError,
    StatementLine,
    parse_statement,
    sandbox_statement,
    write_statement,
)

DAY = dt.date(2026, 11, 23)
UTC = dt.UTC


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


# -- Alipay 业务明细 -----------------------------------------------------------------------
ALIPAY_HEADER = ("支付宝交易号,商户订单号,业务类型,商品名称,创建时间,完成时间,门店编号,门店名称,操作员,终端号,"
                 "对方账户,订单金额（元）,商家实收（元）,支付宝红包（元）,集分宝（元）,支付宝优惠（元）,"
                 "商家优惠（元）,券核销金额（元）,券名称,商家红包消费金额（元）,卡消费金额（元）,"
                 "退款批次号/请求号,服务费（元）,分润（元）,备注")
ALIPAY_SAMPLE = "\r\n".join([
    "#支付宝业务明细查询",
    "#账号：[20880123456789010156]",
    "#起始日期：[2026年11月23日 00:00:00]   终止日期：[2026年11月24日 00:00:00]",
    "#-----------------------------------------业务明细列表----------------------------------------",
    ALIPAY_HEADER,
    # line 6: a payment of 1234.50 yuan, fee 7.41 (0.6 %)
    "2026112322001411111111111111\t,T-0001\t,交易\t,西湖门票,2026-11-23 09:15:02,2026-11-23 09:15:04,"
    "\t,\t,\t,\t,**明(138******01)\t,1234.50,1234.50,0.00,0.00,0.00,0.00,0.00,,0.00\t,0.00,\t,7.41,0.00,",
    # line 7: a payment of 0.07 yuan, no fee
    "2026112322001422222222222222\t,T-0002\t,交易\t,西湖门票,2026-11-23 10:00:00,2026-11-23 10:00:01,"
    "\t,\t,\t,\t,*华(186****22)\t,0.07,0.07,0.00,0.00,0.00,0.00,0.00,,0.00\t,0.00,\t,0.00,0.00,",
    # line 8: 100 yuan of T-0001 refunded (negative amounts), the fee of 0.60 returned
    "2026112322001411111111111111\t,T-0001\t,退款\t,西湖门票,2026-11-23 09:15:02,2026-11-23 16:30:00,"
    "\t,\t,\t,\t,**明(138******01)\t,-100,-100,0.00,0.00,0.00,0.00,0.00,,0.00\t,0.00,R-0001\t,-0.60,0.00,退票",
    "#-----------------------------------------业务明细列表结束------------------------------------",
    "#交易合计：2笔，商家实收共1234.57元，商家优惠共0.00元",          # line 10
    "#退款合计：1笔，商家实收退款共-100.00元，商家优惠退款共0.00元",   # line 11
    "#导出时间：[2026年11月24日 06:12:30]",
]) + "\r\n"
ALIPAY_T1, ALIPAY_T2 = "2026112322001411111111111111", "2026112322001422222222222222"
ALIPAY_LINES = (        # China time - 8 h; 1234.50 -> 123450 fen, 0.07 -> 7, -100 -> a refund of 10000
    StatementLine("payment", ALIPAY_T1, "T-0001", "", utc(2026, 11, 23, 1, 15, 4), 123450, 741),
    StatementLine("payment", ALIPAY_T2, "T-0002", "", utc(2026, 11, 23, 2, 0, 1), 7, 0),
    StatementLine("refund", ALIPAY_T1, "T-0001", "R-0001", utc(2026, 11, 23, 8, 30), 10000, -60),
)

# -- WeChat Pay 交易账单, ALL ---------------------------------------------------------------
WECHAT_HEADER = ("交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,"
                 "付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,"
                 "退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注")
WECHAT_SUMMARY = "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额"
WECHAT_SAMPLE = "\n".join([
    WECHAT_HEADER,
    # line 2: 100 yuan at 00:30 China time (the previous day in UTC), fee 0.60
    "`2026-11-23 00:30:00,`wx2421b1c4370ec43b,`1900000109,`0,`window-1,`4200001234202611230000000001,"
    "`T-0101,`oUpF8uMuAJO_M2pxb1Q9zNjWeS6o,`MICROPAY,`SUCCESS,`OTHERS,`CNY,`100.00,`0.00,`0,`0,`0.00,"
    "`0.00,`,`,`西湖门票,`,`0.60000,`0.60%,`100,`0.00,`",
    # line 3: 1234.50 yuan, fee 7.41
    "`2026-11-23 11:20:00,`wx2421b1c4370ec43b,`1900000109,`0,`window-1,`4200001234202611230000000002,"
    "`T-0102,`oUpF8uMuAJO_M2pxb1Q9zNjWeS6q,`MICROPAY,`SUCCESS,`CMB_CREDIT,`CNY,`1234.50,`0.00,`0,`0,"
    "`0.00,`0.00,`,`,`西湖门票,`,`7.41000,`0.60%,`1234.50,`0.00,`",
    # line 4: 50 yuan of T-0101 refunded, the fee of 0.30 returned
    "`2026-11-23 15:45:10,`wx2421b1c4370ec43b,`1900000109,`0,`window-1,`4200001234202611230000000001,"
    "`T-0101,`oUpF8uMuAJO_M2pxb1Q9zNjWeS6o,`MICROPAY,`REFUND,`OTHERS,`CNY,`0.00,`0.00,"
    "`50301234562026112300000001,`R-0101,`50.00,`0.00,`ORIGINAL,`SUCCESS,`西湖门票,`,`-0.30000,`0.60%,"
    "`0.00,`50.00,`",
    WECHAT_SUMMARY,                                                    # line 5
    "`3,`1334.50,`50.00,`0.00,`7.71000,`1334.50,`50.00",               # line 6
]) + "\n"
WECHAT_T1, WECHAT_T2 = "4200001234202611230000000001", "4200001234202611230000000002"
WECHAT_LINES = (        # 100 -> 10000 fen; 0.60000 -> 60; -0.30000 -> -30
    StatementLine("payment", WECHAT_T1, "T-0101", "", utc(2026, 11, 22, 16, 30), 10000, 60),
    StatementLine("payment", WECHAT_T2, "T-0102", "", utc(2026, 11, 23, 3, 20), 123450, 741),
    StatementLine("refund", WECHAT_T1, "T-0101", "R-0101", utc(2026, 11, 23, 7, 45, 10), 5000, -30),
)


# -- reading the published layouts ---------------------------------------------------------
def test_alipay_sample_reads_to_the_fen() -> None:
    s = parse_statement(ALIPAY_SAMPLE.encode("gbk"))       # Alipay's downloads are GBK
    assert s.provider == "alipay"
    assert s.day == DAY
    assert s.lines == ALIPAY_LINES
    assert (s.paid_fen, s.refunded_fen, s.fee_fen) == (123457, 10000, 681)


def test_wechat_sample_reads_to_the_fen() -> None:
    s = parse_statement(WECHAT_SAMPLE.encode("utf-8"))
    assert s.provider == "wechat"
    assert s.day == DAY                   # China-local day of the rows, not the UTC one
    assert s.lines == WECHAT_LINES
    assert (s.paid_fen, s.refunded_fen, s.fee_fen) == (133450, 5000, 771)


@pytest.mark.parametrize("sample", [ALIPAY_SAMPLE, WECHAT_SAMPLE], ids=["alipay", "wechat"])
@pytest.mark.parametrize("encode", [
    lambda t: t.encode("utf-8"),
    lambda t: b"\xef\xbb\xbf" + t.encode("utf-8"),
    lambda t: t.encode("gbk"),
    lambda t: t,
    lambda t: "\ufeff" + t,
], ids=["utf8", "utf8-bom", "gbk", "str", "str-bom"])
def test_encodings_accepted(sample: str, encode: Callable[[str], bytes | str]) -> None:
    expected = ALIPAY_LINES if sample is ALIPAY_SAMPLE else WECHAT_LINES
    assert parse_statement(encode(sample)).lines == expected


def test_line_ends_do_not_matter() -> None:
    assert parse_statement(ALIPAY_SAMPLE.replace("\r\n", "\n")).lines == ALIPAY_LINES
    assert parse_statement(WECHAT_SAMPLE.replace("\n", "\r\n")).lines == WECHAT_LINES


def test_alipay_day_given_must_match_the_bill() -> None:
    assert parse_statement(ALIPAY_SAMPLE, day=DAY).day == DAY
    with pytest.raises(StatementError, match="line 3:"):
        parse_statement(ALIPAY_SAMPLE, day=DAY + dt.timedelta(days=1))


def test_empty_wechat_bill_needs_its_day() -> None:
    empty = f"{WECHAT_HEADER}\n{WECHAT_SUMMARY}\n`0,`0.00,`0.00,`0.00,`0.00000,`0.00,`0.00\n"
    with pytest.raises(StatementError, match="day"):
        parse_statement(empty)
    assert parse_statement(empty, day=DAY) == Statement("wechat", DAY, ())


# -- refusing broken files -------------------------------------------------------------------
def _swap(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


ALIPAY_BROKEN = {
    "bad amount": (lambda t: _swap(t, ",0.07,0.07,", ",0.0x,0.07,"), 7, "订单金额"),
    "fraction of a fen": (lambda t: _swap(t, ",0.07,0.07,", ",0.075,0.07,"), 7, "fen"),
    "missing column": (lambda t: _swap(t, ",服务费（元）", ""), 5, "服务费"),
    "short row": (lambda t: _swap(t, ",-0.60,0.00,退票", ",-0.60,退票"), 8, "columns"),
    "unknown row kind": (lambda t: _swap(t, "T-0002\t,交易", "T-0002\t,冻结"), 7, "业务类型"),
    "row of another day": (lambda t: _swap(t, "2026-11-23 16:30:00", "2026-11-24 00:00:01"), 8, "day"),
    "positive refund": (lambda t: _swap(t, ",-100,-100,", ",100,100,"), 8, "negative"),
    "refund without its id": (lambda t: _swap(t, ",R-0001\t,", ",\t,"), 8, "退款批次号"),
    "payment count": (lambda t: _swap(t, "交易合计：2笔", "交易合计：3笔"), 10, "3"),
    "payment total": (lambda t: _swap(t, "实收共1234.57元", "实收共1234.58元"), 10, "1234.57"),
    "refund total": (lambda t: _swap(t, "退款共-100.00元", "退款共-10.00元"), 11, "-100.00"),
    "two-day bill": (lambda t: _swap(t, "终止日期：[2026年11月24日", "终止日期：[2026年11月25日"), 3, "one day"),
    "row among the summary": (lambda t: _swap(t, "#导出时间", "导出时间"), 12, "after the rows"),
}
WECHAT_BROKEN = {
    "bad amount": (lambda t: _swap(t, "`1234.50,`0.00,`0,", "`12.34.50,`0.00,`0,"), 3, "应结订单金额"),
    "bad fee": (lambda t: _swap(t, "`7.41000", "`7.41500"), 3, "fen"),
    "missing column": (lambda t: _swap(t, ",商户退款单号", ""), 1, "商户退款单号"),
    "extra column": (lambda t: _swap(t, "`0.60%,`100,", "`0.60%,`,`100,"), 2, "columns"),
    "bad time": (lambda t: _swap(t, "`2026-11-23 11:20:00", "`2026/11/23 11:20:00"), 3, "交易时间"),
    "revoked payment": (lambda t: _swap(t, "`MICROPAY,`SUCCESS,`CMB", "`MICROPAY,`REVOKED,`CMB"), 3, "REVOKED"),
    "rows of two days": (lambda t: _swap(t, "`2026-11-23 15:45:10", "`2026-11-24 15:45:10"), 4, "day"),
    "row count": (lambda t: _swap(t, "`3,`1334.50", "`4,`1334.50"), 6, "总交易单数"),
    "fee total": (lambda t: _swap(t, "`7.71000", "`7.72000"), 6, "手续费总金额"),
    "refund total": (lambda t: _swap(t, "`50.00,`0.00,`7.71000", "`5.00,`0.00,`7.71000"), 6, "退款总金额"),
    "line after the summary": (lambda t: t + "`1,`2\n", 7, "after the summary"),
}


@pytest.mark.parametrize("name", ALIPAY_BROKEN)
def test_broken_alipay_refused_naming_the_line(name: str) -> None:
    change, line, phrase = ALIPAY_BROKEN[name]
    with pytest.raises(StatementError, match=f"^line {line}: .*{phrase}") as e:
        parse_statement(change(ALIPAY_SAMPLE).encode("gbk"))
    assert e.value.line == line


@pytest.mark.parametrize("name", WECHAT_BROKEN)
def test_broken_wechat_refused_naming_the_line(name: str) -> None:
    change, line, phrase = WECHAT_BROKEN[name]
    with pytest.raises(StatementError, match=f"^line {line}: .*{phrase}") as e:
        parse_statement(change(WECHAT_SAMPLE).encode("utf-8"))
    assert e.value.line == line


@pytest.mark.parametrize("text, line", [
    ("date,amount\n2026-11-23,1.00\n", 1),
    ("\n\n#账户余额查询\n", 3),
    ("#支付宝账务明细查询\n#账号：[20880123456789010156]\n", 1),
], ids=["csv", "other-comment", "alipay-account-bill"])
def test_unknown_layout_refused(text: str, line: int) -> None:
    with pytest.raises(StatementError, match=f"^line {line}: ") as e:
        parse_statement(text.encode())
    assert e.value.line == line


def test_file_cut_short_refused() -> None:
    cut = ALIPAY_SAMPLE[:ALIPAY_SAMPLE.index("#-----------------------------------------业务明细列表结束")]
    with pytest.raises(StatementError, match="业务明细列表结束"):
        parse_statement(cut.encode("gbk"))
    no_summary = WECHAT_SAMPLE[:WECHAT_SAMPLE.index("总交易单数")]
    with pytest.raises(StatementError, match="summary"):
        parse_statement(no_summary.encode())
    with pytest.raises(StatementError, match="empty"):
        parse_statement(b"")


@settings(max_examples=300, deadline=None)
@given(sample=st.sampled_from([ALIPAY_SAMPLE, WECHAT_SAMPLE]), at=st.integers(0, 2000),
       cut=st.integers(0, 40), insert=st.text(max_size=5))
def test_damaged_file_read_or_refused(sample: str, at: int, cut: int, insert: str) -> None:
    """A damaged file (text cut out, something put in) is read or refused with a
    StatementError, never anything else."""
    at %= len(sample)
    try:
        parse_statement(sample[:at] + insert + sample[at + cut:])
    except StatementError:
        pass


def test_stray_carriage_return_refused() -> None:
    with pytest.raises(StatementError, match="^line 7: "):
        parse_statement(_swap(ALIPAY_SAMPLE, "T-0002\t,", "T-00\r02\t,"))


def test_bytes_neither_utf8_nor_gbk_refused() -> None:
    with pytest.raises(StatementError, match="^line 2: .*UTF-8"):
        parse_statement(b"date,amount\n2026-11-23,\xff\xff\n")


# -- writing ---------------------------------------------------------------------------------
def test_alipay_writer_writes_gbk_in_the_published_layout() -> None:
    out = write_statement("alipay", DAY, ALIPAY_LINES)
    text = out.decode("gbk")
    rows = text.split("\r\n")
    assert rows[0] == "#支付宝业务明细查询"
    assert rows[2] == "#起始日期：[2026年11月23日 00:00:00]   终止日期：[2026年11月24日 00:00:00]"
    assert rows[4] == ALIPAY_HEADER
    assert rows[5].startswith("2026112322001411111111111111\t,T-0001\t,交易\t,")
    assert ",1234.50,1234.50," in rows[5] and ",7.41," in rows[5]
    assert ",-100.00,-100.00," in rows[7] and ",R-0001\t,-0.60," in rows[7]
    assert "#交易合计：2笔，商家实收共1234.57元，商家优惠共0.00元" in rows
    assert "#退款合计：1笔，商家实收退款共-100.00元，商家优惠退款共0.00元" in rows


def test_wechat_writer_writes_utf8_bom_with_backticks() -> None:
    out = write_statement("wechat", DAY, WECHAT_LINES)
    assert out.startswith(b"\xef\xbb\xbf")
    rows = out.decode("utf-8-sig").splitlines()
    assert rows[0] == WECHAT_HEADER
    assert rows[4] == WECHAT_SUMMARY
    for row in rows[1:4] + rows[5:]:
        assert all(cell.startswith("`") for cell in row.split(","))
    assert rows[1].startswith("`2026-11-23 00:30:00,")
    cells = rows[3].split(",")
    # 交易状态, 商户退款单号, 退款金额, 手续费 (five decimals, negative: returned)
    assert (cells[9], cells[15], cells[16], cells[22]) == ("`REFUND", "`R-0101", "`50.00", "`-0.30000")
    assert rows[5].split(",")[:2] == ["`3", "`1334.50"]


@pytest.mark.parametrize("provider, lines", [("alipay", ALIPAY_LINES), ("wechat", WECHAT_LINES)])
def test_round_trip(provider: str, lines: tuple[StatementLine, ...]) -> None:
    assert parse_statement(write_statement(provider, DAY, lines)) == Statement(provider, DAY, lines)


def test_round_trip_empty() -> None:
    assert parse_statement(write_statement("alipay", DAY, [])) == Statement("alipay", DAY, ())
    assert parse_statement(write_statement("wechat", DAY, []), day=DAY) == Statement("wechat", DAY, ())


_ids = st.text("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789-_", min_size=1, max_size=32)


@st.composite
def _lines(draw: st.DrawFn) -> list[StatementLine]:
    start = dt.datetime(2026, 11, 23, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    out = []
    for _ in range(draw(st.integers(0, 6))):
        refund = draw(st.booleans())
        at = start + dt.timedelta(seconds=draw(st.integers(0, 86399)))
        trade_no = draw(st.text("0123456789", min_size=28, max_size=28))
        out.append(StatementLine("refund" if refund else "payment", trade_no, draw(_ids),
                                 draw(_ids) if refund else "", at,
                                 draw(st.integers(1, 10**9)), draw(st.integers(-10**7, 10**7))))
    return out


@settings(max_examples=60, deadline=None)
@given(provider=st.sampled_from(["alipay", "wechat"]), lines=_lines())
def test_round_trip_any_lines(provider: str, lines: list[StatementLine]) -> None:
    s = parse_statement(write_statement(provider, DAY, lines), day=DAY)
    assert (s.provider, s.day, s.lines) == (provider, DAY, tuple(lines))


def test_writer_refuses_what_it_cannot_write() -> None:
    # 2026-11-23 16:00 UTC is the 24th in China
    other_day = StatementLine("payment", "2026112422001400000000000001", "T-9", "", utc(2026, 11, 23, 16),
                              100, 1)
    with pytest.raises(ValueError, match="not on"):
        write_statement("alipay", DAY, [other_day])
    comma = StatementLine("payment", "2026112322001400000000000001", "T,9", "", utc(2026, 11, 23, 1), 100, 1)
    with pytest.raises(ValueError, match="cannot be written"):
        write_statement("wechat", DAY, [comma])
    with pytest.raises(ValueError, match="provider"):
        write_statement("unionpay", DAY, [])


def test_statement_line_checks_itself() -> None:
    at = utc(2026, 11, 23, 1)
    with pytest.raises(ValueError):
        StatementLine("payment", "1", "T-1", "", at, 0, 0)                  # nothing paid
    with pytest.raises(ValueError):
        StatementLine("refund", "1", "T-1", "", at, 100, -1)                # a refund without its id
    with pytest.raises(ValueError):
        StatementLine("payment", "1", "T-1", "", at.replace(tzinfo=None), 100, 1)
    china = dt.datetime(2026, 11, 23, 9, 0, 0, 500, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    assert StatementLine("payment", "1", "T-1", "", china, 100, 1).at == utc(2026, 11, 23, 1)


# -- the sandbox adapter's bill ----------------------------------------------------------------
class Clock:
    """A clock the test sets by hand (UTC)."""

    def __init__(self, at: dt.datetime):
        self.at = at

    def __call__(self) -> dt.datetime:
        return self.at


ALIPAY_CODE = "28" + "1234567890123456"
WECHAT_CODE = "13" + "1234567890123456"


@pytest.fixture
def day_of_sales() -> SandboxPaymentAdapter:
    """A till's adapter through three China-local days around 2026-11-23."""
    clock = Clock(utc(2026, 11, 22, 15, 59, 59))                  # 22nd 23:59:59 China time
    a = SandboxPaymentAdapter(seed=1, clock=clock)
    a.charge("alipay", 2000, order_id="A-before", auth_code=ALIPAY_CODE)
    clock.at = utc(2026, 11, 22, 16, 0, 0)                        # 23rd 00:00:00 China time
    a.charge("alipay", 12345, order_id="A-1", auth_code=ALIPAY_CODE)
    clock.at = utc(2026, 11, 23, 2, 0, 0)
    a.charge("wechat", 100, order_id="W-1", auth_code=WECHAT_CODE)
    a.charge("cash", 5000, order_id="C-1", tendered_fen=10000)
    a.charge("card", 7000, order_id="K-1")
    a.charge("alipay", 750, order_id="A-2", auth_code=ALIPAY_CODE)
    a.charge("alipay", 0, order_id="A-free", auth_code=ALIPAY_CODE)   # nothing moves
    clock.at = utc(2026, 11, 23, 3, 0, 0)
    a.refund(a.charges["A-1"], 5000, refund_id="R-1")
    a.refund(a.charges["A-before"], 2000, refund_id="R-before")       # yesterday's sale, today's refund
    a.refund(a.charges["C-1"], 5000, refund_id="R-cash")
    a.refund(a.charges["W-1"], 50, refund_id="R-w")
    clock.at = utc(2026, 11, 23, 5, 0, 0)
    a.charge("alipay", 12345, order_id="A-1", auth_code=ALIPAY_CODE)  # a retry: the same payment
    a.refund(a.charges["A-1"], 5000, refund_id="R-1")                 # a retry: the same refund
    clock.at = utc(2026, 11, 23, 16, 0, 0)                        # 24th 00:00:00 China time
    a.charge("alipay", 3000, order_id="A-after", auth_code=ALIPAY_CODE)
    a.refund(a.charges["A-1"], 100, refund_id="R-after")
    return a


def test_sandbox_records_when_money_moved(day_of_sales: SandboxPaymentAdapter) -> None:
    times = day_of_sales.times
    assert times["charge:A-1"] == utc(2026, 11, 22, 16)          # the first time, not the retry's
    assert times["refund:R-1"] == utc(2026, 11, 23, 3)
    assert times["charge:C-1"] == utc(2026, 11, 23, 2)
    assert set(times) == ({"charge:" + o for o in day_of_sales.charges}
                          | {"refund:" + r for r in day_of_sales.refunds})


def test_sandbox_alipay_bill_lists_the_days_alipay_money(day_of_sales: SandboxPaymentAdapter) -> None:
    a = day_of_sales
    s = parse_statement(a.statement("alipay", DAY))
    ref = {o: p.reference for o, p in a.charges.items()}
    assert s.provider == "alipay" and s.day == DAY
    assert s.lines == (
        StatementLine("payment", ref["A-1"], "A-1", "", utc(2026, 11, 22, 16), 12345, 74),     # 74.07 fen
        StatementLine("payment", ref["A-2"], "A-2", "", utc(2026, 11, 23, 2), 750, 5),         # 4.5 fen: up
        StatementLine("refund", ref["A-1"], "A-1", "R-1", utc(2026, 11, 23, 3), 5000, -30),
        StatementLine("refund", ref["A-before"], "A-before", "R-before", utc(2026, 11, 23, 3), 2000, -12),
    )
    assert (s.paid_fen, s.refunded_fen, s.fee_fen) == (13095, 7000, 37)


def test_sandbox_wechat_bill_lists_the_days_wechat_money(day_of_sales: SandboxPaymentAdapter) -> None:
    a = day_of_sales
    s = parse_statement(a.statement("wechat", DAY))
    w = a.charges["W-1"].reference
    assert s.provider == "wechat" and s.day == DAY
    assert s.lines == (
        StatementLine("payment", w, "W-1", "", utc(2026, 11, 23, 2), 100, 1),          # 0.6 fen: up
        StatementLine("refund", w, "W-1", "R-w", utc(2026, 11, 23, 3), 50, 0),         # 0.3 fen: down
    )


def test_sandbox_bills_of_the_days_around(day_of_sales: SandboxPaymentAdapter) -> None:
    a = day_of_sales
    before = parse_statement(a.statement("alipay", DAY - dt.timedelta(days=1)))
    assert [(ln.kind, ln.order_id) for ln in before.lines] == [("payment", "A-before")]
    after = parse_statement(a.statement("alipay", DAY + dt.timedelta(days=1)))
    assert [(ln.kind, ln.order_id, ln.refund_id) for ln in after.lines] == [
        ("payment", "A-after", ""), ("refund", "A-1", "R-after")]
    next_day = DAY + dt.timedelta(days=1)
    assert parse_statement(a.statement("wechat", next_day), day=next_day).lines == ()


def test_sandbox_statement_is_the_adapters(day_of_sales: SandboxPaymentAdapter) -> None:
    assert sandbox_statement(day_of_sales, "wechat", DAY) == day_of_sales.statement("wechat", DAY)
    with pytest.raises(ValueError, match="provider"):
        day_of_sales.statement("cash", DAY)
