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
        choices=("table", "json"),
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
    """``legacy-msi --version``: the table of ``legacy-msi version``, then exit 0.

    argparse's own ``version`` action would rewrap the table into one paragraph.
    """

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        render_table(report(), sys.stdout)
        parser.exit()
