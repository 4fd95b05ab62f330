"""The emulator against real legacy clients that nobody here wrote, pinned from their registries.

curl (as the extension's C# sample calls it), msrestazure 0.6.4.post1, Node's ms-rest-azure
2.5.9 (the genuine port-50342 client) and @azure/ms-rest-nodeauth 3.1.1 (installed by
``npm ci`` in tests/e2e), and azure-identity's Cloud Shell path. Each test asserts what
the emulator received (its request log) and whose identity the returned token carries.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from legacy_msi_credential.emulator import Emulator, UserAssignedIdentity

E2E = Path(__file__).resolve().parent
ARM = "https://management.azure.com/"
IDENTITY = UserAssignedIdentity(client_id="0a1b2c3d-0000-4000-8000-00000000c11d").completed()


def claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


@pytest.fixture
def vm() -> Iterator[Emulator]:
    """A VM with a system-assigned identity and one user-assigned identity, nothing else."""
    with Emulator(port=0, user_assigned=[IDENTITY], system_assigned=True) as running:
        yield running


def system_oid(vm: Emulator) -> str:
    token, _ = vm.mint_token(ARM)
    return str(claims(token)["oid"])


def node(script: str, *args: str) -> dict[str, Any]:
    if shutil.which("node") is None or not (E2E / "node_modules" / "ms-rest-azure").is_dir():
        if os.environ.get("CI"):
            pytest.fail("Node.js and the pinned clients must be installed in CI (npm ci in tests/e2e)")
        pytest.skip("needs Node.js and `npm ci` in tests/e2e")
    result = subprocess.run(
        ["node", "-e", script, *args], capture_output=True, text=True, timeout=60, cwd=E2E, check=False
    )
    assert result.returncode == 0, result.stderr
    parsed: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return parsed


# --- curl, as the seed's C# sample calls the endpoint -------------------------------------


def test_curl_get(vm: Emulator) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    url = f"http://localhost:{vm.port}/oauth2/token?resource={ARM}"
    result = subprocess.run(
        ["curl", "-sS", "-H", "Metadata: true", url], capture_output=True, text=True, timeout=30, check=True
    )
    answer = json.loads(result.stdout)
    assert claims(answer["access_token"])["oid"] == system_oid(vm)
    assert isinstance(answer["expires_in"], str)  # the extension's string-typed numbers
    (request,) = vm.requests
    assert (request.method, request.path, request.params) == ("GET", "/oauth2/token", {"resource": [ARM]})


def test_curl_form_post_for_a_user_assigned_identity(vm: Emulator) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    result = subprocess.run(
        ["curl", "-sS", "-H", "Metadata: true", "--data-urlencode", f"resource={ARM}", "--data-urlencode",
         f"client_id={IDENTITY.client_id}", f"http://127.0.0.1:{vm.port}/oauth2/token"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    answer = json.loads(result.stdout)
    assert claims(answer["access_token"])["oid"] == IDENTITY.object_id
    assert vm.requests[0].method == "POST"


# --- msrestazure 0.6.4.post1 ------------------------------------------------------------------


def _msrestazure() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            from msrestazure import azure_active_directory
        except ImportError:
            if os.environ.get("CI"):
                pytest.fail("msrestazure must be installed in CI (the test extra pins it)")
            pytest.skip("msrestazure is not installed")
    return azure_active_directory


def test_msrestazure_get_msi_token_by_port(vm: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    aad = _msrestazure()
    monkeypatch.delenv("MSI_ENDPOINT", raising=False)
    scheme, token, entry = aad.get_msi_token(ARM, port=vm.port, msi_conf={"msi_res_id": IDENTITY.msi_res_id})
    assert scheme == "Bearer"
    assert claims(token)["oid"] == IDENTITY.object_id
    assert entry["client_id"] == IDENTITY.client_id
    (request,) = vm.requests
    assert request.method == "POST"
    assert request.params == {"resource": [ARM], "msi_res_id": [IDENTITY.msi_res_id]}


def test_msrestazure_msi_authentication_via_msi_endpoint(vm: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    aad = _msrestazure()
    monkeypatch.setenv("MSI_ENDPOINT", vm.endpoint)
    credentials = aad.MSIAuthentication(resource=ARM)
    assert claims(credentials.token["access_token"])["oid"] == system_oid(vm)
    assert [(r.method, r.params) for r in vm.requests] == [("POST", {"resource": [ARM]})]


# --- Node clients -------------------------------------------------------------------------------

_MS_REST_AZURE = """
const msRestAzure = require('ms-rest-azure');
const port = Number(process.argv[1]);
const credentials = new msRestAzure.MSIVmTokenCredentials({ port, resource: process.argv[2] });
credentials.getToken((err, result) => {
  if (err) { console.error(err); process.exit(1); }
  console.log(JSON.stringify({ accessToken: result.accessToken, tokenType: result.tokenType }));
});
"""


def test_node_ms_rest_azure_2_5_9_by_port(vm: Emulator) -> None:
    answer = node(_MS_REST_AZURE, str(vm.port), ARM)
    assert answer["tokenType"] == "Bearer"
    assert claims(answer["accessToken"])["oid"] == system_oid(vm)
    (request,) = vm.requests
    assert (request.method, request.path, request.params) == ("POST", "/oauth2/token", {"resource": [ARM]})
    assert request.headers.get("Metadata") == "true"


_NODEAUTH = """
const { MSIVmTokenCredentials } = require('@azure/ms-rest-nodeauth');
const [endpoint, resource, kind, id] = process.argv.slice(1);
const options = { msiEndpoint: endpoint, resource };
if (kind) options[kind] = id;
new MSIVmTokenCredentials(options).getToken().then(
  (token) => console.log(JSON.stringify({ accessToken: token.accessToken })),
  (err) => { console.error(err); process.exit(1); },
);
"""


@pytest.mark.parametrize(
    ("kind", "parameter", "value"),
    [
        ("", None, None),
        ("clientId", "client_id", IDENTITY.client_id),
        ("objectId", "object_id", IDENTITY.object_id),
        ("identityId", "mi_res_id", IDENTITY.msi_res_id),
    ],
)
def test_node_ms_rest_nodeauth_3_1_1(vm: Emulator, kind: str, parameter: Any, value: Any) -> None:
    args = [vm.endpoint, ARM] + ([kind, value] if kind else [])
    answer = node(_NODEAUTH, *args)
    expected_oid = system_oid(vm) if parameter is None else IDENTITY.object_id
    assert claims(answer["accessToken"])["oid"] == expected_oid  # never another identity
    (request,) = vm.requests
    assert request.method == "GET"
    assert request.params["api-version"] == ["2018-02-01"]
    if parameter is not None:
        assert request.params[parameter] == [value]


def test_node_ms_rest_nodeauth_unknown_identity_gets_no_token(vm: Emulator) -> None:
    with pytest.raises(AssertionError, match=r"unauthorized_client|Identity not found|401"):
        node(_NODEAUTH, vm.endpoint, ARM, "identityId", "/subscriptions/x/identities/not-on-this-vm")
    assert vm.tokens_issued == 0


# --- azure-identity's Cloud Shell path ------------------------------------------------------


def test_azure_identity_cloud_shell_path(vm: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    from azure.identity import ManagedIdentityCredential

    monkeypatch.setenv("MSI_ENDPOINT", vm.endpoint)
    monkeypatch.delenv("MSI_SECRET", raising=False)
    token = ManagedIdentityCredential().get_token(ARM + ".default")
    assert claims(token.token)["oid"] == system_oid(vm)
    (request,) = vm.requests
    assert request.method == "POST"
    assert request.params["resource"] == [ARM.rstrip("/")] or request.params["resource"] == [ARM]


# --- the same clients through `legacy-msi serve`, tokens from IMDS ------------------------------


@pytest.fixture
def bridged(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Emulator]]:
    """A bridge on loopback whose source is azure-identity's IMDS credential, served by the emulator."""
    from legacy_msi_credential.bridge import Bridge

    with Emulator(port=0, user_assigned=[IDENTITY]) as imds:
        monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", imds.imds_authority)
        with Bridge(port=0, source="imds") as bridge:
            yield bridge, imds


def test_curl_through_the_bridge(bridged: tuple[Any, Emulator]) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    bridge, imds = bridged
    url = f"http://localhost:{bridge.port}/oauth2/token?resource={ARM}"
    result = subprocess.run(
        ["curl", "-sS", "-H", "Metadata: true", url], capture_output=True, text=True, timeout=30, check=True
    )
    assert json.loads(result.stdout)["access_token"] == imds.minted_tokens[0]
    assert [r.path for r in imds.requests] == ["/metadata/identity/oauth2/token"]


def test_msrestazure_through_the_bridge(bridged: tuple[Any, Emulator], monkeypatch: pytest.MonkeyPatch) -> None:
    aad = _msrestazure()
    bridge, imds = bridged
    monkeypatch.delenv("MSI_ENDPOINT", raising=False)
    _, token, _ = aad.get_msi_token(ARM, port=bridge.port, msi_conf={"client_id": IDENTITY.client_id})
    assert claims(token)["oid"] == IDENTITY.object_id
    assert imds.requests[0].params["client_id"] == [IDENTITY.client_id]


def test_node_ms_rest_azure_through_the_bridge(bridged: tuple[Any, Emulator]) -> None:
    bridge, imds = bridged
    answer = node(_MS_REST_AZURE, str(bridge.port), ARM)
    assert answer["accessToken"] == imds.minted_tokens[0]


def test_node_ms_rest_nodeauth_through_the_bridge(bridged: tuple[Any, Emulator]) -> None:
    bridge, imds = bridged
    answer = node(_NODEAUTH, bridge.endpoint, ARM, "identityId", IDENTITY.msi_res_id)
    assert claims(answer["accessToken"])["oid"] == IDENTITY.object_id
    params = imds.requests[0].params
    assert (params.get("mi_res_id") or params.get("msi_res_id")) == [IDENTITY.msi_res_id]
