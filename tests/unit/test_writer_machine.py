"""The shard driven through its group-commit writer (engine.writer), hypothesis-driven.

`WriterMachine` is test_state_machine's `ShardMachine` -- the same reference model, the
same rules, the same agreement after every step -- with every command submitted to the
shard's asyncio writer (`Shard.writer()`, one event loop, as the server submits them)
instead of `run_many`. Each run draws the writer's max_batch (8192, or 2 so that waves
split into several batches) and the shard's snapshot_every (never, 1 or 12: snapshots
written by the writer's I/O thread). Its own rules drive what only the writer does
(DESIGN.md 4.2, "nothing acknowledged before it is durable"):

- `pipeline`: a wave of commands submitted concurrently, at once or in up to three
  slices while the first batch's commit is held in its I/O thread: the second slice is
  applied in memory while the first commits, the third joins that batch once the first
  is durable. Every answer is the model's, in submission order. After the wave a copy of
  the files (a crash right after the last answer) opens to the same state; some waves
  also copy the files while the first commit is held (a crash mid-commit): opened, that
  copy is the shard as it was before the wave, plus whatever had been answered by then.
- cancellation, in those waves: a caller gives up at once (its command never reaches the
  writer) or once its slice settled (queued: dropped; applied: it commits anyway). The
  shard decides which; the machine reads it back: the model is run for each combination
  of "applied" and "absent" of the cancelled commands, and one must agree with every
  other caller's answer and with the whole state. A cancelled command that was applied
  and has an idempotency key (a confirm, a refund, a keyed hold) is retried, and the
  retry must return the first answer, the one its caller gave up on.
- `failing_commit`: the n-th commit of a wave fails in the real Storage (raising before
  the LMDB transaction, or tearing it half way so that LMDB aborts it). The answered
  callers are a prefix of the wave, then the failed batch's callers get StorageError and
  everyone behind them ShardUnavailable; the shard takes nothing more. Reopened from its
  files (closed, or copied as a crash leaves them) it holds every answered command and
  nothing of the failed ones.
- `crash`: a copy of the files between two waves (no close, no snapshot) opens to the
  same state; sometimes the machine carries on with the copy.
- `durability` (the base rule): the writer stops (flushing), the shard closes and
  reopens, and the writer starts again on the next command.

Commits are held or failed only at `Storage.commit` of the open shard (the instance's
attribute is wrapped; the real LMDB commit does the writing). A wave that takes longer
than WAVE_TIMEOUT_S is a hang and fails. After every step, beside the base machine's
`agrees`: no slot or allotment sold over its capacity, no component admitting more
persons than its group or more entries than its product allows, no zone over its live
capacity. Engine bugs found while writing it are at the end of the file as strict-xfail
tests.
"""
from __future__ import annotations

import asyncio
import copy
import errno
import itertools
import os
import shutil
import tempfile
import threading
import time

import pytest
from hypothesis import HealthCheck, event, settings, strategies as st
from hypothesis.stateful import initialize, invariant, precondition, rule

from turnstile.engine import (HoldItem, HoldResult, NotFound, Shard, ShardUnavailable,
                              StorageError, cmd)
from tests.unit.test_state_machine import (CHANNELS, D0, PARK, PRODUCTS, START, ZONES, Model,
                                           ShardMachine, Step, catalog, pick, picks)

WAVE_TIMEOUT_S = 15                     # a wave that takes longer is a hang
KINDS = ["buy", "buy", "hold", "refund", "enter", "leave", "release", "block", "block"]


def clone(m: Model) -> Model:
    """A copy of the model to run a branch on (the idempotency stores keep the shard's
    answers by reference: they are never mutated)."""
    c = copy.copy(m)
    for k, v in vars(m).items():
        if k != "note":
            setattr(c, k, dict(v) if k.endswith("_idem") else copy.deepcopy(v))
    return c


class _Torn(dict):
    """A batch's changed rows that give out half way through the LMDB transaction."""

    def items(self):
        half = len(self) // 2
        for i, kv in enumerate(super().items()):
            if i == half:
                break
            yield kv
        raise OSError(errno.EIO, "injected: I/O error half way through the batch")


class CommitGate:
    """In front of the real `Storage.commit` of one open shard: holds commits in the
    I/O thread until released, and makes the n-th commit from now fail."""

    def __init__(self, storage):
        self.real = storage.commit
        storage.commit = self.commit
        self.entered = threading.Event()     # a commit reached the storage
        self.go = threading.Event()
        self.go.set()
        self.fail_in = 0                     # the fail_in-th commit from now fails
        self.how = "raise"
        self.fired = False

    def hold(self) -> None:
        self.entered.clear()
        self.go.clear()

    def release(self) -> None:
        self.go.set()

    def fail(self, nth: int, how: str = "raise") -> None:
        self.fail_in, self.how, self.fired = nth, how, False

    def commit(self, seq, journal, rows):
        self.entered.set()
        if not self.go.wait(WAVE_TIMEOUT_S):
            raise AssertionError("a commit was held and never released")
        if self.fail_in:
            self.fail_in -= 1
            if not self.fail_in:
                self.fired = True
                if self.how == "raise":       # before the transaction: the disk is gone
                    raise StorageError("injected: the disk is gone")
                return self.real(seq, journal, _Torn(rows))   # LMDB aborts the transaction
        return self.real(seq, journal, rows)


async def _until(cond, what: str) -> None:
    end = time.monotonic() + WAVE_TIMEOUT_S
    while not cond():
        assert time.monotonic() < end, f"waited {WAVE_TIMEOUT_S} s for {what}"
        await asyncio.sleep(0.001)


async def _settle() -> None:
    """Let the tasks just made submit, and the writer take what they queued."""
    for _ in range(4):
        await asyncio.sleep(0)


def copy_files(path: str, dst: str) -> str:
    """The shard's files as a crash leaves them (not LMDB's or the owner's lock)."""
    for name in os.listdir(path):
        if name not in ("lock.mdb", "owner.lock"):
            shutil.copy2(os.path.join(path, name), dst)
    return dst


class WriterMachine(ShardMachine):
    @initialize(data=st.data())
    def open_shard(self, data):
        self.loop = asyncio.new_event_loop()
        self.w = None
        self.gate = None
        self.snapshot_every = data.draw(st.sampled_from([1_000_000, 1_000_000, 1, 12]),
                                        label="snapshot_every")
        self.max_batch = data.draw(st.sampled_from([8192, 8192, 2]), label="max_batch")
        self.scratch: list[str] = []             # temp dirs of copies, removed at teardown
        super().open_shard(data)

    def open(self, path: str | None = None) -> Shard:
        """The shard in self.path (with a CommitGate), or a plain one in `path`."""
        shard = Shard.open(path or self.path, clock=lambda: self.clock[0], map_size=64 << 20,
                           snapshot_every=self.snapshot_every)
        if path is None:
            self.gate = CommitGate(shard.storage)
        return shard

    def teardown(self):
        try:
            if getattr(self, "gate", None) is not None:
                self.stop_writer()
        finally:
            if getattr(self, "loop", None) is not None:
                self.loop.close()
            for d in getattr(self, "scratch", ()):
                shutil.rmtree(d, ignore_errors=True)
            super().teardown()

    def scratch_dir(self, what: str) -> str:
        d = tempfile.mkdtemp(prefix=f"turnstile-wm-{what}-")
        self.scratch.append(d)
        return d

    # -- the writer -------------------------------------------------------------------------
    def writer(self):
        """The shard's running writer (started on first use after an open)."""
        if self.w is None:
            self.w = self.shard.writer(max_batch=self.max_batch, expire_every=3600)
            self.loop.run_until_complete(self.w.start())
        return self.w

    def stop_writer(self) -> None:
        if self.w is not None:
            self.gate.release()
            w, self.w = self.w, None
            self.loop.run_until_complete(asyncio.wait_for(w.stop(), WAVE_TIMEOUT_S))

    def execute(self, commands: list) -> list:
        """The base machine's batches, submitted at once: one writer batch (or several
        of max_batch commands), answered in order."""
        w = self.writer()

        async def go():
            return await asyncio.gather(*(w.submit(c) for c in commands), return_exceptions=True)
        return self.loop.run_until_complete(asyncio.wait_for(go(), WAVE_TIMEOUT_S))

    async def _wave(self, commands, cuts, hold, cancel, crash_dir) -> tuple[list, list[int]]:
        """Submit `commands` in slices (cut at `cuts`), the first commit held in flight
        with `hold`; cancel callers as `cancel` says ("at once": before the writer sees
        the command; "waiting": once the slice settled); with `crash_dir`, copy the files
        there while the commit is held. Returns every answer (errors and CancelledError
        as values) and, with `hold`, who was answered while the commit was held."""
        w, gate = self.w, self.gate
        tasks: list[asyncio.Task] = []
        early: list[int] = []
        if hold:
            gate.hold()
        try:
            bounds = [0, *cuts, len(commands)]
            for k in range(len(bounds) - 1):
                mine = range(bounds[k], bounds[k + 1])
                for i in mine:
                    tasks.append(asyncio.ensure_future(w.submit(commands[i])))
                    if cancel.get(i) == "at once":
                        tasks[i].cancel()
                await _settle()
                for i in mine:
                    if cancel.get(i) == "waiting":
                        tasks[i].cancel()
                if k == 0 and hold:
                    await _until(lambda: gate.entered.is_set() or all(t.done() for t in tasks),
                                 "the first commit")
            if hold:
                early = [i for i, t in enumerate(tasks) if t.done() and not t.cancelled()]
                if crash_dir is not None:
                    copy_files(self.path, crash_dir)
        finally:
            gate.release()
        return await asyncio.gather(*tasks, return_exceptions=True), early

    # -- a wave, checked -----------------------------------------------------------------
    def drive(self, steps: list, *, cuts=(), hold=False, cancel=None, fail=None,
              reopen="close", crash_mid_commit=False, crash_after=False) -> None:
        """Run `steps` (and a final cmd.expire(), never cancelled, so that everything
        before it is durable when it is answered) as one wave through the writer; check
        the answers and the state against the model (module docstring). With
        `crash_mid_commit` (and `hold`) or `crash_after`, a copy of the files made while
        the first commit is held, or after the wave, must open to the state the shard
        had acknowledged by then."""
        cancel = cancel or {}
        self.m.now = self.clock[0]
        pre = clone(self.m)                      # the files before the wave
        self.m.expire_due()
        start = clone(self.m)
        made, _ = self.expect(steps + [Step(cmd.expire(), lambda: {"expired": 0},
                                            lambda w, g: self.same(vars(g), w))])
        n = len(made)
        before = self.writer().stats()["batches"]
        crash_dir = self.scratch_dir("mid") if crash_mid_commit and hold else None
        if fail is not None:
            self.gate.fail(*fail)
        try:
            results, early = self.loop.run_until_complete(asyncio.wait_for(
                self._wave([s.command for s in made], cuts, hold, cancel, crash_dir),
                WAVE_TIMEOUT_S))
        finally:
            fired = self.gate.fired
            self.gate.fail(0)
        if self.w.stats()["batches"] - before > 1:
            event("wave: pipelined over several batches")
        # what was answered while the first commit was held changed nothing (refusals,
        # in batches with nothing to commit): nothing is answered before it is durable
        self.m = clone(pre)
        self.expect([made[i] for i in early])
        assert self.m.state() == pre.state(), \
            f"answered while the first commit was held: {[(i, results[i]) for i in early]}"

        # who was answered: a prefix of the wave; then the failed batch, then the rest
        gone = [i for i, r in enumerate(results) if isinstance(r, asyncio.CancelledError)]
        lost = [i for i, r in enumerate(results) if isinstance(r, (StorageError, ShardUnavailable))]
        first_lost = min(lost, default=n)
        answered = [i for i in range(n) if i not in gone and i not in lost]
        assert all(i < first_lost for i in answered), \
            f"answered after a failed commit: {[(i, results[i]) for i in range(n)]}"
        kinds = [type(results[i]) for i in lost]
        assert kinds == sorted(kinds, key=lambda k: k is ShardUnavailable), \
            f"a failed batch's callers get StorageError, those behind it ShardUnavailable: {kinds}"
        assert fired == bool(lost), f"fired={fired}, lost={[results[i] for i in lost]}"

        if fired:
            event(f"commit failed ({fail[1]}), {'some' if answered else 'none'} answered before;"
                  f" reopen: {reopen}")
            assert self.shard.failed is not None
            with pytest.raises(ShardUnavailable):
                self.loop.run_until_complete(self.w.submit(cmd.expire()))
            self.stop_writer()
            with pytest.raises(ShardUnavailable):
                self.shard.run(cmd.expire())
            if reopen == "crash":
                dst = copy_files(self.path, self.scratch_dir("crash"))
                self.shard.close(snapshot=False)
                shutil.rmtree(self.path, ignore_errors=True)
                self.path = dst
            else:
                self.shard.close()
            self.shard = self.open()
            # the failed batch may have been the one that expired due holds: now one does
            assert [vars(r) for r in self.execute([cmd.expire()])] == [{"expired": 0}]

        # the cancelled commands before the failure: applied or absent, the shard decided
        open_ = [i for i in gone if i < first_lost]
        tried = []
        for applied in itertools.product([False, True], repeat=len(open_)):
            keep = [i for i in range(first_lost)
                    if i not in gone or applied[open_.index(i)]]
            self.m = clone(start)
            _, wants = self.expect([made[i] for i in keep])
            want = dict(zip(keep, wants))
            try:
                self.check_answers([made[i] for i in answered], [want[i] for i in answered],
                                   [results[i] for i in answered])
                self.agrees()
                self.made_agree(start.next_hold, made)
                if fired:
                    assert self.shard.check(replay=True) == []
            except AssertionError as e:
                tried.append(f"{dict(zip(open_, applied))}: {e}")
                continue
            break
        else:
            raise AssertionError("no outcome of the cancelled commands " + str(open_) +
                                 " agrees with the shard:\n" + "\n".join(tried))
        for i, a in zip(open_, applied):
            event(f"cancelled {cancel.get(i, '?')}: {'applied' if a else 'absent'}")
            if a and want[i][1] is None and made[i].command.idem is not None:
                # a retry of what the cancelled caller asked returns the first answer
                got = self.execute([made[i].command])[0]
                assert not isinstance(got, BaseException), f"retry of {made[i].command.op.name}: {got!r}"
                made[i].check(want[i][0], got)
        if fired:
            self.codes_agree()

        if crash_dir is not None:
            # the crash while the first commit was held: the files are as before the wave
            shard, model = self.shard, self.m
            self.m = pre
            self.shard = self.open(crash_dir)
            try:
                self.reopened_agrees()
                event("crash mid-commit: the copy holds the state before the wave")
            finally:
                self.shard.close(snapshot=False)
                self.shard, self.m = shard, model
                shutil.rmtree(crash_dir, ignore_errors=True)
        if crash_after:
            self.crash(switch=False)

    def made_agree(self, first_hold: int, made: list[Step]) -> None:
        """What a wave made that `agrees` does not see, as it reads only what the model
        holds: the holds made from `first_hold` on, live or not, and the orders its
        confirms named, refunded or not (a hold made and released, or an order paid and
        refunded, by cancelled callers leaves no other trace)."""
        for hid in range(first_hold, self.m.next_hold + 2):
            try:
                self.shard.hold_info(hid)
                made_it = True
            except NotFound:
                made_it = False
            assert made_it == (hid < self.m.next_hold), \
                f"hold {hid} {'was' if made_it else 'was not'} made; model: next hold {self.m.next_hold}"
        for s in made:
            if s.command.op.name == "CONFIRM":
                key = (s.command.args["channel"], s.command.args["order_id"])
                try:
                    self.shard.get_order(key[1], key[0])
                    paid = True
                except NotFound:
                    paid = False
                assert paid == (key in self.m.orders), f"order {key}: paid={paid}"

    def reopened_agrees(self) -> None:
        """A shard just opened from files agrees with the model, replay included."""
        self.agrees()
        assert self.shard.check(replay=True) == []
        self.codes_agree()

    def codes_agree(self) -> None:
        """Every order's codes render as they were issued."""
        for (channel, order_id), order in self.m.orders.items():
            assert self.shard.order_codes(order_id, channel) == [self.codes[t] for t in order["tickets"]]

    # -- rules ------------------------------------------------------------------------------
    def wave_steps(self, data, kinds) -> list:
        """A burst's steps per kind; "hold" is a hold with an idempotency key, "refund"
        a refund of all unused tickets of an order, by its channel."""
        steps = []
        for kind in kinds:
            if kind == "hold":
                steps.append(self.hold_step(CHANNELS[data.draw(picks, label="i") % 3],
                                            self.draw_items(data, valid=True), 900,
                                            self.fresh("hk")))
            elif kind == "refund":
                def refund(i=data.draw(picks, label="i")):
                    channel, order_id = pick(self.m.orders, i)
                    return self.refund_step(order_id, self.fresh("r"), [], channel)
                steps.append(refund)
            else:
                steps += self.burst_steps(data, [kind])
        return steps

    @staticmethod
    def draw_plan(data, n: int, hold: bool) -> tuple[list[int], dict[int, str]]:
        """Where the wave is cut into slices, and whose callers give up (and when).
        Slices only while the first commit is held: otherwise which batch a command
        joins would depend on how fast the disk is, and so would the outcome of a
        cancellation or of a failed commit (hypothesis needs runs it can repeat)."""
        k = data.draw(st.sampled_from([1, 2, 3, 3]), label="slices") - 1 if hold else 0
        cuts = sorted(data.draw(st.lists(st.integers(1, n), min_size=min(k, n), max_size=min(k, n),
                                         unique=True), label="cuts"))
        cancel = data.draw(st.dictionaries(st.integers(0, n - 1),
                                           st.sampled_from(["at once", "waiting", "waiting"]),
                                           max_size=2), label="cancel")
        return cuts, cancel

    @precondition(lambda self: self.m.tickets)
    @rule(data=st.data(), kinds=st.lists(st.sampled_from(KINDS), min_size=1, max_size=5),
          hold=st.sampled_from([True, True, False]), mid_commit=st.sampled_from([False, False, True]))
    def pipeline(self, data, kinds, hold, mid_commit):
        steps = self.wave_steps(data, kinds)
        cuts, cancel = self.draw_plan(data, len(steps), hold)
        self.drive(steps, cuts=cuts, hold=hold, cancel=cancel, crash_mid_commit=mid_commit,
                   crash_after=True)

    @precondition(lambda self: self.m.tickets)
    @rule(data=st.data(), kinds=st.lists(st.sampled_from(KINDS), min_size=1, max_size=4),
          hold=st.booleans(), nth=st.sampled_from([1, 1, 2]), how=st.sampled_from(["raise", "torn"]),
          reopen=st.sampled_from(["close", "crash"]))
    def failing_commit(self, data, kinds, hold, nth, how, reopen):
        steps = self.wave_steps(data, kinds)
        cuts, cancel = self.draw_plan(data, len(steps), hold)
        self.drive(steps, cuts=cuts, hold=hold, cancel=cancel, fail=(nth, how), reopen=reopen)

    @rule(switch=st.booleans())
    def crash(self, switch):
        """kill -9 between batches: a copy of the files opens to the same state; with
        `switch` the machine carries on with the copy (the writer restarts there)."""
        dst = copy_files(self.path, self.scratch_dir("crash"))
        shard, self.shard = self.shard, self.open(dst)
        try:
            self.reopened_agrees()
        finally:
            self.shard.close(snapshot=False)
            self.shard = shard
        if not switch:
            shutil.rmtree(dst, ignore_errors=True)
            return
        self.stop_writer()
        self.shard.close(snapshot=False)
        shutil.rmtree(self.path, ignore_errors=True)
        self.path = dst
        self.shard = self.open()
        event("crash: carried on with the copy")

    @rule(how=st.sampled_from(["snapshot", "reopen", "reopen", "reopen without snapshot"]))
    def durability(self, how):
        """The base rule, the writer stopped first (it flushes); it starts again on use."""
        self.stop_writer()
        super().durability(how)

    # -- invariants -------------------------------------------------------------------------
    @invariant()
    def no_oversell_no_double_admission(self):
        shard = self.shard
        for r in shard.availability(PARK, D0, D0 + 1):
            assert r.sold + r.held <= r.capacity, f"oversold {r.slot}"
            for ch, a in r.allotments.items():
                assert a.sold + a.held <= a.capacity, f"oversold {r.slot}/{ch}"
        for t in self.m.tickets:
            got = shard.ticket(t)
            limit = PRODUCTS[got.product]["max_entries"]
            for c in got.components:
                assert c["persons_in"] <= c["group"] and c["visit_admitted"] <= c["group"], \
                    f"ticket {t} admitted more than its group: {c}"
                assert not limit or c["entries"] <= limit, f"ticket {t} entered too often: {c}"
        for z, (_, cap, _) in ZONES.items():
            assert not cap or shard.inside(z) <= cap, f"zone {z} over its live capacity"


WriterMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                           HealthCheck.data_too_large])
TestWriterStateMachine = WriterMachine.TestCase


# -- engine bugs this machine's author found (open: strict xfail, see each reason) ----------
def _opened(path, **kw) -> Shard:
    s = Shard.open(str(path), clock=lambda: START, map_size=64 << 20, **kw)
    s.run_many(catalog())
    return s


def _hold():
    return cmd.hold("web", PARK, [HoldItem("single", ("m1",), 1)])


def _held(shard: Shard) -> int:
    return next(r for r in shard.availability(PARK, D0) if r.slot == "m1").held


def test_a_due_snapshot_waits_for_the_answers_and_its_failure_fails_nothing(tmp_path, caplog):
    """DESIGN.md 4.2, issue 12: a snapshot is written after its batch's callers are
    answered, never in their way, and a snapshot that cannot be written is not an error
    for a batch that is durable: the caller gets its hold, the shard keeps serving, and
    the hold is there after a restart (from the journal)."""
    shard = _opened(tmp_path, snapshot_every=1)
    real = shard.storage.write_snapshot
    started, release = threading.Event(), threading.Event()

    def slow_then_failing_snapshot(*args, **kw):
        started.set()
        release.wait(10)
        raise StorageError("injected: the snapshot write failed")

    shard.storage.write_snapshot = slow_then_failing_snapshot

    async def go():
        async with shard.writer() as w:
            first = await asyncio.wait_for(w.submit(_hold()), 5)   # answered, snapshot held
            answered_while_held = not release.is_set()
            release.set()
            second = await asyncio.wait_for(w.submit(_hold()), 5)
            return first, answered_while_held, second, w.stats()

    first, answered_while_held, second, stats = asyncio.run(go())
    assert started.is_set() and answered_while_held
    assert isinstance(first, HoldResult) and isinstance(second, HoldResult)
    assert shard.failed is None and stats["snapshot_failures"] >= 1
    assert "snapshot after batch" in caplog.text
    shard.storage.write_snapshot = real
    shard.close(snapshot=False)
    again = Shard.open(str(tmp_path), clock=lambda: START, map_size=64 << 20)
    try:
        assert _held(again) == 2
    finally:
        again.close(snapshot=False)


def test_a_snapshot_is_taken_only_after_its_batch_is_answered(tmp_path):
    """Issue 12: callers of a durable batch are answered before any snapshot work starts,
    the copy of memory included; the snapshot is the state after that batch."""
    shard = _opened(tmp_path, snapshot_every=1)
    seen = []
    real_dump = shard.state.dump

    async def go():
        async with shard.writer() as w:
            calls = [asyncio.ensure_future(w.submit(_hold())) for _ in range(3)]

            def dump():     # answered calls vs the holds in memory at the copy
                seen.append((sum(c.done() for c in calls), len(shard.state.holds)))
                return real_dump()

            shard.state.dump = dump
            await asyncio.gather(*calls)
            await asyncio.sleep(0.05)
            return w.stats()

    stats = asyncio.run(go())
    assert seen and all(answered == held for answered, held in seen), seen
    assert stats["snapshots"] >= 1
    shard.close(snapshot=False)
    again = Shard.open(str(tmp_path), clock=lambda: START, map_size=64 << 20)
    try:
        assert _held(again) == 3
        assert again.recovery["replayed"] <= 1        # the snapshot held the holds
    finally:
        again.close(snapshot=False)


def test_a_shard_stopped_by_a_failed_commit_answers_nothing_of_that_batch(tmp_path):
    shard = _opened(tmp_path)
    h = shard.run(_hold())

    def failing_commit(seq, journal, rows):
        raise StorageError("injected: the disk is gone")

    shard.storage.commit = failing_commit

    async def go():
        async with shard.writer() as w:
            got = await asyncio.gather(
                w.submit(cmd.confirm(h.hold_id, "o1", "web", method="cash", amount_fen=h.amount_fen)),
                return_exceptions=True)
            cause = await asyncio.wait_for(w.wait_failed(), 5)
            return got, cause

    try:
        (got,), cause = asyncio.run(go())
        assert isinstance(got, StorageError)
        assert "the disk is gone" in str(cause)       # the server learns why it must stop
        with pytest.raises(ShardUnavailable):
            shard.get_order("o1", "web")
        with pytest.raises(ShardUnavailable):
            shard.availability(PARK, D0)              # nothing is read from that memory
    finally:
        shard.close(snapshot=False)
    again = Shard.open(str(tmp_path), clock=lambda: START, map_size=64 << 20)
    try:
        with pytest.raises(NotFound):
            again.get_order("o1", "web")
        assert _held(again) == 1                       # the hold, durable before, is there
    finally:
        again.close(snapshot=False)


def test_every_command_taken_into_a_batch_is_answered_when_staging_breaks(tmp_path):
    """Issue 12: a command that breaks off half-applied (a bug, memory exhausted) stops
    the shard, and every caller whose command was taken into that batch -- those that
    joined it while the previous batch committed too -- and every one still queued gets
    ShardUnavailable, none is left waiting. Callers of the batch that committed before
    get their holds, which a reopen finds."""
    shard = _opened(tmp_path)
    real_commit, real_apply = shard.storage.commit, shard.state.apply
    committing, release = threading.Event(), threading.Event()

    def slow_commit(*args):
        committing.set()
        release.wait(10)
        return real_commit(*args)

    def apply(c, now, batch):
        if c.op == cmd.CommandKind.RELEASE:
            raise MemoryError("injected: a command broke off half-applied")
        return real_apply(c, now, batch)

    shard.storage.commit = slow_commit
    shard.state.apply = apply

    async def go():
        async with shard.writer() as w:
            first = asyncio.ensure_future(w.submit(_hold()))
            while not committing.is_set():              # batch 1 is committing ...
                await asyncio.sleep(0.001)
            second = [asyncio.ensure_future(w.submit(_hold())) for _ in range(3)]
            await asyncio.sleep(0.01)                   # ... batch 2 staged behind it ...
            late = [asyncio.ensure_future(w.submit(c)) for c in
                    (_hold(), cmd.release(1, "web"), _hold())]   # ... these join batch 2
            await asyncio.sleep(0.01)
            release.set()
            got = await asyncio.wait_for(asyncio.gather(first, *second, *late,
                                                        return_exceptions=True), 5)
            return got, await asyncio.wait_for(w.wait_failed(), 5)

    try:
        got, cause = asyncio.run(go())
        assert isinstance(got[0], HoldResult)
        assert all(isinstance(r, ShardUnavailable) for r in got[1:]), got
        assert isinstance(cause, MemoryError)
    finally:
        shard.close(snapshot=False)
    again = Shard.open(str(tmp_path), clock=lambda: START, map_size=64 << 20)
    try:
        assert _held(again) == 1
    finally:
        again.close(snapshot=False)
