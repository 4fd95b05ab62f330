"""The emulator's faults: scripted answers that rehearse what can go wrong.

Each kind of fault is one row of :data:`KINDS`: how the CLI spells it, and where it acts
(before the protocol's decision, on the token issued, or on how the answer's bytes are
delivered). Adding a fault is a class method of :class:`Fault` and a row here.
"""

from __future__ import annotations

import io
import math
import re
import socket
import struct
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Protocol

#: A hung request is released after this, or when the emulator stops.
_HANG_DEFAULT = 3600.0  # s
#: The ``error`` of a scripted status that names none.
_DEFAULT_ERRORS = {
    400: "bad_request",
    401: "unauthorized_client",
    403: "access_denied",
    404: "not_found",
    410: "gone",
    429: "too_many_requests",
}


@dataclass(frozen=True)
class Fault:
    """One scripted answer, used for one token request instead of the normal one.

    Build them with the class methods; :func:`parse_fault_spec` reads the CLI's form.
    """

    kind: str
    status: int = 200
    error: Optional[str] = None
    description: Optional[str] = None
    retry_after: Optional[str] = None
    seconds: float = 0.0
    size: int = 0
    fields: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def http_error(
        cls,
        status: int,
        *,
        error: Optional[str] = None,
        description: Optional[str] = None,
        retry_after: Optional[str | float] = None,
    ) -> Fault:
        """An error answer: JSON ``{"error", "error_description"}``, optionally with ``Retry-After``."""
        return cls(
            "status",
            status=status,
            error=error,
            description=description,
            retry_after=None if retry_after is None else _retry_after_text(retry_after),
        )

    @classmethod
    def ok(cls) -> Fault:
        """Answer normally: a placeholder that spaces out the other faults of a script."""
        return cls("ok")

    @classmethod
    def drop(cls) -> Fault:
        """Close the connection without answering."""
        return cls("drop")

    @classmethod
    def reset(cls) -> Fault:
        """Start a 200 answer, then reset the connection halfway through the body."""
        return cls("reset")

    @classmethod
    def delay(cls, seconds: float) -> Fault:
        """Answer normally after ``seconds``."""
        return cls("delay", seconds=seconds)

    @classmethod
    def hang(cls, seconds: float = _HANG_DEFAULT) -> Fault:
        """Accept the request and never answer (until ``seconds`` pass or the emulator stops)."""
        return cls("hang", seconds=seconds)

    @classmethod
    def not_json(cls, status: int = 200) -> Fault:
        """Answer with an HTML page, as a web server squatting on the port would."""
        return cls("not_json", status=status)

    @classmethod
    def truncated(cls) -> Fault:
        """Answer 200 with the first half of a token response."""
        return cls("truncated")

    @classmethod
    def huge(cls, size: int, *, announced: bool = True) -> Fault:
        """Answer 200 with ``size`` bytes of JSON padding, with or without ``Content-Length``."""
        return cls("huge" if announced else "flood", size=size)

    @classmethod
    def trickle(cls, seconds_per_byte: float) -> Fault:
        """Send a normal answer one byte at a time, ``seconds_per_byte`` apart."""
        return cls("trickle", seconds=seconds_per_byte)

    @classmethod
    def lifetime(cls, seconds: int) -> Fault:
        """Issue a new token living ``seconds`` (bypassing the emulator's own cache)."""
        return cls("lifetime", seconds=seconds)

    @classmethod
    def token_fields(cls, **fields: Any) -> Fault:
        """Issue a new token, then replace or add these fields of the JSON answer."""
        return cls("fields", fields=dict(fields))

    @classmethod
    def wrong_identity(cls) -> Fault:
        """Answer with a token (and ``client_id``) of another identity than the one asked for,
        as an extension that does not know the identity may have answered."""
        return cls("wrong-identity")

    @classmethod
    def expired(cls) -> Fault:
        """Issue a token that expired a minute ago."""
        return cls("expired")


def _retry_after_text(value: str | float) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(int(value)) if float(value).is_integer() else str(value)
    return str(value)


class Responder(Protocol):
    """What a fault needs of the request handler answering it."""

    close_connection: bool
    wfile: io.BufferedIOBase
    connection: socket.socket

    @property
    def stopping(self) -> threading.Event: ...

    def answer_bytes(
        self, status: int, body: bytes, content_type: str, extra: Optional[Mapping[str, str]] = None
    ) -> None: ...

    def answer_error(
        self, status: int, error: str, description: str, extra: Optional[Mapping[str, str]] = None
    ) -> None: ...

    def send_response(self, code: int, message: Optional[str] = None) -> None: ...

    def send_header(self, keyword: str, value: str) -> None: ...

    def end_headers(self) -> None: ...


@dataclass(frozen=True)
class TokenPlan:
    """What a fault changes in the token issued."""

    #: Mint a new token, neither taken from nor kept in the emulator's cache.
    fresh: bool = False
    #: Its lifetime in seconds (None: the emulator's).
    lifetime: Optional[int] = None
    #: For another identity than the one asked for.
    stranger: bool = False
    #: Fields of the JSON answer replaced or added.
    fields: Mapping[str, Any] = field(default_factory=dict)


NORMAL = TokenPlan()


@dataclass(frozen=True)
class Kind:
    """How one kind of fault acts; each hook is optional.

    Attributes:
        spelled: The CLI's name (None: a status, spelled by its number, or Python only).
        takes: ``nothing`` or a ``number`` after ``=``.
        build: The fault, from the number (0 when it takes nothing); every spelled kind has one.
        before: Acts before the protocol's decision; True when it answered.
        token: What it changes in the token issued.
        deliver: Sends the answer's bytes its own way.
    """

    spelled: Optional[str] = None
    takes: str = "nothing"
    build: Optional[Callable[[float], Fault]] = None
    #: The number when it is left out (None: it must be given).
    default: Optional[float] = None
    before: Optional[Callable[[Responder, Fault], bool]] = None
    token: Callable[[Fault], TokenPlan] = lambda fault: NORMAL
    deliver: Optional[Callable[[Responder, Fault, bytes], None]] = None


# --- what the faults do -----------------------------------------------------------------------


def _status(responder: Responder, fault: Fault) -> bool:
    error = fault.error or _DEFAULT_ERRORS.get(fault.status) or ("unknown" if fault.status >= 500 else "error")
    extra = {"Retry-After": fault.retry_after} if fault.retry_after is not None else None
    responder.answer_error(fault.status, error, fault.description or f"Scripted {fault.status} answer.", extra)
    return True


def _drop(responder: Responder, fault: Fault) -> bool:
    responder.close_connection = True
    return True


def _hang(responder: Responder, fault: Fault) -> bool:
    responder.stopping.wait(fault.seconds)
    responder.close_connection = True
    return True


def _delay(responder: Responder, fault: Fault) -> bool:
    responder.stopping.wait(fault.seconds)
    return False


def _not_json(responder: Responder, fault: Fault) -> bool:
    page = b"<html><head><title>It works</title></head><body>Not the token service.</body></html>"
    responder.answer_bytes(fault.status, page, "text/html")
    return True


def _flood(responder: Responder, fault: Fault) -> bool:
    """``size`` bytes of JSON padding, announced by ``Content-Length`` (``huge``) or not (``flood``)."""
    responder.send_response(200)
    responder.send_header("Content-Type", "application/json")
    if fault.kind == "huge":
        responder.send_header("Content-Length", str(fault.size))
    else:
        responder.send_header("Connection", "close")
    responder.end_headers()
    responder.close_connection = True
    chunk = b" " * 65536
    sent = 0
    try:
        while sent < fault.size and not responder.stopping.is_set():
            piece = chunk[: fault.size - sent]
            responder.wfile.write(piece)
            sent += len(piece)
    except OSError:
        pass  # the client stopped reading, as it should
    return True


def _headers_for(responder: Responder, body: bytes) -> None:
    responder.send_response(200)
    responder.send_header("Content-Type", "application/json")
    responder.send_header("Content-Length", str(len(body)))
    responder.end_headers()


def _truncated(responder: Responder, fault: Fault, body: bytes) -> None:
    responder.answer_bytes(200, body[: len(body) // 2], "application/json; charset=utf-8")


def _trickle(responder: Responder, fault: Fault, body: bytes) -> None:
    _headers_for(responder, body)
    responder.wfile.flush()
    try:
        for index in range(len(body)):
            responder.wfile.write(body[index : index + 1])
            responder.wfile.flush()
            if responder.stopping.wait(fault.seconds):
                break
    except OSError:
        pass
    responder.close_connection = True


def _reset(responder: Responder, fault: Fault, body: bytes) -> None:
    _headers_for(responder, body)
    responder.wfile.write(body[: len(body) // 2])
    responder.wfile.flush()
    # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
    responder.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    responder.close_connection = True


_EXPIRED = TokenPlan(fresh=True, lifetime=-60)  # a minute ago
_STRANGER = TokenPlan(fresh=True, stranger=True)


def _lifetime(fault: Fault) -> TokenPlan:
    return TokenPlan(fresh=True, lifetime=int(fault.seconds))


#: Every kind of fault, by :attr:`Fault.kind`.
KINDS: dict[str, Kind] = {
    "status": Kind(before=_status),  # spelled by its number: 503, 429@5, 400/invalid_resource
    "ok": Kind("ok", build=lambda _: Fault.ok()),
    "drop": Kind("drop", build=lambda _: Fault.drop(), before=_drop),
    "hang": Kind("hang", "number", Fault.hang, default=_HANG_DEFAULT, before=_hang),
    "delay": Kind("delay", "number", Fault.delay, before=_delay),
    "not_json": Kind("not-json", build=lambda _: Fault.not_json(), before=_not_json),
    "huge": Kind("huge", "number", lambda n: Fault.huge(int(n)), before=_flood),
    "flood": Kind("flood", "number", lambda n: Fault.huge(int(n), announced=False), before=_flood),
    "truncated": Kind("truncated", build=lambda _: Fault.truncated(), deliver=_truncated),
    "trickle": Kind("trickle", "number", Fault.trickle, deliver=_trickle),
    "reset": Kind("reset", build=lambda _: Fault.reset(), deliver=_reset),
    "lifetime": Kind("lifetime", "number", lambda n: Fault.lifetime(int(n)), token=_lifetime),
    "expired": Kind("expired", build=lambda _: Fault.expired(), token=lambda _: _EXPIRED),
    "fields": Kind(token=lambda fault: TokenPlan(fresh=True, fields=fault.fields)),  # Python only
    "wrong-identity": Kind("wrong-identity", build=lambda _: Fault.wrong_identity(), token=lambda _: _STRANGER),
}
_SPELLED = {kind.spelled: kind for kind in KINDS.values() if kind.spelled is not None}


# --- the CLI's form ------------------------------------------------------------------------------

_SPEC = re.compile(r"^(?P<body>.+?)(?:x(?P<count>\d+))?$")
_STATUS_SPEC = re.compile(r"^(?P<status>[1-5]\d\d)(?:/(?P<error>[A-Za-z0-9_]+))?(?:@(?P<retry_after>[^@]+))?$")


def parse_fault_spec(spec: str) -> list[Fault]:
    """Read faults written as on the command line.

    The grammar, items separated by commas, each optionally followed by ``xN`` to repeat::

        STATUS[/ERROR][@RETRY_AFTER]    503, 429@5, 400/invalid_resource, 500@bogus
        ok | drop | reset | truncated | expired | wrong-identity | not-json
        hang[=SECONDS] | delay=SECONDS | trickle=SECONDS_PER_BYTE
        huge=BYTES (announced) | flood=BYTES (no Content-Length) | lifetime=SECONDS

    Raises:
        ValueError: The spec does not follow the grammar.
    """
    faults: list[Fault] = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            raise ValueError(f"empty fault in {spec!r}")
        match = _SPEC.match(item)
        assert match is not None
        body, count = match.group("body"), int(match.group("count") or 1)
        if not 1 <= count <= 100000:
            raise ValueError(f"fault repeat count must be 1 to 100000 in {item!r}")
        faults.extend([_parse_one(body)] * count)
    return faults


def _parse_one(text: str) -> Fault:
    status = _STATUS_SPEC.match(text)
    if status is not None:
        return Fault.http_error(
            int(status.group("status")), error=status.group("error"), retry_after=status.group("retry_after")
        )
    name, _, value = text.partition("=")
    kind = _SPELLED.get(name)
    if kind is not None and kind.build is not None:
        if kind.takes == "nothing" and not value:
            return kind.build(0)
        if kind.takes == "number" and value:
            return kind.build(_number(text, value))
        if kind.takes == "number" and kind.default is not None:
            return kind.build(kind.default)
    raise ValueError(f"unknown fault {text!r}; see `legacy-msi emulate --help` for the grammar")


def _number(item: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"fault {item!r}: {value!r} is not a number") from None
    if not math.isfinite(number) or abs(number) > 10**9 or (number < 0 and not item.startswith("lifetime")):
        raise ValueError(f"fault {item!r}: {value!r} is out of range")
    return number
