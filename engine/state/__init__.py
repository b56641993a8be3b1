"""The shard state machine: catalog, stock, holds, orders, tickets and scans.

ShardState.apply(cmd, now, batch) is the only way state changes. Each handler first
validates everything (raising a TurnstileError and changing nothing), then mutates
memory and appends the journal record (and rows) to the batch. The same handlers
replay the journal on open, with `replaying` set: then rows are not rewritten (they
were committed with the batch that made them) and no codes are rendered.

One state object, one dispatch table, modules by concern. A handler is a function of
the state; at run time each module imports only modules listed above it:

    validate.py  argument checks, each naming the field it refuses
    secrets.py   the holder secret, ticket keys, keyed hashes, sealed ID numbers, codes
    retry.py     retry rows: kept in time buckets, read for a window, pruned by slices
    catalog.py   venues, zones, gates, products, slots, capacity, allotments; find by name
    promos.py    coupons: as set, single-use codes, what a hold's coupon takes off, its use
    seating.py   theatre seats: seat maps, sessions (slots of a map), the seats of holds
                 and tickets (the seats themselves in the core)
    merchants.py merchants inside a venue: the zones they run (consumption points, each
                 person of a ticket admitted once), their stations, what they sell
    members.py   members, their venue's programme (levels, earn and expiry rules), points
                 ledgers: what Confirm earns, Refund takes back, an operator adjusts
    sales.py     quotes, holds, expiry, confirm (tickets issued), orders, refunds, blocks
    changes.py   changes (改签): unused tickets moved to other slots, priced by the rules
    idem.py      idempotency: decided once, a retry gets the first answer
    scans.py     verify by code, ID number, face or batch; scan ids; face enrolment
    offline.py   uploads of offline gates
    snapshot.py  dump and load
    core.py      ShardState (its fields, pending rows, the journal), apply, replay and
                 HANDLERS, the dispatch table; the reads the shard makes are the concern
                 functions bound to ShardState (state.quote(...) is sales.quote(state, ...))
"""
from .changes import ChangeResult, ChangeTerms
from .core import ShardState
from .idem import fingerprint
from .sales import MAX_QTY, ConfirmResult, order_key
from .scans import BatchScanResult, offline_key
from .secrets import mask_id
from ..journal import Batch

__all__ = ["ShardState", "Batch", "ConfirmResult", "ChangeResult", "ChangeTerms", "BatchScanResult", "MAX_QTY", "fingerprint",
           "order_key", "offline_key", "mask_id"]
