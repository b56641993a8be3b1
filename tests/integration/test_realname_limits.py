"""Real-name limits and the person blacklist (issue 13, "Booking rules and real-name
limits": 实名制 against 黄牛) against a real server: an operator sets how many tickets of
a real-name product one ID number may hold a day and a slot (AdminService.SetIdLimits,
read back in GetProductPricing); SalesService.Confirm beyond them, through any channel,
is refused FAILED_PRECONDITION with reason ID_LIMIT naming the holder by its proto path
(holders[i].id_numbers[k]) and issues nothing, the hold staying active. The operator
puts a person on the venue's blacklist (Blacklist): their tickets are blocked at once
(the gate's Verify answers BLOCKED) and no channel sells to them (BLACKLISTED) until
Unblacklist. The ID number is never answered, logged or audited in clear.

The server's clock is 07:00 venue-local on Monday 2026-12-28 and the demo seeds slots
for seven days from it; "night" is the demo's real-name product (10000, main zone)."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os

import grpc
import pytest

from turnstile.clients.admin import AdminClient, BlacklistEntry, IdLimits
from turnstile.clients.base import Connection
from turnstile.clients.channel import ChannelClient, Item
from turnstile.engine import demo
from turnstile.v1 import admin_pb2, common_pb2, gate_pb2, gate_pb2_grpc
from tests.integration.conftest import api_error, refused, start_server, stop_server

VENUE = "westlake"
MON = dt.date(2026, 12, 28)
TUE = MON + dt.timedelta(days=1)
INVALID, DENIED, FAILED = "INVALID_ARGUMENT", "PERMISSION_DENIED", grpc.StatusCode.FAILED_PRECONDITION
# ID numbers (resident ID cards): A buys up to the limits, B is blacklisted, C is a
# companion in a refused order, D is refused bad input, E is blacklisted for the audit
A, B, C, D, E = ("110101199001011234", "11010119920202234X", "110101198503033456",
                 "110101197704044567", "110101196605055678")
EVERY_ID = (A, B, C, D, E)


def slot(day: dt.date, hour: int) -> str:
    return demo.slot_id("main", day, hour)


def masked(id_number: str) -> str:
    """The documented mask: the first 3 and the last 4 characters."""
    return id_number[:3] + "*" * (len(id_number) - 7) + id_number[-4:]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # every call logged (DEBUG), as JSON lines: the test greps them for ID numbers
    s = start_server(str(tmp_path_factory.mktemp("realname")), MON,
                     ("--log-format", "json", "--log-level", "debug"))
    yield s
    stop_server(s)


@pytest.fixture(scope="module")
def conns(server):
    cs = {p: Connection(server.address, server.keys[p])
          for p in ("admin", "demo-operator", "demo-ota", "demo-window", "demo-gate", "demo-finance")}
    yield cs
    for c in cs.values():
        c.close()


@pytest.fixture(scope="module")
def limited(conns):
    """The operator's limits on the night tour: one ticket a slot, two a day per ID."""
    op = AdminClient(conns["demo-operator"])
    assert op.product_pricing(VENUE, "night").id_limits == IdLimits(VENUE, "night", 0, 0)
    assert op.set_id_limits(VENUE, "night", per_day=2, per_slot=1) == IdLimits(VENUE, "night", 2, 1)
    return op


def sold(ch: ChannelClient, day: dt.date, slot_id: str) -> int:
    return next(s for s in ch.availability(VENUE, day) if s.slot_id == slot_id).sold


def buy(ch: ChannelClient, order_id: str, lines: list[tuple[str, list[str]]], **kw):
    """One order of night tickets: (slot, ID numbers) per line."""
    h = ch.hold(VENUE, [Item("night", s, qty=len(ids)) for s, ids in lines])
    return ch.confirm(h, order_id, holders=[ids for _, ids in lines], **kw)


def refused_confirm(ch: ChannelClient, order_id: str, lines: list[tuple[str, list[str]]],
                    reason: str, field: str, **kw) -> None:
    """A confirm refused FAILED_PRECONDITION `reason` naming `field` (BadRequest and
    ErrorInfo), without the ID number in its message: nothing issued, the hold still
    active (read back with GetHold), then released."""
    h = ch.hold(VENUE, [Item("night", s, qty=len(ids)) for s, ids in lines])
    days = {s: dt.datetime.strptime(s.split("-")[1], "%Y%m%d").date() for s, _ in lines}
    before = {s: sold(ch, d, s) for s, d in days.items()}
    e = api_error(ch.confirm, h, order_id, holders=[ids for _, ids in lines], **kw)
    assert (e.code, e.reason) == (FAILED, reason)
    assert e.violations and e.violations[0].field == field and e.metadata["field"] == field
    assert not any(x in str(e) or x.lower() in str(e) for x in EVERY_ID)
    st = ch.hold_status(VENUE, h.hold_id)
    assert (st.status, st.order_id) == ("active", "")
    assert {s: sold(ch, d, s) for s, d in days.items()} == before
    ch.release(h)


def scan(server, code: str) -> str:
    """The demo gate's scan of `code` at north-1 (raw GateService.Verify, now); the
    reason's name."""
    with grpc.insecure_channel(server.address) as ch:
        r = gate_pb2_grpc.GateServiceStub(ch).Verify(
            gate_pb2.VerifyRequest(code=code, gate_id="north-1", direction=common_pb2.IN),
            metadata=server.meta("demo-gate"), timeout=10)
    return common_pb2.ScanReason.Name(r.reason)


def test_one_id_number_is_held_to_its_limits_across_channels(conns, limited):
    ota, window = ChannelClient(conns["demo-ota"]), ChannelClient(conns["demo-window"])
    assert limited.product_pricing(VENUE, "night").id_limits == IdLimits(VENUE, "night", 2, 1)
    o = buy(ota, "ota-night-1", [(slot(MON, 8), [A])])
    assert [t.holder for t in o.tickets] == [masked(A)]
    # the window, another channel, for the same slot: refused, naming the holder by the
    # proto path of the line it is on (C, on the first line, is within every limit)
    refused_confirm(window, "window-night-1", [(slot(MON, 10), [C]), (slot(MON, 8), [A])],
                    "ID_LIMIT", "holders[1].id_numbers[0]", method="cash")
    # a second slot that day is fine; a third that day is refused, whichever channel
    buy(window, "window-night-2", [(slot(MON, 10), [A])], method="cash")
    refused_confirm(ota, "ota-night-2", [(slot(MON, 12), [A])], "ID_LIMIT", "holders[0].id_numbers[0]")
    refused_confirm(window, "window-night-3", [(slot(MON, 14), [A])], "ID_LIMIT",
                    "holders[0].id_numbers[0]", method="cash")
    # the same person twice in one order is counted too
    refused_confirm(ota, "ota-night-3", [(slot(TUE, 8), [C, C])], "ID_LIMIT", "holders[0].id_numbers[1]")
    # the next day is another day; other persons are counted apart
    buy(ota, "ota-night-4", [(slot(TUE, 8), [A]), (slot(TUE, 10), [C])])


def test_a_blacklisted_person_is_blocked_at_the_gate_and_refused_at_sale(server, conns, limited):
    op, ota, window = limited, ChannelClient(conns["demo-ota"]), ChannelClient(conns["demo-window"])
    # a ticket valid all day, bought before the person is listed (given in lower case)
    ticket = buy(window, "window-night-b1", [(demo.day_slot_id(MON), [B.lower()])], method="cash").tickets[0]
    until = dt.datetime.fromtimestamp(int(server.now()) + 3600, dt.UTC)
    entry = op.blacklist(VENUE, B.lower(), reason="resold tickets", until=until)
    assert entry == BlacklistEntry(VENUE, masked(B), True, "resold tickets", until, (ticket.ticket_id,))
    assert scan(server, ticket.code) == "BLOCKED"
    # no channel sells to them, named by the holder's path
    refused_confirm(ota, "ota-night-b2", [(slot(TUE, 12), [B])], "BLACKLISTED", "holders[0].id_numbers[0]")
    refused_confirm(window, "window-night-b2", [(slot(TUE, 12), [D]), (slot(TUE, 12), [B])],
                    "BLACKLISTED", "holders[1].id_numbers[0]", method="cash")
    # listed once: a second Blacklist is refused and leaves the first entry as it was
    assert refused(op.blacklist, VENUE, B, reason="something else") == \
        ("ALREADY_EXISTS", "ALREADY_EXISTS", "id_number")
    # taken off: the tickets the entry blocked are unblocked, the code verifies again,
    # and they may buy again
    off = op.unblacklist(VENUE, B)
    assert off == BlacklistEntry(VENUE, masked(B), False, "resold tickets", until, (ticket.ticket_id,))
    assert scan(server, ticket.code) == "OK"
    buy(ota, "ota-night-b3", [(slot(TUE, 12), [B])])
    assert refused(op.unblacklist, VENUE, B) == ("NOT_FOUND", "NOT_FOUND", "id_number")


def test_bad_input_and_other_roles_are_refused_and_change_nothing(conns, limited):
    op, admin = limited, AdminClient(conns["admin"])
    ota = ChannelClient(conns["demo-ota"])
    admin.create_venue("hills", "Hills")
    admin.create_zone("hills", "top")
    admin.create_product("hills", "hike", ["top"], price_fen=5000, real_name=True)
    night = op.product_pricing(VENUE, "night")

    def limits(product="night", venue=VENUE, client=op, **kw):
        return refused(client.set_id_limits, venue, product, **kw)

    def listing(id_number=D, venue=VENUE, client=op, **kw):
        return refused(client.blacklist, venue, id_number, **kw)

    assert limits(per_day=10_001) == (INVALID, INVALID, "per_day")
    assert limits(per_slot=10_001) == (INVALID, INVALID, "per_slot")
    assert limits(product="nope", per_day=1) == ("NOT_FOUND", "NOT_FOUND", "product_id")
    assert limits(product="hike", per_day=1) == ("NOT_FOUND", "NOT_FOUND", "product_id")   # another venue's
    assert limits(product="", per_day=1) == (INVALID, INVALID, "product_id")
    assert limits(venue="hills", product="hike", per_day=1)[::2] == (DENIED, "venue_id")
    assert listing("12345") == (INVALID, INVALID, "id_number")                  # too short
    assert listing("1" * 33) == (INVALID, INVALID, "id_number")                 # too long
    assert listing("110101-19770404") == (INVALID, INVALID, "id_number")
    assert listing("") == (INVALID, INVALID, "id_number")
    assert listing(until=1_000_000) == (INVALID, INVALID, "until")             # in the past
    assert listing(reason="x" * 201) == (INVALID, INVALID, "reason")
    assert listing(venue="hills")[::2] == (DENIED, "venue_id")
    assert refused(op.unblacklist, VENUE, "12345") == (INVALID, INVALID, "id_number")
    assert refused(op.unblacklist, "hills", D)[::2] == (DENIED, "venue_id")
    # a gate, a channel, a seller or finance may set no limit and list no one
    for who in ("demo-gate", "demo-ota", "demo-window", "demo-finance"):
        client = AdminClient(conns[who])
        assert limits(client=client, per_day=9)[:2] == (DENIED, "ROLE_NOT_ALLOWED")
        assert listing(client=client)[:2] == (DENIED, "ROLE_NOT_ALLOWED")
        assert refused(client.unblacklist, VENUE, B)[:2] == (DENIED, "ROLE_NOT_ALLOWED")
    # nothing changed: the limits as they were, D on no blacklist and free to buy
    assert op.product_pricing(VENUE, "night") == night
    assert admin.product_pricing("hills", "hike").id_limits == IdLimits("hills", "hike")
    assert refused(op.unblacklist, VENUE, D) == ("NOT_FOUND", "NOT_FOUND", "id_number")
    buy(ota, "ota-night-d1", [(slot(TUE, 14), [D])])
    # limits removed: A buys a third ticket that day
    assert op.set_id_limits(VENUE, "night") == IdLimits(VENUE, "night")
    try:
        buy(ota, "ota-night-a5", [(slot(MON, 14), [A])])
    finally:
        op.set_id_limits(VENUE, "night", per_day=2, per_slot=1)


def test_set_up_is_audited_without_the_id_number(server, conns, limited):
    op, admin = limited, AdminClient(conns["admin"])
    req = admin_pb2.BlacklistRequest(venue_id=VENUE, id_number=E, reason="audit", idempotency_key="bl-e")
    op.blacklist(VENUE, E, reason="audit", key="bl-e")
    op.unblacklist(VENUE, E, key="unbl-e")
    ops = list(admin.audit_records(0, principal_id="demo-operator"))
    ok = {r.method for r in ops if r.result == "OK"}
    assert {"/turnstile.v1.AdminService/SetIdLimits", "/turnstile.v1.AdminService/Blacklist",
            "/turnstile.v1.AdminService/Unblacklist"} <= ok
    # the request digest is keyed: not a plain hash of the request that carried E
    body = req.SerializeToString()
    plain = {hashlib.sha256(body).hexdigest(), hashlib.sha1(body).hexdigest(), hashlib.md5(body).hexdigest(),
             *(hashlib.blake2b(body, digest_size=n).hexdigest() for n in (16, 20, 32, 64))}
    digests = {r.request_digest for r in ops if r.method.endswith("/Blacklist")}
    assert digests and not digests & plain
    # no audit record, no log line and no file of the data dir holds an ID number in clear
    every = repr(list(admin.audit_records(0)))
    log = "\n".join(server.log)
    logged = {json.loads(ln).get("method") for ln in server.log if ln.startswith("{")}
    assert {"SetIdLimits", "Blacklist", "Unblacklist", "Confirm"} <= logged     # a line per call
    for x in EVERY_ID:
        for form in {x, x.lower()}:
            assert form not in every
            assert form not in log, "an ID number in the server's log"
            for root, _, files in os.walk(server.data):
                for name in files:
                    with open(os.path.join(root, name), "rb") as f:
                        assert form.encode() not in f.read(), os.path.join(root, name)
