"""The shard's secrets and what is made with them: the holder secret and the ID-number
data key (SECRETS), ticket keys (KEY), keyed hashes of ID numbers and face tokens, sealed
ID numbers, and the text codes of tickets.

SECRETS and KEY records are journaled sealed under the shard's data key
(engine/keyring.py), so a journal or a snapshot reveals no secret.
"""
from __future__ import annotations

import base64
import hashlib
import os
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..codes import KEY_ACCEPTING, KEY_ACTIVE, TicketKey
from ..errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from ..journal import Record, json_record
from ..model import KeyResult
from .validate import int_arg

if TYPE_CHECKING:
    from .core import ShardState


def set_secrets(st: ShardState, args: dict, now: int) -> None:
    """The holder secret and the ID-number data key, journaled sealed under the
    shard's data key (engine/keyring.py). A clear record (a data dir from before
    master keys) replays too, and is sealed for the snapshot that migrates it."""
    sealed = args.get("sealed")
    if sealed is not None:
        if not st.replaying:
            raise InvalidArgument("unknown field", field="sealed")
        args = st.keyring.open_json(sealed, b"turnstile/secrets")
    else:
        sealed = st.keyring.seal_json({"holder_secret": args["holder_secret"],
                                       "data_key": args["data_key"]}, b"turnstile/secrets")
    st.holder_secret = bytes.fromhex(args["holder_secret"])
    st.data_key = bytes.fromhex(args["data_key"])
    st.journal(json_record(Record.SECRETS, {"sealed": sealed}), Record.SECRETS)


def new_secrets() -> dict:
    return {"holder_secret": os.urandom(16).hex(), "data_key": os.urandom(32).hex()}


def set_key(st: ShardState, args: dict, now: int) -> KeyResult:
    """Create, rotate, demote or retire a ticket key. A rotation makes a new key the
    issuing one and keeps the previous ones accepted; it is journaled as the explicit
    records it resolves to, so replay never generates key material."""
    codec = st.codec
    if args.get("action") == "rotate":
        ids = sorted(codec.keys)
        new_id = next(((ids[-1] + 1 + i) % 256 for i in range(256)
                       if (ids[-1] + 1 + i) % 256 not in codec.keys), None) if ids else 0
        if new_id is None:
            raise FailedPrecondition("all 256 key ids are in use; retire old keys first")
        for kid, k in sorted(codec.keys.items()):
            if k.state == KEY_ACTIVE:
                set_key(st, {"key_id": kid, "state": KEY_ACCEPTING, "action": "demote"}, now)
        fresh = TicketKey.generate(new_id)
        return set_key(st, {"key_id": new_id, "state": KEY_ACTIVE, "mac_key": fresh.mac_key.hex(),
                            "seed": fresh.seed.hex()}, now)
    key_id = int_arg(args, "key_id", 0, 255)
    state = int_arg(args, "state", 0, 2)
    old = codec.keys.get(key_id)
    # the MAC key and seed are journaled sealed under the shard's data key, bound to
    # the key id (engine/keyring.py); clear ones (from before master keys) replay too
    label = b"turnstile/key/%d" % key_id
    sealed = args.get("sealed")
    if sealed is not None:
        if not st.replaying:
            raise InvalidArgument("unknown field", field="sealed")
        args = {**args, **st.keyring.open_json(sealed, label)}
    if "mac_key" in args:
        if old is not None:
            raise AlreadyExists(f"ticket key {key_id} exists", field="key_id")
        try:
            mac, seed = bytes.fromhex(args["mac_key"]), bytes.fromhex(args["seed"])
        except (TypeError, ValueError, KeyError):
            raise InvalidArgument("mac_key and seed must be hex", field="mac_key") from None
        if len(mac) != 16 or len(seed) != 32:
            raise InvalidArgument("mac_key is 16 bytes, seed 32", field="mac_key")
        key = TicketKey(key_id, mac, seed, state)
    elif old is None:
        raise NotFound(f"no ticket key {key_id}", field="key_id")
    else:
        if state != KEY_ACTIVE and old.state == KEY_ACTIVE and not st.replaying and \
                sum(k.state == KEY_ACTIVE for k in codec.keys.values()) == 1 and \
                args.get("action") != "demote":
            raise FailedPrecondition("the only issuing key cannot be retired; rotate first",
                                     field="key_id")
        key = TicketKey(key_id, old.mac_key, old.seed, state)
    codec.set_key(key)
    rec = {k: v for k, v in args.items() if k not in ("action", "mac_key", "seed", "sealed")}
    if "mac_key" in args:
        rec["sealed"] = sealed or st.keyring.seal_json(
            {"mac_key": args["mac_key"], "seed": args["seed"]}, label)
    st.journal(json_record(Record.KEY, rec), Record.KEY)
    return KeyResult(key_id, state)


# -- ID numbers and face tokens ------------------------------------------------------
def holder_key(st: ShardState, id_number: str) -> str:
    return hashlib.blake2b(id_number.upper().encode(), key=st.holder_secret,
                           digest_size=16).hexdigest()


def face_key(st: ShardState, face_token: Any) -> str:
    if not isinstance(face_token, str) or not 8 <= len(face_token) <= 128 \
            or not face_token.isprintable():
        raise InvalidArgument("must be 8-128 printable characters", field="face_token")
    return hashlib.blake2b(face_token.encode(), key=st.holder_secret, digest_size=16,
                           person=b"turnstile-face").hexdigest()


def seal(st: ShardState, id_number: str) -> str:
    nonce = os.urandom(12)
    return base64.b64encode(nonce + AESGCM(st.data_key).encrypt(nonce, id_number.encode(), None)).decode()


def unseal(st: ShardState, sealed: str) -> str:
    raw = base64.b64decode(sealed)
    return AESGCM(st.data_key).decrypt(raw[:12], raw[12:], None).decode()


def mask_id(id_number: str) -> str:
    return id_number[:3] + "*" * max(len(id_number) - 7, 0) + id_number[-4:]


# -- ticket codes --------------------------------------------------------------------
def render(st: ShardState, ticket_id: int, key_id: int | None = None, signed: bool = True) -> str:
    """The text code of the ticket (code) whose id is ticket_id."""
    rec = st.tickets.record(ticket_id)
    p = st.product_list[rec["product"]]
    slots = [st.tickets.record(ticket_id + c)["slot"] for c in range(len(p.zones))]
    return st.codec.issue(ticket_id, rec["product"], rec["first_day"], rec["last_day"],
                          rec["group"], tuple(slots), real_name=p.real_name, signed=signed,
                          key_id=None if key_id is None or key_id < 0 else key_id)


def render_if_valid(st: ShardState, ticket_id: int, key_id: int, signed: bool) -> str:
    """The code, or "" if its key has been retired since (such codes read FORGED)."""
    if key_id >= 0 and key_id not in st.codec.keys:
        return ""
    return render(st, ticket_id, key_id, signed)
