"""`turnstile loadgen`: run a scenario of clients/loadgen.py against a running server."""
from __future__ import annotations


def register(sub) -> None:
    """Add this module's subcommand to the `turnstile` parser."""
