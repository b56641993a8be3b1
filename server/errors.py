"""Engine errors -> gRPC status, in one table, with google.rpc details.

Every error reaches the client as a gRPC status code from TABLE, a message, and
`google.rpc.Status` details: ErrorInfo (reason = the engine's stable error code,
domain "turnstile") always, and BadRequest naming the field when the error is about
one. A refused scan never comes here: it is a VerifyResponse with a reason.
Only the encoder lives here: the one reader of these details is `clients.base.ApiError.from_rpc`
(the server never reads them back; tests use `clients.base.error_info`).
"""
from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from turnstile.engine import errors as e

DOMAIN = "turnstile"


class Unauthenticated(e.TurnstileError):
    """No API key, or one the server does not accept (the auth interceptor's refusal)."""

    code = "API_KEY_INVALID"


# error class -> gRPC status; the most specific class wins (MRO order)
TABLE: dict[type, grpc.StatusCode] = {
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    e.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    e.NotFound: grpc.StatusCode.NOT_FOUND,
    e.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    e.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    e.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    e.Overloaded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    e.StorageFull: grpc.StatusCode.RESOURCE_EXHAUSTED,
    e.ShardUnavailable: grpc.StatusCode.UNAVAILABLE,
    e.StorageError: grpc.StatusCode.INTERNAL,
    e.CorruptData: grpc.StatusCode.DATA_LOSS,
    e.TurnstileError: grpc.StatusCode.INTERNAL,
}


def status_code(err: e.TurnstileError) -> grpc.StatusCode:
    for cls in type(err).__mro__:
        if cls in TABLE:
            return TABLE[cls]
    return grpc.StatusCode.INTERNAL


def _pack(msg) -> any_pb2.Any:
    a = any_pb2.Any()
    a.Pack(msg)
    return a


def to_status(err: e.TurnstileError) -> grpc.Status:
    """The grpc.Status (code, message, details trailer) for an engine error."""
    code = status_code(err)
    # a message quotes at most a short prefix of what was sent: ids are checked before
    # they reach one, and this bounds anything else (trailers have a size limit)
    err.message = err.message if len(err.message) <= 300 else err.message[:297] + "..."
    err.field = err.field[:120] if err.field else err.field
    info = error_details_pb2.ErrorInfo(reason=err.code, domain=DOMAIN)
    if err.field:
        info.metadata["field"] = err.field
    if err.hint:
        info.metadata["hint"] = err.hint
    details = [_pack(info)]
    if err.field:
        details.append(_pack(error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=err.field, description=err.message)])))
    st = status_pb2.Status(code=code.value[0], message=str(err), details=details)
    return rpc_status.to_status(st)

