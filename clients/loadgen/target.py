"""Where the load goes and as whom: the address (127.0.0.1 unless allowed), the API keys
by what they are used for, and the bounds every scenario keeps."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from ..base import Connection, RetryPolicy, TlsConfig, read_keys_file

LOOPBACK = "127.0.0.1"
MAX_COUNT = 10_000_000            # operations one scenario may plan
MAX_DURATION_S = 3600.0           # the longest load phase allowed
CALL_TIMEOUT = 30.0               # every call's deadline (s)
SETUP_TIMEOUT = 120.0             # set-up calls (a confirm of 10,000 tickets)
MAX_QTY = 10_000                  # tickets per Hold item (the engine's limit)


class LoadgenError(Exception):
    """A scenario could not be set up or run (bad address, missing key, no stock, ...).
    Not a correctness verdict: that is `Result.ok`."""


def check_address(address: str, allow_remote: bool = False) -> str:
    """HOST:PORT, refused unless HOST is 127.0.0.1 (or allow_remote)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise LoadgenError(f"address {address!r} is not HOST:PORT")
    if host != LOOPBACK and not allow_remote:
        raise LoadgenError(f"refusing to load {host}: only {LOOPBACK} is a target unless "
                           f"allow_remote / --allow-remote is given")
    return address


def bound(count: int, duration_s: float) -> None:
    """Refuse a run that plans too much or would last too long."""
    if not 0 < count <= MAX_COUNT:
        raise LoadgenError(f"count must be between 1 and {MAX_COUNT:,}")
    if not 0 < duration_s <= MAX_DURATION_S:
        raise LoadgenError(f"duration must be between 0 and {MAX_DURATION_S:.0f} s")


ROLE_ALIASES = {"gate": "gate", "sales": "sales", "channel": "sales", "seller": "sales",
                "admin": "admin", "operator": "admin"}


@dataclass
class Keys:
    """API keys by what they are used for: `gate` scans, `sales` keys buy (one channel
    each; the flash sale spreads its asks over them), `admin` sets up and reads reports."""

    gate: str | None = None
    sales: list[str] = field(default_factory=list)
    admin: str | None = None

    @classmethod
    def parse(cls, specs: Iterable[str], keys: "Keys | None" = None) -> "Keys":
        """From `[ROLE=]KEY` strings (comma-separated lists allowed); ROLE is gate, sales
        (or channel, seller) or admin (or operator). A key without a role is used for
        every role not given otherwise (an admin key can do everything)."""
        k = keys or cls()
        bare: list[str] = []
        for spec in specs:
            for item in (s.strip() for s in spec.split(",")):
                if not item:
                    continue
                role, eq, key = item.partition("=")
                if eq and role.lower() in ROLE_ALIASES:
                    role = ROLE_ALIASES[role.lower()]
                    if not key:
                        raise LoadgenError(f"empty key for {role}")
                    if role == "sales":
                        k.sales.append(key)
                    else:
                        setattr(k, role, key)
                elif eq and "_" not in role:
                    raise LoadgenError(f"unknown key role {role!r} (gate, sales, admin)")
                else:
                    bare.append(item)
        for key in bare:
            k.gate = k.gate or key
            k.admin = k.admin or key
            if key not in k.sales:
                k.sales.append(key)
        return k

    @classmethod
    def from_file(cls, path: str, keys: "Keys | None" = None) -> "Keys":
        """From `turnstile serve`'s DATA/demo-keys.txt (principal, role, key per line):
        the admin key, the gate key, and every channel and seller key for sales."""
        k = keys or cls()
        try:
            rows = read_keys_file(path)
        except OSError as e:
            raise LoadgenError(f"cannot read keys file {path}: {e.strerror}") from None
        except ValueError as e:
            raise LoadgenError(str(e)) from None
        for role, key in rows.values():
            if role == "admin":
                k.admin = key
            elif role == "operator" and not k.admin:
                k.admin = key
            elif role == "gate" and not k.gate:
                k.gate = key
            elif role in ("channel", "seller") and key not in k.sales:
                k.sales.append(key)
        return k

    def need(self, what: str) -> str:
        key = self.sales[0] if what == "sales" and self.sales else getattr(self, what, None)
        if not key or isinstance(key, list):
            raise LoadgenError(f"this scenario needs a {what} key (--key {what}=KEY or --keys-file)")
        return key

    def any(self) -> str:
        key = self.admin or self.gate or (self.sales[0] if self.sales else None)
        if not key:
            raise LoadgenError("no API key given (--key or --keys-file)")
        return key


@dataclass
class Target:
    """Where the load goes: a server address (any shard; the venue's shard is found
    through the shard map), the keys, the venue; `tls` to reach it over TLS
    (clients.base.TlsConfig), else insecure."""

    address: str = f"{LOOPBACK}:50051"
    keys: Keys = field(default_factory=Keys)
    venue: str = "westlake"
    allow_remote: bool = False
    tls: TlsConfig | None = None

    def __post_init__(self) -> None:
        self.address = check_address(self.address, self.allow_remote)

    def connect(self, key: str, timeout: float = CALL_TIMEOUT) -> Connection:
        """A connection to the target as the holder of `key` (clients.base): every call
        has the deadline `timeout`, and one that is safe to repeat is retried within it."""
        return Connection(self.address, key, tls=self.tls, timeout=timeout,
                          retry=RetryPolicy(total_s=timeout))
