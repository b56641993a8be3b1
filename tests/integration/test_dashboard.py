"""`turnstile dashboard` over HTTP, against a real server (demo venue westlake): what a
browser, or someone poking at the app without one, notices. The page itself in a real
browser: test_dashboard_browser.py.

The contract: a key logs in at POST /login (JSON) and is checked by the node; the session
is an HttpOnly, SameSite=Strict cookie and the key never comes back; every POST but the
login needs the session's X-CSRF-Token; /api/live is server-sent events of
ReportService.WatchLive; controls answer the node's LiveControls or its error as JSON; the
node decides what a role may do; every asset is the app's own.
"""
from __future__ import annotations

import asyncio
import html.parser
import json
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from turnstile.v1 import admin_pb2, admin_pb2_grpc

from .conftest import ROOT, start_server, stop_server, venue_day

pytest.importorskip("aiohttp", reason="pip install aiohttp (turnstile[dashboard])")

from turnstile.clients.dashboard.testing import start_dashboard, stop_dashboard  # noqa: E402

VENUE = "westlake"


# -- a small HTTP client with a cookie ------------------------------------------------------
class Page:
    """One browser's view of the app: its cookie, and the CSRF token /api/me gave it."""

    def __init__(self, base: str):
        self.base = base
        self.cookie = ""
        self.csrf = ""

    def request(self, method: str, path: str, body=None, *, headers: dict | None = None,
                raw: bytes | None = None, timeout: float = 30):
        """(status, headers, body bytes)."""
        h = dict(headers or {})
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        if self.cookie:
            h["Cookie"] = self.cookie
        req = urllib.request.Request(self.base + path.lstrip("/"), data=data, headers=h, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                status, hdrs, out = r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            status, hdrs, out = e.code, e.headers, e.read()
        for c in hdrs.get_all("Set-Cookie") or []:
            self.cookie = c.split(";")[0] if "Max-Age=0" not in c and "=;" not in c else ""
        return status, hdrs, out

    def get(self, path: str):
        return self.request("GET", path)

    def post(self, path: str, body=None, *, csrf: bool = True, **kw):
        headers = kw.pop("headers", {})
        if csrf and self.csrf:
            headers = {"X-CSRF-Token": self.csrf, **headers}
        return self.request("POST", path, {} if body is None else body, headers=headers, **kw)

    def login(self, key: str) -> dict:
        status, _, out = self.request("POST", "/login", {"key": key})
        assert status == 200, out
        status, _, out = self.get("/api/me")
        assert status == 200, out
        me = json.loads(out)
        self.csrf = me["csrf"]
        return me

    def events(self, venue: str) -> Iterator[tuple[str, dict]]:
        """The server-sent events of /api/live: (event name, data)."""
        req = urllib.request.Request(f"{self.base}api/live?venue={venue}", headers={"Cookie": self.cookie})
        with urllib.request.urlopen(req, timeout=30) as r:
            assert r.headers["Content-Type"].startswith("text/event-stream")
            name, data = "message", []
            for line in r:
                line = line.decode().rstrip("\n")
                if not line:
                    if data:
                        yield name, json.loads("\n".join(data))
                    name, data = "message", []
                elif line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].strip())


def error(out: bytes) -> dict:
    body = json.loads(out)
    assert set(body) >= {"code", "reason", "message", "field"} and body["message"], body
    return body


def live_controls(server) -> admin_pb2.LiveControls:
    """The node's own view of the venue's controls (as admin, over gRPC)."""
    with server.channel() as ch:
        return admin_pb2_grpc.AdminServiceStub(ch).GetLiveControls(
            admin_pb2.GetLiveControlsRequest(venue_id=VENUE), metadata=server.meta("admin"), timeout=10)


@pytest.fixture(scope="module")
def dash(server):
    d = start_dashboard(server.address)
    yield d
    assert d.proc.poll() is None, "\n".join(d.log)        # it never died meanwhile
    stop_dashboard(d)


@pytest.fixture
def operator(dash, server) -> Page:
    p = Page(dash.url)
    p.login(server.keys["demo-operator"])
    return p


# -- the page and its assets ----------------------------------------------------------------
class _Refs(html.parser.HTMLParser):
    """Every URL the page's markup loads, and any inline script or style."""

    def __init__(self):
        super().__init__()
        self.urls: list[str] = []
        self.inline: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for name in ("src", "href"):
            if a.get(name):
                self.urls.append(a[name])
        if "style" in a or any(n.startswith("on") for n in a):
            self.inline.append(f"<{tag}> attribute")
        if tag == "style":
            self.inline.append("<style>")
        self._in_script = tag == "script"

    def handle_data(self, data):
        if self._in_script and data.strip():
            self.inline.append("<script> body")

    def handle_endtag(self, tag):
        self._in_script = False


def test_the_page_and_every_asset_come_from_the_app(dash):
    page = Page(dash.url)
    status, headers, out = page.get("/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    refs = _Refs()
    refs.feed(out.decode())
    assert refs.inline == []                          # the CSP allows no inline script or style
    assert refs.urls and all(u.startswith("/static/") for u in refs.urls), refs.urls
    kinds = {}
    for url in refs.urls:
        status, headers, body = page.get(url)
        assert status == 200 and body, url
        assert headers["X-Content-Type-Options"] == "nosniff"
        kinds[url.rsplit(".", 1)[-1]] = headers["Content-Type"]
        if url.endswith(".css"):
            text = body.decode()
            assert "@import" not in text and "url(" not in text     # no fonts or images from elsewhere
    assert kinds["js"] in ("application/javascript", "text/javascript")
    assert kinds["css"] == "text/css"
    assert page.get("/static/../app.py")[0] == 404          # nothing outside static/


def test_the_big_screen_is_the_same_page(dash):
    status, _, out = Page(dash.url).get("/?screen=1")
    assert status == 200 and b"/static/dashboard.js" in out


# -- login ----------------------------------------------------------------------------------------
def test_a_bad_key_is_refused_with_the_nodes_reason_and_no_session(dash, server):
    page = Page(dash.url)
    key = server.keys["demo-operator"]
    wrong = key[:-4] + ("aaaa" if not key.endswith("aaaa") else "bbbb")
    status, headers, out = page.request("POST", "/login", {"key": wrong})
    assert status == 401
    assert error(out)["reason"] == "API_KEY_INVALID"
    assert not headers.get_all("Set-Cookie") and page.cookie == ""
    assert page.get("/api/me")[0] == 401
    status, _, out = page.request("POST", "/login", {"key": ""})
    assert status == 400 and error(out)["field"] == "key"
    # JSON only: a form posted from another site is not a login
    status, _, _ = page.request("POST", "/login", raw=f"key={key}".encode(),
                                headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 415 and page.cookie == ""


def test_login_gives_a_strict_http_only_session_and_never_returns_the_key(dash, server):
    page = Page(dash.url)
    key = server.keys["demo-operator"]
    status, headers, out = page.request("POST", "/login", {"key": key})
    assert status == 200
    cookie = headers.get_all("Set-Cookie")[0]
    attrs = {a.strip().split("=")[0].lower(): a for a in cookie.split(";")[1:]}
    assert "httponly" in attrs and attrs["samesite"].split("=")[1].strip() == "Strict"
    assert key not in out.decode()
    status, headers, out = page.get("/api/me")
    assert status == 200 and headers["Cache-Control"] == "no-store"
    me = json.loads(out)
    assert key not in out.decode()
    assert (me["principal"], me["role"], me["venues"]) == ("demo-operator", "operator", [VENUE])
    assert me["controls"] == {"sales": True, "entry": True, "capacity": True, "alerts": True}
    assert len(me["csrf"]) >= 32
    # a new login gets a new session id
    first = page.cookie
    page.login(key)
    assert page.cookie != first


def test_without_a_session_nothing_answers(dash):
    page = Page(dash.url)
    assert page.get("/api/me")[0] == 401
    assert page.get(f"/api/live?venue={VENUE}")[0] == 401
    assert page.get(f"/api/slots?venue={VENUE}&date=2026-01-01")[0] == 401
    status, _, out = page.post("/api/control/sales", {"venue": VENUE, "paused": True})
    assert status == 401 and error(out)["code"] == "UNAUTHENTICATED"
    page.cookie = "turnstile_session=made-up"
    assert page.get("/api/me")[0] == 401


def test_logout_ends_the_session(dash, server):
    page = Page(dash.url)
    page.login(server.keys["demo-operator"])
    stolen = page.cookie
    assert page.post("/logout", csrf=False)[0] == 403           # the token is needed here too
    assert page.post("/logout")[0] == 204
    page.cookie = stolen                                      # the old cookie is worth nothing
    assert page.get("/api/me")[0] == 401


def test_a_session_ends_after_twelve_idle_hours(server):
    """The app in this process with a clock of its own: 12 h without a request end a
    session, a request before then keeps it."""
    from aiohttp.test_utils import TestClient, TestServer

    from turnstile.clients.dashboard.app import Dashboard, make_app
    now = [1000.0]

    async def run():
        dash = Dashboard(server.address, clock=lambda: now[0])
        async with TestClient(TestServer(make_app(dash))) as client:
            r = await client.post("/login", json={"key": server.keys["demo-viewer"]})
            assert r.status == 200
            now[0] += 11 * 3600
            assert (await client.get("/api/me")).status == 200
            now[0] += 12 * 3600 - 1
            assert (await client.get("/api/me")).status == 200
            now[0] += 12 * 3600 + 1
            assert (await client.get("/api/me")).status == 401
            assert dash.sessions == {}
    asyncio.run(run())


# -- controls --------------------------------------------------------------------------------
def test_a_control_needs_the_sessions_csrf_token(operator, server):
    body = {"venue": VENUE, "paused": True}
    status, _, out = operator.post("/api/control/sales", body, csrf=False)
    assert status == 403 and error(out)["reason"] == "CSRF_TOKEN_INVALID"
    status, _, out = operator.post("/api/control/sales", body, headers={"X-CSRF-Token": "x" * 43})
    assert status == 403
    assert live_controls(server).sales_paused is False          # nothing happened
    status, headers, out = operator.post("/api/control/sales", body)
    assert status == 200 and headers["Cache-Control"] == "no-store"
    assert json.loads(out)["sales_paused"] is True
    assert live_controls(server).sales_paused is True
    status, _, out = operator.post("/api/control/sales", {"venue": VENUE, "paused": False})
    assert status == 200 and json.loads(out)["sales_paused"] is False
    assert live_controls(server).sales_paused is False


def test_controls_answer_the_nodes_live_controls(operator, server):
    status, _, out = operator.post("/api/control/capacity",
                                   {"venue": VENUE, "zone": "boat", "live_capacity": 250})
    assert status == 200, out
    zones = {z["zone_id"]: z for z in json.loads(out)["zones"]}
    assert zones["boat"]["live_capacity"] == "250"          # proto3 JSON: int64 as a string
    status, _, out = operator.post("/api/control/alerts", {"venue": VENUE, "zone": "boat",
                                                           "fill_pct": [80, 95], "entries_per_minute": 30})
    assert status == 200, out
    boat = next(z for z in json.loads(out)["zones"] if z["zone_id"] == "boat")
    assert boat["fill_pct"] == [80, 95] and boat["entries_per_minute"] == 30
    status, _, out = operator.post("/api/control/entry", {"venue": VENUE, "gate": "pier-1", "closed": True})
    assert status == 200 and json.loads(out)["closed_gates"] == ["pier-1"]
    status, _, out = operator.post("/api/control/entry", {"venue": VENUE, "gate": "pier-1", "closed": False})
    assert status == 200 and json.loads(out)["closed_gates"] == []
    node = {z.zone_id: z for z in live_controls(server).zones}["boat"]
    assert (node.live_capacity, list(node.fill_pct), node.entries_per_minute) == (250, [80, 95], 30)
    # put the demo back as it was
    assert operator.post("/api/control/capacity", {"venue": VENUE, "zone": "boat", "live_capacity": 0})[0] == 200
    assert operator.post("/api/control/alerts", {"venue": VENUE, "zone": "boat", "fill_pct": [],
                                                 "entries_per_minute": 0})[0] == 200


def test_a_refused_control_answers_the_nodes_error(operator):
    # fill levels are 1 to 100 (admin.proto SetFlowAlertsRequest)
    status, _, out = operator.post("/api/control/alerts", {"venue": VENUE, "zone": "pagoda",
                                                           "fill_pct": [150], "entries_per_minute": 0})
    assert status == 400 and error(out)["code"] == "INVALID_ARGUMENT"
    status, _, out = operator.post("/api/control/capacity",
                                   {"venue": VENUE, "zone": "no-such-zone", "live_capacity": 10})
    assert status == 404 and error(out)["code"] == "NOT_FOUND"
    # what the app can tell without asking: a missing or mistyped field
    status, _, out = operator.post("/api/control/sales", {"venue": VENUE})
    assert status == 400 and error(out)["field"] == "paused"
    status, _, out = operator.post("/api/control/capacity", {"venue": VENUE, "zone": "boat",
                                                             "live_capacity": "lots"})
    assert status == 400 and error(out)["field"] == "live_capacity"
    # counts past what the requests carry (uint32, admin.proto) are the caller's error too
    for path, body, field in [("capacity", {"zone": "boat", "live_capacity": 2 ** 40}, "live_capacity"),
                              ("alerts", {"zone": "boat", "fill_pct": [2 ** 40], "entries_per_minute": 0},
                               "fill_pct"),
                              ("alerts", {"zone": "boat", "fill_pct": [], "entries_per_minute": 2 ** 40},
                               "entries_per_minute")]:
        status, _, out = operator.post(f"/api/control/{path}", {"venue": VENUE, **body})
        assert (status, error(out)["field"]) == (400, field), (path, body, out)
    assert operator.post("/api/control/nothing", {"venue": VENUE})[0] == 404


def test_a_viewer_watches_but_has_no_control_rights(dash, server):
    page = Page(dash.url)
    me = page.login(server.keys["demo-viewer"])
    assert me["role"] == "viewer"
    assert me["controls"] == {"sales": False, "entry": False, "capacity": False, "alerts": False}
    # the page hides the controls; the node refuses them all the same
    for path, body in [("sales", {"paused": True}), ("entry", {"zone": "main", "closed": True}),
                       ("capacity", {"zone": "main", "live_capacity": 1}),
                       ("alerts", {"zone": "main", "fill_pct": [50], "entries_per_minute": 0})]:
        status, _, out = page.post(f"/api/control/{path}", {"venue": VENUE, **body})
        assert status == 403 and error(out)["reason"] == "ROLE_NOT_ALLOWED", (path, out)
    c = live_controls(server)
    assert not c.sales_paused and not c.closed_zones
    kind, view = next(page.events(VENUE))                  # and it does see the venue live
    assert kind == "message" and view["venue_id"] == VENUE


# -- the live stream ----------------------------------------------------------------------------
def test_live_is_server_sent_events_of_watch_live(operator, server):
    events = operator.events(VENUE)
    kind, view = next(events)
    assert kind == "message"
    assert view["venue_id"] == VENUE and view["seq"] == "1"
    assert [z["zone_id"] for z in view["zones"]] == ["main", "pagoda", "boat"]
    assert {g["gate_id"] for g in view["gates"]} == {"north-1", "north-2", "south-exit", "east",
                                                     "pagoda-1", "pier-1"}
    assert len(view["zones"][0]["entries_per_minute"]) == 60
    # a control shows in the next views
    assert operator.post("/api/control/entry", {"venue": VENUE, "zone": "pagoda", "closed": True})[0] == 200
    try:
        for kind, view in events:
            assert kind == "message"
            if "pagoda" in view["controls"]["closed_zones"]:
                assert next(z for z in view["zones"] if z["zone_id"] == "pagoda")["entry_closed"]
                break
    finally:
        operator.post("/api/control/entry", {"venue": VENUE, "zone": "pagoda", "closed": False})
    events.close()


def test_live_of_an_unknown_venue_is_an_error_event_and_the_end(operator):
    got = list(operator.events("no-such-venue"))
    assert len(got) == 1
    kind, err = got[0]
    assert kind == "error" and err["code"] == "NOT_FOUND" and err["retry_s"] is None


def _free_ports(n: int) -> int:
    """A port p with p .. p+n-1 free now (a node's shard k listens on port + k)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + n > 65535:
            continue
        try:
            socks = []
            for k in range(n):
                t = socket.socket()
                socks.append(t)
                t.bind(("127.0.0.1", base + k))
            return base
        except OSError:
            continue
        finally:
            for t in socks:
                t.close()
    raise RuntimeError("no free ports")


def test_the_dashboard_waits_for_the_node_and_follows_it_through_a_restart(tmp_path):
    """`make run` starts the dashboard beside the node: before the node listens a login
    says it does not answer; once it does, the page logs in; when the node restarts, the
    live stream reports it and carries on by itself."""
    port = _free_ports(4)
    address = f"127.0.0.1:{port}"
    data = str(tmp_path / "data")
    d = start_dashboard(address)
    server = None
    try:
        page = Page(d.url)
        status, _, out = page.request("POST", "/login", {"key": "tsk_0000_0000"})
        assert status == 503
        assert error(out)["code"] == "UNAVAILABLE" and address in error(out)["message"]
        server = start_server(data, venue_day(), ("--port", str(port)))
        assert server.address == address
        page.login(server.keys["demo-viewer"])
        events = page.events(VENUE)
        kind, view = next(events)
        assert kind == "message" and view["venue_id"] == VENUE
        assert "stopped" in stop_server(server)
        kind, err = next((k, e) for k, e in events if k == "error")
        assert err["code"] == "UNAVAILABLE" and err["retry_s"] > 0
        server = start_server(data, venue_day(), ("--port", str(port)))
        kind, view = next((k, v) for k, v in events if k == "message")
        assert view["venue_id"] == VENUE and view["seq"] == "1"          # a new stream
        events.close()
    finally:
        if server is not None:
            stop_server(server)
        stop_dashboard(d)


def test_the_dashboard_never_imports_the_engine_or_the_server():
    """DESIGN.md 2: clients talk gRPC only."""
    code = ("import sys, turnstile.clients.dashboard.app, turnstile.clients.cli.dashboard; "
            "print(sorted(m for m in sys.modules if m.startswith(('turnstile.engine', 'turnstile.server'))))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_help_says_what_it_serves():
    r = subprocess.run([sys.executable, "-m", "turnstile.clients.cli", "dashboard", "--help"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    for word in ("--address", "--host", "--port", "--tls-ca", "dashboard on http://HOST:PORT/"):
        assert word in r.stdout, word
