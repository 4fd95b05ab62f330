"""Single flight and a rate gate. No I/O of their own.

* :class:`SingleFlight`: the one rule of every token cache here (both credentials and the
  bridge's source): decide, wait for the key's flight, decide again, share its failure,
  keep its token. It also decides who replaces a still-valid token: one caller at a time,
  while every other caller holding that token is served it at once (never waits), and is
  served it too when the refresh fails. It decides only; each user waits its own way (a
  thread lock, an asyncio lock, a :class:`Flights` future).
* :class:`Flights`: one call per key at a time, for asynchronous callers; callers that
  arrive while it runs share its result or its failure. A caller that gives up (a client
  that disconnects) does not cancel the call the others wait for.
* :class:`Gate`: at most N calls at once and R started per second, as IMDS allows per VM
  (5 at once, 20 a second), served round robin between users; a caller waits a little for
  a place, then is told when to come back.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Hashable
from dataclasses import dataclass
from typing import Callable, Generic, Optional, TypeVar

from ._cache import Action, CacheEntry, TokenCache
from ._constants import MAX_FLIGHT_OUTCOMES
from ._protocol import TokenResult

T = TypeVar("T")
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


class Flights(Generic[T]):
    """One call per key at a time, shared by every caller that asks meanwhile."""

    def __init__(self) -> None:
        self._running: dict[Hashable, asyncio.Future[T]] = {}

    def __len__(self) -> int:
        return len(self._running)

    async def run(self, key: Hashable, call: Callable[[], Awaitable[T]]) -> T:
        """The result of ``call()``, made once however many callers ask for ``key`` while it runs."""
        running = self._running.get(key)
        if running is None:
            running = asyncio.ensure_future(call())
            self._running[key] = running
            running.add_done_callback(lambda done: self._finished(key, done))
        return await asyncio.shield(running)

    def _finished(self, key: Hashable, done: asyncio.Future[T]) -> None:
        if self._running.get(key) is done:
            del self._running[key]
        if not done.cancelled():
            done.exception()  # retrieved: a failure nobody waits for any more is not "never retrieved"

    def cancel_all(self) -> None:
        """Cancel every call under way (on shutdown)."""
        for running in list(self._running.values()):
            running.cancel()


class Busy(Exception):
    """The gate had no place in time; come back after ``retry_after`` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"no place within the wait; retry after {retry_after} s")
        self.retry_after = retry_after


class Gate:
    """At most ``concurrent`` calls at once and ``rate`` started per second, shared fairly between users.

    A call that finds a place and a start free runs at once. Otherwise it waits in its
    user's queue, and the queues are served round robin: each place or start that frees up
    goes to the next user in turn (never twice in a row to one user while another waits),
    so a user's call waits for at most one call of each other user to start first, however
    many that other has queued. Each call waits at most
    ``wait`` seconds, then gets :class:`Busy`: it is the user who queues beyond its share
    whose calls run out of time, not the others.

    Args:
        concurrent: Calls under way at once (all users together).
        rate: Calls started per second (a bucket of ``rate`` that refills continuously).
        wait: Seconds a caller waits for a place before :class:`Busy`.
        clock: Monotonic seconds.
    """

    def __init__(
        self, concurrent: int, rate: float, wait: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if concurrent < 1 or rate <= 0 or wait < 0:
            raise ValueError("a gate needs at least one place, a positive rate and a wait of 0 s or more")
        self._concurrent = concurrent
        self._running = 0
        self._rate = rate
        self._wait = wait
        self._clock = clock
        self._capacity = max(1.0, float(rate))  # a full second's worth may start at once
        self._tokens = self._capacity
        self._last = clock()
        #: Per user, the calls waiting for their turn, oldest first; the user to serve next first.
        self._queues: OrderedDict[Hashable, deque[asyncio.Future[None]]] = OrderedDict()
        #: The user whose call started last: another user waiting goes before its next one.
        self._last_user: Hashable = None
        self._timer: Optional[asyncio.TimerHandle] = None

    @property
    def waiting(self) -> int:
        """Calls waiting for a place or a start."""
        return sum(len(queue) for queue in self._queues.values())

    def _take(self) -> float:
        """Take a start if one is left; else the seconds until the next."""
        now = self._clock()
        self._tokens = min(self._capacity, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / self._rate

    async def run(self, call: Callable[[], Awaitable[T]], user: Hashable = None) -> T:
        """``call()`` once a place and a start are free for ``user``; :class:`Busy` if not within the wait."""
        if not (self._running < self._concurrent and not self._queues and self._take() == 0):
            await self._turn(user)
        else:
            self._running += 1
            self._last_user = user
        try:
            return await call()
        finally:
            self._running -= 1
            self._dispatch()

    async def _turn(self, user: Hashable) -> None:
        """Wait in ``user``'s queue until :meth:`_dispatch` gives this call a place and a start."""
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queues.setdefault(user, deque()).append(turn)
        self._dispatch()
        try:
            if not turn.done():
                await asyncio.wait({turn}, timeout=self._wait)
        except BaseException:  # cancelled while waiting: leave the queue, or give back a place just given
            self._withdraw(user, turn)
            raise
        if not turn.done():
            self._withdraw(user, turn)
            raise Busy(max(1, math.ceil(self._wait)))

    def _withdraw(self, user: Hashable, turn: asyncio.Future[None]) -> None:
        if turn.done():
            self._running -= 1
            self._dispatch()
            return
        turn.cancel()
        queue = self._queues.get(user)
        if queue is not None:
            queue.remove(turn)
            if not queue:
                del self._queues[user]

    def _dispatch(self) -> None:
        """Hand free places to the waiting calls, one user's call at a time in turn."""
        while self._running < self._concurrent and self._queues:
            later = self._take()
            if later > 0:
                if self._timer is None:
                    self._timer = asyncio.get_running_loop().call_later(later, self._wake)
                return
            user = next(iter(self._queues))
            if user == self._last_user and len(self._queues) > 1:
                self._queues.move_to_end(user)  # it has just had a turn: the next user's comes first
                user = next(iter(self._queues))
            queue = self._queues[user]
            turn = queue.popleft()
            if queue:
                self._queues.move_to_end(user)  # its next call waits behind the other users' first
            else:
                del self._queues[user]
            self._running += 1
            self._last_user = user
            turn.set_result(None)

    def _wake(self) -> None:
        self._timer = None
        self._dispatch()
