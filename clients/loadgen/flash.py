"""The flash sale: SalesService.Hold of one ticket on ONE slot from many callers at once,
more asks than stock (or SalesService.Buy: each ask an order, held and paid in one call).
Exactly the free stock is granted, every other ask is SOLD_OUT, sold + held never exceeds
the capacity (InventoryService polled while the sale runs), in the shard's own order (its
audit log) no ask was refused before the slot was full, and asks sent again with the same
idempotency key (order id) take no stock.
"""
from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import random
import time
from collections import Counter
from typing import Any

import grpc
from turnstile.v1 import inventory_pb2, inventory_pb2_grpc, sales_pb2, sales_pb2_grpc

from ..base import Connection, auth_metadata
from .checks import Checks
from .load import UNKNOWN_OUTCOME, Pacer, Run, error_reason, ready, run_id, run_loop
from .results import QUIET, Progress, Result, latency_us
from .target import CALL_TIMEOUT, MAX_COUNT, LoadgenError, Target, bound
from .venue import Venue

HOLD = "/turnstile.v1.SalesService/Hold"       # as the audit log names the method
BUY = "/turnstile.v1.SalesService/Buy"


def _hold_request(venue: str, run: str, k: int, product: str, slot: str, ttl_s: int):
    return sales_pb2.HoldRequest(venue_id=venue, idempotency_key=f"lg-{run}-flash-{k}", ttl_s=ttl_s,
                                 items=[sales_pb2.Item(product_id=product, slot_ids=[slot], qty=1)])


def _buy_request(venue: str, run: str, k: int, product: str, slot: str, price: int):
    return sales_pb2.BuyRequest(venue_id=venue, order_id=f"lg-{run}-order-{k}",
                                items=[sales_pb2.Item(product_id=product, slot_ids=[slot], qty=1)],
                                payment=sales_pb2.Payment(method="channel", reference=f"lg-{run}-{k}",
                                                          amount_fen=price))


def _prices(address: str, keys: list[str], venue: str, product: str, slot: str) -> list[int]:
    """What one ticket costs each channel now (SalesService.Quote with its key)."""
    out = []
    for key in keys:
        with Connection(address, key) as conn:
            r = conn.call(sales_pb2_grpc.SalesServiceStub, "Quote", sales_pb2.QuoteRequest(
                venue_id=venue, items=[sales_pb2.Item(product_id=product, slot_ids=[slot], qty=1)]),
                venue=venue, retry=True)
        out.append(r.amount_fen)
    return out


async def _ask(stub, req, meta):
    """One ask: the hold id granted (for a Buy, the hold its order confirmed)."""
    if isinstance(req, sales_pb2.BuyRequest):
        return (await stub.Buy(req, metadata=meta, timeout=CALL_TIMEOUT)).order.hold_id
    return (await stub.Hold(req, metadata=meta, timeout=CALL_TIMEOUT)).hold_id


async def _flash(conn: Connection, address: str, keys: list[str], poll_key: str, reqs: list,
                 inflight: int, venue: str, date: str, zone: str, slot: str, deadline_s: float,
                 rate: float | None, progress: Progress) -> Run:
    lat: list[float] = []
    out: list[tuple[int, Any, float]] = []
    errors: Counter = Counter()
    cut = False
    metas = [auth_metadata(k) for k in keys]       # the asks spread over the channels
    poll_meta = auth_metadata(poll_key)
    work = [reqs[k::inflight] for k in range(inflight)]
    peak = {"max_used": 0, "polls": 0}
    done = asyncio.Event()
    pacer = Pacer(rate)
    adv = progress.advance if progress is not QUIET else None
    async with conn.aio_channel(address=address) as ch:
        sales = sales_pb2_grpc.SalesServiceStub(ch)
        inv = inventory_pb2_grpc.InventoryServiceStub(ch)
        await ready(ch, address)
        stop = time.perf_counter() + deadline_s

        async def poll():       # sold + held seen during the sale: never above capacity
            req = inventory_pb2.AvailabilityRequest(venue_id=venue, date_from=date, zone_id=zone)
            while not done.is_set():
                try:
                    r = await inv.Availability(req, metadata=poll_meta, timeout=CALL_TIMEOUT)
                    for s in r.slots:
                        if s.slot_id == slot:
                            peak["max_used"] = max(peak["max_used"], s.sold + s.held)
                    peak["polls"] += 1
                except grpc.aio.AioRpcError as e:
                    errors[f"Availability {e.code().name}"] += 1
                try:
                    await asyncio.wait_for(done.wait(), 0.1)
                except TimeoutError:
                    pass

        async def worker(items):
            nonlocal cut
            clock = time.perf_counter
            for k, c, req in items:
                t0 = await pacer.due()
                try:
                    res: Any = await _ask(sales, req, metas[c])
                except grpc.aio.AioRpcError as e:
                    if e.code() in UNKNOWN_OUTCOME:      # may or may not have been applied
                        errors[e.code().name] += 1
                        res = None
                    else:
                        res = error_reason(e)
                t1 = clock()
                lat.append(t1 - t0)
                out.append((k, res, t1))
                if adv:
                    adv(1)
                if t1 > stop:
                    cut = True
                    return

        poller = asyncio.ensure_future(poll())
        t = time.perf_counter()
        pacer.start()
        try:
            await asyncio.gather(*(worker(w) for w in work))
        finally:
            elapsed = time.perf_counter() - t
            done.set()
            await poller
    return Run(lat, out, elapsed, cut, errors, t, {"peak": peak})


async def _again(conn: Connection, address: str, keys: list[str], sample: list
                 ) -> list[tuple[int, Any]]:
    """The same requests again, same idempotency keys: the first answers come back."""
    async with conn.aio_channel(address=address) as ch:
        sales = sales_pb2_grpc.SalesServiceStub(ch)
        out = []
        for k, c, req in sample:
            try:
                out.append((k, await _ask(sales, req, auth_metadata(keys[c]))))
            except grpc.aio.AioRpcError as e:
                out.append((k, error_reason(e)))
    return out


async def _release(conn: Connection, address: str, keys: list[str], holds: list[tuple[int, int]],
                   run: str, inflight: int) -> Counter:
    """Release holds (hold id, key index) with `inflight` calls at once."""
    done: Counter = Counter()
    async with conn.aio_channel(address=address) as ch:
        release = sales_pb2_grpc.SalesServiceStub(ch).Release

        async def worker(part):
            for hid, c in part:
                try:
                    await release(sales_pb2.ReleaseRequest(hold_id=hid, idempotency_key=f"lg-{run}-rel-{hid}"),
                                  metadata=auth_metadata(keys[c]), timeout=CALL_TIMEOUT)
                    done["released"] += 1
                except grpc.aio.AioRpcError as e:
                    done[error_reason(e)] += 1
        await asyncio.gather(*(worker(holds[k::inflight]) for k in range(inflight)))
    return done


def flash_sale(target: Target, *, capacity: int = 1000, count: int | None = None,
               inflight: int = 64, duration_s: float = 60, slot: str | None = None,
               product: str | None = None, zone: str | None = None, date: _dt.date | None = None,
               ttl_s: int = 3600, retries: int = 200, release: bool = False,
               rate: float | None = None, loop: str = "asyncio", seed: int = 11, around=None,
               progress: Progress | None = None, buy: bool = False) -> Result:
    """A flash sale on one slot: `count` asks (default 1.2 × the free stock) of
    SalesService.Hold qty 1, `inflight` at once, spread over the sales keys (channels).
    `buy`: each ask is an order instead, SalesService.Buy of one ticket paid what the
    channel's Quote said before the sale (checked too: nothing stays held).

    slot: an existing slot without allotments (its free stock is what may be granted);
    by default a new whole-day slot of `capacity` is created in the product's zone
    (AdminService.CreateSlots, admin key). Checks: exactly the free stock granted (all
    of it, if every ask was answered), every refusal SOLD_OUT, hold ids unique,
    Availability sold + held == capacity after and never above it while the sale ran
    (polled), in the shard's own order (audit log, admin key) no refusal before the slot
    was full, `retries` granted asks sent again with the same idempotency keys return
    the first hold and take no stock. `release`: give every granted hold back at the
    end (checked: the stock returns); else holds expire after `ttl_s`."""
    progress = progress or QUIET
    keys = target.keys
    sellers = list(keys.sales) or [keys.need("sales")]
    with Venue(target) as v:
        run = run_id()
        p = v.product(product, zone)
        zone = p.zone_ids[0]
        date = date or v.today()
        poll_key = keys.admin or sellers[0]
        if slot is None:
            if not keys.admin:
                raise LoadgenError("the flash sale creates its slot with an admin key; without "
                                   "one, name an existing slot (--slot) and its --date")
            if not 1 <= capacity <= MAX_COUNT:
                raise LoadgenError(f"capacity must be between 1 and {MAX_COUNT:,}")
            slot = f"lg-flash-{run}"
            v.create_slot(slot, zone, date, capacity)
        before = v.slot(slot, date, zone, poll_key)
        if before["allotments"]:
            raise LoadgenError(f"slot {slot} has channel allotments; the flash sale needs a "
                               f"slot that is one shared pool")
        free = before["capacity"] - before["sold"] - before["held"]
        asks = int(free * 1.2) + 1 if count is None else count
        bound(asks, duration_s)
        if buy and release:
            raise LoadgenError("a sale by Buy leaves nothing held to release")
        rng = random.Random(seed)
        reqs = []
        prices = _prices(v.address, sellers, v.venue, p.product_id, slot) if buy else []
        for k in range(asks):
            c = rng.randrange(len(sellers))
            reqs.append((k, c, _buy_request(v.venue, run, k, p.product_id, slot, prices[c]) if buy
                         else _hold_request(v.venue, run, k, p.product_id, slot, ttl_s)))
        audit0 = v.audit_end()
        progress.phase("flash-sale", asks)
        with around if around is not None else contextlib.nullcontext():
            r = run_loop(lambda: _flash(v.conn, v.address, sellers, poll_key, reqs, max(1, inflight), v.venue,
                                        date.isoformat(), zone, slot, duration_s, rate, progress),
                         loop, duration_s + CALL_TIMEOUT + 30)
        progress.close()
        out = r.out
        granted = [(k, res, t) for k, res, t in out if isinstance(res, int)]
        refused = Counter(res for _, res, _ in out if isinstance(res, str))
        unknown = sum(1 for _, res, _ in out if res is None)
        after = v.slot(slot, date, zone, poll_key)
        sold_out_at = max((t for _, _, t in granted), default=r.t0) - r.t0
        checks, notes = Checks(), []
        all_answered = len(out) == asks and not r.cut and not unknown
        if all_answered and asks >= free:
            checks("flash sale: exactly the capacity granted", len(granted) == free,
                   f"granted {len(granted)}, capacity {before['capacity']}, sold+held before "
                   f"{before['sold'] + before['held']}")
        else:
            checks("flash sale: no more than the capacity granted", len(granted) <= free,
                   f"granted {len(granted)} of {free} free ({len(out)} of {asks} asks answered)")
        checks("flash sale: every refusal is SOLD_OUT", set(refused) <= {"SOLD_OUT"}, dict(refused))
        checks("flash sale: hold ids unique", len({res for _, res, _ in granted}) == len(granted))
        used_after = after["sold"] + after["held"]
        if all_answered and asks >= free:
            checks("flash sale: Availability sold + held == capacity after the sale",
                   used_after == after["capacity"] == before["capacity"], after)
        else:
            checks("flash sale: Availability sold + held <= capacity after the sale",
                   used_after <= after["capacity"] and 0 <= used_after - before["sold"]
                   - before["held"] - len(granted) <= unknown, after)
        checks("flash sale: Availability sold + held never above capacity while it ran",
               r.extra["peak"]["max_used"] <= before["capacity"], r.extra["peak"])
        if buy:
            checks("flash sale by Buy: every order sold, none left held",
                   after["held"] == before["held"]
                   and 0 <= after["sold"] - before["sold"] - len(granted) <= unknown, after)
        if audit0 is not None:
            # in the order the shard applied them (its audit log): every hold granted until
            # the slot was full, every one refused after, none refused before
            applied = v.audited(audit0, v.principals(sellers), BUY if buy else HOLD)
            first_refusal = next((i for i, res in enumerate(applied) if res != "OK"), len(applied))
            checks("flash sale: in the shard's order (audit log) SOLD_OUT only once the slot was full",
                   len(out) - unknown <= len(applied) <= len(out) and first_refusal == len(granted)
                   and all(res == "SOLD_OUT" for res in applied[first_refusal:]),
                   f"{len(applied)} audited, first refusal at {first_refusal}, granted {len(granted)}")
        else:
            notes.append("no admin (or auditor) key: the audit-order check skipped")
        again: list = []
        if retries and granted:
            first = {k: res for k, res, _ in granted[:retries]}
            by_k = {k: (k, c, req) for k, c, req in reqs if k in first}
            sample = [by_k[k] for k in first]
            again = run_loop(lambda: _again(v.conn, v.address, sellers, sample), loop,
                             CALL_TIMEOUT * 4 + 30)
            after2 = v.slot(slot, date, zone, poll_key)
            checks("flash sale: retried holds (same idempotency key) return the first hold, take no stock",
                   all(first[k] == hid for k, hid in again) and after2 == after,
                   f"{sum(first[k] != h for k, h in again)} differ; {after2}")
        counts = {"asks": asks, "granted": len(granted), "refused": dict(refused), "unknown": unknown,
                  "free_before": free,
                  "capacity": before["capacity"], "sold_plus_held_after": used_after}
        if release and granted:
            key_of = {k: c for k, c, _ in reqs}
            rel = run_loop(lambda: _release(v.conn, v.address, sellers,
                                            [(hid, key_of[k]) for k, hid, _ in granted], run,
                                            max(1, min(inflight, 64))),
                           loop, duration_s + CALL_TIMEOUT + 30)
            final = v.slot(slot, date, zone, poll_key)
            checks("flash sale: released holds return their stock",
                   rel.get("released", 0) == len(granted) and final["held"] == after["held"] - len(granted)
                   and final["sold"] == after["sold"], f"{dict(rel)}; {final}")
            counts["released"] = rel.get("released", 0)
        res = Result("flash-sale-buy" if buy else "flash-sale", ops=len(out), calls=len(out), planned=asks, elapsed_s=r.elapsed,
                     latency_us=latency_us(r.lat), checks=checks, cut=r.cut, errors=dict(r.errors),
                     counts=counts, notes=notes,
                     extra={"slot": slot, "product": p.product_id, "date": date.isoformat(),
                            "channels": len(sellers), "inflight": inflight, "loop": loop,
                            "availability_before": before, "availability_after": after,
                            "availability_polls": r.extra["peak"]["polls"],
                            "max_sold_plus_held_seen": r.extra["peak"]["max_used"],
                            "granted_per_s": len(granted) / sold_out_at if sold_out_at > 0 else float("nan"),
                            "sold_out_after_s": sold_out_at, "retried": len(again)})
        res.answers = [(k, res_, t) for k, res_, t in out]
        return res
