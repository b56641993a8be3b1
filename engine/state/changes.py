"""Changes (改签): unused tickets of one order line moved to other slots (another time or
day) of the same product, in one step of the writer: stock taken on the new slots and
returned on the old, the old codes voided, new codes issued to the same holders, the new
price by today's rules (the price calendar, pricing rules and booking window of the new
slot, as a hold would be priced) and a fee by the product's refund policy for the old
tickets at this time (closed when a refund would be: CHANGE_CLOSED).

What the buyer owes is `due_fen` = new price + fee - what the old tickets were paid: paid
with the change when positive (the payment must say exactly that), returned to them when
negative. The order keeps the old line (its tickets voided), gains a line of the new
tickets (their price what a refund gives back) and records the change.

A CHANGE record carries the effects (tickets voided, stock returned and taken, the
tickets issued with their days, holder keys, the money), applied as they are on replay.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import _core
from ..errors import (AlreadyExists, ChangeClosed, CorruptData, FailedPrecondition, InvalidArgument, NotFound, SoldOut,
                      TurnstileError)
from ..journal import Record, json_record
from ..model import IssuedTicket
from . import finance, members
from .catalog import channel_of, refund_fee_pct
from .sales import check_holders, choose_tickets, hold_lines, member_refund, order_row, order_tickets, payment_arg
from .secrets import holder_key, mask_id, render, render_if_valid
from .validate import arg, ident_arg

if TYPE_CHECKING:
    from .core import ShardState


@dataclass(frozen=True)
class ChangeTerms:
    """What a change would do (Shard.change_terms; the answer of a change without its
    new tickets): the old tickets, the new slots and unit price, and the money."""
    order_id: str
    change_id: str
    product: str
    tickets: list[int]              # the order's tickets given up (voided by the change)
    slots: list[str]                # the new slots, one per zone
    unit_price_fen: int             # the new price per person
    old_paid_fen: int               # what the old tickets were paid
    new_amount_fen: int             # what the new tickets cost
    fee_fen: int                    # the change fee kept
    due_fen: int                    # new + fee - old: paid by the buyer (> 0) or returned (< 0)


@dataclass(frozen=True)
class ChangeResult:
    terms: ChangeTerms
    new_tickets: list[IssuedTicket]
    key_id: int = -1                # what the new codes were issued with
    signed: bool = True

    def to_dict(self) -> dict:
        """Stored for retries without the codes (rendered again, as for a confirm)."""
        return {"terms": vars(self.terms),
                "tickets": [[t.ticket_id, t.product, t.persons, t.holder] for t in self.new_tickets],
                "key_id": self.key_id, "signed": self.signed}


def restore(st: ShardState, d: dict) -> ChangeResult:
    tickets = [IssuedTicket(tid, product, persons, render_if_valid(st, tid, d["key_id"], d["signed"]),
                            holder) for tid, product, persons, holder in d["tickets"]]
    return ChangeResult(ChangeTerms(**d["terms"]), tickets, d["key_id"], d["signed"])


def _terms(st: ShardState, args: dict, now: int) -> tuple[ChangeTerms, dict, bytes, dict, int, dict]:
    order_id = ident_arg(args, "order_id")
    change_id = ident_arg(args, "change_id")
    channel = channel_of(st, args)
    want = arg(args, "tickets", list, [])
    slots = arg(args, "slots", list)
    key, raw = order_row(st, channel, order_id)
    if raw is None:
        raise NotFound(f"no order {order_id} of channel {channel}", field="order_id")
    row = json.loads(raw)
    if any(c["change_id"] == change_id for c in row.get("changes", ())):
        raise AlreadyExists(f"change {change_id} exists", field="change_id")
    where, paid = order_tickets(row)
    chosen = choose_tickets(st, order_id, where, want,
                            _core.STATE_USED | _core.STATE_VOIDED | _core.STATE_BLOCKED,
                            "was used, refunded, changed or is blocked")
    line = {where[t][0] for t in chosen}
    if len(line) > 1:
        raise InvalidArgument("tickets of one order line at a time (one product and slots)",
                              field="tickets")
    li = line.pop()
    ln = row["lines"][li]
    if ln.get("seats"):
        raise FailedPrecondition("a seated ticket is not changed: refund it and buy another seat",
                                 field="tickets")
    sizes = {st.tickets.record(t)["group"] for t in chosen}      # a group refunded in part
    if len(sizes) > 1:
        raise InvalidArgument("tickets admitting as many persons each at a time", field="tickets")
    group = sizes.pop()
    venue = st.venues[row["venue"]]
    p = st.products[(venue.id, ln["product"])]
    if slots == ln["slots"]:
        raise InvalidArgument("the tickets are for these slots already", field="slots")
    start = st.slot_defs[(venue.id, ln["slots"][0])].start
    pct = refund_fee_pct(st.refund_policy.get((p.venue, p.id)), p, start, now)
    if pct is None:
        raise ChangeClosed(f"{p.id}'s refund policy gives nothing back this close to (or this "
                           "long after) the slot's start: its tickets can't be changed", field="tickets")
    try:        # priced and checked as a hold of the same items for the new slots would be
        new, = hold_lines(st, row["channel"], venue, {"items": [
            {"product": p.id, "slots": slots, "qty": len(chosen), "group": group}]}, now)
    except TurnstileError as e:
        if e.field and e.field.startswith("items[0]."):
            e.field = e.field[len("items[0]."):]
        raise
    old = sum(paid[t] for t in chosen)
    fee = sum((paid[t] * pct + 50) // 100 for t in chosen)
    amount = new.price * group * len(chosen)
    terms = ChangeTerms(order_id, change_id, p.id, chosen, list(slots), new.price, old, amount,
                        fee, amount + fee - old)
    return terms, row, key, ln, li, new


def change_terms(st: ShardState, args: dict, now: int) -> ChangeTerms:
    """What a change would do and cost now, changing nothing (stock is checked when the
    change is made)."""
    return _terms(st, args, now)[0]


def change_order(st: ShardState, args: dict, now: int) -> ChangeResult:
    terms, row, key, ln, li, new = _terms(st, args, now)
    shift, station = finance.shift_for_sale(st, args, row["venue"])
    method = reference = ""
    if terms.due_fen > 0 or args.get("payment") is not None:
        method, reference, amount = payment_arg(args)
        if amount != max(terms.due_fen, 0):
            raise InvalidArgument(f"paid {amount} fen, the change costs {max(terms.due_fen, 0)} fen",
                                  field="payment.amount_fen")
    # the holders of the tickets moved hold the new ones (ID limits checked for the new
    # day and slot, the moved tickets not counted)
    sealed = row.get("holders", [])
    sealed = sealed[li] if li < len(sealed) else []
    k_of = {ln["first_ticket"] + k * ln["ncomp"]: k for k in range(ln["qty"])}
    ids = [st.unseal(sealed[k_of[t]]).upper() for t in terms.tickets] if sealed else []
    hkeys = [holder_key(st, x) for x in ids]
    if hkeys:
        check_holders(st, row["venue"], [new], [hkeys], now, set(terms.tickets))
    need = new.qty * new.group
    taken = []
    for c, (s, a) in enumerate(zip(new.slots, new.allots)):
        if not st.slots.take(s, a, need):
            for ts, ta in taken:
                st.slots.release(ts, ta, need)
            raise SoldOut(f"slot {st.slot_list[s]} has not {need} left", field=f"slots[{c}]")
        taken.append((s, a))
    p = st.products[(row["venue"], terms.product)]
    first_day = st.slots.slot(new.slots[0])["day"]
    days = st.pass_dates.get((p.venue, p.id)) or (first_day, first_day + p.rule.valid_days - 1)
    returns = [[st.slot_idx[(row["venue"], sid)], a, new.group]
               for _ in terms.tickets for sid, a in zip(ln["slots"], ln["allots"])]
    rec = {"order_id": terms.order_id, "channel": row["channel"], "change_id": terms.change_id,
           "tickets": terms.tickets, "_returns": returns,
           "_takes": [[s, a, need] for s, a in taken], "p": new.p, "group": new.group,
           "qty": new.qty, "slots": list(new.slots), "days": list(days), "holder_keys": hkeys,
           "unit_price_fen": terms.unit_price_fen, "fee_fen": terms.fee_fen, "due_fen": terms.due_fen,
           "_now": now}
    # the money: paid by the change's payment, or given back the way the order was paid
    way = method if terms.due_fen > 0 else row["payment"]["method"]
    fin = finance.posting(st, row["venue"], now)
    finance.add(fin, (row["channel"], station or row.get("station", ""), terms.product, way),
                changed_tickets=len(terms.tickets), fee_fen=terms.fee_fen,
                change_in_fen=max(terms.due_fen, 0), change_out_fen=max(-terms.due_fen, 0))
    persons = len(terms.tickets) * new.group
    finance.add_split(st, fin, terms.product, -(terms.old_paid_fen - terms.fee_fen), persons)
    finance.add_split(st, fin, terms.product, terms.new_amount_fen, persons)
    if terms.due_fen:
        finance.shift_move(fin, shift, way, terms.due_fen > 0, abs(terms.due_fen))
    rec["fin"] = finance.as_record(fin)
    if row.get("redeemed"):         # the points the moved tickets were paid with go back
        back, pts = member_refund(st, row, terms.tickets, order_tickets(row)[0], {}, 0, 0,
                                  terms.change_id, now, take_earned=False)[1:]
        if back:
            rec["pts"] = pts
    first = _apply(st, rec, taken=True)
    key_id = st.codec.issuing_key if st.codec.keys else -1
    signed = ln.get("signed", True)
    ncomp = len(p.zones)
    tickets = [IssuedTicket(first + k * ncomp, p.id, new.group, render(st, first + k * ncomp, key_id, signed),
                            mask_id(ids[k]) if ids else "") for k in range(new.qty)]
    row["lines"].append({"product": p.id, "qty": new.qty, "group": new.group,
                         "slots": list(terms.slots), "allots": list(new.allots),
                         "unit_price_fen": terms.unit_price_fen, "first_ticket": first, "ncomp": ncomp,
                         "key_id": key_id, "signed": signed})
    pkg = st.packages.get((p.venue, p.id))
    if pkg is not None:
        row["lines"][-1]["split"] = pkg.split(terms.new_amount_fen, new.qty * new.group)
    if sealed:                      # sealed ID numbers per line, the new line's the moved ones'
        holders = row["holders"]
        holders += [[]] * (len(row["lines"]) - 1 - len(holders))
        holders.append([sealed[k_of[t]] for t in terms.tickets])
    earned = row.get("member_points")
    if earned:                      # the new tickets carry the points the moved ones earned
        for k, t in enumerate(terms.tickets):
            n = earned.pop(str(t), 0)
            if n:
                earned[str(first + k * ncomp)] = n
    row.setdefault("changes", []).append({
        "change_id": terms.change_id, "tickets": terms.tickets, "first_ticket": first,
        "slots": list(terms.slots), "unit_price_fen": terms.unit_price_fen, "fee_fen": terms.fee_fen,
        "due_fen": terms.due_fen, "payment": {"method": method, "reference": reference,
                                              "amount_fen": max(terms.due_fen, 0)}, "at": now,
        **({"shift": shift, "station": station} if shift else {})})
    st.put_row(key, json.dumps(row).encode())
    finance.index_event(st, b"cx/", row["venue"], rec["fin"]["day"], key, terms.change_id)
    return ChangeResult(terms, tickets, key_id, signed)


def _apply(st: ShardState, rec: dict, taken: bool) -> int:
    """The effects of a change: old tickets voided and their stock returned, the new
    stock sold (taken first unless `taken`), the new tickets issued to the holder keys;
    returns the first new ticket id."""
    for t in rec["tickets"]:
        if not st.tickets.is_code(t):
            raise CorruptData(f"a change voids ticket {t}, which is no code")
        st.tickets.void(t)
    for s, a, q in rec["_returns"]:
        st.slots.unsell(s, a, q)
    for s, a, q in rec["_takes"]:
        if not taken and not st.slots.take(s, a, q):
            raise CorruptData(f"a replayed change of order {rec['order_id']} does not fit slot {s}")
        st.slots.sell(s, a, q)
    first = st.tickets.issue(rec["p"], rec["group"], rec["days"][0], rec["days"][1], rec["slots"], rec["qty"])
    finance.issued(st, rec["p"], rec["days"], first, rec["qty"], len(rec["slots"]))
    if "fin" in rec:                # format 4: the finance posting as made
        finance.book(st, rec["fin"])
    if "pts" in rec:                # format 6: the member's points given back
        members.apply(st, rec["pts"])
    if "first" in rec and rec["first"] != first:
        raise CorruptData(f"a replayed change issued ticket {first}, the journal says {rec['first']}")
    rec["first"] = first
    ncomp = len(rec["slots"])
    for k, hk in enumerate(rec["holder_keys"]):
        st.holders.setdefault(hk, []).append(first + k * ncomp)
    st.journal(json_record(Record.CHANGE, rec), Record.CHANGE)
    return first


def replay_change(st: ShardState, rec: dict, fmt: int) -> None:
    """A CHANGE record (format 3): its effects as they were applied."""
    _apply(st, rec, taken=False)
