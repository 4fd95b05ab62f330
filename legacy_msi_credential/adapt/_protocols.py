"""Today's managed identity protocols, server side: App Service's (2019-08-01) and IMDS's. No I/O.

Each protocol is a table of named checks. A check takes a :class:`Request` (a small frozen
record of what arrived: method, path, parameters with every value, headers with every
occurrence) and returns a :class:`~legacy_msi_credential._server._rules.Refusal` or None; the first
refusal is the answer, and a request every check passes becomes a
:class:`~legacy_msi_credential._server._legacy.TokenAsk`. What the adapter answers a token with is
:func:`app_service_answer` or :func:`imds_answer`, and how a failure of the legacy extension
is answered is :func:`unavailable`.

What the clients send and parse is read from their sources (azure-identity, msal, MSAL Go,
.NET and Java, @azure/identity, msal-node) and seen on the wire; ``docs/adapt.md`` has the
table. The rule every identity check keeps: a parameter that is unknown, repeated, empty or
one of two is a ``400``, never the system-assigned identity's token.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Callable, Optional, Union

from .._constants import IMDS_TOKEN_PATH
from .._server._legacy import TokenAsk, valid_resource
from .._server._rules import Refusal
from .._text import clean_text

#: Where the adapter serves App Service's protocol (what ``IDENTITY_ENDPOINT`` names). App
#: Service's own endpoint is ``http://169.254.129.x:8081/msi/token``; clients take the whole URL.
APP_SERVICE_PATH = "/msi/token"
#: The only version of App Service's protocol the clients send that this serves.
APP_SERVICE_API_VERSION = "2019-08-01"
#: The header App Service's protocol carries its secret in.
SECRET_HEADER = "x-identity-header"
#: The parameter a client names each kind of identity with, per protocol, and the legacy
#: extension's name for it (what the adapter asks the extension). ``principal_id`` is the
#: object ID under App Service's older name (MSAL .NET and Java send it).
APP_SERVICE_IDENTITIES = {
    "client_id": "client_id",
    "object_id": "object_id",
    "principal_id": "object_id",
    "mi_res_id": "msi_res_id",
    "msi_res_id": "msi_res_id",
}
IMDS_IDENTITIES = {"client_id": "client_id", "object_id": "object_id", "msi_res_id": "msi_res_id"}
#: Every other parameter each protocol accepts.
APP_SERVICE_OTHERS = frozenset(("api-version", "resource"))
IMDS_OTHERS = frozenset(("api-version", "resource"))

#: What a refusal says when the extension failed: clients map a ``400`` to "unavailable" at once,
#: where a ``5xx``, ``404``, ``410`` or ``429`` sets off their retries (5 to 20 s, or 70 s for 410).
UNAVAILABLE_STATUS = 400


@dataclass(frozen=True)
class Request:
    """What arrived, as the checks see it.

    Attributes:
        method: The request method.
        path: The request path, as sent (before any tolerance).
        params: Each parameter with every value it was given, in order of arrival.
        headers: Each header (name in lower case) with every value it was given.
    """

    method: str
    path: str
    params: tuple[tuple[str, tuple[str, ...]], ...] = ()
    headers: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @classmethod
    def of(
        cls, method: str, path: str, params: Mapping[str, Sequence[str]], headers: Sequence[tuple[str, str]]
    ) -> Request:
        """A record from parsed parameters and the raw header list (name, value) pairs."""
        found: dict[str, list[str]] = {}
        for name, value in headers:
            found.setdefault(name.lower(), []).append(value)
        return cls(
            method,
            path,
            tuple((name, tuple(values)) for name, values in params.items()),
            tuple((name, tuple(values)) for name, values in found.items()),
        )

    def param(self, name: str) -> tuple[str, ...]:
        """Every value of the parameter ``name`` (exact, case-sensitive), in order."""
        return next((values for key, values in self.params if key == name), ())

    def header(self, name: str) -> tuple[str, ...]:
        """Every value of the header ``name`` (any case), in order."""
        lowered = name.lower()
        return next((values for key, values in self.headers if key == lowered), ())


@dataclass(frozen=True)
class Protocol:
    """One protocol: its name, its checks in order, and its identity parameters.

    Attributes:
        name: ``app-service`` or ``imds`` (for logs and the health path).
        checks: ``(name, check)`` pairs, applied in order; the first refusal is the answer.
        identities: Each identity parameter the protocol takes, and the legacy name it is asked as.
        others: The protocol's other parameters.
    """

    name: str
    checks: tuple[tuple[str, Callable[[Request, bytes], Optional[Refusal]]], ...]
    identities: Mapping[str, str]
    others: frozenset[str]

    def decide(self, request: Request, secret: bytes) -> Union[TokenAsk, Refusal]:
        """The request's answer: the first check's refusal, or what to ask the extension for."""
        for _name, check in self.checks:
            refused = check(request, secret)
            if refused is not None:
                return refused
        named = [name for name in self.identities if request.param(name)]
        parameter = named[0] if named else None
        value = request.param(parameter)[0] if parameter else None
        legacy = self.identities[parameter] if parameter else None
        return TokenAsk(request.param("resource")[0], legacy, value, imds=self is IMDS)


# --- the checks ----------------------------------------------------------------------------
# Each: a Request and the secret in, a Refusal or None out. Named for what they refuse.


def _get_only(request: Request, secret: bytes) -> Optional[Refusal]:
    if request.method != "GET":
        return Refusal(
            405, "method_not_allowed", f"The method {clean_text(request.method, 20)} is not allowed.", {"Allow": "GET"}
        )
    return None


def _secret_header(request: Request, secret: bytes) -> Optional[Refusal]:
    """App Service's secret, once, equal to the adapter's (compared in constant time). A ``401``
    tells every client "unavailable" at once; the description never repeats what was sent."""
    values = request.header(SECRET_HEADER)
    if len(values) > 1:
        return Refusal(400, "invalid_request", "The X-IDENTITY-HEADER header is repeated.")
    if not values:
        return Refusal(401, "unauthorized_client", "The X-IDENTITY-HEADER header is missing.")
    if not hmac.compare_digest(values[0].encode("utf-8", "surrogateescape"), secret):
        return Refusal(401, "unauthorized_client", "The X-IDENTITY-HEADER header is not this adapter's secret.")
    return None


def _metadata_header(request: Request, secret: bytes) -> Optional[Refusal]:
    """IMDS's header: ``Metadata: true``, once (IMDS's own refusal, word for word)."""
    if request.header("metadata") != ("true",):
        return Refusal(400, "bad_request", "Required metadata header not specified")
    return None


def _no_repeated_parameter(request: Request, secret: bytes) -> Optional[Refusal]:
    repeated = sorted(name for name, values in request.params if len(values) > 1)
    if repeated:
        return Refusal(400, "invalid_request", f"Parameter repeated: {clean_text(', '.join(repeated), 120)}.")
    return None


def _api_version(expected: Optional[str]) -> Callable[[Request, bytes], Optional[Refusal]]:
    def check(request: Request, secret: bytes) -> Optional[Refusal]:
        version = request.param("api-version")
        if not version or not version[0]:
            return Refusal(400, "invalid_request", "Required query variable 'api-version' is missing")
        if expected is not None and version[0] != expected:
            return Refusal(
                400, "invalid_request", f"api-version {clean_text(version[0], 40)!r} is not served; send {expected}."
            )
        return None

    return check


def _known_parameters(
    identities: Mapping[str, str], others: frozenset[str]
) -> Callable[[Request, bytes], Optional[Refusal]]:
    """An allow-list, compared exactly: an unknown name may be a misspelled identity parameter
    (``Client_ID``, ``client_id[]``) whose request, read without it, would get the system
    identity's token."""
    accepted = ", ".join((*identities, *sorted(others)))

    def check(request: Request, secret: bytes) -> Optional[Refusal]:
        unknown = sorted(name for name, _values in request.params if name not in identities and name not in others)
        if unknown:
            return Refusal(
                400, "invalid_request", f"Unknown parameter {clean_text(unknown[0], 60)!r}; accepted: {accepted}."
            )
        return None

    return check


def _one_identity(identities: Mapping[str, str]) -> Callable[[Request, bytes], Optional[Refusal]]:
    def check(request: Request, secret: bytes) -> Optional[Refusal]:
        named = [name for name in identities if request.param(name)]
        empty = [name for name in named if not request.param(name)[0].strip()]
        if empty:
            return Refusal(400, "invalid_request", f"Parameter {empty[0]!r} is empty.")
        if len(named) > 1:
            return Refusal(
                400, "invalid_request", f"Only one identity parameter may be given, not {' and '.join(named)}."
            )
        return None

    return check


def _resource(request: Request, secret: bytes) -> Optional[Refusal]:
    resource = request.param("resource")
    if not resource or not resource[0]:
        return Refusal(400, "invalid_request", "Required parameter 'resource' is missing.")
    if not valid_resource(resource[0]):
        return Refusal(
            400, "invalid_resource", f"The resource {clean_text(resource[0], 200)!r} is not a URI or an application ID."
        )
    return None


APP_SERVICE = Protocol(
    "app-service",
    (
        ("get only", _get_only),
        ("secret header", _secret_header),
        ("no repeated parameter", _no_repeated_parameter),
        ("api-version 2019-08-01", _api_version(APP_SERVICE_API_VERSION)),
        ("known parameters", _known_parameters(APP_SERVICE_IDENTITIES, APP_SERVICE_OTHERS)),
        ("one identity", _one_identity(APP_SERVICE_IDENTITIES)),
        ("resource", _resource),
    ),
    APP_SERVICE_IDENTITIES,
    APP_SERVICE_OTHERS,
)
IMDS = Protocol(
    "imds",
    (
        ("get only", _get_only),
        ("metadata header", _metadata_header),
        ("no repeated parameter", _no_repeated_parameter),
        ("api-version", _api_version(None)),
        ("known parameters", _known_parameters(IMDS_IDENTITIES, IMDS_OTHERS)),
        ("one identity", _one_identity(IMDS_IDENTITIES)),
        ("resource", _resource),
    ),
    IMDS_IDENTITIES,
    IMDS_OTHERS,
)


def tolerated_path(path: str) -> str:
    """The path as the protocols read it: MSAL for Java 1.17's leading ``//`` made one, and
    msal-node's trailing ``/`` dropped. Nothing else is normalised (no ``..``, no case)."""
    return re.sub(r"^/+", "/", path).rstrip("/") if path not in ("", "/") else path


def protocol_for(path: str) -> Optional[Protocol]:
    """Which protocol a path is served by, or None (a 404)."""
    tolerated = tolerated_path(path)
    if tolerated == APP_SERVICE_PATH:
        return APP_SERVICE
    if tolerated == IMDS_TOKEN_PATH:
        return IMDS
    return None


def decide(request: Request, secret: bytes) -> Union[TokenAsk, Refusal]:
    """The adapter's answer to a request: a refusal, or what to ask the extension for."""
    protocol = protocol_for(request.path)
    if protocol is None:
        return Refusal(
            404,
            "not_found",
            f"Unknown path {clean_text(request.path, 100)!r}: App Service's protocol is served at "
            f"{APP_SERVICE_PATH}, IMDS's at {IMDS_TOKEN_PATH}.",
        )
    return protocol.decide(request, secret)


# --- the answers ---------------------------------------------------------------------------


def app_service_answer(ask: TokenAsk, token: str, expires_on: int, *, client_id: str) -> dict[str, str]:
    """App Service's 200 answer: ``expires_on`` in integer epoch seconds as a string of digits
    (msal Python reads it with ``int``, MSAL4J with ``Long.parseLong``: never a date)."""
    return {
        "access_token": token,
        "expires_on": str(int(expires_on)),
        "resource": ask.resource,
        "token_type": "Bearer",
        "client_id": client_id,
    }


def imds_answer(ask: TokenAsk, token: str, expires_on: int, now: int, *, client_id: str) -> dict[str, str]:
    """IMDS's 200 answer: ``expires_in`` (msal Python, azure-identity) and ``expires_on`` (msal-node,
    MSAL .NET and Java) both, ``ext_expires_in``, ``not_before``; no ``refresh_token``."""
    expires_in = str(max(0, int(expires_on) - now))
    return {
        "access_token": token,
        "client_id": client_id,
        "expires_in": expires_in,
        "expires_on": str(int(expires_on)),
        "ext_expires_in": expires_in,
        "not_before": str(now),
        "resource": ask.resource,
        "token_type": "Bearer",
    }


def answer(ask: TokenAsk, token: str, expires_on: int, now: int, *, client_id: str) -> dict[str, str]:
    """The 200 answer in the shape of the protocol ``ask`` came by."""
    if ask.imds:
        return imds_answer(ask, token, expires_on, now, client_id=client_id)
    return app_service_answer(ask, token, expires_on, client_id=client_id)


def unavailable(refusal: Refusal) -> Refusal:
    """How a failure of the legacy extension is answered: ``400`` with its description.

    A ``5xx`` (or a ``401`` for an identity the extension does not have) from the extension
    would set off the clients' retries, or stop azure-identity's chain as an authentication
    failure; a ``400`` is "unavailable" to every client read (``docs/adapt.md``), answered at
    once. A ``429`` (the adapter's own gate) and a ``503`` (the adapter is stopping) are kept:
    asking again soon is right for them.
    """
    if refusal.status in (429, 503):
        return refusal
    return Refusal(
        UNAVAILABLE_STATUS,
        "unavailable",
        f"The legacy managed identity extension could not provide a token: {refusal.description}",
    )
