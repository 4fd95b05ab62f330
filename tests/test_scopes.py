"""Scopes to resource: a pure function, tested directly and with arbitrary input."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from legacy_msi_credential._protocol import Identity, build_request
from legacy_msi_credential._scopes import scopes_to_resource


@pytest.mark.parametrize(
    ("scope", "resource"),
    [
        ("https://management.azure.com/.default", "https://management.azure.com"),
        ("https://management.azure.com//.default", "https://management.azure.com/"),
        ("https://storage.azure.com/", "https://storage.azure.com/"),
        ("api://my-app/.default", "api://my-app"),
        ("https://vault.azure.net/.default/", "https://vault.azure.net/.default/"),
    ],
)
def test_resource_for_scope(scope: str, resource: str) -> None:
    assert scopes_to_resource((scope,)) == resource


@pytest.mark.parametrize(
    ("scopes", "message"),
    [
        ((), "exactly one scope; got 0"),
        (("a", "b"), "exactly one scope; got 2"),
        (("",), "empty"),
        (("   ",), "empty"),
        ((" https://x",), "whitespace"),
        (("https://x\n",), "whitespace"),
        (("https://x\x07y",), "control characters"),
        (("https://x\ud800",), "surrogates"),
        (("/.default",), "names no resource"),
        ((b"https://x",), "must be a string"),
        ((None,), "must be a string"),
    ],
)
def test_unusable_scopes_raise_value_error(scopes: tuple[object, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        scopes_to_resource(scopes)  # type: ignore[arg-type]


def _usable(scope: str) -> bool:
    """An oracle written apart from the code: is this scope one the endpoint can be asked for?"""
    controls = any(unicodedata.category(c) in ("Cc", "Cs") for c in scope)
    return bool(scope) and scope == scope.strip() and not controls and scope != "/.default"


@given(
    st.one_of(
        st.text(), st.text().map(lambda t: t + "/.default"), st.from_regex(r"https://[a-z]{1,9}\.net(/\.default)?")
    )
)
def test_any_text_gives_a_resource_or_value_error(scope: str) -> None:
    if not _usable(scope):
        with pytest.raises(ValueError):
            scopes_to_resource((scope,))
        return
    resource = scopes_to_resource((scope,))
    assert resource == (scope[: -len("/.default")] if scope.endswith("/.default") else scope)


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1).filter(lambda s: s == s.strip()))
def test_a_resource_never_injects_a_query_parameter(resource: str) -> None:
    for method in ("GET", "POST"):
        request = build_request(
            "http://127.0.0.1:1/oauth2/token", resource, Identity("client_id", "cid"), method=method
        )
        from urllib.parse import parse_qs, urlsplit

        encoded = urlsplit(request.url).query if method == "GET" else request.content
        parsed = parse_qs(encoded, keep_blank_values=True, strict_parsing=True)
        assert parsed == {"resource": [resource], "client_id": ["cid"]}
        assert "#" not in request.url
