"""A real shard against a plain-Python reference model (DESIGN.md 10), hypothesis-driven.

`ShardMachine` drives a real `engine.Shard` on a real LMDB directory (a temp dir) with
a fake clock through random interleavings of: hold (one or more items; a channel with
an allotment, a group product, a 2-zone combo; sold out, invalid items, a channel not
allowed), confirm (right and wrong amount, dead, unknown or foreign holds, order ids
seen before), release, clock jumps (holds expire by themselves at the start of the
next batch; sometimes cmd.expire()), refund (all unused tickets or named ones; used,
refunded, foreign or repeated tickets refused), idempotent retries, block/unblock,
capacity and allotment changes, entry and exit scans (cmd.verify and
cmd.verify_batch) at gates of the right zone, the wrong zone and another venue, at
times in and around the slot window and on other days, forged codes, several
commands in one writer batch (group commit), snapshots, and close + reopen (from a
snapshot, or with close(snapshot=False) so the journal is replayed).

Beside it runs `Model`, the reference: dicts and ints only, written from DESIGN.md 3-4
and the rules of native/tickets.pxi and native/slots.pxi; it imports no engine
internals (engine.model types and Reason only, to compare answers). After every step
the two must agree on stock (per slot, per allotment, per channel), holds, orders and
refunds, every ticket's record (visit day, persons inside, visits, state bits), zone
head counts, and `shard.check()` must be clean; after a snapshot or a reopen
`shard.check(replay=True)` must be clean too and every code renders as issued. A
refused command must change nothing: the model is not touched, and the shard's state
dump is compared byte for byte before and after.

`pytest --hypothesis-show-statistics` lists how often each command was accepted or
refused, each scan reason, and rare model paths. Engine bugs found while writing it are at
the end of the file as strict-xfail tests. tests/unit/test_writer_machine.py runs this
machine through the shard's group-commit writer (`open` and `execute` are its hooks).
"""
from __future__ import annotations

import pickle
import shutil
import tempfile

import pytest
from hypothesis import HealthCheck, event, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from turnstile.engine import (Shard, cmd, HoldItem, Direction, EntryRule, GateMode, Reason, ScanResult,
                    TurnstileError, InvalidArgument, NotFound, AlreadyExists,
                    FailedPrecondition, SoldOut, HoldNotActive, TicketUsed,
                    IdempotencyMismatch, PermissionDenied, SlotClosed)

# -- the venue under test ---------------------------------------------------------------
DAY = 86400
OFFSET = 8 * 3600                       # venue-local time = UTC + 8 h
D0 = 20574                              # 2026-05-01, venue-local


def local(day: int, hour: int, minute: int = 0) -> int:
    """UTC seconds of a venue-local wall-clock time."""
    return day * DAY - OFFSET + hour * 3600 + minute * 60


START = local(D0, 7, 30)
NEVER = -2147483647                     # visit_day of a record never admitted
ISSUED, VOIDED, BLOCKED, USED, INSIDE = 1, 2, 4, 8, 16   # record state bits

PARK, MUSEUM = "park", "museum"
ZONES = {   # zone: (venue, live capacity (0 = none), exit scans enforced)
    "main": (PARK, 5, False),
    "tower": (PARK, 0, True),
    "hall": (MUSEUM, 0, False),
}
GATES = {   # gate: (zone, mode)
    "main-in": ("main", GateMode.IN),
    "main-out": ("main", GateMode.OUT),
    "main-both": ("main", GateMode.BOTH),
    "tower-both": ("tower", GateMode.BOTH),
    "hall-both": ("hall", GateMode.BOTH),
}
CHANNELS = ("web", "ota", "agency")


def _product(zones, *, price, max_entries=1, daily=0, reentry=False, valid_days=1, grace=1800,
             channel_prices=None, channels=(), max_group=1, refundable=True, fee_pct=0):
    return {"zones": zones, "price": price, "max_entries": max_entries, "daily": daily,
            "reentry": reentry, "valid_days": valid_days, "grace": grace,
            "channel_prices": channel_prices or {}, "channels": channels,
            "max_group": max_group, "refundable": refundable, "fee_pct": fee_pct}


PRODUCTS = {
    "single": _product(("main",), price=4995, grace=600, fee_pct=10),       # single use
    "day": _product(("main",), price=7990, reentry=True, channel_prices={"ota": 7590},
                    fee_pct=5),
    "group": _product(("main",), price=3000, max_group=4, channels=("agency", "web")),
    "family": _product(("main",), price=2000, reentry=True, max_group=3),
    "combo": _product(("main", "tower"), price=12000, reentry=True),          # 联票, 2 zones
    "punch": _product(("main",), price=20000, max_entries=3, daily=2, valid_days=2,
                      refundable=False),
}
SLOTS = {   # slot: (zone, day, start, end, capacity)
    "m1": ("main", D0, local(D0, 8), local(D0, 10), 6),
    "m2": ("main", D0, local(D0, 13), local(D0, 15), 4),
    "m3": ("main", D0 + 1, local(D0 + 1, 9), local(D0 + 1, 11), 5),
    "t1": ("tower", D0, local(D0, 9), local(D0, 10), 3),
    "t2": ("tower", D0 + 1, local(D0 + 1, 10), local(D0 + 1, 11), 4),
}
ALLOTMENTS = {("m1", "ota"): 2, ("m3", "agency"): 2}
ONE_ZONE = [("m1",), ("m2",), ("m3",)]
SLOT_CHOICES = {p: (ONE_ZONE + [("t1",)]) for p in PRODUCTS}        # ("t1",): wrong zone
SLOT_CHOICES["combo"] = [("m1", "t1"), ("m2", "t1"), ("m3", "t2"),
                         ("m1", "t2"), ("t1", "m1")]                 # last two: invalid


def catalog() -> list:
    out = [cmd.venue(PARK, utc_offset_s=OFFSET), cmd.venue(MUSEUM, utc_offset_s=OFFSET)]
    for z, (v, cap, enforce) in ZONES.items():
        out.append(cmd.zone(v, z, live_capacity=cap, enforce_exit=enforce))
    for g, (z, mode) in GATES.items():
        out.append(cmd.gate(z, g, mode))
    for pid, p in PRODUCTS.items():
        out.append(cmd.product(
            PARK, pid, p["zones"], price_fen=p["price"], channel_prices=p["channel_prices"],
            channels=p["channels"], max_group=p["max_group"], refundable=p["refundable"],
            refund_fee_pct=p["fee_pct"],
            rule=EntryRule(max_entries=p["max_entries"], daily_entries=p["daily"],
                           reentry=p["reentry"], valid_days=p["valid_days"],
                           slot_grace_s=p["grace"])))
    out.append(cmd.slots([{"id": s, "zone": z, "day": d, "start": a, "end": b, "capacity": c}
                          for s, (z, d, a, b, c) in SLOTS.items()]))
    for (s, ch), cap in ALLOTMENTS.items():
        out.append(cmd.allotment(s, ch, cap))
    return out


# -- the reference model ------------------------------------------------------------------
class Refused(Exception):
    """The model's verdict: the shard must refuse the command with this error type."""

    def __init__(self, kind: type):
        super().__init__(kind.__name__)
        self.kind = kind


class Model:
    """What the shard should hold, as plain dicts and ints. Methods validate first and
    raise Refused before touching anything, then mutate."""

    def __init__(self, now: int, note=lambda what: None):
        self.note = note                             # reports rare paths (statistics)
        self.now = now
        self.slots = {s: {"capacity": c, "sold": 0, "held": 0} for s, (_, _, _, _, c) in SLOTS.items()}
        self.allots = {k: {"capacity": c, "sold": 0, "held": 0} for k, c in ALLOTMENTS.items()}
        self.holds: dict[int, dict] = {}
        self.next_hold = 1
        self.next_ticket = 0
        self.orders: dict[str, dict] = {}
        self.tickets: dict[int, dict] = {}
        self.inside = {z: 0 for z in ZONES}
        self.zone_day = {z: None for z in ZONES}     # latest day with an accepted entry
        self.hold_idem: dict[tuple, tuple] = {}      # (channel, key) -> (request, result)
        self.confirm_idem: dict[tuple, tuple] = {}   # (channel, order) -> (request, result)
        self.refund_idem: dict[tuple, tuple] = {}    # (scope, order, refund) -> (request, result)

    def state(self) -> bytes:
        """Everything the shard must agree on, frozen (to prove a refusal changed nothing)."""
        return pickle.dumps({k: v for k, v in vars(self).items()
                             if not k.endswith("_idem") and k != "note"})

    # stock ------------------------------------------------------------------------
    def reserved(self, sid: str) -> int:
        return sum(a["capacity"] for (s, _), a in self.allots.items() if s == sid)

    def allot_used(self, sid: str) -> int:
        return sum(a["sold"] + a["held"] for (s, _), a in self.allots.items() if s == sid)

    def pool_free(self, sid: str) -> int:
        s = self.slots[sid]
        return s["capacity"] - self.reserved(sid) - (s["sold"] + s["held"] - self.allot_used(sid))

    def allot_free(self, key) -> int:
        a = self.allots[key]
        return a["capacity"] - a["sold"] - a["held"]

    def move(self, sid: str, allot, field: str, qty: int) -> None:
        self.slots[sid][field] += qty
        if allot is not None:
            self.allots[allot][field] += qty

    def expire_due(self) -> int:
        """What the shard does at the start of every batch: due holds release their stock."""
        due = [h for h, hold in self.holds.items() if hold["expires_at"] <= self.now]
        for h in due:
            self.drop_hold(h)
        return len(due)

    def drop_hold(self, hid: int) -> None:
        for ln in self.holds.pop(hid)["lines"]:
            for sid, allot in zip(ln["slots"], ln["allots"]):
                self.move(sid, allot, "held", -ln["qty"] * ln["group"])

    def set_capacity(self, sid: str, cap: int) -> None:
        s = self.slots[sid]
        if cap - self.reserved(sid) < s["sold"] + s["held"] - self.allot_used(sid):
            raise Refused(FailedPrecondition)
        s["capacity"] = cap

    def set_allotment(self, sid: str, channel: str, cap: int) -> None:
        key = (sid, channel)
        if key not in self.allots:
            if self.pool_free(sid) < cap:
                raise Refused(SoldOut)
            self.allots[key] = {"capacity": cap, "sold": 0, "held": 0}
            return
        a = self.allots[key]
        delta = cap - a["capacity"]
        if cap < a["sold"] + a["held"] or (delta > 0 and self.pool_free(sid) < delta):
            raise Refused(FailedPrecondition)
        a["capacity"] = cap

    # sales ------------------------------------------------------------------------
    def hold(self, channel: str, items: list[tuple], ttl: int, key: str | None) -> dict:
        """items: (product, slots, qty, group). Returns the expected hold result, or
        {"same": first answer} for a retry with the same idempotency key."""
        request = (tuple(items), ttl)
        if key is not None and (channel, key) in self.hold_idem:
            stored_req, stored = self.hold_idem[(channel, key)]
            if stored_req != request:
                raise Refused(IdempotencyMismatch)
            return {"same": stored}
        for pid, slots, qty, group in items:
            p = PRODUCTS[pid]
            if p["channels"] and channel not in p["channels"]:
                raise Refused(PermissionDenied)
            if group > p["max_group"] or len(slots) != len(p["zones"]):
                raise Refused(InvalidArgument)
            for s, z in zip(slots, p["zones"]):
                if SLOTS[s][0] != z:
                    raise Refused(InvalidArgument)
                if SLOTS[s][3] <= self.now:         # the slot's window is over
                    raise Refused(SlotClosed)
            days = [SLOTS[s][1] for s in slots]
            if max(days) - days[0] >= p["valid_days"] or min(days) < days[0]:
                raise Refused(InvalidArgument)
        lines, taken = [], []
        try:
            for pid, slots, qty, group in items:
                allots = [(s, channel) if (s, channel) in self.allots else None for s in slots]
                for s, a in zip(slots, allots):
                    free = self.allot_free(a) if a is not None else self.pool_free(s)
                    if free < qty * group:
                        raise Refused(SoldOut)
                    self.move(s, a, "held", qty * group)
                    taken.append((s, a, qty * group))
                price = PRODUCTS[pid]["channel_prices"].get(channel, PRODUCTS[pid]["price"])
                lines.append({"product": pid, "slots": list(slots), "allots": allots,
                              "qty": qty, "group": group, "price": price})
        except Refused:
            for s, a, q in taken:
                self.move(s, a, "held", -q)
            raise
        hid = self.next_hold
        self.next_hold += 1
        amount = sum(ln["price"] * ln["qty"] * ln["group"] for ln in lines)
        self.holds[hid] = {"channel": channel, "expires_at": self.now + ttl, "amount": amount,
                           "lines": lines}
        return {"hold_id": hid, "expires_at": self.now + ttl, "amount_fen": amount}

    def active_hold(self, hid: int, channel: str) -> dict:
        hold = self.holds.get(hid)
        if hold is None:
            raise Refused(HoldNotActive if 1 <= hid < self.next_hold else NotFound)
        if hold["channel"] != channel:
            raise Refused(NotFound)
        return hold

    def release(self, hid: int, channel: str) -> None:
        self.active_hold(hid, channel)
        self.drop_hold(hid)

    def confirm(self, hid: int, order_id: str, channel: str, amount: int) -> dict:
        """Returns {"tickets": [(id, product, persons)], ...} or {"same": stored}."""
        request = (hid, amount)
        if (channel, order_id) in self.confirm_idem:
            stored_req, stored = self.confirm_idem[(channel, order_id)]
            if stored_req != request:
                raise Refused(IdempotencyMismatch)
            return {"same": stored}
        if (channel, order_id) in self.orders:      # order ids are the channel's own
            raise Refused(AlreadyExists)
        hold = self.active_hold(hid, channel)
        if any(SLOTS[s][3] <= self.now for ln in hold["lines"] for s in ln["slots"]):
            raise Refused(SlotClosed)
        if amount != hold["amount"]:
            raise Refused(InvalidArgument)
        issued = []
        for ln in hold["lines"]:
            p = PRODUCTS[ln["product"]]
            first_day = SLOTS[ln["slots"][0]][1]
            ncomp = len(p["zones"])
            for _ in range(ln["qty"]):
                base = self.next_ticket
                self.next_ticket += ncomp
                self.tickets[base] = {
                    "product": ln["product"], "group": ln["group"], "order": order_id,
                    "price": ln["price"], "slots": list(ln["slots"]), "allots": ln["allots"],
                    "comps": [{"first_day": first_day, "last_day": first_day + p["valid_days"] - 1,
                               "visit_day": NEVER, "persons_in": 0, "visit_admitted": 0,
                               "entries": 0, "day_entries": 0, "state": ISSUED}
                              for _ in range(ncomp)]}
                issued.append(base)
            for s, a in zip(ln["slots"], ln["allots"]):
                self.move(s, a, "held", -ln["qty"] * ln["group"])
                self.move(s, a, "sold", ln["qty"] * ln["group"])
        del self.holds[hid]
        self.orders[(channel, order_id)] = {"channel": channel, "hold_id": hid, "amount": amount,
                                 "refunded": 0, "tickets": issued, "refunds": []}
        return {"tickets": [(t, self.tickets[t]["product"], self.tickets[t]["group"])
                            for t in issued], "amount": amount}

    def spent(self, t: int) -> bool:
        """Used (any component entered) or voided: not refundable."""
        return any(c["state"] & (USED | VOIDED) for c in self.tickets[t]["comps"])

    def refund(self, order_id: str, refund_id: str, want: list[int], channel: str | None) -> dict:
        scope = (channel or "", order_id, refund_id)
        request = (tuple(want), channel)
        if scope in self.refund_idem:
            stored_req, stored = self.refund_idem[scope]
            if stored_req != request:
                raise Refused(IdempotencyMismatch)
            return {"same": stored}
        if channel is None:
            raise Refused(InvalidArgument)          # order ids are the channel's own
        order = self.orders.get((channel, order_id))
        if order is None:
            raise Refused(NotFound)
        if any(r[0] == refund_id for r in order["refunds"]):
            raise Refused(AlreadyExists)
        refunded = {t for r in order["refunds"] for t in r[1]}
        if want:
            if any(t not in order["tickets"] for t in want) or len(set(want)) != len(want):
                raise Refused(InvalidArgument)
            if any(t in refunded or self.spent(t) for t in want):
                raise Refused(TicketUsed)
            chosen = list(want)
        else:
            chosen = [t for t in order["tickets"] if t not in refunded and not self.spent(t)]
            if not chosen:
                raise Refused(TicketUsed)
        if not all(PRODUCTS[self.tickets[t]["product"]]["refundable"] for t in chosen):
            raise Refused(FailedPrecondition)
        amount = fee = 0
        for t in chosen:
            tk = self.tickets[t]
            price = tk["price"] * tk["group"]
            f = (price * PRODUCTS[tk["product"]]["fee_pct"] + 50) // 100
            amount += price - f
            fee += f
            for c in tk["comps"]:
                c["state"] |= VOIDED
            for s, a in zip(tk["slots"], tk["allots"]):
                self.move(s, a, "sold", -tk["group"])
        order["refunds"].append((refund_id, chosen, amount, fee))
        order["refunded"] += amount
        return {"tickets": chosen, "amount_fen": amount, "fee_fen": fee}

    def block(self, t: int, blocked: bool) -> None:
        if t not in self.tickets:
            raise Refused(NotFound)
        for c in self.tickets[t]["comps"]:
            c["state"] = c["state"] | BLOCKED if blocked else c["state"] & ~BLOCKED

    # scans ------------------------------------------------------------------------
    @staticmethod
    def scan_checks(gate: str, direction: Direction, persons: int) -> None:
        """A scan the shard refuses as a command (before reading the code)."""
        if gate not in GATES:
            raise Refused(NotFound)
        if not int(GATES[gate][1]) & int(direction):
            raise Refused(InvalidArgument)
        if not 0 <= persons <= 65535:
            raise Refused(InvalidArgument)

    def scan(self, t: int, gate: str, direction: Direction, at: int, persons: int):
        """The expected (reason, persons) of one scan of ticket t's code; applies it."""
        self.scan_checks(gate, direction, persons)
        zone = GATES[gate][0]
        tk = self.tickets[t]
        p = PRODUCTS[tk["product"]]
        if ZONES[zone][0] != PARK or zone not in p["zones"]:
            return Reason.WRONG_ZONE, 0
        comp = p["zones"].index(zone)
        r = tk["comps"][comp]
        day = (at + OFFSET) // DAY
        _, live_cap, enforce_exit = ZONES[zone]
        if direction == Direction.OUT:
            if r["visit_day"] != day or r["persons_in"] == 0:
                return (Reason.NOT_INSIDE if enforce_exit else Reason.OK), 0
            k = r["persons_in"] if persons <= 0 or persons > r["persons_in"] else persons
            r["persons_in"] -= k
            self.inside[zone] -= k
            if r["persons_in"] == 0:
                r["state"] &= ~INSIDE
            else:
                self.note("model: part of a group left")
            return Reason.OK, k
        group = tk["group"]
        visit_open = r["visit_day"] == day

        zday = self.zone_day[zone]

        def admit(k: int) -> None:
            if zday is None or day >= zday:
                r["persons_in"] += k
                self.inside[zone] += k
                r["state"] |= INSIDE | USED
            else:                       # a late scan of an earlier day: not inside now
                r["state"] |= USED
                self.note("model: entry of an earlier day")

        def room_for(k: int) -> bool:
            cur = self.inside[zone] if zday == day else 0
            return not live_cap or cur + k <= live_cap

        if r["state"] & VOIDED:
            return Reason.VOIDED, 0
        if r["state"] & BLOCKED:
            return Reason.BLOCKED, 0
        if day < r["first_day"]:
            return Reason.NOT_YET_VALID, 0
        if day > r["last_day"]:
            return Reason.EXPIRED, 0
        if visit_open and r["visit_admitted"] < group:          # the rest of a group
            room = group - r["visit_admitted"]
            k = room if persons <= 0 or persons > room else persons
            if not room_for(k):
                return Reason.ZONE_FULL, 0
            r["visit_admitted"] += k
            admit(k)
            self.note("model: rest of a group admitted")
            return Reason.OK, k
        if visit_open and r["persons_in"] > 0 and (not p["reentry"] or r["persons_in"] >= group):
            return Reason.ALREADY_USED, 0                        # anti-passback
        if visit_open and p["reentry"]:
            room = group - r["persons_in"]
            k = room if persons <= 0 or persons > room else persons
            if not room_for(k):
                return Reason.ZONE_FULL, 0
            admit(k)
            return Reason.OK_REENTRY, k
        # a new visit
        if p["max_entries"] and r["entries"] >= p["max_entries"]:
            return (Reason.ALREADY_USED if p["max_entries"] == 1 else Reason.ENTRY_LIMIT), 0
        if p["daily"] and visit_open and r["day_entries"] >= p["daily"]:
            return Reason.ENTRY_LIMIT, 0
        _, sday, start, end, _ = SLOTS[tk["slots"][comp]]
        if sday == day and not start - p["grace"] <= at <= end + p["grace"]:
            return Reason.WRONG_SLOT, 0
        k = group if persons <= 0 or persons > group else persons
        if not room_for(k):
            self.note("model: ZONE_FULL on a new visit")
            return Reason.ZONE_FULL, 0
        if zday is None or day > zday:
            # first accepted entry of a new day here: earlier days' visitors leave the count
            for other in self.tickets.values():
                op = PRODUCTS[other["product"]]
                for c, oz in zip(other["comps"], op["zones"]):
                    if oz == zone and c["persons_in"]:
                        c["persons_in"] = 0
                        c["state"] &= ~INSIDE
                        self.note("model: an earlier day's visitor left the head count")
            self.inside[zone] = 0
            self.zone_day[zone] = zday = day
        r["entries"] += 1
        if day < r["visit_day"]:
            # a late scan of a day before the current visit: counted, the visit unchanged
            admit(k)
            self.note("model: a visit before the current one")
            return Reason.OK, k
        r["day_entries"] = r["day_entries"] + 1 if visit_open else 1
        r["visit_day"] = day
        r["visit_admitted"] = k
        admit(k)
        return Reason.OK, k


# -- the machine -------------------------------------------------------------------------
picks = st.integers(0, 2**16)          # an index into whatever list the model has


def pick(xs, i):
    xs = sorted(xs)
    return xs[i % len(xs)]


class Step:
    """One command, its effect on the model (`expect`: returns the model's answer or
    raises Refused) and the check of the shard's answer against it (`check`)."""

    def __init__(self, command, expect, check=lambda want, got: None):
        self.command, self.expect, self.check = command, expect, check


class ShardMachine(RuleBasedStateMachine):
    @initialize(data=st.data())
    def open_shard(self, data):
        self.clock = [START]
        self.path = tempfile.mkdtemp(prefix="turnstile-sm-")
        self.shard = self.open()
        for r in self.shard.run_many(catalog()):
            assert not isinstance(r, BaseException), r
        self.m = Model(START, event)
        self.codes: dict[int, str] = {}          # ticket id -> its code, as issued
        self.n = 0                               # counter for fresh ids
        self.focus = None                        # the ticket last bought or scanned
        # opening sales, so every run has tickets to scan whichever rules it enables: a
        # punch card, a combo, a group code, then whatever the draw says
        for pid in ("punch", "combo", data.draw(st.sampled_from(["group", "family"]))):
            mg = PRODUCTS[pid]["max_group"]
            item = (pid, data.draw(st.sampled_from(SLOT_CHOICES[pid][:3]), label="slots"), 1,
                    data.draw(st.integers(1, mg), label="group") if mg > 1 else 1)
            hold, pay = self.buy_steps("web", [item])
            if not isinstance(self.one(hold), TurnstileError):
                self.one(pay)
        for _ in range(data.draw(st.integers(0, 3), label="more opening sales")):
            self.buy(data, data.draw(st.sampled_from(CHANNELS), label="channel"))

    def teardown(self):
        shard = getattr(self, "shard", None)
        if shard is not None and not shard.closed:
            shard.close(snapshot=False)
        if getattr(self, "path", None):
            shutil.rmtree(self.path, ignore_errors=True)

    def open(self) -> Shard:
        """Open (or reopen) the shard in self.path, on the machine's clock."""
        return Shard.open(self.path, clock=lambda: self.clock[0], map_size=64 << 20)

    def fresh(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    # -- running commands against both ------------------------------------------------------
    def run(self, steps: list) -> list:
        """Run steps as ONE shard batch (group commit) and, in order, on the model.
        `steps` holds Steps or callables making a Step from the model as the earlier
        steps left it. Each refusal must be the predicted error type and change
        nothing; a lone refused command must leave the shard's state byte for byte
        (Shard.state.dump(), the snapshot blobs: the one place this test reads past the
        public API, and only to compare before with after)."""
        self.m.now = self.clock[0]
        due = self.m.expire_due()            # every batch starts by expiring due holds
        before_shard = None if due or len(steps) > 1 else self.shard.state.dump()
        made, wants = self.expect(steps)
        results = self.execute([s.command for s in made])
        self.check_answers(made, wants, results)
        if before_shard is not None and isinstance(results[0], TurnstileError):
            after = self.shard.state.dump()
            assert after == before_shard, f"refused {made[0].command.op.name} changed " \
                f"{sorted(k for k in after if after[k] != before_shard.get(k))}"
        return results

    def expect(self, steps: list) -> tuple[list[Step], list[tuple]]:
        """Make the Steps (a callable makes its Step from the model as the earlier steps
        left it) and apply each to the model, in order: the Steps, and per Step the
        model's (answer, None) or (None, the error type it must be refused with)."""
        made, wants = [], []
        for s in steps:
            s = s if isinstance(s, Step) else s()
            before = self.m.state()
            try:
                wants.append((s.expect(), None))
            except Refused as r:
                wants.append((None, r.kind))
                assert self.m.state() == before, "the model changed on a refusal"
            made.append(s)
        return made, wants

    def check_answers(self, made: list[Step], wants: list[tuple], results: list) -> None:
        """The shard's answers against the model's (see `expect`)."""
        for s, (want, refused), got in zip(made, wants, results):
            name = s.command.op.name
            if isinstance(got, TurnstileError):
                assert refused is not None, f"shard refused {name}: {got!r}; model accepts"
                assert type(got) is refused, \
                    f"shard refused {name} with {got!r}, model says {refused.__name__}"
                event(f"refused {name}: {type(got).__name__}")
            else:
                assert refused is None, f"shard accepted {name} ({got!r}); model says {refused.__name__}"
                event(f"done {name}" + (f" {got.reason.name}" if isinstance(got, ScanResult) else ""))
                s.check(want, got)

    def one(self, step):
        return self.run([step])[0]

    def execute(self, commands: list) -> list:
        """The shard's answers to `commands`, applied as one batch (errors as values)."""
        return self.shard.run_many(commands)

    # -- clock ------------------------------------------------------------------------------
    @rule(seconds=st.sampled_from([30, 120, 600, 900, 1800, 3600, 3 * 3600, 10 * 3600,
                                   "to expiry", "to expiry", "just before expiry"]),
          force=st.booleans())
    def advance_clock(self, seconds, force):
        """Time passes (sometimes exactly to, or 1 s short of, the first live hold's
        expiry); due holds expire at the start of the next batch, whatever its command
        (or at once with cmd.expire())."""
        if isinstance(seconds, str):
            live = [h["expires_at"] for h in self.m.holds.values() if h["expires_at"] > self.clock[0]]
            target = min(live, default=self.clock[0] + 60) - (seconds == "just before expiry")
            seconds = max(target - self.clock[0], 0)
        self.clock[0] += seconds
        if force:      # the batch expired the due holds before EXPIRE ran
            self.one(Step(cmd.expire(), lambda: {"expired": 0}, lambda w, g: self.same(vars(g), w)))

    @staticmethod
    def same(got, want):
        assert got == want, f"shard {got!r}, model {want!r}"

    # -- stock knobs ------------------------------------------------------------------------
    @rule(slot=st.sampled_from(sorted(SLOTS)), what=st.sampled_from(["capacity", "allotment"]),
          channel=st.sampled_from(CHANNELS), cap=st.integers(0, 8))
    def change_stock(self, slot, what, channel, cap):
        if what == "capacity":
            cap = max(cap, 2)
            self.one(Step(cmd.slot_capacity(slot, cap), lambda: self.m.set_capacity(slot, cap)))
        else:
            cap //= 2
            self.one(Step(cmd.allotment(slot, channel, cap),
                          lambda: self.m.set_allotment(slot, channel, cap)))

    # -- sales ------------------------------------------------------------------------------
    @staticmethod
    def draw_items(data, valid: bool) -> list[tuple]:
        """Hold items: (product, slots, qty, group); with valid=False, sometimes an item
        the shard must refuse (wrong zone, slots off the validity, group too big)."""
        items = []
        for _ in range(data.draw(st.sampled_from([1, 1, 1, 2]), label="n_items")):
            pid = data.draw(st.sampled_from(sorted(PRODUCTS)), label="product")
            choices = SLOT_CHOICES[pid][:3] * (1 if valid else 4) + ([] if valid else SLOT_CHOICES[pid][3:])
            slots = data.draw(st.sampled_from(choices), label="slots")
            mg = PRODUCTS[pid]["max_group"]
            qty = data.draw(st.sampled_from([1, 1, 1, 2] if mg > 1 else [1, 1, 1, 2, 2, 3]), label="qty")
            if mg > 1:
                group = data.draw(st.sampled_from([1, 2, 2, 3, mg] + ([] if valid else [mg + 1])),
                                  label="group")
            else:
                group = data.draw(st.sampled_from([1] * 9 + [1 if valid else 2]), label="group")
            items.append((pid, tuple(slots), qty, group))
        return items

    def hold_step(self, channel, items, ttl, key=None) -> Step:
        def check(want, got):
            if "same" in want:
                assert got == want["same"], "a hold retry must return the first answer"
                return
            assert (got.hold_id, got.expires_at, got.amount_fen) == \
                (want["hold_id"], want["expires_at"], want["amount_fen"])
            if key is not None:
                self.m.hold_idem[(channel, key)] = ((tuple(items), ttl), got)
        return Step(cmd.hold(channel, PARK, [HoldItem(p, s, q, g) for p, s, q, g in items],
                             ttl_s=ttl, idempotency_key=key),
                    lambda: self.m.hold(channel, items, ttl, key), check)

    def confirm_step(self, hid, order_id, channel, amount) -> Step:
        def check(want, got):
            if "same" in want:
                assert got.to_dict() == want["same"].to_dict(), "a confirm retry must return the first answer"
                return
            assert [(t.ticket_id, t.product, t.persons) for t in got.tickets] == want["tickets"]
            assert (got.order.order_id, got.order.amount_fen) == (order_id, want["amount"])
            for t in got.tickets:
                self.codes[t.ticket_id] = t.code
            self.focus = got.tickets[-1].ticket_id
            self.m.confirm_idem[(channel, order_id)] = ((hid, amount), got)
        return Step(cmd.confirm(hid, order_id, channel, method="cash", amount_fen=amount),
                    lambda: self.m.confirm(hid, order_id, channel, amount), check)

    def refund_step(self, order_id, refund_id, tickets, channel) -> Step:
        def check(want, got):
            if "same" in want:
                assert got == want["same"], "a refund retry must return the first answer"
                return
            assert (got.tickets, got.amount_fen, got.fee_fen) == \
                (want["tickets"], want["amount_fen"], want["fee_fen"])
            self.m.refund_idem[(channel or "", order_id, refund_id)] = ((tuple(tickets), channel), got)
        return Step(cmd.refund(order_id, refund_id, tickets, channel=channel),
                    lambda: self.m.refund(order_id, refund_id, tickets, channel), check)

    def live_holds(self) -> list[int]:
        return [h for h, hold in self.m.holds.items() if hold["expires_at"] > self.clock[0]]

    @rule(data=st.data(), channel=st.sampled_from(CHANNELS),
          ttl=st.sampled_from([120, 600, 1800]), keyed=st.booleans())
    def hold(self, data, channel, ttl, keyed):
        self.one(self.hold_step(channel, self.draw_items(data, valid=False), ttl,
                                self.fresh("hk") if keyed else None))

    @precondition(lambda self: self.m.next_hold > 1)
    @rule(i=picks, order=st.sampled_from(["new"] * 6 + ["old"]),
          amount=st.sampled_from(["right"] * 5 + ["short", "over"]),
          chan=st.sampled_from(["own"] * 8 + ["other"]),
          which=st.sampled_from(["live"] * 5 + ["any", "unknown"]))
    def confirm(self, i, order, amount, chan, which):
        """Pay a hold: mostly a live one with the right amount; sometimes a dead or
        unknown hold, a wrong amount, the wrong channel, or an order id seen before."""
        live = self.live_holds()
        if which == "live" and live:
            hid = pick(live, i)
        elif which == "unknown":
            hid = self.m.next_hold + i % 3
        else:
            hid = 1 + i % (self.m.next_hold - 1)
        hold = self.m.holds.get(hid) if hid in live else None
        channel = hold["channel"] if hold and chan == "own" else CHANNELS[i % 3]
        paid = hold["amount"] if hold else 100 * (i % 50)
        paid = max(0, paid + {"right": 0, "short": -1, "over": 1}[amount])
        order_id = pick(self.m.orders, i)[1] if order == "old" and self.m.orders else self.fresh("o")
        self.one(self.confirm_step(hid, order_id, channel, paid))

    def buy_steps(self, channel, items) -> list:
        """Hold, then pay what the model says the hold costs (one batch or two)."""
        def pay():
            hold = self.m.holds.get(self.m.next_hold - 1)
            amount = hold["amount"] if hold else 0
            return self.confirm_step(self.m.next_hold - 1, self.fresh("o"), channel, amount)
        return [self.hold_step(channel, items, 900), pay]

    @rule(data=st.data(), channel=st.sampled_from(CHANNELS))
    def buy(self, data, channel):
        """Hold and pay at once (tickets to scan)."""
        hold, pay = self.buy_steps(channel, self.draw_items(data, valid=True))
        if not isinstance(self.one(hold), TurnstileError):
            self.one(pay)

    @precondition(lambda self: self.m.next_hold > 1)
    @rule(i=picks, chan=st.sampled_from(["own"] * 5 + ["other"]))
    def release(self, i, chan):
        live = self.live_holds()
        hid = pick(live, i) if live and i % 4 else 1 + i % (self.m.next_hold + 1)  # or dead, or never made
        hold = self.m.holds.get(hid)
        channel = hold["channel"] if hold and chan == "own" else CHANNELS[i % 3]
        self.one(Step(cmd.release(hid, channel), lambda: self.m.release(hid, channel),
                      lambda w, g: self.same(vars(g), {"hold_id": hid, "released": True})))

    @precondition(lambda self: self.m.orders)
    @rule(data=st.data(), i=picks,
          how=st.sampled_from(["all"] * 3 + ["some"] * 4 + ["foreign", "twice"]),
          chan=st.sampled_from(["none", "none", "own", "other"]),
          rid=st.sampled_from(["new"] * 5 + ["old"]))
    def refund(self, data, i, how, chan, rid):
        """Refund all unused tickets of an order, or named ones (used ones: TicketUsed)."""
        key = pick(self.m.orders, i) if i % 11 else ("web", "no-such-order")
        order_id, order = key[1], self.m.orders.get(key)
        tickets = order["tickets"] if order else [0]
        want_t: list[int] = []
        if how == "some":
            want_t = data.draw(st.lists(st.sampled_from(tickets), min_size=1, max_size=2,
                                        unique=True), label="tickets")
        elif how == "foreign":
            want_t = [tickets[0], self.m.next_ticket + 7]
        elif how == "twice":
            want_t = [tickets[-1], tickets[-1]]
        own = order["channel"] if order else "web"
        channel = {"none": None, "own": own, "other": "ota" if own != "ota" else "web"}[chan]
        refund_id = self.fresh("r")
        if rid == "old" and order and order["refunds"]:
            refund_id = order["refunds"][i % len(order["refunds"])][0]
        self.one(self.refund_step(order_id, refund_id, want_t, channel))

    def _burst_refund(self, key: tuple[str, str]) -> tuple:
        """A refund of every unused ticket of the order `key` ((channel, order id)), by its
        own channel."""
        return key[1], self.fresh("r"), [], key[0]

    @precondition(lambda self: self.m.hold_idem or self.m.confirm_idem or self.m.refund_idem)
    @rule(i=picks, what=st.sampled_from(["hold", "confirm", "refund"]), same=st.booleans())
    def retry(self, i, what, same):
        """Re-send a request with its idempotency key: the first answer, byte for byte,
        whatever happened since (same request), or IdempotencyMismatch (another one)."""
        if what == "hold" and self.m.hold_idem:
            (channel, key), ((items, ttl), _) = pick(self.m.hold_idem.items(), i)
            self.one(self.hold_step(channel, list(items), ttl if same else ttl + 1, key))
        elif what == "confirm" and self.m.confirm_idem:
            (channel, order_id), ((hid, amount), _) = pick(self.m.confirm_idem.items(), i)
            self.one(self.confirm_step(hid, order_id, channel, amount if same else amount + 1))
        elif self.m.refund_idem:
            (_, order_id, refund_id), ((tickets, channel), _) = pick(self.m.refund_idem.items(), i)
            other = [t for t in self.m.orders[(channel, order_id)]["tickets"] if t not in tickets][:1] \
                if channel is not None else []
            self.one(self.refund_step(order_id, refund_id, list(tickets) if same else other, channel))

    @precondition(lambda self: self.m.tickets)
    @rule(i=picks, blocked=st.sampled_from([True, False, False]),
          bogus=st.sampled_from([False] * 6 + [True]))
    def block(self, i, blocked, bogus):
        t = pick(self.m.tickets, i)
        if bogus:       # a combo's second component, or past the last id: not a code
            combos = [x for x in self.m.tickets if len(self.m.tickets[x]["comps"]) > 1]
            t = min(combos) + 1 if combos and i % 2 else self.m.next_ticket + i % 5
        self.one(Step(cmd.block(t, blocked), lambda: self.m.block(t, blocked),
                      lambda w, g: self.same(vars(g), {"ticket_id": t, "blocked": blocked})))

    # -- gates ------------------------------------------------------------------------------
    ENTRY_GATES = {"main": ["main-in", "main-both"], "tower": ["tower-both"]}
    EXIT_GATES = {"main": ["main-out", "main-both"], "tower": ["tower-both"]}
    WHEN = ["in"] * 6 + ["mid", "clock", "clock", "open", "early", "close", "late",
                         "next day", "day before"]

    def scan_time(self, t: int, zone: str, when: str) -> int | None:
        """A scan time: the clock (None: the shard's own now), a point of the ticket's
        slot window plus grace (edges included), just outside it, or a day off."""
        tk = self.m.tickets[t]
        p = PRODUCTS[tk["product"]]
        _, _, start, end, _ = SLOTS[tk["slots"][p["zones"].index(zone)]]
        lo, hi = start - p["grace"], end + p["grace"]
        return {"clock": None, "open": lo, "early": lo - 1, "mid": (lo + hi) // 2, "close": hi,
                "late": hi + 1, "in": start + 600, "next day": start + 600 + DAY,
                "day before": start - DAY}[when]

    def scan_step(self, t, gate, direction, at, persons, code=None) -> Step:
        command = cmd.verify(code or self.codes[t], gate, direction, at=at, persons=persons)
        if code is not None:        # a forged code: only the command checks apply
            return Step(command, lambda: self.m.scan_checks(gate, direction, persons),
                        lambda w, g: self.same(g, ScanResult(Reason.FORGED)))

        def check(want, got):
            reason, k = want
            assert (got.reason, got.ticket, got.persons) == (reason, t, k), \
                f"scan of {t} at {gate} {direction.name}: shard {got}, model {reason.name}/{k}"
        when = self.clock[0] if at is None else at
        return Step(command, lambda: self.m.scan(t, gate, direction, when, persons), check)

    def scan(self, t, gate, direction, at, persons, code=None):
        self.focus = t
        self.one(self.scan_step(t, gate, direction, at, persons, code))

    def entry(self, t, j, when, persons):
        """An entry scan at a gate of one of the ticket's zones."""
        zone = pick(PRODUCTS[self.m.tickets[t]["product"]]["zones"], j)
        gate = self.ENTRY_GATES[zone][j % 2 if zone == "main" else 0]
        self.scan(t, gate, Direction.IN, self.scan_time(t, zone, when), persons)

    @precondition(lambda self: self.m.tickets)
    @rule(i=picks, j=picks, when=st.sampled_from(WHEN),
          persons=st.sampled_from([0] * 6 + [1, 1, 2, 9]))
    def enter(self, i, j, when, persons):
        unused = [t for t in self.m.tickets if not self.m.spent(t)]
        self.entry(pick(unused if unused and i % 2 else self.m.tickets, i), j, when, persons)

    @precondition(lambda self: self.focus is not None)
    @rule(j=picks, when=st.sampled_from(WHEN), persons=st.sampled_from([0] * 6 + [1, 1, 2, 9]))
    def enter_again(self, j, when, persons):
        """An entry scan of the ticket last bought or scanned (re-entry, the rest of a
        group, punch-card visits, anti-passback)."""
        self.entry(self.focus, j, when, persons)

    @precondition(lambda self: self.m.tickets)
    @rule(i=picks, j=picks, when=st.sampled_from(["in"] * 6 + ["mid", "clock", "next day"]),
          persons=st.sampled_from([0] * 4 + [1, 2]), inside=st.sampled_from([True] * 4 + [False]))
    def leave(self, i, j, when, persons, inside):
        """An exit scan, mostly of a ticket someone entered with."""
        ins = [t for t, tk in self.m.tickets.items() if any(c["persons_in"] for c in tk["comps"])]
        t = pick(ins if inside and ins else self.m.tickets, i)
        if self.focus in ins and i % 4:
            t = self.focus
        zone = pick(PRODUCTS[self.m.tickets[t]["product"]]["zones"], j)
        gate = self.EXIT_GATES[zone][j % 2 if zone == "main" else 0]
        self.scan(t, gate, Direction.OUT, self.scan_time(t, zone, when), persons)

    @precondition(lambda self: self.focus is not None)
    @rule(i=picks, j=picks, kind=st.sampled_from(["group", "multi-day", "last"]),
          moves=st.lists(st.tuples(st.sampled_from([0, 0, 1, 2]),              # persons in
                                   st.sampled_from([0, 0, 0, 1, 2, None]),     # out (None: stays)
                                   st.sampled_from(["in", "in", "mid"])),
                         min_size=1, max_size=4),
          next_day=st.sampled_from([False, False, True]), stay=st.booleans())
    def visit(self, i, j, kind, moves, next_day, stay):
        """Entries, each followed by an exit or not, of one code at one zone: a group
        arriving and leaving in parts, re-entries, anti-passback, punch-card visits and
        their daily limit; with next_day, one more entry the day after (with `stay`,
        while the persons of the last visit are still counted inside).
        The code: a group one, a multi-day one, or the one last bought or scanned."""
        pool = {"group": [t for t, tk in self.m.tickets.items() if tk["group"] > 1],
                "multi-day": [t for t, tk in self.m.tickets.items()
                              if PRODUCTS[tk["product"]]["valid_days"] > 1],
                "last": []}[kind]
        t = pick(pool, i) if pool else self.focus
        zone = pick(PRODUCTS[self.m.tickets[t]["product"]]["zones"], j)
        if next_day:
            moves = moves[:-1] + [(moves[-1][0], None if stay else moves[-1][1], moves[-1][2]),
                                  (0, None, "next day")]
        for p_in, p_out, when in moves:
            at = self.scan_time(t, zone, when)
            gates = self.ENTRY_GATES[zone]
            self.scan(t, gates[j % len(gates)], Direction.IN, at, p_in)
            self.agrees()
            if p_out is not None:
                gates = self.EXIT_GATES[zone]
                self.scan(t, gates[j % len(gates)], Direction.OUT, at, p_out)
                self.agrees()

    @precondition(lambda self: self.m.tickets)
    @rule(slot=st.sampled_from(["m1", "m2", "m3", "t1", "t2"]), when=st.sampled_from(["in", "mid"]))
    def crowd(self, slot, when):
        """Everyone holding a ticket for one slot arrives (live capacity: ZONE_FULL)."""
        zone = SLOTS[slot][0]
        for t, tk in sorted(self.m.tickets.items()):
            if slot in tk["slots"]:
                self.scan(t, self.ENTRY_GATES[zone][0], Direction.IN, self.scan_time(t, zone, when), 0)
                self.agrees()

    @precondition(lambda self: self.m.tickets)
    @rule(i=picks, what=st.sampled_from(["wrong zone", "other venue", "forged", "no gate",
                                         "gate direction", "bad persons"]),
          direction=st.sampled_from([Direction.IN, Direction.OUT]))
    def scan_odd(self, i, what, direction):
        """Scans the shard refuses: a gate of a zone or venue the ticket does not admit
        (a WRONG_ZONE result), a forged code (FORGED), or a malformed command (an error)."""
        t = pick(self.m.tickets, i)
        zones = PRODUCTS[self.m.tickets[t]["product"]]["zones"]
        at = self.scan_time(t, zones[0], "in")
        gate, persons, code = "main-both", 0, None
        if what == "wrong zone":
            gate = "hall-both" if len(zones) > 1 else "tower-both"
        elif what == "other venue":
            gate = "hall-both"
        elif what == "forged":       # one payload character changed: the MAC fails
            code = self.codes[t]
            code = code[:12] + ("B" if code[12] != "B" else "C") + code[13:]
        elif what == "no gate":
            gate = "gate-that-is-not"
        elif what == "gate direction":
            gate = "main-in" if direction == Direction.OUT else "main-out"
        else:
            persons = -1
        self.scan(t, gate, direction, at, persons, code)

    @precondition(lambda self: self.m.tickets)
    @rule(data=st.data(), gate=st.sampled_from(["main-in", "main-out", "main-both", "tower-both"]),
          when=st.sampled_from(["in", "in", "mid", "clock"]), persons=st.sampled_from([0, 0, 1]),
          forged=st.booleans())
    def gate_batch(self, data, gate, when, persons, forged):
        """A gate concentrator's batch (cmd.verify_batch): many codes, one gate, one time,
        decided in order exactly as single scans would be."""
        ts = data.draw(st.lists(st.sampled_from(sorted(self.m.tickets)), min_size=1, max_size=5),
                       label="tickets")
        zone, mode = GATES[gate]
        direction = Direction.OUT if mode == GateMode.OUT else Direction.IN
        first = PRODUCTS[self.m.tickets[ts[0]]["product"]]["zones"]
        at = self.scan_time(ts[0], zone if zone in first else first[0], when)
        when_at = self.clock[0] if at is None else at
        codes = [self.codes[t] for t in ts]
        if forged:
            codes[-1] = codes[-1][:12] + ("B" if codes[-1][12] != "B" else "C") + codes[-1][13:]

        def expect():
            out = [self.m.scan(t, gate, direction, when_at, persons) for t in ts[:len(ts) - forged]]
            return [(r, t, k) for (r, k), t in zip(out, ts)] + [(Reason.FORGED, -1, 0)] * forged

        def check(want, got):
            assert [(got[i].reason, got[i].ticket, got[i].persons) for i in range(len(got))] == want
            for r, _, _ in want:
                event(f"done VERIFY_BATCH {r.name}")
        self.one(Step(cmd.verify_batch(codes, gate, direction, at=at, persons=persons), expect, check))

    @precondition(lambda self: self.m.tickets)
    @rule(data=st.data(), kinds=st.lists(st.sampled_from(["buy", "refund", "enter", "leave",
                                                          "release", "block"]),
                                         min_size=2, max_size=4))
    def burst(self, data, kinds):
        """Several requests in one writer batch (group commit): each answered as if
        alone and in order, e.g. a hold and its confirm, a refund of an order made in
        the same batch, scans of one code in and out."""
        self.run(self.burst_steps(data, kinds))

    def burst_steps(self, data, kinds) -> list:
        """Steps for `burst`, one or two per kind (a buy is a hold and its confirm)."""
        steps = []
        for kind in kinds:
            i = data.draw(picks, label="i")
            if kind == "buy":
                steps += self.buy_steps(CHANNELS[i % 3], self.draw_items(data, valid=True))
            elif kind == "refund":
                steps.append(lambda i=i: self.refund_step(
                    *self._burst_refund(pick(self.m.orders, i))))
            elif kind == "release":
                steps.append(lambda i=i: self.release_step(i))
            elif kind == "block":
                t = pick(self.codes, i)
                steps.append(Step(cmd.block(t, bool(i % 2)), lambda t=t, b=bool(i % 2): self.m.block(t, b)))
            else:
                t = pick(self.codes, i)
                zone = pick(PRODUCTS[self.m.tickets[t]["product"]]["zones"], i)
                gates = (self.ENTRY_GATES if kind == "enter" else self.EXIT_GATES)[zone]
                direction = Direction.IN if kind == "enter" else Direction.OUT
                steps.append(self.scan_step(t, gates[i % len(gates)], direction,
                                            self.scan_time(t, zone, "in"), 0))
        return steps

    def release_step(self, i) -> Step:
        live = self.live_holds()
        hid = pick(live, i) if live else self.m.next_hold
        channel = self.m.holds[hid]["channel"] if hid in self.m.holds else "web"
        return Step(cmd.release(hid, channel), lambda: self.m.release(hid, channel))

    # -- durability -------------------------------------------------------------------------
    @rule(how=st.sampled_from(["snapshot", "reopen", "reopen", "reopen without snapshot"]))
    def durability(self, how):
        """A snapshot (then more commands), or close and open again: from the snapshot,
        or with close(snapshot=False) so the journal is replayed."""
        if how == "snapshot":
            self.shard.snapshot()
            assert self.shard.check(replay=True) == []
            return
        self.shard.close(snapshot=how == "reopen")
        self.shard = self.open()
        event(how)
        assert self.shard.check(replay=True) == []
        for (channel, order_id), order in self.m.orders.items():
            assert self.shard.order_codes(order_id, channel) == [self.codes[t] for t in order["tickets"]]

    # -- agreement, after every step ------------------------------------------------------
    @invariant()
    def agrees(self):
        m, shard = self.m, self.shard
        # stock, per slot and per allotment, seen by each channel
        rows = {r.slot: r for r in shard.availability(PARK, D0, D0 + 1)}
        assert set(rows) == set(SLOTS)
        for sid, s in m.slots.items():
            r = rows[sid]
            assert (r.capacity, r.sold, r.held, r.pool_remaining) == \
                (s["capacity"], s["sold"], s["held"], m.pool_free(sid)), f"slot {sid}: {r} vs {s}"
            want = {ch: {"capacity": a["capacity"], "sold": a["sold"], "held": a["held"],
                         "remaining": m.allot_free((x, ch))}
                    for (x, ch), a in m.allots.items() if x == sid}
            got = {ch: {k: v for k, v in vars(a).items() if k != "slot"}
                   for ch, a in r.allotments.items()}
            assert got == want, f"allotments of {sid}"
            assert r.sold + r.held <= r.capacity, f"oversold {sid}"
        for ch in CHANNELS:
            for r in shard.availability(PARK, D0, D0 + 1, channel=ch):
                key = (r.slot, ch)
                assert r.remaining == (m.allot_free(key) if key in m.allots
                                       else m.pool_free(r.slot)), f"{key} remaining"
        # holds: the live ones, and no others
        for hid in range(1, m.next_hold + 2):
            h, mh = shard.hold(hid), m.holds.get(hid)
            if mh is None:
                assert h is None, f"hold {hid} should be gone: {h}"
                continue
            assert h is not None, f"hold {hid} missing"
            assert (h["channel"], h["expires_at"], h["amount"]) == \
                (mh["channel"], mh["expires_at"], mh["amount"])
            assert [(ln["qty"], ln["group"]) for ln in h["lines"]] == \
                [(ln["qty"], ln["group"]) for ln in mh["lines"]]
        # orders
        for (channel, order_id), o in m.orders.items():
            got = shard.get_order(order_id, channel)
            assert got.ticket_ids() == o["tickets"]
            assert (got.channel, got.hold_id, got.amount_fen, got.refunded_fen) == \
                (o["channel"], o["hold_id"], o["amount"], o["refunded"])
            assert [(r["refund_id"], r["tickets"], r["amount_fen"], r["fee_fen"])
                    for r in got.refunds] == [tuple(r) for r in o["refunds"]]
        # every ticket's record (the whole scan state)
        fields = ("first_day", "last_day", "visit_day", "persons_in", "visit_admitted",
                  "entries", "day_entries", "state")
        for t, tk in m.tickets.items():
            got = shard.ticket(t)
            assert got.product == tk["product"]
            assert [{f: c[f] for f in fields} | {"group": c["group"]} for c in got.components] \
                == [{**c, "group": tk["group"]} for c in tk["comps"]], f"ticket {t}"
        # live head counts
        today = (self.clock[0] + OFFSET) // DAY          # both venues are UTC+8
        for z in ZONES:
            assert shard.inside(z) == (m.inside[z] if m.zone_day[z] == today else 0), f"inside {z}"
        assert shard.check() == []


ShardMachine.TestCase.settings = settings(
    max_examples=80, stateful_step_count=50, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                           HealthCheck.data_too_large])
TestShardStateMachine = ShardMachine.TestCase


# -- engine bugs this machine's author found (fixed; kept as regression tests) ------------
def _small_shard(path, now, *, live_capacity=0):
    """One zone, one gate, a day ticket, a slot per day on D0 and D0+1 (08:00-23:59)."""
    s = Shard.open(str(path), clock=lambda: now[0], map_size=64 << 20)
    s.run_many([cmd.venue("v", utc_offset_s=OFFSET), cmd.zone("v", "park", live_capacity=live_capacity),
                cmd.gate("park", "g"), cmd.product("v", "day", ["park"]),
                cmd.slots([{"id": f"s{d}", "zone": "park", "day": d, "start": local(d, 8),
                            "end": local(d, 23, 59), "capacity": 10} for d in (D0, D0 + 1)])])
    return s


def _sell(s, slot, qty, order):
    h = s.run(cmd.hold("web", "v", [HoldItem("day", (slot,), qty)]))
    res = s.run(cmd.confirm(h.hold_id, order, "web", method="cash", amount_fen=h.amount_fen))
    return [t.code for t in res.tickets]


def test_verify_batch_of_a_large_group_does_not_stop_the_shard(tmp_path):
    now = [local(D0, 9)]
    s = _small_shard(tmp_path, now)
    code, = _sell(s, f"s{D0}", 1, "o1")
    got = s.run(cmd.verify_batch([code], "g", Direction.IN, persons=40000))
    assert got[0].reason == Reason.OK
    s.run(cmd.expire())                       # the shard still takes commands
    s.close(snapshot=False)


def test_gate_id_of_the_wrong_type_is_refused(tmp_path):
    now = [local(D0, 9)]
    s = _small_shard(tmp_path, now)
    with pytest.raises(InvalidArgument):
        s.run(cmd.verify("AAAA", ["g"], Direction.IN))
    s.run(cmd.expire())                       # the shard still takes commands
    s.close(snapshot=False)


def test_head_count_forgets_persons_of_past_days(tmp_path):
    now = [local(D0, 9)]
    s = _small_shard(tmp_path, now, live_capacity=2)
    a, b = _sell(s, f"s{D0}", 2, "o1")
    assert s.run(cmd.verify(a, "g", Direction.IN, at=local(D0, 10))).reason == Reason.OK
    assert s.run(cmd.verify(b, "g", Direction.IN, at=local(D0, 23, 30))).reason == Reason.OK
    # a leaves without an exit scan; b scans out at 00:30: OK, 0 persons let out
    assert s.run(cmd.verify(b, "g", Direction.OUT, at=local(D0 + 1, 0, 30))).persons == 0
    now[0] = local(D0 + 1, 9)
    c, = _sell(s, f"s{D0 + 1}", 1, "o2")
    assert s.run(cmd.verify(c, "g", Direction.IN)).reason == Reason.OK     # now: ZONE_FULL
    assert s.inside("park") == 1
    s.close(snapshot=False)
