"""Where the legacy endpoint is: argument, environment, settings file or default."""

from __future__ import annotations

import json
import os
import re
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Optional
from urllib.parse import SplitResult, urlsplit, urlunsplit

from ._constants import (
    DEFAULT_ENDPOINT,
    ENV_ENDPOINT,
    ENV_MSI_ENDPOINT,
    ENV_MSI_SECRET,
    ENV_SETTINGS_FILE,
    LINUX_SETTINGS_FILE,
    SETTINGS_FILE_MAX_BYTES,
    TOKEN_PATH,
    WINDOWS_SETTINGS_FILE,
)
from ._loopback import is_loopback_host

#: The sources, in the order they are consulted.
SOURCE_ARGUMENT = "argument"
SOURCE_ENV = ENV_ENDPOINT
SOURCE_CLOUD_SHELL = ENV_MSI_ENDPOINT
SOURCE_SETTINGS_FILE = "settings file"
SOURCE_DEFAULT = "default"


class SettingsFileError(ValueError):
    """The extension's settings file exists but cannot be used."""


@dataclass(frozen=True)
class EndpointChoice:
    """The token endpoint a credential calls, and why.

    Attributes:
        url: The full token URL, ending in ``/oauth2/token`` unless given otherwise.
        source: One of ``argument``, ``LEGACY_MSI_ENDPOINT``, ``MSI_ENDPOINT``,
            ``settings file`` or ``default``.
        detail: A sentence saying where the URL came from.
    """

    url: str
    source: str
    detail: str


#: What an authority may look like: a plain name or IPv4 address, or a bracketed IPv6
#: address, and an optional port. Anything else (backslashes, percent signs, user
#: information, odd brackets) is a form two URL parsers may read differently.
_AUTHORITY = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)(?::[0-9]{1,5})?")


def validate_url(url: str, *, what: str, allow_insecure_http: bool = False) -> str:
    """Check a token URL and return it unchanged.

    Args:
        url: The URL to check.
        what: Where it came from, for the error message.
        allow_insecure_http: Accept plain ``http`` to a host that is not loopback.

    Returns:
        ``url``.

    Raises:
        ValueError: The URL is not an absolute http(s) URL, carries credentials or a
            fragment, or is plain http to a host other than loopback without the opt-in.
    """
    if not isinstance(url, str) or not url.strip():
        raise ValueError(f"{what}: the endpoint URL is empty")
    if any(ord(char) < 0x21 or ord(char) == 0x7F for char in url):
        raise ValueError(f"{what}: the endpoint URL contains whitespace or control characters")
    if not url.isascii() or "\\" in url:
        raise ValueError(f"{what}: the endpoint URL must be plain ASCII without backslashes")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{what}: {url!r} is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{what}: {url!r} is not an absolute http:// or https:// URL")
    if "@" in parts.netloc:
        raise ValueError(f"{what}: the endpoint URL must not carry user information")
    if not _AUTHORITY.fullmatch(parts.netloc):
        raise ValueError(f"{what}: {parts.netloc!r} is not a plain host[:port]")
    _same_reading(url, parts, what)
    if parts.fragment:
        raise ValueError(f"{what}: the endpoint URL must not have a fragment")
    if port == 0:
        raise ValueError(f"{what}: port 0 is not a port one can connect to")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname) and not allow_insecure_http:
        raise ValueError(
            f"{what}: refusing plain http to {parts.hostname!r}, which is not a loopback address; "
            "the legacy extension only listens on localhost. Pass allow_insecure_http=True "
            "if this really is intended."
        )
    return url


def _same_reading(url: str, parts: SplitResult, what: str) -> None:
    """Refuse a URL that urllib3 (which the transports use) reads differently from ``urlsplit``."""
    from urllib3.util import parse_url

    try:
        theirs = parse_url(url)
    except ValueError:
        raise ValueError(f"{what}: {url!r} is not a valid URL") from None
    mine_host = (parts.hostname or "").lower()
    their_host = (theirs.host or "").strip("[]").lower()
    if (theirs.scheme or "").lower() != parts.scheme or their_host != mine_host or theirs.port != parts.port:
        raise ValueError(f"{what}: {url!r} is read differently by different URL parsers; write it plainly")


def token_url_from_base(base: str) -> str:
    """Append ``/oauth2/token`` to a base URL, tolerating a trailing slash or the full path."""
    parts = urlsplit(base)
    path = parts.path.rstrip("/")
    if not path.endswith(TOKEN_PATH):
        path += TOKEN_PATH
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


def default_settings_file(environ: Mapping[str, str], platform: str = sys.platform) -> str:
    """The path of the extension's settings file on this platform, or its override."""
    override = environ.get(ENV_SETTINGS_FILE)
    if override:
        return override
    if platform.startswith("win"):
        drive = environ.get("SystemDrive") or environ.get("SYSTEMDRIVE") or "C:"
        return drive.rstrip("\\/") + "\\" + WINDOWS_SETTINGS_FILE
    return LINUX_SETTINGS_FILE


def read_settings_file(path: str) -> Optional[str]:
    """Read the base URL the extension wrote, or ``None`` when the file does not exist.

    Args:
        path: The settings file.

    Returns:
        The ``url`` value, or ``None`` when there is no file.

    Raises:
        SettingsFileError: The file exists but is a link, not a regular file, too large,
            not UTF-8 JSON, or has no string ``url``.
    """
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SettingsFileError(f"settings file {path}: cannot be examined ({exc.strerror})") from None
    if stat.S_ISLNK(info.st_mode):
        raise SettingsFileError(f"settings file {path}: is a symbolic link; refusing to follow it")
    if not stat.S_ISREG(info.st_mode):
        raise SettingsFileError(f"settings file {path}: is not a regular file")
    if info.st_size > SETTINGS_FILE_MAX_BYTES:
        raise SettingsFileError(
            f"settings file {path}: is {info.st_size} bytes, more than the "
            f"{SETTINGS_FILE_MAX_BYTES} a settings file can be"
        )
    # O_NONBLOCK: if the file was swapped for a FIFO or a device after lstat, opening it
    # must not block; what was opened is checked again on the descriptor itself.
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
        with os.fdopen(fd, "rb") as handle:
            opened = os.fstat(handle.fileno())
            if not stat.S_ISREG(opened.st_mode):
                raise SettingsFileError(f"settings file {path}: is not a regular file")
            raw = handle.read(SETTINGS_FILE_MAX_BYTES + 1)
    except OSError as exc:
        raise SettingsFileError(f"settings file {path}: cannot be read ({exc.strerror})") from None
    if len(raw) > SETTINGS_FILE_MAX_BYTES:
        raise SettingsFileError(f"settings file {path}: is larger than {SETTINGS_FILE_MAX_BYTES} bytes")
    try:
        document = json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise SettingsFileError(f"settings file {path}: is not UTF-8 JSON") from None
    if not isinstance(document, dict):
        raise SettingsFileError(f"settings file {path}: is not a JSON object")
    url = document.get("url")
    if not isinstance(url, str) or not url.strip():
        raise SettingsFileError(f'settings file {path}: has no "url" string')
    return url.strip()


@dataclass(frozen=True)
class _Context:
    """What every source may look at."""

    argument: Optional[str]
    environ: Mapping[str, str]
    platform: str
    allow_insecure_http: bool


class EndpointSource:
    """One place the endpoint can come from. Adding a source is one subclass and one entry in :data:`SOURCES`.

    Attributes:
        name: What :attr:`EndpointChoice.source` says when this source is chosen.
        variables: Environment variables it reads (tests isolate them; the doctor shows them).
        unreachable_hint: Added to "nothing is listening" when the URL came from here.
    """

    name = ""
    variables: tuple[str, ...] = ()
    unreachable_hint = ""

    def find(self, context: _Context) -> Optional[EndpointChoice]:
        """The endpoint, or ``None`` to ask the next source.

        Raises:
            ValueError: This source names an unusable URL.
            SettingsFileError: The settings file exists but cannot be used.
        """
        raise NotImplementedError

    def describe(self, context: _Context) -> str:
        """One line for ``legacy-msi doctor``: what this source says on this machine."""
        raise NotImplementedError


class _Argument(EndpointSource):
    name = SOURCE_ARGUMENT

    def find(self, context: _Context) -> Optional[EndpointChoice]:
        if context.argument is None:
            return None
        url = validate_url(context.argument, what="endpoint argument", allow_insecure_http=context.allow_insecure_http)
        return EndpointChoice(url, self.name, "passed as the endpoint argument")

    def describe(self, context: _Context) -> str:
        return f"--endpoint: {context.argument or 'not given'}"


class _Variable(EndpointSource):
    """``LEGACY_MSI_ENDPOINT``: this package's own variable."""

    name = SOURCE_ENV
    variables = (ENV_ENDPOINT,)

    def find(self, context: _Context) -> Optional[EndpointChoice]:
        value = context.environ.get(ENV_ENDPOINT)
        if not value:
            return None
        url = validate_url(value, what=ENV_ENDPOINT, allow_insecure_http=context.allow_insecure_http)
        return EndpointChoice(url, self.name, f"from the {ENV_ENDPOINT} environment variable")

    def describe(self, context: _Context) -> str:
        return f"{ENV_ENDPOINT}: {context.environ.get(ENV_ENDPOINT) or 'not set'}"


class _CloudShell(EndpointSource):
    """``MSI_ENDPOINT`` without ``MSI_SECRET``: Azure Cloud Shell announces this protocol so."""

    name = SOURCE_CLOUD_SHELL
    variables = (ENV_MSI_ENDPOINT, ENV_MSI_SECRET)

    def find(self, context: _Context) -> Optional[EndpointChoice]:
        value = context.environ.get(ENV_MSI_ENDPOINT)
        if not value or context.environ.get(ENV_MSI_SECRET):
            return None
        url = validate_url(value, what=ENV_MSI_ENDPOINT, allow_insecure_http=context.allow_insecure_http)
        return EndpointChoice(
            url,
            self.name,
            f"from the {ENV_MSI_ENDPOINT} environment variable ({ENV_MSI_SECRET} unset: Cloud Shell's protocol)",
        )

    def describe(self, context: _Context) -> str:
        value = context.environ.get(ENV_MSI_ENDPOINT)
        note = (
            " (ignored: MSI_SECRET is set, so it is App Service's protocol)"
            if context.environ.get(ENV_MSI_SECRET)
            else ""
        )
        return f"{ENV_MSI_ENDPOINT}: {value or 'not set'}{note if value else ''}"


class _SettingsFile(EndpointSource):
    """The extension's service-url discovery document."""

    name = SOURCE_SETTINGS_FILE
    variables = (ENV_SETTINGS_FILE,)

    def find(self, context: _Context) -> Optional[EndpointChoice]:
        path = default_settings_file(context.environ, context.platform)
        base = read_settings_file(path)
        if base is None:
            return None
        try:
            url = validate_url(
                token_url_from_base(base), what=f"settings file {path}", allow_insecure_http=context.allow_insecure_http
            )
        except ValueError as exc:
            raise SettingsFileError(str(exc)) from None
        return EndpointChoice(url, self.name, f"from the extension's settings file {path}")

    def describe(self, context: _Context) -> str:
        path = default_settings_file(context.environ, context.platform)
        base = read_settings_file(path)  # a SettingsFileError is the doctor's to report
        if base is None:
            return f"settings file {path}: absent"
        try:
            parts = urlsplit(base)
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            return f"settings file {path}: url {base!r}"
        return f"settings file {path}: url {base!r} (the extension's port: {port})"


class _Default(EndpointSource):
    name = SOURCE_DEFAULT
    unreachable_hint = "; the legacy managed identity extension is not running on this machine"

    def find(self, context: _Context) -> Optional[EndpointChoice]:
        path = default_settings_file(context.environ, context.platform)
        return EndpointChoice(
            DEFAULT_ENDPOINT,
            self.name,
            f"the extension's default; no argument, environment variable or settings file ({path})",
        )

    def describe(self, context: _Context) -> str:
        return f"default: {DEFAULT_ENDPOINT}"


#: The sources, in the order they are consulted; the last always answers.
SOURCES: tuple[EndpointSource, ...] = (_Argument(), _Variable(), _CloudShell(), _SettingsFile(), _Default())
#: Every environment variable that can choose the endpoint.
ENDPOINT_VARIABLES = tuple(name for source in SOURCES for name in source.variables)


def source_named(name: str) -> EndpointSource:
    """The source whose :attr:`EndpointSource.name` is ``name``."""
    return next(source for source in SOURCES if source.name == name)


def endpoint_context(
    endpoint: Optional[str] = None,
    *,
    environ: Optional[Mapping[str, str]] = None,
    platform: str = sys.platform,
    allow_insecure_http: bool = False,
) -> _Context:
    """What the sources look at: the argument, the environment, the platform, the opt-in."""
    return _Context(endpoint, os.environ if environ is None else environ, platform, allow_insecure_http)


def resolve_endpoint(
    endpoint: Optional[str] = None,
    *,
    environ: Optional[Mapping[str, str]] = None,
    platform: str = sys.platform,
    allow_insecure_http: bool = False,
) -> EndpointChoice:
    """Find the token endpoint: the first of :data:`SOURCES` that names one.

    The order: the ``endpoint`` argument, ``LEGACY_MSI_ENDPOINT``, ``MSI_ENDPOINT`` when
    ``MSI_SECRET`` is unset (Azure Cloud Shell), the extension's settings file (path
    overridable by ``LEGACY_MSI_SETTINGS_FILE``), then ``http://localhost:50342/oauth2/token``.

    Args:
        endpoint: An explicit token URL.
        environ: The environment to read; ``os.environ`` by default.
        platform: ``sys.platform`` by default; decides where the settings file is.
        allow_insecure_http: Accept plain ``http`` to a host that is not loopback.

    Returns:
        The chosen endpoint and its source.

    Raises:
        ValueError: The chosen URL is unusable.
        SettingsFileError: The settings file exists but cannot be used.
    """
    context = endpoint_context(endpoint, environ=environ, platform=platform, allow_insecure_http=allow_insecure_http)
    for source in SOURCES:
        choice = source.find(context)
        if choice is not None:
            return choice
    raise AssertionError("the default source always answers")  # pragma: no cover
