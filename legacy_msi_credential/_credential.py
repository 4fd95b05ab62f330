"""``LegacyMsiCredential``: the synchronous shell that sends requests."""

from __future__ import annotations

import threading
from typing import Any, Optional

from azure.core.credentials import AccessToken, AccessTokenInfo, TokenRequestOptions
from azure.core.exceptions import ClientAuthenticationError
from azure.core.pipeline import Pipeline
from azure.core.rest import HttpRequest

from ._base import MISS, CredentialBase, FastRow
from ._constants import MAX_RESPONSE_BYTES
from ._endpoint import EndpointChoice
from ._pipeline import build_pipeline
from ._policies import ANSWER_KEY
from ._protocol import Answer, TokenResult


class LegacyMsiCredential(CredentialBase):
    """Authenticates as a VM's managed identity through the legacy VM extension.

    The extension served tokens at ``http://localhost:50342/oauth2/token`` before Azure
    moved that job to IMDS. Use this credential on VMs that only have the extension, as
    ``credential=`` of any Azure SDK client.

    Args:
        endpoint: The token URL. Default: ``LEGACY_MSI_ENDPOINT``, then ``MSI_ENDPOINT``
            (when ``MSI_SECRET`` is unset), then the extension's settings file, then
            ``http://localhost:50342/oauth2/token``.
        client_id: Client ID of a user-assigned identity.
        object_id: Object (principal) ID of a user-assigned identity.
        msi_res_id: ARM resource ID of a user-assigned identity. At most one of the three.
        use_post: Send a form POST instead of a GET (GET answered 405 switches by itself).
        wait_for_endpoint: Seconds to keep trying while the connection is refused, for a VM
            whose extension is still starting. 0 (default) gives up at once, so that a
            credential chain moves on quickly.
        allow_insecure_http: Accept a plain ``http`` endpoint that is not loopback.
        clock: Source of Unix time in seconds for the token cache (default ``time.time``).
        monotonic: Source of seconds that never step (default ``time.monotonic``, or ``clock``
            when only that is given): a cached token is due or expired when either clock says so,
            so a wall clock stepped back never extends a token's life.
        **kwargs: ``connection_timeout`` (1 s), ``read_timeout`` (10 s, between bytes),
            ``response_timeout`` (15 s, for a whole answer however slowly it trickles),
            ``retry_total`` (4), and azure-core pipeline settings: ``transport``,
            ``logging_enable``, ``user_agent``, ``headers``, ``proxies``, ...

    Raises:
        ValueError: Conflicting identities, or an endpoint that is not a usable URL.
    """

    def _setup_io(self) -> None:
        self._own_transport = self._settings.transport is None
        self._pipeline: Pipeline[Any, Any] = self._new_pipeline()
        self._closed = False
        self._locks: dict[str, threading.Lock] = {}

    def _new_pipeline(self) -> Pipeline[Any, Any]:
        return build_pipeline(
            self._settings.retry,
            trust_env=self._settings.trust_env,
            require_loopback=self._settings.require_loopback,
            body_limit=MAX_RESPONSE_BYTES,
            body_deadline=self._settings.response_deadline,
            transport=self._settings.transport,
            **self._settings.pipeline_kwargs,
        )

    # --- azure-core's TokenCredential and SupportsTokenInfo ----------------------------

    def get_token(
        self,
        *scopes: str,
        claims: Optional[str] = None,
        tenant_id: Optional[str] = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        """Get a token for one scope, from the cache when it is fresh.

        Args:
            *scopes: Exactly one scope, such as ``https://management.azure.com/.default``.
            claims: Claims from a claims challenge: the cached token was rejected, so a new
                one is requested.
            tenant_id: Ignored: a managed identity belongs to one tenant.
            enable_cae: Ignored: the legacy endpoint has no continuous access evaluation.
            **kwargs: Ignored.

        Returns:
            The token, with its expiry in Unix seconds.

        Raises:
            ValueError: Not exactly one usable scope.
            CredentialUnavailableError: The legacy endpoint is not there.
            TokenRequestError: The endpoint refused, or answered without a usable token.
        """
        # The fast path, inline (a method call would add about 15%): one attribute (the table),
        # one lookup, and the row fresh on both of the clocks it carries, with no claims
        # challenge. Anything else takes the slow path, which names what is wrong with a scope.
        try:
            row = self._fresh[scopes]
        except (KeyError, TypeError):
            row = MISS
        if claims is None and row[4]() < row[0] and row[5]() < row[1]:
            return row[2]
        return self._entry(scopes, claims)[2]

    def get_token_info(self, *scopes: str, options: Optional[TokenRequestOptions] = None) -> AccessTokenInfo:
        """Get a token and its refresh time for one scope, from the cache when it is fresh.

        Args:
            *scopes: Exactly one scope.
            options: ``claims`` forces a new token; ``tenant_id`` and ``enable_cae`` are ignored.

        Returns:
            The token with ``expires_on``, ``refresh_on`` and ``token_type``.

        Raises:
            ValueError: Not exactly one usable scope.
            CredentialUnavailableError: The legacy endpoint is not there.
            TokenRequestError: The endpoint refused, or answered without a usable token.
        """
        try:
            row = self._fresh[scopes]
        except (KeyError, TypeError):
            row = MISS
        if (
            (options is None or (type(options) is dict and "claims" not in options))
            and row[4]() < row[0]
            and row[5]() < row[1]
        ):
            return row[3]
        return self._entry(scopes, self._claims_from(options))[3]

    def close(self) -> None:
        """Close the transport's connections.

        The credential stays usable: the next request, or the next ``with`` block, opens new
        connections; unless the transport was passed in, which is closed as azure-core's
        clients close theirs, and cannot be reopened.
        """
        self._pipeline.__exit__()
        self._closed = True

    def __enter__(self) -> LegacyMsiCredential:
        if self._closed and self._own_transport:  # used again after close: a new transport
            self._pipeline = self._new_pipeline()
            self._closed = False
        self._pipeline.__enter__()
        return self

    def __exit__(self, *args: Any) -> None:
        self.close()

    # --- the slow path -----------------------------------------------------------------

    def _lock(self, resource: str) -> threading.Lock:
        # dict.setdefault is atomic: every thread gets the same lock, and no lock guards the locks.
        return self._locks.get(resource) or self._locks.setdefault(resource, threading.Lock())

    def _entry(self, scopes: tuple[str, ...], claims: Optional[str]) -> FastRow:
        resource, endpoint = self._resource_for(scopes, claims)
        if self._forked():
            self._locks = {}
            self._pipeline = self._new_pipeline()
        elif self._closed and self._own_transport:
            self._pipeline = self._new_pipeline()
            self._closed = False
        ticket = self._flight.begin(resource, force=claims is not None)
        if ticket.fresh is not None:
            return self._remember(scopes, ticket.fresh)  # fresh, or valid while another caller replaces it
        lock = self._lock(resource)
        try:
            # The with statement takes and releases the lock itself: no line of Python runs
            # between taking it and being sure to release it, so no exception (an interrupt
            # included) can leave it held.
            with lock:
                served = self._flight.recheck(ticket)  # raises the failure of a request it waited for
                if served is not None:
                    return self._remember(scopes, served)  # another thread got a token meanwhile
                fetched, failure = self._try_fetch(resource, endpoint)
                # Outside any except block: a failure raised from here has nothing chained to it.
                return self._conclude(scopes, ticket, fetched, failure)
        finally:
            self._flight.end(ticket)  # whatever happened, a later caller may refresh it

    def _try_fetch(
        self, resource: str, endpoint: EndpointChoice
    ) -> tuple[Optional[TokenResult], Optional[ClientAuthenticationError]]:
        """A token, or the failure to raise. Its own method: a ``try`` statement directly in a
        ``with`` block is a point where CPython 3.11+ can skip the block's exit, when a trace
        hook raises there."""
        try:
            return self._fetch(resource, endpoint), None
        except Exception as exc:
            return None, self._boundary(exc, endpoint)

    def _fetch(self, resource: str, endpoint: EndpointChoice) -> TokenResult:
        """Drive the shared request flow, doing its I/O."""
        flow = self._fetch_flow(resource, endpoint)
        request = next(flow)
        while True:
            try:
                request = flow.send(self._exchange(request))
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]

    def _exchange(self, request: HttpRequest) -> Answer:
        """Send one request through the pipeline (retries and reading the answer included)."""
        response = self._pipeline.run(request, stream=True, **self._settings.request_options)
        answer: Answer = response.context[ANSWER_KEY]
        return answer
