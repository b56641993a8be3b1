"""An offline gate decides as the server would (DESIGN.md 6): the same scans, in the
same order, given to a real shard and to a GateClient that holds the shard's bundle
and cannot reach any server, get the same reasons.

Entries an operator closed are in the bundle and compared too. Outside this comparison, by
design (README.md, offline gates): live capacity, the rest
of a group arriving later, per-day limits above one and N-visit counts made offline."""
from __future__ import annotations

import datetime as dt

from hypothesis import given, settings, HealthCheck, strategies as st

from turnstile.clients.gate import GateClient, IN, OUT
from turnstile.clients.gate import _Bundle
from turnstile.engine import Shard, cmd, demo, Direction, HoldItem
from turnstile.engine.model import GateMode
from turnstile.server.services import bundle_message
from tests.conftest import Clock, TODAY

# (gate, direction) pairs of the demo venue
# pier-2 (made below) scans both ways at the boat, a merchant's consumption point: a rider
# who got off is not let on again, whatever the combo's re-entry rule
MOVES = [("north-1", IN), ("east", IN), ("east", OUT), ("south-exit", OUT),
         ("pagoda-1", IN), ("pagoda-1", OUT), ("pier-1", IN), ("pier-2", IN), ("pier-2", OUT)]
SLOT = demo.slot_id("main", TODAY, 8)


def sell(shard: Shard, product: str, slots: tuple[str, ...], n: int, channel: str = "web") -> list[str]:
    h = shard.run(cmd.hold(channel, demo.VENUE, [HoldItem(product, slots, n)]))
    r = shard.run(cmd.confirm(h.hold_id, f"o-{h.hold_id}", channel, method="cash", amount_fen=h.amount_fen))
    return [t.code for t in r.tickets]


def forge(code: str) -> str:
    i = len(code) // 3
    return code[:i] + ("A" if code[i] != "A" else "B") + code[i + 1:]


scans = st.lists(st.tuples(st.integers(0, 6),                  # which code
                           st.integers(0, len(MOVES) - 1),     # gate and direction
                           st.sampled_from([0, 1, 5, 30, 90, 240, 60 * 24])),   # minutes later
                 min_size=1, max_size=40)


# entries an operator closed before the bundle was cut (AdminService.SetEntryClosed)
closings = st.sets(st.sampled_from([("zone", "main"), ("zone", "pagoda"), ("gate", "east"),
                                    ("gate", "pier-1"), ("gate", "north-1")]), max_size=2)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=scans, start_hour=st.integers(6, 17), closed=closings)
def test_offline_gate_decides_as_the_server(tmp_path_factory, steps, start_hour, closed):
    tmp = tmp_path_factory.mktemp("rules")
    clock = Clock(demo.local_time(TODAY, 8, 0))
    shard = Shard.open(str(tmp / "shard-0"), clock=clock)
    try:
        shard.run_many(demo.commands(TODAY - dt.timedelta(days=1), 4))
        shard.run(cmd.gate("boat", "pier-2", GateMode.BOTH))
        codes = sell(shard, "adult", (SLOT,), 2)
        codes += sell(shard, "group", (SLOT,), 1, "window")
        codes += sell(shard, "combo", (SLOT, demo.slot_id("pagoda", TODAY, 10),
                                       demo.slot_id("boat", TODAY, 11)), 1)
        codes += sell(shard, "punch10", (SLOT,), 1)
        codes += sell(shard, "adult", (demo.slot_id("main", TODAY + dt.timedelta(days=1), 8),), 1)
        codes.append(forge(codes[0]))
        for kind, id_ in closed:
            shard.run(cmd.close_entry(demo.VENUE, **{kind: id_}))
        # a gate that has the bundle and no server
        clock.at(TODAY, start_hour)
        gate = GateClient("127.0.0.1:9", "tsk_none", "north-1", demo.VENUE,
                          state_dir=str(tmp / "gate"), clock=clock, max_bundle_age_s=1e9,
                          retry_online_s=float("inf"))
        gate.bundle = _Bundle(bundle_message(shard.offline_bundle(demo.VENUE)))
        gate.online = False
        try:
            for which, move, minutes in steps:
                clock.t += minutes * 60
                gate_id, direction = MOVES[move]
                server = shard.run(cmd.verify(codes[which], gate_id, Direction(direction), at=clock.t))
                offline = gate.verify(codes[which], gate_id=gate_id, direction=direction)
                assert offline.offline
                assert offline.reason == server.reason.name, (which, gate_id, direction, clock.t)
                assert offline.persons == server.persons
        finally:
            gate.close()
    finally:
        shard.close(snapshot=False)
