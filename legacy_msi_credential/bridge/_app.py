"""The bridge's server: aiohttp's strict HTTP/1.1 parser, with deadlines and limits of its own.

The shell knows sockets and framing; what a request means is a table of rules
(:mod:`legacy_msi_credential._server._rules`; the protocol's is ``_server._legacy.LEGACY``),
and where its token comes from is :class:`~legacy_msi_credential.bridge._source.TokenSource`.

* **Framing** is aiohttp's parser (llhttp, strict from aiohttp 3.9.4): ``Content-Length:
  +N``, ``Content-Length`` with ``Transfer-Encoding``, an unknown transfer coding, bare line
  feeds and folded headers are a ``400`` and a closed connection (RFC 9112 section 6).
  Refused here too, whatever the parser's version (``_server._rules.FRAMING``):
  ``Transfer-Encoding`` in an HTTP/1.0 request, and a repeated ``Host``, ``Content-Length``,
  ``Transfer-Encoding``, ``Content-Type`` or ``Metadata``.
* **A whole-request deadline.** From its first byte (or the end of the previous answer) a
  connection has ``client_timeout`` seconds to deliver a request's head and body; then it
  is closed, however it trickles.
* **Bounded connections, chosen by what they send.** At ``max_connections``, a new
  connection displaces the one that has sent nothing for longest, then the one whose
  incomplete request has been silent longest; one being answered is never displaced. So
  clients that open connections and send nothing cannot push out one that asks slowly.
* **Bounded heads.** Before its head is complete a connection holds at most ``max_head``
  bytes (``431`` and closed beyond), and all connections together ``max_pending``: past
  it, the one holding the most goes. aiohttp's own line and field limits fit inside
  ``max_head``.
* **One rule before dispatch.** Every path (token, health, unknown) is answered only when
  :data:`~legacy_msi_credential._server._rules.ADMIT` allows: loopback peer, not relayed, not a browser.
* **Says what it is, and nothing else.** Every answer, aiohttp's own parser errors included
  (:class:`_Handler`), is JSON in the protocol's error shape with ``Server:
  legacy-msi-bridge``: no aiohttp version. A malformed request is one log line at most,
  :data:`MALFORMED_REPORTS` a minute and then a count, never its target and never a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections import OrderedDict
from dataclasses import replace
from http import HTTPStatus
from typing import Any, Callable, Optional, Union

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

from .._claims import decode_claims
from .._constants import HEALTH_PATH, TOKEN_PATH
from .._loopback import peer_is_loopback
from .._server._legacy import LEGACY, Policy, TokenAsk, parameters
from .._server._limits import ServerLimits
from .._server._owner import socket_owner
from .._server._rules import (
    ADMIT,
    BODY,
    FRAMING,
    JSON_CONTENT_TYPE,
    Answer,
    Refusal,
    Request,
    RuleTable,
    first_refusal,
    json_answer,
    refusal_answer,
)
from .._text import clean_text
from ._log import OFF_LOOP
from ._source import TokenSource

_LOGGER = logging.getLogger("legacy_msi_credential.bridge")
_ACCESS = logging.getLogger("legacy_msi_credential.bridge.access")
#: Malformed requests (each a 400 the client sees) and connections that failed: one line each, rate-limited.
_PARSER_LOGGER = logging.getLogger("legacy_msi_credential.bridge.http")

#: What the ``Server`` header and the health path say this is.
SERVER_NAME = "legacy-msi-bridge"
#: Malformed requests logged a minute (one line each); beyond, they are counted and the
#: count is logged when the minute is over.
MALFORMED_REPORTS = 10
#: The window of :data:`MALFORMED_REPORTS`.
MALFORMED_WINDOW = 60.0  # s


class Reports:
    """One log line per malformed request, at most ``limit`` a window, then a count.

    A client can send malformed requests as fast as it likes; each costs at most a
    counter, so the log (and the loop writing it) is not the client's to flood.

    Args:
        limit: Lines a window.
        clock: Seconds, for the window.
        window: The window's length in seconds.
    """

    def __init__(self, limit: int, clock: Callable[[], float], window: float = MALFORMED_WINDOW) -> None:
        self.limit = limit
        self.clock = clock
        self.window = window
        #: Malformed requests since the start, logged or not.
        self.total = 0
        self._started = clock()
        self._logged = 0
        self._suppressed = 0

    def report(self, message: str, *args: object) -> None:
        self.total += 1
        now = self.clock()
        if now - self._started >= self.window:
            if self._suppressed:
                _PARSER_LOGGER.warning(
                    "%d more malformed requests in the last %d s were not logged", self._suppressed, self.window
                )
            self._started, self._logged, self._suppressed = now, 0, 0
        if self._logged >= self.limit:
            self._suppressed += 1
            return
        self._logged += 1
        _PARSER_LOGGER.warning(message, *args)


class Connections:
    """The open connections, and who gives way when there are too many or they hold too much.

    A connection is, at any moment, *waiting* (nothing of its next request received yet),
    *partial* (part of a request received: its head, or its head and part of its body) or
    *being answered* (its whole request is in, until it is answered). What it holds before
    its request is whole is bounded twice: ``max_head`` bytes of head (``431`` and closed
    beyond) and ``max_body`` of body (``413``) for each, and ``max_pending`` for all of them
    together, heads and bodies alike: a thousand bodies trickling in hold as much memory as a
    thousand heads would.

    Who gives way is decided by what each has sent and how long it has been silent, never
    by age alone, so that a client that keeps connecting without sending cannot push out
    one that is slowly but steadily sending its request:

    * at ``limit`` connections, a new one displaces the waiting connection silent longest,
      else the partial one silent longest; when every connection is being answered (they
      end soon) the new one is let in;
    * past ``max_pending`` bytes of incomplete requests, the partial connection holding the
      most goes (of equals, the one silent longest), never the one whose bytes just came;
    * a connection being answered is never displaced.

    Args:
        limits: The bounds read here: ``client_timeout`` (seconds a connection has to deliver
            each request), ``max_head`` and ``max_body`` (bytes of one request's head and
            body), ``max_pending`` (bytes of incomplete requests held by all connections together).
        limit: Connections kept at once (``max_connections``, or fewer where descriptors are short).
    """

    def __init__(self, limits: ServerLimits, limit: int) -> None:
        if limits.max_head <= 0 or limits.max_pending < limits.max_head:
            raise ValueError(
                f"max_pending ({limits.max_pending}) must be at least max_head ({limits.max_head}), which is positive"
            )
        self.limits = limits
        self.limit = limit
        self._open: dict[Any, _Connection] = {}
        # Each ordered from the longest silent to the most recently heard.
        self._waiting: OrderedDict[_Connection, None] = OrderedDict()
        self._partial: OrderedDict[_Connection, None] = OrderedDict()
        #: Bytes of incomplete requests (heads, and bodies being read), all connections together.
        self.pending = 0
        #: Connections closed for their deadline, displaced, or refused for their head's size
        #: (for tests and the health path).
        self.timed_out = 0
        self.displaced = 0
        self.oversized = 0

    def __len__(self) -> int:
        return len(self._open)

    def opened(self, connection: _Connection) -> None:
        while len(self._open) >= self.limit:
            victim = next(iter(self._waiting), None) or next(iter(self._partial), None)
            if victim is None:
                break  # every connection is in a request: they end soon, so let this one in
            self._displace(victim)
        self._open[connection.transport] = connection
        self._waiting[connection] = None

    def heard(self, connection: _Connection, size: int) -> None:
        """``size`` more bytes of ``connection``'s request (its head, or its body) arrived, before it is whole."""
        self._waiting.pop(connection, None)
        self._partial[connection] = None
        self._partial.move_to_end(connection)
        connection.pending += size
        self.pending += size
        while self.pending > self.limits.max_pending:
            victim = max(
                (other for other in self._partial if other is not connection),
                key=lambda other: other.pending,  # max() keeps the first of equals: the one silent longest
                default=None,
            )
            if victim is None:
                break  # only this connection holds bytes: bounded by max_head + max_body itself
            self._displace(victim)

    def request_read(self, connection: _Connection) -> None:
        """``connection``'s whole request is in (its body read to the end): it is being
        answered, never displaced, until it is answered or closed."""
        self._release(connection)

    def waiting(self, connection: _Connection) -> None:
        """``connection`` was answered and waits for its next request."""
        if connection.transport in self._open:
            self._release(connection)
            self._waiting[connection] = None
            self._waiting.move_to_end(connection)

    def closed(self, connection: _Connection) -> None:
        if self._open.get(connection.transport) is connection:
            del self._open[connection.transport]
        self._release(connection)
        self._waiting.pop(connection, None)

    def _release(self, connection: _Connection) -> None:
        self._partial.pop(connection, None)
        self.pending -= connection.pending
        connection.pending = 0

    def _displace(self, victim: _Connection) -> None:
        self.displaced += 1
        self.closed(victim)  # gone now, although its transport reports it later
        victim.close()

    def busy(self) -> bool:
        """Whether a request is being answered."""
        return any(connection.busy for connection in self._open.values())

    def find(self, transport: Any) -> Optional[_Connection]:
        return self._open.get(transport)

    def close_all(self) -> None:
        for connection in list(self._open.values()):
            connection.close()


def _refusal_bytes(refusal: Refusal, server: str = SERVER_NAME) -> bytes:
    """A whole HTTP/1.1 answer that closes the connection, for refusals made before aiohttp has a request."""
    answer = refusal_answer(refusal)
    reason = HTTPStatus(answer.status).phrase
    return (
        f"HTTP/1.1 {answer.status} {reason}\r\nServer: {server}\r\n"
        f"Content-Type: {JSON_CONTENT_TYPE}\r\nContent-Length: {len(answer.body)}\r\n"
        "Cache-Control: no-store\r\nConnection: close\r\n\r\n"
    ).encode("ascii") + answer.body


_HEAD_TOO_LARGE = Refusal(431, "invalid_request", "The request head is too large.")


class Serving:
    """What a server on this shell serves: the legacy protocol (the bridge), by default.

    The seam another protocol plugs into (``legacy-msi adapt`` serves App Service's and IMDS's
    on the same shell): the shell keeps framing, deadlines, limits, the ``ADMIT`` table, the
    client's uid and the token source; a :class:`Serving` decides what a request asks for
    (its protocol's table), shapes the answer, and says how a source's failure is answered.
    """

    #: What the ``Server`` header and the health path say this is.
    server_name = SERVER_NAME
    #: The health path's ``role``.
    role = "bridge"

    def __init__(self, protocol: RuleTable[Policy, TokenAsk] = LEGACY) -> None:
        self.protocol = protocol

    def decide(self, request: Request, policy: Policy) -> Union[TokenAsk, Refusal]:
        """A token request, or a refusal: the protocol's table."""
        return self.protocol.decide(request, policy)

    def answer(self, ask: TokenAsk, token: str, expires_on: int, now: int, client_id: str) -> dict[str, str]:
        """The 200 answer's document."""
        return self.protocol.answer(ask, token, expires_on, now, client_id)

    def failed(self, refusal: Refusal) -> Refusal:
        """How the source's refusal is answered (the legacy protocol: as it is)."""
        return refusal

    def logged_path(self, path: str) -> str:
        """The path as the access log shows it: one this server serves as it is (redaction
        would take a path mixing letters and digits, as IMDS's does, for a token), any
        other cleaned of anything shaped like a token, of line breaks and of escapes."""
        return path if path in (TOKEN_PATH, HEALTH_PATH) else clean_text(path, 200)


class _Connection(asyncio.Protocol):
    """aiohttp's protocol for one connection, wrapped in a deadline and a budget of bytes.

    Whether a request head is complete is aiohttp's parser's word (its count of the requests
    it has parsed on this connection, against the answers given), never a second parse here.
    The parser is fed at most what is left of ``max_head`` while a head is incomplete, so it
    never holds more; from a complete head until its body is read, a connection is read up
    to ``max_head + max_body`` bytes (the body, and what a client pipelines behind it), then
    no further: the answer (``413`` for a body too large, which closes) or the deadline ends
    it. Once its request is whole, nothing more is read until it is answered.
    """

    def __init__(self, inner: _Handler, connections: Connections, loop: asyncio.AbstractEventLoop) -> None:
        self._inner = inner
        self._connections = connections
        self._loop = loop
        self.transport: Any = None
        self._busy = False
        self._timer: Optional[asyncio.TimerHandle] = None
        #: Bytes of the incomplete request held (counted in ``Connections.pending``).
        self.pending = 0
        #: Whether the request's head is in and its body is still being read.
        self.reading_body = False
        #: Bytes received since the connection last waited for a request.
        self._received = 0
        self._answers = 0
        self._refused = False
        #: Whether the connection has ended (closed here or by the client).
        self._ended = False

    @property
    def busy(self) -> bool:
        """Whether a request is being answered (set by the application around each answer)."""
        return self._busy

    @busy.setter
    def busy(self, value: bool) -> None:
        self._busy = value
        if not value:
            self._answers += 1
            if self.reading_body:  # answered without its body read (a framing refusal)
                self.reading_body = False
                self._connections.request_read(self)  # no pause: reading resumes below
            if self._in_request():
                # A request pipelined behind the one answered is parsed already: its body, if
                # any, is still to come, and counts as the first one's did.
                self.reading_body = True
                self._connections.heard(self, 0)
            else:
                self._received = 0
                self._connections.waiting(self)
            if self.transport is not None:
                self.transport.resume_reading()

    def request_read(self) -> None:
        """The application has read the whole request: no more of it is counted as pending, and
        nothing more is read from the connection until it is answered, so that what a client
        pipelines behind it waits in the kernel's buffer, not in this process uncounted."""
        self.reading_body = False
        self._connections.request_read(self)
        if self.transport is not None:
            self.transport.pause_reading()

    def _in_request(self) -> bool:
        """Whether aiohttp has parsed a request head that is not yet answered."""
        parsed: int = self._inner._request_count
        return parsed > self._answers

    # -- the deadline --
    def arm(self) -> None:
        """Start the time allowed for the next request (head and body); nothing once the connection
        has ended: a timer would keep it, its handler and the request it was reading for the
        whole deadline after the client left."""
        self.disarm()
        if not self._ended:
            self._timer = self._loop.call_later(self._connections.limits.client_timeout, self._expire)

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        self._connections.timed_out += 1
        self.close()

    def close(self) -> None:
        self._ended = True
        self.disarm()
        if self.transport is not None:
            self.transport.abort()

    # -- the budget --
    def _refuse_head(self) -> None:
        """``431`` and close: the head outgrew ``max_head``. Mid-answer (a pipelined head), just close."""
        self._refused = True
        self._connections.oversized += 1
        self._connections.closed(self)
        self.disarm()
        if self._busy:
            self.transport.abort()
        else:
            self.transport.write(_refusal_bytes(_HEAD_TOO_LARGE, self._inner.server_name))
            self.transport.close()

    # -- asyncio.Protocol, handed on --
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self._connections.opened(self)
        self.arm()
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._timer is None and not self._busy:
            self.arm()
        connections = self._connections
        if self._in_request():
            room = connections.limits.max_head + connections.limits.max_body - self._received
            if len(data) > room:  # not read any further: the answer (413 for a body too large) or the deadline ends it
                data = data[: max(room, 0)]
                self.transport.pause_reading()
            self._received += len(data)
            if data:
                if self.reading_body:
                    connections.heard(self, len(data))
                self._inner.data_received(data)
            return
        room = connections.limits.max_head - self._received
        part = data if len(data) <= room else data[:room]
        self._received += len(part)
        connections.heard(self, len(part))
        self._inner.data_received(part)
        if self._in_request():
            # The head is in; its body, if any, is still to come: the connection stays partial
            # (heard above), its bytes counted, until the application has read the request.
            self.reading_body = True
            if len(part) < len(data):
                self.data_received(data[len(part) :])
        elif len(part) < len(data):
            self._refuse_head()

    def eof_received(self) -> None:
        self._inner.eof_received()

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self._ended = True
        self.disarm()
        self._connections.closed(self)
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


def _response(answer: Answer, server: str = SERVER_NAME) -> web.Response:
    """An answer as the bridge sends it: JSON, ``Server: legacy-msi-bridge``, never cached."""
    response = web.Response(status=answer.status, body=answer.body, content_type="application/json", charset="utf-8")
    response.headers["Server"] = server
    response.headers["Cache-Control"] = "no-store"
    for name, value in answer.headers.items():
        response.headers[name] = value
    if answer.close:
        response.force_close()
    return response


class BridgeApp:
    """The bridge's application: a request in, an answer out, one access-log line.

    Args:
        source: Where tokens come from.
        policy: What the protocol's rules accept.
        serving: The protocol served and how (the legacy one, :class:`Serving`, by default).
        clock: Unix time, for ``expires_in``.
        limits: The bounds (``max_body``, ``max_headers``: 413 and 431 beyond; ``stopping_retry_after``).
        connections: The open connections (to end each one's deadline once its request is in).
        stopping: Set when the bridge stops: waiting clients get ``503``.
    """

    def __init__(
        self,
        source: TokenSource,
        policy: Policy,
        *,
        clock: Callable[[], float],
        limits: ServerLimits,
        connections: Connections,
        stopping: asyncio.Event,
        serving: Optional[Serving] = None,
    ) -> None:
        self.source = source
        self.policy = policy
        self.serving = serving or Serving()
        self.clock = clock
        self.limits = limits
        self.connections = connections
        self.stopping = stopping
        #: Per connection (its transport), the uid owning the client's socket: looked up once.
        self._owners: weakref.WeakKeyDictionary[Any, asyncio.Future[Optional[int]]] = weakref.WeakKeyDictionary()
        self.malformed = Reports(MALFORMED_REPORTS, clock)

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        started = time.monotonic()
        connection = self.connections.find(request.transport)
        kind = "-"
        try:
            if connection is not None:
                connection.busy = True
            response, kind = await self._answer(request, connection)
        finally:
            if connection is not None:
                connection.busy = False
                connection.arm()  # the time for the next request on this connection starts now
        _ACCESS.info(
            "%s %s %s %d %.1f ms",
            clean_text(request.method, 20),
            self.serving.logged_path(request.rel_url.path),  # a client's bytes: cleaned unless a path served
            kind,
            response.status,
            (time.monotonic() - started) * 1000,
        )
        return response

    async def _answer(self, request: web.BaseRequest, connection: Optional[_Connection]) -> tuple[web.Response, str]:
        peer = request.transport.get_extra_info("peername") if request.transport is not None else None
        facts = Request(
            request.method,
            request.path_qs,
            tuple(request.headers.items()),
            peer_is_loopback(peer),
            version=(request.version.major, request.version.minor),
            content_length=request.content_length,
        )
        refused = first_refusal(FRAMING, facts, self.limits)
        if refused is None:
            facts = replace(facts, body=await self._read_body(request))
            if connection is not None:
                connection.request_read()
            refused = first_refusal(BODY, facts, self.limits)
        if refused is not None:
            return self._refused(refused), "-"
        if connection is not None:
            connection.disarm()  # the request is in: what remains is the source's time
        refused = first_refusal(ADMIT, facts, self.policy)  # every path, first
        if refused is not None:
            return self._refused(refused), "-"
        if request.rel_url.path == HEALTH_PATH and request.method == "GET":
            return self._reply(json_answer(200, self.health())), "-"
        try:
            params = parameters(
                request.rel_url.raw_query_string, request.method, request.content_type, facts.body or b""
            )
        except Refusal as refusal:
            return self._refused(refusal), "-"
        decision = self.serving.decide(replace(facts, params=params), self.policy)
        if isinstance(decision, Refusal):
            return self._refused(decision), "-"
        return await self._token(decision, await self._owner(request)), decision.identity_kind

    async def _read_body(self, request: web.BaseRequest) -> Optional[bytes]:
        """The whole body, to its end (its ``Content-Length``, its last chunk), or one byte past
        the limit; None when the connection ended first (the client left, or its deadline
        passed: that bounds the wait). A read returns what has arrived, and a request judged on
        part of its form would lose the parameters still on their way: a ``client_id`` arriving
        in a second segment would get the system-assigned identity's token."""
        transport: Optional[Any] = request.transport  # None once the connection has ended
        if transport is None:
            return None  # the connection ended (displaced) before its handler began
        body = bytearray()
        limit = self.limits.max_body
        try:
            while len(body) <= limit:
                held = len(body)
                body += await request.content.read(limit + 1 - held)  # appended at once: no second copy kept
                if len(body) == held:
                    break
            return bytes(body)
        except (ConnectionError, HttpProcessingError):
            return None
        except RuntimeError:
            if request.transport is not None:
                raise
            return None  # aiohttp's word for a read begun once the connection had ended (displaced)
        finally:
            # Let go of what was read now, whatever happened. A connection displaced or gone
            # mid-body leaves its error in the request's stream, whose traceback keeps this
            # frame, which keeps the request: a cycle, and these bytes would wait in it for the
            # cyclic collector while a flood of connections trickling bodies piled up more.
            body.clear()

    def _refused(self, refusal: Refusal) -> web.Response:
        """A refusal's answer; framing the bridge refuses itself is logged and counted as the parser's own refusals."""
        if refusal.malformed:
            self.malformed.report("answered 400 to a malformed request (%s)", refusal.description.rstrip("."))
        return self._reply(refusal_answer(refusal))

    def _reply(self, answer: Answer) -> web.Response:
        """An answer saying which server this is."""
        return _response(answer, self.serving.server_name)

    async def _owner(self, request: web.BaseRequest) -> Optional[int]:
        """The local uid on the other end of this request's connection (None: unknown), looked up once
        per connection and off the serving loop (where netlink is missing it reads a whole table)."""
        transport = request.transport
        if transport is None:
            return None
        owner = self._owners.get(transport)
        if owner is None:
            peer, local = transport.get_extra_info("peername"), transport.get_extra_info("sockname")
            owner = asyncio.get_running_loop().run_in_executor(None, socket_owner, peer, local)
            self._owners[transport] = owner
        return await asyncio.shield(owner)

    async def _token(self, ask: TokenAsk, user: Optional[int] = None) -> web.Response:
        fetch = asyncio.ensure_future(self.source.token(ask, user))
        stop = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait({fetch, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if not fetch.done():
            fetch.cancel()
            return self._refused(
                Refusal(
                    503,
                    "service_unavailable",
                    "The bridge is stopping; ask again.",
                    {"Retry-After": str(self.limits.stopping_retry_after)},
                )
            )
        try:
            result = fetch.result()
        except Refusal as refusal:
            return self._refused(self.serving.failed(refusal))
        claims = decode_claims(result.token) or {}
        client_id = str(claims.get("appid") or claims.get("azp") or (ask.value if ask.parameter == "client_id" else ""))
        answer = self.serving.answer(ask, result.token, result.expires_on, int(self.clock()), client_id)
        return self._reply(json_answer(200, answer))

    def health(self) -> dict[str, Any]:
        """What the health path answers: what this is, its source and its counters."""
        return {
            "status": "ok",
            "role": self.serving.role,
            "server": self.serving.server_name,
            "source": self.source.kind,
            "source_requests": self.source.requests,
            "cached_tokens": self.source.cached,
            "users": self.source.users,
            "connections": len(self.connections),
            "malformed_requests": self.malformed.total,
            "log_lines_dropped": OFF_LOOP.dropped,
        }


class _Handler(RequestHandler):
    """aiohttp's handler for one connection, answering its own errors as the bridge answers.

    aiohttp answers a request its parser refuses (and a handler that fails) from
    :meth:`handle_error`: a text body, aiohttp's ``Server`` header with its version, and a
    traceback in the log. This one answers in the protocol's JSON error shape with
    :data:`SERVER_NAME`, and reports one line through :class:`Reports`: the status and the
    error's kind, never what the client sent. ``handle_error`` and ``log_exception`` are the
    methods aiohttp itself documents for this, with the same signatures from 3.9 on.
    """

    def __init__(self, manager: web.Server, app: BridgeApp, **options: Any) -> None:
        super().__init__(manager, **options)
        self._app = app

    @property
    def server_name(self) -> str:
        """What the ``Server`` header says this is."""
        return self._app.serving.server_name

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: Optional[BaseException] = None,
        message: Optional[str] = None,
    ) -> web.StreamResponse:
        kind = type(exc).__name__ if exc is not None else "timeout" if status == 504 else "error"
        if status >= 500:
            self._app.malformed.report("answered %d: the bridge failed (%s)", status, kind)
            refusal = Refusal(status, "unknown", f"The bridge could not answer ({kind}).", close=True)
        else:
            self._app.malformed.report("answered %d to a malformed request (%s)", status, kind)
            refusal = Refusal(status, "invalid_request", f"The request is not valid HTTP/1.1 ({kind}).", close=True)
        if request.writer.output_size > 0:  # part of an answer is out: the connection can only close
            raise ConnectionError("an answer was sent already")
        return self._app._reply(refusal_answer(refusal))

    def log_exception(self, *args: Any, **kw: Any) -> None:
        if self.transport is None:
            # The connection had ended (displaced) before its request's handling began: aiohttp
            # 3.9 then trips over its own handler's absence. The client is gone, nothing failed.
            return
        exc = kw.get("exc_info")
        kind = type(exc).__name__ if isinstance(exc, BaseException) else "error"
        self._app.malformed.report("a connection failed (%s)", kind)


def handler_factory(app: BridgeApp, connections: Connections, limits: ServerLimits) -> Callable[[], asyncio.Protocol]:
    """The protocol factory for ``loop.create_server``: the bridge's handler, wrapped in a deadline."""
    line = min(limits.parser_line, limits.max_head)  # one line never outgrows the head's budget
    options: dict[str, Any] = {
        "logger": _PARSER_LOGGER,
        "access_log": None,
        "keepalive_timeout": limits.client_timeout,
        "max_headers": limits.max_headers * 2,
        "max_field_size": line,
        "max_line_size": line,
        "lingering_time": limits.lingering,
    }
    server = web.Server(app, **options)

    def make() -> asyncio.Protocol:
        loop = asyncio.get_running_loop()
        return _Connection(_Handler(server, app, loop=loop, **options), connections, loop)

    make.server = server  # type: ignore[attr-defined]
    return make
