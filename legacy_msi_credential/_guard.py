"""Trust decisions made on what happens on the wire, for the requests-based transports.

Two promises cannot be kept by looking at a URL string, because the transport may read
it differently or resolve a name to anywhere:

* **Loopback only.** A plain-http connection must reach a loopback address. The check is
  made on the connected socket's peer address, after ``connect`` and before a byte of the
  request is written. It applies to every plain-http connection a guarded adapter makes,
  whatever the URL said; only ``allow_insecure_http=True`` lifts it.
* **Bounded time.** One attempt, from the moment it is sent to the last byte of its
  answer, has a deadline. A watchdog shuts down the attempt's sockets when it passes, which
  ends a read blocked on a server that trickles its status line, headers or body, or
  sends ``100 Continue`` forever.

Both live in :class:`GuardedAdapter`, a ``requests`` adapter mounted on the session of
azure-core's ``RequestsTransport`` (sync) and ``AsyncioRequestsTransport`` (async twin
without aiohttp). The retry policy opens an :class:`Attempt` per request and names it in
a private header, which the adapter removes before anything is sent: this carries the
attempt across the worker threads of the async requests transport.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any, Optional

import requests
from azure.core.pipeline.transport import RequestsTransport
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util.retry import Retry

from ._errors import refused_peer
from ._loopback import peer_is_loopback

#: The private header naming an attempt; removed by the adapter before sending.
ATTEMPT_HEADER = "x-legacy-msi-credential-attempt"

_ATTEMPTS: dict[str, Attempt] = {}
_ATTEMPT_IDS = itertools.count(1)
_CURRENT = threading.local()
#: Set while this package's retry policy sends a token request and reads its answer. A
#: context variable, so that the async twin's tasks see it; the worker threads of the async
#: requests transport are covered by the adapter's thread-local instead.
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


class Attempt:
    """One request's deadline and the sockets it uses.

    Args:
        seconds: Time allowed from now to the last byte of the answer.
    """

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        self.fired = False
        self._finished = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        # Started with the first socket: a refused connection (the common case in a chain
        # on a machine without the extension) costs no thread.
        self._timer: Optional[threading.Timer] = None
        self.key = f"{next(_ATTEMPT_IDS)}"  # next() and a dict item assignment are atomic: no lock
        _ATTEMPTS[self.key] = self

    def watch(self, sock: Optional[socket.socket]) -> None:
        """Shut ``sock`` down at the deadline (at once, if it has passed)."""
        if sock is None:
            return
        with self._lock:
            if self._finished:
                return
            if not self.fired:
                self._sockets.append(sock)
                if self._timer is None:
                    self._timer = threading.Timer(max(0.0, self.deadline - time.monotonic()), self._fire)
                    self._timer.daemon = True
                    self._timer.start()
                return
        _shutdown(sock)

    def _fire(self) -> None:
        with self._lock:
            if self._finished:
                return
            self.fired = True
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            _shutdown(sock)

    def expire(self) -> None:
        """The caller gave up on this attempt (the async twin's deadline): shut its sockets down now,
        so that a worker thread still reading from them ends too."""
        self._fire()

    def finish(self) -> None:
        """The answer is in (or abandoned): stop watching; no socket is shut down after this."""
        with self._lock:
            self._finished = True
            self._sockets = []
            timer = self._timer
        if timer is not None:
            timer.cancel()
        _ATTEMPTS.pop(self.key, None)


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _Guarded:
    """What both guarded connection classes do on connect and on each response."""

    #: Set per adapter: refuse plain-http peers that are not loopback.
    require_loopback = True
    #: Whether this connection class speaks TLS.
    tls = False

    def _guard_socket(self, *, connected: bool) -> None:
        """On connect, check the peer; on every response, put the socket under the attempt's watch."""
        sock: Optional[socket.socket] = self.__dict__.get("sock")
        if sock is None:
            return
        if connected and self.require_loopback and not self.tls:
            try:
                peer = sock.getpeername()
            except OSError:
                peer = None
            if not peer_is_loopback(peer):
                _shutdown(sock)
                with contextlib.suppress(OSError):
                    sock.close()
                self.__dict__["sock"] = None
                raise refused_peer(peer)
        attempt: Optional[Attempt] = getattr(_CURRENT, "attempt", None)
        if attempt is not None:
            attempt.watch(sock)


def _closing_on_error(connection: Any, getresponse: Any) -> Any:
    """Read a response's head; if its headers are refused, close the socket rather than leak it.

    urllib3 raises on some header values (``Content-Length: 5, 6``) after http.client has
    read the head, leaving nobody to close the connection's socket.
    """
    sock = connection.__dict__.get("sock")
    try:
        return getresponse()
    except BaseException:
        if sock is not None and sock.fileno() >= 0:
            # A half-read response still holds the socket through its file object, so
            # close() alone would leave the descriptor open: take it and close it here.
            _shutdown(sock)
            with contextlib.suppress(OSError):
                socket.close(sock.detach())
        raise


class _GuardedHTTPConnection(_Guarded, HTTPConnection):
    def connect(self) -> None:
        super().connect()
        self._guard_socket(connected=True)

    # No parameters, as http.client's and urllib3 2's: urllib3 1.26 first calls
    # ``getresponse(buffering=True)`` and falls back to ``getresponse()`` on TypeError, which
    # must then be raised before anything is read or closed.
    def getresponse(self) -> Any:
        self._guard_socket(connected=False)  # a kept-alive connection is watched by this attempt too
        return _closing_on_error(self, super().getresponse)


class _GuardedHTTPSConnection(_Guarded, HTTPSConnection):
    tls = True

    def connect(self) -> None:
        super().connect()
        self._guard_socket(connected=True)

    def getresponse(self) -> Any:  # no parameters: see _GuardedHTTPConnection.getresponse
        self._guard_socket(connected=False)
        return _closing_on_error(self, super().getresponse)


class GuardedAdapter(HTTPAdapter):
    """A ``requests`` adapter whose connections are checked and whose attempts have deadlines.

    Args:
        require_loopback: Refuse plain-http connections whose peer is not loopback; also
            send plain-http requests without a proxy, which would be the peer.
    """

    def __init__(self, *, require_loopback: bool) -> None:
        self.require_loopback = require_loopback
        # The classes carry the setting, so that the pools urllib3 makes use it.
        setting = {"require_loopback": require_loopback}
        http_connection = type("GuardedHTTPConnection", (_GuardedHTTPConnection,), setting)
        https_connection = type("GuardedHTTPSConnection", (_GuardedHTTPSConnection,), setting)
        self._pool_classes = {
            "http": type("GuardedHTTPConnectionPool", (HTTPConnectionPool,), {"ConnectionCls": http_connection}),
            "https": type("GuardedHTTPSConnectionPool", (HTTPSConnectionPool,), {"ConnectionCls": https_connection}),
        }
        # No retries, no redirects inside requests: the credential's own policy decides.
        super().__init__(max_retries=Retry(total=False, redirect=False, raise_on_status=False))

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(self._pool_classes)

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        key = request.headers.pop(ATTEMPT_HEADER, None)
        attempt = _ATTEMPTS.get(key) if isinstance(key, str) else None
        if self.require_loopback and str(request.url).lower().startswith("http://"):
            kwargs["proxies"] = {}  # a proxy would be the peer of a plain-http request: never used
        previous = getattr(_CURRENT, "attempt", None), getattr(_CURRENT, "guarded", False)
        _CURRENT.attempt, _CURRENT.guarded = attempt, True
        try:
            return super().send(request, *args, **kwargs)
        finally:
            _CURRENT.attempt, _CURRENT.guarded = previous


def forget_connections(transport: Any) -> None:
    """Close every pooled connection of a guarded requests transport.

    After an attempt abandoned from another thread (the async twin's deadline), a worker
    thread may still hold its connection; none of the pooled ones is trusted again.
    """
    session = getattr(transport, "session", None)
    for adapter in getattr(session, "adapters", {}).values():
        if isinstance(adapter, GuardedAdapter):
            adapter.poolmanager.clear()


def guard_session(session: requests.Session, *, require_loopback: bool) -> None:
    """Mount a :class:`GuardedAdapter` on ``session`` for http and https, unless one already guards it alike.

    A session shared by several credentials (a transport passed to each) takes the strictest
    setting: one credential allowed insecure http never lifts another's loopback check, and
    then gets the check itself.
    """
    mounted = [session.adapters.get(prefix) for prefix in ("http://", "https://")]
    require_loopback = require_loopback or any(isinstance(a, GuardedAdapter) and a.require_loopback for a in mounted)
    if all(isinstance(a, GuardedAdapter) and a.require_loopback == require_loopback for a in mounted):
        return
    adapter = GuardedAdapter(require_loopback=require_loopback)
    for prefix in ("http://", "https://"):
        session.mount(prefix, adapter)
    if require_loopback:
        session.trust_env = False
    install_log_filter()


def new_guarded_session(*, require_loopback: bool) -> requests.Session:
    session = requests.Session()
    guard_session(session, require_loopback=require_loopback)
    return session


def guard_transport(transport: Any, *, require_loopback: bool) -> bool:
    """Put the connection checks and deadlines on a requests-based transport.

    Returns:
        Whether ``transport`` is guarded: azure-core's ``RequestsTransport`` or
        ``AsyncioRequestsTransport`` (or a subclass). Their session gets a
        :class:`GuardedAdapter`; one is made for them if they have none yet.
    """
    if not isinstance(transport, RequestsTransport):  # AsyncioRequestsTransport is one too
        return False
    if transport.session is None:
        transport.session = new_guarded_session(require_loopback=require_loopback)
    else:
        guard_session(transport.session, require_loopback=require_loopback)
    return True


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
        if not (getattr(_CURRENT, "guarded", False) or _IN_TOKEN_REQUEST.get()):
            return True
        record.msg = "%s %s during a token request (details withheld: they may quote the server's bytes)"
        record.args = (record.name.split(".", 1)[0], record.levelname)
        record.exc_info = None
        record.exc_text = None
        return True


_FILTER = _WithheldDetailsFilter()
#: The loggers whose warnings may quote an answer (a filter applies only to records logged
#: on its own logger, not to those of its children).
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
