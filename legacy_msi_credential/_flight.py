"""Single flight and a rate gate, for asynchronous callers. No I/O of their own.

* :class:`Flights`: one call per key at a time; callers that arrive while it runs share
  its result or its failure. A caller that gives up (a client that disconnects) does not
  cancel the call the others wait for.
* :class:`Gate`: at most N calls at once and R started per second, as IMDS allows per VM
  (5 at once, 20 a second); a caller waits a little for a place, then is told when to
  come back.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Hashable
from typing import Callable, Generic, TypeVar

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
    """At most ``concurrent`` calls at once and ``rate`` started per second.

    Args:
        concurrent: Calls under way at once.
        rate: Calls started per second (a bucket of ``rate`` that refills continuously).
        wait: Seconds a caller waits for a place before :class:`Busy`.
        clock: Monotonic seconds.
    """

    def __init__(
        self, concurrent: int, rate: float, wait: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if concurrent < 1 or rate <= 0 or wait < 0:
            raise ValueError("a gate needs at least one place, a positive rate and a wait of 0 s or more")
        self._places = asyncio.Semaphore(concurrent)
        self._rate = rate
        self._wait = wait
        self._clock = clock
        self._capacity = max(1.0, float(rate))  # a full second's worth may start at once
        self._tokens = self._capacity
        self._last = clock()

    def _take(self) -> float:
        """Take a start if one is left; else the seconds until the next."""
        now = self._clock()
        self._tokens = min(self._capacity, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / self._rate

    async def run(self, call: Callable[[], Awaitable[T]]) -> T:
        """``call()`` once a place and a start are free; :class:`Busy` if not within the wait."""
        deadline = self._clock() + self._wait
        if not self._places.locked():
            await self._places.acquire()  # a free place is taken at once (wait_for with no time left would not)
        else:
            try:
                await asyncio.wait_for(self._places.acquire(), timeout=max(0.0, deadline - self._clock()))
            except asyncio.TimeoutError:
                raise Busy(max(1, math.ceil(self._wait))) from None
        try:
            while True:
                later = self._take()
                if later == 0:
                    break
                if self._clock() + later > deadline:
                    raise Busy(max(1, math.ceil(later)))
                await asyncio.sleep(later)
            return await call()
        finally:
            self._places.release()
