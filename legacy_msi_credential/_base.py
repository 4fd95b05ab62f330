"""Everything the sync and async credentials share; neither sends, awaits nor sleeps here."""

from __future__ import annotations

import abc
import logging
import math
import os
import time
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union, cast
from urllib.parse import urlsplit

from azure.core.credentials import AccessToken, AccessTokenInfo
from azure.core.exceptions import AzureError, ClientAuthenticationError, ServiceRequestError
from azure.core.rest import HttpRequest

from ._cache import CacheEntry, TokenCache
from ._claims import decode_claims, identity_mismatch
from ._constants import CONNECTION_TIMEOUT, FAST_TABLE_MAX, READ_TIMEOUT, RESPONSE_DEADLINE
from ._endpoint import EndpointChoice, SettingsFileError, resolve_endpoint, source_named
from ._errors import (
    CredentialUnavailableError,
    IdentityMismatchError,
    SanitizedCause,
    TokenRequestError,
    fresh_copy,
    unavailable,
)
from ._flight import SingleFlight, Ticket
from ._loopback import is_loopback_host
from ._protocol import Answer, Identity, TokenResult, build_request, parse_response, unreadable, wants_post
from ._retry import RetrySettings, check_seconds
from ._scopes import scopes_to_resource

_LOGGER = logging.getLogger("legacy_msi_credential")


class SafeAccessToken(AccessToken):
    """An ``AccessToken`` whose ``repr`` and ``str`` do not show the token."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"AccessToken(token='<redacted>', expires_on={self.expires_on})"

    __str__ = __repr__


class SafeAccessTokenInfo(AccessTokenInfo):
    """An ``AccessTokenInfo`` whose ``repr`` and ``str`` do not show the token."""

    def __repr__(self) -> str:
        return (
            f"AccessTokenInfo(token='<redacted>', expires_on={self.expires_on}, "
            f"token_type={self.token_type!r}, refresh_on={self.refresh_on})"
        )

    __str__ = __repr__


#: A row of the fast table: until when it may be served (wall clock, monotonic clock), what
#: is served (by ``get_token``, by ``get_token_info``), and the two clocks it is judged by.
FastRow = tuple[float, float, SafeAccessToken, SafeAccessTokenInfo, Callable[[], float], Callable[[], float]]
#: What the twins' fast path reads for scopes it does not remember: a row never fresh
#: whatever its clocks say, so its empty token is never served.
MISS: FastRow = (
    -math.inf,
    -math.inf,
    cast(SafeAccessToken, None),
    cast(SafeAccessTokenInfo, None),
    time.monotonic,
    time.monotonic,
)


@dataclass(frozen=True)
class Settings:
    """A credential's configuration, checked once at construction and never changed.

    ``arguments`` is what the caller passed (a transport left out): a pickled copy is
    rebuilt from it. Everything else is what those arguments mean, typed.
    """

    arguments: Mapping[str, Any]
    identity: Identity
    #: Where tokens are asked for, or, when the extension's settings file is broken, why not.
    endpoint: Union[EndpointChoice, SettingsFileError]
    method: str
    retry: RetrySettings
    #: ``connection_timeout`` and ``read_timeout``, as azure-core's transports read them.
    request_options: Mapping[str, float]
    #: Seconds a whole answer may take, however slowly it trickles.
    response_deadline: float
    #: Plain-http connections must reach a loopback address (checked on the socket).
    require_loopback: bool
    #: Proxies from the environment apply: only to an endpoint that is not loopback.
    trust_env: bool
    clock: Callable[[], float]
    monotonic: Callable[[], float]
    #: A transport passed in (None: each twin makes its own).
    transport: Any
    #: What is left for azure-core's pipeline (``logging_enable``, ``user_agent``, ...).
    pipeline_kwargs: Mapping[str, Any]

    @classmethod
    def build(cls, name: str, arguments: Mapping[str, Any]) -> Settings:
        """Check the arguments of a credential named ``name`` and say what they mean.

        Raises:
            ValueError: An argument that cannot be used, named with its fix.
        """
        for names, usable, must in _FIRST_CHECKS:
            if not all(usable(arguments[name]) for name in names):
                raise ValueError(f"{' and '.join(names)} {must}")
        kwargs = {key: value for key, value in arguments.items() if key not in _PLAIN}
        # In the order the checks ran before this record: the first argument named is the first wrong.
        identity = Identity.from_arguments(arguments["client_id"], arguments["object_id"], arguments["msi_res_id"])
        endpoint = _endpoint_for(name, arguments["endpoint"], arguments["allow_insecure_http"])
        retry = RetrySettings.from_keywords(kwargs, wait_for_endpoint=arguments["wait_for_endpoint"])
        connection_timeout = check_seconds("connection_timeout", kwargs.pop("connection_timeout", CONNECTION_TIMEOUT))
        read_timeout = check_seconds("read_timeout", kwargs.pop("read_timeout", READ_TIMEOUT))
        deadline = check_seconds(
            "response_timeout", kwargs.pop("response_timeout", max(RESPONSE_DEADLINE, read_timeout))
        )
        clock = arguments["clock"]
        return cls(
            arguments={key: value for key, value in arguments.items() if key != "transport"},
            identity=identity,
            endpoint=endpoint,
            method="POST" if arguments["use_post"] else "GET",
            retry=retry,
            request_options={"connection_timeout": connection_timeout, "read_timeout": read_timeout},
            response_deadline=deadline,
            require_loopback=not arguments["allow_insecure_http"],
            trust_env=_proxies_apply(endpoint),
            # A simulated wall clock given alone drives both: the tests' time passes on both clocks.
            clock=clock or time.time,
            monotonic=arguments["monotonic"] or clock or time.monotonic,
            transport=kwargs.pop("transport", None),
            pipeline_kwargs=kwargs,
        )


#: The arguments checked first, in this order: their names, what a usable value passes,
#: and what the message says they must be.
_FIRST_CHECKS: tuple[tuple[tuple[str, ...], Callable[[Any], bool], str], ...] = (
    (("allow_insecure_http", "use_post"), lambda value: isinstance(value, bool), "must be True or False"),
    (("clock",), lambda value: value is None or callable(value), "must be a callable returning Unix seconds"),
    (
        ("monotonic",),
        lambda value: value is None or callable(value),
        "must be a callable returning seconds that never go back",
    ),
)
#: The credential's own arguments (every other keyword is a timeout, a retry setting or
#: azure-core's).
_PLAIN = frozenset(
    (
        "endpoint",
        "client_id",
        "object_id",
        "msi_res_id",
        "use_post",
        "wait_for_endpoint",
        "allow_insecure_http",
        "clock",
        "monotonic",
    )
)


def _proxies_apply(endpoint: Union[EndpointChoice, SettingsFileError]) -> bool:
    """Whether proxies from the environment apply: never to a loopback endpoint."""
    host = urlsplit(endpoint.url).hostname if isinstance(endpoint, EndpointChoice) else None
    return bool(host) and not is_loopback_host(host or "")


def _endpoint_for(
    name: str, endpoint: Optional[str], allow_insecure_http: bool
) -> Union[EndpointChoice, SettingsFileError]:
    """The endpoint to call; or, when the extension's settings file is broken, that error, to be
    said on every token request (a chain moves on) rather than failing at construction."""
    try:
        return resolve_endpoint(endpoint, allow_insecure_http=allow_insecure_http)
    except SettingsFileError as exc:
        _LOGGER.warning("%s: %s", name, exc)
        return exc


class CredentialBase(abc.ABC):
    """Configuration, cache and the reading of answers, for both credentials.

    Everything that decides lives here or below (``_cache``, ``_retry``, ``_protocol``,
    ``_endpoint``); a twin only does I/O. What a twin implements, each the same steps with
    or without ``await``:

    * :meth:`_setup_io`: its transport side (a pipeline, or one per event loop);
    * :meth:`_lock`: the lock that makes callers for one resource share one request;
    * :meth:`_entry`: the slow path: decide, take the lock, decide again, fetch, settle;
    * :meth:`_fetch`: drive :meth:`_fetch_flow`, doing its I/O through :meth:`_exchange`;
    * :meth:`_exchange`: one request through the pipeline (retries and reading included);
    * ``close``, and ``get_token``/``get_token_info`` with their fast path.

    Who refreshes a still-valid token, and that a caller holding one never waits for
    another's refresh, is decided by :class:`legacy_msi_credential._flight.SingleFlight`
    before a twin takes its lock.
    """

    _credential_name = "LegacyMsiCredential"

    def __init__(
        self,
        *,
        endpoint: Optional[str] = None,
        client_id: Optional[str] = None,
        object_id: Optional[str] = None,
        msi_res_id: Optional[str] = None,
        use_post: bool = False,
        wait_for_endpoint: float = 0,
        allow_insecure_http: bool = False,
        clock: Optional[Callable[[], float]] = None,
        monotonic: Optional[Callable[[], float]] = None,
        **kwargs: Any,
    ) -> None:
        #: Set by DefaultAzureCredential: a scope the endpoint cannot use is "unavailable" there.
        self._in_chain = False
        self._settings = settings = Settings.build(
            self._credential_name,
            {
                "endpoint": endpoint,
                "client_id": client_id,
                "object_id": object_id,
                "msi_res_id": msi_res_id,
                "use_post": use_post,
                "wait_for_endpoint": wait_for_endpoint,
                "allow_insecure_http": allow_insecure_http,
                "clock": clock,
                "monotonic": monotonic,
                **kwargs,
            },
        )
        self._clock = settings.clock
        self._monotonic = settings.monotonic
        #: The token cache and the single-flight rule; each twin waits its own way.
        self._flight: SingleFlight[ClientAuthenticationError] = SingleFlight(
            TokenCache(), settings.clock, settings.monotonic, copy=fresh_copy
        )
        #: The fast path's table: per scopes tuple exactly as passed, the row of a token that
        #: is not yet due. Both twins read it first in ``get_token`` and ``get_token_info``,
        #: inline: it is the one thing every SDK call pays.
        self._fresh: dict[tuple[str, ...], FastRow] = {}
        self._pid = os.getpid()
        self._setup_io()

    @abc.abstractmethod
    def _setup_io(self) -> None:
        """Create the transport side; each credential has its own."""

    @abc.abstractmethod
    def _lock(self, resource: str) -> Any:
        """The lock shared by callers for ``resource``."""

    @abc.abstractmethod
    def _entry(self, scopes: tuple[str, ...], claims: Optional[str]) -> Any:
        """The slow path of a token request (a coroutine in the async twin)."""

    @abc.abstractmethod
    def _fetch(self, resource: str, endpoint: EndpointChoice) -> Any:
        """One token request, retries included (a coroutine in the async twin)."""

    @abc.abstractmethod
    def _exchange(self, request: HttpRequest) -> Any:
        """One request through the pipeline (a coroutine in the async twin)."""

    # --- what callers may inspect ------------------------------------------------------

    @property
    def endpoint(self) -> Optional[EndpointChoice]:
        """The endpoint this credential calls and why, or ``None`` if its settings file is broken."""
        endpoint = self._settings.endpoint
        return endpoint if isinstance(endpoint, EndpointChoice) else None

    @property
    def identity(self) -> Identity:
        """The managed identity this credential asks for."""
        return self._settings.identity

    def __repr__(self) -> str:
        endpoint = self._settings.endpoint
        where = (
            f"{endpoint.url!r} ({endpoint.source})"
            if isinstance(endpoint, EndpointChoice)
            else f"unusable ({endpoint})"
        )
        return f"{self._credential_name}(endpoint={where}, identity={self._settings.identity.describe()!r})"

    def __reduce_ex__(self, protocol: Any) -> Any:
        """A copy made from the same configuration (for multiprocessing, Spark, Ray...): it carries
        no token, lock, connection or pipeline, and a transport passed in stays behind (the
        copy makes its own)."""
        return (_rebuild, (type(self), dict(self._settings.arguments)), {"_in_chain": self._in_chain})

    # --- steps of a token request ----------------------------------------------------

    def _resource_for(self, scopes: tuple[str, ...], claims: Optional[str] = None) -> tuple[str, EndpointChoice]:
        """Validate the request before any I/O: its resource, and the endpoint to ask."""
        if claims is not None and not isinstance(claims, str):
            raise ValueError(f"claims must be a string, not {type(claims).__name__}")
        try:
            resource = scopes_to_resource(scopes)
        except ValueError as exc:
            if not self._in_chain:
                raise
            # Inside DefaultAzureCredential: "unavailable", so that the chain goes on to
            # azure-identity's managed identity step and ends where azure-identity's would.
            raise unavailable(f"{self._credential_name}: {exc}") from None
        endpoint = self._settings.endpoint
        if not isinstance(endpoint, EndpointChoice):
            raise unavailable(
                f"{self._credential_name}: the legacy endpoint's settings are unusable: {endpoint}"
            ) from endpoint
        return resource, endpoint

    def _forked(self) -> bool:
        """Whether this object was inherited through ``fork``: locks and connections are the parent's."""
        if os.getpid() == self._pid:
            return False
        self._pid = os.getpid()
        return True

    def _fetch_flow(self, resource: str, endpoint: EndpointChoice) -> Generator[HttpRequest, Answer, TokenResult]:
        """The steps of one token request, without I/O: yields requests, receives answers.

        A GET answered 405 is sent once more as a form POST; the final answer is read,
        checked against the identity asked for, and logged.
        """
        started = time.monotonic()
        url, identity, method = endpoint.url, self._settings.identity, self._settings.method
        answer = yield build_request(url, resource, identity, method=method)
        if wants_post(method, answer.status):
            answer = yield build_request(url, resource, identity, method="POST")
        now = self._clock()
        result = parse_response(answer.status, answer.content_type, answer.body, now=now, url=url, resource=resource)
        wrong = identity_mismatch(
            identity.parameter,
            identity.value,
            decode_claims(result.token),
            echoed_client_id=result.client_id,
        )
        if wrong is not None:
            raise IdentityMismatchError(
                f"{url} answered with a token for another identity than the one asked for: {wrong}. "
                "The token was not used or cached; check the identity's ID, and that it is assigned to this VM",
                status_code=answer.status,
                error_code="identity_mismatch",
            )
        _LOGGER.info(
            "%s: token for %s (%s) from %s: HTTP %d in %.0f ms, expires in %d s",
            self._credential_name,
            resource,
            identity.describe(),
            url,
            answer.status,
            (time.monotonic() - started) * 1000,
            result.expires_on - now,
        )
        return result

    def _boundary(self, error: Exception, endpoint: EndpointChoice) -> ClientAuthenticationError:
        """What a caller sees of a failed token request: only this package's errors, sanitised.

        Every error leaves as a fresh instance with no ``__context__`` and, for a transport
        failure, a cause that names exception types only: a transport's messages may
        quote a hostile server's bytes, a token among them.
        """
        name = self._credential_name
        if isinstance(error, (CredentialUnavailableError, TokenRequestError)):
            return fresh_copy(error, named=name)
        if isinstance(error, AzureError) and not isinstance(error, ClientAuthenticationError):
            failure = fresh_copy(self._transport_failure(error, endpoint), named=name)
        else:
            failure = fresh_copy(unreadable(endpoint.url, error), named=name)
            _LOGGER.debug("%s: unexpected %s while requesting a token", name, type(error).__name__)
        failure.__cause__ = SanitizedCause(error)
        return failure

    def _transport_failure(self, error: AzureError, endpoint: EndpointChoice) -> ClientAuthenticationError:
        """Translate a transport error into "the endpoint is not there"."""
        url = endpoint.url
        if isinstance(error, ServiceRequestError):
            message = f"nothing is listening at {url} (connection refused or unreachable)"
            message += source_named(endpoint.source).unreachable_hint
        else:
            message = (
                f"the endpoint at {url} did not answer like an HTTP server (the connection broke, timed out "
                f"or carried something that is not HTTP: {type(error).__name__})"
            )
        _LOGGER.info("%s: %s", self._credential_name, message)
        return unavailable(message)

    def _unnamed(self, failure: ClientAuthenticationError) -> str:
        """A failure's message without the credential's name it starts with (for lines that name it)."""
        prefix = f"{self._credential_name}: "
        return failure.message[len(prefix) :] if failure.message.startswith(prefix) else failure.message

    @staticmethod
    def _claims_from(options: Any) -> Optional[str]:
        if options is None:
            return None
        if not isinstance(options, Mapping):
            raise ValueError(f"options must be a mapping (TokenRequestOptions), not {type(options).__name__}")
        claims = options.get("claims")
        if claims is not None and not isinstance(claims, str):
            raise ValueError(f"claims must be a string, not {type(claims).__name__}")
        return claims

    def _row(self, entry: CacheEntry) -> FastRow:
        """What the fast path serves of ``entry``: the token wrapped, once, into azure-core's types
        (the only place it is: the cache and the bridge keep the standard library's record)."""
        result = entry.result
        return (
            entry.refresh_on,
            entry.refresh_mono,
            SafeAccessToken(result.token, result.expires_on),
            SafeAccessTokenInfo(
                result.token, result.expires_on, token_type=result.token_type, refresh_on=int(entry.refresh_on)
            ),
            self._clock,
            self._monotonic,
        )

    def _remember(self, scopes: tuple[str, ...], entry: CacheEntry) -> FastRow:
        """Let the fast path serve ``entry`` for exactly these scopes until it is due for refresh;
        the row, for the slow path to serve too."""
        if len(self._fresh) >= FAST_TABLE_MAX:
            self._fresh.clear()
        # The row carries the clocks it is judged by: the fast path reads one attribute, the table.
        row = self._fresh[scopes] = self._row(entry)
        return row

    def _conclude(
        self,
        scopes: tuple[str, ...],
        ticket: Ticket,
        fetched: Optional[TokenResult],
        failure: Optional[ClientAuthenticationError],
    ) -> FastRow:
        """How a request ends for its caller (in its turn of the flight), for both twins.

        A token is kept and remembered for the fast path; a failure is recorded for the
        callers waiting their turn, and either serves the still-valid token of a proactive
        refresh or is raised. Called outside any ``except`` block, so nothing is chained to it.
        """
        if fetched is not None:
            return self._remember(scopes, self._flight.fetched(ticket, fetched))
        assert failure is not None
        stale = self._flight.failed(ticket, failure)
        if stale is not None:
            _LOGGER.warning(
                "%s: refreshing a token failed; using the cached one, valid for %d s more: %s",
                self._credential_name,
                stale.expires_on - self._clock(),
                self._unnamed(failure),
            )
            return self._row(stale)  # served, never remembered: it is due
        if not isinstance(failure, CredentialUnavailableError):
            # INFO: the exception raised carries it; "not there" was logged where it was found.
            _LOGGER.info(
                "No token for %s (%s): %s", ticket.key, self._settings.identity.describe(), self._unnamed(failure)
            )
        raise failure


def _rebuild(cls: type[CredentialBase], arguments: dict[str, Any]) -> CredentialBase:
    """Make a credential from a pickled configuration."""
    return cls(**arguments)
