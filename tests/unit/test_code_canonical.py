"""A ticket code has one accepted text, and the server and an offline gate answer a
code alike (DESIGN.md 4.4, proto/turnstile/v1/common.proto ScanReason):

- only the canonical text (RFC 4648 base32 as issued: upper case, no padding, no
  whitespace, zero trailing bits) is a code; any other text is FORGED, online and
  offline, and changes nothing;
- a well-formed code of another shard is UNKNOWN (its keys are not here to check it), an
  authentic code of a ticket never issued here is UNKNOWN, an unknown key id or a
  changed bit is FORGED -- by a single scan, a batch scan and an offline gate alike.

Expectations come from RFC 4648 and common.proto, not from the codec under test: texts
are built with the standard library's base64."""
from __future__ import annotations

import base64
import shutil

import pytest

from turnstile.clients.gate import GateClient, _Bundle
from turnstile.engine import Shard, cmd, demo, Direction, Reason
from turnstile.engine.codes import TicketCodec, TicketKey
from turnstile.server.services import bundle_message
from tests.conftest import TODAY, sell
from turnstile import ticketcode

GATE = "north-1"
B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


def b32(raw: bytes) -> str:
    """RFC 4648 base32, upper case, unpadded: the canonical text of `raw`."""
    return base64.b32encode(raw).decode().rstrip("=")


def unb32(text: str) -> bytes:
    return base64.b32decode(text + "=" * (-len(text) % 8))


def non_canonical(code: str) -> dict[str, str]:
    """Texts a lenient reader would take for `code` (or a longer one) that are not its
    canonical text."""
    raw = unb32(code)
    assert b32(raw) == code
    pad = "=" * (-len(code) % 8 or 8)
    first_letter = next(i for i, ch in enumerate(code) if ch.isalpha())
    forms = {
        "lower case": code.lower(),
        "mixed case": "".join(ch.lower() if i % 2 else ch for i, ch in enumerate(code)),
        "one letter lower": code[:first_letter] + code[first_letter].lower() + code[first_letter + 1:],
        "padded": code + pad,
        "one '='": code + "=",
        "'=' inside": code[:16] + "=" + code[16:],
        "leading space": " " + code,
        "trailing space": code + " ",
        "trailing newline": code + "\n",
        "space inside": code[:20] + " " + code[20:],
        "tab inside": code[:20] + "\t" + code[20:],
        "one character more": code + "A",
        "eight characters more": code + "AAAAAAAA",
        "twice": code + code,
        "fullwidth first letter": chr(ord(code[0]) + 0xFEE0) + code[1:],
    }
    # the bits of the last character past the last byte: RFC 4648 says they are zero;
    # a lenient decoder reads the same bytes whatever they are
    spare = len(code) * 5 - len(raw) * 8
    last = B32.index(code[-1])
    for bit in range(spare):
        text = code[:-1] + B32[last | 1 << bit]
        assert unb32(text) == raw            # the same ticket to a lenient reader
        forms[f"trailing bit {bit} set"] = text
    return forms


def offline_gate(tmp_path, clock, bundle) -> GateClient:
    """A gate holding `bundle` that cannot reach any server: it decides offline."""
    gate = GateClient("127.0.0.1:9", "tsk_none", GATE, demo.VENUE, state_dir=str(tmp_path),
                      clock=clock, max_bundle_age_s=1e9, retry_online_s=float("inf"))
    gate.bundle = _Bundle(bundle)
    gate.online = False
    return gate


@pytest.mark.parametrize("signed", [True, False], ids=["signed", "mac-only"])
def test_only_the_canonical_text_is_accepted_online_and_offline(shard, clock, tmp_path, signed):
    h = shard.run(cmd.hold("web", demo.VENUE, [{"product": "adult",
                                                "slots": [demo.slot_id("main", TODAY, 8)]}]))
    code = shard.run(cmd.confirm(h.hold_id, "o-canonical", "web", method="cash",
                                 amount_fen=h.amount_fen, signed=signed)).tickets[0].code
    forms = non_canonical(code)
    if signed:
        assert any(name.startswith("trailing bit") for name in forms)   # 151 chars: 3 spare bits
    gate = offline_gate(tmp_path / "gate", clock, bundle_message(shard.offline_bundle(demo.VENUE)))
    try:
        before = shard.state.dump()
        batch = shard.run(cmd.verify_batch(list(forms.values()), GATE))
        for i, (name, text) in enumerate(forms.items()):
            r = shard.run(cmd.verify(text, GATE))
            assert (r.reason, r.ticket, r.persons) == (Reason.FORGED, -1, 0), name
            assert (batch[i].reason, batch[i].ticket) == (Reason.FORGED, -1), name
            off = gate.verify(text)
            assert (off.offline, off.reason, off.admitted) == (True, "FORGED", False), name
            assert ticketcode.verify_offline(text, shard.public_keys()) is None, name
        assert shard.state.dump() == before             # nothing admitted, nothing changed
    finally:
        gate.close()
    # the canonical text itself is the ticket, untouched by all of the above
    assert shard.run(cmd.verify(code, GATE)).reason == Reason.OK


@pytest.fixture
def table(tmp_path, clock):
    """(rows, bundle, paths): one input per row, each with the answer common.proto
    documents, and three copies of a shard that has admitted nobody, so that each path
    starts from the same state."""
    other = Shard.open(str(tmp_path / "shard-1"), shard_id=1, clock=clock)
    other.run_many(demo.commands(TODAY))
    foreign = sell(other).tickets[0].code            # genuine, under shard 1's own keys
    other.close(snapshot=False)

    path = str(tmp_path / "shard-0")
    s = Shard.open(path, clock=clock)
    s.run_many(demo.commands(TODAY))
    good = sell(s).tickets[0]
    rec = s.state.tickets.record(good.ticket_id)
    never = s.state.tickets.n + 1000                  # no ticket of this shard has this id
    never_issued = s.state.codec.issue(never, rec["product"], rec["first_day"], rec["last_day"],
                                       1, (rec["slot"],))
    raw = bytearray(unb32(good.code))
    raw[4] ^= 0x01                                    # a bit of the ticket id
    flipped = b32(bytes(raw))
    stranger = TicketCodec(0)
    stranger.set_key(TicketKey.generate(77))          # a key id this shard never had
    assert 77 not in s.public_keys()
    unknown_key = stranger.issue(good.ticket_id, rec["product"], rec["first_day"],
                                 rec["last_day"], 1, (rec["slot"],))
    bundle = bundle_message(s.offline_bundle(demo.VENUE))
    s.close(snapshot=False)
    paths = [path] + [shutil.copytree(path, f"{path}-{i}") for i in (1, 2)]
    # (name, code, online answer, offline answer)
    rows = [
        ("canonical good code", good.code, Reason.OK, Reason.OK),
        ("lower case", good.code.lower(), Reason.FORGED, Reason.FORGED),
        ("another shard", foreign, Reason.UNKNOWN, Reason.UNKNOWN),
        # an offline gate cannot know what was issued after its bundle was cut (a ticket
        # sold since looks just the same): it trusts the signature, and the server makes
        # the admission a conflict when the scan is uploaded
        ("never issued", never_issued, Reason.UNKNOWN, Reason.OK),
        ("flipped bit", flipped, Reason.FORGED, Reason.FORGED),
        ("unknown key", unknown_key, Reason.FORGED, Reason.FORGED),
    ]
    return rows, bundle, paths


def run(path: str, clock, command):
    s = Shard.open(path, clock=clock)
    try:
        return s.run(command)
    finally:
        s.close(snapshot=False)


def test_single_batch_and_offline_scans_answer_alike(table, tmp_path, clock):
    rows, bundle, (single_path, batch_path, upload_path) = table
    s = Shard.open(single_path, clock=clock)
    try:
        single = [s.run(cmd.verify(code, GATE)) for _, code, _, _ in rows]
    finally:
        s.close(snapshot=False)
    batch = run(batch_path, clock, cmd.verify_batch([code for _, code, _, _ in rows], GATE))
    gate = offline_gate(tmp_path / "gate", clock, bundle)
    try:
        offline = [gate.verify(code) for _, code, _, _ in rows]
        queued = gate.queued()
    finally:
        gate.close()
    for i, (name, _, online_reason, offline_reason) in enumerate(rows):
        assert single[i].reason == online_reason, name
        assert batch[i].reason == online_reason, name
        assert offline[i].offline and offline[i].reason == offline_reason.name, name
        if online_reason == Reason.FORGED or name == "another shard":
            # not a ticket of this shard: no ticket id, online or off
            assert single[i].ticket == offline[i].ticket_id == -1, name
    # the gate's queue uploaded (as UploadScans does): each scan decided as online; the
    # one admission the server would not have made is a conflict
    uploaded = run(upload_path, clock, cmd.offline_scans(GATE, [
        {"nonce": s.nonce, "seq": s.sequence, "code": s.code, "direction": int(Direction.IN),
         "at": s.scan_time.seconds, "persons": s.persons, "admitted": s.admitted,
         "reason": s.reason} for _, s in queued]))
    assert [Reason(r.reason) for r in uploaded] == [online for _, _, online, _ in rows]
    assert [name for (name, *_), r in zip(rows, uploaded) if r.status == "CONFLICT"] \
        == ["never issued"]
