"""Fixtures for the end-to-end tests: Azurite over HTTPS with OAuth, and the challenge server."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from legacy_msi_credential.emulator import Emulator

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
sys.path.insert(0, str(SAMPLES))

from local_services import Azurite, find_azurite  # noqa: E402

from .challenge_server import ChallengeServer  # noqa: E402


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests that use Azurite run in one worker (``--dist loadgroup``): one Azurite, not one a worker.
    First among the hooks: pytest-xdist turns the group mark into a scheduling group in a hook
    of its own, which would otherwise run before the mark is here."""
    for item in items:
        if "azurite" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("azurite"))


def _claim_azurite(config: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Under pytest-xdist's ``--dist loadgroup``, fail when a second worker starts Azurite: the
    group above is not honoured, and every worker would pay for an Azurite of its own (about
    3 s of CPU each). Other ``--dist`` modes spread the tests on purpose: nothing to check."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker is None or not getattr(config.option, "loadgroup", False):
        return
    claim = tmp_path_factory.getbasetemp().parent / "azurite-worker"  # shared by the run's workers
    try:
        descriptor = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        pytest.fail(
            f"Azurite already runs in worker {claim.read_text()}, and {worker} would start another: "
            "--dist loadgroup is not grouping the Azurite tests (see the pytest pin in setup.cfg)"
        )
    os.write(descriptor, worker.encode())
    os.close(descriptor)


@pytest.fixture(scope="session")
def azurite(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """Azurite on free loopback ports, HTTPS with a throwaway CA, OAuth checks on."""
    if find_azurite() is None:
        if os.environ.get("CI"):
            pytest.fail("Azurite is not installed: .ci/run must install it (npm ci in tools/azurite)")
        pytest.skip("Azurite is not installed: run `npm ci` in tools/azurite (needs Node.js)")
    _claim_azurite(request.config, tmp_path_factory)
    with Azurite.start() as running:
        assert running.blob_url.startswith("https://")
        yield running


@pytest.fixture(scope="session")
def session_emulator() -> Iterator[Emulator]:
    with Emulator(port=0) as running:
        yield running


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, str]:
    """(certificate chain, key, CA) for a loopback HTTPS server."""
    import trustme

    folder = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    cert, key, ca_file = folder / "cert.pem", folder / "key.pem", folder / "ca.pem"
    server.private_key_and_cert_chain_pem.write_to_path(str(cert))
    server.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(ca_file))
    return str(cert), str(key), str(ca_file)


@pytest.fixture
def challenge_server(session_emulator: Emulator, tls_files: tuple[str, str, str]) -> Iterator[ChallengeServer]:
    cert, key, _ = tls_files
    server = ChallengeServer(session_emulator.tenant_id, cert, key).start()
    yield server
    server.stop()
