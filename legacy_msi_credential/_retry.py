"""When to try a token request again, and how long to wait. No I/O and no sleeping here."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Callable, Optional

from ._constants import (
    ENDPOINT_WAIT_MAX_DELAY,
    MAX_ATTEMPTS,
    MAX_SECONDS,
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


def check_seconds(name: str, value: Any, maximum: float = MAX_SECONDS) -> float:
    """``value`` as seconds, or a ``ValueError`` naming ``name``: the one validator of durations."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= maximum:
        raise ValueError(f"{name} must be a number of seconds from 0 to {maximum:g}, not {value!r}")
    return float(value)


#: azure-core retry keywords this credential honours, and those it refuses by name.
HONOURED_RETRY_KEYWORDS = ("retry_total", "retry_backoff_factor", "retry_backoff_max")
REFUSED_RETRY_KEYWORDS = (
    "retry_mode",
    "retry_connect",
    "retry_read",
    "retry_status",
    "retry_on_status_codes",
    "retry_on_methods",
    "timeout",
)


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
            check_seconds(name, getattr(self, name))

    @classmethod
    def from_keywords(cls, kwargs: dict[str, Any], *, wait_for_endpoint: Any = 0) -> RetrySettings:
        """Take azure-core's retry keywords out of a credential's ``kwargs``: honoured, or refused by name.

        Raises:
            ValueError: A refused keyword, or a value out of range, named as the caller wrote it.
        """
        for name in REFUSED_RETRY_KEYWORDS:
            if name in kwargs:
                raise ValueError(
                    f"{name} is not supported by this credential: its retries follow the legacy extension's "
                    f"guidance; it takes {', '.join(HONOURED_RETRY_KEYWORDS)} and wait_for_endpoint"
                )
        retry_total = kwargs.pop("retry_total", None)
        if retry_total is not None and (
            isinstance(retry_total, bool) or not isinstance(retry_total, int) or not 0 <= retry_total <= 100
        ):
            raise ValueError(f"retry_total must be a whole number of retries from 0 to 100, not {retry_total!r}")
        return cls(
            max_attempts=cls.max_attempts if retry_total is None else retry_total + 1,
            wait_for_endpoint=check_seconds("wait_for_endpoint", wait_for_endpoint),
            backoff_base=check_seconds(
                "retry_backoff_factor", kwargs.pop("retry_backoff_factor", cls.backoff_base), 3600
            ),
            backoff_max=check_seconds("retry_backoff_max", kwargs.pop("retry_backoff_max", cls.backoff_max), 3600),
        )


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
