"""The token cache and its refresh decisions. No I/O and no clock of its own: callers pass ``now``."""

from __future__ import annotations

import enum
import math
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Optional

from ._constants import (
    EXPIRY_MARGIN,
    REFRESH_BEFORE_EXPIRY,
    REFRESH_HALF_LIFE_THRESHOLD,
    REFRESH_MAX_INTERVAL,
    REFRESH_MIN_INTERVAL,
    REFRESH_RETRY_DELAY,
)
from ._token import TokenResult


class Action(enum.Enum):
    """What a caller holding a cache lookup should do."""

    #: The cached token is fresh: return it, no I/O.
    SERVE = "serve"
    #: The cached token is valid but due for refresh: one caller refreshes; the others, and
    #: that caller if the refresh fails, return the cached token (who refreshes:
    #: :class:`legacy_msi_credential._flight.SingleFlight`).
    TRY_REFRESH = "try_refresh"
    #: There is no usable token: wait for one request and raise its failure.
    FETCH = "fetch"


@dataclass
class CacheEntry:
    """A cached token with its refresh schedule. Its ``repr`` never shows the token.

    Every moment is kept on two clocks: the wall clock (Unix seconds, what tokens are dated
    in) and the monotonic clock (the token's age, which a step of the wall clock does not
    change). A token is due, or expired, when either clock says so.
    """

    #: The token (its ``repr`` hides it): the credentials wrap it into azure-core's types
    #: where they hand it to a caller; the bridge hands it on as it is.
    result: TokenResult
    refresh_on: float
    #: The same moments on the monotonic clock (infinite when none was given).
    refresh_mono: float = math.inf
    expires_mono: float = math.inf
    #: Set after a failed proactive refresh: no new attempt before this monotonic time.
    retry_refresh_after: float = -math.inf

    @property
    def expires_on(self) -> int:
        """Expiry in Unix seconds."""
        return self.result.expires_on


def refresh_time(now: float, expires_on: int) -> float:
    """When a token that arrived at ``now`` should be refreshed.

    Half its life for tokens living 2 h or more, else 5 minutes before expiry; never
    sooner than 30 s (or half the life of a very short token) and never later than 12 h
    after it arrived, nor later than 10 s before expiry (when the fast path must stop
    serving it).
    """
    lifetime = expires_on - now
    long_lived = lifetime >= REFRESH_HALF_LIFE_THRESHOLD
    moment = now + lifetime / 2 if long_lived else expires_on - REFRESH_BEFORE_EXPIRY
    moment = max(moment, now + min(REFRESH_MIN_INTERVAL, lifetime / 2))
    # Never later than the moment a token stops being served at all.
    return min(moment, now + REFRESH_MAX_INTERVAL, expires_on - EXPIRY_MARGIN)


def make_entry(result: TokenResult, now: float, mono: Optional[float] = None) -> CacheEntry:
    """Wrap a fresh result for the cache; ``mono`` is the monotonic clock at ``now``."""
    refresh_on = refresh_time(now, result.expires_on)
    return CacheEntry(
        result=result,
        refresh_on=refresh_on,
        refresh_mono=math.inf if mono is None else mono + (refresh_on - now),
        expires_mono=math.inf if mono is None else mono + (result.expires_on - now),
    )


class TokenCache:
    """Tokens by key: per resource for one credential, per identity and resource for the bridge.

    A bounded cache is shared fairly between its users (the bridge's: local uids). Each
    token is charged to the users holding it (those who stored or were served it), split
    equally between them. When the cache is full, the user holding the largest share lets
    go of its least recently used token; a token leaves when no user holds it any more. So
    one user's churn evicts its own tokens first and never another's while that other holds
    no more than its share (``max_entries`` over the users holding tokens); a token used by
    several users stays while any of them still holds it.

    Args:
        max_entries: Most tokens kept. None: no bound and no accounting (a credential's
            resources are the few its clients use).
    """

    def __init__(self, max_entries: Optional[int] = None) -> None:
        self._entries: OrderedDict[str, CacheEntry] = OrderedDict()
        self._max = max_entries
        #: Per key, the users holding its token; per user, the keys it holds, least recently
        #: used first, and its share (the sum of 1/holders over those keys).
        self._holders: dict[str, set[Hashable]] = {}
        self._held: dict[Hashable, OrderedDict[str, None]] = {}
        self._shares: dict[Hashable, float] = {}

    def decide(
        self, key: str, now: float, mono: float = -math.inf, *, force: bool = False, user: Hashable = None
    ) -> tuple[Action, Optional[CacheEntry]]:
        """Look ``key`` up and say what to do.

        Args:
            key: The resource.
            now: Unix seconds.
            mono: The monotonic clock: a token is due or expired when either clock says so.
            force: A new token is required whatever the cache holds (a claims challenge).
            user: Who asks: a token found is held by this user from now on (and charged to it).

        Returns:
            The action and the entry it concerns (``None`` when there is none usable).
        """
        entry = self._entries.get(key)
        if entry is not None and self._max is not None:
            self.hold(key, user)
        if entry is None or now >= entry.expires_on - EXPIRY_MARGIN or mono >= entry.expires_mono - EXPIRY_MARGIN:
            return Action.FETCH, None
        if force:
            return Action.FETCH, entry
        if now < entry.refresh_on and mono < entry.refresh_mono:
            return Action.SERVE, entry
        if mono < entry.retry_refresh_after:
            return Action.SERVE, entry
        return Action.TRY_REFRESH, entry

    def store(
        self, key: str, result: TokenResult, now: float, mono: Optional[float] = None, *, user: Hashable = None
    ) -> CacheEntry:
        """Cache a newly issued token for ``user`` and return its entry (a refreshed token keeps its holders)."""
        entry = make_entry(result, now, mono)
        self._entries[key] = entry
        if self._max is not None:
            self.hold(key, user)
            self._evict()
        return entry

    def hold(self, key: str, user: Hashable = None) -> None:
        """Note that ``user`` uses ``key``'s token now (a client served a token another user's request brought)."""
        if self._max is None or key not in self._entries:
            return
        holders = self._holders.setdefault(key, set())
        held = self._held.setdefault(user, OrderedDict())
        if user in holders:
            held.move_to_end(key)
            return
        count = len(holders)
        for other in holders:  # each one's part of this token shrinks from 1/count to 1/(count + 1)
            self._shares[other] -= 1 / count - 1 / (count + 1)
        holders.add(user)
        held[key] = None
        self._shares[user] = self._shares.get(user, 0.0) + 1 / (count + 1)

    def _release(self, key: str, user: Hashable) -> None:
        """``user`` lets go of ``key``; the token leaves with its last holder."""
        holders = self._holders[key]
        count = len(holders)
        holders.discard(user)
        del self._held[user][key]
        self._shares[user] -= 1 / count
        if not self._held[user]:
            del self._held[user], self._shares[user]
        for other in holders:
            self._shares[other] += 1 / (count - 1) - 1 / count
        if not holders:
            del self._holders[key], self._entries[key]

    def _evict(self) -> None:
        assert self._max is not None
        while len(self._entries) > self._max:
            heaviest = max(self._shares, key=self._shares.__getitem__)
            self._release(next(iter(self._held[heaviest])), heaviest)

    @property
    def users(self) -> int:
        """Users holding tokens (a bounded cache's)."""
        return len(self._held)

    def share(self, user: Hashable = None) -> float:
        """How many tokens are charged to ``user`` (a token held by n users counts 1/n to each)."""
        return self._shares.get(user, 0.0)

    def refresh_failed(self, entry: CacheEntry, mono: float) -> None:
        """Note a failed proactive refresh: keep serving ``entry`` for a while (``mono``: monotonic now)."""
        entry.retry_refresh_after = mono + REFRESH_RETRY_DELAY

    def clear(self) -> None:
        """Forget every token."""
        self._entries.clear()
        self._holders.clear()
        self._held.clear()
        self._shares.clear()

    def __len__(self) -> int:
        return len(self._entries)
