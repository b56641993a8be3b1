"""Seats under any interleaving (issue 17), hypothesis-driven: holds of named seats and of
the best available, releases, payments, refunds, reopening the shard. The model knows the
hall from its layout alone and says after every step which seat is free, held, sold or
never sold; it checks every best-available answer against the contract:

  - the seats are free, as many as asked, and none is held or sold twice;
  - when some row has that many adjacent free seats of one price zone, the answer is such
    a run, in the best zone that has one, and leaves no more single free seats beside it
    than the best run of that zone would.
"""
from __future__ import annotations

import shutil
import tempfile

from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from turnstile.engine import HoldItem, NotFound, Shard, SoldOut, cmd, demo
from turnstile.engine.errors import SeatTaken

from tests.conftest import TODAY, Clock

V = demo.VENUE
LAYOUT = ["AAx_AAA", "BBBB_BB", "AABBAA_A"]
ZONES = "AB"


def hall() -> dict[str, tuple[int, int, str]]:
    """Seat name -> (row, column, zone; "x": never sold), from the layout alone."""
    out = {}
    for r, text in enumerate(LAYOUT):
        n = 0
        for c, ch in enumerate(text):
            if ch != "_":
                n += 1
                out[f"h-R{r}-{n}"] = (r, c, ch)
    return out


HALL = hall()
SELLABLE = [s for s, (_, _, z) in HALL.items() if z != "x"]


def runs(free: set[str], zone: str, n: int) -> list[tuple[list[str], int]]:
    """Every run of n adjacent free seats of `zone` in one row, with the single free seats
    of the zone it leaves beside it in its block."""
    out = []
    for r in range(len(LAYOUT)):
        row = sorted((c, s) for s, (rr, c, z) in HALL.items() if rr == r and z == zone and s in free)
        blocks, cur = [], []
        for c, s in row:
            if cur and c != cur[-1][0] + 1:
                blocks.append(cur)
                cur = []
            cur.append((c, s))
        if cur:
            blocks.append(cur)
        for b in blocks:
            for p in range(len(b) - n + 1):
                left, right = p, len(b) - p - n
                out.append(([s for _, s in b[p:p + n]], (left == 1) + (right == 1)))
    return out


class SeatsMachine(RuleBasedStateMachine):
    @initialize()
    def open(self):
        self.dir = tempfile.mkdtemp(prefix="seats-")
        self.clock = Clock(demo.local_time(TODAY, 8, 30))
        self.shard = Shard.open(self.dir + "/s", clock=self.clock)
        s = self.shard
        s.run_many(demo.commands(TODAY))
        start = demo.local_time(TODAY, 19)
        s.run_many([cmd.zone(V, "theatre", "Theatre"), cmd.product(V, "show", ["theatre"], price_fen=1),
                    cmd.slots([{"id": "show", "zone": "theatre", "day": TODAY, "start": start,
                                "end": start + 7200, "capacity": 1}]),
                    cmd.seat_map(V, "h", [{"section": "h", "row": f"R{r}", "layout": t}
                                          for r, t in enumerate(LAYOUT)],
                                 [{"zone": z, "price_fen": 1000 * (2 - i)} for i, z in enumerate(ZONES)]),
                    cmd.seating(V, "show", "h")])
        self.state = {seat: "never" if HALL[seat][2] == "x" else "free" for seat in HALL}
        self.holds: dict[int, list[str]] = {}
        self.tickets: dict[int, tuple[str, str]] = {}       # ticket -> (order, seat)
        self.n = 0

    def teardown(self):
        if getattr(self, "shard", None) is not None and not self.shard.closed:
            self.shard.close(snapshot=False)
        if getattr(self, "dir", None):
            shutil.rmtree(self.dir, ignore_errors=True)

    def _free(self) -> set[str]:
        return {s for s, x in self.state.items() if x == "free"}

    @rule(seats=st.lists(st.sampled_from(sorted(HALL)), min_size=1, max_size=3, unique=True))
    def hold_named(self, seats):
        free = all(self.state[s] == "free" for s in seats)
        try:
            h = self.shard.run(cmd.hold("web", V, [HoldItem("show", ("show",), seats=tuple(seats))]))
        except SeatTaken:
            assert not free, "a free seat was refused"
            return
        assert free, f"a seat not free was held: {[(s, self.state[s]) for s in seats]}"
        got = [x for it in h.items for x in it.seats]
        assert sorted(got) == sorted(seats)
        for s in seats:
            self.state[s] = "held"
        self.holds[h.hold_id] = seats

    @rule(n=st.integers(1, 4))
    def hold_best(self, n):
        free = self._free()
        try:
            h = self.shard.run(cmd.hold("web", V, [HoldItem("show", ("show",), n)]))
        except SoldOut:
            assert len(free) < n, "sold out with seats left"
            return
        got = [x for it in h.items for x in it.seats]
        assert len(got) == len(set(got)) == n and set(got) <= free, "seats not free, or twice"
        for zone in ZONES:                       # the best zone with n adjacent seats
            cands = runs(free, zone, n)
            if cands:
                assert any(sorted(got) == sorted(r) for r, _ in cands), \
                    f"{got}: not {n} adjacent seats of zone {zone}, which has them"
                singles = next(k for r, k in cands if sorted(r) == sorted(got))
                assert singles == min(k for _, k in cands), f"{got} leaves more single seats"
                break
        for s in got:
            self.state[s] = "held"
        self.holds[h.hold_id] = got

    @precondition(lambda self: self.holds)
    @rule(data=st.data(), pay=st.booleans())
    def end_hold(self, data, pay):
        hid = data.draw(st.sampled_from(sorted(self.holds)))
        seats = self.holds.pop(hid)
        if not pay:
            self.shard.run(cmd.release(hid, "web"))
            for s in seats:
                self.state[s] = "free"
            return
        self.n += 1
        h = self.shard.hold_info(hid)
        sold = self.shard.run(cmd.confirm(hid, f"o{self.n}", "web", method="cash", amount_fen=h.amount_fen))
        assert sorted(t.seat for t in sold.tickets) == sorted(seats)
        for t in sold.tickets:
            self.state[t.seat] = "sold"
            self.tickets[t.ticket_id] = (f"o{self.n}", t.seat)

    @precondition(lambda self: self.tickets)
    @rule(data=st.data())
    def refund(self, data):
        tid = data.draw(st.sampled_from(sorted(self.tickets)))
        order, seat = self.tickets.pop(tid)
        self.n += 1
        self.shard.run(cmd.refund(order, f"r{self.n}", [tid], channel="web"))
        self.state[seat] = "free"

    @rule(snapshot=st.booleans())
    def reopen(self, snapshot):
        self.shard.close(snapshot=snapshot)
        self.shard = Shard.open(self.dir + "/s", clock=self.clock)

    @rule()
    def a_seat_that_is_not_there(self):
        try:
            self.shard.run(cmd.hold("web", V, [HoldItem("show", ("show",), seats=("h-R9-1",))]))
        except NotFound:
            return
        raise AssertionError("a seat that is not in the hall was held")

    @invariant()
    def agrees(self):
        seen = {name: state for name, _, state in self.shard.session_seats(V, "show")[1]}
        assert seen == self.state
        for t, (_, seat) in self.tickets.items():
            assert self.shard.seat_of(t) == seat
        assert self.shard.check() == []


SeatsMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)
TestSeats = SeatsMachine.TestCase
