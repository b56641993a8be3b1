"""Every code block of README.md runs as written (issue 10), against a server started the
way `make run` starts it: the recipe is read from the Makefile, run in a folder of its
own, with `serve` on a free port instead of 50051 (the only change made to any block is
that address). Python blocks run each in a fresh interpreter, shell blocks in bash -e,
in that folder, in README order, so they see `data/`, `data.master-key` and what earlier
blocks left there. A block preceded by `<!-- readme: not run (why) -->` is skipped: the
two `make` commands themselves and the multi-minute bench runs.

The examples are written for "now at the venue" (the slot that covers now), so this
passes at any hour on any date."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV_BIN = os.path.dirname(sys.executable)
README_ADDRESS = "127.0.0.1:50051"
SKIP = re.compile(r"<!--\s*readme:\s*not run\s*\((?P<why>[^)]+)\)\s*-->\s*$")


def blocks() -> list[tuple[int, str, str, str | None]]:
    """(line, language, code, why skipped or None) of every fenced block of README.md."""
    with open(os.path.join(ROOT, "README.md")) as f:
        lines = f.read().split("\n")
    out, i = [], 0
    while i < len(lines):
        m = re.match(r"^```(\w*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        start, lang = i, m.group(1)
        j = i + 1
        while not lines[j].startswith("```"):
            j += 1
        prev = next((lines[k] for k in range(start - 1, -1, -1) if lines[k].strip()), "")
        skip = SKIP.search(prev)
        out.append((start + 1, lang, "\n".join(lines[start + 1:j]), skip.group("why") if skip else None))
        i = j + 1
    return out


def make_run_recipe() -> list[list[str]]:
    """The commands of the Makefile's `run` target, as argv lists (comments dropped,
    continued lines joined; the last line's shell glue that starts the dashboard beside
    `serve` and stops it with it split into the two commands, dashboard first)."""
    with open(os.path.join(ROOT, "Makefile")) as f:
        text = f.read()
    recipe = re.search(r"^run:.*\n((?:\t.*\n)+)", text, re.M).group(1)
    recipe = recipe.replace("\\\n", " ")
    subst = {"$(VENV)/bin/": VENV_BIN + "/", "$(DATA)": "data", "$(MASTER_KEY)": "data.master-key",
             "$(DASHBOARD_PORT)": "8080"}
    out = []
    for line in recipe.strip("\n").split("\n"):
        line = line.strip()
        if line.startswith("@#"):
            continue
        for k, v in subst.items():
            line = line.replace(k, v)
        assert "$(" not in line, f"a Makefile variable this test does not know: {line}"
        for part in re.split(r"[;&]", line):
            argv = part.split()
            if argv and argv[0].endswith("/turnstile"):
                out.append(argv)
    return out


@pytest.fixture(scope="module")
def readme_server(tmp_path_factory):
    """`make run`'s recipe in a new folder, `serve` on port 0; yields (folder, address)."""
    home = str(tmp_path_factory.mktemp("readme"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TURNSTILE_")}
    *setup, dashboard, serve = make_run_recipe()
    assert (dashboard[1], serve[1]) == ("dashboard", "serve"), (dashboard, serve)
    for argv in setup:
        r = subprocess.run(argv, cwd=home, env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, (argv, r.stdout, r.stderr)
    dash = None
    proc = subprocess.Popen(serve + ["--port", "0"], cwd=home, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        address, seen = None, []
        deadline = time.monotonic() + 60
        while address is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            if line.startswith("listening on "):
                address = line.split()[2]
        assert address, "".join(seen)
        # read on, as a terminal (or journald) would: a pipe nobody reads fills and
        # stops whoever writes to it
        threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
        # the dashboard as `make run` starts it, on the test's server and a free port
        argv = [a.replace(README_ADDRESS, address) for a in dashboard]
        argv[argv.index("--port") + 1] = "0"
        dash = subprocess.Popen(argv, cwd=home, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        line = dash.stdout.readline()
        assert line.startswith("dashboard on http://127.0.0.1:"), line + dash.stdout.read()
        threading.Thread(target=lambda: [None for _ in dash.stdout], daemon=True).start()
        yield home, address
    finally:
        if dash is not None:
            os.killpg(dash.pid, signal.SIGTERM)
            dash.wait(30)
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


RUN = [b for b in blocks() if b[1] in ("python", "sh") and b[3] is None]


def test_readme_has_runnable_blocks_and_says_why_it_skips_the_others():
    every = blocks()
    assert len(RUN) >= 8, "README lost its examples"
    for line, lang, _code, why in every:
        if lang in ("python", "sh") and why is None:
            continue
        assert lang not in ("python", "sh") or why.strip(), f"README.md:{line}: skipped without a reason"


@pytest.mark.parametrize("line,lang,code", [b[:3] for b in RUN], ids=[f"README.md:{b[0]}" for b in RUN])
def test_readme_block_runs(readme_server, line, lang, code):
    home, address = readme_server
    code = code.replace(README_ADDRESS, address)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TURNSTILE_")}
    env["PATH"] = VENV_BIN + os.pathsep + env.get("PATH", "")
    if lang == "python":
        argv = [sys.executable, "-c", code]
    else:
        # README's shell lines say .venv/bin/turnstile, as a user types them in the repo;
        # --address defaults to 127.0.0.1:50051, so the test's server is named explicitly
        code = code.replace(".venv/bin/", VENV_BIN + "/")
        env["TURNSTILE_ADDRESS"] = address
        argv = ["bash", "-e", "-o", "pipefail", "-c", code]
    r = subprocess.run(argv, cwd=home, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, f"README.md:{line} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
