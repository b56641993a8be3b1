"""Mutations of a valid request, driven by its descriptor and a seeded random.Random.

`mutate(msg, rng, pool, now)` changes one field somewhere in `msg` (sometimes two or
three), in place, and returns Mutations: where (a proto path such as
`items[0].slot_ids[0]`), what (a short label such as `len65` or `nanos=-5`), and whether
the contract says precisely what the answer must be (an id longer than 64 characters, an
invalid Timestamp or a malformed date is INVALID_ARGUMENT naming that field).
`probes(msg, pool)` lists the systematic ones every field gets once per run."""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

from google.protobuf.descriptor import FieldDescriptor as F

from .protos import is_map

MAX_DEPTH = 4
HUGE = (101, 1001, 10_001)            # just over the documented limits (items 100, scans 10,000)
# Timestamp.seconds of 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z: the valid range
TS_MIN, TS_MAX = -62135596800, 253402300799

BAD_DATES = ("2026-13-40", "2026-02-30", "yesterday", "tomorrow", "0000-00-00", "20261203",
             "2026-1-3", "9999-99-99", "-2026-01-01", "２０２６-１２-０３", "2026-12-03T00:00:00",
             " 2026-12-03", "2026-12-03\x00", "2026/12/03")

INT_RANGES = {F.CPPTYPE_INT32: (-2**31, 2**31 - 1), F.CPPTYPE_INT64: (-2**63, 2**63 - 1),
              F.CPPTYPE_UINT32: (0, 2**32 - 1), F.CPPTYPE_UINT64: (0, 2**64 - 1)}


@dataclass
class Mutation:
    path: str                         # proto path of the field changed ("" = whole request)
    what: str                         # e.g. "len65", "nanos=-5", "huge:10001", "swap"
    expect_invalid: bool = False      # the contract names this INVALID_ARGUMENT on `path`

    def __str__(self) -> str:
        return f"{self.path or '<request>'}={self.what}"


@dataclass
class Site:
    path: str
    parent: object                    # the message holding the field
    field: object                     # its FieldDescriptor
    index: int | None = None          # an element of a repeated field


def sites(msg, prefix: str = "", depth: int = 0) -> list[Site]:
    """Every field of the message type (set or not), every element of repeated fields,
    recursively into set sub-messages."""
    out = []
    for f in msg.DESCRIPTOR.fields:
        path = f"{prefix}{f.name}"
        out.append(Site(path, msg, f))
        if depth >= MAX_DEPTH or is_map(f):
            continue
        if f.is_repeated:
            for i, v in enumerate(getattr(msg, f.name)[:3]):
                out.append(Site(f"{path}[{i}]", msg, f, i))
                if f.type == F.TYPE_MESSAGE:
                    out.extend(sites(v, f"{path}[{i}].", depth + 1))
        elif f.type == F.TYPE_MESSAGE and msg.HasField(f.name):
            out.extend(sites(getattr(msg, f.name), f"{path}.", depth + 1))
    return out


def _kind(name: str) -> str:
    """The pool an id field draws swapped values from: slot_ids -> slot, venue_id -> venue."""
    for suffix in ("_ids", "_id", "s"):
        if name.endswith(suffix) and name not in ("status",):
            return name[: -len(suffix)]
    return name


def is_id_field(f) -> bool:
    return f.type == F.TYPE_STRING and (f.name.endswith("_id") or f.name.endswith("_ids"))


def is_date_field(f) -> bool:
    return f.type == F.TYPE_STRING and (f.name == "date" or f.name.startswith("date_"))


# -- strings -------------------------------------------------------------------------
def _string_mutations(value: str, f, rng: random.Random, pool: Callable[[str], list]) -> list:
    """(label, new value, expect_invalid) candidates for a string field."""
    ident = is_id_field(f)
    out = [
        ("empty", "", False),
        ("len1", "x", False),
        ("len64", "a" * 64, False),
        ("len65", "a" * 65, ident),
        ("len20000", "Z" * 20_000, ident),
        ("space", f" {value} ", False),
        ("inner-space", "a b c", False),
        ("unicode", "西湖-é-\U0001D518", False),
        ("nul", value + "\x00", False),
        ("nul-only", "\x00", False),
        ("control", "\t\r\n\x1b[2J", False),
        ("bidi", "\u202e" + value, False),
        ("emoji", "\U0001F39F\ufe0f" * 3, False),
        ("upper", value.upper(), False),
        ("lower", value.lower(), False),
        ("doubled", value + value, False),
        ("path", "../../../etc/passwd", False),
        ("format", "%s%n{0}${x}", False),
        ("sql", "' OR 1=1 --", False),
    ]
    if is_date_field(f):
        bad = rng.choice(BAD_DATES)
        out += [(f"date:{bad!r}", bad, True)] * 4 + [("date-far", "9999-12-31", False),
                                                      ("date-past", "1900-01-01", False)]
    else:
        out.append(("date-like", rng.choice(BAD_DATES), False))
    out += _swaps(value, f, rng, pool, lambda v: isinstance(v, str))
    return out


def _swaps(value, f, rng, pool, fits) -> list:
    """The id of another object of the same kind ("swap"), or of the other venue's ("swap-b")."""
    out = []
    kind = _kind(f.name)
    others = [v for v in pool(kind) if fits(v) and v != value]
    if others:
        out += [("swap", rng.choice(others), False)] * 2
    theirs = [v for v in pool(kind + ":b") if fits(v) and v != value]
    if theirs:
        out += [("swap-b", rng.choice(theirs), False)] * 2
    return out


def _int_mutations(value: int, f, rng: random.Random, pool) -> list:
    lo, hi = INT_RANGES[f.cpp_type]
    vals = {("zero", 0), ("max", hi), ("one", 1), ("rand", rng.randint(lo, hi)),
            ("2^31", min(2**31, hi)), ("2^32-1", min(2**32 - 1, hi))}
    if lo < 0:
        vals |= {("minus1", -1), ("min", lo), ("-2^31", -2**31)}
    if lo <= value + 1 <= hi:
        vals.add(("plus1", value + 1))
    if lo <= value - 1 <= hi:
        vals.add(("less1", value - 1))
    out = [(k, v, False) for k, v in sorted(vals)]
    out += _swaps(value, f, rng, pool, lambda v: isinstance(v, int) and not isinstance(v, bool)
                  and lo <= v <= hi)
    return out


def _enum_mutations(f, rng: random.Random) -> list:
    top = max(v.number for v in f.enum_type.values)
    return [("unspecified", 0, False), ("past-last", top + 1, False), ("99", 99, False),
            ("int32-max", 2**31 - 1, False), ("minus1", -1, False), ("int32-min", -2**31, False)]


def _scalar_mutations(value, f, rng, pool) -> list:
    if f.type == F.TYPE_STRING:
        return _string_mutations(value, f, rng, pool)
    if f.type == F.TYPE_ENUM:
        return _enum_mutations(f, rng)
    if f.type == F.TYPE_BOOL:
        return [("flip", not value, False)]
    if f.type == F.TYPE_BYTES:
        return [("empty", b"", False), ("random", rng.randbytes(rng.randint(1, 64)), False),
                ("big", rng.randbytes(70_000), False)]
    if f.cpp_type in INT_RANGES:
        return _int_mutations(value, f, rng, pool)
    if f.cpp_type in (F.CPPTYPE_DOUBLE, F.CPPTYPE_FLOAT):
        return [("nan", float("nan"), False), ("inf", float("inf"), False), ("neg", -1.0, False)]
    return []


# -- Timestamps and other messages ---------------------------------------------------
def _timestamp_mutations(rng: random.Random, now: int) -> list:
    """(label, seconds, nanos, expect_invalid)."""
    return [("nanos=-5", now, -5, True), ("nanos=1e9", now, 1_000_000_000, True),
            ("nanos=-2^31", now, -2**31, True),
            ("seconds<0001", TS_MIN - 1, 0, True), ("seconds>9999", TS_MAX + 1, 0, True),
            ("seconds=2^62", 2**62, 0, True), ("seconds=-2^62", -2**62, 0, True),
            ("epoch", 0, 0, False), ("yesterday", now - 86_400, 0, False),
            ("tomorrow", now + 86_400, 0, False), ("next-year", now + 400 * 86_400, 0, False),
            ("far-past", TS_MIN, 0, False), ("far-future", TS_MAX, 999_999_999, False)]


def _set(site: Site, value) -> None:
    if site.index is None:
        setattr(site.parent, site.field.name, value)
    else:
        getattr(site.parent, site.field.name)[site.index] = value


def _pick(rng: random.Random, cands: list, label: str | None):
    """A candidate (label first) at random, or the one named `label` (None if absent)."""
    if label is None:
        return rng.choice(cands) if cands else None
    return next((c for c in cands if c[0] == label), None)


def _value(site: Site):
    v = getattr(site.parent, site.field.name)
    return v if site.index is None else v[site.index]


def _mutate_scalar(site: Site, rng, pool, label=None) -> Mutation | None:
    c = _pick(rng, _scalar_mutations(_value(site), site.field, rng, pool), label)
    if c is None:
        return None
    _set(site, c[1])
    return Mutation(site.path, c[0], c[2])


def _mutate_message(site: Site, rng, now: int, label=None) -> Mutation | None:
    f = site.field
    sub = _value(site)
    cands = []
    if f.message_type.full_name == "google.protobuf.Timestamp":
        cands += [(k, ("ts", s_, n), strict) for k, s_, n, strict in _timestamp_mutations(rng, now)] * 3
    if site.index is None:
        cands.append(("unset", ("unset",), False))
    cands.append(("empty-message", ("empty",), False))
    c = _pick(rng, cands, label)
    if c is None:
        return None
    what = c[1]
    if what[0] == "ts":
        sub.seconds, sub.nanos = what[1], what[2]
    elif what[0] == "unset":
        site.parent.ClearField(f.name)
    else:
        sub.Clear()
        sub.SetInParent()             # present, every field default
    return Mutation(site.path, c[0], c[2])


def _mutate_map(site: Site, rng, label=None) -> Mutation | None:
    items = getattr(site.parent, site.field.name)
    vt = site.field.message_type.fields_by_name["value"]
    if vt.type == F.TYPE_MESSAGE:
        label = "empty"
    one = "x" if vt.type == F.TYPE_STRING else 1
    c = _pick(rng, [("empty",), ("weird-key",), ("huge",), ("negative",)], label)
    if c is None:
        return None
    if c[0] == "empty":
        items.clear()
    elif c[0] == "weird-key":
        for k in ("", "a" * 65, "西湖", "\x00", " ota"):
            items[k] = one
    elif c[0] == "huge":
        for i in range(rng.choice(HUGE)):
            items[f"k{i}"] = one
    else:
        for k in list(items.keys()) or ["ota"]:
            items[k] = -1 if vt.cpp_type in (F.CPPTYPE_INT32, F.CPPTYPE_INT64) else one
    return Mutation(site.path, c[0])


def _mutate_repeated(site: Site, rng, pool, label=None) -> Mutation | None:
    f = site.field
    if is_map(f):
        return _mutate_map(site, rng, label)
    items = getattr(site.parent, f.name)
    n = rng.choice(HUGE)
    cands = [("empty",), ("duplicated",), (f"huge:{n}",), ("extra-element",)]
    if label and label.startswith("huge:"):
        n, cands = int(label[5:]), [(label,)]
    c = _pick(rng, cands, label)
    if c is None:
        return None
    kind = c[0]
    if kind == "empty" or not items:
        del items[:]
        return Mutation(site.path, "empty")
    if kind == "duplicated":
        if f.type == F.TYPE_MESSAGE:
            copies = []
            for x in items:
                copies.append(type(x)())
                copies[-1].CopyFrom(x)
            items.extend(copies)
        else:
            items.extend(list(items))
        return Mutation(site.path, kind)
    if kind.startswith("huge:"):
        first = items[0]
        if f.type == F.TYPE_MESSAGE:
            for _ in range(n - len(items)):
                items.add().CopyFrom(first)
        elif f.type == F.TYPE_STRING and rng.random() < 0.5:
            items.extend(f"{first}-{i}"[-64:] for i in range(n - len(items)))    # distinct values
        else:
            items.extend([first] * (n - len(items)))
        return Mutation(site.path, kind)
    if f.type == F.TYPE_MESSAGE:
        items.add()
        return Mutation(site.path, "extra-empty-element")
    cands = _scalar_mutations("" if f.type == F.TYPE_STRING else 0, f, rng, pool)
    if not cands:
        return None
    items.append(rng.choice(cands)[1])
    return Mutation(site.path, kind)


def _mutate_oneof(site: Site, rng, pool) -> Mutation | None:
    """Set another member of the oneof the field belongs to, or clear them all."""
    oneof = site.field.containing_oneof
    if rng.random() < 0.3:
        for f in oneof.fields:
            site.parent.ClearField(f.name)
        return Mutation(oneof.name, "none-set")
    f = rng.choice(list(oneof.fields))
    if f.type == F.TYPE_MESSAGE:
        return None
    cands = [v for _, v, _ in _scalar_mutations(f.default_value, f, rng, pool)]
    cands += [v for v in pool(f.name) if isinstance(v, type(f.default_value))]
    setattr(site.parent, f.name, rng.choice(cands))
    return Mutation(f.name, "oneof-switch")


def mutate_site(site: Site, rng: random.Random, pool, now: int, label: str | None = None) -> Mutation | None:
    f = site.field
    if f.is_repeated and site.index is None:
        return _mutate_repeated(site, rng, pool, label)
    if f.type == F.TYPE_MESSAGE:
        return _mutate_message(site, rng, now, label)
    return _mutate_scalar(site, rng, pool, label)


def mutate_once(msg, rng: random.Random, pool: Callable[[str], list], now: int) -> Mutation | None:
    """Change one field of `msg` in place; None if the site picked offers nothing."""
    all_sites = sites(msg)
    if not all_sites:
        return None
    site = rng.choice(all_sites)
    oneof = site.field.containing_oneof
    if oneof is not None and not oneof.name.startswith("_") and rng.random() < 0.25:
        return _mutate_oneof(site, rng, pool)
    return mutate_site(site, rng, pool, now)


def mutate(msg, rng: random.Random, pool: Callable[[str], list], now: int) -> list[Mutation]:
    """One mutation most of the time, sometimes two or three stacked."""
    n = rng.choice((1, 1, 1, 1, 2, 3))
    out = []
    for _ in range(20):
        m = mutate_once(msg, rng, pool, now)
        if m is not None:
            out.append(m)
            if len(out) == n:
                break
    return out


# -- systematic probes ---------------------------------------------------------------
# every field of every request gets these once per run, whatever the seed: the cases the
# contract is precise about (ids of 65 and 20,000 characters, invalid Timestamps,
# malformed dates) and the classic breakers (empty, NUL, huge lists, out-of-range numbers)
_STRING_PROBES = ("empty", "len65", "len20000")
_TS_PROBES = ("nanos=-5", "nanos=1e9", "seconds<0001", "seconds>9999")


def probes(msg, pool: Callable[[str], list]) -> list[tuple[str, str]]:
    """(site path, mutation label) pairs for one request."""
    out = []
    for site in sites(msg):
        f = site.field
        if not (f.is_repeated and site.index is None) and f.type != F.TYPE_MESSAGE \
                and pool(_kind(f.name) + ":b"):
            out.append((site.path, "swap-b"))         # the other venue's object
        if is_map(f):
            out.append((site.path, "weird-key"))
        elif f.is_repeated and site.index is None:
            out += [(site.path, "empty"), (site.path, "huge:10001" if f.type != F.TYPE_MESSAGE
                                                       else "huge:101")]
        elif f.type == F.TYPE_MESSAGE:
            if f.message_type.full_name == "google.protobuf.Timestamp":
                out += [(site.path, k) for k in _TS_PROBES]
            out.append((site.path, "unset" if site.index is None else "empty-message"))
        elif f.type == F.TYPE_STRING:
            out += [(site.path, k) for k in _STRING_PROBES]
            if is_date_field(f):
                out += [(site.path, f"date-probe:{d}") for d in ("2026-13-40", "yesterday", "20261203")]
        elif f.type == F.TYPE_ENUM:
            out += [(site.path, "past-last"), (site.path, "minus1")]
        elif f.type == F.TYPE_BOOL:
            out.append((site.path, "flip"))
        elif f.cpp_type in INT_RANGES:
            out += [(site.path, "max"), (site.path, "min" if INT_RANGES[f.cpp_type][0] < 0 else "2^31")]
    return out


def apply_probe(msg, path: str, label: str, rng: random.Random, pool, now: int) -> Mutation | None:
    """Apply the probe (path, label) to a request of the same shape as the one probed."""
    site = next((s for s in sites(msg) if s.path == path), None)
    if site is None:
        return None
    if label.startswith("date-probe:"):
        _set(site, label[11:])
        return Mutation(path, f"date:{label[11:]!r}", True)
    return mutate_site(site, rng, pool, now, label)
