"""Today's Azure clients, unmodified, get tokens through ``legacy-msi adapt`` for the identity
they ask for, by both protocols.

Each client runs in a process of its own with nothing but the variables a user would have
(``IDENTITY_ENDPOINT`` and ``IDENTITY_HEADER`` from the adapter's file, or
``AZURE_POD_IDENTITY_AUTHORITY_HOST`` alone), an empty home, and the network namespace's
loopback. The token it prints is decoded and must name the identity asked for: the
emulator mints tokens whose ``oid``, ``appid`` and ``xms_mirid`` claims are the identity's.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

import pytest

from legacy_msi_credential.emulator import Emulator

from .conftest import IDENTITY, Adapter
from .matrix import cases

HERE = Path(__file__).resolve().parent
E2E = HERE.parent / "e2e"
ARM = "https://management.azure.com/"
#: A client that takes longer than this has hung; the test says so instead of waiting.
CLIENT_TIMEOUT = 120  # s
#: Set to "emulator" to run the IMDS cases straight against the emulator's own IMDS path:
#: tells a client's own failure from the adapter's.
AGAINST = os.environ.get("LEGACY_MSI_CLIENTS_AGAINST", "adapter")
TIMINGS: list[dict[str, Any]] = []


def claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def identity_value(kind: str) -> str:
    return {
        "system": "",
        "client_id": str(IDENTITY.client_id),
        "object_id": str(IDENTITY.object_id),
        "resource_id": str(IDENTITY.msi_res_id),
        "AZURE_CLIENT_ID": str(IDENTITY.client_id),
    }[kind]


def base_environment(home: Path) -> dict[str, str]:
    """What a fresh login has: a PATH, an empty home; no Azure variable at all."""
    return {"PATH": os.environ["PATH"], "HOME": str(home), "LANG": "C.UTF-8", "NO_COLOR": "1"}


def protocol_environment(protocol: str, request: pytest.FixtureRequest, extension: Emulator) -> dict[str, str]:
    if AGAINST == "emulator":
        if protocol != "imds":
            pytest.skip("the emulator serves the legacy and IMDS protocols, not App Service's")
        return {"AZURE_POD_IDENTITY_AUTHORITY_HOST": extension.imds_authority}
    adapter: Adapter = request.getfixturevalue("adapter")
    if protocol == "app-service":
        return {key: adapter.variables[key] for key in ("IDENTITY_ENDPOINT", "IDENTITY_HEADER")}
    return {"AZURE_POD_IDENTITY_AUTHORITY_HOST": adapter.authority}


def need_node() -> None:
    if shutil.which("node") is None or not (E2E / "node_modules" / "@azure" / "identity").is_dir():
        if os.environ.get("CI"):
            pytest.fail("CI installs Node.js and the pinned clients (npm ci in tests/e2e)")
        pytest.skip("needs Node.js and `npm ci` in tests/e2e")


def az_path() -> str:
    found = os.environ.get("LEGACY_MSI_AZ")
    if not found:
        if os.environ.get("CI"):
            pytest.fail("scripts/test-clients.sh installs azure-cli (scripts/azure-cli.sh) and sets LEGACY_MSI_AZ")
        pytest.skip("needs azure-cli: run scripts/test-clients.sh (it sets LEGACY_MSI_AZ)")
    return found


def run_json(command: list[str], env: dict[str, str], cwd: Path) -> dict[str, Any]:
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=CLIENT_TIMEOUT, env=env, cwd=cwd, check=False
    )
    lines = result.stdout.strip().splitlines()
    assert lines, f"{command[:3]} printed nothing (exit {result.returncode}): {result.stderr[-2000:]}"
    parsed: dict[str, Any] = json.loads(lines[-1])
    return parsed


def run_client(driver: str, identity: str, env: dict[str, str], home: Path, arm: Optional[Any]) -> dict[str, Any]:
    """Run one client for one identity; its outcome: {"token", "seconds"} or {"error", ...}."""
    value = identity_value(identity)
    kind = "system" if identity in ("system", "AZURE_CLIENT_ID") else identity
    if identity == "AZURE_CLIENT_ID":
        env = {**env, "AZURE_CLIENT_ID": value}
    python = sys.executable
    if driver.startswith("py-"):
        env = {**env, "PYTHONPATH": ""}  # azure-identity and msal as installed, nothing of this package
        if driver == "py-msal":
            return run_json([python, str(HERE / "drivers" / "py_msal.py"), kind, value, ARM], env, home)
        _, which, mode = driver.split("-")
        credential = "ManagedIdentityCredential" if which == "mic" else "DefaultAzureCredential"
        script = str(HERE / "drivers" / "py_identity.py")
        return run_json([python, script, mode, credential, kind, value, ARM], env, home)
    if driver.startswith("node-"):
        need_node()
        env = {**env, "NODE_PATH": str(E2E / "node_modules")}
        if driver == "node-msal":
            return run_json(["node", str(HERE / "drivers" / "node_msal.js"), kind, value, ARM], env, E2E)
        credential = "ManagedIdentityCredential" if driver == "node-mic" else "DefaultAzureCredential"
        return run_json(["node", str(HERE / "drivers" / "node_identity.js"), credential, kind, value, ARM], env, E2E)
    assert driver == "az"
    return run_az(identity, value, env, home, arm)


def run_az(identity: str, value: str, env: dict[str, str], home: Path, arm: Any) -> dict[str, Any]:
    """``az login --identity [--client-id]`` against a loopback Resource Manager that lists no
    subscription (so ``--allow-no-subscriptions``), then ``az account get-access-token``."""
    az = az_path()
    env = {
        **env,
        "AZURE_CONFIG_DIR": str(home / ".azure"),
        "AZURE_CORE_COLLECT_TELEMETRY": "no",
        "AZURE_CORE_NO_COLOR": "1",
        "REQUESTS_CA_BUNDLE": arm.ca_file,
        "PYTHONPATH": "",
    }

    def az_run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [az, *args], capture_output=True, text=True, timeout=CLIENT_TIMEOUT, env=env, cwd=home, check=False
        )

    for args in (
        ("cloud", "register", "--name", "Loopback", "--endpoint-resource-manager", arm.url),
        ("cloud", "set", "--name", "Loopback"),
    ):  # fmt: skip
        done = az_run(*args)
        assert done.returncode == 0, done.stderr[-2000:]
    start = time.monotonic()
    login = ["login", "--identity", "--allow-no-subscriptions", "--output", "json"]
    if identity == "client_id":
        login += ["--client-id", value]
    done = az_run(*login)
    if done.returncode != 0:
        return {"error": done.stderr[-500:], "type": "az login", "seconds": time.monotonic() - start}
    done = az_run("account", "get-access-token", "--resource", ARM, "--output", "json")
    if done.returncode != 0:
        return {"error": done.stderr[-500:], "type": "az account", "seconds": time.monotonic() - start}
    return {"token": json.loads(done.stdout)["accessToken"], "seconds": time.monotonic() - start}


@pytest.mark.parametrize(("driver", "protocol", "identity"), cases())
def test_the_client_gets_a_token_for_the_identity_it_asks_for(
    driver: str, protocol: str, identity: str, request: pytest.FixtureRequest, extension: Emulator, tmp_path: Path
) -> None:
    env = {**base_environment(tmp_path), **protocol_environment(protocol, request, extension)}
    arm = request.getfixturevalue("arm") if driver == "az" else None
    outcome = run_client(driver, identity, env, tmp_path, arm)
    assert "token" in outcome, outcome
    found = claims(outcome["token"])
    if identity in ("system",):
        expected = extension.mint_token(ARM)[1]
        assert found["oid"] == expected["oid"]
        assert found["xms_mirid"] == expected["xms_mirid"]
    else:
        assert (found["oid"], found["appid"], found["xms_mirid"]) == (
            IDENTITY.object_id,
            IDENTITY.client_id,
            IDENTITY.msi_res_id,
        )
    assert found["aud"].rstrip("/") == ARM.rstrip("/")
    print(json.dumps({"driver": driver, "protocol": protocol, "identity": identity, "seconds": outcome["seconds"]}))
