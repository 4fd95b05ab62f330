"""What of a server's bytes may be shown, and where: the one home of redaction. Standard library only.

* In a message: nothing shaped like a token (:func:`redact`; ``_text.clean_text`` applies it
  to everything a server sent).
* In the pipeline's log of an answer: its status and the extension's own headers
  (:func:`loggable_headers`, read by the logging policies in ``_policies``), never a body.
* In the warnings of the libraries underneath, during a token request: nothing they quote
  (:func:`token_request`).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
from collections.abc import Iterator
from typing import Any

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


#: Response headers whose names and values may be logged: the extension's own, nothing a
#: server could fill with a token. Other headers are counted, never named.
SAFE_RESPONSE_HEADERS = frozenset(
    name.lower()
    for name in (
        "Content-Type",
        "Content-Length",
        "Content-Encoding",
        "Transfer-Encoding",
        "Connection",
        "Date",
        "Server",
        "Retry-After",
        "Allow",
        "Keep-Alive",
    )
)
_SAFE_VALUE = re.compile(r"[\x20-\x7e]{0,100}")


def loggable_headers(headers: Any) -> list[str]:
    """Response header lines fit for a log: safe names with printable values, the rest counted."""
    lines: list[str] = []
    withheld = 0
    for name, value in headers.items():
        if str(name).lower() in SAFE_RESPONSE_HEADERS and _SAFE_VALUE.fullmatch(str(value)):
            lines.append(f"    '{name}': '{value}'")
        else:
            withheld += 1
    if withheld:
        lines.append(f"    ({withheld} other header(s) withheld: names and values may quote the server's bytes)")
    return lines


#: Set while this package sends a token request and reads its answer: in the retry policy's
#: context (the async twin's tasks see it), and in the guarded adapter's thread (the worker
#: threads of the async requests transport, which the policy's context does not reach).
_IN_TOKEN_REQUEST: contextvars.ContextVar[bool] = contextvars.ContextVar("legacy_msi_token_request", default=False)


@contextlib.contextmanager
def token_request() -> Iterator[None]:
    """Mark the code inside as sending a token request: libraries' warnings about it are withheld."""
    install_log_filter()
    reset = _IN_TOKEN_REQUEST.set(True)
    try:
        yield
    finally:
        _IN_TOKEN_REQUEST.reset(reset)


class _WithheldDetailsFilter(logging.Filter):
    """Withholds what libraries quote of a token request's answer in their warnings.

    urllib3 logs a WARNING "Failed to parse headers" with the unparsed bytes, and azure-core
    1.31 (not 1.41) a WARNING "Unable to stream download: ..." whose exception (urllib3 1.26's
    ``InvalidChunkLength``) quotes the body: a hostile endpoint can put anything there, a
    token included. Records logged outside this package's token requests pass unchanged.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True  # the DEBUG lines name only the request and the status
        if not _IN_TOKEN_REQUEST.get():
            return True
        record.msg = "%s %s during a token request (details withheld: they may quote the server's bytes)"
        record.args = (record.name.split(".", 1)[0], record.levelname)
        record.exc_info = None
        record.exc_text = None
        return True


_FILTER = _WithheldDetailsFilter()
#: The loggers whose warnings may quote an answer (a filter applies only to records logged
#: on its own logger, not to those of its children). Named, not imported: naming a logger
#: loads nothing.
_QUOTING_LOGGERS = (
    "urllib3.connection",
    "urllib3.connectionpool",
    "urllib3.response",
    "urllib3.util.retry",
    "azure.core.pipeline.transport._requests_basic",
    "azure.core.pipeline.transport._requests_asyncio",
    "azure.core.pipeline.transport._aiohttp",
)
_FILTER_INSTALLED = False


def install_log_filter() -> None:
    """Put the withholding filter on every logger that may quote a token request's answer (once)."""
    global _FILTER_INSTALLED
    if not _FILTER_INSTALLED:
        for name in _QUOTING_LOGGERS:
            logging.getLogger(name).addFilter(_FILTER)
        _FILTER_INSTALLED = True
