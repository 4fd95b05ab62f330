"""What the sync and async pipelines share: their policy list around each one's retry policy,
the helper both retry policies read outcomes with, and where an attempt's answer is left."""

from __future__ import annotations

import time
from typing import Any, Optional

from azure.core.exceptions import AzureError, ClientAuthenticationError, ServiceRequestError, ServiceResponseError
from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import (
    CustomHookPolicy,
    DistributedTracingPolicy,
    HeadersPolicy,
    ProxyPolicy,
    SansIOHTTPPolicy,
    UserAgentPolicy,
)

from ._guard import ATTEMPT_HEADER, Attempt
from ._protocol import Answer, BodyCollector, too_slow, unreadable
from ._redact import RedactingNetworkTraceLoggingPolicy, http_logging_policy
from ._retry import CONNECT_FAILED, RESPONSE_FAILED, RetryController, RetrySettings
from ._version import VERSION

USER_AGENT = f"legacy-msi-credential/{VERSION}"


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
        return RetryController(self.settings, url=request_url(request))

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
            request_url(request),
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
        return too_slow(request_url(request), self._deadline)

    @staticmethod
    def outcome(
        controller: RetryController,
        response: Optional[PipelineResponse[Any, Any]],
        error: Optional[Exception],
        elapsed: float,
    ) -> Optional[float]:
        """Seconds to wait before another attempt, or None to end with this one."""
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

    def attempt(self, request: PipelineRequest[Any], controller: RetryController, *, guarded: bool) -> AttemptRun:
        """Start one attempt of ``request``: its deadline, and on a guarded transport its watchdog."""
        return AttemptRun(self, request, controller, guarded=guarded)


class AttemptRun:
    """One attempt of a token request, from sending to the decision that follows, for both retry
    policies (which only send, read and sleep their own way).

    Use: make it, send and read; then :meth:`succeeded` with the response, or :meth:`failed`
    in the ``except`` block; :meth:`finish` in ``finally``; then :attr:`delay` says whether
    to sleep and try again (a number) or to end with :meth:`result` (None).
    """

    def __init__(
        self, helper: RetryHelper, request: PipelineRequest[Any], controller: RetryController, *, guarded: bool
    ) -> None:
        self._helper = helper
        self._request = request
        self._controller = controller
        controller.started()
        self._started = time.monotonic()
        self.attempt = Attempt(helper.seconds) if guarded else None
        request.context[ATTEMPT_KEY] = self.attempt.key if self.attempt else None
        #: When the whole answer must have arrived (monotonic seconds).
        self.deadline = self.attempt.deadline if self.attempt else self._started + helper.seconds
        self._response: Optional[PipelineResponse[Any, Any]] = None
        self._error: Optional[Exception] = None
        #: Seconds to wait before the next attempt, or None to end (set by :meth:`finish`).
        self.delay: Optional[float] = None

    @property
    def cut_short(self) -> bool:
        """Whether the watchdog shut the attempt's sockets down at its deadline."""
        return self.attempt is not None and self.attempt.fired

    def succeeded(self, response: PipelineResponse[Any, Any]) -> None:
        if self.cut_short:
            raise self._helper.too_slow(self._request)  # the watchdog cut the answer short
        self._response = response

    def failed(self, error: Exception) -> None:
        """Called in the ``except`` block: too slow, not the extension, or a transport error that may be retried."""
        if isinstance(error, ClientAuthenticationError):
            raise error
        if self.cut_short:
            raise self._helper.too_slow(self._request) from None
        if not isinstance(error, AzureError):
            raise unreadable(request_url(self._request), error) from None
        self._error = error

    def finish(self) -> None:
        """Called in ``finally``: stop the watchdog, and decide about another attempt."""
        if self.attempt is not None:
            self.attempt.finish()
        if self._response is not None or self._error is not None:
            self.delay = self._helper.outcome(
                self._controller, self._response, self._error, time.monotonic() - self._started
            )

    def result(self) -> PipelineResponse[Any, Any]:
        """The response to return, or the error of the last attempt to raise."""
        if self._error is not None:
            raise self._error
        assert self._response is not None
        return self._response


def request_url(request: PipelineRequest[Any]) -> str:
    """The request's URL without its query (what messages name)."""
    return str(request.http_request.url).split("?", 1)[0]


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


def unguardable_transport(transport: Any) -> str:
    return (
        f"transport={type(transport).__name__}: a plain-http endpoint is used only when this package can check "
        "that each connection reaches a loopback address, which it does on azure-core's RequestsTransport, "
        "AsyncioRequestsTransport and AioHttpTransport; pass allow_insecure_http=True to use this transport anyway"
    )
