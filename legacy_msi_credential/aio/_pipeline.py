"""The asynchronous pipeline: an awaiting retry policy, the default transport, and their assembly."""

from __future__ import annotations

import asyncio
from typing import Any

from azure.core.exceptions import AzureError
from azure.core.pipeline import AsyncPipeline, PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import AsyncHTTPPolicy
from azure.core.pipeline.transport import AsyncHttpTransport

from .._policies import AttemptLimits, AttemptRun, pipeline_policies, unguardable_transport
from .._redact import token_request
from .._retry import RetrySettings
from ._guard import forget_connections, guard_async_transport, guarded_aiohttp_session


class AsyncRetryPolicy(AsyncHTTPPolicy[Any, Any]):
    """The async twin of :class:`legacy_msi_credential._pipeline.RetryPolicy`: same decisions, awaited I/O.

    The deadline of an attempt covers sending, the status line, the headers and the body:
    ``asyncio.wait_for`` ends the attempt, and on the requests transport the attempt's
    watchdog also shuts the socket down so that its worker thread ends too.
    """

    def __init__(self, limits: AttemptLimits) -> None:
        super().__init__()
        self._limits = limits

    async def send(self, request: PipelineRequest[Any]) -> PipelineResponse[Any, Any]:
        with token_request():  # what the libraries underneath warn about it is withheld
            return await self._send(request)

    async def _send(self, request: PipelineRequest[Any]) -> PipelineResponse[Any, Any]:
        controller = self._limits.controller(request)
        transport: Any = request.context.transport
        while True:
            run = AttemptRun(self._limits, request, controller)
            try:
                run.succeeded(await asyncio.wait_for(self._attempt(run, request), timeout=self._limits.seconds))
            except asyncio.TimeoutError:
                run.attempt.expire()
                forget_connections(transport)
                raise run.too_slow() from None
            except Exception as exc:
                if run.attempt.fired:
                    forget_connections(transport)
                run.failed(exc)
            finally:
                run.finish()
            if run.delay is None:
                return run.result()
            await transport.sleep(run.delay)

    async def _attempt(self, run: AttemptRun, request: PipelineRequest[Any]) -> PipelineResponse[Any, Any]:
        response = await self.next.send(request)
        http_response = response.http_response
        # Closing a response that was not read to its end closes its connection, so an
        # abandoned answer's leftovers are never read as the next one.
        try:
            run.reading(response)
        except AzureError:
            await http_response.close()
            raise
        chunks = http_response.iter_bytes()
        try:
            async for chunk in chunks:
                run.feed(chunk)
        finally:
            aclose = getattr(chunks, "aclose", None)
            try:
                if aclose is not None:
                    await aclose()
            finally:
                await http_response.close()
        return response


def default_async_transport(*, trust_env: bool, require_loopback: bool, **kwargs: Any) -> AsyncHttpTransport[Any, Any]:
    """aiohttp's transport when aiohttp is installed (the ``aio`` extra), else requests in a thread.

    Call it inside the event loop it will serve: the aiohttp session is made here.
    """
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        from azure.core.pipeline.transport import AsyncioRequestsTransport

        from .._guard import new_guarded_session

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
    retry = AsyncRetryPolicy(AttemptLimits(settings, body_limit, body_deadline, watched=watched))
    return AsyncPipeline(transport, policies=pipeline_policies(retry, require_loopback=require_loopback, **kwargs))
