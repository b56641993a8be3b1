"""The one error family of the engine.

Every error has a stable machine `code` (clients and the gRPC layer rely on it), a
human message, and optionally the request `field` it is about and a `hint`. The
server maps each class to one gRPC status in one table (server/errors.py); a
refused scan is never an error, it is a ScanResult with a Reason.
"""
from __future__ import annotations


class TurnstileError(Exception):
    """Base of every engine error."""

    code = "INTERNAL"

    def __init__(self, message: str, *, field: str | None = None, hint: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        self.hint = hint
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        s = self.message
        if self.field:
            s = f"{self.field}: {s}"
        if self.hint:
            s = f"{s} ({self.hint})"
        return s

    def to_dict(self) -> dict:
        return {"type": type(self).__name__, "code": self.code, "message": self.message,
                "field": self.field, "hint": self.hint}


class InvalidArgument(TurnstileError):
    """A request field is malformed or out of range; nothing was changed."""

    code = "INVALID_ARGUMENT"


class NotFound(TurnstileError):
    """A named venue, zone, gate, product, slot, hold or order does not exist."""

    code = "NOT_FOUND"


class AlreadyExists(TurnstileError):
    """An object with that id exists already."""

    code = "ALREADY_EXISTS"


class FailedPrecondition(TurnstileError):
    """The request is well formed but the current state forbids it."""

    code = "FAILED_PRECONDITION"


class SoldOut(FailedPrecondition):
    """Not enough stock left in the slot (or the channel's allotment)."""

    code = "SOLD_OUT"


class SlotClosed(FailedPrecondition):
    """The slot's window has ended (or its day is past): it can't be held or sold."""

    code = "SLOT_CLOSED"


class SalesPaused(FailedPrecondition):
    """Sales of the venue, the slot's zone or the slot are paused by an operator
    (AdminService.SetSalesPaused)."""

    code = "SALES_PAUSED"


class BookingClosed(FailedPrecondition):
    """The product's booking window is not open for this slot (too early, too late, a
    day of the week it is not sold for): never a sale."""

    code = "BOOKING_CLOSED"


class IdLimitExceeded(FailedPrecondition):
    """A real-name holder would have more tickets of a product for a day or a slot than
    the product allows one ID number (across every channel)."""

    code = "ID_LIMIT"


class Blacklisted(FailedPrecondition):
    """A holder is on the venue's person blacklist: no sale to that ID number."""

    code = "BLACKLISTED"


class RefundClosed(FailedPrecondition):
    """The product's refund policy gives nothing back at this time (after its last tier,
    e.g. once the slot started)."""

    code = "REFUND_CLOSED"


class ChangeClosed(FailedPrecondition):
    """The product's refund policy gives nothing back at this time, so its tickets can't
    be changed either (e.g. once the slot started)."""

    code = "CHANGE_CLOSED"


class CouponRefused(FailedPrecondition):
    """A coupon a Quote or Hold named can't be used; nothing is held. The code says why:
    COUPON_INVALID (no such code, a forged one, or withdrawn), COUPON_NOT_APPLICABLE
    (not on this day, channel or items, or below its minimum spend), COUPON_USED (a
    single-use code taken already), COUPON_EXHAUSTED (its budget would be passed),
    COUPON_LIMIT (this person has used it as often as it allows)."""

    code = "COUPON_INVALID"


class SeatTaken(FailedPrecondition):
    """A seat a hold named is held or sold already (or never sold); nothing is held."""

    code = "SEAT_TAKEN"


class InsufficientPoints(FailedPrecondition):
    """A member's points balance is short of what a correction or redemption takes; a
    balance never goes below zero."""

    code = "INSUFFICIENT_POINTS"


class QuoteChanged(FailedPrecondition):
    """A Hold named a quote whose prices or items no longer hold (or are not these)."""

    code = "QUOTE_CHANGED"


class QuoteExpired(FailedPrecondition):
    """A Hold named a quote past its expiry."""

    code = "QUOTE_EXPIRED"


class HoldNotActive(FailedPrecondition):
    """The hold expired, was released, or was confirmed under another order."""

    code = "HOLD_NOT_ACTIVE"


class TicketUsed(FailedPrecondition):
    """A ticket that was used (or already refunded) cannot be refunded."""

    code = "TICKET_NOT_REFUNDABLE"


class IdempotencyMismatch(FailedPrecondition):
    """The idempotency key was used before with a different request."""

    code = "IDEMPOTENCY_KEY_REUSED"


class PermissionDenied(TurnstileError):
    """The caller's channel may not sell this product."""

    code = "CHANNEL_NOT_ALLOWED"


class Overloaded(TurnstileError):
    """The shard's queue is full; retry with backoff."""

    code = "OVERLOADED"


class StorageFull(TurnstileError):
    """The shard's LMDB map is nearly full: every command is refused whole, before any of
    it is applied, until the shard is opened with a larger map (map_size); queries go on."""

    code = "STORAGE_FULL"


class ShardUnavailable(TurnstileError):
    """The shard is closed, or stopped after a storage failure and must be reopened."""

    code = "SHARD_UNAVAILABLE"


class NotPrimary(ShardUnavailable):
    """A replicated shard that is not (or no longer) its shard's primary: a newer owner
    holds the log of record (engine/recordlog.py), or this process is a standby. Route
    to the primary the shard map names and ask again."""

    code = "NOT_PRIMARY"


class StandbyBehind(ShardUnavailable):
    """A standby asked for an answer no staler than it can give now (the caller's
    turnstile-max-lag-ms): nothing was read; ask the primary, or another standby."""

    code = "STANDBY_BEHIND"


class StorageError(TurnstileError):
    """LMDB refused a write; the shard stops accepting commands."""

    code = "STORAGE"


class CorruptData(TurnstileError):
    """The data dir does not replay to a consistent state."""

    code = "CORRUPT_DATA"
