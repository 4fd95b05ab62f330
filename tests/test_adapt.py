"""``legacy-msi adapt``: App Service's and IMDS's protocols served from the legacy extension.

The protocol tables are tried directly (no I/O); the service is tried on 127.0.0.1 over raw
sockets, with the emulator playing the extension, and with azure-identity's real
``ManagedIdentityCredential`` as a client (its IMDS path pointed at a dead loopback port by
``tests/conftest.py``, or at the adapter).
"""

from __future__ import annotations

import json
import os
import pickle
import shlex
import signal
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlencode

import pytest

from legacy_msi_credential._server._legacy import TokenAsk
from legacy_msi_credential._server._rules import Refusal, Request
from legacy_msi_credential.adapt import (
    SERVER_NAME,
    Adapter,
    Secret,
    environment_lines,
    legacy_factory,
    own_environment,
    read_or_make_secret,
)
from legacy_msi_credential.adapt import _protocols as protocols
from legacy_msi_credential.adapt._protocols import APP_SERVICE, IMDS, AdaptSettings
from legacy_msi_credential.bridge import Bridge, TokenSource
from legacy_msi_credential.emulator import Emulator, Fault, UserAssignedIdentity

from .conftest import cli, closed_port, run_cli, start_cli

ARM = "https://management.azure.com/"
SECRET = Secret("s3cret-s3cret-s3cret-s3cret-s3cret-0123456")
SETTINGS = AdaptSettings(SECRET.reveal().encode())
ALICE = UserAssignedIdentity(client_id="0a1b2c3d-0000-4000-8000-0000000a11ce").completed()


# --- the protocol tables, directly ------------------------------------------------------------


def record(path: str, params: dict[str, list[str]], headers: list[tuple[str, str]]) -> Request:
    """The server core's record of a GET from a loopback peer, as the shell makes it."""
    return Request("GET", f"{path}?{urlencode(params, doseq=True)}", tuple(headers), True, params)


def app_request(
    query: Optional[dict[str, Any]] = None, headers: Optional[list[tuple[str, str]]] = None, *, path: str = "/msi/token"
) -> Request:
    params = {"api-version": ["2019-08-01"], "resource": [ARM]}
    for name, value in (query or {}).items():
        if value is None:
            params.pop(name, None)
        else:
            params[name] = value if isinstance(value, list) else [value]
    sent = [("X-IDENTITY-HEADER", SECRET.reveal())] if headers is None else headers
    return record(path, params, sent)


def imds_request(
    query: Optional[dict[str, Any]] = None,
    headers: Optional[list[tuple[str, str]]] = None,
    *,
    path: str = "/metadata/identity/oauth2/token",
) -> Request:
    params = {"api-version": ["2018-02-01"], "resource": [ARM]}
    for name, value in (query or {}).items():
        if value is None:
            params.pop(name, None)
        else:
            params[name] = value if isinstance(value, list) else [value]
    return record(path, params, [("Metadata", "true")] if headers is None else headers)


def decide(request: Request) -> Any:
    return protocols.decide(request, SETTINGS)


def outcome(answer: Any) -> Any:
    """An answer made comparable: a refusal's status and description, or the ask."""
    return (answer.status, answer.description) if isinstance(answer, Refusal) else answer


def refused(request: Request) -> tuple[int, str]:
    answer = decide(request)
    assert isinstance(answer, Refusal), answer
    return answer.status, answer.description


def test_each_protocol_is_a_table_of_named_checks() -> None:
    for protocol in (APP_SERVICE, IMDS):
        names = [rule.name for rule in protocol.rules]
        assert len(names) == len(set(names))
        assert "one identity" in names
        assert "known parameters" in names
    assert "secret header" in [rule.name for rule in APP_SERVICE.rules]
    assert "metadata header" in [rule.name for rule in IMDS.rules]


@pytest.mark.parametrize("make", [app_request, imds_request])
@pytest.mark.parametrize("path", [None, "/elsewhere"])
def test_each_table_admits_as_every_server_does_before_its_own_rows(make: Any, path: Optional[str]) -> None:
    request = make() if path is None else make(path=path)
    from_a_page = replace(request, headers=(*request.headers, ("Origin", "http://example.com")))
    relayed = replace(request, headers=(*request.headers, ("X-Forwarded-For", "203.0.113.7")))
    assert refused(from_a_page)[0] == 401
    assert refused(replace(request, peer_is_loopback=False))[0] == 401
    assert refused(relayed)[0] == 400
    lenient = AdaptSettings(SECRET.reveal().encode(), refuse_forwarded=False, browser_proof=False)
    assert outcome(protocols.decide(relayed, lenient)) == outcome(protocols.decide(request, lenient))


def test_the_settings_never_show_or_pickle_the_secret() -> None:
    assert SECRET.reveal() not in repr(SETTINGS) + str(SETTINGS)
    with pytest.raises(TypeError):
        pickle.dumps(SETTINGS)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({}, TokenAsk(ARM)),
        ({"client_id": "abc"}, TokenAsk(ARM, "client_id", "abc")),
        ({"object_id": "oid"}, TokenAsk(ARM, "object_id", "oid")),
        ({"principal_id": "oid"}, TokenAsk(ARM, "object_id", "oid")),
        ({"mi_res_id": "/subscriptions/x"}, TokenAsk(ARM, "msi_res_id", "/subscriptions/x")),
    ],
)
def test_app_service_asks_the_extension_for_the_identity_named(query: dict[str, str], expected: TokenAsk) -> None:
    assert decide(app_request(query)) == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({}, TokenAsk(ARM, imds=True)),
        ({"client_id": "abc"}, TokenAsk(ARM, "client_id", "abc", imds=True)),
        ({"object_id": "oid"}, TokenAsk(ARM, "object_id", "oid", imds=True)),
        ({"msi_res_id": "/subscriptions/x"}, TokenAsk(ARM, "msi_res_id", "/subscriptions/x", imds=True)),
    ],
)
def test_imds_asks_the_extension_for_the_identity_named(query: dict[str, str], expected: TokenAsk) -> None:
    assert decide(imds_request(query)) == expected


@pytest.mark.parametrize(
    "path", ["/metadata/identity/oauth2/token/", "//metadata/identity/oauth2/token", "/metadata/identity/oauth2/token"]
)
def test_imds_paths_msal_node_and_java_send_are_served(path: str) -> None:
    assert isinstance(decide(imds_request(path=path)), TokenAsk)


@pytest.mark.parametrize("path", ["/oauth2/token", "/metadata/identity/oauth2/tokens", "/MSI/token", "/msi/token/x"])
def test_other_paths_are_404(path: str) -> None:
    assert refused(app_request(path=path))[0] == 404


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ([], 401),  # missing
        ([("X-IDENTITY-HEADER", "wrong")], 401),
        ([("X-IDENTITY-HEADER", SECRET.reveal().upper())], 401),  # differently cased value
        ([("X-IDENTITY-HEADER", SECRET.reveal()[:-1])], 401),  # a prefix
        ([("X-IDENTITY-HEADER", SECRET.reveal() + " ")], 401),
        ([("X-IDENTITY-HEADER", SECRET.reveal()), ("x-identity-header", SECRET.reveal())], 400),  # repeated
        ([("X-IDENTITY-HEADER", SECRET.reveal()), ("X-Identity-Header", "wrong")], 400),
    ],
)
def test_app_service_refuses_a_wrong_missing_or_repeated_secret(headers: list[tuple[str, str]], status: int) -> None:
    code, description = refused(app_request(headers=headers))
    assert code == status
    assert SECRET.reveal() not in description
    assert "wrong" not in description


def test_the_secret_header_s_name_is_case_insensitive_as_http_says() -> None:
    assert isinstance(decide(app_request(headers=[("x-identity-header", SECRET.reveal())])), TokenAsk)


@pytest.mark.parametrize("headers", [[], [("Metadata", "false")], [("Metadata", "True ")], [("Metadata", "true")] * 2])
def test_imds_requires_metadata_true_once(headers: list[tuple[str, str]]) -> None:
    assert refused(imds_request(headers=headers))[0] == 400


@pytest.mark.parametrize("make", [app_request, imds_request])
@pytest.mark.parametrize(
    "query",
    [
        {"client_id": ["a", "b"]},  # repeated
        {"client_id": ["a", "a"]},
        {"client_id": "a", "object_id": "b"},  # conflicting
        {"client_id": ""},  # empty
        {"Client_ID": "a"},  # unknown
        {"client_id[]": "a"},
        {"identity_name": "a"},
        {"resource": [ARM, "https://vault.azure.net"]},
        {"resource": None},
        {"resource": "not a uri"},
        {"api-version": None},
    ],
)
def test_unknown_repeated_or_conflicting_parameters_are_400_never_the_system_identity(make: Any, query: dict) -> None:
    assert refused(make(query))[0] == 400


def test_conflicting_app_service_spellings_of_one_identity_are_400() -> None:
    assert refused(app_request({"object_id": "a", "principal_id": "a"}))[0] == 400
    assert refused(app_request({"mi_res_id": "a", "msi_res_id": "a"}))[0] == 400


def test_app_service_serves_its_api_version_only() -> None:
    assert refused(app_request({"api-version": "2017-09-01"}))[0] == 400


def test_only_get_is_served() -> None:
    assert refused(replace(app_request(), method="POST"))[0] == 405


def test_app_service_answer_has_integer_epoch_seconds_and_names_the_identity() -> None:
    answer = protocols.answer(TokenAsk(ARM, "client_id", "abc"), "tok", 1_700_000_000, 1_699_990_000, client_id="abc")
    assert answer == {
        "access_token": "tok",
        "expires_on": "1700000000",
        "resource": ARM,
        "token_type": "Bearer",
        "client_id": "abc",
    }
    assert answer["expires_on"].isdigit()


def test_imds_answer_is_imds_s_shape() -> None:
    answer = protocols.answer(TokenAsk(ARM, imds=True), "tok", 1_700_000_000, 1_699_990_000, client_id="cid")
    assert answer == {
        "access_token": "tok",
        "client_id": "cid",
        "expires_in": "10000",
        "expires_on": "1700000000",
        "ext_expires_in": "10000",
        "not_before": "1699990000",
        "resource": ARM,
        "token_type": "Bearer",
    }


@pytest.mark.parametrize("status", [500, 503, 401, 404, 410, 400])
def test_an_extension_failure_is_answered_400_which_no_client_retries(status: int) -> None:
    answered = protocols.unavailable(Refusal(status, "x", "why"))
    if status == 503:
        assert answered.status == 503  # the adapter stopping: asking again soon is right
    else:
        assert (answered.status, answered.error) == (400, "unavailable")
        assert "why" in answered.description


# --- the secret and the environment file ------------------------------------------------------


def test_the_secret_is_never_shown() -> None:
    secret = Secret.new()
    assert secret.reveal() not in repr(secret) + str(secret) + f"{secret}"
    with pytest.raises(TypeError):
        pickle.dumps(secret)


def test_the_secret_is_kept_0600_stable_across_restarts_and_rotated(tmp_path: Path) -> None:
    path = tmp_path / "state" / "secret"
    first, new = read_or_make_secret(str(path))
    assert new
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again, new_again = read_or_make_secret(str(path))
    assert again.reveal() == first.reveal()
    assert not new_again
    rotated, _ = read_or_make_secret(str(path), rotate=True)
    assert rotated.reveal() != first.reveal()
    assert read_or_make_secret(str(path))[0].reveal() == rotated.reveal()


def test_a_secret_file_others_can_read_or_a_link_is_refused_without_showing_it(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    secret, _ = read_or_make_secret(str(path))
    path.chmod(0o644)
    with pytest.raises(ValueError, match="may be read by others") as caught:
        read_or_make_secret(str(path))
    assert secret.reveal() not in str(caught.value)
    link = tmp_path / "link"
    path.chmod(0o600)
    link.symlink_to(path)
    with pytest.raises(ValueError, match="is a link"):
        read_or_make_secret(str(link))


def test_the_environment_file_reads_the_same_in_a_shell(tmp_path: Path) -> None:
    content = environment_lines("http://127.0.0.1:5/msi/token", SECRET, "http://127.0.0.1:5")
    path = tmp_path / "env"
    path.write_bytes(content)
    shown = subprocess.run(
        [
            "sh",
            "-c",
            f'. {shlex.quote(str(path))}; printf "%s|%s|%s" "$IDENTITY_ENDPOINT" '
            '"$IDENTITY_HEADER" "$AZURE_POD_IDENTITY_AUTHORITY_HOST"',
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    as_lines = dict(line.split("=", 1) for line in content.decode().splitlines())  # systemd's reading: no quotes
    assert shown.split("|") == [
        as_lines["IDENTITY_ENDPOINT"],
        as_lines["IDENTITY_HEADER"],
        as_lines["AZURE_POD_IDENTITY_AUTHORITY_HOST"],
    ]
    assert as_lines["IDENTITY_HEADER"] == SECRET.reveal()


@pytest.mark.parametrize("url", ["http://127.0.0.1:5/msi/token?a=$(id)", "http://x y/", 'http://"x"/', "http://x/#y"])
def test_a_value_that_would_need_quoting_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="quoting"):
        environment_lines(url, SECRET, "http://127.0.0.1:5")


def test_the_adapter_ignores_the_variables_it_sets_and_msi_endpoint() -> None:
    environ = {
        "IDENTITY_ENDPOINT": "http://127.0.0.1:9/msi/token",
        "MSI_ENDPOINT": "http://127.0.0.1:9/oauth2/token",
        "AZURE_POD_IDENTITY_AUTHORITY_HOST": "http://127.0.0.1:9",
        "LEGACY_MSI_SETTINGS_FILE": "/nonexistent/settings",
    }
    assert own_environment(environ) == {"LEGACY_MSI_SETTINGS_FILE": "/nonexistent/settings"}
    adapter = Adapter(port=0, secret=SECRET, environ=environ)
    assert adapter.legacy.url == "http://localhost:50342/oauth2/token"
    assert SECRET.reveal() not in repr(adapter)


# --- the service ------------------------------------------------------------------------------


@pytest.fixture
def extension() -> Iterator[Emulator]:
    with Emulator(port=0, user_assigned=[ALICE]) as running:
        yield running


@pytest.fixture
def adapter(extension: Emulator) -> Iterator[Adapter]:
    with Adapter(port=0, secret=SECRET, endpoint=extension.endpoint) as running:
        yield running


def raw(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return received
            received += chunk


def get(port: int, target: str, headers: str = "") -> tuple[int, dict[str, str], dict[str, Any]]:
    answer = raw(
        port, f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{headers}Connection: close\r\n\r\n".encode()
    )
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), fields, json.loads(body)


def app_target(extra: str = "") -> str:
    return f"/msi/token?api-version=2019-08-01&resource={ARM}{extra}"


IMDS_TARGET = f"/metadata/identity/oauth2/token?api-version=2018-02-01&resource={ARM}"
SECRET_LINE = f"X-IDENTITY-HEADER: {SECRET.reveal()}\r\n"


def test_both_protocols_are_served_on_one_port_saying_what_it_is(adapter: Adapter, extension: Emulator) -> None:
    status, head, app = get(adapter.port, app_target(), SECRET_LINE)
    assert status == 200
    assert head["server"] == SERVER_NAME
    assert set(app) == {"access_token", "expires_on", "resource", "token_type", "client_id"}
    status, head, imds = get(adapter.port, IMDS_TARGET + "&client_id=" + ALICE.client_id, "Metadata: true\r\n")
    assert status == 200
    assert head["server"] == SERVER_NAME
    assert imds["client_id"] == ALICE.client_id
    assert "refresh_token" not in imds
    assert imds["access_token"] in extension.minted_tokens
    assert extension.requests[-1].param("client_id") == ALICE.client_id
    assert get(adapter.port, "/healthz")[2]["role"] == "adapter"


#: Requests the shell refuses before any protocol reads them: each with the status it gets.
FRAMING_REFUSALS = {
    "no Host in HTTP/1.1": (b"GET /msi/token HTTP/1.1\r\nConnection: close\r\n\r\n", 400),
    "Host twice": (b"GET /msi/token HTTP/1.1\r\nHost: localhost\r\nHost: evil.test\r\n\r\n", 400),
    "Transfer-Encoding in HTTP/1.0": (b"GET /msi/token HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    "a head past max_head": (
        b"GET /msi/token HTTP/1.1\r\nHost: localhost\r\n"
        + b"".join(b"X-Pad-%d: %s\r\n" % (n, b"a" * 7000) for n in range(6)),
        431,
    ),
    "not HTTP": (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64 + b"\r\n\r\n", 400),
}


@pytest.mark.parametrize("kind", FRAMING_REFUSALS)
def test_the_adapter_stands_on_the_bridge_s_shell_framing_and_head_budget_included(
    adapter: Adapter, extension: Emulator, kind: str
) -> None:
    """What the shell refuses, the adapter refuses: the same framing rules and head budget,
    answered as JSON that says what it is, the connection closed, the extension never asked."""
    request, status = FRAMING_REFUSALS[kind]
    answer = raw(adapter.port, request)
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert int(lines[0].split()[1]) == status, lines[0]
    assert f"Server: {SERVER_NAME}" in lines
    assert "error" in json.loads(body)
    assert extension.requests == []


def test_a_wrong_secret_on_the_wire_never_reaches_the_extension(adapter: Adapter, extension: Emulator) -> None:
    for line in ("", "X-IDENTITY-HEADER: wrong\r\n", SECRET_LINE.upper(), SECRET_LINE + SECRET_LINE):
        status, _, body = get(adapter.port, app_target(), line)
        assert status in (400, 401)
        assert "access_token" not in body
    assert extension.request_count == 0


def test_node_fetch_s_sec_fetch_mode_is_served_and_a_browser_s_headers_are_not(adapter: Adapter) -> None:
    assert get(adapter.port, IMDS_TARGET, "Metadata: true\r\nsec-fetch-mode: cors\r\n")[0] == 200
    for marker in ("Sec-Fetch-Site: cross-site", "Sec-Fetch-Dest: empty", "Origin: http://evil.test"):
        assert get(adapter.port, app_target(), f"{SECRET_LINE}{marker}\r\n")[0] == 401
    answer = raw(
        adapter.port,
        f"GET {IMDS_TARGET} HTTP/1.1\r\nHost: evil.test\r\nMetadata: true\r\nConnection: close\r\n\r\n".encode(),
    )
    assert b" 401 " in answer.split(b"\r\n")[0]


def test_a_token_for_another_identity_is_never_served(adapter: Adapter, extension: Emulator) -> None:
    extension.add_faults(Fault.wrong_identity())
    status, _, body = get(adapter.port, app_target(f"&client_id={ALICE.client_id}"), SECRET_LINE)
    assert status == 400
    assert "access_token" not in body


def test_an_absent_extension_is_a_quick_400(extension: Emulator) -> None:
    with Adapter(port=0, secret=SECRET, endpoint=f"http://127.0.0.1:{closed_port()}/oauth2/token") as adapter:
        started = time.monotonic()
        status, _, body = get(adapter.port, app_target(), SECRET_LINE)
        assert (status, body["error"]) == (400, "unavailable")
        assert get(adapter.port, IMDS_TARGET, "Metadata: true\r\n")[0] == 400
        assert time.monotonic() - started < 3


def test_an_extension_answering_500_is_a_400(extension: Emulator) -> None:
    extension.add_faults(Fault.http_error(500))
    source = TokenSource("legacy", credential_factory=legacy_factory(extension.endpoint, retry_total=0))
    with Adapter(port=0, secret=SECRET, endpoint=extension.endpoint, source=source) as adapter:
        status, _, body = get(adapter.port, app_target(), SECRET_LINE)
    assert (status, body["error"]) == (400, "unavailable")
    assert extension.request_count == 1


def test_many_concurrent_clients_cost_the_extension_one_request(extension: Emulator) -> None:
    extension.add_faults(Fault.delay(0.3))
    with Adapter(port=0, secret=SECRET, endpoint=extension.endpoint) as adapter:
        statuses: list[int] = []
        start = threading.Barrier(24)

        def client(index: int) -> None:
            start.wait()
            target, line = (app_target(), SECRET_LINE) if index % 2 else (IMDS_TARGET, "Metadata: true\r\n")
            statuses.append(get(adapter.port, target, line)[0])

        threads = [threading.Thread(target=client, args=(index,)) for index in range(24)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert statuses == [200] * 24
        assert extension.request_count == 1
        assert adapter.source.requests == 1


def test_the_adapter_refuses_to_ask_itself_another_adapter_or_the_bridge(extension: Emulator) -> None:
    port = closed_port()
    with pytest.raises(ValueError, match="this adapter's own address"):
        Adapter(port=port, secret=SECRET, endpoint=f"http://127.0.0.1:{port}/oauth2/token").start()
    with Adapter(port=0, secret=SECRET, endpoint=extension.endpoint) as first, pytest.raises(ValueError, match="adapt"):
        Adapter(port=0, secret=SECRET, endpoint=f"http://127.0.0.1:{first.port}/oauth2/token").start()
    with Bridge(port=0, source=TokenSource("imds")) as bridge, pytest.raises(ValueError, match="legacy-msi-bridge"):
        Adapter(port=0, secret=SECRET, endpoint=bridge.endpoint).start()


def test_azure_identity_s_managed_identity_credential_gets_its_token_by_either_protocol(
    adapter: Adapter, extension: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from azure.identity import ManagedIdentityCredential

    monkeypatch.setenv("IDENTITY_ENDPOINT", adapter.identity_endpoint)
    monkeypatch.setenv("IDENTITY_HEADER", SECRET.reveal())
    with ManagedIdentityCredential(client_id=ALICE.client_id) as credential:
        token = credential.get_token(ARM + ".default")
    assert token.token == extension.minted_tokens[-1]
    assert extension.requests[-1].param("client_id") == ALICE.client_id
    assert token.expires_on > time.time() + 3000  # integer epoch seconds, read as such

    monkeypatch.delenv("IDENTITY_ENDPOINT")
    monkeypatch.delenv("IDENTITY_HEADER")
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", adapter.authority_host)
    with ManagedIdentityCredential() as credential:
        imds_token = credential.get_token(ARM + ".default")
    assert imds_token.token in extension.minted_tokens
    assert extension.requests[-1].param("client_id") is None


def test_azure_identity_with_a_wrong_secret_is_unavailable_at_once(
    adapter: Adapter, extension: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from azure.identity import CredentialUnavailableError, ManagedIdentityCredential

    monkeypatch.setenv("IDENTITY_ENDPOINT", adapter.identity_endpoint)
    monkeypatch.setenv("IDENTITY_HEADER", Secret.new().reveal())
    with ManagedIdentityCredential() as credential, pytest.raises(CredentialUnavailableError):
        credential.get_token(ARM + ".default")
    assert extension.request_count == 0


# --- the command ------------------------------------------------------------------------------


def wait_for(path: Path, process: subprocess.Popen[Any], timeout: float = 20.0) -> None:
    """The environment file, written once the adapter listens (polled: it is another process's)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the environment file was not written"
        time.sleep(0.02)


def test_the_command_writes_the_environment_file_serves_and_removes_it_on_sigterm(
    tmp_path: Path, extension: Emulator
) -> None:
    env_file, state = tmp_path / "adapt.env", tmp_path / "state" / "secret"
    process = start_cli(
        "adapt", "--host", "127.0.0.1", "--port", "0", "--endpoint", extension.endpoint,
        "--env-file", str(env_file), "--state-file", str(state),
    )  # fmt: skip
    try:
        wait_for(env_file, process)
        assert stat.S_IMODE(env_file.stat().st_mode) == 0o640
        values = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
        assert set(values) == {"IDENTITY_ENDPOINT", "IDENTITY_HEADER", "AZURE_POD_IDENTITY_AUTHORITY_HOST"}
        assert values["IDENTITY_HEADER"] == state.read_text().strip()
        port = int(values["IDENTITY_ENDPOINT"].rsplit(":", 1)[1].split("/")[0])
        assert values["IDENTITY_ENDPOINT"].startswith(values["AZURE_POD_IDENTITY_AUTHORITY_HOST"] + "/")
        status, _, body = get(port, app_target(), f"X-IDENTITY-HEADER: {values['IDENTITY_HEADER']}\r\n")
        assert status == 200
        assert body["access_token"] in extension.minted_tokens
        imds = get(port, IMDS_TARGET, "Metadata: true\r\n")[2]
        assert get(port, app_target(), f"X-IDENTITY-HEADER: {values['IDENTITY_HEADER'][:-1]}\r\n")[0] == 401
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=20)
    assert process.returncode == 0, err
    assert not env_file.exists()
    assert values["IDENTITY_HEADER"] not in out + err
    assert values["IDENTITY_HEADER"][:-1] not in out + err  # nor what a client sent as the secret
    for token in (body["access_token"], imds["access_token"]):
        assert token not in err
        assert token.split(".")[1] not in err
    # The access log, as serve's: one line per request, its path, identity kind, status and time.
    lines = [line for line in err.splitlines() if " GET " in line]
    assert len(lines) == 3, err
    assert " GET /msi/token system-assigned 200 " in lines[0]
    assert " GET /metadata/identity/oauth2/token system-assigned 200 " in lines[1]
    assert " GET /msi/token - 401 " in lines[2]


def test_the_command_keeps_the_secret_off_help_and_names_the_flag_of_a_bad_state_file(tmp_path: Path) -> None:
    assert "IDENTITY_HEADER" in run_cli("adapt", "--help").stdout
    bad = tmp_path / "secret"
    bad.write_text("x" * 43)
    bad.chmod(0o644)
    result = run_cli("adapt", "--port", "0", "--state-file", str(bad))
    assert result.returncode != 0
    assert "--state-file" in result.stderr
    assert "x" * 43 not in result.stderr
    rotated = run_cli("adapt", "--rotate-secret", "--state-file", str(tmp_path / "new"))
    assert rotated.returncode == 0
    assert (tmp_path / "new").read_text().strip() not in rotated.stdout + rotated.stderr
    assert os.stat(tmp_path / "new").st_mode & 0o077 == 0


def test_doctor_tells_the_adapter_apart_never_shows_the_secret_and_warns_when_nothing_listens(
    adapter: Adapter, extension: Emulator
) -> None:
    variables = {
        "IDENTITY_ENDPOINT": adapter.identity_endpoint,
        "IDENTITY_HEADER": SECRET.reveal(),
        "LEGACY_MSI_ENDPOINT": extension.endpoint,
    }
    seen = cli("doctor", env=variables)
    assert "IDENTITY_ENDPOINT answers: it is a legacy-msi adapt adapter" in seen.stdout
    assert SECRET.reveal() not in seen.stdout + seen.stderr
    dead = cli("doctor", env={**variables, "IDENTITY_ENDPOINT": f"http://127.0.0.1:{closed_port()}/msi/token"})
    assert "[warn] nothing listens at IDENTITY_ENDPOINT" in dead.stdout
