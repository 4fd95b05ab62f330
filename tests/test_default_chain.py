"""``DefaultAzureCredential``: azure-identity's whole chain, with the legacy step where it belongs.

Every scenario runs real azure-identity code. IMDS is the emulator (its IMDS path, through
``AZURE_POD_IDENTITY_AUTHORITY_HOST``) or a dead loopback port; the Azure CLI is an ``az``
executable written by the test; nothing but loopback is reached.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import inspect
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import ClientAuthenticationError

from legacy_msi_credential import CredentialUnavailableError, DefaultAzureCredential, LegacyMsiCredential
from legacy_msi_credential.aio import DefaultAzureCredential as AsyncDefaultAzureCredential
from legacy_msi_credential.aio import LegacyMsiCredential as AsyncLegacyMsiCredential
from legacy_msi_credential.emulator import Emulator, Fault

from .conftest import closed_port

ARM = "https://management.azure.com/.default"


AZURE_IDENTITY = tuple(int(part) for part in importlib.metadata.version("azure-identity").split(".")[:2])


def names(credential: Any) -> list[str]:
    return [type(step).__name__.removeprefix("Async") for step in credential.credentials]


def answered_by(credential: Any) -> str:
    return type(credential._successful_credential).__name__


@pytest.fixture
def no_legacy_endpoint(monkeypatch: pytest.MonkeyPatch) -> str:
    """Nothing listens where the legacy step looks."""
    url = f"http://127.0.0.1:{closed_port()}/oauth2/token"
    monkeypatch.setenv("LEGACY_MSI_ENDPOINT", url)
    return url


@pytest.fixture
def fake_az(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An ``az`` on PATH that answers ``account get-access-token`` as the Azure CLI does."""
    folder = tmp_path / "bin"
    folder.mkdir()
    log = tmp_path / "az.log"
    script = folder / "az"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, sys, time\n"
        f"open({str(log)!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')\n"
        "print(json.dumps({'accessToken': 'token-from-az', 'expiresOn': '2099-01-01 00:00:00.000000',\n"
        "    'expires_on': int(time.time()) + 3600, 'subscription': 's', 'tenant': 't', 'tokenType': 'Bearer'}))\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return log


# --- the chain's shape ---------------------------------------------------------------------


def test_it_is_azure_identitys_class_with_the_legacy_step_before_managed_identity() -> None:
    import azure.identity

    credential = DefaultAzureCredential()
    assert isinstance(credential, azure.identity.DefaultAzureCredential)
    steps = names(credential)
    assert steps.index("LegacyMsiCredential") + 1 == steps.index("ManagedIdentityCredential")
    reference = [type(step).__name__ for step in azure.identity.DefaultAzureCredential().credentials]
    assert [step for step in steps if step != "LegacyMsiCredential"] == reference  # the rest is untouched


@pytest.mark.parametrize("twin", ["sync", "aio"])
@pytest.mark.parametrize("where", ["the drop-in's module", "azure-identity's module"])
def test_the_chain_s_classes_are_patched_where_azure_identity_s_tests_patch_them(twin: str, where: str) -> None:
    """``patch(DefaultAzureCredential.__module__ + ".X")`` reaches the drop-in's chain, as it
    reaches azure-identity's; so does a patch of azure-identity's own module."""
    from unittest.mock import MagicMock, patch

    import azure.identity
    import azure.identity.aio

    drop_in = DefaultAzureCredential if twin == "sync" else AsyncDefaultAzureCredential
    theirs = azure.identity.DefaultAzureCredential if twin == "sync" else azure.identity.aio.DefaultAzureCredential
    module = drop_in.__module__ if where == "the drop-in's module" else theirs.__module__
    with patch(f"{module}.ManagedIdentityCredential") as managed, patch(f"{module}.AzureCliCredential") as cli:
        credential = drop_in(managed_identity_client_id=CLIENT, process_timeout=7)
    managed.assert_called_once()
    assert managed.call_args.kwargs["client_id"] == CLIENT
    cli.assert_called_once_with(process_timeout=7)
    steps = list(credential.credentials)
    assert cli.return_value in steps
    # the legacy step goes right before what ManagedIdentityCredential(...) returned, mock or not
    assert steps.index(managed.return_value) == steps.index(legacy_of(credential)) + 1
    assert legacy_of(credential).identity.value == CLIENT
    assert all(not isinstance(step, MagicMock) or step in (managed.return_value, cli.return_value) for step in steps)
    # once the patches are gone, the chain is made of the real classes again
    steps = names(drop_in())
    assert steps.index("LegacyMsiCredential") + 1 == steps.index("ManagedIdentityCredential")
    assert "AzureCliCredential" in steps


@pytest.mark.parametrize(
    ("environment", "kwargs", "expected"),
    [
        ("", {"exclude_legacy_msi_credential": True}, None),
        ("", {"exclude_managed_identity_credential": True}, None),
        ("prod", {}, "azure-identity's plus the legacy step"),
        ("ManagedIdentityCredential", {}, "azure-identity's plus the legacy step"),
        ("LegacyMsiCredential", {}, ["LegacyMsiCredential"]),
        ("legacymsicredential", {"require_envvar": True}, ["LegacyMsiCredential"]),
        ("dev", {}, "azure-identity's plus the legacy step"),
        ("AzureCliCredential", {}, "azure-identity's plus the legacy step"),
    ],
)
@pytest.mark.parametrize("twin", ["sync", "aio"])
def test_exclusions_and_azure_token_credentials(
    monkeypatch: pytest.MonkeyPatch, environment: str, kwargs: dict[str, Any], expected: Any, twin: str
) -> None:
    if environment:
        monkeypatch.setenv("AZURE_TOKEN_CREDENTIALS", environment)
    import azure.identity
    import azure.identity.aio

    cls = DefaultAzureCredential if twin == "sync" else AsyncDefaultAzureCredential
    reference = azure.identity.DefaultAzureCredential if twin == "sync" else azure.identity.aio.DefaultAzureCredential

    def build(kind: Any) -> list[str]:
        if twin == "sync":
            return names(kind(**kwargs))

        async def inside_a_loop() -> list[str]:  # async credentials are made where they will run
            credential = kind(**kwargs)
            try:
                return names(credential)
            finally:
                await credential.close()

        return asyncio.run(inside_a_loop())

    steps = build(cls)
    if expected is None:
        assert "LegacyMsiCredential" not in steps
    elif expected == "azure-identity's plus the legacy step":
        # where azure-identity's chain has no managed identity step ("dev" from 1.23), nor has the drop-in's
        assert steps == with_legacy_step(build(reference))
    else:
        assert steps == expected


def with_legacy_step(steps: list[str]) -> list[str]:
    """azure-identity's steps with the legacy one right before ManagedIdentityCredential, if it is there."""
    if "ManagedIdentityCredential" not in steps:
        return steps
    at = steps.index("ManagedIdentityCredential")
    return [*steps[:at], "LegacyMsiCredential", *steps[at:]]


def test_what_the_installed_azure_identity_does_with_azure_token_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's version table: groups from 1.23, one credential's name from 1.24, ignored before."""
    import azure.identity

    everything = names(azure.identity.DefaultAzureCredential())
    monkeypatch.setenv("AZURE_TOKEN_CREDENTIALS", "prod")
    prod = names(azure.identity.DefaultAzureCredential())
    monkeypatch.setenv("AZURE_TOKEN_CREDENTIALS", "ManagedIdentityCredential")
    if AZURE_IDENTITY < (1, 24):
        one = names(azure.identity.DefaultAzureCredential()) if AZURE_IDENTITY < (1, 23) else None
    else:
        one = names(azure.identity.DefaultAzureCredential())
    if AZURE_IDENTITY < (1, 23):
        assert prod == everything  # the variable does not exist yet: ignored
        assert one == everything
    else:
        assert "AzureCliCredential" in everything
        assert "AzureCliCredential" not in prod
        monkeypatch.setenv("AZURE_TOKEN_CREDENTIALS", "dev")
        assert "ManagedIdentityCredential" not in names(azure.identity.DefaultAzureCredential())
        assert "LegacyMsiCredential" not in names(DefaultAzureCredential())
    if AZURE_IDENTITY >= (1, 24):
        assert one == ["ManagedIdentityCredential"]
    # and the drop-in is that, plus the legacy step
    monkeypatch.setenv("AZURE_TOKEN_CREDENTIALS", "prod")
    assert names(DefaultAzureCredential()) == with_legacy_step(prod)


def test_require_envvar_is_azure_identitys() -> None:
    if AZURE_IDENTITY >= (1, 25):
        with pytest.raises(ValueError, match="AZURE_TOKEN_CREDENTIALS environment variable is required"):
            DefaultAzureCredential(require_envvar=True)
    else:  # before 1.25 azure-identity's class takes and ignores the keyword, and so does the drop-in
        import azure.identity

        ignored = names(azure.identity.DefaultAzureCredential(require_envvar=True))
        assert names(DefaultAzureCredential(require_envvar=True)) == with_legacy_step(ignored)


def test_managed_identity_client_id_selects_the_user_assigned_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    def legacy(credential: Any) -> LegacyMsiCredential:
        (step,) = [step for step in credential.credentials if isinstance(step, LegacyMsiCredential)]
        return step

    assert legacy(DefaultAzureCredential(managed_identity_client_id="abc")).identity.value == "abc"
    monkeypatch.setenv("AZURE_CLIENT_ID", "from-env")
    assert legacy(DefaultAzureCredential()).identity.value == "from-env"
    assert legacy(DefaultAzureCredential(managed_identity_client_id="arg")).identity.value == "arg"


def test_a_bad_legacy_setting_is_reported_by_the_chain(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEGACY_MSI_ENDPOINT", "http://10.0.0.1/oauth2/token")
    credential = DefaultAzureCredential(exclude_managed_identity_credential=False, exclude_cli_credential=True)
    with pytest.raises(ClientAuthenticationError) as caught:
        credential.get_token(ARM)
    # azure-identity names a step by its ``_credential_name`` where its chain reads one, else by its class
    import azure.identity._credentials.chained as chained

    step = "LegacyMsiCredential" if "_credential_name" in inspect.getsource(chained) else "UnusableLegacyStep"
    assert f"{step}: LegacyMsiCredential could not be configured" in caught.value.message
    assert "not a loopback address" in caught.value.message


def test_the_legacy_step_never_waits_unless_asked() -> None:
    def legacy(credential: Any) -> Any:
        return next(step for step in credential.credentials if type(step).__name__ == "LegacyMsiCredential")

    assert legacy(DefaultAzureCredential())._settings.retry.wait_for_endpoint == 0
    waiting = legacy(DefaultAzureCredential(legacy_msi_wait_for_endpoint=30))
    assert waiting._settings.retry.wait_for_endpoint == 30


# --- machines --------------------------------------------------------------------------


def test_old_vm_gets_its_token_from_the_legacy_step(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEGACY_MSI_ENDPOINT", emulator.endpoint)
    credential = DefaultAzureCredential()
    token = credential.get_token(ARM)
    assert token.token == emulator.minted_tokens[0]
    assert answered_by(credential) == "LegacyMsiCredential"
    assert credential.get_token_info(ARM).token == token.token  # the remembered step, from its cache
    assert emulator.request_count == 1
    assert [request.path for request in emulator.requests] == ["/oauth2/token"]


def test_new_vm_gets_its_token_from_imds(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch, no_legacy_endpoint: str
) -> None:
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", emulator.imds_authority)
    credential = DefaultAzureCredential()
    token = credential.get_token(ARM)
    assert answered_by(credential) == "ManagedIdentityCredential"
    assert token.token in emulator.minted_tokens
    assert {request.path for request in emulator.requests} == {"/metadata/identity/oauth2/token"}


def test_developers_machine_gets_its_token_from_az(fake_az: Path, no_legacy_endpoint: str) -> None:
    credential = DefaultAzureCredential()
    started = time.monotonic()
    token = credential.get_token(ARM)
    elapsed = time.monotonic() - started
    assert token.token == "token-from-az"
    assert answered_by(credential) == "AzureCliCredential"
    assert "account get-access-token --output json --resource https://management.azure.com" in fake_az.read_text()
    assert elapsed < 30  # the legacy step's own cost is measured in benchmarks/


def test_nothing_answers_and_the_message_names_the_legacy_step(no_legacy_endpoint: str) -> None:
    credential = DefaultAzureCredential(exclude_cli_credential=True, exclude_developer_cli_credential=True)
    with pytest.raises(ClientAuthenticationError) as caught:
        credential.get_token(ARM)
    message = caught.value.message
    assert message.startswith("DefaultAzureCredential failed to retrieve a token from the included credentials.")
    assert f"\tLegacyMsiCredential: LegacyMsiCredential: nothing is listening at {no_legacy_endpoint}" in message
    assert message.index("LegacyMsiCredential:") < message.index("ManagedIdentityCredential:")


def test_a_refusing_extension_stops_the_chain(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """The extension is there and says no: as with azure-identity's own steps, the chain stops."""
    monkeypatch.setenv("LEGACY_MSI_ENDPOINT", emulator.endpoint)
    emulator.add_faults(Fault.http_error(401, error="unauthorized_client"))
    with pytest.raises(ClientAuthenticationError, match="unauthorized_client"):
        DefaultAzureCredential().get_token(ARM)


def test_async_old_and_new_vm(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    async def token() -> tuple[str, str]:
        async with AsyncDefaultAzureCredential() as credential:
            steps = names(credential)
            assert isinstance(credential.credentials[steps.index("LegacyMsiCredential")], AsyncLegacyMsiCredential)
            got = await credential.get_token(ARM)
            return got.token, answered_by(credential)

    monkeypatch.setenv("LEGACY_MSI_ENDPOINT", emulator.endpoint)
    value, step = asyncio.run(token())
    assert step == "LegacyMsiCredential"
    assert value == emulator.minted_tokens[-1]
    monkeypatch.setenv("LEGACY_MSI_ENDPOINT", f"http://127.0.0.1:{closed_port()}/oauth2/token")
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", emulator.imds_authority)
    value, step = asyncio.run(token())
    assert step == "ManagedIdentityCredential"


def test_importing_the_package_does_not_import_azure_identity() -> None:
    code = (
        "import sys, legacy_msi_credential, legacy_msi_credential.aio\n"
        "print('azure.identity' in sys.modules)\n"
        "from legacy_msi_credential import DefaultAzureCredential\n"
        "print('azure.identity' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.split() == ["False", "True"]


@pytest.mark.parametrize("module", ["legacy_msi_credential", "legacy_msi_credential.aio"])
def test_without_azure_identity_the_error_names_the_extra(module: str) -> None:
    code = (
        "import sys\n"
        "sys.modules['azure.identity'] = None\n"
        "sys.modules['azure.identity.aio'] = None\n"
        f"from {module} import LegacyMsiCredential\n"
        "try:\n"
        f"    from {module} import DefaultAzureCredential\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert 'pip install ".[identity]" in a clone of legacy-msi-credential' in result.stdout


def test_an_unreachable_service_principal_stops_the_chain_as_in_azure_identity(tmp_path: Path) -> None:
    """EnvironmentCredential configured against a dead authority: azure-identity's rule, the chain stops.

    MSAL may look its authority up on the network, so this runs in a private network
    namespace where only loopback exists.
    """
    from .test_loopback_namespace import _namespace_available

    if not _namespace_available():
        if os.environ.get("CI"):
            pytest.fail("CI must be able to make network namespaces (unshare -n)")
        pytest.skip("cannot make a private network namespace here")
    code = f"""
import json, os
from azure.core.pipeline.policies import RetryPolicy
from legacy_msi_credential import DefaultAzureCredential
RetryPolicy.get_backoff_time = lambda self, settings: 0.0  # the retries of MSAL, without their waits
os.environ.update(AZURE_CLIENT_ID="cid", AZURE_TENANT_ID="tid", AZURE_CLIENT_SECRET="s",
    AZURE_AUTHORITY_HOST="https://127.0.0.1:{closed_port()}", LEGACY_MSI_ENDPOINT="http://127.0.0.1:9/oauth2/token")
credential = DefaultAzureCredential()
try:
    credential.get_token("{ARM}")
except Exception as exc:
    print(json.dumps([type(exc).__name__, getattr(exc, "message", str(exc))]))
"""
    env = {key: value for key, value in os.environ.items() if key != "AZURE_POD_IDENTITY_AUTHORITY_HOST"}
    result = subprocess.run(
        ["unshare", "-n", "sh", "-c", f"ip link set lo up; exec {sys.executable} -c '{code}'"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    kind, message = json.loads(result.stdout.strip().splitlines()[-1])
    assert kind == "ClientAuthenticationError"
    assert "EnvironmentCredential" in message
    assert "LegacyMsiCredential" not in message  # the chain stopped before it, as azure-identity's does


def test_a_bad_legacy_wait_is_the_callers_value_error() -> None:
    with pytest.raises(ValueError, match="legacy_msi_wait_for_endpoint must be a number of seconds"):
        DefaultAzureCredential(legacy_msi_wait_for_endpoint=-1)


# --- azure-identity's class plus one step: what the legacy step receives ---------------------


CLIENT = "c0ffee00-0000-4000-8000-000000000001"
OBJECT = "0b1ec700-0000-4000-8000-000000000002"
ARM_ID = "/subscriptions/s/resourcegroups/r/providers/Microsoft.ManagedIdentity/userAssignedIdentities/u"


def legacy_of(credential: Any) -> Any:
    return next(step for step in credential.credentials if type(step).__name__ == "LegacyMsiCredential")


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"client_id": "c0ffee00-0000-4000-8000-000000000001"}, ("client_id", "c0ffee00-0000-4000-8000-000000000001")),
        ({"object_id": "0b1ec700-0000-4000-8000-000000000002"}, ("object_id", "0b1ec700-0000-4000-8000-000000000002")),
        (
            {"resource_id": "/subscriptions/s/rg/r/providers/x/id"},
            ("msi_res_id", "/subscriptions/s/rg/r/providers/x/id"),
        ),
        (
            {"msi_res_id": "/subscriptions/s/rg/r/providers/x/id"},
            ("msi_res_id", "/subscriptions/s/rg/r/providers/x/id"),
        ),
    ],
)
def test_identity_config_reaches_the_legacy_step(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch, config: dict[str, str], expected: tuple[str, str]
) -> None:
    monkeypatch.setenv("LEGACY_MSI_ENDPOINT", emulator.endpoint)
    credential = DefaultAzureCredential(identity_config=config)
    step = legacy_of(credential)
    assert (step.identity.parameter, step.identity.value) == expected
    credential.get_token(ARM)
    assert emulator.requests[-1].param(expected[0]) == expected[1]  # asked for that identity, not another


def test_the_callers_transport_is_the_legacy_steps_too(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    from azure.core.pipeline.transport import RequestsTransport

    class Counting(RequestsTransport):  # type: ignore[misc]
        sent = 0

        def send(self, request: Any, **kwargs: Any) -> Any:
            Counting.sent += 1
            return super().send(request, **kwargs)

    monkeypatch.setenv("LEGACY_MSI_ENDPOINT", emulator.endpoint)
    transport = Counting()
    credential = DefaultAzureCredential(transport=transport)
    credential.get_token(ARM)
    assert Counting.sent == 1
    assert emulator.request_count == 1


def test_a_transport_that_cannot_be_checked_makes_the_legacy_step_unavailable_never_bypassed(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A caller's mock transport: the legacy step cannot check where it connects, so it sends nothing."""
    from azure.core.pipeline.transport import HttpTransport

    class Mock(HttpTransport):  # type: ignore[misc]
        def __enter__(self) -> Any:
            return self

        def __exit__(self, *args: Any) -> None:
            return None

        def open(self) -> None:
            return None

        def close(self) -> None:
            return None

        def send(self, request: Any, **kwargs: Any) -> Any:
            raise AssertionError("the test's mock is never asked here")

    monkeypatch.setenv("LEGACY_MSI_ENDPOINT", emulator.endpoint)
    credential = DefaultAzureCredential(transport=Mock(), exclude_managed_identity_credential=False)
    assert "LegacyMsiCredential" not in names(credential)
    unusable = [s for s in credential.credentials if type(s).__name__ == "UnusableLegacyStep"]
    assert len(unusable) == 1
    with pytest.raises(CredentialUnavailableError, match="transport"):
        unusable[0].get_token(ARM)
    assert emulator.request_count == 0  # nothing went around the caller's transport


def test_a_scope_the_legacy_step_cannot_use_is_unavailable_in_the_chain_as_in_azure_identitys(
    no_legacy_endpoint: str,
) -> None:
    import azure.identity

    for scopes in (("",), (" https://management.azure.com/.default",), (ARM, "https://vault.azure.net/.default")):
        with pytest.raises(ClientAuthenticationError) as theirs:
            azure.identity.DefaultAzureCredential(exclude_cli_credential=True).get_token(*scopes)
        with pytest.raises(ClientAuthenticationError) as ours:
            DefaultAzureCredential(exclude_cli_credential=True).get_token(*scopes)
        assert type(ours.value) is type(theirs.value)
        assert "LegacyMsiCredential: " in ours.value.message
        # where azure-identity's chain reached its managed identity step, so does the drop-in's
        assert ("ManagedIdentityCredential:" in ours.value.message) == (
            "ManagedIdentityCredential:" in theirs.value.message
        )


def test_the_legacy_step_alone_takes_keywords_as_azure_identitys_class(monkeypatch: pytest.MonkeyPatch) -> None:
    import azure.identity

    with pytest.raises(TypeError) as theirs:
        azure.identity.DefaultAzureCredential(tenant_id="t")
    monkeypatch.setenv("AZURE_TOKEN_CREDENTIALS", "LegacyMsiCredential")
    with pytest.raises(TypeError) as ours:
        DefaultAzureCredential(tenant_id="t")
    assert str(ours.value) == str(theirs.value)
    assert names(DefaultAzureCredential(process_timeout=5, authority="login.example")) == ["LegacyMsiCredential"]


def test_the_legacy_step_alone_yields_to_an_explicit_exclusion(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_TOKEN_CREDENTIALS", "LegacyMsiCredential")
    for exclusion in ("exclude_legacy_msi_credential", "exclude_managed_identity_credential"):
        with pytest.raises(ValueError, match="at least one credential is required"):
            DefaultAzureCredential(**{exclusion: True})


@pytest.mark.parametrize("twin", ["sync", "aio"])
def test_both_drop_ins_pickle(emulator: Emulator, monkeypatch: pytest.MonkeyPatch, twin: str) -> None:
    import pickle

    monkeypatch.setenv("LEGACY_MSI_ENDPOINT", emulator.endpoint)

    async def in_a_loop() -> list[str]:
        credential = AsyncDefaultAzureCredential()
        copy = pickle.loads(pickle.dumps(credential))
        token = await copy.get_token(ARM)
        assert token.token == emulator.minted_tokens[-1]
        await credential.close()
        await copy.close()
        return names(copy)

    if twin == "sync":
        copy = pickle.loads(pickle.dumps(DefaultAzureCredential()))
        assert copy.get_token(ARM).token == emulator.minted_tokens[-1]
        steps = names(copy)
    else:
        steps = asyncio.run(in_a_loop())
    assert "LegacyMsiCredential" in steps
    assert legacy_of(copy if twin == "sync" else DefaultAzureCredential())._in_chain


#: Secrets azure-identity reads from the environment; none may reach a pickle.
ENVIRONMENT_SECRETS = {
    "AZURE_CLIENT_SECRET": "client-secret-8d1f0c",
    "AZURE_CLIENT_CERTIFICATE_PASSWORD": "certificate-password-5e2a9b",
    "AZURE_PASSWORD": "user-password-77c3d4",
}


def assert_no_secret_in(pickled: bytes, *tokens: str) -> None:
    for secret in (*ENVIRONMENT_SECRETS.values(), *tokens):
        assert secret.encode() not in pickled, secret[:12]
        assert secret.encode("utf-16-le") not in pickled, secret[:12]


@pytest.mark.parametrize("twin", ["sync", "aio"])
def test_a_used_drop_in_pickles_its_configuration_never_a_secret_or_token(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch, no_legacy_endpoint: str, twin: str
) -> None:
    """After IMDS (the emulator) has answered: the pickle has neither the token nor a secret
    from the environment, and the copy gets its own token."""
    import pickle

    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", emulator.imds_authority)
    for name, value in ENVIRONMENT_SECRETS.items():  # set, but not enough for EnvironmentCredential
        monkeypatch.setenv(name, value)

    async def in_a_loop() -> tuple[bytes, str, str]:
        async with AsyncDefaultAzureCredential(exclude_cli_credential=True) as credential:
            token = (await credential.get_token(ARM)).token
            pickled = pickle.dumps(credential)
        async with pickle.loads(pickled) as copy:
            return pickled, token, (await copy.get_token(ARM)).token

    if twin == "sync":
        credential = DefaultAzureCredential(exclude_cli_credential=True)
        token = credential.get_token(ARM).token
        pickled = pickle.dumps(credential)
        again = pickle.loads(pickled).get_token(ARM).token
    else:
        pickled, token, again = asyncio.run(in_a_loop())
    assert token in emulator.minted_tokens
    assert_no_secret_in(pickled, token, *token.split("."))
    assert again in emulator.minted_tokens
    # the copy asked IMDS for its own token: nothing was carried over
    assert [request.path for request in emulator.requests] == ["/metadata/identity/oauth2/token"] * 2


@pytest.mark.parametrize("twin", ["sync", "aio"])
def test_a_configured_environment_credential_pickles_no_secret(monkeypatch: pytest.MonkeyPatch, twin: str) -> None:
    """EnvironmentCredential holds the secret it read; the pickle holds none, and the copy reads
    the environment where it is unpickled, as a new credential would."""
    import pickle

    for name, value in ENVIRONMENT_SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AZURE_TENANT_ID", "00000000-0000-0000-0000-0000000000aa")
    monkeypatch.setenv("AZURE_CLIENT_ID", "00000000-0000-0000-0000-0000000000bb")
    monkeypatch.setenv("AZURE_USERNAME", "someone@example.com")
    made = DefaultAzureCredential if twin == "sync" else AsyncDefaultAzureCredential
    credential = made(managed_identity_client_id="00000000-0000-0000-0000-0000000000cc")
    pickled = pickle.dumps(credential)
    assert_no_secret_in(pickled)
    copy = pickle.loads(pickled)
    assert names(copy) == names(credential)
    assert type(copy.credentials[0]._credential).__name__ == type(credential.credentials[0]._credential).__name__
    assert legacy_of(copy)._settings.arguments["client_id"] == "00000000-0000-0000-0000-0000000000cc"
