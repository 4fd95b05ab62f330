"""``legacy-msi adapt``: App Service's and IMDS's managed identity protocols, from the legacy extension."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import threading
from typing import Any, TextIO

from .._constants import DEFAULT_ADAPT_PORT
from ._common import add_access_log_option, served_logs


def add_parser(commands: Any) -> None:
    adapt = commands.add_parser(
        "adapt",
        help="serve App Service's and IMDS's managed identity protocols from the legacy extension, "
        "for clients that cannot import this package (az, azcopy, Go, .NET, Java, Node, azure-identity)",
        description="Serve App Service's managed identity protocol (2019-08-01) and IMDS's "
        "(/metadata/identity/oauth2/token) on one loopback port, with tokens from the legacy extension "
        "(one request per identity and resource, cached). Once it listens it writes IDENTITY_ENDPOINT, "
        "IDENTITY_HEADER and AZURE_POD_IDENTITY_AUTHORITY_HOST to --env-file: whoever can read that file can "
        "get tokens. The secret (IDENTITY_HEADER) is kept in --state-file, mode 0600, and is never printed. "
        "Stops cleanly on SIGTERM, removing the environment file it wrote. Started by systemd's socket "
        "activation (LISTEN_FDS), it serves the sockets systemd holds and takes no --host or --port.",
    )
    adapt.add_argument(
        "--port",
        type=int,
        help=f"port to bind; 0 for a free one (default: {DEFAULT_ADAPT_PORT}; "
        "with socket activation, the .socket unit's ListenStream= instead)",
    )
    adapt.add_argument(
        "--host",
        help="loopback address to bind: 127.0.0.1 serves ::1 too, on the same port (default: 127.0.0.1; "
        "with socket activation, the .socket unit's ListenStream= instead)",
    )
    adapt.add_argument(
        "--endpoint",
        metavar="URL",
        help="the legacy extension's token URL (default: $LEGACY_MSI_ENDPOINT, the extension's settings file, "
        "else http://localhost:50342/oauth2/token; MSI_*, IDENTITY_* and AZURE_POD_IDENTITY_AUTHORITY_HOST "
        "are ignored)",
    )
    adapt.add_argument(
        "--env-file",
        metavar="PATH",
        help="write IDENTITY_ENDPOINT, IDENTITY_HEADER and AZURE_POD_IDENTITY_AUTHORITY_HOST there once "
        "listening, as KEY=VALUE lines a shell and systemd's EnvironmentFile= read alike: whole and at once, "
        "never through a link, mode 0640; removed on exit if it is still that file (default: none written)",
    )
    adapt.add_argument(
        "--state-file",
        metavar="PATH",
        help="where the secret is kept, mode 0600, made on first start (default: $STATE_DIRECTORY/adapt-secret, "
        "else $XDG_STATE_HOME/legacy-msi/adapt-secret or ~/.local/state/legacy-msi/adapt-secret)",
    )
    adapt.add_argument(
        "--rotate-secret",
        action="store_true",
        help="write a new secret to --state-file and exit; restart the service to serve it (clients read "
        "IDENTITY_HEADER again when they start) (default: serve)",
    )
    add_access_log_option(adapt)
    adapt.set_defaults(run=run)


def run(args: argparse.Namespace, out: TextIO) -> int:
    from ..adapt import default_secret_file, read_or_make_secret

    state_file = args.state_file or default_secret_file(os.environ)
    try:
        secret, new = read_or_make_secret(state_file, rotate=args.rotate_secret)
    except ValueError as exc:
        raise ValueError(f"--state-file: {exc}") from None
    if args.rotate_secret:
        out.write(f"A new secret is in {state_file}; restart legacy-msi adapt to serve it.\n")
        return 0
    if new:
        out.write(f"A new secret was made and kept in {state_file}.\n")
    with served_logs(not args.no_access_log):
        return _serve(args, out, secret)


def _serve(args: argparse.Namespace, out: TextIO, secret: Any) -> int:
    from .._server._activation import inherited_listeners
    from ..adapt import Adapter
    from ..bridge import Notifier

    # The LISTEN_* variables are read (and cleared) whatever the flags say, so that a child
    # process never takes them for its own.
    listeners = inherited_listeners()
    if listeners is not None:
        given = [flag for flag, value in (("--host", args.host), ("--port", args.port)) if value is not None]
        if given:
            listeners.close()
            raise ValueError(
                f"{' and '.join(given)}: systemd passed the sockets to serve (socket activation); "
                "set the address in the .socket unit's ListenStream= lines and leave "
                f"{' and '.join(given)} out of ExecStart="
            )
    host = "127.0.0.1" if args.host is None else args.host
    port = DEFAULT_ADAPT_PORT if args.port is None else args.port
    try:
        adapter = Adapter(
            host,
            port,
            secret=secret,
            endpoint=args.endpoint,
            notifier=Notifier.from_environment(),
            listeners=listeners,
        )
    except ValueError as exc:
        message = str(exc)
        if "endpoint" in message and "--endpoint" not in message:
            message = f"--endpoint: {message}"
        elif "host" in message or "loopback" in message:
            message = f"--host: {message}"
        raise ValueError(message) from None
    adapter.start()
    stop_requested = threading.Event()

    def stop(*_: Any) -> None:
        stop_requested.set()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    written = None
    try:
        if args.env_file:
            try:
                written = adapter.write_environment(args.env_file)
            except OSError as exc:
                raise OSError(exc.errno, f"--env-file: {exc}") from None
        out.write(
            f"Serving App Service's protocol at {adapter.identity_endpoint} and IMDS's at {adapter.imds_endpoint}, "
            f"tokens from the legacy endpoint {adapter.legacy.url}\n"
        )
        if written:
            out.write(f"Environment file written: {written.path}\n")
        out.flush()
        adapter.notifier.ready(f"serving {adapter.identity_endpoint}")
        stop_requested.wait()
        adapter.stop()
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        adapter.stop()
        if written is not None:
            with contextlib.suppress(OSError):
                written.remove()
        out.write("Stopped.\n")
        out.flush()
