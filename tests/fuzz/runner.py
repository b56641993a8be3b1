"""One rpc fuzzed: its valid request, calls without a key, mutated requests and raw bytes,
each answer checked (checks.check) and, for every refused call, the business state
compared with what it was before the call (World.digest)."""
from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

import grpc
from google.protobuf import text_format
from google.protobuf.descriptor import FieldDescriptor as F
from google.protobuf.message import DecodeError

from .builders import Spec
from .checks import Outcome, call, check, sent_strings
from .mutate import Mutation, apply_probe, mutate, probes
from .protos import Method, is_map
from .world import TIMEOUT, VENUE, World

# principals of the world scoped to the demo venue alone
SCOPED = frozenset({"demo-gate", "demo-ota", "demo-window", "fuzz-op"})


# -- findings ------------------------------------------------------------------------
@dataclass
class Finding:
    method: str
    check: str
    detail: str
    triggers: list[str] = field(default_factory=list)   # mutations that showed it
    example: str = ""                                   # one request that showed it
    count: int = 0


def _norm(text: str) -> str:
    return re.sub(r"\d+", "N", text)


# checks whose detail is the class itself (a field name, a state part); for the others the
# class is the status and the start of its message
_BY_DETAIL = ("field-path", "contract", "contract-field", "state-changed", "scope", "echo",
              "valid-request-refused")


class Findings:
    """Distinct failure classes: one per rpc and set of broken checks with what was seen."""

    def __init__(self):
        self.classes: dict[tuple, Finding] = {}

    def add(self, method: str, problems: list[tuple[str, str]], trigger: str, example,
            code: str = "", message: str = "") -> None:
        """Record one call's problems; `example()` describes the request (made only once)."""
        if not problems:
            return
        parts = frozenset(_norm(d)[:120] if c in _BY_DETAIL else f"{c} {code} {_norm(message[:60])}"
                          for c, d in problems)
        key = (method, parts)
        f = self.classes.get(key)
        if f is None:
            checks = ",".join(sorted({c for c, _ in problems}))
            detail = "; ".join(dict.fromkeys(d for _, d in problems))
            f = self.classes[key] = Finding(method, checks, detail,
                                            example=example() if callable(example) else example)
        f.count += 1
        if trigger not in f.triggers and len(f.triggers) < 6:
            f.triggers.append(trigger)

    def __bool__(self) -> bool:
        return bool(self.classes)

    def lines(self) -> list[str]:
        """One line per failure class, the rpcs that show the same one grouped."""
        groups: dict[tuple, list[Finding]] = {}
        for f in self.classes.values():
            detail = re.sub(r"turnstile\.v1\.\w+", "turnstile.v1.<request>", f.detail)
            groups.setdefault((f.check, _norm(detail)[:160]), []).append(f)
        out = []
        for (chk, _), fs in groups.items():
            triggers = list(dict.fromkeys(t for f in fs for t in f.triggers))[:6]
            rpcs = ", ".join(f.method for f in fs)
            out.append(f"[{chk}] {fs[0].detail[:300]}\n    rpcs: {rpcs}\n    <- {', '.join(triggers)}")
        return out


@dataclass
class Session:
    """What the whole pytest session found, for its summary (tests/fuzz/conftest.py)."""
    findings: Findings = field(default_factory=Findings)
    calls: dict[str, int] = field(default_factory=dict)
    seed: int | None = None


SESSION = Session()


def summary(msg) -> str:
    """The request in one short line: long strings and lists cut."""
    m = type(msg)()
    m.CopyFrom(msg)

    def cut(x, depth=0):
        for f, v in list(x.ListFields()):
            if is_map(f):
                if len(v) > 4:
                    for k in list(v.keys())[4:]:
                        del v[k]
                continue
            if f.is_repeated:
                if len(v) > 4:
                    del v[4:]
                if f.type == F.TYPE_STRING:
                    for i, s in enumerate(v):
                        if len(s) > 40:
                            v[i] = f"{s[:12]}…<{len(s)} chars>"
                elif f.type == F.TYPE_MESSAGE and depth < 4:
                    for e in v:
                        cut(e, depth + 1)
            elif f.type == F.TYPE_STRING and len(v) > 40:
                setattr(x, f.name, f"{v[:12]}…<{len(v)} chars>")
            elif f.type == F.TYPE_MESSAGE and depth < 4:
                cut(v, depth + 1)
    cut(m)
    return text_format.MessageToString(m, as_one_line=True)[:300]


# -- raw bytes ------------------------------------------------------------------------
def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _tag(number: int, wire: int) -> bytes:
    return _varint(number << 3 | wire)


def _ld(number: int, payload: bytes) -> bytes:
    return _tag(number, 2) + _varint(len(payload)) + payload


def _string_paths(desc, depth: int = 0) -> list[tuple[str, list[int]]]:
    """(path, field numbers from the top) of string fields, one level of nesting deep."""
    out = []
    for f in desc.fields:
        if f.type == F.TYPE_STRING:
            out.append((f.name, [f.number]))
        elif f.type == F.TYPE_MESSAGE and depth == 0 and not is_map(f):
            out += [(f"{f.name}.{p}", [f.number, *nums]) for p, nums in _string_paths(f.message_type, 1)]
    return out


GARBAGE = ("random", "random-long", "truncated", "flipped", "length-past-end", "varint-overflow",
           "open-group", "unknown-field", "empty", "invalid-utf8")


def garbage(rng: random.Random, desc, valid: bytes, kind: str | None = None) -> tuple[str, bytes]:
    """(label, bytes): random bytes, or a valid request broken in a way a decoder must catch."""
    strings = _string_paths(desc)
    ints = [f for f in desc.fields if f.type in (F.TYPE_INT64, F.TYPE_UINT64, F.TYPE_INT32,
                                                 F.TYPE_UINT32, F.TYPE_ENUM, F.TYPE_BOOL)]
    if kind is None:
        kind = rng.choice(GARBAGE + ("random", "invalid-utf8"))
    if kind == "random-long":
        return kind, rng.randbytes(rng.randint(200, 5000))
    if kind == "truncated" and len(valid) > 1:
        return kind, valid[:rng.randrange(1, len(valid))]
    if kind == "flipped" and valid:
        b = bytearray(valid)
        i = rng.randrange(len(b))
        b[i] ^= rng.randint(1, 255)
        return kind, bytes(b)
    if kind == "invalid-utf8" and strings:
        path, nums = rng.choice(strings)
        bad = rng.choice((b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"ok\x80"))
        enc = _ld(nums[-1], bad)
        for n in reversed(nums[:-1]):
            enc = _ld(n, enc)
        return f"invalid-utf8@{path}", valid + enc
    if kind == "length-past-end":
        n = rng.choice(strings)[1][0] if strings else 1
        return kind, valid + _tag(n, 2) + _varint(1000) + b"abc"
    if kind == "varint-overflow":
        n = rng.choice(ints).number if ints else 1
        return kind, valid + _tag(n, 0) + b"\xff" * 10 + b"\x7f"
    if kind == "open-group":
        return kind, valid + _tag(rng.randint(1, 20), 3)
    if kind == "unknown-field":
        return kind, valid + _ld(rng.randint(1000, 5000), rng.randbytes(8))
    if kind == "empty":
        return kind, b""
    return "random", rng.randbytes(rng.randint(1, 64))


# -- the fuzz of one rpc --------------------------------------------------------------
class Fuzz:
    def __init__(self, world: World, method: Method, spec: Spec, seed: int, findings: Findings):
        self.w = world
        self.m = method
        self.spec = spec
        self.rng = random.Random(f"{seed}:{method.key}")      # per rpc: -k reproduces one
        self.findings = findings
        self.calls = 0

    def build(self):
        try:
            return self.spec.build(self.w, self.rng, self.m.input)
        except grpc.RpcError as e:        # what the builder needed was refused: say which
            raise AssertionError(f"{self.m.key}: building a valid request failed: {e.code().name} "
                                 f"{e.details()!r} (tests/fuzz/builders.py)") from None

    def one(self, payloads: list[bytes], request, mutations: list[Mutation], trigger: str,
            meta=None, state_check: bool = True, sent_extra: list[str] = ()) -> Outcome:
        """One call, its answer checked; for a mutating rpc, the state compared with the
        state before the call unless the call was accepted."""
        w = self.w
        mutating = not self.spec.readonly
        # after the builder made what it needed (a read-only rpc's builder makes its things
        # once, at its first request; its calls are compared with that state at the end)
        w.ensure_baseline()
        out = call(w.ch, self.m, payloads, w.meta(self.spec.principal) if meta is None else meta, TIMEOUT)
        self.calls += 1
        sent = (sent_strings(request) if request is not None else []) + list(sent_extra)
        problems = check(self.m, out, sent, request, mutations)
        if mutating:
            if out.ok or out.responses:
                # accepted: what it changed is the new baseline; a caller scoped to the demo
                # venue changes nothing of the other venue (DESIGN.md 5: scope is checked on
                # the object a call touches)
                if self.spec.principal in SCOPED and state_check:
                    other = [k for k in w.state_changed() if w.of_venue_b(k)]
                    if other:
                        problems.append(("scope", f"{self.spec.principal} (scoped to {VENUE}) changed "
                                                  f"{', '.join(other)}"))
                w.touched()
                w.consumed(request)
                if self.spec.after_ok is not None and out.ok:
                    for r in out.responses:
                        self.spec.after_ok(w, r)
            elif state_check:
                changed = w.state_changed()
                if changed:
                    problems.append(("state-changed", f"a refused call ({out.code.name}) changed "
                                                      f"{', '.join(changed)}"))
            else:
                w.touched()
        self.findings.add(self.m.key, problems, trigger,
                          lambda: summary(request) if request is not None else repr(payloads[0][:60]),
                          out.code.name, out.message)
        return out

    def run(self, n_random: int, n_raw: int) -> None:
        """Everything, in order; a read-only rpc must leave the state as it found it."""
        if self.spec.readonly:
            self.w.touched()
            self.w.ensure_baseline()
        self.valid()
        self.unauthenticated()
        self.probes()
        self.mutated(n_random)
        self.raw(n_raw)
        if self.spec.readonly:
            changed = self.w.state_changed()
            if changed:
                self.findings.add(self.m.key, [("state-changed", f"calls of a read-only rpc changed "
                                                                 f"{', '.join(changed)}")],
                                  "any of its calls", "")

    def valid(self) -> None:
        req = self.build()
        out = self.one([req.SerializeToString()], req, [], "valid request")
        if not out.ok:
            self.findings.add(self.m.key, [("valid-request-refused",
                                            f"{out.code.name} {out.message[:140]!r}")],
                              "valid request", summary(req))

    def unauthenticated(self) -> None:
        """No key, an unknown key: UNAUTHENTICATED (server/auth.py), with details, no change."""
        for trigger, meta in (("no key", ()),
                              ("unknown key", (("authorization", "Bearer tsk_000000000000_fuzz"),))):
            req = self.build()
            out = self.one([req.SerializeToString()], req, [], trigger, meta=meta)
            if out.code != grpc.StatusCode.UNAUTHENTICATED:
                self.findings.add(self.m.key, [("contract", f"{out.code.name} with {trigger}; "
                                                "expected UNAUTHENTICATED")], trigger, summary(req))

    def _send(self, req, muts: list[Mutation]) -> None:
        trigger = " + ".join(map(str, muts)) or "unchanged"
        payload = req.SerializeToString()
        if self.m.client_streaming and self.rng.random() < 0.3:
            # the broken message between two good ones: what came before may be applied
            good = [self.build().SerializeToString() for _ in range(2)]
            self.one([good[0], payload, good[1]], req, muts, f"stream[1] {trigger}", state_check=False)
        else:
            self.one([payload], req, muts, trigger)

    def probes(self) -> None:
        """Each field of the valid request, through the systematic probes. A builder may
        make requests of several shapes (a scan by code or by ID number): the probes of
        every shape seen in a few requests, each sent on a request of its shape."""
        todo = list(dict.fromkeys(p for _ in range(6) for p in probes(self.build(), self.w.pool)))
        for path, label in todo:
            for _ in range(12):
                req = self.build()
                m = apply_probe(req, path, label, self.rng, self.w.pool, self.w.now())
                if m is not None:
                    self._send(req, [m])
                    break

    def mutated(self, n: int) -> None:
        for _ in range(n):
            req = self.build()
            self._send(req, mutate(req, self.rng, self.w.pool, self.w.now()))

    def raw(self, n: int) -> None:
        """Each kind of broken bytes once, then random ones; a stream gets 1-3 of them."""
        desc = self.m.input.DESCRIPTOR
        for i in range(max(n, len(GARBAGE))):
            valid = self.build().SerializeToString()
            count = self.rng.randint(1, 3) if self.m.client_streaming else 1
            parts = [garbage(self.rng, desc, valid, GARBAGE[i] if i < len(GARBAGE) and j == 0 else None)
                     for j in range(count)]
            payloads = [p for _, p in parts]
            label = "bytes:" + "+".join(k for k, _ in parts)
            try:
                request = self.m.input.FromString(payloads[0])
            except DecodeError:
                request = None
            sent = [p.decode("latin-1") for p in payloads] + [p.decode("utf-8", "replace") for p in payloads]
            self.one(payloads, request, [], label, sent_extra=sent)
