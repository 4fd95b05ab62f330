"""How today's clients react to each status a managed identity endpoint may answer with
when it has no token to give: how long each takes to give up, how many requests it sends
(its retries), and whether ``DefaultAzureCredential`` moves on to the next credential.

This is what chose the status ``legacy-msi adapt`` answers when the legacy extension is
missing or refuses (``legacy_msi_credential.adapt._protocols.unavailable``), and what the
failure table of ``docs/clients.md`` records. Each client is the real one, unmodified (the
drivers of ``tests/clients/drivers``), in a process of its own, for the system-assigned
identity, by each protocol; the endpoint is a loopback server that answers every request
with one status and the adapter's JSON error body, and counts requests. ``refused`` is a
port nothing listens on. For ``DefaultAzureCredential``, an ``az`` on the PATH answers with
a token: getting it means the chain moved on.

Run by hand, inside a private network namespace (nothing but loopback answers)::

    unshare -n sh -c 'ip link set lo up && exec .venv/bin/python -m tests.clients.failures'

It prints the table as Markdown. Minutes: some clients retry for tens of seconds.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Optional, Union

from .conftest import _in_private_network

HERE = Path(__file__).resolve().parent
E2E = HERE.parent / "e2e"
ARM = "https://management.azure.com/"
#: A secret for the App Service protocol: the server does not check it.
SECRET = "f" * 43
#: The statuses tried, with the headers the adapter sends with them.
STATUSES: dict[Union[int, str], dict[str, str]] = {
    400: {},  # what the adapter answers when the extension fails
    403: {},
    404: {},
    429: {"Retry-After": "1"},  # the adapter's own gate
    500: {},
    503: {"Retry-After": "5"},  # the adapter stopping
    "refused": {},  # nothing listening
}
#: The clients, as ``(driver, label)``.
CLIENTS = (
    ("py-mic", "azure-identity ManagedIdentityCredential (Python, sync)"),
    ("py-dac", "azure-identity DefaultAzureCredential (Python, sync)"),
    ("py-msal", "msal ManagedIdentityClient (Python)"),
    ("node-mic", "@azure/identity ManagedIdentityCredential"),
    ("node-dac", "@azure/identity DefaultAzureCredential"),
    ("node-msal", "@azure/msal-node ManagedIdentityApplication"),
)
PROTOCOLS = ("app-service", "imds")
#: A client still trying after this has been measured enough.
CAP = 150  # s
#: What the stand-in ``az`` answers ``az account get-access-token`` with.
AZ_TOKEN = "from-the-next-credential"
_AZ = f"""#!/bin/sh
echo '{{"accessToken": "{AZ_TOKEN}", "expiresOn": "2099-01-01 00:00:00.000000", "expires_on": 4070908800,
"tokenType": "Bearer", "subscription": "0", "tenant": "0"}}'
"""


class _Answering(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, status: int, headers: dict[str, str]) -> None:
        self.status, self.extra, self.requests = status, headers, 0
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Answering

    def do_GET(self) -> None:
        with self.server.lock:
            self.server.requests += 1
        body = json.dumps({"error": "unavailable", "error_description": "The legacy extension gave no token."})
        self.send_response(self.server.status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Server", "legacy-msi-adapt")
        for name, value in self.server.extra.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _command(driver: str) -> tuple[list[str], Optional[Path]]:
    python = sys.executable
    if driver == "py-msal":
        return [python, str(HERE / "drivers" / "py_msal.py"), "system", "", ARM], None
    if driver.startswith("py-"):
        credential = "ManagedIdentityCredential" if driver == "py-mic" else "DefaultAzureCredential"
        return [python, str(HERE / "drivers" / "py_identity.py"), "sync", credential, "system", "", ARM], None
    if driver == "node-msal":
        return ["node", str(HERE / "drivers" / "node_msal.js"), "system", "", ARM], E2E
    credential = "ManagedIdentityCredential" if driver == "node-mic" else "DefaultAzureCredential"
    return ["node", str(HERE / "drivers" / "node_identity.js"), credential, "system", "", ARM], E2E


def measure(driver: str, protocol: str, status: Union[int, str], scratch: Path) -> dict[str, Any]:
    """One client against one status by one protocol: seconds, requests, outcome."""
    server = None if status == "refused" else _Answering(int(status), STATUSES[status])
    port = _closed_port() if server is None else server.server_address[1]
    if server is not None:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    authority = f"http://127.0.0.1:{port}"
    home = Path(tempfile.mkdtemp(dir=scratch))
    env = {
        "PATH": f"{scratch / 'bin'}:{os.environ['PATH']}",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "NO_COLOR": "1",
        "PYTHONPATH": "",
        "NODE_PATH": str(E2E / "node_modules"),
    }
    if protocol == "app-service":
        env.update(IDENTITY_ENDPOINT=f"{authority}/msi/token", IDENTITY_HEADER=SECRET)
    else:
        env["AZURE_POD_IDENTITY_AUTHORITY_HOST"] = authority
    command, cwd = _command(driver)
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=CAP, env=env, cwd=cwd or home, check=False
        )
        lines = result.stdout.strip().splitlines()
        outcome: dict[str, Any] = json.loads(lines[-1]) if lines else {"error": result.stderr[-300:], "seconds": 0}
    except subprocess.TimeoutExpired:
        outcome = {"error": f"still trying after {CAP} s", "type": "timeout", "seconds": float(CAP)}
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
    outcome["requests"] = None if server is None else server.requests
    outcome["moved_on"] = outcome.get("token") == AZ_TOKEN
    return outcome


def cell(outcome: dict[str, Any], chain: bool) -> str:
    text = f"{outcome['seconds']:.1f} s"
    if outcome["requests"] is not None:
        text += f", {outcome['requests']} req"
    if outcome.get("type") == "timeout":
        text = f"> {CAP} s"
    elif "token" in outcome and not outcome["moved_on"]:
        text += ", token?"
    if chain:
        text += ", moves on" if outcome["moved_on"] else ", **stops**"
    return text


def main() -> int:
    why = _in_private_network()
    if why:
        print(f"run inside unshare -n (see the docstring): {why}", file=sys.stderr)
        return 2
    if shutil.which("node") is None:
        print("needs Node.js and npm ci in tests/e2e", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        (scratch / "bin").mkdir()
        (scratch / "bin" / "az").write_text(_AZ)
        (scratch / "bin" / "az").chmod(0o755)
        jobs = [(driver, protocol, status) for driver, _ in CLIENTS for protocol in PROTOCOLS for status in STATUSES]
        with ThreadPoolExecutor(int(os.environ.get("JOBS", "4"))) as pool:
            results = dict(zip(jobs, pool.map(lambda job: measure(*job, scratch), jobs)))
    print("| client | protocol | " + " | ".join(str(status) for status in STATUSES) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in STATUSES) + " |")
    for driver, label in CLIENTS:
        for protocol in PROTOCOLS:
            cells = [cell(results[driver, protocol, status], driver.endswith("dac")) for status in STATUSES]
            name = "App Service" if protocol == "app-service" else "IMDS"
            print(f"| {label} | {name} | " + " | ".join(cells) + " |")
    json.dump({" ".join(map(str, job)): outcome for job, outcome in results.items()}, sys.stderr, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
