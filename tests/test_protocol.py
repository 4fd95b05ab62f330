"""Reading the endpoint's answers: pure, tested directly and with arbitrary JSON."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from legacy_msi_credential import CredentialUnavailableError, TokenRequestError
from legacy_msi_credential._attempt import Attempt
from legacy_msi_credential._constants import IDENTITY_ALIASES
from legacy_msi_credential._protocol import (
    BodyCollector,
    Identity,
    TokenResult,
    build_request,
    describe_body,
    parse_response,
    wants_post,
)
from legacy_msi_credential._redact import redact
from legacy_msi_credential._server._legacy import ACCEPTED_PARAMETERS, IDENTITY_NAMES, Policy, TokenAsk, decide
from legacy_msi_credential._server._rules import Refusal, Request
from legacy_msi_credential._text import clean_text

NOW = 1_700_000_000.0
URL = "http://127.0.0.1:50342/oauth2/token"


def parse(status: int, document: Any, content_type: str = "application/json") -> TokenResult:
    body = document if isinstance(document, bytes) else json.dumps(document).encode()
    return parse_response(status, content_type, body, now=NOW, url=URL, resource="https://r")


def good(**overrides: Any) -> dict[str, Any]:
    document = {
        "access_token": "eyJ0eXAiOiJKV1QifQ.eyJhdWQiOiJyIn0.c2ln",
        "refresh_token": "",
        "expires_in": "3599",
        "expires_on": str(int(NOW) + 3599),
        "not_before": str(int(NOW) - 300),
        "resource": "https://r",
        "token_type": "Bearer",
    }
    document.update(overrides)
    return {k: v for k, v in document.items() if v is not None}


def test_documented_answer() -> None:
    result = parse(200, good())
    assert result.expires_on == int(NOW) + 3599
    assert result.token_type == "Bearer"
    assert result.resource == "https://r"
    assert "eyJ" not in repr(result)


@pytest.mark.parametrize(
    ("fields", "expires_on"),
    [
        ({"expires_in": 100}, int(NOW) + 100),
        ({"expires_in": 100.7}, int(NOW + 100.7)),
        ({"expires_in": None, "expires_on": int(NOW) + 50}, int(NOW) + 50),
        ({"expires_in": None, "expires_on": str(int(NOW) + 50)}, int(NOW) + 50),
        ({"expires_in": None, "expires_on": "11/14/2023 11:13:20 PM +00:00", "not_before": None}, 1700003600),
        ({"expires_in": None, "expires_on": "11/14/2023 23:13:20 +00:00", "not_before": None}, 1700003600),
        ({"expires_in": None, "expires_on": "11/15/2023 12:13:20 AM +01:00", "not_before": None}, 1700003600),
        ({"expires_in": None, "expires_on": "11/15/2023 1:13:20 AM +02:00", "not_before": None}, 1700003600),
        ({"expires_in": None, "expires_on": "11/14/2023 09:13:20 PM -02:00", "not_before": None}, 1700003600),
        ({"expires_in": "garbage", "expires_on": int(NOW) + 60}, int(NOW) + 60),
    ],
)
def test_expiry_forms(fields: dict[str, Any], expires_on: int) -> None:
    assert parse(200, good(**fields)).expires_on == expires_on


def test_expires_in_wins_over_a_skewed_expires_on() -> None:
    result = parse(200, good(expires_in="3599", expires_on=str(int(NOW) - 3600 + 3599)))
    assert result.expires_on == int(NOW) + 3599


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"access_token": None}, "without an access_token"),
        ({"access_token": 12}, "without an access_token"),
        ({"access_token": "a\nb"}, "not printable ASCII"),
        ({"expires_in": None, "expires_on": None}, "usable expires_in"),
        ({"expires_in": True, "expires_on": None}, "usable expires_in"),
        ({"expires_in": "1e999", "expires_on": None}, "usable expires_in"),
        ({"expires_in": None, "expires_on": "13/45/2023 99:00:00 PM"}, "usable expires_in"),
        ({"expires_in": None, "expires_on": "02/30/2023 10:00:00 +00:00", "not_before": None}, "usable"),
        ({"expires_in": "5"}, "expired or is about to"),
        ({"expires_in": "-1"}, "expired or is about to"),
        ({"expires_on": "100", "not_before": "200"}, "earlier than its not_before"),
    ],
)
def test_unusable_answers(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(TokenRequestError, match=message):
        parse(200, good(**fields))


def test_token_type_other_than_bearer_is_passed_through_and_garbage_defaults() -> None:
    assert parse(200, good(token_type="pop")).token_type == "pop"
    assert parse(200, good(token_type=["x"])).token_type == "Bearer"


def test_200_with_a_json_array_is_a_refusal() -> None:
    with pytest.raises(TokenRequestError, match="JSON list"):
        parse(200, [1, 2])


@pytest.mark.parametrize(
    ("body", "content_type", "shown"),
    [
        (b"<html>hello</html>", "text/html", "<html>hello"),
        (b"", "", "empty body"),
        (b'{"access_token": "eyJabc.def.ghi", "expires', "application/json", "{"),
    ],
)
def test_non_json_means_unavailable(body: bytes, content_type: str, shown: str) -> None:
    with pytest.raises(CredentialUnavailableError) as caught:
        parse(200, body, content_type)
    assert shown in caught.value.message
    assert "eyJabc" not in caught.value.message
    assert caught.value.status_code == 200


def test_redirect_means_unavailable() -> None:
    with pytest.raises(CredentialUnavailableError, match="redirect"):
        parse(302, b"")


def test_error_fields_are_carried_and_tokens_in_them_redacted() -> None:
    with pytest.raises(TokenRequestError) as caught:
        parse(401, {"error": "access_denied", "error_description": "nope eyJhbGciOi.eyJzdWIi.c2ln"})
    error = caught.value
    assert (error.status_code, error.error_code) == (401, "access_denied")
    assert error.error_description == "nope <redacted>"
    assert "eyJ" not in error.message


@pytest.mark.parametrize(
    ("status", "document", "hint"),
    [
        (429, {"error": "throttled"}, "throttling"),
        (503, {}, "failed"),
        (410, [], "being updated"),
    ],
)
def test_undocumented_errors_get_a_status_hint(status: int, document: Any, hint: str) -> None:
    with pytest.raises(TokenRequestError, match=hint):
        parse(status, document)


def test_describe_body_never_shows_a_token() -> None:
    text = describe_body("text/plain", b"token=eyJhbGciOiJSUzI1NiJ9.eyJ4IjoxfQ.sig and more")
    assert "eyJ" not in text
    assert "<redacted>" in text
    assert redact("a eyJx.y.z b") == "a <redacted> b"


def test_wants_post_only_for_a_get_answered_405() -> None:
    assert wants_post("GET", 405)
    assert not wants_post("POST", 405)
    assert not wants_post("GET", 404)


def test_build_request_shapes() -> None:
    get = build_request("http://127.0.0.1:1/oauth2/token?x=1", "https://r/", Identity("object_id", "o"))
    assert get.url == "http://127.0.0.1:1/oauth2/token?x=1&resource=https%3A%2F%2Fr%2F&object_id=o"
    assert get.headers["Metadata"] == "true"
    post = build_request("http://127.0.0.1:1/oauth2/token", "https://r/", Identity(), method="POST")
    assert post.content == "resource=https%3A%2F%2Fr%2F"
    assert post.headers["Content-Type"] == "application/x-www-form-urlencoded"


def test_identity_arguments() -> None:
    assert Identity.from_arguments().describe() == "system-assigned identity"
    assert Identity.from_arguments(msi_res_id="/x").params() == [("msi_res_id", "/x")]
    for bad in ("", " x", "x\n"):
        with pytest.raises(ValueError, match="client_id"):
            Identity.from_arguments(client_id=bad)
    with pytest.raises(ValueError, match="mutually exclusive; got object_id, msi_res_id"):
        Identity.from_arguments(object_id="o", msi_res_id="m")


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=8,
)
_fields = [
    "access_token",
    "expires_in",
    "expires_on",
    "not_before",
    "token_type",
    "resource",
    "error",
    "error_description",
]


_well_formed_tokens = st.fixed_dictionaries(
    {
        "access_token": st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40),
        "expires_in": st.one_of(st.integers(11, 10**8), st.integers(11, 10**8).map(str)),
    },
    optional={"token_type": st.just("Bearer"), "resource": st.text(max_size=10), "extra": _json_values},
)


def _expected_token(status: int, document: Any) -> bool:
    """An oracle written apart from the parser: must this answer give a token?"""
    if status != 200 or not isinstance(document, dict):
        return False
    token = document.get("access_token")
    if not isinstance(token, str) or not token or not all(0x21 <= ord(c) <= 0x7E for c in token):
        return False
    expires_in = document.get("expires_in")
    if isinstance(expires_in, str) and expires_in.isascii() and expires_in.isdigit():
        expires_in = int(expires_in)
    if isinstance(expires_in, bool) or not isinstance(expires_in, int):
        return False
    return 11 <= expires_in <= 10**8 and "not_before" not in document and "expires_on" not in document


@settings(max_examples=400)
@given(
    status=st.sampled_from([200, 200, 200, 400, 401, 404, 429, 500, 503]),
    document=st.one_of(
        st.fixed_dictionaries({}, optional=dict.fromkeys(_fields, _json_values)),
        _json_values,
        _well_formed_tokens,
    ),
)
def test_any_json_gives_a_token_or_a_typed_error(status: int, document: Any) -> None:
    body = json.dumps(document, allow_nan=True).encode()
    if not _expected_token(status, document) and not (status == 200 and isinstance(document, dict)):
        with pytest.raises((TokenRequestError, CredentialUnavailableError)):
            parse_response(status, "application/json", body, now=NOW, url=URL, resource="r")
        return
    try:
        result = parse_response(status, "application/json", body, now=NOW, url=URL, resource="r")
    except TokenRequestError:
        if _expected_token(status, document):
            raise  # a well-formed answer was refused
        return  # a 200 object the oracle cannot judge (odd expiry forms): refusing it is allowed
    assert status == 200
    assert result.token == document["access_token"]
    assert result.expires_on > NOW + 10
    if _expected_token(status, document):
        assert result.expires_on == int(NOW + int(document["expires_in"]))


@settings(max_examples=300)
@given(st.binary(max_size=300), st.sampled_from([200, 401, 500]))
def test_any_bytes_give_a_token_or_a_typed_error(body: bytes, status: int) -> None:
    """Bytes without a token field are never taken for a token."""
    assume(b"access_token" not in body)
    with pytest.raises((TokenRequestError, CredentialUnavailableError)):
        parse_response(status, "application/octet-stream", body, now=NOW, url=URL, resource="r")


# --- the body collector ----------------------------------------------------------------


def _collector(**overrides: Any) -> BodyCollector:
    options: dict[str, Any] = {"status": 200, "content_type": "application/json"}
    options.update(overrides)
    return BodyCollector("http://localhost:50342/oauth2/token", limit=1000, **options)


@pytest.mark.parametrize(("announced", "received", "short"), [("10", 9, True), ("10", 10, False), (None, 3, False)])
def test_a_body_short_of_its_content_length_is_said_to_be(announced: Any, received: int, short: bool) -> None:
    """urllib3 1.26 hands a short body on without a word; the collector tells, for both urllib3s alike."""
    collector = _collector()
    collector.check_headers(announced)
    collector.feed(b"x" * received)
    if short:
        assert collector.cut_short == f"the answer ended after {received} of the {announced} bytes it announced"
    else:
        assert collector.cut_short is None
        assert collector.answer().body == b"x" * received


def test_an_attempt_is_overdue_by_its_own_clock_only_after_its_deadline() -> None:
    now = [10.0]
    attempt = Attempt(15, watched=False, clock=lambda: now[0])
    assert attempt.deadline == 25.0
    assert attempt.key is None  # nothing hands it a socket: not named for a transport
    now[0] = 25.0
    assert not attempt.overdue()
    now[0] = 25.5
    assert attempt.overdue()
    assert not attempt.fired  # overdue is asked; only the watchdog fires


# --- the servers' side: which parameters a request may carry (_server._legacy) -----------------------

_ARM = "https://management.azure.com/"
_NEAR_MISSES = st.sampled_from(ACCEPTED_PARAMETERS).flatmap(
    lambda name: st.sampled_from(
        [name, name.upper(), name.title(), name + " ", " " + name, name + "[]", name + "2", name.replace("_", "-")]
    )
)


def _decide(params: dict[str, list[str]], path: str = "/oauth2/token") -> Any:
    return decide(Request("GET", path, (("Metadata", "true"),), True, params), Policy(serves_imds=True))


@settings(max_examples=400)
@given(names=st.lists(st.one_of(_NEAR_MISSES, st.text(max_size=12)), max_size=3, unique=True))
def test_a_parameter_outside_the_allow_list_never_reaches_a_token(names: list[str]) -> None:
    """Whatever else a request names, only the accepted names, exactly, may reach a token: a
    misspelled or differently cased identity parameter is refused, never read as absent."""
    params = {"resource": [_ARM], **{name: ["0a1b2c3d-0000-4000-8000-00000000c11d"] for name in names}}
    decision = _decide(params)
    outside = sorted(name for name in params if name not in ACCEPTED_PARAMETERS)
    if outside:
        assert isinstance(decision, Refusal)
        assert (decision.status, decision.error) == (400, "invalid_request")
        assert decision.description.startswith(f"Unknown parameter {clean_text(outside[0], 60)!r}; accepted: ")
    elif isinstance(decision, TokenAsk):
        named = [name for name in names if name in IDENTITY_NAMES]
        assert len(named) <= 1
        assert decision.parameter == (IDENTITY_ALIASES.get(named[0], named[0]) if named else None)


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/oauth2/token", {"resource": [_ARM]}),  # curl, ms-rest-azure 2.x, azure-identity's Cloud Shell path
        ("/oauth2/token", {"resource": [_ARM], "msi_res_id": ["/s/x"]}),  # msrestazure
        ("/oauth2/token", {"resource": [_ARM], "object_id": ["o"]}),  # msrestazure, this package
        ("/oauth2/token", {"api-version": ["2018-02-01"], "resource": [_ARM], "mi_res_id": ["/s/x"]}),  # nodeauth
        ("/oauth2/token", {"api-version": ["2018-02-01"], "resource": [_ARM], "client_id": ["c"]}),  # terraform
        ("/oauth2/token", {"resource": [_ARM], "authority": ["https://login.microsoftonline.com/t"]}),  # 2017
        ("/oauth2/token", {"resource": [_ARM], "api-version": ["1.0"], "grant_type": ["client_credentials"]}),
        ("/metadata/identity/oauth2/token", {"api-version": ["2018-02-01"], "resource": [_ARM], "msi_res_id": ["/x"]}),
    ],
)
def test_what_real_clients_send_is_accepted(path: str, params: dict[str, list[str]]) -> None:
    assert isinstance(_decide(params, path), TokenAsk)
