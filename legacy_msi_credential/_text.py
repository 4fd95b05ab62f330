"""Text from a server made fit for a message, a log line or a terminal. Standard library only.

What counts as a secret is decided in :mod:`legacy_msi_credential._redact`.
"""

from __future__ import annotations

from ._redact import redact


def printable(text: str) -> str:
    """``text`` with control characters (terminal escapes included) shown as ``?``."""
    return "".join(c if c.isprintable() else "?" for c in text)


def clean_text(text: str, limit: int = 500) -> str:
    """Server-sent text made fit for a message, a log line or a terminal.

    Tokens are redacted; control characters (terminal escapes included) and other
    unprintable characters become ``?``; at most ``limit`` characters are kept.
    """
    shown = redact(printable(text[: limit * 2]))
    return shown if len(shown) <= limit else shown[:limit] + "..."
