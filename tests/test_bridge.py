"""``legacy-msi serve``: the legacy protocol served from a real source, all on loopback.

The source is azure-identity's real ``ManagedIdentityCredential`` talking to the project's
emulator in its IMDS role (``AZURE_POD_IDENTITY_AUTHORITY_HOST``), or its real
``AzureCliCredential`` running an ``az`` written by the test.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import stat
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from legacy_msi_credential import LegacyMsiCredential
from legacy_msi_credential.bridge import Bridge, ServerLimits, TokenSource
from legacy_msi_credential.emulator import Emulator, UserAssignedIdentity

from .conftest import Clock, closed_port, start_cli

ARM = "https://management.azure.com/"
IDENTITY = UserAssignedIdentity(client_id="0a1b2c3d-0000-4000-8000-00000000b41d").completed()


@pytest.fixture
def imds(monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    """The emulator in its IMDS role, where azure-identity's ManagedIdentityCredential looks."""
    with Emulator(port=0, user_assigned=[IDENTITY]) as running:
        monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", running.imds_authority)
        yield running


@pytest.fixture
def bridge(imds: Emulator) -> Iterator[Bridge]:
    with Bridge(port=0, source="imds") as running:
        yield running


def ask(bridge: Bridge, headers: Any = None, **params: str) -> requests.Response:
    return requests.get(
        bridge.endpoint,
        params={"resource": ARM, **params},
        headers={"Metadata": "true"} if headers is None else headers,
        timeout=30,
    )


def test_a_token_from_imds_through_the_legacy_protocol(bridge: Bridge, imds: Emulator) -> None:
    answer = ask(bridge)
    assert answer.status_code == 200
    body = answer.json()
    assert body["access_token"] == imds.minted_tokens[0]
    assert all(isinstance(body[name], str) for name in ("expires_in", "expires_on", "not_before"))
    assert [request.path for request in imds.requests] == ["/metadata/identity/oauth2/token"]
    assert imds.requests[0].params["resource"] == [ARM]


def test_the_credential_of_this_package_works_through_it(bridge: Bridge, imds: Emulator) -> None:
    credential = LegacyMsiCredential(endpoint=bridge.endpoint)
    assert credential.get_token(ARM + ".default").token == imds.minted_tokens[0]
    credential.close()


@pytest.mark.parametrize(
    ("parameter", "value", "sent_as"),
    [
        ("client_id", IDENTITY.client_id, "client_id"),
        ("object_id", IDENTITY.object_id, "object_id"),
        ("msi_res_id", IDENTITY.msi_res_id, "mi_res_id"),
        ("mi_res_id", IDENTITY.msi_res_id, "mi_res_id"),
    ],
)
def test_the_requested_identity_is_passed_on(
    bridge: Bridge, imds: Emulator, parameter: str, value: str, sent_as: str
) -> None:
    answer = ask(bridge, **{parameter: value})
    assert answer.status_code == 200, answer.text
    assert answer.json()["client_id"] == IDENTITY.client_id
    params = imds.requests[0].params
    sent = params.get(sent_as) or params.get("msi_res_id")  # an ARM ID goes as IMDS's own parameter name
    assert sent == [value]


def test_64_concurrent_cold_clients_cost_one_source_request(bridge: Bridge, imds: Emulator) -> None:
    barrier = threading.Barrier(64)
    tokens: list[str] = []

    def client() -> None:
        barrier.wait()
        tokens.append(ask(bridge).json()["access_token"])

    threads = [threading.Thread(target=client) for _ in range(64)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(tokens) == 64
    assert len(set(tokens)) == 1
    assert imds.request_count == 1
    assert bridge.source.requests == 1


class _CountingSource:
    """A stand-in for azure-identity whose tokens live an hour on the test's clock (azure-identity
    caches on the real clock, which the test cannot move)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.calls = 0

    @staticmethod
    def token(number: int) -> str:
        """The ``number``th token: a managed identity's (the bridge hands on no other), told apart by ``uti``."""
        claims = {"appid": "c", "oid": "o", "sub": "o", "idtyp": "app", "uti": f"token-{number}"}
        return "e30." + base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=") + "."

    def get_token(self, *scopes: str) -> Any:
        from azure.core.credentials import AccessToken

        self.calls += 1
        return AccessToken(self.token(self.calls), int(self.clock()) + 3600)


def test_expires_in_counts_down_and_the_token_is_refreshed_before_expiry(clock: Clock) -> None:
    source = _CountingSource(clock)
    with Bridge(
        port=0, source=TokenSource("imds", clock=clock, credential_factory=lambda *_: source), clock=clock
    ) as bridge:
        first = ask(bridge).json()
        clock.advance(600)
        second = ask(bridge).json()
        assert second["access_token"] == first["access_token"] == source.token(1)
        assert int(first["expires_in"]) - int(second["expires_in"]) == 600  # counted down honestly
        assert source.calls == 1
        clock.advance(int(second["expires_in"]) - 200)  # inside the last five minutes
        third = ask(bridge).json()
        assert third["access_token"] == source.token(2)
        assert int(third["expires_in"]) == 3600
        assert source.calls == 2


def test_an_identity_the_source_lacks_is_unauthorized_client(bridge: Bridge) -> None:
    answer = ask(bridge, client_id="not-on-this-vm")
    assert answer.status_code == 401
    assert answer.json()["error"] == "unauthorized_client"
    assert "imds source" in answer.json()["error_description"]


def test_an_unreachable_source_is_500_unknown_never_a_hang(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", f"http://127.0.0.1:{closed_port()}")
    with Bridge(port=0, source=TokenSource("imds", timeout=3)) as bridge:
        started = time.monotonic()
        answer = ask(bridge)
        elapsed = time.monotonic() - started
    assert answer.status_code == 500
    assert answer.json()["error"] == "unknown"
    assert "imds source" in answer.json()["error_description"]
    assert elapsed < 10


def test_the_cli_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "bin"
    folder.mkdir()
    az = folder / "az"
    az.write_text(
        f"#!{sys.executable}\nimport json, sys, time\n"
        f"open({str(tmp_path / 'calls')!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')\n"
        "print(json.dumps({'accessToken': 'from-az', 'expires_on': int(time.time()) + 3600, 'tokenType': 'Bearer'}))\n"
    )
    az.chmod(az.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    with Bridge(port=0, source="cli") as bridge:
        assert ask(bridge).json()["access_token"] == "from-az"
        assert ask(bridge).json()["access_token"] == "from-az"
        refused = ask(bridge, object_id="x")
    assert (tmp_path / "calls").read_text().count("get-access-token") == 1
    assert refused.status_code == 400
    assert "signed-in account" in refused.json()["error_description"]


# --- hostile requests ---------------------------------------------------------------------


def test_without_metadata_nothing_is_fetched(bridge: Bridge, imds: Emulator) -> None:
    answer = ask(bridge, headers={})
    assert (answer.status_code, answer.json()["error"]) == (400, "bad_request_102")
    assert imds.request_count == 0


@pytest.mark.parametrize("header", [{"X-Forwarded-For": "203.0.113.9"}, {"Forwarded": "for=203.0.113.9"}])
def test_forwarded_requests_are_refused(bridge: Bridge, imds: Emulator, header: dict[str, str]) -> None:
    answer = ask(bridge, headers={"Metadata": "true", **header})
    assert answer.status_code == 400
    assert "Forwarded" in answer.json()["error_description"]
    assert imds.request_count == 0


def test_an_oversized_request_is_refused(bridge: Bridge, imds: Emulator) -> None:
    answer = requests.post(
        bridge.endpoint,
        data={"resource": ARM, "padding": "x" * 100_000},
        headers={"Metadata": "true"},
        timeout=30,
    )
    assert answer.status_code == 413
    assert imds.request_count == 0


def test_too_many_headers_are_refused(bridge: Bridge) -> None:
    headers = {"Metadata": "true", **{f"X-{n}": "1" for n in range(150)}}
    assert ask(bridge, headers=headers).status_code == 431


def test_a_slow_client_is_cut_off(imds: Emulator) -> None:
    with Bridge(port=0, limits=ServerLimits(client_timeout=1.0)) as bridge:
        sock = socket.create_connection(("127.0.0.1", bridge.port), timeout=30)
        with sock:
            sock.sendall(b"GET /oauth2/token?resource=x HTTP/1.1\r\n")  # and never the rest
            started = time.monotonic()
            assert sock.recv(1024) == b""  # closed by the server
            assert time.monotonic() - started < 15
    assert imds.request_count == 0


def test_the_health_path(bridge: Bridge) -> None:
    answer = requests.get(bridge.base_url + "healthz", timeout=10)
    assert answer.headers["Server"] == "legacy-msi-bridge"
    health = answer.json()
    assert isinstance(health.pop("log_lines_dropped"), int)  # the process's, counted since it started
    assert health == {
        "status": "ok",
        "role": "bridge",
        "server": "legacy-msi-bridge",
        "source": "imds",
        "source_requests": 0,
        "cached_tokens": 0,
        "users": 0,
        "connections": 1,
        "malformed_requests": 0,
    }


def test_it_binds_loopback_only_unless_allowed() -> None:
    with pytest.raises(ValueError, match="loopback"):
        Bridge("0.0.0.0", 0)


# --- the command, as a service manager runs it ------------------------------------------------


def test_serve_as_a_service_and_stop_on_sigterm(imds: Emulator, tmp_path: Path) -> None:
    settings = tmp_path / "ManagedIdentity-Settings"
    with start_cli("serve", "--port", "0", "--write-settings", str(settings)) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            endpoint = line.split(" at ", 1)[1].split(",", 1)[0]
            assert json.loads(settings.read_text())["url"].startswith("http://localhost:")
            answer = requests.get(endpoint, params={"resource": ARM}, headers={"Metadata": "true"}, timeout=30)
            assert answer.json()["access_token"] == imds.minted_tokens[0]
            process.send_signal(signal.SIGTERM)
            out, err = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert process.returncode == 0, err
    assert out.strip().endswith("Stopped.")
    assert not settings.exists()  # removed on the way out


def test_the_default_source_is_azure_identitys_chain(imds: Emulator) -> None:
    """No environment credential, no workload identity: azure-identity's chain reaches IMDS."""
    with Bridge(port=0, source="default") as bridge:
        answer = ask(bridge)
        refused = ask(bridge, object_id="x")
    assert answer.status_code == 200, answer.text
    assert answer.json()["access_token"] == imds.minted_tokens[0]
    assert refused.status_code == 400  # the default chain takes a client_id only
