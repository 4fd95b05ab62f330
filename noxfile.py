"""The test suite on every Python the package claims, from the built wheel.

    nox                      # every interpreter found; the missing ones are named and skipped
    nox -s "wheel-3.9"       # one

Each session installs the wheel in ``dist/`` (built once by ``scripts/test-pythons.sh``,
or by ``python -m build --wheel``) with its test extras, copies ``tests/`` and the pytest
settings into a scratch folder, and runs them there, so that the package imported is the
installed one, never the source tree. The Azurite and Node tests (``tests/e2e``) need only
one interpreter and run in ``scripts/test.sh``.
"""

from __future__ import annotations

import glob
import shutil
from pathlib import Path

import nox

PYTHONS = ["3.9", "3.10", "3.11", "3.12", "3.13"]
ROOT = Path(__file__).resolve().parent

nox.options.error_on_missing_interpreters = False  # said in the output as "skipped"
nox.options.reuse_existing_virtualenvs = True


@nox.session(name="wheel", python=PYTHONS)
def wheel(session: nox.Session) -> None:
    wheels = sorted(glob.glob(str(ROOT / "dist" / "legacy_msi_credential-*.whl")))
    if not wheels:
        session.error("no wheel in dist/: run `python -m build --wheel --outdir dist .` first")
    session.install(f"{wheels[-1]}[test,aio,emulator,identity]")
    session.install("--force-reinstall", "--no-deps", wheels[-1])  # the same version number, new code
    scratch = Path(session.create_tmp()) / "suite"
    if scratch.exists():
        shutil.rmtree(scratch)
    shutil.copytree(ROOT / "tests", scratch / "tests", ignore=shutil.ignore_patterns("e2e", "__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", scratch / "pyproject.toml")
    session.chdir(str(scratch))
    session.run(
        "python",
        "-c",
        "import legacy_msi_credential, sys; "
        "assert 'site-packages' in legacy_msi_credential.__file__, legacy_msi_credential.__file__; "
        "print('testing the installed wheel:', legacy_msi_credential.__file__, 'on Python', sys.version.split()[0])",
    )
    session.run("python", "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests", *session.posargs)
