"""Refund policies over the API (issue 13, after-sale): an operator sets a product's tiers
(AdminService.SetRefundPolicy; read back by GetProductPricing); the OTA's refunds keep the
fee of the tier the refund is early enough for, and one later than every tier is refused
FAILED_PRECONDITION with reason REFUND_CLOSED, the ticket still valid. The server's clock
is 07:00 venue-local on Monday 2026-12-28 (the adult ticket costs 7600 through the OTA on
weekdays)."""
from __future__ import annotations

import datetime as dt

import pytest

from turnstile.clients.admin import AdminClient, RefundPolicy, RefundTier
from turnstile.clients.base import ApiError, Connection
from turnstile.clients.channel import ChannelClient, Item
from turnstile.engine import demo
from tests.integration.conftest import start_server, stop_server

VENUE = "westlake"
MON = dt.date(2026, 12, 28)
TIERS = (RefundTier(0, 10), RefundTier(1440, 0))          # given latest first: kept earliest first


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = start_server(str(tmp_path_factory.mktemp("refunds")), MON)
    yield s
    stop_server(s)


@pytest.fixture(scope="module")
def conns(server):
    cs = {p: Connection(server.address, server.keys[p])
          for p in ("demo-operator", "demo-ota", "demo-gate")}
    yield cs
    for c in cs.values():
        c.close()


def test_refunds_keep_the_fee_of_their_tier(conns):
    op, ota = AdminClient(conns["demo-operator"]), ChannelClient(conns["demo-ota"])
    pol = op.set_refund_policy(VENUE, "adult", TIERS)
    assert pol == RefundPolicy(VENUE, "adult", (RefundTier(1440, 0), RefundTier(0, 10)))
    assert op.product_pricing(VENUE, "adult").refund_policy == pol
    later = ota.buy(VENUE, [Item("adult", demo.slot_id("main", MON + dt.timedelta(days=3), 10))], "rp-1")
    r = ota.refund(VENUE, later.order_id)
    assert (r.amount_fen, r.fee_fen) == (7600, 0)                 # days ahead: free
    today = ota.buy(VENUE, [Item("adult", demo.slot_id("main", MON, 10))], "rp-2")
    r = ota.refund(VENUE, today.order_id)
    assert (r.amount_fen, r.fee_fen) == (6840, 760)               # 3 hours before: 10 %


def test_a_refund_after_every_tier_is_refused_and_the_ticket_stays_valid(conns):
    op, ota = AdminClient(conns["demo-operator"]), ChannelClient(conns["demo-ota"])
    # only refundable until 12 hours before: the 10:00 slot of today is past that
    op.set_refund_policy(VENUE, "adult", [RefundTier(720, 0)])
    o = ota.buy(VENUE, [Item("adult", demo.slot_id("main", MON, 10))], "rp-4")
    with pytest.raises(ApiError) as e:
        ota.refund(VENUE, o.order_id)
    assert (e.value.code.name, e.value.reason) == ("FAILED_PRECONDITION", "REFUND_CLOSED")
    after = ota.get_order(VENUE, o.order_id)
    assert after.refunded_fen == 0 and not after.refunds
    assert all(t.state == "issued" for t in after.tickets)


def test_bad_tiers_and_other_roles_change_nothing(conns):
    op = AdminClient(conns["demo-operator"])
    before = op.product_pricing(VENUE, "adult").refund_policy
    for tiers, field in (([RefundTier(60, 101)], "tiers[0].fee_pct"),
                         ([RefundTier(60, 5), RefundTier(60, 9)], "tiers")):
        with pytest.raises(ApiError) as e:
            op.set_refund_policy(VENUE, "adult", tiers)
        assert (e.value.code.name, e.value.field) == ("INVALID_ARGUMENT", field)
    with pytest.raises(ApiError) as e:
        op.set_refund_policy(VENUE, "no-such-product", [])
    assert e.value.code.name == "NOT_FOUND"
    for who in ("demo-ota", "demo-gate"):
        with pytest.raises(ApiError) as e:
            AdminClient(conns[who]).set_refund_policy(VENUE, "adult", [])
        assert e.value.code.name == "PERMISSION_DENIED"
    assert op.product_pricing(VENUE, "adult").refund_policy == before
