"""The arrows point one way (README, Development): clients talk to the server over
gRPC only, the server calls the engine, the engine knows neither. Read from the source's
import statements, so a lazy import inside a function counts as much as one at the top."""
from __future__ import annotations

import ast
import re
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]

# package -> packages of this repo it must never import (DESIGN.md 1, issue 11)
FORBIDDEN = {
    "engine": {"server", "clients", "bench", "tests"},
    "server": {"clients", "bench", "tests"},
    "clients": {"engine", "bench", "tests"},
}
# the one entry point dispatches to the data-dir commands of an install that has them
ALLOWED = {("clients/cli/__init__.py", "server")}


def _modules(path: pathlib.Path):
    """(line, dotted name) of every absolute import in `path`; `from turnstile import
    engine` counts as turnstile.engine."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module
            for a in node.names:
                yield node.lineno, f"{node.module}.{a.name}"


def _imports(path: pathlib.Path):
    """(line, package of this repo) of every absolute import in `path`: engine, server,
    clients as installed (turnstile.engine...), bench and tests as they are."""
    for line, name in _modules(path):
        parts = name.split(".")
        if parts[0] == "turnstile" and len(parts) > 1:
            yield line, parts[1]
        else:
            yield line, parts[0]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_package_imports_against_the_arrows(package):
    bad = []
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, package
    for path in files:
        rel = path.relative_to(ROOT).as_posix()
        for line, top in _imports(path):
            if top in FORBIDDEN[package] and (rel, top) not in ALLOWED:
                bad.append(f"{rel}:{line} imports {top}")
    assert not bad, "\n".join(bad)


def test_the_packages_are_imported_under_the_project_namespace():
    """engine, server and clients install as turnstile.engine, turnstile.server and
    turnstile.clients (setup.py): a bare `import engine` would find the repo's folder
    from the working directory only, and load a second copy of every module."""
    bad = [f"{p.relative_to(ROOT)}:{line} imports {name}"
           for d in ("engine", "server", "clients", "tests", "bench")
           for p in sorted((ROOT / d).rglob("*.py"))
           for line, name in _modules(p) if name.split(".")[0] in FORBIDDEN]
    assert not bad, "\n".join(bad)


def test_the_server_does_not_reach_into_shard_state():
    """Shard is the engine's one face: server/ calls its methods, never its `state`."""
    bad = [f"{p.relative_to(ROOT)}:{i}" for p in sorted((ROOT / "server").rglob("*.py"))
           for i, line in enumerate(p.read_text().splitlines(), 1)
           if re.search(r"shard\.state\b|\bShardState\b|engine\.state\b", line)]
    assert not bad, bad


def test_one_entry_point_has_every_command():
    """`turnstile` (clients/cli) carries the server's data-dir commands and the remote ones."""
    from turnstile.clients.cli import build_parser
    names = set()
    for action in build_parser()._actions:
        if hasattr(action, "choices") and isinstance(action.choices, dict):
            names |= set(action.choices)
    assert {"serve", "demo", "info", "check", "backup", "restore", "shards", "master-key",
            "keys", "report", "loadgen", "dashboard"} <= names


def test_an_install_without_the_server_deps_has_the_remote_commands_only(monkeypatch):
    """A gate vendor's install (no turnstile[server]: qrcode, numpy, uvloop... missing)
    gets keys, report, loadgen and dashboard (whose aiohttp comes with turnstile[dashboard],
    imported when it runs), and the epilog that names turnstile[server]."""
    from turnstile import server
    from turnstile.clients import cli
    monkeypatch.delattr(server, "cli", raising=False)       # as if never imported
    monkeypatch.delitem(sys.modules, "turnstile.server.cli", raising=False)
    monkeypatch.setitem(sys.modules, "qrcode", None)          # import qrcode -> ImportError
    p = cli.build_parser()
    names = set(next(a for a in p._actions if isinstance(a.choices, dict)).choices)
    assert names == {"keys", "report", "loadgen", "dashboard"} and "turnstile[server]" in p.epilog


def test_a_broken_server_module_is_an_error_not_a_missing_extra(monkeypatch):
    """An ImportError inside turnstile itself is a bug to show, not an absent extra."""
    from turnstile import server
    from turnstile.clients import cli
    monkeypatch.delattr(server, "cli", raising=False)
    monkeypatch.setitem(sys.modules, "turnstile.server.cli", None)
    with pytest.raises(ImportError):
        cli.build_parser()
