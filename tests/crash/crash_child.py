"""Load for the crash test, run as a child process that the test SIGKILLs.

Mixed durable load on a real shard through group commit: holds on one hot slot,
confirms of some of them, and entry scans of pre-sold codes. Every operation is
printed to stdout only AFTER the shard acknowledged it (i.e. after its batch
committed); the parent checks each printed line against the shard after the kill.

    python -m tests.crash.crash_child DATA_DIR CODES_FILE HOT_SLOT SCAN_AT SEED
"""
from __future__ import annotations

import asyncio
import random
import sys

from turnstile.engine import Shard, cmd, HoldItem, SoldOut, TurnstileError, demo


async def main(path: str, codes_file: str, hot_slot: str, scan_at: int, seed: int) -> None:
    rng = random.Random(seed)
    codes = open(codes_file).read().split()
    shard = Shard.open(path)
    out = sys.stdout

    def ack(line: str) -> None:
        out.write(line + "\n")
        out.flush()

    async with shard.writer() as w:
        ack("READY")

        async def holder(k: int) -> None:
            n = 0
            while True:
                n += 1
                qty = rng.randint(1, 4)
                key = f"s{seed}-w{k}-{n}"
                try:
                    h = await w.submit(cmd.hold("web", demo.VENUE, [HoldItem("adult", (hot_slot,), qty)],
                                                ttl_s=86400, idempotency_key=key))
                except SoldOut:
                    await asyncio.sleep(0.01)
                    continue
                ack(f"H {h.hold_id} {qty}")
                if rng.random() < 0.5:
                    order = f"o-{key}"
                    r = await w.submit(cmd.confirm(h.hold_id, order, "web", method="cash",
                                                   amount_fen=h.amount_fen))
                    ack(f"C {order} {h.hold_id} " + ",".join(str(t.ticket_id) for t in r.tickets))

        async def scanner(k: int) -> None:
            while True:
                code = rng.choice(codes)
                r = await w.submit(cmd.verify(code, rng.choice(["north-1", "north-2", "east"]), at=scan_at))
                ack(f"S {r.ticket} {r.reason.name}")

        tasks = [asyncio.create_task(holder(k)) for k in range(8)]
        tasks += [asyncio.create_task(scanner(k)) for k in range(8)]
        await asyncio.gather(*tasks)


if __name__ == "__main__":
    p, c, s, at, seed = sys.argv[1:6]
    try:
        asyncio.run(main(p, c, s, int(at), int(seed)))
    except TurnstileError as e:
        print(f"ERROR {e.code} {e}", flush=True)
        raise
