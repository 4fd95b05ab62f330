"""With real azure-core pipelines and azure-identity's chains."""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from azure.core import AsyncPipelineClient, PipelineClient
from azure.core.credentials import AccessToken, AccessTokenInfo, SupportsTokenInfo, TokenCredential
from azure.core.credentials_async import AsyncSupportsTokenInfo, AsyncTokenCredential
from azure.core.exceptions import ClientAuthenticationError
from azure.core.pipeline.policies import AsyncBearerTokenCredentialPolicy, BearerTokenCredentialPolicy
from azure.core.rest import HttpRequest

from legacy_msi_credential import LegacyMsiCredential
from legacy_msi_credential.aio import LegacyMsiCredential as AsyncLegacyMsiCredential
from legacy_msi_credential.emulator import Emulator

from .conftest import closed_port

ARM = "https://management.azure.com/.default"


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: list[dict[str, str]]

    def do_GET(self) -> None:
        self.seen.append(dict(self.headers.items()))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def service() -> Iterator[tuple[str, list[dict[str, str]]]]:
    """A loopback HTTP service that records the headers it receives."""
    seen: list[dict[str, str]] = []
    handler = type("Handler", (_Recorder,), {"seen": seen})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


def test_satisfies_azure_core_protocols() -> None:
    credential = LegacyMsiCredential(endpoint="http://127.0.0.1:1/oauth2/token")
    assert isinstance(credential, TokenCredential)
    assert isinstance(credential, SupportsTokenInfo)
    asynchronous = AsyncLegacyMsiCredential(endpoint="http://127.0.0.1:1/oauth2/token")
    assert isinstance(asynchronous, AsyncTokenCredential)
    assert isinstance(asynchronous, AsyncSupportsTokenInfo)


def test_import_does_not_load_azure_identity() -> None:
    import subprocess

    code = "import sys, legacy_msi_credential, legacy_msi_credential.aio; print('azure.identity' in sys.modules)"
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "False"


def test_bearer_policy_puts_the_token_on_requests(
    emulator: Emulator, service: tuple[str, list[dict[str, str]]]
) -> None:
    url, seen = service
    with LegacyMsiCredential(endpoint=emulator.endpoint) as credential:
        policy = BearerTokenCredentialPolicy(credential, ARM)
        with PipelineClient(base_url=url, policies=[policy]) as client:
            for _ in range(3):
                client.send_request(HttpRequest("GET", url + "/resource"), enforce_https=False).raise_for_status()
        token = credential.get_token(ARM).token
    assert [headers["Authorization"] for headers in seen] == [f"Bearer {token}"] * 3
    assert emulator.request_count == 1


async def test_async_bearer_policy_puts_the_token_on_requests(
    emulator: Emulator, service: tuple[str, list[dict[str, str]]]
) -> None:
    url, seen = service
    async with AsyncLegacyMsiCredential(endpoint=emulator.endpoint) as credential:
        policy = AsyncBearerTokenCredentialPolicy(credential, ARM)
        async with AsyncPipelineClient(base_url=url, policies=[policy]) as client:
            for _ in range(3):
                response = await client.send_request(HttpRequest("GET", url + "/resource"), enforce_https=False)
                response.raise_for_status()
        token = (await credential.get_token(ARM)).token
    assert [headers["Authorization"] for headers in seen] == [f"Bearer {token}"] * 3
    assert emulator.request_count == 1


class StaticCredential:
    """The next credential of a chain."""

    def __init__(self) -> None:
        self.calls = 0

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.calls += 1
        return AccessToken("static-token", int(time.time()) + 3600)

    def get_token_info(self, *scopes: str, options: Any = None) -> AccessTokenInfo:
        self.calls += 1
        return AccessTokenInfo("static-token", int(time.time()) + 3600)


def test_chain_moves_on_quickly_when_nothing_listens() -> None:
    from azure.identity import ChainedTokenCredential

    nothing = LegacyMsiCredential(endpoint=f"http://127.0.0.1:{closed_port()}/oauth2/token")
    fallback = StaticCredential()
    chain = ChainedTokenCredential(nothing, fallback)
    started = time.monotonic()
    assert chain.get_token(ARM).token == "static-token"
    assert chain.get_token_info(ARM).token == "static-token"
    assert time.monotonic() - started < 5.0  # the figure itself is in benchmarks/
    assert fallback.calls == 2


def test_chain_uses_the_legacy_endpoint_when_present(emulator: Emulator) -> None:
    from azure.identity import ChainedTokenCredential

    fallback = StaticCredential()
    chain = ChainedTokenCredential(LegacyMsiCredential(endpoint=emulator.endpoint), fallback)
    assert chain.get_token(ARM).token.startswith("eyJ")
    assert fallback.calls == 0


def test_chain_stops_at_a_refusal_from_the_endpoint() -> None:
    from azure.identity import ChainedTokenCredential

    with Emulator(port=0, system_assigned=False) as vm:
        fallback = StaticCredential()
        chain = ChainedTokenCredential(LegacyMsiCredential(endpoint=vm.endpoint), fallback)
        with pytest.raises(ClientAuthenticationError, match="unauthorized_client"):
            chain.get_token(ARM)
        assert fallback.calls == 0


async def test_async_chain_moves_on_when_nothing_listens() -> None:
    from azure.identity.aio import ChainedTokenCredential

    class AsyncStatic:
        async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
            return AccessToken("static-token", int(time.time()) + 3600)

        async def close(self) -> None:
            pass

    nothing = AsyncLegacyMsiCredential(endpoint=f"http://127.0.0.1:{closed_port()}/oauth2/token")
    async with ChainedTokenCredential(nothing, AsyncStatic()) as chain:  # type: ignore[arg-type]
        assert (await chain.get_token(ARM)).token == "static-token"


def test_unavailable_error_is_azure_identitys_whatever_was_imported_first() -> None:
    """The type a caller catches does not depend on import order: the first failure made before
    ``azure.identity`` was imported already is one of its ``CredentialUnavailableError``s."""
    script = f"""
import pickle, sys
from legacy_msi_credential import CredentialUnavailableError, LegacyMsiCredential
assert "azure.identity" not in sys.modules
try:
    LegacyMsiCredential(endpoint="http://127.0.0.1:{closed_port()}/oauth2/token").get_token("https://x/.default")
except CredentialUnavailableError as exc:
    error = exc
import azure.identity
again = pickle.loads(pickle.dumps(error))
for each in (error, again):
    print(type(each).__name__, isinstance(each, azure.identity.CredentialUnavailableError),
          isinstance(each, CredentialUnavailableError))
try:
    raise error
except azure.identity.CredentialUnavailableError:
    print("caught by azure-identity's class")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "CredentialUnavailableError True True",
        "CredentialUnavailableError True True",
        "caught by azure-identity's class",
    ]


def test_without_azure_identity_the_errors_are_the_packages_own() -> None:
    script = f"""
import pickle, sys
sys.modules["azure.identity"] = None  # as if azure-identity were not installed
from legacy_msi_credential import CredentialUnavailableError, LegacyMsiCredential
try:
    LegacyMsiCredential(endpoint="http://127.0.0.1:{closed_port()}/oauth2/token").get_token("https://x/.default")
except CredentialUnavailableError as exc:
    again = pickle.loads(pickle.dumps(exc))
    same = again.message == exc.message
    print(type(exc) is CredentialUnavailableError, type(again) is CredentialUnavailableError, same)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "True", "True"]
