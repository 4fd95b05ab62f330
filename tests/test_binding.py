"""Both servers serve every address they mean to serve, on one port, or refuse to start.

A squatter is a real socket of this process holding ``127.0.0.1:P`` or ``[::1]:P``; each
server started on ``P`` must refuse, naming the address and port and what to do, and leave
nothing bound behind. The CLI says the same words. ``tests/test_binding_namespace.py``
covers what needs a network of its own (a host without IPv6, port 0's retry, ``::``).
"""

from __future__ import annotations

import http.client
import json
import pickle
import re
import socket
from typing import Any, Callable

import pytest

from legacy_msi_credential._constants import HEALTH_PATH
from legacy_msi_credential._server._binding import AddressInUseError
from legacy_msi_credential.bridge import Bridge, TokenSource
from legacy_msi_credential.emulator import Emulator

from .conftest import run_cli
from .hostile import sockets_here


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


HAS_IPV6 = _ipv6_loopback()


def _bridge(port: int) -> Any:
    return Bridge(port=port, source=TokenSource("imds", credential_factory=lambda *_: None)).start()


def _emulator(port: int) -> Any:
    return Emulator(port=port, sign=False).start()


SERVERS: dict[str, Callable[[int], Any]] = {"bridge": _bridge, "emulator": _emulator}
SQUATTED = [
    "127.0.0.1",
    pytest.param("::1", marks=pytest.mark.skipif(not HAS_IPV6, reason="this host has no IPv6 loopback")),
]


def _squat(address: str) -> socket.socket:
    """A socket of another "process" listening on ``address``, on a port the kernel picks."""
    squatter = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET)
    squatter.bind((address, 0))
    squatter.listen()
    return squatter


def _the_message(address: str, port: int) -> str:
    where = f"[{address}]" if ":" in address else address
    return (
        f"port {port} on {where} is already in use: the legacy managed identity extension, another bridge or "
        f"emulator, or some other process holds it (find it with: ss -ltnp 'sport = :{port}'); stop it, or "
        "choose another port (--port)"
    )


@pytest.mark.parametrize("server", sorted(SERVERS))
@pytest.mark.parametrize("address", SQUATTED)
def test_a_squatter_on_either_address_is_a_refusal_to_start(server: str, address: str) -> None:
    with _squat(address) as squatter:
        port = squatter.getsockname()[1]
        before = sockets_here()
        try:
            SERVERS[server](port).stop()  # the bug: a server that started anyway
        except AddressInUseError as error:
            caught = error
        else:
            pytest.fail(f"the {server} started while another process held {address} port {port}")
        # Nothing was left open: this process's sockets are asked, not the port (which
        # another test may take once it is free).
        assert sockets_here() - before == set()
    assert str(caught) == _the_message(address, port)
    assert (caught.address, caught.port) == (address, port)


@pytest.mark.parametrize("command", ["serve", "emulate"])
@pytest.mark.parametrize("address", SQUATTED)
def test_the_cli_refuses_in_the_same_words(command: str, address: str) -> None:
    with _squat(address) as squatter:
        port = squatter.getsockname()[1]
        extra = ("--imds-url", "http://127.0.0.1:9") if command == "serve" else ()
        args = [command, "--port", str(port), *extra]
        if command == "emulate":
            args += ["--", "true"]  # the command it would run once listening: never reached
        result = run_cli(*args)
    assert result.returncode == 1, result.stderr
    assert result.stderr == f"legacy-msi: error: {_the_message(address, port)}\n"
    assert result.stdout == ""  # never "listening on"


def test_the_default_host_serves_both_addresses_on_one_port() -> None:
    if not HAS_IPV6:
        pytest.skip("this host has no IPv6 loopback")
    for name, start in SERVERS.items():
        server = start(0)
        try:
            for address in ("127.0.0.1", "::1"):
                connection = http.client.HTTPConnection(address, server.port, timeout=5)
                try:
                    connection.request("GET", HEALTH_PATH)
                    answer = connection.getresponse()
                    assert (answer.status, json.loads(answer.read())["role"]) == (200, name), address
                    assert connection.sock is not None
                    assert connection.sock.getpeername()[0] == address
                finally:
                    connection.close()
        finally:
            server.stop()


def test_the_error_pickles_with_its_message() -> None:
    error = pickle.loads(pickle.dumps(AddressInUseError("::1", 50342)))
    assert isinstance(error, AddressInUseError)
    assert str(error) == _the_message("::1", 50342)
    assert re.search(r"\[Errno", str(error)) is None


@pytest.mark.parametrize("server", sorted(SERVERS))
def test_a_name_is_served_on_every_address_it_resolves_to(server: str) -> None:
    resolved = {str(info[4][0]) for info in socket.getaddrinfo("localhost", None, type=socket.SOCK_STREAM)}
    start = Bridge if server == "bridge" else Emulator
    options: dict[str, Any] = (
        {"source": TokenSource("imds", credential_factory=lambda *_: None)} if server == "bridge" else {"sign": False}
    )
    running = start("localhost", 0, **options).start()
    try:
        assert running.endpoint == f"http://localhost:{running.port}/oauth2/token"
        for address in sorted(resolved):
            connection = http.client.HTTPConnection(address, running.port, timeout=5)
            try:
                connection.request("GET", HEALTH_PATH, headers={"Host": "localhost"})
                assert connection.getresponse().status == 200, address
            finally:
                connection.close()
    finally:
        running.stop()
