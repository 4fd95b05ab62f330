"""What the pipeline logs of an answer: the status and the extension's own headers, never a body.

azure-core's logging policies log every response header and, for answers that are not
streamed, the body. A token answer holds a secret in its body, and a hostile server can
put anything in a header, so both policies are replaced here by ones that log the status,
the headers the extension sends (with printable values) and a count of the others.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import HttpLoggingPolicy, NetworkTraceLoggingPolicy

from ._constants import IDENTITY_ALIASES, IDENTITY_PARAMETERS

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
