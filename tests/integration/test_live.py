"""See and steer the day over gRPC (issue 15), on a real server: the one-click controls
an operator sends, what a channel and a gate then notice (SALES_PAUSED, ENTRY_CLOSED, a
new flow limit), the live view pushed to a watcher as scans happen, alerts rising and
clearing, gates heard from and falling silent. Every role and scope edge is tried from
outside, as documented in admin.proto, report.proto, gate.proto and docs/ROLES.md."""
from __future__ import annotations

import signal
import time
import uuid

import grpc
import pytest

from turnstile.clients.admin import AdminClient
from turnstile.clients.base import ApiError, Connection, RetryPolicy, error_info
from turnstile.clients.channel import ChannelClient, Item
from turnstile.clients.gate import GateClient
from turnstile.clients.reports import ReportsClient
from turnstile.engine import demo
from turnstile.v1 import admin_pb2, admin_pb2_grpc, gate_pb2, gate_pb2_grpc, report_pb2, report_pb2_grpc
from tests.integration.conftest import start_server, stop_server, venue_day

V = "westlake"
FAST = RetryPolicy(max_attempts=6, initial_backoff_s=0.05, max_backoff_s=0.5, total_s=20)
# quick heartbeats so that a silent gate shows within seconds
ARGS = ("--gate-heartbeat-s", "1", "--gate-down-after-s", "3")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # the server's clock runs from 10:00 venue time on the demo day: its 10 o'clock slots
    # admit (GateClient scans at server.now)
    day = venue_day()
    s = start_server(str(tmp_path_factory.mktemp("live") / "data"), day,
                     ("--clock-offset-s", str(int(demo.local_time(day, 10) - time.time())), *ARGS))
    yield s
    stop_server(s)


@pytest.fixture(scope="module")
def conns(server):
    made = {p: Connection(server.address, key, retry=FAST) for p, key in server.keys.items()}
    yield made
    for c in made.values():
        c.close()


@pytest.fixture(scope="module")
def operator(conns):
    return AdminClient(conns["demo-operator"])


@pytest.fixture(scope="module")
def ota(conns):
    return ChannelClient(conns["demo-ota"])


def slot(server, zone="main", hour=10):
    return demo.slot_id(zone, server.day, hour)


def refusal(fn) -> tuple[str, str, str | None]:
    """(status, ErrorInfo reason, field) of a call that must fail."""
    with pytest.raises(ApiError) as e:
        fn()
    return e.value.code.name, e.value.reason, e.value.field


def buy(ota, server, n=1, zone="main", hour=10) -> list[str]:
    order = ota.buy(V, [Item("adult", slot(server, zone, hour), qty=n)], f"o-{uuid.uuid4().hex[:12]}")
    return [t.code for t in order.tickets]


def gate_client(server, conns, tmp_path, gate="north-1", **kw) -> GateClient:
    return GateClient(server.address, server.keys["demo-gate"], gate, V,
                      state_dir=str(tmp_path / gate), clock=server.now, **kw)


def wait_view(stream, want, what: str, limit_s: float = 20.0) -> report_pb2.LiveView:
    """The first view of the stream for which want(view) holds (the stream keeps
    pushing as things change; a view that never comes fails the test)."""
    end = time.monotonic() + limit_s
    for v in stream:
        if want(v):
            return v
        assert time.monotonic() < end, f"no view with {what} within {limit_s} s; last: {v}"
    raise AssertionError("the stream ended")


def zone(v: report_pb2.LiveView, zone_id: str) -> report_pb2.ZoneLive:
    return next(z for z in v.zones if z.zone_id == zone_id)


# -- sales paused ------------------------------------------------------------------------------
def test_a_paused_venue_answers_sales_paused_to_every_channel_until_resumed(server, conns, operator, ota):
    c = operator.pause_sales(V)
    assert c.sales_paused
    assert refusal(lambda: ota.hold(V, [Item("adult", slot(server))])) == \
        ("FAILED_PRECONDITION", "SALES_PAUSED", "items[0].slot_ids[0]")
    assert refusal(lambda: ota.quote(V, [Item("adult", slot(server))]))[1] == "SALES_PAUSED"
    window = ChannelClient(conns["demo-window"])
    assert refusal(lambda: window.hold(V, [Item("adult", slot(server))]))[1] == "SALES_PAUSED"
    assert not operator.pause_sales(V, False).sales_paused
    assert ota.hold(V, [Item("adult", slot(server))]).amount_fen > 0


def test_a_paused_slot_or_zone_leaves_the_rest_on_sale(server, operator, ota):
    operator.pause_sales(V, slot_id=slot(server, hour=12))
    operator.pause_sales(V, zone_id="pagoda")
    try:
        assert refusal(lambda: ota.hold(V, [Item("adult", slot(server, hour=12))]))[1] == "SALES_PAUSED"
        assert ota.hold(V, [Item("adult", slot(server, hour=14))]).amount_fen > 0
        c = operator.live_controls(V)
        assert (list(c.paused_slots), list(c.paused_zones)) == ([slot(server, hour=12)], ["pagoda"])
    finally:
        operator.pause_sales(V, False, slot_id=slot(server, hour=12))
        operator.pause_sales(V, False, zone_id="pagoda")
    assert ota.hold(V, [Item("adult", slot(server, hour=12))]).amount_fen > 0


def test_every_control_is_audited_under_its_principal(server, conns, operator):
    operator.close_entry(V, zone_id="boat")
    operator.close_entry(V, False, zone_id="boat")
    operator.set_flow_alerts(V, "boat", [90])
    operator.set_flow_alerts(V, "boat")
    records = list(AdminClient(conns["admin"]).audit_records(0, principal_id="demo-operator"))
    methods = [r.method for r in records if r.result == "OK"]
    assert methods[-4:] == ["/turnstile.v1.AdminService/SetEntryClosed"] * 2 + \
        ["/turnstile.v1.AdminService/SetFlowAlerts"] * 2


def test_a_retried_control_gets_its_first_answer(server, operator):
    first = operator.set_live_capacity(V, "boat", 50, key="cap-boat-1")
    operator.set_live_capacity(V, "boat", 60)
    assert operator.set_live_capacity(V, "boat", 50, key="cap-boat-1") == first
    assert refusal(lambda: operator.set_live_capacity(V, "boat", 70, key="cap-boat-1"))[1] == \
        "IDEMPOTENCY_KEY_REUSED"
    assert next(z for z in operator.live_controls(V).zones if z.zone_id == "boat").live_capacity == 60
    operator.set_live_capacity(V, "boat", 0)


# -- entry closed, live capacity -------------------------------------------------------------
def test_a_closed_gate_refuses_entries_online_and_offline(server, conns, operator, ota, tmp_path):
    codes = buy(ota, server, 2)
    gate = gate_client(server, conns, tmp_path)
    try:
        operator.close_entry(V, gate_id="north-1")
        gate.maintain()                                  # the next refresh carries it
        d = gate.verify(codes[0])
        assert (d.reason, d.admitted, d.persons) == ("ENTRY_CLOSED", False, 0)
        assert gate.heartbeat().entry_closed is True
    finally:
        gate.close()
    # the same gate, cut off from the server, decides by its bundle alike
    offline = GateClient("127.0.0.1:1", server.keys["demo-gate"], "north-1", V,
                         state_dir=str(tmp_path / "north-1"), timeout=0.2, clock=server.now)
    try:
        d = offline.verify(codes[1])
        assert (d.reason, d.offline, d.persons) == ("ENTRY_CLOSED", True, 0)
    finally:
        offline.close()
    operator.close_entry(V, False, gate_id="north-1")
    north2 = gate_client(server, conns, tmp_path, "north-2")
    try:
        assert north2.verify(codes[0]).reason == "OK"
    finally:
        north2.close()


def test_a_live_capacity_lowered_during_the_day_refuses_the_next_entry(server, conns, operator, ota, tmp_path):
    combo_slots = (slot(server, "main", 10), slot(server, "pagoda", 10), slot(server, "boat", 10))
    order = ota.buy(V, [Item("combo", combo_slots, qty=2)], "o-cap-pagoda")
    codes = [t.code for t in order.tickets]
    reports = ReportsClient(conns["demo-operator"])
    inside = next(z.inside for z in reports.live_counts(V).zones if z.zone_id == "pagoda")
    operator.set_live_capacity(V, "pagoda", inside + 1)
    gate = gate_client(server, conns, tmp_path, "pagoda-1")
    try:
        assert gate.verify(codes[0]).reason == "OK"
        assert gate.verify(codes[1]).reason == "ZONE_FULL"
    finally:
        gate.close()
        operator.set_live_capacity(V, "pagoda", 400)


# -- the live view ----------------------------------------------------------------------------
def test_the_view_follows_the_scans_and_raises_and_clears_a_fill_alert(server, conns, operator, ota, tmp_path):
    reports = ReportsClient(conns["demo-viewer"])
    stream = reports.watch_live(V, min_interval_ms=100)
    first = next(stream)
    boat = zone(first, "boat")
    combo_slots = (slot(server, "main", 10), slot(server, "pagoda", 10), slot(server, "boat", 10))
    order = ota.buy(V, [Item("combo", combo_slots, qty=4)], "o-live-boat")
    codes = [t.code for t in order.tickets]
    operator.set_live_capacity(V, "boat", boat.inside + 4)
    operator.set_flow_alerts(V, "boat", [50, 100])
    pier = gate_client(server, conns, tmp_path, "pier-1")
    try:
        assert pier.verify(codes[0]).reason == "OK"
        v = wait_view(stream, lambda v: zone(v, "boat").inside == boat.inside + 1, "one more aboard")
        assert v.seq > first.seq and zone(v, "boat").entries_last_minute >= 1
        assert zone(v, "boat").entries_per_minute[-1] >= 1 or zone(v, "boat").entries_per_minute[-2] >= 1
        assert pier.verify(codes[1]).reason == "OK"
        assert pier.verify(codes[2]).reason == "OK"
        v = wait_view(stream, lambda v: any(a.id == "fill:boat" for a in v.alerts), "a fill alert")
        a = next(a for a in v.alerts if a.id == "fill:boat")
        assert (a.kind, a.zone_id, a.level_pct) == (report_pb2.ZONE_FILL, "boat", 50)
        assert "50 %" in a.message
        assert pier.verify(codes[3]).reason == "OK"
        v = wait_view(stream, lambda v: any(a.id == "fill:boat" and a.level_pct == 100 for a in v.alerts),
                      "the alert at 100 %")
    finally:
        pier.close()
        stream.close()
    operator.set_flow_alerts(V, "boat")
    v = ReportsClient(conns["demo-viewer"]).watch_live(V)
    assert not any(a.id == "fill:boat" for a in next(v).alerts)
    v.close()
    operator.set_live_capacity(V, "boat", 0)


def test_a_gate_is_seen_up_then_down_when_it_falls_silent(server, conns, tmp_path):
    gate = gate_client(server, conns, tmp_path, "east", version="test-gate 1.0")
    gate.start(every_s=60)
    stream = ReportsClient(conns["demo-operator"]).watch_live(V, min_interval_ms=100)
    try:
        v = wait_view(stream, lambda v: any(g.gate_id == "east" and g.state == report_pb2.GATE_UP
                                            for g in v.gates), "gate east up")
        g = next(g for g in v.gates if g.gate_id == "east")
        assert g.version == "test-gate 1.0" and g.HasField("bundle_cut_at") and g.queued_scans == 0
        gate.stop()                                       # no more heartbeats
        v = wait_view(stream, lambda v: any(a.id == "gate:east" for a in v.alerts), "gate east silent")
        assert next(g for g in v.gates if g.gate_id == "east").state == report_pb2.GATE_DOWN
        a = next(a for a in v.alerts if a.id == "gate:east")
        assert (a.kind, a.gate_id, a.threshold) == (report_pb2.GATE_SILENT, "east", 3)
        gate.heartbeat()
        wait_view(stream, lambda v: not any(a.id == "gate:east" for a in v.alerts), "the alert cleared")
    finally:
        stream.close()
        gate.close()


# -- who may, and bad values ---------------------------------------------------------------------
def test_whoami_tells_each_key_its_role_and_methods(conns):
    me = AdminClient(conns["demo-viewer"]).whoami()
    assert (me.principal_id, me.role, list(me.venues)) == ("demo-viewer", "viewer", [V])
    assert "/turnstile.v1.ReportService/WatchLive" in me.methods
    assert "/turnstile.v1.AdminService/SetSalesPaused" not in me.methods
    op = AdminClient(conns["demo-operator"]).whoami()
    assert "/turnstile.v1.AdminService/SetSalesPaused" in op.methods


@pytest.mark.parametrize("principal", ["demo-viewer", "demo-finance", "demo-ota", "demo-gate"])
def test_only_operators_and_admins_steer(conns, principal):
    c = AdminClient(conns[principal])
    for fn in (lambda: c.pause_sales(V), lambda: c.close_entry(V, zone_id="main"),
               lambda: c.set_live_capacity(V, "main", 1), lambda: c.set_flow_alerts(V, "main", [1])):
        assert refusal(fn)[:2] == ("PERMISSION_DENIED", "ROLE_NOT_ALLOWED")


def test_another_venue_is_out_of_scope(server, conns):
    admin = AdminClient(conns["admin"])
    admin.create_venue("hills", "Fragrant Hills", shard=0)
    admin.create_zone("hills", "summit", "Summit")
    admin.create_gate("hills", "summit", "summit-1", mode="both")
    op = AdminClient(conns["demo-operator"])
    assert refusal(lambda: op.pause_sales("hills"))[0] == "PERMISSION_DENIED"
    assert refusal(lambda: op.close_entry("hills", gate_id="summit-1"))[0] == "PERMISSION_DENIED"
    # a westlake control never names another venue's zone or gate
    assert refusal(lambda: op.close_entry(V, gate_id="summit-1"))[:2] == ("NOT_FOUND", "NOT_FOUND")
    assert refusal(lambda: op.set_live_capacity(V, "summit", 1))[0] == "NOT_FOUND"
    viewer = ReportsClient(conns["demo-viewer"])
    assert refusal(lambda: next(viewer.watch_live("hills")))[0] == "PERMISSION_DENIED"
    with grpc.insecure_channel(server.address) as ch:
        with pytest.raises(grpc.RpcError) as e:
            gate_pb2_grpc.GateServiceStub(ch).Heartbeat(
                gate_pb2.HeartbeatRequest(venue_id="hills", gate_id="summit-1"),
                metadata=server.meta("demo-gate"), timeout=5)
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_a_gate_scoped_to_its_gates_beats_only_for_them(server, conns):
    admin = AdminClient(conns["admin"])
    admin.create_principal("north-1-box", "gate", venue_ids=[V], gate_ids=["north-1"])
    key = admin.create_api_key("north-1-box").secret
    with grpc.insecure_channel(server.address) as ch:
        stub = gate_pb2_grpc.GateServiceStub(ch)
        meta = (("authorization", f"Bearer {key}"),)
        assert stub.Heartbeat(gate_pb2.HeartbeatRequest(venue_id=V, gate_id="north-1"),
                              metadata=meta, timeout=5).interval_s == 1
        with pytest.raises(grpc.RpcError) as e:
            stub.Heartbeat(gate_pb2.HeartbeatRequest(venue_id=V, gate_id="north-2"), metadata=meta, timeout=5)
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize("request_, field", [
    (admin_pb2.SetSalesPausedRequest(venue_id=V, zone_id="main", slot_id="x", paused=True), "slot_id"),
    (admin_pb2.SetSalesPausedRequest(venue_id=V, zone_id="no such zone!", paused=True), "zone_id"),
    (admin_pb2.SetEntryClosedRequest(venue_id=V, closed=True), "zone_id"),
    (admin_pb2.SetEntryClosedRequest(venue_id=V, zone_id="main", gate_id="east", closed=True), "zone_id"),
    (admin_pb2.SetLiveCapacityRequest(venue_id=V, zone_id="main", live_capacity=-5), "live_capacity"),
    (admin_pb2.SetFlowAlertsRequest(venue_id=V, zone_id="main", fill_pct=[95, 80]), "fill_pct[1]"),
    (admin_pb2.SetFlowAlertsRequest(venue_id=V, zone_id="main", fill_pct=[150]), "fill_pct[0]"),
    (admin_pb2.SetFlowAlertsRequest(venue_id=V, zone_id="main", entries_per_minute=10**8),
     "entries_per_minute"),
])
def test_bad_controls_are_invalid_and_change_nothing(server, operator, request_, field):
    before = operator.live_controls(V)
    method = type(request_).__name__.removesuffix("Request")
    with grpc.insecure_channel(server.address) as ch:
        with pytest.raises(grpc.RpcError) as e:
            getattr(admin_pb2_grpc.AdminServiceStub(ch), method)(
                request_, metadata=server.meta("demo-operator"), timeout=5)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(e.value)[1] == field
    assert operator.live_controls(V) == before


@pytest.mark.parametrize("request_, field", [
    (gate_pb2.HeartbeatRequest(venue_id=V, gate_id="north-1", version="v" * 65), "version"),
    (gate_pb2.HeartbeatRequest(venue_id=V, gate_id="north-1", queued_scans=10**8), "queued_scans"),
    (gate_pb2.HeartbeatRequest(venue_id=V, gate_id="north-1", last_scan={"seconds": -5}), "last_scan"),
    (gate_pb2.HeartbeatRequest(venue_id=V, gate_id="north-1", bundle_cut_at={"nanos": -1}), "bundle_cut_at"),
])
def test_a_bad_heartbeat_is_invalid(server, request_, field):
    with grpc.insecure_channel(server.address) as ch:
        with pytest.raises(grpc.RpcError) as e:
            gate_pb2_grpc.GateServiceStub(ch).Heartbeat(request_, metadata=server.meta("demo-gate"), timeout=5)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and error_info(e.value)[1] == field


@pytest.mark.parametrize("ms", [1, 99, 60_001])
def test_watch_live_refuses_an_interval_out_of_range(server, ms):
    with grpc.insecure_channel(server.address) as ch:
        call = report_pb2_grpc.ReportServiceStub(ch).WatchLive(
            report_pb2.WatchLiveRequest(venue_id=V, min_interval_ms=ms),
            metadata=server.meta("demo-viewer"), timeout=5)
        with pytest.raises(grpc.RpcError) as e:
            next(call)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(e.value)[1] == "min_interval_ms"


def test_a_stopping_server_ends_its_live_streams_rather_than_wait_out_the_grace(tmp_path):
    """SIGTERM with a watcher connected: the stream ends with UNAVAILABLE /
    SHARD_UNAVAILABLE (the dashboard watches again), and the server stops without using
    the minute of grace it was given (a stream would otherwise hold it the whole time)."""
    s = start_server(str(tmp_path / "data"), venue_day(), ("--grace-s", "60"))
    try:
        with Connection(s.address, s.keys["demo-viewer"]) as conn:
            watch = ReportsClient(conn).watch_live(V, min_interval_ms=60_000)
            assert next(watch).venue_id == V
            s.proc.send_signal(signal.SIGTERM)
            with pytest.raises(ApiError) as e:
                next(watch)
            assert (e.value.code, e.value.reason) == (grpc.StatusCode.UNAVAILABLE, "SHARD_UNAVAILABLE")
            s.proc.wait(55)             # TimeoutExpired if the stream held it for the grace
    finally:
        stop_server(s)
