"""One call per key, and a fair rate gate, for a server's asynchronous callers. No I/O of their own.

* :class:`Flights`: one call per key at a time; callers that arrive while it runs share its
  result or its failure. A caller that gives up (a client that disconnects) does not cancel
  the call the others wait for.
* :class:`Gate`: at most N calls at once and R started per second, as IMDS allows per VM
  (5 at once, 20 a second), served round robin between users; a caller waits a little for
  a place, then is told when to come back.

Only servers use them (the bridge's token source); the credentials wait their own way
(:class:`legacy_msi_credential._flight.SingleFlight` decides for both).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Hashable
from typing import Callable, Generic, Optional, TypeVar

T = TypeVar("T")


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
    many that other has queued. The last free place goes only to a user holding none: a
    user whose calls are slow holds at most all places but one, so another user's call
    starts at once rather than behind the slow ones (one user alone runs one call fewer at
    once, which the rate bounds more than the places do). Each call waits at most
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
        #: Per user, the places its calls hold (users holding none are not kept).
        self._held: dict[Hashable, int] = {}
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

    def _may_hold_another(self, user: Hashable) -> bool:
        """Whether a place is free for ``user``: the last one only for a user holding none."""
        free = self._concurrent - self._running
        return free > 1 or (free == 1 and user not in self._held)

    def _hold(self, user: Hashable) -> None:
        self._running += 1
        self._held[user] = self._held.get(user, 0) + 1
        self._last_user = user

    def _release(self, user: Hashable) -> None:
        self._running -= 1
        left = self._held[user] - 1
        if left:
            self._held[user] = left
        else:
            del self._held[user]

    async def run(self, call: Callable[[], Awaitable[T]], user: Hashable = None) -> T:
        """``call()`` once a place and a start are free for ``user``; :class:`Busy` if not within the wait."""
        if not (self._may_hold_another(user) and not self._queues and self._take() == 0):
            await self._turn(user)
        else:
            self._hold(user)
        try:
            return await call()
        finally:
            self._release(user)
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
            self._release(user)
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
            first = next(iter(self._queues))
            if first == self._last_user and len(self._queues) > 1:
                self._queues.move_to_end(first)  # it has just had a turn: the next user's comes first
            user = next((user for user in self._queues if self._may_hold_another(user)), None)
            if user is None:
                return  # the last place is kept for a user holding none
            later = self._take()
            if later > 0:
                if self._timer is None:
                    self._timer = asyncio.get_running_loop().call_later(later, self._wake)
                return
            queue = self._queues[user]
            turn = queue.popleft()
            if queue:
                self._queues.move_to_end(user)  # its next call waits behind the other users' first
            else:
                del self._queues[user]
            self._hold(user)
            turn.set_result(None)

    def _wake(self) -> None:
        self._timer = None
        self._dispatch()
