"""The emulator catches client mistakes as the extension does, and answers what real clients send.

Raw HTTP on a socket, so that what is sent is exactly what a client of the era sent.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

from legacy_msi_credential import LegacyMsiCredential, TokenRequestError
from legacy_msi_credential.emulator import Emulator, UserAssignedIdentity

from .conftest import UNKNOWN_PARAMETERS, closed_port
from .hostile import send_in_two_segments, split_form_posts

ARM = "https://management.azure.com/"


def raw(port: int, request: bytes, host: str = "127.0.0.1") -> list[tuple[int, dict[str, str], Any]]:
    """Send bytes, read every answer until the server closes or goes quiet."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.settimeout(3)
        sock.connect((host, port))
        sock.sendall(request)
        data = b""
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except socket.timeout:
            pass
    answers = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        body, data = rest[:length], rest[length:]
        answers.append((status, headers, json.loads(body) if body else None))
    return answers


def get(path: str, headers: str = "Metadata: true\r\n", *, close: bool = True) -> bytes:
    connection = "Connection: close\r\n" if close else ""
    return f"GET {path} HTTP/1.1\r\nHost: localhost\r\n{headers}{connection}\r\n".encode()


def form_post(form: str) -> bytes:
    return (
        f"POST /oauth2/token HTTP/1.1\r\nHost: localhost\r\nMetadata: true\r\n"
        f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(form)}\r\nConnection: close\r\n\r\n"
        f"{form}"
    ).encode()


@pytest.fixture
def uami_vm() -> Any:
    identity = UserAssignedIdentity(client_id="c1")
    with Emulator(port=0, user_assigned=[identity], system_assigned=True) as vm:
        yield vm, identity.completed()


def test_mi_res_id_selects_that_identity(uami_vm: Any) -> None:
    vm, identity = uami_vm
    ((status, _, body),) = raw(vm.port, get(f"/oauth2/token?resource={ARM}&mi_res_id={identity.msi_res_id}"))
    assert status == 200
    assert body["client_id"] == identity.client_id  # the user-assigned answer names its client


@pytest.mark.parametrize("query", ["client_id=", "object_id=", "msi_res_id=%20", "mi_res_id="])
def test_an_empty_identity_parameter_gets_no_token(emulator: Emulator, query: str) -> None:
    ((status, _, body),) = raw(emulator.port, get(f"/oauth2/token?resource={ARM}&{query}"))
    assert status == 400
    assert body["error"] == "invalid_request"
    assert "empty" in body["error_description"]


def test_an_unknown_parameter_gets_no_token(emulator: Emulator) -> None:
    """An allow-list: a parameter no legacy client sends is a 400 naming it and the accepted
    ones, never a request read without it (the system-assigned identity's token). One emulator
    for every name, by GET and by form POST."""
    for sent, name in UNKNOWN_PARAMETERS:
        form = f"resource={ARM}&{sent}=0a1b2c3d-0000-4000-8000-00000000c11d"
        for request in (get(f"/oauth2/token?{form}"), form_post(form)):
            ((status, _, body),) = raw(emulator.port, request)
            assert (status, body["error"]) == (400, "invalid_request"), (name, body)
            assert f"Unknown parameter {name!r}" in body["error_description"]
            assert "client_id, object_id, msi_res_id, mi_res_id, api-version" in body["error_description"]
    assert emulator.tokens_issued == 0


def test_two_identity_parameters_get_no_token(emulator: Emulator) -> None:
    ((status, _, body),) = raw(emulator.port, get(f"/oauth2/token?resource={ARM}&mi_res_id=/s/a&msi_res_id=/s/a"))
    assert (status, body["error"]) == (401, "invalid_request")
    assert emulator.tokens_issued == 0


def test_a_chunked_form_post_is_read_whole(emulator: Emulator) -> None:
    form = f"resource={ARM}&client_id=c9".encode()
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (form[:10], form[10:])) + b"0\r\n\r\n"
    request = (
        b"POST /oauth2/token HTTP/1.1\r\nHost: localhost\r\nMetadata: true\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked
    )
    answers = raw(emulator.port, request + get(f"/oauth2/token?resource={ARM}"))
    assert [status for status, _, _ in answers] == [200, 200]  # nothing left over on the connection
    assert answers[0][2]["client_id"] == "c9"
    assert emulator.requests[0].params["client_id"] == ["c9"]


def test_a_form_is_read_whole_however_its_segments_arrive(uami_vm: Any) -> None:
    """A form cut in two TCP segments, framed by ``Content-Length`` and chunked: answered for
    the identity the whole form names, never for the one its first part names (none)."""
    vm, identity = uami_vm
    form = f"resource={ARM}&client_id={identity.client_id}"
    for first, rest in split_form_posts(form, form.index("&")):
        early, answer = send_in_two_segments(vm.port, first, rest)
        assert not early, answer
        assert answer.startswith(b"HTTP/1.1 200 "), answer
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1]).get("client_id") == identity.client_id
    assert [request.param("client_id") for request in vm.requests] == [identity.client_id] * 2


@pytest.mark.parametrize(
    ("method", "content_type"), [("GET", "application/x-www-form-urlencoded"), ("POST", "application/json")]
)
def test_a_body_that_is_not_a_form_gets_no_token(uami_vm: Any, method: str, content_type: str) -> None:
    """An identity parameter in a body the extension's rules do not read: a 400, never the
    system-assigned identity's token for a request that named another."""
    vm, identity = uami_vm
    body = f"client_id={identity.client_id}".encode()
    request = (
        f"{method} /oauth2/token?resource={ARM} HTTP/1.1\r\nHost: localhost\r\nMetadata: true\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    ((status, _, answer),) = raw(vm.port, request + body)
    assert (status, answer["error"]) == (400, "invalid_request")
    assert "form POST" in answer["error_description"]
    assert vm.tokens_issued == 0


def test_a_body_that_stops_short_gets_no_token(uami_vm: Any) -> None:
    """A form whose client closes its side before the rest is sent, by ``Content-Length`` and
    chunked: a 400, never an answer for what its first part names."""
    vm, identity = uami_vm
    form = f"resource={ARM}&client_id={identity.client_id}"
    for first, _ in split_form_posts(form, form.index("&")):
        with socket.create_connection(("127.0.0.1", vm.port), timeout=10) as sock:
            sock.sendall(first)
            sock.shutdown(socket.SHUT_WR)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 400 "), answer
        assert b"ended early" in answer
    assert vm.tokens_issued == 0


@pytest.mark.parametrize("method", ["PUT", "OPTIONS", "FROB"])
def test_other_methods_get_json_and_allow(emulator: Emulator, method: str) -> None:
    request = (
        f"{method} /oauth2/token?resource={ARM} HTTP/1.1\r\nHost: x\r\nMetadata: true\r\nConnection: close\r\n\r\n"
    )
    ((status, headers, body),) = raw(emulator.port, request.encode())
    assert status == 405
    assert headers["allow"] == "GET, POST"
    assert headers["content-type"].startswith("application/json")
    assert body["error"] == "method_not_allowed"


def test_default_host_listens_on_ipv6_loopback_too(emulator: Emulator) -> None:
    assert emulator.ipv6_port == emulator.port
    ((status, _, _),) = raw(emulator.port, get(f"/oauth2/token?resource={ARM}"), host="::1")
    assert status == 200
    assert emulator.requests[-1].client == "::1"


def test_windows_flavour_answers_an_unknown_resource_500_unknown() -> None:
    with Emulator(port=0, flavor="windows") as vm:
        ((status, _, body),) = raw(vm.port, get("/oauth2/token?resource=not-a-resource"))
        assert (status, body["error"]) == (500, "unknown")
        assert body["error_description"].startswith("Failed to retrieve token from the Active directory.")
        credential = LegacyMsiCredential(endpoint=vm.endpoint, retry_total=0)
        with pytest.raises(TokenRequestError, match="check the resource URI") as caught:
            credential.get_token("not-a-resource")
        assert caught.value.error_code == "unknown"


def test_bad_resource_200_gets_a_hint() -> None:
    from legacy_msi_credential._protocol import parse_response

    body = json.dumps({"error": "bad_resource_200", "error_description": "Invalid Resource"}).encode()
    with pytest.raises(TokenRequestError, match="found the resource '' invalid: check the scope"):
        parse_response(400, "application/json", body, now=0, url="u", resource="")


def test_settings_file_for_a_non_default_port_is_followed(emulator: Emulator, tmp_path: Path, monkeypatch) -> None:
    settings = emulator.write_settings(tmp_path / "ManagedIdentity-Settings")
    monkeypatch.setenv("LEGACY_MSI_SETTINGS_FILE", settings)
    credential = LegacyMsiCredential()
    assert credential.endpoint is not None
    assert credential.endpoint.url == f"http://localhost:{emulator.port}/oauth2/token"
    assert credential.get_token(ARM + ".default").token in emulator.minted_tokens


def test_doctor_says_which_port_the_settings_file_announces(tmp_path: Path, monkeypatch, capsys) -> None:
    from legacy_msi_credential.cli import main

    settings = tmp_path / "ManagedIdentity-Settings"
    port = closed_port()
    settings.write_text(json.dumps({"url": f"http://localhost:{port}/"}))
    monkeypatch.setenv("LEGACY_MSI_SETTINGS_FILE", str(settings))
    main(["doctor", "--skip-imds"])
    assert f"(the extension's port: {port})" in capsys.readouterr().out
