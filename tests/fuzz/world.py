"""The world the fuzz plays in: a real server over the demo venue (westlake), a second
venue on the same shard (fuzzb) whose ids are swapped into requests, principals, real
orders, holds, codes and a face, pools of ids to swap, and a cheap digest of the
business state to tell whether a refused call changed anything."""
from __future__ import annotations

import datetime as dt
import time

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from turnstile.engine import demo
from tests.integration.conftest import Stubs
from turnstile.v1 import admin_pb2, gate_pb2, inventory_pb2, member_pb2, report_pb2, sales_pb2

VENUE, VENUE_B = demo.VENUE, "fuzzb"
HOLDER = "110101199003074218"
TZ = dt.timezone(dt.timedelta(seconds=demo.UTC_OFFSET))
TIMEOUT = 20.0
HOLD_TTL = 6 * 3600     # the world's holds outlive a long run: an expiry would change the state


def _values(msg) -> set:
    """Every scalar value in a message, recursively (the ids it names)."""
    out = set()
    for f, v in msg.ListFields():
        for x in (v if f.is_repeated else [v]):
            if hasattr(x, "ListFields"):
                out |= _values(x)
            elif isinstance(x, (str, int)):
                out.add(x)
    return out


def venue_today() -> dt.date:
    return dt.datetime.now(TZ).date()


def local(day: dt.date, hour: int, minute: int = 0) -> Timestamp:
    return Timestamp(seconds=demo.local_time(day, hour, minute))


class World(Stubs):
    def __init__(self, server, seed: int):
        super().__init__(server)
        self.seed = seed
        self.keys = dict(server.keys)
        self.today = server.day
        self.tomorrow = self.today + dt.timedelta(days=1)
        self.last_day = self.today + dt.timedelta(days=6)
        self.counter = 0
        self.issuing_key: int | None = None     # the ticket key a builder's rotation made issuing
        self.cache: dict[str, object] = {}      # consumable things builders reuse until used up
        self.baseline: dict[str, bytes] | None = None
        self.baseline_day = venue_today()
        # read back by the digest, each by the principal of the channel that sold it (order
        # ids are the channel's own), with the order Refund's builder is refunding
        self.orders = [("fz-ota-1", "demo-ota", "ota"), ("fz-win-1", "demo-window", "window"),
                       ("fzb-order-1", "admin", "admin")]
        self._pool: dict[str, list] = {}
        self._pool_b: dict[str, list] = {}
        self._setup()

    # -- plumbing ------------------------------------------------------------------
    def meta(self, principal: str) -> tuple:
        return (("authorization", f"Bearer {self.keys[principal]}"),)

    def uid(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}-{self.seed % 100_000}-{self.counter}"

    def now(self) -> int:
        return int(time.time())

    def ts(self, delta: int = 0) -> Timestamp:
        return Timestamp(seconds=self.now() + delta)

    def close(self) -> None:
        self.ch.close()

    def touched(self) -> None:
        """State changed on purpose (set-up of a builder, an accepted call)."""
        self.baseline = None

    # -- set-up --------------------------------------------------------------------
    def _setup(self) -> None:
        a, t = self.meta("admin"), TIMEOUT
        ad = self.admin
        ad.CreatePrincipal(admin_pb2.CreatePrincipalRequest(
            principal_id="fuzz-op", role=admin_pb2.OPERATOR, venue_ids=[VENUE]), metadata=a, timeout=t)
        self.keys["fuzz-op"] = ad.CreateApiKey(admin_pb2.CreateApiKeyRequest(principal_id="fuzz-op"),
                                               metadata=a, timeout=t).secret
        ad.CreatePrincipal(admin_pb2.CreatePrincipalRequest(
            principal_id="fuzz-throwaway", role=admin_pb2.CHANNEL, venue_ids=[VENUE],
            channel="fzthrow"), metadata=a, timeout=t)
        # a second venue on the same shard: its ids are what "swapped ids" swap in
        ad.CreateVenue(admin_pb2.CreateVenueRequest(venue_id=VENUE_B, name="Fuzz B",
                                                    utc_offset_s=demo.UTC_OFFSET), metadata=a, timeout=t)
        ad.CreateZone(admin_pb2.CreateZoneRequest(venue_id=VENUE_B, zone_id="fzb-main", name="B main"),
                      metadata=a, timeout=t)
        ad.CreateGate(admin_pb2.CreateGateRequest(venue_id=VENUE_B, zone_id="fzb-main", gate_id="fzb-gate",
                                                  mode=admin_pb2.GATE_BOTH), metadata=a, timeout=t)
        ad.CreateProduct(admin_pb2.CreateProductRequest(
            venue_id=VENUE_B, product_id="fzb-adult", name="B adult", zone_ids=["fzb-main"],
            rule=admin_pb2.EntryRule(max_entries=1, valid_days=1, slot_grace_s=600), price_fen=5000,
            refundable=True), metadata=a, timeout=t)
        days = [self.today + dt.timedelta(days=i) for i in range(7)]
        ad.CreateSlots(admin_pb2.CreateSlotsRequest(venue_id=VENUE_B, slots=[
            admin_pb2.SlotSpec(slot_id=f"fzb-main-{d:%Y%m%d}", zone_id="fzb-main", date=d.isoformat(),
                               start=local(d, 8), end=local(d, 20), capacity=500) for d in days]),
            metadata=a, timeout=t)
        self.slot_b = f"fzb-main-{self.tomorrow:%Y%m%d}"
        # stock of westlake tomorrow at 10:00 (holds never touch a slot that has begun)
        rows = self.inv.Availability(inventory_pb2.AvailabilityRequest(
            venue_id=VENUE, date_from=self.tomorrow.isoformat()), metadata=a, timeout=t).slots
        self.slot = {z: next(r.slot_id for r in rows if r.zone_id == z
                             and r.start.seconds >= demo.local_time(self.tomorrow, 10))
                     for z in ("main", "pagoda", "boat")}
        self.main_slots = [r.slot_id for r in self.inv.Availability(inventory_pb2.AvailabilityRequest(
            venue_id=VENUE, date_from=self.tomorrow.isoformat(), date_to=self.last_day.isoformat(),
            zone_id="main"), metadata=a, timeout=t).slots]
        self.stock_slot = f"fz-stock-{self.tomorrow:%Y%m%d}"     # SetSlotCapacity/SetAllotment's own
        ad.CreateSlots(admin_pb2.CreateSlotsRequest(venue_id=VENUE, slots=[admin_pb2.SlotSpec(
            slot_id=self.stock_slot, zone_id="main", date=self.tomorrow.isoformat(),
            start=local(self.tomorrow, 18), end=local(self.tomorrow, 19), capacity=100)]),
            metadata=a, timeout=t)
        # orders: the OTA's, a real-name one at the window, one of venue B (admin)
        ota = self.buy("demo-ota", "fz-ota-1", qty=3)
        self.ota_tickets = [(x.ticket_id, x.code) for x in ota.tickets]
        win = self.buy("demo-window", "fz-win-1", product="annual", holders=[HOLDER])
        self.order_b = self.buy("admin", "fzb-order-1", venue=VENUE_B, product="fzb-adult",
                          slots=[self.slot_b], qty=2)
        self.hold_b = self._hold("admin", venue=VENUE_B, product="fzb-adult", slots=[self.slot_b]).hold_id
        self.member.EnrollFace(member_pb2.EnrollFaceRequest(
            venue_id=VENUE, face_token="fzface-setup-0001", id_number=HOLDER,
            idempotency_key="fz-face-setup"), metadata=self.meta("demo-window"), timeout=t)
        # members: the demo venue's programme and a member with points; one of venue B
        # (what a swapped member id names)
        self.member.SetMemberProgram(member_pb2.SetMemberProgramRequest(program=member_pb2.MemberProgram(
            venue_id=VENUE, levels=[member_pb2.MemberLevel(level=1, name="silver", min_spend_fen=10000)],
            earn=[member_pb2.EarnRule(points_per_yuan=1)])), metadata=self.meta("fuzz-op"), timeout=t)
        self.member.SetMemberProgram(member_pb2.SetMemberProgramRequest(program=member_pb2.MemberProgram(
            venue_id=VENUE_B)), metadata=a, timeout=t)
        self.member_a = self.member.Enrol(member_pb2.EnrolRequest(
            venue_id=VENUE, phone="13800000001", id_number=HOLDER), metadata=self.meta("demo-window"),
            timeout=t).member_id
        self.member_b = self.member.Enrol(member_pb2.EnrolRequest(
            venue_id=VENUE_B, phone="13800000002"), metadata=a, timeout=t).member_id
        self.member.AdjustPoints(member_pb2.AdjustPointsRequest(
            venue_id=VENUE, member_id=self.member_a, points=100_000, reason="fuzz set-up"),
            metadata=self.meta("fuzz-op"), timeout=t)
        self._pool = {
            "venue": [VENUE, VENUE_B],
            "zone": ["main", "pagoda", "boat", "fzb-main"],
            "gate": ["north-1", "south-exit", "pagoda-1", "pier-1", "fzb-gate"],
            "product": ["adult", "annual", "combo", "group", "night", "fzb-adult"],
            "slot": [*self.slot.values(), self.slot_b, self.stock_slot, demo.slot_id("main", self.today, 8),
                     demo.slot_id("main", self.last_day, 16)],
            "order": [o for o, _, _ in self.orders],
            "ticket": [x for x, _ in self.ota_tickets] + [x.ticket_id for x in win.tickets]
            + [x.ticket_id for x in self.order_b.tickets],
            "code": [c for _, c in self.ota_tickets] + [x.code for x in win.tickets]
            + [x.code for x in self.order_b.tickets],
            "principal": ["fuzz-throwaway", "fuzz-op", "demo-ota"],
            "channel": ["ota", "window", "admin", "agency", "fzthrow"],
            "id_number": [HOLDER, "110101199001011234"],
            "face_token": ["fzface-setup-0001"],
            "refund": ["fz-refund-1"],
            "member": [self.member_a, "M999999"],
            "phone": ["13800000001", "13800000002"],
        }
        self._pool_b = {"venue": [VENUE_B], "zone": ["fzb-main"], "gate": ["fzb-gate"],
                        "product": ["fzb-adult"], "slot": [self.slot_b], "order": ["fzb-order-1"],
                        "hold": [self.hold_b], "ticket": [x.ticket_id for x in self.order_b.tickets],
                        "code": [x.code for x in self.order_b.tickets], "member": [self.member_b]}
        self.touched()

    def _hold(self, principal: str, *, venue: str = VENUE, product: str = "adult", slots=None,
              qty: int = 1):
        return self.sales.Hold(sales_pb2.HoldRequest(
            venue_id=venue, ttl_s=HOLD_TTL, idempotency_key=self.uid("fz-cart"),
            items=[sales_pb2.Item(product_id=product, slot_ids=slots or [self.slot["main"]], qty=qty)]),
            metadata=self.meta(principal), timeout=TIMEOUT)

    def buy(self, principal: str, order_id: str, *, venue: str = VENUE, product: str = "adult",
            slots=None, qty: int = 1, holders=None) -> sales_pb2.ConfirmResponse:
        h = self._hold(principal, venue=venue, product=product, slots=slots, qty=qty)
        self.touched()
        return self.sales.Confirm(sales_pb2.ConfirmRequest(
            hold_id=h.hold_id, order_id=order_id,
            payment=sales_pb2.Payment(method="alipay", reference="fz-pay", amount_fen=h.amount_fen),
            holders=[sales_pb2.Holders(id_numbers=holders)] if holders else []),
            metadata=self.meta(principal), timeout=TIMEOUT)

    # -- what builders use ---------------------------------------------------------
    def pool(self, kind: str) -> list:
        """Ids of a kind (venue, slot, hold...) to swap into requests; `kind:b` those of the
        second venue only."""
        if kind.endswith(":b"):
            return self._pool_b.get(kind[:-2], [])
        extra = []
        if kind == "hold":
            extra = [v[1] for k, v in self.cache.items() if k.startswith("hold:")] + [self.hold_b]
        elif kind == "key":
            extra = [v[1] for k, v in self.cache.items() if k.startswith("key")]
        elif kind == "face_token":
            extra = [v[1] for k, v in self.cache.items() if k.startswith("face:")]
        return self._pool.get(kind, []) + extra

    def cached(self, name: str, make, ident=lambda v: v):
        """A consumable thing (an active hold, a refundable order, an enrolled face, a key
        to revoke), made once and reused while calls naming it are refused; `ident(thing)`
        is the id a request names it by."""
        if name not in self.cache:
            thing = make()
            self.cache[name] = (thing, ident(thing))
            self.touched()
        return self.cache[name][0]

    def consumed(self, request) -> None:
        """An accepted call may have used up what it names (any id in the request, which
        may have been swapped for another cached thing's): make those again next time."""
        named = _values(request) if request is not None else None
        for name, (_, ident) in list(self.cache.items()):
            if named is None or ident in named:
                del self.cache[name]

    def _next_slot(self) -> str:
        """Builders' holds take one place each, spread over every main slot of the coming
        days, so a long run does not sell one slot out."""
        self.counter += 1
        return self.main_slots[self.counter % len(self.main_slots)]

    def hold(self, name: str):
        return self.cached(f"hold:{name}", lambda: self._hold("demo-ota", slots=[self._next_slot()]),
                           lambda h: h.hold_id)

    def refundable_order(self) -> sales_pb2.ConfirmResponse:
        return self.cached("order:refund", lambda: self.buy("demo-ota", self.uid("fz-ota-r"), qty=2,
                                                            slots=[self._next_slot()]),
                           lambda o: o.order.order_id)

    def release(self, hold_id: int) -> None:
        """Give back a hold an accepted fuzzed call made: its expiry must not change the state
        while a later refused call is being checked, nor its stock run out."""
        try:
            self.sales.Release(sales_pb2.ReleaseRequest(hold_id=hold_id), metadata=self.meta("demo-ota"),
                               timeout=TIMEOUT)
        except grpc.RpcError:
            pass                          # expired already, or not the OTA's: nothing held for long
        self.touched()

    # -- the business-state digest --------------------------------------------------
    def digest(self) -> dict[str, bytes]:
        """What a buyer, an operator or a gate can observe of the business state (catalogs,
        stock, ticket counts, offline bundles with today's entered/inside sets, conflicts,
        the shard map, principals and keys, orders), read as admin. The audit log is left
        out on purpose (it grows with every call), and so are enrolled faces (nothing reads
        them back without changing state)."""
        a, t = self.meta("admin"), TIMEOUT
        d_from, d_to = self.tomorrow.isoformat(), self.last_day.isoformat()
        calls = {}
        for v in (VENUE, VENUE_B):
            calls[f"GetCatalog({v})"] = self.admin.GetCatalog.future(
                admin_pb2.GetCatalogRequest(venue_id=v), metadata=a, timeout=t)
            calls[f"Availability({v})"] = self.inv.Availability.future(
                inventory_pb2.AvailabilityRequest(venue_id=v, date_from=d_from, date_to=d_to),
                metadata=a, timeout=t)
            calls[f"TicketCounts({v})"] = self.report.TicketCounts.future(
                report_pb2.TicketCountsRequest(venue_id=v), metadata=a, timeout=t)
            calls[f"OfflineBundle({v})"] = self.gate.OfflineBundle.future(
                gate_pb2.OfflineBundleRequest(venue_id=v), metadata=a, timeout=t)
        # today's entries and who is inside are the bundle's sets; conflicts come from
        # uploads at the demo venue's gates only
        calls[f"Conflicts({VENUE})"] = self.report.Conflicts.future(
            report_pb2.ConflictsRequest(venue_id=VENUE, limit=10_000), metadata=a, timeout=t)
        calls["GetShardMap"] = self.admin.GetShardMap.future(admin_pb2.GetShardMapRequest(), metadata=a,
                                                             timeout=t)
        calls["ListPrincipals"] = self.admin.ListPrincipals.future(admin_pb2.ListPrincipalsRequest(),
                                                                   metadata=a, timeout=t)
        calls["ListApiKeys"] = self.admin.ListApiKeys.future(admin_pb2.ListApiKeysRequest(), metadata=a,
                                                             timeout=t)
        refunding = self.cache.get("order:refund")
        has_channel = "channel" in sales_pb2.GetOrderRequest.DESCRIPTOR.fields_by_name
        for o, who, ch in self.orders + ([(refunding[1], "demo-ota", "ota")] if refunding else []):
            req = sales_pb2.GetOrderRequest(order_id=o)
            if has_channel:
                req.channel = ch
            calls[f"GetOrder({o})"] = self.sales.GetOrder.future(req, metadata=self.meta(who), timeout=t)
        out = {}
        for name, fut in calls.items():
            try:
                msg = fut.result()
            except grpc.RpcError as e:
                raise AssertionError(f"the state digest's {name} failed: {e.code().name} "
                                     f"{e.details()!r} (did the server stop?)") from None
            if name.startswith("OfflineBundle"):
                for volatile in ("cut_at", "epoch", "version"):     # when it was cut, not what
                    msg.ClearField(volatile)
            out[name] = msg.SerializeToString(deterministic=True)
        return out

    def state_changed(self) -> list[str]:
        """Parts of the digest that differ from the baseline (then the new baseline). A new
        venue-local day changes the bundles by itself: then nothing is compared."""
        now = self.digest()
        before, self.baseline = self.baseline, now
        day, self.baseline_day = self.baseline_day, venue_today()
        if before is None or day != self.baseline_day:
            return []
        return [k for k in now if before.get(k) != now[k]] + [k for k in before if k not in now]

    @staticmethod
    def of_venue_b(part: str) -> bool:
        """Is this digest part about the second venue?"""
        return f"({VENUE_B})" in part or "(fzb-" in part

    def ensure_baseline(self) -> None:
        if self.baseline is None:
            self.baseline, self.baseline_day = self.digest(), venue_today()
