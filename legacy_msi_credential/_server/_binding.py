"""Where a server of this package listens: every address it means to serve, on one port, or none.

Standard library only. Both servers (the emulator on :mod:`socketserver`, the bridge on
asyncio) take the listening sockets bound here, so that one rule holds for both:

* The default host, ``127.0.0.1``, is served on ``::1`` too, on the same port: clients whose
  ``localhost`` resolves to ``::1`` first (Debian's and Fedora's ``/etc/hosts``) try it
  first. A name (``localhost``) is served on every address it resolves to.
* "Address in use" on any of them is a refusal to start (:class:`AddressInUseError`): a
  server that started on 127.0.0.1 alone while another process held ``[::1]:P`` would
  leave that process answering those clients, with its tokens. Only a host without IPv6
  (no ``::1``, no IPv6 at all) lets ``::1`` go, and that is said once.
* With port 0, every address gets the same port: if one is taken on the port the kernel
  picked for the first, another is tried, :data:`PORT_TRIES` times at most.
* ``::`` (every address) is served dual-stack, IPv4 clients included, on purpose: asyncio
  alone would make it IPv6-only, the standard library's servers would follow the host's
  ``net.ipv6.bindv6only``.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import socket
import sys
from dataclasses import dataclass

from .._loopback import is_loopback_address

__all__ = ["PORT_TRIES", "AddressInUseError", "ListenError", "Listeners", "bind_listeners", "in_use_message"]

_LOGGER = logging.getLogger(__name__)

#: Ports tried with port 0 before giving up on finding one free on every address.
PORT_TRIES = 8
#: What binding ``::1`` fails with where the host has no IPv6 loopback, or no IPv6 at all.
_NO_IPV6 = frozenset({errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT})
_IPV6_LOOPBACK = "::1"


def in_use_message(address: str, port: int) -> str:
    """What "address in use" says, for every server and the CLI: where, who, how to find it, what to do."""
    where = f"[{address}]" if ":" in address else address
    if sys.platform.startswith("linux"):
        find = f"ss -ltnp 'sport = :{port}'"
    elif sys.platform == "win32":
        find = f"netstat -ano | findstr :{port}"
    else:
        find = f"lsof -nP -iTCP:{port} -sTCP:LISTEN"
    return (
        f"port {port} on {where} is already in use: the legacy managed identity extension, another bridge or "
        f"emulator, or some other process holds it (find it with: {find}); stop it, or choose another port "
        "(--port)"
    )


class ListenError(OSError):
    """A server could not listen where it means to; the message says where and why."""

    def __str__(self) -> str:
        # Without "[Errno N]": the message says it all.
        return str(self.strerror) if self.strerror is not None else super().__str__()


class AddressInUseError(ListenError):
    """Another process holds an address and port a server means to serve; nothing was started."""

    def __init__(self, address: str, port: int) -> None:
        super().__init__(errno.EADDRINUSE, in_use_message(address, port))
        self.address = address
        self.port = port

    def __reduce__(self) -> tuple[type[AddressInUseError], tuple[str, int]]:
        return type(self), (self.address, self.port)


@dataclass(frozen=True)
class Listeners:
    """Listening sockets, one per address, all on :attr:`port`; the server takes them over."""

    sockets: tuple[socket.socket, ...]
    port: int

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


@dataclass(frozen=True)
class _Address:
    family: socket.AddressFamily
    address: str
    #: ``False`` for an IPv6 address this server adds or a name resolves to: where the host has
    #: no IPv6, it is left out (said once). Any other failure is a failure to start.
    required: bool


def bind_listeners(
    host: str,
    port: int,
    *,
    ipv6_loopback: bool,
    allow_remote: bool,
    backlog: int,
    server: str,
) -> Listeners:
    """Bind and listen on every address ``host`` stands for, all on one port.

    Args:
        host: An address (``[::1]`` may have its brackets) or a name, every address of which
            is served.
        port: The port; 0 for one the kernel picks, free on every address.
        ipv6_loopback: Serve ``::1`` too (where the host has IPv6).
        allow_remote: Allow addresses that are not loopback.
        backlog: The listen queue of each socket.
        server: Who listens, for the one line said when ``::1`` is left out.

    Raises:
        AddressInUseError: Another process holds one of the addresses on that port.
        ValueError: An address is not loopback and ``allow_remote`` is false.
        OSError: An address cannot be bound for another reason (the message names it).
    """
    addresses = _addresses(host, ipv6_loopback)
    if not allow_remote:
        for item in addresses:
            if not is_loopback_address(item.address):
                raise ValueError(
                    f"refusing to serve on {item.address}: {host!r} resolved to an address that is not loopback; "
                    "pass allow_remote=True if this is intended"
                )
    # Port 0's picks that were taken on another address stay bound until the end, so that
    # the kernel picks another each time, not the same one again.
    rejected: list[socket.socket] = []
    try:
        for _ in range(PORT_TRIES if port == 0 else 1):
            bound = _bind_all(addresses, port, backlog, server, rejected)
            if bound is not None:
                return bound
    finally:
        for sock in rejected:
            sock.close()
    raise ListenError(errno.EADDRINUSE, f"no port was free on every address of {host!r} after {PORT_TRIES} tries")


def _addresses(host: str, ipv6_loopback: bool) -> list[_Address]:
    """The addresses ``host`` stands for: itself if it is an address, else what it resolves to."""
    literal = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ip = ipaddress.ip_address(literal)
    except ValueError:
        ip = None
    if ip is not None:
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        found = [_Address(family, str(ip), required=True)]
    else:
        try:
            infos = socket.getaddrinfo(literal, None, socket.AF_UNSPEC, socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise ListenError(f"cannot listen on {host!r}: the name does not resolve ({exc.strerror})") from None
        found = []
        for family, _, _, _, sockaddr in infos:
            text = str(sockaddr[0])
            if family in (socket.AF_INET, socket.AF_INET6) and all(item.address != text for item in found):
                found.append(_Address(family, text, required=True))
        if not found:
            raise ListenError(f"cannot listen on {host!r}: the name resolves to no IP address")
        if any(item.family == socket.AF_INET for item in found):  # then its IPv6 addresses may be missing
            found = [_Address(i.family, i.address, i.family == socket.AF_INET) for i in found]
    if ipv6_loopback and all(item.address != _IPV6_LOOPBACK for item in found):
        found.append(_Address(socket.AF_INET6, _IPV6_LOOPBACK, required=False))
    return found


def _bind_all(
    addresses: list[_Address], port: int, backlog: int, server: str, rejected: list[socket.socket]
) -> Listeners | None:
    """Every address on one port; ``None`` when port 0's pick was taken on another address
    (then what was bound goes to ``rejected``)."""
    sockets: list[socket.socket] = []
    skipped: list[tuple[str, str]] = []
    chosen = port
    try:
        for item in addresses:
            try:
                sock = _listen(item, chosen, backlog)
            except OSError as exc:
                if item.required or exc.errno not in _NO_IPV6:
                    where = f"[{item.address}]" if ":" in item.address else item.address
                    if exc.errno == errno.EADDRINUSE and chosen == 0:
                        raise ListenError(
                            exc.errno, f"cannot listen on {where}: every port the system hands out for port 0 is taken"
                        ) from None
                    if exc.errno == errno.EADDRINUSE:
                        if port == 0 and sockets:
                            rejected.extend(sockets)
                            return None  # the kernel's pick is taken on this address: another
                        raise AddressInUseError(item.address, chosen) from None
                    raise ListenError(exc.errno, f"cannot listen on {where}:{chosen}: {exc.strerror}") from None
                skipped.append((item.address, str(exc.strerror)))
                continue
            sockets.append(sock)
            chosen = int(sock.getsockname()[1])
    except BaseException:
        for held in sockets:
            held.close()
        raise
    for address, why in skipped:
        _LOGGER.info("%s: not listening on [%s]:%d: this host has no IPv6 (%s)", server, address, chosen, why)
    return Listeners(tuple(sockets), chosen)


def _listen(item: _Address, port: int, backlog: int) -> socket.socket:
    sock = socket.socket(item.family, socket.SOCK_STREAM)
    try:
        if os.name == "posix":
            # Binding again at once after a restart, past connections in TIME_WAIT. On Linux
            # it never lets two sockets listen on one address and port.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        elif hasattr(socket, "SO_EXCLUSIVEADDRUSE"):  # pragma: no cover - Windows: no other socket may share the port
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_EXCLUSIVEADDRUSE, 1)
        if item.family == socket.AF_INET6 and hasattr(socket, "IPV6_V6ONLY"):
            # "::" serves IPv4 clients too (on purpose, see the module's docstring); any other
            # IPv6 address is IPv6 only by nature.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if item.address == "::" else 1)
        sock.bind((item.address, port))
        sock.listen(backlog)  # fails, not the bind, if a socket bound beside ours with SO_REUSEADDR listened first
    except BaseException:
        sock.close()
        raise
    return sock
