"""Theatre seats over the API (issue 17): an operator sets up a hall and a session, eight
channels sell it out at once seat by seat (best available and named seats), no seat is
sold twice, each ticket carries its seat to the gate's answer and the printed ticket,
a refund frees its seat; bad values and scope edges are refused and change nothing.
Real server, real clients, concurrent callers.

The hall: rows A-E of `AAAA_AAAA` (zone A, 380 yuan) and F-G of `BBxBBB` (zone B, 180
yuan, one seat never sold): 40 + 10 = 50 seats sold. The server's clock is the morning
of Monday 2026-12-28; the show is at 19:30 that day."""
from __future__ import annotations

import concurrent.futures as cf
import datetime as dt
import threading

import pytest

from turnstile.clients.admin import AdminClient, SlotSpec
from turnstile.clients.base import ApiError, Connection
from turnstile.clients.channel import ChannelClient, Item
from turnstile.clients.gate import GateClient
from turnstile.clients.pos import SandboxPaymentAdapter, Till
from turnstile.engine import demo
from tests.integration.conftest import refused, start_server, stop_server

VENUE = "westlake"
MON = dt.date(2026, 12, 28)
ROWS = [("stalls", r, "AAAA_AAAA") for r in "ABCDE"] + [("circle", r, "BBxBBB") for r in "FG"]
SEATS = 5 * 8 + 2 * 5
CHANNELS = [f"box-{i}" for i in range(8)]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = start_server(str(tmp_path_factory.mktemp("seats")), MON)
    yield s
    stop_server(s)


@pytest.fixture(scope="module")
def show(server):
    with Connection(server.address, server.keys["admin"]) as c:
        admin = AdminClient(c)
        admin.create_zone(VENUE, "theatre", "Grand Theatre")
        admin.create_gate(VENUE, "theatre", "theatre-door", mode="in")
        admin.create_product(VENUE, "opera", ["theatre"], price_fen=1, name="Opera night", refundable=True)
        admin.create_slots(VENUE, [SlotSpec("opera-1", "theatre", MON, demo.local_time(MON, 19, 30),
                                            demo.local_time(MON, 22), 1)])
        keys = {}
        for ch in CHANNELS:
            admin.create_principal(ch, "channel", venue_ids=[VENUE], channel=ch)
            keys[ch] = admin.create_api_key(ch).secret
    with Connection(server.address, server.keys["demo-operator"]) as c:
        op = AdminClient(c)
        op.set_seat_map(VENUE, "grand", ROWS, [("A", 38000), ("B", 18000)], name="Grand Theatre")
        assert op.set_seating(VENUE, "opera-1", "grand") == SEATS
    return keys


def test_eight_channels_sell_the_hall_out_seat_by_seat_and_no_seat_twice(server, show):
    sold: list[tuple[str, str, int, str]] = []          # seat, channel, ticket, order
    lock = threading.Lock()

    def sell(ch: str) -> None:
        with Connection(server.address, show[ch]) as c:
            box = ChannelClient(c)
            n = 0
            while True:
                n += 1
                qty = 1 + (n + len(ch)) % 3
                try:       # hold the best available, then pay what the hold costs
                    h = box.hold(VENUE, [Item("opera", "opera-1", qty=qty)], key=f"{ch}-{n}")
                    o = box.confirm(h, f"{ch}-{n}", method="alipay")
                except ApiError as e:
                    if e.reason == "SOLD_OUT":
                        if qty == 1:
                            return
                        continue              # fewer left than asked: ask for one
                    raise
                with lock:
                    sold.extend((t.seat, ch, t.ticket_id, o.order_id) for t in o.tickets)

    with cf.ThreadPoolExecutor(len(CHANNELS)) as pool:
        list(pool.map(sell, CHANNELS))
    seats = [s for s, _, _, _ in sold]
    assert len(seats) == len(set(seats)) == SEATS                  # the whole hall, each seat once
    assert len({ch for _, ch, _, _ in sold}) == len(CHANNELS)
    with Connection(server.address, server.keys["demo-ota"]) as c:
        hall = ChannelClient(c).session_seats(VENUE, "opera-1")
        states = {n: st for n, _, st in hall.seats}
        assert set(states) == set(seats) | {"circle-F-3", "circle-G-3"}
        assert {st for n, st in states.items() if n in seats} == {"sold"}
        assert hall.zone_prices == {"A": 38000, "B": 18000}
        stock = next(s for s in ChannelClient(c).availability(VENUE, MON) if s.slot_id == "opera-1")
        assert (stock.sold, stock.held, stock.remaining) == (SEATS, 0, 0)
    # a refund frees its seat, which sells again by name
    seat, ch, tid, order = sold[0]
    with Connection(server.address, show[ch]) as c:
        box = ChannelClient(c)
        box.refund(VENUE, order, [tid])
        assert {n: st for n, _, st in box.session_seats(VENUE, "opera-1").seats}[seat] == "free"
        again = box.buy(VENUE, [Item("opera", "opera-1", seat_ids=(seat,))], f"{ch}-again", method="alipay")
        assert [t.seat for t in again.tickets] == [seat]
        assert again.lines[0].seat_ids == (seat,)


def test_a_seat_is_on_the_ticket_at_the_gate_and_on_paper(server, show, tmp_path):
    with Connection(server.address, server.keys["admin"]) as c:
        AdminClient(c).create_slots(VENUE, [SlotSpec("opera-2", "theatre", MON, demo.local_time(MON, 10),
                                                     demo.local_time(MON, 12), 1)])
    with Connection(server.address, server.keys["demo-operator"]) as c:
        AdminClient(c).set_seating(VENUE, "opera-2", "grand")
    with Connection(server.address, server.keys["demo-window"]) as c:
        till = Till(c, VENUE, SandboxPaymentAdapter(seed=3), station="box-office")
        till.open_shift("carol")
        q = till.explain(till.cart().add("opera", "opera-2", qty=2))
        assert ([it.seat_ids for it in q.items], q.amount_fen) == ([("stalls-A-3", "stalls-A-4")], 76000)
        sale = till.checkout(till.cart().add("opera", "opera-2", qty=2), "card")
        assert [t.seat for t in sale.tickets] == ["stalls-A-3", "stalls-A-4"]
        assert [v.seat for v in till.ticket_views(sale)] == ["stalls-A-3", "stalls-A-4"]
        assert till.tickets_pdf(sale).startswith(b"%PDF")
        till.close_shift()
    at = demo.local_time(MON, 10, 5)
    gate = GateClient(server.address, server.keys["demo-gate"], "theatre-door", VENUE,
                      state_dir=str(tmp_path / "door"), timeout=10, clock=lambda: at)
    try:
        d = gate.verify(sale.tickets[1].code)
        assert (d.reason, d.seat) == ("OK", "stalls-A-4")
    finally:
        gate.close()


def test_seat_edges_are_refused_and_change_nothing(server, show):
    with Connection(server.address, server.keys["demo-operator"]) as c:
        op = AdminClient(c)
        assert refused(op.set_seat_map, VENUE, "bad", [("s", "A", "AAQ")], [("A", 1)])[::2] == \
            ("INVALID_ARGUMENT", "rows[0].layout")
        assert refused(op.set_seat_map, VENUE, "bad", [("s", "A", "AA")], [("a", 1)])[::2] == \
            ("INVALID_ARGUMENT", "zones[0].zone")
        assert refused(op.set_seat_map, VENUE, "grand", ROWS[:1], [("A", 1)])[::2] == \
            ("FAILED_PRECONDITION", "seat_map_id")                      # it has sessions
        assert refused(op.set_seating, VENUE, "opera-1", "grand")[::2] == ("FAILED_PRECONDITION", "slot_id")
        assert refused(op.set_seating, VENUE, "opera-1", "nosuch")[::2] == ("NOT_FOUND", "seat_map_id")
    with Connection(server.address, server.keys["demo-ota"]) as c:
        box = ChannelClient(c)
        before = box.session_seats(VENUE, "opera-2")
        free = before.free()
        taken = next(n for n, _, st in before.seats if st == "sold")
        assert refused(box.hold, VENUE, [Item("opera", "opera-2", seat_ids=(free[0], taken))]) == \
            ("FAILED_PRECONDITION", "SEAT_TAKEN", "items[0].seat_ids[1]")
        assert refused(box.hold, VENUE, [Item("opera", "opera-2", seat_ids=("stalls-Z-9",))])[::2] == \
            ("NOT_FOUND", "items[0].seat_ids[0]")
        assert refused(box.hold, VENUE, [Item("opera", "opera-2", qty=1, group=2)])[::2] == \
            ("INVALID_ARGUMENT", "items[0].group")
        assert refused(box.session_seats, VENUE, "main-20261228-10")[::2] == ("NOT_FOUND", "slot_id")
        assert box.session_seats(VENUE, "opera-2") == before            # nothing held
    with Connection(server.address, server.keys["demo-gate"]) as c:
        assert refused(ChannelClient(c).session_seats, VENUE, "opera-2")[:2] == \
            ("PERMISSION_DENIED", "ROLE_NOT_ALLOWED")
