"""Argument checks of the commands: each refuses with an InvalidArgument naming the field,
before the handler changes anything."""
from __future__ import annotations

from typing import Any

from ..errors import InvalidArgument
from ..model import ID_PATTERN

ID = ID_PATTERN
U16 = 65535


def arg(args: dict, name: str, kind, default: Any = ...) -> Any:
    if not isinstance(args, dict):
        raise InvalidArgument("request must be an object")
    v = args.get(name, default)
    if v is ...:
        raise InvalidArgument("is required", field=name)
    if kind is int and isinstance(v, bool) or not isinstance(v, kind):
        raise InvalidArgument(f"must be {getattr(kind, '__name__', kind)}", field=name)
    return v


def int_arg(args: dict, name: str, lo: int, hi: int, default: Any = ...) -> int:
    v = arg(args, name, int, default)
    if not lo <= v <= hi:
        raise InvalidArgument(f"must be between {lo} and {hi}, got {v}", field=name)
    return v


def ident_arg(args: dict, name: str, default: Any = ...) -> str:
    v = arg(args, name, str, default)
    if not ID.match(v):
        raise InvalidArgument("must be 1-64 letters, digits or ._:@/- starting with a letter or digit",
                              field=name)
    return v


def text_arg(args: dict, name: str, default: Any = ..., limit: int = 200) -> str:
    v = arg(args, name, str, default)
    if len(v) > limit:
        raise InvalidArgument(f"longer than {limit} characters", field=name)
    return v


def is_id_number(x: Any) -> bool:
    """An ID number as sales take it (resident ID card, passport): 6-32 letters or digits."""
    return type(x) is str and 6 <= len(x) <= 32 and x.isalnum()


def persons_arg(persons: Any) -> int:
    """The persons of a scan: 0 (the whole group) to 65535."""
    if not isinstance(persons, int) or isinstance(persons, bool) or not 0 <= persons <= U16:
        raise InvalidArgument("must be 0 (the whole group) to 65535", field="persons")
    return persons
