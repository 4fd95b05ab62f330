"""systemd's notification protocol, with the standard library: readiness and the watchdog.

Under ``Type=notify`` systemd passes ``$NOTIFY_SOCKET`` (a datagram socket: a path, or an
abstract name written with a leading ``@``) and, with ``WatchdogSec=``, ``$WATCHDOG_USEC``
(and ``$WATCHDOG_PID``). The bridge sends ``READY=1`` once it listens, ``WATCHDOG=1``
from its serving loop at half the watchdog interval (so a wedged loop is restarted),
and ``STOPPING=1`` when it stops. Outside systemd every call does nothing.

A send never waits: the socket is non-blocking, so a reader that has stalled (its queue
full) costs the serving loop nothing. Such a datagram is dropped and counted
(:attr:`Notifier.dropped`), and said once; a watchdog that misses its pings then restarts
the service, which is what it is for.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from collections.abc import Mapping
from typing import Optional

_LOGGER = logging.getLogger("legacy_msi_credential.bridge")
#: What a non-blocking send to a full datagram socket fails with.
_FULL = (errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS)


class Notifier:
    """Sends state changes to systemd, when there is a systemd to send them to.

    Args:
        address: ``$NOTIFY_SOCKET``; None outside systemd.
        watchdog: Seconds between the pings systemd expects (``$WATCHDOG_USEC``), or None.
    """

    def __init__(self, address: Optional[str], watchdog: Optional[float] = None) -> None:
        self.address = address
        self.watchdog = watchdog
        #: Datagrams dropped because systemd's socket was full.
        self.dropped = 0

    @classmethod
    def from_environment(cls, environ: Optional[Mapping[str, str]] = None) -> Notifier:
        """What systemd passed this process (nothing outside systemd)."""
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET") or None
        watchdog: Optional[float] = None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            watchdog = int(usec) / 1_000_000
        return cls(address, watchdog)

    @property
    def ping_interval(self) -> Optional[float]:
        """How often to send ``WATCHDOG=1``: half the interval systemd allows, as it recommends."""
        return self.watchdog / 2 if self.watchdog else None

    def send(self, *states: str) -> bool:
        """Send ``states`` (``READY=1``, ...) in one datagram; whether it was sent."""
        if not self.address:
            return False
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK) as sock:
                sock.sendto("\n".join(states).encode("utf-8"), target)
        except OSError as exc:
            if exc.errno in _FULL:
                self.dropped += 1
                if self.dropped == 1:
                    _LOGGER.warning(
                        "systemd's notification socket %s is not being read: its messages are dropped", self.address
                    )
                return False
            _LOGGER.warning("could not notify systemd at %s: %s", self.address, exc.strerror or exc)
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def ping(self) -> bool:
        return self.send("WATCHDOG=1")

    def stopping(self) -> bool:
        return self.send("STOPPING=1")
