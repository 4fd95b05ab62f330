"""``legacy-msi serve``: the legacy endpoint, served from a real token source.

Software written against the extension (Node ms-rest-azure, msrestazure, Java and Go SDKs
of that era, scripts that curl ``localhost:50342``) keeps working on a VM that has IMDS
but no extension, or on a developer's machine signed in with ``az``. The protocol side
is the emulator's own (:class:`~legacy_msi_credential.emulator.Emulator`): the same
request parsing, ``Metadata: true`` check, error table and string-typed numbers. Only
where the token comes from differs: azure-identity (the ``identity`` extra) gets it from

* ``imds`` (default): ``ManagedIdentityCredential``, with the requested user-assigned
  identity passed on;
* ``cli``: ``AzureCliCredential``, the signed-in account;
* ``default``: azure-identity's ``DefaultAzureCredential``.

One request to the source per identity and resource however many clients ask at once;
tokens are cached and refreshed five minutes before expiry, and ``expires_in`` counts
down honestly. As a local token service it binds loopback only unless told otherwise,
refuses requests relayed by a proxy (``X-Forwarded-For``, ``Forwarded``), bounds request
size, header count, time to send a request and concurrency, and never logs a token.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, Callable, Optional

from ._constants import DEFAULT_PORT, EXPIRY_MARGIN, EXTRA_HINT, REFRESH_BEFORE_EXPIRY
from ._text import clean_text
from .emulator import Emulator, Fault, ProtocolRefusal

_LOGGER = logging.getLogger("legacy_msi_credential.bridge")

SOURCES = ("imds", "cli", "default")
#: Seconds a source may take to answer before the client gets ``500 unknown``.
SOURCE_TIMEOUT = 20.0
#: Seconds a client may take to send its request.
CLIENT_TIMEOUT = 10.0
#: Requests served at once; more get 503 at once.
MAX_CONCURRENT = 256
#: A token request is a few hundred bytes.
MAX_BODY = 64 * 1024
_KEPT_REQUESTS = 1000


@dataclass
class _Cached:
    token: str
    expires_on: int
    refresh_at: float


def _claims(token: str) -> dict[str, Any]:
    parts = token.split(".")
    if len(parts) < 2:
        return {}
    try:
        decoded = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, UnicodeDecodeError):
        return {}
    return decoded if isinstance(decoded, dict) else {}


class TokenSource:
    """Tokens from azure-identity, one request per identity and resource, cached.

    Args:
        kind: ``imds``, ``cli`` or ``default``.
        timeout: Seconds a source request may take.
        clock: Unix time, for the cache.
        credential_factory: Makes the azure-identity credential for ``(kind, parameter,
            value)``; the default imports azure-identity.
    """

    def __init__(
        self,
        kind: str = "imds",
        *,
        timeout: float = SOURCE_TIMEOUT,
        clock: Callable[[], float] = time.time,
        credential_factory: Optional[Callable[[str, Optional[str], Optional[str]], Any]] = None,
    ) -> None:
        if kind not in SOURCES:
            raise ValueError(f"source must be one of {', '.join(SOURCES)}, not {kind!r}")
        self.kind = kind
        self._timeout = timeout
        self._clock = clock
        self._factory = credential_factory or _identity_credential
        self._credentials: dict[tuple[Optional[str], Optional[str]], Any] = {}
        self._cache: dict[tuple[str, Optional[str], Optional[str]], _Cached] = {}
        self._locks: dict[tuple[str, Optional[str], Optional[str]], threading.Lock] = {}
        self._failures: dict[tuple[str, Optional[str], Optional[str]], tuple[int, Optional[ProtocolRefusal]]] = {}
        self._guard = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="legacy-msi-source")
        #: Requests made to the source, for tests and the health path.
        self.requests = 0

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        for credential in self._credentials.values():
            close = getattr(credential, "close", None)
            if close is not None:
                close()

    def token(self, resource: str, parameter: Optional[str], value: Optional[str]) -> tuple[str, int]:
        """A token and its expiry for this identity and resource.

        Raises:
            ProtocolRefusal: The source refused or could not be reached, as a documented error.
        """
        if self.kind != "imds" and parameter is not None and not (self.kind == "default" and parameter == "client_id"):
            raise ProtocolRefusal(
                400,
                "invalid_request",
                f"The {self.kind} source serves "
                + ("the signed-in account" if self.kind == "cli" else "user-assigned identities by client_id")
                + f" only; {parameter} cannot be honoured.",
            )
        key = (resource, parameter, value)
        cached = self._cache.get(key)
        if cached is not None and self._clock() < cached.refresh_at:
            return cached.token, cached.expires_on
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
            seen = self._failures.get(key, (0, None))[0]
        if not lock.acquire(timeout=self._timeout):
            raise ProtocolRefusal(500, "unknown", f"The {self.kind} source did not answer within {self._timeout:g} s.")
        try:
            cached = self._cache.get(key)
            now = self._clock()
            if cached is not None and now < cached.refresh_at:
                return cached.token, cached.expires_on  # another client's request got it meanwhile
            count, failure = self._failures.get(key, (0, None))
            if count != seen and failure is not None and cached is None:
                raise failure  # the request this client waited for failed
            try:
                token, expires_on = self._fetch(resource, parameter, value)
            except ProtocolRefusal as refusal:
                self._failures[key] = (count + 1, refusal)
                if cached is not None and self._clock() < cached.expires_on - EXPIRY_MARGIN:
                    _LOGGER.warning("refreshing a token from the %s source failed; serving the cached one", self.kind)
                    return cached.token, cached.expires_on
                raise
            self._failures[key] = (count + 1, None)
            lifetime = expires_on - now
            refresh_at = (
                now + lifetime / 2 if lifetime < 2 * REFRESH_BEFORE_EXPIRY else expires_on - REFRESH_BEFORE_EXPIRY
            )
            self._cache[key] = _Cached(token, expires_on, refresh_at)
            return token, expires_on
        finally:
            lock.release()

    def _credential(self, parameter: Optional[str], value: Optional[str]) -> Any:
        with self._guard:
            credential = self._credentials.get((parameter, value))
            if credential is None:
                credential = self._factory(self.kind, parameter, value)
                self._credentials[(parameter, value)] = credential
            return credential

    def _fetch(self, resource: str, parameter: Optional[str], value: Optional[str]) -> tuple[str, int]:
        credential = self._credential(parameter, value)
        scope = resource + "/.default"
        self.requests += 1
        started = time.monotonic()
        future = self._pool.submit(credential.get_token, scope)
        try:
            token = future.result(timeout=self._timeout)
        except FutureTimeout:
            raise ProtocolRefusal(
                500, "unknown", f"The {self.kind} source did not answer within {self._timeout:g} s."
            ) from None
        except Exception as exc:  # what azure-identity raised, mapped onto the extension's table
            raise _refusal(self.kind, exc) from None
        _LOGGER.info(
            "token for %s (%s) from the %s source in %.0f ms",
            resource,
            f"{parameter}={value}" if parameter else "system-assigned",
            self.kind,
            (time.monotonic() - started) * 1000,
        )
        return token.token, int(token.expires_on)


def _refusal(kind: str, error: BaseException) -> ProtocolRefusal:
    """A source's failure as the extension would have answered it; the description says which source and why."""
    message = clean_text(getattr(error, "message", None) or str(error) or type(error).__name__, 400)
    lowered = message.lower()
    if "not been assigned" in lowered or "identity not found" in lowered or "no such managed identity" in lowered:
        return ProtocolRefusal(401, "unauthorized_client", f"The {kind} source has no such identity: {message}")
    return ProtocolRefusal(500, "unknown", f"The {kind} source could not provide a token: {message}")


def _identity_credential(kind: str, parameter: Optional[str], value: Optional[str]) -> Any:
    """azure-identity's credential for a source and identity."""
    try:
        import azure.identity as identity
    except ImportError:
        raise ImportError(f"legacy-msi serve gets tokens through azure-identity: {EXTRA_HINT}") from None
    if kind == "cli":
        return identity.AzureCliCredential()
    if kind == "default":
        return identity.DefaultAzureCredential(managed_identity_client_id=value if parameter == "client_id" else None)
    if parameter == "client_id":
        return identity.ManagedIdentityCredential(client_id=value)
    if parameter is not None:
        name = "object_id" if parameter == "object_id" else "resource_id"  # azure-identity's key for an ARM ID
        return identity.ManagedIdentityCredential(identity_config={name: str(value)})
    return identity.ManagedIdentityCredential()


class Bridge(Emulator):
    """The legacy endpoint, with tokens from a real source instead of minted ones.

    Args:
        host: Address to bind; loopback only unless ``allow_remote``.
        port: Port to bind (default 50342; 0 for a free one).
        source: A :class:`TokenSource`, or its kind (``imds``, ``cli``, ``default``).
        allow_remote: Bind an address that is not loopback (requests that do not come over
            loopback are still refused, as the extension refused them).
        clock: Unix time, for ``expires_in``.
    """

    _refuse_forwarded = True
    _serves_imds = False

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        source: Any = "imds",
        allow_remote: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(host, port, allow_remote=allow_remote, clock=clock, sign=False)
        self.source = source if isinstance(source, TokenSource) else TokenSource(source, clock=clock)
        self._client_timeout = CLIENT_TIMEOUT
        self._slots = threading.BoundedSemaphore(MAX_CONCURRENT)
        self._max_body = MAX_BODY

    def stop(self) -> None:
        super().stop()
        self.source.close()

    def _health(self) -> dict[str, Any]:
        return {"status": "ok", "role": "bridge", "source": self.source.kind, "source_requests": self.source.requests}

    def _record(self, request: Any) -> Optional[Fault]:
        # A long-running service keeps only the last requests, for diagnosis; no faults.
        with self._lock:
            self._log.append(request)
            del self._log[:-_KEPT_REQUESTS]
            self._arrived.notify_all()
        return None

    def _identity_claims(self, parameter: Optional[str], value: Optional[str]) -> Optional[dict[str, str]]:
        # Any identity may be asked for: the source says whether this machine has it.
        return {"appid": "", "oid": "", "xms_mirid": ""}

    def _token_response(
        self,
        resource: str,
        parameter: Optional[str],
        value: Optional[str],
        identity: Any,
        fault: Optional[Fault],
    ) -> dict[str, str]:
        token, expires_on = self.source.token(resource, parameter, value)
        now = int(self.clock())
        claims = _claims(token)
        if isinstance(identity, dict):
            identity["appid"] = str(claims.get("appid") or (value if parameter == "client_id" else "") or "")
        answer: dict[str, str] = {
            "access_token": token,
            "refresh_token": "",
            "expires_in": str(max(0, expires_on - now)),
            "expires_on": str(expires_on),
            "not_before": str(claims.get("nbf", now)),
            "resource": resource,
            "token_type": "Bearer",
        }
        return answer
