"""Real Azure SDK clients carrying the credential's tokens to services that check them.

Storage clients talk to Azurite over HTTPS with ``--oauth basic``: it validates ``iss``,
``aud``, ``iat``, ``nbf`` and ``exp`` and answers 403 ``AuthenticationFailed`` otherwise.
Key Vault and ARM clients talk to the challenge server of this folder.
"""

from __future__ import annotations

import datetime
import time
import types
import uuid
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError

from legacy_msi_credential import LegacyMsiCredential
from legacy_msi_credential.aio import LegacyMsiCredential as AsyncLegacyMsiCredential
from legacy_msi_credential.emulator import Emulator

from ..conftest import Clock
from .challenge_server import ARM_RESOURCE, VAULT_RESOURCE, ChallengeServer, claims_of

pytestmark = pytest.mark.azurite
STORAGE = "https://storage.azure.com/.default"


def name(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


class StaticCredential:
    """Hands out one fixed token: for the negative proofs."""

    def __init__(self, token: str, expires_on: int) -> None:
        self.token = AccessToken(token, expires_on)

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return self.token


class AskingFor:
    """Asks the wrapped credential for another scope than the client wants."""

    def __init__(self, inner: LegacyMsiCredential, scope: str) -> None:
        self.inner, self.scope = inner, scope

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return self.inner.get_token(self.scope)


# --- storage -----------------------------------------------------------------------------


def test_blob_round_trip(azurite, session_emulator: Emulator) -> None:
    from azure.storage.blob import BlobServiceClient

    credential = LegacyMsiCredential(endpoint=session_emulator.endpoint)
    with BlobServiceClient(azurite.blob_url, credential=credential, connection_verify=azurite.ca_file) as client:
        container = client.create_container(name("sync"))
        container.upload_blob("a.txt", b"first")
        container.upload_blob("b.txt", b"second")
        assert container.download_blob("a.txt").readall() == b"first"
        assert sorted(blob.name for blob in container.list_blobs()) == ["a.txt", "b.txt"]
        assert container.container_name in [c.name for c in client.list_containers()]
        container.delete_blob("a.txt")
        container.delete_container()
    credential.close()


async def test_async_blob_round_trip(azurite, session_emulator: Emulator) -> None:
    from azure.storage.blob.aio import BlobServiceClient

    async with (
        AsyncLegacyMsiCredential(endpoint=session_emulator.endpoint) as credential,
        BlobServiceClient(azurite.blob_url, credential=credential, connection_verify=azurite.ca_file) as client,
    ):
        container = await client.create_container(name("async"))
        await container.upload_blob("a.txt", b"async bytes")
        assert await (await container.download_blob("a.txt")).readall() == b"async bytes"
        assert [blob.name async for blob in container.list_blobs()] == ["a.txt"]
        await container.delete_container()


def test_blob_through_default_azure_credential(azurite, session_emulator: Emulator, monkeypatch) -> None:
    """The one-line change: DefaultAzureCredential from this package, on an old VM, against Azurite."""
    from azure.storage.blob import BlobServiceClient

    from legacy_msi_credential import DefaultAzureCredential

    monkeypatch.setenv("LEGACY_MSI_ENDPOINT", session_emulator.endpoint)
    before = session_emulator.request_count
    with (
        DefaultAzureCredential() as credential,
        BlobServiceClient(azurite.blob_url, credential=credential, connection_verify=azurite.ca_file) as client,
    ):
        container = client.create_container(name("dac"))
        container.upload_blob("a.txt", b"through the chain")
        assert container.download_blob("a.txt").readall() == b"through the chain"
        container.delete_container()
        assert type(credential._successful_credential).__name__ == "LegacyMsiCredential"
    assert session_emulator.request_count - before == 1


async def test_async_blob_through_default_azure_credential(azurite, session_emulator: Emulator, monkeypatch) -> None:
    from azure.storage.blob.aio import BlobServiceClient

    from legacy_msi_credential.aio import DefaultAzureCredential

    monkeypatch.setenv("LEGACY_MSI_ENDPOINT", session_emulator.endpoint)
    async with (
        DefaultAzureCredential() as credential,
        BlobServiceClient(azurite.blob_url, credential=credential, connection_verify=azurite.ca_file) as client,
    ):
        container = await client.create_container(name("adac"))
        await container.upload_blob("a.txt", b"async chain")
        assert await (await container.download_blob("a.txt")).readall() == b"async chain"
        await container.delete_container()


def test_queue_round_trip(azurite, session_emulator: Emulator) -> None:
    from azure.storage.queue import QueueServiceClient

    credential = LegacyMsiCredential(endpoint=session_emulator.endpoint)
    client = QueueServiceClient(azurite.queue_url, credential=credential, connection_verify=azurite.ca_file)
    queue = client.create_queue(name("q"))
    queue.send_message("hello")
    assert [message.content for message in queue.receive_messages()] == ["hello"]
    queue.delete_queue()


def test_table_round_trip(azurite, session_emulator: Emulator) -> None:
    from azure.data.tables import TableServiceClient

    credential = LegacyMsiCredential(endpoint=session_emulator.endpoint)
    client = TableServiceClient(azurite.table_url, credential=credential, connection_verify=azurite.ca_file)
    table = client.create_table(name("t"))
    table.upsert_entity({"PartitionKey": "vm", "RowKey": "1", "state": "legacy"})
    assert table.get_entity("vm", "1")["state"] == "legacy"
    client.delete_table(table.table_name)


def test_user_delegation_key_names_the_emulated_identity(azurite, session_emulator: Emulator) -> None:
    from azure.storage.blob import BlobServiceClient

    credential = LegacyMsiCredential(
        endpoint=session_emulator.endpoint, client_id="6d1e8a7c-0000-4000-8000-00000000000a"
    )
    token = credential.get_token(STORAGE).token
    client = BlobServiceClient(azurite.blob_url, credential=credential, connection_verify=azurite.ca_file)
    now = datetime.datetime.now(datetime.timezone.utc)
    key = client.get_user_delegation_key(now, now + datetime.timedelta(hours=1))
    assert (key.signed_oid, key.signed_tid) == (claims_of(token)["oid"], session_emulator.tenant_id)


def _expect_authentication_failed(azurite, credential: Any, reason: str) -> None:
    from azure.storage.blob import BlobServiceClient

    client = BlobServiceClient(azurite.blob_url, credential=credential, connection_verify=azurite.ca_file)
    with pytest.raises(HttpResponseError) as caught:
        client.create_container(name("denied"))
    assert caught.value.status_code == 403
    assert caught.value.error_code == "AuthenticationFailed"
    assert reason in str(caught.value)


def test_azurite_refuses_a_token_for_another_audience(azurite, session_emulator: Emulator) -> None:
    inner = LegacyMsiCredential(endpoint=session_emulator.endpoint)
    _expect_authentication_failed(azurite, AskingFor(inner, "https://vault.azure.net/.default"), "audience")


def test_azurite_refuses_a_scope_used_as_a_resource(azurite, session_emulator: Emulator) -> None:
    token, claims = session_emulator.mint_token(STORAGE)  # as if /.default had not been stripped
    _expect_authentication_failed(azurite, StaticCredential(token, claims["exp"]), "audience")


def test_azurite_refuses_an_expired_token(azurite, session_emulator: Emulator) -> None:
    token, _claims = session_emulator.mint_token("https://storage.azure.com", lifetime=-60)
    _expect_authentication_failed(azurite, StaticCredential(token, int(time.time()) + 3600), "expired")


def test_short_lived_tokens_are_renewed_by_the_sdk_policy(azurite, monkeypatch: pytest.MonkeyPatch) -> None:
    from azure.storage.blob import BlobServiceClient

    clock = Clock()
    # azure-core's bearer policy reads time.time() to decide when to ask again; it and the
    # credential and the emulator share one simulated clock, so no test time passes.
    monkeypatch.setattr("azure.core.pipeline.policies._authentication.time", types.SimpleNamespace(time=clock))
    with Emulator(port=0, lifetime=330, clock=clock) as vm:
        credential = LegacyMsiCredential(endpoint=vm.endpoint, clock=clock)
        client = BlobServiceClient(azurite.blob_url, credential=credential, connection_verify=azurite.ca_file)
        container = client.create_container(name("renew"))
        first = credential.get_token(STORAGE).token
        clock.advance(40)  # 290 s left: under azure-core's 300 s margin, past our refresh_on
        container.get_container_properties()
        second = credential.get_token(STORAGE).token
        assert second != first
        assert vm.request_count == 2
        assert claims_of(second)["exp"] > claims_of(first)["exp"]
        container.delete_container()


# --- challenge-based clients -----------------------------------------------------------------


def test_key_vault_secret_client_answers_the_challenge(
    challenge_server: ChallengeServer, session_emulator, tls_files
) -> None:
    from azure.keyvault.secrets import SecretClient

    credential = LegacyMsiCredential(endpoint=session_emulator.endpoint)
    client = SecretClient(
        challenge_server.url, credential, verify_challenge_resource=False, connection_verify=tls_files[2]
    )
    assert client.get_secret("db-password").value == "secret-value-of-db-password"
    first, second = challenge_server.seen[:2]
    assert first[1] is None  # the unauthenticated probe
    assert claims_of(second[1])["aud"] == VAULT_RESOURCE


async def test_async_key_vault_secret_client(challenge_server: ChallengeServer, session_emulator, tls_files) -> None:
    from azure.keyvault.secrets.aio import SecretClient

    async with (
        AsyncLegacyMsiCredential(endpoint=session_emulator.endpoint) as credential,
        SecretClient(
            challenge_server.url, credential, verify_challenge_resource=False, connection_verify=tls_files[2]
        ) as client,
    ):
        assert (await client.get_secret("api-key")).value == "secret-value-of-api-key"
    assert claims_of(challenge_server.seen[-1][1])["aud"] == VAULT_RESOURCE


def _arm_client(credential: Any, server: ChallengeServer, ca: str) -> Any:
    try:  # azure-mgmt-resource 26 moved it
        from azure.mgmt.resource.resources import ResourceManagementClient
    except ImportError:  # pragma: no cover - older releases
        from azure.mgmt.resource import ResourceManagementClient

    return ResourceManagementClient(
        credential,
        "00000000-0000-0000-0000-000000000001",
        base_url=server.url,
        credential_scopes=[f"{ARM_RESOURCE}/.default"],
        connection_verify=ca,
    )


def test_arm_client_lists_resource_groups(challenge_server: ChallengeServer, session_emulator, tls_files) -> None:
    credential = LegacyMsiCredential(endpoint=session_emulator.endpoint)
    groups = list(_arm_client(credential, challenge_server, tls_files[2]).resource_groups.list())
    assert [group.name for group in groups] == ["legacy-vm-rg"]
    assert claims_of(challenge_server.seen[-1][1])["aud"] == ARM_RESOURCE


def test_arm_claims_challenge_gets_a_fresh_token(challenge_server: ChallengeServer, tls_files) -> None:
    challenge_server.claims_challenge = True
    with Emulator(port=0) as vm:
        credential = LegacyMsiCredential(endpoint=vm.endpoint)
        groups = list(_arm_client(credential, challenge_server, tls_files[2]).resource_groups.list())
        assert [group.name for group in groups] == ["legacy-vm-rg"]
        assert len(challenge_server.seen) == 2  # challenged, then accepted
        # The credential bypassed its cache and asked the endpoint again, with the claims
        # the endpoint cannot take: the extension itself decides whether to re-issue.
        assert vm.request_count == 2
        assert challenge_server.challenged_token is not None
