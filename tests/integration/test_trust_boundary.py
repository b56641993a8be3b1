"""The trust boundary of issue 9 tried from outside, as a gate vendor, an OTA and the
operator of a second venue would try it, against a real `turnstile serve`:

1. time comes from the server (scan_time within a bounded skew; invalid Timestamps);
2. scope is checked on the object, ids are per venue (two venues on one shard);
3. idempotency keys per principal, order ids per channel;
4. face enrolment only by those who meet the holder, only for its venue's holders;
5. strict, cheap input checks (empty and huge ids, closed slots);
6. the contract: GetOrder's ticket state, entries left and masked holder; GetHold.

Expectations come from the issue, DESIGN.md 4.1/4.5/4.6/5, docs/ROLES.md and the proto
comments, never from the code under test."""
from __future__ import annotations

import datetime as dt
import time

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from turnstile.clients.base import error_info
from turnstile.engine import demo
from tests.integration.conftest import Stubs, start_server, stop_server, venue_day
from turnstile.v1 import (admin_pb2, common_pb2, gate_pb2, gate_pb2_grpc, inventory_pb2,
                          member_pb2, report_pb2, sales_pb2)

IN, OUT = common_pb2.IN, common_pb2.OUT
R = common_pb2.ScanReason
INVALID = grpc.StatusCode.INVALID_ARGUMENT
ADMITTED = (R.Value("OK"), R.Value("OK_REENTRY"))
ID_BOTH = "110101199003071234"       # a holder with tickets in westlake and hills
ID_HILLS = "110101199003075678"      # a holder with tickets in hills only


class Api(Stubs):
    """Raw stubs over one channel to a server, and its keys (demo ones and ours)."""

    def call(self, method, request, who: str):
        return method(request, metadata=self.server.meta(who), timeout=10)

    def refused(self, method, request, who: str) -> grpc.RpcError:
        with pytest.raises(grpc.RpcError) as e:
            self.call(method, request, who)
        return e.value

    def principal(self, pid: str, role: int, venues=(), channel: str = "") -> None:
        """A principal of ours with an API key, usable as server.meta(pid)."""
        self.call(self.admin.CreatePrincipal, admin_pb2.CreatePrincipalRequest(
            principal_id=pid, role=role, venue_ids=list(venues), channel=channel), "admin")
        key = self.call(self.admin.CreateApiKey, admin_pb2.CreateApiKeyRequest(principal_id=pid), "admin")
        self.server.keys[pid] = key.secret

    def buy(self, who: str, venue: str, product: str, slot: str, qty: int = 1, *, key: str,
            order: str, holders: list[str] | None = None):
        """Hold and confirm; (hold, confirm response)."""
        h = self.call(self.sales.Hold, sales_pb2.HoldRequest(
            venue_id=venue, idempotency_key=key,
            items=[sales_pb2.Item(product_id=product, slot_ids=[slot], qty=qty)]), who)
        c = self.call(self.sales.Confirm, sales_pb2.ConfirmRequest(
            hold_id=h.hold_id, order_id=order,
            payment=sales_pb2.Payment(method="alipay", reference=f"pay-{order}", amount_fen=h.amount_fen),
            holders=[sales_pb2.Holders(id_numbers=holders)] if holders else []), who)
        return h, c

    def slot_stock(self, who: str, venue: str, date: str, slot: str) -> inventory_pb2.SlotStock:
        r = self.call(self.inv.Availability, inventory_pb2.AvailabilityRequest(
            venue_id=venue, date_from=date), who)
        return next(s for s in r.slots if s.slot_id == slot)


def ts(seconds: float, nanos: int = 0) -> Timestamp:
    return Timestamp(seconds=int(seconds), nanos=nanos)


# ---------------------------------------------------------------------------------------
# A server on the machine's clock with the default skew, and a venue of our own whose
# local time is about noon now: its slot is open whatever hour the suite runs at, and no
# venue-local midnight is near. Its names are its own (np-...): ids per venue are
# section 2's business, not these tests'.

NP = "nowpark"


@pytest.fixture(scope="module")
def now_api(tmp_path_factory):
    data = str(tmp_path_factory.mktemp("now"))
    server = start_server(data, venue_day(), ("--shards", "1", "--scan-skew-s", "300"),
                          clock=False)
    api = Api(server)
    try:
        now = int(server.now())
        off = round((12 * 3600 - now % 86400) / 900) * 900 or 900
        day = (now + off) // 86400
        midnight = day * 86400 - off                 # venue-local midnight, UTC seconds
        date = dt.date(1970, 1, 1) + dt.timedelta(days=day)
        api.np = {"off": off, "date": date.isoformat(), "midnight": midnight,
                  "yesterday": (date - dt.timedelta(days=1)).isoformat()}
        a, adm = api.admin, "admin"
        api.call(a.CreateVenue, admin_pb2.CreateVenueRequest(
            venue_id=NP, name="Now Park", utc_offset_s=off, shard=0), adm)
        for zone in ("np-main", "np-lake"):
            api.call(a.CreateZone, admin_pb2.CreateZoneRequest(venue_id=NP, zone_id=zone,
                                                               live_capacity=100), adm)
        for zone, gate, mode in (("np-main", "np-in", admin_pb2.GATE_IN),
                                 ("np-main", "np-out", admin_pb2.GATE_OUT),
                                 ("np-lake", "np-lake", admin_pb2.GATE_BOTH)):
            api.call(a.CreateGate, admin_pb2.CreateGateRequest(venue_id=NP, zone_id=zone, gate_id=gate,
                                                               mode=mode), adm)
        single = admin_pb2.EntryRule(max_entries=1, valid_days=1)
        for product, zone, rule, real_name in (
                ("np-plain", "np-main", single, False),
                ("np-named", "np-main", single, True),
                ("np-annual", "np-lake", admin_pb2.EntryRule(max_entries=0, daily_entries=1, valid_days=365),
                 False)):
            api.call(a.CreateProduct, admin_pb2.CreateProductRequest(
                venue_id=NP, product_id=product, zone_ids=[zone], rule=rule, price_fen=1000,
                real_name=real_name, refundable=True), adm)
        slots = [("np-now", "np-main", date, 8, 16), ("np-lake", "np-lake", date, 8, 16),
                 ("np-past", "np-main", date, 6, 10),       # ended about two hours ago
                 ("np-yesterday", "np-main", date - dt.timedelta(days=1), 10, 12)]
        api.call(a.CreateSlots, admin_pb2.CreateSlotsRequest(venue_id=NP, slots=[admin_pb2.SlotSpec(
            slot_id=sid, zone_id=zone, date=d.isoformat(),
            start=ts((d - date).days * 86400 + midnight + h0 * 3600),
            end=ts((d - date).days * 86400 + midnight + h1 * 3600), capacity=100)
            for sid, zone, d, h0, h1 in slots]), adm)
        api.principal("np-gate", admin_pb2.GATE, [NP])
        api.principal("np-ota", admin_pb2.CHANNEL, [NP], "ota")
        api.principal("np-ctrip", admin_pb2.CHANNEL, [NP], "ctrip")
        yield api
    finally:
        api.ch.close()
        stop_server(server)


def np_scan(api, code: str, gate: str = "np-in", direction=IN, scan_time: Timestamp | None = None):
    req = gate_pb2.VerifyRequest(code=code, gate_id=gate, direction=direction)
    if scan_time is not None:
        req.scan_time.CopyFrom(scan_time)
    return api.call(api.gate.Verify, req, "np-gate")


def np_codes(api, n: int, tag: str, product: str = "np-plain", slot: str = "np-now") -> list[str]:
    _, c = api.buy("np-ota", NP, product, slot, n, key=f"cart-{tag}", order=f"order-{tag}")
    return [t.code for t in c.tickets]


# 1. Time comes from the server -------------------------------------------------------

def test_online_scan_time_is_bounded_by_the_server_clock(now_api):
    """A gate's scan_time a day (or ten minutes) away from the server's clock is
    INVALID_ARGUMENT on scan_time, for Verify, VerifyBatch and VerifyStream, and changes
    nothing: the ticket is then admitted at the server's time. A time within the skew
    is taken."""
    api = now_api
    a, b = np_codes(api, 2, "skew")
    now = api.server.now()
    for when in (now + 86400, now + 600, now - 3600):
        e = api.refused(api.gate.Verify, gate_pb2.VerifyRequest(
            code=a, gate_id="np-in", direction=IN, scan_time=ts(when)), "np-gate")
        assert (e.code(), error_info(e)[1]) == (INVALID, "scan_time"), e.details()
    batch = gate_pb2.VerifyBatchRequest(codes=[a], gate_id="np-in", direction=IN, scan_time=ts(now + 86400))
    e = api.refused(api.gate.VerifyBatch, batch, "np-gate")
    assert (e.code(), error_info(e)[1]) == (INVALID, "scan_time"), e.details()
    with pytest.raises(grpc.RpcError) as e:
        list(api.gate.VerifyStream(iter([batch]), metadata=api.server.meta("np-gate"), timeout=10))
    assert e.value.code() == INVALID
    assert np_scan(api, a).reason == R.Value("OK")
    assert np_scan(api, b, scan_time=ts(api.server.now() + 60)).reason == R.Value("OK")


def test_a_gate_clock_a_day_ahead_does_not_readmit_an_annual_pass(now_api):
    """The issue's repro: an annual pass (unlimited visits, one a day) admitted, then
    refused ALREADY_USED, stays refused when the gate claims tomorrow, and the zone's
    inside count stays 1 (ZONE_FULL is not switched off)."""
    api = now_api
    (code,) = np_codes(api, 1, "annual", "np-annual", "np-lake")
    assert np_scan(api, code, "np-lake").reason == R.Value("OK")
    assert np_scan(api, code, "np-lake").reason == R.Value("ALREADY_USED")
    try:
        r = np_scan(api, code, "np-lake", scan_time=ts(api.server.now() + 86400))
    except grpc.RpcError as e:
        assert (e.code(), error_info(e)[1]) == (INVALID, "scan_time"), e.details()
    else:
        pytest.fail(f"a scan_time a day ahead was decided: {R.Name(r.reason)}")
    assert np_scan(api, code, "np-lake").reason == R.Value("ALREADY_USED")
    counts = api.call(api.report.LiveCounts, report_pb2.LiveCountsRequest(venue_id=NP), "admin")
    assert {z.zone_id: z.inside for z in counts.zones}["np-lake"] == 1


def test_a_gate_clock_never_moves_a_scan_to_the_day_before(tmp_path):
    """Two minutes after venue-local midnight, within the default 5-minute skew: a
    scan_time on the day before is refused (a pass used today would be admitted again
    as yesterday's visit), one on the same day is decided."""
    day = venue_day()
    at = demo.local_time(day, 0, 2)
    server = start_server(str(tmp_path / "data"), day, ("--clock-offset-s", str(int(at - time.time())),
                                                        "--scan-skew-s", "300"))
    try:
        gate = gate_pb2_grpc.GateServiceStub(server.channel())

        def verify(when: float):
            return gate.Verify(gate_pb2.VerifyRequest(code="NOT-A-CODE", gate_id="north-1", direction=IN,
                                                      scan_time=ts(when)),
                               metadata=server.meta("demo-gate"), timeout=10)
        with pytest.raises(grpc.RpcError) as e:
            verify(server.now() - 240)                   # 23:58 the day before
        assert (e.value.code(), error_info(e.value)[1]) == (INVALID, "scan_time"), e.value.details()
        assert verify(server.now() + 60).reason == R.Value("FORGED")   # same day: decided
    finally:
        stop_server(server)


@pytest.mark.parametrize("bad", [ts(0, -5), ts(0, 1_000_000_000), ts(10**12), ts(-10**12)],
                         ids=["nanos-5", "nanos-1e9", "seconds-1e12", "seconds-minus-1e12"])
def test_an_invalid_timestamp_is_refused_and_changes_nothing(now_api, bad):
    api = now_api
    (code,) = np_codes(api, 1, f"badts-{bad.seconds}-{bad.nanos}")
    if bad.seconds == 0:
        bad.seconds = int(api.server.now())          # a valid second: only nanos is wrong
    e = api.refused(api.gate.Verify, gate_pb2.VerifyRequest(
        code=code, gate_id="np-in", direction=IN, scan_time=bad), "np-gate")
    assert (e.code(), error_info(e)[1]) == (INVALID, "scan_time"), e.details()
    assert np_scan(api, code).reason == R.Value("OK")      # not consumed


def test_uploaded_scans_keep_gate_times_within_the_offline_window(now_api):
    """Offline scans are facts at the gate's times, but not from the future (beyond the
    skew) nor older than the offline window (default 7 days)."""
    api = now_api
    a, b = np_codes(api, 2, "upload")
    now = api.server.now()

    def upload(code, when, nonce):
        return api.gate.UploadScans(gate_pb2.UploadScansRequest(gate_id="np-in", scans=[
            gate_pb2.OfflineScan(nonce=nonce, sequence=1, code=code, direction=IN, scan_time=ts(when),
                                 admitted=1, reason=R.Value("OK"))]),
            metadata=api.server.meta("np-gate"), timeout=10)

    for when, nonce in ((now + 3600, "n-future"), (now - 30 * 86400, "n-old")):
        with pytest.raises(grpc.RpcError) as e:
            upload(a, when, nonce)
        assert (e.value.code(), error_info(e.value)[1]) == (INVALID, "scans[0].scan_time"), \
            e.value.details()
    assert np_scan(api, a).reason == R.Value("OK")          # nothing was applied
    r = upload(b, now - 600, "n-ten-minutes-ago").results[0]
    assert (r.status, r.reason) == (gate_pb2.APPLIED, R.Value("OK"))
    assert np_scan(api, b).reason == R.Value("ALREADY_USED")


# 5. Strict input: closed slots ---------------------------------------------------------

@pytest.mark.parametrize("slot", ["np-past", "np-yesterday"])
def test_a_slot_that_ended_cannot_be_held(now_api, slot):
    api = now_api
    date = api.np["yesterday"] if slot == "np-yesterday" else api.np["date"]
    before = api.slot_stock("admin", NP, date, slot)
    e = api.refused(api.sales.Hold, sales_pb2.HoldRequest(venue_id=NP, idempotency_key=f"closed-{slot}", items=[
        sales_pb2.Item(product_id="np-plain", slot_ids=[slot], qty=1)]), "np-ota")
    assert e.code() == grpc.StatusCode.FAILED_PRECONDITION, e.details()
    assert error_info(e) == ("SLOT_CLOSED", "items[0].slot_ids[0]")
    after = api.slot_stock("admin", NP, date, slot)
    assert (after.held, after.sold) == (before.held, before.sold) == (0, 0)


# 6. The contract: GetOrder and GetHold -----------------------------------------------

def test_get_order_shows_each_ticket_state_entries_left_and_masked_holder(now_api):
    api = now_api
    ids = ["110101199001011111", "110101199001012222", "110101199001013333"]
    _, c = api.buy("np-ota", NP, "np-named", "np-now", 3, key="cart-state", order="order-state", holders=ids)
    a, b, x = c.tickets
    assert a.holder and ids[0] not in a.holder and a.holder[-4:] == ids[0][-4:]

    def tickets():
        o = api.call(api.sales.GetOrder, sales_pb2.GetOrderRequest(order_id="order-state"), "np-ota")
        return {t.ticket_id: t for t in o.tickets}

    got = tickets()
    assert [got[t.ticket_id].holder for t in (a, b, x)] == [t.holder for t in (a, b, x)]
    assert {t.state for t in got.values()} == {sales_pb2.TICKET_ISSUED}
    assert {t.entries_left for t in got.values()} == {1}
    assert np_scan(api, a.code).reason == R.Value("OK")
    got = tickets()
    assert (got[a.ticket_id].state, got[a.ticket_id].entries_left) == (sales_pb2.TICKET_INSIDE, 0)
    assert got[b.ticket_id].state == sales_pb2.TICKET_ISSUED
    assert np_scan(api, a.code, "np-out", OUT).reason == R.Value("OK")
    assert tickets()[a.ticket_id].state == sales_pb2.TICKET_USED
    api.call(api.sales.Refund, sales_pb2.RefundRequest(order_id="order-state", refund_id="r1",
                                                       ticket_ids=[b.ticket_id]), "np-ota")
    api.call(api.admin.BlockTicket, admin_pb2.BlockTicketRequest(venue_id=NP, ticket_id=x.ticket_id,
                                                                 blocked=True), "admin")
    got = tickets()
    assert [got[t.ticket_id].state for t in (a, b, x)] == \
        [sales_pb2.TICKET_USED, sales_pb2.TICKET_VOIDED, sales_pb2.TICKET_BLOCKED]


def test_get_hold_tells_what_became_of_a_hold(now_api):
    api = now_api

    def hold(key, ttl=0):
        return api.call(api.sales.Hold, sales_pb2.HoldRequest(venue_id=NP, idempotency_key=key, ttl_s=ttl, items=[
            sales_pb2.Item(product_id="np-plain", slot_ids=["np-now"], qty=2)]), "np-ota")

    def status(h, who="np-ota"):
        return api.call(api.sales.GetHold, sales_pb2.GetHoldRequest(hold_id=h.hold_id), who)

    paid, released, short = hold("gh-paid"), hold("gh-released"), hold("gh-short", ttl=1)
    info = status(paid)
    assert (info.status, info.venue_id, info.amount_fen) == (sales_pb2.HOLD_ACTIVE, NP, paid.amount_fen)
    assert [(i.product_id, list(i.slot_ids), i.qty) for i in info.items] == [("np-plain", ["np-now"], 2)]
    e = api.refused(api.sales.GetHold, sales_pb2.GetHoldRequest(hold_id=paid.hold_id), "np-ctrip")
    assert e.code() == grpc.StatusCode.NOT_FOUND            # another channel's cart
    api.call(api.sales.Confirm, sales_pb2.ConfirmRequest(hold_id=paid.hold_id, order_id="order-gh", payment=(
        sales_pb2.Payment(method="alipay", amount_fen=paid.amount_fen))), "np-ota")
    info = status(paid)
    assert (info.status, info.order_id) == (sales_pb2.HOLD_CONFIRMED, "order-gh")
    api.call(api.sales.Release, sales_pb2.ReleaseRequest(hold_id=released.hold_id), "np-ota")
    assert status(released).status == sales_pb2.HOLD_RELEASED
    while api.server.now() < short.expires_at.seconds + 1.5:
        time.sleep(0.2)
    assert status(short).status == sales_pb2.HOLD_EXPIRED


# ---------------------------------------------------------------------------------------
# A server at 07:00 venue-local (demo clock, scan times anywhere on the day), one shard
# holding westlake (the demo) and a second venue, hills, that uses the same names.

HILLS = "hills"


@pytest.fixture(scope="module")
def two_api(tmp_path_factory):
    data = str(tmp_path_factory.mktemp("two"))
    server = start_server(data, venue_day(), ("--shards", "1"))
    api = Api(server)
    api.created = {}
    try:
        day = server.day
        api.s8, api.s10 = demo.slot_id("main", day, 8), demo.slot_id("main", day, 10)
        api.hills_only = f"hills-only-{day:%Y%m%d}"
        a, adm = api.admin, "admin"
        rule = admin_pb2.EntryRule(max_entries=1, valid_days=1)

        def slots(zone, ids_hours):
            return admin_pb2.CreateSlotsRequest(venue_id=HILLS, slots=[admin_pb2.SlotSpec(
                slot_id=sid, zone_id=zone, date=day.isoformat(), start=ts(demo.local_time(day, h)),
                end=ts(demo.local_time(day, h + 4)), capacity=50) for sid, h in ids_hours])

        steps = [
            ("venue", a.CreateVenue, admin_pb2.CreateVenueRequest(venue_id=HILLS, name="Fragrant Hills",
                                                                  utc_offset_s=8 * 3600, shard=0)),
            # names westlake has too: each must be created (ids are per venue)
            ("zone main", a.CreateZone, admin_pb2.CreateZoneRequest(venue_id=HILLS, zone_id="main",
                                                                    live_capacity=500)),
            ("gate north-1", a.CreateGate, admin_pb2.CreateGateRequest(
                venue_id=HILLS, zone_id="main", gate_id="north-1", mode=admin_pb2.GATE_IN)),
            ("product adult", a.CreateProduct, admin_pb2.CreateProductRequest(
                venue_id=HILLS, product_id="adult", zone_ids=["main"], price_fen=5000, rule=rule)),
            ("slots", a.CreateSlots, slots("main", [(api.s8, 8), (api.s10, 10)])),
            # names of hills' own, for the scope tests (they must not hang on the names above)
            ("zone hills-park", a.CreateZone, admin_pb2.CreateZoneRequest(venue_id=HILLS, zone_id="hills-park")),
            ("gate hills-east", a.CreateGate, admin_pb2.CreateGateRequest(
                venue_id=HILLS, zone_id="hills-park", gate_id="hills-east", mode=admin_pb2.GATE_IN)),
            ("product hills-day", a.CreateProduct, admin_pb2.CreateProductRequest(
                venue_id=HILLS, product_id="hills-day", zone_ids=["hills-park"], price_fen=5000, rule=rule)),
            ("product hills-night", a.CreateProduct, admin_pb2.CreateProductRequest(
                venue_id=HILLS, product_id="hills-night", zone_ids=["hills-park"], price_fen=6000,
                real_name=True, rule=rule)),
            ("slots hills-only", a.CreateSlots, slots("hills-park", [(api.hills_only, 8)])),
        ]
        for name, method, req in steps:
            try:
                api.call(method, req, adm)
                api.created[name] = "ok"
            except grpc.RpcError as e:
                api.created[name] = e.code().name
        api.principal("wl-op", admin_pb2.OPERATOR, ["westlake"])
        api.principal("hills-op", admin_pb2.OPERATOR, [HILLS])
        api.principal("hills-gate", admin_pb2.GATE, [HILLS])
        api.principal("both-gate", admin_pb2.GATE, ["westlake", HILLS])
        api.principal("hills-window", admin_pb2.SELLER, [HILLS], "window")
        api.principal("wl-ctrip", admin_pb2.CHANNEL, ["westlake"], "ctrip")
        api.principal("wl-ota-2", admin_pb2.CHANNEL, ["westlake"], "ota")
        yield api
    finally:
        api.ch.close()
        stop_server(server)


def at(api, hour: int, minute: int = 0) -> Timestamp:
    return ts(demo.local_time(api.server.day, hour, minute))


def two_scan(api, who: str, code: str, gate: str = "north-1", venue: str = ""):
    return api.call(api.gate.Verify, gate_pb2.VerifyRequest(
        code=code, gate_id=gate, venue_id=venue, direction=IN, scan_time=at(api, 8, 30)), who)


# 2. Ids per venue, scope on the object -------------------------------------------------

def test_a_second_venue_on_the_shard_uses_the_same_names(two_api):
    api = two_api
    assert set(api.created.values()) == {"ok"}, api.created
    hills = api.call(api.admin.GetCatalog, admin_pb2.GetCatalogRequest(venue_id=HILLS), "hills-op")
    assert sorted(z.zone_id for z in hills.zones) == ["hills-park", "main"]
    assert ("north-1", HILLS, "main") in [(g.gate_id, g.venue_id, g.zone_id) for g in hills.gates]
    assert ("adult", ["main"]) in [(p.product_id, list(p.zone_ids)) for p in hills.products]
    westlake = api.call(api.admin.GetCatalog, admin_pb2.GetCatalogRequest(venue_id="westlake"), "wl-op")
    assert len(westlake.gates) == 6 and {p.product_id for p in westlake.products} >= {"adult", "night"}
    date = api.server.day.isoformat()
    assert api.slot_stock("hills-op", HILLS, date, api.s8).capacity == 50
    assert api.slot_stock("wl-op", "westlake", date, api.s8).capacity == 2000


def test_an_operator_cannot_change_another_venues_stock(two_api):
    """westlake's operator naming westlake but a slot only hills has: NOT_FOUND, hills
    unchanged; naming a slot id both have: westlake's changes, hills' does not."""
    api = two_api
    date = api.server.day.isoformat()
    for method, req in (
            (api.admin.SetSlotCapacity, admin_pb2.SetSlotCapacityRequest(
                venue_id="westlake", slot_id=api.hills_only, capacity=5, idempotency_key="cap-1")),
            (api.admin.SetAllotment, admin_pb2.SetAllotmentRequest(
                venue_id="westlake", slot_id=api.hills_only, channel="ota", capacity=40,
                idempotency_key="allot-1"))):
        e = api.refused(method, req, "wl-op")
        assert e.code() == grpc.StatusCode.NOT_FOUND, e.details()
    s = api.slot_stock("hills-op", HILLS, date, api.hills_only)
    assert (s.capacity, list(s.allotments)) == (50, [])

    api.call(api.admin.SetSlotCapacity, admin_pb2.SetSlotCapacityRequest(
        venue_id="westlake", slot_id=api.s10, capacity=1500, idempotency_key="cap-2"), "wl-op")
    api.call(api.admin.SetAllotment, admin_pb2.SetAllotmentRequest(
        venue_id="westlake", slot_id=api.s10, channel="ctrip", capacity=20, idempotency_key="allot-2"),
        "wl-op")
    w = api.slot_stock("wl-op", "westlake", date, api.s10)
    assert w.capacity == 1500 and [(x.channel, x.capacity) for x in w.allotments] == [("ctrip", 20)]
    h = api.slot_stock("hills-op", HILLS, date, api.s10)
    assert (h.capacity, list(h.allotments)) == (50, [])


def test_an_operator_cannot_block_another_venues_ticket(two_api):
    api = two_api
    _, c = api.buy("hills-window", HILLS, "hills-day", api.hills_only, key="cart-block", order="hills-block")
    (t,) = c.tickets
    e = api.refused(api.admin.BlockTicket, admin_pb2.BlockTicketRequest(
        venue_id="westlake", ticket_id=t.ticket_id, blocked=True, idempotency_key="block-1"), "wl-op")
    assert e.code() == grpc.StatusCode.NOT_FOUND, e.details()
    assert two_scan(api, "hills-gate", t.code, "hills-east").reason == R.Value("OK")


def test_a_gate_id_resolves_to_the_callers_venue(two_api):
    api = two_api
    _, w = api.buy("demo-ota", "westlake", "adult", api.s8, 3, key="cart-gates-w", order="gates-w")
    _, h = api.buy("hills-window", HILLS, "adult", api.s8, 2, key="cart-gates-h", order="gates-h")
    wa, wb, wc = (t.code for t in w.tickets)
    ha, hb = (t.code for t in h.tickets)
    # hills' gate north-1 is hills' gate: a westlake code is refused there, not admitted
    assert two_scan(api, "hills-gate", wa).reason not in ADMITTED
    assert two_scan(api, "hills-gate", ha).reason == R.Value("OK")
    # westlake's gate north-1 is westlake's (and the refusal above consumed nothing)
    assert two_scan(api, "demo-gate", wa).reason == R.Value("OK")
    # a gate of both venues must say which north-1
    e = api.refused(api.gate.Verify, gate_pb2.VerifyRequest(
        code=wb, gate_id="north-1", direction=IN, scan_time=at(api, 8, 30)), "both-gate")
    assert (e.code(), error_info(e)[1]) == (INVALID, "venue_id"), e.details()
    assert two_scan(api, "both-gate", wb, venue="westlake").reason == R.Value("OK")
    assert two_scan(api, "both-gate", hb, venue=HILLS).reason == R.Value("OK")
    assert two_scan(api, "both-gate", wc, venue=HILLS).reason not in ADMITTED


# 3. Idempotency per principal, order ids per channel -------------------------------------

def test_idempotency_keys_are_per_principal_and_order_ids_per_channel(two_api):
    api = two_api
    item = sales_pb2.Item(product_id="adult", slot_ids=[api.s8], qty=1)
    holds = {who: api.call(api.sales.Hold, sales_pb2.HoldRequest(venue_id="westlake", idempotency_key="cart-1",
                                                                 items=[item]), who)
             for who in ("demo-ota", "wl-ctrip", "wl-ota-2")}
    assert len({h.hold_id for h in holds.values()}) == 3        # three carts, not one answer
    for who, h in holds.items():
        info = api.call(api.sales.GetHold, sales_pb2.GetHoldRequest(hold_id=h.hold_id), who)
        assert info.status == sales_pb2.HOLD_ACTIVE
    for who in ("demo-ota", "wl-ctrip"):
        api.call(api.sales.Confirm, sales_pb2.ConfirmRequest(hold_id=holds[who].hold_id, order_id="order-1", payment=(
            sales_pb2.Payment(method="alipay", amount_fen=holds[who].amount_fen))), who)
    for who, channel in (("demo-ota", "ota"), ("wl-ctrip", "ctrip")):
        o = api.call(api.sales.GetOrder, sales_pb2.GetOrderRequest(order_id="order-1"), who)
        assert (o.hold_id, o.channel) == (holds[who].hold_id, channel)
    o = api.call(api.sales.GetOrder, sales_pb2.GetOrderRequest(order_id="order-1", channel="ctrip"), "admin")
    assert o.hold_id == holds["wl-ctrip"].hold_id
    e = api.refused(api.sales.GetOrder, sales_pb2.GetOrderRequest(order_id="order-1"), "wl-op")
    assert (e.code(), error_info(e)[1]) == (INVALID, "channel"), e.details()
    # two operators, one key each in their own venue: two zones, not one answer
    for who, venue, zone in (("wl-op", "westlake", "garden-w"), ("hills-op", HILLS, "garden-h")):
        z = api.call(api.admin.CreateZone, admin_pb2.CreateZoneRequest(
            venue_id=venue, zone_id=zone, idempotency_key="setup-1"), who)
        assert (z.venue_id, z.zone_id) == (venue, zone)
        cat = api.call(api.admin.GetCatalog, admin_pb2.GetCatalogRequest(venue_id=venue), who)
        assert zone in [x.zone_id for x in cat.zones]


# 4. Face enrolment -------------------------------------------------------------------

@pytest.fixture(scope="module")
def holders(two_api):
    """ID_BOTH holds one westlake and two hills real-name tickets; ID_HILLS hills only."""
    api = two_api
    api.buy("demo-window", "westlake", "night", api.s8, key="cart-face-w", order="face-w",
            holders=[ID_BOTH])
    api.buy("hills-window", HILLS, "hills-night", api.hills_only, 3, key="cart-face-h", order="face-h",
            holders=[ID_BOTH, ID_BOTH, ID_HILLS])
    return api


def enroll(api, who, venue, token, id_number):
    return api.call(api.member.EnrollFace, member_pb2.EnrollFaceRequest(
        venue_id=venue, face_token=token, id_number=id_number), who)


def test_a_face_is_enrolled_only_for_a_holder_of_the_callers_venue(holders):
    api = holders
    with pytest.raises(grpc.RpcError) as e:
        enroll(api, "demo-window", "westlake", "face-token-hills-1", ID_HILLS)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND, e.value.details()
    with pytest.raises(grpc.RpcError) as e:
        enroll(api, "demo-window", HILLS, "face-token-hills-2", ID_HILLS)
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED, e.value.details()
    with pytest.raises(grpc.RpcError) as e:
        enroll(api, "demo-ota", "westlake", "face-token-ota-1", ID_BOTH)
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED, e.value.details()
    r = enroll(api, "demo-window", "westlake", "face-token-both-w", ID_BOTH)
    assert r.enrolled and r.tickets == 1 and r.holder[-4:] == ID_BOTH[-4:] and ID_BOTH not in r.holder
    r = enroll(api, "hills-window", HILLS, "face-token-both-h", ID_BOTH)
    assert r.enrolled and r.tickets == 2


# 5. Strict input: empty and huge ids ---------------------------------------------------

def _empty_venue_calls(api):
    item = sales_pb2.Item(product_id="adult", slot_ids=[api.s8], qty=1)
    date = api.server.day.isoformat()
    return {
        "Hold": (api.sales.Hold, sales_pb2.HoldRequest(venue_id="", items=[item], idempotency_key="e-1"),
                 "demo-ota"),
        "Quote": (api.sales.Quote, sales_pb2.QuoteRequest(venue_id="", items=[item]), "demo-ota"),
        "Availability": (api.inv.Availability, inventory_pb2.AvailabilityRequest(venue_id="", date_from=date),
                         "demo-ota"),
        "TicketCounts": (api.report.TicketCounts, report_pb2.TicketCountsRequest(venue_id=""), "wl-op"),
        "GetCatalog": (api.admin.GetCatalog, admin_pb2.GetCatalogRequest(venue_id=""), "wl-op"),
        "CreateVenue": (api.admin.CreateVenue, admin_pb2.CreateVenueRequest(venue_id="", name="x"), "admin"),
    }


@pytest.mark.parametrize("rpc", ["Hold", "Quote", "Availability", "TicketCounts", "GetCatalog", "CreateVenue"])
def test_an_empty_venue_id_is_invalid_argument(two_api, rpc):
    method, req, who = _empty_venue_calls(two_api)[rpc]
    e = two_api.refused(method, req, who)
    assert (e.code(), error_info(e)[1]) == (INVALID, "venue_id"), (e.code(), e.details())


HUGE = "v" * 20_000


def _huge_id_calls(api):
    return {
        "venue_id": (api.admin.GetCatalog, admin_pb2.GetCatalogRequest(venue_id=HUGE), "admin"),
        "order_id": (api.sales.GetOrder, sales_pb2.GetOrderRequest(order_id=HUGE), "demo-ota"),
        "gate_id": (api.gate.Verify, gate_pb2.VerifyRequest(code="X", gate_id=HUGE, direction=IN), "demo-gate"),
    }


@pytest.mark.parametrize("field", ["venue_id", "order_id", "gate_id"])
def test_a_huge_id_is_refused_briefly(two_api, field):
    method, req, who = _huge_id_calls(two_api)[field]
    e = two_api.refused(method, req, who)
    assert (e.code(), error_info(e)[1]) == (INVALID, field), (e.code(), e.details()[:200])
    assert len(e.details()) < 400
