"""One attempt of a token request: its deadline, and the watchdog that holds it. Standard library only.

An attempt runs from the moment a request is sent to the last byte of its answer, and has
one deadline (``response_timeout``): a server that trickles its status line, its headers or
its body, or sends ``100 Continue`` forever, holds no caller longer. Both retry policies
(``_pipeline``, ``aio/_pipeline``, through ``_policies.AttemptRun``) make an
:class:`Attempt` per try and ask :meth:`Attempt.overdue` between the chunks of a body; what
ends a read blocked inside a transport depends on the transport:

* requests (the sync twin, and the async twin's worker threads): the guarded connections
  (``_guard``) hand their sockets to the attempt's watchdog (:meth:`Attempt.watch`), which
  shuts them down when the deadline passes. The attempt reaches the connection through a
  private header naming it (:data:`HEADER`, :func:`named`): the async requests transport
  sends from a worker thread, where neither a context variable nor the policy's thread reaches.
* aiohttp: the async retry policy awaits the attempt with ``asyncio.wait_for``; nothing to
  watch.

Nothing here imports a transport, so the aiohttp path never loads requests or urllib3.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import threading
import time
from typing import Callable, Optional

#: The private header naming an attempt; the guarded adapter removes it before sending.
HEADER = "x-legacy-msi-credential-attempt"

#: The watched attempts running, by key (what :data:`HEADER` carries).
_RUNNING: dict[str, Attempt] = {}
_KEYS = itertools.count(1)


class Attempt:
    """One attempt's deadline and, when ``watched``, the sockets it uses.

    Args:
        seconds: Time allowed from now to the last byte of the answer.
        watched: Whether a transport will hand its sockets to this attempt (the requests
            transports): the attempt then gets a :attr:`key` for :data:`HEADER`.
        clock: Monotonic seconds.
    """

    def __init__(self, seconds: float, *, watched: bool, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        #: When the whole answer must have arrived (monotonic seconds).
        self.deadline = clock() + seconds
        #: Whether the watchdog shut the attempt's sockets down at its deadline.
        self.fired = False
        self._finished = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        # Started with the first socket: a refused connection (the common case in a chain
        # on a machine without the extension) costs no thread.
        self._timer: Optional[threading.Timer] = None
        self.key: Optional[str] = None
        if watched:
            self.key = f"{next(_KEYS)}"  # next() and a dict item assignment are atomic: no lock
            _RUNNING[self.key] = self

    def overdue(self) -> bool:
        """Whether the deadline has passed (asked between the chunks of an answer)."""
        return self._clock() > self.deadline

    def watch(self, sock: Optional[socket.socket]) -> None:
        """Shut ``sock`` down at the deadline (at once, if it has passed)."""
        if sock is None:
            return
        with self._lock:
            if self._finished:
                return
            if not self.fired:
                self._sockets.append(sock)
                if self._timer is None:
                    self._timer = threading.Timer(max(0.0, self.deadline - self._clock()), self._fire)
                    self._timer.daemon = True
                    self._timer.start()
                return
        shutdown(sock)

    def _fire(self) -> None:
        with self._lock:
            if self._finished:
                return
            self.fired = True
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            shutdown(sock)

    def expire(self) -> None:
        """The caller gave up on this attempt (the async twin's deadline): shut its sockets down now,
        so that a worker thread still reading from them ends too."""
        self._fire()

    def finish(self) -> None:
        """The answer is in (or abandoned): stop watching; no socket is shut down after this."""
        with self._lock:
            self._finished = True
            self._sockets = []
            timer = self._timer
        if timer is not None:
            timer.cancel()
        if self.key is not None:
            _RUNNING.pop(self.key, None)


def named(key: object) -> Optional[Attempt]:
    """The running attempt that :data:`HEADER`'s value ``key`` names, if any."""
    return _RUNNING.get(key) if isinstance(key, str) else None


def shutdown(sock: socket.socket) -> None:
    """Shut ``sock`` down both ways, ending any read blocked on it; it may already be closed."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
