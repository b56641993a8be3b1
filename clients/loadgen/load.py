"""The load itself, on grpc.aio for speed: open-loop pacing, the event loop a run gets,
and the bare scan loads (unary GateService.Verify, GateService.VerifyStream) that the
scan scenarios and bench/ drive (bench/ points them at a bare grpc server too).

Channels come from `clients.base.Connection.aio_channel` (the connection's options, TLS
and routing) and each call carries the connection's metadata and a deadline; requests
are built before the clock starts (the load generator's CPU is not the server's).
Tickets to scan are (ticket id or -1, code, scan time or None: the server's clock).
"""
from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import grpc
from turnstile.v1 import gate_pb2, gate_pb2_grpc

from ..base import ApiError, Connection
from ..concentrator import PackedAnswers, pack, request
from .checks import IN
from .results import QUIET, Progress
from .target import CALL_TIMEOUT, LoadgenError, check_address

# statuses after which a call may or may not have been applied (or was shed unapplied)
UNKNOWN_OUTCOME = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                             grpc.StatusCode.CANCELLED, grpc.StatusCode.RESOURCE_EXHAUSTED,
                             grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN})


def error_reason(err: grpc.RpcError) -> str:
    """The stable reason of a Turnstile error (google.rpc ErrorInfo), else the status name."""
    return ApiError.from_rpc(err).reason or err.code().name


class Pacer:
    """Open-loop pacing: the k-th call of a run is due at t0 + k / rate, whoever sends
    it. Latency counts from the due time, so a server that falls behind is charged for
    the queue it causes (no coordinated omission)."""

    def __init__(self, rate: float | None):
        self.interval = 1.0 / rate if rate else 0.0
        self.next = 0.0

    def start(self) -> None:
        self.next = time.perf_counter()

    async def due(self) -> float:
        if not self.interval:
            return time.perf_counter()
        t = self.next
        self.next += self.interval
        d = t - time.perf_counter()
        if d > 0:
            await asyncio.sleep(d)
        return t


def run_loop(factory: Callable, loop: str, bound_s: float):
    """Run an async load in a new event loop (asyncio or uvloop), at most bound_s."""
    async def main():
        try:
            return await asyncio.wait_for(factory(), bound_s)
        except TimeoutError:
            raise LoadgenError(f"the run did not stop within {bound_s:.0f} s") from None
    if loop == "uvloop":
        import uvloop
        return uvloop.run(main())
    if loop != "asyncio":
        raise LoadgenError(f"unknown loop {loop!r} (asyncio, uvloop)")
    return asyncio.run(main())


async def ready(ch: grpc.aio.Channel, address: str) -> None:
    try:
        await asyncio.wait_for(ch.channel_ready(), 10)
    except TimeoutError:
        raise LoadgenError(f"no server answers at {address}") from None


def run_id() -> str:
    """A name for one run, unique enough to keep its idempotency keys apart."""
    return f"{int(time.time()) % 10 ** 8:x}{secrets.token_hex(3)}"


@dataclass
class Run:
    """Raw outcome of a load: latencies (s), answers, wall time, whether the time bound
    stopped it, RPC errors by status."""

    lat: list
    out: list
    elapsed: float
    cut: bool
    errors: Counter
    t0: float = 0.0
    extra: dict = field(default_factory=dict)


# -- tickets to scan ------------------------------------------------------------------------------
def scan_items(tickets: Sequence, at: int | None) -> list[tuple[int, str, int | None]]:
    """(ticket id or -1, code, scan time) from (id, code[, at]) tuples or plain codes; the
    scan time `at` where a ticket has none, or None: the server's clock."""
    out = []
    for t in tickets:
        if isinstance(t, str):
            t = (-1, t)
        when = t[2] if len(t) >= 3 and t[2] is not None else at
        out.append((int(t[0]), t[1], None if when is None else int(when)))
    return out


def read_codes(path: str) -> list[tuple[int, str, int | None]]:
    """Tickets from a file: one per line, `CODE`, `TICKET_ID CODE` or `TICKET_ID CODE
    SCAN_TIME` (UTC seconds), as `save_codes` writes them; # starts a comment."""
    out = []
    try:
        with open(path) as f:
            for n, line in enumerate(f, 1):
                parts = line.split("#", 1)[0].split()
                if not parts:
                    continue
                try:
                    if len(parts) == 1:
                        out.append((-1, parts[0], None))
                    elif len(parts) in (2, 3):
                        out.append((int(parts[0]), parts[1], int(parts[2]) if len(parts) == 3 else None))
                    else:
                        raise ValueError
                except ValueError:
                    raise LoadgenError(f"{path}:{n}: expected CODE, or TICKET_ID CODE [SCAN_TIME]") from None
    except OSError as e:
        raise LoadgenError(f"cannot read {path}: {e.strerror}") from None
    return out


def save_codes(path: str, tickets: Iterable[tuple]) -> int:
    """Write tickets (ticket id, code, scan time) for `read_codes`; returns how many."""
    n = 0
    with open(path, "w") as f:
        f.write("# ticket_id code scan_time(UTC s): turnstile loadgen --codes-file\n")
        for t in tickets:
            f.write(f"{t[0]} {t[1]}" + (f" {t[2]}" if len(t) > 2 and t[2] is not None else "") + "\n")
            n += 1
    return n


def deal(items: list, inflight: int, dupes: float, rng: random.Random) -> list[list]:
    """Every item once, dealt round-robin to `inflight` workers; a share `dupes` of them
    ALSO to another worker at a random place (two gates scanning one code at once)."""
    work = [items[k::inflight] for k in range(inflight)]
    if inflight > 1:
        for k in rng.sample(range(len(items)), int(len(items) * dupes)):
            home = k % inflight
            other = (home + rng.randrange(1, inflight)) % inflight
            work[other].insert(rng.randrange(len(work[other]) + 1), items[k])
    return work


def into_batches(items: list, per: int, *, one_size: bool = False) -> list[list]:
    """Consecutive items of one scan time, `per` at most in each batch; with `one_size`,
    of one code length too (a packed batch's codes are all of one size)."""
    out: list[list] = []
    for it in items:
        if out and len(out[-1]) < per and out[-1][0][2] == it[2] \
                and (not one_size or len(out[-1][0][1]) == len(it[1])):
            out[-1].append(it)
        else:
            out.append([it])
    return out


def verify_request(it: tuple, gate: str, direction: int) -> gate_pb2.VerifyRequest:
    req = gate_pb2.VerifyRequest(code=it[1], gate_id=gate, direction=direction)
    if it[2] is not None:               # else the server's clock
        req.scan_time.seconds = it[2]
    return req


def _batch_request(batch: list, gate: str, direction: int) -> gate_pb2.VerifyBatchRequest:
    req = gate_pb2.VerifyBatchRequest(codes=[it[1] for it in batch], gate_id=gate, direction=direction)
    if batch[0][2] is not None:
        req.scan_time.seconds = batch[0][2]
    return req


def _packed_request(batch: list, gate: str, direction: int) -> gate_pb2.PackedVerifyRequest:
    try:
        codes = pack([it[1] for it in batch])
    except ValueError as e:
        raise LoadgenError(f"a batch does not pack: {e}") from None
    return request(codes, gate_id=gate, direction=direction, scan_time=batch[0][2])


# -- unary Verify --------------------------------------------------------------------------------
async def _unary(conn: Connection, address: str, work: list[list], gate: str, direction: int,
                 deadline_s: float, rate: float | None, progress: Progress) -> Run:
    m = conn.metadata
    lat: list[float] = []
    out: list[tuple] = []
    errors: Counter = Counter()
    cut = False
    # requests built before the clock starts: the load generator's CPU is not the server's
    reqs = [[(it, verify_request(it, gate, direction)) for it in w] for w in work]
    pacer = Pacer(rate)
    adv = progress.advance if progress is not QUIET else None
    async with conn.aio_channel(address=address) as ch:
        verify = gate_pb2_grpc.GateServiceStub(ch).Verify
        await ready(ch, address)
        stop = time.perf_counter() + deadline_s

        async def worker(items):
            nonlocal cut
            clock, push, lpush = time.perf_counter, out.append, lat.append
            for it, req in items:
                t0 = await pacer.due()
                try:
                    r = await verify(req, metadata=m, timeout=CALL_TIMEOUT)
                    push((it[0], it[1], r.reason, r.ticket_id))
                except grpc.aio.AioRpcError as e:
                    errors[e.code().name] += 1
                    push((it[0], it[1], None, None))
                t1 = clock()
                lpush(t1 - t0)
                if adv:
                    adv(1)
                if t1 > stop:
                    cut = True
                    return

        t = time.perf_counter()
        pacer.start()
        await asyncio.gather(*(worker(w) for w in reqs))
        elapsed = time.perf_counter() - t
    return Run(lat, out, elapsed, cut, errors, t)


def unary_load(conn: Connection, work: list[list], *, gate: str, venue: str | None = None,
               direction: int = IN, deadline_s: float = 60, loop: str = "asyncio",
               rate: float | None = None, progress: Progress = QUIET,
               allow_remote: bool = False) -> Run:
    """The bare unary Verify load as `conn`'s caller, to the shard of `venue` (None: the
    connection's address): `work` is one list of (ticket id, code, scan time) per caller
    in flight; no set-up, no checks."""
    address = check_address(conn.address_of(venue=venue), allow_remote)
    return run_loop(lambda: _unary(conn, address, work, gate, direction, deadline_s, rate, progress),
                    loop, deadline_s + CALL_TIMEOUT + 30)


# -- VerifyStream ---------------------------------------------------------------------------------
def stream_requests(work: list[list], gate: str, direction: int = IN, *,
                    packed: bool = False) -> list[list[tuple]]:
    """Each stream's batches (lists of (ticket id, code, scan time)) with their request
    messages: VerifyBatchRequest, or with `packed` PackedVerifyRequest (a batch's codes
    of one size: into_batches(one_size=True)). Built before a load is timed and measured:
    packing costs the load generator microseconds per code, which are not the server's."""
    build = _packed_request if packed else _batch_request
    return [[(b, build(b, gate, direction)) for b in w] for w in work]


async def _stream(conn: Connection, address: str, reqs: list[list[tuple]], window: int,
                  deadline_s: float, rate: float | None, progress: Progress) -> Run:
    m = conn.metadata
    lat: list[float] = []
    out: list[tuple] = []
    # packed: (batch, answer message) as they came, read into `out` once the clock stops
    # (the load generator's CPU is the server's too)
    answers: list[tuple] = []
    errors: Counter = Counter()
    cut = False
    packed = any(type(req) is gate_pb2.PackedVerifyRequest for w in reqs for _, req in w[:1])
    pacer = Pacer(rate)
    adv = progress.advance if progress is not QUIET else None
    async with conn.aio_channel(address=address) as ch:
        stub = gate_pb2_grpc.GateServiceStub(ch)
        await ready(ch, address)
        stop = time.perf_counter() + deadline_s

        async def one(batches):
            if not batches:
                return
            call = (stub.VerifyPacked if packed else stub.VerifyStream)(
                metadata=m, timeout=deadline_s + CALL_TIMEOUT)
            room = asyncio.Semaphore(window)
            sent: list[float] = []

            async def send():
                nonlocal cut
                try:
                    for _, req in batches:
                        await room.acquire()
                        if time.perf_counter() > stop:
                            cut = True
                            break
                        sent.append(await pacer.due())
                        await call.write(req)
                    await call.done_writing()
                except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
                    pass                    # the call ended; the reader has its status

            sender = asyncio.ensure_future(send())
            k = 0
            try:
                async for resp in call:
                    lat.append(time.perf_counter() - sent[k])
                    b = batches[k][0]
                    if packed:
                        answers.append((b, resp))
                    else:
                        out.extend((it[0], it[1], reason, got)
                                   for it, reason, got in zip(b, resp.reasons, resp.ticket_ids))
                    k += 1
                    room.release()
                    if adv:
                        adv(len(b))
            except grpc.aio.AioRpcError as e:
                errors[e.code().name] += 1
                for b, _ in batches[k:len(sent)]:      # sent, never answered: unknown
                    out.extend((it[0], it[1], None, None) for it in b)
            if not sender.done():                      # the call ended early
                sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender

        t = time.perf_counter()
        pacer.start()
        await asyncio.gather(*(one(w) for w in reqs))
        elapsed = time.perf_counter() - t
    for b, resp in answers:
        a = PackedAnswers.of(resp)
        if len(a) != len(b) or len(a.ticket_ids) != len(b) or len(a.persons) != len(b):
            raise LoadgenError(f"a packed answer of {len(a)} reasons, {len(a.ticket_ids)} ticket "
                               f"ids, {len(a.persons)} persons for a batch of {len(b)}")
        out.extend((it[0], it[1], reason, got) for it, reason, got in zip(b, a.reasons, a.ticket_ids))
    calls = len(lat)
    return Run(lat, out, elapsed, cut, errors, t, {"calls": calls})


def stream_load(conn: Connection, requests: list[list[tuple]], *, venue: str | None = None,
                window: int = 2, deadline_s: float = 60, loop: str = "asyncio",
                rate: float | None = None, progress: Progress = QUIET,
                allow_remote: bool = False) -> Run:
    """The bare VerifyStream load as `conn`'s caller, to the shard of `venue` (None: the
    connection's address): `requests` is one list per stream of (batch, request) as
    stream_requests makes them, each batch a list of (ticket id, code, scan time) of one
    scan time; `window` batches in flight on each stream. PackedVerifyRequests go on
    GateService.VerifyPacked."""
    address = check_address(conn.address_of(venue=venue), allow_remote)
    return run_loop(lambda: _stream(conn, address, requests, window, deadline_s, rate, progress),
                    loop, deadline_s + CALL_TIMEOUT + 30)
