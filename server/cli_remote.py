"""`turnstile keys | report`: talk to a running server over gRPC, through clients/."""
from __future__ import annotations


def register(sub) -> None:
    """Add this module's subcommands to the `turnstile` parser."""
