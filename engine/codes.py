"""Ticket codes (DESIGN.md 4.4): the keyring, issuing, and offline verification.

A code is `payload | MAC | signature?` in RFC 4648 base32 (upper case, no padding),
so it fits the QR alphanumeric mode. The server authenticates the 64-bit SipHash MAC
in the core; an offline gate checks the Ed25519 signature with the public key alone,
so a stolen gate cannot mint tickets. Key ids allow rotation: a new key issues, the
previous one is still accepted until it is retired.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives import serialization
# the text form is part of the contract: gates read it without the engine
from turnstile import ticketcode
from turnstile.ticketcode import CodeFields, parse_unverified, verify_offline  # noqa: F401

from . import _core
from .errors import InvalidArgument

FLAG_SIGNED = _core.FLAG_SIGNED
FLAG_REAL_NAME = _core.FLAG_REAL_NAME
assert (_core.CODE_VERSION, FLAG_SIGNED, FLAG_REAL_NAME) == \
    (ticketcode.VERSION, ticketcode.FLAG_SIGNED, ticketcode.FLAG_REAL_NAME), "code layouts differ"

KEY_ACCEPTING = 1   # accepted, no longer used to issue
KEY_ACTIVE = 2      # issues and is accepted


@dataclass
class TicketKey:
    key_id: int
    mac_key: bytes           # 16 bytes, SipHash
    seed: bytes              # 32 bytes, Ed25519 private key
    state: int = KEY_ACTIVE

    @classmethod
    def generate(cls, key_id: int) -> "TicketKey":
        return cls(key_id, os.urandom(16), os.urandom(32))

    def private_key(self) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(self.seed)

    def public_bytes(self) -> bytes:
        return self.private_key().public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw)


class TicketCodec:
    """Keys of one shard and the issuing of codes."""

    def __init__(self, shard: int):
        self.shard = shard
        self.core = _core.Codec()
        self.keys: dict[int, TicketKey] = {}
        self._signers: dict[int, Ed25519PrivateKey] = {}

    def set_key(self, key: TicketKey) -> None:
        if key.state not in (KEY_ACTIVE, KEY_ACCEPTING):
            self.keys.pop(key.key_id, None)
            self._signers.pop(key.key_id, None)
            self.core.drop_key(key.key_id)
            return
        self.keys[key.key_id] = key
        self._signers[key.key_id] = key.private_key()
        self.core.set_key(key.key_id, key.mac_key, key.state == KEY_ACTIVE)

    @property
    def issuing_key(self) -> int:
        active = [k for k, v in self.keys.items() if v.state == KEY_ACTIVE]
        if not active:
            raise InvalidArgument("no active ticket key", hint="create one with a key rotation")
        return max(active)

    def public_keys(self) -> dict[int, bytes]:
        """Public keys gates need to verify codes offline, by key id."""
        return {k: v.public_bytes() for k, v in self.keys.items()}

    def issue(self, ticket_id: int, product: int, first_day: int, last_day: int, group: int,
              slots: tuple[int, ...], *, real_name: bool = False, signed: bool = True,
              key_id: int | None = None) -> str:
        """The text code of one ticket. Deterministic: the same ticket gives the same text."""
        kid = self.issuing_key if key_id is None else key_id
        flags = (FLAG_SIGNED if signed else 0) | (FLAG_REAL_NAME if real_name else 0)
        region = self.core.region(kid, self.shard, ticket_id, product, first_day, last_day, group,
                                  flags, list(slots))
        sig = self._signers[kid].sign(region) if signed else b""
        return _core.b32encode(self.core.seal(kid, region, sig))

    def parse(self, text: str) -> tuple[int, CodeFields | None]:
        """(decode status, fields): authenticates the MAC, as the server does (a
        well-formed code of another shard is DEC_OTHER_SHARD, its MAC unchecked)."""
        status, f = self.core.decode(text, self.shard)
        if f is None:
            return status, None
        return status, CodeFields(f["key_id"], f["shard"], f["ticket_id"], f["product"],
                                  f["first_day"], f["last_day"], f["group"], f["flags"],
                                  tuple(f["slots"]))
