"""`turnstile backup | restore | shards`: work on a data dir directly (no server)."""
from __future__ import annotations


def register(sub) -> None:
    """Add this module's subcommands to the `turnstile` parser."""
