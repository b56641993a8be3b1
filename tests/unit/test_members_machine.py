"""Points under any interleaving (issue 17), hypothesis-driven: members buy, refund (whole
tickets, or persons of a group ticket), are adjusted up and down by operators, the clock
jumps past their points' expiry, the shard is reopened. A reference model kept from the
contract alone (engine/state/members.py's docstring) says after every step what each
member's balance and debt must be:

  earn      a ticket earns what was paid for it (the Confirm answer's unit price times its
            persons) times the programme's points per yuan, rounded down; a debt is paid
            off first
  reverse   a refund takes back what the refunded ticket earned (persons of a group
            ticket: their share, rounded down, the last persons what is left); what the
            balance lacks becomes debt
  adjust    a grant (debt first), or a correction refused with INSUFFICIENT_POINTS beyond
            the balance
  redeem    a hold of one adult ticket paying `p` points takes them (INSUFFICIENT_POINTS
            beyond the balance, nothing held); the ticket earns on what is paid
  restore   the hold released: its points back; the ticket refunded: its points back,
            before what it earned is taken back (a debt is paid off first, as by earning)
  expire    every point earned before the jump is gone after it (year_end, 1 year)

and after every step: balance >= 0, debt >= 0, the ledger's points add up to the shard's
balance, and the shard's own invariants hold (Shard.check)."""
from __future__ import annotations

import datetime as dt
import shutil
import tempfile

from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from turnstile.engine import HoldItem, Shard, cmd, demo
from turnstile.engine.errors import InsufficientPoints

from tests.conftest import TODAY, Clock

V = demo.VENUE
SLOT = demo.slot_id("main", TODAY, 10)
RATES = {("adult", "web"): 2, ("adult", "ota"): 1, ("child", "web"): 1, ("child", "ota"): 1,
         ("group", "agency"): 3}
EARN = [{"points_per_yuan": 1}, {"product": "adult", "channel": "web", "points_per_yuan": 2},
        {"product": "group", "points_per_yuan": 3}]
SALES = [("adult", "web", 1), ("adult", "ota", 1), ("child", "web", 1), ("group", "agency", 5)]


class PointsMachine(RuleBasedStateMachine):
    @initialize()
    def open(self):
        self.dir = tempfile.mkdtemp(prefix="points-")
        self.clock = Clock(demo.local_time(TODAY, 8, 30))
        self.shard = Shard.open(self.dir + "/s", clock=self.clock)
        self.shard.run_many(demo.commands(TODAY))
        self.shard.run(cmd.member_program(V, earn=EARN))
        self.members = [self.shard.run(cmd.enrol(V, phone=f"1380000000{i}")).member_id for i in range(2)]
        self.balance = {m: 0 for m in self.members}
        self.debt = {m: 0 for m in self.members}
        self.tickets = []           # [member, order, ticket id, points left, persons left, channel]
        self.n = 0
        self.jumped = False
        self.open_holds = []        # (member, hold id, points) of holds not paid yet

    def teardown(self):
        if getattr(self, "shard", None) is not None and not self.shard.closed:
            self.shard.close(snapshot=False)
        if getattr(self, "dir", None):
            shutil.rmtree(self.dir, ignore_errors=True)

    def _credit(self, m, n):
        paid = min(self.debt[m], n)
        self.debt[m] -= paid
        self.balance[m] += n - paid

    @precondition(lambda self: not self.jumped)     # the slots of TODAY have ended then
    @rule(who=st.integers(0, 1), sale=st.sampled_from(SALES), qty=st.integers(1, 3))
    def buy(self, who, sale, qty):
        m = self.members[who]
        product, channel, group = sale
        self.n += 1
        h = self.shard.run(cmd.hold(channel, V, [HoldItem(product, (SLOT,), qty, group)]))
        sold = self.shard.run(cmd.confirm(h.hold_id, f"o{self.n}", channel, method="cash",
                                          amount_fen=h.amount_fen, member=m))
        unit = sold.order.lines[0]["unit_price_fen"] * group
        each = unit * RATES[(product, channel)] // 100
        assert sold.order.points_earned == each * qty
        self._credit(m, each * qty)
        for t in sold.tickets:
            self.tickets.append([m, f"o{self.n}", t.ticket_id, each, group, channel, 0])

    @precondition(lambda self: not self.jumped)
    @rule(who=st.integers(0, 1), points=st.integers(1, 300), pay=st.booleans())
    def hold_with_points(self, who, points, pay):
        """A hold paying `points`: paid at once, or left open (released later, or gone
        with the clock's jump, by expiry)."""
        m = self.members[who]
        self.n += 1
        item = [HoldItem("adult", (SLOT,), 1)]
        if points > self.balance[m]:
            try:
                self.shard.run(cmd.hold("web", V, item, member=m, points=points))
            except InsufficientPoints:
                return
            raise AssertionError("points beyond the balance were redeemed")
        h = self.shard.run(cmd.hold("web", V, item, member=m, points=points))
        self.balance[m] -= points
        assert (h.points, h.amount_fen) == (points, 8000 - points)
        if not pay:
            self.open_holds.append((m, h.hold_id, points))
            return
        sold = self.shard.run(cmd.confirm(h.hold_id, f"o{self.n}", "web", method="cash",
                                          amount_fen=h.amount_fen))
        each = (8000 - points) * RATES[("adult", "web")] // 100
        assert (sold.order.member, sold.order.points_earned) == (m, each)
        self._credit(m, each)
        self.tickets.append([m, f"o{self.n}", sold.tickets[0].ticket_id, each, 1, "web", points])

    @precondition(lambda self: any(t[3] >= 0 and t[4] for t in self.tickets))
    @rule(data=st.data())
    def refund(self, data):
        live = [t for t in self.tickets if t[4]]
        t = data.draw(st.sampled_from(live))
        m, order, tid, left, persons, channel, redeemed = t
        part = data.draw(st.integers(0, persons - 1)) if persons > 1 else 0
        self.n += 1
        r = self.shard.run(cmd.refund(order, f"r{self.n}", [tid], channel=channel, persons=part))
        owed = left * part // persons if part else left
        assert (r.points_reversed, r.points_restored) == (owed, redeemed)
        self._credit(m, redeemed)
        took = min(self.balance[m], owed)
        self.balance[m] -= took
        self.debt[m] += owed - took
        t[3] -= owed
        t[4] = persons - part if part else 0

    @rule(who=st.integers(0, 1), points=st.integers(-400, 400).filter(bool))
    def adjust(self, who, points):
        m = self.members[who]
        if points < 0 and -points > self.balance[m]:
            try:
                self.shard.run(cmd.adjust_points(V, m, points, "correction"))
            except InsufficientPoints:
                return
            raise AssertionError("a correction below zero was taken")
        r = self.shard.run(cmd.adjust_points(V, m, points, "by hand"))
        if points > 0:
            self._credit(m, points)
        else:
            self.balance[m] += points
        assert (r.balance, r.debt) == (self.balance[m], self.debt[m])

    @precondition(lambda self: self.open_holds)
    @rule(data=st.data())
    def release(self, data):
        m, hid, points = self.open_holds.pop(data.draw(st.integers(0, len(self.open_holds) - 1)))
        self.shard.run(cmd.release(hid, "web"))
        self._credit(m, points)

    @rule(who=st.integers(0, 1))
    def spend_all(self, who):
        """The member's points all used (a correction of the whole balance): a refund
        after it leaves a debt."""
        m = self.members[who]
        if self.balance[m]:
            r = self.shard.run(cmd.adjust_points(V, m, -self.balance[m], "used at the shop"))
            self.balance[m] = 0
            assert (r.balance, r.debt) == (0, self.debt[m])

    @precondition(lambda self: not self.jumped)
    @rule()
    def past_expiry(self):
        # TODAY's slots have ended by then: nothing more is bought or refunded
        self.clock.at(dt.date(2028, 1, 1), 9)
        self.jumped = True
        # the open holds expire on the way: their points come back, and expire too
        for m, _, points in self.open_holds:
            self._credit(m, points)
        self.open_holds = []
        self.shard.run(cmd.enrol(V, phone="13999999999"))        # a batch: the expiry sweep
        for m in self.members:
            self.balance[m] = 0
        for t in self.tickets:
            t[4] = 0

    @rule(snapshot=st.booleans())
    def reopen(self, snapshot):
        self.shard.close(snapshot=snapshot)
        self.shard = Shard.open(self.dir + "/s", clock=self.clock)

    @invariant()
    def agrees(self):
        for m in self.members:
            info = self.shard.member(V, member_id=m)
            assert (info.balance, info.debt) == (self.balance[m], self.debt[m])
            assert info.balance >= 0 and info.debt >= 0
            ledger = self.shard.member_ledger(V, m, limit=1000)
            held = self.shard.state.members[(V, m)]
            assert sum(e.points for e in ledger) == held.balance >= 0
            assert (ledger[-1].balance if ledger else 0) == held.balance
        assert self.shard.check() == []


PointsMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
TestPoints = PointsMachine.TestCase
