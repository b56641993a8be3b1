"""The text form of a ticket code (DESIGN.md 4.4), readable without the engine.

Part of the contract, like the .proto files: the server issues codes in this form and
an offline gate (clients/gate.py) reads them with the public keys of its bundle only.

    version u8 | key id u8 | shard u16 | ticket id u32 | product u16 | first day u16 |
    last day u16 | group u16 | flags u8 | components u8 | slot u32 × components |
    MAC (8 bytes, SipHash, server secret) | Ed25519 signature (64 bytes, when signed)

little-endian, as RFC 4648 base32, upper case, no padding. The signature covers
everything before the MAC; the MAC is checked by the server alone.

Only the canonical text is a code: exactly what the encoder renders (upper case, no
padding, no whitespace, zero trailing bits), so each ticket has one accepted text, and
the server's codec (native/codes.pxi) and this module accept the same texts.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

VERSION = 1
FLAG_SIGNED = 1
FLAG_REAL_NAME = 2
HEADER_LEN = 18
MAC_LEN = 8
SIG_LEN = 64
MAX_COMPONENTS = 8
NO_SLOT = 0xFFFFFFFF
_HEADER = struct.Struct("<BHIHHHHBB")


@dataclass(frozen=True)
class CodeFields:
    """The payload of a code (what a QR carries besides its authenticators)."""

    key_id: int
    shard: int
    ticket_id: int
    product: int
    first_day: int
    last_day: int
    group: int
    flags: int
    slots: tuple[int, ...]


_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_B32_SET = frozenset(_B32)
# base32 digits as the digits of int(_, 32): the decode runs in C (base64.b32decode is
# Python, ~50 µs a code: a concentrator or load generator converts millions)
_AS_INT_DIGITS = str.maketrans(_B32, "0123456789abcdefghijklmnopqrstuv")


def b32decode(text: str) -> bytes | None:
    """The bytes of canonical unpadded upper-case base32 (RFC 4648), or None."""
    if not text or len(text) > 512 or not _B32_SET.issuperset(text):
        return None
    n, pad = divmod(5 * len(text), 8)
    value = int(text.translate(_AS_INT_DIGITS), 32)
    # canonical only: one text per code (the server's codec refuses the others too): no
    # character left over (pad < 5) and the bits past the last byte zero
    if pad >= 5 or value & ((1 << pad) - 1):
        return None
    return (value >> pad).to_bytes(n, "big")


def parse(text: str) -> tuple[CodeFields, bytes, bytes] | None:
    """(fields, authenticated region, signature or b"" if unsigned) of a code whose text is
    canonical and whose layout is valid, or None: the checks the server's codec makes
    before it uses any key (native/codes.pxi Codec._decode)."""
    raw = b32decode(text)
    if raw is None or len(raw) < HEADER_LEN + 4 + MAC_LEN or raw[0] != VERSION:
        return None
    kid, shard, tid, product, first, last, group, flags, ncomp = _HEADER.unpack_from(raw, 1)
    region = HEADER_LEN + 4 * ncomp
    if not 1 <= ncomp <= MAX_COMPONENTS or group < 1 or last < first \
            or flags & ~(FLAG_SIGNED | FLAG_REAL_NAME) \
            or len(raw) != region + MAC_LEN + (SIG_LEN if flags & FLAG_SIGNED else 0):
        return None
    slots = struct.unpack_from(f"<{ncomp}I", raw, HEADER_LEN)
    fields = CodeFields(kid, shard, tid, product, first, last, group, flags, slots)
    return fields, raw[:region], raw[region + MAC_LEN:]


def parse_unverified(text: str) -> tuple[CodeFields, bytes, bytes] | None:
    """Split a signed code into (fields, signed region, signature) without any key, or
    None if it is malformed or unsigned."""
    parsed = parse(text)
    if parsed is None or not parsed[0].flags & FLAG_SIGNED:
        return None
    return parsed


def _signed_by(region: bytes, sig: bytes, pub: bytes | None) -> bool:
    if pub is None or not sig:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(pub).verify(sig, region)
    except (InvalidSignature, ValueError):
        return False
    return True


def verify_offline(text: str, public_keys: dict[int, bytes]) -> CodeFields | None:
    """The fields of a genuinely signed code, or None: public keys only, no secrets."""
    parsed = parse(text)
    if parsed is None:
        return None
    fields, region, sig = parsed
    return fields if _signed_by(region, sig, public_keys.get(fields.key_id)) else None


def check_offline(text: str, shard: int, public_keys: dict[int, bytes]) \
        -> tuple[str | None, CodeFields | None]:
    """What a gate of `shard` can tell of a code with public keys alone, in the order the
    server decides (native/tickets.pxi Tickets.verify): (refusal, fields).

    - ("FORGED", None): the text is not canonical or the layout is not valid;
    - ("UNKNOWN", fields): a well-formed code of another shard, decided before any key
      (that shard's keys are not here to check it);
    - ("FORGED", None): an unknown key id, no signature (a MAC-only code can only be
      checked by the server) or a signature that does not verify;
    - (None, fields): a genuine code of this shard; its ticket is for the gate's rules.
    """
    parsed = parse(text)
    if parsed is None:
        return "FORGED", None
    fields, region, sig = parsed
    if fields.shard != shard:
        return "UNKNOWN", fields
    if not _signed_by(region, sig, public_keys.get(fields.key_id)):
        return "FORGED", None
    return None, fields
