"""The synchronous pipeline: its retry policy, and its assembly over a guarded transport."""

from __future__ import annotations

from typing import Any

from azure.core.pipeline import Pipeline, PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import HTTPPolicy
from azure.core.pipeline.transport import RequestsTransport

from ._guard import guard_transport, new_guarded_session
from ._policies import AttemptLimits, AttemptRun, pipeline_policies, unguardable_transport
from ._redact import token_request
from ._retry import RetrySettings


class RetryPolicy(HTTPPolicy[Any, Any]):
    """Sends, reads the whole (bounded) answer, and retries by :class:`RetryController`'s decisions.

    The body is read here, not by the caller, so that a connection broken halfway through
    an answer is retried like any other broken connection. The answer is left in the
    response's context under :data:`ANSWER_KEY`. Sleeps go through ``transport.sleep``
    (as azure-core's own retry policy does), so a transport may simulate time.

    Each attempt (:class:`AttemptRun`) has a deadline from the moment it is sent to the last
    byte of its answer (``response_timeout``); on a guarded transport its watchdog enforces
    it by shutting the socket down. Anything but azure-core's transport errors and this
    package's own errors is turned into "what answered is not the extension".
    """

    def __init__(self, limits: AttemptLimits) -> None:
        super().__init__()
        self._limits = limits

    def send(self, request: PipelineRequest[Any]) -> PipelineResponse[Any, Any]:
        with token_request():  # what the libraries underneath warn about it is withheld
            return self._send(request)

    def _send(self, request: PipelineRequest[Any]) -> PipelineResponse[Any, Any]:
        controller = self._limits.controller(request)
        transport: Any = request.context.transport
        while True:
            run = AttemptRun(self._limits, request, controller)
            try:
                response = self.next.send(request)
                self._read(run, response)
                run.succeeded(response)
            except Exception as exc:
                run.failed(exc)
            finally:
                run.finish()
            if run.delay is None:
                return run.result()
            transport.sleep(run.delay)

    @staticmethod
    def _read(run: AttemptRun, response: PipelineResponse[Any, Any]) -> None:
        http_response = response.http_response
        # Closing a response that was not read to its end closes its connection (urllib3
        # does not pool it), so an abandoned answer's leftovers are never read as the next one.
        try:
            run.reading(response)
            for chunk in http_response.iter_bytes():
                run.feed(chunk)
        finally:
            http_response.close()


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
    retry = RetryPolicy(AttemptLimits(settings, body_limit, body_deadline, watched=guarded))
    return Pipeline(transport, policies=pipeline_policies(retry, require_loopback=require_loopback, **kwargs))
