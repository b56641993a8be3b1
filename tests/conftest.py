"""Shared fixtures: a real shard on a real LMDB dir in a temp folder, with a clock
the test moves by hand (DESIGN.md 10: real parts, no mocks)."""
from __future__ import annotations

import datetime as dt
import os

import pytest

from turnstile.engine import GateMode, HoldItem, Shard, cmd, demo

TODAY = dt.date(2026, 11, 23)

# One master key for the session (engine/keyring.py), in the environment as an embedding
# application may give it: every Shard.open of the engine tests uses it, and CLI
# subprocesses inherit it. The server harness and the crash tests pass it as users do
# (a key file); the tests of the master key itself take it out of their environment.
# (kept under a name of its own too, so that a subprocess that imports this module -- a
# writer beside a backup -- uses the same key, not a new one)
MASTER_KEY = os.environ.setdefault("TURNSTILE_TEST_MASTER_KEY", os.urandom(32).hex())
os.environ["TURNSTILE_MASTER_KEY"] = MASTER_KEY
os.environ.pop("TURNSTILE_MASTER_KEY_FILE", None)


class Clock:
    """A settable clock (UTC seconds) for Shard.open(clock=...)."""

    def __init__(self, t: int):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def at(self, day: dt.date, hour: int, minute: int = 0) -> int:
        self.t = demo.local_time(day, hour, minute)
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock(demo.local_time(TODAY, 8, 30))


@pytest.fixture
def shard_path(tmp_path):
    return str(tmp_path / "shard-0")


@pytest.fixture
def shard(shard_path, clock):
    """The demo venue, seeded for a week from TODAY; 08:30 venue time."""
    s = Shard.open(shard_path, clock=clock)
    s.run_many(demo.commands(TODAY))
    yield s
    if not s.closed:
        s.close(snapshot=False)


def sell(shard: Shard, product: str = "adult", slots: tuple[str, ...] | None = None, *,
         qty: int = 1, group: int = 1, channel: str = "web", order: str | None = None,
         holders=None):
    """Hold and confirm; returns the ConfirmResult."""
    slots = slots or (demo.slot_id("main", TODAY, 8),)
    h = shard.run(cmd.hold(channel, demo.VENUE, [HoldItem(product, slots, qty, group)]))
    order = order or f"order-{h.hold_id}"
    return shard.run(cmd.confirm(h.hold_id, order, channel, method="cash",
                                 amount_fen=h.amount_fen, holders=holders))


def add_hills(shard: Shard, day: dt.date) -> None:
    """A second venue, with no sales: a zone, two gates, a product, two slots on `day`
    (one with a changed capacity) and an OTA allotment."""
    start = demo.local_time(day, 9)
    shard.run_many([
        cmd.venue("hills", "Fragrant Hills", 8 * 3600),
        cmd.zone("hills", "summit", "Summit", live_capacity=500, enforce_exit=True),
        cmd.gate("summit", "summit-in", GateMode.IN),
        cmd.gate("summit", "summit-out", GateMode.OUT),
        cmd.product("hills", "hike", ["summit"], price_fen=3000, channel_prices={"ota": 2800},
                    channels=["ota", "admin"]),
        cmd.slots([{"id": f"summit-{h}", "zone": "summit", "day": day,
                    "start": start + h * 3600, "end": start + (h + 2) * 3600, "capacity": 100}
                   for h in (0, 2)]),
        cmd.allotment("summit-0", "ota", 20),
        cmd.slot_capacity("summit-0", 150),
    ])


def tree(path: str) -> dict[str, bytes]:
    """Every file below `path` and its bytes: what a refused command must leave as it was."""
    out = {}
    for root, _, files in os.walk(path):
        for f in files:
            p = os.path.join(root, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, path)] = fh.read()
    return out
