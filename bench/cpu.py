"""CPU time and peak memory, as every bench sees them: of this process, of the children
it waited for, of any process and its threads (by pid), and of the whole machine
(Linux: /proc and getrusage). CPU in seconds, user + system."""
from __future__ import annotations

import os
import resource
from pathlib import Path

_CLK = os.sysconf("SC_CLK_TCK")


def _stat(path: str) -> tuple[str, list[str]]:
    """(command name, the fields after it) of a /proc/.../stat file."""
    raw = Path(path).read_text()
    name = raw.split("(", 1)[1].rsplit(")", 1)[0]
    return name, raw.rsplit(")", 1)[1].split()


def machine_busy_s() -> float:
    """CPU seconds all processes of the machine spent busy so far (/proc/stat: every
    state but idle and iowait); NaN where there is no /proc/stat."""
    try:
        f = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        user, nice, system, idle, iowait, irq, softirq, steal = (int(x) for x in f[:8])
        return (user + nice + system + irq + softirq + steal) / _CLK
    except (OSError, ValueError):
        return float("nan")


def self_cpu_s() -> float:
    """CPU seconds of this process, all its threads."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def children_cpu_s() -> float:
    """CPU seconds of the children of this process that ended and were waited for."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def proc_cpu_s(pid: int) -> float:
    """CPU seconds of a process, all its threads (0 if it is gone)."""
    try:
        f = _stat(f"/proc/{pid}/stat")[1]
        return (int(f[11]) + int(f[12])) / _CLK
    except (OSError, IndexError):
        return 0.0


def thread_cpu_s(pid: int) -> dict[int, tuple[str, float]]:
    """tid -> (name, CPU seconds) of every thread of a process."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            name, f = _stat(f"/proc/{pid}/task/{tid}/stat")
            out[int(tid)] = (name, (int(f[11]) + int(f[12])) / _CLK)
        except (OSError, IndexError):
            pass
    return out


def children(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of the direct children of a process."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            f = _stat(f"/proc/{d}/stat")[1]
            if int(f[1]) == pid:
                out.append((int(d), Path(f"/proc/{d}/cmdline").read_text().replace("\0", " ")))
        except (OSError, IndexError, ValueError):
            pass
    return out


def max_rss_mb() -> float:
    """The peak resident memory of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
