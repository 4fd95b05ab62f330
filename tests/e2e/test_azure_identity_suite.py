"""azure-identity's own ``DefaultAzureCredential`` tests, run against the drop-in.

The sdist of the installed azure-identity version is fetched from the package index by
``scripts/setup.sh`` (into ``.cache/``, never copied here; the test itself reaches only
loopback), its tests that build the class are run twice in a private
network namespace (``unshare -n``, loopback only): with azure-identity's own class, then
with every ``DefaultAzureCredential`` they import rebound to this package's twins
(``azure_identity_suite/rebind.py``). Every test that passes with azure-identity's class
must pass with the drop-in, except those listed in
``azure_identity_suite/expected_differences.txt``, each with its reason. A new
azure-identity release that breaks the drop-in fails here, not in a user's hands.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent / "azure_identity_suite"
ROOT = HERE.parents[2]
#: The test modules that build DefaultAzureCredential (those of azure-identity's live tests aside).
MODULES = (
    "test_default.py",
    "test_default_async.py",
    "test_token_credentials_env.py",
    "test_token_credentials_env_async.py",
    "test_pickling.py",
    "test_pickling_async.py",
    "test_initialization.py",
    "test_initialization_async.py",
    "test_workload_identity_credential.py",
    "test_workload_identity_credential_async.py",
)


def _expected_differences() -> dict[str, str]:
    found = {}
    for line in (HERE / "expected_differences.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            test, _, why = line.partition(" # ")
            assert why.strip(), f"no reason given for {test}"
            found[test.strip()] = why.strip()
    return found


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-n", "true"], check=False).returncode:
        if os.environ.get("CI"):
            pytest.fail("CI runs azure-identity's tests in a private network namespace (unshare -n, as root)")
        pytest.skip("needs unshare -n (root)")
    version = importlib.metadata.version("azure-identity")
    # Where scripts/setup.sh puts it; the floors session of noxfile.py says where it put its own.
    cache = Path(os.environ.get("LEGACY_MSI_SDIST_CACHE") or ROOT / ".cache" / "azure-identity-sdist")
    archives = list(cache.glob(f"azure_identity-{version}.tar.gz"))
    if not archives:
        missing = f"no sdist of azure-identity {version} in {cache}: scripts/setup.sh fetches it"
        if os.environ.get("CI"):
            pytest.fail(missing)
        pytest.skip(missing)
    target = tmp_path_factory.mktemp("azure-identity")
    with tarfile.open(archives[0]) as archive:
        members = [m for m in archive.getmembers() if "/tests/" in m.name and not m.issym() and not m.islnk()]
        archive.extractall(target, members=members)
    tests = next(target.glob("azure_identity-*/tests"))
    return tests


def _start(tests: Path, drop_in: bool, report: Path) -> subprocess.Popen[str]:
    """azure-identity's tests in a private network namespace, with its class or the drop-in."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "MSI_", "IDENTITY_", "IMDS_"))},
        "PYTHONPATH": os.pathsep.join([str(HERE), str(tests), str(ROOT)]),
        "LEGACY_MSI_DROP_IN": "1" if drop_in else "0",
        # nothing listens where the legacy step looks: the tests' own mocks decide
        "LEGACY_MSI_ENDPOINT": "http://127.0.0.1:9/oauth2/token",
    }
    modules = [str(tests / name) for name in MODULES if (tests / name).exists()]
    command = [
        sys.executable, "-m", "pytest", "-q", "-p", "rebind", "-p", "no:cacheprovider", "-p", "no:legacy_msi",
        "-o", "addopts=", "-o", "asyncio_mode=auto", "-W", "ignore", f"--junitxml={report}", "--rootdir", str(tests),
        *modules,
    ]  # fmt: skip
    script = "ip link set lo up && exec " + " ".join(f"'{part}'" for part in command)
    return subprocess.Popen(
        ["unshare", "-n", "sh", "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tests,
    )


def _outcomes(run: subprocess.Popen[str], report: Path) -> dict[str, str]:
    """Outcome per test id: passed, failed or skipped."""
    stdout, stderr = run.communicate(timeout=900)
    print(stdout[-4000:])
    assert report.exists(), stderr[-4000:]
    outcomes = {}
    for case in ElementTree.parse(report).iter("testcase"):
        test = f"{Path(case.get('classname', '').replace('.', '/')).name}::{case.get('name')}"
        if case.find("failure") is not None or case.find("error") is not None:
            outcomes[test] = "failed"
        elif case.find("skipped") is not None:
            outcomes[test] = "skipped"
        else:
            outcomes[test] = "passed"
    return outcomes


@pytest.mark.slow
def test_azure_identitys_own_tests_pass_against_the_drop_in(suite: Path, tmp_path: Path) -> None:
    # both runs at once: each waits mostly on azure-identity's own timeouts
    running = [_start(suite, drop_in, tmp_path / f"{drop_in}.xml") for drop_in in (False, True)]
    theirs, ours = (_outcomes(run, tmp_path / f"{drop_in}.xml") for run, drop_in in zip(running, (False, True)))
    passing = {test for test, outcome in theirs.items() if outcome == "passed"}
    assert len(passing) > 40, theirs  # the suite ran (49 tests on azure-identity 1.19, 132 on 1.27)
    expected = _expected_differences()
    broken = sorted(test for test in passing if ours.get(test) != "passed" and test not in expected)
    print(f"azure-identity {importlib.metadata.version('azure-identity')}: {len(passing)} tests pass with its class")
    print(f"with the drop-in: {sum(ours.get(t) == 'passed' for t in passing)} of them pass; expected differences:")
    for test, why in expected.items():
        print(f"  {test}: {why} ({ours.get(test, 'not run')})")
    assert not broken, "azure-identity's tests that the drop-in breaks:\n" + "\n".join(broken)
