"""``legacy-msi``: get a token, diagnose a machine, run the emulator, or serve the legacy endpoint.

The parser and :func:`main` live here; each command is a module of its own (``_token``,
``_doctor``, ``_emulate``, ``_serve``, ``_versions``) that adds its parser and runs it. Only the standard
library and this package's light modules are imported until a command runs, so that
``--help`` and usage errors cost little more than starting Python.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Optional

from .._text import printable
from . import _doctor, _emulate, _serve, _token, _versions
from ._common import DEFAULT_RESOURCE, decode_claims

__all__ = ["DEFAULT_RESOURCE", "build_parser", "decode_claims", "main"]

#: The commands, in the order ``--help`` lists them.
_COMMANDS = (_token, _doctor, _emulate, _serve, _versions)


def build_parser() -> argparse.ArgumentParser:
    """The ``legacy-msi`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="legacy-msi",
        description="Tokens from the legacy Azure managed identity VM extension (localhost:50342), "
        "diagnostics, and a local emulator of it.",
    )
    parser.add_argument(
        "--version",
        action=_versions.VersionAction,
        help="show the versions of this package, Python and the libraries it uses, and exit "
        "(as `legacy-msi version`; `legacy-msi version --output json` for scripts)",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    commands = parser.add_subparsers(dest="command_name", metavar="COMMAND", required=True)
    for command in _COMMANDS:
        command.add_parser(commands)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``legacy-msi``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    out = sys.stdout
    if args.debug:
        logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(name)s: %(message)s")
    else:
        logging.basicConfig(level=logging.WARNING, format="legacy-msi: warning: %(message)s")
    try:
        status: int = args.run(args, out)
        return status
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if args.debug:
            raise
        core = sys.modules.get("azure.core.exceptions")  # loaded if such an error can have been raised
        if core is not None and isinstance(exc, core.ClientAuthenticationError):
            message = exc.message
        elif isinstance(exc, (ValueError, OSError)):
            message = str(exc)
        else:
            message = f"unexpected {type(exc).__name__}; run with --debug for the traceback"
        sys.stderr.write(f"legacy-msi: error: {printable(message)}\n")
        return 1
