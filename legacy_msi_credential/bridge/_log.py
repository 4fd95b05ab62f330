"""Logging that never blocks the serving loop: records go through a bounded queue to a thread.

A handler writes where it writes: stderr into a pipe nobody reads, a journal that is slow,
an application's network handler. Called on the serving loop, a handler that blocks stops
every client. So the loggers a server holds (:meth:`OffLoop.hold`) hand their records to
a bounded queue instead (a :class:`logging.handlers.QueueHandler` that never waits), and
one thread (a :class:`logging.handlers.QueueListener`) passes each on to the handlers it
would have reached: the logger's own, then its parents' as far as it propagates, as
:meth:`logging.Logger.callHandlers` does. When the queue is full a
record is dropped and counted (:attr:`OffLoop.dropped`), never waited for.

The bridge holds its own loggers (``legacy_msi_credential.bridge`` and its children) while
it runs, whoever configured their handlers; ``legacy-msi serve`` holds the root logger too,
so that azure-identity's and asyncio's records on the loop do not block it either.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import logging.handlers
import queue
import threading
from typing import Any, Optional

#: The bridge's loggers: its own messages, the access log and malformed requests.
BRIDGE_LOGGERS = (
    "legacy_msi_credential.bridge",
    "legacy_msi_credential.bridge.access",
    "legacy_msi_credential.bridge.http",
)
#: Records waiting for the writing thread; beyond, they are dropped and counted: a burst
#: of the access log (each record about 1 KiB held) while its handler is slow.
LOG_QUEUE_SIZE = 1024
#: Seconds :meth:`OffLoop.flush` and the last :meth:`OffLoop.release` wait for the writing
#: thread; a handler stuck longer is left to finish on its own (the thread is a daemon).
LOG_DRAIN_TIMEOUT = 2.0  # s


class _Enqueue(logging.handlers.QueueHandler):
    """Puts a record on the queue without waiting, noting the logger it was held at."""

    def __init__(self, off_loop: OffLoop, held_at: str) -> None:
        super().__init__(off_loop.queue)
        self._off_loop = off_loop
        self._held_at = held_at

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        # The message is made now, on the logging thread: its arguments may change later.
        # The rest is left for the handlers it reaches, which format it as they would have.
        prepared = copy.copy(record)
        prepared.msg = record.getMessage()
        prepared.args = None
        prepared._off_loop_held_at = self._held_at
        return prepared

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            self._off_loop.count_dropped()


class _Listener(logging.handlers.QueueListener):
    """The writing thread: each record to the handlers it would have reached."""

    def __init__(self, off_loop: OffLoop) -> None:
        super().__init__(off_loop.queue)
        self._off_loop = off_loop

    def handle(self, record: logging.LogRecord) -> None:
        self._off_loop.deliver(record)

    def stop(self) -> None:
        """Stop once what is queued is written, waiting :data:`LOG_DRAIN_TIMEOUT` at most."""
        thread = self._thread
        if thread is None:
            return
        with contextlib.suppress(queue.Full):  # a stuck writer stays a daemon thread, forgotten
            self._off_loop.queue.put(None, timeout=LOG_DRAIN_TIMEOUT)  # QueueListener's sentinel
        thread.join(LOG_DRAIN_TIMEOUT)
        self._thread = None


class _Divert(logging.Filter):
    """On a held logger: its records go to the queue, and no further on this thread."""

    def __init__(self, enqueue: _Enqueue) -> None:
        super().__init__()
        self._enqueue = enqueue

    def filter(self, record: logging.LogRecord) -> bool:
        self._enqueue.emit(record)
        return False


class OffLoop:
    """The loggers whose records a thread writes, and what was dropped on the way.

    A held logger keeps its handlers, level and ``propagate`` (so that whoever configures
    it, or looks at it, sees what they set); a filter of its own diverts its records to the
    queue. The root logger, held, hands the queue what other loggers propagate to it.

    Args:
        capacity: Records the queue holds before it drops.
    """

    def __init__(self, capacity: int = LOG_QUEUE_SIZE) -> None:
        self.queue: queue.Queue[Any] = queue.Queue(capacity)
        self._lock = threading.Lock()
        #: Logger name -> (its filter, or the root's handlers set aside; holders).
        self._held: dict[str, tuple[Any, int]] = {}
        self._listener: Optional[_Listener] = None
        self._dropped = 0
        self._dropped_lock = threading.Lock()

    @property
    def dropped(self) -> int:
        """Records dropped because the queue was full (the handlers did not keep up)."""
        return self._dropped

    def count_dropped(self) -> None:
        with self._dropped_lock:
            self._dropped += 1

    def hold(self, *names: str) -> None:
        """Send the records of the loggers ``names`` (``""`` for the root) through the queue,
        until as many :meth:`release` calls."""
        with self._lock:
            for name in names:
                if name in self._held:
                    kept, holders = self._held[name]
                    self._held[name] = (kept, holders + 1)
                    continue
                if name:
                    divert = _Divert(_Enqueue(self, name))
                    logging.getLogger(name).addFilter(divert)
                    self._held[name] = (divert, 1)
                else:
                    root = logging.getLogger()
                    self._held[name] = (list(root.handlers), 1)
                    root.handlers = [_Enqueue(self, "")]
            if self._listener is None and self._held:
                self._listener = _Listener(self)
                self._listener.start()

    def release(self, *names: str) -> None:
        """Undo :meth:`hold`; once no logger is held, write what is queued and stop the thread."""
        listener = None
        with self._lock:
            for name in names:
                if name not in self._held:
                    continue
                kept, holders = self._held.pop(name)
                if holders > 1:
                    self._held[name] = (kept, holders - 1)
                elif name:
                    logging.getLogger(name).removeFilter(kept)
                else:
                    logging.getLogger().handlers = kept
            if not self._held:
                listener, self._listener = self._listener, None
        if listener is not None:
            listener.stop()

    def flush(self, timeout: float = LOG_DRAIN_TIMEOUT) -> bool:
        """Wait until every queued record is written (or ``timeout``); whether it was."""
        done = self.queue.all_tasks_done
        with done:
            return done.wait_for(lambda: not self.queue.unfinished_tasks, timeout)

    def deliver(self, record: logging.LogRecord) -> None:
        """Hand ``record`` to the handlers it would have reached had it not been diverted:
        those of the logger it was diverted at, then its parents' as far as it propagates."""
        root = logging.getLogger()
        held_at = getattr(record, "_off_loop_held_at", "")
        logger: Optional[logging.Logger] = logging.getLogger(held_at) if held_at else root
        found = 0
        while logger is not None:
            handlers = logger.handlers
            if logger is root:
                with self._lock:
                    kept = self._held.get("")
                handlers = kept[0] if kept else handlers
            for handler in handlers:
                if isinstance(handler, _Enqueue):
                    continue
                found += 1
                if record.levelno >= handler.level:
                    handler.handle(record)
            logger = logger.parent if logger.propagate else None
        if not found and logging.lastResort is not None and record.levelno >= logging.lastResort.level:
            logging.lastResort.handle(record)


#: The process's one queue and writing thread (a process has one stderr).
OFF_LOOP = OffLoop()
