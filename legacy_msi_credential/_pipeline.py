"""azure-core pipeline pieces shared by both credentials, and the synchronous pipeline."""

from __future__ import annotations

import logging
import time
from typing import Any, Optional

from azure.core.exceptions import ServiceRequestError, ServiceResponseError
from azure.core.pipeline import Pipeline, PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import (
    CustomHookPolicy,
    DistributedTracingPolicy,
    HeadersPolicy,
    HttpLoggingPolicy,
    HTTPPolicy,
    NetworkTraceLoggingPolicy,
    ProxyPolicy,
    UserAgentPolicy,
)

from ._protocol import IDENTITY_PARAMETERS
from ._retry import CONNECT_FAILED, RESPONSE_FAILED, RetryController, RetrySettings
from ._version import VERSION

USER_AGENT = f"legacy-msi-credential/{VERSION}"
_NETWORK_LOGGER = logging.getLogger("azure.core.pipeline.policies._universal")


class RedactingNetworkTraceLoggingPolicy(NetworkTraceLoggingPolicy):
    """azure-core's ``logging_enable`` trace, without the response body (it holds the token).

    azure-core's own policy logs response bodies verbatim; this one logs the request, the
    response status and headers, and only the size and type of the body.
    """

    def on_response(self, request: PipelineRequest[Any], response: PipelineResponse[Any, Any]) -> None:
        if not response.context.get("logging_enable") or not _NETWORK_LOGGER.isEnabledFor(logging.DEBUG):
            return
        http_response = response.http_response
        lines = [f"Response status: '{http_response.status_code}'", "Response headers:"]
        lines.extend(f"    '{name}': '{value}'" for name, value in http_response.headers.items())
        lines.append("Response content: not logged (a token response holds a secret)")
        _NETWORK_LOGGER.debug("\n".join(lines))


def http_logging_policy(**kwargs: Any) -> HttpLoggingPolicy:
    """azure-core's HTTP logging policy, allowed to show this protocol's harmless parameters."""
    policy = HttpLoggingPolicy(**kwargs)
    policy.allowed_query_params.update(("resource", "api-version", *IDENTITY_PARAMETERS))
    policy.allowed_header_names.update(("Metadata",))
    return policy


class RetryHelper:
    """What the sync and async retry policies share: reading an outcome into a decision."""

    def __init__(self, settings: RetrySettings) -> None:
        self.settings = settings

    def controller(self, request: PipelineRequest[Any]) -> RetryController:
        url = request.http_request.url.split("?", 1)[0]
        return RetryController(self.settings, url=url)

    @staticmethod
    def outcome(
        controller: RetryController,
        response: Optional[PipelineResponse[Any, Any]],
        error: Optional[Exception],
        elapsed: float,
    ) -> Optional[float]:
        if response is not None:
            http_response = response.http_response
            return controller.next_delay(
                status=http_response.status_code,
                retry_after=http_response.headers.get("Retry-After"),
                elapsed=elapsed,
                now=time.time(),
            )
        failure = CONNECT_FAILED if isinstance(error, ServiceRequestError) else RESPONSE_FAILED
        return controller.next_delay(failure=failure, elapsed=elapsed)


class RetryPolicy(HTTPPolicy[Any, Any]):
    """Retries with the decisions of :class:`RetryController`; sleeps through the transport.

    Sleeping through ``transport.sleep`` (as azure-core's own retry policy does) lets a
    caller supply a transport whose clock is simulated.
    """

    def __init__(self, settings: RetrySettings) -> None:
        super().__init__()
        self._helper = RetryHelper(settings)

    def send(self, request: PipelineRequest[Any]) -> PipelineResponse[Any, Any]:
        controller = self._helper.controller(request)
        transport: Any = request.context.transport
        while True:
            controller.started()
            started = time.monotonic()
            response: Optional[PipelineResponse[Any, Any]] = None
            error: Optional[Exception] = None
            try:
                response = self.next.send(request)
            except (ServiceRequestError, ServiceResponseError) as exc:
                error = exc
            delay = self._helper.outcome(controller, response, error, time.monotonic() - started)
            if delay is None:
                if error is not None:
                    raise error
                assert response is not None
                return response
            if response is not None:
                response.http_response.close()
            transport.sleep(delay)


def pipeline_policies(retry_policy: Any, **kwargs: Any) -> list[Any]:
    """The policy list both credentials use, around their own retry policy."""
    return [
        HeadersPolicy(**kwargs),
        UserAgentPolicy(base_user_agent=USER_AGENT, **kwargs),
        ProxyPolicy(**kwargs),
        retry_policy,
        CustomHookPolicy(**kwargs),
        RedactingNetworkTraceLoggingPolicy(**kwargs),
        DistributedTracingPolicy(**kwargs),
        http_logging_policy(**kwargs),
    ]


def build_pipeline(settings: RetrySettings, *, trust_env: bool, **kwargs: Any) -> Pipeline[Any, Any]:
    """The synchronous pipeline: azure-core policies over ``RequestsTransport`` unless given one.

    Args:
        settings: Retry bounds.
        trust_env: Whether the transport may take proxies and the like from the
            environment (never for a loopback endpoint).
        **kwargs: azure-core pipeline settings (``transport``, ``logging_enable``, ...).
    """
    transport = kwargs.pop("transport", None)
    if transport is None:
        from azure.core.pipeline.transport import RequestsTransport

        transport = RequestsTransport(use_env_settings=trust_env, **kwargs)
    return Pipeline(transport, policies=pipeline_policies(RetryPolicy(settings), **kwargs))
