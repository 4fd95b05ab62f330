"""``legacy-msi version`` and ``legacy-msi --version``: what runs, like ``az version``.

A bug report needs the whole stack, not this package's number alone: the Python, its
OpenSSL (urllib3 2 refuses one older than 1.1.1, which older VMs have), and the libraries
a token passes through. Their versions come from the installed distributions' metadata
(:mod:`importlib.metadata`), so that printing them imports none of those libraries.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, Optional, TextIO

from .._version import VERSION

#: This package's distribution name, as pip knows it.
DISTRIBUTION = "legacy-msi-credential"

#: The distributions a token can pass through, in the order they are shown: azure-core's
#: pipeline, the requests transport under it, aiohttp for the async twin and the bridge,
#: azure-identity and MSAL for the drop-in and the bridge's sources, cryptography for the
#: emulator's signatures.
STACK = ("azure-core", "azure-identity", "msal", "requests", "urllib3", "aiohttp", "cryptography")

#: The forms of the report: ``--output`` of ``legacy-msi version`` and of ``legacy-msi --version``.
OUTPUTS = ("table", "json")

#: What the table says for a distribution that is absent (JSON says ``null``).
NOT_INSTALLED = "not installed"


def installed_versions(names: Sequence[str]) -> dict[str, Optional[str]]:
    """The installed version of each distribution named, or ``None`` for one that is not installed."""
    found: dict[str, Optional[str]] = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def report(names: Sequence[str] = STACK) -> dict[str, Any]:
    """What runs: this package's version and where it was imported from, the interpreter, its
    OpenSSL, and the version of each distribution in ``names`` (``None``: not installed).

    The package's version is the code's own (``_version.VERSION``), and ``distribution`` the
    installed distribution's metadata: they differ when a source tree runs ahead of an older
    installed copy (or of none), so the report never names a version that is not running.
    """
    import ssl  # here, not at the top: the other commands have no use for it

    package = {
        "version": VERSION,
        "location": str(Path(__file__).resolve().parents[1]),
        "distribution": installed_versions([DISTRIBUTION])[DISTRIBUTION],
    }
    return {
        DISTRIBUTION: package,
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "executable": sys.executable,
            "platform": platform.platform(),
            "openssl": ssl.OPENSSL_VERSION,
        },
        "dependencies": installed_versions(names),
    }


def render_table(document: dict[str, Any], out: TextIO) -> None:
    """The report as ``az --version`` shows its own: one name and version a line."""
    package = document[DISTRIBUTION]
    python = document["python"]
    rows = [(DISTRIBUTION, package["version"])]
    rows += [(name, version or NOT_INSTALLED) for name, version in document["dependencies"].items()]
    width = max(len(name) for name, _ in rows) + 2
    for name, version in rows:
        out.write(f"{name:<{width}}{version}\n")
    out.write("\n")
    details = [
        ("Package location", package["location"]),
        *(
            [("Installed distribution", f"{DISTRIBUTION} {package['distribution'] or NOT_INSTALLED}")]
            if package["distribution"] != package["version"]
            else []
        ),
        ("Python", f"{python['version']} ({python['implementation']}) {python['executable']}"),
        ("Platform", python["platform"]),
        ("OpenSSL", python["openssl"]),
    ]
    width = max(len(name) for name, _ in details) + 2
    for name, value in details:
        out.write(f"{name + ':':<{width}}{value}\n")


def add_parser(commands: Any) -> None:
    version = commands.add_parser(
        "version",
        help="the versions of this package, Python and the libraries it uses, like `az version`",
        description="Show this package's version and where it runs from, Python's version, and the "
        "installed version of each library a token passes through (or 'not installed'): what a bug "
        "report needs. `legacy-msi --version` prints the same table.",
    )
    version.add_argument(
        "--output",
        "-o",
        choices=OUTPUTS,
        default="table",
        help="output form (default: table; json for scripts, null for a library not installed)",
    )
    version.set_defaults(run=run)


def run(args: argparse.Namespace, out: TextIO) -> int:
    document = report()
    if args.output == "json":
        json.dump(document, out, indent=2)
        out.write("\n")
    else:
        render_table(document, out)
    return 0


class VersionAction(argparse.Action):
    """``legacy-msi --version``: the report of ``legacy-msi version``, then exit 0.

    ``--output``/``-o`` given before the command goes with it (``legacy-msi --version -o json``),
    in either order: the action only marks the request, and :func:`take_version_request`
    turns it into the report once the whole line is parsed. argparse's own ``version`` action would print at once,
    before a later ``-o json`` is read, and rewrap the table into one paragraph.
    """

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=False, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, *args: Any) -> None:
        setattr(namespace, self.dest, True)


def add_version_options(parser: argparse.ArgumentParser) -> None:
    """The top-level ``--version`` and the ``--output`` that goes with it."""
    parser.add_argument(
        "--version",
        action=VersionAction,
        dest="show_version",
        help="show the versions of this package, Python and the libraries it uses, and exit (as `legacy-msi version`)",
    )
    parser.add_argument(
        "--output",
        "-o",
        dest="version_output",
        choices=OUTPUTS,
        default=None,
        help="with --version: table (default) or json for scripts; a command's own --output goes after its name",
    )


def take_version_request(parser: argparse.ArgumentParser, args: argparse.Namespace) -> bool:
    """Whether ``--version`` was given; if so, ``args`` is made to run the report instead of
    the command that follows (the line must still parse), in the form of the ``--output``
    given with it, or of the ``version`` command's own ``--output``.

    An ``--output`` before the command without ``--version`` is a usage error that names both
    fixes, never silently ignored.
    """
    if args.show_version:
        own = args.output if args.command_name == "version" else None
        args.run, args.output = run, args.version_output or own or "table"
        return True
    if args.version_output is not None:
        parser.error(
            "--output before the command goes with --version (legacy-msi --version -o json); "
            "a command's own --output goes after its name"
        )
    return False
