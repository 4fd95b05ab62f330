"""The asynchronous pipeline: an awaiting retry policy, the default transport, and their assembly."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Optional

from azure.core.exceptions import AzureError, ClientAuthenticationError
from azure.core.pipeline import AsyncPipeline, PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import AsyncHTTPPolicy
from azure.core.pipeline.transport import AsyncHttpTransport

from .._guard import Attempt, forget_connections, new_guarded_session, token_request
from .._policies import ANSWER_KEY, ATTEMPT_KEY, RetryHelper, pipeline_policies, unguardable_transport
from .._protocol import Answer, unreadable
from .._retry import RetrySettings
from ._guard import guard_async_transport, guarded_aiohttp_session


class AsyncRetryPolicy(AsyncHTTPPolicy[Any, Any]):
    """The async twin of :class:`legacy_msi_credential._pipeline.RetryPolicy`: same decisions, awaited I/O.

    The deadline of an attempt covers sending, the status line, the headers and the body:
    ``asyncio.wait_for`` ends the attempt, and on the requests transport an
    :class:`Attempt` also shuts the socket down so that its worker thread ends too.
    """

    def __init__(self, settings: RetrySettings, *, body_limit: int, body_deadline: float, guarded: bool) -> None:
        super().__init__()
        self._helper = RetryHelper(settings, body_limit=body_limit, body_deadline=body_deadline)
        self._guarded = guarded

    async def send(self, request: PipelineRequest[Any]) -> PipelineResponse[Any, Any]:
        with token_request():  # what the libraries underneath warn about it is withheld
            return await self._send(request)

    async def _send(self, request: PipelineRequest[Any]) -> PipelineResponse[Any, Any]:
        controller = self._helper.controller(request)
        transport: Any = request.context.transport
        while True:
            controller.started()
            started = time.monotonic()
            response: Optional[PipelineResponse[Any, Any]] = None
            error: Optional[Exception] = None
            attempt = Attempt(self._helper.seconds) if self._guarded else None
            request.context[ATTEMPT_KEY] = attempt.key if attempt else None
            deadline = attempt.deadline if attempt else started + self._helper.seconds
            try:
                response = await asyncio.wait_for(self._attempt(request, deadline), timeout=self._helper.seconds)
                if attempt is not None and attempt.fired:
                    raise self._helper.too_slow(request)
            except ClientAuthenticationError:
                raise
            except asyncio.TimeoutError:
                if attempt is not None:
                    attempt.expire()
                forget_connections(transport)
                raise self._helper.too_slow(request) from None
            except Exception as exc:
                if attempt is not None and attempt.fired:
                    forget_connections(transport)
                    raise self._helper.too_slow(request) from None
                if not isinstance(exc, AzureError):
                    raise unreadable(str(request.http_request.url).split("?", 1)[0], exc) from None
                response, error = None, exc
            finally:
                if attempt is not None:
                    attempt.finish()
            delay = self._helper.outcome(controller, response, error, time.monotonic() - started)
            if delay is None:
                if error is not None:
                    raise error
                assert response is not None
                return response
            await transport.sleep(delay)

    async def _attempt(self, request: PipelineRequest[Any], deadline: float) -> PipelineResponse[Any, Any]:
        response = await self.next.send(request)
        response.context[ANSWER_KEY] = await self._read(request, response, deadline)
        return response

    async def _read(
        self, request: PipelineRequest[Any], response: PipelineResponse[Any, Any], deadline: float
    ) -> Answer:
        http_response = response.http_response
        # Closing a response that was not read to its end closes its connection, so an
        # abandoned answer's leftovers are never read as the next one.
        try:
            collector = self._helper.collector(request, response, deadline)
        except AzureError:
            await http_response.close()
            raise
        chunks = http_response.iter_bytes()
        try:
            async for chunk in chunks:
                collector.feed(chunk, time.monotonic())
        finally:
            aclose = getattr(chunks, "aclose", None)
            try:
                if aclose is not None:
                    await aclose()
            finally:
                await http_response.close()
        return self._helper.answer(collector)


def default_async_transport(*, trust_env: bool, require_loopback: bool, **kwargs: Any) -> AsyncHttpTransport[Any, Any]:
    """aiohttp's transport when aiohttp is installed (the ``aio`` extra), else requests in a thread.

    Call it inside the event loop it will serve: the aiohttp session is made here.
    """
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        from azure.core.pipeline.transport import AsyncioRequestsTransport

        fallback: AsyncHttpTransport[Any, Any] = AsyncioRequestsTransport(
            session=new_guarded_session(require_loopback=require_loopback), use_env_settings=trust_env, **kwargs
        )
        return fallback
    from azure.core.pipeline.transport import AioHttpTransport

    session = guarded_aiohttp_session(require_loopback=require_loopback, trust_env=trust_env)
    transport: AsyncHttpTransport[Any, Any] = AioHttpTransport(
        session=session, session_owner=True, use_env_settings=trust_env, **kwargs
    )
    return transport


def build_async_pipeline(
    settings: RetrySettings,
    *,
    transport: AsyncHttpTransport[Any, Any],
    require_loopback: bool,
    trust_env: bool,
    body_limit: int,
    body_deadline: float,
    **kwargs: Any,
) -> AsyncPipeline[Any, Any]:
    """The asynchronous pipeline over ``transport``.

    Raises:
        ValueError: ``require_loopback`` with a transport whose connections cannot be checked.
    """
    guarded, watched = guard_async_transport(transport, require_loopback=require_loopback, trust_env=trust_env)
    if require_loopback and not guarded:
        raise ValueError(unguardable_transport(transport))
    retry = AsyncRetryPolicy(settings, body_limit=body_limit, body_deadline=body_deadline, guarded=watched)
    return AsyncPipeline(transport, policies=pipeline_policies(retry, require_loopback=require_loopback, **kwargs))
