"""The servers' rules, each row of each table on its own: no server, no socket.

Every row has a request it refuses (its status, error and description) and a request that
passes it; the tables' order is their precedence, and a request that breaks several rows
gets the first one's refusal.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Optional

import pytest

from legacy_msi_credential._server._legacy import LEGACY, LEGACY_RULES, Policy, TokenAsk, decide, token_answer
from legacy_msi_credential._server._rules import (
    ADMIT,
    BODY,
    FRAMING,
    Refusal,
    Request,
    Rule,
    RuleTable,
    first_refusal,
    json_answer,
    refusal_answer,
)

ARM = "https://management.azure.com/"
BRIDGE = Policy(refuse_forwarded=True, browser_proof=True)
EMULATOR = Policy(serves_imds=True, known_resources=frozenset())


@dataclasses.dataclass(frozen=True)
class Limits:
    max_headers: int = 4
    max_body: int = 10


def request(
    *headers: tuple[str, str],
    method: str = "GET",
    target: str = "/oauth2/token",
    loopback: bool = True,
    params: Optional[dict[str, list[str]]] = None,
    **fields: Any,
) -> Request:
    sent = headers or (("Host", "localhost"), ("Metadata", "true"))
    return Request(method, target, sent, loopback, {"resource": [ARM]} if params is None else params, **fields)


def row(table: Sequence[Rule[Any]], name: str) -> Rule[Any]:
    (found,) = [rule for rule in table if rule.name == name]
    return found


OK = request()

# (table, row, settings, a request it refuses, (status, error, description start, close, malformed))
REFUSED = [
    (FRAMING, "no Transfer-Encoding in HTTP/1.0", Limits(), request(("Transfer-Encoding", "chunked"), version=(1, 0)),
     (400, "invalid_request", "Transfer-Encoding in an HTTP/1.0 request.", True, True)),
    (FRAMING, "Host in HTTP/1.1", Limits(), request(("Metadata", "true")),
     (400, "invalid_request", "An HTTP/1.1 request without Host.", True, True)),
    (FRAMING, "single headers once", Limits(), request(("Host", "a"), ("metadata", "true"), ("Metadata", "x")),
     (400, "invalid_request", "More than one Metadata header.", True, True)),
    (FRAMING, "header count", Limits(), request(*[("Host", "localhost")] + [("X-A", "1")] * 4),
     (431, "invalid_request", "More than 4 request headers.", True, False)),
    (FRAMING, "declared body size", Limits(), request(content_length=11),
     (413, "invalid_request", "The request body is too large.", True, False)),
    (BODY, "body complete", Limits(), request(body=None),
     (400, "invalid_request", "The request body ended early.", True, False)),
    (BODY, "body size", Limits(), request(body=b"x" * 11),
     (413, "invalid_request", "The request body is too large.", True, False)),
    (ADMIT, "loopback peer", Policy(), request(loopback=False),
     (401, "unauthorized_client", "Requests must come over loopback.", False, False)),
    (ADMIT, "not relayed", BRIDGE, request(("Host", "localhost"), ("X-Forwarded-Host", "x")),
     (400, "invalid_request", "Relayed requests are refused (the request carries X-Forwarded-Host)", False, False)),
    (ADMIT, "loopback Host", BRIDGE, request(("Host", "attacker.example:50342")),
     (401, "unknown_source", "The Host header must name localhost", False, False)),
    (ADMIT, "not a browser", BRIDGE, request(("Host", "localhost"), ("Sec-Fetch-Site", "cross-site")),
     (401, "unauthorized_client", "Requests from web pages are refused (the request carries Sec-Fetch-Site)", False,
      False)),
    (LEGACY_RULES, "token path", Policy(), request(target="/metadata/identity/oauth2/token"),
     (401, "unknown_source", "Unknown Source: the request URI '/metadata/identity/oauth2/token'", False, False)),
    (LEGACY_RULES, "Metadata: true", Policy(), request(("Metadata", "True")),
     (400, "bad_request_102", "Required metadata header not specified or not correct", False, False)),
    (LEGACY_RULES, "method", Policy(), request(method="PUT"),
     (405, "method_not_allowed", "The method PUT is not allowed.", False, False)),
    (LEGACY_RULES, "each parameter once", Policy(), request(params={"resource": [ARM, ARM]}),
     (401, "invalid_request", "Parameter repeated: resource.", False, False)),
    (LEGACY_RULES, "api-version on IMDS's path", EMULATOR, request(target="/metadata/identity/oauth2/token"),
     (400, "invalid_request", "Required query variable 'api-version' is missing", False, False)),
    (LEGACY_RULES, "resource given", Policy(), request(params={"resource": [""]}),
     (400, "invalid_resource", "Required parameter 'resource' is missing.", False, False)),
    (LEGACY_RULES, "known parameters only", Policy(), request(params={"resource": [ARM], "Client_ID": ["c"]}),
     (400, "invalid_request", "Unknown parameter 'Client_ID'; accepted: client_id, ", False, False)),
    (LEGACY_RULES, "identity not empty", Policy(), request(params={"resource": [ARM], "object_id": [" "]}),
     (400, "invalid_request", "Parameter 'object_id' is empty.", False, False)),
    (LEGACY_RULES, "one identity at most", Policy(),
     request(params={"resource": [ARM], "client_id": ["c"], "mi_res_id": ["/r"]}),
     (401, "invalid_request", "Only one of client_id, object_id and msi_res_id may be given.", False, False)),
    (LEGACY_RULES, "resource Azure AD knows", EMULATOR, request(params={"resource": ["https://vault.azure.nte"]}),
     (400, "invalid_resource", "AADSTS50001: The application named https://vault.azure.nte was not found", False,
      False)),
]  # fmt: skip


def test_every_row_of_every_table_is_tried_here() -> None:
    named = {(id(table), name) for table, name, *_ in REFUSED}
    assert named == {(id(table), rule.name) for table in (FRAMING, BODY, ADMIT, LEGACY_RULES) for rule in table}


@pytest.mark.parametrize(("table", "name", "settings", "refused", "expected"), REFUSED, ids=[r[1] for r in REFUSED])
def test_each_row_refuses_what_it_names_and_passes_a_good_request(
    table: Sequence[Rule[Any]], name: str, settings: Any, refused: Request, expected: tuple[Any, ...]
) -> None:
    rule = row(table, name)
    status, error, start, close, malformed = expected
    refusal = rule.check(refused, settings)
    assert refusal is not None
    assert (refusal.status, refusal.error, refusal.close, refusal.malformed) == (status, error, close, malformed)
    assert refusal.description.startswith(start)
    assert rule.check(OK, settings) is None


def test_the_tables_run_in_the_order_the_extension_and_the_bridge_applied_them() -> None:
    assert [rule.name for rule in LEGACY.rules] == [rule.name for rule in ADMIT] + [rule.name for rule in LEGACY_RULES]
    assert [rule.name for rule in FRAMING] == [
        "no Transfer-Encoding in HTTP/1.0",
        "Host in HTTP/1.1",
        "single headers once",
        "header count",
        "declared body size",
    ]
    # Each breaking several rows: the first row's refusal is the answer.
    many = request(("Metadata", "no"), loopback=False, params={"resource": [ARM, ARM]})
    assert first_refusal(LEGACY.rules, many, BRIDGE).status == 401  # type: ignore[union-attr]
    assert first_refusal(LEGACY.rules, many, BRIDGE).error == "unauthorized_client"  # type: ignore[union-attr]
    path_and_header = request(("Host", "localhost"), target="/x")  # no Metadata either
    assert decide(path_and_header, Policy()).error == "unknown_source"  # type: ignore[union-attr]
    framing = request(*[("Host", "a"), ("Host", "b")] * 3, content_length=99)
    assert first_refusal(FRAMING, framing, Limits()).description == "More than one Host header."  # type: ignore[union-attr]


def test_an_accepted_request_is_a_token_ask_for_the_identity_it_names() -> None:
    assert decide(OK, BRIDGE) == TokenAsk(ARM)
    aliased = request(params={"resource": [ARM], "mi_res_id": ["/s/x"]})
    assert decide(aliased, BRIDGE) == TokenAsk(ARM, "msi_res_id", "/s/x")
    imds = request(target="/metadata/identity/oauth2/token?x", params={"resource": [ARM], "api-version": ["1"]})
    assert decide(imds, EMULATOR) == TokenAsk(ARM, imds=True)


def test_get_is_refused_where_only_post_is_accepted() -> None:
    refusal = row(LEGACY_RULES, "method").check(OK, Policy(accept_get=False))
    assert refusal is not None
    assert (refusal.status, refusal.headers) == (405, {"Allow": "POST"})
    assert row(LEGACY_RULES, "method").check(request(method="POST"), Policy(accept_get=False)) is None


def test_a_refusal_is_answered_one_way() -> None:
    refusal = Refusal(405, "method_not_allowed", "No.", {"Allow": "POST"})
    answer = refusal_answer(refusal)
    assert (answer.status, answer.headers, answer.close) == (405, {"Allow": "POST"}, False)
    assert answer.body == b'{"error": "method_not_allowed", "error_description": "No."}'
    assert refusal_answer(Refusal(400, "invalid_request", "x", malformed=True)).close
    assert json_answer(200, {"a": "1"}).body == b'{"a": "1"}'


def test_a_new_protocol_is_a_table_and_an_answer() -> None:
    """What a second protocol adds: rows of its own after admission, what it asks for, its answer."""

    def header_secret(request: Request, policy: Any) -> Optional[Refusal]:
        return None if request.header("x-secret") == "s" else Refusal(401, "unauthorized_client", "No secret.")

    other: RuleTable[Policy, TokenAsk] = RuleTable(
        "other",
        (*ADMIT, Rule("secret", header_secret)),
        lambda request, policy: TokenAsk(request.param("resource")),
        lambda ask, token, expires_on, now, client_id: {"access_token": token, "expires_on": str(expires_on)},
    )
    assert isinstance(other.decide(OK, BRIDGE), Refusal)
    ask = other.decide(request(("Host", "localhost"), ("X-Secret", "s")), BRIDGE)
    assert ask == TokenAsk(ARM)
    assert isinstance(ask, TokenAsk)
    assert other.answer(ask, "t", 5, 1, "") == {"access_token": "t", "expires_on": "5"}
    assert LEGACY.answer(TokenAsk(ARM), "t", 5, 1, "") == token_answer(TokenAsk(ARM), "t", 5, 1)


def test_the_server_core_loads_no_third_party_module() -> None:
    """``_server`` stands on the standard library alone: a server on it pays for no azure-core."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import legacy_msi_credential._server._binding, legacy_msi_credential._server._flights\n"
        "import legacy_msi_credential._server._legacy, legacy_msi_credential._server._limits\n"
        "import legacy_msi_credential._server._owner\n"
        "print(sorted({name.split('.')[0] for name in sys.modules if name.split('.')[0] in "
        "('azure', 'aiohttp', 'requests', 'urllib3', 'multidict', 'yarl')}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "server", ["legacy_msi_credential.bridge", "legacy_msi_credential.adapt", "legacy_msi_credential.emulator"]
)
def test_no_server_loads_azure_core_or_requests(server: str) -> None:
    """The servers hand tokens on as the standard library's record: azure-core's types are the
    credentials' (wrapped at their boundary), and requests is a client transport. The adapter's
    source, the asynchronous credential, is imported when it first asks the extension."""
    import subprocess
    import sys

    code = (
        f"import sys, {server}\n"
        "print(sorted({name.split('.')[0] for name in sys.modules if name.split('.')[0] in "
        "('azure', 'requests', 'urllib3')}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    assert done.stdout.strip() == "[]", done.stdout
