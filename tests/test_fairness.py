"""Fairness between local users: who a client is, and their shares of the bridge's cache and gate.

The second local user is a real one: a child process that drops to uid 65534 (nobody) and
connects over loopback, as another account on the machine would. The suite runs as root
(CI does); elsewhere these tests are skipped.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any, Callable, Optional

import pytest
import requests
from azure.core.credentials import AccessToken

from legacy_msi_credential._cache import Action, TokenCache
from legacy_msi_credential._server import _owner
from legacy_msi_credential._server._flights import Busy, Gate
from legacy_msi_credential._token import TokenResult
from legacy_msi_credential.bridge import Bridge, ServerLimits, TokenSource

from .test_bridge_service import ARM, StandIn, jwt

NOBODY = 65534


def _need_root() -> None:
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("CI runs the suite as root, which these tests need to act as a second user")
        pytest.skip("acting as a second local user needs root")


@contextmanager
def as_nobody(work: Callable[[], Any]) -> Iterator[Callable[[], Any]]:
    """Run ``work`` in a child process as uid 65534; yields a function that waits for its result.

    The child is forked, not started afresh: this interpreter may live where nobody cannot
    read (a virtual environment under /root), and the child only needs sockets.
    """
    _need_root()
    reading, writing = os.pipe()
    with warnings.catch_warnings():
        # Python 3.12 warns that forking a multi-threaded process may deadlock: the child takes no lock.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child, which never returns
        code = 1
        try:
            os.close(reading)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            os.write(writing, json.dumps(work()).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(writing)

    def result() -> Any:
        chunks = []
        while chunk := os.read(reading, 65536):
            chunks.append(chunk)
        _, status = os.waitpid(pid, 0)
        assert status == 0, "the second user's process failed"
        return json.loads(b"".join(chunks))

    try:
        yield result
    finally:
        os.close(reading)
        with suppress(ProcessLookupError, ChildProcessError):  # it has ended and was waited for
            os.kill(pid, 9)
            os.waitpid(pid, 0)


def _request(port: int, parameters: str) -> bytes:
    return (
        f"GET /oauth2/token?resource={ARM}&{parameters} HTTP/1.1\r\nHost: localhost\r\nMetadata: true\r\n"
        "Connection: close\r\n\r\n"
    ).encode()


def _ask_all(port: int, parameters: list[str]) -> list[int]:
    """Send every request at once, each on its own connection, then read each answer's status."""
    sockets = []
    for each in parameters:
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.sendall(_request(port, each))
        sockets.append(sock)
    statuses = []
    for sock in sockets:
        with sock:
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
            statuses.append(int(answer.split(b" ", 2)[1]))
    return statuses


def _wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


# --- who the client is ------------------------------------------------------------------------


@pytest.mark.parametrize(("family", "host"), [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
def test_a_socket_of_another_user_is_that_users_both_ways(family: int, host: str) -> None:
    """netlink's exact lookup and the /proc table agree: the other user's uid, and ours for our own socket."""
    with socket.socket(family) as server:
        server.bind((host, 0))
        server.listen()
        address = server.getsockname()[:2]

        def connect_and_wait() -> int:
            with socket.socket(family) as client:
                client.connect(address)
                return len(client.recv(1))  # until the parent has looked

        with as_nobody(connect_and_wait) as finished:
            accepted, peer = server.accept()
            with accepted:
                local = accepted.getsockname()
                owner = _owner.socket_owner(peer, local)
                ends = (_owner._address(peer[0]), peer[1], _owner._address(local[0]), local[1])
                from_proc = _owner._from_proc(*ends)
                accepted.sendall(b"x")
            finished()
        assert owner == NOBODY
        assert from_proc == NOBODY
        with socket.create_connection(address) as ours:
            accepted, peer = server.accept()
            with accepted:
                assert _owner.socket_owner(peer, accepted.getsockname()) == os.geteuid()
                assert _owner.socket_owner((host, ours.getsockname()[1] ^ 1), accepted.getsockname()) is None


def test_an_owner_that_cannot_be_known_is_none_never_an_error() -> None:
    assert _owner.socket_owner(None, None) is None
    assert _owner.socket_owner("/run/socket", "/run/socket") is None  # a UNIX socket
    assert _owner.socket_owner(("not an address", 1), ("127.0.0.1", 2)) is None
    assert _owner.socket_owner(("127.0.0.1", 1), ("::1", 2)) is None
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Python 3.9's htons cut 70000 down to port 4464, with a warning
        assert _owner.socket_owner(("127.0.0.1", 70000), ("127.0.0.1", 1)) is None  # no such port


def _ends(peer: Any, local: Any) -> tuple[Any, int, Any, int]:
    return _owner._address(peer[0]), peer[1], _owner._address(local[0]), local[1]


def test_a_socket_in_time_wait_is_nobodys_in_both_lookups() -> None:
    """A client that closed first leaves its socket in TIME_WAIT, which the kernel reports as
    uid 0: neither lookup may take that for root's (or this user's) socket."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        client = socket.create_connection(server.getsockname())
        accepted, peer = server.accept()
        local = accepted.getsockname()
        client.close()  # the client's end closes first: it is the one left in TIME_WAIT
        assert accepted.recv(1) == b""
        accepted.close()
        row = b" ".join(
            _owner._proc_hex(*end)
            for end in [(_owner._address(peer[0]), peer[1]), (_owner._address(local[0]), local[1])]
        )

        def in_time_wait() -> bool:
            with open("/proc/self/net/tcp", "rb") as table:
                return any(row in line and line.split()[3] == b"06" for line in table)

        _wait_until(in_time_wait)
        assert _owner._from_netlink(*_ends(peer, local)) == (True, None)
        assert _owner._from_proc(*_ends(peer, local)) is None
        assert _owner.socket_owner(peer, local) is None


def test_an_ipv6_socket_that_reached_an_ipv4_listener_is_found_in_the_ipv6_table() -> None:
    """The client's socket is IPv6 (``::ffff:127.0.0.1``), the server sees 127.0.0.1: where
    netlink is unavailable the /proc fallback finds it in ``tcp6``, not ``tcp``."""
    with socket.socket() as server, socket.socket(socket.AF_INET6) as client:
        server.bind(("127.0.0.1", 0))
        server.listen()
        client.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        client.connect(("::ffff:127.0.0.1", server.getsockname()[1]))
        accepted, peer = server.accept()
        with accepted:
            assert peer[0] == "127.0.0.1"
            assert _owner._from_proc(*_ends(peer, accepted.getsockname())) == os.geteuid()
            assert _owner.socket_owner(peer, accepted.getsockname()) == os.geteuid()


# --- the cache's shares -----------------------------------------------------------------------


def _result(number: int) -> TokenResult:
    return TokenResult(f"token-{number}", 10_000)


NOW = 1_000.0  # the injected clock: every token is fresh for the whole test


def test_a_victims_token_survives_another_users_churn_of_ten_thousand_identities() -> None:
    cache = TokenCache(max_entries=1000)
    cache.store("victim", _result(0), NOW, NOW, user=1000)
    for number in range(10_000):
        cache.store(f"churn-{number}", _result(number), NOW, NOW, user=NOBODY)
    assert len(cache) == 1000
    action, entry = cache.decide("victim", NOW, NOW, user=1000)
    assert action is Action.SERVE
    assert entry is not None
    assert entry.result.token == "token-0"
    assert cache.share(NOBODY) == 999
    assert cache.decide("churn-0", NOW, NOW, user=NOBODY)[0] is Action.FETCH  # its own oldest left first
    assert cache.decide("churn-9999", NOW, NOW, user=NOBODY)[0] is Action.SERVE


def test_the_user_holding_the_largest_share_lets_go_of_its_least_recently_used_token() -> None:
    cache = TokenCache(max_entries=4)
    for key in ("a1", "a2", "a3"):
        cache.store(key, _result(1), NOW, NOW, user="a")
    cache.store("b1", _result(2), NOW, NOW, user="b")
    cache.decide("a1", NOW, NOW, user="a")  # a1 is a's most recently used now; a2 its least
    cache.store("b2", _result(3), NOW, NOW, user="b")  # full: a holds 3, b 2; a pays
    assert cache.decide("a2", NOW, NOW, user="a")[0] is Action.FETCH
    assert {cache.share("a"), cache.share("b")} == {2}
    cache.store("b3", _result(4), NOW, NOW, user="b")  # now b holds 3 of 5: b pays, with its oldest
    assert cache.decide("b1", NOW, NOW, user="b")[0] is Action.FETCH
    assert cache.decide("a3", NOW, NOW, user="a")[0] is Action.SERVE
    assert cache.share("a") == cache.share("b") == 2


def test_a_token_several_users_hold_is_charged_to_each_in_part_and_stays_while_one_holds_it() -> None:
    cache = TokenCache(max_entries=3)
    cache.store("shared", _result(1), NOW, NOW, user="a")
    cache.decide("shared", NOW, NOW, user="b")
    assert cache.share("a") == cache.share("b") == 0.5
    for number in range(10):  # b churns: its hold on "shared" goes first, then its own tokens
        cache.store(f"b-{number}", _result(number), NOW, NOW, user="b")
    assert cache.decide("shared", NOW, NOW, user="a")[0] is Action.SERVE
    assert cache.share("a") == 1
    assert cache.users == 2


# --- the gate's shares ------------------------------------------------------------------------


async def test_waiting_calls_are_served_round_robin_between_users() -> None:
    gate = Gate(1, 1000, wait=10)
    release = asyncio.Event()
    order: list[str] = []

    async def call(name: str) -> str:
        order.append(name)
        await release.wait()
        return name

    first = asyncio.ensure_future(gate.run(lambda: call("a0"), "a"))
    await asyncio.sleep(0)
    more = [asyncio.ensure_future(gate.run(lambda n=n: call(f"a{n}"), "a")) for n in range(1, 6)]
    victim = asyncio.ensure_future(gate.run(lambda: call("b0"), "b"))
    await asyncio.sleep(0)
    assert gate.waiting == 6
    release.set()
    await asyncio.gather(first, victim, *more)
    assert order == ["a0", "b0", "a1", "a2", "a3", "a4", "a5"]  # b waited behind one of a's calls, not five


async def test_the_user_queueing_beyond_its_share_gets_busy_not_the_other() -> None:
    gate = Gate(1, 1000, wait=0.25)

    async def call() -> None:
        await asyncio.sleep(0.1)  # a source call's duration

    churn = [asyncio.ensure_future(gate.run(call, "churner")) for _ in range(6)]
    await asyncio.sleep(0)
    victim = asyncio.ensure_future(gate.run(call, "victim"))
    outcomes = await asyncio.gather(*churn, return_exceptions=True)
    await victim  # served second, at 0.1 s: within its 0.25 s
    busy = [outcome for outcome in outcomes if isinstance(outcome, Busy)]
    assert len(busy) >= 3
    assert all(outcome.retry_after == 1 for outcome in busy)
    assert gate.waiting == 0


async def test_a_user_whose_calls_hang_leaves_the_last_place_to_another_user() -> None:
    """Four places, one user's calls hanging (a source slow for its identities): it holds three,
    its fourth waits, and another user's call starts at once on the place kept for it, rather
    than waiting behind the hanging ones until it is told to come back."""
    gate = Gate(4, 1000, wait=0.5)
    release = asyncio.Event()
    started: list[str] = []

    async def hang(name: str) -> str:
        started.append(name)
        await release.wait()
        return name

    slow = [asyncio.ensure_future(gate.run(lambda n=n: hang(f"slow{n}"), "slow")) for n in range(4)]
    await asyncio.sleep(0)
    assert started == ["slow0", "slow1", "slow2"]
    assert gate.waiting == 1
    other = await asyncio.wait_for(gate.run(lambda: asyncio.sleep(0, "other"), "other"), 0.1)
    assert other == "other"
    release.set()
    assert await asyncio.gather(*slow) == ["slow0", "slow1", "slow2", "slow3"]
    assert gate.waiting == 0


async def test_the_last_place_goes_to_the_waiting_user_holding_none() -> None:
    """Queued calls of a user holding places wait; a newcomer holding none is handed the last one."""
    gate = Gate(2, 1000, wait=5)
    release = asyncio.Event()
    order: list[str] = []

    async def hold(name: str) -> str:
        order.append(name)
        await release.wait()
        return name

    a = [asyncio.ensure_future(gate.run(lambda n=n: hold(f"a{n}"), "a")) for n in range(3)]
    await asyncio.sleep(0)
    assert order == ["a0"]
    assert gate.waiting == 2  # the second place is kept
    b = asyncio.ensure_future(gate.run(lambda: hold("b0"), "b"))
    await asyncio.sleep(0)
    assert order == ["a0", "b0"]
    release.set()
    await asyncio.gather(*a, b)
    assert order == ["a0", "b0", "a1", "a2"]


async def test_a_call_cancelled_while_it_waits_or_once_given_a_place_leaves_no_place_taken() -> None:
    """A client that hangs up while its call waits for the gate: its turn leaves the queue,
    and a place handed to it just before is handed on, not kept for ever."""
    gate = Gate(1, 1000, wait=10)
    release = asyncio.Event()

    async def hold() -> str:
        await release.wait()
        return "held"

    async def quick() -> str:
        return "ran"

    first = asyncio.ensure_future(gate.run(hold, "a"))
    await asyncio.sleep(0)
    waiting = asyncio.ensure_future(gate.run(quick, "b"))
    await asyncio.sleep(0)
    assert gate.waiting == 1
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert gate.waiting == 0
    given = asyncio.ensure_future(gate.run(quick, "c"))
    await asyncio.sleep(0)
    release.set()
    assert await first == "held"  # its end handed the place to "c", which has not run yet
    assert gate.waiting == 0
    given.cancel()
    with pytest.raises(asyncio.CancelledError):
        await given
    assert await asyncio.wait_for(gate.run(quick, "d"), 1) == "ran"  # the place came back


async def test_calls_beyond_the_rate_wait_for_the_bucket_to_refill_then_start() -> None:
    now = [0.0]
    gate = Gate(100, 50, wait=5, clock=lambda: now[0])

    async def quick() -> str:
        return "ran"

    assert await asyncio.gather(*(gate.run(quick, "a") for _ in range(50))) == ["ran"] * 50  # a second's worth
    later = [asyncio.ensure_future(gate.run(quick, user)) for user in ("a", "b")]
    await asyncio.sleep(0)
    assert gate.waiting == 2  # no start left this instant
    now[0] += 2 / 50  # two starts' worth of time
    assert await asyncio.wait_for(asyncio.gather(*later), 1) == ["ran", "ran"]
    assert gate.waiting == 0


# --- two real users through the bridge --------------------------------------------------------


def _identity(number: int) -> str:
    return f"object_id={number:08d}-0000-4000-8000-000000000000"


def test_another_users_churn_neither_evicts_nor_fetches_again_the_victims_token() -> None:
    stand_in = StandIn("mirror")
    source = TokenSource("imds", credential_factory=stand_in, limits=ServerLimits(source_rate=1e6, max_tokens=10))
    with Bridge(port=0, source=source) as bridge:
        params = {"resource": ARM, "object_id": "0a1b2c3d-0000-4000-8000-00000000f1c7"}
        first = requests.get(bridge.endpoint, params=params, headers={"Metadata": "true"}, timeout=30)
        assert first.status_code == 200
        assert stand_in.calls == 1
        with as_nobody(lambda: [_ask_all(bridge.port, [_identity(n)])[0] for n in range(40)]) as churned:
            assert churned() == [200] * 40
        assert bridge.health()["users"] == 2
        again = requests.get(bridge.endpoint, params=params, headers={"Metadata": "true"}, timeout=30)
        assert again.status_code == 200
        assert again.json()["access_token"] == first.json()["access_token"]
        assert stand_in.calls == 41  # the victim's token came from the cache
        assert source.cached == 10


class _Recording:
    """A stand-in source that notes whose identity each call is for, and holds every call until released."""

    def __init__(self) -> None:
        self.order: list[Optional[str]] = []
        self.released = threading.Event()

    def __call__(self, kind: str, parameter: Optional[str], value: Optional[str]) -> Any:
        recording = self

        class Credential:
            def get_token(self, *scopes: str) -> AccessToken:
                recording.order.append(value)
                recording.released.wait(30)
                return AccessToken(jwt(oid=value), int(time.time()) + 3600)

        return Credential()


def test_a_victims_uncached_request_waits_behind_one_of_another_users_not_its_queue() -> None:
    recording = _Recording()
    limits = ServerLimits(source_concurrency=1, source_rate=1e6, source_queue_wait=20)
    source = TokenSource("imds", credential_factory=recording, limits=limits)
    victim_id = "0a1b2c3d-0000-4000-8000-00000000f1c7"
    with Bridge(port=0, source=source) as bridge:
        answers: list[requests.Response] = []
        try:
            with as_nobody(lambda: _ask_all(bridge.port, [_identity(n) for n in range(8)])) as churned:
                _wait_until(lambda: source.waiting == 7)  # one call in the only place, seven queued
                victim = threading.Thread(
                    target=lambda: answers.append(
                        requests.get(
                            bridge.endpoint,
                            params={"resource": ARM, "object_id": victim_id},
                            headers={"Metadata": "true"},
                            timeout=30,
                        )
                    )
                )
                victim.start()
                _wait_until(lambda: source.waiting == 8)
                recording.released.set()
                victim.join(30)
                assert churned() == [200] * 8
        finally:
            recording.released.set()
    assert [answer.status_code for answer in answers] == [200]
    assert recording.order.index(victim_id) == 1  # right after the call under way; first come, first served: 8
