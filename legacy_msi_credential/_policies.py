"""What the sync and async pipelines share: their policy list around each one's retry policy,
the logging policies, and one attempt of a token request (:class:`AttemptRun`), which both
retry policies run alike and only send, read and sleep their own way.

Where the deadline is: :class:`legacy_msi_credential._attempt.Attempt` holds it (and, on the
requests transports, its watchdog); :class:`AttemptRun` asks it between the chunks of a body
and turns its passing into the one "too slow" error; :class:`~legacy_msi_credential._retry.RetryController`
decides whether to try again.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Optional

from azure.core.exceptions import AzureError, ClientAuthenticationError, ServiceRequestError, ServiceResponseError
from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import (
    CustomHookPolicy,
    DistributedTracingPolicy,
    HeadersPolicy,
    HttpLoggingPolicy,
    NetworkTraceLoggingPolicy,
    ProxyPolicy,
    SansIOHTTPPolicy,
    UserAgentPolicy,
)

from ._attempt import HEADER, Attempt
from ._constants import IDENTITY_ALIASES, IDENTITY_PARAMETERS
from ._errors import CredentialUnavailableError
from ._protocol import BodyCollector, too_slow, unreadable
from ._redact import loggable_headers
from ._retry import CONNECT_FAILED, RESPONSE_FAILED, RetryController, RetrySettings
from ._version import VERSION

USER_AGENT = f"legacy-msi-credential/{VERSION}"

#: Where the retry policy leaves the answer it read, in the response's context.
ANSWER_KEY = "legacy_msi_credential.answer"
#: Where the retry policy names the current attempt, for :class:`AttemptMarker`.
ATTEMPT_KEY = "legacy_msi_credential.attempt"


@dataclass(frozen=True)
class AttemptLimits:
    """What a retry policy is given: how to retry, and what one attempt may take.

    Attributes:
        retry: Retry bounds.
        body_limit: Most bytes of an answer read.
        seconds: Time allowed for one attempt, from sending to the last byte of the answer
            (``response_timeout``).
        watched: Whether the transport hands its sockets to the attempt's watchdog (the
            requests transports).
    """

    retry: RetrySettings
    body_limit: int
    seconds: float
    watched: bool

    def controller(self, request: PipelineRequest[Any]) -> RetryController:
        """The retry decisions of one token request, whose attempts are :class:`AttemptRun` s."""
        return RetryController(self.retry, url=request_url(request))


class AttemptRun:
    """One attempt of a token request, from sending to the decision that follows.

    Use: make it, send; :meth:`reading` with the response's head, :meth:`feed` each chunk
    of its body, then :meth:`succeeded`; or :meth:`failed` in the ``except`` block;
    :meth:`finish` in ``finally``. Then :attr:`delay` says whether to sleep and try again
    (a number) or to end with :meth:`result` (None).
    """

    def __init__(self, limits: AttemptLimits, request: PipelineRequest[Any], controller: RetryController) -> None:
        self._limits = limits
        self._url = request_url(request)
        self._controller = controller
        controller.started()
        self._started = time.monotonic()
        self.attempt = Attempt(limits.seconds, watched=limits.watched)
        request.context[ATTEMPT_KEY] = self.attempt.key
        self._collector: Optional[BodyCollector] = None
        self._response: Optional[PipelineResponse[Any, Any]] = None
        self._error: Optional[Exception] = None
        #: Seconds to wait before the next attempt, or None to end (set by :meth:`finish`).
        self.delay: Optional[float] = None

    def too_slow(self) -> CredentialUnavailableError:
        """The error for an attempt whose deadline passed, however it was noticed."""
        return too_slow(self._url, self.attempt.seconds)

    def reading(self, response: PipelineResponse[Any, Any]) -> None:
        """The head is in: refuse an announced oversized or encoded body before reading it."""
        http_response = response.http_response
        headers = http_response.headers
        self._collector = BodyCollector(
            self._url,
            status=http_response.status_code,
            content_type=headers.get("Content-Type", ""),
            limit=self._limits.body_limit,
        )
        self._collector.check_headers(headers.get("Content-Length"), headers.get("Content-Encoding"))

    def feed(self, chunk: bytes) -> None:
        """One chunk of the body: refused past the size limit, or once the deadline has passed."""
        assert self._collector is not None, "reading() comes first"
        self._collector.feed(chunk)
        if self.attempt.overdue():
            raise self.too_slow()

    def succeeded(self, response: PipelineResponse[Any, Any]) -> None:
        """The whole body is in: leave the answer in the response's context under :data:`ANSWER_KEY`.

        One cut short of its announced length is a broken connection (retried).
        """
        if self.attempt.fired:
            raise self.too_slow()  # the watchdog cut the answer short
        assert self._collector is not None, "reading() comes first"
        shortfall = self._collector.cut_short
        if shortfall is not None:
            raise ServiceResponseError(shortfall)
        response.context[ANSWER_KEY] = self._collector.answer()
        self._response = response

    def failed(self, error: Exception) -> None:
        """Called in the ``except`` block: too slow, not the extension, or a transport error that may be retried."""
        if isinstance(error, ClientAuthenticationError):
            raise error
        if self.attempt.fired:
            raise self.too_slow() from None
        if not isinstance(error, AzureError):
            raise unreadable(self._url, error) from None
        self._error = error

    def finish(self) -> None:
        """Called in ``finally``: stop the watchdog, and decide about another attempt."""
        self.attempt.finish()
        elapsed = time.monotonic() - self._started
        if self._response is not None:
            http_response = self._response.http_response
            self.delay = self._controller.next_delay(
                status=http_response.status_code,
                retry_after=http_response.headers.get("Retry-After"),
                elapsed=elapsed,
                now=time.time(),
            )
        elif self._error is not None:
            failure = CONNECT_FAILED if isinstance(self._error, ServiceRequestError) else RESPONSE_FAILED
            self.delay = self._controller.next_delay(failure=failure, elapsed=elapsed)

    def result(self) -> PipelineResponse[Any, Any]:
        """The response to return, or the error of the last attempt to raise."""
        if self._error is not None:
            raise self._error
        assert self._response is not None
        return self._response


def request_url(request: PipelineRequest[Any]) -> str:
    """The request's URL without its query (what messages name)."""
    return str(request.http_request.url).split("?", 1)[0]


class AttemptMarker(SansIOHTTPPolicy[Any, Any]):
    """Names the current attempt in a private header, for the guarded adapter (which removes it).

    Last before the transport, so that no logging policy sees it.
    """

    def on_request(self, request: PipelineRequest[Any]) -> None:
        key = request.context.get(ATTEMPT_KEY)
        if key is not None:
            request.http_request.headers[HEADER] = key
        else:
            request.http_request.headers.pop(HEADER, None)


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


# --- what is logged of an answer (what may be shown: _redact) ----------------------------------

_NETWORK_LOGGER = logging.getLogger("azure.core.pipeline.policies._universal")
_HTTP_LOGGER = logging.getLogger("azure.core.pipeline.policies.http_logging_policy")


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
        lines.extend(loggable_headers(http_response.headers))
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
        lines.extend(loggable_headers(http_response.headers))
        logger.log(level, "\n".join(lines))


def http_logging_policy(**kwargs: Any) -> HttpLoggingPolicy:
    """The HTTP logging policy, allowed to show this protocol's harmless parameters."""
    policy = SafeHttpLoggingPolicy(**kwargs)
    policy.allowed_query_params.update(("resource", "api-version", *IDENTITY_PARAMETERS, *IDENTITY_ALIASES))
    policy.allowed_header_names.update(("Metadata",))
    return policy


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
