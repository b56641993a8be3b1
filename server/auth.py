"""Authentication and the role x method table: one interceptor for every service.

Every call carries `authorization: Bearer tsk_<id>_<secret>` in its metadata. No
or an unknown key: UNAUTHENTICATED. A role the table does not allow for the
method: PERMISSION_DENIED. Scope (venues, channel, gates) is checked by the
handlers, which read the caller from `current()`.
"""
from __future__ import annotations

import contextvars
import time

import grpc

from .control import CACHE_S, Principal, ControlStore

_current: contextvars.ContextVar[Principal] = contextvars.ContextVar("turnstile_principal")

ALL = frozenset({"admin", "operator", "seller", "channel", "gate", "finance", "auditor"})
SELLERS = frozenset({"admin", "seller", "channel"})

# method -> roles allowed; a method not listed is allowed to nobody
TABLE: dict[str, frozenset[str]] = {
    "/turnstile.v1.GateService/Verify": frozenset({"admin", "gate"}),
    "/turnstile.v1.GateService/VerifyBatch": frozenset({"admin", "gate"}),
    "/turnstile.v1.GateService/VerifyStream": frozenset({"admin", "gate"}),
    "/turnstile.v1.GateService/OfflineBundle": frozenset({"admin", "gate"}),
    "/turnstile.v1.GateService/UploadScans": frozenset({"admin", "gate"}),
    "/turnstile.v1.SalesService/Quote": SELLERS | {"operator"},
    "/turnstile.v1.SalesService/Hold": SELLERS,
    "/turnstile.v1.SalesService/Confirm": SELLERS,
    "/turnstile.v1.SalesService/Release": SELLERS,
    "/turnstile.v1.SalesService/Refund": SELLERS,
    "/turnstile.v1.SalesService/GetOrder": SELLERS | {"operator", "finance"},
    "/turnstile.v1.InventoryService/Availability": SELLERS | {"operator", "finance"},
    "/turnstile.v1.AdminService/GetShardMap": ALL,
    "/turnstile.v1.AdminService/QueryAudit": frozenset({"admin", "auditor"}),
    "/turnstile.v1.AdminService/VerifyAudit": frozenset({"admin", "auditor"}),
    "/turnstile.v1.AdminService/GetCatalog": ALL,
    "/turnstile.v1.ReportService/LiveCounts": frozenset({"admin", "operator", "finance"}),
    "/turnstile.v1.ReportService/TicketCounts": frozenset({"admin", "operator", "finance"}),
    "/turnstile.v1.ReportService/Conflicts": frozenset({"admin", "operator", "finance", "auditor"}),
    "/turnstile.v1.MemberService/HolderTickets": frozenset({"admin", "operator", "seller"}),
    # a face is enrolled at the member desk or window, or by the channel that sold the
    # real-name ticket (a mini-program's face sign-up)
    "/turnstile.v1.MemberService/EnrollFace": frozenset({"admin", "operator", "seller", "channel"}),
    "/turnstile.v1.MemberService/RemoveFace": frozenset({"admin", "operator", "seller", "channel"}),
    # venue set-up: operators within their venues' scope
    **{f"/turnstile.v1.AdminService/{m}": frozenset({"admin", "operator"}) for m in (
        "CreateZone", "CreateGate", "CreateProduct", "CreateSlots", "SetSlotCapacity",
        "SetAllotment", "BlockTicket")},
    # new venues, ticket keys, principals and API keys: admins only
    **{f"/turnstile.v1.AdminService/{m}": frozenset({"admin"}) for m in (
        "CreateVenue", "RotateTicketKey", "RetireTicketKey", "CreatePrincipal", "ListPrincipals",
        "CreateApiKey", "RevokeApiKey", "ListApiKeys")},
}
# health checks need no key (load balancers, orchestrators), nor does reflection, which
# shows only the schema and is served on the admin listener alone
OPEN = frozenset({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch",
                  "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                  "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"})


def current() -> Principal:
    """The authenticated caller of the RPC being handled."""
    return _current.get()


def _abort(code: grpc.StatusCode, message: str):
    async def deny(request, context):
        await context.abort(code, message)

    async def deny_stream(request_iterator, context):
        await context.abort(code, message)
    return deny, deny_stream


def _bind(handler, principal: Principal):
    """The same handler, with the principal set for its handling."""
    if handler.unary_unary:
        inner = handler.unary_unary

        async def unary_unary(request, context):
            token = _current.set(principal)
            try:
                return await inner(request, context)
            finally:
                _current.reset(token)
        return grpc.unary_unary_rpc_method_handler(
            unary_unary, handler.request_deserializer, handler.response_serializer)
    if handler.stream_stream:
        inner_s = handler.stream_stream

        async def stream_stream(request_iterator, context):
            token = _current.set(principal)
            try:
                async for out in inner_s(request_iterator, context):
                    yield out
            finally:
                _current.reset(token)
        return grpc.stream_stream_rpc_method_handler(
            stream_stream, handler.request_deserializer, handler.response_serializer)
    return handler


class AuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, store: ControlStore):
        self.store = store
        # (method, metadata) -> (handler, good until): a caller's decision and its bound
        # handler are reused for CACHE_S, as long as a key's principal is cached anyway
        # (a revoked key still stops within CACHE_S); ~80 µs a call less in the benchmarks
        self._decided: dict[tuple, tuple] = {}

    async def intercept_service(self, continuation, details):
        key = (details.method, details.invocation_metadata)
        now = time.monotonic()
        hit = self._decided.get(key)
        if hit is not None and hit[1] > now:
            return hit[0]
        handler = await self._decide(continuation, details)
        if len(self._decided) >= 10_000:
            self._decided.clear()
        self._decided[key] = (handler, now + CACHE_S)
        return handler

    async def _decide(self, continuation, details):
        method = details.method
        handler = await continuation(details)
        if method in OPEN or handler is None:
            return handler
        token = ""
        for key, value in details.invocation_metadata or ():
            if key == "authorization" and value.startswith("Bearer "):
                token = value[7:]
        principal = self.store.authenticate(token) if token else None
        if principal is None:
            return _denied(handler, grpc.StatusCode.UNAUTHENTICATED,
                           "missing or unknown API key (metadata authorization: Bearer tsk_...)")
        if principal.role not in TABLE.get(method, ()):
            return _denied(handler, grpc.StatusCode.PERMISSION_DENIED,
                           f"role {principal.role} may not call {method}")
        return _bind(handler, principal)


def _denied(handler, code, message):
    deny, deny_stream = _abort(code, message)
    if handler.stream_stream:
        return grpc.stream_stream_rpc_method_handler(
            deny_stream, handler.request_deserializer, handler.response_serializer)
    return grpc.unary_unary_rpc_method_handler(
        deny, handler.request_deserializer, handler.response_serializer)
