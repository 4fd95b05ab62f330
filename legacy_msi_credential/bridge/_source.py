"""Where the bridge's tokens come from: azure-identity, behind a cache, single flight and a gate.

Every request to the source is for one identity and resource; clients asking meanwhile
share it, and its token is cached, by the same single-flight rule and refresh rule as the
credentials' (:class:`legacy_msi_credential._flight.SingleFlight`); calls to the
source are capped below IMDS's per-VM limits. A token is handed on only when it is for
the identity asked for (:mod:`legacy_msi_credential._claims`).

The cache and the gate are shared fairly between local users (the uid owning each client's
socket, :mod:`legacy_msi_credential._server._owner`): one user asking for many identities evicts its
own tokens first and waits in its own queue, so it neither evicts nor delays another's.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
import time
from collections.abc import Hashable
from dataclasses import replace
from typing import Any, Callable, Optional

from .._cache import CacheEntry, TokenCache
from .._claims import decode_claims, lacks_identity, not_app_only
from .._constants import BRIDGE_SOURCES, SERVE_HINT
from .._flight import SingleFlight, Ticket
from .._server._flights import Busy, Flights, Gate
from .._server._legacy import TokenAsk
from .._server._limits import DEFAULT_LIMITS, ServerLimits
from .._server._rules import Refusal
from .._text import clean_text
from .._token import TokenResult

_LOGGER = logging.getLogger("legacy_msi_credential.bridge")

SOURCES = BRIDGE_SOURCES

#: How azure-identity's messages say the source has no such identity (1.19 quotes IMDS's
#: ``unauthorized_client``; later versions say "not found" or "not been assigned").
_NO_SUCH_IDENTITY = ("not been assigned", "identity not found", "no such managed identity", "unauthorized_client")


CredentialFactory = Callable[[str, Optional[str], Optional[str]], Any]


class TokenSource:
    """Tokens from azure-identity for the bridge.

    Args:
        kind: ``imds`` (``ManagedIdentityCredential``), ``cli`` (``AzureCliCredential``, the
            signed-in account) or ``default`` (azure-identity's ``DefaultAzureCredential``);
            with a ``credential_factory``, any name (``legacy``: ``legacy-msi adapt``'s), which
            serves every identity.
        timeout: Seconds a source request may take (the same as ``limits.source_timeout``).
        limits: The bounds (the ``source_*`` ones and ``max_tokens`` are the source's).
        clock: Unix time, for the cache.
        credential_factory: Makes the credential for ``(kind, parameter, value)``, sync or
            async (azure-identity's ``aio`` credentials by default). A new one is made for
            each request to the source and closed after it: tokens are cached here, so
            none is kept per identity.
    """

    def __init__(
        self,
        kind: str = "imds",
        *,
        timeout: Optional[float] = None,
        limits: ServerLimits = DEFAULT_LIMITS,
        clock: Callable[[], float] = time.time,
        credential_factory: Optional[CredentialFactory] = None,
    ) -> None:
        if kind not in SOURCES and credential_factory is None:
            raise ValueError(f"source must be one of {', '.join(SOURCES)}, not {kind!r}")
        if timeout is not None:
            limits = replace(limits, source_timeout=timeout)
        self.kind = kind
        self.limits = limits
        self._clock = clock
        self._factory = credential_factory or _identity_credential
        self._flight: SingleFlight[Refusal] = SingleFlight(
            TokenCache(max_entries=limits.max_tokens), clock, time.monotonic
        )
        self._flights: Flights[CacheEntry] = Flights()
        self._gate: Optional[Gate] = None  # made in the serving loop
        #: Requests made to the source, for tests and the health path.
        self.requests = 0

    def close(self) -> None:
        """Cancel the source requests under way (on stop); the cache stays for a restart."""
        self._flights.cancel_all()
        self._gate = None  # made again in the next serving loop

    @property
    def cached(self) -> int:
        """Tokens kept."""
        return len(self._flight.cache)

    @property
    def users(self) -> int:
        """Local users holding cached tokens."""
        return self._flight.cache.users

    @property
    def waiting(self) -> int:
        """Source requests waiting for the gate."""
        return 0 if self._gate is None else self._gate.waiting

    def _check_identity_kind(self, ask: TokenAsk) -> None:
        if ask.parameter is None or self.kind not in ("cli", "default"):
            return
        if self.kind == "default" and ask.parameter == "client_id":
            return
        serves = "the signed-in account" if self.kind == "cli" else "user-assigned identities by client_id"
        raise Refusal(
            400, "invalid_request", f"The {self.kind} source serves {serves} only; {ask.parameter} cannot be honoured."
        )

    async def token(self, ask: TokenAsk, user: Optional[int] = None) -> TokenResult:
        """A token for this identity and resource, from the cache or the source.

        ``user`` is the local uid asking (None when it cannot be known: one shared bucket);
        the cache charges its tokens to it and its source requests wait in its own queue.

        Raises:
            Refusal: The source refused, failed, was too slow or busy, or answered for
                another identity; as the extension would have answered.
        """
        self._check_identity_kind(ask)
        key = f"{ask.parameter or ''}\x00{ask.value or ''}\x00{ask.resource}"
        ticket = self._flight.begin(key, user=user)
        if ticket.fresh is not None:  # fresh, or valid while another client's request replaces it
            return _result(ticket.fresh)
        entry = await self._flights.run(key, lambda: self._fly(ticket, ask))
        self._flight.cache.hold(key, user)  # a token another user's request brought is this user's too now
        return _result(entry)

    async def _fly(self, ticket: Ticket, ask: TokenAsk) -> CacheEntry:
        """The flight itself, shared by every client asking meanwhile: its token is kept before it
        ends, so that no request arriving after it finds neither a token nor a flight. It outlives
        a client that gives up: the refresh it makes stays this flight's until it ends."""
        try:
            served = self._flight.recheck(ticket)
            if served is not None:
                return served
            try:
                result = await self._fetch(ask, ticket.user)
            except Refusal as refusal:
                stale = self._flight.failed(ticket, refusal)
                if stale is None:
                    raise
                _LOGGER.warning("refreshing a token from the %s source failed; serving the cached one", self.kind)
                return stale
            return self._flight.fetched(ticket, result)
        finally:
            self._flight.end(ticket)

    async def _fetch(self, ask: TokenAsk, user: Hashable) -> TokenResult:
        if self._gate is None:
            limits = self.limits
            self._gate = Gate(limits.source_concurrency, limits.source_rate, limits.source_queue_wait)
        try:
            return await self._gate.run(lambda: self._ask_source(ask), user)
        except Busy as busy:
            raise Refusal(
                429,
                "too_many_requests",
                f"The {self.kind} source is asked for too many tokens at once; try again in {busy.retry_after} s.",
                {"Retry-After": str(busy.retry_after)},
            ) from None

    async def _ask_source(self, ask: TokenAsk) -> TokenResult:
        self.requests += 1
        started = time.monotonic()
        timeout = self.limits.source_timeout
        try:
            credential = self._factory(self.kind, ask.parameter, ask.value)
            try:
                token = await asyncio.wait_for(_get_token(credential, ask.resource + "/.default"), timeout)
            finally:
                await _close(credential)
        except asyncio.TimeoutError:
            raise Refusal(500, "unknown", f"The {self.kind} source did not answer within {timeout:g} s.") from None
        except Refusal:
            raise
        except Exception as exc:  # what azure-identity raised, mapped onto the extension's table
            raise _refusal(self.kind, exc) from None
        result = TokenResult(str(token.token), int(token.expires_on))
        self._check_claims(ask, result.token)
        _LOGGER.info(
            "token for %s (%s) from the %s source in %.0f ms",
            ask.resource,
            ask.identity_kind,
            self.kind,
            (time.monotonic() - started) * 1000,
        )
        return result

    def _check_claims(self, ask: TokenAsk, token: str) -> None:
        """Refuse a token for another identity than the one asked for, and, whatever the identity
        asked for, one that is not shown to be app-only: a signed-in user's, or one whose claims
        cannot be read. Only the ``cli`` source hands a user's token on: the signed-in account is
        its point."""
        claims = decode_claims(token)
        if ask.parameter is not None and ask.value is not None:
            wrong = lacks_identity(ask.parameter, ask.value, claims)
            if wrong is not None:
                raise Refusal(
                    401, "unauthorized_client", f"The {self.kind} source answered for another identity: {wrong}."
                )
        why = None if self.kind == "cli" else not_app_only(claims)
        if why is not None:
            raise Refusal(
                401,
                "unauthorized_client",
                f"The {self.kind} source answered with {why}; only a managed identity's token is handed on.",
            )


def _result(entry: CacheEntry) -> TokenResult:
    return entry.result


async def _get_token(credential: Any, scope: str) -> Any:
    """``credential.get_token(scope)``: awaited, or on a daemon thread for a synchronous credential
    (so that a hung one never keeps the process from exiting)."""
    if inspect.iscoroutinefunction(getattr(credential, "get_token", None)):
        return await credential.get_token(scope)
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Any] = loop.create_future()

    def settle(outcome: Any, error: Optional[BaseException]) -> None:
        if done.done():
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(outcome)

    def work() -> None:
        try:
            outcome, error = credential.get_token(scope), None
        except BaseException as exc:  # handed to the waiting task, whatever it is
            outcome, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop is closed: the bridge stopped, nobody waits
            loop.call_soon_threadsafe(settle, outcome, error)

    threading.Thread(target=work, name="legacy-msi-source", daemon=True).start()
    return await done


async def _close(credential: Any) -> None:
    close = getattr(credential, "close", None)
    if close is None:
        return
    outcome = close()
    if inspect.isawaitable(outcome):
        await outcome


def _refusal(kind: str, error: BaseException) -> Refusal:
    """A source's failure as the extension would have answered it; the description says which source and why."""
    message = clean_text(getattr(error, "message", None) or str(error) or type(error).__name__, 400)
    lowered = message.lower()
    if any(sign in lowered for sign in _NO_SUCH_IDENTITY):
        return Refusal(401, "unauthorized_client", f"The {kind} source has no such identity: {message}")
    return Refusal(500, "unknown", f"The {kind} source could not provide a token: {message}")


def _identity_credential(kind: str, parameter: Optional[str], value: Optional[str]) -> Any:
    """azure-identity's asynchronous credential for a source and identity."""
    try:
        import azure.identity.aio as identity
    except ImportError:
        raise ImportError(f"legacy-msi serve gets tokens through azure-identity: {SERVE_HINT}") from None
    if kind == "cli":
        return identity.AzureCliCredential()
    if kind == "default":
        return identity.DefaultAzureCredential(
            managed_identity_client_id=value if parameter == "client_id" else None,
            exclude_interactive_browser_credential=True,
        )
    if parameter == "client_id":
        return identity.ManagedIdentityCredential(client_id=value)
    if parameter is not None:  # IMDS's own parameter names, which every azure-identity version passes on
        name = "object_id" if parameter == "object_id" else "msi_res_id"
        return identity.ManagedIdentityCredential(identity_config={name: str(value)})
    return identity.ManagedIdentityCredential()
