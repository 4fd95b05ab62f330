"""The bridge's server: aiohttp's strict HTTP/1.1 parser, with deadlines and limits of its own.

The shell knows sockets and framing; what a request means is :mod:`legacy_msi_credential._rules`,
and where its token comes from is :class:`~legacy_msi_credential.bridge._source.TokenSource`.

* **Framing** is aiohttp's parser (llhttp, strict from aiohttp 3.9.4): ``Content-Length:
  +N``, ``Content-Length`` with ``Transfer-Encoding``, an unknown transfer coding, bare line
  feeds and folded headers are a ``400`` and a closed connection (RFC 9112 section 6).
  Refused here too, whatever the parser's version: ``Transfer-Encoding`` in an HTTP/1.0
  request, and a repeated ``Host``, ``Content-Length``, ``Transfer-Encoding``,
  ``Content-Type`` or ``Metadata``.
* **A whole-request deadline.** From its first byte (or the end of the previous answer) a
  connection has ``client_timeout`` seconds to deliver a request's head and body; then it
  is closed, however it trickles.
* **Bounded connections.** At ``max_connections``, a new connection displaces the oldest
  one still waiting for its request, so clients that hold connections open cannot starve
  the ones that ask.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from typing import Any, Callable, Optional

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

from .._claims import decode_claims
from .._constants import HEALTH_PATH
from .._loopback import peer_is_loopback
from .._rules import Policy, Refusal, TokenAsk, decide, parameters, token_answer
from .._text import clean_text
from ._source import TokenSource

_LOGGER = logging.getLogger("legacy_msi_credential.bridge")
_ACCESS = logging.getLogger("legacy_msi_credential.bridge.access")
#: aiohttp's own reports of malformed requests (each a 400 the client sees), kept quiet.
_PARSER_LOGGER = logging.getLogger("legacy_msi_credential.bridge.http")

#: Headers a request may carry once at most (RFC 9110 and 9112: repeated, they are ambiguous).
_SINGLE_HEADERS = ("Host", "Content-Length", "Transfer-Encoding", "Content-Type", "Metadata")

#: What the ``Server`` header and the health path say this is.
SERVER_NAME = "legacy-msi-bridge"


class Connections:
    """The open connections, oldest first, each with its deadline.

    Args:
        limit: Connections kept at once.
        client_timeout: Seconds a connection has to deliver each request.
    """

    def __init__(self, limit: int, client_timeout: float) -> None:
        self.limit = limit
        self.client_timeout = client_timeout
        self._open: OrderedDict[Any, _Connection] = OrderedDict()
        #: Connections closed for their deadline or displaced, for tests and the health path.
        self.timed_out = 0
        self.displaced = 0

    def __len__(self) -> int:
        return len(self._open)

    def opened(self, connection: _Connection) -> None:
        while len(self._open) >= self.limit:
            idle = next((c for c in self._open.values() if not c.busy), None)
            if idle is None:
                break  # every connection is being answered: they end soon, so let this one in
            self.displaced += 1
            self._open.pop(idle.transport, None)  # gone now, although its transport reports it later
            idle.close()
        self._open[connection.transport] = connection

    def closed(self, connection: _Connection) -> None:
        self._open.pop(connection.transport, None)

    def busy(self) -> bool:
        """Whether a request is being answered."""
        return any(connection.busy for connection in self._open.values())

    def find(self, transport: Any) -> Optional[_Connection]:
        return self._open.get(transport)

    def close_all(self) -> None:
        for connection in list(self._open.values()):
            connection.close()


class _Connection(asyncio.Protocol):
    """aiohttp's protocol for one connection, wrapped in a deadline."""

    def __init__(self, inner: RequestHandler, connections: Connections, loop: asyncio.AbstractEventLoop) -> None:
        self._inner = inner
        self._connections = connections
        self._loop = loop
        self.transport: Any = None
        self.busy = False
        self._timer: Optional[asyncio.TimerHandle] = None

    # -- the deadline --
    def arm(self) -> None:
        """Start the time allowed for the next request (head and body)."""
        self.disarm()
        self._timer = self._loop.call_later(self._connections.client_timeout, self._expire)

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        self._connections.timed_out += 1
        self.close()

    def close(self) -> None:
        self.disarm()
        if self.transport is not None:
            self.transport.abort()

    # -- asyncio.Protocol, handed on --
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self._connections.opened(self)
        self.arm()
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._timer is None and not self.busy:
            self.arm()
        self._inner.data_received(data)

    def eof_received(self) -> None:
        self._inner.eof_received()

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.disarm()
        self._connections.closed(self)
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


def _json(status: int, document: Any, headers: Optional[dict[str, str]] = None) -> web.Response:
    response = web.Response(
        status=status, body=json.dumps(document).encode("utf-8"), content_type="application/json", charset="utf-8"
    )
    response.headers["Server"] = SERVER_NAME
    response.headers["Cache-Control"] = "no-store"
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


class BridgeApp:
    """The bridge's application: a request in, an answer out, one access-log line.

    Args:
        source: Where tokens come from.
        policy: What the protocol's rules accept.
        clock: Unix time, for ``expires_in``.
        max_body: Bytes of request body accepted (413 beyond).
        max_headers: Request headers accepted (431 beyond).
        connections: The open connections (to end each one's deadline once its request is in).
        stopping: Set when the bridge stops: waiting clients get ``503``.
    """

    def __init__(
        self,
        source: TokenSource,
        policy: Policy,
        *,
        clock: Callable[[], float],
        max_body: int,
        max_headers: int,
        connections: Connections,
        stopping: asyncio.Event,
    ) -> None:
        self.source = source
        self.policy = policy
        self.clock = clock
        self.max_body = max_body
        self.max_headers = max_headers
        self.connections = connections
        self.stopping = stopping

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
            clean_text(request.rel_url.path, 200),  # a client's bytes: no line breaks or escapes in the log
            kind,
            response.status,
            (time.monotonic() - started) * 1000,
        )
        return response

    async def _answer(self, request: web.BaseRequest, connection: Optional[_Connection]) -> tuple[web.Response, str]:
        peer = request.transport.get_extra_info("peername") if request.transport is not None else None
        loopback = peer_is_loopback(peer)
        if request.version < (1, 1) and "Transfer-Encoding" in request.headers:
            return self._close(
                request, Refusal(400, "invalid_request", "Transfer-Encoding in an HTTP/1.0 request.")
            ), "-"
        repeated = next((name for name in _SINGLE_HEADERS if len(request.headers.getall(name, ())) > 1), None)
        if repeated is not None:  # which one counts is ambiguous: refused whatever the parser's version
            return self._close(request, Refusal(400, "invalid_request", f"More than one {repeated} header.")), "-"
        if len(request.raw_headers) > self.max_headers:
            refusal = Refusal(431, "invalid_request", f"More than {self.max_headers} request headers.")
            return self._close(request, refusal), "-"
        length = request.content_length
        if length is not None and length > self.max_body:
            refusal = Refusal(413, "invalid_request", "The request body is too large.")
            return self._close(request, refusal), "-"
        body = await self._read_body(request)
        if body is None:
            return self._close(request, Refusal(400, "invalid_request", "The request body ended early.")), "-"
        if len(body) > self.max_body:
            return self._close(request, Refusal(413, "invalid_request", "The request body is too large.")), "-"
        if connection is not None:
            connection.disarm()  # the request is in: what remains is the source's time
        if request.rel_url.path == HEALTH_PATH and request.method == "GET":
            if not loopback:
                return _json(401, Refusal(401, "unauthorized_client", "Requests must come over loopback.").body()), "-"
            return _json(200, self.health()), "-"
        params = parameters(request.rel_url.raw_query_string, request.method, request.content_type, body)
        decision = decide(
            request.method, request.path_qs, request.headers, params, peer_is_loopback=loopback, policy=self.policy
        )
        if isinstance(decision, Refusal):
            return _json(decision.status, decision.body(), dict(decision.headers)), "-"
        return await self._token(decision), decision.identity_kind

    async def _read_body(self, request: web.BaseRequest) -> Optional[bytes]:
        """The whole body, to its end (its ``Content-Length``, its last chunk), or one byte past
        the limit; None when the connection ended first (the client left, or its deadline
        passed: that bounds the wait). A read returns what has arrived, and a request judged on
        part of its form would lose the parameters still on their way: a ``client_id`` arriving
        in a second segment would get the system-assigned identity's token."""
        body = bytearray()
        try:
            while len(body) <= self.max_body:
                chunk = await request.content.read(self.max_body + 1 - len(body))
                if not chunk:
                    break
                body += chunk
        except (ConnectionError, HttpProcessingError):
            return None
        return bytes(body)

    def _close(self, request: web.BaseRequest, refusal: Refusal) -> web.Response:
        """An answer after which the connection closes: what is left of the request is never read."""
        response = _json(refusal.status, refusal.body(), dict(refusal.headers))
        response.force_close()
        return response

    async def _token(self, ask: TokenAsk) -> web.Response:
        fetch = asyncio.ensure_future(self.source.token(ask))
        stop = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait({fetch, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if not fetch.done():
            fetch.cancel()
            refusal = Refusal(503, "service_unavailable", "The bridge is stopping; ask again.", {"Retry-After": "5"})
            return _json(refusal.status, refusal.body(), dict(refusal.headers))
        try:
            result = fetch.result()
        except Refusal as refusal:
            return _json(refusal.status, refusal.body(), dict(refusal.headers))
        claims = decode_claims(result.token) or {}
        client_id = str(claims.get("appid") or claims.get("azp") or (ask.value if ask.parameter == "client_id" else ""))
        answer = token_answer(ask, result.token, result.expires_on, int(self.clock()), client_id=client_id)
        return _json(200, answer)

    def health(self) -> dict[str, Any]:
        """What the health path answers: what this is, its source and its counters."""
        return {
            "status": "ok",
            "role": "bridge",
            "server": SERVER_NAME,
            "source": self.source.kind,
            "source_requests": self.source.requests,
            "cached_tokens": self.source.cached,
            "connections": len(self.connections),
        }


def handler_factory(app: BridgeApp, connections: Connections, *, keepalive: float) -> Callable[[], asyncio.Protocol]:
    """The protocol factory for ``loop.create_server``: aiohttp's handler, wrapped in a deadline."""
    server = web.Server(
        app,
        logger=_PARSER_LOGGER,
        access_log=None,
        keepalive_timeout=keepalive,
        max_headers=app.max_headers * 2,
        max_field_size=8190,
        max_line_size=8190,
        lingering_time=0.5,
    )

    def make() -> asyncio.Protocol:
        loop = asyncio.get_running_loop()
        return _Connection(server(), connections, loop)

    make.server = server  # type: ignore[attr-defined]
    return make
