"""What the ``legacy-msi`` commands share: identity options, times, claims, settings files.

Only the standard library and this package's light modules are imported here: a command
imports what it needs when it runs, so that ``--help`` and usage errors cost little more
than starting Python.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any, Optional
from urllib.parse import urlsplit

from .. import _claims
from .._constants import DEFAULT_PORT, ENV_IMDS_URL, IDENTITY_PARAMETERS

DEFAULT_RESOURCE = "https://management.azure.com/"


def decode_claims(token: str) -> dict[str, Any]:
    """The JWT's claims, decoded but **not verified**; ``{}`` for a token that is not a JWT."""
    return _claims.decode_claims(token) or {}


def iso(epoch: float) -> str:
    try:
        return datetime.fromtimestamp(epoch, timezone.utc).isoformat()
    except (ValueError, OverflowError, OSError):
        return str(epoch)


def when(epoch: int, now: float) -> str:
    try:
        moment = datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (ValueError, OverflowError, OSError):
        moment = f"{epoch} (Unix seconds)"
    left = int(epoch - now)
    if left >= 0:
        return f"{moment} (in {left // 60} min {left % 60} s)"
    return f"{moment} ({-left} s ago)"


def identity_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The identity options given, as the credential's keyword arguments."""
    chosen = {name: getattr(args, name) for name in IDENTITY_PARAMETERS}
    return {name: value for name, value in chosen.items() if value is not None}


def add_identity_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    system = "(default: the system-assigned identity)"
    group.add_argument("--client-id", help=f"client ID of a user-assigned identity {system}")
    group.add_argument("--object-id", help=f"object (principal) ID of a user-assigned identity {system}")
    group.add_argument("--msi-res-id", help=f"ARM resource ID of a user-assigned identity {system}")


def add_resource_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """The resource, as a positional argument or as ``az account get-access-token`` takes it
    (``--resource R``, ``--scope S``); :func:`chosen_resource` makes one of them."""
    parser.add_argument(
        "resource_words",
        nargs="*",
        metavar="SCOPE_OR_RESOURCE",
        help=f"{what} (default: {DEFAULT_RESOURCE})",
    )
    parser.add_argument(
        "--resource",
        dest="resource_options",
        action="append",
        default=[],
        metavar="RESOURCE",
        help="the same, as az takes it (default: none)",
    )
    parser.add_argument(
        "--scope",
        dest="resource_options",
        action="extend",
        nargs="+",
        metavar="SCOPE",
        help="the same, as az takes it: one scope, or several of one resource (default: none)",
    )


def chosen_resource(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Set ``args.resource`` from the words given in any of :func:`add_resource_argument`'s forms,
    quoted together or not; a usage error unless they name one resource (what the endpoint issues)."""
    words = [word for given in (*args.resource_words, *args.resource_options) for word in given.split()]
    scopes = list(dict.fromkeys(words))  # the same scope twice is one
    resources = list(dict.fromkeys(_resource_of(scope) for scope in scopes))
    if len(resources) > 1:
        parser.error(
            f"the legacy endpoint issues a token for one resource at a time; got {len(resources)} "
            f"({', '.join(resources)}): run once for each"
        )
    args.resource = scopes[0] if len(scopes) == 1 else (resources[0] + "/.default" if resources else DEFAULT_RESOURCE)


def _resource_of(scope: str) -> str:
    """The resource a scope belongs to: ``https://vault.azure.net/.default`` and
    ``https://vault.azure.net/user_impersonation`` both to ``https://vault.azure.net``."""
    parts = urlsplit(scope)
    if parts.scheme and parts.netloc and parts.path.strip("/"):
        return f"{parts.scheme}://{parts.netloc}"
    return scope.rstrip("/")


@contextlib.contextmanager
def settings_file(server: Any, path: Optional[str]) -> Iterator[Optional[str]]:
    """Write the extension's settings file for ``server`` (when asked); remove it on the way out,
    but only while it is still the file written here: a link or another process's file put
    there since is left alone."""
    written = server.publish_settings(path) if path else None
    try:
        yield written.path if written else None
    finally:
        if written:
            with contextlib.suppress(OSError):
                written.remove()


def add_listening_options(parser: argparse.ArgumentParser, *, remote_note: str = "") -> None:
    """``--port``, ``--host`` and ``--allow-remote``, worded the same for every server command."""
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port to bind; 0 for a free one (default: {DEFAULT_PORT})"
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind: 127.0.0.1 serves ::1 too, on the same port (left out only where the host has no IPv6); "
        "a name serves every address it resolves to; :: serves every address, IPv4 included; a port another "
        "process holds on any of them is a refusal to start (default: 127.0.0.1)",
    )
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        help=f"allow binding an address that is not loopback{remote_note} (default: refused)",
    )


def add_access_log_option(parser: argparse.ArgumentParser) -> None:
    """``--no-access-log``, read by :func:`served_logs`."""
    parser.add_argument(
        "--no-access-log",
        action="store_true",
        help="no line per request on stderr (by default: method, path, identity kind, status and milliseconds)",
    )


@contextlib.contextmanager
def served_logs(access_log: bool) -> Iterator[None]:
    """The logging of a process that serves (``serve``, ``adapt``): one access line per request on
    stderr (unless ``access_log`` is false), and every record of the process, azure-identity's
    and asyncio's too, written from a thread of its own, so that a stderr nobody reads never
    stops the serving loop (what does not fit in the queue is dropped, counted and said on stop)."""
    from ..bridge._log import BRIDGE_LOGGERS, OFF_LOOP

    if access_log:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        access = logging.getLogger("legacy_msi_credential.bridge.access")
        access.addHandler(stream)
        access.setLevel(logging.INFO)
        access.propagate = False
    held = ("", *BRIDGE_LOGGERS)
    OFF_LOOP.hold(*held)
    try:
        yield
    finally:
        OFF_LOOP.release(*held)


def point_azure_identity_at_imds(url: Optional[str]) -> None:
    """Send azure-identity's IMDS requests to ``url`` (``--imds-url``), else to ``LEGACY_MSI_IMDS_URL``
    unless azure-identity's own setting (``AZURE_POD_IDENTITY_AUTHORITY_HOST``) says where."""
    if url:
        os.environ["AZURE_POD_IDENTITY_AUTHORITY_HOST"] = url.rstrip("/")
    elif os.environ.get(ENV_IMDS_URL) and not os.environ.get("AZURE_POD_IDENTITY_AUTHORITY_HOST"):
        os.environ["AZURE_POD_IDENTITY_AUTHORITY_HOST"] = os.environ[ENV_IMDS_URL].rstrip("/")
