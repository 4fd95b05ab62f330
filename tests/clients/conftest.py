"""The real clients' job (scripts/test-clients.sh): a private network namespace, the emulator
playing the extension, the adapter in front of it.

Every test here runs inside ``unshare -n`` with only ``lo`` up (the script starts pytest
there), so nothing but this machine's loopback can answer a client: a client that tried
IMDS at 169.254.169.254, or Azure itself, would fail, not reach it. Outside such a
namespace the tests skip, and in CI they fail.
"""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from legacy_msi_credential.emulator import Emulator, UserAssignedIdentity

ROOT = Path(__file__).resolve().parents[2]
#: The user-assigned identity the clients ask for by each of its three names.
IDENTITY = UserAssignedIdentity(client_id="5a1e0c1d-0000-4000-8000-0000000c11e5").completed()
#: How long the adapter may take to write its variables file.
ADAPTER_START = 30.0  # s


def _in_private_network() -> str:
    """Why this is not a private network namespace with only loopback, or "" if it is one."""
    interfaces = sorted(name for _, name in socket.if_nameindex())  # this namespace's, not /sys's
    if interfaces != ["lo"]:
        return f"network interfaces {interfaces}, not only lo"
    with socket.socket() as probe:
        probe.settimeout(2)
        code = probe.connect_ex(("169.254.169.254", 80))
    if code != errno.ENETUNREACH:
        return f"169.254.169.254 is routable here ({errno.errorcode.get(code, code)})"
    return ""


@pytest.fixture(scope="session", autouse=True)
def private_network() -> None:
    why = _in_private_network()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"the real clients run only in a private network namespace (scripts/test-clients.sh): {why}")
        pytest.skip(f"run by scripts/test-clients.sh, inside unshare -n: {why}")


@pytest.fixture(scope="session")
def extension() -> Iterator[Emulator]:
    """The legacy extension: a system-assigned identity and :data:`IDENTITY`."""
    with Emulator(port=0, user_assigned=[IDENTITY], system_assigned=True) as running:
        yield running


@dataclass(frozen=True)
class Adapter:
    variables: dict[str, str]
    process: subprocess.Popen[bytes]

    @property
    def authority(self) -> str:
        """``scheme://host:port`` of IDENTITY_ENDPOINT: where the IMDS protocol is served."""
        endpoint = self.variables["IDENTITY_ENDPOINT"]
        return endpoint[: endpoint.index("/", len("http://"))]


def read_env_file(path: Path) -> dict[str, str]:
    return dict(
        line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and not line.startswith("#")
    )


def start_adapter(endpoint: str, folder: Path, extra: tuple[str, ...] = ()) -> Adapter:
    """``legacy-msi adapt`` as the issue's interface runs it, once it has written its variables."""
    env_file = folder / "env"
    process = subprocess.Popen(
        [sys.executable, "-m", "legacy_msi_credential", "adapt", "--host", "127.0.0.1", "--port", "0",
         "--endpoint", endpoint, "--env-file", str(env_file), *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=folder,
        env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        for _ in range(int(ADAPTER_START / 0.05)):
            if env_file.exists() and "IDENTITY_HEADER=" in env_file.read_text():
                return Adapter(read_env_file(env_file), process)
            try:
                process.wait(timeout=0.05)  # the wait: the process ending, or 50 ms passing
            except subprocess.TimeoutExpired:
                continue
            assert process.stderr is not None
            raise AssertionError(f"legacy-msi adapt exited {process.returncode}: {process.stderr.read().decode()}")
        raise AssertionError(f"legacy-msi adapt wrote no variables to {env_file} in {ADAPTER_START} s")
    except BaseException:
        stop_adapter(process)
        raise


def stop_adapter(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stderr is not None:
        process.stderr.close()


@pytest.fixture(scope="session")
def adapter(extension: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Adapter]:
    folder = tmp_path_factory.mktemp("adapter")
    running = start_adapter(extension.endpoint, folder)
    yield running
    stop_adapter(running.process)


@dataclass(frozen=True)
class Arm:
    """A loopback Resource Manager for ``az login``: HTTPS (a throwaway CA), no subscription."""

    url: str
    ca_file: str
    authorizations: list[str]


@pytest.fixture(scope="session")
def arm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Arm]:
    import http.server
    import json
    import ssl
    import threading

    import trustme

    folder = tmp_path_factory.mktemp("arm")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ca_file = folder / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.startswith("/metadata/endpoints"):  # what `az cloud register` reads
                document: dict[str, object] = {
                    "name": "Loopback",
                    "resourceManager": base,
                    "authentication": {
                        "loginEndpoint": "https://login.microsoftonline.com",
                        "audiences": ["https://management.core.windows.net/", "https://management.azure.com/"],
                        "tenant": "common",
                        "identityProvider": "AAD",
                    },
                    "suffixes": {},
                }
            else:
                seen.append(self.headers.get("Authorization", ""))
                document = {"value": []}  # subscriptions and tenants alike: none
            body = json.dumps(document).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    base = f"https://127.0.0.1:{server.server_address[1]}/"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Arm(base, str(ca_file), seen)
    server.shutdown()
    server.server_close()
