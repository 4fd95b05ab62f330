"""The pure pieces under the identity checks and the bridge's source: claims, single flight, the gate."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest

from legacy_msi_credential._claims import decode_claims, identity_mismatch, is_user_token, lacks_identity
from legacy_msi_credential._flight import Busy, Flights, Gate


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


@pytest.mark.parametrize(
    ("claims", "user"),
    [
        (None, False),
        ({"idtyp": "app", "appid": "a"}, False),
        ({"idtyp": "user"}, True),
        ({"upn": "a@b"}, True),
        ({"scp": "user_impersonation"}, True),
    ],
)
def test_is_user_token(claims: Any, user: bool) -> None:
    assert is_user_token(claims) is user


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
