"""Members and points (issue 17): a venue's programme, members found by ID or phone number
(kept sealed, shown masked), points earned per yuan paid at Confirm by product and channel,
taken back exactly at Refund, adjusted by operators, expiring by the programme's rule, a
balance that never goes negative, levels by spend within a period.

Expectations come from that contract and the demo's prices: adult 8000 fen on a weekday,
child 4000, a group ticket 6000 a person; TODAY (tests/conftest.py) is Monday 2026-11-23,
08:30 venue time. The programme of these tests: 2 points per yuan for adults sold on the
web, 1 for everything else; silver from 100 yuan spent in 30 days, gold from 500; points
expire at the end of the year after the one they were earned in (2027-12-31 here)."""
from __future__ import annotations

import datetime as dt

import pytest

from turnstile.engine import (AlreadyExists, FailedPrecondition, HoldItem, InvalidArgument,
                              NotFound, Shard, cmd, demo)
from turnstile.engine.errors import InsufficientPoints
from turnstile.engine.model import to_day

from tests.conftest import TODAY, tree

V = demo.VENUE
SLOT = demo.slot_id("main", TODAY, 10)
ID1, PHONE1 = "110101199001011234", "13812345678"
LEVELS = [{"level": 1, "name": "silver", "min_spend_fen": 10000},
          {"level": 2, "name": "gold", "min_spend_fen": 50000}]
EARN = [{"points_per_yuan": 1}, {"product": "adult", "channel": "web", "points_per_yuan": 2}]
END_2027 = to_day(dt.date(2027, 12, 31))


@pytest.fixture
def club(shard):
    shard.run(cmd.member_program(V, levels=LEVELS, period_days=30, earn=EARN))
    return shard


def _enrol(shard, **kw) -> str:
    return shard.run(cmd.enrol(V, **(kw or {"id_number": ID1}))).member_id


def _buy(shard, member: str, product: str = "adult", qty: int = 1, channel: str = "web",
         order: str | None = None, group: int = 1):
    h = shard.run(cmd.hold(channel, V, [HoldItem(product, (SLOT,), qty, group)]))
    return shard.run(cmd.confirm(h.hold_id, order or f"o-{h.hold_id}", channel, method="cash",
                                 amount_fen=h.amount_fen, member=member))


def _balance(shard, member: str) -> int:
    return shard.member(V, member_id=member).balance


# -- the programme -----------------------------------------------------------------------
@pytest.mark.parametrize("kw, field", [
    ({"levels": [{"level": 2, "name": "a", "min_spend_fen": 100}, {"level": 1, "name": "b", "min_spend_fen": 200}]},
     "levels[1].level"),
    ({"levels": [{"level": 1, "name": "a", "min_spend_fen": 500}, {"level": 2, "name": "b", "min_spend_fen": 500}]},
     "levels[1].min_spend_fen"),
    ({"levels": [{"level": 0, "name": "a", "min_spend_fen": 1}]}, "levels[0].level"),
    ({"levels": [{"level": 1, "colour": "red", "min_spend_fen": 1}]}, "levels[0]"),
    ({"earn": [{"product": "nosuch", "points_per_yuan": 1}]}, "earn[0].product"),
    ({"earn": [{"points_per_yuan": 1}, {"points_per_yuan": 2}]}, "earn[1]"),
    ({"earn": [{"points_per_yuan": -1}]}, "earn[0].points_per_yuan"),
    ({"expiry": "monthly"}, "expiry"),
    ({"expiry": "days", "expiry_n": 0}, "expiry_n"),
    ({"period_days": 0}, "period_days"),
    ({"fen_per_point": 0}, "fen_per_point"),
])
def test_a_bad_programme_is_refused_naming_the_field(shard, kw, field):
    before = tree(shard.storage.path)
    with pytest.raises((InvalidArgument, NotFound)) as e:
        shard.run(cmd.member_program(V, **kw))
    assert e.value.field == field
    assert tree(shard.storage.path) == before
    with pytest.raises(FailedPrecondition):
        shard.member_program(V)


def test_no_member_is_enrolled_before_the_venue_has_a_programme(shard):
    with pytest.raises(FailedPrecondition) as e:
        shard.run(cmd.enrol(V, id_number=ID1))
    assert e.value.field == "venue"


# -- enrolment and look-up ---------------------------------------------------------------
def test_a_member_is_found_by_id_number_phone_or_member_id_and_shown_masked(club):
    m = club.run(cmd.enrol(V, id_number=ID1.lower(), phone=PHONE1))
    assert m.member_id == "M1" and (m.holder, m.phone) == ("110***********1234", "138****5678")
    assert (m.balance, m.level, m.spend_fen) == (0, 0, 0)
    for how in ({"member_id": "M1"}, {"id_number": ID1}, {"phone": PHONE1}):
        assert club.member(V, **how) == m
    assert club.run(cmd.enrol(V, phone="+85291234567")).member_id == "M2"
    with pytest.raises(NotFound) as e:
        club.member(V, phone="13900000000")
    assert e.value.field == "phone"
    with pytest.raises(InvalidArgument):
        club.member(V, member_id="M1", phone=PHONE1)        # one way at a time


@pytest.mark.parametrize("kw, field", [({"id_number": ID1}, "id_number"), ({"phone": PHONE1}, "phone"),
                                       ({"id_number": "220101199001015678", "phone": PHONE1}, "phone")])
def test_an_id_or_phone_number_names_one_member_of_a_venue(club, kw, field):
    _enrol(club, id_number=ID1, phone=PHONE1)
    with pytest.raises(AlreadyExists) as e:
        club.run(cmd.enrol(V, **kw))
    assert e.value.field == field
    assert [m.member_id for m in (club.member(V, id_number=ID1),)] == ["M1"]


@pytest.mark.parametrize("kw, field", [({}, "id_number"), ({"id_number": "12-34"}, "id_number"),
                                       ({"phone": "12345"}, "phone"), ({"phone": "138 1234 5678"}, "phone")])
def test_an_enrolment_needs_a_well_formed_number(club, kw, field):
    with pytest.raises(InvalidArgument) as e:
        club.run(cmd.enrol(V, **kw))
    assert e.value.field == field


def test_the_data_dir_holds_no_id_or_phone_number_in_clear(club):
    m = _enrol(club, id_number=ID1, phone=PHONE1)
    _buy(club, m)
    club.snapshot()
    blob = b"".join(tree(club.storage.path).values())
    assert ID1.encode() not in blob and PHONE1.encode() not in blob
    assert ID1[-8:].encode() not in blob and PHONE1[-8:].encode() not in blob


def test_an_enrolment_retried_with_its_key_gets_the_first_answer(club):
    a = club.run(cmd.enrol(V, phone=PHONE1, idempotency_key="k1"))
    assert club.run(cmd.enrol(V, phone=PHONE1, idempotency_key="k1")) == a
    with pytest.raises(FailedPrecondition) as e:
        club.run(cmd.enrol(V, phone="13900000000", idempotency_key="k1"))
    assert e.value.code == "IDEMPOTENCY_KEY_REUSED"


# -- earning and taking back ---------------------------------------------------------------
def test_points_are_earned_per_yuan_paid_by_product_and_channel(club):
    m = _enrol(club)
    sold = _buy(club, m, "adult", 3)                 # 3 x 80 yuan x 2 points
    assert (sold.order.member, sold.order.points_earned) == (m, 480)
    assert _buy(club, m, "child", 2).order.points_earned == 80          # 2 x 40 yuan x 1
    assert _buy(club, m, "adult", 1, channel="ota").order.points_earned == 76   # 76 yuan x 1
    info = club.member(V, member_id=m)
    assert (info.balance, info.expiring) == (636, ((END_2027, 636),))
    assert [(e.kind, e.points, e.balance, e.ref) for e in club.member_ledger(V, m)] == [
        ("earn", 480, 480, sold.order.order_id), ("earn", 80, 560, "o-2"), ("earn", 76, 636, "o-3")]


def test_a_refund_takes_back_exactly_what_its_tickets_earned(club):
    m = _enrol(club)
    sold = _buy(club, m, "adult", 3)
    t = [x.ticket_id for x in sold.tickets]
    r = club.run(cmd.refund(sold.order.order_id, "r1", [t[0]], channel="web"))
    assert (r.amount_fen, r.points_reversed) == (8000, 160)
    assert _balance(club, m) == 320
    r = club.run(cmd.refund(sold.order.order_id, "r2", channel="web"))     # the other two
    assert r.points_reversed == 320 and _balance(club, m) == 0
    assert [(e.kind, e.points, e.ref) for e in club.member_ledger(V, m)] == [
        ("earn", 480, sold.order.order_id), ("reverse", -160, "r1"), ("reverse", -320, "r2")]


def test_a_group_ticket_refunded_in_part_takes_back_the_persons_share(club):
    m = _enrol(club)
    sold = _buy(club, m, "group", 1, channel="agency", group=10)     # 600 yuan x 1 point
    assert sold.order.points_earned == 600
    tid = sold.tickets[0].ticket_id
    assert club.run(cmd.refund(sold.order.order_id, "r1", [tid], channel="agency",
                               persons=3)).points_reversed == 180
    assert club.run(cmd.refund(sold.order.order_id, "r2", [tid], channel="agency")).points_reversed == 420
    assert _balance(club, m) == 0


def test_points_spent_before_a_refund_become_a_debt_the_next_points_pay_off(club):
    m = _enrol(club)
    sold = _buy(club, m, "adult", 3)                                  # 480
    club.run(cmd.adjust_points(V, m, -400, "redeemed at the gift shop"))
    r = club.run(cmd.refund(sold.order.order_id, "r1", channel="web"))
    assert r.points_reversed == 480
    info = club.member(V, member_id=m)
    assert (info.balance, info.debt) == (0, 400)                       # never negative
    _buy(club, m, "adult", 2)                                         # 320 earned
    info = club.member(V, member_id=m)
    assert (info.balance, info.debt) == (0, 80)
    _buy(club, m, "adult", 1)                                         # 160 earned
    info = club.member(V, member_id=m)
    assert (info.balance, info.debt) == (80, 0)
    entries = club.member_ledger(V, m)
    assert sum(e.points for e in entries) == 80 and entries[-1].balance == 80


def test_a_member_of_another_venue_or_none_is_refused_and_nothing_is_sold(club):
    club.run(cmd.venue("hills", "Fragrant Hills"))
    h = club.run(cmd.hold("web", V, [HoldItem("adult", (SLOT,), 1)]))
    for member, exc in (("M9", NotFound), ("someone", InvalidArgument)):
        with pytest.raises(exc) as e:
            club.run(cmd.confirm(h.hold_id, "o1", "web", method="cash", amount_fen=h.amount_fen,
                                 member=member))
        assert e.value.field == "member"
    assert club.hold_info(h.hold_id).status == "active"


def test_a_change_carries_the_points_to_the_new_tickets(club):
    m = _enrol(club)
    sold = _buy(club, m, "adult", 2)
    t = sold.tickets[0].ticket_id
    later = demo.slot_id("main", TODAY, 14)
    ch = club.run(cmd.change(sold.order.order_id, "c1", [later], [t], channel="web"))
    new = ch.new_tickets[0].ticket_id
    assert club.run(cmd.refund(sold.order.order_id, "r1", [new], channel="web")).points_reversed == 160
    assert _balance(club, m) == 160


# -- adjustments -----------------------------------------------------------------------------
def test_an_adjustment_never_takes_the_balance_below_zero(club):
    m = _enrol(club)
    club.run(cmd.adjust_points(V, m, 100, "welcome gift"))
    before = tree(club.storage.path)
    with pytest.raises(InsufficientPoints) as e:
        club.run(cmd.adjust_points(V, m, -101, "too much"))
    assert e.value.field == "points" and e.value.code == "INSUFFICIENT_POINTS"
    assert tree(club.storage.path) == before and _balance(club, m) == 100
    r = club.run(cmd.adjust_points(V, m, -100, "all of it"))
    assert (r.balance, r.seq) == (0, 2)


@pytest.mark.parametrize("points, reason, field", [(0, "x", "points"), (5, "", "reason"),
                                                   (5, "   ", "reason"), (10**13, "x", "points")])
def test_an_adjustment_moves_points_and_says_why(club, points, reason, field):
    m = _enrol(club)
    with pytest.raises(InvalidArgument) as e:
        club.run(cmd.adjust_points(V, m, points, reason))
    assert e.value.field == field


# -- levels and expiry ------------------------------------------------------------------------
def test_the_level_follows_the_spend_within_the_period(club, clock):
    m = _enrol(club)
    _buy(club, m, "child", 2)                                         # 80 yuan
    assert club.member(V, member_id=m).level == 0
    sold = _buy(club, m, "adult", 1)                                  # 160 yuan in all
    info = club.member(V, member_id=m)
    assert (info.level, info.level_name, info.spend_fen) == (1, "silver", 16000)
    club.run(cmd.refund(sold.order.order_id, "r1", channel="web"))    # back to 80
    assert club.member(V, member_id=m).level == 0
    _buy(club, m, "adult", 7)                                         # 640 yuan in all
    assert club.member(V, member_id=m).level == 2
    clock.at(TODAY + dt.timedelta(days=30), 9)                       # the period has passed
    info = club.member(V, member_id=m)
    assert (info.level, info.spend_fen) == (0, 0)


def test_points_expire_at_the_end_of_the_next_year(club, clock):
    m = _enrol(club)
    _buy(club, m, "adult", 1)                                         # 160, valid to 2027-12-31
    clock.at(dt.date(2027, 12, 31), 23)
    assert _balance(club, m) == 160
    clock.at(dt.date(2028, 1, 1), 9)
    assert _balance(club, m) == 0                                     # shown gone at once
    report = club.members_report(V)
    assert (report["totals"]["expire"], report["balance"]) == (-160, 0)
    club.run(cmd.adjust_points(V, m, 10, "goodwill"))                 # the next touch writes it
    assert [(e.kind, e.points, e.balance) for e in club.member_ledger(V, m)] == [
        ("earn", 160, 160), ("expire", -160, 0), ("adjust", 10, 10)]
    assert club.member(V, member_id=m).expiring == ((to_day(dt.date(2029, 12, 31)), 10),)
    assert club.members_report(V)["totals"]["expire"] == -160


def test_a_changed_programme_applies_from_then_on(club):
    m = _enrol(club)
    _buy(club, m, "adult", 1)                                         # 160
    club.run(cmd.member_program(V, levels=LEVELS, earn=[{"points_per_yuan": 5}], expiry="never"))
    assert _buy(club, m, "adult", 1).order.points_earned == 400
    info = club.member(V, member_id=m)
    assert info.expiring == ((END_2027, 160), (2**31 - 1, 400))


# -- durability ------------------------------------------------------------------------------
def test_members_and_points_replay_and_snapshot_to_the_same_state(club, shard_path, clock):
    a = _enrol(club, id_number=ID1)
    b = _enrol(club, phone=PHONE1)
    sold = _buy(club, a, "adult", 3)
    _buy(club, b, "child", 1)
    club.run(cmd.refund(sold.order.order_id, "r1", [sold.tickets[0].ticket_id], channel="web"))
    club.run(cmd.adjust_points(V, b, -10, "typo"))
    seen = {m: (club.member(V, member_id=m), club.member_ledger(V, m)) for m in (a, b)}
    report = club.members_report(V)
    assert club.check(replay=True) == []
    club.close(snapshot=False)
    for snap in (False, True):                  # from the journal, then from a snapshot
        s = Shard.open(shard_path, clock=clock)
        assert {m: (s.member(V, member_id=m), s.member_ledger(V, m)) for m in (a, b)} == seen
        assert s.members_report(V) == report
        assert s.check() == []
        s.close(snapshot=snap)
    s = Shard.open(shard_path, clock=clock)
    assert _enrol(s, phone="13900000000") == "M3"                   # numbering goes on
    s.close(snapshot=False)


def test_the_report_counts_members_by_level_and_points_by_kind(club):
    a, b, _ = _enrol(club, id_number=ID1), _enrol(club, phone=PHONE1), _enrol(club, phone="13900000000")
    sold = _buy(club, a, "adult", 7)                                  # 560 yuan, 7 x 160 points
    _buy(club, b, "adult", 1)                                         # 80 yuan, 160 points
    _buy(club, b, "child", 1)                                         # 120 yuan, 40 points
    club.run(cmd.refund(sold.order.order_id, "r1", [sold.tickets[0].ticket_id], channel="web"))
    club.run(cmd.adjust_points(V, b, 40, "birthday"))
    r = club.members_report(V)
    # a: 480 yuan left, silver; b: 120 yuan, silver; the third: nothing spent
    assert r["members"] == 3 and r["by_level"] == [(0, 1), (1, 2)]
    assert {k: v for k, v in r["totals"].items() if v} == {"earn": 1320, "reverse": -160, "adjust": 40}
    assert r["balance"] == 1200


# -- member prices ---------------------------------------------------------------------------
def test_a_member_is_priced_at_the_level_their_spend_reached(club):
    club.run(cmd.price_rules(V, "adult", [{"kind": "member_level", "member_level": 1, "pct": -20}]))
    m = _enrol(club)
    item = [{"product": "adult", "slots": [SLOT], "qty": 1}]
    assert club.quote(V, "web", item, member=m).amount_fen == 8000          # no spend yet
    _buy(club, m, "child", 3)                                               # 120 yuan: silver
    q = club.quote(V, "web", item, member=m)
    assert (q.amount_fen, [(r.rule, r.amount_fen) for r in q.lines[0].rules]) == (6400, [("member_level", -1600)])
    assert club.quote(V, "web", item).amount_fen == 8000                    # not a member
    h = club.run(cmd.hold("web", V, item, member=m, quote_id=q.quote_id))
    assert h.amount_fen == 6400
    sold = club.run(cmd.buy("web", V, item, "b1", method="cash", amount_fen=6400, member=m))
    assert (sold.order.amount_fen, sold.order.points_earned) == (6400, 128)  # 64 yuan x 2
    with pytest.raises(InvalidArgument) as e:                               # the level is theirs
        club.run(cmd.hold("web", V, item, member=m, member_level=9))
    assert e.value.field == "member_level"
    with pytest.raises(NotFound) as e:
        club.quote(V, "web", item, member="M77")
    assert e.value.field == "member"


# -- redeeming points -----------------------------------------------------------------------
def _availability_held(shard) -> int:
    return next(s for s in shard.availability(V, TODAY) if s.slot == SLOT).held


def test_points_redeemed_at_hold_come_off_last_and_come_back_when_the_hold_ends(club, clock):
    m = _enrol(club)
    _buy(club, m, "adult", 3)                                         # 480 points
    item = [HoldItem("adult", (SLOT,), 1)]
    q = club.quote(V, "web", [{"product": "adult", "slots": [SLOT], "qty": 1}], member=m, points=300)
    assert (q.amount_fen, q.points, q.points_fen) == (7700, 300, 300)
    assert _balance(club, m) == 480                                   # a quote takes none
    h = club.run(cmd.hold("web", V, item, member=m, points=300))
    assert (h.amount_fen, h.points, h.points_fen) == (7700, 300, 300)
    assert _balance(club, m) == 180
    club.run(cmd.release(h.hold_id, "web"))
    assert _balance(club, m) == 480
    h = club.run(cmd.hold("web", V, item, member=m, points=100, ttl_s=60))
    assert _balance(club, m) == 380
    clock.t += 61
    club.run(cmd.enrol(V, phone="13900000009"))                       # the next batch expires it
    assert _balance(club, m) == 480
    assert [(e.kind, e.points, e.ref) for e in club.member_ledger(V, m)][1:] == [
        ("redeem", -300, "hold:2"), ("restore", 300, "hold:2"),
        ("redeem", -100, "hold:3"), ("restore", 100, "hold:3")]


def test_a_ticket_paid_with_points_alone_and_refunded(club):
    m = _enrol(club)
    club.run(cmd.adjust_points(V, m, 8000, "a gift"))
    h = club.run(cmd.hold("web", V, [HoldItem("adult", (SLOT,), 1)], member=m, points=8000))
    assert h.amount_fen == 0
    sold = club.run(cmd.confirm(h.hold_id, "free-1", "web", method="points", amount_fen=0))
    assert (sold.order.amount_fen, sold.order.member, sold.order.points_redeemed,
            sold.order.points_earned) == (0, m, 8000, 0)             # the hold's member; nothing paid
    assert _balance(club, m) == 0
    r = club.run(cmd.refund("free-1", "r1", channel="web"))
    assert (r.amount_fen, r.points_restored, r.points_reversed) == (0, 8000, 0)
    assert _balance(club, m) == 8000


def test_points_spread_over_the_tickets_and_each_refund_gives_its_share_back(club):
    m = _enrol(club)
    club.run(cmd.adjust_points(V, m, 1000, "a gift"))
    h = club.run(cmd.hold("web", V, [HoldItem("adult", (SLOT,), 2), HoldItem("child", (SLOT,), 1)],
                          member=m, points=1000))
    assert h.amount_fen == 20000 - 1000                               # 8000 + 8000 + 4000
    sold = club.run(cmd.confirm(h.hold_id, "mix-1", "web", method="cash", amount_fen=19000, member=m))
    # earned on what was paid: each adult 7600 x 2 per yuan, the child 3800 x 1
    assert (sold.order.points_redeemed, sold.order.points_earned) == (1000, 152 + 152 + 38)
    assert _balance(club, m) == 342
    adult, child = sold.tickets[0].ticket_id, sold.tickets[2].ticket_id
    r = club.run(cmd.refund("mix-1", "r1", [adult], channel="web"))
    assert (r.amount_fen, r.points_restored, r.points_reversed) == (7600, 400, 152)
    r = club.run(cmd.refund("mix-1", "r2", [child], channel="web"))
    assert (r.amount_fen, r.points_restored, r.points_reversed) == (3800, 200, 38)
    r = club.run(cmd.refund("mix-1", "r3", channel="web"))
    assert (r.amount_fen, r.points_restored, r.points_reversed) == (7600, 400, 152)
    assert _balance(club, m) == 1000 and club.member(V, member_id=m).debt == 0
    assert club.check(replay=True) == []


def test_a_group_ticket_paid_partly_with_points_gives_back_the_persons_share(club):
    m = _enrol(club)
    club.run(cmd.adjust_points(V, m, 1000, "a gift"))
    h = club.run(cmd.hold("agency", V, [HoldItem("group", (SLOT,), 1, 10)], member=m, points=1000))
    sold = club.run(cmd.confirm(h.hold_id, "g-1", "agency", method="cash", amount_fen=59000))
    tid = sold.tickets[0].ticket_id
    r = club.run(cmd.refund("g-1", "r1", [tid], channel="agency", persons=4))
    assert (r.amount_fen, r.points_restored) == (59000 * 4 // 10, 400)
    r = club.run(cmd.refund("g-1", "r2", [tid], channel="agency"))
    assert (r.amount_fen, r.points_restored) == (59000 - 23600, 600)


@pytest.mark.parametrize("kw, exc, field", [
    ({"points": 481}, InsufficientPoints, "points"),
    ({"points": 8001, "adjust": 10000}, InvalidArgument, "points"),    # worth more than the order
    ({"points": 10, "member": None}, InvalidArgument, "member"),
    ({"points": -1}, InvalidArgument, "points"),
])
def test_points_that_cannot_be_redeemed_hold_nothing(club, kw, exc, field):
    m = _enrol(club)
    _buy(club, m, "adult", 3)                                         # 480
    if "adjust" in kw:
        club.run(cmd.adjust_points(V, m, kw["adjust"], "for the test"))
    before = (_balance(club, m), _availability_held(club))
    args = {"member": m, "points": kw["points"]}
    if "member" in kw:
        del args["member"]
    with pytest.raises(exc) as e:
        club.run(cmd.Command(cmd.CommandKind.HOLD, {"channel": "web", "venue": V, "ttl_s": 900,
                 "items": [{"product": "adult", "slots": [SLOT], "qty": 1}], **args}))
    assert e.value.field == field
    assert (_balance(club, m), _availability_held(club)) == before


def test_a_hold_paid_with_a_members_points_is_confirmed_for_that_member_only(club):
    a, b = _enrol(club, phone="13900000001"), _enrol(club, phone="13900000002")
    club.run(cmd.adjust_points(V, a, 100, "gift"))
    h = club.run(cmd.hold("web", V, [HoldItem("adult", (SLOT,), 1)], member=a, points=100))
    with pytest.raises(InvalidArgument) as e:
        club.run(cmd.confirm(h.hold_id, "x-1", "web", method="cash", amount_fen=7900, member=b))
    assert e.value.field == "member"
    assert club.run(cmd.confirm(h.hold_id, "x-1", "web", method="cash", amount_fen=7900,
                                member=a)).order.points_redeemed == 100


def test_a_change_gives_back_the_points_the_moved_tickets_were_paid_with(club):
    m = _enrol(club)
    club.run(cmd.adjust_points(V, m, 200, "gift"))
    h = club.run(cmd.hold("web", V, [HoldItem("adult", (SLOT,), 2)], member=m, points=200))
    sold = club.run(cmd.confirm(h.hold_id, "c-1", "web", method="cash", amount_fen=15800))
    earned = sold.order.points_earned                                 # 2 x 7900 x 2 / 100 = 316
    assert earned == 316 and _balance(club, m) == 316
    later = demo.slot_id("main", TODAY, 14)
    t = sold.tickets[0].ticket_id
    terms = club.change_terms("c-1", "c1", [later], [t], channel="web")
    ch = club.run(cmd.change("c-1", "c1", [later], [t], channel="web", method="cash",
                             amount_fen=max(terms.due_fen, 0)))
    assert _balance(club, m) == 316 + 100                             # its 100 points back
    r = club.run(cmd.refund("c-1", "r1", [ch.new_tickets[0].ticket_id], channel="web"))
    assert (r.points_restored, r.points_reversed) == (0, 158)         # its points went back already
    assert club.check(replay=True) == []


def test_points_given_back_pay_off_a_debt_first(club):
    m = _enrol(club)
    sold = _buy(club, m, "adult", 1)                                  # 160
    h = club.run(cmd.hold("web", V, [HoldItem("adult", (SLOT,), 1)], member=m, points=100))
    club.run(cmd.adjust_points(V, m, -60, "the rest spent"))           # balance 0
    club.run(cmd.refund(sold.order.order_id, "r1", channel="web"))    # 160 owed: debt 160
    assert (_balance(club, m), club.member(V, member_id=m).debt) == (0, 160)
    club.run(cmd.release(h.hold_id, "web"))                           # 100 back: all to the debt
    info = club.member(V, member_id=m)
    assert (info.balance, info.debt) == (0, 60)
    assert [(e.kind, e.points, e.debt) for e in club.member_ledger(V, m)][-1] == ("restore", 0, 60)
