"""When to try a token request again, and how long to wait. No I/O and no sleeping here."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Callable, Optional

from ._constants import (
    ENDPOINT_WAIT_MAX_DELAY,
    MAX_ATTEMPTS,
    RETRY_AFTER_MAX,
    RETRY_BACKOFF_BASE,
    RETRY_GONE_BACKOFF_BASE,
    RETRY_GONE_TOTAL_WAIT,
    RETRY_MIN_USEFUL_DELAY,
    RETRY_SERVER_ERROR_MIN_DELAY,
    RETRY_TOTAL_WAIT,
    RETRYABLE_STATUSES,
)

_LOGGER = logging.getLogger(__name__)

#: What went wrong with an attempt that got no HTTP answer.
CONNECT_FAILED = "connect"
RESPONSE_FAILED = "response"


@dataclass(frozen=True)
class RetrySettings:
    """Bounds on retrying one token request.

    Attributes:
        max_attempts: Attempts in all, the first included.
        total_wait: Seconds that waits plus time spent in failed attempts may add up to.
        gone_total_wait: The same for 410 answers (IMDS guidance: about 70 s).
        wait_for_endpoint: Seconds to keep trying while the connection is refused (a
            booting extension); 0 gives up on the first refusal.
        backoff_base: The first wait (``retry_backoff_factor``); doubled each attempt,
            then jittered down by up to half.
        backoff_max: No single wait is longer (``retry_backoff_max``), ``Retry-After`` included.
    """

    max_attempts: int = MAX_ATTEMPTS
    total_wait: float = RETRY_TOTAL_WAIT
    gone_total_wait: float = RETRY_GONE_TOTAL_WAIT
    wait_for_endpoint: float = 0.0
    backoff_base: float = RETRY_BACKOFF_BASE
    backoff_max: float = RETRY_GONE_TOTAL_WAIT

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        for name in ("total_wait", "gone_total_wait", "wait_for_endpoint", "backoff_base", "backoff_max"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 86400:
                raise ValueError(f"{name} must be a number of seconds from 0 to 86400")


def parse_retry_after(value: Optional[str], now: float) -> Optional[float]:
    """Seconds from a ``Retry-After`` header (delay-seconds or HTTP-date), or ``None``."""
    if not value:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            moment = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if moment is None or moment.tzinfo is None:
            return None
        seconds = moment.timestamp() - now
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


class RetryController:
    """Decides, attempt after attempt, whether and how long to wait before the next one.

    One instance serves one token request. The caller sends, then reports the outcome to
    :meth:`next_delay`; ``None`` means stop and surface the outcome.
    """

    def __init__(
        self,
        settings: RetrySettings,
        *,
        url: str,
        random_fraction: Callable[[], float] = random.random,
    ) -> None:
        self._settings = settings
        self._url = url
        self._random = random_fraction
        self.attempts = 0
        self.spent = 0.0

    def started(self) -> None:
        """An attempt is about to be sent."""
        self.attempts += 1

    def next_delay(
        self,
        *,
        status: Optional[int] = None,
        retry_after: Optional[str] = None,
        failure: Optional[str] = None,
        elapsed: float = 0.0,
        now: float = 0.0,
    ) -> Optional[float]:
        """Seconds to wait before the next attempt, or ``None`` to stop.

        Args:
            status: The HTTP status, when the endpoint answered.
            retry_after: The answer's ``Retry-After`` header.
            failure: ``connect`` when no connection could be made, ``response`` when the
                connection broke or timed out before an answer.
            elapsed: Seconds the attempt took.
            now: Unix seconds, to read a ``Retry-After`` date.
        """
        self.spent += elapsed
        settings = self._settings
        if failure == CONNECT_FAILED:
            budget = settings.wait_for_endpoint
            delay = min(settings.backoff_base * 2.0 ** (self.attempts - 1), ENDPOINT_WAIT_MAX_DELAY)
            floor = RETRY_MIN_USEFUL_DELAY
            what = "connection refused"
            limit = None
        else:
            if status is not None and status not in RETRYABLE_STATUSES:
                return None
            if self.attempts >= settings.max_attempts:
                return None
            gone = status == 410
            budget = settings.gone_total_wait if gone else settings.total_wait
            base = settings.backoff_base * (RETRY_GONE_BACKOFF_BASE / RETRY_BACKOFF_BASE if gone else 1.0)
            delay = base * 2.0 ** (self.attempts - 1)
            delay *= 0.5 + self._random() / 2
            server_said = parse_retry_after(retry_after, now)
            if server_said is not None:
                delay = min(server_said, RETRY_AFTER_MAX)
            delay = min(delay, settings.backoff_max)
            floor = RETRY_MIN_USEFUL_DELAY
            if status is not None and status >= 500:
                floor = RETRY_SERVER_ERROR_MIN_DELAY
                delay = max(delay, floor)
            what = f"HTTP {status}" if status is not None else "no answer"
            limit = settings.max_attempts
        remaining = budget - self.spent
        if remaining < floor:
            return None  # too little of the budget left to be worth another attempt
        delay = min(delay, remaining)
        self.spent += delay
        of = f" of {limit}" if limit is not None else f" (waiting up to {budget:g} s for the endpoint)"
        _LOGGER.warning(
            "Token request to %s: %s; attempt %d%s failed, retrying in %.2f s",
            self._url,
            what,
            self.attempts,
            of,
            delay,
        )
        return delay
