"""Correctness checks of a load run: named verdicts (`Checks`), the checks of scan answers
(every ticket admitted once, never twice) and of the server's counts.

No grpc here (only the generated scan reasons): bench's in-process engine scenarios
check their answers with these too, whose reasons are the engine's `Reason` (the same
numbers as the API's `ScanReason`).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

from turnstile.v1 import common_pb2

OK = common_pb2.OK
OK_REENTRY = common_pb2.OK_REENTRY
ALREADY_USED = common_pb2.ALREADY_USED
IN, OUT = common_pb2.IN, common_pb2.OUT
ADMITTED = frozenset({OK, OK_REENTRY})


def reason_name(reason: int) -> str:
    return common_pb2.ScanReason.Name(reason)


@dataclass
class Check:
    name: str
    passed: bool
    detail: str = ""


class Checks(list):
    """The named correctness checks of one run, in order (a list of `Check`).
    `checks(name, passed, detail)` records one and returns whether it passed."""

    def __call__(self, name: str, passed: bool, detail: Any = "") -> bool:
        self.append(Check(name, bool(passed), str(detail)))
        return bool(passed)

    @property
    def ok(self) -> bool:
        """The verdict: something was checked, and every check passed."""
        return bool(self) and all(c.passed for c in self)

    def as_dicts(self) -> list[dict]:
        """The checks as JSON-ready records: check, passed, detail."""
        return [{"check": c.name, "passed": c.passed, "detail": c.detail} for c in self]


def scan_checks(answers: Sequence[tuple], expect: str = "admit", checks: Checks | None = None
                ) -> tuple[Checks, dict]:
    """Correctness of entry scans. `answers`: (ticket id asked or -1, code, reason,
    ticket id answered) per call, reason None where the call failed (unknown outcome).
    expect "admit": fresh tickets, each admitted exactly once however often it was
    shown, every other answer ALREADY_USED. expect "used": tickets already inside or
    used up, every answer ALREADY_USED."""
    checks = Checks() if checks is None else checks
    answered = [a for a in answers if a[2] is not None]
    admits = Counter(a[1] for a in answered if a[2] in ADMITTED)
    refused = Counter(reason_name(a[2]) for a in answered if a[2] not in ADMITTED)
    failed = {a[1] for a in answers if a[2] is None}
    asked = {a[1] for a in answers}
    unknown = failed - set(admits)             # a failed call may have admitted these
    wrong = sum(1 for a in answered if a[0] >= 0 and a[0] != a[3])
    checks("calls answered", bool(answered), f"{len(answered)} of {len(answers)}")
    checks("every answer names the ticket asked", not wrong, f"{wrong} name another ticket")
    if expect == "admit":
        twice = sum(1 for v in admits.values() if v > 1)
        checks("no ticket admitted twice", not twice, f"{twice} tickets admitted more than once")
        never = asked - set(admits) - unknown
        checks("every scanned ticket admitted exactly once", not never,
               f"{len(never)} of {len(asked)} never admitted")
        # a refusal is right only for a code another call admitted (or may have)
        lone = {a[1] for a in answered if a[2] not in ADMITTED} - set(admits) - unknown
        checks("the only refusals are concurrent duplicates, ALREADY_USED",
               set(refused) <= {"ALREADY_USED"} and not lone,
               f"{dict(refused)}; {len(lone)} refused tickets never admitted")
    elif expect == "used":
        checks("every scan refused ALREADY_USED (tickets already used)",
               not admits and set(refused) <= {"ALREADY_USED"}, f"admitted {sum(admits.values())}, "
               f"refused {dict(refused)}")
    else:
        raise ValueError(f"expect must be admit or used, not {expect!r}")
    counts = {"tickets": len(asked), "answered": len(answered), "admitted": len(admits),
              "refused": dict(refused), "unknown": len(unknown)}
    return checks, counts


def count_checks(checks: Checks, name: str, before: int | None, after: int | None, want: int,
                 slack: int = 0) -> None:
    """A server count rose by `want` (up to `slack` more: calls whose outcome is unknown)."""
    if before is None or after is None:
        return
    d = after - before
    checks(name, want <= d <= want + slack, f"rose by {d:,}, expected {want:,}"
           + (f" (+ up to {slack:,} unknown)" if slack else ""))
