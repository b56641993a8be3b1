"""The API as the generated descriptors describe it: every rpc of every service, and
a resolver that checks a BadRequest field path (`items[0].slot_ids[0]`) against a
request message descriptor."""
from __future__ import annotations

import importlib
import pkgutil
import re
from dataclasses import dataclass

from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor

import turnstile.v1 as _v1


@dataclass(frozen=True)
class Method:
    service: str                # "SalesService"
    name: str                   # "Hold"
    path: str                   # "/turnstile.v1.SalesService/Hold"
    input: type
    output: type
    client_streaming: bool
    server_streaming: bool

    @property
    def key(self) -> str:
        return f"{self.service}.{self.name}"

    @property
    def streaming(self) -> bool:
        return self.client_streaming or self.server_streaming


def methods() -> list[Method]:
    """Every rpc of every service in every turnstile.v1 *_pb2 module: a new rpc, or a new
    proto file, is picked up without touching the suite."""
    out = []
    names = sorted(n for _, n, _ in pkgutil.iter_modules(_v1.__path__) if n.endswith("_pb2"))
    for mod in names:
        m = importlib.import_module(f"{_v1.__name__}.{mod}")
        for svc in m.DESCRIPTOR.services_by_name.values():
            for md in svc.methods:
                out.append(Method(svc.name, md.name, f"/{svc.full_name}/{md.name}",
                                  message_factory.GetMessageClass(md.input_type),
                                  message_factory.GetMessageClass(md.output_type),
                                  md.client_streaming, md.server_streaming))
    return out


def is_map(f: FieldDescriptor) -> bool:
    return f.type == FieldDescriptor.TYPE_MESSAGE and f.message_type.GetOptions().map_entry


_SEGMENT = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)((?:\[[^\[\]]*\])?)\Z")


def _split(path: str) -> list[str]:
    """a.b[0].c["x.y"] -> ['a', 'b[0]', 'c["x.y"]'] (dots inside brackets are a map key's)."""
    parts, depth, cur = [], 0, ""
    for ch in path:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == "." and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return parts


def resolve(desc: Descriptor, path: str, msg=None) -> str | None:
    """None if `path` names a field of `desc` (with [i] only on repeated fields, [key] or
    .key on maps, and i < the length of that field in `msg` when the request is known);
    else why not.

    The last segment may also name a oneof (`credential` of VerifyRequest): a oneof is the
    field a caller must set when none of its members is set."""
    if not path:
        return "empty field path"
    parts = _split(path)
    cur = msg
    skip = False
    for n, part in enumerate(parts):
        if skip:                    # a map key named with a dot (field-mask style: prices.ota)
            skip = False
            continue
        last = n == len(parts) - 1
        m = _SEGMENT.match(part)
        if m is None:
            return f"segment {part!r} is not a field name with an optional [index]"
        name, index = m.group(1), m.group(2)
        if desc is None:
            return f"{'.'.join(parts[:n])} is not a message, it has no field {name!r}"
        f = desc.fields_by_name.get(name)
        if f is None:
            if last and not index and name in desc.oneofs_by_name:
                return None
            return f"{desc.full_name} has no field {name!r}"
        if index:
            key = index[1:-1]
            if not f.is_repeated:
                return f"{desc.full_name}.{name} is not repeated, [{key}] is meaningless"
            if is_map(f):
                value = f.message_type.fields_by_name["value"]
                desc = value.message_type if value.type == FieldDescriptor.TYPE_MESSAGE else None
                cur = None
                continue
            if not key.isdigit():
                return f"[{key}] is not a list index"
            if cur is not None:
                items = getattr(cur, name)
                if int(key) >= len(items):
                    return f"{name}[{key}]: the request has {len(items)} {name}"
                cur = items[int(key)]
        elif is_map(f) and not last:
            value = f.message_type.fields_by_name["value"]
            desc, cur, skip = value.message_type if value.type == FieldDescriptor.TYPE_MESSAGE else None, \
                None, True
            continue
        elif f.is_repeated and not last:
            return f"{desc.full_name}.{name} is repeated: name an element, {name}[i]"
        elif cur is not None:
            cur = getattr(cur, name) if f.type == FieldDescriptor.TYPE_MESSAGE and not f.is_repeated \
                else None
        desc = f.message_type if f.type == FieldDescriptor.TYPE_MESSAGE else None
    return None
