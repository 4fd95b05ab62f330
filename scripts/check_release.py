"""Fails when the version being built has no change log entry, or a built file says otherwise.

    python scripts/check_release.py                  # the source tree
    python scripts/check_release.py dist/*           # and each wheel and sdist built from it
    python scripts/check_release.py --release dist/* # before publishing: the section is dated

Checked: ``CHANGELOG.md`` has a section ``## VERSION (Unreleased)`` or ``## VERSION
(YYYY-MM-DD)`` for ``legacy_msi_credential._version.VERSION``, the newest one, with at
least one of Azure SDK's headings and an entry under it; every wheel and sdist given has
that version, a wheel's description (the PyPI page: README and change log) holds the
section, and an sdist carries the change log, the security policy and the support page.
CI runs it after the package build (``.ci/run``); ``tests/e2e/test_publication.py`` tries it.
Standard library only, and the package is not imported: it reads the files.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: The headings of an Azure SDK change log section.
HEADINGS = ("Features Added", "Breaking Changes", "Bugs Fixed", "Other Changes")

#: What an sdist must carry beside the code, for those who package from it.
SDIST_FILES = ("CHANGELOG.md", "SECURITY.md", "docs/support.md")

#: ``## 1.2.0 (2026-01-31)`` or ``## 1.2.0b1 (Unreleased)``.
SECTION = re.compile(r"^## (\S+) \((Unreleased|\d{4}-\d{2}-\d{2})\)$", re.MULTILINE)


def version(root: Path = ROOT) -> str:
    """``VERSION`` from ``legacy_msi_credential/_version.py``, read without importing it."""
    tree = ast.parse((root / "legacy_msi_credential" / "_version.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["VERSION"]:
            value = ast.literal_eval(node.value)
            if isinstance(value, str):
                return value
    raise ValueError("legacy_msi_credential/_version.py has no VERSION = '...'")


def sections(text: str) -> list[tuple[str, str, str]]:
    """(version, date or "Unreleased", body) of each section, in the file's order."""
    found = list(SECTION.finditer(text))
    ends = [match.start() for match in found[1:]] + [len(text)]
    return [(match.group(1), match.group(2), text[match.end() : end]) for match, end in zip(found, ends)]


def check_changelog(text: str, wanted: str, release: bool = False) -> list[str]:
    """What is wrong with the change log for version ``wanted``; empty when nothing is."""
    found = sections(text)
    versions = [name for name, _, _ in found]
    if wanted not in versions:
        return [
            f"CHANGELOG.md has no section for {wanted}: add '## {wanted} (Unreleased)' at the top, "
            f"with what changed under {', '.join(HEADINGS)}"
        ]
    problems = []
    if versions.count(wanted) > 1:
        problems.append(f"CHANGELOG.md has {versions.count(wanted)} sections for {wanted}: merge them")
    if versions[0] != wanted:
        problems.append(f"CHANGELOG.md's newest section is {versions[0]}, not {wanted}: the newest goes first")
    _, date, body = found[versions.index(wanted)]
    headings = re.findall(r"^### (.+?)\s*$", body, re.MULTILINE)
    unknown = [heading for heading in headings if heading not in HEADINGS]
    if unknown:
        problems.append(f"CHANGELOG.md {wanted}: headings {unknown} are not among {list(HEADINGS)}")
    if not headings or not re.search(r"^- \S", body, re.MULTILINE):
        problems.append(f"CHANGELOG.md {wanted}: no entry: say what changed under {', '.join(HEADINGS)}")
    if release and date == "Unreleased":
        problems.append(f"CHANGELOG.md {wanted} says Unreleased: give it the release date (YYYY-MM-DD)")
    return problems


def check_wheel(path: Path, wanted: str) -> list[str]:
    with zipfile.ZipFile(path) as wheel:
        (name,) = [item for item in wheel.namelist() if item.endswith(".dist-info/METADATA")]
        metadata = Parser().parsestr(wheel.read(name).decode("utf-8"))
    problems = []
    if metadata["Version"] != wanted:
        problems.append(f"{path.name}: version {metadata['Version']}, not {wanted}: rebuild it")
    description = metadata.get_payload()
    if not isinstance(description, str) or not re.search(rf"^## {re.escape(wanted)} \(", description, re.MULTILINE):
        problems.append(
            f"{path.name}: its description has no change log section for {wanted} (setup.cfg long_description)"
        )
    return problems


def check_sdist(path: Path, wanted: str) -> list[str]:
    with tarfile.open(path) as sdist:
        names = sdist.getnames()
    top = f"legacy_msi_credential-{wanted}/"
    problems = [] if f"{top}PKG-INFO" in names else [f"{path.name}: no {top}PKG-INFO: not an sdist of {wanted}"]
    problems += [f"{path.name}: {name} is missing (MANIFEST.in)" for name in SDIST_FILES if top + name not in names]
    return problems


def check(root: Path, files: list[Path], release: bool = False) -> list[str]:
    """Every problem with the change log of ``root`` and the built ``files``."""
    wanted = version(root)
    changelog = root / "CHANGELOG.md"
    if not changelog.is_file():
        return [f"no CHANGELOG.md in {root}"]
    problems = check_changelog(changelog.read_text(encoding="utf-8"), wanted, release)
    for path in files:
        if path.name.endswith(".whl"):
            problems += check_wheel(path, wanted)
        elif path.name.endswith(".tar.gz"):
            problems += check_sdist(path, wanted)
        else:
            problems.append(f"{path}: neither a wheel nor an sdist")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("files", nargs="*", type=Path, help="wheels and sdists built from this tree")
    parser.add_argument("--release", action="store_true", help="the section must be dated, not Unreleased")
    parser.add_argument("--root", type=Path, default=ROOT, help="the source tree (default: this repository)")
    args = parser.parse_args(argv)
    problems = check(args.root, args.files, args.release)
    for problem in problems:
        print(f"check_release: {problem}", file=sys.stderr)
    if not problems:
        built = f" and {len(args.files)} built file(s)" if args.files else ""
        print(f"check_release: {version(args.root)} has its change log section{built}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
