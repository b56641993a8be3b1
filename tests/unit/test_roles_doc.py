"""docs/ROLES.md's role x method table is the one the interceptor enforces
(server/auth.py TABLE), every rpc of the proto decided: the doc can't drift.

After changing TABLE, regenerate the doc's table and review its prose:

    .venv/bin/python -m tests.unit.test_roles_doc
"""
from __future__ import annotations

import os
import sys

from turnstile.server import auth
from turnstile.server.control import ROLES
from turnstile.v1 import admin_pb2, gate_pb2, inventory_pb2, member_pb2, report_pb2, sales_pb2

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOC = os.path.join(ROOT, "docs", "ROLES.md")
BEGIN = "<!-- role table: generated from server/auth.py TABLE by tests/unit/test_roles_doc.py -->"
END = "<!-- end of role table -->"
SERVICES = [m.DESCRIPTOR.services_by_name[n] for m, n in (
    (gate_pb2, "GateService"), (sales_pb2, "SalesService"), (inventory_pb2, "InventoryService"),
    (admin_pb2, "AdminService"), (report_pb2, "ReportService"), (member_pb2, "MemberService"))]


def render(table: dict[str, frozenset[str]]) -> str:
    """The markdown table of `table`: a row per method (in the table's order), a column per role."""
    lines = ["| method | " + " | ".join(ROLES) + " |", "|---|" + "---|" * len(ROLES)]
    for method, roles in table.items():
        service, name = method[1:].rsplit("/", 1)
        cells = ["✓" if r in roles else "✗" for r in ROLES]
        lines.append(f"| `{service.rsplit('.', 1)[-1]}.{name}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _doc() -> tuple[str, str, str]:
    with open(DOC, encoding="utf-8") as f:
        text = f.read()
    head, sep, rest = text.partition(BEGIN)
    body, sep2, tail = rest.partition(END)
    assert sep and sep2, f"{DOC} lost its table markers"
    return head, body.strip("\n"), tail


def test_the_doc_shows_the_enforced_table():
    assert _doc()[1] == render(auth.TABLE), (
        "docs/ROLES.md differs from server/auth.py TABLE: run "
        "`.venv/bin/python -m tests.unit.test_roles_doc`, then review the doc's reasons")


def test_every_rpc_of_every_service_is_decided():
    rpcs = {f"/{svc.full_name}/{m.name}" for svc in SERVICES for m in svc.methods}
    assert sorted(rpcs - set(auth.TABLE)) == []
    assert all(roles <= set(ROLES) for roles in auth.TABLE.values())


def test_readme_links_the_doc():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        assert "docs/ROLES.md" in f.read()


def test_render_marks_every_cell():
    out = render({"/turnstile.v1.GateService/Verify": frozenset({"admin", "gate"})}).splitlines()
    assert out[2] == "| `GateService.Verify` | ✓ | ✗ | ✗ | ✗ | ✓ | ✗ | ✗ | ✗ | ✗ |"


if __name__ == "__main__":
    head, _, tail = _doc()
    with open(DOC, "w", encoding="utf-8") as f:
        f.write(f"{head}{BEGIN}\n{render(auth.TABLE)}\n{END}{tail}")
    print(f"rewrote the role table of {DOC}", file=sys.stderr)
