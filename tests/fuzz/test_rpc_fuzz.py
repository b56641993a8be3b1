"""Every rpc of every service, on a real server, with mutated valid requests and raw
bytes (issue 9 section 4; DESIGN.md 5 and 10). Each answer must use a documented status
code, carry google.rpc details (ErrorInfo reason; BadRequest fields that are real proto
paths of the request), show no internal exception name and quote at most a short prefix
of what was sent; and no refused call may change the business state.

The rpcs come from the generated descriptors, so a new one is fuzzed as soon as it
exists, and fails here until tests/fuzz/builders.py knows how to build a valid request
for it."""
from __future__ import annotations

import pytest

from .builders import BUILDERS, LAST
from .protos import methods
from .runner import SESSION, Findings, Fuzz

METHODS = sorted(methods(), key=lambda m: (m.key in LAST, LAST.index(m.key) if m.key in LAST else 0))


def test_every_rpc_has_a_valid_request_builder():
    missing = [m.key for m in METHODS if m.key not in BUILDERS]
    assert not missing, (
        f"no valid-request builder for {', '.join(missing)}: add a line per rpc to BUILDERS in "
        "tests/fuzz/builders.py (principal, build, readonly)")


@pytest.mark.parametrize("method", METHODS, ids=[m.key for m in METHODS])
def test_rpc_fuzz(method, world, fuzz_config):
    spec = BUILDERS.get(method.key)
    if spec is None:
        pytest.fail(f"no valid-request builder for {method.key} in tests/fuzz/builders.py BUILDERS")
    found = Findings()
    fz = Fuzz(world, method, spec, fuzz_config.seed, found)
    fz.run(fuzz_config.calls, fuzz_config.raw)
    SESSION.findings.classes.update(found.classes)
    SESSION.calls[method.key], SESSION.seed = fz.calls, fuzz_config.seed
    assert not found, (
        f"{method.key}: {len(found.classes)} failure classes in {fz.calls} calls "
        f"(seed {fuzz_config.seed}; replay: {fuzz_config.replay(method.key)})\n  "
        + "\n  ".join(f"[{f.check}] {f.detail}\n      <- {', '.join(f.triggers)}\n      e.g. {f.example}"
                      for f in found.classes.values()))
