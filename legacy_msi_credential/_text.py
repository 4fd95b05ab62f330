"""Text from a server made fit for a message, a log line or a terminal. Standard library only."""

from __future__ import annotations

import re

_JWT_LIKE = re.compile(r"eyJ[A-Za-z0-9_\-]*(?:\.[A-Za-z0-9_\-]*)*")
#: A run of token characters long enough to be a secret: a JWT, an opaque token, a key.
_SECRET_LIKE = re.compile(r"[A-Za-z0-9_\-.~+/=%]{20,}")
_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def _redact_run(match: re.Match[str]) -> str:
    run = match.group(0)
    has_digit = any(c.isdigit() for c in run)
    has_letter = any(c.isalpha() for c in run)
    if not (has_digit and has_letter) or _GUID.fullmatch(run.strip("/.")) or "/subscriptions/" in run.lower():
        return run  # words, paths, identifiers, ARM resource IDs: worth showing
    return "<redacted>"


def redact(text: str) -> str:
    """Remove anything shaped like a token from ``text``: JWTs and long runs mixing letters and digits."""
    return _SECRET_LIKE.sub(_redact_run, _JWT_LIKE.sub("<redacted>", text))


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
