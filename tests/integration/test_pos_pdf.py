"""Ticket labels as a venue in China prints them (clients/pos.py against a real server):
Chinese names in a font embedded in the PDF, so that a viewer or printer without Adobe's
Asian font pack shows them instead of empty boxes, and the price and the entry rule on
every ticket."""
from __future__ import annotations

import io
import re

import pypdf
import pytest
from turnstile.v1 import admin_pb2

from turnstile.clients.admin import AdminClient, SlotSpec
from turnstile.clients.base import Connection
from turnstile.clients.pos import SandboxPaymentAdapter, Till
from turnstile.engine import demo

VENUE = "xihu"
VENUE_NAME = "西湖风景名胜区"


@pytest.fixture(scope="module")
def till(server):
    """A second venue with Chinese names, set up over the API, and a till selling it
    with a seller key scoped to it."""
    admin_conn = Connection(server.address, server.keys["admin"])
    admin = AdminClient(admin_conn)
    admin.create_venue(VENUE, VENUE_NAME)
    admin.create_zone(VENUE, "lake", "西湖")
    admin.create_zone(VENUE, "isle", "三潭印月")
    rule = admin_pb2.EntryRule
    admin.create_product(VENUE, "combo", ["lake", "isle"], name="西湖联票", price_fen=8000,
                         rule=rule(max_entries=1, valid_days=1))
    admin.create_product(VENUE, "day", ["lake"], name="环湖日票", price_fen=4550,
                         rule=rule(max_entries=1, reentry=True, valid_days=1))
    admin.create_product(VENUE, "punch", ["lake"], name="十次卡", price_fen=30000,
                         rule=rule(max_entries=10, valid_days=180))
    start = demo.local_time(server.day, 9)
    admin.create_slots(VENUE, [SlotSpec(f"{z}-am", z, server.day, start, start + 2 * 3600, 100)
                               for z in ("lake", "isle")])
    admin.create_principal("xihu-window", "seller", venue_ids=[VENUE], channel="window")
    conn = Connection(server.address, admin.create_api_key("xihu-window").secret)
    admin_conn.close()
    t = Till(conn, VENUE, SandboxPaymentAdapter(seed=3), station="window-9")
    t.open_shift("李娜", float_fen=10_000)
    yield t
    if t.shift is not None:
        t.close_shift()
    conn.close()


def font_files(reader: pypdf.PdfReader) -> dict[str, bool]:
    """Every font the pages use -> whether its program is embedded in the file (a font
    descriptor with FontFile, FontFile2 or FontFile3; a Type0 font through its
    descendant). A font without a descriptor (one of the 14 standard fonts) is not."""
    out = {}
    for page in reader.pages:
        fonts = page["/Resources"].get_object().get("/Font", {})
        for ref in fonts.get_object().values():
            font = ref.get_object()
            leaf = font["/DescendantFonts"][0].get_object() if font["/Subtype"] == "/Type0" else font
            desc = leaf.get("/FontDescriptor")
            desc = desc.get_object() if desc is not None else {}
            out[str(font["/BaseFont"])] = any(k in desc for k in ("/FontFile", "/FontFile2", "/FontFile3"))
    return out


def test_chinese_ticket_pdf_embeds_its_fonts_and_shows_price_and_entry_rule(server, till):
    till.availability(server.day)
    cart = (till.cart().add("combo", ["lake-am", "isle-am"]).add("day", "lake-am")
            .add("punch", "lake-am"))
    sale = till.checkout(cart, "cash", tendered_fen=50_000)
    pdf = till.tickets_pdf(sale)
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    assert len(reader.pages) == 3

    fonts = font_files(reader)
    assert fonts and all(fonts.values()), fonts            # every font travels with the file
    # embedded as a subset (6 capital letters + the name), not the whole 5 MB font
    assert all(re.fullmatch(r"/[A-Z]{6}\+\S+", name) for name in fonts), fonts
    assert len(pdf) < 500_000

    pages = [p.extract_text() for p in reader.pages]
    day = server.day.isoformat()
    combo, daytk, punch = pages
    for text in pages:
        assert VENUE_NAME in text and day in text and "09:00-11:00" in text
    # the product, its price in yuan and its entry rule, each on its own ticket
    assert "西湖联票" in combo and "¥80.00" in combo
    assert "单次入园" in combo and "single entry" in combo and "可再入园" not in combo
    assert "环湖日票" in daytk and "¥45.50" in daytk
    assert "可再入园" in daytk and "re-entry" in daytk
    assert "十次卡" in punch and "¥300.00" in punch
    assert "10 次" in punch and "10 visits" in punch and "180" in punch
    assert "单次入园" not in punch
    for t, text in zip(sale.tickets, pages):
        assert str(t.ticket_id) in text


def test_a_group_ticket_shows_the_price_of_all_its_persons(server, till):
    admin_conn = Connection(server.address, server.keys["admin"])
    AdminClient(admin_conn).create_product(VENUE, "group", ["lake"], name="团体票", price_fen=6000,
                                           max_group=30)
    admin_conn.close()
    till.catalog(refresh=True)
    sale = till.checkout(till.cart().add("group", "lake-am", group=12), "card")
    (text,) = [p.extract_text() for p in pypdf.PdfReader(io.BytesIO(till.tickets_pdf(sale))).pages]
    assert "团体票" in text and "¥720.00" in text and "12" in text
    assert sale.order.amount_fen == 72_000
