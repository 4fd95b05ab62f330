"""The asynchronous pipeline: the same policies, an awaiting retry policy."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Optional

from azure.core.exceptions import AzureError, ClientAuthenticationError
from azure.core.pipeline import AsyncPipeline, PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import AsyncHTTPPolicy
from azure.core.pipeline.transport import AsyncHttpTransport

from .._pipeline import ANSWER_KEY, RetryHelper, discard_connection, pipeline_policies
from .._protocol import Answer
from .._retry import RetrySettings


class AsyncRetryPolicy(AsyncHTTPPolicy[Any, Any]):
    """The async twin of :class:`legacy_msi_credential._pipeline.RetryPolicy`: same decisions, awaited I/O."""

    def __init__(self, settings: RetrySettings, *, body_limit: int, body_deadline: float) -> None:
        super().__init__()
        self._helper = RetryHelper(settings, body_limit=body_limit, body_deadline=body_deadline)

    async def send(self, request: PipelineRequest[Any]) -> PipelineResponse[Any, Any]:
        controller = self._helper.controller(request)
        transport: Any = request.context.transport
        while True:
            controller.started()
            started = time.monotonic()
            response: Optional[PipelineResponse[Any, Any]] = None
            error: Optional[Exception] = None
            try:
                response = await self.next.send(request)
                response.context[ANSWER_KEY] = await self._read(request, response)
            except ClientAuthenticationError:
                raise
            except AzureError as exc:
                response, error = None, exc
            delay = self._helper.outcome(controller, response, error, time.monotonic() - started)
            if delay is None:
                if error is not None:
                    raise error
                assert response is not None
                return response
            await transport.sleep(delay)

    async def _read(self, request: PipelineRequest[Any], response: PipelineResponse[Any, Any]) -> Answer:
        http_response = response.http_response
        try:
            collector = self._helper.collector(request, response)
        except AzureError:
            discard_connection(http_response)  # an oversized body announced: not read at all
            await http_response.close()
            raise

        async def read() -> None:
            chunks = http_response.iter_bytes()
            try:
                async for chunk in chunks:
                    collector.feed(chunk, time.monotonic())
            finally:
                aclose = getattr(chunks, "aclose", None)
                if aclose is not None:
                    await aclose()

        try:
            await asyncio.wait_for(read(), timeout=collector.seconds_left(time.monotonic()))
        except asyncio.TimeoutError:
            discard_connection(http_response)
            raise collector.too_slow() from None
        except AzureError:
            discard_connection(http_response)
            raise
        finally:
            await http_response.close()
        return collector.answer()


def default_async_transport(*, trust_env: bool, **kwargs: Any) -> AsyncHttpTransport[Any, Any]:
    """aiohttp's transport when aiohttp is installed (the ``aio`` extra), else requests in a thread."""
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        from azure.core.pipeline.transport import AsyncioRequestsTransport

        fallback: AsyncHttpTransport[Any, Any] = AsyncioRequestsTransport(use_env_settings=trust_env, **kwargs)
        return fallback
    from azure.core.pipeline.transport import AioHttpTransport

    transport: AsyncHttpTransport[Any, Any] = AioHttpTransport(use_env_settings=trust_env, **kwargs)
    return transport


def build_async_pipeline(
    settings: RetrySettings,
    *,
    transport: AsyncHttpTransport[Any, Any],
    body_limit: int,
    body_deadline: float,
    **kwargs: Any,
) -> AsyncPipeline[Any, Any]:
    """The asynchronous pipeline over ``transport``."""
    retry = AsyncRetryPolicy(settings, body_limit=body_limit, body_deadline=body_deadline)
    return AsyncPipeline(transport, policies=pipeline_policies(retry, **kwargs))
