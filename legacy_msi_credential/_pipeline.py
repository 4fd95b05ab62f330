"""azure-core pipeline pieces shared by both credentials, and the synchronous pipeline."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from typing import Any, Optional

from azure.core.exceptions import AzureError, ClientAuthenticationError, ServiceRequestError
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
from azure.core.pipeline.transport import RequestsTransport

from ._protocol import IDENTITY_PARAMETERS, Answer, BodyCollector
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


#: Where the retry policy leaves the answer it read, in the response's context.
ANSWER_KEY = "legacy_msi_credential.answer"


class RetryHelper:
    """What the sync and async retry policies share: the limits, and outcomes read into decisions."""

    def __init__(self, settings: RetrySettings, *, body_limit: int, body_deadline: float) -> None:
        self.settings = settings
        self._limit = body_limit
        self._deadline = body_deadline

    def controller(self, request: PipelineRequest[Any]) -> RetryController:
        return RetryController(self.settings, url=_url(request))

    def collector(self, request: PipelineRequest[Any], response: PipelineResponse[Any, Any]) -> BodyCollector:
        """A collector for the body, which refuses an announced oversized body at once."""
        http_response = response.http_response
        collector = BodyCollector(
            _url(request),
            status=http_response.status_code,
            content_type=http_response.headers.get("Content-Type", ""),
            deadline=time.monotonic() + self._deadline,
            limit=self._limit,
        )
        collector.check_length(http_response.headers.get("Content-Length"))
        return collector

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


def _url(request: PipelineRequest[Any]) -> str:
    return str(request.http_request.url).split("?", 1)[0]


class RetryPolicy(HTTPPolicy[Any, Any]):
    """Sends, reads the whole (bounded) answer, and retries by :class:`RetryController`'s decisions.

    The body is read here, not by the caller, so that a connection broken halfway through
    an answer is retried like any other broken connection. The answer is left in the
    response's context under :data:`ANSWER_KEY`. Sleeps go through ``transport.sleep``
    (as azure-core's own retry policy does), so a transport may simulate time.
    """

    def __init__(self, settings: RetrySettings, *, body_limit: int, body_deadline: float) -> None:
        super().__init__()
        self._helper = RetryHelper(settings, body_limit=body_limit, body_deadline=body_deadline)

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
                response.context[ANSWER_KEY] = self._read(request, response)
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
            transport.sleep(delay)

    def _read(self, request: PipelineRequest[Any], response: PipelineResponse[Any, Any]) -> Answer:
        http_response = response.http_response
        try:
            collector = self._helper.collector(request, response)
        except AzureError:
            discard_connection(http_response)  # an oversized body announced: not read at all
            http_response.close()
            raise
        # A read blocks until its chunk is complete, however slowly the bytes trickle in:
        # at the deadline, a watchdog shuts the socket down to end it.
        fired = threading.Event()
        watchdog = threading.Timer(collector.seconds_left(time.monotonic()), _interrupt, (http_response, fired))
        watchdog.daemon = True
        watchdog.start()
        try:
            for chunk in http_response.iter_bytes():
                collector.feed(chunk, time.monotonic())
        except AzureError as exc:
            discard_connection(http_response)
            if fired.is_set():
                raise collector.too_slow() from exc
            raise
        finally:
            watchdog.cancel()
            http_response.close()
        return collector.answer()


def _connection(http_response: Any) -> Any:
    """The urllib3 connection under a requests-based response, or ``None`` (aiohttp, released)."""
    internal = getattr(http_response, "_internal_response", None) or getattr(http_response, "internal_response", None)
    return getattr(getattr(internal, "raw", None), "connection", None)


def _interrupt(http_response: Any, fired: threading.Event) -> None:
    """Shut down the socket under a requests response, ending a read blocked on it in another thread."""
    fired.set()
    sock = getattr(_connection(http_response), "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def discard_connection(http_response: Any) -> None:
    """End the connection of an answer abandoned halfway: it cannot carry another request.

    The socket is shut down first, which wakes a read still blocked on it (a worker
    thread of the async requests transport), so that closing does not wait for it.
    """
    connection = _connection(http_response)
    if connection is None:
        return
    sock = getattr(connection, "sock", None)
    with contextlib.suppress(OSError):
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
        connection.close()


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


def build_pipeline(
    settings: RetrySettings, *, trust_env: bool, body_limit: int, body_deadline: float, **kwargs: Any
) -> Pipeline[Any, Any]:
    """The synchronous pipeline: azure-core policies over ``RequestsTransport`` unless given one.

    Args:
        settings: Retry bounds.
        body_limit: Most bytes of an answer read.
        body_deadline: Seconds an answer's body may take to arrive.
        trust_env: Whether the transport may take proxies and the like from the
            environment (never for a loopback endpoint).
        **kwargs: azure-core pipeline settings (``transport``, ``logging_enable``, ...).
    """
    transport = kwargs.pop("transport", None)
    if transport is None:
        transport = RequestsTransport(use_env_settings=trust_env, **kwargs)
    retry = RetryPolicy(settings, body_limit=body_limit, body_deadline=body_deadline)
    return Pipeline(transport, policies=pipeline_policies(retry, **kwargs))
