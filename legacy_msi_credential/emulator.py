"""A test tool: a local stand-in for the legacy managed identity VM extension.

What it is for: trying clients of the extension (this package's credentials first) on a
machine without one, faults included. It is not a token service (``legacy-msi serve`` is,
and shares only the protocol's rules, :mod:`legacy_msi_credential._rules`, with it).
It speaks the extension's protocol (``GET``/``POST /oauth2/token``, ``Metadata: true``,
the documented errors, string-typed numbers) and IMDS's token path, and mints JWTs whose
claims look like Azure AD's, so that local services checking claims (Azurite's
``--oauth basic``) accept them. **They are not Azure AD tokens**: no Azure service accepts
them. They are signed RS256 with a key made at start when ``cryptography`` is installed
(the ``emulator`` extra), otherwise unsigned (``alg: none``).

Faults can be scripted, from Python or the CLI, to rehearse failures::

    with Emulator(port=0) as emulator:
        emulator.add_faults(Fault.http_error(503, retry_after=1), Fault.drop())
        credential = LegacyMsiCredential(endpoint=emulator.endpoint)
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import logging
import math
import os
import re
import socket
import struct
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Callable, Optional
from urllib.parse import urlsplit

from ._constants import DEFAULT_PORT, EMULATOR_LIFETIME, HEALTH_PATH, TOKEN_PATH
from ._loopback import is_loopback_address, is_loopback_host
from ._rules import Policy, Refusal, base_url, decide, name_the_identity, parameters, settings_document

__all__ = ["Emulator", "Fault", "RecordedRequest", "UserAssignedIdentity", "parse_fault_spec"]

_LOGGER = logging.getLogger(__name__)
_NAMESPACE = uuid.UUID("5d0f3f4e-8a43-4c59-9f5e-0c1d6b2f7a10")

#: The extension served tokens that AAD dates 5 minutes back (``nbf``/``iat``).
_BACKDATE = 300  # s
#: Cached tokens are re-issued when this close to expiry, like the extension does.
_REISSUE_BEFORE_EXPIRY = 300  # s
DEFAULT_LIFETIME = EMULATOR_LIFETIME
#: A hung request is released after this, or when the emulator stops.
_HANG_DEFAULT = 3600.0  # s
_MAX_BODY = 1024 * 1024
_DEFAULT_ERRORS = {
    400: "bad_request",
    401: "unauthorized_client",
    403: "access_denied",
    404: "not_found",
    410: "gone",
    429: "too_many_requests",
}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _derived_id(*parts: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, "/".join(parts)))


@dataclass(frozen=True)
class UserAssignedIdentity:
    """A user-assigned identity the emulated VM has.

    Any of the three identifiers selects it in a request; those not given are derived.
    """

    client_id: Optional[str] = None
    object_id: Optional[str] = None
    msi_res_id: Optional[str] = None

    def completed(self) -> UserAssignedIdentity:
        """The same identity with every identifier filled in."""
        seed = self.client_id or self.object_id or self.msi_res_id or "user-assigned"
        return UserAssignedIdentity(
            client_id=self.client_id or _derived_id("client", seed),
            object_id=self.object_id or _derived_id("object", seed),
            msi_res_id=self.msi_res_id
            or f"/subscriptions/{_derived_id('subscription')}/resourcegroups/emulator/providers/"
            f"Microsoft.ManagedIdentity/userAssignedIdentities/{_derived_id('name', seed)[:8]}",
        )


@dataclass(frozen=True)
class Fault:
    """One scripted answer, used for one token request instead of the normal one.

    Build them with the class methods; :func:`parse_fault_spec` reads the CLI's form.
    """

    kind: str
    status: int = 200
    error: Optional[str] = None
    description: Optional[str] = None
    retry_after: Optional[str] = None
    seconds: float = 0.0
    size: int = 0
    fields: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def http_error(
        cls,
        status: int,
        *,
        error: Optional[str] = None,
        description: Optional[str] = None,
        retry_after: Optional[str | float] = None,
    ) -> Fault:
        """An error answer: JSON ``{"error", "error_description"}``, optionally with ``Retry-After``."""
        return cls(
            "status",
            status=status,
            error=error,
            description=description,
            retry_after=None if retry_after is None else _retry_after_text(retry_after),
        )

    @classmethod
    def ok(cls) -> Fault:
        """Answer normally: a placeholder that spaces out the other faults of a script."""
        return cls("ok")

    @classmethod
    def drop(cls) -> Fault:
        """Close the connection without answering."""
        return cls("drop")

    @classmethod
    def reset(cls) -> Fault:
        """Start a 200 answer, then reset the connection halfway through the body."""
        return cls("reset")

    @classmethod
    def delay(cls, seconds: float) -> Fault:
        """Answer normally after ``seconds``."""
        return cls("delay", seconds=seconds)

    @classmethod
    def hang(cls, seconds: float = _HANG_DEFAULT) -> Fault:
        """Accept the request and never answer (until ``seconds`` pass or the emulator stops)."""
        return cls("hang", seconds=seconds)

    @classmethod
    def not_json(cls, status: int = 200) -> Fault:
        """Answer with an HTML page, as a web server squatting on the port would."""
        return cls("not_json", status=status)

    @classmethod
    def truncated(cls) -> Fault:
        """Answer 200 with the first half of a token response."""
        return cls("truncated")

    @classmethod
    def huge(cls, size: int, *, announced: bool = True) -> Fault:
        """Answer 200 with ``size`` bytes of JSON padding, with or without ``Content-Length``."""
        return cls("huge" if announced else "flood", size=size)

    @classmethod
    def trickle(cls, seconds_per_byte: float) -> Fault:
        """Send a normal answer one byte at a time, ``seconds_per_byte`` apart."""
        return cls("trickle", seconds=seconds_per_byte)

    @classmethod
    def lifetime(cls, seconds: int) -> Fault:
        """Issue a new token living ``seconds`` (bypassing the emulator's own cache)."""
        return cls("lifetime", seconds=seconds)

    @classmethod
    def token_fields(cls, **fields: Any) -> Fault:
        """Issue a new token, then replace or add these fields of the JSON answer."""
        return cls("fields", fields=dict(fields))

    @classmethod
    def wrong_identity(cls) -> Fault:
        """Answer with a token (and ``client_id``) of another identity than the one asked for,
        as an extension that does not know the identity may have answered."""
        return cls("wrong-identity")

    @classmethod
    def expired(cls) -> Fault:
        """Issue a token that expired a minute ago."""
        return cls("expired")


def _retry_after_text(value: str | float) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(int(value)) if float(value).is_integer() else str(value)
    return str(value)


_SPEC = re.compile(r"^(?P<body>.+?)(?:x(?P<count>\d+))?$")
_STATUS_SPEC = re.compile(r"^(?P<status>[1-5]\d\d)(?:/(?P<error>[A-Za-z0-9_]+))?(?:@(?P<retry_after>[^@]+))?$")


def parse_fault_spec(spec: str) -> list[Fault]:
    """Read faults written as on the command line.

    The grammar, items separated by commas, each optionally followed by ``xN`` to repeat::

        STATUS[/ERROR][@RETRY_AFTER]    503, 429@5, 400/invalid_resource, 500@bogus
        ok | drop | reset | truncated | expired | wrong-identity | not-json
        hang[=SECONDS] | delay=SECONDS | trickle=SECONDS_PER_BYTE
        huge=BYTES (announced) | flood=BYTES (no Content-Length) | lifetime=SECONDS

    Raises:
        ValueError: The spec does not follow the grammar.
    """
    faults: list[Fault] = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            raise ValueError(f"empty fault in {spec!r}")
        match = _SPEC.match(item)
        assert match is not None
        body, count = match.group("body"), int(match.group("count") or 1)
        if not 1 <= count <= 100000:
            raise ValueError(f"fault repeat count must be 1 to 100000 in {item!r}")
        faults.extend([_parse_one(body)] * count)
    return faults


def _parse_one(text: str) -> Fault:
    status = _STATUS_SPEC.match(text)
    if status is not None:
        return Fault.http_error(
            int(status.group("status")), error=status.group("error"), retry_after=status.group("retry_after")
        )
    name, _, value = text.partition("=")
    simple = {
        "ok": Fault.ok,
        "drop": Fault.drop,
        "reset": Fault.reset,
        "truncated": Fault.truncated,
        "expired": Fault.expired,
        "wrong-identity": Fault.wrong_identity,
    }
    if name in simple and not value:
        return simple[name]()
    if name == "not-json" and not value:
        return Fault.not_json()
    if name == "hang":
        return Fault.hang(_number(text, value) if value else _HANG_DEFAULT)
    numeric: dict[str, Callable[[float], Fault]] = {
        "delay": Fault.delay,
        "trickle": Fault.trickle,
        "huge": lambda n: Fault.huge(int(n)),
        "flood": lambda n: Fault.huge(int(n), announced=False),
        "lifetime": lambda n: Fault.lifetime(int(n)),
    }
    if name in numeric and value:
        return numeric[name](_number(text, value))
    raise ValueError(f"unknown fault {text!r}; see `legacy-msi emulate --help` for the grammar")


def _number(item: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"fault {item!r}: {value!r} is not a number") from None
    if not math.isfinite(number) or abs(number) > 10**9 or (number < 0 and not item.startswith("lifetime")):
        raise ValueError(f"fault {item!r}: {value!r} is out of range")
    return number


@dataclass(frozen=True)
class RecordedRequest:
    """A request the emulator received.

    Attributes:
        method: ``GET``, ``POST``, ...
        path: The path, without the query.
        params: Query (and, for a form POST, body) parameters, each with all its values.
        headers: Request headers (the last value of each name, names as sent).
        client: The client's address.
        received: The emulator's clock when it arrived.
    """

    method: str
    path: str
    params: Mapping[str, list[str]]
    headers: Mapping[str, str]
    client: str
    received: float

    def param(self, name: str) -> Optional[str]:
        """The first value of a parameter, or ``None``."""
        values = self.params.get(name)
        return values[0] if values else None


class _Signer:
    """RS256 with a key made once per process, or no signature without ``cryptography``."""

    _shared: Optional[_Signer] = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        from cryptography.hazmat.primitives.asymmetric import rsa

        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        numbers = self._key.public_key().public_numbers()
        n = numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")
        e = numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")
        self.kid = _b64url(hashlib.sha256(n).digest()[:20])
        self.jwk = {"kty": "RSA", "use": "sig", "alg": "RS256", "kid": self.kid, "n": _b64url(n), "e": _b64url(e)}

    @classmethod
    def shared(cls) -> Optional[_Signer]:
        try:
            import cryptography  # noqa: F401
        except ImportError:
            return None
        with cls._lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    def sign(self, data: bytes) -> bytes:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        return self._key.sign(data, padding.PKCS1v15(), hashes.SHA256())


class _ReuseServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 256
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that drops its connection (a credential abandoning a slow answer) is
        # ordinary here: a DEBUG line, not a traceback on stderr.
        kind = sys.exc_info()[0]
        _LOGGER.debug("connection from %s ended abruptly (%s)", client_address[0], kind.__name__ if kind else "?")


class _ReuseServer6(_ReuseServer):
    address_family = socket.AF_INET6


class Emulator:
    """The legacy endpoint, served from a thread of this process.

    Args:
        host: Address to bind; loopback only unless ``allow_remote``.
        port: Port to bind; 0 picks a free one (see :attr:`port`).
        lifetime: Seconds a newly issued token lives.
        tenant_id: The tenant in every token.
        user_assigned: The VM's user-assigned identities. When given, a request for any
            other identity is refused (401 ``unauthorized_client``); when ``None``, any
            identifier is accepted and the others derived from it.
        system_assigned: Whether the VM has a system-assigned identity.
        accept_get: Answer GET; when ``False``, GET is answered 405 and only the form POST
            works (as some deployments behaved).
        sign: Sign tokens (requires ``cryptography``); default: when it is installed.
        allow_remote: Allow binding an address other than loopback. Clients not on
            loopback are still refused, as the extension refused them.
        clock: Source of Unix time in seconds (for tokens and the emulator's cache).
        flavor: ``linux`` (default) or ``windows``: the Windows extension answers a
            resource Azure AD does not know with ``500 unknown``, not ``400 invalid_resource``.
        ipv6: Also listen on ``::1``, same port (default: when ``host`` is ``127.0.0.1``),
            for clients whose ``localhost`` resolves to ``::1`` first.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        lifetime: int = DEFAULT_LIFETIME,
        tenant_id: Optional[str] = None,
        user_assigned: Optional[Iterable[UserAssignedIdentity]] = None,
        system_assigned: bool = True,
        accept_get: bool = True,
        sign: Optional[bool] = None,
        allow_remote: bool = False,
        clock: Callable[[], float] = time.time,
        flavor: str = "linux",
        ipv6: Optional[bool] = None,
    ) -> None:
        if flavor not in ("linux", "windows"):
            raise ValueError(f"flavor must be 'linux' or 'windows', not {flavor!r}")
        self.flavor = flavor
        self._ipv6 = host == "127.0.0.1" if ipv6 is None else ipv6
        #: Seconds a client may take to send its request (``None``: no limit).
        #: Requests served at once (``None``: no limit); beyond it, 503 at once.
        #: Largest request body read.
        self._max_body = _MAX_BODY
        self._server6: Optional[_ReuseServer] = None
        if not is_loopback_host(host) and not allow_remote:
            raise ValueError(
                f"refusing to bind {host!r}: the emulator serves tokens to anyone who can reach it, "
                "so it binds loopback only unless allow_remote=True"
            )
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"port must be 0 to 65535, not {port!r}")
        if not isinstance(lifetime, int) or lifetime < 1:
            raise ValueError("lifetime must be a positive number of seconds")
        self._host = host
        self._allow_remote = allow_remote
        self._requested_port = port
        self.lifetime = lifetime
        self.tenant_id = tenant_id or _derived_id("tenant")
        self.system_assigned = system_assigned
        self.user_assigned = None if user_assigned is None else [i.completed() for i in user_assigned]
        self.accept_get = accept_get
        self.clock = clock
        self._signer = _Signer.shared() if sign is not False else None
        if sign and self._signer is None:
            raise RuntimeError(
                "signed tokens need the 'cryptography' package: pip install \".[emulator]\" in a clone of "
                "legacy-msi-credential"
            )
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._faults: deque[Fault] = deque()
        self._log: list[RecordedRequest] = []
        self._issued: dict[tuple[str, str, str], dict[str, str]] = {}
        self._minted: list[str] = []
        self._stopping = threading.Event()
        self._server: Optional[_ReuseServer] = None
        self._thread: Optional[threading.Thread] = None
        self.vm_resource_id = (
            f"/subscriptions/{_derived_id('subscription')}/resourcegroups/emulator/providers/"
            "Microsoft.Compute/virtualMachines/legacy-msi-emulator"
        )

    # --- life cycle --------------------------------------------------------------------

    def start(self) -> Emulator:
        """Bind and serve from a background thread. Returns ``self``."""
        if self._server is not None:
            raise RuntimeError("the emulator is already running")
        handler = type("Handler", (_Handler,), {"emulator": self})
        server_class = _ReuseServer6 if ":" in self._host else _ReuseServer
        self._stopping.clear()
        server = server_class((self._host.strip("[]"), self._requested_port), handler)
        bound = str(server.server_address[0])
        if not self._allow_remote and not is_loopback_address(bound):
            # The name resolved to an address that is not loopback: serve nothing there.
            server.server_close()
            raise ValueError(
                f"refusing to serve on {bound}: {self._host!r} resolved to an address that is not loopback; "
                "pass allow_remote=True if this is intended"
            )
        self._server = server
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="legacy-msi-emulator", daemon=True
        )
        self._thread.start()
        if self._ipv6:
            self._start_ipv6(handler, int(server.server_address[1]))
        _LOGGER.info("Emulator listening on %s", self.endpoint)
        return self

    def _start_ipv6(self, handler: type, port: int) -> None:
        """Serve the same port on ``::1`` too; where IPv6 loopback is missing, IPv4 alone."""
        try:
            server6 = _ReuseServer6(("::1", port), handler)
        except OSError as exc:
            _LOGGER.info("Emulator: not listening on [::1]:%d (%s)", port, exc.strerror)
            return
        self._server6 = server6
        threading.Thread(
            target=server6.serve_forever, kwargs={"poll_interval": 0.1}, name="legacy-msi-emulator-v6", daemon=True
        ).start()

    @property
    def ipv6_port(self) -> Optional[int]:
        """The port served on ``::1`` too, or ``None``."""
        return int(self._server6.server_address[1]) if self._server6 is not None else None

    def stop(self) -> None:
        """Stop serving and release the port; hung requests are released."""
        server6, self._server6 = self._server6, None
        if server6 is not None:
            server6.shutdown()
            server6.server_close()
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        _LOGGER.info("Emulator stopped")

    def wait(self) -> None:
        """Block until :meth:`stop` is called (from a signal handler, say)."""
        self._stopping.wait()

    def __enter__(self) -> Emulator:
        return self if self.running else self.start()

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """Whether it is serving."""
        return self._server is not None

    # --- addresses -----------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port (the real one when started with port 0)."""
        if self._server is None:
            raise RuntimeError("the emulator is not running")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """``http://host:port/``, what the extension's settings file holds."""
        return base_url(self._host, self.port)

    @property
    def endpoint(self) -> str:
        """The token URL: what ``LegacyMsiCredential(endpoint=...)`` takes."""
        return self.base_url.rstrip("/") + TOKEN_PATH

    @property
    def imds_authority(self) -> str:
        """The IMDS-style authority (for ``AZURE_POD_IDENTITY_AUTHORITY_HOST``)."""
        return self.base_url.rstrip("/")

    def write_settings(self, path: str | os.PathLike[str]) -> str:
        """Write the extension's settings file for this emulator's port; return its path.

        As the extension does for its ``{"port": N}`` setting: the base URL on
        ``localhost`` with that port (the emulator also listens on ``::1`` by default).
        """
        target = os.fspath(path)
        with open(target, "w", encoding="utf-8") as handle:
            json.dump(settings_document(self._host, self.port), handle)
        return target

    @property
    def public_jwk(self) -> Optional[dict[str, str]]:
        """The public key that signs tokens, as a JWK, or ``None`` when unsigned."""
        return dict(self._signer.jwk) if self._signer else None

    # --- scripting and inspection ------------------------------------------------------

    def add_faults(self, *faults: Fault) -> None:
        """Queue scripted answers; each is used for one token request, in order."""
        with self._lock:
            self._faults.extend(faults)

    def clear_faults(self) -> None:
        """Drop the faults not used yet."""
        with self._lock:
            self._faults.clear()

    @property
    def pending_faults(self) -> int:
        """How many scripted answers are left."""
        with self._lock:
            return len(self._faults)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received, oldest first."""
        with self._lock:
            return list(self._log)

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> bool:
        """Block until ``count`` requests have arrived in all; ``False`` if ``timeout`` seconds pass first."""
        with self._arrived:
            return self._arrived.wait_for(lambda: len(self._log) >= count, timeout=timeout)

    @property
    def request_count(self) -> int:
        """How many requests were received."""
        with self._lock:
            return len(self._log)

    @property
    def tokens_issued(self) -> int:
        """How many distinct tokens were minted for requests (cache hits excluded)."""
        with self._lock:
            return len(self._minted)

    @property
    def minted_tokens(self) -> list[str]:
        """Every token minted for a request, oldest first (for leak checks in tests)."""
        with self._lock:
            return list(self._minted)

    def reset(self) -> None:
        """Forget the request log, the faults and the token cache."""
        with self._lock:
            self._log.clear()
            self._faults.clear()
            self._issued.clear()

    # --- tokens --------------------------------------------------------------------------

    @property
    def _policy(self) -> Policy:
        """What the emulator accepts: the extension's protocol and IMDS's token path."""
        return Policy(
            accept_get=self.accept_get, serves_imds=True, windows=self.flavor == "windows", tenant_id=self.tenant_id
        )

    def _health(self) -> dict[str, Any]:
        """What the health path answers."""
        return {"status": "ok", "role": "emulator"}

    def _identity_claims(self, parameter: Optional[str], value: Optional[str]) -> Optional[dict[str, str]]:
        if parameter is None:
            if not self.system_assigned:
                return None
            return {
                "appid": _derived_id("system", "client"),
                "oid": _derived_id("system", "object"),
                "xms_mirid": self.vm_resource_id,
            }
        assert value is not None
        if self.user_assigned is None:
            known = UserAssignedIdentity(**{parameter: value}).completed()
        else:
            matches = [i for i in self.user_assigned if getattr(i, parameter) == value]
            if not matches:
                return None
            known = matches[0]
        assert known.client_id
        assert known.object_id
        assert known.msi_res_id
        return {"appid": known.client_id, "oid": known.object_id, "xms_mirid": known.msi_res_id}

    def mint_token(
        self,
        resource: str,
        *,
        client_id: Optional[str] = None,
        object_id: Optional[str] = None,
        msi_res_id: Optional[str] = None,
        lifetime: Optional[int] = None,
    ) -> tuple[str, dict[str, Any]]:
        """Mint a token directly (no request, no cache, no validation of ``resource``).

        Returns:
            The JWT and its claims.
        """
        chosen = [
            (k, v) for k, v in (("client_id", client_id), ("object_id", object_id), ("msi_res_id", msi_res_id)) if v
        ]
        parameter, value = chosen[0] if chosen else (None, None)
        identity = self._identity_claims(parameter, value) or self._identity_claims(None, None) or {}
        now = int(self.clock())
        return self._jwt(resource, identity, now, now + (lifetime or self.lifetime))

    def _jwt(self, resource: str, identity: Mapping[str, str], now: int, expires: int) -> tuple[str, dict[str, Any]]:
        claims: dict[str, Any] = {
            "aud": resource,
            "iss": f"https://sts.windows.net/{self.tenant_id}/",
            "iat": now - _BACKDATE,
            "nbf": now - _BACKDATE,
            "exp": expires,
            "aio": _b64url(os.urandom(24)),
            "appid": identity.get("appid"),
            "appidacr": "2",
            "idp": f"https://sts.windows.net/{self.tenant_id}/",
            "idtyp": "app",
            "oid": identity.get("oid"),
            "sub": identity.get("oid"),
            "tid": self.tenant_id,
            "uti": _b64url(os.urandom(16)),
            "ver": "1.0",
            "xms_mirid": identity.get("xms_mirid"),
        }
        header: dict[str, str] = {"typ": "JWT", "alg": "RS256" if self._signer else "none"}
        if self._signer:
            header["kid"] = header["x5t"] = self._signer.kid
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = _b64url(self._signer.sign(signing_input.encode("ascii"))) if self._signer else ""
        return f"{signing_input}.{signature}", claims

    def _token_response(
        self,
        resource: str,
        parameter: Optional[str],
        value: Optional[str],
        identity: Mapping[str, str],
        fault: Optional[Fault],
    ) -> dict[str, str]:
        now = int(self.clock())
        key = (resource, parameter or "", value or "")
        bypass = fault is not None and fault.kind in ("lifetime", "expired", "fields", "wrong-identity")
        with self._lock:
            cached = None if bypass else self._issued.get(key)
            if cached is None or int(cached["expires_on"]) - now <= _REISSUE_BEFORE_EXPIRY:
                lifetime = int(fault.seconds) if fault is not None and fault.kind == "lifetime" else self.lifetime
                if fault is not None and fault.kind == "expired":
                    lifetime = -60
                token, claims = self._jwt(resource, identity, now, now + lifetime)
                cached = {
                    "access_token": token,
                    "refresh_token": "",
                    "expires_on": str(claims["exp"]),
                    "not_before": str(claims["nbf"]),
                    "resource": resource,
                    "token_type": "Bearer",
                }
                self._minted.append(token)
                if not bypass:
                    self._issued[key] = cached
        answer = dict(cached)
        answer["expires_in"] = str(int(answer["expires_on"]) - now)
        if fault is not None and fault.kind == "fields":
            answer.update(fault.fields)
        return answer

    # --- request handling (called from the server's threads) ---------------------------

    def _record(self, request: RecordedRequest) -> Optional[Fault]:
        with self._lock:
            self._log.append(request)
            self._arrived.notify_all()
            return self._faults.popleft() if self._faults else None


class _Handler(http.server.BaseHTTPRequestHandler):
    emulator: Emulator
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without this, Nagle's algorithm holds
    # the body back until the client's delayed ACK, 40 ms on Linux.
    disable_nagle_algorithm = True

    def version_string(self) -> str:
        return "legacy-msi-emulator"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        _LOGGER.debug("%s %s", self.client_address[0], format % args)

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def __getattr__(self, name: str) -> Any:
        # Any other method (HEAD, OPTIONS, made-up ones) is answered like the rest of the
        # protocol, in JSON with an Allow header, not with the standard library's HTML 501.
        if name.startswith("do_"):
            return self._handle
        raise AttributeError(name)

    # --- plumbing ----------------------------------------------------------------------

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length = self.headers.get("Content-Length")
        if not length or not length.isdigit():
            return b""
        if int(length) > self.emulator._max_body:
            self.close_connection = True  # not read: the connection cannot carry another request
            raise Refusal(413, "invalid_request", "The request body is too large.")
        return self.rfile.read(int(length))

    def _read_chunked(self) -> bytes:
        """A chunked request body, read to its end so that nothing is left on the connection."""
        body = b""
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip() or b"x", 16)
            except ValueError:
                self.close_connection = True
                return body
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return body
            if len(body) + size > self.emulator._max_body:
                self.close_connection = True
                raise Refusal(413, "invalid_request", "The request body is too large.")
            body += self.rfile.read(size)
            self.rfile.readline(1024)

    def _send(self, status: int, body: bytes, content_type: str, extra: Optional[Mapping[str, str]] = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, document: Mapping[str, Any], extra: Optional[Mapping[str, str]] = None) -> None:
        self._send(status, json.dumps(document).encode("utf-8"), "application/json; charset=utf-8", extra)

    def _error(self, status: int, error: str, description: str, extra: Optional[Mapping[str, str]] = None) -> None:
        self._json(status, {"error": error, "error_description": description}, extra)

    # --- the protocol ------------------------------------------------------------------

    def _handle(self) -> None:
        emulator = self.emulator
        url = urlsplit(self.path)
        if url.path == HEALTH_PATH and self.command == "GET":
            self._json(200, emulator._health())
            return
        try:
            body = self._read_body()
        except Refusal as refusal:
            self._error(refusal.status, refusal.error, refusal.description)
            return
        params = parameters(url.query, self.command, self.headers.get("Content-Type", ""), body)
        fault = emulator._record(
            RecordedRequest(
                method=self.command,
                path=url.path,
                params=params,
                headers=dict(self.headers.items()),
                client=self.client_address[0],
                received=emulator.clock(),
            )
        )
        if fault is not None and self._play(fault):
            return
        self._answer(params, fault)

    def _answer(self, params: Mapping[str, list[str]], fault: Optional[Fault]) -> None:
        emulator = self.emulator
        decision = decide(
            self.command,
            self.path,
            self.headers,
            params,
            peer_is_loopback=is_loopback_address(self.client_address[0]),
            policy=emulator._policy,
        )
        if isinstance(decision, Refusal):
            self._error(decision.status, decision.error, decision.description, decision.headers)
            return
        ask = decision
        identity = emulator._identity_claims(ask.parameter, ask.value)
        if identity is None:
            self._error(401, "unauthorized_client", "Identity not found: the VM has no such managed identity.")
            return
        if fault is not None and fault.kind == "wrong-identity":
            stranger = UserAssignedIdentity(client_id=_derived_id("stranger", "client")).completed()
            identity = {
                "appid": str(stranger.client_id),
                "oid": str(stranger.object_id),
                "xms_mirid": str(stranger.msi_res_id),
            }
        answer = emulator._token_response(ask.resource, ask.parameter, ask.value, identity, fault)
        name_the_identity(ask, answer, identity["appid"])
        if fault is not None and fault.kind == "truncated":
            raw = json.dumps(answer).encode("utf-8")
            self._send(200, raw[: len(raw) // 2], "application/json; charset=utf-8")
            return
        if fault is not None and fault.kind == "trickle":
            self._trickle(json.dumps(answer).encode("utf-8"), fault.seconds)
            return
        if fault is not None and fault.kind == "reset":
            self._reset(json.dumps(answer).encode("utf-8"))
            return
        self._json(200, answer)

    def _play(self, fault: Fault) -> bool:
        """Act out a fault; ``True`` when it answered, ``False`` to answer normally after."""
        kind = fault.kind
        if kind == "status":
            error = fault.error or _DEFAULT_ERRORS.get(fault.status) or ("unknown" if fault.status >= 500 else "error")
            extra = {"Retry-After": fault.retry_after} if fault.retry_after is not None else None
            self._error(fault.status, error, fault.description or f"Scripted {fault.status} answer.", extra)
            return True
        if kind == "drop":
            self.close_connection = True
            return True
        if kind == "hang":
            self.emulator._stopping.wait(fault.seconds)
            self.close_connection = True
            return True
        if kind == "delay":
            self.emulator._stopping.wait(fault.seconds)
            return False
        if kind == "not_json":
            page = b"<html><head><title>It works</title></head><body>Not the token service.</body></html>"
            self._send(fault.status, page, "text/html")
            return True
        if kind in ("huge", "flood"):
            self._flood(fault.size, announced=kind == "huge")
            return True
        return False

    def _flood(self, size: int, *, announced: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if announced:
            self.send_header("Content-Length", str(size))
        else:
            self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        chunk = b" " * 65536
        sent = 0
        try:
            while sent < size and not self.emulator._stopping.is_set():
                piece = chunk[: size - sent]
                self.wfile.write(piece)
                sent += len(piece)
        except OSError:
            pass  # the client stopped reading, as it should

    def _trickle(self, body: bytes, interval: float) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.flush()
        try:
            for index in range(len(body)):
                self.wfile.write(body[index : index + 1])
                self.wfile.flush()
                if self.emulator._stopping.wait(interval):
                    break
        except OSError:
            pass
        self.close_connection = True

    def _reset(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()
        # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
