"""What a scenario reports: its `Result` (throughput, latency percentiles, counts, checks
and verdict), and the `Progress` it reports as it goes. No grpc here."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable

from .checks import Checks


def percentiles(values: Iterable[float]) -> dict[str, float]:
    """Nearest-rank p50, p99 and p99.9 of values (any unit)."""
    v = sorted(values)
    out = {}
    for key, p in (("p50", 50), ("p99", 99), ("p999", 99.9)):
        out[key] = v[min(len(v), max(1, math.ceil(p * len(v) / 100))) - 1] if v else float("nan")
    return out


def latency_us(seconds: Iterable[float]) -> dict[str, float]:
    return {k: round(v * 1e6, 1) for k, v in percentiles(seconds).items()}


@dataclass
class Result:
    """What a scenario did. `ops` are the units of `throughput_per_s` (`unit`: calls,
    codes); `latency_us` holds p50/p99/p999 of one call (a batch for streams) in µs;
    `checks` the correctness checks, `ok` their verdict. Not in to_dict: `answers`, per
    scan (ticket asked, reason, ticket answered), reason None where the call failed (the
    flash sale: per ask (ask number, hold id or refusal reason or None, answer time));
    `tickets`, the (ticket id, code, scan time) a scan scenario scanned."""

    scenario: str
    ops: int = 0
    unit: str = "calls"
    calls: int = 0
    planned: int = 0
    elapsed_s: float = 0.0
    latency_us: dict = field(default_factory=lambda: percentiles([]))
    checks: Checks = field(default_factory=Checks)
    cut: bool = False
    errors: dict = field(default_factory=dict)
    counts: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    answers: list = field(default_factory=list, repr=False)
    tickets: list = field(default_factory=list, repr=False)

    @property
    def throughput_per_s(self) -> float:
        return self.ops / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def ok(self) -> bool:
        return self.checks.ok

    @property
    def verdict(self) -> str:
        return "pass" if self.ok else "FAIL"

    def to_dict(self) -> dict:
        return {"scenario": self.scenario, "ops": self.ops, "unit": self.unit, "calls": self.calls,
                "planned": self.planned, "elapsed_s": self.elapsed_s,
                "throughput_per_s": self.throughput_per_s, "latency_us": self.latency_us,
                "cut_by_deadline": self.cut, "errors": self.errors, "counts": self.counts,
                "extra": self.extra, "notes": self.notes, "ok": self.ok, "verdict": self.verdict,
                "checks": self.checks.as_dicts()}

    def summary(self) -> str:
        lat = self.latency_us

        def ms(k: str) -> str:
            return f"{lat[k] / 1000:.2f} ms" if lat[k] == lat[k] else "-"     # nan: no calls
        per = " per batch" if self.unit == "codes" else ""
        lines = [f"{self.scenario}: {self.ops:,} {self.unit} in {self.elapsed_s:.2f} s = "
                 f"{self.throughput_per_s:,.0f} {self.unit}/s"
                 + (f" ({self.calls:,} calls)" if self.calls != self.ops else "")
                 + (" (cut by the time bound)" if self.cut else ""),
                 f"  latency{per}: p50 {ms('p50')}, p99 {ms('p99')}, p99.9 {ms('p999')}"]
        if self.counts:
            lines.append("  " + ", ".join(f"{k} {_fmt(v)}" for k, v in self.counts.items()))
        if self.errors:
            lines.append(f"  RPC errors: {dict(self.errors)}")
        for n in self.notes:
            lines.append(f"  note: {n}")
        for c in self.checks:
            lines.append(f"  [{'ok' if c.passed else 'FAIL'}] {c.name}"
                         + (f" ({c.detail})" if c.detail and not c.passed else ""))
        lines.append(f"verdict: {self.verdict}")
        return "\n".join(lines)


def _fmt(v: Any) -> str:
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:,.1f}"
    return str(v)


class Progress:
    """What a scenario reports as it goes (the CLI draws a progress bar of it)."""

    def phase(self, name: str, total: int | None) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


QUIET = Progress()      # reports nothing
