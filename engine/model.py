"""Vocabulary of DESIGN.md section 3 as Python types: catalog, reasons, results."""
from __future__ import annotations

import datetime as _dt
import enum
import re
from dataclasses import dataclass, field, asdict
from typing import NamedTuple

from . import _core

DAY = 86400


class Reason(enum.IntEnum):
    """Why a scan was admitted or refused: the closed set shared by API, reports, tests."""

    OK = 0
    OK_REENTRY = 1
    FORGED = 2
    UNKNOWN = 3
    VOIDED = 4
    BLOCKED = 5
    ALREADY_USED = 6
    NOT_YET_VALID = 7
    EXPIRED = 8
    WRONG_SLOT = 9
    WRONG_ZONE = 10
    NOT_INSIDE = 11
    ZONE_FULL = 12
    ENTRY_LIMIT = 13

    @property
    def admitted(self) -> bool:
        return self in (Reason.OK, Reason.OK_REENTRY)


assert tuple(r.name for r in Reason) == _core.REASONS, "Reason and the core disagree"
REASON_OF = tuple(Reason)       # Reason by value, without Enum.__call__ on the hot path


class Direction(enum.IntEnum):
    IN = 1
    OUT = 2


class GateMode(enum.IntEnum):
    """Which directions a gate scans."""

    IN = 1
    OUT = 2
    BOTH = 3


def to_day(d: _dt.date | str | int) -> int:
    """A venue-local calendar day as days since 1970-01-01."""
    if isinstance(d, int):
        return d
    if isinstance(d, str):
        d = _dt.date.fromisoformat(d)
    return (d - _dt.date(1970, 1, 1)).days


def day_to_date(day: int) -> _dt.date:
    return _dt.date(1970, 1, 1) + _dt.timedelta(days=day)


# what an id (venue, zone, gate, product, slot, order, channel...) may be
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/-]{0,63}\Z")


@dataclass(frozen=True)
class EntryRule:
    """How a ticket admits.

    max_entries: visits over the whole validity (1 = single use, N = punch card,
    0 = unlimited). daily_entries: visits per day (0 = unlimited). reentry: after an
    exit, the same visit may re-enter on the same day (OK_REENTRY) without using a
    visit. valid_days: days of validity from the visit day. slot_grace_s: seconds a
    holder may arrive before or after the slot window.
    """

    max_entries: int = 1
    daily_entries: int = 0
    reentry: bool = False
    valid_days: int = 1
    slot_grace_s: int = 1800


@dataclass(frozen=True)
class Venue:
    id: str
    name: str
    utc_offset_s: int = 8 * 3600


@dataclass(frozen=True)
class Zone:
    id: str
    venue: str
    name: str
    live_capacity: int = 0
    enforce_exit: bool = False


@dataclass(frozen=True)
class Gate:
    id: str
    venue: str
    zone: str
    mode: GateMode = GateMode.BOTH


@dataclass(frozen=True)
class Product:
    """A sellable ticket type. Each zone in `zones` is one admission right (a combo
    lists several); a hold needs one slot per zone."""

    id: str
    venue: str
    name: str
    zones: tuple[str, ...]
    rule: EntryRule = EntryRule()
    price_fen: int = 0
    channel_prices: dict[str, int] = field(default_factory=dict)
    channels: tuple[str, ...] = ()          # empty: every channel may sell it
    real_name: bool = False
    max_group: int = 1                      # persons one code may admit
    refundable: bool = True
    refund_fee_pct: int = 0

    def price_for(self, channel: str) -> int:
        return self.channel_prices.get(channel, self.price_fen)


@dataclass(frozen=True)
class Slot:
    """Stock of one zone on one day in one time window (UTC seconds)."""

    id: str
    zone: str
    day: int
    start: int
    end: int
    capacity: int
    venue: str = ""             # the venue of its zone (ids are unique within a venue)


@dataclass(frozen=True)
class HoldItem:
    """qty codes of product, each admitting `group` persons, one slot per zone."""

    product: str
    slots: tuple[str, ...]
    qty: int = 1
    group: int = 1


class ScanResult(NamedTuple):
    """The answer to one scan (a tuple: cheap to make on the hot path)."""

    reason: Reason
    ticket: int = -1            # the code's ticket id, -1 if it could not be read
    persons: int = 0            # persons admitted (entry) or let out (exit)

    @property
    def admitted(self) -> bool:
        return self.reason <= Reason.OK_REENTRY


@dataclass(slots=True)
class HoldResult:
    hold_id: int
    expires_at: int
    amount_fen: int
    items: list[dict]

    def to_dict(self) -> dict:
        # what the idempotency row stores; dataclasses.asdict's deep copy was half the
        # engine's cost of an idempotent hold (items are plain JSON values, made per result)
        return {"hold_id": self.hold_id, "expires_at": self.expires_at,
                "amount_fen": self.amount_fen, "items": self.items}


@dataclass(frozen=True)
class IssuedTicket:
    ticket_id: int
    product: str
    persons: int
    code: str
    holder: str = ""            # masked ID number for real-name tickets


@dataclass(frozen=True)
class Order:
    order_id: str
    channel: str
    venue: str
    hold_id: int
    amount_fen: int
    refunded_fen: int
    payment: dict
    lines: list[dict]
    refunds: list[dict]
    created: int

    @classmethod
    def from_row(cls, row: dict) -> "Order":
        return cls(**{k: row[k] for k in cls.__dataclass_fields__})

    def ticket_ids(self) -> list[int]:
        return [line["first_ticket"] + i * line["ncomp"]
                for line in self.lines for i in range(line["qty"])]


@dataclass(frozen=True)
class RefundResult:
    order_id: str
    refund_id: str
    tickets: list[int]
    amount_fen: int
    fee_fen: int

    def to_dict(self) -> dict:
        return {"order_id": self.order_id, "refund_id": self.refund_id,
                "tickets": list(self.tickets), "amount_fen": self.amount_fen, "fee_fen": self.fee_fen}


@dataclass(frozen=True)
class Violation:
    """One broken invariant found by check()."""

    invariant: str
    detail: str
