"""``legacy-msi serve``: the bridge, serving the legacy endpoint from a real token source."""

from __future__ import annotations

import argparse
import signal
import threading
from typing import Any, TextIO

from .._constants import BRIDGE_SOURCES, ENV_IMDS_URL
from .._server._limits import ServerLimits
from ._common import (
    add_access_log_option,
    add_listening_options,
    point_azure_identity_at_imds,
    served_logs,
    settings_file,
)


def add_parser(commands: Any) -> None:
    serve = commands.add_parser(
        "serve",
        help="serve the legacy endpoint from a real token source (IMDS, az, azure-identity's default chain)",
        description="Keep software written against the legacy extension working where the extension is gone: "
        "serve its protocol on loopback, with tokens from IMDS (default), the Azure CLI or azure-identity's "
        "DefaultAzureCredential (needs the identity extra). One source request per identity and resource, "
        "cached until five minutes before expiry. Stops cleanly on SIGTERM, removing a settings file it wrote.",
    )
    add_listening_options(serve, remote_note="; requests not over loopback are still refused")
    serve.add_argument(
        "--source",
        choices=BRIDGE_SOURCES,
        default=BRIDGE_SOURCES[0],
        help=f"where tokens come from (default: {BRIDGE_SOURCES[0]})",
    )
    serve.add_argument(
        "--source-timeout",
        type=float,
        default=ServerLimits.source_timeout,
        metavar="SECONDS",
        help=f"longest wait for the source (default: {ServerLimits.source_timeout:g})",
    )
    serve.add_argument(
        "--write-settings",
        metavar="PATH",
        help="write the extension's settings file there, e.g. /var/lib/waagent/ManagedIdentity-Settings: "
        "whole and at once (a new file renamed over it, a link there replaced, not followed), mode 0644, in a "
        "folder no other user can swap it in; removed on exit if it is still that file (default: none written)",
    )
    serve.add_argument(
        "--imds-url",
        metavar="URL",
        help=f"where the imds source asks, e.g. a local emulator (default: ${ENV_IMDS_URL}, else IMDS itself)",
    )
    add_access_log_option(serve)
    serve.set_defaults(run=run)


def run(args: argparse.Namespace, out: TextIO) -> int:
    point_azure_identity_at_imds(args.imds_url)
    with served_logs(not args.no_access_log):
        return _serve(args, out)


def _serve(args: argparse.Namespace, out: TextIO) -> int:
    from ..bridge import Bridge, Notifier, TokenSource

    source = TokenSource(args.source, timeout=args.source_timeout)
    notifier = Notifier.from_environment()
    bridge = Bridge(args.host, args.port, source=source, allow_remote=args.allow_remote, notifier=notifier)
    bridge.start()
    stop_requested = threading.Event()

    def stop(*_: Any) -> None:
        stop_requested.set()  # the main thread stops the bridge: a handler must not block on it

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with settings_file(bridge, args.write_settings) as written:
            out.write(f"Serving the legacy endpoint at {bridge.endpoint}, tokens from the {args.source} source\n")
            if written:
                out.write(f"Settings file written: {written}\n")
            out.flush()
            notifier.ready(f"serving {bridge.endpoint} from the {args.source} source")
            stop_requested.wait()  # a signal handler runs in this thread while it waits, and sets it
            bridge.stop()  # answers what is in flight first, then the settings file goes
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        bridge.stop()
        out.write("Stopped.\n")
        out.flush()
