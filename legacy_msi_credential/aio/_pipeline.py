"""The asynchronous pipeline: an awaiting retry policy, the default transport, and their assembly."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from azure.core.exceptions import AzureError
from azure.core.pipeline import AsyncPipeline, PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import AsyncHTTPPolicy
from azure.core.pipeline.transport import AsyncHttpTransport

from .._guard import forget_connections, new_guarded_session, token_request
from .._policies import ANSWER_KEY, RetryHelper, pipeline_policies, unguardable_transport
from .._protocol import Answer
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
            run = self._helper.attempt(request, controller, guarded=self._guarded)
            try:
                run.succeeded(
                    await asyncio.wait_for(self._attempt(request, run.deadline), timeout=self._helper.seconds)
                )
            except asyncio.TimeoutError:
                if run.attempt is not None:
                    run.attempt.expire()
                forget_connections(transport)
                raise self._helper.too_slow(request) from None
            except Exception as exc:
                if run.cut_short:
                    forget_connections(transport)
                run.failed(exc)
            finally:
                run.finish()
            if run.delay is None:
                return run.result()
            await transport.sleep(run.delay)

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
