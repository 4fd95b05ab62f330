"""The emulator's fidelity to the protocol, its faults, log, concurrency and shutdown, over raw HTTP."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from legacy_msi_credential.emulator import Emulator, Fault, UserAssignedIdentity, parse_fault_spec

from .conftest import start_cli

ARM = "https://management.azure.com/"


@pytest.fixture
def http() -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    yield session
    session.close()


def get(
    http: requests.Session, emulator: Emulator, *, headers: dict[str, str] | None = None, **params: str
) -> requests.Response:
    return http.get(
        emulator.endpoint, params=params, headers={"Metadata": "true"} if headers is None else headers, timeout=5
    )


def claims_of(token: str) -> dict[str, object]:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def test_documented_success_shape(emulator: Emulator, http: requests.Session) -> None:
    response = get(http, emulator, resource=ARM)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {
        "access_token",
        "refresh_token",
        "expires_in",
        "expires_on",
        "not_before",
        "resource",
        "token_type",
    }
    assert body["refresh_token"] == ""
    assert body["token_type"] == "Bearer"
    assert body["resource"] == ARM
    for name in ("expires_in", "expires_on", "not_before"):
        assert isinstance(body[name], str)
        assert body[name].isdigit()
    assert int(body["expires_on"]) - int(body["not_before"]) == 3599 + 300
    claims = claims_of(body["access_token"])
    assert claims["aud"] == ARM
    assert claims["iss"] == f"https://sts.windows.net/{emulator.tenant_id}/"
    assert claims["tid"] == emulator.tenant_id
    assert claims["idtyp"] == "app"
    assert {"oid", "appid", "iat", "nbf", "exp", "xms_mirid"} <= set(claims)


def test_tokens_are_signed_rs256_and_verify(emulator: Emulator, http: requests.Session) -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    token = get(http, emulator, resource=ARM).json()["access_token"]
    header_b64, payload_b64, signature_b64 = token.split(".")
    header = json.loads(base64.urlsafe_b64decode(header_b64 + "=="))
    assert header["alg"] == "RS256"
    jwk = emulator.public_jwk
    assert jwk is not None
    assert header["kid"] == jwk["kid"]
    n = int.from_bytes(base64.urlsafe_b64decode(jwk["n"] + "=="), "big")
    e = int.from_bytes(base64.urlsafe_b64decode(jwk["e"] + "=="), "big")
    key = rsa.RSAPublicNumbers(e, n).public_key()
    signature = base64.urlsafe_b64decode(signature_b64 + "=" * (-len(signature_b64) % 4))
    key.verify(signature, f"{header_b64}.{payload_b64}".encode(), padding.PKCS1v15(), hashes.SHA256())


def test_unsigned_tokens_when_asked(http: requests.Session) -> None:
    with Emulator(port=0, sign=False) as vm:
        token = get(http, vm, resource=ARM).json()["access_token"]
        header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
        assert header["alg"] == "none"
        assert token.endswith(".")
        assert vm.public_jwk is None


@pytest.mark.parametrize(
    ("path", "headers", "params", "status", "error"),
    [
        ("/oauth2/token", {}, {"resource": ARM}, 400, "bad_request_102"),
        ("/oauth2/token", {"Metadata": "True"}, {"resource": ARM}, 400, "bad_request_102"),
        ("/oauth2/token", {"Metadata": "true"}, {}, 400, "invalid_resource"),
        ("/oauth2/token", {"Metadata": "true"}, {"resource": "not a uri"}, 400, "invalid_resource"),
        (
            "/oauth2/token",
            {"Metadata": "true"},
            {"resource": "https://storage.azure.com/.default"},
            400,
            "invalid_resource",
        ),
        ("/oauth2/tokens", {"Metadata": "true"}, {"resource": ARM}, 401, "unknown_source"),
        ("/", {"Metadata": "true"}, {"resource": ARM}, 401, "unknown_source"),
        (
            "/oauth2/token",
            {"Metadata": "true"},
            {"resource": ARM, "client_id": "a", "object_id": "b"},
            401,
            "invalid_request",
        ),
        ("/metadata/identity/oauth2/token", {"Metadata": "true"}, {"resource": ARM}, 400, "invalid_request"),
    ],
)
def test_documented_errors(
    emulator: Emulator,
    http: requests.Session,
    path: str,
    headers: dict[str, str],
    params: dict[str, str],
    status: int,
    error: str,
) -> None:
    response = http.get(emulator.base_url.rstrip("/") + path, params=params, headers=headers, timeout=5)
    assert response.status_code == status
    assert response.json()["error"] == error
    assert response.json()["error_description"]


def test_repeated_parameter_is_invalid_request(emulator: Emulator, http: requests.Session) -> None:
    response = http.get(f"{emulator.endpoint}?resource=a&resource=b", headers={"Metadata": "true"}, timeout=5)
    assert (response.status_code, response.json()["error"]) == (401, "invalid_request")


def test_form_post_and_405_for_other_methods(emulator: Emulator, http: requests.Session) -> None:
    response = http.post(
        emulator.endpoint, data={"resource": ARM, "client_id": "c"}, headers={"Metadata": "true"}, timeout=5
    )
    assert response.status_code == 200
    assert claims_of(response.json()["access_token"])["appid"] == "c"
    put = http.put(emulator.endpoint, params={"resource": ARM}, headers={"Metadata": "true"}, timeout=5)
    assert put.status_code == 405
    assert put.headers["Allow"] == "GET, POST"


def test_post_only_mode(http: requests.Session) -> None:
    with Emulator(port=0, accept_get=False) as vm:
        assert get(http, vm, resource=ARM).status_code == 405
        assert (
            http.post(vm.endpoint, data={"resource": ARM}, headers={"Metadata": "true"}, timeout=5).status_code == 200
        )


def test_imds_path_answers_the_same_way(emulator: Emulator, http: requests.Session) -> None:
    url = emulator.imds_authority + "/metadata/identity/oauth2/token"
    response = http.get(
        url, params={"api-version": "2018-02-01", "resource": ARM}, headers={"Metadata": "true"}, timeout=5
    )
    assert response.status_code == 200
    assert response.json()["client_id"] == claims_of(response.json()["access_token"])["appid"]


def test_identities_are_reflected_and_registered_ones_enforced(http: requests.Session) -> None:
    identity = UserAssignedIdentity(client_id="c-1", object_id="o-1", msi_res_id="/subscriptions/s/x/uai")
    with Emulator(port=0, user_assigned=[identity]) as vm:
        for parameter, value in (("client_id", "c-1"), ("object_id", "o-1"), ("msi_res_id", "/subscriptions/s/x/uai")):
            claims = claims_of(get(http, vm, resource=ARM, **{parameter: value}).json()["access_token"])
            assert (claims["appid"], claims["oid"], claims["xms_mirid"]) == ("c-1", "o-1", "/subscriptions/s/x/uai")
        refused = get(http, vm, resource=ARM, client_id="other")
        assert (refused.status_code, refused.json()["error"]) == (401, "unauthorized_client")


@pytest.mark.parametrize("parameter", ["client_id", "object_id", "msi_res_id", "mi_res_id"])
def test_an_identity_the_vm_lacks_gets_no_token_whatever_names_it(http: requests.Session, parameter: str) -> None:
    """Every identity parameter, for every pair of identities: each gets its own, an unknown one none."""
    field = "msi_res_id" if parameter == "mi_res_id" else parameter
    first = UserAssignedIdentity(client_id="c-1", object_id="o-1", msi_res_id="/subscriptions/s/x/one")
    second = UserAssignedIdentity(client_id="c-2", object_id="o-2", msi_res_id="/subscriptions/s/x/two")
    with Emulator(port=0, user_assigned=[first, second]) as vm:
        for identity in (first, second, first):
            claims = claims_of(
                get(http, vm, resource=ARM, **{parameter: getattr(identity, field)}).json()["access_token"]
            )
            assert (claims["appid"], claims["oid"], claims["xms_mirid"]) == (
                identity.client_id,
                identity.object_id,
                identity.msi_res_id,
            )
        minted = len(vm.minted_tokens)
        unknown = "/subscriptions/s/x/three" if field == "msi_res_id" else "unknown-3"
        refused = get(http, vm, resource=ARM, **{parameter: unknown})
        assert refused.status_code in (400, 401), refused.text
        assert "access_token" not in refused.json()
        assert len(vm.minted_tokens) == minted  # nothing minted for it


def test_tokens_are_cached_per_resource_and_identity_until_near_expiry(http: requests.Session) -> None:
    now = [1_800_000_000.0]
    with Emulator(port=0, clock=lambda: now[0]) as vm:
        first = get(http, vm, resource=ARM).json()
        assert get(http, vm, resource=ARM).json()["access_token"] == first["access_token"]
        assert get(http, vm, resource=ARM, client_id="x").json()["access_token"] != first["access_token"]
        now[0] += 1000
        again = get(http, vm, resource=ARM).json()
        assert again["access_token"] == first["access_token"]
        assert int(again["expires_in"]) == 3599 - 1000  # part-way through its life
        now[0] += 3599 - 1000 - 299
        assert get(http, vm, resource=ARM).json()["access_token"] != first["access_token"]
        assert vm.tokens_issued == 3


def test_fault_script_is_played_in_order(emulator: Emulator, http: requests.Session) -> None:
    emulator.add_faults(
        Fault.http_error(429, retry_after=7),
        Fault.http_error(503, error="unknown", description="d"),
        Fault.not_json(),
        Fault.truncated(),
        Fault.expired(),
        Fault.lifetime(60),
    )
    assert emulator.pending_faults == 6
    throttled = get(http, emulator, resource=ARM)
    assert (throttled.status_code, throttled.headers["Retry-After"]) == (429, "7")
    assert get(http, emulator, resource=ARM).json() == {"error": "unknown", "error_description": "d"}
    assert get(http, emulator, resource=ARM).headers["Content-Type"] == "text/html"
    with pytest.raises(ValueError):
        get(http, emulator, resource=ARM).json()
    assert int(get(http, emulator, resource=ARM).json()["expires_in"]) < 0
    assert int(get(http, emulator, resource=ARM).json()["expires_in"]) == 60
    assert get(http, emulator, resource=ARM).status_code == 200
    assert emulator.pending_faults == 0


def test_drop_and_reset_break_the_connection(emulator: Emulator, http: requests.Session) -> None:
    emulator.add_faults(Fault.drop(), Fault.reset())
    with pytest.raises(requests.ConnectionError):
        get(http, emulator, resource=ARM)
    try:
        response = get(http, emulator, resource=ARM)
        body = response.content
    except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError):
        return  # urllib3 2 refuses a body shorter than its Content-Length
    # urllib3 1.26 hands the short body on: it must be short of what was announced
    assert len(body) < int(response.headers["Content-Length"])


def test_delay_hang_and_trickle(emulator: Emulator, http: requests.Session) -> None:
    emulator.add_faults(Fault.delay(0.3), Fault.hang(2), Fault.trickle(0.001))
    started = time.monotonic()
    assert get(http, emulator, resource=ARM).status_code == 200
    assert time.monotonic() - started >= 0.3
    with pytest.raises(requests.ReadTimeout):
        http.get(emulator.endpoint, params={"resource": ARM}, headers={"Metadata": "true"}, timeout=0.3)
    assert get(http, emulator, resource=ARM).json()["token_type"] == "Bearer"


def test_huge_answers(emulator: Emulator, http: requests.Session) -> None:
    emulator.add_faults(Fault.huge(1_000_000), Fault.huge(100_000, announced=False))
    response = get(http, emulator, resource=ARM)
    assert response.headers["Content-Length"] == "1000000"
    assert len(response.content) == 1_000_000
    unannounced = get(http, emulator, resource=ARM)
    assert "Content-Length" not in unannounced.headers
    assert len(unannounced.content) == 100_000


def test_request_log(emulator: Emulator, http: requests.Session) -> None:
    http.post(
        emulator.endpoint + "?api-version=1.0",
        data={"resource": ARM, "authority": "x"},
        headers={"Metadata": "true"},
        timeout=5,
    )
    (request,) = emulator.requests
    assert request.method == "POST"
    assert request.path == "/oauth2/token"
    assert request.params == {"api-version": ["1.0"], "resource": [ARM], "authority": ["x"]}
    assert request.param("resource") == ARM
    assert request.param("missing") is None
    assert request.headers["Metadata"] == "true"
    assert request.client == "127.0.0.1"
    assert emulator.wait_for_requests(1)
    assert not emulator.wait_for_requests(2, timeout=0.05)
    emulator.reset()
    assert emulator.request_count == 0


def test_100_parallel_clients(emulator: Emulator) -> None:
    def one(index: int) -> int:
        with requests.Session() as session:
            session.trust_env = False
            return get(session, emulator, resource=f"https://r{index % 10}.vault.azure.net/").status_code

    with ThreadPoolExecutor(100) as pool:
        statuses = list(pool.map(one, range(100)))
    assert statuses == [200] * 100
    assert emulator.request_count == 100
    assert emulator.tokens_issued == 10


def test_binding_rules() -> None:
    with pytest.raises(ValueError, match="loopback only"):
        Emulator("0.0.0.0", 0)
    with pytest.raises(ValueError, match="port"):
        Emulator(port=70000)
    with pytest.raises(ValueError, match="lifetime"):
        Emulator(port=0, lifetime=0)
    vm = Emulator(port=0)
    with pytest.raises(RuntimeError, match="not running"):
        _ = vm.port
    with vm, pytest.raises(RuntimeError, match="already running"):
        vm.start()
    assert not vm.running


def test_ipv6_loopback(http: requests.Session) -> None:
    try:
        vm = Emulator("::1", 0).start()
    except OSError:
        if os.environ.get("CI"):
            raise  # CI machines have IPv6 loopback: there this test runs or fails
        pytest.skip("::1 cannot be bound here")
    with vm:
        assert vm.endpoint.startswith("http://[::1]:")
        assert get(http, vm, resource=ARM).status_code == 200


def test_stop_releases_the_port_and_hung_requests(http: requests.Session) -> None:
    vm = Emulator(port=0).start()
    port = vm.port
    vm.add_faults(Fault.hang())
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(http.get, vm.endpoint, params={"resource": ARM}, headers={"Metadata": "true"}, timeout=30)
        assert vm.wait_for_requests(1)
        started = time.monotonic()
        vm.stop()
        with pytest.raises(requests.ConnectionError):
            pending.result()
        assert time.monotonic() - started < 5
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0
    vm.stop()  # stopping twice is harmless


def test_write_settings(emulator: Emulator, tmp_path: Path) -> None:
    path = emulator.write_settings(tmp_path / "ManagedIdentity-Settings")
    # What the extension writes for its port: the base URL on localhost with that port.
    assert json.loads(Path(path).read_text()) == {"url": f"http://localhost:{emulator.port}/"}


def test_mint_token_directly(emulator: Emulator) -> None:
    token, claims = emulator.mint_token("https://storage.azure.com/.default", object_id="o", lifetime=10)
    assert claims_of(token) == claims
    assert claims["aud"] == "https://storage.azure.com/.default"
    assert claims["oid"] == "o"
    assert claims["exp"] - time.time() <= 10
    assert emulator.request_count == 0


@pytest.mark.parametrize(
    ("spec", "kinds"),
    [
        ("503", ["status"]),
        ("503x3", ["status"] * 3),
        ("503,okx2", ["status", "ok", "ok"]),
        ("429@5,drop,reset", ["status", "drop", "reset"]),
        ("hang,hang=2,delay=0.5,trickle=0.01", ["hang", "hang", "delay", "trickle"]),
        ("not-json,truncated,expired,lifetime=60", ["not_json", "truncated", "expired", "lifetime"]),
        ("huge=1000,flood=1000x2", ["huge", "flood", "flood"]),
    ],
)
def test_fault_spec_grammar(spec: str, kinds: list[str]) -> None:
    assert [fault.kind for fault in parse_fault_spec(spec)] == kinds


def test_fault_spec_values() -> None:
    (fault,) = parse_fault_spec("400/invalid_resource@bogus")
    assert (fault.status, fault.error, fault.retry_after) == (400, "invalid_resource", "bogus")


@pytest.mark.parametrize("spec", ["", "teapot", "delay", "delay=x", "503x0", "huge=-5", "drop=3", ","])
def test_bad_fault_specs(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_fault_spec(spec)


def test_emulate_command_stops_cleanly_on_sigterm_and_sigint(tmp_path: Path) -> None:
    settings = tmp_path / "ManagedIdentity-Settings"
    for sig in (signal.SIGTERM, signal.SIGINT):
        with start_cli("emulate", "--port", "0", "--write-settings", str(settings)) as process:
            assert process.stdout is not None
            line = process.stdout.readline()
            assert line.startswith("Emulator listening on http://127.0.0.1:")
            url = line.split()[-1]
            with requests.Session() as session:
                session.trust_env = False
                answer = session.get(url, params={"resource": ARM}, headers={"Metadata": "true"}, timeout=5)
                assert answer.status_code == 200
            assert settings.exists()
            process.send_signal(sig)
            assert process.wait(timeout=10) == 0
        assert not settings.exists()  # what it wrote, it removed


def test_pytest_plugin_fixture_announces_the_emulator(legacy_msi_endpoint: Emulator) -> None:
    from legacy_msi_credential import LegacyMsiCredential

    with LegacyMsiCredential() as credential:
        assert credential.endpoint is not None
        assert credential.endpoint.source == "LEGACY_MSI_ENDPOINT"
        assert credential.get_token("https://storage.azure.com/.default").token
    assert legacy_msi_endpoint.request_count == 1


def test_every_fault_has_a_row_and_every_spelled_fault_parses_back() -> None:
    """Adding a fault is a class method and a row of the table: a method without a row would fail
    only when a request met it."""
    import inspect

    from legacy_msi_credential.emulator._faults import KINDS

    made = [Fault.huge(2, announced=False)]  # the one method that makes two kinds
    for _, method in inspect.getmembers(Fault, inspect.ismethod):
        required = [p for p in inspect.signature(method).parameters.values() if p.default is p.empty]
        made.append(method(*[2] * len([p for p in required if p.kind is p.POSITIONAL_OR_KEYWORD])))
    assert {fault.kind for fault in made} <= set(KINDS)
    assert {fault.kind for fault in made} == set(KINDS)  # and no row without a method
    for kind, row in KINDS.items():
        if row.spelled is None:
            continue
        spec = row.spelled + ("=2" if row.takes == "number" else "")
        assert [fault.kind for fault in parse_fault_spec(spec)] == [kind], spec


@pytest.mark.parametrize(
    "resource",
    [
        "https://management.azure.com/",
        "https://management.core.windows.net/",
        "https://vault.azure.net",
        "https://storage.azure.com",
        "https://database.windows.net/",
        "https://graph.microsoft.com",
        "https://management.usgovcloudapi.net/",
        "https://vault.azure.cn",
        "https://account.blob.core.windows.net",
        "https://name.vault.azure.net/",
        "0b07f429-9f4b-4714-9392-cc5e8e80c8b0",
        "api://0b07f429-9f4b-4714-9392-cc5e8e80c8b0",
    ],
)
def test_the_emulator_answers_the_resources_azure_ad_knows(resource: str) -> None:
    with Emulator(port=0) as emulator:
        assert get(requests.Session(), emulator, resource=resource).status_code == 200


@pytest.mark.parametrize(
    "resource",
    [
        "https://vault.azure.nte",
        "https://vault.azure.net/.defualt",
        "https://example.com/",
        "https://a.b.blob.core.windows.net",
        "http://vault.azure.net",
        "https://vault.azure.net:444",
    ],
)
@pytest.mark.parametrize(
    ("flavor", "status", "error"), [("linux", 400, "invalid_resource"), ("windows", 500, "unknown")]
)
def test_the_emulator_refuses_a_resource_azure_ad_does_not_know_as_the_extension(
    resource: str, flavor: str, status: int, error: str
) -> None:
    """A typo fails locally, not only in Azure: as the extension relays Azure AD's refusal."""
    with Emulator(port=0, flavor=flavor) as emulator:
        answer = get(requests.Session(), emulator, resource=resource)
    assert (answer.status_code, answer.json()["error"]) == (status, error)
    assert emulator.minted_tokens == []


def test_custom_resources_are_answered_when_named() -> None:
    custom = "https://my-app.contoso.com"
    with Emulator(port=0, known_resources=[custom]) as emulator:
        assert get(requests.Session(), emulator, resource=custom).status_code == 200
        assert get(requests.Session(), emulator, resource="https://other.contoso.com").status_code == 400
    with Emulator(port=0, known_resources=None) as anything:
        assert get(requests.Session(), anything, resource="https://other.contoso.com").status_code == 200


UNSIGNED_SCRIPT = """
import base64, json, sys
sys.modules["cryptography"] = None  # as if the emulator extra were not installed
import requests
from legacy_msi_credential.emulator import Emulator

for flavor in ("linux", "windows"):  # two emulators, one process: one warning
    with Emulator(port=0, flavor=flavor) as vm:
        answer = requests.get(vm.endpoint, params={"resource": "https://management.azure.com/"},
                              headers={"Metadata": "true"}, timeout=10)
        header = answer.json()["access_token"].split(".")[0]
        print(json.loads(base64.urlsafe_b64decode(header + "=="))["alg"], repr(vm))
with Emulator(port=0, sign=False):  # unsigned by choice: nothing to say
    pass
"""


def test_unsigned_for_want_of_cryptography_is_said_once_with_its_fix() -> None:
    result = subprocess.run(
        [sys.executable, "-c", UNSIGNED_SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**os.environ, "NO_PROXY": "*"},
    )
    assert [line.split()[0] for line in result.stdout.splitlines()] == ["none", "none"]
    assert "signed=False" in result.stdout
    warnings = [line for line in result.stderr.splitlines() if "alg: none" in line]
    assert len(warnings) == 1, result.stderr
    assert "'cryptography' package is not installed" in warnings[0]
    assert 'pip install ".[emulator]"' in warnings[0]


def test_repr_names_the_endpoint_flavour_and_identities_never_a_token() -> None:
    identities = [UserAssignedIdentity(client_id="11111111-1111-1111-1111-111111111111")] * 2
    vm = Emulator(port=0, flavor="windows", user_assigned=identities, system_assigned=False)
    assert repr(vm) == ("<Emulator not running flavor=windows system_assigned=False user_assigned=2 signed=True>")
    with vm, requests.Session() as session:
        session.trust_env = False
        token = session.get(
            vm.endpoint,
            params={"resource": ARM, "client_id": "11111111-1111-1111-1111-111111111111"},
            headers={"Metadata": "true"},
            timeout=5,
        ).json()["access_token"]
        shown, endpoint = repr(vm), vm.endpoint
    assert shown.startswith(f"<Emulator {endpoint} flavor=windows ")
    assert token not in shown
    assert token.split(".")[1] not in shown


PLUGIN_TESTS = """
import pytest
import requests

CLIENT = "22222222-2222-2222-2222-222222222222"
pytestmark = pytest.mark.legacy_msi(flavor="windows")


def status(emulator, **params):
    session = requests.Session()
    session.trust_env = False
    answer = session.get(emulator.endpoint, params={"resource": "https://vault.azure.net", **params},
                         headers={"Metadata": "true"}, timeout=10)
    return answer.status_code


@pytest.mark.legacy_msi(user_assigned=[CLIENT], system_assigned=False)
def test_user_assigned_only(legacy_msi_endpoint):
    assert status(legacy_msi_endpoint, client_id=CLIENT) == 200
    assert status(legacy_msi_endpoint) != 200
    assert legacy_msi_endpoint.flavor == "linux"  # the closest marker wins
    print("SHOWN", legacy_msi_endpoint)


def test_module_marker_gives_windows(legacy_msi_emulator):
    assert legacy_msi_emulator.flavor == "windows"
    assert status(legacy_msi_emulator, resource="https://vault.azure.nte") == 500


@pytest.mark.legacy_msi(flavour="windows")
def test_misspelt(legacy_msi_emulator):
    pass
"""


def test_the_fixtures_take_identities_and_the_windows_flavour_from_a_marker(tmp_path: Path) -> None:
    (tmp_path / "test_app.py").write_text(PLUGIN_TESTS)
    plugins_off = ("-p", "no:cacheprovider", "-p", "no:randomly", "-p", "no:xdist")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", *plugins_off, "-s", "-q", "--strict-markers", "-rE", "test_app.py"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert "2 passed, 1 error" in result.stdout, result.stdout
    assert "@pytest.mark.legacy_msi: unknown option 'flavour'; the options are: accept_get" in result.stdout
    assert "ERROR test_app.py::test_misspelt" in result.stdout
    assert "SHOWN <Emulator http://127.0.0.1:" in result.stdout
    assert "flavor=linux system_assigned=False user_assigned=1 " in result.stdout
