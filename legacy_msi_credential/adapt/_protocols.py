"""Today's managed identity protocols, server side: App Service's (2019-08-01) and IMDS's. No I/O.

Each protocol is a :class:`~legacy_msi_credential._server._rules.RuleTable` on the server
core, as the legacy protocol is (``_server._legacy.LEGACY``): rows of named checks over the
core's request record, starting with :data:`~legacy_msi_credential._server._rules.ADMIT`,
then the protocol's own; the first refusal is the answer, and a request every row passes
becomes a :class:`~legacy_msi_credential._server._legacy.TokenAsk`. The rows read an
:class:`AdaptSettings` (the secret, and what ``ADMIT`` reads). What the adapter answers a
token with is the table's ``answer`` (:func:`app_service_answer`, :func:`imds_answer`), and
how a failure of the legacy extension is answered is :func:`unavailable`.

What the clients send and parse is read from their sources (azure-identity, msal, MSAL Go,
.NET and Java, @azure/identity, msal-node) and seen on the wire; ``docs/adapt.md`` has the
table. The rule every identity check keeps: a parameter that is unknown, repeated, empty or
one of two is a ``400``, never the system-assigned identity's token.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

from .._constants import IMDS_TOKEN_PATH
from .._server._legacy import TokenAsk, valid_resource
from .._server._rules import ADMIT, Refusal, Request, Rule, RuleTable, first_refusal
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
class AdaptSettings:
    """What the adapter's rows read: its secret, and the admission policy (:data:`ADMIT`'s).

    Attributes:
        secret: The secret's bytes, ``X-IDENTITY-HEADER``'s expected value (never shown by
            ``repr``, never pickled).
        refuse_forwarded: Refuse requests relayed by a proxy.
        browser_proof: Refuse what a web browser sends.
    """

    secret: bytes = field(repr=False)
    refuse_forwarded: bool = True
    browser_proof: bool = True

    def __reduce__(self) -> Any:
        raise TypeError("the adapter's settings hold its secret and are not pickled")


Check = Callable[[Request, AdaptSettings], Optional[Refusal]]


def sent_path(request: Request) -> str:
    """The request's path as sent: the target up to its query. Not ``Request.path``, which reads
    the target as a URL: MSAL for Java's ``//metadata/...`` would be a host there."""
    return request.target.split("?", 1)[0]


# --- the checks ----------------------------------------------------------------------------
# Each: the request record and the settings in, a Refusal or None out. Named for what they refuse.


def _get_only(request: Request, settings: AdaptSettings) -> Optional[Refusal]:
    if request.method != "GET":
        return Refusal(
            405, "method_not_allowed", f"The method {clean_text(request.method, 20)} is not allowed.", {"Allow": "GET"}
        )
    return None


def _secret_header(request: Request, settings: AdaptSettings) -> Optional[Refusal]:
    """App Service's secret, once, equal to the adapter's (compared in constant time). A ``401``
    tells every client "unavailable" at once; the description never repeats what was sent."""
    if request.header_count(SECRET_HEADER) > 1:
        return Refusal(400, "invalid_request", "The X-IDENTITY-HEADER header is repeated.")
    value = request.header(SECRET_HEADER)
    if value is None:
        return Refusal(401, "unauthorized_client", "The X-IDENTITY-HEADER header is missing.")
    if not hmac.compare_digest(value.encode("utf-8", "surrogateescape"), settings.secret):
        return Refusal(401, "unauthorized_client", "The X-IDENTITY-HEADER header is not this adapter's secret.")
    return None


def _metadata_header(request: Request, settings: AdaptSettings) -> Optional[Refusal]:
    """IMDS's header: ``Metadata: true``, once (IMDS's own refusal, word for word)."""
    if request.header_count("Metadata") != 1 or request.header("Metadata") != "true":
        return Refusal(400, "bad_request", "Required metadata header not specified")
    return None


def _no_repeated_parameter(request: Request, settings: AdaptSettings) -> Optional[Refusal]:
    repeated = request.repeated_params()
    if repeated:
        return Refusal(400, "invalid_request", f"Parameter repeated: {clean_text(', '.join(repeated), 120)}.")
    return None


def _api_version(expected: Optional[str]) -> Check:
    def check(request: Request, settings: AdaptSettings) -> Optional[Refusal]:
        version = request.param("api-version")
        if not version:
            return Refusal(400, "invalid_request", "Required query variable 'api-version' is missing")
        if expected is not None and version != expected:
            return Refusal(
                400, "invalid_request", f"api-version {clean_text(version, 40)!r} is not served; send {expected}."
            )
        return None

    return check


def _known_parameters(identities: Mapping[str, str], others: frozenset[str]) -> Check:
    """An allow-list, compared exactly: an unknown name may be a misspelled identity parameter
    (``Client_ID``, ``client_id[]``) whose request, read without it, would get the system
    identity's token."""
    accepted = ", ".join((*identities, *sorted(others)))

    def check(request: Request, settings: AdaptSettings) -> Optional[Refusal]:
        unknown = sorted(name for name in request.params if name not in identities and name not in others)
        if unknown:
            return Refusal(
                400, "invalid_request", f"Unknown parameter {clean_text(unknown[0], 60)!r}; accepted: {accepted}."
            )
        return None

    return check


def _identities_named(request: Request, identities: Mapping[str, str]) -> list[str]:
    """The identity parameters the request names (empty or not), in the protocol's order."""
    return [name for name in identities if name in request.params]


def _one_identity(identities: Mapping[str, str]) -> Check:
    def check(request: Request, settings: AdaptSettings) -> Optional[Refusal]:
        named = _identities_named(request, identities)
        empty = [name for name in named if not request.param(name).strip()]
        if empty:
            return Refusal(400, "invalid_request", f"Parameter {empty[0]!r} is empty.")
        if len(named) > 1:
            return Refusal(
                400, "invalid_request", f"Only one identity parameter may be given, not {' and '.join(named)}."
            )
        return None

    return check


def _resource(request: Request, settings: AdaptSettings) -> Optional[Refusal]:
    resource = request.param("resource")
    if not resource:
        return Refusal(400, "invalid_request", "Required parameter 'resource' is missing.")
    if not valid_resource(resource):
        return Refusal(
            400, "invalid_resource", f"The resource {clean_text(resource, 200)!r} is not a URI or an application ID."
        )
    return None


def _ask(identities: Mapping[str, str], *, imds: bool) -> Callable[[Request, AdaptSettings], TokenAsk]:
    """What a request every row passed asks the extension for: its resource, and the identity
    it names under the extension's name for it."""

    def accept(request: Request, settings: AdaptSettings) -> TokenAsk:
        named = _identities_named(request, identities)
        if not named:
            return TokenAsk(request.param("resource"), imds=imds)
        return TokenAsk(request.param("resource"), identities[named[0]], request.param(named[0]), imds=imds)

    return accept


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


def _app_service_answer(ask: TokenAsk, token: str, expires_on: int, now: int, client_id: str) -> dict[str, str]:
    return app_service_answer(ask, token, expires_on, client_id=client_id)


def _imds_answer(ask: TokenAsk, token: str, expires_on: int, now: int, client_id: str) -> dict[str, str]:
    return imds_answer(ask, token, expires_on, now, client_id=client_id)


# --- the tables ----------------------------------------------------------------------------


def _table(
    name: str,
    header: Rule[AdaptSettings],
    api_version: Rule[AdaptSettings],
    identities: Mapping[str, str],
    others: frozenset[str],
    *,
    imds: bool,
) -> RuleTable[AdaptSettings, TokenAsk]:
    """A protocol's table: admission, then its rows in the order both protocols apply them;
    what differs is the header row, the ``api-version`` row, the identity parameters and the
    answer's shape (IMDS's or App Service's)."""
    rows: tuple[Rule[AdaptSettings], ...] = (
        *ADMIT,
        Rule("get only", _get_only),
        header,
        Rule("no repeated parameter", _no_repeated_parameter),
        api_version,
        Rule("known parameters", _known_parameters(identities, others)),
        Rule("one identity", _one_identity(identities)),
        Rule("resource", _resource),
    )
    return RuleTable(name, rows, _ask(identities, imds=imds), _imds_answer if imds else _app_service_answer)


_SECRET = Rule("secret header", _secret_header)
_APP_SERVICE_VERSION = Rule("api-version 2019-08-01", _api_version(APP_SERVICE_API_VERSION))
_METADATA = Rule("metadata header", _metadata_header)
_ANY_VERSION = Rule("api-version", _api_version(None))
#: App Service's protocol (2019-08-01).
APP_SERVICE = _table(
    "app-service", _SECRET, _APP_SERVICE_VERSION, APP_SERVICE_IDENTITIES, APP_SERVICE_OTHERS, imds=False
)
#: IMDS's protocol.
IMDS = _table("imds", _METADATA, _ANY_VERSION, IMDS_IDENTITIES, IMDS_OTHERS, imds=True)


def tolerated_path(path: str) -> str:
    """The path as the protocols read it: MSAL for Java 1.17's leading ``//`` made one, and
    msal-node's trailing ``/`` dropped. Nothing else is normalised (no ``..``, no case)."""
    return re.sub(r"^/+", "/", path).rstrip("/") if path not in ("", "/") else path


def protocol_for(path: str) -> Optional[RuleTable[AdaptSettings, TokenAsk]]:
    """Which protocol a path (as sent, :func:`sent_path`) is served by, or None (a 404)."""
    tolerated = tolerated_path(path)
    if tolerated == APP_SERVICE_PATH:
        return APP_SERVICE
    if tolerated == IMDS_TOKEN_PATH:
        return IMDS
    return None


def decide(request: Request, settings: AdaptSettings) -> Union[TokenAsk, Refusal]:
    """The adapter's answer to a request: the table its path names decides; an unknown path,
    once admitted, is a ``404``."""
    path = sent_path(request)
    protocol = protocol_for(path)
    if protocol is not None:
        return protocol.decide(request, settings)
    return first_refusal(ADMIT, request, settings) or Refusal(
        404,
        "not_found",
        f"Unknown path {clean_text(path, 100)!r}: App Service's protocol is served at "
        f"{APP_SERVICE_PATH}, IMDS's at {IMDS_TOKEN_PATH}.",
    )


def answer(ask: TokenAsk, token: str, expires_on: int, now: int, *, client_id: str) -> dict[str, str]:
    """The 200 answer in the shape of the protocol ``ask`` came by (its table's ``answer``)."""
    return (IMDS if ask.imds else APP_SERVICE).answer(ask, token, expires_on, now, client_id)


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
