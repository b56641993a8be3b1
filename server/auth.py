"""Authentication and the role x method table: one interceptor for every service.

Every call carries `authorization: Bearer tsk_<id>_<secret>` in its metadata. No
key: UNAUTHENTICATED (reason API_KEY_MISSING); an unknown key id, a wrong secret or
a revoked key: UNAUTHENTICATED (API_KEY_INVALID). A role the table does not allow
for the method: PERMISSION_DENIED (ROLE_NOT_ALLOWED). Scope (venues, channel, gates)
is checked by the handlers, which read the caller from `current()`. docs/ROLES.md is
the table as users read it; tests/unit/test_roles_doc.py fails when the two differ.

A denied call by a known key (PERMISSION_DENIED, or UNAUTHENTICATED for a wrong
secret or a revoked key) is audited through the shard, so an auditor sees who tried
what; calls with no key or an unknown key id are not (anyone could make them, and
each would cost a write).

Request bytes that do not decode (or carry invalid UTF-8 in a string) are answered
INVALID_ARGUMENT (ErrorInfo reason MALFORMED_REQUEST), not grpc's UNKNOWN.
"""
from __future__ import annotations

import contextvars
import logging
import time

import grpc
from google.protobuf.message import DecodeError

from turnstile.engine import cmd
from turnstile.engine.errors import InvalidArgument, PermissionDenied, TurnstileError

from . import errors, metrics
from .control import Principal, ControlStore

log = logging.getLogger(__name__)

_current: contextvars.ContextVar[Principal] = contextvars.ContextVar("turnstile_principal")

ALL = frozenset({"admin", "operator", "seller", "channel", "gate", "finance", "auditor", "viewer",
                 "merchant"})
# roles that sell as their principal's channel and see that channel's orders, holds and
# shifts alone (a merchant's channel is its merchant id)
SELLS_AS_CHANNEL = frozenset({"seller", "channel", "merchant"})
SELLERS = frozenset({"admin", "seller", "channel"})       # they sell as a channel
ADMIN = frozenset({"admin"})
SETUP = frozenset({"admin", "operator"})                  # venue set-up, in the operator's venues
# a merchant inside a venue (二次消费): scans at its consumption points' gates (a boat's
# pier, a restaurant's door) and sells its own products at its tills
MERCHANT = frozenset({"merchant"})
GATES = frozenset({"admin", "gate"}) | MERCHANT
REPORTS = frozenset({"admin", "operator", "finance"})
# face enrolment and holder look-up: only roles that meet holders in person and see their
# ID card (the window, the venue's member desk); never a remote channel
IN_PERSON = frozenset({"admin", "operator", "seller"})
CASH_DESK = frozenset({"admin", "seller"})
# a provider's statement is finance's to bring in (and the platform admin's)
BOOKS = frozenset({"admin", "finance"})
# the live view: who runs the day, who counts its money, and the control room's screens
LIVE = frozenset({"admin", "operator", "finance", "viewer"})


def _svc(service: str, rows: dict[str, frozenset[str]]) -> dict[str, frozenset[str]]:
    return {f"/turnstile.v1.{service}/{m}": roles for m, roles in rows.items()}


# method -> roles allowed; a method not listed is allowed to nobody. Every rpc of the
# proto is listed (tests/unit/test_roles_doc.py checks), and docs/ROLES.md says why.
TABLE: dict[str, frozenset[str]] = {
    **_svc("GateService", {
        "Verify": GATES, "VerifyBatch": GATES, "VerifyStream": GATES,
        "VerifyPacked": GATES,
        "OfflineBundle": GATES, "UploadScans": GATES, "Heartbeat": GATES}),
    **_svc("SalesService", {
        # a merchant sells its own products at its till, as its channel
        "Quote": SELLERS | MERCHANT | {"operator"},   # an operator checks what buyers are charged
        "Hold": SELLERS | MERCHANT, "Confirm": SELLERS | MERCHANT, "Buy": SELLERS | MERCHANT,
        "Release": SELLERS | MERCHANT, "Refund": SELLERS | MERCHANT,
        "Change": SELLERS,                      # after-sale, like a refund: the selling channel's
        # the answer carries ticket codes (admission rights): the channel that sold it and
        # the venue's customer desk, not finance
        "GetOrder": SELLERS | MERCHANT | {"operator"},
        "GetHold": SELLERS | MERCHANT,          # a channel reads back its own holds
        # cash-desk shifts: a window's or a merchant's till (a remote channel has no
        # drawer), read back by its opener and by who checks the day's takings
        "OpenShift": CASH_DESK | MERCHANT, "CloseShift": CASH_DESK | MERCHANT,
        "GetShift": CASH_DESK | MERCHANT | REPORTS}),
    **_svc("InventoryService", {
        # stock is sales data: no gate; a merchant sees its products' slots
        "Availability": SELLERS | MERCHANT | {"operator", "finance"},
        "SessionSeats": SELLERS | {"operator", "finance"}}),  # a session's seats: its stock
    **_svc("AdminService", {
        # routing metadata (shard addresses, venue ids): every client routes by it, the
        # auditor to reach each shard's audit log; it carries no stock, sales or people
        "GetShardMap": ALL,
        "CreateVenue": ADMIN,
        "CreateZone": SETUP, "CreateGate": SETUP, "CreateProduct": SETUP, "CreateSlots": SETUP,
        "SetSlotCapacity": SETUP, "SetAllotment": SETUP, "BlockTicket": SETUP,
        "GetCatalog": ALL - {"auditor"},
        # the price calendar is set up like products; the day types are read like the catalog
        "SetCalendar": SETUP, "GetCalendar": ALL - {"auditor", "viewer"}, "SetPrices": SETUP,
        # rules and booking windows likewise; a product's pricing is read like the catalog
        "SetPriceRules": SETUP, "SetBookingWindow": SETUP, "SetRefundPolicy": SETUP, "GetProductPricing": ALL - {"auditor", "viewer"},
        # real-name limits and the person blacklist (against scalpers) are the venue's rules
        # of sale, set up like them; the blacklist answer shows the ID number masked only
        "SetIdLimits": SETUP, "Blacklist": SETUP, "Unblacklist": SETUP,
        # passes, packages and coupons are products and promotions, set up like them; a
        # coupon's use (budget spent) is read by who runs and pays for the promotion
        "SetPassDates": SETUP, "SetPackage": SETUP, "SetRevenueSplit": SETUP, "SetCoupon": SETUP, "IssueCouponCodes": SETUP,
        "GetCoupon": REPORTS,
        # a hall's seat map and which slots are its sessions: venue set-up, like slots
        "SetSeatMap": SETUP, "SetSeating": SETUP,
        # who works inside the venue and where: venue set-up, like zones and gates
        "SetMerchant": SETUP,
        "RotateTicketKey": ADMIN, "RetireTicketKey": ADMIN,
        "CreatePrincipal": ADMIN, "ListPrincipals": ADMIN,
        "CreateApiKey": ADMIN, "RevokeApiKey": ADMIN, "ListApiKeys": ADMIN,
        "QueryAudit": frozenset({"admin", "auditor"}), "VerifyAudit": frozenset({"admin", "auditor"}),
        # one-click controls (一键管控) are the venue operator's, like its set-up; the
        # settings are read by whoever watches the live view
        "SetSalesPaused": SETUP, "SetEntryClosed": SETUP, "SetLiveCapacity": SETUP,
        "SetFlowAlerts": SETUP, "GetLiveControls": LIVE,
        # any key may ask who it is (a client shows only what its role may do)
        "WhoAmI": ALL}),
    **_svc("ReportService", {
        "LiveCounts": REPORTS, "TicketCounts": REPORTS, "Conflicts": REPORTS,
        "Revenue": REPORTS, "TicketStatus": REPORTS, "Entries": REPORTS, "ListOrders": REPORTS,
        "StreamOrders": REPORTS, "ListRefunds": REPORTS, "ListChanges": REPORTS,
        "ListShifts": REPORTS, "ImportStatement": BOOKS, "Reconcile": REPORTS,
        # a merchant reads its own statement (what the split owes it), nothing else
        "Settlement": REPORTS | MERCHANT, "WatchLive": LIVE}),
    **_svc("MemberService", {
        "HolderTickets": IN_PERSON, "EnrollFace": IN_PERSON, "RemoveFace": IN_PERSON,
        # the member programme is the venue's, set up like its prices; read by who sells
        # to members and who counts its cost
        "SetMemberProgram": SETUP, "GetMemberProgram": SELLERS | {"operator", "finance"},
        # members join and are looked up where they buy: the window, the venue's own
        # channels (official site, mini-program) and its member desk; numbers shown masked
        "Enrol": SELLERS | {"operator"}, "GetMember": SELLERS | {"operator"},
        "ListPoints": SELLERS | {"operator", "finance"},
        # points by hand are the operator's (audited, with a reason)
        "AdjustPoints": SETUP,
        "MemberReport": REPORTS}),
}
# health checks need no key (load balancers, orchestrators), nor does reflection, which
# shows only the schema and is served on the admin listener alone
OPEN = frozenset({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch",
                  "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                  "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"})


def current() -> Principal:
    """The authenticated caller of the RPC being handled."""
    return _current.get()


# the interceptor's refusals go through the one error table, details and all
NO_KEY = errors.to_status(errors.Unauthenticated(
    "no API key (metadata authorization: Bearer tsk_...)", code="API_KEY_MISSING"))
# one answer for an unknown key id, a wrong secret and a revoked key: which key ids
# exist is not the caller's business
BAD_KEY = errors.to_status(errors.Unauthenticated(
    "unknown or revoked API key (metadata authorization: Bearer tsk_...)"))


# -- undecodable requests ----------------------------------------------------------------------
class _Malformed:
    """What the wrapped deserializer yields for bytes that do not decode: grpc would end
    the call UNKNOWN "Unexpected DecodeError" if the deserializer raised, so the handler
    answers instead. It serializes to the bytes sent, so a denied call is audited as sent."""

    __slots__ = ("raw", "error")

    def __init__(self, raw: bytes, error: str):
        self.raw = raw
        self.error = error

    def SerializeToString(self) -> bytes:
        return self.raw

    def status(self) -> grpc.Status:
        return errors.to_status(InvalidArgument(
            f"the request does not decode: {self.error}", code="MALFORMED_REQUEST",
            hint="send the serialized request message of the method; strings are UTF-8"))


def _tolerant(deserializer):
    if deserializer is None:
        return None

    def deserialize(raw: bytes):
        try:
            return deserializer(raw)
        except DecodeError as e:
            return _Malformed(raw, str(e))
    return deserialize


class _MalformedInStream(Exception):
    """Raised by a request stream at an undecodable message. It reaches the handler where
    it reads the stream, so answers to the requests before it still go out, in order
    (VerifyStream reads ahead), and the call then ends INVALID_ARGUMENT."""

    def __init__(self, request: _Malformed):
        super().__init__(request.error)
        self.request = request


async def _checked(request_iterator):
    async for request in request_iterator:
        if type(request) is _Malformed:
            raise _MalformedInStream(request)
        yield request


def _bind(handler, principal: Principal | None):
    """The same handler with undecodable requests answered INVALID_ARGUMENT, and the
    principal set for its handling."""
    if handler.unary_unary:
        inner = handler.unary_unary

        async def unary_unary(request, context):
            if type(request) is _Malformed:
                await context.abort_with_status(request.status())
            token = _current.set(principal)
            try:
                return await inner(request, context)
            finally:
                _current.reset(token)
        return grpc.unary_unary_rpc_method_handler(
            unary_unary, _tolerant(handler.request_deserializer), handler.response_serializer)
    if handler.stream_stream:
        inner_s = handler.stream_stream

        async def stream_stream(request_iterator, context):
            token = _current.set(principal)
            try:
                async for out in inner_s(_checked(request_iterator), context):
                    yield out
            except _MalformedInStream as e:
                await context.abort_with_status(e.request.status())
            finally:
                _current.reset(token)
        return grpc.stream_stream_rpc_method_handler(
            stream_stream, _tolerant(handler.request_deserializer), handler.response_serializer)
    if handler.unary_stream:
        inner_us = handler.unary_stream

        async def unary_stream(request, context):
            if type(request) is _Malformed:
                await context.abort_with_status(request.status())
            token = _current.set(principal)
            try:
                async for out in inner_us(request, context):
                    yield out
            finally:
                _current.reset(token)
        return grpc.unary_stream_rpc_method_handler(
            unary_stream, _tolerant(handler.request_deserializer), handler.response_serializer)
    return handler


# -- the interceptor ---------------------------------------------------------------------------
class AuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, store: ControlStore, node=None):
        self.store = store
        self.node = node         # services.ShardNode: denied calls are audited through it
        # (method, metadata) -> (handler, good until): a caller's decision and its bound
        # handler are reused for the store's cache_s, and never past the store's entry for
        # the key it rests on, so a revoked key still stops within cache_s (not twice
        # that); ~80 µs a call less in the benchmarks.
        # A denial's handler audits each call it answers, so caching it loses no record.
        self._decided: dict[tuple, tuple] = {}

    async def intercept_service(self, continuation, details):
        key = (details.method, details.invocation_metadata)
        now = time.monotonic()
        hit = self._decided.get(key)
        if hit is not None and hit[1] > now:
            return hit[0]
        handler, until = await self._decide(continuation, details)
        if self.store.cache_s > 0:
            if len(self._decided) >= 10_000:
                self._decided.clear()
            self._decided[key] = (handler, min(until, now + self.store.cache_s))
        return handler

    async def _decide(self, continuation, details):
        """(the handler that answers the call, until when that decision may be reused)"""
        method = details.method
        forever = float("inf")          # no key involved: intercept_service's own bound holds
        handler = await continuation(details)
        if handler is None:
            return handler, forever
        if method in OPEN:
            return _bind(handler, None), forever
        token = ""
        for key, value in details.invocation_metadata or ():
            if key == "authorization" and value.startswith("Bearer "):
                token = value[7:]
        if not token:
            return self._denied(handler, method, None, NO_KEY), forever
        principal, until = self.store.authenticate_until(token)
        if principal is None:
            # a known key id with a wrong secret, or a revoked key: audited under its owner
            return self._denied(handler, method, self.store.key_principal(token), BAD_KEY), until
        if principal.role not in TABLE.get(method, ()):
            return self._denied(handler, method, principal, errors.to_status(PermissionDenied(
                f"role {principal.role} may not call {method} (docs/ROLES.md)",
                code="ROLE_NOT_ALLOWED"))), until
        return _bind(handler, principal), until

    def _denied(self, handler, method: str, principal: Principal | None, status: grpc.Status):
        audit = self.node is not None and principal is not None
        result = status.code.name                   # the audit record's result
        deserialize = _tolerant(handler.request_deserializer)
        who, why = principal.id if principal is not None else "", metrics.status_reason(status)

        async def deny(request, context):
            metrics.note(who, why)                  # the call's log line (server/metrics.py)
            if audit:
                await self._audit_denied(principal, method, request, result)
            await context.abort_with_status(status)

        async def deny_stream(request_iterator, context):
            metrics.note(who, why)
            if audit:
                # nothing of the stream is read: audited as an empty request
                await self._audit_denied(principal, method, deserialize(b""), result)
            await context.abort_with_status(status)

        async def deny_unary_stream(request, context):
            await deny(request, context)
            yield                                   # never reached: makes it a stream handler

        if handler.stream_stream:
            return grpc.stream_stream_rpc_method_handler(
                deny_stream, deserialize, handler.response_serializer)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                deny_unary_stream, deserialize, handler.response_serializer)
        return grpc.unary_unary_rpc_method_handler(deny, deserialize, handler.response_serializer)

    async def _audit_denied(self, principal: Principal, method: str, request, result: str) -> None:
        """An audit record of a denied call, written through the shard like every note."""
        from . import services          # services imports this module: resolved at first use
        service, name = method[1:].rsplit("/", 1)
        # _audit_info reads the principal from current(): the one the key names, also
        # for a wrong secret (only for this record; the call itself runs nothing)
        token = _current.set(principal)
        try:
            call = services._call.set(services._audit_info(
                service.rsplit(".", 1)[-1], name, request, self.node))
            try:
                await self.node.submit(cmd.note(result))
            finally:
                services._call.reset(call)
        except TurnstileError as e:
            # an overloaded or stopping shard: the caller is still denied, as it must be
            log.warning("denied call %s by %s not audited: %s", method, principal.id, e)
        finally:
            _current.reset(token)
