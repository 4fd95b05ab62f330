"""The legacy endpoint's wire format: building requests, reading answers. No I/O here."""

from __future__ import annotations

import json
import math
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, NamedTuple, Optional
from urllib.parse import quote, urlencode

from azure.core.rest import HttpRequest

from ._constants import EXPIRY_MARGIN, IDENTITY_PARAMETERS, MAX_EPOCH_SECONDS
from ._errors import CredentialUnavailableError, TokenRequestError, unavailable
from ._text import clean_text
from ._token import TokenResult as TokenResult  # where the twins read it; its home is _token


class _Hint(NamedTuple):
    #: What the error means, in the error's message (``{resource!r}`` names the resource).
    why: str
    #: What to do about it, in ``legacy-msi doctor``'s verdict.
    fix: str


#: Each documented ``error`` of the extension: what it means and what to do. The one table
#: both the credentials' messages and the doctor read.
_ERROR_HINTS = {
    "bad_request_102": _Hint(
        "the endpoint requires the header 'Metadata: true'; something between this process "
        "and the endpoint (a proxy?) removed or changed it",
        "remove the proxy or gateway that strips the 'Metadata: true' header",
    ),
    "invalid_resource": _Hint(
        "Azure AD does not know the resource {resource!r}: check the scope the client asked for "
        "(for example 'https://management.azure.com/.default')",
        "ask for a resource Azure AD knows, e.g. https://management.azure.com/",
    ),
    "unknown_source": _Hint(
        "the endpoint rejected the request path: the endpoint URL should end in /oauth2/token",
        "the endpoint URL must end in /oauth2/token",
    ),
    "invalid_request": _Hint(
        "the endpoint found a parameter missing, invalid or repeated: check client_id, object_id or msi_res_id",
        "name one identity, by client_id, object_id or msi_res_id, with a valid value",
    ),
    "unauthorized_client": _Hint(
        "the identity is not configured on this VM (assign it, or check client_id, object_id or "
        "msi_res_id), or the request did not reach the endpoint over loopback",
        "assign the managed identity to this VM, or name the right one (client_id, object_id or msi_res_id)",
    ),
    "access_denied": _Hint("Azure AD denied the request for this identity", "check the identity's state in Azure AD"),
    "unsupported_response_type": _Hint(
        "the endpoint does not support the requested response type", "update the managed identity extension"
    ),
    "invalid_scope": _Hint("the endpoint rejected the requested scope", "ask for a resource, not a custom scope"),
    "unknown": _Hint(
        "the extension could not get a token from Azure AD. On Windows this is also how the extension answers a "
        "resource Azure AD does not know: check the resource URI ({resource!r}, e.g. "
        "'https://management.azure.com/.default' as a scope), then the extension's log on the VM",
        "check the resource, then the extension's log on the VM",
    ),
    "bad_resource_200": _Hint(
        "the endpoint found the resource {resource!r} invalid: check the scope the client asked for "
        "(for example 'https://management.azure.com/.default')",
        "ask for a resource Azure AD knows, e.g. https://management.azure.com/",
    ),
}


def fix_for(error_code: Optional[str]) -> str:
    """What to do about a refusal with this ``error`` (the extension's log, when it is not documented)."""
    hint = _ERROR_HINTS.get(error_code or "")
    return hint.fix if hint else "see the message above; the extension's log on the VM has details"


_STATUS_HINTS = {
    404: "the endpoint is not ready or is being updated",
    410: "the endpoint is being updated",
    429: "the endpoint is throttling requests",
}
_TOKEN_CHARS = re.compile(r"[\x21-\x7e]+")
_DATE_FORM = re.compile(
    r"\s*(\d{1,2})/(\d{1,2})/(\d{4})\s+(\d{1,2}):(\d{2}):(\d{2})\s*([AaPp][Mm])?\s*(?:([+-])(\d{2}):?(\d{2}))?\s*"
)


@dataclass(frozen=True)
class Identity:
    """The managed identity a request is for.

    Attributes:
        parameter: ``client_id``, ``object_id`` or ``msi_res_id``, or ``None`` for the
            system-assigned identity.
        value: The identifier, or ``None``.
    """

    parameter: Optional[str] = None
    value: Optional[str] = None

    @classmethod
    def from_arguments(
        cls, client_id: Optional[str] = None, object_id: Optional[str] = None, msi_res_id: Optional[str] = None
    ) -> Identity:
        """Choose the identity from the mutually exclusive constructor arguments.

        Raises:
            ValueError: More than one was given, or one is empty or not a plain string.
        """
        given = [
            (name, value)
            for name, value in zip(IDENTITY_PARAMETERS, (client_id, object_id, msi_res_id))
            if value is not None
        ]
        if len(given) > 1:
            names = ", ".join(name for name, _ in given)
            raise ValueError(f"client_id, object_id and msi_res_id are mutually exclusive; got {names}")
        if not given:
            return cls()
        name, value = given[0]
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{name} must be a non-empty string")
        if value != value.strip() or any(unicodedata.category(c) in ("Cc", "Cs") for c in value):
            raise ValueError(f"{name} has surrounding whitespace or control characters")
        return cls(name, value)

    def describe(self) -> str:
        """A short, loggable description (identifiers of identities are not secrets)."""
        if self.parameter is None:
            return "system-assigned identity"
        return f"user-assigned identity ({self.parameter}={self.value})"

    def params(self) -> list[tuple[str, str]]:
        """The request parameters that select this identity."""
        if self.parameter is None or self.value is None:
            return []
        return [(self.parameter, self.value)]


def build_request(url: str, resource: str, identity: Identity, *, method: str = "GET") -> HttpRequest:
    """Build the token request.

    Every value is percent-encoded, so a resource holding ``&``, ``=``, ``#`` or spaces
    cannot add or change parameters.

    Args:
        url: The token endpoint.
        resource: The resource the token is for.
        identity: The identity to ask for.
        method: ``GET`` (query string, as documented) or ``POST`` (form body, as most SDKs
            of the extension's era sent).

    Returns:
        An azure-core request.
    """
    params = [("resource", resource), *identity.params()]
    encoded = urlencode(params, quote_via=quote, safe="")
    # The extension never compresses; saying so keeps clients from inviting an encoded answer.
    headers = {"Metadata": "true", "Accept-Encoding": "identity"}
    if method == "POST":
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        return HttpRequest("POST", url, headers=headers, content=encoded)
    separator = "&" if "?" in url else "?"
    return HttpRequest("GET", f"{url}{separator}{encoded}", headers=headers)


def wants_post(method: str, status: int) -> bool:
    """Whether a GET answered 405 should be sent again, once, as a form POST."""
    return method == "GET" and status == 405


def describe_body(content_type: str, body: bytes) -> str:
    """Describe what answered, without ever quoting a token."""
    snippet = body[:80].decode("utf-8", "replace")
    cut = snippet.find("access_token")
    if cut != -1:
        snippet = snippet[:cut] + "..."
    snippet = clean_text(snippet.replace("\r", " ").replace("\n", " "), 80)
    kind = clean_text(content_type, 100) or "no content type"
    if not body:
        return f"an empty body ({kind})"
    return f"{len(body)} bytes of {kind} starting {snippet!r}"


def too_slow(url: str, seconds: float) -> CredentialUnavailableError:
    """The error for an answer that was not complete ``seconds`` after the request was sent."""
    return unavailable(
        f"{url} did not send a complete answer within {seconds:g} s of the request (response_timeout); "
        "gave up waiting for it"
    )


def unreadable(url: str, error: BaseException) -> CredentialUnavailableError:
    """The error for an answer that made a library fail in a way no transport error covers.

    Only the exception's type is named: its message may quote the server's bytes.
    """
    return unavailable(
        f"what answered at {url} is not the legacy managed identity endpoint: its answer could not be read "
        f"({type(error).__name__})"
    )


def _seconds(value: Any) -> Optional[float]:
    """A number of seconds from a JSON number or a string of digits, else ``None``."""
    if isinstance(value, bool):
        return None
    try:
        if isinstance(value, (int, float)):
            number = float(value)
        elif isinstance(value, str):
            text = value.strip()
            if not re.fullmatch(r"[+-]?[0-9]{1,20}(?:\.[0-9]{0,9})?", text):
                return None
            number = float(text)
        else:
            return None
    except OverflowError:  # an integer of hundreds of digits
        return None
    if not math.isfinite(number) or abs(number) > MAX_EPOCH_SECONDS:
        return None
    return number


def _epoch(value: Any) -> Optional[float]:
    """Unix seconds from a number, a string of digits or the ``MM/DD/YYYY hh:mm:ss AM +00:00`` form."""
    number = _seconds(value)
    if number is not None or not isinstance(value, str):
        return number
    match = _DATE_FORM.fullmatch(value)
    if match is None or not value.isascii():
        return None
    month, day, year, hour, minute, second = (int(g) for g in match.groups()[:6])
    meridiem, sign, offset_hours, offset_minutes = match.groups()[6:]
    if meridiem is not None:
        if hour > 12:
            return None
        hour = hour % 12 + (12 if meridiem.upper() == "PM" else 0)
    offset = timedelta(0)
    if sign is not None:
        offset = timedelta(hours=int(offset_hours), minutes=int(offset_minutes))
        if sign == "-":
            offset = -offset
    try:
        moment = datetime(year, month, day, hour, minute, second, tzinfo=timezone(offset))
        return moment.timestamp()
    except (ValueError, OverflowError):
        return None


def _text_field(document: dict[str, Any], name: str) -> Optional[str]:
    value = document.get(name)
    if not isinstance(value, str):
        return None
    for key in ("access_token", "refresh_token", "id_token"):
        secret = document.get(key)
        if isinstance(secret, str) and len(secret) >= 4:
            value = value.replace(secret, "<redacted>")
    return clean_text(value)


def parse_response(status: int, content_type: str, body: bytes, *, now: float, url: str, resource: str) -> TokenResult:
    """Read the endpoint's answer.

    Args:
        status: HTTP status.
        content_type: The ``Content-Type`` header, or ``""``.
        body: The body, as read (possibly cut short by the caller's size limit).
        now: This machine's clock, in Unix seconds, when the answer arrived.
        url: The endpoint, for messages.
        resource: The requested resource, for messages.

    Returns:
        The token.

    Raises:
        CredentialUnavailableError: What answered is not the legacy endpoint.
        TokenRequestError: The endpoint refused, or its answer holds no usable token.
    """
    if 300 <= status < 400:
        raise unavailable(
            f"{url} answered HTTP {status}, a redirect, which is not followed: "
            "the legacy endpoint never redirects, so something else is listening there",
            status_code=status,
        )
    try:
        document = json.loads(body.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise unavailable(
            f"what answered at {url} is not the legacy managed identity endpoint: "
            f"HTTP {status} with {describe_body(content_type, body)}, not JSON",
            status_code=status,
        ) from None
    if status != 200:
        raise _refusal(status, document, url=url, resource=resource)
    if not isinstance(document, dict):
        raise TokenRequestError(
            f"{url} answered HTTP 200 with a JSON {type(document).__name__}, not a token object",
            status_code=status,
        )
    return _read_token(document, now=now, url=url)


def _refusal(status: int, document: Any, *, url: str, resource: str) -> TokenRequestError:
    error = _text_field(document, "error") if isinstance(document, dict) else None
    description = _text_field(document, "error_description") if isinstance(document, dict) else None
    documented = _ERROR_HINTS.get(error or "")
    hint = documented.why if documented else _STATUS_HINTS.get(status)
    if hint is None and status >= 500:
        hint = "the endpoint failed"
    message = f"token request to {url} failed: HTTP {status}"
    if error:
        message += f" {error}"
    if hint:
        message += ": " + hint.format(resource=resource)
    if description:
        message += f". The endpoint said: {description}"
    return TokenRequestError(message, status_code=status, error_code=error, error_description=description)


def _read_token(document: dict[str, Any], *, now: float, url: str) -> TokenResult:
    token = document.get("access_token")
    if not isinstance(token, str) or not token:
        raise TokenRequestError(f"{url} answered HTTP 200 without an access_token", status_code=200)
    if not _TOKEN_CHARS.fullmatch(token):
        raise TokenRequestError(
            f"{url} answered HTTP 200 with an access_token that is not printable ASCII", status_code=200
        )
    expires_on = _expiry(document, now=now, url=url)
    token_type = document.get("token_type")
    if not isinstance(token_type, str) or not _TOKEN_CHARS.fullmatch(token_type):
        token_type = "Bearer"
    resource = document.get("resource")
    client_id = document.get("client_id")
    return TokenResult(
        token=token,
        expires_on=expires_on,
        token_type=token_type,
        resource=resource if isinstance(resource, str) else None,
        client_id=client_id if isinstance(client_id, str) and client_id else None,
    )


def _expiry(document: dict[str, Any], *, now: float, url: str) -> int:
    """The expiry by this machine's clock.

    ``expires_in`` is relative, so it is immune to skew between this machine's clock and
    the endpoint's; it is preferred. ``expires_on`` (absolute) is the fallback.
    """
    expires_in = _seconds(document.get("expires_in"))
    expires_on = _epoch(document.get("expires_on"))
    not_before = _epoch(document.get("not_before"))
    if expires_on is not None and not_before is not None and expires_on < not_before:
        raise TokenRequestError(
            f"{url} answered with a token whose expires_on is earlier than its not_before", status_code=200
        )
    if expires_in is not None:
        expiry = now + expires_in
    elif expires_on is not None:
        expiry = expires_on
    else:
        raise TokenRequestError(f"{url} answered without a usable expires_in or expires_on", status_code=200)
    expiry = min(expiry, MAX_EPOCH_SECONDS)  # "forever" is the end of year 9999
    if expiry - EXPIRY_MARGIN <= now:
        raise TokenRequestError(
            f"{url} answered with a token that has expired or is about to "
            f"({int(expiry - now)} s left); if this persists, check this machine's clock",
            status_code=200,
        )
    return int(expiry)


@dataclass(frozen=True)
class Answer:
    """What the endpoint answered: status, content type and the whole body."""

    status: int
    content_type: str
    body: bytes = field(repr=False)


class BodyCollector:
    """Collects a streamed answer, refusing one too large to be a token.

    Its time is the attempt's to bound (``_policies.AttemptRun.feed``).

    Args:
        url: The endpoint, for messages.
        status: The answer's status.
        content_type: The answer's ``Content-Type``.
        limit: Most bytes accepted.
    """

    def __init__(self, url: str, *, status: int, content_type: str, limit: int) -> None:
        self._url = url
        self._status = status
        self._content_type = content_type
        self._limit = limit
        self._chunks: list[bytes] = []
        self._size = 0
        self._announced: Optional[int] = None

    def check_headers(self, content_length: Optional[str], content_encoding: Optional[str] = None) -> None:
        """Refuse, before reading any of it, a body announced too large or encoded.

        The extension never compresses; an encoded answer (a gzip bomb, say) is refused
        rather than inflated.
        """
        length = (content_length or "").strip()
        if re.fullmatch(r"[0-9]{1,30}", length):
            self._announced = int(length)
        if self._announced is not None and self._announced > self._limit:
            raise unavailable(
                f"{self._url} answered HTTP {self._status} with a {int(length)}-byte body; a token "
                f"response is a few KiB, so this is not the legacy endpoint (limit {self._limit} bytes)",
                status_code=self._status,
            )
        encoding = (content_encoding or "").strip().lower()
        if encoding not in ("", "identity"):
            raise unavailable(
                f"{self._url} answered HTTP {self._status} with a {clean_text(encoding, 40)!r}-encoded body; the "
                "legacy endpoint never encodes its answers, so this is not it",
                status_code=self._status,
            )

    def feed(self, chunk: bytes) -> None:
        """Take one chunk."""
        self._size += len(chunk)
        if self._size > self._limit:
            raise unavailable(
                f"{self._url} sent more than {self._limit} bytes; a token response is a few KiB, "
                "so this is not the legacy endpoint",
                status_code=self._status,
            )
        self._chunks.append(chunk)

    @property
    def cut_short(self) -> Optional[str]:
        """How the body fell short of its ``Content-Length``, or None when it did not.

        urllib3 2 raises on a short body itself; urllib3 1.26 does not, so it is checked here
        for both alike.
        """
        if self._announced is not None and self._size < self._announced:
            return f"the answer ended after {self._size} of the {self._announced} bytes it announced"
        return None

    def answer(self) -> Answer:
        """Everything received."""
        return Answer(self._status, self._content_type, b"".join(self._chunks))
