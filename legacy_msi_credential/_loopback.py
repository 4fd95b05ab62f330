"""What counts as loopback: the one home of every such check. No I/O.

Two kinds of question, answered differently on purpose:

* **A name written in a URL or a setting** (:func:`is_loopback_host`): deliberately narrow.
  ``localhost`` or a literal loopback address only; ``localhost.``, ``name.localhost`` and
  ``127.0.0.1.`` go through DNS, which may send them anywhere. This is only an early check.
* **An address a socket reports** (:func:`is_loopback_address`, :func:`peer_is_loopback`):
  what a connection actually reached or came from, which is what trust decisions rest on.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any


def is_loopback_address(address: str) -> bool:
    """Whether an IP address (as a socket reports it) is loopback; IPv4-mapped IPv6 included."""
    text = address.split("%", 1)[0]  # an IPv6 scope
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    if mapped is not None:
        ip = mapped
    return bool(ip.is_loopback)


def is_loopback_host(host: str) -> bool:
    """Tell whether ``host`` is ``localhost`` or a literal loopback address (127.0.0.0/8, ::1).

    ``[::1]`` may come with its brackets. Deliberately narrow: ``localhost.``,
    ``name.localhost`` and ``127.0.0.1.`` go through DNS, which may send them anywhere, so
    they are not loopback here. Connections are checked on the address they actually reach.
    """
    if host.lower() == "localhost":
        return True
    name = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not re.fullmatch(r"[0-9.]+|[0-9A-Fa-f:.]+", name):
        return False
    return is_loopback_address(name)


def peer_is_loopback(peer: Any) -> bool:
    """Whether a ``getpeername()`` result is a loopback address (a UNIX socket is local too)."""
    if isinstance(peer, (str, bytes)):
        return True  # AF_UNIX: this machine
    if isinstance(peer, tuple) and peer and isinstance(peer[0], str):
        return is_loopback_address(peer[0])
    return False


def describe_peer(peer: Any) -> str:
    """A ``getpeername()`` result as ``host:port`` (``[host]:port`` for IPv6)."""
    if isinstance(peer, tuple) and len(peer) >= 2:
        host, port = peer[0], peer[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return "an unknown address"
