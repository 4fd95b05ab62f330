"""Run inside a private network namespace by ``test_binding_namespace.py``; prints one JSON report.

The namespace has only ``lo``, so what a server binds there is reachable from nowhere else,
and its settings are its own: the ports the kernel picks for port 0
(``net.ipv4.ip_local_port_range``, which IPv6 shares) and whether it has IPv6 at all.

1. Port 0, with ``[::1]`` taken on every port of the range but one: each server must end
   on that one, served on both addresses, however often it starts.
2. ``::``: an IPv4 client must be answered (dual-stack on purpose).
3. IPv6 turned off (``disable_ipv6`` on ``lo``): the default host serves 127.0.0.1 and
   says once that ``::1`` is left out; ``::1`` asked for by name is a refusal.
"""

from __future__ import annotations

import json
import logging
import socket
from typing import Any, Callable

from legacy_msi_credential.bridge import Bridge, TokenSource
from legacy_msi_credential.emulator import Emulator

#: The ports the kernel may pick here; all but the last are taken on ::1.
FIRST, LAST = 40000, 40005
#: Starts of each server in scenario 1: the kernel's first pick is among six ports each time
#: (Linux hands out an even count of the range's ports for port 0: six, not five).
STARTS = 6
#: Client ports, outside the range, so that no client takes one the servers may need.
_client_ports = iter(range(41000, 42000))


def _bridge(host: str = "127.0.0.1", **options: Any) -> Any:
    return Bridge(host, 0, source=TokenSource("imds", credential_factory=lambda *_: None), **options).start()


def _emulator(host: str = "127.0.0.1", **options: Any) -> Any:
    return Emulator(host, 0, sign=False, **options).start()


SERVERS: dict[str, Callable[..., Any]] = {"bridge": _bridge, "emulator": _emulator}


def health(address: str, port: int) -> str:
    """The role the health path names over ``address``, or why there was none. The client
    closes first, so that its side keeps the TIME_WAIT, on a port outside the range."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        with socket.socket(family) as client:
            client.settimeout(5)
            client.bind((address, next(_client_ports)))
            client.connect((address, port))
            client.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            received = b""
            while b"\r\n\r\n" not in received:
                received += client.recv(4096)
            head, _, body = received.partition(b"\r\n\r\n")
            length = int(next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))[15:])
            while len(body) < length:
                body += client.recv(4096)
            return str(json.loads(body)["role"])
    except OSError as exc:
        return f"{type(exc).__name__}: {exc.strerror}"


def port_zero() -> dict[str, list[Any]]:
    with open("/proc/sys/net/ipv4/ip_local_port_range", "w") as setting:
        setting.write(f"{FIRST} {LAST}")
    squatters = []
    for port in range(FIRST, LAST):
        squatter = socket.socket(socket.AF_INET6)
        squatter.bind(("::1", port))
        squatter.listen()
        squatters.append(squatter)
    outcomes: dict[str, list[Any]] = {}
    for name, start in SERVERS.items():
        outcomes[name] = []
        for _ in range(STARTS):
            server = start()
            try:
                outcomes[name].append([server.port, health("127.0.0.1", server.port), health("::1", server.port)])
            finally:
                server.stop()
    for squatter in squatters:
        squatter.close()
    return outcomes


def every_address() -> dict[str, list[str]]:
    outcomes = {}
    for name, start in SERVERS.items():
        server = start("::", allow_remote=True)
        try:
            outcomes[name] = [health("127.0.0.1", server.port), health("::1", server.port)]
        finally:
            server.stop()
    return outcomes


def without_ipv6() -> dict[str, Any]:
    for setting in ("all", "default", "lo"):
        with open(f"/proc/sys/net/ipv6/conf/{setting}/disable_ipv6", "w") as handle:
            handle.write("1")
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    root = logging.getLogger("legacy_msi_credential")
    root.addHandler(Keep())
    root.setLevel(logging.DEBUG)
    report: dict[str, Any] = {}
    for name, start in SERVERS.items():
        del records[:]
        server = start()
        try:
            said = [f"{record.levelname} {record.getMessage()}" for record in records if "::1" in record.getMessage()]
            report[name] = {"ipv4": health("127.0.0.1", server.port), "said": said, "port": server.port}
        finally:
            server.stop()
        try:
            start("::1").stop()
            report[name]["explicit"] = "started"
        except OSError as exc:
            report[name]["explicit"] = f"{type(exc).__name__}: {exc}"
    return report


def main() -> None:
    report = {"port_zero": port_zero(), "every_address": every_address(), "without_ipv6": without_ipv6()}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
