"""The test suite on every Python the package claims, from the built wheel.

    nox                      # every interpreter found; the missing ones are named and skipped
    nox -s "wheel-3.9"       # one
    nox -s floors            # Python 3.9, every declared dependency at its floor, urllib3 1.26

Each session installs the wheel in ``dist/`` (built once by ``scripts/test-pythons.sh``,
or by ``python -m build --wheel``) with its test extras, copies ``tests/`` and the pytest
settings into a scratch folder, and runs them there, so that the package imported is the
installed one, never the source tree. The Azurite and Node tests (``tests/e2e``) need only
one interpreter and run in ``scripts/test.sh``.
"""

from __future__ import annotations

import configparser
import glob
import shutil
from pathlib import Path

import nox

PYTHONS = ["3.9", "3.10", "3.11", "3.12", "3.13"]
ROOT = Path(__file__).resolve().parent

nox.options.error_on_missing_interpreters = False  # said in the output as "skipped"
nox.options.reuse_existing_virtualenvs = True


def _wheel(session: nox.Session) -> str:
    wheels = sorted(glob.glob(str(ROOT / "dist" / "legacy_msi_credential-*.whl")))
    if not wheels:
        session.error("no wheel in dist/: run `python -m build --wheel --outdir dist .` first")
    return wheels[-1]


def _run_suite(session: nox.Session, e2e: tuple[str, ...] = ()) -> None:
    """The suite from a scratch copy of ``tests/``, against the installed package, with the
    named end-to-end tests (files or folders of ``tests/e2e``; their conftest is not needed)."""
    scratch = Path(session.create_tmp()) / "suite"
    if scratch.exists():
        shutil.rmtree(scratch)
    shutil.copytree(ROOT / "tests", scratch / "tests", ignore=shutil.ignore_patterns("e2e", "__pycache__"))
    for name in e2e:
        (scratch / "tests" / "e2e").mkdir(exist_ok=True)
        (scratch / "tests" / "e2e" / "__init__.py").touch()
        source = ROOT / "tests" / "e2e" / name
        if source.is_dir():
            shutil.copytree(source, scratch / "tests" / "e2e" / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, scratch / "tests" / "e2e" / name)
    shutil.copy(ROOT / "pyproject.toml", scratch / "pyproject.toml")
    for folder in ("docs", "packaging"):  # what tests compare with the code: the pages, the unit
        shutil.copytree(ROOT / folder, scratch / folder, ignore=shutil.ignore_patterns("_build", "__pycache__"))
    (scratch / "benchmarks").mkdir()
    shutil.copy(ROOT / "benchmarks" / "bridge.py", scratch / "benchmarks")  # the sections the limits table names
    session.chdir(str(scratch))
    session.run(
        "python",
        "-c",
        "import importlib.metadata as m, legacy_msi_credential, sys; "
        "assert 'site-packages' in legacy_msi_credential.__file__, legacy_msi_credential.__file__; "
        "print('testing the installed wheel:', legacy_msi_credential.__file__, 'on Python', sys.version.split()[0]); "
        f"print('with', ', '.join(f'{{name}} {{m.version(name)}}' for name in {DEPENDENCIES!r}))",
    )
    # Two workers each: the sessions run side by side, and most tests wait on loopback I/O.
    workers = ["--numprocesses", "2", "--dist", "loadgroup"]
    session.run("python", "-m", "pytest", "-q", "-p", "no:cacheprovider", *workers, "tests", *session.posargs)


#: The libraries whose versions a run prints: the direct dependencies and urllib3.
DEPENDENCIES = ("azure-core", "requests", "urllib3", "aiohttp", "azure-identity", "cryptography")


#: The extras the floors session installs at their lowest versions, with ``install_requires``.
#: docs/support.md's table is checked against them (tests/e2e/test_publication.py).
FLOOR_EXTRAS = ("test", "aio", "emulator", "identity")
#: urllib3 is requests' dependency, not this package's: the floors session names its own.
URLLIB3_FLOOR = "urllib3>=1.26.20,<2"


@nox.session(name="wheel", python=PYTHONS, venv_backend="uv")
def wheel(session: nox.Session) -> None:
    """The newest versions setup.cfg accepts."""
    built = _wheel(session)
    session.install(f"{built}[test,aio,emulator,identity]")
    session.install("--reinstall", "--no-deps", built)  # the same version number, new code
    _run_suite(session)


@nox.session(name="floors", python=PYTHONS[0], venv_backend="uv", reuse_venv=False)  # never newer leftovers
def floors(session: nox.Session) -> None:
    """The oldest machine the package claims: the oldest Python with the lowest version of every
    direct dependency setup.cfg declares (uv's ``lowest-direct`` resolution), and urllib3 1.26,
    which requests accepts and which the distributions of older VMs ship (urllib3 2 also
    refuses OpenSSL older than 1.1.1)."""
    built = _wheel(session)
    # Named here as direct requirements: behind the wheel they would be transitive, and
    # resolved to their newest versions.
    floors = _declared(["install_requires"], list(FLOOR_EXTRAS))
    session.install("--resolution", "lowest-direct", *floors, URLLIB3_FLOOR)
    session.install("--reinstall", "--no-deps", built)
    # azure-identity's own tests of its oldest supported version, run against the drop-in
    # too; their sdist is fetched here (the test itself reaches only loopback), with pip,
    # which a uv environment lacks.
    session.install("pip")
    version = session.run(
        "python", "-c", "import importlib.metadata as m; print(m.version('azure-identity'))", silent=True
    )
    cache = ROOT / ".cache" / "azure-identity-sdist"
    if not list(cache.glob(f"azure_identity-{str(version).strip()}.tar.gz")):
        session.log(f"downloading the sdist of azure-identity {str(version).strip()} from the package index")
        session.run("python", "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                    f"azure-identity=={str(version).strip()}", "-d", str(cache))  # fmt: skip
    session.env["LEGACY_MSI_SDIST_CACHE"] = str(cache)
    _run_suite(session, e2e=("test_azure_identity_suite.py", "azure_identity_suite"))


def _declared(options: list[str], extras: list[str]) -> list[str]:
    """The requirements setup.cfg declares in ``[options]`` and the given extras."""
    config = configparser.ConfigParser(interpolation=None)
    config.read(ROOT / "setup.cfg")
    text = [config["options"][name] for name in options]
    text += [config["options.extras_require"][name] for name in extras]
    lines = (line.split("#", 1)[0].strip() for block in text for line in block.splitlines())
    return [line for line in lines if line and not line.startswith("%(")]
