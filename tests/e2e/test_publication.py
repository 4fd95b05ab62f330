"""What a user or a packager reads beside the code: the change log has the version being built
(``scripts/check_release.py``, which CI runs on the built files too), the support page says
what ``setup.cfg`` and the floors session say, and the policies link only what exists.

Here rather than beside the unit tests: they read the repository's files, which the nox
sessions, testing the installed wheel, do not copy.
"""

from __future__ import annotations

import configparser
import importlib.util
import io
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any

import legacy_msi_credential

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


release = _load("check_release", ROOT / "scripts" / "check_release.py")

# --- the change log --------------------------------------------------------------------------


def test_the_running_version_has_its_change_log_section() -> None:
    assert release.version(ROOT) == legacy_msi_credential.__version__
    assert release.check(ROOT, []) == []
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert f"\n## {legacy_msi_credential.__version__} (" in changelog


def _tree(tmp_path: Path, version: str, changelog: str) -> Path:
    (tmp_path / "legacy_msi_credential").mkdir(parents=True, exist_ok=True)
    (tmp_path / "legacy_msi_credential" / "_version.py").write_text(f'VERSION = "{version}"\n', encoding="utf-8")
    (tmp_path / "CHANGELOG.md").write_text(changelog, encoding="utf-8")
    return tmp_path


def _ci_step(root: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    """The step as ``.ci/run`` runs it, on another source tree."""
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "check_release.py"), "--root", str(root), *arguments],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_version_without_a_section_fails_the_ci_step(tmp_path: Path) -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    root = _tree(tmp_path, "9.8.0", changelog)  # the version moved on, the change log did not
    result = _ci_step(root)
    assert result.returncode == 1
    assert "CHANGELOG.md has no section for 9.8.0: add '## 9.8.0 (Unreleased)'" in result.stderr
    title, rest = changelog.split("\n## ", 1)
    added = f"{title}\n## 9.8.0 (Unreleased)\n\n### Bugs Fixed\n\n- A fix.\n\n## {rest}"
    _tree(tmp_path, "9.8.0", added)
    result = _ci_step(root)
    assert result.returncode == 0, result.stderr
    assert "9.8.0 has its change log section" in result.stdout


def test_a_misplaced_empty_or_undated_section_is_named() -> None:
    entry = "### Features Added\n\n- Something.\n\n"
    assert release.check_changelog(f"## 1.1.0 (Unreleased)\n\n{entry}## 1.0.0 (2026-01-02)\n\n{entry}", "1.1.0") == []
    below = release.check_changelog(f"## 1.0.0 (2026-01-02)\n\n{entry}## 1.1.0 (Unreleased)\n\n{entry}", "1.1.0")
    assert below == ["CHANGELOG.md's newest section is 1.0.0, not 1.1.0: the newest goes first"]
    empty = release.check_changelog("## 1.1.0 (Unreleased)\n\n### Bugs Fixed\n\n", "1.1.0")
    assert empty == ["CHANGELOG.md 1.1.0: no entry: say what changed under " + ", ".join(release.HEADINGS)]
    odd = release.check_changelog("## 1.1.0 (Unreleased)\n\n### Fixes\n\n- x\n", "1.1.0")
    assert odd == [f"CHANGELOG.md 1.1.0: headings ['Fixes'] are not among {list(release.HEADINGS)}"]
    undated = release.check_changelog(f"## 1.1.0 (Unreleased)\n\n{entry}", "1.1.0", release=True)
    assert undated == ["CHANGELOG.md 1.1.0 says Unreleased: give it the release date (YYYY-MM-DD)"]
    assert release.check_changelog(f"## 1.1.0 (2026-03-04)\n\n{entry}", "1.1.0", release=True) == []
    twice = release.check_changelog(f"## 1.1.0 (Unreleased)\n\n{entry}## 1.1.0 (2026-03-04)\n\n{entry}", "1.1.0")
    assert twice == ["CHANGELOG.md has 2 sections for 1.1.0: merge them"]


def _wheel(path: Path, version: str, description: str) -> Path:
    metadata = f"Metadata-Version: 2.1\nName: legacy-msi-credential\nVersion: {version}\n\n{description}"
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(f"legacy_msi_credential-{version}.dist-info/METADATA", metadata)
    return path


def _sdist(path: Path, version: str, names: list[str]) -> Path:
    with tarfile.open(path, "w:gz") as sdist:
        for name in ["PKG-INFO", *names]:
            member = tarfile.TarInfo(f"legacy_msi_credential-{version}/{name}")
            sdist.addfile(member, io.BytesIO(b""))
    return path


def test_the_built_files_must_say_the_same_version_and_carry_the_change_log(tmp_path: Path) -> None:
    """What CI checks of ``dist/*``: the built wheel and sdist of the version the tree says."""
    version = release.version(ROOT)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    good = [
        _wheel(tmp_path / "good.whl", version, readme + changelog),
        _sdist(tmp_path / "good.tar.gz", version, list(release.SDIST_FILES)),
    ]
    assert release.check(ROOT, good) == []
    stale = _wheel(tmp_path / "stale.whl", "0.0.1", readme + changelog)
    assert release.check(ROOT, [stale]) == [f"stale.whl: version 0.0.1, not {version}: rebuild it"]
    bare = _wheel(tmp_path / "bare.whl", version, readme)  # long_description without the change log
    assert release.check(ROOT, [bare]) == [
        f"bare.whl: its description has no change log section for {version} (setup.cfg long_description)"
    ]
    thin = _sdist(tmp_path / "thin.tar.gz", version, ["CHANGELOG.md"])
    assert release.check(ROOT, [thin]) == [
        "thin.tar.gz: SECURITY.md is missing (MANIFEST.in)",
        "thin.tar.gz: docs/support.md is missing (MANIFEST.in)",
    ]


def test_setup_cfg_puts_the_change_log_in_the_description_and_manifest_in_the_sdist() -> None:
    """The two settings the built-file checks above depend on, read where they are set."""
    config = configparser.ConfigParser(interpolation=None)
    config.read(ROOT / "setup.cfg")
    assert config["metadata"]["long_description"] == "file: README.md, CHANGELOG.md"
    manifest = (ROOT / "MANIFEST.in").read_text(encoding="utf-8")
    assert "include CHANGELOG.md SECURITY.md" in manifest
    assert "graft docs" in manifest
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    build = ci.index("python -m build")
    assert ci.index("scripts/check_release.py dist/*") > build, "CI checks the change log against what it built"


# --- the support page ------------------------------------------------------------------------


def _support_table() -> dict[str, list[str]]:
    """docs/support.md's table: component -> its cells."""
    page = (ROOT / "docs" / "support.md").read_text(encoding="utf-8")
    rows = [line for line in page.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| component |")
    table = {}
    for row in rows[2:]:  # after the header and its rule
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        table[cells[0]] = cells[1:]
    return table


def _floors(requirements: list[str], strict: bool = True) -> dict[str, str]:
    """name -> the version after ``>=``: every requirement a user installs has a floor and
    nothing else (``strict``); the test tools' other pins are left out otherwise."""
    found = {}
    for requirement in requirements:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9][0-9.]*)", requirement)
        assert match or not strict, f"{requirement}: the support page reads only 'name>=floor'"
        if match:
            found[match.group(1)] = match.group(2)
    return found


def _noxfile() -> Any:
    return _load("noxfile_for_support", ROOT / "noxfile.py")


def test_the_support_page_says_what_setup_cfg_and_the_floors_session_say() -> None:
    nox = _noxfile()
    config = configparser.ConfigParser(interpolation=None)
    config.read(ROOT / "setup.cfg")
    table = _support_table()

    # Python: python_requires, the classifiers, nox's sessions and test-pythons.sh agree.
    assert config["options"]["python_requires"] == f">={nox.PYTHONS[0]}"
    classifiers = re.findall(r"Programming Language :: Python :: (3\.\d+)", config["metadata"]["classifiers"])
    assert classifiers == nox.PYTHONS
    script = (ROOT / "scripts" / "test-pythons.sh").read_text(encoding="utf-8")
    assert re.search(r"for version in ([0-9. ]+); do", script).group(1).split() == nox.PYTHONS  # type: ignore[union-attr]
    sessions = re.search(r"SESSIONS=\(([^)]*)\)", script).group(1).split()  # type: ignore[union-attr]
    assert sessions == [f"wheel-{python}" for python in nox.PYTHONS] + ["floors"]
    assert table["Python"][:2] == [nox.PYTHONS[0], nox.PYTHONS[-1]]
    page = (ROOT / "docs" / "support.md").read_text(encoding="utf-8")
    every = ", ".join(nox.PYTHONS[:-1]) + f"\nand {nox.PYTHONS[-1]}"
    assert every in page or every.replace("\n", " ") in page.replace("\n", " ")

    # Each library a user installs (install_requires and the user-facing extras) has its row,
    # with the floor setup.cfg declares and the extras that declare it.
    declared: dict[str, str] = {}
    where: dict[str, set[str]] = {}
    for option in ("install_requires", "aio", "identity", "serve", "emulator"):
        options, extras = ([option], []) if option == "install_requires" else ([], [option])
        requirements = nox._declared(options, extras)
        for name, floor in _floors(requirements).items():
            assert declared.setdefault(name, floor) == floor, f"{name}: two floors in setup.cfg"
            where.setdefault(name, set()).add(f"`{option}`")
    undeclared = {"urllib3": "requests'", "msal": "azure-identity's"}
    assert set(table) == {"Python", *declared, *undeclared}, "a row for each library, and no other"
    for name, floor in declared.items():
        assert table[name][0] == floor, f"docs/support.md: {name}'s floor is {floor} in setup.cfg"
        assert set(re.findall(r"`[^`]+`", table[name][2])) == where[name], f"docs/support.md: {name} declared in"

    # The floors session installs every one of them at that floor, and urllib3 at its own.
    in_floors = _floors(nox._declared(["install_requires"], list(nox.FLOOR_EXTRAS)), strict=False)
    for name, floor in declared.items():
        assert in_floors.get(name) == floor, f"the floors session does not test {name} at {floor}"
    urllib3_floor = re.fullmatch(r"urllib3>=([0-9.]+),<2", nox.URLLIB3_FLOOR).group(1)  # type: ignore[union-attr]
    assert table["urllib3"][0] == urllib3_floor
    for name, whose in undeclared.items():
        assert table[name][2] == f"no: {whose} dependency"


# --- the policies' links ---------------------------------------------------------------------

POLICIES = ("CHANGELOG.md", "SECURITY.md", "docs/support.md", "README.md")


def test_the_policies_link_only_files_that_exist_and_invent_no_address() -> None:
    """The project has no public home yet: no page names an address it might get. When it
    has one, its address goes into setup.cfg's ``project_urls`` and here."""
    for name in POLICIES:
        text = (ROOT / name).read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            assert not re.match(r"[a-z]+:", target), f"{name}: {target}: no public home yet"
            path = (ROOT / name).parent / target.split("#", 1)[0]
            assert path.exists(), f"{name}: {target} does not exist"
        if name != "README.md":  # the README's sample URL is an Azure storage account's placeholder
            assert not re.search(r"https?://(?!localhost[:/])", text), f"{name}: an address outside the machine"
    security = (ROOT / "SECURITY.md").read_text(encoding="utf-8")
    for page in ("docs/reliability.md", "docs/bridge.md", "docs/adapt.md", "docs/support.md", "CHANGELOG.md"):
        assert f"]({page})" in security, f"SECURITY.md links {page}"
    config = configparser.ConfigParser(interpolation=None)
    config.read(ROOT / "setup.cfg")
    assert "project_urls" not in config["metadata"], "no public home yet: no Project-URL"
    index = (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
    assert "\nsupport\n" in index, "the support page is in the site's table of contents"


def test_every_command_that_listens_has_a_threat_model_in_the_security_policy() -> None:
    """A server is what a local user or a browser attacks: each ``legacy-msi`` command that
    takes ``--port`` is named in SECURITY.md's threat models, so a new one cannot ship
    without saying what it defends."""
    import argparse

    from legacy_msi_credential.cli import build_parser

    security = (ROOT / "SECURITY.md").read_text(encoding="utf-8")
    threats = security.split("## Threat model of each component", 1)[1]
    (commands,) = (a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    listening = sorted(
        name
        for name, parser in commands.choices.items()
        if any("--port" in action.option_strings for action in parser._actions)
    )
    assert listening == ["adapt", "emulate", "serve"]
    for name in listening:
        assert f"(`legacy-msi {name}`" in threats, f"SECURITY.md: no threat model for legacy-msi {name}"


# --- the install page --------------------------------------------------------------------------


def test_the_install_page_names_every_extra_and_what_it_adds_and_every_python() -> None:
    """docs/install.md installs each extra setup.cfg declares, once, saying the packages it
    adds; and lists the Pythons the classifiers claim."""
    config = configparser.ConfigParser(interpolation=None)
    config.read(ROOT / "setup.cfg")
    extras = {
        name: sorted(
            re.match(r"[A-Za-z0-9_.-]+", line).group(0).lower()
            for line in value.split("\n")
            if line and not line.startswith("%")
        )  # type: ignore[union-attr]
        for name, value in config["options.extras_require"].items()
    }
    page = (ROOT / "docs" / "install.md").read_text(encoding="utf-8")
    shown = dict(re.findall(r'^\.venv/bin/pip install "\.\[(\w+)\]"\s+# \+ (.+)$', page, flags=re.M))
    assert set(shown) == set(extras), "an install line for each extra of setup.cfg, and no other"
    names = {"sphinx": "Sphinx", "myst-parser": "MyST", "furo": "Furo"}
    for extra, packages in extras.items():
        if extra in ("test", "dev"):
            continue  # many packages: the line says what uses them
        for package in packages:
            assert names.get(package, package) in shown[extra].split(":")[0], f"{extra}: name {package}"
    classifiers = re.findall(r"Programming Language :: Python :: (3\.\d+)", config["metadata"]["classifiers"])
    assert ", ".join(classifiers[:-1]) + f" or {classifiers[-1]}" in page.replace("\n", " ")
