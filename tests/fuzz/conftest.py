"""The fuzz suite's knobs and its server.

Short run (part of `make test`): seed 9, about 1,400 calls (each rpc: its valid request,
two calls without a valid key, probes of every field, 10 random mutations, 10 raw-bytes
calls), each refused call of a mutating rpc followed by a state digest.
Long run: `pytest tests/fuzz --fuzz-long` or `TURNSTILE_FUZZ=long pytest tests` (the option
is known only when tests/fuzz is named on the command line; the variable works anywhere):
1,000 random mutations and 333 raw-bytes calls per rpc, a fresh seed unless one is given.
Seed: `--fuzz-seed N` or `TURNSTILE_FUZZ_SEED=N`. Random mutations per rpc:
TURNSTILE_FUZZ_CALLS=N (raw-bytes calls are a third of it, at least one of each kind).
Each rpc draws from its own generator (seed and rpc name), so a failure's replay command
(printed with it) repeats that rpc's sequence. The session ends with every distinct
failure class found, rpcs with the same one grouped (TURNSTILE_FUZZ_REPORT=path also
writes them as JSON)."""
from __future__ import annotations

import json
import os
import random
from dataclasses import asdict, dataclass

import pytest

from tests.integration.conftest import start_server, stop_server

from .runner import SESSION
from .world import World, venue_today

SHORT_CALLS, LONG_CALLS = 10, 1000


def pytest_addoption(parser):
    g = parser.getgroup("fuzz", "tests/fuzz: the RPC fuzz suite")
    g.addoption("--fuzz-long", action="store_true", default=False,
                help="run the long fuzz (same as TURNSTILE_FUZZ=long)")
    g.addoption("--fuzz-seed", type=int, default=None, help="fuzz seed (same as TURNSTILE_FUZZ_SEED)")


@dataclass(frozen=True)
class FuzzConfig:
    seed: int
    long: bool
    calls: int                 # mutated requests per rpc
    raw: int                   # raw-bytes requests per rpc

    def replay(self, key: str) -> str:
        """The command that runs this rpc's fuzz again, as it ran."""
        env = [f"TURNSTILE_FUZZ_SEED={self.seed}"]
        if self.long:
            env.append("TURNSTILE_FUZZ=long")
        if self.calls not in (SHORT_CALLS, LONG_CALLS):
            env.append(f"TURNSTILE_FUZZ_CALLS={self.calls}")
        return f"{' '.join(env)} .venv/bin/python -m pytest -q tests/fuzz -k '{key}'"


def _opt(config, name):
    try:
        return config.getoption(name)
    except ValueError:
        return None


@pytest.fixture(scope="session")
def fuzz_config(request) -> FuzzConfig:
    long = bool(_opt(request.config, "--fuzz-long")) or os.environ.get("TURNSTILE_FUZZ") == "long"
    seed = _opt(request.config, "--fuzz-seed")
    if seed is None and os.environ.get("TURNSTILE_FUZZ_SEED"):
        seed = int(os.environ["TURNSTILE_FUZZ_SEED"])
    if seed is None:
        seed = random.SystemRandom().randrange(1_000_000) if long else 9
    calls = int(os.environ.get("TURNSTILE_FUZZ_CALLS", LONG_CALLS if long else SHORT_CALLS))
    return FuzzConfig(seed, long, calls, max(calls // 3, 10))


@pytest.fixture(scope="module")
def world(tmp_path_factory, fuzz_config):
    """A real `turnstile serve` over the demo venue (from today, venue time), set up for the
    fuzz. It keeps the machine's clock and the default scan skew, as deployed: the fuzz
    judges scan times against them (start_server's default test clock allows a day)."""
    server = start_server(str(tmp_path_factory.mktemp("fuzzdata")), venue_today(), clock=False)
    try:
        w = World(server, fuzz_config.seed)
        yield w
        w.close()
    finally:
        if server.proc.poll() is None:
            stop_server(server)


def pytest_terminal_summary(terminalreporter):
    if not SESSION.calls:
        return
    tr = terminalreporter
    tr.write_line(f"fuzz: {sum(SESSION.calls.values())} calls to {len(SESSION.calls)} rpcs, "
                  f"seed {SESSION.seed}")
    found = SESSION.findings
    if not found:
        return
    tr.section(f"fuzz: {len(found.classes)} distinct failure classes")
    for line in found.lines():
        tr.write_line(line)
    path = os.environ.get("TURNSTILE_FUZZ_REPORT")
    if path:
        with open(path, "w") as f:
            json.dump([asdict(x) for x in found.classes.values()], f, indent=1, ensure_ascii=False)
        tr.write_line(f"written to {path}")
