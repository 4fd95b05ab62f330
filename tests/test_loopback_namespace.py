"""Loopback means the address actually connected to, whatever a name resolves to.

Needs addresses that are not loopback, so it runs ``loopback_probe.py`` in a private
network and mount namespace (``unshare -n -m``, as root): there 10.99.0.1 is an address of
``lo`` standing in for a remote host, and ``/etc/hosts`` sends ``localhost`` to it. Nothing
leaves the namespace. Skipped only where namespaces cannot be made, and never in CI.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
#: One worker runs the probe once for all the tests below (pytest-xdist's --dist loadgroup).
pytestmark = pytest.mark.xdist_group("loopback-namespace")


def _namespace_available() -> bool:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    probe = subprocess.run(["unshare", "-n", "-m", "true"], capture_output=True, check=False)
    return probe.returncode == 0


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    if not _namespace_available():
        if os.environ.get("CI"):
            pytest.fail("CI must be able to make network namespaces (unshare -n -m, as root)")
        pytest.skip("cannot make a private network namespace here (needs unshare and root)")
    hosts = tmp_path_factory.mktemp("ns") / "hosts"
    hosts.write_text("10.99.0.1 localhost\n")
    script = (
        "set -e; ip link set lo up; ip addr add 10.99.0.1/32 dev lo; "
        f"mount --bind {hosts} /etc/hosts; exec {sys.executable} {HERE / 'loopback_probe.py'}"
    )
    result = subprocess.run(
        ["unshare", "-n", "-m", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=HERE.parent,
        env={**os.environ, "PYTHONPATH": str(HERE.parent)},
    )
    assert result.returncode == 0, result.stderr
    parsed: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    return parsed


def test_the_namespace_resolves_localhost_elsewhere(report: dict[str, object]) -> None:
    assert report["resolved"] == "10.99.0.1"


def test_no_byte_reaches_a_non_loopback_peer(report: dict[str, object]) -> None:
    outcomes = report["outcomes"]
    assert isinstance(outcomes, dict)
    assert len(outcomes) == 15  # 5 ways to give the endpoint x 3 transports
    for where, outcome in outcomes.items():
        assert outcome.startswith(
            "CredentialUnavailableError: LegacyMsiCredential: refused to send the token request to 10.99.0.1"
        ), (
            where,
            outcome,
        )
    assert report["bytes_before_opt_in"] == 0
    assert isinstance(report["connections_before_opt_in"], int)
    assert report["connections_before_opt_in"] >= 1  # connections were made, and closed unwritten


def test_a_shared_transport_never_weakens_a_credential_that_requires_loopback(report: dict[str, object]) -> None:
    """Two credentials on one transport, one of them allowed insecure http: the other is still
    refused a non-loopback peer, in either order of construction (counted in the zero bytes above)."""
    shared = report["shared"]
    assert isinstance(shared, dict)
    assert len(shared) == 6  # 3 transports x 2 orders
    for case, outcome in shared.items():
        refused = outcome.startswith(
            "CredentialUnavailableError: LegacyMsiCredential: refused to send the token request to 10.99.0.1"
        )
        unguardable = outcome.startswith("ValueError: transport=AioHttpTransport")  # refused when made
        assert refused or unguardable, (case, outcome)


def test_the_opt_in_reaches_it(report: dict[str, object]) -> None:
    """The check can fail: with allow_insecure_http=True the same URL gets the remote token."""
    assert report["opt_in"] == "token"
    assert isinstance(report["bytes_after_opt_in"], int)
    assert report["bytes_after_opt_in"] > 0


def test_the_emulator_refuses_a_name_that_is_not_loopback(report: dict[str, object]) -> None:
    assert str(report["emulator"]).startswith("ValueError: refusing to serve on 10.99.0.1")


def test_the_doctor_sends_nothing_there(report: dict[str, object]) -> None:
    assert report["doctor_bytes"] == 0
    assert report["doctor_status"] == 1
