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
without aiohttp), on its direct connections and on those it makes through a proxy alike.
The attempt and its watchdog are :mod:`legacy_msi_credential._attempt`'s; the retry policy
names the attempt in a private header, which the adapter removes before anything is sent.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Mapping
from typing import Any, Optional

import requests
from azure.core.pipeline.transport import RequestsTransport
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection
from urllib3.util.retry import Retry

from ._attempt import HEADER, Attempt, named, shutdown
from ._errors import refused_peer
from ._loopback import peer_is_loopback
from ._redact import install_log_filter, token_request

#: The attempt the connection used by this thread serves (set by the adapter around a send).
_CURRENT = threading.local()


class _Guarded(HTTPConnection):
    """What every guarded connection class adds to its urllib3 class: on connect, the peer
    check; on each response, the socket put under the attempt's watch."""

    #: Set per adapter: refuse plain-http peers that are not loopback.
    require_loopback = True
    #: Whether this connection class speaks TLS.
    tls = False

    def connect(self) -> None:
        super().connect()
        self._guard_socket(connected=True)

    # No parameters, as http.client's and urllib3 2's: urllib3 1.26 first calls
    # ``getresponse(buffering=True)`` and falls back to ``getresponse()`` on TypeError, which
    # must then be raised before anything is read or closed.
    def getresponse(self) -> Any:
        self._guard_socket(connected=False)  # a kept-alive connection is watched by this attempt too
        return _closing_on_error(self, super().getresponse)

    def _guard_socket(self, *, connected: bool) -> None:
        sock: Optional[socket.socket] = self.__dict__.get("sock")
        if sock is None:
            return
        if connected and self.require_loopback and not self.tls:
            try:
                peer = sock.getpeername()
            except OSError:
                peer = None
            if not peer_is_loopback(peer):
                shutdown(sock)
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
            shutdown(sock)
            with contextlib.suppress(OSError):
                socket.close(sock.detach())
        raise


def _guard_pools(manager: Any, *, require_loopback: bool) -> None:
    """Make ``manager``'s pools open guarded connections: subclasses of its own pool and
    connection classes, so that a proxy manager's (a tunnel, SOCKS) keep their own ways.

    The classes carry the setting, so that the pools urllib3 makes use it.
    """
    pools: Mapping[str, Any] = manager.pool_classes_by_scheme
    guarded = {}
    for scheme, pool in pools.items():
        setting = {"require_loopback": require_loopback, "tls": scheme == "https"}
        connection = type(f"Guarded{pool.ConnectionCls.__name__}", (_Guarded, pool.ConnectionCls), setting)
        guarded[scheme] = type(f"Guarded{pool.__name__}", (pool,), {"ConnectionCls": connection})
    manager.pool_classes_by_scheme = guarded


class GuardedAdapter(HTTPAdapter):
    """A ``requests`` adapter whose connections are checked and whose attempts have deadlines.

    Args:
        require_loopback: Refuse plain-http connections whose peer is not loopback; also
            send plain-http requests without a proxy, which would be the peer.
    """

    def __init__(self, *, require_loopback: bool) -> None:
        self.require_loopback = require_loopback
        # No retries, no redirects inside requests: the credential's own policy decides.
        super().__init__(max_retries=Retry(total=False, redirect=False, raise_on_status=False))

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        _guard_pools(self.poolmanager, require_loopback=self.require_loopback)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        """requests' proxy manager for ``proxy``, its connections guarded as the direct ones are.

        Without this, a request through a proxy (``proxies=``, or the environment's for an
        endpoint that is not loopback) would go through urllib3's own pool classes: no
        watchdog, so a proxy that trickles would hold the caller past ``response_timeout``.
        """
        made = proxy not in self.proxy_manager
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if made:
            _guard_pools(manager, require_loopback=self.require_loopback)
        return manager

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        attempt = named(request.headers.pop(HEADER, None))
        if self.require_loopback and str(request.url).lower().startswith("http://"):
            kwargs["proxies"] = {}  # a proxy would be the peer of a plain-http request: never used
        previous = getattr(_CURRENT, "attempt", None)
        _CURRENT.attempt = attempt
        try:
            with token_request():  # this thread may be a worker the policy's context does not reach
                return super().send(request, *args, **kwargs)
        finally:
            _CURRENT.attempt = previous


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
