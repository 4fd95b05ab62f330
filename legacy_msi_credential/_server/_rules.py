"""A protocol's rules as data: a request record, tables of named checks, one runner. No I/O.

A server parses a request its own way (aiohttp, http.server), makes a :class:`Request` of it
and runs tables of :class:`Rule` rows over it: each row is a named check that returns a
:class:`Refusal` or None, and the first refusal wins (:func:`first_refusal`). A protocol
is a :class:`RuleTable`: its rows, what an accepted request asks for, and how a token is
answered. Every refusal becomes an answer through :func:`refusal_answer`, in both servers.

The tables here are the ones every server shares, in the order a server runs them:

* :data:`FRAMING`, then (once the body is read) :data:`BODY`: framing one HTTP parser
  refuses and another lets by, and the request's size;
* :data:`ADMIT`: whether this server may answer at all, on any path: the peer is loopback,
  no proxy relayed the request, no browser sent it.

Adding a check is adding a row where its precedence puts it; a new protocol is a new
:class:`RuleTable` (``_legacy.LEGACY`` is the example).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Optional, Protocol, TypeVar, Union
from urllib.parse import urlsplit

from .._loopback import is_loopback_host

#: The content type of every JSON answer.
JSON_CONTENT_TYPE = "application/json; charset=utf-8"
#: Headers a request may carry once at most (RFC 9110 and 9112: repeated, they are ambiguous).
SINGLE_HEADERS = ("Host", "Content-Length", "Transfer-Encoding", "Content-Type", "Metadata")

#: Headers (lower case) that a proxy or load balancer adds when it relays a request: the
#: standard ones (RFC 9110 ``Via``, RFC 7239 ``Forwarded``) and those of common proxies,
#: CDNs and platforms. A request carrying any of them did not come from this machine's
#: client directly, so a server that refuses relayed requests refuses it.
RELAY_HEADERS = frozenset(
    (
        "via",
        "forwarded",
        "x-forwarded",
        "x-real-ip",
        "x-client-ip",
        "client-ip",
        "true-client-ip",
        "x-cluster-client-ip",
        "cf-connecting-ip",
        "cf-connecting-ipv6",
        "fastly-client-ip",
        "akamai-origin-hop",
        "x-original-forwarded-for",
        "x-originating-ip",
        "x-remote-ip",
        "x-remote-addr",
        "x-proxyuser-ip",
        "x-envoy-external-address",
        "x-appengine-user-ip",
        "x-azure-clientip",
        "x-azure-socketip",
        "x-azure-fdid",
        "x-arr-clientip",
    )
)
#: Prefixes of relaying headers: ``X-Forwarded-For``, ``-Host``, ``-Proto``, ``-Port``,
#: ``-Server``, ``-Prefix`` and every other ``X-Forwarded-*``.
RELAY_HEADER_PREFIXES = ("x-forwarded-",)


class Refusal(Exception):
    """An answer from the protocol's error table instead of a token.

    Raised by a token source too, to have its failure answered as the protocol would.

    Args:
        status: The HTTP status.
        error: The ``error`` field.
        description: The ``error_description`` field.
        headers: Headers to send with it (``Allow``, ``Retry-After``).
        close: The connection closes after it: what is left of the request is never read.
        malformed: Framing the server refuses itself: logged and counted as its parser's
            own refusals are (it closes too).
    """

    def __init__(
        self,
        status: int,
        error: str,
        description: str,
        headers: Optional[Mapping[str, str]] = None,
        *,
        close: bool = False,
        malformed: bool = False,
    ) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description
        self.headers: Mapping[str, str] = dict(headers or {})
        self.close = close or malformed
        self.malformed = malformed

    def body(self) -> dict[str, str]:
        """The JSON document sent with it."""
        return {"error": self.error, "error_description": self.description}


@dataclass(frozen=True)
class Answer:
    """An answer as a server sends it: its status, its JSON body's bytes, its own headers.

    Each server adds what it says of itself (``Server``, ``Cache-Control``) and the framing.
    """

    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    #: The connection closes after it.
    close: bool = False


def json_answer(status: int, document: Any, headers: Optional[Mapping[str, str]] = None) -> Answer:
    """An answer carrying ``document`` as JSON."""
    return Answer(status, json.dumps(document).encode("utf-8"), dict(headers or {}))


def refusal_answer(refusal: Refusal) -> Answer:
    """The one way a refusal is answered, by every server: its status, its JSON body, its headers."""
    return Answer(refusal.status, json.dumps(refusal.body()).encode("utf-8"), dict(refusal.headers), refusal.close)


@dataclass(frozen=True)
class Request:
    """What the rules see of a request, however the server parsed it.

    Attributes:
        method: The request method.
        target: The request target: path and query, as sent.
        headers: Every header field in the order received, repeated ones included.
        peer_is_loopback: Whether the connection's peer address is loopback (never a header's word).
        params: The request's parameters, each with all its values (the legacy protocol's
            :func:`~._legacy.parameters`); empty until the server has read them.
        version: The HTTP version.
        content_length: The ``Content-Length`` as the parser read it, if any.
        body: The body, once read (None: it ended before its end).
    """

    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    peer_is_loopback: bool
    params: Mapping[str, Sequence[str]] = field(default_factory=dict)
    version: tuple[int, int] = (1, 1)
    content_length: Optional[int] = None
    body: Optional[bytes] = b""

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    def header(self, name: str) -> Optional[str]:
        """The first value of header ``name`` (any case), or None."""
        lowered = name.lower()
        return next((value for key, value in self.headers if key.lower() == lowered), None)

    def header_count(self, name: str) -> int:
        """How many times header ``name`` (any case) was sent."""
        lowered = name.lower()
        return sum(1 for key, _ in self.headers if key.lower() == lowered)

    def param(self, name: str) -> str:
        """The first value of parameter ``name``, or ``""``."""
        return (self.params.get(name) or [""])[0]

    def repeated_params(self) -> list[str]:
        """The names, sorted, of the parameters given more than once (which value counts is ambiguous)."""
        return sorted(name for name, values in self.params.items() if len(values) > 1)


S = TypeVar("S", contravariant=True)
A = TypeVar("A")


@dataclass(frozen=True)
class Rule(Generic[S]):
    """One named check of a table: ``check(request, settings)`` refuses the request or passes it (None).

    ``settings`` is what the server was configured with (a protocol's policy, the limits).
    """

    name: str
    check: Callable[[Request, S], Optional[Refusal]]


def first_refusal(rules: Iterable[Rule[S]], request: Request, settings: S) -> Optional[Refusal]:
    """The refusal of the first row that refuses the request, in the table's order; None if every row passes."""
    for rule in rules:
        refusal = rule.check(request, settings)
        if refusal is not None:
            return refusal
    return None


@dataclass(frozen=True)
class RuleTable(Generic[S, A]):
    """A protocol: its rows, what a request they all pass asks for, and how its token is answered.

    Attributes:
        name: For logs and the documentation.
        rules: The rows, in order of precedence (:data:`ADMIT`'s first, as a rule).
        accept: What an accepted request asks for (``_legacy.TokenAsk``), read from it.
        answer: The protocol's 200 document for an ask: ``answer(ask, token, expires_on,
            now, client_id)``, ``client_id`` being the one the token names.
    """

    name: str
    rules: tuple[Rule[S], ...]
    accept: Callable[[Request, S], A]
    answer: Callable[[A, str, int, int, str], dict[str, str]]

    def decide(self, request: Request, settings: S) -> Union[A, Refusal]:
        """What the protocol does with a request: the first refusal of its rows, or what it asks for."""
        refusal = first_refusal(self.rules, request, settings)
        return refusal if refusal is not None else self.accept(request, settings)


# --- Framing: what a server refuses whatever its parser's version lets by ------------------


class FramingLimits(Protocol):
    """What the framing rows read of a server's limits."""

    @property
    def max_headers(self) -> int: ...

    @property
    def max_body(self) -> int: ...


def _transfer_encoding_in_http10(request: Request, limits: FramingLimits) -> Optional[Refusal]:
    if request.version < (1, 1) and request.header_count("Transfer-Encoding"):
        return Refusal(400, "invalid_request", "Transfer-Encoding in an HTTP/1.0 request.", malformed=True)
    return None


def _host_in_http11(request: Request, limits: FramingLimits) -> Optional[Refusal]:
    if request.version >= (1, 1) and not request.header_count("Host"):  # RFC 9112 3.2
        return Refusal(400, "invalid_request", "An HTTP/1.1 request without Host.", malformed=True)
    return None


def _single_headers_once(request: Request, limits: FramingLimits) -> Optional[Refusal]:
    repeated = next((name for name in SINGLE_HEADERS if request.header_count(name) > 1), None)
    if repeated is not None:  # which one counts is ambiguous
        return Refusal(400, "invalid_request", f"More than one {repeated} header.", malformed=True)
    return None


def _header_count(request: Request, limits: FramingLimits) -> Optional[Refusal]:
    if len(request.headers) > limits.max_headers:
        return Refusal(431, "invalid_request", f"More than {limits.max_headers} request headers.", close=True)
    return None


def _declared_length(request: Request, limits: FramingLimits) -> Optional[Refusal]:
    if request.content_length is not None and request.content_length > limits.max_body:
        return Refusal(413, "invalid_request", "The request body is too large.", close=True)
    return None


def _body_complete(request: Request, limits: FramingLimits) -> Optional[Refusal]:
    if request.body is None:
        return Refusal(400, "invalid_request", "The request body ended early.", close=True)
    return None


def _body_size(request: Request, limits: FramingLimits) -> Optional[Refusal]:
    if request.body is not None and len(request.body) > limits.max_body:
        return Refusal(413, "invalid_request", "The request body is too large.", close=True)
    return None


#: Run on a request's head, before its body is read: framing one aiohttp version refuses and
#: another accepts (so that what a client meets never depends on the version), then sizes.
FRAMING: tuple[Rule[FramingLimits], ...] = (
    Rule("no Transfer-Encoding in HTTP/1.0", _transfer_encoding_in_http10),
    Rule("Host in HTTP/1.1", _host_in_http11),
    Rule("single headers once", _single_headers_once),
    Rule("header count", _header_count),
    Rule("declared body size", _declared_length),
)
#: Run once the body is read (``Request.body``): it arrived whole, and within the limit.
BODY: tuple[Rule[FramingLimits], ...] = (
    Rule("body complete", _body_complete),
    Rule("body size", _body_size),
)


# --- Admission: every path's rule -----------------------------------------------------------


class AdmitPolicy(Protocol):
    """What the admission rows read of a server's policy."""

    @property
    def refuse_forwarded(self) -> bool:
        """Refuse requests relayed by a proxy (any of :data:`RELAY_HEADERS`)."""

    @property
    def browser_proof(self) -> bool:
        """Refuse what a web browser sends: a ``Host`` that is not loopback (DNS rebinding),
        and the headers :func:`browser_marker` names."""


def host_is_loopback(host: Optional[str]) -> bool:
    """Whether a ``Host`` header names loopback: ``localhost``, ``127.0.0.1``, ``[::1]``, with or without a port.

    A missing ``Host`` (HTTP/1.0) is accepted: every browser sends one.
    """
    if host is None:
        return True
    text = host.strip()
    match = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[^:\[\]]+)(?::([0-9]{1,5}))?", text)
    return match is not None and is_loopback_host(match.group(1))


#: Headers (lower case) a web browser sends and no token client does. Not ``Sec-Fetch-Mode``:
#: Node's fetch (undici, msal-node's default client) sends ``sec-fetch-mode: cors`` on every
#: request. A page reaching a loopback server by DNS rebinding is also stopped by the ``Host`` rule.
BROWSER_HEADERS = frozenset(("origin", "sec-fetch-site", "sec-fetch-dest", "sec-fetch-user"))


def browser_marker(names: Iterable[str]) -> Optional[str]:
    """The name of a header only a web browser sends (:data:`BROWSER_HEADERS`), if the request has one."""
    for name in names:
        if name.lower() in BROWSER_HEADERS:
            return name
    return None


def relay_marker(names: Iterable[str]) -> Optional[str]:
    """The name of a header a relaying proxy adds (:data:`RELAY_HEADERS`), if the request has one."""
    for name in names:
        lowered = name.lower()
        if lowered in RELAY_HEADERS or lowered.startswith(RELAY_HEADER_PREFIXES):
            return name
    return None


def _loopback_peer(request: Request, policy: AdmitPolicy) -> Optional[Refusal]:
    if not request.peer_is_loopback:
        return Refusal(401, "unauthorized_client", "Requests must come over loopback.")
    return None


def _not_relayed(request: Request, policy: AdmitPolicy) -> Optional[Refusal]:
    relayed = relay_marker(name for name, _ in request.headers) if policy.refuse_forwarded else None
    if relayed is not None:
        # A local proxy relaying a remote caller: IMDS's own rule against request forgery.
        return Refusal(
            400,
            "invalid_request",
            f"Relayed requests are refused (the request carries {relayed}): ask from this machine directly.",
        )
    return None


def _loopback_host(request: Request, policy: AdmitPolicy) -> Optional[Refusal]:
    if policy.browser_proof and not host_is_loopback(request.header("Host")):
        return Refusal(
            401, "unknown_source", "The Host header must name localhost, 127.0.0.1 or [::1] (no other name)."
        )
    return None


def _not_a_browser(request: Request, policy: AdmitPolicy) -> Optional[Refusal]:
    marker = browser_marker(name for name, _ in request.headers) if policy.browser_proof else None
    if marker is not None:
        return Refusal(
            401, "unauthorized_client", f"Requests from web pages are refused (the request carries {marker})."
        )
    return None


#: Whether a server may answer a request at all, whatever its path (the token path, the
#: health path, an unknown one); a server runs it before it dispatches, and a protocol's
#: table starts with it.
ADMIT: tuple[Rule[AdmitPolicy], ...] = (
    Rule("loopback peer", _loopback_peer),
    Rule("not relayed", _not_relayed),
    Rule("loopback Host", _loopback_host),
    Rule("not a browser", _not_a_browser),
)
