"""Refresh and retry decisions: pure, driven with explicit times."""

from __future__ import annotations

import pytest

from legacy_msi_credential._cache import Action, TokenCache, refresh_time
from legacy_msi_credential._protocol import TokenResult
from legacy_msi_credential._retry import RetryController, RetrySettings, parse_retry_after

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("lifetime", "refresh_after"),
    [
        (24 * 3600, 12 * 3600),  # long-lived: half its life
        (2 * 3600, 3600),  # the threshold: half its life
        (3599, 3299),  # shorter: five minutes before expiry
        (330, 30),  # five minutes before expiry, which is also the 30 s floor
        (200, 30),  # floor: never sooner than 30 s...
        (40, 20),  # ...or half the life of a very short token
        (10 * 365 * 86400, 12 * 3600),  # absurd lifetimes are refreshed every 12 h
    ],
)
def test_refresh_time(lifetime: int, refresh_after: float) -> None:
    assert refresh_time(NOW, int(NOW) + lifetime) - NOW == pytest.approx(refresh_after)


def test_cache_states() -> None:
    cache = TokenCache()
    assert cache.decide("r", NOW) == (Action.FETCH, None)
    entry = cache.store("r", TokenResult("t", int(NOW) + 3599), NOW)
    assert cache.decide("r", NOW) == (Action.SERVE, entry)
    assert cache.decide("r", NOW, force=True) == (Action.FETCH, entry)
    assert cache.decide("r", entry.refresh_on) == (Action.TRY_REFRESH, entry)
    cache.refresh_failed(entry, entry.refresh_on)  # the monotonic clock reads the same here
    assert cache.decide("r", entry.refresh_on + 29, entry.refresh_on + 29) == (Action.SERVE, entry)
    assert cache.decide("r", entry.refresh_on + 30, entry.refresh_on + 30) == (Action.TRY_REFRESH, entry)
    assert cache.decide("r", entry.expires_on - 10) == (Action.FETCH, None)
    assert len(cache) == 1
    cache.clear()
    assert len(cache) == 0
    assert "'t'" not in repr(entry)


def controller(**settings: float) -> RetryController:
    return RetryController(RetrySettings(**settings), url="u", random_fraction=lambda: 1.0)  # type: ignore[arg-type]


def drive(retry: RetryController, **outcome: object) -> list[float]:
    delays = []
    while True:
        retry.started()
        delay = retry.next_delay(**outcome)  # type: ignore[arg-type]
        if delay is None:
            return delays
        delays.append(delay)


@pytest.mark.parametrize("status", [400, 401, 403, 405, 200, 302])
def test_client_errors_are_never_retried(status: int) -> None:
    assert drive(controller(), status=status) == []


def test_exponential_backoff_for_404_and_429() -> None:
    assert drive(controller(), status=404) == [0.5, 1.0, 2.0, 4.0]
    assert drive(controller(), status=429) == [0.5, 1.0, 2.0, 4.0]


def test_jitter_shortens_by_at_most_half() -> None:
    retry = RetryController(RetrySettings(), url="u", random_fraction=lambda: 0.0)
    assert drive(retry, status=429) == [0.25, 0.5, 1.0, 2.0]


def test_server_errors_wait_at_least_a_second() -> None:
    assert drive(controller(), status=503) == [1.0, 1.0, 2.0, 4.0]


def test_retry_after_is_honoured_and_capped() -> None:
    assert drive(controller(), status=429, retry_after="7") == [7.0, 7.0, 6.0]  # 20 s in all
    assert drive(controller(), status=429, retry_after="100000")[0] == 10.0
    assert drive(controller(), status=429, retry_after="bogus") == [0.5, 1.0, 2.0, 4.0]
    assert drive(controller(), status=503, retry_after="0.1")[0] == 1.0


def test_gone_is_retried_for_about_70_seconds() -> None:
    delays = drive(controller(), status=410)
    assert delays == [5.0, 10.0, 20.0, 35.0]
    assert sum(delays) == 70.0


def test_time_spent_in_attempts_counts_against_the_budget() -> None:
    retry = controller()
    retry.started()
    assert retry.next_delay(failure="response", elapsed=19.8) == pytest.approx(0.2)  # clamped to what is left
    retry = controller()
    retry.started()
    assert retry.next_delay(failure="response", elapsed=19.99) is None  # too little left to be worth it


def test_refused_connections_are_not_retried_unless_waiting_for_the_endpoint() -> None:
    assert drive(controller(), failure="connect") == []
    delays = drive(controller(wait_for_endpoint=20), failure="connect")
    assert delays[:4] == [0.5, 1.0, 2.0, 4.0]
    assert max(delays) <= 5.0
    assert sum(delays) == pytest.approx(20.0)


def test_retry_total_zero_means_one_attempt() -> None:
    assert drive(controller(max_attempts=1), status=503) == []


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetrySettings(max_attempts=0)
    with pytest.raises(ValueError, match="wait_for_endpoint"):
        RetrySettings(wait_for_endpoint=-1)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("5", 5.0),
        ("1.5", 1.5),
        ("-3", 0.0),
        ("", None),
        (None, None),
        ("soon", None),
        ("nan", None),
        ("Tue, 14 Nov 2023 22:13:30 GMT", 10.0),
        ("Tue, 14 Nov 2023 22:13:30", None),
    ],
)
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, NOW) == seconds
