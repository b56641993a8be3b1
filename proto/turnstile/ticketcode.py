"""The text form of a ticket code (DESIGN.md 4.4), readable without the engine.

Part of the contract, like the .proto files: the server issues codes in this form and
an offline gate (clients/gate.py) reads them with the public keys of its bundle only.

    version u8 | key id u8 | shard u16 | ticket id u32 | product u16 | first day u16 |
    last day u16 | group u16 | flags u8 | components u8 | slot u32 × components |
    MAC (8 bytes, SipHash, server secret) | Ed25519 signature (64 bytes, when signed)

little-endian, as RFC 4648 base32, upper case, no padding. The signature covers
everything before the MAC; the MAC is checked by the server alone.
"""
from __future__ import annotations

import base64
import binascii
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


def b32decode(text: str) -> bytes | None:
    """The bytes of canonical unpadded upper-case base32, or None."""
    if not text or len(text) > 512 or not text.isascii():
        return None
    try:
        raw = base64.b32decode(text + "=" * (-len(text) % 8))
    except (binascii.Error, ValueError):
        return None
    # canonical only: one text per code (the server's codec refuses the others too)
    if base64.b32encode(raw).decode().rstrip("=") != text:
        return None
    return raw


def parse_unverified(text: str) -> tuple[CodeFields, bytes, bytes] | None:
    """Split a signed code into (fields, signed region, signature) without any key, or
    None if it is malformed or unsigned."""
    raw = b32decode(text)
    if raw is None or len(raw) < HEADER_LEN + 4 + MAC_LEN or raw[0] != VERSION:
        return None
    kid, shard, tid, product, first, last, group, flags, ncomp = _HEADER.unpack_from(raw, 1)
    region = HEADER_LEN + 4 * ncomp
    if not 1 <= ncomp <= MAX_COMPONENTS or not flags & FLAG_SIGNED \
            or len(raw) != region + MAC_LEN + SIG_LEN:
        return None
    slots = struct.unpack_from(f"<{ncomp}I", raw, HEADER_LEN)
    fields = CodeFields(kid, shard, tid, product, first, last, group, flags, slots)
    return fields, raw[:region], raw[region + MAC_LEN:]


def verify_offline(text: str, public_keys: dict[int, bytes]) -> CodeFields | None:
    """The fields of a genuinely signed code, or None: public keys only, no secrets."""
    parsed = parse_unverified(text)
    if parsed is None:
        return None
    fields, region, sig = parsed
    pub = public_keys.get(fields.key_id)
    if pub is None:
        return None
    try:
        Ed25519PublicKey.from_public_bytes(pub).verify(sig, region)
    except (InvalidSignature, ValueError):
        return None
    return fields
