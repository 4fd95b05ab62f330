"""The trust decisions on the wire for aiohttp, and guarding a transport passed in.

aiohttp's connector checks each new connection's peer (:mod:`legacy_msi_credential._loopback`)
before a byte of the request is written; the requests-based transports are guarded by
:mod:`legacy_msi_credential._guard`, imported only for a transport that is one of them, so
that the aiohttp path never loads requests or urllib3.
"""

from __future__ import annotations

import functools
import sys
from typing import Any

from .._errors import refused_peer
from .._loopback import peer_is_loopback


def requests_based(transport: Any, kind: str = "RequestsTransport") -> bool:
    """Whether ``transport`` is azure-core's ``kind`` (``RequestsTransport``, of which
    ``AsyncioRequestsTransport`` is one), asked without importing requests: no such
    transport exists before requests has been imported."""
    if "requests" not in sys.modules:
        return False
    import azure.core.pipeline.transport as transports

    return isinstance(transport, getattr(transports, kind))


@functools.cache
def _guarded_connector_class() -> Any:
    """aiohttp's TCP connector, checking each connection's peer before a request is written."""
    import aiohttp

    class GuardedConnector(aiohttp.TCPConnector):
        async def connect(self, *args: Any, **kwargs: Any) -> Any:
            connection = await super().connect(*args, **kwargs)
            transport = connection.transport
            plain = transport is None or transport.get_extra_info("sslcontext") is None
            peer = transport.get_extra_info("peername") if transport is not None else None
            if plain and not peer_is_loopback(peer):
                connection.close()
                raise refused_peer(peer)
            return connection

    return GuardedConnector


def guarded_aiohttp_session(*, require_loopback: bool, trust_env: bool) -> Any:
    import aiohttp

    connector = _guarded_connector_class()() if require_loopback else aiohttp.TCPConnector()
    return aiohttp.ClientSession(
        connector=connector,
        trust_env=trust_env,
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
    )


def guard_async_transport(transport: Any, *, require_loopback: bool, trust_env: bool) -> tuple[bool, bool]:
    """Put the connection checks on a transport passed in, where that can be done.

    Returns:
        Whether its connections are checked, and whether its attempts are also watched
        by an :class:`Attempt` (the requests-based transport).
    """
    if requests_based(transport):
        from .._guard import guard_transport

        return guard_transport(transport, require_loopback=require_loopback), True
    try:
        from azure.core.pipeline.transport import AioHttpTransport
    except ImportError:  # pragma: no cover - aiohttp missing
        return False, False
    if isinstance(transport, AioHttpTransport):
        session = getattr(transport, "session", None)
        if session is None:
            transport.session = guarded_aiohttp_session(require_loopback=require_loopback, trust_env=trust_env)
            return True, False
        return isinstance(getattr(session, "connector", None), _guarded_connector_class()), False
    return False, False


def can_guard(transport: Any) -> bool:
    """Whether this package can check the connections of a transport passed in."""
    if requests_based(transport):
        return True
    try:
        from azure.core.pipeline.transport import AioHttpTransport
    except ImportError:  # pragma: no cover - aiohttp missing
        return False
    if not isinstance(transport, AioHttpTransport):
        return False
    session = getattr(transport, "session", None)
    return session is None or isinstance(getattr(session, "connector", None), _guarded_connector_class())


def forget_connections(transport: Any) -> None:
    """After an attempt abandoned at its deadline, close the pooled connections of a requests
    transport (:func:`legacy_msi_credential._guard.forget_connections`); aiohttp's need nothing."""
    if requests_based(transport):
        from .._guard import forget_connections as forget

        forget(transport)
