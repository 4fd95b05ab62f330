"""``legacy-msi adapt``: today's managed identity protocols on loopback, with tokens from the legacy extension.

Every current Azure client (azure-identity in every language, MSAL, ``az``, azcopy,
kubelogin, Azure PowerShell) honours App Service's managed identity protocol when
``IDENTITY_ENDPOINT`` and ``IDENTITY_HEADER`` are set, and most honour IMDS's protocol at the
host ``AZURE_POD_IDENTITY_AUTHORITY_HOST`` names. The adapter serves both on one port, so
that software that cannot import this package gets tokens on a VM that has only the legacy
extension.

* It stands on the bridge's server shell (:mod:`legacy_msi_credential.bridge`): loopback
  only, browser-proof, relayed requests refused, a whole-request deadline, bounded
  connections, heads, bodies and cache, fair between local users, never blocking its loop.
  What differs is the protocol (:mod:`._protocols`: two of the server core's rule tables) and the source.
* Tokens come from the legacy extension through this package's asynchronous
  :class:`~legacy_msi_credential.aio.LegacyMsiCredential`: its endpoint found once, as the
  credential finds it, but never from ``MSI_*`` (which the adapter ignores, as it ignores
  ``IDENTITY_*`` and ``AZURE_POD_IDENTITY_AUTHORITY_HOST``); its bounded retries and its
  claims check; and the bridge's single flight and cache in front, so N clients asking for
  one identity and resource cost the extension one request.
* The secret (``IDENTITY_HEADER``) is random, kept in a state file only its owner reads, and
  never in argv, a log line, an error or a ``repr``; :class:`Secret` holds it.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import socket
import stat
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Callable, Optional, Union
from urllib.parse import urlsplit

from .._constants import DEFAULT_ADAPT_PORT, HEALTH_PATH, IMDS_TOKEN_PATH, SERVE_HINT
from .._endpoint import ENDPOINT_VARIABLES, EndpointChoice, resolve_endpoint
from .._loopback import is_loopback_host
from .._server._legacy import Policy, TokenAsk, base_url
from .._server._limits import DEFAULT_LIMITS, ServerLimits
from .._server._rules import Refusal, Request
from .._server._safe_file import WrittenFile, write_file

try:
    from ..bridge import SERVER_NAME as BRIDGE_SERVER_NAME
    from ..bridge import Bridge, Notifier, Serving, TokenSource
except ImportError as missing:  # pragma: no cover - aiohttp is in the serve extra
    raise ImportError(f"legacy-msi adapt runs on aiohttp: {SERVE_HINT}") from missing
from . import _protocols
from ._protocols import APP_SERVICE_PATH, AdaptSettings

__all__ = ["SERVER_NAME", "AdaptServing", "Adapter", "Secret", "environment_lines", "read_or_make_secret"]

#: What the ``Server`` header and the health path say the adapter is.
SERVER_NAME = "legacy-msi-adapt"
#: The variables the adapter writes, in the order it writes them.
ENV_IDENTITY_ENDPOINT = "IDENTITY_ENDPOINT"
ENV_IDENTITY_HEADER = "IDENTITY_HEADER"
ENV_POD_IDENTITY_HOST = "AZURE_POD_IDENTITY_AUTHORITY_HOST"
#: Variables of its own environment the adapter never reads: they may be its own, inherited.
IGNORED_VARIABLES = ("IDENTITY_ENDPOINT", "IDENTITY_HEADER", "IDENTITY_SERVER_THUMBPRINT", "IMDS_ENDPOINT",
                     "MSI_ENDPOINT", "MSI_SECRET", "AZURE_POD_IDENTITY_AUTHORITY_HOST")  # fmt: skip
#: The secret's bytes of randomness (43 URL-safe characters).
SECRET_BYTES = 32
#: What a secret in the state file looks like: ``secrets.token_urlsafe`` of at least 16 bytes.
_SECRET_PATTERN = re.compile(r"[A-Za-z0-9_-]{22,128}")
#: The state file's mode: the secret is its owner's alone.
SECRET_FILE_MODE = 0o600
#: The environment file's mode: its owner, and the group given the right to get tokens.
ENV_FILE_MODE = 0o640
#: What a value in the environment file may be made of: nothing a shell or systemd's
#: ``EnvironmentFile=`` would read differently (no quotes, spaces, ``$``, ``\\``, ``#``, ``;``).
_PLAIN_VALUE = re.compile(r"[A-Za-z0-9_.:/\[\]-]+")
#: Where the secret is kept when no ``--state-file`` is given: systemd's ``StateDirectory=``,
#: else the user's XDG state folder.
SECRET_FILE_NAME = "adapt-secret"
#: Seconds the adapter gives the extension per token request (its retries included): a client's
#: own timeout (azure-identity's App Service read is 10 s by default) should not be reached first.
LEGACY_TIMEOUT = 8.0  # s
#: Retries of one token request to the extension (after the first attempt): its 5xx are retried
#: within :data:`LEGACY_TIMEOUT`, but not for the credential's default 20 s.
LEGACY_RETRIES = 2
#: Seconds to wait for the legacy endpoint's ``Server`` header when checking it is not a loop.
PROBE_TIMEOUT = 1.0  # s


class Secret:
    """The shared secret, ``IDENTITY_HEADER``: never shown by ``repr``, ``str`` or pickling."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not _SECRET_PATTERN.fullmatch(value):
            raise ValueError("the adapter's secret must be 22 to 128 URL-safe characters (secrets.token_urlsafe)")
        self._value = value

    @classmethod
    def new(cls) -> Secret:
        return cls(secrets.token_urlsafe(SECRET_BYTES))

    def reveal(self) -> str:
        """The secret itself: for the environment file and the constant-time compare only."""
        return self._value

    def __repr__(self) -> str:
        return "Secret(<hidden>)"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("the adapter's secret is not pickled")


def default_secret_file(environ: Mapping[str, str]) -> str:
    """Where the secret is kept by default: ``$STATE_DIRECTORY`` (systemd), else
    ``$XDG_STATE_HOME/legacy-msi`` or ``~/.local/state/legacy-msi``."""
    state = environ.get("STATE_DIRECTORY", "").split(":")[0]
    if state:
        return os.path.join(state, SECRET_FILE_NAME)
    base = environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "legacy-msi", SECRET_FILE_NAME)


def read_or_make_secret(path: str, *, rotate: bool = False) -> tuple[Secret, bool]:
    """The secret kept at ``path``; a new one is made and written (mode 0600) when there is none,
    or when ``rotate``. Returns the secret and whether it is new.

    Raises:
        ValueError: The file is not a regular file of this user's that only this user can read,
            or does not hold a secret (the message names the path, never the content).
        WriteError: It could not be written.
    """
    if not rotate:
        existing = _read_secret(path)
        if existing is not None:
            return existing, False
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, mode=0o700, exist_ok=True)
    secret = Secret.new()
    write_file(path, (secret.reveal() + "\n").encode("ascii"), mode=SECRET_FILE_MODE, what="the adapter's secret")
    return secret, True


def _read_secret(path: str) -> Optional[Secret]:
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ValueError(f"the adapter's secret file {path} is a link; remove it (--state-file)") from None
        raise ValueError(f"cannot read the adapter's secret file {path}: {exc.strerror} (--state-file)") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"the adapter's secret file {path} is not a regular file (--state-file)")
        if hasattr(os, "getuid") and info.st_uid != os.getuid():
            raise ValueError(f"the adapter's secret file {path} belongs to another user (--state-file)")
        if info.st_mode & 0o077:
            raise ValueError(
                f"the adapter's secret file {path} may be read by others (mode {stat.S_IMODE(info.st_mode):o}); "
                "rotate it: legacy-msi adapt --rotate-secret"
            )
        data = os.read(fd, 1024)
    finally:
        os.close(fd)
    try:
        return Secret(data.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        raise ValueError(
            f"the adapter's secret file {path} holds no secret; rotate it: legacy-msi adapt --rotate-secret"
        ) from None


def environment_lines(identity_endpoint: str, secret: Secret, authority_host: str) -> bytes:
    """The environment file: ``KEY=VALUE`` lines that systemd's ``EnvironmentFile=`` and a POSIX
    shell read the same way, because no value needs quoting (each is checked).

    Raises:
        ValueError: A value that would need quoting (a URL with a character outside
            ``A-Za-z0-9_.:/[]-``).
    """
    pairs = (
        (ENV_IDENTITY_ENDPOINT, identity_endpoint),
        (ENV_IDENTITY_HEADER, secret.reveal()),
        (ENV_POD_IDENTITY_HOST, authority_host),
    )
    for name, value in pairs:
        if not _PLAIN_VALUE.fullmatch(value):
            shown = "the secret" if name == ENV_IDENTITY_HEADER else repr(value)
            raise ValueError(f"{name}: {shown} would need quoting in an environment file")
    return "".join(f"{name}={value}\n" for name, value in pairs).encode("ascii")


def own_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment the adapter reads: its own, without :data:`IGNORED_VARIABLES` (which may be
    the adapter's own, inherited, and would make it ask itself)."""
    return {name: value for name, value in environ.items() if name not in IGNORED_VARIABLES}


class AdaptServing(Serving):
    """App Service's and IMDS's protocols (:mod:`._protocols`) on the bridge's shell."""

    server_name = SERVER_NAME
    role = "adapter"

    def __init__(self, secret: Secret) -> None:
        self._secret = secret.reveal().encode("ascii")

    def decide(self, request: Request, policy: Policy) -> Union[TokenAsk, Refusal]:
        """The table the request's path names decides, with the shell's admission policy."""
        settings = AdaptSettings(self._secret, policy.refuse_forwarded, policy.browser_proof)
        return _protocols.decide(request, settings)

    def answer(self, ask: TokenAsk, token: str, expires_on: int, now: int, client_id: str) -> dict[str, str]:
        return _protocols.answer(ask, token, expires_on, now, client_id=client_id)

    def failed(self, refusal: Refusal) -> Refusal:
        return _protocols.unavailable(refusal)

    def logged_path(self, path: str) -> str:
        # The paths served, in the forms served (Java's leading "//", msal-node's trailing "/"), as sent.
        if _protocols.tolerated_path(path) in (APP_SERVICE_PATH, IMDS_TOKEN_PATH, HEALTH_PATH):
            return path
        return super().logged_path(path)

    def __repr__(self) -> str:
        return "AdaptServing(<secret hidden>)"


def legacy_factory(endpoint: str, **options: Any) -> Callable[[str, Optional[str], Optional[str]], Any]:
    """Makes the asynchronous :class:`~legacy_msi_credential.aio.LegacyMsiCredential` for an
    identity: the adapter's credential factory for :class:`~legacy_msi_credential.bridge.TokenSource`."""
    from ..aio import LegacyMsiCredential

    def make(kind: str, parameter: Optional[str], value: Optional[str]) -> Any:
        identity: dict[str, Any] = {parameter: value} if parameter else {}
        return LegacyMsiCredential(endpoint=endpoint, **identity, **options)

    return make


def probe_server_name(url: str, timeout: float = PROBE_TIMEOUT) -> Optional[str]:
    """The ``Server`` header the legacy endpoint's health path answers with, or None when nothing
    answers there (the extension may start later). Loopback only: anything else is not probed."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if not is_loopback_host(host):
        return None
    try:
        port = parts.port or 80
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(f"GET {HEALTH_PATH} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode("ascii"))
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 16384:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                head += chunk
    except (OSError, ValueError):
        return None
    for line in head.split(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"server":
            return value.strip().decode("latin-1")
    return None


#: The bridge's bounds, with a source request bounded as a request to the extension is here.
_LIMITS = replace(DEFAULT_LIMITS, source_timeout=LEGACY_TIMEOUT)


class Adapter(Bridge):
    """App Service's and IMDS's managed identity protocols on loopback, from the legacy extension.

    Args:
        host: Address to bind (default ``127.0.0.1``, and ``::1`` on the same port where the
            host has IPv6). Loopback only.
        port: Port to bind (0 for a free one).
        secret: The shared secret clients send as ``X-IDENTITY-HEADER``.
        endpoint: The legacy extension's token URL; None finds it as the credential does
            (``LEGACY_MSI_ENDPOINT``, the settings file, the default), never from ``MSI_*``.
        environ: The environment to find it in (``os.environ`` by default).
        source: A token source (tests); by default, the legacy extension through
            :class:`~legacy_msi_credential.aio.LegacyMsiCredential`.
        limits: The server's and its source's bounds (the bridge's, a source request
            bounded by :data:`LEGACY_TIMEOUT`).
        notifier: systemd's notification socket.

    Raises:
        ValueError: A host that is not loopback, or an unusable endpoint (named).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_ADAPT_PORT,
        *,
        secret: Secret,
        endpoint: Optional[str] = None,
        environ: Optional[Mapping[str, str]] = None,
        source: Optional[TokenSource] = None,
        limits: ServerLimits = _LIMITS,
        notifier: Optional[Notifier] = None,
        **kwargs: Any,
    ) -> None:
        self.legacy: EndpointChoice = resolve_endpoint(
            endpoint, environ=own_environment(os.environ if environ is None else environ)
        )
        if source is None:
            source = TokenSource(
                "legacy",
                limits=limits,
                credential_factory=legacy_factory(self.legacy.url, retry_total=LEGACY_RETRIES),
            )
        self.secret = secret
        super().__init__(
            host, port, source=source, limits=limits, notifier=notifier, serving=AdaptServing(secret), **kwargs
        )

    def start(self) -> Adapter:
        """Check the legacy endpoint is not a loop, bind, and serve from a background thread.

        Raises:
            ValueError: The legacy endpoint is this adapter, another adapter or the bridge.
        """
        name = probe_server_name(self.legacy.url)
        if name in (SERVER_NAME, BRIDGE_SERVER_NAME):
            raise ValueError(
                f"the legacy endpoint {self.legacy.url} ({self.legacy.detail}) is {name}, not the "
                "extension: the adapter would ask itself; pass the extension's URL as --endpoint"
            )
        super().start()
        if self._is_self(self.legacy.url):
            self.stop()
            raise ValueError(
                f"the legacy endpoint {self.legacy.url} ({self.legacy.detail}) is this adapter's own "
                "address; pass the extension's URL as --endpoint"
            )
        return self

    def _is_self(self, url: str) -> bool:
        parts = urlsplit(url)
        try:
            port = parts.port or 80
        except ValueError:
            return False
        return port == self.port and is_loopback_host(parts.hostname or "")

    @property
    def authority_host(self) -> str:
        """``http://host:port``: what ``AZURE_POD_IDENTITY_AUTHORITY_HOST`` names (IMDS's protocol)."""
        return base_url(self._host, self.port).rstrip("/")

    @property
    def identity_endpoint(self) -> str:
        """What ``IDENTITY_ENDPOINT`` names (App Service's protocol)."""
        return self.authority_host + APP_SERVICE_PATH

    @property
    def imds_endpoint(self) -> str:
        """IMDS's token URL on this adapter."""
        return self.authority_host + IMDS_TOKEN_PATH

    @property
    def endpoint(self) -> str:
        return self.identity_endpoint

    def environment(self) -> bytes:
        """The environment file's content."""
        return environment_lines(self.identity_endpoint, self.secret, self.authority_host)

    def write_environment(self, path: str) -> WrittenFile:
        """Write the environment file (mode 0640, whole and at once, never through a link)."""
        return write_file(path, self.environment(), mode=ENV_FILE_MODE, what="the adapter's environment file")

    def __repr__(self) -> str:
        where = self.identity_endpoint if self.running else "not running"
        return f"Adapter({where}, legacy endpoint {self.legacy.url})"


#: Variables a credential would take the legacy endpoint from that the adapter still reads.
LEGACY_VARIABLES = tuple(name for name in ENDPOINT_VARIABLES if name not in IGNORED_VARIABLES)


def __dir__() -> list[str]:
    # The public names and the module's own, not those it imports for its own use.
    return sorted({name for name in globals() if name.startswith("_")} | set(__all__))
