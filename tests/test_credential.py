"""Both credentials against the emulator on 127.0.0.1: one scenario table, run for each twin."""

from __future__ import annotations

import logging
import pickle
import time
from dataclasses import replace
from typing import Any

import pytest
from azure.core.credentials import AccessToken, AccessTokenInfo

from legacy_msi_credential import CredentialUnavailableError, TokenRequestError
from legacy_msi_credential.cli import decode_claims
from legacy_msi_credential.emulator import Emulator, Fault, UserAssignedIdentity

from .conftest import Clock, SyncTwin, closed_port

ARM = "https://management.azure.com/.default"


def resources(emulator: Emulator) -> list[str | None]:
    return [request.param("resource") for request in emulator.requests]


# --- scopes and identities ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("scope", "resource"),
    [
        ("https://management.azure.com/.default", "https://management.azure.com"),
        ("https://management.azure.com//.default", "https://management.azure.com/"),
        ("https://storage.azure.com/", "https://storage.azure.com/"),
        ("https://vault.azure.net", "https://vault.azure.net"),
        ("00000002-0000-0000-c000-000000000000", "00000002-0000-0000-c000-000000000000"),
    ],
)
def test_scope_forms_become_the_resource(twin: SyncTwin, emulator: Emulator, scope: str, resource: str) -> None:
    credential = twin.make(endpoint=emulator.endpoint)
    token = twin.get_token(credential, scope)
    assert resources(emulator) == [resource]
    assert decode_claims(token.token)["aud"] == resource
    assert emulator.requests[0].headers["Metadata"] == "true"
    assert emulator.requests[0].method == "GET"


@pytest.mark.parametrize(
    "scopes", [(), (ARM, "https://vault.azure.net/.default"), ("",), ("  ",), ("a\x00b",), ("/.default",)]
)
def test_bad_scopes_raise_value_error_before_any_request(
    twin: SyncTwin, emulator: Emulator, scopes: tuple[str, ...]
) -> None:
    credential = twin.make(endpoint=emulator.endpoint)
    with pytest.raises(ValueError, match="scope"):
        twin.get_token(credential, *scopes)
    assert emulator.request_count == 0


@pytest.mark.parametrize("parameter", ["client_id", "object_id", "msi_res_id"])
def test_user_assigned_identity_is_sent_and_reflected(twin: SyncTwin, emulator: Emulator, parameter: str) -> None:
    value = (
        "/subscriptions/s/resourcegroups/g/providers/Microsoft.ManagedIdentity/userAssignedIdentities/i"
        if parameter == "msi_res_id"
        else "6d1e8a7c-0000-4000-8000-000000000001"
    )
    credential = twin.make(endpoint=emulator.endpoint, **{parameter: value})
    token = twin.get_token(credential, ARM)
    assert emulator.requests[0].params[parameter] == [value]
    claim = {"client_id": "appid", "object_id": "oid", "msi_res_id": "xms_mirid"}[parameter]
    assert decode_claims(token.token)[claim] == value


def test_identities_are_mutually_exclusive(twin: SyncTwin) -> None:
    with pytest.raises(ValueError, match="mutually exclusive"):
        twin.make(client_id="a", object_id="b")


def test_unknown_identity_is_refused_by_the_vm(twin: SyncTwin) -> None:
    with Emulator(port=0, user_assigned=[UserAssignedIdentity(client_id="known")]) as vm:
        credential = twin.make(endpoint=vm.endpoint, client_id="unknown")
        with pytest.raises(TokenRequestError) as caught:
            twin.get_token(credential, ARM)
        assert (caught.value.status_code, caught.value.error_code) == (401, "unauthorized_client")
        assert "identity is not configured" in caught.value.message
        assert vm.request_count == 1  # 4xx is never retried


@pytest.mark.parametrize(
    "resource",
    [
        "https://evil.example/?a=1&client_id=attacker",
        "https://evil.example/#resource=https://other",
        "https://evil.example/x=1;y=2&&msi_res_id=z",
    ],
)
def test_hostile_resources_cannot_inject_parameters(twin: SyncTwin, emulator: Emulator, resource: str) -> None:
    emulator.known_resources = frozenset((resource,))  # answered: what arrives is under test, not the name
    credential = twin.make(endpoint=emulator.endpoint)
    twin.get_token(credential, resource)
    (request,) = emulator.requests
    assert request.params == {"resource": [resource]}


def test_resource_with_spaces_is_encoded_and_refused_by_the_endpoint(twin: SyncTwin, emulator: Emulator) -> None:
    credential = twin.make(endpoint=emulator.endpoint)
    with pytest.raises(TokenRequestError) as caught:
        twin.get_token(credential, "https://a b/&client_id=x")
    assert caught.value.error_code == "invalid_resource"
    assert emulator.requests[0].params == {"resource": ["https://a b/&client_id=x"]}


# --- wire variants -----------------------------------------------------------------------


def test_get_answered_405_switches_to_post_once(twin: SyncTwin) -> None:
    with Emulator(port=0, accept_get=False) as vm:
        credential = twin.make(endpoint=vm.endpoint, client_id="c1")
        twin.get_token(credential, ARM)
        assert [r.method for r in vm.requests] == ["GET", "POST"]
        post = vm.requests[1]
        assert post.headers["Content-Type"] == "application/x-www-form-urlencoded"
        assert post.params == {"resource": ["https://management.azure.com"], "client_id": ["c1"]}


def test_use_post_sends_a_form_post(twin: SyncTwin, emulator: Emulator) -> None:
    credential = twin.make(endpoint=emulator.endpoint, use_post=True)
    twin.get_token(credential, ARM)
    assert [r.method for r in emulator.requests] == ["POST"]


def test_proxy_variables_are_ignored_for_loopback(
    twin: SyncTwin, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead_proxy = f"http://127.0.0.1:{closed_port()}"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
        monkeypatch.setenv(name, dead_proxy)
    credential = twin.make(endpoint=emulator.endpoint, transport=None)
    assert twin.get_token(credential, ARM).token
    assert emulator.request_count == 1


@pytest.mark.parametrize("given_as", ["variables", "the proxies keyword", "both"])
def test_a_proxy_is_never_used_for_loopback_however_it_is_given(
    twin: SyncTwin, emulator: Emulator, monkeypatch: pytest.MonkeyPatch, given_as: str
) -> None:
    """Whether the proxy comes from the environment or from azure-core's ``proxies=`` keyword
    (its ProxyPolicy sets it on every request), plain http to loopback goes straight there."""
    with Emulator(port=0) as proxy:  # would record, and answer, any request sent through it
        options: dict[str, Any] = {}
        if given_as in ("variables", "both"):
            for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY"):
                monkeypatch.setenv(name, proxy.imds_authority)
        if given_as in ("the proxies keyword", "both"):
            options["proxies"] = {"http": proxy.imds_authority, "https": proxy.imds_authority}
        credential = twin.make(endpoint=emulator.endpoint, transport=None, **options)
        assert twin.get_token(credential, ARM).token
        assert proxy.request_count == 0
    assert emulator.request_count == 1


# --- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error", "hint"),
    [
        (400, "invalid_resource", "does not know the resource"),
        (400, "bad_request_102", "Metadata: true"),
        (401, "unknown_source", "/oauth2/token"),
        (401, "invalid_request", "missing, invalid or repeated"),
        (401, "unauthorized_client", "identity is not configured"),
        (401, "access_denied", "denied"),
        (401, "unsupported_response_type", "response type"),
        (401, "invalid_scope", "scope"),
    ],
)
def test_documented_refusals_raise_token_request_error_without_retry(
    twin: SyncTwin, emulator: Emulator, status: int, error: str, hint: str
) -> None:
    emulator.add_faults(Fault.http_error(status, error=error, description=f"described {error}"))
    credential = twin.make(endpoint=emulator.endpoint)
    with pytest.raises(TokenRequestError) as caught:
        twin.get_token(credential, ARM)
    assert caught.value.status_code == status
    assert caught.value.error_code == error
    assert caught.value.error_description == f"described {error}"
    assert hint in caught.value.message
    assert emulator.request_count == 1
    assert twin.recorder.sleeps == []


def test_server_error_unknown_is_retried_then_raised(twin: SyncTwin, emulator: Emulator) -> None:
    emulator.add_faults(*[Fault.http_error(500, error="unknown")] * 5)
    credential = twin.make(endpoint=emulator.endpoint)
    with pytest.raises(TokenRequestError) as caught:
        twin.get_token(credential, ARM)
    assert (caught.value.status_code, caught.value.error_code) == (500, "unknown")
    assert "extension's log" in caught.value.message
    assert emulator.request_count == 5
    assert len(twin.recorder.sleeps) == 4
    assert all(delay >= 1.0 for delay in twin.recorder.sleeps)  # the extension's guidance


def test_native_bad_request_102_when_metadata_header_is_overridden(twin: SyncTwin, emulator: Emulator) -> None:
    credential = twin.make(endpoint=emulator.endpoint, headers={"Metadata": "True"})
    with pytest.raises(TokenRequestError) as caught:
        twin.get_token(credential, ARM)
    assert (caught.value.status_code, caught.value.error_code) == (400, "bad_request_102")


def test_native_unknown_source_for_a_wrong_path(twin: SyncTwin, emulator: Emulator) -> None:
    credential = twin.make(endpoint=emulator.base_url + "oauth2/wrong")
    with pytest.raises(TokenRequestError) as caught:
        twin.get_token(credential, ARM)
    assert (caught.value.status_code, caught.value.error_code) == (401, "unknown_source")


def test_native_invalid_resource_for_an_unstripped_scope(twin: SyncTwin, emulator: Emulator) -> None:
    credential = twin.make(endpoint=emulator.endpoint)
    with pytest.raises(TokenRequestError) as caught:
        twin.get_token(credential, "https://storage.azure.com/.default/.default")
    assert (caught.value.status_code, caught.value.error_code) == (400, "invalid_resource")
    assert "AADSTS50001" in (caught.value.error_description or "")


def test_non_json_answer_means_unavailable_and_names_what_answered(twin: SyncTwin, emulator: Emulator) -> None:
    emulator.add_faults(Fault.not_json())
    credential = twin.make(endpoint=emulator.endpoint)
    with pytest.raises(CredentialUnavailableError) as caught:
        twin.get_token(credential, ARM)
    message = caught.value.message
    assert "HTTP 200" in message
    assert "text/html" in message
    assert "<html>" in message


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"access_token": None}, "without an access_token"),
        ({"access_token": ""}, "without an access_token"),
        ({"access_token": "two words"}, "not printable ASCII"),
        ({"expires_in": "soon", "expires_on": "later"}, "usable expires_in or expires_on"),
        ({"expires_in": None, "expires_on": None}, "usable expires_in or expires_on"),
        ({"expires_in": "-60"}, "expired"),
        ({"expires_in": None, "expires_on": "1000", "not_before": None}, "expired"),
        ({"expires_on": "1000", "not_before": "2000"}, "earlier than its not_before"),
    ],
)
def test_unusable_token_fields_raise_token_request_error(
    twin: SyncTwin, emulator: Emulator, fields: dict[str, object], expected: str
) -> None:
    emulator.add_faults(Fault.token_fields(**fields))
    credential = twin.make(endpoint=emulator.endpoint)
    with pytest.raises(TokenRequestError, match=expected):
        twin.get_token(credential, ARM)


def test_numbers_and_date_forms_are_accepted(twin: SyncTwin, emulator: Emulator, clock: Clock) -> None:
    expiry = int(clock.now) + 3600
    date_form = time.strftime("%m/%d/%Y %I:%M:%S %p +00:00", time.gmtime(expiry))
    emulator.add_faults(
        Fault.token_fields(expires_in=1800, expires_on=expiry, not_before=int(clock.now)),
        Fault.token_fields(expires_in=None, expires_on=date_form),
    )
    credential = twin.make(endpoint=emulator.endpoint, clock=clock)
    assert twin.get_token(credential, ARM).expires_on == int(clock.now + 1800)
    other = twin.make(endpoint=emulator.endpoint, clock=clock)
    assert twin.get_token(other, ARM).expires_on == expiry


def test_skewed_server_clock_does_not_matter(twin: SyncTwin, clock: Clock) -> None:
    server_clock = Clock()
    server_clock.now = clock.now - 3600  # the endpoint's clock is an hour behind
    with Emulator(port=0, clock=server_clock) as vm:
        credential = twin.make(endpoint=vm.endpoint, clock=clock)
        info = twin.get_token_info(credential, ARM)
        assert info.expires_on == pytest.approx(clock.now + 3599, abs=2)
        twin.get_token_info(credential, ARM)
        assert vm.request_count == 1


# --- cache and refresh -----------------------------------------------------------------------


def test_cached_token_is_served_without_a_request(twin: SyncTwin, emulator: Emulator) -> None:
    credential = twin.make(endpoint=emulator.endpoint)
    first = twin.get_token(credential, ARM)
    info = twin.get_token_info(credential, ARM)
    again = twin.get_token(credential, ARM)
    assert first.token == info.token == again.token
    assert emulator.request_count == 1
    assert isinstance(first, AccessToken)
    assert isinstance(info, AccessTokenInfo)
    assert info.refresh_on is not None
    assert info.token_type == "Bearer"


def test_equivalent_scopes_share_one_cached_token(twin: SyncTwin, emulator: Emulator) -> None:
    credential = twin.make(endpoint=emulator.endpoint)
    twin.get_token(credential, "https://vault.azure.net/.default")
    twin.get_token(credential, "https://vault.azure.net")
    assert emulator.request_count == 1


def test_refresh_on_is_five_minutes_before_expiry_for_short_tokens(twin: SyncTwin, clock: Clock) -> None:
    with Emulator(port=0, clock=clock, lifetime=3599) as vm:
        credential = twin.make(endpoint=vm.endpoint, clock=clock)
        info = twin.get_token_info(credential, ARM)
        assert info.refresh_on == info.expires_on - 300


def test_refresh_on_is_half_life_for_long_tokens(twin: SyncTwin, clock: Clock) -> None:
    with Emulator(port=0, clock=clock, lifetime=24 * 3600) as vm:
        credential = twin.make(endpoint=vm.endpoint, clock=clock)
        info = twin.get_token_info(credential, ARM)
        assert info.refresh_on == pytest.approx(clock.now + 12 * 3600, abs=1)


def test_token_is_refreshed_after_refresh_on(twin: SyncTwin, clock: Clock) -> None:
    with Emulator(port=0, clock=clock) as vm:
        credential = twin.make(endpoint=vm.endpoint, clock=clock)
        first = twin.get_token_info(credential, ARM)
        clock.now = first.refresh_on - 1
        assert twin.get_token(credential, ARM).token == first.token
        assert vm.request_count == 1
        clock.now = first.refresh_on + 1
        second = twin.get_token_info(credential, ARM)
        assert vm.request_count == 2
        assert second.token != first.token
        assert second.expires_on > first.expires_on


def test_failed_proactive_refresh_keeps_the_valid_token_and_waits_30_s(
    twin: SyncTwin, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    with Emulator(port=0, clock=clock) as vm:
        credential = twin.make(endpoint=vm.endpoint, clock=clock, retry_total=0)
        first = twin.get_token_info(credential, ARM)
        clock.now = first.refresh_on + 1
        vm.add_faults(Fault.http_error(500, error="unknown"))
        with caplog.at_level(logging.WARNING, logger="legacy_msi_credential"):
            assert twin.get_token(credential, ARM).token == first.token
        assert any("refreshing a token failed" in r.getMessage() for r in caplog.records)
        assert vm.request_count == 2
        clock.advance(29)
        assert twin.get_token(credential, ARM).token == first.token
        assert vm.request_count == 2  # no new attempt within 30 s
        clock.advance(2)
        assert twin.get_token(credential, ARM).token != first.token
        assert vm.request_count == 3


def test_expired_token_is_never_returned(twin: SyncTwin, clock: Clock) -> None:
    with Emulator(port=0, clock=clock) as vm:
        credential = twin.make(endpoint=vm.endpoint, clock=clock, retry_total=0)
        first = twin.get_token_info(credential, ARM)
        clock.now = first.expires_on + 1
        vm.add_faults(Fault.http_error(500, error="unknown"))
        with pytest.raises(TokenRequestError):
            twin.get_token(credential, ARM)
        clock.now = first.expires_on - 5  # within the 10 s margin: as good as expired
        vm.add_faults(Fault.http_error(500, error="unknown"))
        with pytest.raises(TokenRequestError):
            twin.get_token(credential, ARM)


def test_claims_bypass_the_cache_once(twin: SyncTwin, emulator: Emulator) -> None:
    credential = twin.make(endpoint=emulator.endpoint)
    first = twin.get_token(credential, ARM)
    emulator.reset()  # the emulator's own cache would hand back the same token
    fresh = twin.get_token(credential, ARM, claims='{"access_token":{"nbf":{"essential":true}}}')
    assert fresh.token != first.token
    assert twin.get_token(credential, ARM).token == fresh.token
    assert emulator.request_count == 1


def test_claims_in_token_info_options_bypass_the_cache(twin: SyncTwin, emulator: Emulator) -> None:
    credential = twin.make(endpoint=emulator.endpoint)
    twin.get_token_info(credential, ARM)
    twin.get_token_info(credential, ARM, options={"claims": "x", "tenant_id": "t", "enable_cae": True})
    assert emulator.request_count == 2


def test_tenant_id_and_enable_cae_are_accepted_and_ignored(twin: SyncTwin, emulator: Emulator) -> None:
    credential = twin.make(endpoint=emulator.endpoint)
    twin.get_token(credential, ARM, tenant_id="another-tenant", enable_cae=True)
    twin.get_token(credential, ARM, tenant_id="another-tenant", enable_cae=True)
    assert emulator.request_count == 1
    assert set(emulator.requests[0].params) == {"resource"}


# --- retries and availability ------------------------------------------------------------


def test_retry_after_is_honoured(twin: SyncTwin, emulator: Emulator) -> None:
    emulator.add_faults(Fault.http_error(429, retry_after=3), Fault.http_error(503, retry_after="0"))
    credential = twin.make(endpoint=emulator.endpoint)
    assert twin.get_token(credential, ARM).token
    assert emulator.request_count == 3
    assert twin.recorder.sleeps[0] == 3.0
    assert twin.recorder.sleeps[1] >= 1.0  # 5xx: at least 1 s whatever Retry-After says


def test_retry_warnings_count_attempts(twin: SyncTwin, emulator: Emulator, caplog: pytest.LogCaptureFixture) -> None:
    emulator.add_faults(Fault.http_error(404), Fault.drop())
    credential = twin.make(endpoint=emulator.endpoint)
    with caplog.at_level(logging.WARNING):
        twin.get_token(credential, ARM)
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("attempt 1 of 5" in m for m in messages)
    assert any("attempt 2 of 5" in m for m in messages)


def test_refused_connection_is_unavailable_within_a_second(twin: SyncTwin) -> None:
    credential = twin.make(endpoint=f"http://127.0.0.1:{closed_port()}/oauth2/token", transport=None)
    started = time.monotonic()
    with pytest.raises(CredentialUnavailableError, match="nothing is listening"):
        twin.get_token(credential, ARM)
    # The mechanism: no retry and no wait. The time itself is measured in benchmarks/.
    assert time.monotonic() - started < 5.0


def test_wait_for_endpoint_keeps_trying_within_its_budget(twin: SyncTwin) -> None:
    credential = twin.make(endpoint=f"http://127.0.0.1:{closed_port()}/oauth2/token", wait_for_endpoint=8)
    with pytest.raises(CredentialUnavailableError):
        twin.get_token(credential, ARM)
    sleeps = twin.recorder.sleeps
    assert len(sleeps) >= 4
    assert sum(sleeps) <= 8.0
    assert sum(sleeps) >= 7.0


def test_dropped_connections_are_retried(twin: SyncTwin, emulator: Emulator) -> None:
    emulator.add_faults(Fault.drop(), Fault.reset())
    credential = twin.make(endpoint=emulator.endpoint)
    assert twin.get_token(credential, ARM).token
    assert emulator.request_count == 3


# --- discovery ---------------------------------------------------------------------------


def test_settings_file_discovery_end_to_end(twin: SyncTwin, emulator: Emulator, tmp_path, monkeypatch) -> None:
    settings = emulator.write_settings(tmp_path / "ManagedIdentity-Settings")
    monkeypatch.setenv("LEGACY_MSI_SETTINGS_FILE", settings)
    credential = twin.make()
    assert credential.endpoint.source == "settings file"
    assert credential.endpoint.url == f"http://localhost:{emulator.port}/oauth2/token"  # as the extension writes it
    assert twin.get_token(credential, ARM).token


def test_broken_settings_file_makes_the_credential_unavailable(twin: SyncTwin, tmp_path, monkeypatch) -> None:
    broken = tmp_path / "ManagedIdentity-Settings"
    broken.write_text("{not json")
    monkeypatch.setenv("LEGACY_MSI_SETTINGS_FILE", str(broken))
    credential = twin.make()
    assert credential.endpoint is None
    assert "unusable" in repr(credential)
    with pytest.raises(CredentialUnavailableError, match="not UTF-8 JSON"):
        twin.get_token(credential, ARM)


def test_cloud_shell_variable_is_used_without_msi_secret(twin: SyncTwin, emulator: Emulator, monkeypatch) -> None:
    monkeypatch.setenv("MSI_ENDPOINT", emulator.endpoint)
    assert twin.make().endpoint.source == "MSI_ENDPOINT"
    monkeypatch.setenv("MSI_SECRET", "app-service")
    assert twin.make().endpoint.source == "default"


def test_plain_http_to_a_remote_host_is_refused_at_construction(twin: SyncTwin) -> None:
    with pytest.raises(ValueError, match="not a loopback address"):
        twin.make(endpoint="http://10.0.0.4:50342/oauth2/token")
    assert twin.make(endpoint="http://10.0.0.4:50342/oauth2/token", allow_insecure_http=True).endpoint.url


# --- hygiene -----------------------------------------------------------------------------


def test_a_credential_pickles_to_a_working_copy_without_its_state(twin: SyncTwin, emulator: Emulator) -> None:
    credential = twin.make(endpoint=emulator.endpoint, client_id="7c0ffee0-0000-4000-8000-000000000001", retry_total=1)
    first = twin.get_token(credential, ARM)
    copy = pickle.loads(pickle.dumps(credential))
    assert type(copy) is type(credential)
    assert copy.identity == credential.identity
    assert copy.endpoint == credential.endpoint
    # The same configuration, checked the same way; a transport passed in stays behind.
    assert copy._settings == replace(credential._settings, transport=None)
    assert len(copy._flight.cache) == 0  # no token travels
    assert first.token.split(".")[1] not in repr(pickle.dumps(credential))
    assert twin.get_token(copy, ARM).token  # works, on a transport of its own
    assert emulator.request_count == 2
    twin.run(copy.close())


def test_credential_works_again_after_close(twin: SyncTwin, emulator: Emulator) -> None:
    credential = twin.make(endpoint=emulator.endpoint, transport=None)
    twin.get_token(credential, ARM)
    twin.run(credential.close())
    assert twin.get_token(credential, "https://vault.azure.net/.default").token
    assert emulator.request_count == 2


def test_token_json_is_what_the_emulator_sent(twin: SyncTwin, emulator: Emulator) -> None:
    credential = twin.make(endpoint=emulator.endpoint)
    token = twin.get_token(credential, "https://storage.azure.com/.default")
    assert emulator.minted_tokens == [token.token]  # byte for byte what was sent


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"retry_total": "3"}, "retry_total"),
        ({"retry_total": True}, "retry_total"),
        ({"retry_total": -1}, "retry_total must be a whole number of retries from 0"),
        ({"wait_for_endpoint": -1}, "wait_for_endpoint"),
        ({"connection_timeout": "1"}, "connection_timeout"),
        ({"read_timeout": float("nan")}, "read_timeout"),
        ({"response_timeout": 10**9}, "response_timeout"),
        ({"client_id": ""}, "client_id"),
        ({"endpoint": "ftp://x/oauth2/token"}, "absolute http"),
    ],
)
def test_bad_options_are_clear_value_errors(twin: SyncTwin, options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        twin.make(**options)


@pytest.mark.parametrize(
    "fault",
    [
        None,  # nothing listens
        Fault.http_error(400, error="invalid_resource"),
        Fault.not_json(),
        Fault.truncated(),
        Fault.huge(400_000),
        Fault.token_fields(access_token=""),
        Fault.wrong_identity(),
    ],
    ids=["closed", "refused", "not json", "truncated", "huge", "no token", "wrong identity"],
)
def test_every_failure_names_the_credential_once_at_the_start(twin: SyncTwin, emulator: Emulator, fault: Any) -> None:
    """One form for every message a caller sees, whichever layer found the failure."""
    if fault is None:
        endpoint = f"http://127.0.0.1:{closed_port()}/oauth2/token"
    else:
        emulator.add_faults(*[fault] * 5)
        endpoint = emulator.endpoint
    identity = {"client_id": "6d1e8a7c-0000-4000-8000-000000000001"} if fault == Fault.wrong_identity() else {}
    credential = twin.make(endpoint=endpoint, retry_total=0, transport=None, **identity)
    with pytest.raises((CredentialUnavailableError, TokenRequestError)) as caught:
        twin.get_token(credential, ARM)
    message = caught.value.message
    assert message.startswith("LegacyMsiCredential: "), message
    assert message.count("LegacyMsiCredential") == 1, message
    again = pickle.loads(pickle.dumps(caught.value))
    assert again.message == message
