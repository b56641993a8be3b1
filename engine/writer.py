"""Group commit for one shard on asyncio (DESIGN.md 4.2).

Callers `await submit(cmd)`. The writer drains the queue, applies the whole batch to
memory, and hands the batch to one I/O thread that writes it in ONE LMDB transaction
(fsync'd). Callers are answered only after their batch committed. While batch N
commits, batch N+1 is applied in memory (pipelining); once N is durable, what arrived
meanwhile is applied into N+1 too, and N+1 goes to commit whole. Commits stay in
order, and a commit failure stops the shard before anything later is answered.
Every command taken into a batch is answered, whatever happens: with its result once the
batch is durable, else with the error that stopped the shard (ShardUnavailable,
StorageError). A shard that stopped drops its memory (Shard._fail) and `wait_failed`
returns, so its server stops serving it and a new process recovers it from disk. Under
light load a batch is one command; under load it grows, so throughput follows.

A snapshot that falls due with a batch starts only after that batch is durable and its
callers are answered: the writer stages nothing new meanwhile, so memory is the state
after the batch; it is taken then and written by the same I/O thread as a job of its own.
It never delays a caller of a durable batch (those who arrive meanwhile wait for the
copy, not for its write), and a snapshot that fails to write is logged and counted
(`stats()["snapshot_failures"]`), never an error for a batch that is durable. The journal still holds everything; the next snapshot falls due
`snapshot_every` batches later.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import queue
import threading
import time
from typing import Any, Callable

from .errors import Overloaded, ShardUnavailable, StorageError, TurnstileError
from .journal import Command, CommandKind

log = logging.getLogger(__name__)


async def _settled(fut: asyncio.Future) -> None:
    """Wait until `fut` is done, whatever its outcome, without raising it and without
    cancelling it if the waiter is cancelled. asyncio.wait([fut]) does the same at about
    twice the cost (15 µs more per batch, measured on uvloop), which a batch of one or two
    unary scans pays in full."""
    if fut.done():
        return
    waiter = fut.get_loop().create_future()

    def wake(_: asyncio.Future) -> None:
        if not waiter.done():
            waiter.set_result(None)
    fut.add_done_callback(wake)
    try:
        await waiter
    finally:
        fut.remove_done_callback(wake)


def _settle(fut: asyncio.Future, result: Any, exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)


class IOThread:
    """The writer's one I/O thread: runs jobs in the order given, each job's outcome
    posted back to the event loop as an asyncio future's result or exception.

    Not a ThreadPoolExecutor: `loop.run_in_executor` chains a concurrent future to an
    asyncio one through two layers of callbacks and locks, and costs about 110 µs of CPU
    per round trip on uvloop against 32 µs for this queue and one `call_soon_threadsafe`
    (measured on the 2-core bench machine; a batch of one or two unary scans pays it in
    full, DESIGN.md 4.2)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, name: str):
        self._loop = loop
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable, *args) -> asyncio.Future:
        fut = self._loop.create_future()
        self._jobs.put((fut, fn, args))
        return fut

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            fut, fn, args = job
            result = exc = None
            try:
                result = fn(*args)
            except BaseException as e:      # the caller decides what a failure means
                exc = e
            try:
                self._loop.call_soon_threadsafe(_settle, fut, result, exc)
            except RuntimeError:            # the loop closed meanwhile: nobody waits
                pass

    def shutdown(self) -> None:
        """Run what is queued, then end the thread (blocks until it has)."""
        self._jobs.put(None)
        self._thread.join()


class GroupCommit:
    def __init__(self, shard, *, max_queue: int = 100_000, max_batch: int = 8192,
                 expire_every: float = 1.0):
        self.shard = shard
        self.max_queue = max_queue
        self.max_batch = max_batch
        self.expire_every = expire_every
        self._queue: collections.deque[tuple[Command, asyncio.Future]] = collections.deque()
        self._wake = asyncio.Event()
        self._io: IOThread | None = None
        self._task: asyncio.Task | None = None
        self._ticker: asyncio.Task | None = None
        self._closing = False
        self.running = False
        self.snapshots = 0
        self.snapshot_failures = 0
        self._failure: asyncio.Future | None = None
        # metrics hooks (server/metrics.py): observer.batch(calls, commit_seconds) on the
        # event loop after a batch is answered, observer.snapshot(seconds, ok) on the
        # I/O thread after a snapshot write
        self.observer = None

    async def __aenter__(self) -> "GroupCommit":
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    async def start(self) -> None:
        self.shard._usable()
        self.shard._writes_here()
        self._loop = asyncio.get_running_loop()
        self._io = IOThread(self._loop, "turnstile-commit")
        self._failure = self._loop.create_future()
        self.running = True
        self._task = asyncio.create_task(self._run(), name="turnstile-writer")
        self._ticker = asyncio.create_task(self._tick(), name="turnstile-expiry")

    async def stop(self) -> None:
        """Answer everything queued, flush the last commit, stop."""
        if not self.running:
            return
        self._closing = True
        self._wake.set()
        if self._ticker:
            self._ticker.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._io.shutdown()
        self.running = False

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def submit(self, cmd: Command) -> Any:
        """Apply `cmd` durably; returns its result or raises its TurnstileError."""
        if self._closing or not self.running:
            raise ShardUnavailable("the shard is not accepting commands")
        if self.shard.failed is not None:
            raise ShardUnavailable(f"the shard stopped after a failure: {self.shard.failed}")
        if len(self._queue) >= self.max_queue:
            raise Overloaded(f"{len(self._queue)} commands queued", hint="retry with backoff")
        fut = self._loop.create_future()
        self._queue.append((cmd, fut))
        if not self._wake.is_set():
            self._wake.set()
        return await fut

    async def _tick(self) -> None:
        # holds expire by themselves even when no traffic arrives
        while True:
            await asyncio.sleep(self.expire_every)
            if self.shard.failed is not None:
                return
            if not self._queue and self.shard.state.due_expiry(int(self.shard.clock())):
                try:
                    await self.submit(Command(CommandKind.EXPIRE, {}))
                except TurnstileError:
                    return

    def _take(self, room: int) -> list[tuple[Command, asyncio.Future]]:
        n = min(len(self._queue), room)
        # a caller that gave up (deadline, cancellation) before its batch: not applied
        return [it for it in (self._queue.popleft() for _ in range(n)) if not it[1].cancelled()]

    async def _run(self) -> None:
        inflight: asyncio.Future | None = None
        shard = self.shard
        taken: list = []            # commands taken into the batch being staged
        try:
            while True:
                if not self._queue:
                    if self._closing:
                        break
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                taken = items = self._take(self.max_batch)
                if not items:
                    continue
                batch, results = shard._stage([c for c, _ in items])
                if inflight is not None:
                    await _settled(inflight)
                    if shard.failed is not None:
                        break           # an earlier commit failed: `taken` is answered below
                    # what arrived while that batch committed joins this one, which goes to
                    # commit next: a caller that arrives mid-commit waits for one commit
                    # after it, not for a queue of small ones
                    if self._queue and len(items) < self.max_batch:
                        more = self._take(self.max_batch - len(items))
                        if more:
                            items += more
                            results += shard._stage([c for c, _ in more], batch)[1]
                shard._seal(batch)
                inflight = self._io.submit(self._commit, batch)
                inflight.add_done_callback(
                    lambda f, b=batch, it=items, r=results: self._answer(f, b, it, r))
                taken = []
                if shard._snapshot_due():
                    # nothing is staged until this batch is durable and its callers are
                    # answered (their callback runs first): memory is then the state after
                    # it, taken for the snapshot, whose write queues on the I/O thread
                    await _settled(inflight)
                    if shard.failed is None:
                        blobs = shard.state.dump()
                        shard.since_snapshot = 0
                        self._io.submit(self._write_snapshot, shard.written_seq, blobs)
        except asyncio.CancelledError:
            raise
        except BaseException as e:
            # staging refused (the shard stopped) or the writer itself broke: the shard
            # stops, and no caller is left waiting
            if shard.failed is None:
                log.exception("shard %s: the writer failed", shard.shard_id)
                shard._fail(e)
        finally:
            if inflight is not None and not inflight.done():
                await _settled(inflight)
            if shard.failed is not None:
                err = ShardUnavailable(f"the shard stopped: {shard.failed!r}")
                self._fail_all(taken, err)
                self._fail_all(list(self._queue), err)
                self._queue.clear()

    def _commit(self, batch) -> float:
        """In the I/O thread: the batch made durable; returns the seconds it took."""
        t = time.perf_counter()
        self.shard._commit(batch)
        return time.perf_counter() - t

    def _write_snapshot(self, seq: int, blobs: dict[str, bytes]) -> None:
        """In the I/O thread, after the callers of the batch just committed were answered:
        the snapshot as of batch `seq`, the last that wrote anything (Shard.written_seq)."""
        t = time.perf_counter()
        try:
            self.shard.storage.write_snapshot(seq, blobs)
        except Exception as e:          # the journal holds it all: log, count, go on
            self.snapshot_failures += 1
            log.warning("shard %s: snapshot after batch %d not written (%s); the journal "
                        "keeps every batch, the next snapshot is due in %d batches",
                        self.shard.shard_id, seq, e, self.shard.snapshot_every)
            ok = False
        else:
            self.snapshots += 1
            ok = True
        if self.observer is not None:
            self.observer.snapshot(time.perf_counter() - t, ok)

    def _answer(self, f: asyncio.Future, batch, items, results) -> None:
        exc = f.exception()
        if exc is not None:
            # a storage failure, or a replicated shard fenced off its log (NotPrimary)
            err = exc if isinstance(exc, (StorageError, ShardUnavailable)) else StorageError(repr(exc))
            self._fail_all(items, err)
            self.shard._fail(exc)
            self._wake.set()
            return
        if self.shard.failed is None:
            self.shard._committed(batch)
        # durable: its callers get their answers even if a later batch broke the shard
        for (_, fut), r in zip(items, results):
            if fut.done():
                continue
            if isinstance(r, BaseException):
                fut.set_exception(r)
            else:
                fut.set_result(r)
        if self.observer is not None:
            self.observer.batch(batch.n_calls, f.result())

    def _failed(self, exc: BaseException) -> None:
        """The shard stopped (Shard._fail): wake whoever waits in wait_failed."""
        fut = self._failure
        if fut is not None and not fut.done():
            fut.set_result(exc)
        self._wake.set()

    async def wait_failed(self) -> BaseException:
        """Wait until the shard stops after a failure; returns its cause. A server
        stops serving the shard then (health NOT_SERVING, exit): its memory is gone,
        and a fresh process recovers it from disk."""
        return await asyncio.shield(self._failure)

    @staticmethod
    def _fail_all(items, err: BaseException) -> None:
        for _, fut in items:
            if not fut.done():
                fut.set_exception(err)

    def stats(self) -> dict:
        sizes = self.shard.batch_sizes
        total = sum(k * v for k, v in sizes.items())
        batches = sum(sizes.values())
        return {"batches": batches, "commands": total,
                "mean_batch": total / batches if batches else 0.0,
                "max_batch": max(sizes) if sizes else 0,
                "snapshots": self.snapshots, "snapshot_failures": self.snapshot_failures}
