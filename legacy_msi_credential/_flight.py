"""Single flight. No I/O of its own.

The one rule of every token cache here (both credentials and the bridge's source):
:class:`SingleFlight` decides, waits for the key's flight, decides again, shares its failure,
keeps its token. It also decides who replaces a still-valid token: one caller at a time,
while every other caller holding that token is served it at once (never waits), and is
served it too when the refresh fails. It decides only; each user waits its own way (a thread
lock, an asyncio lock, the bridge's ``_server._flights.Flights`` future).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Callable, Generic, Optional, TypeVar

from ._cache import Action, CacheEntry, TokenCache
from ._constants import MAX_FLIGHT_OUTCOMES
from ._token import TokenResult

E = TypeVar("E", bound=Exception)


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
        """The token to serve at once, without waiting: a fresh one, or a still-valid one that
        another caller is replacing."""
        return self.entry if self.action is Action.SERVE else None

    @property
    def refreshing(self) -> Optional[CacheEntry]:
        """The still-valid token this caller refreshes, if any: served instead when the refresh fails."""
        return self.entry if self.action is Action.TRY_REFRESH else None


class SingleFlight(Generic[E]):
    """Decisions of single flight over a :class:`TokenCache`, for callers that wait their own way.

    A caller: :meth:`begin` (serve :attr:`Ticket.fresh` at once); wait for the key's flight;
    :meth:`recheck` once it is its turn (a token to serve, or a failure shared by raising it);
    fetch; then :meth:`fetched` or :meth:`failed`; and, whatever happened, :meth:`end`.

    Who refreshes is decided here, in :meth:`begin`, for every user: a caller that would
    replace a still-valid token (it is due, or a claims challenge asks for a new one)
    becomes its replacer unless another caller already is; a caller that finds another
    replacing the very token it holds is served that token at once. So a holder of a valid
    token never waits for another caller's request, whatever the user waits with. The
    replacer gives the role back in :meth:`end`; a role left behind by a caller that never
    got there (an interrupt at the wrong line) lapses as soon as a new token is stored.

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
        #: Per key, the caller replacing a still-valid token, and that token. A lock, because
        #: the sync twin's threads claim the role: held for a dictionary look-up, never waited on
        #: for longer.
        self._replacing: dict[str, tuple[Ticket, CacheEntry]] = {}
        self._replacing_lock = threading.Lock()

    def begin(self, key: str, *, force: bool = False, user: Hashable = None) -> Ticket:
        """What to do before waiting (``force``: a new token whatever is cached; ``user``: who asks).

        :attr:`Ticket.fresh` is the token to serve at once: a fresh one, or a still-valid one
        another caller is replacing. Otherwise the caller waits its turn; if it holds a
        still-valid token (:attr:`Ticket.refreshing`), it is the one replacing it.
        """
        action, entry = self.cache.decide(key, self._clock(), self._monotonic(), force=force, user=user)
        ticket = Ticket(key, force, action, entry, self._outcomes.get(key, (0, None))[0], user)
        if entry is not None and action is not Action.SERVE:
            with self._replacing_lock:
                replacer = self._replacing.get(key)
                if replacer is None or replacer[1] is not entry:
                    self._replacing[key] = (ticket, entry)  # this caller replaces it
                elif not force:
                    ticket.action = Action.SERVE  # another caller replaces it: serve it, never wait
        return ticket

    def end(self, ticket: Ticket) -> None:
        """This caller's request is over, however it ended: another caller may replace the token now."""
        with self._replacing_lock:
            replacer = self._replacing.get(ticket.key)
            if replacer is not None and replacer[0] is ticket:
                del self._replacing[ticket.key]

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
        while len(self._outcomes) > MAX_FLIGHT_OUTCOMES:
            # Forget the oldest: a caller still waiting on such a key fetches for itself
            # rather than share a failure, which costs a request, never a wrong answer.
            self._outcomes.popitem(last=False)
