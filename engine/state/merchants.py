"""Merchants inside a venue (二次消费, 一票通游): a boat company, a cable car, a restaurant,
a shop. A merchant is set by the venue's operator (cmd.merchant, a MERCHANT record,
format 7) with

- the zones it runs: consumption points. At a consumption point each person of a ticket
  is admitted once, ever (a boat ride, a meal, a show is had once), whatever the
  product's re-entry rule: the next scan answers ALREADY_USED (native/tickets.pxi,
  ZoneRule.once). The zones' gates are the merchant's terminals; a package part that is
  such a zone (the combo's boat ride) is redeemed there by the one scan path, online or
  offline (offline bundles carry the flag, and a redeemed code is in their exhausted set).
- the stations it sells at: its tills. A station named by a merchant is that merchant's;
  only the merchant's channel opens shifts there.

The merchant's principals (role merchant) sell as channel `<merchant id>`: the channel a
merchant's id names sells only products whose every zone the merchant runs (checked in
sales.hold_lines, the path of Quote, Hold and Buy), and opens shifts only at the
merchant's stations. Their sales are counted per channel and station in the finance
ledger like any sale; what they owe the merchant is the product's revenue split
(SetRevenueSplit), as a package's parts are, in the settlement.

Replay applies the record as it is.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import CorruptData, FailedPrecondition, InvalidArgument, PermissionDenied
from ..journal import Record, json_record
from ..model import Merchant, Product, Violation
from .catalog import find, venue_of
from .validate import arg, ident_arg, text_arg

if TYPE_CHECKING:
    from .core import ShardState

MAX_ZONES = 50
MAX_STATIONS = 100


def set_merchant(st: ShardState, args: dict, now: int) -> Merchant:
    """Validate a MERCHANT command and apply it: the merchant as now set."""
    v = venue_of(st, args)
    for name in args:
        if name not in ("venue", "id", "name", "zones", "stations"):
            raise InvalidArgument("not a field of a merchant", field=name)
    mid = ident_arg(args, "id")
    if mid == v.id:
        raise InvalidArgument("the venue's own id names the venue (its share of a split), not a "
                              "merchant", field="id")
    name = text_arg(args, "name", mid, 64)
    r = {"venue": v.id, "id": mid, "name": name, "zones": [], "stations": []}
    for what, limit in (("zones", MAX_ZONES), ("stations", MAX_STATIONS)):
        ids = arg(args, what, list, [])
        if len(ids) > limit:
            raise InvalidArgument(f"at most {limit}", field=what)
        owner_of = st.zone_merchant if what == "zones" else st.station_merchant
        for i, x in enumerate(ids):
            f = f"{what}[{i}]"
            if not isinstance(x, str):
                raise InvalidArgument("must be an id", field=f)
            if what == "zones":
                x = find(st, "zone", st.zone_idx, v.id, x, f)[1]
            else:
                try:
                    x = ident_arg({"id": x}, "id")
                except InvalidArgument as e:
                    raise InvalidArgument(e.message, field=f) from None
            if x in r[what]:
                raise InvalidArgument(f"{x} is given twice", field=f)
            owner = owner_of.get((v.id, x))
            if owner is not None and owner != mid:
                raise FailedPrecondition(f"{what[:-1]} {x} is merchant {owner}'s", field=f,
                                         hint=f"take it off {owner} first (SetMerchant)")
            r[what].append(x)
    return apply(st, r)


def apply(st: ShardState, r: dict) -> Merchant:
    venue = r["venue"]
    old = st.merchants.get((venue, r["id"]))
    if old is not None:
        for z in old.zones:
            st.zone_merchant.pop((venue, z), None)
            st.tickets.set_zone_once(st.zone_idx[(venue, z)], False)
        for s in old.stations:
            st.station_merchant.pop((venue, s), None)
    m = Merchant(venue, r["id"], r["name"], tuple(r["zones"]), tuple(r["stations"]))
    for z in m.zones:
        if (venue, z) not in st.zone_idx:
            raise CorruptData(f"merchant {m.id} runs zone {z}, which venue {venue} does not have")
        st.zone_merchant[(venue, z)] = m.id
        st.tickets.set_zone_once(st.zone_idx[(venue, z)], True)
    for s in m.stations:
        st.station_merchant[(venue, s)] = m.id
    st.merchants[(venue, m.id)] = m
    st.journal(json_record(Record.MERCHANT, r), Record.MERCHANT)
    return m


def replay_merchant(st: ShardState, r: dict, fmt: int) -> None:
    """A MERCHANT record (format 7): the merchant as set."""
    apply(st, r)


def of_gate(st: ShardState, venue: str, gate: str) -> str:
    """The merchant whose terminal gate `gate` of `venue` is (it runs the gate's zone), or ""."""
    g = st.gates.get((venue, gate))
    return "" if g is None else st.zone_merchant.get((venue, g.zone), "")


def check_product(st: ShardState, channel: str, p: Product, field: str) -> None:
    """A merchant's channel sells only what it runs: PermissionDenied if `channel` is a
    merchant of the product's venue that does not run each of the product's zones."""
    m = st.merchants.get((p.venue, channel))
    if m is not None and not set(p.zones) <= set(m.zones):
        raise PermissionDenied(f"merchant {m.id} sells only products of the zones it runs "
                               f"({', '.join(m.zones) or 'none'}); {p.id} is not one", field=field)


def check_station(st: ShardState, venue: str, station: str, channel: str, field: str = "station") -> None:
    """A merchant's station is its own, and a merchant sells at its own stations alone."""
    owner = st.station_merchant.get((venue, station))
    if owner is not None and owner != channel:
        raise PermissionDenied(f"station {station} is merchant {owner}'s", field=field)
    if owner is None and (venue, channel) in st.merchants:
        m = st.merchants[(venue, channel)]
        raise PermissionDenied(f"merchant {channel} sells at its own stations "
                               f"({', '.join(m.stations) or 'none set'})", field=field)


def listed(st: ShardState, venue: str) -> list[Merchant]:
    return [m for (v, _), m in sorted(st.merchants.items()) if v == venue]


def dump(st: ShardState) -> list[dict]:
    return [{"venue": m.venue, "id": m.id, "name": m.name, "zones": list(m.zones),
             "stations": list(m.stations)} for m in st.merchants.values()]


def load(st: ShardState, saved: list[dict]) -> None:
    """The merchants of a snapshot's meta (none before meta 7), their zones' flags pushed
    to the core."""
    st.merchants, st.zone_merchant, st.station_merchant = {}, {}, {}
    for r in saved:
        m = Merchant(r["venue"], r["id"], r["name"], tuple(r["zones"]), tuple(r["stations"]))
        st.merchants[(m.venue, m.id)] = m
        for z in m.zones:
            st.zone_merchant[(m.venue, z)] = m.id
            st.tickets.set_zone_once(st.zone_idx[(m.venue, z)], True)
        for s in m.stations:
            st.station_merchant[(m.venue, s)] = m.id


def check(st: ShardState) -> list[Violation]:
    """The zone and station owners are the merchants' own lists, and no more (Shard.check)."""
    zones = {(m.venue, z): m.id for m in st.merchants.values() for z in m.zones}
    stations = {(m.venue, s): m.id for m in st.merchants.values() for s in m.stations}
    out = []
    if zones != st.zone_merchant:
        out.append(Violation("a zone's merchant runs it", f"owners {st.zone_merchant}, merchants {zones}"))
    if stations != st.station_merchant:
        out.append(Violation("a station's merchant lists it",
                             f"owners {st.station_merchant}, merchants {stations}"))
    return out
