"""Ticket codes: the MAC and base32 are checked against published vectors; every
malformed, truncated, bit-flipped or forged code is refused; rotation works."""
from __future__ import annotations

import pytest

from turnstile.engine import _core, cmd, InvalidArgument, Reason, verify_offline, parse_unverified, Shard
from turnstile.engine.codes import TicketCodec, TicketKey
from tests.conftest import sell


def test_siphash_reference_vectors():
    # SipHash-2-4 paper, appendix A: key 00..0f
    key = bytes(range(16))
    assert _core.siphash(key, b"") == 0x726FDB47DD0E0E31
    assert _core.siphash(key, bytes(range(15))) == 0xA129CA6149BE45E5


@pytest.mark.parametrize("raw,text", [(b"", ""), (b"f", "MY"), (b"fo", "MZXQ"), (b"foo", "MZXW6"),
                                      (b"foob", "MZXW6YQ"), (b"fooba", "MZXW6YTB"),
                                      (b"foobar", "MZXW6YTBOI")])
def test_base32_rfc4648_vectors(raw, text):
    assert _core.b32encode(raw) == text
    assert _core.b32decode(text) == raw


@pytest.mark.parametrize("bad", ["MZXW6YTBO", "MZXW6YTBOJ", "MZ=W", "MZXW6YTBOI==", "M1", "MZXW6!",
                                 "mzxw6ytboi", "MZXW6YTBoI", "MZXW6YR", "MZXW6YTBOI "])
def test_base32_refuses_malformed_and_non_canonical(bad):
    with pytest.raises(ValueError):
        _core.b32decode(bad)


def test_code_is_qr_alphanumeric_and_round_trips(shard):
    t = sell(shard).tickets[0]
    assert set(t.code) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
    status, f = shard.state.codec.parse(t.code)
    assert status == _core.DEC_OK and f.ticket_id == t.ticket_id and f.shard == 0
    assert f == verify_offline(t.code, shard.public_keys())


def test_mac_only_codes_are_short(shard):
    h = shard.run(cmd.hold("web", "westlake", [{"product": "adult", "slots": ["main-20261123-08"]}]))
    r = shard.run(cmd.confirm(h.hold_id, "o-short", "web", method="cash",
                              amount_fen=h.amount_fen, signed=False))
    code = r.tickets[0].code
    assert len(code) <= 48
    assert shard.run(cmd.verify(code, "north-1")).reason == Reason.OK
    assert verify_offline(code, shard.public_keys()) is None      # no signature to check
    assert shard.order_codes("o-short", "web") == [code]


def test_every_single_bit_flip_is_forged(shard):
    code = sell(shard).tickets[0].code
    raw = _core.b32decode(code)
    keys = shard.public_keys()
    genuine = verify_offline(code, keys)
    mac = range(22 * 8, 30 * 8)        # the MAC of a one-zone code: bytes 22..29
    shard_field = range(2 * 8, 4 * 8)  # bytes 2..3
    for bit in range(len(raw) * 8):
        flipped = bytearray(raw)
        flipped[bit // 8] ^= 1 << (bit % 8)
        text = _core.b32encode(bytes(flipped))
        r = shard.run(cmd.verify(text, "north-1"))
        # a flip of the shard names another shard: well-formed, not ours to
        # authenticate, UNKNOWN (common.proto); every other flip fails the MAC
        want = Reason.UNKNOWN if bit in shard_field else Reason.FORGED
        assert (r.reason, r.ticket) == (want, -1), bit
        # offline gates hold no MAC secret: a flip there leaves payload and signature
        # intact (the genuine ticket); a flip anywhere else fails the signature
        assert verify_offline(text, keys) == (genuine if bit in mac else None), bit
    assert shard.inside("main") == 0
    assert shard.run(cmd.verify(code, "north-1")).reason == Reason.OK


@pytest.mark.parametrize("mangle", [
    lambda c: c[:-1], lambda c: c[:20], lambda c: "", lambda c: c + "A", lambda c: c + "AAAAAAAA",
    lambda c: c.replace("A", "1", 1), lambda c: c[:10] + " " + c[11:], lambda c: "票" * 40,
    lambda c: "A" * 151, lambda c: "A" * 5000,
])
def test_malformed_codes_are_forged_and_change_nothing(shard, mangle):
    code = sell(shard).tickets[0].code
    before = shard.state.dump()
    r = shard.run(cmd.verify(mangle(code), "north-1"))
    assert r.reason == Reason.FORGED and r.ticket == -1
    after = shard.state.dump()
    assert {k: v for k, v in after.items()} == before


def test_code_minted_with_a_foreign_key_is_forged(shard):
    t = sell(shard).tickets[0]
    thief = TicketCodec(0)
    thief.set_key(TicketKey.generate(0))            # same key id, wrong secret
    rec = shard.state.tickets.record(t.ticket_id)
    fake = thief.issue(t.ticket_id, rec["product"], rec["first_day"], rec["last_day"], 1, (rec["slot"],))
    assert shard.run(cmd.verify(fake, "north-1")).reason == Reason.FORGED
    assert verify_offline(fake, shard.public_keys()) is None


def test_code_of_another_shard(tmp_path, shard, clock):
    # genuine under another shard's own keys: well-formed, no such ticket here (its keys
    # are not here to check it), as common.proto documents UNKNOWN
    other = Shard.open(str(tmp_path / "shard-1"), shard_id=1, clock=clock)
    try:
        from turnstile.engine import demo
        from tests.conftest import TODAY
        other.run_many(demo.commands(TODAY))
        code = sell(other).tickets[0].code
        r = shard.run(cmd.verify(code, "north-1"))
        assert (r.reason, r.ticket) == (Reason.UNKNOWN, -1)
        assert shard.state.codec.parse(code) == (_core.DEC_OTHER_SHARD, None)
    finally:
        other.close(snapshot=False)
    # authentic under this shard's key, but naming shard 1: not a ticket of ours
    t = sell(shard).tickets[0]
    rec = shard.state.tickets.record(t.ticket_id)
    as_shard_1 = TicketCodec(1)
    as_shard_1.set_key(shard.state.codec.keys[0])
    code = as_shard_1.issue(t.ticket_id, rec["product"], rec["first_day"], rec["last_day"], 1, (rec["slot"],))
    r = shard.run(cmd.verify(code, "north-1"))
    assert (r.reason, r.ticket) == (Reason.UNKNOWN, -1)
    res = shard.run(cmd.verify_batch([code], "north-1"))
    assert res[0].reason == Reason.UNKNOWN
    assert shard.inside("main") == 0


def test_key_rotation_overlap_then_retire(shard, shard_path, clock):
    old = sell(shard).tickets[0]
    shard.run(cmd.rotate_key())
    new = sell(shard).tickets[0]
    assert parse_unverified(new.code)[0].key_id != parse_unverified(old.code)[0].key_id
    assert shard.run(cmd.verify(old.code, "north-1")).reason == Reason.OK
    assert shard.run(cmd.verify(new.code, "north-1")).reason == Reason.OK
    old_key = parse_unverified(old.code)[0].key_id
    shard.run(cmd.retire_key(old_key))
    assert shard.run(cmd.verify(old.code, "north-2")).reason == Reason.FORGED
    assert shard.run(cmd.verify(new.code, "north-2")).reason == Reason.ALREADY_USED
    shard.close(snapshot=False)
    s2 = Shard.open(shard_path, clock=clock)
    try:
        assert s2.run(cmd.verify(old.code, "north-2")).reason == Reason.FORGED
        assert old_key not in s2.public_keys()
    finally:
        s2.close()


def _variants(raw: bytes) -> list[bytes]:
    """A code's binary form, every single-bit flip of it, the code moved to another
    shard (the u16 at byte 2), and garbage of its size."""
    out = [raw]
    for bit in range(len(raw) * 8):
        b = bytearray(raw)
        b[bit // 8] ^= 1 << (bit % 8)
        out.append(bytes(b))
    out.append(raw[:2] + (int.from_bytes(raw[2:4], "little") + 1).to_bytes(2, "little") + raw[4:])
    out.append(bytes(len(raw)))
    return out


def test_packed_codes_decode_as_their_text(shard):
    """The binary form, packed, decodes to exactly what the same codes' text does (the
    ids of decode_ids: -1 FORGED, -2 another shard's), signed or MAC-only; a code
    packed at a size not its own is not a code."""
    signed = sell(shard).tickets[0].code
    h = shard.run(cmd.hold("web", "westlake", [{"product": "adult", "slots": ["main-20261123-08"]}]))
    short = shard.run(cmd.confirm(h.hold_id, "o-packed", "web", method="cash",
                                  amount_fen=h.amount_fen, signed=False)).tickets[0].code
    core = shard.state.codec.core
    for code in (signed, short):
        raw = _core.b32decode(code)
        codes = _variants(raw)
        want = core.decode_ids([_core.b32encode(c) for c in codes], 0)
        got = core.decode_packed_ids(b"".join(codes), len(raw), 0)
        assert list(got) == list(want)
        assert got[0] >= 0 and -2 in got and set(got[1:]) <= {-1, -2}
        for size in (len(raw) - 1, len(raw) + 1):
            cut = (raw * 2)[:size]
            assert list(core.decode_packed_ids(cut, size, 0)) == [-1] == list(core.decode_ids(
                [_core.b32encode(cut)], 0))
    assert len(core.decode_packed_ids(b"", 30, 0)) == 0
    for buf, size in ((b"x" * 30, 0), (b"x" * 123, 123), (b"x" * 31, 30)):
        with pytest.raises(ValueError):
            core.decode_packed_ids(buf, size, 0)


def test_verify_packed_decides_and_replays_as_the_text_batch(shard, shard_path, clock):
    codes = [t.code for t in sell(shard, qty=3).tickets]
    raw = [_core.b32decode(c) for c in codes]
    forged = raw[0][:-1] + bytes([raw[0][-1] ^ 1])
    r = shard.run(cmd.verify_packed(b"".join(raw + [forged, raw[1]]), len(raw[0]), "north-1"))
    assert list(map(Reason, r.reasons)) == [Reason.OK] * 3 + [Reason.FORGED, Reason.ALREADY_USED]
    text = shard.run(cmd.verify_batch(codes, "north-2"))
    assert list(map(Reason, text.reasons)) == [Reason.ALREADY_USED] * 3
    with pytest.raises(InvalidArgument) as e:
        shard.run(cmd.verify_packed(b"".join(raw)[:-1], len(raw[0]), "north-1"))
    assert e.value.field == "codes"
    shard.close(snapshot=False)
    again = Shard.open(shard_path, clock=clock)
    try:
        assert again.run(cmd.verify(codes[2], "north-1")).reason == Reason.ALREADY_USED
        assert again.check() == []
    finally:
        again.close(snapshot=False)
