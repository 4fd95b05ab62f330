"""Listening sockets handed over by systemd's socket activation, with the standard library.

With a ``.socket`` unit, systemd binds the port itself, before the service runs, and holds
it while the service restarts: a client meets a wait, never a refused connection. It starts
the service with the sockets as descriptors 3, 4, ... and says so in the environment:
``LISTEN_FDS`` (how many), ``LISTEN_PID`` (the process they are for: a child that inherited
the variables is not it) and ``LISTEN_FDNAMES`` (their names). That is ``sd_listen_fds(3)``'s
protocol; this module reads it without libsystemd.

What a socket is, is decided on the descriptor, not on the unit's text: each must be a
listening TCP socket (``SO_ACCEPTCONN``) bound to a loopback address, and all on one port,
as :func:`legacy_msi_credential._server._binding.bind_listeners` would have bound them. Anything
else is a refusal that names the ``.socket`` unit's setting to fix. The variables are
removed once read, as ``sd_listen_fds(1)`` does, so that a child process does not take the
descriptors for its own; the descriptors are made non-inheritable.
"""

from __future__ import annotations

import os
import socket
from collections.abc import MutableMapping
from typing import Optional

from .._loopback import is_loopback_address
from ._binding import ListenError, Listeners

__all__ = ["FIRST_FD", "MAX_FDS", "VARIABLES", "inherited_listeners"]

#: systemd's first passed descriptor (``SD_LISTEN_FDS_START``).
FIRST_FD = 3
#: More sockets than any unit of this package passes (127.0.0.1 and ::1): a larger count is a
#: misreading, refused rather than taking over descriptors the process holds for other things.
MAX_FDS = 16
#: What systemd sets for the activated process, and this module removes once read.
VARIABLES = ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")
_FIX = "the .socket unit must have ListenStream=127.0.0.1:PORT and ListenStream=[::1]:PORT lines only"


def inherited_listeners(
    environ: Optional[MutableMapping[str, str]] = None, *, allow_remote: bool = False
) -> Optional[Listeners]:
    """The listening sockets systemd passed this process, or None when it passed none.

    Args:
        environ: The environment to read and clear (default: ``os.environ``).
        allow_remote: Accept sockets bound to addresses that are not loopback.

    Raises:
        ListenError: The variables are malformed, or a descriptor is not a listening TCP
            socket on loopback, or the sockets are on different ports; the message says which
            and what to change in the ``.socket`` unit.
    """
    env = os.environ if environ is None else environ
    count_text, pid_text = env.get("LISTEN_FDS"), env.get("LISTEN_PID")
    for name in VARIABLES:
        env.pop(name, None)  # read once: never a child's
    if count_text is None or pid_text is None:
        return None  # sd_listen_fds(3) too takes nothing without both
    if pid_text != str(os.getpid()):
        return None  # inherited from the process systemd activated: not for this one
    if not count_text.isdigit() or not 1 <= int(count_text) <= MAX_FDS:
        raise ListenError(f"LISTEN_FDS={count_text!r} is not a count of 1 to {MAX_FDS} sockets; {_FIX}")
    sockets: list[socket.socket] = []
    try:
        for fd in range(FIRST_FD, FIRST_FD + int(count_text)):
            sockets.append(_listening_socket(fd, allow_remote))
        ports = {sock.getsockname()[1] for sock in sockets}
        if len(ports) != 1:
            raise ListenError(f"the sockets passed are on ports {sorted(ports)}, not one port; {_FIX}")
    except BaseException:
        for sock in sockets:
            sock.detach()  # the descriptors stay the caller's, as they came
        raise
    return Listeners(sockets=tuple(sockets), port=ports.pop())


def _listening_socket(fd: int, allow_remote: bool) -> socket.socket:
    """Descriptor ``fd`` as a socket object, if it is a listening TCP socket where it may be."""
    try:
        sock = socket.socket(fileno=fd)  # family and type read from the descriptor
    except OSError as exc:
        raise ListenError(f"descriptor {fd} passed by systemd is not a socket ({exc.strerror}); {_FIX}") from None
    try:
        if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_STREAM:
            raise ListenError(f"descriptor {fd} passed by systemd is not a TCP socket; {_FIX}")
        if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            raise ListenError(f"descriptor {fd} passed by systemd is not listening (Accept=no is needed); {_FIX}")
        address = sock.getsockname()[0]
        if not allow_remote and not is_loopback_address(address):
            raise ListenError(f"descriptor {fd} passed by systemd is bound to {address}, not loopback; {_FIX}")
    except BaseException:
        sock.detach()
        raise
    sock.set_inheritable(False)
    return sock
