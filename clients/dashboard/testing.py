"""A real `turnstile dashboard` for tests and screenshots: the command in a subprocess on
127.0.0.1:0, as server/testing.py gives a real server.

    from turnstile.clients.dashboard.testing import start_dashboard, stop_dashboard

    dash = start_dashboard(server.address)        # waits for "dashboard on http://..."
    urllib.request.urlopen(dash.url)               # the page
    stop_dashboard(dash)                           # SIGTERM, then SIGKILL if it hangs

A thread keeps reading the command's output into ``RunningDashboard.log``, so a full pipe
never stops it.
"""
from __future__ import annotations

import dataclasses
import subprocess
import sys
import threading

__all__ = ["RunningDashboard", "start_dashboard", "stop_dashboard"]


@dataclasses.dataclass
class RunningDashboard:
    """A running `turnstile dashboard`: the page's ``url`` (ends with /), the process and
    its output so far."""

    url: str
    proc: subprocess.Popen
    log: list[str] = dataclasses.field(default_factory=list, repr=False)


def start_dashboard(address: str, *, args: tuple[str, ...] = (), timeout: float = 30.0,
                    env: dict[str, str] | None = None) -> RunningDashboard:
    """Start `turnstile dashboard --address ADDRESS --port 0` (plus ``args``) and wait for
    its ``dashboard on URL`` line; RuntimeError with its output if it does not come."""
    proc = subprocess.Popen([sys.executable, "-m", "turnstile.clients.cli", "dashboard",
                             "--address", address, "--host", "127.0.0.1", "--port", "0", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    log: list[str] = []
    url: list[str] = []
    seen = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            log.append(line.rstrip("\n"))
            if not url and line.startswith("dashboard on "):
                url.append(line.split()[2])
                seen.set()
        seen.set()                   # it exited

    threading.Thread(target=read, name="turnstile-dashboard-output", daemon=True).start()
    if not seen.wait(timeout) or not url:
        proc.kill()
        proc.wait(10)
        raise RuntimeError("the dashboard did not start:\n" + "\n".join(log))
    return RunningDashboard(url[0], proc, log)


def stop_dashboard(dash: RunningDashboard, timeout: float = 15.0) -> str:
    """SIGTERM (SIGKILL after ``timeout``); the dashboard's output."""
    if dash.proc.poll() is None:
        dash.proc.terminate()
        try:
            dash.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            dash.proc.kill()
            dash.proc.wait(timeout)
    return "\n".join(dash.log)
