"""``legacy-msi``: get a token, diagnose a machine, run the emulator, or serve the legacy endpoint.

The parser and :func:`main` live here; each command is a module of its own (``_token``,
``_doctor``, ``_emulate``, ``_serve``, ``_versions``) that adds its parser and runs it. Only the standard
library and this package's light modules are imported until a command runs, so that
``--help`` and usage errors cost little more than starting Python.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import re
import sys
from collections.abc import Sequence
from typing import Optional

from .._text import printable
from . import _adapt, _doctor, _emulate, _serve, _token, _versions
from ._common import DEFAULT_RESOURCE, chosen_resource, decode_claims

__all__ = ["DEFAULT_RESOURCE", "build_parser", "decode_claims", "main"]


def __dir__() -> list[str]:
    # The public names and the module's own: not the standard library modules it imports,
    # nor the helpers its commands share (``CommandError``, ``in_flags``, ...).
    return sorted({name for name in globals() if name.startswith("_")} | set(__all__))


#: The commands, in the order ``--help`` lists them.
_COMMANDS = (_token, _doctor, _emulate, _serve, _adapt, _versions)


def build_parser() -> argparse.ArgumentParser:
    """The ``legacy-msi`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="legacy-msi",
        description="Tokens from the legacy Azure managed identity VM extension (localhost:50342), "
        "diagnostics, and a local emulator of it.",
    )
    _versions.add_version_options(parser)
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    # Not required here: ``--version`` stands alone; main() asks for a command otherwise.
    commands = parser.add_subparsers(dest="command_name", metavar="COMMAND")
    for command in _COMMANDS:
        command.add_parser(commands)
    for subparser in commands.choices.values():
        # Where users put it too: after the command. SUPPRESS keeps a --debug given before it.
        subparser.add_argument(
            "--debug",
            action="store_true",
            default=argparse.SUPPRESS,
            help="show tracebacks and debug logs (default: one line per error)",
        )
    return parser


class UsageError(Exception):
    """A command's arguments that the parser could not judge alone: exit status 2 with the command's usage."""


class CommandError(Exception):
    """A failure with its own exit status (``emulate``'s COMMAND not found: 127, as the shell's)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


#: The module each optional dependency comes from, and the extra of setup.cfg that installs it.
_EXTRAS = {"aiohttp": "aio", "azure.identity": "identity", "cryptography": "emulator"}


def missing_dependency(exc: ImportError) -> str:
    """One line for a missing optional dependency, naming the extra that installs it."""
    if "pip install" in str(exc):
        return str(exc)  # this package's own message already names the extra
    name = exc.name or "a module"
    extra = next((extra for module, extra in _EXTRAS.items() if name == module or name.startswith(module + ".")), None)
    if extra is None:
        return f"{name} is not installed; see the install section of the README for the extra that brings it"
    return f'{name} is not installed: pip install ".[{extra}]" in a clone of legacy-msi-credential'


def option_names(parser: argparse.ArgumentParser) -> dict[str, str]:
    """The command's options by the keyword the library calls them: ``retry_total`` -> ``--retry-total``."""
    return {
        action.dest: max(action.option_strings, key=len)
        for action in parser._actions
        if action.option_strings and "_" in action.dest
    }


def in_flags(message: str, options: dict[str, str]) -> tuple[str, bool]:
    """``message`` with the library's keyword names (``allow_remote=True``, ``retry_total``) written as
    the command's flags, and whether it named one: the user's fix is then a flag."""
    named = False
    for keyword, flag in options.items():
        message, count = re.subn(rf"\b{keyword}(=True\b)?(?![\w=])", flag, message)
        named = named or count > 0
    return message, named


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``legacy-msi``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if _versions.take_version_request(parser, args):
        pass
    elif args.command_name is None:
        parser.error("the following arguments are required: COMMAND")
    elif hasattr(args, "resource_words"):
        chosen_resource(_subparser(parser, args.command_name), args)
    out = sys.stdout
    if args.debug:
        logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(name)s: %(message)s")
    else:
        logging.basicConfig(level=logging.WARNING, format="legacy-msi: warning: %(message)s")
    try:
        status: int = args.run(args, out)
        out.flush()  # here, so that a reader gone away is seen below and not at exit
        return status
    except KeyboardInterrupt:
        return 130
    except UsageError as exc:
        _subparser(parser, args.command_name).error(printable(str(exc)))
    except CommandError as exc:
        sys.stderr.write(f"legacy-msi: error: {printable(str(exc))}\n")
        return exc.status
    except BrokenPipeError:
        # `legacy-msi token | head`: the reader has what it wanted. Quiet, like any Unix filter
        # killed by SIGPIPE, and stdout is pointed away so that Python's exit flush is quiet too.
        _discard_stdout()
        return _BROKEN_PIPE
    except Exception as exc:
        if args.debug:
            raise
        core = sys.modules.get("azure.core.exceptions")  # loaded if such an error can have been raised
        if core is not None and isinstance(exc, core.ClientAuthenticationError):
            message = exc.message
        elif isinstance(exc, ImportError):
            message = missing_dependency(exc)
        elif isinstance(exc, ValueError):
            subparser = _subparser(parser, args.command_name)
            message, names_a_flag = in_flags(str(exc), option_names(subparser))
            if names_a_flag:
                subparser.error(printable(message))  # a flag's value: a usage error, exit 2, as argparse's own
        elif isinstance(exc, OSError):
            message = str(exc)
        else:
            message = f"unexpected {type(exc).__name__}; run with --debug for the traceback"
        sys.stderr.write(f"legacy-msi: error: {printable(message)}\n")
        return 1


#: The exit status of a command whose reader went away: a process killed by SIGPIPE, as the shell reports it.
_BROKEN_PIPE = 128 + 13


def _discard_stdout() -> None:
    import os

    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    (commands,) = (action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    chosen: argparse.ArgumentParser = commands.choices[name]
    return chosen
