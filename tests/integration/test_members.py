"""Members and points over the API (issue 17): an operator sets the venue's programme, the
window enrols a member, a channel finds them by phone and sells to them, points are earned
per yuan paid and taken back by a refund, an operator adjusts them (never below zero),
member prices apply at the level the member's spend reached, and every edge is tried: a
member of another venue, a channel outside the venue, bad values. Real server, real clients.

The server's clock is the morning of Monday 2026-12-28; the adult ticket costs 7600 through
the OTA on weekdays and 8000 at the window (engine/demo.py). The programme here: 1 point
per yuan, 2 for adults sold at the window; silver from 100 yuan spent in 365 days."""
from __future__ import annotations

import datetime as dt

import pytest

from turnstile.clients.admin import AdminClient, PriceRule
from turnstile.clients.base import Connection
from turnstile.clients.channel import ChannelClient, Item
from turnstile.clients.members import EarnRule, Level, MembersClient
from turnstile.engine import demo
from tests.integration.conftest import refused, start_server, stop_server

VENUE = "westlake"
MON = dt.date(2026, 12, 28)
TUE = MON + dt.timedelta(days=1)
PHONE, ID = "13812345678", "110101199003071234"


def slot(day: dt.date = TUE, hour: int = 10) -> str:
    return demo.slot_id("main", day, hour)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = start_server(str(tmp_path_factory.mktemp("members")), MON)
    yield s
    stop_server(s)


@pytest.fixture(scope="module")
def conns(server):
    cs = {p: Connection(server.address, server.keys[p])
          for p in ("admin", "demo-operator", "demo-ota", "demo-window", "demo-finance", "demo-auditor")}
    yield cs
    for c in cs.values():
        c.close()


@pytest.fixture(scope="module")
def program(conns):
    return MembersClient(conns["demo-operator"]).set_program(
        VENUE, levels=[Level(1, "silver", 10000), Level(2, "gold", 100000)],
        earn=[EarnRule(points_per_yuan=1), EarnRule("adult", "window", 2)], key="programme-1")


def test_a_member_buys_earns_refunds_and_is_adjusted(conns, program):
    assert (program.expiry, program.expiry_n, program.period_days, program.fen_per_point) == \
        ("year_end", 1, 365, 1)
    window, ota = MembersClient(conns["demo-window"]), MembersClient(conns["demo-ota"])
    m = window.enrol(VENUE, phone=PHONE, id_number=ID, key="signup-1")
    assert (m.holder, m.phone, m.balance, m.level) == ("110***********1234", "138****5678", 0, 0)
    assert window.enrol(VENUE, phone=PHONE, id_number=ID, key="signup-1") == m     # a retry
    assert refused(window.enrol, VENUE, phone=PHONE) == ("ALREADY_EXISTS", "ALREADY_EXISTS", "phone")
    assert ota.get(VENUE, phone=PHONE) == m                                         # found by phone
    # the OTA sells two adults to the member, the window one
    o1 = ChannelClient(conns["demo-ota"]).buy(VENUE, [Item("adult", slot(), qty=2)], "m-ota-1",
                                              member_id=m.member_id)
    assert (o1.amount_fen, o1.member_id, o1.points_earned) == (15200, m.member_id, 152)
    win = ChannelClient(conns["demo-window"])
    h = win.hold(VENUE, [Item("adult", slot())], member_id=m.member_id)
    o2 = win.confirm(h, "m-win-1", method="cash", member_id=m.member_id)
    assert o2.points_earned == 160                                                  # 80 yuan x 2
    now = window.get(VENUE, member_id=m.member_id)
    assert (now.balance, now.level, now.level_name, now.spend_fen) == (312, 1, "silver", 23200)
    assert now.expiring == ((dt.date(2027, 12, 31), 312),)
    # a refund of one OTA ticket takes back exactly its points
    r = ChannelClient(conns["demo-ota"]).refund(VENUE, "m-ota-1", [o1.tickets[0].ticket_id])
    assert (r.amount_fen, r.points_reversed) == (7600, 76)
    assert ChannelClient(conns["demo-ota"]).get_order(VENUE, "m-ota-1").points_earned == 152
    ledger = list(window.points(VENUE, m.member_id, page=2))                       # two pages
    assert [(e.kind, e.points, e.balance, e.ref) for e in ledger] == [
        ("earn", 152, 152, "m-ota-1"), ("earn", 160, 312, "m-win-1"), ("reverse", -76, 236, r.refund_id)]
    # the operator takes what is left; never below zero
    op = MembersClient(conns["demo-operator"])
    assert op.adjust(VENUE, m.member_id, -236, "redeemed for a gift", key="adj-1") == (0, 0)
    assert refused(op.adjust, VENUE, m.member_id, -1, "one more") == \
        ("FAILED_PRECONDITION", "INSUFFICIENT_POINTS", "points")
    assert op.get(VENUE, member_id=m.member_id).balance == 0
    audit = AdminClient(conns["demo-auditor"]).query_audit(0, limit=1000)
    assert [a.method for a in audit if a.method.endswith("AdjustPoints") and a.principal_id == "demo-operator"] \
        == ["/turnstile.v1.MemberService/AdjustPoints"] * 2                        # taken and refused
    rep = MembersClient(conns["demo-finance"]).report(VENUE)
    assert (rep.members, rep.by_level, rep.earned, rep.reversed, rep.adjusted, rep.balance) == \
        (1, {1: 1}, 312, -76, -236, 0)


def test_member_prices_follow_the_members_level(conns, program):
    op = AdminClient(conns["demo-operator"])
    op.set_price_rules(VENUE, "child", [PriceRule("member_level", pct=-25, member_level=1)])
    members, ota = MembersClient(conns["demo-window"]), ChannelClient(conns["demo-ota"])
    m = members.enrol(VENUE, phone="13900000001")
    items = [Item("child", slot())]
    assert ota.quote(VENUE, items, member_id=m.member_id).amount_fen == 4000      # no spend yet
    ota.buy(VENUE, [Item("adult", slot(), qty=2)], "m-price-1", member_id=m.member_id)   # 152 yuan
    q = ota.quote(VENUE, items, member_id=m.member_id)
    assert q.amount_fen == 3000 and q.explain()[-1] == "total 30.00"
    assert ota.quote(VENUE, items).amount_fen == 4000                              # not a member
    o = ota.buy(VENUE, items, "m-price-2", member_id=m.member_id)
    assert (o.amount_fen, o.points_earned) == (3000, 30)
    op.set_price_rules(VENUE, "child", [])


def test_every_edge_of_members_is_refused_and_changes_nothing(conns, program):
    admin = AdminClient(conns["admin"])
    admin.create_venue("hills", "Fragrant Hills", shard=0)
    theirs = MembersClient(conns["admin"])
    theirs.set_program("hills")
    other = theirs.enrol("hills", phone="13700000001")
    window, ota = MembersClient(conns["demo-window"]), MembersClient(conns["demo-ota"])
    mine = window.enrol(VENUE, phone="13700000002")
    sales = ChannelClient(conns["demo-ota"])
    # another venue's member, or a venue outside the caller's scope
    assert refused(ota.get, "hills", member_id=other.member_id)[0] == "PERMISSION_DENIED"
    assert refused(ota.get, VENUE, member_id=other.member_id)[::2] == ("NOT_FOUND", "member_id")
    assert refused(sales.buy, VENUE, [Item("adult", slot())], "edge-1", member_id=other.member_id)[::2] == \
        ("NOT_FOUND", "member_id")
    assert refused(sales.quote, VENUE, [Item("adult", slot())], member_id="M999999")[::2] == \
        ("NOT_FOUND", "member_id")
    assert refused(MembersClient(conns["demo-operator"]).adjust, VENUE, other.member_id, 5, "x")[::2] == \
        ("NOT_FOUND", "member_id")
    # bad values, each naming its field
    assert refused(window.enrol, VENUE, phone="12")[::2] == ("INVALID_ARGUMENT", "phone")
    assert refused(window.enrol, VENUE, id_number="12-34-56")[::2] == ("INVALID_ARGUMENT", "id_number")
    assert refused(window.enrol, VENUE)[::2] == ("INVALID_ARGUMENT", "id_number")
    assert refused(window.get, VENUE, member_id=mine.member_id, phone="13700000002")[::2] == \
        ("INVALID_ARGUMENT", "member_id")
    assert refused(window.get, VENUE, member_id="x" * 65)[::2] == ("INVALID_ARGUMENT", "member_id")
    assert refused(list, window.points(VENUE, mine.member_id, page=5000))[::2] == ("INVALID_ARGUMENT", "limit")
    assert refused(list, window.points(VENUE, mine.member_id, after=-1))[::2] == ("INVALID_ARGUMENT", "after")
    op = MembersClient(conns["demo-operator"])
    assert refused(op.adjust, VENUE, mine.member_id, 5, "")[::2] == ("INVALID_ARGUMENT", "reason")
    assert refused(op.adjust, VENUE, mine.member_id, 0, "x")[::2] == ("INVALID_ARGUMENT", "points")
    assert refused(op.set_program, VENUE, levels=[Level(2, "a", 100), Level(1, "b", 200)])[::2] == \
        ("INVALID_ARGUMENT", "program.levels[1].level")
    assert refused(op.set_program, VENUE, earn=[EarnRule("nosuch", "", 1)])[::2] == \
        ("NOT_FOUND", "program.earn[0].product_id")
    assert refused(op.set_program, VENUE, expiry="weekly")[::2] == ("INVALID_ARGUMENT", "program.expiry")
    assert refused(op.set_program, "hills")[0] == "PERMISSION_DENIED"                  # not its venue
    # nothing of it changed anything
    assert op.program(VENUE) == program
    after = window.get(VENUE, member_id=mine.member_id)
    assert (after.balance, after.debt, after.spend_fen) == (0, 0, 0)
    assert list(window.points(VENUE, mine.member_id)) == []


def test_a_member_pays_with_points_and_gets_them_back_by_a_refund(conns, program):
    desk = MembersClient(conns["demo-operator"])
    window = ChannelClient(conns["demo-window"])
    m = desk.enrol(VENUE, phone="13600000001")
    window.buy(VENUE, [Item("adult", slot(), qty=5)], "p-earn", method="cash", member_id=m.member_id)
    assert desk.get(VENUE, member_id=m.member_id).balance == 800               # 5 x 80 yuan x 2
    q = window.quote(VENUE, [Item("adult", slot())], member_id=m.member_id, points=300)
    assert (q.amount_fen, q.points, q.points_fen) == (7700, 300, 300)
    assert q.explain()[-2:] == ["points 300 -3.00", "total 77.00"]
    h = window.hold(VENUE, [Item("adult", slot())], member_id=m.member_id, points=300)
    assert (h.amount_fen, h.points) == (7700, 300)
    assert desk.get(VENUE, member_id=m.member_id).balance == 500               # taken with the hold
    o = window.confirm(h, "p-pay", method="cash")
    assert (o.amount_fen, o.member_id, o.points_redeemed, o.points_earned) == (7700, m.member_id, 300, 154)
    r = window.refund(VENUE, "p-pay")
    assert (r.amount_fen, r.points_restored, r.points_reversed) == (7700, 300, 154)
    assert desk.get(VENUE, member_id=m.member_id).balance == 800
    # a ticket bought with points alone (40 yuan: 4000 points of 1 fen)
    desk.adjust(VENUE, m.member_id, 3600, "points for a child ticket")
    free = window.buy(VENUE, [Item("child", slot())], "p-free", method="points", amount_fen=0,
                      member_id=m.member_id, points=4000)
    assert (free.amount_fen, free.points_redeemed, free.points_earned, len(free.tickets)) == (0, 4000, 0, 1)
    assert desk.get(VENUE, member_id=m.member_id).balance == 400
    # refused, holding nothing and taking no points
    held = next(s for s in window.availability(VENUE, TUE, zone="main") if s.slot_id == slot()).held
    assert refused(window.hold, VENUE, [Item("adult", slot())], member_id=m.member_id, points=401) == \
        ("FAILED_PRECONDITION", "INSUFFICIENT_POINTS", "points")
    assert refused(window.hold, VENUE, [Item("adult", slot())], points=10)[::2] == \
        ("INVALID_ARGUMENT", "member_id")
    assert refused(window.hold, VENUE, [Item("adult", slot())], member_id=m.member_id, points=-5)[::2] == \
        ("INVALID_ARGUMENT", "points")
    assert next(s for s in window.availability(VENUE, TUE, zone="main") if s.slot_id == slot()).held == held
    assert desk.get(VENUE, member_id=m.member_id).balance == 400
    kinds = [(e.kind, e.points) for e in desk.points(VENUE, m.member_id)]
    assert kinds == [("earn", 800), ("redeem", -300), ("earn", 154), ("restore", 300), ("reverse", -154),
                     ("adjust", 3600), ("redeem", -4000)]
    rep = MembersClient(conns["demo-finance"]).report(VENUE)
    assert (rep.redeemed, rep.restored) == (-4300, 300)
