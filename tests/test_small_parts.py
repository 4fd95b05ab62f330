"""Small parts with many branches: address checks, URL forms, stand-ins, lazy names."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

import legacy_msi_credential
import legacy_msi_credential.aio
from legacy_msi_credential import CredentialUnavailableError
from legacy_msi_credential._chain import AsyncUnusableLegacyStep, UnusableLegacyStep
from legacy_msi_credential._endpoint import SOURCES, endpoint_context, validate_url
from legacy_msi_credential._loopback import describe_peer, is_loopback_address, peer_is_loopback
from legacy_msi_credential.cli._common import decode_claims, iso, when


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.200.0.9", True),
        ("::1", True),
        ("::1%lo", True),
        ("::ffff:127.0.0.1", True),
        ("::ffff:10.0.0.1", False),
        ("10.99.0.1", False),
        ("169.254.169.254", False),
        ("not an address", False),
    ],
)
def test_is_loopback_address(address: str, loopback: bool) -> None:
    assert is_loopback_address(address) is loopback


def test_peer_forms() -> None:
    assert peer_is_loopback(("127.0.0.1", 80))
    assert peer_is_loopback("/run/socket")  # AF_UNIX: this machine
    assert not peer_is_loopback(None)
    assert not peer_is_loopback(())
    assert describe_peer(("::1", 80, 0, 0)) == "[::1]:80"
    assert describe_peer(("10.0.0.1", 8080)) == "10.0.0.1:8080"
    assert describe_peer(None) == "an unknown address"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "is empty"),
        ("http://127.0.0.1/\x01", "whitespace or control"),
        ("http://127.0.0.1/é", "plain ASCII"),
        ("http://user@127.0.0.1/x", "user information"),
        ("http://127.0.0.1:99999/x", "not a valid URL"),
        ("ftp://127.0.0.1/x", "not an absolute http"),
        ("http://127.0.0.1/x#frag", "fragment"),
        ("http://127.0.0.1:0/x", "port 0"),
        ("http://[::1/x", "not a valid URL"),
    ],
)
def test_unusable_urls(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_url(url, what="t")


def test_every_source_describes_itself(tmp_path: Path) -> None:
    settings = tmp_path / "s"
    settings.write_text('{"url": "https://example.com/"}')
    context = endpoint_context(
        "http://127.0.0.1:1/oauth2/token",
        environ={"LEGACY_MSI_SETTINGS_FILE": str(settings), "MSI_ENDPOINT": "http://127.0.0.1:2/", "MSI_SECRET": "x"},
    )
    lines = [source.describe(context) for source in SOURCES]
    assert lines[0] == "--endpoint: http://127.0.0.1:1/oauth2/token"
    assert "ignored: MSI_SECRET is set" in lines[2]
    assert "(the extension's port: 443)" in lines[3]
    assert lines[4] == "default: http://localhost:50342/oauth2/token"


def test_unusable_legacy_steps_are_unavailable_everywhere() -> None:
    step = UnusableLegacyStep("bad URL")
    with step as same:
        assert same is step
    for call in (step.get_token, step.get_token_info):
        with pytest.raises(CredentialUnavailableError, match="could not be configured: bad URL"):
            call("s")
    step.close()

    async def run() -> None:
        async with AsyncUnusableLegacyStep("bad") as step:
            for call in (step.get_token, step.get_token_info):
                with pytest.raises(CredentialUnavailableError):
                    await call("s")
            await step.close()

    asyncio.run(run())


def test_lazy_names() -> None:
    assert "LegacyMsiCredential" in dir(legacy_msi_credential)
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        legacy_msi_credential.Nope  # noqa: B018 - the lookup is the test
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        legacy_msi_credential.aio.Nope  # noqa: B018


def test_cli_helpers_survive_any_value() -> None:
    assert decode_claims("no-dots") == {}
    assert decode_claims("a.!!!.c") == {}
    assert decode_claims("a.WzFd.c") == {}  # a JSON list, not claims
    assert iso(10**20) == str(10**20)
    assert "Unix seconds" in when(10**20, 0)
    assert "ago" in when(0, 100)


def test_warnings_that_may_quote_an_answer_are_withheld_only_during_a_token_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """azure-core 1.31 (not 1.41) logs "Unable to stream download: <error quoting the body>"."""
    from legacy_msi_credential._redact import token_request

    logger = logging.getLogger("azure.core.pipeline.transport._requests_basic")
    with caplog.at_level(logging.WARNING, logger=logger.name):
        logger.warning("Unable to stream download: %s", "secret-body-bytes")  # not ours: untouched
        with token_request():
            logger.warning("Unable to stream download: %s", "secret-body-bytes")
    first, second = (record.getMessage() for record in caplog.records)
    assert first == "Unable to stream download: secret-body-bytes"
    assert "secret" not in second
    assert second == "azure WARNING during a token request (details withheld: they may quote the server's bytes)"
