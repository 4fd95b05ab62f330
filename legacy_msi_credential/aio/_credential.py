"""``LegacyMsiCredential`` for asyncio: the shell that awaits requests."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections.abc import AsyncIterator
from typing import Any, NamedTuple, Optional

from azure.core.credentials import AccessToken, AccessTokenInfo, TokenRequestOptions
from azure.core.exceptions import ClientAuthenticationError
from azure.core.pipeline import AsyncPipeline
from azure.core.pipeline.transport import AsyncHttpTransport
from azure.core.rest import HttpRequest

from .._base import MISS, CredentialBase, FastRow
from .._constants import MAX_RESPONSE_BYTES
from .._endpoint import EndpointChoice
from .._policies import ANSWER_KEY, unguardable_transport
from .._protocol import Answer, TokenResult
from ._guard import can_guard, requests_based
from ._pipeline import build_async_pipeline, default_async_transport


class _LoopState(NamedTuple):
    """What a credential keeps per event loop."""

    pipeline: AsyncPipeline[Any, Any]
    #: One lock per resource.
    locks: dict[str, asyncio.Lock]
    #: The transport's request options.
    options: dict[str, Any]


class LegacyMsiCredential(CredentialBase):
    """Authenticates as a VM's managed identity through the legacy VM extension, for asyncio.

    Takes the same arguments and behaves the same as
    :class:`legacy_msi_credential.LegacyMsiCredential`; pass it as ``credential=`` to
    ``azure.*.aio`` clients. Concurrent tasks share one request per resource. One
    credential may serve several event loops (one per thread, say): each loop gets its
    own connections and locks; :meth:`close` closes those of the calling loop.

    Uses aiohttp when it is installed (the ``aio`` extra), otherwise ``requests`` in a
    worker thread (azure-core's ``AsyncioRequestsTransport``).
    """

    def _setup_io(self) -> None:
        self._given_transport: Optional[AsyncHttpTransport[Any, Any]] = self._settings.transport
        if (
            self._given_transport is not None
            and self._settings.require_loopback
            and not can_guard(self._given_transport)
        ):
            raise ValueError(unguardable_transport(self._given_transport))
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = weakref.WeakKeyDictionary()
        self._sentinels: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()
        self._loops_guard = threading.Lock()

    def _transport_options(self, transport: AsyncHttpTransport[Any, Any]) -> dict[str, Any]:
        """Timeouts in the form the transport reads them."""
        if requests_based(transport, "AsyncioRequestsTransport"):
            # It hands ``connection_timeout`` to requests as is and knows no ``read_timeout``.
            options = self._settings.request_options
            return {"connection_timeout": (options["connection_timeout"], options["read_timeout"])}
        return dict(self._settings.request_options)

    def _for_loop(self) -> _LoopState:
        """The pipeline and locks of the running event loop, made on first use.

        The loop's connections are closed when the loop shuts down its async generators
        (``asyncio.run`` does, and so do test runners): a credential used from many
        short-lived loops keeps no connection, and no loop, alive.
        """
        loop = asyncio.get_running_loop()
        state = self._loops.get(loop)
        if state is None:
            with self._loops_guard:
                state = self._loops.get(loop)
                if state is None:
                    transport = self._given_transport or default_async_transport(
                        trust_env=self._settings.trust_env,
                        require_loopback=self._settings.require_loopback,
                        **self._settings.pipeline_kwargs,
                    )
                    pipeline = build_async_pipeline(
                        self._settings.retry,
                        transport=transport,
                        require_loopback=self._settings.require_loopback,
                        trust_env=self._settings.trust_env,
                        body_limit=MAX_RESPONSE_BYTES,
                        body_deadline=self._settings.response_deadline,
                        **self._settings.pipeline_kwargs,
                    )
                    state = _LoopState(pipeline, {}, self._transport_options(transport))
                    self._loops[loop] = state
                    self._close_with_loop(loop, pipeline)
        return state

    def _close_with_loop(self, loop: asyncio.AbstractEventLoop, pipeline: AsyncPipeline[Any, Any]) -> None:
        """Close ``pipeline`` when ``loop`` shuts down its async generators, and forget the loop.

        An async generator, started here and never resumed, is tracked by the loop (weakly;
        the state holds it strongly): ``shutdown_asyncgens`` closes it inside the loop,
        which runs its ``finally``.
        """
        loops, sentinels = self._loops, self._sentinels

        async def until_loop_ends() -> AsyncIterator[None]:
            try:
                yield
            finally:
                state = loops.get(loop)
                if state is not None and state.pipeline is pipeline:
                    del loops[loop]
                    sentinels.pop(loop, None)
                await pipeline.__aexit__()

        sentinel = until_loop_ends()
        step: Any = sentinel.__anext__()
        with contextlib.suppress(StopIteration):
            step.send(None)  # runs to the ``yield``: nothing in it awaits
        self._sentinels[loop] = sentinel
        # A loop closed without shutting down its generators: drop what it left.
        for other in [other for other in list(self._loops) if other.is_closed()]:
            self._loops.pop(other, None)
            self._sentinels.pop(other, None)

    # --- azure-core's AsyncTokenCredential and AsyncSupportsTokenInfo ------------------

    async def get_token(
        self,
        *scopes: str,
        claims: Optional[str] = None,
        tenant_id: Optional[str] = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        """Get a token for one scope, from the cache when it is fresh: the awaitable
        :meth:`legacy_msi_credential.LegacyMsiCredential.get_token`, with its arguments, result
        and errors."""
        # The fast path, inline: as in the sync twin.
        try:
            row = self._fresh[scopes]
        except (KeyError, TypeError):
            row = MISS
        if claims is None and row[4]() < row[0] and row[5]() < row[1]:
            return row[2]
        return (await self._entry(scopes, claims))[2]

    async def get_token_info(self, *scopes: str, options: Optional[TokenRequestOptions] = None) -> AccessTokenInfo:
        """Get a token and its refresh time for one scope, from the cache when it is fresh: the
        awaitable :meth:`legacy_msi_credential.LegacyMsiCredential.get_token_info`, with its
        arguments, result and errors."""
        try:
            row = self._fresh[scopes]
        except (KeyError, TypeError):
            row = MISS
        if (
            (options is None or (type(options) is dict and "claims" not in options))
            and row[4]() < row[0]
            and row[5]() < row[1]
        ):
            return row[3]
        return (await self._entry(scopes, self._claims_from(options)))[3]

    async def close(self) -> None:
        """Close the calling event loop's connections.

        The credential stays usable: the next request, or the next ``async with`` block,
        opens new connections; unless the transport was passed in, which is closed as
        azure-core's clients close theirs, and cannot be reopened.
        """
        loop = asyncio.get_running_loop()
        state = self._loops.pop(loop, None)
        sentinel = self._sentinels.pop(loop, None)
        if state is not None:
            await state.pipeline.__aexit__()
        if sentinel is not None:
            await sentinel.aclose()

    async def __aenter__(self) -> LegacyMsiCredential:
        return self

    async def __aexit__(self, *args: Any) -> None:
        await self.close()

    # --- the slow path -----------------------------------------------------------------

    def _lock(self, resource: str) -> asyncio.Lock:
        locks = self._for_loop().locks
        lock = locks.get(resource)
        if lock is None:
            lock = locks.setdefault(resource, asyncio.Lock())
        return lock

    async def _entry(self, scopes: tuple[str, ...], claims: Optional[str]) -> FastRow:
        resource, endpoint = self._resource_for(scopes, claims)
        if self._forked():
            self._loops = weakref.WeakKeyDictionary()
            self._sentinels = weakref.WeakKeyDictionary()
            self._loops_guard = threading.Lock()
        ticket = self._flight.begin(resource, force=claims is not None)
        if ticket.fresh is not None:
            return self._remember(scopes, ticket.fresh)  # fresh, or valid while another task replaces it
        lock = self._lock(resource)
        try:
            async with lock:
                served = self._flight.recheck(ticket)  # raises the failure of a request it waited for
                if served is not None:
                    return self._remember(scopes, served)  # another task got a token meanwhile
                fetched, failure = await self._try_fetch(resource, endpoint)
                # Outside any except block: a failure raised from here has nothing chained to it.
                return self._conclude(scopes, ticket, fetched, failure)
        finally:
            self._flight.end(ticket)  # whatever happened (a cancellation too), a later task may refresh it

    async def _try_fetch(
        self, resource: str, endpoint: EndpointChoice
    ) -> tuple[Optional[TokenResult], Optional[ClientAuthenticationError]]:
        """A token, or the failure to raise (see the sync twin's ``_try_fetch`` for why a method)."""
        try:
            return await self._fetch(resource, endpoint), None
        except Exception as exc:
            return None, self._boundary(exc, endpoint)

    async def _fetch(self, resource: str, endpoint: EndpointChoice) -> TokenResult:
        """Drive the shared request flow, awaiting its I/O."""
        flow = self._fetch_flow(resource, endpoint)
        request = next(flow)
        while True:
            try:
                request = flow.send(await self._exchange(request))
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]

    async def _exchange(self, request: HttpRequest) -> Answer:
        """Send one request through the pipeline (retries and reading the answer included)."""
        state = self._for_loop()
        response = await state.pipeline.run(request, stream=True, **state.options)
        answer: Answer = response.context[ANSWER_KEY]
        return answer
