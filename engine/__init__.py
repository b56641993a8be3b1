"""Turnstile's embeddable engine: shards, stock, holds, orders, ticket codes, scans.

    from turnstile.engine import Shard, cmd
    shard = Shard.open("data/shard-0")
    hold = shard.run(cmd.hold("ota", "westlake", [HoldItem("adult", ("am-0900",), qty=2)]))

See DESIGN.md sections 3-4 and README.md.
"""
from . import audit, cmd, keyring
from .codes import CodeFields, TicketCodec, verify_offline, parse_unverified
from .errors import (TurnstileError, InvalidArgument, NotFound, AlreadyExists,
                     FailedPrecondition, SoldOut, SlotClosed, SalesPaused, HoldNotActive, TicketUsed,
                     IdempotencyMismatch, PermissionDenied, Overloaded, ShardUnavailable, NotPrimary,
                     StorageFull, QuoteChanged, QuoteExpired, BookingClosed,
                     RefundClosed, CouponRefused, ChangeClosed, StorageError, CorruptData)
from .journal import Command, CommandKind, Record
from .keyring import MasterKeyError
from .model import (Reason, Direction, GateMode, EntryRule, Venue, Zone, Gate, Product, Slot,
                    HoldItem, HoldResult, ScanResult, IssuedTicket, Order, RefundResult,
                    Violation, ID_PATTERN, to_day, day_to_date, DATE_TYPES, DatePrice, PriceTable,
                    CalendarDay, CalendarResult, Quote, QuoteLine, AppliedRule, PriceRule,
                    PriceRules, RULE_KINDS, BookingWindow, RefundPolicy, RefundTier, PassDates,
                    COUPON_KINDS, Coupon, CouponApplied, CouponBatch, CouponStatus,
                    PackagePart, PackageSplit)
from .shard import Shard
from .state import ConfirmResult, BatchScanResult, ChangeResult, ChangeTerms, mask_id
from .writer import GroupCommit
from . import datadir              # backup, restore, shard count, venue moves (over Shard)

__all__ = [
    "audit", "cmd", "datadir", "keyring", "MasterKeyError", "Shard", "GroupCommit", "Command", "CommandKind", "Record",
    "CodeFields", "TicketCodec", "verify_offline", "parse_unverified",
    "TurnstileError", "InvalidArgument", "NotFound", "AlreadyExists", "FailedPrecondition",
    "SoldOut", "SlotClosed", "SalesPaused", "HoldNotActive", "TicketUsed", "IdempotencyMismatch", "PermissionDenied",
    "Overloaded", "StorageFull", "QuoteChanged", "QuoteExpired", "ShardUnavailable", "NotPrimary", "StorageError",
    "CorruptData", "DATE_TYPES", "DatePrice", "PriceTable", "CalendarDay", "CalendarResult", "Quote",
    "QuoteLine", "AppliedRule", "PriceRule", "PriceRules", "RULE_KINDS", "BookingWindow",
    "RefundPolicy", "RefundTier", "RefundClosed", "PassDates",
    "BookingClosed", "CouponRefused", "ChangeClosed", "ChangeTerms", "ChangeResult", "COUPON_KINDS", "Coupon", "CouponApplied", "CouponBatch",
    "CouponStatus", "PackagePart", "PackageSplit",
    "ID_PATTERN", "mask_id", "Reason", "Direction", "GateMode", "EntryRule", "Venue", "Zone", "Gate", "Product", "Slot",
    "HoldItem", "HoldResult", "ScanResult", "IssuedTicket", "Order", "RefundResult",
    "Violation", "ConfirmResult", "BatchScanResult", "to_day", "day_to_date",
]
