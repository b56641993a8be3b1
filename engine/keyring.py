"""Envelope encryption of a shard's secrets (DESIGN.md 4.2): what is stored is wrapped
by a master key that never lives in the data dir.

Three layers of keys:

  master key  32 random bytes written as 64 hex digits (`turnstile master-key create
              FILE`, or `openssl rand -hex 32`), kept OUTSIDE the data dir: a key file
              (`--master-key-file FILE` / TURNSTILE_MASTER_KEY_FILE) or the key itself in
              TURNSTILE_MASTER_KEY. Precedence: an explicit key, an explicit file, the
              file variable, the key variable.
  DEK         each shard's data-encryption key: 32 random bytes made with the shard,
              stored only wrapped (AES-256-GCM under the master key, bound to the label
              "turnstile/dek/v1") in the `dek` row of the shard's LMDB meta database,
              beside the id of the master key that wrapped it (a truncated SHA-256 of
              it, so a wrong key is named as such rather than as damage).
  secrets     the holder secret and the ID-number data key (SECRETS records) and each
              ticket key's MAC key and Ed25519 seed (KEY records). Journal records and the
              snapshot's catalog keep their other fields readable; the secret ones are one
              `sealed` field: AES-256-GCM under the DEK, bound to the record kind (and key
              id), so a sealed value cannot be moved to another record. The audit key
              (engine/audit.py), which signs the audit log's checkpoints, likewise: its
              Ed25519 seed sealed in the `audit_key` meta row, bound to the row's public
              fields (the public key stays readable, for auditors).

So a data dir or a backup alone reveals no secret and, with it, no ID number (they are
AES-GCM under the data key). Rotating the master key re-wraps each shard's DEK: one row,
one transaction per shard (`turnstile master-key rotate`); the shard's file is then
compacted so the old wrapping does not linger in a free page. Secrets sealed under the
DEK do not change, so backups taken before a rotation still open with the old key.

The audit log's request digests are keyed too (Shard.request_digest): BLAKE2b under the
holder secret with its own personalisation, so no new secret kind is needed.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import TurnstileError

ENV_KEY = "TURNSTILE_MASTER_KEY"
ENV_FILE = "TURNSTILE_MASTER_KEY_FILE"
_DEK_LABEL = b"turnstile/dek/v1"
_NONCE = 12
HOW = (f"give --master-key-file FILE, or set {ENV_FILE}=FILE or {ENV_KEY}=<64 hex digits>; "
       f"`turnstile master-key create FILE` makes one (keep it outside the data dir)")


class MasterKeyError(TurnstileError):
    """No master key, an unreadable or malformed one, or not the key a data dir is
    wrapped with: nothing was opened."""

    code = "FAILED_PRECONDITION"


def parse_master_key(text: str | bytes, source: str) -> bytes:
    """The 32 bytes of a master key written as 64 hex digits (whitespace around ignored)."""
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            text = ""
    text = text.strip()
    try:
        key = bytes.fromhex(text) if len(text) == 64 else b""
    except ValueError:
        key = b""
    if len(key) != 32:
        raise MasterKeyError(f"{source} is not a master key: expected 64 hex digits "
                             f"(`turnstile master-key create FILE` makes one)")
    return key


def read_key_file(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            text = f.read(1024)
    except OSError as e:
        raise MasterKeyError(f"cannot read the master key file {path}: {e.strerror or e}") from None
    return parse_master_key(text, f"master key file {path}")


def load_master_key(key: bytes | str | None = None, *, key_file: str | None = None,
                    environ=None) -> bytes:
    """The master key: `key` (32 bytes or 64 hex digits), else `key_file`, else the file
    named by TURNSTILE_MASTER_KEY_FILE, else TURNSTILE_MASTER_KEY. MasterKeyError if none."""
    env = os.environ if environ is None else environ
    if isinstance(key, bytes) and len(key) == 32:
        return key
    if key:
        return parse_master_key(key, "the master key given")
    if key_file:
        return read_key_file(key_file)
    if env.get(ENV_FILE):
        return read_key_file(env[ENV_FILE])
    if env.get(ENV_KEY):
        return parse_master_key(env[ENV_KEY], ENV_KEY)
    raise MasterKeyError(f"no master key: {HOW}")


def key_source(key_file: str | None = None, environ=None) -> str | None:
    """The file the master key comes from (as load_master_key picks it), None if not a file."""
    env = os.environ if environ is None else environ
    return key_file or env.get(ENV_FILE) or None


def create_key_file(path: str) -> bytes:
    """Write a new random master key to `path` (which must not exist), mode 0600."""
    key = os.urandom(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)                     # whatever the umask
        os.write(fd, key.hex().encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    return key


def master_key_id(master: bytes) -> str:
    """A short public name of a master key (it reveals nothing of the key)."""
    return hashlib.sha256(b"turnstile master key id\0" + master).hexdigest()[:16]


def new_dek() -> bytes:
    return os.urandom(32)


def wrap_dek(master: bytes, dek: bytes) -> bytes:
    """The stored form of a DEK: JSON with the master key's id, nonce and ciphertext."""
    nonce = os.urandom(_NONCE)
    return json.dumps({"v": 1, "alg": "AES-256-GCM", "master_key_id": master_key_id(master),
                       "nonce": base64.b64encode(nonce).decode(),
                       "wrapped": base64.b64encode(AESGCM(master).encrypt(nonce, dek, _DEK_LABEL)).decode()},
                      sort_keys=True).encode()


def unwrap_dek(master: bytes, stored: bytes, where: str) -> bytes:
    """The DEK of `stored` (wrap_dek's form); MasterKeyError naming `where` if `master`
    is not the key it was wrapped with."""
    try:
        d = json.loads(stored)
        nonce, wrapped = base64.b64decode(d["nonce"]), base64.b64decode(d["wrapped"])
        want = d.get("master_key_id", "?")
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise MasterKeyError(f"{where}: its wrapped data key is unreadable (damaged meta row)") from None
    try:
        return AESGCM(master).decrypt(nonce, wrapped, _DEK_LABEL)
    except InvalidTag:
        raise MasterKeyError(f"wrong master key for {where}: it is wrapped under master key "
                             f"{want}, the key given is {master_key_id(master)}") from None


class Keyring:
    """A shard's DEK in memory: seals and opens its secret fields."""

    def __init__(self, dek: bytes):
        self._aead = AESGCM(dek)

    def seal(self, data: bytes, label: bytes) -> str:
        nonce = os.urandom(_NONCE)
        return base64.b64encode(nonce + self._aead.encrypt(nonce, data, label)).decode()

    def open(self, token: str, label: bytes) -> bytes:
        try:
            raw = base64.b64decode(token, validate=True)
            return self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], label)
        except (InvalidTag, ValueError, TypeError, binascii.Error):
            from .errors import CorruptData
            raise CorruptData("a sealed secret does not open under this shard's data key") from None

    def seal_json(self, obj: dict, label: bytes) -> str:
        return self.seal(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode(), label)

    def open_json(self, token: str, label: bytes) -> dict:
        return json.loads(self.open(token, label))


# -- a shard's wrapping, without opening the shard ---------------------------------------
def shard_key_state(path: str, master: bytes, *, lock: bool = True) -> str:
    """Check `master` against the shard in `path` without taking the shard (a server may
    be serving it): "wrapped" (the key opens it), "clear" (made before master keys;
    Shard.open migrates it), "new" (no shard there yet). MasterKeyError if another key
    wraps it. `lock=False` for a copy nobody else opens (a backup): nothing is written."""
    from .storage import Storage
    stored = Storage.peek_meta(path, "dek", lock=lock)
    if stored is None:
        return "clear" if Storage.peek_meta(path, "schema", lock=lock) is not None else "new"
    unwrap_dek(master, stored, path)
    return "wrapped"


def rotate_master_key(path: str, old: bytes, new: bytes) -> str:
    """Re-wrap the data key of the shard in `path` from master key `old` to `new`: one
    meta row in one transaction, then the file is compacted so the old wrapping is not
    left in a free page. Offline (it takes the shard's owner.lock). Returns "rotated", or
    "already" when `new` wraps it already (a rotation run again after it stopped)."""
    from .storage import Storage
    if not os.path.exists(os.path.join(path, "data.mdb")):
        raise MasterKeyError(f"{path} is not a shard")
    storage = Storage(path)
    try:
        stored = storage.get_meta_bytes("dek")
        if stored is None:
            raise MasterKeyError(f"{path} keeps its secrets in clear (made before master keys); "
                                 f"open it once with this version to wrap them, then rotate")
        try:
            dek = unwrap_dek(old, stored, path)
        except MasterKeyError:
            try:
                unwrap_dek(new, stored, path)
            except MasterKeyError:
                raise MasterKeyError(f"neither the current nor the new master key opens {path} "
                                     f"(it is wrapped under master key "
                                     f"{json.loads(stored).get('master_key_id', '?')})") from None
            return "already"
        storage.put_meta({"dek": wrap_dek(new, dek), "compact": b"1"})
        storage.compact()
        storage.put_meta({"compact": None})
        return "rotated"
    finally:
        storage.close()
