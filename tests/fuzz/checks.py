"""Calls with raw bytes, and what every answer must satisfy (DESIGN.md 5, issue 9 section 4):
only documented status codes, no internal exception names, no long echo of the request,
google.rpc details with an ErrorInfo reason, BadRequest fields that are real proto paths;
and where one mutation is something the contract is precise about (an id over 64
characters, an invalid Timestamp, a malformed date), INVALID_ARGUMENT naming that field."""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

from .mutate import Mutation
from .protos import Method, resolve

S = grpc.StatusCode
# what a caller may see for a request it got wrong (DESIGN.md 5; issue 9 section 4).
# RESOURCE_EXHAUSTED is for real overload only, and the fuzz sends one call at a time;
# DEADLINE_EXCEEDED only when the suite's own deadline ran out (check() looks at the time).
DOCUMENTED = frozenset({S.OK, S.INVALID_ARGUMENT, S.NOT_FOUND, S.ALREADY_EXISTS,
                        S.FAILED_PRECONDITION, S.PERMISSION_DENIED, S.UNAUTHENTICATED})
# an internal exception's name or a traceback in what the caller reads
LEAK = re.compile(r"Traceback|Unexpected|\b[A-Za-z_][\w.]*(?:Error|Exception|Warning)\b")
ECHO_LIMIT = 200
DETAILS_KEY = "grpc-status-details-bin"


@dataclass
class Outcome:
    code: grpc.StatusCode
    message: str = ""
    status: status_pb2.Status | None = None    # the google.rpc.Status trailer, if any
    responses: list = field(default_factory=list)   # raw response messages received
    elapsed: float = 0.0
    timeout: float = 0.0

    @property
    def ok(self) -> bool:
        return self.code == S.OK


def _outcome(err: grpc.RpcError, t0: float, timeout: float, responses: list) -> Outcome:
    status = None
    for k, v in err.trailing_metadata() or ():
        if k == DETAILS_KEY:
            status = status_pb2.Status()
            try:
                status.ParseFromString(v)
            except DecodeError:
                status = status_pb2.Status(message="<undecodable google.rpc.Status>", code=-1)
    return Outcome(err.code(), err.details() or "", status, responses, time.monotonic() - t0, timeout)


def call(channel: grpc.Channel, method: Method, payloads: list[bytes], metadata, timeout: float) -> Outcome:
    """Send raw request bytes (one, or a stream of them) and collect the answer."""
    t0 = time.monotonic()
    responses: list = []
    try:
        if method.client_streaming or method.server_streaming:
            fn = channel.stream_stream(method.path) if method.client_streaming \
                else channel.unary_stream(method.path)
            arg = iter(payloads) if method.client_streaming else payloads[0]
            stream = fn(arg, metadata=metadata, timeout=timeout)
            for r in stream:
                responses.append(r)
                if not method.client_streaming:
                    # a server stream that answered has answered: a live one (WatchLive)
                    # never ends by itself
                    stream.cancel()
                    break
        else:
            responses.append(channel.unary_unary(method.path)(payloads[0], metadata=metadata,
                                                              timeout=timeout))
    except grpc.RpcError as err:
        return _outcome(err, t0, timeout, responses)
    return Outcome(S.OK, "", None, responses, time.monotonic() - t0, timeout)


def sent_strings(msg) -> list[str]:
    """Every string value in a request message, recursively."""
    out = []
    for f, v in msg.ListFields():
        vals = v if f.is_repeated else [v]
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            vals = [*v.keys(), *v.values()]
        for x in vals:
            if isinstance(x, str):
                out.append(x)
            elif hasattr(x, "ListFields"):
                out.extend(sent_strings(x))
    return out


def echoed(text: str, sent: list[str]) -> int:
    """Characters of `text` copied from what was sent: more than ECHO_LIMIT if a run that
    long comes from one long value, else the sum of the shorter values quoted whole."""
    longest, quoted = 0, 0
    seen = set()
    for s in sent:
        if len(s) > ECHO_LIMIT:
            for i in range(0, max(len(text) - ECHO_LIMIT, 0)):
                if text[i:i + ECHO_LIMIT + 1] in s:
                    longest = max(longest, ECHO_LIMIT + 1)
                    break
        elif len(s) >= 6 and s not in seen and len(seen) < 5000:
            seen.add(s)
            if s in text:
                quoted += len(s) * text.count(s)
    return max(longest, quoted)


def details_text(status: status_pb2.Status | None) -> list[str]:
    out = []
    if status is None:
        return out
    out.append(status.message)
    for d in status.details:
        if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            d.Unpack(info)
            out += [info.reason, *info.metadata.values()]
        elif d.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            br = error_details_pb2.BadRequest()
            d.Unpack(br)
            out += [v.description for v in br.field_violations]
    return out


def fields_named(status: status_pb2.Status | None) -> tuple[list[str], list[str], str]:
    """(BadRequest field paths, ErrorInfo metadata 'field' values, ErrorInfo reason)."""
    bad, info_fields, reason = [], [], ""
    if status is None:
        return bad, info_fields, reason
    for d in status.details:
        if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            d.Unpack(info)
            reason = reason or info.reason
            if "field" in info.metadata:
                info_fields.append(info.metadata["field"])
        elif d.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            br = error_details_pb2.BadRequest()
            d.Unpack(br)
            bad += [v.field for v in br.field_violations]
    return bad, info_fields, reason


def check(method: Method, out: Outcome, sent: list[str], request=None,
          mutations: list[Mutation] | None = None) -> list[tuple[str, str]]:
    """The (check, what was seen) pairs this answer breaks; [] when it is fine."""
    bad: list[tuple[str, str]] = []
    msg = out.message
    if out.code not in DOCUMENTED:
        ours = out.code == S.DEADLINE_EXCEEDED and out.elapsed >= out.timeout * 0.95
        if not ours:
            bad.append(("undocumented-status", f"{out.code.name} {msg[:160]!r}"))
    strict = mutations[0].path if mutations and len(mutations) == 1 and mutations[0].expect_invalid \
        else None
    if out.ok:
        if strict is not None:
            bad.append(("contract", f"OK; expected INVALID_ARGUMENT on {strict}"))
        return bad
    if out.code == S.DEADLINE_EXCEEDED:
        return bad                    # our own deadline: the server never answered
    texts = [msg, *details_text(out.status)]
    for t in texts:
        m = LEAK.search(t)
        if m:
            bad.append(("internal-name", f"{out.code.name} {t[:160]!r}"))
            break
    if max(echoed(t, sent) for t in texts) > ECHO_LIMIT:
        bad.append(("echo", f"{out.code.name} error text quotes more than {ECHO_LIMIT} characters of "
                            f"the request (message {len(msg)} chars)"))
    if strict is not None and out.code != S.INVALID_ARGUMENT:
        bad.append(("contract", f"{out.code.name} {msg[:100]!r}; expected INVALID_ARGUMENT on {strict}"))
    if out.status is None:
        bad.append(("no-details", f"{out.code.name} {msg[:120]!r} has no google.rpc.Status details"))
        return bad
    if out.status.code != out.code.value[0]:
        bad.append(("details-code", f"status {out.code.name} but details say code {out.status.code}"))
    fields, info_fields, reason = fields_named(out.status)
    if not reason:
        bad.append(("no-error-info", f"{out.code.name} {msg[:120]!r} has no ErrorInfo reason"))
    desc = method.input.DESCRIPTOR
    for name in dict.fromkeys(fields + info_fields):
        why = resolve(desc, name, request)
        if why is not None:
            bad.append(("field-path", f"{out.code.name} names {name!r}: {why}"))
    if strict is not None and out.code == S.INVALID_ARGUMENT \
            and not any(f == strict or f.startswith(strict + ".") for f in fields):
        bad.append(("contract-field", f"INVALID_ARGUMENT names {fields or 'no field'}; expected {strict}"))
    return bad
