"""A test tool: a local stand-in for the legacy managed identity VM extension.

What it is for: trying clients of the extension (this package's credentials first) on a
machine without one, faults included. It is not a token service (``legacy-msi serve`` is,
and shares only the protocol's rules, :mod:`legacy_msi_credential._server`, with it).
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

import http.server
import json
import logging
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Callable, Optional
from urllib.parse import urlsplit

from .._constants import DEFAULT_PORT, EMULATOR_LIFETIME, HEALTH_PATH
from .._loopback import is_loopback_address, is_loopback_host
from .._server._legacy import Listening, Policy, admit, decide, name_the_identity, parameters
from .._server._rules import JSON_CONTENT_TYPE, Answer, Refusal, Request, json_answer, refusal_answer
from ._faults import KINDS, Fault, TokenPlan, parse_fault_spec
from ._tokens import Signer, UserAssignedIdentity, derived_id, mint_jwt, stranger

__all__ = ["Emulator", "Fault", "RecordedRequest", "UserAssignedIdentity", "parse_fault_spec"]

_LOGGER = logging.getLogger(__name__)

#: Cached tokens are re-issued when this close to expiry, like the extension does.
_REISSUE_BEFORE_EXPIRY = 300  # s
DEFAULT_LIFETIME = EMULATOR_LIFETIME
_MAX_BODY = 1024 * 1024
#: Connections the kernel queues for each listening socket before they are accepted.
_BACKLOG = 256
#: What a request with no scripted fault plays: the normal answer.
_NO_FAULT = Fault.ok()
#: Said once per process when tokens go out unsigned for want of ``cryptography``: a
#: client that checks signatures refuses them, and the cause is far from the symptom.
_UNSIGNED_WARNING = (
    "the emulator mints unsigned tokens (alg: none): the 'cryptography' package is not installed. "
    'To sign them (RS256), pip install ".[emulator]" in a clone of legacy-msi-credential; to choose '
    "unsigned tokens and not be told, pass sign=False (legacy-msi emulate --unsigned)"
)
_unsigned_said: set[str] = set()
_unsigned_lock = threading.Lock()


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


class _Server(http.server.ThreadingHTTPServer):
    """The standard library's threading server, on a socket bound and listening already
    (:func:`~legacy_msi_credential._server._binding.bind_listeners`)."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, sock: socket.socket, handler: type) -> None:
        self.address_family = sock.family
        super().__init__(sock.getsockname()[:2], handler, bind_and_activate=False)
        self.socket.close()  # the one made by the base class, never bound
        self.socket = sock
        self.server_address = sock.getsockname()
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that drops its connection (a credential abandoning a slow answer) is
        # ordinary here: a DEBUG line, not a traceback on stderr.
        kind = sys.exc_info()[0]
        _LOGGER.debug("connection from %s ended abruptly (%s)", client_address[0], kind.__name__ if kind else "?")


class Emulator(Listening):
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
            for clients whose ``localhost`` resolves to ``::1`` first; left out, and said
            once, only where the host has no IPv6. A name is served on every address it
            resolves to, ``::`` on every address of both families.
        known_resources: Custom resources (an application's URI) answered besides those Azure
            AD knows everywhere (well-known URIs, instances such as
            ``https://ACCOUNT.blob.core.windows.net``, GUIDs, ``api://``); any other resource is
            refused as the extension relays Azure AD's refusal, so that a typo fails here and
            not only in Azure. None answers every well-formed resource.
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
        known_resources: Optional[Iterable[str]] = (),
    ) -> None:
        if flavor not in ("linux", "windows"):
            raise ValueError(f"flavor must be 'linux' or 'windows', not {flavor!r}")
        self.flavor = flavor
        #: Resources answered besides the well-known ones (``_server._legacy.known_resource``); None: any.
        self.known_resources = None if known_resources is None else frozenset(known_resources)
        self._ipv6 = host == "127.0.0.1" if ipv6 is None else ipv6
        #: Largest request body read.
        self._max_body = _MAX_BODY
        self._servers: list[_Server] = []
        self._threads: list[threading.Thread] = []
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
        self.tenant_id = tenant_id or derived_id("tenant")
        self.system_assigned = system_assigned
        self.user_assigned = None if user_assigned is None else [i.completed() for i in user_assigned]
        self.accept_get = accept_get
        self.clock = clock
        self._signer = Signer.shared() if sign is not False else None
        if sign and self._signer is None:
            raise RuntimeError(
                "signed tokens need the 'cryptography' package: pip install \".[emulator]\" in a clone of "
                "legacy-msi-credential"
            )
        if sign is None and self._signer is None:
            with _unsigned_lock:
                first = not _unsigned_said
                _unsigned_said.add(_UNSIGNED_WARNING)
            if first:
                _LOGGER.warning(_UNSIGNED_WARNING)
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._faults: deque[Fault] = deque()
        self._log: list[RecordedRequest] = []
        self._issued: dict[tuple[str, str, str], dict[str, str]] = {}
        self._minted: list[str] = []
        self._stopping = threading.Event()
        self._server: Optional[_Server] = None
        self.vm_resource_id = (
            f"/subscriptions/{derived_id('subscription')}/resourcegroups/emulator/providers/"
            "Microsoft.Compute/virtualMachines/legacy-msi-emulator"
        )

    # --- life cycle --------------------------------------------------------------------

    def start(self) -> Emulator:
        """Bind (:meth:`_bind`, which says what it raises) and serve from background threads. Returns ``self``."""
        if self._server is not None:
            raise RuntimeError("the emulator is already running")
        listeners = self._bind(ipv6_loopback=self._ipv6, backlog=_BACKLOG)
        handler = type("Handler", (_Handler,), {"emulator": self})
        self._stopping.clear()
        servers = [_Server(sock, handler) for sock in listeners.sockets]
        self._server, self._servers = servers[0], servers
        for index, server in enumerate(servers):
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.1},
                name=f"legacy-msi-emulator-{index}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)
        _LOGGER.info("Emulator listening on %s", self.endpoint)
        return self

    @property
    def ipv6_port(self) -> Optional[int]:
        """The port served on ``::1`` too, or ``None``."""
        for server in self._servers[1:]:
            if server.server_address[0] == "::1":
                return int(server.server_address[1])
        return None

    def stop(self) -> None:
        """Stop serving and release the port; hung requests are released."""
        servers, self._servers, self._server = self._servers, [], None
        if not servers:
            return
        self._stopping.set()
        for server in servers:
            server.shutdown()
            server.server_close()
        threads, self._threads = self._threads, []
        for thread in threads:
            thread.join(timeout=5)
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

    def __repr__(self) -> str:
        # What a test's failure message needs to tell emulators apart; no token, no key.
        where = self.endpoint if self.running else "not running"
        identities = "any" if self.user_assigned is None else str(len(self.user_assigned))
        return (
            f"<Emulator {where} flavor={self.flavor} system_assigned={self.system_assigned} "
            f"user_assigned={identities} signed={self._signer is not None}>"
        )

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
    def imds_authority(self) -> str:
        """The IMDS-style authority (for ``AZURE_POD_IDENTITY_AUTHORITY_HOST``): the emulator also
        answers IMDS's token path."""
        return self.base_url.rstrip("/")

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
            accept_get=self.accept_get,
            serves_imds=True,
            windows=self.flavor == "windows",
            tenant_id=self.tenant_id,
            known_resources=self.known_resources,
        )

    def _health(self) -> dict[str, Any]:
        """What the health path answers."""
        return {"status": "ok", "role": "emulator"}

    def _identity_claims(self, parameter: Optional[str], value: Optional[str]) -> Optional[dict[str, str]]:
        if parameter is None:
            if not self.system_assigned:
                return None
            return {
                "appid": derived_id("system", "client"),
                "oid": derived_id("system", "object"),
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
        return mint_jwt(self._signer, self.tenant_id, resource, identity, now, now + (lifetime or self.lifetime))

    def _token_response(
        self,
        resource: str,
        parameter: Optional[str],
        value: Optional[str],
        identity: Mapping[str, str],
        plan: TokenPlan,
    ) -> dict[str, str]:
        """The token answer: the cached token while it has more than 5 minutes left, else a new one
        (always a new one, and not cached, when a fault changes it)."""
        now = int(self.clock())
        key = (resource, parameter or "", value or "")
        with self._lock:
            cached = None if plan.fresh else self._issued.get(key)
            if cached is None or int(cached["expires_on"]) - now <= _REISSUE_BEFORE_EXPIRY:
                lifetime = self.lifetime if plan.lifetime is None else plan.lifetime
                token, claims = mint_jwt(self._signer, self.tenant_id, resource, identity, now, now + lifetime)
                cached = {
                    "access_token": token,
                    "refresh_token": "",
                    "expires_on": str(claims["exp"]),
                    "not_before": str(claims["nbf"]),
                    "resource": resource,
                    "token_type": "Bearer",
                }
                self._minted.append(token)
                if not plan.fresh:
                    self._issued[key] = cached
        answer = dict(cached)
        answer["expires_in"] = str(int(answer["expires_on"]) - now)
        answer.update(plan.fields)
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

    def __getattr__(self, name: str) -> Any:
        # The standard library looks up ``do_<METHOD>``: every method (GET and POST, and HEAD,
        # OPTIONS or made-up ones) is handled alike, by the protocol's rules, and is answered
        # in JSON with an Allow header where it is refused, not with the library's HTML 501.
        if name.startswith("do_"):
            return self._handle
        raise AttributeError(name)

    # --- plumbing ----------------------------------------------------------------------

    @property
    def stopping(self) -> threading.Event:
        """Set when the emulator stops: what a fault that waits also waits for."""
        return self.emulator._stopping

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length = self.headers.get("Content-Length")
        if not length or not length.isdigit():
            return b""
        if int(length) > self.emulator._max_body:
            self.close_connection = True  # not read: the connection cannot carry another request
            raise Refusal(413, "invalid_request", "The request body is too large.")
        body = self.rfile.read(int(length))
        if len(body) < int(length):  # the client closed its side first: never judged on part of its body
            raise self._ended_early()
        return body

    def _ended_early(self) -> Refusal:
        """For a body that ended before its end, or whose chunks are malformed: judged on
        nothing, refused, and the connection closed."""
        self.close_connection = True
        return Refusal(400, "invalid_request", "The request body ended early or is malformed.")

    def _read_chunked(self) -> bytes:
        """A chunked request body, read to its end so that nothing is left on the connection."""
        body = b""
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip() or b"x", 16)
            except ValueError:
                raise self._ended_early() from None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return body
            if len(body) + size > self.emulator._max_body:
                self.close_connection = True
                raise Refusal(413, "invalid_request", "The request body is too large.")
            data = self.rfile.read(size)
            if len(data) < size:
                raise self._ended_early()
            body += data
            self.rfile.readline(1024)

    def answer_bytes(
        self, status: int, body: bytes, content_type: str, extra: Optional[Mapping[str, str]] = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def answer(self, answer: Answer) -> None:
        self.answer_bytes(answer.status, answer.body, JSON_CONTENT_TYPE, answer.headers)

    def _json(self, status: int, document: Mapping[str, Any]) -> None:
        self.answer(json_answer(status, document))

    def answer_error(
        self, status: int, error: str, description: str, extra: Optional[Mapping[str, str]] = None
    ) -> None:
        self.answer(refusal_answer(Refusal(status, error, description, extra)))

    # --- the protocol ------------------------------------------------------------------

    def _handle(self) -> None:
        emulator = self.emulator
        url = urlsplit(self.path)
        if url.path == HEALTH_PATH and self.command == "GET":
            # The rule every path obeys (a remote client, even with allow_remote, is refused).
            refused = admit(self._facts({}), emulator._policy)
            self.answer(refusal_answer(refused) if refused is not None else json_answer(200, emulator._health()))
            return
        try:
            body = self._read_body()
            params = parameters(url.query, self.command, self.headers.get("Content-Type", ""), body)
        except Refusal as refusal:
            self.answer(refusal_answer(refusal))
            return
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
        played = fault or _NO_FAULT
        before = KINDS[played.kind].before
        if before is not None and before(self, played):
            return
        self._answer(params, played)

    def _facts(self, params: Mapping[str, list[str]]) -> Request:
        """The request as the rules read it: the peer judged on the socket's address, never a header."""
        return Request(
            self.command, self.path, tuple(self.headers.items()), is_loopback_address(self.client_address[0]), params
        )

    def _answer(self, params: Mapping[str, list[str]], fault: Fault) -> None:
        emulator = self.emulator
        decision = decide(self._facts(params), emulator._policy)
        if isinstance(decision, Refusal):
            self.answer(refusal_answer(decision))
            return
        ask = decision
        identity = emulator._identity_claims(ask.parameter, ask.value)
        if identity is None:
            self.answer_error(401, "unauthorized_client", "Identity not found: the VM has no such managed identity.")
            return
        kind = KINDS[fault.kind]
        plan = kind.token(fault)
        if plan.stranger:
            identity = stranger()
        answer = emulator._token_response(ask.resource, ask.parameter, ask.value, identity, plan)
        name_the_identity(ask, answer, identity["appid"])
        if kind.deliver is not None:
            kind.deliver(self, fault, json.dumps(answer).encode("utf-8"))
            return
        self._json(200, answer)


def __dir__() -> list[str]:
    # The public names and the module's own, not those it imports for its own use.
    return sorted({name for name in globals() if name.startswith("_")} | set(__all__))
