"""azure-core pipeline pieces shared by both credentials, and the synchronous pipeline."""

from __future__ import annotations

import logging
import re
import time
from typing import Any, Optional

from azure.core.exceptions import AzureError, ClientAuthenticationError, ServiceRequestError, ServiceResponseError
from azure.core.pipeline import Pipeline, PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import (
    CustomHookPolicy,
    DistributedTracingPolicy,
    HeadersPolicy,
    HttpLoggingPolicy,
    HTTPPolicy,
    NetworkTraceLoggingPolicy,
    ProxyPolicy,
    SansIOHTTPPolicy,
    UserAgentPolicy,
)
from azure.core.pipeline.transport import RequestsTransport

from ._constants import IDENTITY_ALIASES, IDENTITY_PARAMETERS
from ._guard import ATTEMPT_HEADER, Attempt, guard_session, new_guarded_session, token_request
from ._protocol import Answer, BodyCollector, too_slow, unreadable
from ._retry import CONNECT_FAILED, RESPONSE_FAILED, RetryController, RetrySettings
from ._version import VERSION

USER_AGENT = f"legacy-msi-credential/{VERSION}"
_NETWORK_LOGGER = logging.getLogger("azure.core.pipeline.policies._universal")
_HTTP_LOGGER = logging.getLogger("azure.core.pipeline.policies.http_logging_policy")


#: Response headers whose names and values may be logged: the extension's own, nothing a
#: server could fill with a token. Other headers are counted, never named.
SAFE_RESPONSE_HEADERS = frozenset(
    name.lower()
    for name in (
        "Content-Type",
        "Content-Length",
        "Content-Encoding",
        "Transfer-Encoding",
        "Connection",
        "Date",
        "Server",
        "Retry-After",
        "Allow",
        "Keep-Alive",
    )
)
_SAFE_VALUE = re.compile(r"[\x20-\x7e]{0,100}")


def _loggable_headers(headers: Any) -> list[str]:
    """Response header lines fit for a log: safe names with printable values, the rest counted."""
    lines: list[str] = []
    withheld = 0
    for name, value in headers.items():
        if str(name).lower() in SAFE_RESPONSE_HEADERS and _SAFE_VALUE.fullmatch(str(value)):
            lines.append(f"    '{name}': '{value}'")
        else:
            withheld += 1
    if withheld:
        lines.append(f"    ({withheld} other header(s) withheld: names and values may quote the server's bytes)")
    return lines


class RedactingNetworkTraceLoggingPolicy(NetworkTraceLoggingPolicy):
    """azure-core's ``logging_enable`` trace, without the response body or unknown headers.

    azure-core's own policy logs every response header and, for answers that are not
    streamed, the body. A token response holds a secret in its body, and a hostile server
    can put anything in a header (or make a body line parse as one), so this one logs the
    status, the extension's own headers and a count of the others.
    """

    def on_response(self, request: PipelineRequest[Any], response: PipelineResponse[Any, Any]) -> None:
        if not response.context.get("logging_enable") or not _NETWORK_LOGGER.isEnabledFor(logging.DEBUG):
            return
        http_response = response.http_response
        lines = [f"Response status: '{http_response.status_code}'", "Response headers:"]
        lines.extend(_loggable_headers(http_response.headers))
        lines.append("Response content: not logged (a token response holds a secret)")
        _NETWORK_LOGGER.debug("\n".join(lines))


class SafeHttpLoggingPolicy(HttpLoggingPolicy):
    """azure-core's HTTP logging policy, naming only the response headers the extension sends."""

    def on_response(self, request: PipelineRequest[Any], response: PipelineResponse[Any, Any]) -> None:
        options = request.context.options
        # Read as azure-core's own policy does; older azure-core releases lack the level setting.
        logger = request.context.setdefault("logger", options.pop("logger", getattr(self, "logger", _HTTP_LOGGER)))
        level = request.context.setdefault(
            "http_logging_level", options.pop("http_logging_level", getattr(self, "http_logging_level", logging.INFO))
        )
        if not logger.isEnabledFor(level):
            return
        http_response = response.http_response
        lines = [f"Response status: {http_response.status_code}", "Response headers:"]
        lines.extend(_loggable_headers(http_response.headers))
        logger.log(level, "\n".join(lines))


def http_logging_policy(**kwargs: Any) -> HttpLoggingPolicy:
    """The HTTP logging policy, allowed to show this protocol's harmless parameters."""
    policy = SafeHttpLoggingPolicy(**kwargs)
    policy.allowed_query_params.update(("resource", "api-version", *IDENTITY_PARAMETERS, *IDENTITY_ALIASES))
    policy.allowed_header_names.update(("Metadata",))
    return policy


class AttemptMarker(SansIOHTTPPolicy[Any, Any]):
    """Names the current attempt in a private header, for :class:`GuardedAdapter` (which removes it).

    Last before the transport, so that no logging policy sees it.
    """

    def on_request(self, request: PipelineRequest[Any]) -> None:
        key = request.context.get(ATTEMPT_KEY)
        if key is not None:
            request.http_request.headers[ATTEMPT_HEADER] = key
        else:
            request.http_request.headers.pop(ATTEMPT_HEADER, None)


#: Where the retry policy leaves the answer it read, in the response's context.
ANSWER_KEY = "legacy_msi_credential.answer"
#: Where the retry policy names the current attempt, for :class:`AttemptMarker`.
ATTEMPT_KEY = "legacy_msi_credential.attempt"


class RetryHelper:
    """What the sync and async retry policies share: the limits, and outcomes read into decisions."""

    def __init__(self, settings: RetrySettings, *, body_limit: int, body_deadline: float) -> None:
        self.settings = settings
        self._limit = body_limit
        self._deadline = body_deadline

    def controller(self, request: PipelineRequest[Any]) -> RetryController:
        return RetryController(self.settings, url=_url(request))

    @property
    def seconds(self) -> float:
        """Time allowed for one attempt, from sending to the last byte of the answer."""
        return self._deadline

    def collector(
        self, request: PipelineRequest[Any], response: PipelineResponse[Any, Any], deadline: float
    ) -> BodyCollector:
        """A collector for the body, which refuses an announced oversized or encoded body at once."""
        http_response = response.http_response
        headers = http_response.headers
        collector = BodyCollector(
            _url(request),
            status=http_response.status_code,
            content_type=headers.get("Content-Type", ""),
            deadline=deadline,
            seconds=self._deadline,
            limit=self._limit,
        )
        collector.check_headers(headers.get("Content-Length"), headers.get("Content-Encoding"))
        return collector

    @staticmethod
    def answer(collector: BodyCollector) -> Answer:
        """The answer collected; one cut short of its announced length is a broken connection (retried)."""
        shortfall = collector.cut_short
        if shortfall is not None:
            raise ServiceResponseError(shortfall)
        return collector.answer()

    def too_slow(self, request: PipelineRequest[Any]) -> ClientAuthenticationError:
        return too_slow(_url(request), self._deadline)

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

    Each attempt has a deadline from the moment it is sent to the last byte of its answer
    (``response_timeout``); on a guarded transport an :class:`Attempt` enforces it by
    shutting the socket down. Anything but azure-core's transport errors and this
    package's own errors is turned into "what answered is not the extension".
    """

    def __init__(self, settings: RetrySettings, *, body_limit: int, body_deadline: float, guarded: bool) -> None:
        super().__init__()
        self._helper = RetryHelper(settings, body_limit=body_limit, body_deadline=body_deadline)
        self._guarded = guarded

    def send(self, request: PipelineRequest[Any]) -> PipelineResponse[Any, Any]:
        with token_request():  # what the libraries underneath warn about it is withheld
            return self._send(request)

    def _send(self, request: PipelineRequest[Any]) -> PipelineResponse[Any, Any]:
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
                response = self.next.send(request)
                response.context[ANSWER_KEY] = self._read(request, response, deadline)
                if attempt is not None and attempt.fired:
                    raise self._helper.too_slow(request)  # the watchdog cut the answer short
            except ClientAuthenticationError:
                raise
            except Exception as exc:
                if attempt is not None and attempt.fired:
                    raise self._helper.too_slow(request) from None
                if not isinstance(exc, AzureError):
                    raise unreadable(_url(request), exc) from None
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
            transport.sleep(delay)

    def _read(self, request: PipelineRequest[Any], response: PipelineResponse[Any, Any], deadline: float) -> Answer:
        http_response = response.http_response
        # Closing a response that was not read to its end closes its connection (urllib3
        # does not pool it), so an abandoned answer's leftovers are never read as the next one.
        try:
            collector = self._helper.collector(request, response, deadline)
            for chunk in http_response.iter_bytes():
                collector.feed(chunk, time.monotonic())
        finally:
            http_response.close()
        return self._helper.answer(collector)


class LoopbackProxyPolicy(ProxyPolicy):
    """azure-core's ``proxies=`` for https; for plain http to a loopback-only endpoint, none.

    A proxy would be the peer of a plain-http request, and the token would travel through
    it: the requests transports' guard drops the proxy itself, and this policy drops it
    before any transport (aiohttp's included) sees it.
    """

    def __init__(self, *, require_loopback: bool, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._require_loopback = require_loopback

    def on_request(self, request: PipelineRequest[Any]) -> None:
        super().on_request(request)
        if self._require_loopback and request.http_request.url.lower().startswith("http://"):
            request.context.options.pop("proxies", None)


def pipeline_policies(retry_policy: Any, *, require_loopback: bool, **kwargs: Any) -> list[Any]:
    """The policy list both credentials use, around their own retry policy."""
    return [
        HeadersPolicy(**kwargs),
        UserAgentPolicy(base_user_agent=USER_AGENT, **kwargs),
        LoopbackProxyPolicy(require_loopback=require_loopback, **kwargs),
        retry_policy,
        CustomHookPolicy(**kwargs),
        RedactingNetworkTraceLoggingPolicy(**kwargs),
        DistributedTracingPolicy(**kwargs),
        http_logging_policy(**kwargs),
        AttemptMarker(),
    ]


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


def build_pipeline(
    settings: RetrySettings,
    *,
    trust_env: bool,
    require_loopback: bool,
    body_limit: int,
    body_deadline: float,
    **kwargs: Any,
) -> Pipeline[Any, Any]:
    """The synchronous pipeline: azure-core policies over ``RequestsTransport`` unless given one.

    Args:
        settings: Retry bounds.
        body_limit: Most bytes of an answer read.
        body_deadline: Seconds an answer's body may take to arrive.
        trust_env: Whether the transport may take proxies and the like from the
            environment (never for a loopback endpoint).
        require_loopback: Plain-http connections must reach a loopback address.
        **kwargs: azure-core pipeline settings (``transport``, ``logging_enable``, ...).

    Raises:
        ValueError: ``require_loopback`` with a transport whose connections cannot be checked.
    """
    transport = kwargs.pop("transport", None)
    if transport is None:
        transport = RequestsTransport(
            session=new_guarded_session(require_loopback=require_loopback), use_env_settings=trust_env, **kwargs
        )
    guarded = guard_transport(transport, require_loopback=require_loopback)
    if require_loopback and not guarded:
        raise ValueError(unguardable_transport(transport))
    retry = RetryPolicy(settings, body_limit=body_limit, body_deadline=body_deadline, guarded=guarded)
    return Pipeline(transport, policies=pipeline_policies(retry, require_loopback=require_loopback, **kwargs))


def unguardable_transport(transport: Any) -> str:
    return (
        f"transport={type(transport).__name__}: a plain-http endpoint is used only when this package can check "
        "that each connection reaches a loopback address, which it does on azure-core's RequestsTransport, "
        "AsyncioRequestsTransport and AioHttpTransport; pass allow_insecure_http=True to use this transport anyway"
    )
