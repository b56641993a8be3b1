"""The dashboard's web app (aiohttp): log in with an API key, watch a venue live, steer it.

Routes:

    GET  /                      the page (static/index.html); ``/?screen=1`` is the big screen
    GET  /static/...            its script, style sheet and icon, from this package
    POST /login                 {"key": "tsk_..."}: AdminService.WhoAmI checks the key; a session
    POST /logout                ends the session (X-CSRF-Token)
    GET  /api/me                principal, role, venues, the controls the role may use, CSRF token
    GET  /api/live?venue=V      server-sent events: every ReportService.WatchLive view as
                                ``data: <json>``, a failure as ``event: error``
    GET  /api/slots?venue=V&date=D   the day's slots (InventoryService.Availability)
    POST /api/control/sales     {venue, zone?, slot?, paused}       AdminService.SetSalesPaused
    POST /api/control/entry     {venue, zone? | gate?, closed}      AdminService.SetEntryClosed
    POST /api/control/capacity  {venue, zone, live_capacity}        AdminService.SetLiveCapacity
    POST /api/control/alerts    {venue, zone, fill_pct, entries_per_minute}  AdminService.SetFlowAlerts

The key stays here: a session is a random id in an HttpOnly, SameSite=Strict cookie that
maps to the key's :class:`~turnstile.clients.base.Connection`, its WhoAmI answer and a
CSRF token; every POST but the login must carry that token in ``X-CSRF-Token`` and be
JSON (a form on another site can send neither). A session ends at logout or after 12 h
without a request from its browser (an open live stream counts as one). The gRPC server
decides what a key may do; the page only hides what WhoAmI says the role may not call.
The app starts whether or not the node answers, and keeps trying: a login then says the
node does not answer, a live stream reports the failure and reconnects with backoff.

Like every client it imports grpc, ``turnstile.v1`` and ``turnstile.clients`` only.
"""
from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import os
import secrets
import time
import uuid
from collections.abc import Callable
from typing import Any

import grpc
from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import Message
from turnstile.v1 import (admin_pb2, admin_pb2_grpc, inventory_pb2, inventory_pb2_grpc, report_pb2,
                          report_pb2_grpc)

from ..base import ApiError, Connection, RetryPolicy, TlsConfig, method_name

__all__ = ["Dashboard", "make_app", "serve"]

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
COOKIE = "turnstile_session"
CSRF_HEADER = "X-CSRF-Token"
IDLE_S = 12 * 3600
CSP = ("default-src 'self'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'; "
       "object-src 'none'")
# a login or a control waits this long at most for a node that does not answer
RETRY = RetryPolicy(max_attempts=4, initial_backoff_s=0.1, max_backoff_s=1.0, total_s=8.0)
# the live stream's reconnect backoff, seconds
BACKOFF_FIRST_S, BACKOFF_MAX_S = 0.5, 5.0
# failures a reconnect cannot mend: the stream reports them and ends
FATAL = frozenset({grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED,
                   grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                   grpc.StatusCode.UNIMPLEMENTED})
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401, grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404, grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.ALREADY_EXISTS: 409, grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429, grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
ADMIN = admin_pb2_grpc.AdminServiceStub
# control name (as /api/me reports it) -> the AdminService method it calls
CONTROLS = {"sales": "SetSalesPaused", "entry": "SetEntryClosed", "capacity": "SetLiveCapacity",
            "alerts": "SetFlowAlerts"}
WATCH_LIVE = method_name(report_pb2_grpc.ReportServiceStub, "WatchLive")
AVAILABILITY = method_name(inventory_pb2_grpc.InventoryServiceStub, "Availability")
MAX_ID = 128             # longest venue, zone, gate or slot id the app passes on


def to_json(message: Message) -> dict[str, Any]:
    """A message as the page reads it: proto field names, every field (zeros and empty
    lists too), enums by name, int64 as decimal strings, timestamps as RFC 3339."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                      always_print_fields_with_no_presence=True)


# -- answers ---------------------------------------------------------------------------------
class Refusal(Exception):
    """A request the app refuses itself: answered as JSON {code, reason, message, field}."""

    def __init__(self, status: int, code: str, message: str, *, reason: str = "",
                 field: str | None = None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.reason, self.field = reason or code, field

    def response(self) -> web.Response:
        return web.json_response({"code": self.code, "reason": self.reason, "message": self.message,
                                  "field": self.field}, status=self.status)


def error_json(e: ApiError) -> dict[str, Any]:
    """A gRPC failure as the page shows it."""
    return {"code": e.code.name, "reason": e.reason, "message": e.message or e.code.name,
            "field": e.field}


def error_response(e: ApiError) -> web.Response:
    """A gRPC failure as an HTTP answer: 4xx for what the caller can fix, 503/504 when the
    node does not answer."""
    return web.json_response(error_json(e), status=HTTP_STATUS.get(e.code, 502))


def _invalid(field: str, message: str) -> Refusal:
    return Refusal(400, "INVALID_ARGUMENT", message, field=field)


def _id(body: dict, name: str, *, required: bool = True) -> str:
    """An id from a JSON body: a string (empty when optional and absent)."""
    v = body.get(name)
    if v is None or v == "":
        if required:
            raise _invalid(name, f"{name} is required")
        return ""
    if not isinstance(v, str) or len(v) > MAX_ID:
        raise _invalid(name, f"{name} must be an id of at most {MAX_ID} characters")
    return v


def _flag(body: dict, name: str) -> bool:
    v = body.get(name)
    if not isinstance(v, bool):
        raise _invalid(name, f"{name} must be true or false")
    return v


U32 = 2 ** 32 - 1        # the control requests' counts are uint32


def _whole(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, int) and 0 <= v <= U32


def _count(body: dict, name: str) -> int:
    v = body.get(name)
    if not _whole(v):
        raise _invalid(name, f"{name} must be a whole number, 0 to {U32}")
    return v


def _counts(body: dict, name: str) -> list[int]:
    v = body.get(name, [])
    if not isinstance(v, list) or not all(_whole(x) for x in v):
        raise _invalid(name, f"{name} must be a list of whole numbers, 0 to {U32}")
    return v


def _day(text: str) -> str:
    try:
        return dt.date.fromisoformat(text).isoformat()
    except ValueError:
        raise _invalid("date", "date must be a day, YYYY-MM-DD") from None


# -- sessions --------------------------------------------------------------------------------
@dataclasses.dataclass(eq=False)
class Session:
    """One browser's login: the key's connection (the key lives only in its metadata),
    what WhoAmI said of the key, the CSRF token the page sends back, and the gRPC aio
    channels its live streams use (one per shard address)."""

    sid: str
    conn: Connection
    whoami: admin_pb2.WhoAmIResponse
    csrf: str
    last_seen: float
    ended: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    channels: dict[str, grpc.aio.Channel] = dataclasses.field(default_factory=dict)
    streams: int = 0

    def may(self, full_method: str) -> bool:
        """The key's role may call this method (WhoAmI's ``methods``)."""
        return full_method in self.whoami.methods

    def channel(self, address: str) -> grpc.aio.Channel:
        """The aio channel to a shard, made once per session (in the app's event loop)."""
        ch = self.channels.get(address)
        if ch is None:
            ch = self.channels[address] = self.conn.aio_channel(address=address)
        return ch


class Dashboard:
    """The app's state: where the node is, how to reach it, and the sessions.

    Args:
        address: ``host:port`` of any shard of the node.
        tls: TLS towards the node (None: insecure).
        timeout: deadline of one attempt of a unary call, seconds.
        min_interval_ms: least time between two live views (WatchLiveRequest).
        idle_s: a session without a request for this long ends.
        clock: monotonic seconds (tests may pass their own).
    """

    def __init__(self, address: str, *, tls: TlsConfig | None = None, timeout: float = 5.0,
                 min_interval_ms: int = 250, idle_s: float = IDLE_S,
                 clock: Callable[[], float] = time.monotonic):
        self.address = address
        self.tls = tls
        self.timeout = timeout
        self.min_interval_ms = min_interval_ms
        self.idle_s = idle_s
        self.clock = clock
        self.sessions: dict[str, Session] = {}
        self.closing = asyncio.Event()      # the app shuts down: live streams end at once

    # -- sessions ------------------------------------------------------------------------
    async def session(self, request: web.Request) -> Session:
        """The request's live session (its idle clock restarted), else 401."""
        s = self.sessions.get(request.cookies.get(COOKIE, ""))
        if s is None or (s.streams == 0 and self.clock() - s.last_seen > self.idle_s):
            if s is not None:
                await self.end(s)
            raise Refusal(401, "UNAUTHENTICATED", "not logged in", reason="SESSION_MISSING")
        s.last_seen = self.clock()
        return s

    async def posting(self, request: web.Request) -> Session:
        """The session of a POST that carries its CSRF token, else 401/403."""
        s = await self.session(request)
        sent = request.headers.get(CSRF_HEADER, "").encode("utf-8", "surrogateescape")
        if not secrets.compare_digest(sent, s.csrf.encode()):
            raise Refusal(403, "PERMISSION_DENIED", f"the {CSRF_HEADER} header is missing or wrong",
                          reason="CSRF_TOKEN_INVALID")
        return s

    async def end(self, s: Session) -> None:
        """End a session: its live streams stop, its channels close."""
        self.sessions.pop(s.sid, None)
        s.ended.set()
        channels, s.channels = list(s.channels.values()), {}
        for ch in channels:
            await ch.close()
        s.conn.close()

    async def sweep(self) -> None:
        """End the sessions idle for longer than ``idle_s``."""
        now = self.clock()
        for s in [s for s in self.sessions.values()
                  if s.streams == 0 and now - s.last_seen > self.idle_s]:
            await self.end(s)

    async def call(self, s: Session, stub: type, method: str, request: Message, *,
                   venue: str | None = None) -> Message:
        """A unary call with the session's key, routed by venue, retried while safe
        (reads, and mutations that carry an idempotency key)."""
        return await asyncio.to_thread(s.conn.call, stub, method, request, venue=venue, retry=True)

    # -- handlers ------------------------------------------------------------------------
    async def index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(os.path.join(STATIC, "index.html"))

    async def login(self, request: web.Request) -> web.Response:
        body = await _body(request)
        key = body.get("key")
        if not isinstance(key, str) or not key.strip():
            raise _invalid("key", "enter an API key (tsk_...)")
        key = key.strip()
        if len(key) > 512 or not key.isascii() or not key.isprintable() or " " in key:
            raise _invalid("key", "an API key is one word of printable ASCII (tsk_...)")
        conn = Connection(self.address, key, tls=self.tls, timeout=self.timeout, retry=RETRY)
        try:
            who = await asyncio.to_thread(conn.call, ADMIN, "WhoAmI", admin_pb2.WhoAmIRequest(),
                                          retry=True)
        except ApiError as e:
            conn.close()
            if e.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                return web.json_response(
                    {**error_json(e), "message": f"the Turnstile node at {self.address} does not "
                                                 f"answer; try again"}, status=503)
            return error_response(e)
        old = self.sessions.get(request.cookies.get(COOKIE, ""))
        if old is not None:
            await self.end(old)
        s = Session(secrets.token_urlsafe(32), conn, who, secrets.token_urlsafe(32), self.clock())
        self.sessions[s.sid] = s
        resp = web.json_response({"principal": who.principal_id, "role": who.role})
        resp.set_cookie(COOKIE, s.sid, httponly=True, samesite="Strict", path="/",
                        secure=request.secure)
        return resp

    async def logout(self, request: web.Request) -> web.Response:
        await self.end(await self.posting(request))
        resp = web.Response(status=204)
        resp.del_cookie(COOKIE, path="/")
        return resp

    async def me(self, request: web.Request) -> web.Response:
        s = await self.session(request)
        venues = list(s.whoami.venues)
        if not venues:                        # every venue: the node's, from its shard map
            try:
                venues = sorted((await asyncio.to_thread(s.conn.shard_map, True)).venues)
            except ApiError as e:
                return error_response(e)
        return web.json_response({
            "principal": s.whoami.principal_id, "role": s.whoami.role, "channel": s.whoami.channel,
            "venues": venues, "csrf": s.csrf,
            "controls": {name: s.may(method_name(ADMIN, m)) for name, m in CONTROLS.items()},
            "slots": s.may(AVAILABILITY)})

    async def slots(self, request: web.Request) -> web.Response:
        s = await self.session(request)
        venue = _id(dict(request.query), "venue")
        day = _day(request.query.get("date", ""))
        try:
            r = await self.call(s, inventory_pb2_grpc.InventoryServiceStub, "Availability",
                                inventory_pb2.AvailabilityRequest(venue_id=venue, date_from=day),
                                venue=venue)
        except ApiError as e:
            return error_response(e)
        return web.json_response({"slots": [
            {k: v for k, v in to_json(slot).items() if k != "allotments"} for slot in r.slots]})

    async def control(self, request: web.Request) -> web.Response:
        s = await self.posting(request)
        name = request.match_info["name"]
        body = await _body(request)
        venue = _id(body, "venue")
        key = uuid.uuid4().hex
        if name == "sales":
            req: Message = admin_pb2.SetSalesPausedRequest(
                venue_id=venue, zone_id=_id(body, "zone", required=False),
                slot_id=_id(body, "slot", required=False), paused=_flag(body, "paused"),
                idempotency_key=key)
        elif name == "entry":
            req = admin_pb2.SetEntryClosedRequest(
                venue_id=venue, zone_id=_id(body, "zone", required=False),
                gate_id=_id(body, "gate", required=False), closed=_flag(body, "closed"),
                idempotency_key=key)
        elif name == "capacity":
            req = admin_pb2.SetLiveCapacityRequest(
                venue_id=venue, zone_id=_id(body, "zone"),
                live_capacity=_count(body, "live_capacity"), idempotency_key=key)
        else:
            req = admin_pb2.SetFlowAlertsRequest(
                venue_id=venue, zone_id=_id(body, "zone"), fill_pct=_counts(body, "fill_pct"),
                entries_per_minute=_count(body, "entries_per_minute"), idempotency_key=key)
        try:
            answer = await self.call(s, ADMIN, CONTROLS[name], req, venue=venue)
        except ApiError as e:
            return error_response(e)
        return web.json_response(to_json(answer))

    async def live(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events of one venue, until the browser goes away, the session ends
        (the event ``logout`` then says so) or the app shuts down."""
        s = await self.session(request)
        venue = _id(dict(request.query), "venue")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "X-Accel-Buffering": "no"})
        await resp.prepare(request)
        await resp.write(b"retry: 3000\n\n")        # the browser's own reconnect, if we go away
        pump = asyncio.create_task(self._pump(s, venue, resp))
        ended = asyncio.create_task(s.ended.wait())
        closing = asyncio.create_task(self.closing.wait())
        s.streams += 1
        try:
            await asyncio.wait({pump, ended, closing}, return_when=asyncio.FIRST_COMPLETED)
            if ended.done():
                await resp.write(b"event: logout\ndata: {}\n\n")
        except ConnectionError:                   # the browser went away meanwhile
            pass
        finally:
            s.streams -= 1
            s.last_seen = self.clock()
            for t in (pump, ended, closing):
                t.cancel()
            await asyncio.gather(pump, ended, closing, return_exceptions=True)
        return resp

    async def _pump(self, s: Session, venue: str, resp: web.StreamResponse) -> None:
        """WatchLive -> ``data:`` events; a failure -> ``event: error`` and, unless no
        retry can mend it, a new stream after a growing wait. Ends when a write fails (the
        browser went away) or when it is cancelled, and cancels its gRPC call either way."""
        backoff = BACKOFF_FIRST_S
        request = report_pb2.WatchLiveRequest(venue_id=venue, min_interval_ms=self.min_interval_ms)
        again = False
        while True:
            call = None
            try:
                address = await asyncio.to_thread(_route, s.conn, venue, again)
                call = report_pb2_grpc.ReportServiceStub(s.channel(address)).WatchLive(
                    request, metadata=s.conn.metadata)
                async for view in call:
                    s.last_seen = self.clock()
                    await resp.write(b"data: " + json.dumps(to_json(view)).encode() + b"\n\n")
                    backoff = BACKOFF_FIRST_S
                err = ApiError(grpc.StatusCode.UNAVAILABLE, "the node ended the live stream",
                               method=WATCH_LIVE)
            except grpc.aio.AioRpcError as e:
                err = ApiError.from_rpc(e, method=WATCH_LIVE)
            except ApiError as e:                  # the shard map could not be had
                err = e
            finally:
                if call is not None:
                    call.cancel()
            fatal = err.code in FATAL
            again = True
            event = {**error_json(err), "retry_s": None if fatal else backoff}
            await resp.write(b"event: error\ndata: " + json.dumps(event).encode() + b"\n\n")
            if fatal:
                return
            await asyncio.sleep(backoff)
            backoff = min(BACKOFF_MAX_S, backoff * 2)


def _route(conn: Connection, venue: str, again: bool) -> str:
    """The address of the shard holding ``venue``; ``again`` (after a failure) asks the
    node for its shard map first, as a shard that restarted may listen elsewhere now
    (if the node does not answer, the map known is kept)."""
    if again:
        try:
            conn.shard_map(refresh=True)
        except ApiError:
            pass
    return conn.address_of(venue=venue)


async def _body(request: web.Request) -> dict:
    """A POST's JSON object; anything else is refused (415 or 400)."""
    if request.content_type != "application/json":
        raise Refusal(415, "INVALID_ARGUMENT", "send application/json")
    try:
        body = await request.json()
    except ValueError:
        raise Refusal(400, "INVALID_ARGUMENT", "the body is not JSON") from None
    if not isinstance(body, dict):
        raise Refusal(400, "INVALID_ARGUMENT", "the body must be a JSON object")
    return body


@web.middleware
async def _refusals(request: web.Request, handler) -> web.StreamResponse:
    """A :class:`Refusal` raised by a handler becomes its JSON answer."""
    try:
        return await handler(request)
    except Refusal as r:
        return r.response()


async def _headers(request: web.Request, response: web.StreamResponse) -> None:
    """Every answer: a strict CSP (no inline script or style, nothing from elsewhere),
    no MIME sniffing, no framing, no referrer; the API's answers never cached."""
    h = response.headers
    h["Content-Security-Policy"] = CSP
    h["X-Content-Type-Options"] = "nosniff"
    h["X-Frame-Options"] = "DENY"
    h["Referrer-Policy"] = "no-referrer"
    if request.path.startswith("/api/") or request.path in ("/login", "/logout"):
        h["Cache-Control"] = "no-store"
    else:
        h["Cache-Control"] = "no-cache"        # revalidate: a new version shows at once


def make_app(dashboard: Dashboard, *, sweep_every_s: float = 60.0) -> web.Application:
    """The aiohttp application of ``dashboard``."""
    app = web.Application(middlewares=[_refusals], client_max_size=64 * 1024)
    app.on_response_prepare.append(_headers)

    async def sweeper(app: web.Application):
        async def loop():
            while True:
                await asyncio.sleep(sweep_every_s)
                await dashboard.sweep()
        task = asyncio.create_task(loop())
        yield
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        for s in list(dashboard.sessions.values()):
            await dashboard.end(s)

    app.cleanup_ctx.append(sweeper)

    async def closing(app: web.Application) -> None:
        dashboard.closing.set()

    app.on_shutdown.append(closing)
    r = app.router
    r.add_get("/", dashboard.index)
    r.add_static("/static/", STATIC)
    r.add_post("/login", dashboard.login)
    r.add_post("/logout", dashboard.logout)
    r.add_get("/api/me", dashboard.me)
    r.add_get("/api/live", dashboard.live)
    r.add_get("/api/slots", dashboard.slots)
    r.add_post("/api/control/{name:sales|entry|capacity|alerts}", dashboard.control)
    app["dashboard"] = dashboard
    return app


async def serve(dashboard: Dashboard, host: str, port: int,
                listening: Callable[[str], None]) -> None:
    """Serve until cancelled; ``listening(url)`` once the socket listens (port 0: any
    free port, the one taken is in the URL)."""
    runner = web.AppRunner(make_app(dashboard), handler_cancellation=True, access_log=None,
                           shutdown_timeout=5.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        listening(f"http://{shown}:{bound_port}/")
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
