"""``legacy-msi emulate``: the emulator of the legacy endpoint, from the command line."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import textwrap
from typing import Any, TextIO

from .._constants import EMULATOR_LIFETIME, ENV_ENDPOINT
from ._common import add_listening_options, settings_file


def add_parser(commands: Any) -> None:
    emulate = commands.add_parser(
        "emulate",
        help="run a local emulator of the legacy endpoint",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.fill(
            "Serve the legacy endpoint's protocol locally, minting JWTs that look like Azure AD's "
            "(they are not: no Azure service accepts them). With COMMAND, run it with "
            f"{ENV_ENDPOINT} pointing at the emulator and exit with its status; otherwise serve until "
            "Ctrl+C or SIGTERM.",
            width=min(shutil.get_terminal_size().columns, 100) - 2,
        ),
        epilog="""fault SPEC (one per token request, in order; comma-separated; xN repeats):
  503  429@5  400/invalid_resource  an error answer, optionally with Retry-After
  ok                        a normal answer (spaces out the others)
  drop | reset              close the connection / reset it mid-body
  hang[=S] | delay=S        never answer (or for S seconds) / answer after S
  not-json | truncated      an HTML page / half a JSON body
  expired                   an expired token
  huge=BYTES | flood=BYTES  an oversized body, announced / not announced
  trickle=S                 a good answer, one byte every S seconds
  lifetime=S                a new token living S seconds
  wrong-identity            a token (and client_id) of an identity not asked for
example: legacy-msi emulate --port 0 --fault 503x2,drop -- python app.py""",
    )
    add_listening_options(emulate)
    emulate.add_argument(
        "--lifetime",
        type=int,
        default=EMULATOR_LIFETIME,
        metavar="SECONDS",
        help=f"token lifetime (default: {EMULATOR_LIFETIME})",
    )
    emulate.add_argument("--tenant-id", help="tenant ID put in tokens (default: a fixed made-up one)")
    emulate.add_argument(
        "--user-assigned",
        action="append",
        default=[],
        metavar="CLIENT_ID",
        help="a user-assigned identity the VM has, repeatable (default: none, and every identity is accepted)",
    )
    emulate.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="SPEC",
        help="scripted answers, see below (default: none, every answer normal)",
    )
    emulate.add_argument(
        "--write-settings",
        metavar="PATH",
        help="write a ManagedIdentity-Settings file there, as serve does: whole and at once, never through a "
        "link, in a folder no other user can swap it in; removed on exit if it is still that file "
        "(default: none written)",
    )
    emulate.add_argument(
        "--post-only",
        action="store_true",
        help="answer GET with 405, as POST-only deployments did (default: GET and POST)",
    )
    emulate.add_argument(
        "--os",
        choices=("linux", "windows"),
        default="linux",
        help="the extension's flavour: windows answers an unknown resource 500 unknown (default: linux)",
    )
    emulate.add_argument(
        "--known-resource",
        action="append",
        default=[],
        metavar="URI",
        help="a custom resource to answer, repeatable (default: only those Azure AD knows everywhere; "
        "others get 400 invalid_resource, as from the extension)",
    )
    emulate.add_argument(
        "--unsigned", action="store_true", help="mint unsigned tokens, alg none (default: RS256 with cryptography)"
    )
    emulate.add_argument(
        "command",
        nargs=argparse.REMAINDER,
        metavar="-- COMMAND",
        help="command to run, then stop (default: serve until stopped)",
    )
    emulate.set_defaults(run=run)


#: Signals passed on to COMMAND: a service manager's or CI's stop (SIGTERM, ``docker stop``,
#: a job's time-out) and a closed terminal. Ctrl+C reaches COMMAND from the terminal itself.
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
#: The shell's exit statuses for a command that is not there, or not executable.
COMMAND_NOT_FOUND, COMMAND_NOT_EXECUTABLE = 127, 126


def run_command(command: list[str], env: dict[str, str]) -> int:
    """Run COMMAND to its end and return its exit status as a shell reports it (128 + N for
    signal N). A stop signal sent to this process is passed on, so that COMMAND ends first
    and the emulator and its settings file go after it."""
    from . import CommandError

    try:
        process = subprocess.Popen(command, env=env)  # noqa: S603 - the user's own command
    except FileNotFoundError:
        raise CommandError(f"command not found: {command[0]}", COMMAND_NOT_FOUND) from None
    except PermissionError:
        raise CommandError(f"command not executable: {command[0]}", COMMAND_NOT_EXECUTABLE) from None
    previous = {sig: signal.signal(sig, lambda signum, _: process.send_signal(signum)) for sig in FORWARDED_SIGNALS}
    try:
        status = process.wait()
    except KeyboardInterrupt:
        process.terminate()
        process.wait()
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return status if status >= 0 else 128 - status


def run(args: argparse.Namespace, out: TextIO) -> int:
    from ..emulator import Emulator, UserAssignedIdentity, parse_fault_spec
    from . import UsageError

    if args.command and args.command[0] != "--":
        raise UsageError(
            f"unexpected argument {args.command[0]!r}: a command to run goes after --, "
            f"as in `legacy-msi emulate --port 0 -- {' '.join(args.command)}`; a port is given with --port"
        )

    faults = [fault for spec in args.fault for fault in parse_fault_spec(spec)]
    stack = contextlib.ExitStack()
    emulator = Emulator(
        args.host,
        args.port,
        lifetime=args.lifetime,
        tenant_id=args.tenant_id,
        user_assigned=[UserAssignedIdentity(client_id=c) for c in args.user_assigned] or None,
        accept_get=not args.post_only,
        flavor=args.os,
        sign=False if args.unsigned else None,
        allow_remote=args.allow_remote,
        known_resources=args.known_resource,
    )
    emulator.add_faults(*faults)
    emulator.start()
    try:
        written = stack.enter_context(settings_file(emulator, args.write_settings))
        out.write(f"Emulator listening on {emulator.endpoint}\n")
        if written:
            out.write(f"Settings file written: {written}\n")
        command = args.command[1:]
        if command:
            out.flush()
            return run_command(command, dict(os.environ, **{ENV_ENDPOINT: emulator.endpoint}))
        out.write(f"export {ENV_ENDPOINT}={emulator.endpoint}\nPress Ctrl+C to stop.\n")
        out.flush()
        previous = {sig: signal.signal(sig, lambda *_: emulator.stop()) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            emulator.wait()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 0
    finally:
        stack.close()  # the settings file goes first, while the server still answers
        emulator.stop()
