"""The README's set-up, as a new user meets it: ``scripts/quickstart.sh`` and ``scripts/setup.sh``
run in a fresh clone of this repository, on machines that cannot run the quick start. Each
stops in its checks, before anything is installed: no pip, no npm, no download."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: What the scripts run before their checks end; npm is not among them.
TOOLS = ("bash", "env", "dirname", "id", "sort", "head", "grep", "touch", "mkdir", "cat", "rm")


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    """A fresh clone of this repository (its committed state, as a user gets it)."""
    target = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(target)], check=True, timeout=60)
    return target


def bin_without_npm(folder: Path) -> str:
    """A PATH of the tools the scripts use, and python3 (this interpreter), but no npm or node."""
    folder.mkdir()
    for tool in TOOLS:
        found = shutil.which(tool)
        assert found, tool
        (folder / tool).symlink_to(found)
    (folder / "python3").symlink_to(sys.executable)
    return str(folder)


def fake_python(path: Path, version: str) -> None:
    """An interpreter that says it is Python ``version`` and does nothing else (as a check sees it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    major, minor = version.split(".")
    path.write_text(f'#!/bin/sh\necho "{major}.{minor}"\n')
    path.chmod(0o755)


def run(clone: Path, script: str, path: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(clone / "scripts" / script)],
        cwd=clone,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": path, "HOME": str(clone.parent), **env},
        check=False,
    )


def test_the_quick_start_without_npm_stops_at_set_up_with_the_reason(clone: Path, tmp_path: Path) -> None:
    result = run(clone, "quickstart.sh", bin_without_npm(tmp_path / "bin"))
    assert result.returncode == 1
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("setup: the quick start needs Node.js and npm, for Azurite")
    assert "apt-get install nodejs npm" in line
    assert not (clone / ".venv").exists()  # stopped before installing anything


def test_a_venv_of_an_old_python_is_named_with_what_to_do(clone: Path, tmp_path: Path) -> None:
    """A first try with Python 3.8 left .venv behind; the next try, with 3.11 on the PATH."""
    fake_python(clone / ".venv" / "bin" / "python", "3.8")
    path = f"{bin_without_npm(tmp_path / 'bin')}{os.pathsep}{Path(shutil.which('npm') or '/usr/bin/npm').parent}"
    result = run(clone, "setup.sh", path)
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("setup: .venv has Python 3.8, and this package needs 3.9 or newer: remove it (rm -rf .venv)")
    assert "PYTHON=python3.11" in line
    assert not (clone / ".venv" / ".installed-dev").exists()


def test_a_venv_of_another_python_than_the_one_asked_for_is_named(clone: Path, tmp_path: Path) -> None:
    fake_python(clone / ".venv" / "bin" / "python", "3.10")
    result = run(clone, "setup.sh", bin_without_npm(tmp_path / "bin"), PYTHON=sys.executable)
    assert result.returncode == 1
    mine = f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert f"setup: .venv has Python 3.10, not {sys.executable}'s {mine}: remove it (rm -rf .venv)" in result.stderr


def test_an_old_interpreter_is_refused_before_a_venv_is_made(clone: Path, tmp_path: Path) -> None:
    old = tmp_path / "old" / "python3.8"
    fake_python(old, "3.8")
    result = run(clone, "setup.sh", bin_without_npm(tmp_path / "bin"), PYTHON=str(old))
    assert result.returncode == 1
    assert f"setup: {old} is Python 3.8, and this package needs 3.9 or newer" in result.stderr
    assert not (clone / ".venv").exists()


def test_pytest_starts_without_warnings() -> None:
    """The suite's first lines are its own: no HypothesisSideeffectWarning from the conftest."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:randomly", "tests/test_scopes.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Warning" not in result.stdout + result.stderr
