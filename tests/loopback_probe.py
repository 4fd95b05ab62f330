"""Run inside a private network namespace by ``test_loopback_namespace.py``; prints one JSON report.

The namespace has only loopback, plus 10.99.0.1 on ``lo`` as a stand-in for a remote host
(traffic to it never leaves the namespace), and ``/etc/hosts`` maps ``localhost`` to
10.99.0.1, as a hostile resolver would. A canary server on 10.99.0.1 records every byte it
receives. Every way of giving an endpoint, for both twins on every transport, must leave
the canary without a byte; with ``allow_insecure_http=True`` the bytes do arrive, which
shows the canary can tell.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
from typing import Any

from azure.core.pipeline.transport import AsyncioRequestsTransport, RequestsTransport

from legacy_msi_credential import LegacyMsiCredential
from legacy_msi_credential.aio import LegacyMsiCredential as AsyncLegacyMsiCredential
from legacy_msi_credential.emulator import Emulator

REMOTE = "10.99.0.1"
ARM = "https://management.azure.com/.default"


class Canary:
    """Accepts connections on REMOTE and records what arrives."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((REMOTE, 50342))  # the extension's port, so that the default endpoint is tried too
        self.sock.listen(64)
        self.received = b""
        self.connections = 0
        threading.Thread(target=self._run, daemon=True).start()

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def _run(self) -> None:
        while True:
            conn, _ = self.sock.accept()
            self.connections += 1
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        conn.settimeout(2)
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                self.received += data
                if b"\r\n\r\n" in data:
                    body = b'{"access_token":"from-the-remote-host","expires_in":"3600"}'
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                        + str(len(body)).encode()
                        + b"\r\n\r\n"
                        + body
                    )
        except OSError:
            return
        finally:
            conn.close()


def run(kind: str, **options: Any) -> str:
    """One token request; the outcome's type name (and the message's start for errors)."""
    try:
        if kind == "sync":
            with LegacyMsiCredential(**options) as credential:
                credential.get_token(ARM)
            return "token"
        if kind == "aio-requests":
            options["transport"] = AsyncioRequestsTransport()

        async def main() -> None:
            async with AsyncLegacyMsiCredential(**options) as credential:
                await credential.get_token(ARM)

        asyncio.run(main())
        return "token"
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc)[:90]}"


def shared(kind: str, strict_first: bool, url: str) -> str:
    """A credential that requires loopback and one allowed insecure http, on one transport:
    the first's request must still be refused (the other's settings never weaken it)."""
    try:
        if kind == "sync":
            transport: Any = RequestsTransport()
            make: Any = LegacyMsiCredential
        else:
            from azure.core.pipeline.transport import AioHttpTransport

            transport = AsyncioRequestsTransport() if kind == "aio-requests" else AioHttpTransport()
            make = AsyncLegacyMsiCredential
        made = {}
        for which in ("strict", "lax") if strict_first else ("lax", "strict"):
            made[which] = make(endpoint=url, transport=transport, allow_insecure_http=which == "lax")
        if kind == "sync":
            made["strict"].get_token(ARM)
        else:
            asyncio.run(made["strict"].get_token(ARM))
        return "token"
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc)[:90]}"


def main() -> None:
    canary = Canary()
    url = f"http://localhost:{canary.port}/oauth2/token"
    report: dict[str, Any] = {"resolved": socket.gethostbyname("localhost")}
    settings = os.path.join(tempfile.mkdtemp(), "ManagedIdentity-Settings")
    with open(settings, "w") as handle:
        json.dump({"url": f"http://localhost:{canary.port}"}, handle)
    sources: dict[str, tuple[dict[str, str], dict[str, Any]]] = {
        "argument": ({}, {"endpoint": url}),
        "LEGACY_MSI_ENDPOINT": ({"LEGACY_MSI_ENDPOINT": url}, {}),
        "MSI_ENDPOINT": ({"MSI_ENDPOINT": url}, {}),
        "settings file": ({"LEGACY_MSI_SETTINGS_FILE": settings}, {}),
        "default": ({}, {}),
    }
    outcomes: dict[str, str] = {}
    for source, (env, options) in sources.items():
        for kind in ("sync", "aio-aiohttp", "aio-requests"):
            for name in ("LEGACY_MSI_ENDPOINT", "MSI_ENDPOINT", "LEGACY_MSI_SETTINGS_FILE"):
                os.environ.pop(name, None)
            os.environ["LEGACY_MSI_SETTINGS_FILE"] = os.path.join(tempfile.mkdtemp(), "absent")
            os.environ.update(env)
            outcomes[f"{source} / {kind}"] = run(kind, **options)
    report["outcomes"] = outcomes
    os.environ["LEGACY_MSI_SETTINGS_FILE"] = os.path.join(tempfile.mkdtemp(), "absent")
    report["shared"] = {
        f"{kind} / {'strict first' if strict_first else 'lax first'}": shared(kind, strict_first, url)
        for kind in ("sync", "aio-aiohttp", "aio-requests")
        for strict_first in (True, False)
    }
    report["bytes_before_opt_in"] = len(canary.received)
    report["connections_before_opt_in"] = canary.connections
    # The same URL with the opt-in reaches the canary: the check above is real.
    os.environ.pop("LEGACY_MSI_SETTINGS_FILE", None)
    report["opt_in"] = run("sync", endpoint=url, allow_insecure_http=True)
    report["bytes_after_opt_in"] = len(canary.received)
    # The emulator refuses to serve where "localhost" is not loopback.
    try:
        Emulator(host="localhost", port=0).start().stop()
        report["emulator"] = "served"
    except ValueError as exc:
        report["emulator"] = f"ValueError: {exc}"[:80]
    # The doctor's probes are checked too: nothing but a bare connect reaches the canary.
    before = len(canary.received)
    doctor = subprocess.run(
        [sys.executable, "-m", "legacy_msi_credential", "doctor", "--endpoint", url, "--skip-imds"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    report["doctor_bytes"] = len(canary.received) - before
    report["doctor_status"] = doctor.returncode
    print(json.dumps(report))


if __name__ == "__main__":
    main()
