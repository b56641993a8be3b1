"""Micro benches (pytest-benchmark): codec, one scan, batch scan, quote, hold, confirm, commit.

Every bench times ONE operation per round (iterations=1) so that its p99 is the p99 of
single operations, not of averages; the harness itself costs what `test_floor` shows.
Batch benches time one batch per round; `extra_info["ops"]` is the batch size, and
bench/run.py reports them per id. Every bench asserts its answers: a fast wrong answer
is a failure. The finance report benches read a month of sales of their own
(bench/reports.py: 10 million tickets, built once per run).

    python -m pytest bench/test_micro.py --benchmark-json=/tmp/micro.json
"""
from __future__ import annotations

import array
import itertools

import pytest

from bench import (DAY, PLAZA_IN, PLAZA_PRODUCT, PLAZA_SLOT, SCAN_AT, VENUE, issue_bulk,
                   render_codes)
from bench.conftest import scaled
from turnstile.engine import _core, cmd
from turnstile.engine.model import HoldResult, Reason, ScanResult
from turnstile.engine.state import Batch, ConfirmResult

OK = int(Reason.OK)
ALREADY_USED = int(Reason.ALREADY_USED)
FORGED = int(Reason.FORGED)
IN = 1


def _gate(shard) -> int:
    return shard.state.gate_idx[PLAZA_IN]


def _pedantic(benchmark, fn, rounds, *, ops=1, setup=None, what=""):
    benchmark.extra_info["ops"] = ops
    benchmark.extra_info["what"] = what
    benchmark.pedantic(fn, setup=setup, rounds=rounds, warmup_rounds=0, iterations=1)
    # how many calls were made: `rounds`, or 1 under --benchmark-disable (a correctness run)
    return 1 if getattr(benchmark, "disabled", False) else rounds


def test_issue_bulk_replays():
    """Not a bench: the fast set-up the benches use (bench.issue_bulk) leaves a shard
    whose journal replays to the same state and whose invariants hold."""
    from bench import TempDir, open_bench_shard
    with TempDir() as path:
        s = open_bench_shard(path, durable=False)
        first = issue_bulk(s, 1_000_500)               # two holds: 100 x 10,000 + 500
        assert s.state.tickets.n == first + 1_000_500
        slot = s.state.slots.slot(s.state.slot_idx[PLAZA_SLOT])
        assert slot["sold"] == 1_000_500 and slot["held"] == 0
        assert s.check(replay=True) == []
        s.close(snapshot=False)
        again = type(s).open(path, durable=False)
        assert again.state.tickets.n == first + 1_000_500 and again.check() == []
        again.close(snapshot=False)


def test_floor(benchmark):
    """What the harness itself costs per round: two timer reads and one call."""
    def nothing():
        return None
    _pedantic(benchmark, nothing, scaled(20_000, 2_000), what="empty call (harness floor)")


# -- codec ------------------------------------------------------------------------------
@pytest.mark.parametrize("signed", [True, False], ids=["signed", "mac-only"])
def test_decode(benchmark, shard, signed):
    """Decode + authenticate (SipHash MAC) one code: Codec.decode (fields as a dict)."""
    first = issue_bulk(shard, 1000)
    codes = render_codes(shard, first, 1000, signed=signed)
    nxt = itertools.cycle(codes).__next__
    decode = shard.state.codec.core.decode
    out = []
    push = out.append

    def one():
        push(decode(nxt()))

    rounds = scaled(20_000, 2_000)
    rounds = _pedantic(benchmark, one, rounds, what=f"Codec.decode, {len(codes[0])}-char code")
    assert len(out) == rounds
    for i, (status, f) in enumerate(out):
        assert status == _core.DEC_OK and f["ticket_id"] == first + i % 1000 and f["shard"] == 0


def test_parse(benchmark, shard):
    """TicketCodec.parse: the Python face of the decoder (fields as a CodeFields)."""
    first = issue_bulk(shard, 1000)
    codes = render_codes(shard, first, 1000, signed=True)
    nxt = itertools.cycle(codes).__next__
    parse = shard.state.codec.parse
    out = []
    push = out.append

    def one():
        push(parse(nxt()))

    rounds = scaled(20_000, 2_000)
    rounds = _pedantic(benchmark, one, rounds, what="TicketCodec.parse, signed code")
    assert all(st == _core.DEC_OK and f.ticket_id == first + i % 1000 for i, (st, f) in enumerate(out))


def test_decode_ids(benchmark, shard):
    """Decode + authenticate 10,000 signed codes in one call (the batch verify's first half)."""
    n = 10_000
    first = issue_bulk(shard, n)
    codes = render_codes(shard, first, n, signed=True)
    decode_ids = shard.state.codec.core.decode_ids
    out = []

    def one():
        out.append(decode_ids(codes, 0))

    rounds = _pedantic(benchmark, one, scaled(50, 5), ops=n, what="Codec.decode_ids, 10,000 signed codes")
    want = array.array("q", range(first, first + n))
    assert len(out) == rounds and all(ids == want for ids in out)


# -- one scan ---------------------------------------------------------------------------
@pytest.mark.parametrize("signed", [True, False], ids=["signed", "mac-only"])
def test_verify_admit(benchmark, shard, signed):
    """Decode + authenticate + decide one entry of a FRESH ticket (admitted): Tickets.verify."""
    rounds = scaled(20_000, 2_000)
    first = issue_bulk(shard, rounds)
    codes = render_codes(shard, first, rounds, signed=signed)
    nxt = iter(codes).__next__
    st = shard.state
    verify, core, g = st.tickets.verify, st.codec.core, _gate(shard)
    used_before = len(st.tickets.used)
    out = []
    push = out.append

    def one():
        push(verify(core, nxt(), 0, g, IN, SCAN_AT, 0))

    rounds = _pedantic(benchmark, one, rounds, what="Tickets.verify, fresh ticket -> OK")
    assert out == [(OK, first + i, 1) for i in range(rounds)]
    assert len(st.tickets.used) == used_before + rounds


def test_verify_refuse_used(benchmark, shard):
    """The same for a ticket already inside: refused ALREADY_USED (anti-passback)."""
    n = 2000
    first = issue_bulk(shard, n)
    codes = render_codes(shard, first, n, signed=True)
    st = shard.state
    reasons, _ = st.tickets.scan_batch(array.array("q", range(first, first + n)), _gate(shard),
                                       IN, SCAN_AT, 0)
    assert reasons == bytes(n)
    nxt = itertools.cycle(codes).__next__
    verify, core, g = st.tickets.verify, st.codec.core, _gate(shard)
    out = []
    push = out.append

    def one():
        push(verify(core, nxt(), 0, g, IN, SCAN_AT, 0))

    rounds = scaled(20_000, 2_000)
    rounds = _pedantic(benchmark, one, rounds, what="Tickets.verify, used ticket -> ALREADY_USED")
    assert out == [(ALREADY_USED, first + i % n, 0) for i in range(rounds)]


def test_verify_refuse_forged(benchmark, shard):
    """A code with one character changed: refused FORGED before any state is read."""
    n = 1000
    first = issue_bulk(shard, n)
    forged = []
    for c in render_codes(shard, first, n, signed=True):
        k = 60                                  # inside the signature: still valid base32
        forged.append(c[:k] + ("A" if c[k] != "A" else "B") + c[k + 1:])
    nxt = itertools.cycle(forged).__next__
    st = shard.state
    verify, core, g = st.tickets.verify, st.codec.core, _gate(shard)
    out = []
    push = out.append

    def one():
        push(verify(core, nxt(), 0, g, IN, SCAN_AT, 0))

    rounds = scaled(20_000, 2_000)
    rounds = _pedantic(benchmark, one, rounds, what="Tickets.verify, tampered code -> FORGED")
    assert out == [(FORGED, -1, 0)] * rounds
    assert not any(st.tickets.code_state(first + i) & _core.STATE_USED for i in range(n))


def test_apply_verify(benchmark, shard):
    """One verify COMMAND applied by the state machine (ShardState.apply): gate lookup,
    decode, decide, journal record, ScanResult -- the writer's CPU per scan, before commit."""
    rounds = scaled(20_000, 2_000)
    first = issue_bulk(shard, rounds)
    cmds = [cmd.verify(c, PLAZA_IN, at=SCAN_AT) for c in render_codes(shard, first, rounds)]
    nxt = iter(cmds).__next__
    st = shard.state
    batch = Batch(shard.seq + 1)
    apply = st.apply
    out = []
    push = out.append

    def one():
        push(apply(nxt(), SCAN_AT, batch))

    rounds = _pedantic(benchmark, one, rounds, what="ShardState.apply(cmd.verify), fresh -> OK")
    assert out == [ScanResult(Reason.OK, first + i, 1) for i in range(rounds)]
    shard.seq += 1                      # journal what was applied, as the writer would
    shard._commit(batch)


# -- batch scans ------------------------------------------------------------------------
@pytest.mark.parametrize("size", [100, 10_000])
def test_scan_batch(benchmark, shard, size):
    """Decide a batch of FRESH tickets by id (Tickets.scan_batch): all admitted."""
    rounds = scaled(2000, 200) if size <= 100 else scaled(200, 20)
    first = issue_bulk(shard, rounds * size)
    batches = iter([array.array("q", range(first + k * size, first + (k + 1) * size))
                    for k in range(rounds)])
    st = shard.state
    scan_batch, g = st.tickets.scan_batch, _gate(shard)
    out = []

    def setup():
        return (next(batches),), {}

    def one(ids):
        out.append(scan_batch(ids, g, IN, SCAN_AT, 0))

    rounds = _pedantic(benchmark, one, rounds, ops=size, setup=setup,
              what=f"Tickets.scan_batch, {size:,} fresh ids -> OK")
    ones = array.array("i", [1]) * size
    assert len(out) == rounds
    assert all(reasons == bytes(size) and admitted == ones for reasons, admitted in out)
    # a second pass over the same tickets refuses every one of them
    again, admitted = scan_batch(array.array("q", range(first, first + size)), g, IN, SCAN_AT, 0)
    assert again == bytes([ALREADY_USED]) * size and admitted == array.array("i", bytes(4 * size))


def test_scan_batch_refuse(benchmark, shard):
    """A batch of 10,000 tickets already inside: all refused ALREADY_USED."""
    size = 10_000
    first = issue_bulk(shard, size)
    ids = array.array("q", range(first, first + size))
    st = shard.state
    scan_batch, g = st.tickets.scan_batch, _gate(shard)
    assert scan_batch(ids, g, IN, SCAN_AT, 0)[0] == bytes(size)
    out = []

    def one():
        out.append(scan_batch(ids, g, IN, SCAN_AT, 0)[0])

    rounds = _pedantic(benchmark, one, scaled(200, 20), ops=size,
              what="Tickets.scan_batch, 10,000 used ids -> ALREADY_USED")
    assert len(out) == rounds and all(r == bytes([ALREADY_USED]) * size for r in out)


# -- sales ------------------------------------------------------------------------------
def test_apply_hold(benchmark, shard):
    """One hold of 1 ticket applied by the state machine (validation, stock, journal)."""
    rounds = scaled(10_000, 1_000)
    hold = cmd.hold("web", VENUE, [{"product": PLAZA_PRODUCT, "slots": [PLAZA_SLOT], "qty": 1}])
    st = shard.state
    held_before = st.slots.slot(st.slot_idx[PLAZA_SLOT])["held"]
    batch = Batch(shard.seq + 1)
    apply = st.apply
    now = int(shard.clock())
    out = []
    push = out.append

    def one():
        push(apply(hold, now, batch))

    rounds = _pedantic(benchmark, one, rounds, what="ShardState.apply(cmd.hold), 1 ticket")
    assert all(isinstance(h, HoldResult) for h in out)
    assert len({h.hold_id for h in out}) == rounds
    assert st.slots.slot(st.slot_idx[PLAZA_SLOT])["held"] == held_before + rounds
    for h in out:                       # give the stock back so the shard stays tidy
        st.apply(cmd.release(h.hold_id, "web"), now, batch)
    shard.seq += 1
    shard._commit(batch)


def _priced(shard, *more) -> None:
    """Every pricing rule of issue 13 in force on the plaza ticket: the slot's day a holiday
    in the calendar, a price table by date type and channel, early-bird (checked, not met:
    the slot is today), time-of-day (met) and fill-rate (checked, not met: the slot holds
    10^9) rules, a booking window that is open; the web channel pays PRICED_FEN."""
    refused = [r for r in shard.run_many([
        cmd.calendar(VENUE, {DAY: "holiday"}),
        cmd.prices(VENUE, PLAZA_PRODUCT, [{"date_type": "holiday", "channel": "web", "price_fen": 12000},
                                          {"date_type": "holiday", "channel": "", "price_fen": 11000}]),
        cmd.price_rules(VENUE, PLAZA_PRODUCT, [
            {"kind": "early_bird", "days_ahead": 1, "pct": -10},
            {"kind": "time_of_day", "from_minute": 0, "amount_fen": -500},
            {"kind": "fill_rate", "fill_pct": 1, "pct": 5, "cap_fen": 300}]),
        cmd.booking(VENUE, PLAZA_PRODUCT, opens_days=3660, closes_minutes=-1440,
                    weekdays=[1, 2, 3, 4, 5, 6, 7]), *more]) if isinstance(r, Exception)]
    assert not refused, refused


def _unpriced(shard, *more) -> None:
    """Back to the plaza ticket's flat price, so the benches after see the shard as before."""
    shard.run_many([cmd.calendar(VENUE, {DAY: ""}), cmd.prices(VENUE, PLAZA_PRODUCT, []),
                    cmd.price_rules(VENUE, PLAZA_PRODUCT, []), cmd.booking(VENUE, PLAZA_PRODUCT), *more])


PRICED_FEN = 12000 - 500
ONE = [{"product": PLAZA_PRODUCT, "slots": [PLAZA_SLOT], "qty": 1}]


def test_quote_priced(benchmark, shard):
    """Shard.quote of 1 ticket with every pricing rule in force (`_priced`): the lines
    priced and explained as a hold would price them, and the quote id (a MAC over them);
    no stock taken."""
    rounds = scaled(10_000, 1_000)
    _priced(shard)
    st = shard.state
    held_before = st.slots.slot(st.slot_idx[PLAZA_SLOT])["held"]
    quote = shard.quote
    out = []
    push = out.append

    def one():
        push(quote(VENUE, "web", ONE))

    try:
        rounds = _pedantic(benchmark, one, rounds,
                           what="Shard.quote, 1 ticket, priced by calendar, table and 3 rules")
        assert len(out) == rounds
        assert all(q.amount_fen == PRICED_FEN and q.quote_id and q.lines[0].date_type == "holiday"
                   and [r.rule for r in q.lines[0].rules] == ["time_of_day"] for q in out)
        assert st.slots.slot(st.slot_idx[PLAZA_SLOT])["held"] == held_before
    finally:
        _unpriced(shard)


def test_apply_hold_priced(benchmark, shard):
    """test_apply_hold with every pricing rule of issue 13 in force (`_priced`)."""
    rounds = scaled(10_000, 1_000)
    _priced(shard)
    hold = cmd.hold("web", VENUE, ONE)
    st = shard.state
    batch = Batch(shard.seq + 1)
    apply = st.apply
    now = int(shard.clock())
    out = []
    push = out.append

    def one():
        push(apply(hold, now, batch))

    try:
        rounds = _pedantic(benchmark, one, rounds,
                           what="ShardState.apply(cmd.hold), 1 ticket, priced by calendar, table and 3 rules")
        q = shard.quote(VENUE, "web", [{"product": PLAZA_PRODUCT, "slots": [PLAZA_SLOT], "qty": 1}])
        assert [r.rule for r in q.lines[0].rules] == ["time_of_day"]   # the slot is far from 1 % full
        assert all(h.amount_fen == q.amount_fen != 12000 for h in out)
        for h in out:
            st.apply(cmd.release(h.hold_id, "web"), now, batch)
        shard.seq += 1
        shard._commit(batch)
    finally:
        _unpriced(shard)


def test_apply_hold_coupon(benchmark, shard):
    """test_apply_hold_priced taking a public fixed coupon too (1,000 fen off, a budget
    it never reaches): the coupon checked against the order and taken, its discount
    split over the lines, carried by the HOLD record."""
    rounds = scaled(10_000, 1_000)
    code = "BENCH10"
    _priced(shard, cmd.coupon(VENUE, code, "fixed", amount_fen=1000, products=[PLAZA_PRODUCT],
                              budget_fen=10**10))
    hold = cmd.hold("web", VENUE, ONE, coupon=code)
    st = shard.state
    held_before = st.slots.slot(st.slot_idx[PLAZA_SLOT])["held"]
    before = shard.coupon(VENUE, code)
    batch = Batch(shard.seq + 1)
    apply = st.apply
    now = int(shard.clock())
    out = []
    push = out.append

    def one():
        push(apply(hold, now, batch))

    try:
        rounds = _pedantic(benchmark, one, rounds,
                           what="ShardState.apply(cmd.hold), 1 ticket, priced by calendar, table "
                                "and 3 rules, a fixed coupon")
        q = shard.quote(VENUE, "web", ONE, coupon=code)
        assert q.amount_fen == PRICED_FEN - 1000 and q.coupon.discount_fen == 1000
        assert all(isinstance(h, HoldResult) and h.amount_fen == q.amount_fen
                   and h.discount_fen == 1000 and h.coupon == code for h in out)
        assert len({h.hold_id for h in out}) == rounds
        assert st.slots.slot(st.slot_idx[PLAZA_SLOT])["held"] == held_before + rounds
        used = shard.coupon(VENUE, code)
        assert (used.uses - before.uses, used.spent_fen - before.spent_fen) == (rounds, 1000 * rounds)
        for h in out:                   # a released hold gives its coupon use back
            st.apply(cmd.release(h.hold_id, "web"), now, batch)
        after = shard.coupon(VENUE, code)
        assert (after.uses, after.spent_fen) == (before.uses, before.spent_fen)
        shard.seq += 1
        shard._commit(batch)
    finally:
        _unpriced(shard, cmd.coupon(VENUE, code, "fixed", amount_fen=1000, active=False))


def test_stage_hold_idempotent_audited(benchmark, shard):
    """One hold as the server submits it: with an idempotency key and an audit tuple,
    staged by the writer (idempotency fingerprint and row, hold, audit record)."""
    rounds = scaled(10_000, 1_000)
    audit = ("demo-ota", "/turnstile.v1.SalesService/Hold", "ab" * 32)
    holds = []
    for i in range(rounds + 50):                 # pytest-benchmark's warm-up takes a few
        c = cmd.hold("web", VENUE, [{"product": PLAZA_PRODUCT, "slots": [PLAZA_SLOT], "qty": 1}],
                     idempotency_key=f"bench-idem-{i}")
        c.audit = audit
        holds.append(c)
    nxt = iter(holds)
    st = shard.state
    held_before = st.slots.slot(st.slot_idx[PLAZA_SLOT])["held"]
    stage, batch = shard._stage, None
    out = []
    push = out.append

    def one():
        nonlocal batch
        b, r = stage([next(nxt)], batch)
        batch = b
        push(r[0])

    rounds = _pedantic(benchmark, one, rounds,
                       what="Shard._stage(cmd.hold) with idempotency key + audit, 1 ticket")
    assert all(isinstance(h, HoldResult) for h in out)
    assert len({h.hold_id for h in out}) == len(out)
    assert st.slots.slot(st.slot_idx[PLAZA_SLOT])["held"] == held_before + len(out)
    assert len([k for k in batch.rows if k.startswith(b"audit/")]) == len(out)
    shard._seal(batch)
    shard._commit(batch)
    shard._committed(batch)
    for h in out:                       # give the stock back so the shard stays tidy
        shard.run(cmd.release(h.hold_id, "web"))


def test_apply_confirm(benchmark, shard):
    """Confirm (pay) a 1-ticket hold: ticket issued, signed code rendered, order rows."""
    rounds = scaled(2_000, 200)
    st = shard.state
    now = int(shard.clock())
    prep = Batch(shard.seq + 1)
    holds = [st.apply(cmd.hold("web", VENUE, [{"product": PLAZA_PRODUCT, "slots": [PLAZA_SLOT],
                                                "qty": 1}]), now, prep) for _ in range(rounds)]
    shard.seq += 1
    shard._commit(prep)
    shard._committed(prep)
    cmds = iter([cmd.confirm(h.hold_id, f"bench-confirm-{h.hold_id}", "web", method="alipay",
                             amount_fen=h.amount_fen) for h in holds])
    batch = Batch(shard.seq + 1)
    apply = st.apply
    out = []

    def setup():
        return (next(cmds),), {}

    def one(c):
        out.append(apply(c, now, batch))

    rounds = _pedantic(benchmark, one, rounds, setup=setup, what="ShardState.apply(cmd.confirm), 1 signed ticket")
    assert all(isinstance(r, ConfirmResult) and len(r.tickets) == 1 and r.tickets[0].code
               for r in out)
    assert len({r.tickets[0].ticket_id for r in out}) == rounds
    shard.seq += 1
    shard._commit(batch)
    shard._committed(batch)


_phones = itertools.count(13800000000)


def _member(shard, points: int = 0) -> str:
    """A new member of the bench venue with `points`, its programme earning 1 point a yuan."""
    st = shard.state
    now = int(shard.clock())
    batch = Batch(shard.seq + 1)
    st.apply(cmd.member_program(VENUE, earn=[{"points_per_yuan": 1}]), now, batch)
    m = st.apply(cmd.enrol(VENUE, phone=str(next(_phones))), now, batch).member_id
    if points:
        st.apply(cmd.adjust_points(VENUE, m, points, "bench"), now, batch)
    shard.seq += 1
    shard._commit(batch)
    shard._committed(batch)
    return m


def test_apply_hold_points(benchmark, shard):
    """test_apply_hold by a member paying 10 points: the member's level for the pricing
    rules, the points split over the ticket and taken (ledger row, POINTS record)."""
    rounds = scaled(10_000, 1_000)
    m = _member(shard, 10 * (rounds + 100))
    hold = cmd.hold("web", VENUE, ONE, member=m, points=10)
    st = shard.state
    batch = Batch(shard.seq + 1)
    apply = st.apply
    now = int(shard.clock())
    out = []
    push = out.append

    def one():
        push(apply(hold, now, batch))

    rounds = _pedantic(benchmark, one, rounds, what="ShardState.apply(cmd.hold), 1 ticket, a member "
                                                    "paying 10 points")
    plain = shard.quote(VENUE, "web", ONE).amount_fen
    assert all(isinstance(h, HoldResult) and h.points == 10 and h.amount_fen == plain - 10 for h in out)
    assert shard.member(VENUE, member_id=m).balance == 10 * (rounds + 100) - 10 * rounds
    for h in out:                       # the stock and the points back
        st.apply(cmd.release(h.hold_id, "web"), now, batch)
    assert shard.member(VENUE, member_id=m).balance == 10 * (rounds + 100)
    shard.seq += 1
    shard._commit(batch)


def test_apply_confirm_member(benchmark, shard):
    """test_apply_confirm sold to a member: the points earned per ticket, the member's
    spend, the ledger row, carried by the CONFIRM record."""
    rounds = scaled(2_000, 200)
    m = _member(shard)
    st = shard.state
    now = int(shard.clock())
    prep = Batch(shard.seq + 1)
    holds = [st.apply(cmd.hold("web", VENUE, ONE), now, prep) for _ in range(rounds)]
    shard.seq += 1
    shard._commit(prep)
    shard._committed(prep)
    cmds = iter([cmd.confirm(h.hold_id, f"bench-member-{h.hold_id}", "web", method="alipay",
                             amount_fen=h.amount_fen, member=m) for h in holds])
    batch = Batch(shard.seq + 1)
    apply = st.apply
    out = []

    def setup():
        return (next(cmds),), {}

    def one(c):
        out.append(apply(c, now, batch))

    rounds = _pedantic(benchmark, one, rounds, setup=setup,
                       what="ShardState.apply(cmd.confirm), 1 signed ticket, sold to a member")
    each = holds[0].amount_fen // 100
    assert all(isinstance(r, ConfirmResult) and r.order.member == m and r.order.points_earned == each
               for r in out)
    assert shard.member(VENUE, member_id=m).balance == each * rounds
    shard.seq += 1
    shard._commit(batch)
    shard._committed(batch)


# -- the disk ---------------------------------------------------------------------------
def test_commit_durable(benchmark, shard):
    """One durable LMDB commit (fsync) of a 64-scan journal batch: what group commit pays
    once per batch. Timed on its own durable shard in a temp dir."""
    from bench import TempDir
    from turnstile.engine.journal import scan_record
    from turnstile.engine.storage import Storage

    blob = b"".join(scan_record(k, 0, IN, 0, SCAN_AT, OK) for k in range(64))
    rounds = scaled(300, 30)
    with TempDir() as path:
        storage = Storage(path, map_size=1 << 30, durable=True)
        seq = itertools.count(1).__next__
        commit = storage.commit

        def one():
            commit(seq(), blob, {})

        rounds = _pedantic(benchmark, one, rounds, what="Storage.commit, 64 scan records, fsync'd")
        assert storage.journal_count() == rounds
        storage.close()


# -- finance reports (issue 14) -----------------------------------------------------------
BY = ("channel", "product", "method")


@pytest.fixture(scope="module")
def month():
    """A month of sales in its own shard (bench.reports): 10,000,000 tickets sold through
    hold + confirm, 1,000,000 of them on one day (--quick: a tenth). Built once for the
    report benches; its build time goes with their results."""
    from bench import TempDir
    from bench.reports import build
    with TempDir() as path:
        m = build(path, scaled(10_000_000, 1_000_000), scaled(1_000_000, 100_000))
        print(f"\nbench.reports: {m.tickets:,} tickets ({m.day_tickets:,} on the big day) "
              f"built in {m.build_s:.1f} s")
        yield m
        m.close()


def _month_info(benchmark, m) -> None:
    benchmark.extra_info.update(tickets=m.tickets, day_tickets=m.day_tickets,
                                build_s=round(m.build_s, 1))


def test_report_revenue_day(benchmark, month):
    """Shard.revenue of the big day cut by channel, product and method: the day's ledger
    rows added up, whatever number of tickets the day sold."""
    from bench.reports import BIG_DAY
    day, revenue = month.big_day, month.shard.revenue
    out = []
    push = out.append

    def one():
        push(revenue(VENUE, day, day, "day", BY))

    _month_info(benchmark, month)
    rounds = _pedantic(benchmark, one, scaled(2_000, 200),
                       what=f"Shard.revenue of a day by channel, product and method: "
                            f"{month.day_tickets:,} tickets sold that day")
    assert len(out) == rounds and all(r == out[0] for r in out)
    rows, total = out[0]
    assert [per for per, _, _ in rows] == [BIG_DAY.isoformat()] * len(rows)
    assert {tuple(cut.values()): v for _, cut, v in rows} == month.expected_revenue(day, day, BY)
    assert len(rows) == 18                          # 3 channels x 2 products x 3 methods
    assert total[0] == month.day_tickets and total == month.expected_revenue(day, day)[()]


def test_report_revenue_month(benchmark, month):
    """Shard.revenue of the whole month as one period: 30 days of ledger rows added up."""
    from bench.reports import MONTH
    lo, hi = month.days
    revenue = month.shard.revenue
    out = []
    push = out.append

    def one():
        push(revenue(VENUE, lo, hi, "month"))

    _month_info(benchmark, month)
    rounds = _pedantic(benchmark, one, scaled(1_000, 100),
                       what=f"Shard.revenue of a month, period month: {month.tickets:,} tickets "
                            f"sold over 30 days")
    assert len(out) == rounds and all(r == out[0] for r in out)
    want = month.expected_revenue(lo, hi)[()]
    assert want[0] == month.tickets
    assert out[0] == ([(f"{MONTH:%Y-%m}", {}, want)], want)
    # the month is the sum of its days
    days = [month.shard.revenue(VENUE, d, d)[1] for d in range(lo, hi + 1)]
    assert [sum(col) for col in zip(*days)] == want


def test_report_ticket_status_day(benchmark, month):
    """Shard.ticket_status of the big day: its codes sold, used, refunded and expired,
    counted from the bitmaps of the codes issued for that visit day."""
    day, status = month.big_day, month.shard.ticket_status
    out = []
    push = out.append

    def one():
        push(status(VENUE, day, day))

    _month_info(benchmark, month)
    rounds = _pedantic(benchmark, one, scaled(200, 20),
                       what=f"Shard.ticket_status of a day: {month.day_tickets:,} codes of that "
                            f"visit day")
    assert len(out) == rounds and all(r == out[0] for r in out)
    keys = ("sold", "used", "unused", "refunded", "expired")
    got = {r["product"]: {k: r[k] for k in keys} for r in out[0]}
    assert [r["day"] for r in out[0]] == [day] * len(out[0])
    assert got == month.expected_status(day)
    assert sum(r["sold"] for r in out[0]) == month.day_tickets
    assert sum(r["used"] for r in out[0]) > 0 and sum(r["refunded"] for r in out[0]) > 0


def test_report_settlement_month(benchmark, month):
    """Shard.settlement of the month: each partner's share of the split ledger, the
    month's net revenue and the venue's own share."""
    lo, hi = month.days
    settlement = month.shard.settlement
    out = []
    push = out.append

    def one():
        push(settlement(VENUE, lo, hi))

    _month_info(benchmark, month)
    rounds = _pedantic(benchmark, one, scaled(1_000, 100),
                       what=f"Shard.settlement of a month: 2 partners, {month.tickets:,} tickets")
    assert len(out) == rounds and all(r == out[0] for r in out)
    partners, net_fen, venue_fen = out[0]
    shares, net_want = month.expected_settlement()
    assert {p["partner"]: p["amount_fen"] for p in partners} == shares
    assert net_fen == net_want and venue_fen + sum(shares.values()) == net_fen
    assert all(v > 0 for v in shares.values()) and venue_fen > 0
