"""Each claim the README makes about the ``MSI_ENDPOINT`` workaround, checked against the installed azure-identity.

The workaround: set ``MSI_ENDPOINT=http://localhost:50342/oauth2/token`` so that
azure-identity's ``ManagedIdentityCredential`` takes its Azure Cloud Shell path, which
speaks the same protocol. (IMDS is pointed at a dead loopback port by the autouse fixture.)
"""

from __future__ import annotations

import contextvars
import time
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import AzureError, ClientAuthenticationError
from azure.identity import ChainedTokenCredential, DefaultAzureCredential, ManagedIdentityCredential

from legacy_msi_credential import LegacyMsiCredential
from legacy_msi_credential.emulator import Emulator

from .conftest import RecordingTransport, SleepRecorder, closed_port

STORAGE = "https://storage.azure.com/.default"


class Static:
    def __init__(self) -> None:
        self.calls = 0

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.calls += 1
        return AccessToken("static", int(time.time()) + 3600)


def test_workaround_refuses_user_assigned_identities(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MSI_ENDPOINT", emulator.endpoint)
    with pytest.raises(ValueError, match="client_id should not be set for cloud shell"):
        # Refused when made (recent azure-identity) or on first use (1.19). In a context of its
        # own: azure-identity 1.19 leaves its "within DefaultAzureCredential" flag set after a
        # DefaultAzureCredential call that failed, and then skips this check.
        contextvars.Context().run(
            lambda: ManagedIdentityCredential(client_id="6d1e8a7c-0000-4000-8000-000000000001").get_token(STORAGE)
        )
    assert emulator.request_count == 0
    ours = LegacyMsiCredential(endpoint=emulator.endpoint, client_id="6d1e8a7c-0000-4000-8000-000000000001")
    assert ours.get_token(STORAGE).token
    assert emulator.requests[-1].param("client_id") == "6d1e8a7c-0000-4000-8000-000000000001"


def test_workaround_changes_what_default_azure_credential_does(emulator: Emulator, monkeypatch) -> None:
    monkeypatch.setenv("MSI_ENDPOINT", emulator.endpoint)
    default = DefaultAzureCredential(
        exclude_cli_credential=True,
        exclude_powershell_credential=True,
        exclude_developer_cli_credential=True,
        exclude_visual_studio_code_credential=True,
        exclude_shared_token_cache_credential=True,
    )
    assert default.get_token(STORAGE).token
    # Every DefaultAzureCredential in the process now goes to the variable's URL.
    assert [(r.method, r.path) for r in emulator.requests] == [("POST", "/oauth2/token")]


def test_workaround_breaks_the_chain_when_nothing_listens(monkeypatch: pytest.MonkeyPatch) -> None:
    dead = f"http://127.0.0.1:{closed_port()}/oauth2/token"
    monkeypatch.setenv("MSI_ENDPOINT", dead)
    fallback = Static()
    with pytest.raises(ClientAuthenticationError, match="Connection refused"):
        ChainedTokenCredential(ManagedIdentityCredential(), fallback).get_token(STORAGE)
    assert fallback.calls == 0  # the chain stopped instead of moving on

    monkeypatch.delenv("MSI_ENDPOINT")
    started = time.monotonic()
    token = ChainedTokenCredential(LegacyMsiCredential(endpoint=dead), fallback).get_token(STORAGE)
    assert token.token == "static"
    assert time.monotonic() - started < 1.0


def test_workaround_does_not_read_the_settings_file(emulator: Emulator, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LEGACY_MSI_SETTINGS_FILE", emulator.write_settings(tmp_path / "ManagedIdentity-Settings"))
    with pytest.raises(ClientAuthenticationError):
        ManagedIdentityCredential().get_token(STORAGE)  # goes to IMDS, not to the extension
    assert emulator.request_count == 0
    assert LegacyMsiCredential().get_token(STORAGE).token
    assert emulator.request_count == 1


def test_workaround_does_not_wait_for_a_booting_extension(monkeypatch: pytest.MonkeyPatch) -> None:
    port = closed_port()
    endpoint = f"http://127.0.0.1:{port}/oauth2/token"
    monkeypatch.setenv("MSI_ENDPOINT", endpoint)
    with pytest.raises(AzureError, match="Connection refused"):
        ManagedIdentityCredential().get_token(STORAGE)
    monkeypatch.delenv("MSI_ENDPOINT")

    booting = Emulator(port=port)

    recorder = SleepRecorder()

    class Transport(RecordingTransport):
        """The extension comes up while the credential waits its second time."""

        def sleep(self, duration: float) -> None:
            super().sleep(duration)
            if len(recorder.sleeps) == 2:
                booting.start()

    credential = LegacyMsiCredential(endpoint=endpoint, wait_for_endpoint=30, transport=Transport(recorder))
    try:
        assert credential.get_token(STORAGE).token
    finally:
        booting.stop()
    assert len(recorder.sleeps) == 2
    assert booting.request_count == 1
