"""Single flight. No I/O of its own.

:class:`SingleFlight` is the one rule of every token cache here (both credentials and the
bridge's source): decide, wait for the key's flight, decide again, share its failure, keep
its token; a caller holding a still-valid token is served it when a refresh fails. It
decides only; each user waits its own way (a thread lock, an asyncio lock, the bridge's
``_server._flights.Flights`` future).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Callable, Generic, Optional, TypeVar

from ._cache import Action, CacheEntry, TokenCache
from ._token import TokenResult

E = TypeVar("E", bound=Exception)

#: Keys whose last flight's outcome is remembered (a credential has a few; the bridge's
#: source one per identity and resource).
_MAX_OUTCOMES = 4096


@dataclass
class Ticket:
    """One caller's way through a flight: what the cache said, and how many flights had ended."""

    key: str
    force: bool
    action: Action
    entry: Optional[CacheEntry]
    seen: int
    #: Who asks (the bridge's: a local uid, None when unknown); the cache charges its tokens to it.
    user: Hashable = None

    @property
    def fresh(self) -> Optional[CacheEntry]:
        """The token to serve at once, if the cache holds a fresh one."""
        return self.entry if self.action is Action.SERVE else None

    @property
    def refreshing(self) -> Optional[CacheEntry]:
        """The still-valid token a refresh is due for, if any: its holder never waits for another's refresh."""
        return self.entry if self.action is Action.TRY_REFRESH else None


class SingleFlight(Generic[E]):
    """Decisions of single flight over a :class:`TokenCache`, for callers that wait their own way.

    A caller: :meth:`begin` (serve :attr:`Ticket.fresh` at once); wait for the key's flight;
    :meth:`recheck` once it is its turn (a token to serve, or a failure shared by raising it);
    fetch; then :meth:`fetched` or :meth:`failed`.

    Args:
        cache: The tokens, and the refresh rule (:func:`legacy_msi_credential._cache.refresh_time`).
        clock: Unix seconds.
        monotonic: Seconds that never step.
        copy: How a shared failure is handed to each caller (its own instance, say).
    """

    def __init__(
        self,
        cache: TokenCache,
        clock: Callable[[], float],
        monotonic: Callable[[], float],
        copy: Callable[[E], E] = lambda failure: failure,
    ) -> None:
        self.cache = cache
        self._clock = clock
        self._monotonic = monotonic
        self._copy = copy
        #: Per key: how many flights have ended, and the last one's failure (or None); the
        #: most recent last. Threads read it without a lock (the sync twin): a key is never
        #: absent while its count changes.
        self._outcomes: OrderedDict[str, tuple[int, Optional[E]]] = OrderedDict()

    def begin(self, key: str, *, force: bool = False, user: Hashable = None) -> Ticket:
        """What the cache says before waiting (``force``: a new token whatever it holds; ``user``: who asks)."""
        action, entry = self.cache.decide(key, self._clock(), self._monotonic(), force=force, user=user)
        return Ticket(key, force, action, entry, self._outcomes.get(key, (0, None))[0], user)

    def recheck(self, ticket: Ticket) -> Optional[CacheEntry]:
        """Decide again once it is this caller's turn: a token another flight brought, or None to fetch.

        Raises:
            E: The failure of a flight that ended while this caller waited (a copy).
        """
        if not ticket.force:
            ticket.action, ticket.entry = self.cache.decide(
                ticket.key, self._clock(), self._monotonic(), user=ticket.user
            )
            if ticket.action is Action.SERVE:
                return ticket.entry
        count, failure = self._outcomes.get(ticket.key, (0, None))
        if count != ticket.seen and failure is not None:
            raise self._copy(failure)
        return None

    def fetched(self, ticket: Ticket, result: TokenResult) -> CacheEntry:
        """Keep a new token (before the flight ends, so that no later caller finds neither)."""
        entry = self.cache.store(ticket.key, result, self._clock(), self._monotonic(), user=ticket.user)
        self._settle(ticket.key, None)
        return entry

    def failed(self, ticket: Ticket, failure: E) -> Optional[CacheEntry]:
        """Record a failed flight; the still-valid token to serve instead (a failed refresh), or None to raise."""
        self._settle(ticket.key, failure)
        entry = ticket.refreshing
        if entry is not None:
            self.cache.refresh_failed(entry, self._monotonic())
        return entry

    def _settle(self, key: str, failure: Optional[E]) -> None:
        count = self._outcomes.get(key, (0, None))[0]
        self._outcomes[key] = (count + 1, failure)
        self._outcomes.move_to_end(key)
        while len(self._outcomes) > _MAX_OUTCOMES:
            # Forget the oldest: a caller still waiting on such a key fetches for itself
            # rather than share a failure, which costs a request, never a wrong answer.
            self._outcomes.popitem(last=False)
