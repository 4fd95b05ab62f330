"""Corners of promises already made, each tried where a planted bug went unnoticed before:
a caller's own transport settings, secrets that do not look like tokens, refused keywords,
the drop-in's life cycle, the servers' refusals and limits, the CLI's flags, the doctor's
conclusions, the settings document and the chain's keywords."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import requests

from legacy_msi_credential import LegacyMsiCredential, TokenRequestError
from legacy_msi_credential._server._limits import DEFAULT_LIMITS
from legacy_msi_credential.aio import LegacyMsiCredential as AsyncLegacyMsiCredential
from legacy_msi_credential.bridge import Bridge, TokenSource
from legacy_msi_credential.emulator import Emulator, Fault

from .conftest import AsyncTwin, SleepRecorder, SyncTwin, cli, closed_port
from .hostile import HostileServer, attempt, http_answer, run_beside_a_remote_peer, texts_of
from .test_bridge_service import StandIn, _until, status_of, token_request

ARM = "https://management.azure.com/.default"


@contextlib.contextmanager
def _log_messages(name: str) -> Iterator[list[str]]:
    """The messages logged on ``name`` (and below) meanwhile, whatever the levels set elsewhere."""
    said: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            said.append(record.getMessage())

    from legacy_msi_credential.bridge._log import OFF_LOOP

    logger, keep = logging.getLogger(name), Keep()
    # What an earlier test of this worker left (a level on the logger, logging.disable, a
    # logger disabled) must not hide a record; a logger a server holds sends its records
    # through the off-loop queue, written to this handler before it is read.
    saved = (logger.level, logger.disabled, logging.root.manager.disable)
    logger.setLevel(logging.DEBUG)
    logger.disabled = False
    logging.disable(logging.NOTSET)
    logger.addHandler(keep)
    try:
        yield said
    finally:
        OFF_LOOP.flush()
        logger.removeHandler(keep)
        logger.setLevel(saved[0])
        logger.disabled = saved[1]
        logging.disable(saved[2])


# --- a caller's own transport settings ------------------------------------------------------


@pytest.mark.parametrize("twin_class", [SyncTwin, AsyncTwin], ids=["sync", "async"])
def test_a_callers_session_proxies_are_never_used_for_loopback(
    twin_class: type[SyncTwin], emulator: Emulator, sleeps: SleepRecorder
) -> None:
    """A ``requests.Session`` handed in with ``session.proxies`` set (not the environment,
    not the ``proxies=`` keyword): the plain-http request to loopback goes straight there."""
    twin = twin_class(sleeps)
    try:
        with Emulator(port=0) as proxy:  # would record, and answer, any request sent through it
            session = requests.Session()
            session.proxies = {"http": proxy.imds_authority, "https": proxy.imds_authority}
            transport: Any = twin.transport_class(sleeps, session=session, session_owner=False)
            credential = twin.make(endpoint=emulator.endpoint, transport=transport)
            assert twin.get_token(credential, ARM).token
            assert proxy.request_count == 0
        assert emulator.request_count == 1
    finally:
        twin.close_all()
        session.close()


# --- secrets that do not look like tokens ---------------------------------------------------


@pytest.mark.parametrize("key", ["access_token", "refresh_token", "id_token"])
@pytest.mark.parametrize("secret", ["Dune", "Xylophonequartz"])
def test_an_error_document_never_shows_its_own_secret_however_short(key: str, secret: str) -> None:
    """A letters-only secret shorter than any token shape (the shape rules let it through)
    that the error document repeats in its ``error_description``."""
    body = json.dumps(
        {"error": "invalid_request", "error_description": f"refused: {secret} was asked for", key: secret}
    ).encode()
    answer = http_answer("400 Bad Request", {"Content-Type": "application/json"}, body)
    with HostileServer(lambda _: [answer, None]) as server:
        outcome = attempt("sync", server.endpoint, retry_total=0)
    assert isinstance(outcome.error, TokenRequestError), repr(outcome.error)
    assert "was asked for" in str(outcome.error)  # the description is shown, without the secret
    for text in [*texts_of(outcome.error), *outcome.texts]:
        assert secret not in text, text[:600]


# --- refused keywords, where the credential is built ----------------------------------------

#: azure-core keywords this credential refuses by name (the guide lists them): written out
#: here, not read from the package, so that one dropped there is a failure here.
REFUSED_KEYWORDS = (
    "timeout",
    "retry_mode",
    "retry_connect",
    "retry_read",
    "retry_status",
    "retry_on_status_codes",
    "retry_on_methods",
)


@pytest.mark.parametrize("name", REFUSED_KEYWORDS)
@pytest.mark.parametrize("cls", [LegacyMsiCredential, AsyncLegacyMsiCredential], ids=["sync", "async"])
def test_a_refused_keyword_raises_where_the_credential_is_built(cls: Any, name: str) -> None:
    """``timeout=`` and the retry keywords whose meaning the credential does not follow are
    refused at construction, by their own name, before any I/O (no endpoint is even read)."""
    with pytest.raises(ValueError, match=rf"^{name} is not supported"):
        cls(endpoint="http://127.0.0.1:9/oauth2/token", **{name: 5})


# --- the async drop-in's life cycle when the legacy step is unusable ------------------------


def test_the_async_drop_in_opens_and_closes_with_an_unusable_legacy_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad URL in the environment puts a stand-in in the chain: ``async with`` and
    ``await close()`` (which awaits every step's ``close``) work as on azure-identity's
    class, and the chain still names why the legacy step could not be made."""
    from azure.core.exceptions import ClientAuthenticationError

    from legacy_msi_credential.aio import DefaultAzureCredential as AsyncDefaultAzureCredential

    monkeypatch.setenv("LEGACY_MSI_ENDPOINT", "http://10.0.0.1/oauth2/token")

    async def run() -> str:
        credential = AsyncDefaultAzureCredential(
            exclude_cli_credential=True,
            exclude_developer_cli_credential=True,
            exclude_powershell_credential=True,
            exclude_environment_credential=True,
            exclude_workload_identity_credential=True,
            exclude_shared_token_cache_credential=True,
        )
        steps = [type(step).__name__ for step in credential.credentials]
        assert "AsyncUnusableLegacyStep" in steps, steps
        async with credential:
            with pytest.raises(ClientAuthenticationError) as caught:
                await credential.get_token(ARM)
        await credential.close()  # a second close, as a caller may
        return str(caught.value.message)

    message = asyncio.run(run())
    assert "LegacyMsiCredential could not be configured" in message


# --- the emulator asked from a peer that is not loopback ------------------------------------


def test_the_emulator_answers_loopback_peers_only_even_with_allow_remote(tmp_path: Path) -> None:
    """In a private network namespace, 10.99.0.1 stands in for a remote client of an emulator
    listening on every address: its token paths (the extension's and IMDS's) and its health
    path are refused with the protocol's 401; the same requests over loopback are answered."""
    script = tmp_path / "remote.py"
    script.write_text(
        "import json, socket\n"
        "from legacy_msi_credential.emulator import Emulator\n"
        "def ask(port, source, path):\n"
        "    with socket.create_connection((source, port), source_address=(source, 0)) as s:\n"
        "        s.sendall(f'GET {path} HTTP/1.1\\r\\nHost: localhost\\r\\nMetadata: true\\r\\n"
        "Connection: close\\r\\n\\r\\n'.encode())\n"
        "        data = b''\n"
        "        while chunk := s.recv(4096): data += chunk\n"
        "    return int(data.split(b' ')[1])\n"
        "paths = ['/oauth2/token?resource=https://management.azure.com/',\n"
        "    '/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://management.azure.com/',\n"
        "    '/healthz']\n"
        "with Emulator(host='0.0.0.0', port=0, allow_remote=True) as e:\n"
        "    print(json.dumps([[ask(e.port, source, path) for path in paths]"
        " for source in ('10.99.0.1', '127.0.0.1')] + [e.request_count]))\n"
    )
    remote, local, _ = run_beside_a_remote_peer(script)
    assert remote == [401, 401, 401]
    assert local == [200, 200, 200]


# --- the bridge's connections: let go means closed; a slow source still answers ---------------


def _ended_by_server(sock: socket.socket) -> bool:
    """Whether the server ended ``sock``: EOF or a reset, not merely silence (``sock`` has a timeout)."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def test_a_connection_displaced_past_the_limit_is_closed_on_the_wire() -> None:
    """The counters say a connection went; the client's socket must see it (EOF or RST) at
    once, long before any deadline, or a displaced connection would still hold its
    descriptor and its place."""
    source = TokenSource("imds", credential_factory=StandIn("mirror"))
    with Bridge(port=0, source=source, limits=replace(DEFAULT_LIMITS, max_connections=2, client_timeout=30)) as bridge:
        first, second = (socket.create_connection(("127.0.0.1", bridge.port), timeout=3) for _ in range(2))
        with first, second:
            _until(lambda: len(bridge.connections) == 2)
            with socket.create_connection(("127.0.0.1", bridge.port), timeout=3) as third:
                assert _ended_by_server(first)  # silent longest: displaced by the third
                assert bridge.connections.displaced == 1
                third.sendall(token_request())
                assert status_of(third.recv(65536)) == 200


def test_a_source_slower_than_the_client_deadline_still_answers_a_request_that_is_in() -> None:
    """The deadline bounds receiving the request, not the source: a source taking three times
    the client's deadline still gets its token to the client."""
    source = TokenSource("imds", credential_factory=StandIn("mirror", delay=0.45))
    with Bridge(port=0, source=source, limits=replace(DEFAULT_LIMITS, client_timeout=0.15)) as bridge:
        with socket.create_connection(("127.0.0.1", bridge.port), timeout=5) as client:
            client.sendall(token_request())
            answer = b""
            while chunk := client.recv(65536):
                answer += chunk
        assert status_of(answer) == 200, answer[:300]
        assert bridge.connections.timed_out == 0


# --- the refusal table's corners (no I/O: the rule both servers stand on) -------------------

RESOURCE = "https://management.azure.com/"
HEADERS = {"Host": "localhost", "Metadata": "true"}


def _decide(method: str, query: str, *, accept_get: bool = True) -> Any:
    from legacy_msi_credential._server._legacy import Policy, decide, parameters
    from legacy_msi_credential._server._rules import Request

    params = parameters(query, method, "", b"")
    request = Request(method, f"/oauth2/token?{query}", tuple(HEADERS.items()), True, params)
    return decide(request, Policy(accept_get=accept_get, browser_proof=True))


@pytest.mark.parametrize(
    "identities",
    [
        "msi_res_id=/subscriptions/s/a&mi_res_id=/subscriptions/s/b",
        "mi_res_id=/subscriptions/s/a&msi_res_id=/subscriptions/s/a",  # even naming the same one
        "client_id=a&object_id=b",
    ],
)
def test_two_identity_parameters_are_refused_even_when_one_is_the_others_alias(identities: str) -> None:
    from legacy_msi_credential._server._rules import Refusal

    refusal = _decide("GET", f"resource={RESOURCE}&{identities}")
    assert isinstance(refusal, Refusal), refusal
    assert (refusal.status, refusal.error) == (401, "invalid_request")
    assert "Only one of" in refusal.description


@pytest.mark.parametrize("name", ["Client_ID", "CLIENT_ID", "Object_Id", "MSI_RES_ID", "Mi_Res_Id"])
def test_an_identity_parameter_in_another_case_is_refused_never_read_as_system_assigned(name: str) -> None:
    from legacy_msi_credential._server._rules import Refusal

    refusal = _decide("GET", f"resource={RESOURCE}&{name}=6d1e8a7c-0000-4000-8000-000000000001")
    assert isinstance(refusal, Refusal), refusal
    assert (refusal.status, refusal.error) == (400, "invalid_request")
    assert name in refusal.description


@pytest.mark.parametrize(("accept_get", "method", "allowed"), [(False, "GET", "POST"), (True, "PUT", "GET, POST")])
def test_a_405_names_what_this_server_allows(accept_get: bool, method: str, allowed: str) -> None:
    from legacy_msi_credential._server._rules import Refusal

    refusal = _decide(method, f"resource={RESOURCE}", accept_get=accept_get)
    assert isinstance(refusal, Refusal), refusal
    assert refusal.status == 405
    assert dict(refusal.headers) == {"Allow": allowed}


def test_the_emulator_in_post_only_mode_answers_a_get_with_allow_post() -> None:
    """The same corner over HTTP, as a client sees it."""
    with Emulator(port=0, accept_get=False) as vm:
        answer = requests.get(vm.endpoint, params={"resource": RESOURCE}, headers={"Metadata": "true"}, timeout=5)
    assert answer.status_code == 405
    assert answer.headers["Allow"] == "POST"


# --- least recently used means used ---------------------------------------------------------


def _ask_bridge(port: int, resource: str) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        client.sendall(token_request(query=f"resource={resource}"))
        answer = b""
        while chunk := client.recv(65536):
            answer += chunk
    return status_of(answer)


def test_the_bridge_cache_lets_go_of_the_token_used_least_recently_not_the_oldest() -> None:
    """Two places: A and B cached, A used again, C arrives. The least recently used is B
    (the oldest stored is A): A is still served from the cache, B is asked of the source again."""
    stand_in = StandIn("mirror")
    source = TokenSource("imds", credential_factory=stand_in, limits=replace(DEFAULT_LIMITS, max_tokens=2))
    a, b, c = (f"https://{name}.example/" for name in "abc")
    with Bridge(port=0, source=source) as bridge:
        for resource in (a, b, a, c):
            assert _ask_bridge(bridge.port, resource) == 200
        assert stand_in.calls == 3  # A, B, C; the second A from the cache
        assert _ask_bridge(bridge.port, a) == 200
        assert stand_in.calls == 3  # used last but one: kept
        assert _ask_bridge(bridge.port, b) == 200
        assert stand_in.calls == 4  # used least recently: let go


# --- the rate gate after idle time ----------------------------------------------------------


@pytest.mark.parametrize("idle", [0.0, 3.0, 3600.0])
def test_the_gate_after_idle_time_lets_through_its_capacity_and_no_more(idle: float) -> None:
    """A bucket of two starts a second, left idle for an hour, holds two starts, not 7,200:
    the third call at once is :class:`Busy`."""
    from legacy_msi_credential._server._flights import Busy, Gate

    async def scenario() -> list[str]:
        now = [0.0]
        gate = Gate(concurrent=100, rate=2, wait=0.0, clock=lambda: now[0])

        async def call() -> str:
            return "ok"

        now[0] += idle
        outcomes = []
        for _ in range(4):
            try:
                outcomes.append(await gate.run(call))
            except Busy:
                outcomes.append("busy")
        return outcomes

    assert asyncio.run(scenario()) == ["ok", "ok", "busy", "busy"]


# --- notify errors other than a missing socket ----------------------------------------------


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A folder whose paths fit a Unix socket's address (108 bytes), wherever ``TMPDIR`` points."""
    folder = Path(tempfile.mkdtemp(prefix="lmc-", dir="/tmp" if os.path.isdir("/tmp") else None))
    try:
        yield folder
    finally:
        folder.chmod(0o700)
        shutil.rmtree(folder, ignore_errors=True)


#: The notifier's module alone (standard library only), its source read from stdin: a new
#: process importing the whole bridge (aiohttp, azure-core) would take most of a second, and
#: the other user may not be able to read this checkout.
_NOTIFY_PROBE = """
import json, logging, sys, types
module = types.ModuleType("notify")
exec(compile(sys.stdin.read(), "notify", "exec"), module.__dict__)
Notifier = module.Notifier
said = []
class Keep(logging.Handler):
    def emit(self, record): said.append(record.getMessage())
logging.getLogger("legacy_msi_credential.bridge").addHandler(Keep())
notifier = Notifier(sys.argv[1])
sent = [notifier.ready("up"), notifier.ping()]
print(json.dumps([sent, notifier.dropped, said]))
"""


_AS_NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def _interpreter_for_nobody() -> str:
    """A Python uid 65534 can run: this one, or the system's (an interpreter under root's home,
    as pyenv's, may not load its shared library for another user). The probe needs only the
    standard library: the notifier's source comes on stdin."""
    for candidate in (sys.executable, shutil.which("python3", path="/usr/bin:/bin")):
        if candidate and subprocess.run([*_AS_NOBODY, candidate, "-c", "pass"], capture_output=True).returncode == 0:
            return candidate
    pytest.skip("no Python here that uid 65534 can run")


def _notify_outcome(address: str, *, as_nobody: bool = False) -> list[Any]:
    """What a notifier sending to ``address`` returns, counts and says, in a process of its own
    (as uid 65534 with ``as_nobody``, for whom root's files are closed)."""
    from legacy_msi_credential.bridge import Notifier

    prefix = [*_AS_NOBODY, _interpreter_for_nobody()] if as_nobody else [sys.executable]
    result = subprocess.run(
        [*prefix, "-c", _NOTIFY_PROBE, address],
        input=Path(inspect.getfile(Notifier)).read_text(encoding="utf-8"),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd="/",
    )
    assert result.returncode == 0, result.stderr
    outcome: list[Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return outcome


def test_a_notify_socket_that_refuses_or_is_of_another_kind_is_said_and_never_raised(short_dir: Path) -> None:
    """A stale path (its reader gone: refused) and a stream socket where systemd's datagram
    socket should be: each send returns False and is said, naming the socket and why; none is
    counted as a full queue's drop, and nothing is raised into the serving loop."""
    from legacy_msi_credential.bridge import Notifier

    stale = str(short_dir / "stale")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as gone:
        gone.bind(stale)
    stream = str(short_dir / "stream")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(stream)
        listener.listen(1)
        for address, why in ((stale, "Connection refused"), (stream, "Protocol wrong type for socket")):
            notifier = Notifier(address)
            with _log_messages("legacy_msi_credential.bridge") as said:
                assert notifier.ready("up") is False
                assert notifier.ping() is False
            assert notifier.dropped == 0
            assert said == [f"could not notify systemd at {address}: {why}"] * 2


def test_a_notify_socket_this_user_may_not_write_is_said_and_never_raised(short_dir: Path) -> None:
    address = str(short_dir / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind(address)
        os.chmod(address, 0o600)  # systemd's own socket, as another user sees it
        if os.geteuid() == 0:
            if shutil.which("setpriv") is None:
                pytest.skip("needs setpriv to send as another user")
            short_dir.chmod(0o755)
            outcome = _notify_outcome(address, as_nobody=True)
        else:
            short_dir.chmod(0o000)
            try:
                outcome = _notify_outcome(address)
            finally:
                short_dir.chmod(0o700)
    assert outcome == [[False, False], 0, [f"could not notify systemd at {address}: Permission denied"] * 2]


# --- the settings document for every listening form -----------------------------------------


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1", "http://localhost:50342/"),  # as the extension writes it
        ("localhost", "http://localhost:50342/"),
        ("::1", "http://[::1]:50342/"),
        ("[::1]", "http://[::1]:50342/"),
        ("127.0.0.2", "http://127.0.0.2:50342/"),
        # Every address (with allow_remote): loopback among them, by the name credentials accept.
        ("0.0.0.0", "http://localhost:50342/"),
        ("::", "http://localhost:50342/"),
        ("[::]", "http://localhost:50342/"),
    ],
)
def test_the_settings_document_names_a_url_a_credential_accepts_for_every_listening_form(host: str, url: str) -> None:
    from legacy_msi_credential._server._legacy import settings_document

    document = settings_document(host, 50342)
    assert document == {"url": url}
    LegacyMsiCredential(endpoint=document["url"] + "oauth2/token")  # no ValueError: a loopback URL


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "[::]"])
def test_a_server_on_every_address_names_a_url_a_client_can_use(host: str) -> None:
    """What ``serve --host ::`` prints and logs: not ``http://[::]:P/``, which no client can
    connect to, but the settings file's ``localhost``."""
    from legacy_msi_credential._server._legacy import base_url

    assert base_url(host, 50342) == "http://localhost:50342/"
    LegacyMsiCredential(endpoint=base_url(host, 50342) + "oauth2/token")


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
def test_a_settings_file_a_server_writes_gets_a_token(
    host: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same over the wire: the file a server on each loopback form writes, read by a credential."""
    settings = tmp_path / "ManagedIdentity-Settings"
    with Emulator(host=host, port=0) as vm:
        vm.write_settings(settings)
        monkeypatch.setenv("LEGACY_MSI_SETTINGS_FILE", str(settings))
        with LegacyMsiCredential() as credential:
            assert credential.get_token(ARM).token
        assert vm.request_count == 1


# --- CLI flags reach what they configure (the real parser, the real command) ----------------


def _serving(short_dir: Path, argv: list[str], check: Callable[[str], Any]) -> tuple[Any, Any]:
    """``legacy-msi serve ARGV`` run in this process through ``cli.main``; once it tells a
    stand-in for systemd's socket it is ready, ``check(status)`` runs from a thread (the
    status names the endpoint), then SIGTERM stops it. Returns what ``cli`` returns and
    what ``check`` did (None if it never became ready)."""
    address = str(short_dir / "notify")
    outcome: dict[str, Any] = {}
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind(address)
        systemd.settimeout(30)

        def watch() -> None:
            try:
                status = systemd.recv(4096).decode()
            except OSError as exc:
                outcome["error"] = exc
                return
            if not status.startswith("READY=1"):
                return  # the poke below: main returned without becoming ready
            try:
                outcome["value"] = check(status)
            except BaseException as exc:
                outcome["error"] = exc
            finally:
                os.kill(os.getpid(), signal.SIGTERM)  # its handler is serve's, installed before READY

        access = logging.getLogger("legacy_msi_credential.bridge.access")
        saved = access.handlers[:], access.level, access.propagate
        thread = threading.Thread(target=watch)
        thread.start()
        try:
            done = cli("serve", *argv, env={"NOTIFY_SOCKET": address})
        finally:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as poke:
                poke.sendto(b"returned", address)
            thread.join(30)
            access.handlers[:], access.level, access.propagate = saved
    os.unlink(address)
    if "error" in outcome:
        raise AssertionError(f"{outcome['error']!r}; stderr: {done.stderr[-2000:]}") from outcome["error"]
    return done, outcome.get("value")


def _get(url: str, **params: str) -> requests.Response:
    return requests.get(url, params=params, headers={"Metadata": "true"}, timeout=30)


def test_every_serve_flag_reaches_what_it_configures(short_dir: Path, tmp_path: Path) -> None:
    """--port, --host, --source, --imds-url, --source-timeout, --write-settings and
    --no-access-log, through the parser: where it listens, what it writes, where it asks,
    how long it waits for the source, what it logs."""
    port = closed_port()
    settings = tmp_path / "ManagedIdentity-Settings"
    endpoint = f"http://[::1]:{port}/oauth2/token"
    with Emulator(port=0) as imds:
        argv = ["--port", str(port), "--host", "::1", "--source", "imds", "--imds-url", imds.imds_authority]
        argv += ["--source-timeout", "0.2", "--write-settings", str(settings), "--no-access-log"]

        def check(status: str) -> float:
            assert status == f"READY=1\nSTATUS=serving {endpoint} from the imds source"
            assert json.loads(settings.read_text()) == {"url": f"http://[::1]:{port}/"}
            with pytest.raises(requests.ConnectionError):  # ::1 alone, not 127.0.0.1 as well
                _get(f"http://127.0.0.1:{port}/oauth2/token", resource=RESOURCE)
            assert _get(endpoint, resource=RESOURCE).status_code == 200
            assert imds.requests[-1].path == "/metadata/identity/oauth2/token"
            assert requests.get(f"http://[::1]:{port}/healthz", timeout=10).json()["source"] == "imds"
            imds.add_faults(Fault.hang(30.0))
            started = time.monotonic()
            slow = _get(endpoint, resource="https://vault.azure.net")
            assert slow.status_code >= 500, slow.text
            return time.monotonic() - started

        done, waited = _serving(short_dir, argv, check)
    assert done.returncode == 0, done.stderr
    assert waited < 5  # the source was given 0.2 s, not the default 20 s
    assert not settings.exists()  # removed on the way out
    assert "GET /oauth2/token" not in done.stderr
    assert "GET /healthz" not in done.stderr


def test_serve_without_no_access_log_logs_each_request_and_serves_the_source_named(short_dir: Path) -> None:
    def check(status: str) -> Any:
        url = status.split("serving ", 1)[1].split(" ", 1)[0].replace("/oauth2/token", "/healthz")
        return requests.get(url, timeout=10).json()["source"]

    done, source = _serving(short_dir, ["--port", "0", "--source", "cli"], check)
    assert done.returncode == 0, done.stderr
    assert source == "cli"
    assert " GET /healthz - 200 " in done.stderr


def test_allow_remote_reaches_the_bridge(short_dir: Path) -> None:
    """Without the flag, an address that is not loopback is the parser's refusal naming it;
    with it, the bridge tries that address (which this host does not have)."""
    refused, served = _serving(short_dir, ["--host", "192.0.2.1", "--port", "0"], lambda s: s)
    assert served is None, served
    assert refused.returncode == 2
    assert "not a loopback address; pass --allow-remote" in refused.stderr
    tried, served = _serving(short_dir, ["--host", "192.0.2.1", "--port", "0", "--allow-remote"], lambda s: s)
    assert served is None, served
    assert tried.returncode == 1
    assert "cannot listen on 192.0.2.1:0" in tried.stderr


# --- the doctor's conclusions on look-alikes ------------------------------------------------


def test_the_doctor_does_not_take_any_400_for_the_extensions(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server answering every request 400 with a JSON error of its own: the extension answers
    a request without ``Metadata: true`` with 400 ``bad_request_102``, so this is something else
    on the port, not an extension that refused."""
    body = json.dumps({"error": "invalid_request", "error_description": "missing api key"}).encode()
    answer = http_answer("400 Bad Request", {"Content-Type": "application/json", "Connection": "close"}, body)
    with HostileServer(lambda _: [answer, None]) as server:
        done = cli("doctor", "--endpoint", server.endpoint, "--skip-imds")
    assert done.returncode == 1, done.stdout
    assert "answers like the extension" not in done.stdout
    assert "got HTTP 400 with" in done.stdout
    assert "the extension answers 400 bad_request_102" in done.stdout
    verdict = done.stdout.split("Verdict: ", 1)[1]
    assert verdict.startswith("something else is listening on the extension's port"), verdict


def test_the_doctor_with_skip_imds_sends_nothing_to_an_imds_that_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    """IMDS (an emulator on loopback, named where the doctor and the chain look for it) answers:
    without ``--skip-imds`` both ask it; with it, neither does, and the verdict does not rest on it."""
    monkeypatch.delenv("AZURE_POD_IDENTITY_AUTHORITY_HOST")  # so that the chain follows LEGACY_MSI_IMDS_URL too
    nothing = f"http://127.0.0.1:{closed_port()}/oauth2/token"
    with Emulator(port=0) as imds:
        monkeypatch.setenv("LEGACY_MSI_IMDS_URL", imds.imds_authority)
        probed = cli("doctor", "--endpoint", nothing)
        asked = imds.request_count
        imds.reset()
        skipped = cli("doctor", "--endpoint", nothing, "--skip-imds")
        assert imds.request_count == 0, [request.path for request in imds.requests]
    assert asked >= 2  # the doctor's probe and the chain's ManagedIdentityCredential
    assert probed.returncode == 0, probed.stdout
    assert "ManagedIdentityCredential answers" in probed.stdout
    assert skipped.returncode == 1, skipped.stdout
    assert "not probed (--skip-imds)" in skipped.stdout
    assert "ManagedIdentityCredential" not in skipped.stdout.split("Verdict: ", 1)[1]


# --- azure-identity's own steps keep the caller's keywords ----------------------------------


def test_the_callers_pipeline_keywords_reach_azure_identitys_managed_identity_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The drop-in reads ``transport``, ``user_agent`` and ``headers`` for the legacy step; it
    must leave them for azure-identity's steps too: IMDS (an emulator) is asked through the
    caller's transport, with the caller's user agent and headers."""
    from azure.core.pipeline.transport import RequestsTransport

    from legacy_msi_credential import DefaultAzureCredential

    class Recording(RequestsTransport):  # type: ignore[misc]
        urls: list[str] = []

        def send(self, request: Any, **kwargs: Any) -> Any:
            Recording.urls.append(request.url)
            return super().send(request, **kwargs)

    monkeypatch.setenv("LEGACY_MSI_ENDPOINT", f"http://127.0.0.1:{closed_port()}/oauth2/token")
    with Emulator(port=0) as imds:
        monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", imds.imds_authority)
        credential = DefaultAzureCredential(
            transport=Recording(),
            user_agent="caller-agent/1.0",
            headers={"x-caller": "kept"},
            exclude_cli_credential=True,
            exclude_developer_cli_credential=True,
            exclude_powershell_credential=True,
            exclude_environment_credential=True,
            exclude_workload_identity_credential=True,
            exclude_shared_token_cache_credential=True,
        )
        with credential:
            assert credential.get_token(ARM).token
        assert type(credential._successful_credential).__name__ == "ManagedIdentityCredential"
        asked = [request for request in imds.requests if request.path == "/metadata/identity/oauth2/token"]
    assert asked, "IMDS was never asked"
    assert any("/metadata/identity/oauth2/token" in url for url in Recording.urls)  # through the caller's transport
    assert "caller-agent/1.0" in asked[-1].headers["User-Agent"]
    assert asked[-1].headers["x-caller"] == "kept"
