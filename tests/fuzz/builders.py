"""A valid request per rpc, built from the world (catalog, stock, real holds, orders and
codes). The fuzz starts from these and mutates them.

To cover a new rpc, add one line to BUILDERS: "Service.Method": Spec(principal, build,
readonly). `build(w, rng, cls)` returns a request of class `cls` (use `new`, which sets
only fields the message has, and fills an empty top-level venue_id with the demo venue,
so a field added to a request later does not break the table)."""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

from turnstile import ticketcode
from turnstile.v1 import admin_pb2, common_pb2, gate_pb2, member_pb2, report_pb2, sales_pb2

from .protos import is_map
from .world import HOLDER, VENUE, World, local


@dataclass(frozen=True)
class Spec:
    principal: str                                   # whose key calls it (World.keys)
    build: Callable[[World, random.Random, type], object]
    readonly: bool = False                           # never changes business state, even when OK
    after_ok: Callable[[World, bytes], None] | None = None   # undo what an accepted call left


def _release_held(w: World, response: bytes) -> None:
    w.release(sales_pb2.HoldResponse.FromString(response).hold_id)


def new(cls, **fields):
    """A `cls` request with the fields it has (others skipped: a builder written for a newer
    or older proto still builds), and the demo venue in an unset top-level venue_id."""
    msg = cls()
    names = cls.DESCRIPTOR.fields_by_name
    for k, v in fields.items():
        f = names.get(k)
        if f is None:
            continue
        if is_map(f):
            getattr(msg, k).update(v)
        elif f.is_repeated:
            getattr(msg, k).extend(v)
        elif f.message_type is not None:
            getattr(msg, k).CopyFrom(v)
        else:
            setattr(msg, k, v)
    if "venue_id" in names and not names["venue_id"].is_repeated and not msg.venue_id:
        msg.venue_id = VENUE
    return msg


def _code(w: World, rng) -> str:
    return rng.choice(w.ota_tickets)[1]


def _item(w: World) -> sales_pb2.Item:
    return sales_pb2.Item(product_id="adult", slot_ids=[w.slot["main"]], qty=1)


def _retirable_key(w: World) -> int:
    """A key id that issued no code the world relies on: the first time, rotate twice and
    retire the middle key (the demo's key stays); after, rotate once and retire the key
    issuing until then. The number of keys stays the same however long the run."""
    def rotate() -> int:
        return w.admin.RotateTicketKey(admin_pb2.RotateTicketKeyRequest(shard=0),
                                       metadata=w.meta("admin"), timeout=20).key_id

    def make():
        prev = w.issuing_key if w.issuing_key is not None else rotate()
        w.issuing_key = rotate()
        return prev
    return w.cached("keyid:retire", make)


def _revocable_key(w: World) -> str:
    return w.cached("key:revoke", lambda: w.admin.CreateApiKey(
        admin_pb2.CreateApiKeyRequest(principal_id="fuzz-throwaway"), metadata=w.meta("admin"),
        timeout=20).key_id)


def _enrolled_face(w: World) -> str:
    def make():
        token = w.uid("fzface")
        w.member.EnrollFace(new(member_pb2.EnrollFaceRequest,
                                face_token=token, id_number=HOLDER, idempotency_key=w.uid("fz-idem")),
                            metadata=w.meta("demo-window"), timeout=20)
        return token
    return w.cached("face:remove", make)


def _id_number(w: World) -> str:
    """A new ID number nobody holds tickets under (letters and digits)."""
    w.counter += 1
    return f"FZ{w.seed % 100_000:05d}{w.counter:08d}"


def _blacklisted(w: World) -> str:
    def make():
        idn = _id_number(w)
        w.admin.Blacklist(admin_pb2.BlacklistRequest(venue_id=VENUE, id_number=idn, reason="fuzz"),
                          metadata=w.meta("fuzz-op"), timeout=20)
        return idn
    return w.cached("blacklist:remove", make)


# the product the pricing setters change ("group": no builder sells it); a mutated call
# may name another product: whatever an accepted call set is put back to the defaults
PRICED = "group"


def _unprice(w: World, response: bytes, cls, clear: Callable[[str], object]) -> None:
    req = clear(cls.FromString(response).product_id)
    method = type(req).__name__.removesuffix("Request")
    getattr(w.admin, method)(req, metadata=w.meta("admin"), timeout=20)
    w.touched()


def _reset(kind: str):
    def clear(product: str):
        return {"prices": admin_pb2.SetPricesRequest(venue_id=VENUE, product_id=product),
                "rules": admin_pb2.SetPriceRulesRequest(venue_id=VENUE, product_id=product),
                "booking": admin_pb2.SetBookingWindowRequest(venue_id=VENUE, product_id=product),
                "limits": admin_pb2.SetIdLimitsRequest(venue_id=VENUE, product_id=product),
                "refunds": admin_pb2.SetRefundPolicyRequest(venue_id=VENUE, product_id=product),
                "passes": admin_pb2.SetPassDatesRequest(venue_id=VENUE, product_id=product),
                "package": admin_pb2.SetPackageRequest(venue_id=VENUE, product_id=product),
                "split": admin_pb2.SetRevenueSplitRequest(venue_id=VENUE, product_id=product)}[kind]
    cls = {"prices": admin_pb2.PriceTable, "rules": admin_pb2.PriceRules,
           "booking": admin_pb2.BookingWindow, "limits": admin_pb2.IdLimits,
           "refunds": admin_pb2.RefundPolicy, "passes": admin_pb2.PassDates,
           "package": admin_pb2.PackageSplit, "split": admin_pb2.RevenueSplit}[kind]
    return lambda w, response: _unprice(w, response, cls, clear)


# the demo's live capacities (engine/demo.py), which an accepted control is undone to
DEMO_CAPACITY = {"main": 30_000, "pagoda": 400, "boat": 0}


def _uncontrol(w: World, response: bytes) -> None:
    """Undo whatever an accepted live control left (a mutated call may pause the whole
    venue or close a zone): sales resumed, entries reopened, capacities and alerts back."""
    c = admin_pb2.LiveControls.FromString(response)
    meta, calls = w.meta("admin"), []
    if c.sales_paused:
        calls.append(("SetSalesPaused", admin_pb2.SetSalesPausedRequest(venue_id=c.venue_id)))
    calls += [("SetSalesPaused", admin_pb2.SetSalesPausedRequest(venue_id=c.venue_id, zone_id=z))
              for z in c.paused_zones]
    calls += [("SetSalesPaused", admin_pb2.SetSalesPausedRequest(venue_id=c.venue_id, slot_id=s))
              for s in c.paused_slots]
    calls += [("SetEntryClosed", admin_pb2.SetEntryClosedRequest(venue_id=c.venue_id, zone_id=z))
              for z in c.closed_zones]
    calls += [("SetEntryClosed", admin_pb2.SetEntryClosedRequest(venue_id=c.venue_id, gate_id=g))
              for g in c.closed_gates]
    for z in c.zones:
        if z.zone_id in DEMO_CAPACITY and z.live_capacity != DEMO_CAPACITY[z.zone_id]:
            calls.append(("SetLiveCapacity", admin_pb2.SetLiveCapacityRequest(
                venue_id=c.venue_id, zone_id=z.zone_id, live_capacity=DEMO_CAPACITY[z.zone_id])))
        if z.fill_pct or z.entries_per_minute:
            calls.append(("SetFlowAlerts", admin_pb2.SetFlowAlertsRequest(venue_id=c.venue_id,
                                                                          zone_id=z.zone_id)))
    for method, req in calls:
        getattr(w.admin, method)(req, metadata=meta, timeout=20)
    w.touched()


def _scan(w: World, rng) -> gate_pb2.OfflineScan:
    return gate_pb2.OfflineScan(nonce=w.uid("fznonce"), sequence=w.counter, code=_code(w, rng),
                                direction=common_pb2.IN, scan_time=w.ts(-60), admitted=1,
                                reason=common_pb2.OK)


def _verify(w: World, rng, cls):
    """A scan by code, or (less often) by a real-name holder's ID number or enrolled face."""
    how = rng.choice(("code", "code", "code", "id_number", "face_token"))
    cred = {"code": _code(w, rng), "id_number": HOLDER, "face_token": "fzface-setup-0001"}[how]
    return new(cls, **{how: cred}, gate_id="north-1", direction=common_pb2.IN, scan_time=w.ts(),
               scan_id=w.uid("fzscan"))


def _batch(w: World, rng, cls):
    """One gate for the batch, or one gate per code."""
    codes = [_code(w, rng), _code(w, rng)]
    gates = {"gate_id": "north-1"} if rng.random() < 0.5 else {"gate_ids": ["north-1", "north-2"]}
    return new(cls, codes=codes, **gates, direction=common_pb2.IN, scan_time=w.ts(),
               batch_id=w.uid("fzbatch"))


def _packed(w: World, rng, cls):
    """_batch's codes in their binary form, packed (GateService.VerifyPacked)."""
    raw = [ticketcode.b32decode(_code(w, rng)) for _ in range(2)]
    gates = {"gate_id": "north-1"} if rng.random() < 0.5 else {"gate_ids": ["north-1", "north-2"]}
    return new(cls, codes=b"".join(raw), code_size=len(raw[0]), **gates, direction=common_pb2.IN,
               scan_time=w.ts(), batch_id=w.uid("fzbatch"))


def _confirm(w: World, rng, cls):
    """Pays the OTA's active hold (the same one until an accepted call uses it)."""
    h = w.hold("confirm")
    return new(cls, hold_id=h.hold_id, order_id=w.uid("fz-order"), idempotency_key=w.uid("fz-idem"),
               payment=sales_pb2.Payment(method="alipay", reference="fz-pay", amount_fen=h.amount_fen))


def _buy(w: World, rng, cls):
    """One adult ticket bought by the OTA in one call, paid what a Quote says now (a new
    order id each time)."""
    price = w.sales.Quote(sales_pb2.QuoteRequest(venue_id=VENUE, items=[_item(w)]),
                          metadata=w.meta("demo-ota"), timeout=20).amount_fen
    return new(cls, items=[_item(w)], order_id=w.uid("fz-buy"),
               payment=sales_pb2.Payment(method="alipay", reference="fz-pay", amount_fen=price))


def _refund(w: World, rng, cls):
    """Refunds one ticket of an OTA order of two (the same order until one is accepted)."""
    o = w.refundable_order()
    return new(cls, order_id=o.order.order_id, refund_id=w.uid("fz-refund"),
               ticket_ids=[o.tickets[0].ticket_id], idempotency_key=w.uid("fz-idem"))


def _change(w: World, rng, cls):
    """Moves one ticket of an OTA order of two to another main slot of the same day (the
    same order until a change is accepted), paying what a preview says is due."""
    o = w.cached("order:change", lambda: w.buy("demo-ota", w.uid("fz-ota-c"), qty=2,
                                                slots=[w._next_slot()]),
                 lambda o: o.order.order_id)
    old = o.order.lines[0].slot_ids[0]
    to = next(s for s in w.main_slots if s != old and s.split("-")[1] == old.split("-")[1])
    req = new(cls, order_id=o.order.order_id, change_id=w.uid("fz-change"), ticket_ids=[o.tickets[0].ticket_id],
              slot_ids=[to], idempotency_key=w.uid("fz-idem"))
    due = w.sales.Change(new(cls, order_id=req.order_id, change_id=req.change_id, ticket_ids=req.ticket_ids,
                             slot_ids=[to], preview=True), metadata=w.meta("demo-ota"), timeout=20).due_fen
    if due > 0:
        req.payment.CopyFrom(sales_pb2.Payment(method="alipay", reference="fz-pay", amount_fen=due))
    return req


def _coupon(w: World, name: str, single_use: bool) -> str:
    """A coupon of the demo venue made once (GetCoupon reads it, IssueCouponCodes issues its codes)."""
    def make():
        cid = w.uid("FZC")
        w.admin.SetCoupon(admin_pb2.SetCouponRequest(coupon=admin_pb2.Coupon(
            venue_id=VENUE, coupon_id=cid, kind="fixed", amount_fen=100, single_use=single_use, active=True)),
            metadata=w.meta("admin"), timeout=20)
        return cid
    return w.cached(f"coupon:{name}", make, lambda c: "\0never named")


def _new_slot(w: World, prefix: str) -> str:
    """A new slot of the demo venue tomorrow evening, with no sales."""
    sid = w.uid(prefix)
    day = w.tomorrow
    w.admin.CreateSlots(admin_pb2.CreateSlotsRequest(venue_id=VENUE, slots=[admin_pb2.SlotSpec(
        slot_id=sid, zone_id="main", date=day.isoformat(), start=local(day, 19), end=local(day, 21),
        capacity=10)]), metadata=w.meta("admin"), timeout=20)
    return sid


def _free_slot(w: World) -> str:
    """A slot SetSeating may make a session (a new one once it has)."""
    return w.cached("slot:seating", lambda: _new_slot(w, "fzseat"))


def _seat_map(w: World) -> str:
    """A seat map of the demo venue, made once."""
    def make():
        w.admin.SetSeatMap(admin_pb2.SetSeatMapRequest(
            venue_id=VENUE, seat_map_id="fzhall", rows=[admin_pb2.SeatRow(section="s", row="A", layout="AAx_BB")],
            zones=[admin_pb2.SeatMapZone(zone="A", price_fen=2000), admin_pb2.SeatMapZone(zone="B", price_fen=1000)]),
            metadata=w.meta("admin"), timeout=20)
        return "fzhall"
    return w.cached("seatmap", make, lambda m: "\0never named")


def _session(w: World) -> str:
    """A session of the demo venue (a slot of the seat map), made once."""
    def make():
        sid = _new_slot(w, "fzsession")
        w.admin.SetSeating(admin_pb2.SetSeatingRequest(venue_id=VENUE, slot_id=sid, seat_map_id=_seat_map(w)),
                           metadata=w.meta("admin"), timeout=20)
        return sid
    return w.cached("session", make, lambda m: "\0never named")


def _merchant_zone(w: World) -> str:
    """A zone of the demo venue that only the fuzz merchant runs, made once (a merchant's
    zone admits each person once: never one the other builders scan in)."""
    def make():
        w.admin.CreateZone(admin_pb2.CreateZoneRequest(venue_id=VENUE, zone_id="fzfood", name="Fuzz food"),
                           metadata=w.meta("admin"), timeout=20)
        return "fzfood"
    return w.cached("zone:merchant", make, lambda m: "\0never named")


def _shift(w: World, name: str) -> str:
    """An open cash-desk shift of the demo window, at a station of its own (CloseShift
    closes it: a new one next time)."""
    def make():
        sid = w.uid("fz-shift")
        w.sales.OpenShift(sales_pb2.OpenShiftRequest(venue_id=VENUE, station_id=w.uid("fz-st"), shift_id=sid,
                                                     cashier="fuzz"), metadata=w.meta("demo-window"), timeout=20)
        return sid
    return w.cached(f"shift:{name}", make)


def _statement(w: World) -> str:
    """The day an Alipay statement of the demo venue was imported for (Reconcile reads it)."""
    def make():
        day = w.today.isoformat()
        w.report.ImportStatement(report_pb2.ImportStatementRequest(
            venue_id=VENUE, method="alipay", date=day, lines=[report_pb2.StatementLine(
                kind=report_pb2.StatementLine.PAYMENT, trade_no="fz-pay", order_id="fz-none", amount_fen=100)]),
            metadata=w.meta("admin"), timeout=20)
        return day
    return w.cached("statement", make, lambda d: "\0never named")


def _range(w: World, c, **fields):
    return new(c, date_from=w.today.isoformat(), date_to=w.last_day.isoformat(), **fields)


def _slot_spec(w: World) -> admin_pb2.SlotSpec:
    d = w.last_day
    return admin_pb2.SlotSpec(slot_id=w.uid("fzs"), zone_id="main", date=d.isoformat(),
                              start=local(d, 19), end=local(d, 20), capacity=10)


BUILDERS: dict[str, Spec] = {
    # GateService
    "GateService.Verify": Spec("demo-gate", _verify),
    "GateService.VerifyBatch": Spec("demo-gate", _batch),
    "GateService.VerifyStream": Spec("demo-gate", _batch),
    "GateService.VerifyPacked": Spec("demo-gate", _packed),
    "GateService.OfflineBundle": Spec("demo-gate", lambda w, r, c: new(c, venue_id=VENUE), readonly=True),
    "GateService.UploadScans": Spec("demo-gate", lambda w, r, c: new(c, gate_id="north-1",
                                                                      scans=[_scan(w, r)])),
    # SalesService
    "SalesService.Quote": Spec("demo-ota", lambda w, r, c: new(c, items=[_item(w)]), readonly=True),
    "SalesService.Hold": Spec("demo-ota", lambda w, r, c: new(
        c, items=[_item(w)], ttl_s=3600, idempotency_key=w.uid("fz-cart")), after_ok=_release_held),
    "SalesService.Confirm": Spec("demo-ota", _confirm),
    "SalesService.Buy": Spec("demo-ota", _buy),
    "SalesService.Release": Spec("demo-ota", lambda w, r, c: new(
        c, hold_id=w.hold("release").hold_id, idempotency_key=w.uid("fz-idem"))),
    "SalesService.Refund": Spec("demo-ota", _refund),
    "SalesService.Change": Spec("demo-ota", _change),
    "SalesService.GetOrder": Spec("demo-ota", lambda w, r, c: new(c, order_id="fz-ota-1"), readonly=True),
    "SalesService.GetHold": Spec("demo-ota", lambda w, r, c: new(c, hold_id=w.hold("get").hold_id),
                                 readonly=True),
    "SalesService.OpenShift": Spec("demo-window", lambda w, r, c: new(
        c, station_id=w.uid("fz-st"), shift_id=w.uid("fz-shift"), cashier="fuzz", float_fen=r.randint(0, 10_000),
        idempotency_key=w.uid("fz-idem"))),
    "SalesService.CloseShift": Spec("demo-window", lambda w, r, c: new(
        c, shift_id=_shift(w, "close"), counted_cash_fen=r.randint(0, 10_000), idempotency_key=w.uid("fz-idem"))),
    "SalesService.GetShift": Spec("demo-window", lambda w, r, c: new(c, shift_id=_shift(w, "get")), readonly=True),
    # InventoryService
    "InventoryService.Availability": Spec("demo-ota", lambda w, r, c: new(
        c, date_from=w.tomorrow.isoformat(), date_to=w.last_day.isoformat(), zone_id="main"),
        readonly=True),
    # AdminService
    "AdminService.GetShardMap": Spec("demo-gate", lambda w, r, c: new(c), readonly=True),
    "AdminService.CreateVenue": Spec("admin", lambda w, r, c: new(
        c, venue_id=w.uid("fzv"), name="Fuzz venue", utc_offset_s=8 * 3600,
        idempotency_key=w.uid("fz-idem"))),
    "AdminService.CreateZone": Spec("fuzz-op", lambda w, r, c: new(
        c, zone_id=w.uid("fzz"), name="Fuzz zone", live_capacity=100, idempotency_key=w.uid("fz-idem"))),
    "AdminService.CreateGate": Spec("fuzz-op", lambda w, r, c: new(
        c, zone_id="main", gate_id=w.uid("fzg"), mode=admin_pb2.GATE_IN, idempotency_key=w.uid("fz-idem"))),
    "AdminService.CreateProduct": Spec("fuzz-op", lambda w, r, c: new(
        c, product_id=w.uid("fzp"), name="Fuzz product", zone_ids=["main"],
        rule=admin_pb2.EntryRule(max_entries=1, valid_days=1, slot_grace_s=600), price_fen=1000,
        channel_prices={"ota": 900}, refundable=True, refund_fee_pct=10, idempotency_key=w.uid("fz-idem"))),
    "AdminService.CreateSlots": Spec("fuzz-op", lambda w, r, c: new(
        c, slots=[_slot_spec(w)], idempotency_key=w.uid("fz-idem"))),
    "AdminService.SetSlotCapacity": Spec("fuzz-op", lambda w, r, c: new(
        c, slot_id=w.stock_slot, capacity=r.randint(100, 120), idempotency_key=w.uid("fz-idem"))),
    "AdminService.SetAllotment": Spec("fuzz-op", lambda w, r, c: new(
        c, slot_id=w.stock_slot, channel="ota", capacity=r.randint(1, 5), idempotency_key=w.uid("fz-idem"))),
    "AdminService.BlockTicket": Spec("fuzz-op", lambda w, r, c: new(
        c, ticket_id=w.ota_tickets[-1][0], blocked=r.random() < 0.5, idempotency_key=w.uid("fz-idem"))),
    "AdminService.GetCatalog": Spec("fuzz-op", lambda w, r, c: new(c), readonly=True),
    "AdminService.RotateTicketKey": Spec("admin", lambda w, r, c: new(c, shard=0,
                                                                       idempotency_key=w.uid("fz-idem"))),
    "AdminService.RetireTicketKey": Spec("admin", lambda w, r, c: new(
        c, shard=0, key_id=_retirable_key(w), idempotency_key=w.uid("fz-idem"))),
    "AdminService.CreatePrincipal": Spec("admin", lambda w, r, c: new(
        c, principal_id=w.uid("fzpr"), role=admin_pb2.CHANNEL, venue_ids=[VENUE], channel="fzch",
        idempotency_key=w.uid("fz-idem"))),
    "AdminService.ListPrincipals": Spec("admin", lambda w, r, c: new(c), readonly=True),
    "AdminService.CreateApiKey": Spec("admin", lambda w, r, c: new(c, principal_id="fuzz-throwaway")),
    "AdminService.RevokeApiKey": Spec("admin", lambda w, r, c: new(
        c, key_id=_revocable_key(w), idempotency_key=w.uid("fz-idem"))),
    "AdminService.ListApiKeys": Spec("admin", lambda w, r, c: new(c, principal_id="fuzz-throwaway"),
                                     readonly=True),
    "AdminService.QueryAudit": Spec("admin", lambda w, r, c: new(c, after_seq=0, limit=5), readonly=True),
    "AdminService.VerifyAudit": Spec("admin", lambda w, r, c: new(c), readonly=True),
    # the price calendar, pricing rules, booking windows, real-name limits, refund tiers
    "AdminService.SetCalendar": Spec("fuzz-op", lambda w, r, c: new(
        c, days=[admin_pb2.CalendarDay(date=f"2030-01-{r.randint(1, 28):02d}", date_type="peak")],
        idempotency_key=w.uid("fz-idem"))),
    "AdminService.GetCalendar": Spec("fuzz-op", lambda w, r, c: new(
        c, date_from=w.tomorrow.isoformat(), date_to=w.last_day.isoformat()), readonly=True),
    "AdminService.SetPrices": Spec("fuzz-op", lambda w, r, c: new(
        c, product_id=PRICED, prices=[admin_pb2.DatePrice(date_type="weekend", channel="",
                                                          price_fen=r.randint(1000, 2000))],
        idempotency_key=w.uid("fz-idem")), after_ok=_reset("prices")),
    "AdminService.SetPriceRules": Spec("fuzz-op", lambda w, r, c: new(
        c, product_id=PRICED, rules=[admin_pb2.PriceRule(kind="early_bird", pct=-10, days_ahead=3)],
        idempotency_key=w.uid("fz-idem")), after_ok=_reset("rules")),
    "AdminService.SetBookingWindow": Spec("fuzz-op", lambda w, r, c: new(
        c, product_id=PRICED, opens_days=r.randint(1, 400), idempotency_key=w.uid("fz-idem")),
        after_ok=_reset("booking")),
    "AdminService.GetProductPricing": Spec("fuzz-op", lambda w, r, c: new(c, product_id="adult"),
                                           readonly=True),
    "AdminService.SetIdLimits": Spec("fuzz-op", lambda w, r, c: new(
        c, product_id=PRICED, per_day=r.randint(50, 100), per_slot=r.randint(50, 100),
        idempotency_key=w.uid("fz-idem")), after_ok=_reset("limits")),
    "AdminService.SetRefundPolicy": Spec("fuzz-op", lambda w, r, c: new(
        c, product_id=PRICED, tiers=[admin_pb2.RefundTier(before_minutes=1440, fee_pct=0)],
        idempotency_key=w.uid("fz-idem")), after_ok=_reset("refunds")),
    "AdminService.Blacklist": Spec("fuzz-op", lambda w, r, c: new(
        c, id_number=_id_number(w), reason="fuzz", idempotency_key=w.uid("fz-idem"))),
    "AdminService.Unblacklist": Spec("fuzz-op", lambda w, r, c: new(
        c, id_number=_blacklisted(w), idempotency_key=w.uid("fz-idem"))),
    # passes, packages and coupons
    "AdminService.SetPassDates": Spec("fuzz-op", lambda w, r, c: new(
        c, product_id=PRICED, valid_from="2030-01-01", valid_to=f"2030-12-{r.randint(1, 31):02d}",
        idempotency_key=w.uid("fz-idem")), after_ok=_reset("passes")),
    "AdminService.SetPackage": Spec("fuzz-op", lambda w, r, c: new(
        c, product_id=PRICED, parts=[admin_pb2.PackagePart(part="boat", merchant="fz-boats", amount_fen=500),
                                     admin_pb2.PackagePart(part="main", merchant="westlake", pct=100)],
        idempotency_key=w.uid("fz-idem")), after_ok=_reset("package")),
    "AdminService.SetRevenueSplit": Spec("fuzz-op", lambda w, r, c: new(
        c, product_id=PRICED, shares=[admin_pb2.SplitShare(partner="fz-partner", kind="partner", pct=r.randint(1, 30)),
                                      admin_pb2.SplitShare(partner="main", kind="zone", per_person_fen=100)],
        idempotency_key=w.uid("fz-idem")), after_ok=_reset("split")),
    "AdminService.SetCoupon": Spec("fuzz-op", lambda w, r, c: new(
        c, coupon=admin_pb2.Coupon(venue_id=VENUE, coupon_id=w.uid("FZC"), kind="pct", pct=r.randint(1, 50),
                                   cap_fen=1000, valid_from=w.today.isoformat(), product_ids=["adult"],
                                   channels=["ota"], budget_fen=100000, per_holder=1, active=True),
        idempotency_key=w.uid("fz-idem"))),
    "AdminService.GetCoupon": Spec("fuzz-op", lambda w, r, c: new(
        c, coupon_id=_coupon(w, "get", False)), readonly=True),
    "AdminService.IssueCouponCodes": Spec("fuzz-op", lambda w, r, c: new(
        c, coupon_id=_coupon(w, "codes", True), count=r.randint(1, 5), idempotency_key=w.uid("fz-idem"))),
    # live controls (一键管控): each accepted one is undone
    "AdminService.SetSalesPaused": Spec("fuzz-op", lambda w, r, c: new(
        c, slot_id=w.slot["main"], paused=True, idempotency_key=w.uid("fz-idem")), after_ok=_uncontrol),
    "AdminService.SetEntryClosed": Spec("fuzz-op", lambda w, r, c: new(
        c, gate_id="pier-1", closed=True, idempotency_key=w.uid("fz-idem")), after_ok=_uncontrol),
    "AdminService.SetLiveCapacity": Spec("fuzz-op", lambda w, r, c: new(
        c, zone_id="boat", live_capacity=r.randint(100, 1000), idempotency_key=w.uid("fz-idem")),
        after_ok=_uncontrol),
    "AdminService.SetFlowAlerts": Spec("fuzz-op", lambda w, r, c: new(
        c, zone_id="boat", fill_pct=[80, 95], entries_per_minute=r.randint(1, 1000),
        idempotency_key=w.uid("fz-idem")), after_ok=_uncontrol),
    "AdminService.GetLiveControls": Spec("fuzz-op", lambda w, r, c: new(c), readonly=True),
    "AdminService.WhoAmI": Spec("fuzz-op", lambda w, r, c: new(c), readonly=True),
    "GateService.Heartbeat": Spec("demo-gate", lambda w, r, c: new(
        c, gate_id="north-1", queued_scans=r.randint(0, 100), last_scan=w.ts(-5), version="fuzz"),
        readonly=True),
    "ReportService.WatchLive": Spec("fuzz-op", lambda w, r, c: new(c, min_interval_ms=100), readonly=True),
    # ReportService
    "ReportService.LiveCounts": Spec("fuzz-op", lambda w, r, c: new(c, date=w.today.isoformat()),
                                     readonly=True),
    "ReportService.TicketCounts": Spec("fuzz-op", lambda w, r, c: new(c), readonly=True),
    "ReportService.Conflicts": Spec("fuzz-op", lambda w, r, c: new(c, limit=10), readonly=True),
    "ReportService.Revenue": Spec("fuzz-op", lambda w, r, c: _range(
        w, c, period=report_pb2.MONTH, group_by=["channel", "method"]), readonly=True),
    "ReportService.TicketStatus": Spec("fuzz-op", lambda w, r, c: _range(w, c), readonly=True),
    "ReportService.Entries": Spec("fuzz-op", lambda w, r, c: new(c, date=w.today.isoformat()), readonly=True),
    "ReportService.ListOrders": Spec("fuzz-op", lambda w, r, c: _range(w, c, channel="ota", limit=5),
                                     readonly=True),
    "ReportService.StreamOrders": Spec("fuzz-op", lambda w, r, c: _range(w, c, status="paid"), readonly=True),
    "ReportService.ListRefunds": Spec("fuzz-op", lambda w, r, c: _range(w, c, limit=5), readonly=True),
    "ReportService.ListChanges": Spec("fuzz-op", lambda w, r, c: _range(w, c, limit=5), readonly=True),
    "ReportService.ListShifts": Spec("fuzz-op", lambda w, r, c: _range(w, c), readonly=True),
    "ReportService.ImportStatement": Spec("admin", lambda w, r, c: new(
        c, method="wechat", date=w.today.isoformat(), idempotency_key=w.uid("fz-idem"), lines=[
            report_pb2.StatementLine(kind=report_pb2.StatementLine.PAYMENT, trade_no=w.uid("fz-trade"),
                                     order_id="fz-none", amount_fen=r.randint(1, 10_000), fee_fen=1)])),
    "ReportService.Reconcile": Spec("fuzz-op", lambda w, r, c: new(c, method="alipay", date=_statement(w)),
                                    readonly=True),
    "ReportService.Settlement": Spec("fuzz-op", lambda w, r, c: _range(w, c), readonly=True),
    # MemberService
    "MemberService.HolderTickets": Spec("demo-window", lambda w, r, c: new(c, id_number=HOLDER),
                                        readonly=True),
    "MemberService.EnrollFace": Spec("demo-window", lambda w, r, c: new(
        c, face_token=w.uid("fzface"), id_number=HOLDER, idempotency_key=w.uid("fz-idem"))),
    "MemberService.RemoveFace": Spec("demo-window", lambda w, r, c: new(
        c, face_token=_enrolled_face(w), idempotency_key=w.uid("fz-idem"))),
    "AdminService.SetSeatMap": Spec("fuzz-op", lambda w, r, c: new(
        c, seat_map_id=w.uid("fzmap"), rows=[admin_pb2.SeatRow(section="s", row="A", layout="AA_BB")],
        zones=[admin_pb2.SeatMapZone(zone="A", price_fen=1000), admin_pb2.SeatMapZone(zone="B", price_fen=500)],
        idempotency_key=w.uid("fz-idem"))),
    "AdminService.SetMerchant": Spec("fuzz-op", lambda w, r, c: new(
        c, merchant_id="fz-canteen", name="Fuzz canteen", zone_ids=[_merchant_zone(w)],
        station_ids=[w.uid("fz-till")], idempotency_key=w.uid("fz-idem"))),
    "AdminService.SetSeating": Spec("fuzz-op", lambda w, r, c: new(
        c, slot_id=_free_slot(w), seat_map_id=_seat_map(w), idempotency_key=w.uid("fz-idem"))),
    "InventoryService.SessionSeats": Spec("demo-ota", lambda w, r, c: new(c, slot_id=_session(w)),
                                          readonly=True),
    "MemberService.SetMemberProgram": Spec("fuzz-op", lambda w, r, c: new(
        c, program=member_pb2.MemberProgram(
            venue_id=VENUE, levels=[member_pb2.MemberLevel(level=1, name="silver", min_spend_fen=10000)],
            earn=[member_pb2.EarnRule(points_per_yuan=1)], expiry="year_end", expiry_n=1),
        idempotency_key=w.uid("fz-idem"))),
    "MemberService.GetMemberProgram": Spec("fuzz-op", lambda w, r, c: new(c), readonly=True),
    "MemberService.Enrol": Spec("demo-window", lambda w, r, c: new(
        c, phone=f"139{w.seed % 1000:03d}{w.counter:05d}", idempotency_key=w.uid("fz-idem"))),
    "MemberService.GetMember": Spec("demo-window", lambda w, r, c: new(c, member_id=w.member_a),
                                    readonly=True),
    "MemberService.ListPoints": Spec("demo-window", lambda w, r, c: new(c, member_id=w.member_a, limit=10),
                                     readonly=True),
    "MemberService.AdjustPoints": Spec("fuzz-op", lambda w, r, c: new(
        c, member_id=w.member_a, points=-1, reason="fuzz", idempotency_key=w.uid("fz-idem"))),
    "MemberService.MemberReport": Spec("fuzz-op", lambda w, r, c: new(c), readonly=True),
}

# rpcs that make later set-up harder when accepted (a retired key, a revoked key) run last
LAST = ("AdminService.RetireTicketKey", "AdminService.RevokeApiKey", "AdminService.RotateTicketKey")
