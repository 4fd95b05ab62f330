"""The pure pieces under the identity checks and the bridge's source: claims, single flight, the gate."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest

from legacy_msi_credential._cache import TokenCache
from legacy_msi_credential._claims import decode_claims, identity_mismatch, lacks_identity, not_app_only
from legacy_msi_credential._flight import SingleFlight
from legacy_msi_credential._server._flights import Busy, Flights, Gate
from legacy_msi_credential._token import TokenResult


def jwt(claims: Any) -> str:
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return f"e30.{body}.sig"


@pytest.mark.parametrize(
    "token",
    ["", "opaque", "a.b", "a..c", "a.!!!.c", "a." + "x" * 70_000 + ".c", jwt([1, 2]), "a.bm90IGpzb24.c", None],
)
def test_what_is_not_a_jwt_has_no_claims(token: Any) -> None:
    assert decode_claims(token) is None


def test_a_jwts_claims_are_read_without_verification() -> None:
    assert decode_claims(jwt({"oid": "o"})) == {"oid": "o"}


@pytest.mark.parametrize(
    ("parameter", "asked", "claims", "wrong"),
    [
        ("client_id", "ABC", {"appid": "abc"}, False),  # GUIDs compare without case
        ("client_id", "abc", {"azp": "abc"}, False),  # v2 tokens name the client in azp
        ("client_id", "abc", {"azp": "xyz"}, True),
        ("object_id", "o1", {"oid": "o2"}, True),
        ("msi_res_id", "/Subscriptions/S/ID", {"xms_mirid": "/subscriptions/s/id/"}, False),
        ("mi_res_id", "/subscriptions/s/id", {"xms_mirid": "/subscriptions/s/other"}, True),
        ("object_id", "o1", {"appid": "a"}, False),  # an absent claim says nothing
        ("object_id", "o1", {"oid": 7}, True),  # a claim that is not a string is not the identity
        (None, None, {"oid": "anything"}, False),  # system-assigned: not checked
    ],
)
def test_identity_mismatch(parameter: Any, asked: Any, claims: dict[str, Any], wrong: bool) -> None:
    assert (identity_mismatch(parameter, asked, claims) is not None) is wrong


def test_lacks_identity_asks_for_proof() -> None:
    assert "not a JWT" in str(lacks_identity("client_id", "c", None))
    assert "no oid claim" in str(lacks_identity("object_id", "o", {"appid": "a"}))
    assert lacks_identity("object_id", "o", {"oid": "o"}) is None


#: A managed identity's v1 token, as IMDS issues it (the claims that matter here).
MANAGED = {"appid": "c1", "appidacr": "2", "idtyp": "app", "oid": "o1", "sub": "o1", "xms_mirid": "/s/x"}
#: The signed-in user's token from ``az`` (the Azure CLI's public client id), v1.
AZ_USER = {
    "appid": "04b07795-8ddb-461a-bbee-02f9e1bf7b46",
    "appidacr": "0",
    "idtyp": "user",
    "oid": "u1",
    "sub": "pairwise-subject",
    "scp": "user_impersonation",
    "upn": "dev@example.com",
    "unique_name": "dev@example.com",
    "name": "A Developer",
    "amr": ["pwd"],
}


@pytest.mark.parametrize(
    "claims",
    [
        MANAGED,
        {"azp": "c1", "azpacr": "1", "oid": "o1", "sub": "o1", "ver": "2.0", "roles": ["r"]},  # an application's, v2
        {"appid": "c1", "oid": "O1", "sub": "o1"},  # no idtyp (an optional claim); GUIDs compare without case
        {"sub": "system"},  # no oid to compare with
    ],
)
def test_an_app_only_token_is_one(claims: dict[str, Any]) -> None:
    assert not_app_only(claims) is None


@pytest.mark.parametrize(
    ("claims", "shown"),
    [
        (None, "not a JWT"),
        (AZ_USER, "signed-in user's token (it carries scp, upn, unique_name, name, amr)"),
        *(  # each on its own, named here rather than read from the code under test
            ({**MANAGED, name: "x"}, f"it carries {name})")
            for name in (
                "scp",
                "upn",
                "unique_name",
                "name",
                "given_name",
                "family_name",
                "preferred_username",
                "email",
                "amr",
                "puid",
            )
        ),
        ({**MANAGED, "idtyp": "user"}, "idtyp claim is 'user'"),
        ({**MANAGED, "idtyp": "device"}, "idtyp claim is 'device'"),
        ({**MANAGED, "idtyp": None, "appidacr": "0"}, "public client"),
        ({"azp": "c1", "azpacr": 0, "oid": "o1", "sub": "o1"}, "public client"),
        ({**MANAGED, "idtyp": None, "sub": "pairwise-subject"}, "its sub is not its oid"),
    ],
)
def test_what_is_not_app_only_is_named_without_a_users_values(claims: Any, shown: str) -> None:
    if isinstance(claims, dict):
        claims = {name: value for name, value in claims.items() if value is not None}
    why = not_app_only(claims)
    assert why is not None
    assert shown in why
    assert "dev@example.com" not in why
    assert "A Developer" not in why


def test_a_flights_failure_is_shared_and_cancel_all_ends_what_runs() -> None:
    async def scenario() -> None:
        flights: Flights[str] = Flights()
        calls = 0
        release = asyncio.Event()

        async def failing() -> str:
            nonlocal calls
            calls += 1
            await release.wait()
            raise ValueError("source refused")

        waiters = [asyncio.ensure_future(flights.run("k", failing)) for _ in range(5)]
        await asyncio.sleep(0)
        release.set()
        outcomes = await asyncio.gather(*waiters, return_exceptions=True)
        assert calls == 1
        assert all(isinstance(outcome, ValueError) for outcome in outcomes)
        assert len(flights) == 0

        async def hanging() -> str:
            await asyncio.Event().wait()
            return "never"

        waiter = asyncio.ensure_future(flights.run("h", hanging))
        await asyncio.sleep(0)
        flights.cancel_all()
        with pytest.raises(asyncio.CancelledError):
            await waiter

    asyncio.run(scenario())


class Clocks:
    """A wall clock and a monotonic clock that the test moves by hand."""

    def __init__(self) -> None:
        self.wall = 1_700_000_000.0
        self.mono = 100.0

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


def single_flight(clocks: Clocks) -> SingleFlight[ValueError]:
    return SingleFlight(TokenCache(), lambda: clocks.wall, lambda: clocks.mono, copy=lambda e: ValueError(*e.args))


def test_single_flight_serves_fresh_then_lets_one_refresh_and_keeps_its_token() -> None:
    clocks = Clocks()
    flight = single_flight(clocks)
    first = flight.begin("r")
    assert first.fresh is None
    assert first.refreshing is None
    assert flight.recheck(first) is None  # nothing cached, nothing shared: fetch
    kept = flight.fetched(first, TokenResult("t1", int(clocks.wall) + 3600))
    assert flight.begin("r").fresh is kept
    clocks.advance(3600 - 299)  # within 5 minutes of expiry: due, still valid
    due = flight.begin("r")
    assert due.fresh is None
    assert due.refreshing is kept
    assert flight.recheck(due) is None  # still due: this caller refreshes
    renewed = flight.fetched(due, TokenResult("t2", int(clocks.wall) + 3600))
    waited = flight.begin("r")
    assert waited.fresh is renewed
    forced = flight.begin("r", force=True)  # a claims challenge: a new token whatever is cached
    assert forced.fresh is None
    assert flight.recheck(forced) is None


def test_single_flight_shares_a_failure_with_those_who_waited_and_not_with_later_callers() -> None:
    clocks = Clocks()
    flight = single_flight(clocks)
    leader, waiter = flight.begin("r"), flight.begin("r")
    assert flight.recheck(leader) is None
    failure = ValueError("refused")
    assert flight.failed(leader, failure) is None  # no valid token: the leader raises it
    with pytest.raises(ValueError, match="refused") as shared:
        flight.recheck(waiter)
    assert shared.value is not failure  # each caller gets its own copy
    later = flight.begin("r")
    assert flight.recheck(later) is None  # arrived after the failure: tries again


def test_a_failed_refresh_serves_the_valid_token_and_waits_before_trying_again() -> None:
    clocks = Clocks()
    flight = single_flight(clocks)
    kept = flight.fetched(flight.begin("r"), TokenResult("t", int(clocks.wall) + 3600))
    clocks.advance(3600 - 200)
    due = flight.begin("r")
    assert flight.recheck(due) is None
    assert flight.failed(due, ValueError("down")) is kept
    assert flight.begin("r").fresh is kept  # no new attempt at once
    clocks.advance(200 - 9)  # 9 s left: no longer served
    assert flight.begin("r").fresh is None


def test_single_flight_lets_one_caller_replace_a_valid_token_and_serves_it_to_the_others() -> None:
    clocks = Clocks()
    flight = single_flight(clocks)
    kept = flight.fetched(flight.begin("r"), TokenResult("t", int(clocks.wall) + 3600))
    clocks.advance(3600 - 200)  # due, valid for 200 s more
    replacer = flight.begin("r")
    assert replacer.refreshing is kept  # this caller refreshes it
    other = flight.begin("r")
    assert other.fresh is kept  # served at once: it never waits for the refresh
    challenged = flight.begin("r", force=True)  # a claims challenge still asks for a new token
    assert challenged.fresh is None
    flight.end(challenged)  # not the replacer: changes nothing
    assert flight.begin("r").fresh is kept
    flight.end(replacer)  # the refresh ended without a token (an interrupt, say)
    assert flight.begin("r").refreshing is kept  # the next caller refreshes


def test_a_replacer_role_left_behind_lapses_when_a_new_token_arrives() -> None:
    clocks = Clocks()
    flight = single_flight(clocks)
    flight.fetched(flight.begin("r"), TokenResult("t1", int(clocks.wall) + 3600))
    clocks.advance(3600 - 200)
    flight.begin("r")  # takes the role and never ends
    renewed = flight.fetched(flight.begin("r", force=True), TokenResult("t2", int(clocks.wall) + 3600))
    clocks.advance(3600 - 200)
    assert flight.begin("r").refreshing is renewed  # the role was for the old token


def test_single_flight_remembers_a_bounded_number_of_outcomes() -> None:
    clocks = Clocks()
    flight = single_flight(clocks)
    for index in range(10_000):
        ticket = flight.begin(f"k{index}")
        flight.failed(ticket, ValueError(index))
    assert len(flight._outcomes) <= 4096
    assert "k9999" in flight._outcomes


async def test_the_bridges_refresh_stays_one_when_the_client_that_started_it_gives_up() -> None:
    """The refresh belongs to the flight, which outlives a client that disconnects: another
    client holding the valid token is still served it at once, and no second refresh starts."""
    from azure.core.credentials import AccessToken

    from legacy_msi_credential._server._legacy import TokenAsk
    from legacy_msi_credential.bridge import TokenSource

    now = [1_700_000_000.0]
    release = asyncio.Event()
    refresh_asked = asyncio.Event()
    calls: list[int] = []

    class Credential:
        async def get_token(self, scope: str) -> AccessToken:
            calls.append(len(calls))
            if len(calls) > 1:
                refresh_asked.set()
                await release.wait()
            return AccessToken(jwt({**MANAGED, "uti": f"token-{len(calls)}"}), int(now[0]) + 3600)

        async def close(self) -> None:
            pass

    source = TokenSource("imds", clock=lambda: now[0], credential_factory=lambda *_: Credential())
    ask = TokenAsk("https://management.azure.com")
    first = (await source.token(ask)).token
    now[0] += 3600 - 200
    gave_up = asyncio.ensure_future(source.token(ask))
    await asyncio.wait_for(refresh_asked.wait(), 5)
    gave_up.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gave_up
    assert (await asyncio.wait_for(source.token(ask), 1)).token == first  # the refresh still runs
    assert len(calls) == 2
    assert source.requests == 2
    release.set()


def test_the_gate_caps_starts_per_second_and_says_when_to_come_back() -> None:
    async def scenario() -> None:
        now = [0.0]
        gate = Gate(concurrent=10, rate=2, wait=0.0, clock=lambda: now[0])

        async def call() -> str:
            return "ok"

        assert [await gate.run(call) for _ in range(2)] == ["ok", "ok"]  # a second's worth at once
        with pytest.raises(Busy) as busy:
            await gate.run(call)
        assert busy.value.retry_after == 1
        now[0] += 0.5  # one start back
        assert await gate.run(call) == "ok"

    asyncio.run(scenario())


def test_a_gate_needs_sensible_bounds() -> None:
    with pytest.raises(ValueError, match="at least one place"):
        Gate(0, 1, 1)


def test_a_notification_that_cannot_be_sent_is_a_warning_not_a_failure(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from legacy_msi_credential.bridge import Notifier

    notifier = Notifier(str(tmp_path / "nobody-listens"))
    with caplog.at_level("WARNING", logger="legacy_msi_credential.bridge"):
        assert notifier.ready() is False
    assert "could not notify systemd" in caplog.text


async def test_the_bridges_source_serves_a_valid_token_while_its_refresh_runs_and_one_refresh_only() -> None:
    """The source follows the credentials' rule: one refresh at a time, and a client holding a
    still-valid token never waits for it; a failed refresh keeps serving the valid token."""
    from azure.core.credentials import AccessToken

    from legacy_msi_credential._server._legacy import TokenAsk
    from legacy_msi_credential.bridge import TokenSource

    def token(number: int) -> str:  # a managed identity's token, told apart by its number
        return jwt({**MANAGED, "uti": f"token-{number}"})

    now = [1_700_000_000.0]
    release = asyncio.Event()
    refresh_asked = asyncio.Event()
    calls: list[int] = []
    fail = [False]

    class Credential:
        async def get_token(self, scope: str) -> AccessToken:
            calls.append(len(calls))
            if len(calls) > 1:
                refresh_asked.set()
                await release.wait()
            if fail[0]:
                raise RuntimeError("the source is down")
            return AccessToken(token(len(calls)), int(now[0]) + 3600)

        async def close(self) -> None:
            pass

    source = TokenSource("imds", clock=lambda: now[0], credential_factory=lambda *_: Credential())
    ask = TokenAsk("https://management.azure.com")
    assert (await source.token(ask)).token == token(1)
    now[0] += 3600 - 200  # due for refresh, valid for 200 s more
    refreshing = asyncio.ensure_future(source.token(ask))
    await asyncio.wait_for(refresh_asked.wait(), 5)
    assert len(calls) == 2  # the refresh is under way, waiting on the source
    assert (await asyncio.wait_for(source.token(ask), 1)).token == token(1)  # served at once, no second call
    assert len(calls) == 2
    release.set()
    assert (await refreshing).token == token(2)
    now[0] += 3600 - 200
    fail[0] = True
    assert (await source.token(ask)).token == token(2)  # the refresh failed: the valid token is served
    assert len(calls) == 3
    assert (await source.token(ask)).token == token(2)  # and no new attempt at once
    assert len(calls) == 3
