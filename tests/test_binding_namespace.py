"""What binding does where the network is the test's own: port 0's retry, ``::``, a host
without IPv6.

Runs ``binding_probe.py`` in a private network namespace (``unshare -n``, as root), whose
port range and IPv6 switch are its own and whose only interface is ``lo``. Skipped only
where namespaces cannot be made, and never in CI. A host whose kernel has no IPv6 at all
(``EAFNOSUPPORT`` when making the socket) cannot be made this way; it takes the same path
as ``disable_ipv6`` (``EADDRNOTAVAIL``), which is tried here.
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
#: One worker runs the probe once for all the tests below.
pytestmark = pytest.mark.xdist_group("binding-namespace")


@pytest.fixture(scope="module")
def report() -> dict[str, dict[str, object]]:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        available = False
    else:
        available = subprocess.run(["unshare", "-n", "true"], capture_output=True, check=False).returncode == 0
    if not available:
        if os.environ.get("CI"):
            pytest.fail("CI must be able to make network namespaces (unshare -n, as root)")
        pytest.skip("cannot make a private network namespace here (needs unshare and root)")
    result = subprocess.run(
        ["unshare", "-n", "sh", "-c", f"set -e; ip link set lo up; exec {sys.executable} {HERE / 'binding_probe.py'}"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=HERE.parent,
        env={**os.environ, "PYTHONPATH": str(HERE.parent)},
    )
    assert result.returncode == 0, result.stderr
    parsed: dict[str, dict[str, object]] = json.loads(result.stdout.strip().splitlines()[-1])
    return parsed


@pytest.mark.parametrize("server", ["bridge", "emulator"])
def test_port_zero_ends_on_a_port_free_on_both_addresses(report: dict[str, dict[str, object]], server: str) -> None:
    """[::1] is taken on 40000-40004, the range is 40000-40005: every start ends on 40005 and
    answers on both addresses, whichever port the kernel picked first."""
    assert report["port_zero"][server] == [[40005, server, server]] * 6


@pytest.mark.parametrize("server", ["bridge", "emulator"])
def test_every_address_serves_ipv4_clients_too(report: dict[str, dict[str, object]], server: str) -> None:
    assert report["every_address"][server] == [server, server]  # over 127.0.0.1, then ::1


@pytest.mark.parametrize("server", ["bridge", "emulator"])
def test_a_host_without_ipv6_serves_ipv4_and_says_so_once(report: dict[str, dict[str, object]], server: str) -> None:
    outcome = report["without_ipv6"][server]
    assert isinstance(outcome, dict)
    assert outcome["ipv4"] == server
    name = server.capitalize()
    assert outcome["said"] == [
        f"INFO {name}: not listening on [::1]:{outcome['port']}: this host has no IPv6 "
        "(Cannot assign requested address)"
    ]
    # ::1 asked for by name is not left out: it is a refusal.
    assert outcome["explicit"] == "ListenError: cannot listen on [::1]:0: Cannot assign requested address"
