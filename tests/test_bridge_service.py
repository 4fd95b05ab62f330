"""``legacy-msi serve`` as a production local service, tried the way a hostile local user would.

Every test here talks to a real bridge on 127.0.0.1 over raw sockets or ``requests``; the
token source is either azure-identity's real ``ManagedIdentityCredential`` against the
emulator in its IMDS role, or a stand-in credential whose tokens carry chosen claims.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Optional

import pytest
import requests
from azure.core.credentials import AccessToken

from legacy_msi_credential.bridge import Bridge, ServerLimits, TokenSource
from legacy_msi_credential.bridge._log import OFF_LOOP
from legacy_msi_credential.emulator import Emulator, UserAssignedIdentity

from .conftest import UNKNOWN_PARAMETERS, start_cli
from .hostile import run_beside_a_remote_peer, send_in_two_segments, sockets_here, split_form_posts

ARM = "https://management.azure.com/"
ALICE = UserAssignedIdentity(client_id="0a1b2c3d-0000-4000-8000-0000000a11ce").completed()
BOB = UserAssignedIdentity(client_id="0a1b2c3d-0000-4000-8000-000000000b0b").completed()


def jwt(**claims: Any) -> str:
    def part(document: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(document).encode()).decode().rstrip("=")

    return f"{part({'typ': 'JWT', 'alg': 'none'})}.{part(claims)}."


class StandIn:
    """A synchronous stand-in for azure-identity's credentials: tokens with chosen claims.

    Args:
        claims: The token's claims; None for a token that is not a JWT; ``"mirror"`` for
            claims naming whatever identity was asked for.
        extra: Claims added to a mirrored token's (a user's, say).
        fail: Raise instead, after the delay: a source that is down.
    """

    def __init__(
        self,
        claims: Any = None,
        *,
        extra: Optional[dict[str, Any]] = None,
        delay: float = 0.0,
        hang: bool = False,
        fail: bool = False,
    ) -> None:
        self.claims = claims
        self.extra = extra or {}
        self.delay = delay
        self.hang = hang
        self.fail = fail
        self.calls = 0
        self.released = threading.Event()

    def __call__(self, kind: str, parameter: Optional[str], value: Optional[str]) -> Any:
        stand_in = self

        class Credential:
            def get_token(self, *scopes: str) -> AccessToken:
                return stand_in.get_token(parameter, value)

        return Credential()

    def get_token(self, parameter: Optional[str], value: Optional[str]) -> AccessToken:
        self.calls += 1
        if self.hang:
            self.released.wait(60)
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("the source is down")
        if self.claims == "mirror":
            claim = {"client_id": "appid", "object_id": "oid", "msi_res_id": "xms_mirid"}.get(parameter or "", "sub")
            token = jwt(**{**self.extra, claim: value or "system", "aio": "x" * 1500})  # an Azure AD token's size
        else:
            token = jwt(**self.claims) if self.claims is not None else f"opaque-{self.calls}"
        return AccessToken(token, int(time.time()) + 3600)


def run_together(client: Callable[[], None], count: int) -> None:
    """``client`` in ``count`` threads at once, waiting for all of them."""
    threads = [threading.Thread(target=client) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)


@pytest.fixture
def imds(monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    with Emulator(port=0, user_assigned=[ALICE, BOB]) as running:
        monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", running.imds_authority)
        yield running


@pytest.fixture
def bridge(imds: Emulator) -> Iterator[Bridge]:
    with Bridge(port=0, source="imds", limits=ServerLimits(client_timeout=2.0)) as running:
        yield running


def raw(port: int, data: bytes, *, timeout: float = 10.0) -> bytes:
    """Send ``data`` and read until the server closes (or ``timeout``)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                return received
            received += chunk
        raise AssertionError(f"the server kept the connection open: {received[:200]!r}")


def token_request(host: str = "127.0.0.1", extra: str = "", query: str = f"resource={ARM}") -> bytes:
    return (
        f"GET /oauth2/token?{query} HTTP/1.1\r\nHost: {host}\r\nMetadata: true\r\n{extra}Connection: close\r\n\r\n"
    ).encode()


def form_request(form: str) -> bytes:
    """A form POST of ``form`` (already encoded), as msrestazure and ms-rest-azure send one."""
    return (
        "POST /oauth2/token HTTP/1.1\r\nHost: localhost\r\nMetadata: true\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(form)}\r\nConnection: close\r\n\r\n{form}"
    ).encode()


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def body_of(answer: bytes) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    return parsed


# --- browser-proof ----------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "[::1]", "localhost:{port}", "127.0.0.1:{port}", "[::1]:1"])
def test_a_loopback_host_is_served(bridge: Bridge, imds: Emulator, host: str) -> None:
    answer = raw(bridge.port, token_request(host.format(port=bridge.port)))
    assert status_of(answer) == 200
    assert body_of(answer)["access_token"] == imds.minted_tokens[0]


@pytest.mark.parametrize(
    "host",
    [
        "evil.example",
        "evil.example:{port}",
        "localhost.evil.example",
        "127.0.0.1.nip.io:{port}",
        "localhost.",
        "0x7f.0.0.1",
        "[::ffff:10.0.0.1]",
        "10.0.0.1:{port}",
        "",
    ],
)
def test_a_foreign_host_is_refused_before_the_source_is_asked(bridge: Bridge, imds: Emulator, host: str) -> None:
    answer = raw(bridge.port, token_request(host.format(port=bridge.port)))
    assert status_of(answer) in (400, 401)  # an empty Host is the parser's 400
    assert b"access_token" not in answer
    assert imds.request_count == 0


@pytest.mark.parametrize(
    "marker",
    [
        "Origin: http://evil.example",
        "Origin: null",
        "Sec-Fetch-Site: same-origin",
        "Sec-Fetch-Dest: empty",
        "sec-fetch-user: ?1",
    ],
)
def test_what_only_a_browser_sends_is_refused(bridge: Bridge, imds: Emulator, marker: str) -> None:
    answer = raw(bridge.port, token_request(extra=marker + "\r\n"))
    assert status_of(answer) == 401
    assert body_of(answer)["error"] == "unauthorized_client"
    assert imds.request_count == 0


def test_node_fetchs_sec_fetch_mode_alone_is_served(bridge: Bridge, imds: Emulator) -> None:
    """Node's fetch (undici, msal-node's default client) sends ``sec-fetch-mode: cors`` on every
    request; a browser sends ``Sec-Fetch-Site`` and ``-Dest`` with it, which are refused above."""
    answer = raw(bridge.port, token_request(extra="sec-fetch-mode: cors\r\n"))
    assert status_of(answer) == 200, answer
    assert body_of(answer)["access_token"]


def test_a_preflight_gets_no_cors_permission(bridge: Bridge) -> None:
    answer = raw(
        bridge.port,
        b"OPTIONS /oauth2/token HTTP/1.1\r\nHost: localhost\r\nOrigin: http://evil.example\r\n"
        b"Access-Control-Request-Method: GET\r\nAccess-Control-Request-Headers: metadata\r\nConnection: close\r\n\r\n",
    )
    assert status_of(answer) >= 400
    assert b"access-control-allow" not in answer.lower()


# --- strict framing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST /oauth2/token HTTP/1.1\r\nHost: localhost\r\nMetadata: true\r\nContent-Length: +9\r\n\r\nresource=",
        b"POST /oauth2/token HTTP/1.1\r\nHost: localhost\r\nMetadata: true\r\nContent-Length: 9\r\n"
        b"Content-Length: 9\r\n\r\nresource=",
        b"POST /oauth2/token HTTP/1.1\r\nHost: localhost\r\nMetadata: true\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /oauth2/token HTTP/1.1\r\nHost: localhost\r\nMetadata: true\r\nTransfer-Encoding: xchunked\r\n\r\n"
        b"0\r\n\r\n",
        b"POST /oauth2/token HTTP/1.0\r\nHost: localhost\r\nMetadata: true\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\n",
        b"GET /oauth2/token?resource=x HTTP/1.1\nHost: localhost\nMetadata: true\n\n",
        b"GET /oauth2/token?resource=x HTTP/1.1\r\nHost: localhost\r\nMetadata: true\r\nX: a\r\n folded\r\n\r\n",
        b"GET /oauth2/token?resource=x HTTP/1.1\r\nHost: localhost\r\nHost: evil.example\r\nMetadata: true\r\n\r\n",
    ],
    ids=["plus", "two-lengths", "length-and-chunked", "xchunked", "chunked-http10", "bare-lf", "folded", "two-hosts"],
)
def test_ambiguous_framing_is_a_400_and_a_closed_connection(
    bridge: Bridge, imds: Emulator, request_bytes: bytes
) -> None:
    smuggled = f"GET /oauth2/token?resource={ARM} HTTP/1.1\r\nHost: localhost\r\nMetadata: true\r\n\r\n".encode()
    answer = raw(bridge.port, request_bytes + smuggled)  # raw() fails unless the server closes
    assert status_of(answer) == 400
    assert len(re.findall(rb"HTTP/1\.[01] [0-9]{3} ", answer)) == 1  # the request hidden behind it: never answered
    assert b"access_token" not in answer
    assert imds.request_count == 0


def test_a_form_is_judged_whole_however_its_segments_arrive(bridge: Bridge, imds: Emulator) -> None:
    """A form cut in two TCP segments (``resource=...``, then ``&client_id=...`` a moment later),
    framed by ``Content-Length`` and chunked: answered for the identity the whole form names,
    never judged on its first part (which names none: the system-assigned identity)."""
    form = f"resource={ARM}&client_id={ALICE.client_id}"
    for first, rest in split_form_posts(form, form.index("&")):
        early, answer = send_in_two_segments(bridge.port, first, rest)
        assert not early, answer
        assert status_of(answer) == 200, answer
        assert body_of(answer).get("client_id") == ALICE.client_id
    assert [request.params.get("client_id") for request in imds.requests] == [[ALICE.client_id]]  # then cached


@pytest.mark.parametrize(
    ("method", "content_type"),
    [("GET", "application/x-www-form-urlencoded"), ("POST", "application/json"), ("POST", "text/plain")],
)
def test_a_body_that_is_not_a_form_is_refused_never_ignored(
    bridge: Bridge, imds: Emulator, method: str, content_type: str
) -> None:
    """Parameters in a body the rules do not read (a GET's, a JSON document) would be lost and
    the request answered for the system-assigned identity: a 400 instead."""
    body = f"client_id={ALICE.client_id}".encode()
    request = (
        f"{method} /oauth2/token?resource={ARM} HTTP/1.1\r\nHost: localhost\r\nMetadata: true\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    answer = raw(bridge.port, request + body)
    assert status_of(answer) == 400, answer
    assert b"form POST" in answer
    assert b"access_token" not in answer
    assert imds.request_count == 0


def test_a_body_that_stops_short_is_never_judged(imds: Emulator, caplog: pytest.LogCaptureFixture) -> None:
    """A form whose rest never comes (the client waits, or closes its side): the connection
    ends at its deadline, or at once, with no answer and no traceback in the logs."""
    caplog.set_level(logging.DEBUG)
    form = f"resource={ARM}&client_id={ALICE.client_id}"
    with Bridge(port=0, limits=ServerLimits(client_timeout=0.5)) as bridge:
        for half_close in (False, True):
            for first, _ in split_form_posts(form, form.index("&")):
                with socket.create_connection(("127.0.0.1", bridge.port), timeout=10) as sock:
                    sock.sendall(first)
                    if half_close:
                        sock.shutdown(socket.SHUT_WR)
                    started = time.monotonic()
                    assert sock.recv(65536) == b""  # closed, unanswered
                    assert time.monotonic() - started < 5  # about 0.5 s: the deadline, not the read timeout
        assert bridge.connections.timed_out >= 2
    assert imds.request_count == 0
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR or record.exc_info]


def test_oversized_bodies_and_header_floods_are_refused_unread(bridge: Bridge, imds: Emulator) -> None:
    big = b"POST /oauth2/token HTTP/1.1\r\nHost: localhost\r\nMetadata: true\r\nContent-Length: 10000000\r\n\r\n"
    assert status_of(raw(bridge.port, big)) == 413
    headers = "".join(f"X-{n}: 1\r\n" for n in range(150))
    assert status_of(raw(bridge.port, token_request(extra=headers))) == 431
    chunked = (
        b"POST /oauth2/token HTTP/1.1\r\nHost: localhost\r\nMetadata: true\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"10001\r\n"
        + b"a" * 0x10001
        + b"\r\n0\r\n\r\n"
    )
    assert status_of(raw(bridge.port, chunked)) == 413
    assert imds.request_count == 0


# --- deadlines and starvation -----------------------------------------------------------------


def test_the_deadline_is_for_the_whole_request_not_each_read(imds: Emulator) -> None:
    with Bridge(port=0, limits=ServerLimits(client_timeout=0.5)) as bridge:
        sock = socket.create_connection(("127.0.0.1", bridge.port), timeout=10)
        started = time.monotonic()
        closed_after = None
        with sock:
            for byte in token_request():  # a byte every 50 ms: each read is quick, the whole is not
                try:
                    sock.sendall(bytes([byte]))
                except OSError:
                    closed_after = time.monotonic() - started
                    break
                time.sleep(0.05)
            if closed_after is None:
                sock.settimeout(5)
                assert sock.recv(1024) == b""
                closed_after = time.monotonic() - started
        assert closed_after < 3  # about 0.5 s, far less than the 5 s the trickle would take
        assert bridge.connections.timed_out >= 1
    assert imds.request_count == 0


def test_held_connections_do_not_starve_a_client_that_asks(imds: Emulator) -> None:
    limits = ServerLimits(client_timeout=30.0, max_connections=64)
    with Bridge(port=0, limits=limits) as bridge:
        requests.get(bridge.endpoint, params={"resource": ARM}, headers={"Metadata": "true"}, timeout=10)
        holders = []
        try:
            for _ in range(200):  # more than the server keeps, each sending half a request
                holder = socket.create_connection(("127.0.0.1", bridge.port), timeout=10)
                holder.sendall(b"GET /oauth2/token?resource=x HTTP/1.1\r\nHost: local")
                holders.append(holder)
            answer = requests.get(bridge.endpoint, params={"resource": ARM}, headers={"Metadata": "true"}, timeout=10)
            assert answer.status_code == 200
            assert answer.json()["access_token"] == imds.minted_tokens[0]
            assert bridge.connections.displaced >= 200 - 64
            assert len(bridge.connections) <= 64
        finally:
            for holder in holders:
                holder.close()
    assert imds.request_count == 1


# --- memory and descriptors, in a bridge process of its own ----------------------------------

_CHILD_BRIDGE = """
import dataclasses, json, resource, sys, time
from azure.core.credentials import AccessToken
from legacy_msi_credential.bridge import Bridge, ServerLimits, TokenSource

nofile, limits = int(sys.argv[1]), json.loads(sys.argv[2])
if nofile:
    resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

class Source:
    def __call__(self, kind, parameter, value):
        return self
    def get_token(self, *scopes):
        return AccessToken("e30.e30.", int(time.time()) + 3600)

source = TokenSource("imds", credential_factory=Source())
known = {field.name for field in dataclasses.fields(ServerLimits)}  # so that older code can be tried too
with Bridge(port=0, source=source, limits=ServerLimits(**{k: v for k, v in limits.items() if k in known})) as bridge:
    print(bridge.port, flush=True)
    sys.stdin.read()  # until the test closes it
    counters = bridge.connections
    print(json.dumps({"limit": counters.limit, "displaced": counters.displaced}), flush=True)
"""


class ChildBridge:
    """A bridge in a process of its own, under the descriptor limit a unit would give it:
    what it holds is its own (``VmRSS``), and what it says goes to a file."""

    def __init__(self, tmp_path: Path, nofile: int = 0, **limits: Any) -> None:
        env = {name: value for name, value in os.environ.items() if not name.startswith("COVERAGE")}
        self.stderr_path = tmp_path / "stderr"
        with self.stderr_path.open("wb") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _CHILD_BRIDGE, str(nofile), json.dumps(limits)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                env=env,
            )
        assert self.process.stdout is not None
        self.port = int(self.process.stdout.readline())

    def rss(self) -> float:
        """Resident MiB."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024  # type: ignore[union-attr]

    def stop(self) -> dict[str, int]:
        """Stop it; its counters."""
        out, _ = self.process.communicate("", timeout=30)
        counters: dict[str, int] = json.loads(out.strip().splitlines()[-1])
        return counters

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def ask(self, *, timeout: float = 5.0) -> int:
        """A token request on a new connection: its status (0 when not answered)."""
        try:
            return status_of(raw(self.port, token_request(), timeout=timeout))
        except (OSError, AssertionError, IndexError, ValueError):
            return 0

    def __enter__(self) -> ChildBridge:
        return self

    def __exit__(self, *args: object) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()


def test_incomplete_heads_are_bounded_each_and_all_together(tmp_path: Path) -> None:
    """Heads that never end: one over the head budget is refused with 431 at once, and
    connections each holding just under it are displaced, the largest first, once they hold
    ``max_pending`` together; the process grows by a few MiB, not by what they sent."""
    with ChildBridge(tmp_path, max_connections=256, max_pending=2 * 1024 * 1024) as child:
        before = child.rss()
        filler = b"X-Fill: " + b"a" * 8000 + b"\r\n"
        head = b"GET /oauth2/token?resource=x HTTP/1.1\r\nHost: localhost\r\n"
        huge: list[socket.socket] = []
        for _ in range(24):  # 199 headers of 8 KiB each, never ending: 1.6 MB a connection
            sock = socket.create_connection(("127.0.0.1", child.port), timeout=5)
            huge.append(sock)
            with contextlib.suppress(OSError):  # cut off once over the budget
                sock.sendall(head + filler * 199)
        held: list[socket.socket] = []
        for _ in range(200):  # 3 headers of 8 KiB each: under the head's budget, 4.8 MB together
            sock = socket.create_connection(("127.0.0.1", child.port), timeout=5)
            held.append(sock)
            with contextlib.suppress(OSError):
                sock.sendall(head + filler * 3)
        assert child.ask() == 200  # a token request still gets through
        during = child.rss()
        sock = huge[0]
        sock.settimeout(5)
        answer = b""
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                answer += chunk
        for sock in huge + held:
            sock.close()
        counters = child.stop()
    assert during - before < 24, (before, during)  # without the budgets: 40 to 150 MiB, more with each connection
    assert status_of(answer) == 431
    assert b"Server: legacy-msi-bridge" in answer
    assert counters["displaced"] >= 200 - 2 * 1024 * 1024 // (3 * 8010) - 1  # the rest went


def test_out_of_descriptors_other_clients_are_answered_and_the_log_stays_quiet(tmp_path: Path) -> None:
    """Under a descriptor limit lower than the connections allowed (systemd's default soft
    limit is 1,024, the connection cap 1,024), connections holding half a request each, more
    than there are descriptors: the cap is lowered to fit, other clients are answered and
    asyncio's accept() errors do not flood stderr."""
    with ChildBridge(tmp_path, nofile=384, descriptor_reserve=128) as child:
        holders: list[socket.socket] = []
        try:
            for _ in range(420):
                sock = socket.create_connection(("127.0.0.1", child.port), timeout=5)
                sock.sendall(b"GET /oauth2/token?resource=x HTTP/1.1\r\nHost: local")
                holders.append(sock)
            answers = [child.ask(timeout=3) for _ in range(5)]
        finally:
            for sock in holders:
                sock.close()
        counters = child.stop()
    assert answers == [200] * 5
    assert counters["limit"] == 384 - 128
    stderr = child.stderr()
    assert "256 connections at most, not 1024: 384 descriptors allowed (LimitNOFILE=1152" in stderr
    assert len(stderr) < 2000, stderr[:2000]


def test_a_slow_but_timely_client_outlasts_a_flood_of_silent_connections(tmp_path: Path) -> None:
    """Another process opens connections as fast as it can and sends nothing; clients that
    send their header lines 100 ms apart (0.4 s of the 10 s allowed) are all answered: the
    silent connections give way first."""
    with ChildBridge(tmp_path, max_connections=64) as child:
        stop = threading.Event()
        opened = [0]

        def flood() -> None:
            silent: list[socket.socket] = []
            while not stop.is_set():
                for _ in range(50):
                    sock = socket.socket()
                    sock.setblocking(False)
                    with contextlib.suppress(BlockingIOError):
                        sock.connect(("127.0.0.1", child.port))
                    silent.append(sock)
                opened[0] += 50
                while len(silent) > 1000:  # held until the bridge lets them go: it must displace them
                    silent.pop(0).close()
                stop.wait(0.005)
            for sock in silent:
                sock.close()

        statuses: list[int] = []

        def slow_client() -> None:
            lines = token_request().split(b"\r\n")
            try:
                with socket.create_connection(("127.0.0.1", child.port), timeout=5) as sock:
                    for line in lines[:-2]:
                        sock.sendall(line + b"\r\n")
                        stop.wait(0.1)
                    sock.sendall(b"\r\n")
                    statuses.append(status_of(sock.recv(65536)))
            except (OSError, IndexError):
                statuses.append(0)

        flooding = threading.Thread(target=flood)
        flooding.start()
        try:
            while opened[0] < 1000:  # the flood is under way
                stop.wait(0.01)
            flooded = opened[0]
            run_together(slow_client, 8)
            flooded = opened[0] - flooded
        finally:
            stop.set()
            flooding.join(10)
        counters = child.stop()
    assert flooded > 4 * 64  # while they asked, the flood could have pushed each out four times over
    assert statuses == [200] * 8
    assert counters["displaced"] > 100


def test_each_limit_names_a_test_or_benchmark_that_exists_and_shows_it() -> None:
    """docs/bridge.md's "shown by" column: every bound has one, and each names a test function
    that exists in its file, or a section that benchmarks/bridge.py prints."""
    import ast
    import dataclasses

    from legacy_msi_credential._server._limits import SHOWN_BY

    root = Path(__file__).resolve().parents[1]
    assert set(SHOWN_BY) == {item.name for item in dataclasses.fields(ServerLimits)}
    benchmark = (root / "benchmarks" / "bridge.py").read_text(encoding="utf-8")
    tests: dict[str, set[str]] = {}
    for name, references in SHOWN_BY.items():
        assert references, name
        for reference in references:
            if reference.startswith("benchmarks/bridge.py "):
                section = reference.split(" ", 1)[1].strip('"')
                assert re.search(rf'(f?"{re.escape(section)}: |\("{re.escape(section)}", )', benchmark), reference
                continue
            path, function = reference.split("::")
            if path not in tests:
                tree = ast.parse((root / path).read_text(encoding="utf-8"))
                tests[path] = {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
            assert function in tests[path], reference


def test_the_unit_and_the_docs_give_the_codes_limits() -> None:
    """The limits are written once, in ``ServerLimits``; the unit and docs/bridge.md carry the numbers."""
    from legacy_msi_credential import bridge as module
    from legacy_msi_credential._server._limits import DEFAULT_LIMITS as limits
    from legacy_msi_credential._server._limits import limits_table

    root = Path(__file__).resolve().parents[1]
    unit = dict(
        line.split("=", 1)
        for line in (root / "packaging" / "legacy-msi-serve.service").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    assert limits.unit_limits() == module.UNIT_LIMITS
    assert int(unit["LimitNOFILE"]) == module.UNIT_LIMITS["LimitNOFILE"]
    assert module.UNIT_LIMITS["LimitNOFILE"] == limits.max_connections + limits.descriptor_reserve
    assert unit["MemoryMax"] == f"{limits.memory_max // 2**20}M"
    assert limits.accept_batch * 4 <= limits.descriptor_reserve // 2  # two listeners, accepting for two passes
    assert limits.max_head < limits.max_pending < limits.memory_max // 8
    assert limits.parser_line <= limits.max_head
    docs = (root / "docs" / "bridge.md").read_text()
    generated = docs.split("<!-- limits-table:", 1)[1].split("-->\n", 1)[1].split("<!-- /limits-table -->", 1)[0]
    assert generated == limits_table(), "docs/bridge.md's table of limits is not ServerLimits' (limits_table())"
    for figure in (
        f"{limits.max_connections:,}",
        f"LimitNOFILE={module.UNIT_LIMITS['LimitNOFILE']}",
        f"MemoryMax={limits.memory_max // 2**20}M",
    ):
        assert figure in docs, figure


# --- bounded ----------------------------------------------------------------------------------


_HELD_AFTER = """
import asyncio, base64, json, sys, time, tracemalloc
from azure.core.credentials import AccessToken
from legacy_msi_credential._server._legacy import TokenAsk
from legacy_msi_credential.bridge import ServerLimits, TokenSource

class Credential:  # asynchronous, as azure-identity's credentials behind the bridge are
    def __init__(self, value):
        self.value = value
    async def get_token(self, *scopes):
        claims = base64.urlsafe_b64encode(json.dumps({"oid": self.value, "aio": "x" * 1500}).encode()).decode()
        return AccessToken("e30." + claims.rstrip("=") + ".", int(time.time()) + 3600)

source = TokenSource("imds", credential_factory=lambda k, p, v: Credential(v), limits=ServerLimits(source_rate=1e9))

async def ask(count):
    for number in range(count):
        await source.token(TokenAsk("https://management.azure.com/", "object_id", f"{number:08d}-0000-4000-8000-0"))

tracemalloc.start()
asyncio.run(ask(int(sys.argv[1])))
print(json.dumps([tracemalloc.get_traced_memory()[0], source.cached, len(source._flights), source.requests]))
"""


@pytest.mark.slow
def test_ten_thousand_identities_leave_a_bounded_cache() -> None:
    """Measured in a process of its own, where only the source allocates (no coverage tracer)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("COVERAGE")}
    result = subprocess.run(
        [sys.executable, "-c", _HELD_AFTER, "10000"], capture_output=True, text=True, check=True, env=env, timeout=120
    )
    held, cached, flights, requests_made = json.loads(result.stdout.strip().splitlines()[-1])
    assert requests_made == 10_000
    assert cached == 1000  # the least recently used left first
    assert flights == 0
    assert held < 8 * 1024 * 1024  # the README's bound: 1,000 tokens of Azure AD's size, under 8 MiB


def test_source_calls_are_capped_and_the_excess_gets_429_with_retry_after() -> None:
    # Three places, the last kept for another user: this one user holds two, which stay taken
    # until the others were answered.
    stand_in = StandIn("mirror", hang=True)
    limits = ServerLimits(source_concurrency=3, source_rate=100, source_queue_wait=0.1)
    with Bridge(port=0, source=TokenSource("imds", credential_factory=stand_in, limits=limits)) as bridge:
        answers: list[requests.Response] = []

        def client(number: int) -> None:
            answers.append(
                requests.get(
                    bridge.endpoint,
                    params={"resource": ARM, "object_id": f"{number:08d}-0000-4000-8000-000000000000"},
                    headers={"Metadata": "true"},
                    timeout=30,
                )
            )

        threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while sum(answer.status_code == 429 for answer in answers) < 6 and time.monotonic() < deadline:
            time.sleep(0.01)
        stand_in.released.set()
        for thread in threads:
            thread.join(30)
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses.count(200) == 2  # two places; the others waited 0.1 s for one, then were told to come back
    throttled = [answer for answer in answers if answer.status_code == 429]
    assert len(throttled) == 6
    assert all(answer.headers["Retry-After"] == "1" for answer in throttled)
    assert {answer.json()["error"] for answer in throttled} == {"too_many_requests"}
    assert stand_in.calls == 2


# --- only the identity asked for --------------------------------------------------------------


@pytest.mark.parametrize("parameter", ["client_id", "object_id", "msi_res_id", "mi_res_id"])
def test_identities_never_bleed_into_each_other(bridge: Bridge, imds: Emulator, parameter: str) -> None:
    """For every identity parameter: ask for one, the other and the first again; each gets its own."""
    claim = {"client_id": "appid", "object_id": "oid", "msi_res_id": "xms_mirid", "mi_res_id": "xms_mirid"}[parameter]
    field = "msi_res_id" if parameter == "mi_res_id" else parameter
    for identity in (ALICE, BOB, ALICE, BOB):
        answer = requests.get(
            bridge.endpoint,
            params={"resource": ARM, parameter: getattr(identity, field)},
            headers={"Metadata": "true"},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        claims = json.loads(base64.urlsafe_b64decode(answer.json()["access_token"].split(".")[1] + "=="))
        assert claims[claim] == getattr(identity, field)
        assert answer.json()["client_id"] == identity.client_id
    assert imds.request_count == 2  # one per identity, the repeats from the cache


def test_an_unknown_parameter_is_a_400_never_the_system_assigned_identity(bridge: Bridge, imds: Emulator) -> None:
    """The rules' allow-list, over raw sockets by GET and by form POST: a misspelled, decorated
    or differently cased identity parameter names itself and the accepted ones in a 400;
    ``mi_res_id`` with ``msi_res_id`` is a 401. The source is never asked."""
    for sent, name in UNKNOWN_PARAMETERS:
        form = f"resource={ARM}&{sent}={ALICE.client_id}"
        for request in (token_request(query=form), form_request(form)):
            answer = raw(bridge.port, request)
            assert status_of(answer) == 400, (name, answer)
            description = body_of(answer)["error_description"]
            assert f"Unknown parameter {name!r}" in description
            assert "client_id, object_id, msi_res_id, mi_res_id, api-version" in description
    both = raw(
        bridge.port, token_request(query=f"resource={ARM}&mi_res_id={ALICE.msi_res_id}&msi_res_id={ALICE.msi_res_id}")
    )
    assert (status_of(both), body_of(both)["error"]) == (401, "invalid_request")
    assert imds.request_count == 0


@pytest.mark.parametrize(
    ("parameter", "claims"),
    [
        ("client_id", {"appid": BOB.client_id, "oid": BOB.object_id}),
        ("object_id", {"appid": BOB.client_id, "oid": BOB.object_id}),
        ("msi_res_id", {"xms_mirid": BOB.msi_res_id}),
        ("client_id", None),  # not a JWT: it cannot show whose it is
        ("object_id", {"appid": ALICE.client_id}),  # no oid claim
    ],
)
def test_a_token_for_another_identity_is_401_naming_what_came_back(
    parameter: str, claims: Optional[dict[str, Any]]
) -> None:
    source = TokenSource("imds", credential_factory=StandIn(claims))
    with Bridge(port=0, source=source) as bridge:
        answer = requests.get(
            bridge.endpoint,
            params={"resource": ARM, parameter: getattr(ALICE, parameter)},
            headers={"Metadata": "true"},
            timeout=30,
        )
    assert answer.status_code == 401
    assert answer.json()["error"] == "unauthorized_client"
    description = answer.json()["error_description"]
    assert getattr(ALICE, parameter) in description
    if claims and parameter != "object_id":
        assert str(next(iter(claims.values()))) in description
    assert source.cached == 0


#: The Azure CLI's own public client id: the ``appid`` of every token ``az`` gets for its user.
AZ_APP = "04b07795-8ddb-461a-bbee-02f9e1bf7b46"
#: What a signed-in user's token carries, each kind of sign on its own (a v1 token, a v2 token,
#: and tokens showing a user by one mark only); values a user could be identified by included.
USER_TOKENS = {
    "v1": {"idtyp": "user", "upn": "dev@example.com", "scp": "user_impersonation", "appidacr": "0", "sub": "pw"},
    "v2": {"ver": "2.0", "name": "A Developer", "preferred_username": "dev@example.com", "scp": "x"},
    "idtyp": {"idtyp": "user"},
    "public-client": {"appidacr": "0"},
    "pairwise-sub": {"sub": "a-pairwise-subject"},
}


@pytest.mark.parametrize("kind", ["imds", "default"])
def test_a_users_token_never_answers_a_managed_identity_request(kind: str) -> None:
    """Whatever identity is asked for, however its identifier is spelled: a token that names
    it (as the Azure CLI's ``appid`` names ``client_id=04b07795-...``) but is a signed-in
    user's is refused, and so is one whose claims cannot be read. One bridge; the stand-in
    changes its tokens between rounds (a refused token is not kept)."""
    ask_for: list[dict[str, str]] = [{}, {"client_id": AZ_APP}, {"client_id": AZ_APP.upper()}]
    if kind == "imds":  # the default source serves no other identity parameter
        for parameter in ("object_id", "msi_res_id", "mi_res_id"):
            value = getattr(ALICE, "msi_res_id" if parameter == "mi_res_id" else parameter)
            ask_for += [{parameter: value}, {parameter: value.upper()}]
    stand_in = StandIn("mirror")
    source = TokenSource(kind, credential_factory=stand_in, limits=ServerLimits(source_rate=1e9))  # no pacing here
    with Bridge(port=0, source=source) as bridge:
        for user in [*USER_TOKENS, None]:
            if user is None:
                stand_in.claims = None  # not a JWT
            else:  # claims naming the identity asked for, and a user's
                stand_in.extra = {"oid": "u-1", "sub": "u-1", **USER_TOKENS[user]}
            for identity in ask_for:
                answer = requests.get(
                    bridge.endpoint, params={"resource": ARM, **identity}, headers={"Metadata": "true"}, timeout=30
                )
                assert (answer.status_code, answer.json()["error"]) == (401, "unauthorized_client"), (user, identity)
                description = answer.json()["error_description"]
                if user is None:
                    assert "not a JWT" in description
                else:  # the token names the identity asked for: what refuses it is that it is a user's
                    assert "only a managed identity's token is handed on" in description
                assert "dev@example.com" not in description
                assert "A Developer" not in description
        assert stand_in.calls == len(ask_for) * (len(USER_TOKENS) + 1)  # the source answered each time, refused
        assert bridge.source.cached == 0


def test_the_cli_source_hands_on_the_signed_in_users_token() -> None:
    """Its point: the signed-in account (a user's token, or one that is not a JWT), for
    system-assigned requests, the only ones it serves."""
    stand_in = StandIn(USER_TOKENS["v1"])
    with Bridge(port=0, source=TokenSource("cli", credential_factory=stand_in)) as bridge:
        for claims, resource in ((USER_TOKENS["v1"], ARM), (None, "https://vault.azure.net")):
            stand_in.claims = claims
            answer = requests.get(
                bridge.endpoint, params={"resource": resource}, headers={"Metadata": "true"}, timeout=30
            )
            assert answer.status_code == 200, answer.text
        refused = requests.get(
            bridge.endpoint, params={"resource": ARM, "client_id": AZ_APP}, headers={"Metadata": "true"}, timeout=30
        )
    assert refused.status_code == 400
    assert stand_in.calls == 2


def test_the_default_source_does_not_fall_through_to_the_signed_in_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No IMDS answers (the fixture's dead port), so azure-identity's chain reaches ``az``: its token is refused."""
    user_token = jwt(appid=AZ_APP, idtyp="user", upn="dev@example.com", scp="user_impersonation", oid="u")
    folder = tmp_path / "bin"
    folder.mkdir()
    az = folder / "az"
    az.write_text(
        f"#!{sys.executable}\nimport json, time\n"
        f"open({str(tmp_path / 'calls')!r}, 'a').write('az\\n')\n"
        f"print(json.dumps({{'accessToken': {user_token!r}, 'expiresOn': '2099-01-01 00:00:00.000000', "
        "'expires_on': int(time.time()) + 3600, 'subscription': 's', 'tenant': 't', 'tokenType': 'Bearer'}))\n"
    )
    az.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    with Bridge(port=0, source="default") as bridge:
        answers = [
            requests.get(
                bridge.endpoint, params={"resource": ARM, **identity}, headers={"Metadata": "true"}, timeout=60
            )
            for identity in (
                {"client_id": "0a1b2c3d-0000-4000-8000-00000000dead"},
                {},
                {"client_id": AZ_APP},  # the token's own appid, in either spelling
                {"client_id": AZ_APP.upper()},
            )
        ]
    assert (tmp_path / "calls").read_text().count("az") == 4  # the chain did reach az every time
    for answer in answers:
        assert answer.status_code == 401, answer.text
        assert answer.json()["error"] == "unauthorized_client"
    assert AZ_APP in answers[0].json()["error_description"]
    for answer in answers[1:]:
        assert "signed-in user's token" in answer.json()["error_description"]


# --- health, logs, stop -----------------------------------------------------------------------


def test_the_access_log_has_one_line_per_request_and_no_secret(
    bridge: Bridge, caplog: pytest.LogCaptureFixture
) -> None:
    """The bridge's one test of its logs: nothing at any level, in any logger, shows a token
    (the credentials' and the CLI's are in test_hostile.py, section 2)."""
    caplog.set_level(logging.DEBUG)
    token = requests.get(
        bridge.endpoint,
        params={"resource": ARM, "client_id": ALICE.client_id},
        headers={"Metadata": "true"},
        timeout=30,
    ).json()["access_token"]
    requests.get(bridge.endpoint, params={"resource": ARM}, timeout=30)  # no Metadata header
    assert OFF_LOOP.flush()  # the log is written from its own thread
    lines = [r.getMessage() for r in caplog.records if r.name == "legacy_msi_credential.bridge.access"]
    assert len(lines) == 2
    assert lines[0].startswith("GET /oauth2/token client_id 200 ")
    assert lines[0].endswith(" ms")
    assert lines[1].startswith("GET /oauth2/token - 400 ")
    assert all(ALICE.client_id not in line and "resource" not in line for line in lines)
    payload, signature = token.split(".")[1:]
    assert signature  # the emulator signs (cryptography is a test requirement)
    assert payload not in caplog.text
    assert signature not in caplog.text


def test_the_port_in_use_is_named(imds: Emulator) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=rf"port {port} .* in use: the legacy managed identity extension"):
            Bridge(port=port).start()


def test_stop_answers_what_is_in_flight_with_503_when_the_source_hangs() -> None:
    stand_in = StandIn(hang=True)
    bridge = Bridge(
        port=0, source=TokenSource("imds", credential_factory=stand_in), limits=ServerLimits(stop_grace=0.5)
    )
    bridge.start()
    answers: list[requests.Response] = []
    client = threading.Thread(
        target=lambda: answers.append(
            requests.get(bridge.endpoint, params={"resource": ARM}, headers={"Metadata": "true"}, timeout=30)
        )
    )
    try:
        client.start()
        deadline = time.monotonic() + 10
        while stand_in.calls == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        started = time.monotonic()
        bridge.stop()
        stopped_in = time.monotonic() - started
        client.join(10)
    finally:
        stand_in.released.set()
    assert stopped_in < 5  # grace 0.5 s, then 503 and closing
    assert [answer.status_code for answer in answers] == [503]
    assert answers[0].headers["Retry-After"] == "5"
    with pytest.raises(requests.ConnectionError):
        requests.get(bridge.endpoint, params={"resource": ARM}, headers={"Metadata": "true"}, timeout=5)


@pytest.mark.slow
def test_sigterm_with_a_hung_source_exits_within_10_s_and_removes_the_settings_file(tmp_path: Path) -> None:
    settings = tmp_path / "ManagedIdentity-Settings"
    with Emulator(port=0) as hung:
        from legacy_msi_credential.emulator import Fault

        hung.add_faults(Fault.hang(60))
        serve = ("serve", "--port", "0", "--imds-url", hung.imds_authority, "--write-settings", str(settings))
        with start_cli(*serve) as process:
            try:
                assert process.stdout is not None
                endpoint = process.stdout.readline().split(" at ", 1)[1].split(",", 1)[0]
                answers: list[requests.Response] = []
                client = threading.Thread(
                    target=lambda: answers.append(
                        requests.get(endpoint, params={"resource": ARM}, headers={"Metadata": "true"}, timeout=30)
                    )
                )
                client.start()
                assert hung.wait_for_requests(1, timeout=10)
                started = time.monotonic()
                process.send_signal(signal.SIGTERM)
                out, err = process.communicate(timeout=15)
                exited_in = time.monotonic() - started
                client.join(10)
            finally:
                if process.poll() is None:
                    process.kill()
                    process.communicate()
    assert process.returncode == 0, err
    assert exited_in < 10
    assert [answer.status_code for answer in answers] == [503]
    assert not settings.exists()
    assert out.strip().endswith("Stopped.")


def test_the_health_path_answers_loopback_only_even_with_allow_remote(tmp_path: Path) -> None:
    """In a private network namespace, 10.99.0.1 stands in for a remote client."""
    script = tmp_path / "remote.py"
    script.write_text(
        "import json, socket\n"
        "from legacy_msi_credential.bridge import Bridge, TokenSource\n"
        "class S:\n"
        "    def __call__(self, *a): return self\n"
        "    def get_token(self, *s):\n"
        "        from azure.core.credentials import AccessToken; return AccessToken('t', 2**31)\n"
        "def ask(bridge, source, path):\n"
        "    with socket.create_connection(('10.99.0.1' if source else '127.0.0.1', bridge.port),"
        " source_address=(source or '127.0.0.1', 0)) as s:\n"
        "        s.sendall(f'GET {path} HTTP/1.1\\r\\nHost: localhost\\r\\nMetadata: true\\r\\n"
        "Connection: close\\r\\n\\r\\n'.encode())\n"
        "        data = b''\n"
        "        while chunk := s.recv(4096): data += chunk\n"
        "    return int(data.split(b' ')[1])\n"
        "with Bridge('0.0.0.0', 0, allow_remote=True, source=TokenSource('imds', credential_factory=S())) as b:\n"
        "    print(json.dumps([ask(b, '10.99.0.1', '/healthz'), ask(b, '10.99.0.1', '/oauth2/token?resource=x'),"
        " ask(b, None, '/healthz')]))\n"
    )
    remote_health, remote_token, local_health = run_beside_a_remote_peer(script)
    assert remote_health == 401
    assert remote_token == 401
    assert local_health == 200


def test_nothing_listens_after_stop(imds: Emulator) -> None:
    bridge = Bridge(port=0).start()
    port = bridge.port
    bridge.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    with socket.socket() as again:  # and the port is free to take again
        again.bind(("127.0.0.1", port))


def test_requests_arriving_as_a_flight_ends_find_its_token() -> None:
    """Clients that keep asking while the first source request ends: still one source request."""
    stand_in = StandIn("mirror", delay=0.2)
    with Bridge(port=0, source=TokenSource("imds", credential_factory=stand_in)) as bridge:
        stop = time.monotonic() + 1.0
        statuses: list[int] = []
        clients_answered: list[int] = []

        def client() -> None:
            with requests.Session() as session:
                asked = 0
                while asked == 0 or time.monotonic() < stop:  # once at least, however late it starts
                    answer = session.get(bridge.endpoint, params={"resource": ARM}, headers={"Metadata": "true"})
                    statuses.append(answer.status_code)
                    asked += 1
                clients_answered.append(asked)

        run_together(client, 16)
    assert len(clients_answered) == 16  # every client was answered
    assert set(statuses) == {200}
    assert stand_in.calls == 1


@pytest.mark.parametrize("parameter", [None, "client_id", "object_id", "msi_res_id"])
def test_a_failure_is_shared_by_the_clients_waiting_on_it_and_not_kept(parameter: Optional[str]) -> None:
    """Twelve clients asking at once while the source fails: one source call, twelve 500s;
    the failure is not cached, so the next client asks again. Another identity has its own call."""
    stand_in = StandIn(delay=0.3, fail=True)
    params = {"resource": ARM, **({parameter: getattr(ALICE, parameter)} if parameter else {})}
    with Bridge(port=0, source=TokenSource("imds", credential_factory=stand_in)) as bridge:
        barrier = threading.Barrier(12)
        statuses: list[int] = []

        def client() -> None:
            barrier.wait()
            answer = requests.get(bridge.endpoint, params=params, headers={"Metadata": "true"}, timeout=30)
            statuses.append(answer.status_code)

        run_together(client, 12)
        assert statuses == [500] * 12
        assert stand_in.calls == 1
        again = requests.get(bridge.endpoint, params=params, headers={"Metadata": "true"}, timeout=30)
        assert again.status_code == 500
        assert stand_in.calls == 2
        other = {"resource": ARM, "client_id": BOB.client_id}
        assert requests.get(bridge.endpoint, params=other, headers={"Metadata": "true"}, timeout=30).status_code == 500
        assert stand_in.calls == 3


# --- as a systemd service: the notification protocol --------------------------------------------


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A folder whose paths fit a Unix socket's address (108 bytes), wherever ``TMPDIR`` points:
    nox, for one, puts it deep inside the session's folder."""
    folder = Path(tempfile.mkdtemp(prefix="lmc-", dir="/tmp" if os.path.isdir("/tmp") else None))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_readiness_and_the_watchdog_reach_systemds_socket(imds: Emulator, short_dir: Path) -> None:
    """A real datagram socket stands in for systemd's ``$NOTIFY_SOCKET`` (a path, as systemd's is)."""
    address = str(short_dir / "notify")
    systemd = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    systemd.bind(address)
    systemd.settimeout(10)
    env = {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "200000"}  # a ping every 0.1 s
    serve = ("serve", "--port", "0", "--imds-url", imds.imds_authority)
    with systemd, start_cli(*serve, env=env, text=False) as process:
        try:
            assert process.stdout is not None
            endpoint = process.stdout.readline().decode().split(" at ", 1)[1].split(",", 1)[0]
            ready = systemd.recv(4096).decode().split("\n")
            while ready == ["WATCHDOG=1"]:  # the serving loop may ping before the command says it is ready
                ready = systemd.recv(4096).decode().split("\n")
            assert ready[0] == "READY=1"
            assert ready[1] == f"STATUS=serving {endpoint} from the imds source"
            answer = requests.get(endpoint, params={"resource": ARM}, headers={"Metadata": "true"}, timeout=30)
            assert answer.status_code == 200  # ready meant ready
            pings = [systemd.recv(4096) for _ in range(5)]
            assert set(pings) == {b"WATCHDOG=1"}
            process.send_signal(signal.SIGTERM)
            message = systemd.recv(4096)
            while message == b"WATCHDOG=1":  # until it says it stops; a timeout fails the test
                message = systemd.recv(4096)
            assert message == b"STOPPING=1"
            process.communicate(timeout=15)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert process.returncode == 0


def test_the_notifier_speaks_to_abstract_sockets_and_is_silent_outside_systemd() -> None:
    from legacy_msi_credential.bridge import Notifier

    name = f"legacy-msi-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind("\0" + name)
        systemd.settimeout(5)
        notifier = Notifier.from_environment({"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "30000000"})
        assert notifier.ping_interval == 15
        assert notifier.ready("up")
        assert systemd.recv(100) == b"READY=1\nSTATUS=up"
    silent = Notifier.from_environment({})
    assert silent.address is None
    assert silent.ping_interval is None
    assert not silent.ready()
    other = Notifier.from_environment({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"})
    assert other.ping_interval is None  # the watchdog is another process's


def test_the_access_log_cannot_be_forged_by_a_path(bridge: Bridge, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="legacy_msi_credential.bridge.access")
    raw(bridge.port, b"GET /x%0A2026-01-01%20GET%20/oauth2/token%20client_id%20200 HTTP/1.1\r\nHost: localhost\r\n"
        b"Connection: close\r\n\r\n")  # fmt: skip
    assert OFF_LOOP.flush()
    lines = [r.getMessage() for r in caplog.records if r.name == "legacy_msi_credential.bridge.access"]
    assert len(lines) == 1
    assert "\n" not in lines[0]
    assert lines[0].startswith("GET /x?2026-01-01 GET /oauth2/token client_id 200 - 401 ")


async def test_every_source_the_cli_offers_is_one_the_bridge_can_make() -> None:
    """The names live in _constants (the CLI lists them without importing the bridge); each one
    makes a credential of azure-identity's, closed again without a request."""
    from legacy_msi_credential._constants import BRIDGE_SOURCES
    from legacy_msi_credential.bridge._source import _identity_credential

    made = []
    for kind in BRIDGE_SOURCES:
        credential = _identity_credential(kind, None, None)
        assert type(credential).__module__.startswith("azure.identity.aio"), (kind, type(credential))
        made.append(type(credential).__name__)
        await credential.close()
    assert made == ["ManagedIdentityCredential", "AzureCliCredential", "DefaultAzureCredential"]
    with pytest.raises(ValueError, match="source must be one of imds, cli, default"):
        TokenSource("nowhere")


# --- the serving loop never blocks ------------------------------------------------------------


def answer_on(sock: socket.socket, request: bytes) -> bytes:
    """Send ``request`` on a kept-alive connection and read exactly one answer."""
    sock.sendall(request)
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection"
        received += chunk
    head, body = received.split(b"\r\n\r\n", 1)
    length = int(re.search(rb"(?i)\r\ncontent-length: *([0-9]+)", head).group(1))  # type: ignore[union-attr]
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection"
        body += chunk
    return head + b"\r\n\r\n" + body


@pytest.mark.slow
def test_a_stderr_nobody_reads_does_not_stop_the_bridge(imds: Emulator) -> None:
    """``legacy-msi serve`` with its access log on, stderr a pipe of one page that is never
    read: before, the loop blocked in the log's write once the pipe was full."""
    import fcntl

    serve = ("serve", "--port", "0", "--imds-url", imds.imds_authority)
    with start_cli(*serve, text=False) as process:
        try:
            assert process.stdout is not None
            assert process.stderr is not None
            fcntl.fcntl(process.stderr.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), 4096)
            port = int(process.stdout.readline().decode().split(" at ", 1)[1].split("/")[2].split(":")[1])
            request = token_request(extra="").replace(b"Connection: close\r\n", b"")
            slowest = 0.0
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                assert status_of(answer_on(sock, request)) == 200  # the source's one request, then cached
                for _ in range(2000):
                    started = time.monotonic()
                    assert status_of(answer_on(sock, request)) == 200
                    slowest = max(slowest, time.monotonic() - started)
                health = body_of(answer_on(sock, b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"))
            process.send_signal(signal.SIGTERM)
            _, err = process.communicate(timeout=15)  # reading stderr at last lets it finish
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert slowest < 1.0
    assert health["log_lines_dropped"] > 0  # the queue filled, and dropped rather than waited
    assert process.returncode == 0
    lines = err.decode().splitlines()
    assert len(lines) < 2000
    assert re.search(r"legacy-msi: warning: [0-9]+ log lines were dropped", lines[-1]), lines[-3:]


def test_a_notify_socket_nobody_reads_does_not_delay_answers(short_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    """systemd's socket stands in, never read, with the smallest receive buffer; the watchdog
    wants a ping every millisecond. Before, the loop blocked in ``sendto`` once it was full."""
    from legacy_msi_credential.bridge import Notifier

    caplog.set_level(logging.WARNING, logger="legacy_msi_credential.bridge")
    address = str(short_dir / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
        systemd.bind(address)
        notifier = Notifier.from_environment({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "2000"})
        source = TokenSource("imds", credential_factory=StandIn("mirror"))
        with Bridge(port=0, source=source, notifier=notifier) as bridge, requests.Session() as session:
            slowest = 0.0
            for _ in range(200):
                started = time.monotonic()
                answer = session.get(bridge.endpoint, params={"resource": ARM}, headers={"Metadata": "true"}, timeout=5)
                assert answer.status_code == 200
                slowest = max(slowest, time.monotonic() - started)
        assert OFF_LOOP.flush()
    assert slowest < 1.0
    assert notifier.dropped > 0
    said = [r.getMessage() for r in caplog.records if "notification socket" in r.getMessage()]
    assert len(said) == 1  # said once, however many were dropped
    assert any(f"{notifier.dropped} notifications to systemd were dropped" in r.getMessage() for r in caplog.records)


# --- hygiene: what a malformed request costs, and what every answer says -------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


MALFORMED = [
    b"GET /oauth2/token?resource=https://vault.example/&client_id=5ec7e7-c11e HTTP/1.1\r\nHost: localhost\r\n"
    b"X: a\x00b\r\n\r\n",  # a NUL in a header
    b"GET /oauth2/token?resource=https://vault.example/&client_id=5ec7e7-c11e HTTP/1.1\r\nMetadata: true\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40,  # TLS, not HTTP at all
    b"GET /oauth2/token?resource=https://vault.example/&client_id=5ec7e7-c11e HTTP/1.1\r\nHost: localhost\r\n"
    b"Content-Length: +5\r\n\r\nhello",
]


def test_malformed_requests_cost_one_rate_limited_line_and_never_say_what_was_sent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before, each was a traceback from aiohttp's parser (11 lines), some quoting the target."""
    from legacy_msi_credential.bridge._app import MALFORMED_REPORTS

    caplog.set_level(logging.DEBUG)
    clock = Clock()
    source = TokenSource("imds", credential_factory=StandIn("mirror"))
    with Bridge(port=0, source=source, clock=clock) as bridge:
        for _ in range(8):
            for request in MALFORMED:
                assert status_of(raw(bridge.port, request)) == 400
        assert OFF_LOOP.flush()
        within_the_minute = [r for r in caplog.records if r.levelno >= logging.WARNING]
        clock.now += 61
        assert status_of(raw(bridge.port, MALFORMED[0])) == 400
        counted = bridge.health()["malformed_requests"]
        assert OFF_LOOP.flush()
    assert len(within_the_minute) == MALFORMED_REPORTS
    assert all(r.getMessage().startswith("answered 400 to a malformed request (") for r in within_the_minute)
    later = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING][MALFORMED_REPORTS:]
    assert later == ["22 more malformed requests in the last 60 s were not logged", later[1]]
    assert all(r.exc_info is None and r.exc_text is None for r in caplog.records)
    assert "Traceback" not in caplog.text
    assert "5ec7e7" not in caplog.text
    assert "vault.example" not in caplog.text
    assert counted == 33


KINDS_OF_ANSWER = {
    "token": (token_request(), 200),
    "refusal": (b"GET /oauth2/token?resource=x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", 400),
    "health": (b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", 200),
    "unknown path": (b"GET /nothing HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", 401),
    "method": (b"DELETE /oauth2/token HTTP/1.1\r\nHost: localhost\r\nMetadata: true\r\nConnection: close\r\n\r\n", 405),
    "nul in a header": (MALFORMED[0], 400),
    "no host": (MALFORMED[1], 400),
    "not http": (MALFORMED[2], 400),
    "framing": (MALFORMED[3], 400),
    "too many headers": (token_request(extra="".join(f"X-{n}: 1\r\n" for n in range(150))), 431),
}


@pytest.mark.parametrize("kind", KINDS_OF_ANSWER)
def test_every_answer_says_legacy_msi_bridge_and_nothing_of_aiohttp(kind: str) -> None:
    request, status = KINDS_OF_ANSWER[kind]
    source = TokenSource("imds", credential_factory=StandIn("mirror"))
    with Bridge(port=0, source=source) as bridge:
        answer = raw(bridge.port, request)
    head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    assert status_of(answer) == status
    assert re.findall(r"(?im)^server: *(.*?)\r?$", head) == ["legacy-msi-bridge"]
    assert b"aiohttp" not in answer.lower()
    assert b"python/" not in answer.lower()
    document = body_of(answer)  # JSON, always
    assert (
        ("access_token" in document or "status" in document)
        if status == 200
        else set(document)
        == {
            "error",
            "error_description",
        }
    )


@pytest.mark.parametrize(
    "header",
    [
        "Host: evil.test",
        "Origin: http://evil.test",
        "Sec-Fetch-Site: cross-site",
        "Sec-Fetch-Dest: document",
        "Via: 1.1 proxy",
        "X-Real-IP: 203.0.113.9",
        "X-Forwarded-For: 203.0.113.9",
    ],
)
def test_the_health_path_obeys_the_rules_of_the_token_path(bridge: Bridge, header: str) -> None:
    host = "" if header.startswith("Host:") else "Host: localhost\r\n"
    answer = raw(bridge.port, f"GET /healthz HTTP/1.1\r\n{host}{header}\r\nConnection: close\r\n\r\n".encode())
    assert status_of(answer) in (400, 401)
    document = body_of(answer)
    assert set(document) == {"error", "error_description"}  # no source, counts or connections
    token = raw(bridge.port, token_request(host="evil.test") if host == "" else token_request(extra=header + "\r\n"))
    assert (status_of(token), body_of(token)) == (status_of(answer), document)  # one rule, the same answer


RELAYING_HEADERS = [
    "Via: 1.1 proxy.example",
    "Forwarded: for=203.0.113.9",
    "X-Forwarded-For: 203.0.113.9",
    "X-Forwarded-Host: evil.example",
    "X-Forwarded-Proto: https",
    "X-Forwarded-Port: 443",
    "X-Real-IP: 203.0.113.9",
    "X-Client-IP: 203.0.113.9",
    "True-Client-IP: 203.0.113.9",
    "X-Cluster-Client-IP: 203.0.113.9",
    "CF-Connecting-IP: 203.0.113.9",
    "X-Original-Forwarded-For: 203.0.113.9",
    "Fastly-Client-IP: 203.0.113.9",
    "x-envoy-external-address: 203.0.113.9",
]


def test_every_header_a_relaying_proxy_adds_is_refused(bridge: Bridge, imds: Emulator) -> None:
    for header in RELAYING_HEADERS:
        answer = raw(bridge.port, token_request(extra=header + "\r\n"))
        assert status_of(answer) == 400, header
        assert header.split(":")[0] in body_of(answer)["error_description"]
    assert imds.request_count == 0
    assert status_of(raw(bridge.port, token_request())) == 200  # and without one, served


# --- life cycle: what a start that fails leaves, and the limits it cannot have ---------------------


def test_a_start_that_fails_in_the_serving_loop_holds_nothing_and_can_be_tried_again() -> None:
    """Limits that cannot hold (a head budget of 0) fail in the serving loop, after the
    addresses were bound: the error is the caller's, and no socket, thread or held logger
    stays behind."""
    logger = logging.getLogger("legacy_msi_credential.bridge")
    filters = list(logger.filters)
    threads = {thread.name for thread in threading.enumerate()}
    before = sockets_here()
    source = TokenSource("imds", credential_factory=StandIn("mirror"))
    bridge = Bridge(port=0, source=source, limits=ServerLimits(max_head=0))
    with pytest.raises(ValueError, match=r"max_pending \([0-9]+\) must be at least max_head \(0\)"):
        bridge.start()
    assert not bridge.running
    assert sockets_here() <= before  # both listening sockets and the loop's own were closed
    assert "legacy-msi-bridge" not in {thread.name for thread in threading.enumerate()} - threads
    assert logger.filters == filters  # its records are its handlers' again
    bridge.limits = ServerLimits()
    with bridge:
        assert requests.get(bridge.endpoint + "?resource=" + ARM, headers={"Metadata": "true"}, timeout=5).ok


def test_a_bridge_says_whether_it_runs_and_refuses_what_needs_it_running() -> None:
    with pytest.raises(ValueError, match="port must be 0 to 65535, not 65536"):
        Bridge(port=65536)
    bridge = Bridge(port=0, source=TokenSource("imds", credential_factory=StandIn("mirror")))
    assert not bridge.running
    assert bridge.wait(0)  # not running: nothing to wait for
    with pytest.raises(RuntimeError, match="not running"):
        _ = bridge.port
    with pytest.raises(RuntimeError, match="not running"):
        bridge.health()
    with bridge:
        assert bridge.running
        assert not bridge.wait(0)
        with pytest.raises(RuntimeError, match="already running"):
            bridge.start()
        assert bridge.health()["status"] == "ok"
    assert not bridge.running
    assert bridge.wait(0)
    bridge.stop()  # a second stop is harmless


def test_a_descriptor_limit_that_cannot_be_raised_caps_the_connections_and_says_how_to_lift_it() -> None:
    """A unit with LimitNOFILE=64 (hard): the soft limit goes up to it, the connections
    stay ``reserve`` below it, and the warning names the setting and the value that lifts it."""
    code = (
        "import logging, resource\n"
        "from legacy_msi_credential.bridge import descriptor_cap\n"
        "logging.basicConfig(format='%(levelname)s %(message)s')\n"
        "print(descriptor_cap(1000, 16), *resource.getrlimit(resource.RLIMIT_NOFILE))\n"
    )
    result = subprocess.run(
        ["prlimit", "--nofile=32:64", sys.executable, "-c", code], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["48", "64", "64"]
    assert "WARNING 48 connections at most, not 1000: 64 descriptors allowed (LimitNOFILE=1016 or more lifts it)" in (
        result.stderr
    )


class _ClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose ``time()`` is set by the test."""

    now = 1000.0

    def time(self) -> float:
        return self.now


def test_accept_failures_are_reported_once_an_interval_with_a_count_and_other_errors_as_asyncio_would(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from legacy_msi_credential.bridge import _AcceptReports

    interval = 10.0
    caplog.set_level(logging.INFO)
    report = _AcceptReports(interval)
    loop = _ClockLoop()
    try:
        out_of_descriptors = {
            "message": "socket.accept() out of system resource",
            "exception": OSError(24, "Too many open files"),
        }
        for _ in range(500):  # asyncio's retries in one interval: one line
            report(loop, out_of_descriptors)
        loop.now += interval
        report(loop, out_of_descriptors)
        report(loop, {"message": "Task exception was never retrieved"})
    finally:
        loop.close()
    said = [(r.name, r.levelname, r.getMessage()) for r in caplog.records]
    assert said == [
        (
            "legacy_msi_credential.bridge",
            "WARNING",
            "cannot accept connections: [Errno 24] Too many open files (0 more times since the last report); "
            "raise LimitNOFILE=",
        ),
        (
            "legacy_msi_credential.bridge",
            "WARNING",
            "cannot accept connections: [Errno 24] Too many open files (499 more times since the last report); "
            "raise LimitNOFILE=",
        ),
        ("asyncio", "ERROR", "Task exception was never retrieved"),
    ]


def _until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.002)


def test_unfinished_heads_over_the_pending_budget_displace_the_largest_other_first() -> None:
    source = TokenSource("imds", credential_factory=StandIn("mirror"))
    limits = ServerLimits(max_head=1024, max_pending=2048)
    head = f"GET /oauth2/token?resource={ARM} HTTP/1.1\r\nHost: localhost\r\nX-Fill: {'a' * 880}".encode()
    assert 2 * len(head) - 100 < limits.max_pending < 2 * len(head) - 100 + 300
    with Bridge(port=0, source=source, limits=limits) as bridge:
        clients = [socket.create_connection(("127.0.0.1", bridge.port), timeout=5) for _ in range(3)]
        try:
            clients[0].sendall(head)
            _until(lambda: bridge.connections.pending == len(head))
            clients[1].sendall(head[:-100])
            _until(lambda: bridge.connections.pending == 2 * len(head) - 100)
            clients[2].sendall(head[:300])  # past max_pending: the largest other goes, not the newest
            assert clients[0].recv(1) == b""
            assert bridge.connections.displaced == 1
            assert bridge.connections.pending == len(head) - 100 + 300
            for client in clients[1:]:
                client.sendall(b"\r\nMetadata: true\r\nConnection: close\r\n\r\n")
                assert status_of(client.recv(65536)) == 200
        finally:
            for client in clients:
                client.close()


def _form_head(length: int) -> bytes:
    return (
        "POST /oauth2/token HTTP/1.1\r\nHost: localhost\r\nMetadata: true\r\n"
        f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def test_bodies_still_arriving_count_in_the_pending_budget_and_the_largest_gives_way() -> None:
    """A body trickling in is held as a head is: a head and 3,400 bytes of an unfinished body,
    and 900 bytes of an unfinished head, pass ``max_pending`` together, so the body's
    connection, holding the most, gives way. Without bodies in the budget, a thousand connections each trickling 64 KiB
    would hold 64 MiB, half the unit's ``MemoryMax``, with nothing displaced."""
    source = TokenSource("imds", credential_factory=StandIn("mirror"))
    limits = ServerLimits(max_head=1024, max_body=4096, max_pending=4096)
    head = f"GET /oauth2/token?resource={ARM} HTTP/1.1\r\nHost: localhost\r\nX-Fill: {'a' * 780}".encode()
    with Bridge(port=0, source=source, limits=limits) as bridge:
        trickling = socket.create_connection(("127.0.0.1", bridge.port), timeout=5)
        asking = socket.create_connection(("127.0.0.1", bridge.port), timeout=5)
        try:
            held = _form_head(3500) + b"a" * 3400
            trickling.sendall(held)
            _until(lambda: bridge.connections.pending == len(held))
            assert len(held) < limits.max_pending < len(held) + len(head)
            asking.sendall(head)  # past max_pending: the largest other goes
            assert trickling.recv(1) == b""
            assert bridge.connections.displaced == 1
            assert bridge.connections.pending == len(head)
            asking.sendall(b"\r\nMetadata: true\r\nConnection: close\r\n\r\n")
            assert status_of(asking.recv(65536)) == 200
            assert bridge.connections.pending == 0
        finally:
            trickling.close()
            asking.close()


def test_a_body_pipelined_behind_an_answered_request_counts_and_can_give_way() -> None:
    """Two requests in one segment, the second a form whose body then trickles in: once the
    first is answered, the second's body counts in the budget as the first's would, and at
    the connection limit a newcomer displaces this connection rather than being let in past
    it. (Counted per connection, not per request, a pipelined body escaped both rules.)"""
    source = TokenSource("imds", credential_factory=StandIn("mirror"))
    first = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"
    with (
        Bridge(port=0, source=source, limits=ServerLimits(max_connections=1)) as bridge,
        socket.create_connection(("127.0.0.1", bridge.port), timeout=5) as pipelining,
    ):
        pipelining.sendall(first + _form_head(60 * 1024))
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            answer += pipelining.recv(65536)
        assert status_of(answer) == 200
        pipelining.sendall(b"resource=" + b"a" * 20_000)
        _until(lambda: bridge.connections.pending >= 20_000)
        newcomer = raw(bridge.port, b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        assert status_of(newcomer) == 200
        assert pipelining.recv(1) == b""  # displaced: it was still sending a body
        assert bridge.connections.displaced == 1
        assert len(bridge.connections) == 0


def test_the_body_of_a_connection_gone_mid_body_is_let_go_at_once() -> None:
    """A client that leaves (or is displaced) halfway through its body leaves an error in the
    request's stream whose traceback holds the reading frame, and the frame the request: a
    cycle. The body read so far must not wait in it for the cyclic collector (disabled here,
    as it may not run for a while under a flood): 40 bodies of 60 KiB leave under 1 MiB."""
    import gc
    import tracemalloc

    source = TokenSource("imds", credential_factory=StandIn("mirror"))
    sent = _form_head(64 * 1024) + b"resource=" + b"a" * (60 * 1024)
    with Bridge(port=0, source=source) as bridge:
        gc.collect()
        gc.disable()
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            senders = [socket.create_connection(("127.0.0.1", bridge.port), timeout=5) for _ in range(40)]
            for sender in senders:
                sender.sendall(sent)
            _until(lambda: bridge.connections.pending >= 40 * len(sent))  # every body read, none whole
            held = tracemalloc.get_traced_memory()[0] - base
            assert held > 40 * len(sent)  # what was read is held while the bodies are on their way
            for sender in senders:
                sender.close()
            _until(lambda: len(bridge.connections) == 0)
            _until(lambda: tracemalloc.get_traced_memory()[0] - base < 2**20)
        finally:
            tracemalloc.stop()
            gc.enable()


def test_bodies_displaced_before_they_are_read_are_not_reported_as_failures() -> None:
    """A connection displaced between its head and the first read of its body has simply
    gone: no ``500``, no "the bridge failed" line, no malformed request counted."""
    source = TokenSource("imds", credential_factory=StandIn("mirror"))
    sent = _form_head(64 * 1024) + b"resource=" + b"a" * (60 * 1024)
    with Bridge(port=0, source=source, limits=ServerLimits(max_pending=64 * 1024)) as bridge:
        senders = [socket.create_connection(("127.0.0.1", bridge.port), timeout=5) for _ in range(60)]
        try:
            for sender in senders:
                with contextlib.suppress(OSError):  # displaced
                    sender.sendall(sent)
            _until(lambda: bridge.connections.displaced >= 50)
        finally:
            for sender in senders:
                sender.close()
        _until(lambda: len(bridge.connections) == 0)
        health = json.loads(
            raw(bridge.port, b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").split(
                b"\r\n\r\n", 1
            )[1]
        )
    assert health["malformed_requests"] == 0


def test_an_mmap_threshold_glibc_would_not_take_is_a_value_error_naming_the_limit() -> None:
    from legacy_msi_credential._server._heap import fix_mmap_threshold

    for wrong in (0, -1, 2**31):
        with pytest.raises(ValueError, match=f"mmap_threshold must be between 1 and 33554432 bytes, not {wrong}"):
            fix_mmap_threshold(wrong)


def test_a_connection_the_client_left_mid_body_is_not_kept_until_its_deadline() -> None:
    """Once a client has gone, nothing of its connection is kept: the end of the request's
    handling must not start a new deadline for a connection already closed (the timer would
    hold it, its handler and its request for the whole 10 s; one client opening, sending a
    64 KiB body less a byte and closing, over and over, grew the bridge from 41 to 170 MiB)."""
    import gc

    from legacy_msi_credential.bridge._app import _Connection

    def kept() -> int:
        gc.collect()
        return sum(isinstance(thing, _Connection) for thing in gc.get_objects())

    already = kept()  # what other tests of this worker may have left: not this test's to judge
    source = TokenSource("imds", credential_factory=StandIn("mirror"))
    with Bridge(port=0, source=source) as bridge:
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", bridge.port), timeout=5) as leaving:
                leaving.sendall(_form_head(1000) + b"resource=")
                _until(lambda: bridge.connections.pending > 0)
            _until(lambda: len(bridge.connections) == 0)
        _until(lambda: kept() <= already, timeout=3)  # well within the 10 s deadline


_HEAP_PROBE = """
import ctypes, sys
from legacy_msi_credential.bridge import Bridge, TokenSource

class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
bridge = Bridge(port=0, source=TokenSource("imds")).start() if sys.argv[1] == "bridge" else None
freed = bytearray(300 * 1024)  # a read buffer's size; glibc raises its threshold past it when it is freed
del freed
before = libc.mallinfo2().arena
held = [bytearray(200 * 1024) for _ in range(100)]  # 20 MiB: more than the heap has free
print(libc.mallinfo2().arena - before)
"""


def test_a_started_bridge_keeps_large_buffers_out_of_its_heap() -> None:
    """Large blocks stay mapped apart from the heap once a bridge runs in the process: after a
    256 KiB-class buffer is freed, glibc would otherwise serve the next large ones from the
    heap, which floods of large reads fragment (the process grew flood after flood)."""
    import ctypes
    import platform

    if platform.libc_ver()[0] != "glibc" or not hasattr(ctypes.CDLL(None), "mallinfo2"):
        pytest.skip("the threshold is glibc's, and its report (mallinfo2) glibc 2.33's")
    # The allocator as it comes: no tunable or preloaded allocator to make the control pass or fail.
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("MALLOC_", "GLIBC_TUNABLES", "LD_PRELOAD"))
    }
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    grown = {}
    for mode in ("bridge", "plain"):
        result = subprocess.run(
            [sys.executable, "-c", _HEAP_PROBE, mode], capture_output=True, text=True, timeout=60, env=env, check=False
        )
        assert result.returncode == 0, result.stderr
        grown[mode] = int(result.stdout.split()[-1])
    assert grown["bridge"] < 2**20  # the 200 KiB blocks mapped on their own (or in free room): the heap stays
    assert grown["plain"] > 10 * 2**20  # the control: without the bridge, the heap took them (17 to 20 MiB)


def test_at_the_connection_limit_a_connection_still_sending_its_body_gives_way() -> None:
    """A connection whose body is still on its way is not being answered: at the limit a
    newcomer displaces it (the one silent longest) rather than being let in past the limit,
    which would let trickled bodies take every descriptor."""
    source = TokenSource("imds", credential_factory=StandIn("mirror"))
    with Bridge(port=0, source=source, limits=ServerLimits(max_connections=2)) as bridge:
        senders = [socket.create_connection(("127.0.0.1", bridge.port), timeout=5) for _ in range(2)]
        try:
            for sender in senders:
                sender.sendall(_form_head(1000) + b"resource=")
            _until(lambda: bridge.connections.pending == 2 * len(_form_head(1000) + b"resource="))
            answer = raw(bridge.port, b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            assert status_of(answer) == 200
            assert senders[0].recv(1) == b""  # the one silent longest
            assert bridge.connections.displaced == 1
            assert len(bridge.connections) <= 2
        finally:
            for sender in senders:
                sender.close()


def test_a_head_one_line_past_max_head_is_refused_at_once_and_one_within_it_served() -> None:
    """The head's budget is ``max_head`` to the byte, whatever aiohttp's own line limit: short
    header lines that together pass it get a ``431`` as soon as they do, not at the deadline."""
    source = TokenSource("imds", credential_factory=StandIn("mirror"))
    limits = ServerLimits(max_head=1024, max_pending=4096)
    start = f"GET /oauth2/token?resource={ARM} HTTP/1.1\r\nHost: localhost\r\nMetadata: true\r\n".encode()
    within = start + b"X-Fill: a\r\n" * ((limits.max_head - len(start) - 40) // 11) + b"Connection: close\r\n\r\n"
    assert limits.max_head - 40 < len(within) <= limits.max_head
    with Bridge(port=0, source=source, limits=limits) as bridge:
        with socket.create_connection(("127.0.0.1", bridge.port), timeout=3) as client:
            client.sendall(within)
            assert status_of(client.recv(65536)) == 200
        with socket.create_connection(("127.0.0.1", bridge.port), timeout=3) as client:
            client.sendall(within[:-2] + b"X-Fill: a\r\n" * 8)  # never ending, some 50 bytes past the budget
            answer = b""
            while chunk := client.recv(65536):
                answer += chunk
        assert status_of(answer) == 431
        assert bridge.connections.oversized == 1


def test_a_connection_past_the_limit_is_let_in_when_every_other_is_in_a_request() -> None:
    """None can be displaced (each is being answered, and ends soon): the newcomer is
    served rather than refused."""
    stand_in = StandIn("mirror", hang=True)
    source = TokenSource("imds", credential_factory=stand_in)
    with (
        Bridge(port=0, source=source, limits=ServerLimits(max_connections=1)) as bridge,
        socket.create_connection(("127.0.0.1", bridge.port), timeout=5) as asking,
    ):
        asking.sendall(token_request())
        _until(lambda: stand_in.calls == 1)
        answer = raw(bridge.port, b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        assert status_of(answer) == 200
        assert bridge.connections.displaced == 0
        stand_in.released.set()
        assert status_of(asking.recv(65536)) == 200


def test_records_reach_only_the_handlers_whose_level_they_meet_and_the_last_resort_if_none(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A logger held off the loop still honours its handlers' levels; one with no handler
    anywhere says what is a warning or worse on stderr, as logging does without a handler."""
    from legacy_msi_credential.bridge._log import OffLoop

    off_loop = OffLoop(capacity=8)
    picky = logging.getLogger("legacy_msi_credential.tests.picky")
    bare = logging.getLogger("legacy_msi_credential.tests.bare")
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    keep = Keep(logging.ERROR)
    picky.addHandler(keep)
    # Levels of their own, and no process-wide logging.disable: whether "to nobody" is
    # written must not depend on what an earlier test left on a parent logger.
    picky.setLevel(logging.DEBUG)
    bare.setLevel(logging.WARNING)
    disabled = logging.root.manager.disable
    logging.disable(logging.NOTSET)
    picky.propagate = bare.propagate = False
    try:
        off_loop.release("legacy_msi_credential.tests.never-held")  # nothing held: nothing to undo
        off_loop.hold(picky.name, bare.name)
        picky.info("below the handler's level")
        picky.error("at the handler's level")
        bare.warning("to nobody")
        assert off_loop.flush()
        off_loop.release(picky.name, bare.name)
    finally:
        picky.removeHandler(keep)
        picky.propagate = bare.propagate = True
        logging.disable(disabled)
    assert seen == ["at the handler's level"]
    assert capsys.readouterr().err == "to nobody\n"
    assert not picky.filters
    assert not bare.filters
