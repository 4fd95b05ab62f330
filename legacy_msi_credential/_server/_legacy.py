"""The legacy protocol, server side: a request to "a token for this resource and identity",
or a refusal from the extension's error table. No I/O.

Both servers of this package stand on these rules: the emulator (a test tool that mints
tokens and plays faults) and the bridge (a service that hands on tokens from a real
source). Each makes a :class:`~._rules.Request` of the request as it parsed it (with its
:func:`parameters` and whether the connection's peer is loopback) and gets back from
:data:`LEGACY` a :class:`TokenAsk` or a :class:`~._rules.Refusal`. The rules are a table of
named checks (:data:`LEGACY_RULES`, after :data:`~._rules.ADMIT`), each a small function of
the request and the server's :class:`Policy`; what to answer a :class:`TokenAsk` with is the
application's business, :func:`token_answer` shapes it.
"""

from __future__ import annotations

import ipaddress
import json
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Optional, Union
from urllib.parse import parse_qsl, urlsplit

from .._constants import IDENTITY_ALIASES, IDENTITY_PARAMETERS, IMDS_TOKEN_PATH, SETTINGS_FILE_MODE, TOKEN_PATH
from .._text import clean_text
from ._binding import Listeners, bind_listeners
from ._rules import ADMIT, Refusal, Request, Rule, RuleTable, first_refusal
from ._safe_file import WrittenFile, write_file

#: Identity parameters real clients send; ``mi_res_id`` is @azure/ms-rest-nodeauth's name for ``msi_res_id``.
IDENTITY_NAMES = (*IDENTITY_PARAMETERS, *IDENTITY_ALIASES)
#: Parameters the extension tolerated besides those (sent by clients of the 2017 preview and by IMDS clients).
TOLERATED_PARAMETERS = frozenset(("resource", "api-version", "authority", "grant_type", "bypass_cache"))
#: Every parameter a request may carry, as a refusal names them.
ACCEPTED_PARAMETERS = (*IDENTITY_NAMES, *sorted(TOLERATED_PARAMETERS))
#: What the extension relayed from Azure AD for a resource it does not know.
INVALID_RESOURCE = (
    "AADSTS50001: The application named {resource} was not found in the tenant named {tenant}. "
    "This can happen if the application has not been installed by the administrator of the tenant."
)
#: What the Windows extension answers for a resource Azure AD does not know (500 ``unknown``).
WINDOWS_UNKNOWN = (
    "Failed to retrieve token from the Active directory. For details see logs in "
    "C:\\WindowsAzure\\Logs\\Plugins\\Microsoft.ManagedIdentity.ManagedIdentityExtensionForWindows"
    "\\1.0.0.0\\MsiExtension.log"
)


@dataclass(frozen=True)
class TokenAsk:
    """A request the rules accept: a token for ``resource`` and an identity.

    Attributes:
        resource: The resource, as sent.
        parameter: ``client_id``, ``object_id`` or ``msi_res_id`` (``mi_res_id`` folded into
            it), or None for the system-assigned identity.
        value: The identity's identifier, as sent.
        imds: Asked on IMDS's token path (the emulator's IMDS role).
    """

    resource: str
    parameter: Optional[str] = None
    value: Optional[str] = None
    imds: bool = False

    @property
    def identity_kind(self) -> str:
        """For logs: ``system-assigned`` or the parameter's name (never the identifier)."""
        return self.parameter or "system-assigned"


@dataclass(frozen=True)
class Policy:
    """What a server on these rules accepts, beyond the protocol itself.

    Attributes:
        accept_get: Accept GET (the extension did; a POST-only mode rehearses old clients).
        serves_imds: Answer IMDS's token path too.
        windows: Answer a resource Azure AD does not know as the Windows extension did.
        tenant_id: Named in the ``invalid_resource`` description.
        refuse_forwarded: Refuse requests relayed by a proxy (any of :data:`~._rules.RELAY_HEADERS`).
        browser_proof: Refuse what a web browser sends: a ``Host`` that is not loopback
            (DNS rebinding) and requests that carry ``Origin``, ``Sec-Fetch-Site``,
            ``Sec-Fetch-Dest`` or ``Sec-Fetch-User`` (:data:`~._rules.BROWSER_HEADERS`), which no
            token client sends.
        known_resources: Answer only resources Azure AD knows (:func:`known_resource`), these
            custom ones besides, as the extension relays Azure AD's refusal of the others;
            ``None`` accepts any well-formed resource (the bridge: its source judges).
    """

    accept_get: bool = True
    serves_imds: bool = False
    windows: bool = False
    tenant_id: str = "00000000-0000-0000-0000-000000000000"
    refuse_forwarded: bool = False
    browser_proof: bool = False
    known_resources: Optional[frozenset[str]] = None


def parameters(query: str, method: str, content_type: str, body: bytes) -> dict[str, list[str]]:
    """The request's parameters: the query's, and a form POST's body's, each with all its values.

    Raises:
        Refusal: The request has a body that is not a form POST's (a GET's, a JSON document):
            it is not read for parameters, so it is refused rather than ignored, since an
            identity parameter in it would otherwise be lost and the request answered for the
            system-assigned identity.
    """
    pairs = parse_qsl(query, keep_blank_values=True)
    if method == "POST" and content_type.split(";")[0].strip().lower() == "application/x-www-form-urlencoded":
        pairs += parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
    elif body:
        raise Refusal(
            400,
            "invalid_request",
            "A request body is read only as a form POST (Content-Type: application/x-www-form-urlencoded); "
            "send the parameters in the query string or as such a form.",
        )
    found: dict[str, list[str]] = {}
    for name, value in pairs:
        found.setdefault(name, []).append(value)
    return found


def _path(request: Request, policy: Policy) -> Optional[Refusal]:
    path = request.path
    if path != TOKEN_PATH and not _on_imds_path(request, policy):
        return Refusal(401, "unknown_source", f"Unknown Source: the request URI {path!r} is not /oauth2/token.")
    return None


def _on_imds_path(request: Request, policy: Policy) -> bool:
    return policy.serves_imds and request.path == IMDS_TOKEN_PATH


def _metadata_header(request: Request, policy: Policy) -> Optional[Refusal]:
    if request.header("Metadata") != "true":
        return Refusal(400, "bad_request_102", "Required metadata header not specified or not correct")
    return None


def _method(request: Request, policy: Policy) -> Optional[Refusal]:
    method = request.method
    if method not in ("GET", "POST") or (method == "GET" and not policy.accept_get):
        allowed = "GET, POST" if policy.accept_get else "POST"
        return Refusal(405, "method_not_allowed", f"The method {method} is not allowed.", {"Allow": allowed})
    return None


def _parameters_once(request: Request, policy: Policy) -> Optional[Refusal]:
    repeated = request.repeated_params()
    if repeated:
        return Refusal(401, "invalid_request", f"Parameter repeated: {', '.join(repeated)}.")
    return None


def _imds_api_version(request: Request, policy: Policy) -> Optional[Refusal]:
    if _on_imds_path(request, policy) and not request.params.get("api-version"):
        return Refusal(400, "invalid_request", "Required query variable 'api-version' is missing")
    return None


def _resource_given(request: Request, policy: Policy) -> Optional[Refusal]:
    if not request.param("resource"):
        return Refusal(400, "invalid_resource", "Required parameter 'resource' is missing.")
    return None


def _known_parameters(request: Request, policy: Policy) -> Optional[Refusal]:
    unknown = unknown_parameters(request.params)
    if unknown:
        # Never fall back to another identity for a parameter this endpoint does not know.
        accepted = ", ".join(ACCEPTED_PARAMETERS)
        return Refusal(
            400, "invalid_request", f"Unknown parameter {clean_text(unknown[0], 60)!r}; accepted: {accepted}."
        )
    return None


def _identity_names(request: Request) -> list[str]:
    """The identity parameters the request names, in :data:`IDENTITY_NAMES`' order."""
    return [name for name in IDENTITY_NAMES if name in request.params]


def _identity_not_empty(request: Request, policy: Policy) -> Optional[Refusal]:
    empty = [name for name in _identity_names(request) if not request.param(name).strip()]
    if empty:
        return Refusal(400, "invalid_request", f"Parameter {empty[0]!r} is empty.")
    return None


def _one_identity(request: Request, policy: Policy) -> Optional[Refusal]:
    if len(_identity_names(request)) > 1:
        return Refusal(401, "invalid_request", "Only one of client_id, object_id and msi_res_id may be given.")
    return None


def _resource_known(request: Request, policy: Policy) -> Optional[Refusal]:
    resource = request.param("resource")
    if valid_resource(resource) and known_resource(resource, policy.known_resources):
        return None
    if policy.windows:
        return Refusal(500, "unknown", WINDOWS_UNKNOWN)
    return Refusal(400, "invalid_resource", INVALID_RESOURCE.format(resource=resource, tenant=policy.tenant_id))


def _ask(request: Request, policy: Policy) -> TokenAsk:
    """What a request every row passed asks for."""
    named = _identity_names(request)
    parameter = named[0] if named else None
    value = request.param(parameter) if parameter else None
    return TokenAsk(
        request.param("resource"),
        IDENTITY_ALIASES.get(parameter or "", parameter),
        value,
        _on_imds_path(request, policy),
    )


def _answer(ask: TokenAsk, token: str, expires_on: int, now: int, client_id: str) -> dict[str, str]:
    return token_answer(ask, token, expires_on, now, client_id=client_id)


#: The extension's rules, after :data:`~._rules.ADMIT`'s, in the order it applied them:
#: the first that refuses answers.
LEGACY_RULES: tuple[Rule[Policy], ...] = (
    Rule("token path", _path),
    Rule("Metadata: true", _metadata_header),
    Rule("method", _method),
    Rule("each parameter once", _parameters_once),
    Rule("api-version on IMDS's path", _imds_api_version),
    Rule("resource given", _resource_given),
    Rule("known parameters only", _known_parameters),
    Rule("identity not empty", _identity_not_empty),
    Rule("one identity at most", _one_identity),
    Rule("resource Azure AD knows", _resource_known),
)
#: The legacy protocol: admission, then the extension's rules; an accepted request is a :class:`TokenAsk`.
LEGACY: RuleTable[Policy, TokenAsk] = RuleTable("legacy", (*ADMIT, *LEGACY_RULES), _ask, _answer)


def admit(request: Request, policy: Policy) -> Optional[Refusal]:
    """Whether a server may answer this request at all, whatever its path: None, or why not
    (:data:`~._rules.ADMIT`). A server applies it before it dispatches; :func:`decide` applies it too."""
    return first_refusal(ADMIT, request, policy)


def decide(request: Request, policy: Policy) -> Union[TokenAsk, Refusal]:
    """What the extension would do with a request: ask for a token, or refuse it (:data:`LEGACY`)."""
    return LEGACY.decide(request, policy)


def unknown_parameters(params: Mapping[str, Sequence[str]]) -> list[str]:
    """The names, sorted, of a request's parameters that are neither an identity parameter nor a
    tolerated one.

    An allow-list, compared exactly: what real clients send is known (``client_id``,
    ``object_id``, ``msi_res_id``, ``mi_res_id``, and ``resource``, ``api-version`` and the
    2017 preview's extras), and anything else may be a misspelled or decorated identity
    parameter (``client_id[]``, ``identity_name``, ``Client_ID``) whose request, read without
    it, would get the system-assigned identity's token.
    """
    return sorted(name for name in params if name not in IDENTITY_NAMES and name not in TOLERATED_PARAMETERS)


def _is_guid(text: str) -> bool:
    """Whether ``text`` is an application ID (a GUID, in any of the forms ``uuid`` reads)."""
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def valid_resource(resource: str) -> bool:
    """Whether Azure AD could know ``resource``: an absolute URI or an application ID."""
    if any(char.isspace() for char in resource) or resource.rstrip("/").endswith("/.default"):
        return False
    if _is_guid(resource):
        return True
    parts = urlsplit(resource)
    return bool(parts.scheme) and (bool(parts.netloc) or parts.scheme in ("api", "urn"))


#: Resource URIs Azure AD knows in every tenant (public cloud, US Government, China), by host;
#: a resource is one of them with no path (a trailing ``/`` aside).
WELL_KNOWN_RESOURCE_HOSTS = frozenset(
    (
        "management.azure.com", "management.core.windows.net", "vault.azure.net", "managedhsm.azure.net",
        "storage.azure.com", "database.windows.net", "ossrdbms-aad.database.windows.net",
        "graph.microsoft.com", "graph.windows.net", "servicebus.azure.net", "eventhubs.azure.net",
        "cosmos.azure.com", "api.loganalytics.io", "monitor.azure.com", "digitaltwins.azure.net",
        "batch.core.windows.net", "datalake.azure.net", "cognitiveservices.azure.com", "appconfig.azure.com",
        "attest.azure.net", "search.azure.com", "kusto.kusto.windows.net", "api.applicationinsights.io",
        "management.usgovcloudapi.net", "management.core.usgovcloudapi.net", "vault.usgovcloudapi.net",
        "database.usgovcloudapi.net", "graph.microsoft.us", "storage.azure.us",
        "management.chinacloudapi.cn", "management.core.chinacloudapi.cn", "vault.azure.cn",
        "database.chinacloudapi.cn", "microsoftgraph.chinacloudapi.cn", "storage.azure.cn",
    )
)  # fmt: skip
#: Services whose resources are named by the instance: ``https://ACCOUNT.blob.core.windows.net``,
#: ``https://NAME.vault.azure.net``; one label before these suffixes.
WELL_KNOWN_RESOURCE_SUFFIXES = (
    *(
        f".{service}.{core}"
        for core in ("core.windows.net", "core.usgovcloudapi.net", "core.chinacloudapi.cn")
        for service in ("blob", "queue", "table", "file", "dfs", "web")
    ),
    ".vault.azure.net", ".managedhsm.azure.net", ".servicebus.windows.net",
    ".documents.azure.com", ".database.windows.net", ".kusto.windows.net", ".azconfig.io",
    ".cognitiveservices.azure.com", ".search.windows.net", ".azurecr.io", ".azuresynapse.net",
    ".vault.usgovcloudapi.net", ".vault.azure.cn",
)  # fmt: skip


def known_resource(resource: str, custom: Optional[frozenset[str]]) -> bool:
    """Whether Azure AD knows ``resource`` in any tenant: a well-known resource URI, an instance
    of a well-known service, an application ID (a GUID), an ``api://`` URI, or one of ``custom``.
    ``custom`` None: every resource is taken as known. A typo (``vault.azure.nte``,
    ``/.defualt``) is not: Azure AD refuses it, and so does the emulator."""
    if custom is None:
        return True
    if resource.rstrip("/") in {known.rstrip("/") for known in custom} or _is_guid(resource):
        return True
    parts = urlsplit(resource)
    if parts.scheme == "api":
        return True
    if parts.scheme != "https" or parts.path not in ("", "/") or parts.query or parts.port is not None:
        return False
    host = (parts.hostname or "").lower()
    if host in WELL_KNOWN_RESOURCE_HOSTS:
        return True
    return any(host.endswith(suffix) and "." not in host[: -len(suffix)] for suffix in WELL_KNOWN_RESOURCE_SUFFIXES)


def token_answer(
    ask: TokenAsk, token: str, expires_on: int, now: int, *, not_before: Optional[int] = None, client_id: str = ""
) -> dict[str, str]:
    """The extension's 200 answer: every number a string of seconds, ``expires_in`` counting down.

    A user-assigned answer (and every IMDS answer) names its ``client_id``, as the
    documentation's example does.
    """
    answer = {
        "access_token": token,
        "refresh_token": "",
        "expires_in": str(max(0, expires_on - now)),
        "expires_on": str(expires_on),
        "not_before": str(not_before if not_before is not None else now),
        "resource": ask.resource,
        "token_type": "Bearer",
    }
    name_the_identity(ask, answer, client_id)
    return answer


def name_the_identity(ask: TokenAsk, answer: dict[str, str], client_id: str) -> None:
    """A user-assigned answer (and every IMDS answer) names its ``client_id``, unless it already
    does; an IMDS answer also carries ``ext_expires_in``."""
    if ask.imds or ask.parameter is not None:
        answer.setdefault("client_id", client_id)
    if ask.imds:
        answer["ext_expires_in"] = answer["expires_in"]


class Listening:
    """Where a server of the protocol (the emulator, the bridge) listens: its URLs and the
    extension's settings file that points at it. A server sets ``_host``, ``_requested_port``
    and ``_allow_remote``, and defines ``port``."""

    _host: str
    _requested_port: int
    _allow_remote: bool

    def _bind(self, *, ipv6_loopback: bool, backlog: int) -> Listeners:
        """Bind every address the server means to serve, all on one port, or none.

        Raises:
            AddressInUseError: Another process holds the port on an address to serve (on
                ``::1`` too with the default host); the message names it and what to do.
            ValueError: ``host`` resolved to an address that is not loopback.
        """
        return bind_listeners(
            self._host,
            self._requested_port,
            ipv6_loopback=ipv6_loopback,
            allow_remote=self._allow_remote,
            backlog=backlog,
            server=type(self).__name__,
        )

    @property
    def port(self) -> int:  # pragma: no cover - each server defines it
        raise NotImplementedError

    @property
    def base_url(self) -> str:
        """``http://host:port/``, what the extension's settings file holds."""
        return base_url(self._host, self.port)

    @property
    def endpoint(self) -> str:
        """The token URL: what ``LegacyMsiCredential(endpoint=...)`` takes."""
        return self.base_url.rstrip("/") + TOKEN_PATH

    def write_settings(self, path: str | os.PathLike[str]) -> str:
        """Write the extension's settings file for this server's port; return its path.

        As the extension does for its ``{"port": N}`` setting: the base URL, on ``localhost``
        when bound to 127.0.0.1. Written whole and at once, never through a link, readable
        by every local user (:meth:`publish_settings`).
        """
        return self.publish_settings(path).path

    def publish_settings(self, path: str | os.PathLike[str]) -> WrittenFile:
        """Write the settings file as :meth:`write_settings` does; return what was written,
        whose :meth:`~WrittenFile.remove` removes it only while it is still this file.

        Credentials read the file at any moment and keep what they read, so it goes to a
        new file renamed over ``path``; a link at ``path`` is replaced, not followed.

        Raises:
            UnsafeFolderError: Other users could replace the file in that folder.
            WriteError: It could not be written (the message names the path and why).
        """
        document = json.dumps(settings_document(self._host, self.port)).encode("utf-8")
        return write_file(path, document, mode=SETTINGS_FILE_MODE, what="the extension's settings file")


def base_url(host: str, port: int) -> str:
    """``http://host:port/`` for a server bound to ``host`` (an IPv6 address in brackets); for
    one bound to every address (``0.0.0.0``, ``::``), ``localhost``: a URL a client can use,
    as the settings file says, not the unspecified address, which no client can connect to."""
    if _unspecified(host):
        return f"http://localhost:{port}/"
    bracketed = f"[{host.strip('[]')}]" if ":" in host else host
    return f"http://{bracketed}:{port}/"


def _unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:  # a name
        return False


def settings_document(host: str, port: int) -> dict[str, str]:
    """The extension's settings file for a server on ``host`` and ``port``: its base URL, on
    ``localhost`` when bound to 127.0.0.1, as the extension writes it for its ``{"port": N}``,
    and when bound to every address (``0.0.0.0``, ``::``), loopback among them: a credential
    refuses the unspecified address itself."""
    name = "localhost" if host == "127.0.0.1" else base_url(host, port).split("//", 1)[1].rsplit(":", 1)[0]
    return {"url": f"http://{name}:{port}/"}
