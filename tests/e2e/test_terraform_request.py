"""Terraform's managed identity request, byte for byte, against the emulator: no adapter needed.

The azurerm provider hands ``msi_endpoint`` (``ARM_MSI_ENDPOINT``) to go-azure-sdk as
``CustomManagedIdentityEndpoint``; go-azure-sdk's ``sdk/auth/managed_identity_authorizer.go``
(hashicorp/go-azure-sdk at 09f7185472ae5bf4074c1791d1be25a009029efd) then builds the request:

- ``url.Values{"api-version": {"2018-02-01"}, "resource": {R}}`` plus ``client_id`` when one is
  configured, encoded by ``Values.Encode`` (keys sorted, ``url.QueryEscape``: ``:`` and ``/``
  escaped), appended to the endpoint as ``%s?%s``;
- ``http.NewRequestWithContext(ctx, http.MethodGet, url, http.NoBody)`` with the header map
  ``{"Metadata": ["true"]}``, plus ``x-ms-identity: $IDENTITY_HEADER`` when that variable is set
  (so a shell that sourced the adapter's variables sends the adapter's secret along);
- Go's client adds ``Host``, ``User-Agent: Go-http-client/1.1`` and ``Accept-Encoding: gzip``;
- the answer must be 2xx; it reads ``access_token``, ``token_type`` and ``expires_in`` as a
  string of digits or a number (an unparsable one leaves the token without an expiry).

Only ``MSI_ENDPOINT`` with ``MSI_SECRET`` changes that (api-version 2019-08-01 at
``MSI_ENDPOINT``): the adapter never sets those. Sent here on a raw socket, as Go frames it.
"""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Iterator
from typing import Any, Optional
from urllib.parse import quote, urlsplit

import pytest

from legacy_msi_credential.emulator import Emulator, UserAssignedIdentity

ARM = "https://management.azure.com/"  # go-azure-sdk's environments.Resource for Resource Manager
IDENTITY = UserAssignedIdentity(client_id="7e7a0e77-0000-4000-8000-00000000f0f0").completed()


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def _go_query(values: dict[str, str]) -> str:
    """``url.Values.Encode``: keys sorted, each part through ``url.QueryEscape`` (space as ``+``)."""
    return "&".join(
        f"{quote(key, safe='').replace('%20', '+')}={quote(value, safe='').replace('%20', '+')}"
        for key, value in sorted(values.items())
    )


def terraform_request(endpoint: str, resource: str, client_id: str = "", identity_header: str = "") -> bytes:
    """The bytes go-azure-sdk's ``azureMetadata`` sends for ``ARM_MSI_ENDPOINT=endpoint``."""
    query = {"api-version": "2018-02-01", "resource": resource}
    if client_id:
        query["client_id"] = client_id
    url = urlsplit(f"{endpoint}?{_go_query(query)}")
    lines = [
        f"GET {url.path}?{url.query} HTTP/1.1",
        f"Host: {url.netloc}",
        "User-Agent: Go-http-client/1.1",
        "Metadata: true",
    ]
    if identity_header:
        lines.append(f"x-ms-identity: {identity_header}")  # the map's key as written: Go sends it so
    lines.append("Accept-Encoding: gzip")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


def _exchange(port: int, request: bytes) -> tuple[int, dict[str, Any]]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    headers = dict(line.decode("latin-1").lower().split(": ", 1) for line in head.split(b"\r\n")[1:] if b": " in line)
    if headers.get("transfer-encoding") == "chunked":  # pragma: no cover - the emulator sends Content-Length
        raise AssertionError("unexpected chunked answer")
    return status, json.loads(body[: int(headers["content-length"])])


def _go_expiry(answer: dict[str, Any]) -> Optional[int]:
    """What go-azure-sdk makes of ``expires_in``: a string of digits or a number, else no expiry."""
    value = answer.get("expires_in")
    if isinstance(value, str) and value.isdigit():
        return int(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    return None


@pytest.fixture
def extension() -> Iterator[Emulator]:
    with Emulator(port=0, user_assigned=[IDENTITY]) as running:
        yield running


@pytest.mark.parametrize("client_id", ["", IDENTITY.client_id])
@pytest.mark.parametrize("identity_header", ["", "an-adapter-secret"])
def test_terraforms_request_gets_a_token_for_the_identity(
    extension: Emulator, client_id: str, identity_header: str
) -> None:
    endpoint = f"http://localhost:{extension.port}/oauth2/token"  # ARM_MSI_ENDPOINT, as documented
    status, answer = _exchange(extension.port, terraform_request(endpoint, ARM, client_id, identity_header))
    assert status == 200, answer
    assert answer["token_type"] == "Bearer"
    expiry = _go_expiry(answer)
    assert expiry is not None  # the token is cached and refreshed, not used once
    assert expiry > 0
    claims = _claims(answer["access_token"])
    expected = extension.mint_token(ARM)[1]["oid"] if not client_id else IDENTITY.object_id
    assert claims["oid"] == expected
    assert claims["aud"] == ARM
    (request,) = extension.requests
    assert (request.method, request.path) == ("GET", "/oauth2/token")
    expected_params = {"api-version": ["2018-02-01"], "resource": [ARM]}
    if client_id:
        expected_params["client_id"] = [client_id]
    assert request.params == expected_params


def test_the_request_is_framed_as_go_frames_it() -> None:
    """The request's first line, as go-azure-sdk's ``Values.Encode`` writes it: a wrong
    encoding here would be testing some other client."""
    sent = terraform_request("http://localhost:50342/oauth2/token", ARM, IDENTITY.client_id)
    assert sent.split(b"\r\n", 1)[0] == (
        b"GET /oauth2/token?api-version=2018-02-01&client_id=7e7a0e77-0000-4000-8000-00000000f0f0"
        b"&resource=https%3A%2F%2Fmanagement.azure.com%2F HTTP/1.1"
    )
    assert b"\r\nMetadata: true\r\n" in sent
