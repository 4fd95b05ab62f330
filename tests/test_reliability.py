"""Faults, load, processes and hostile input: the outcome, the requests made and the time taken.

Retry waits go through the transport's ``sleep``, which the test transports record
instead of sleeping, so "time taken" is asserted twice: the simulated waits (what the
credential would have slept) and the wall time the call really took.
"""

from __future__ import annotations

import http.server
import multiprocessing
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Optional

import pytest

from legacy_msi_credential import CredentialUnavailableError, LegacyMsiCredential, TokenRequestError
from legacy_msi_credential.emulator import Emulator, Fault

from .conftest import Clock, RecordingTransport, SleepRecorder, SyncTwin, closed_port

ARM = "https://management.azure.com/.default"


@dataclass
class Case:
    """One row of the fault matrix."""

    faults: list[Fault]
    outcome: Optional[type[Exception]]  # None: a token
    requests: int
    waits: tuple[float, float]  # bounds of the simulated waits, seconds
    message: str = ""
    options: Optional[dict[str, Any]] = None


MATRIX = {
    "404 once": Case([Fault.http_error(404)], None, 2, (0.25, 0.5)),
    "404 always": Case([Fault.http_error(404)] * 9, TokenRequestError, 5, (3.75, 7.5), "not ready"),
    "410 once": Case([Fault.http_error(410)], None, 2, (2.5, 5.0)),
    "410 always": Case([Fault.http_error(410)] * 9, TokenRequestError, 5, (35.0, 70.0), "being updated"),
    "429 once": Case([Fault.http_error(429)], None, 2, (0.25, 0.5)),
    "429 Retry-After 2": Case([Fault.http_error(429, retry_after=2)], None, 2, (2.0, 2.0)),
    "429 Retry-After huge": Case([Fault.http_error(429, retry_after=10**9)], None, 2, (10.0, 10.0)),
    "429 Retry-After malformed": Case([Fault.http_error(429, retry_after="soon")], None, 2, (0.25, 0.5)),
    "429 Retry-After date": Case(
        [Fault.http_error(429, retry_after="Wed, 21 Oct 2015 07:28:00 GMT")], None, 2, (0.0, 0.0)
    ),
    "429 always": Case([Fault.http_error(429, retry_after=7)] * 9, TokenRequestError, 4, (19.5, 20.0), "throttling"),
    "500 once": Case([Fault.http_error(500)], None, 2, (1.0, 1.0)),
    "502 once": Case([Fault.http_error(502)], None, 2, (1.0, 1.0)),
    "503 once": Case([Fault.http_error(503)], None, 2, (1.0, 1.0)),
    "504 once": Case([Fault.http_error(504)], None, 2, (1.0, 1.0)),
    "500 always": Case([Fault.http_error(500)] * 9, TokenRequestError, 5, (5.0, 8.0), "extension's log"),
    "503 always": Case([Fault.http_error(503)] * 9, TokenRequestError, 5, (5.0, 8.0), "failed"),
    "reset mid-response once": Case([Fault.reset()], None, 2, (0.25, 0.5)),
    "dropped connection always": Case([Fault.drop()] * 9, CredentialUnavailableError, 5, (3.75, 7.5), "did not answer"),
    "truncated JSON": Case([Fault.truncated()], CredentialUnavailableError, 1, (0, 0), "not JSON"),
    "non-JSON 200": Case([Fault.not_json()], CredentialUnavailableError, 1, (0, 0), "text/html"),
    "non-JSON 500": Case([Fault.not_json(500)] * 9, CredentialUnavailableError, 5, (5.0, 8.0), "HTTP 500"),
    "50 MB announced": Case([Fault.huge(50 * 2**20)], CredentialUnavailableError, 1, (0, 0), "52428800-byte body"),
    "50 MB unannounced": Case(
        [Fault.huge(50 * 2**20, announced=False)], CredentialUnavailableError, 1, (0, 0), "more than 262144 bytes"
    ),
    "slowloris trickle": Case(
        [Fault.trickle(0.01)],
        CredentialUnavailableError,
        1,
        (0, 0),
        "complete answer within 0.5 s",
        {"response_timeout": 0.5},
    ),
    "hang (read timeout)": Case(
        [Fault.hang(30)] * 9, CredentialUnavailableError, 5, (3.75, 7.5), "did not answer", {"read_timeout": 0.2}
    ),
    "expired token": Case([Fault.expired()], TokenRequestError, 1, (0, 0), "expired"),
    "expiry absurdly far": Case([Fault.token_fields(expires_in="99999999999")], None, 1, (0, 0)),
    "expires_on before not_before": Case(
        [Fault.token_fields(expires_on="1000", not_before="2000")], TokenRequestError, 1, (0, 0), "not_before"
    ),
    "400 never retried": Case([Fault.http_error(400, error="invalid_resource")], TokenRequestError, 1, (0, 0)),
    "401 never retried": Case([Fault.http_error(401, error="unauthorized_client")], TokenRequestError, 1, (0, 0)),
    "403 never retried": Case([Fault.http_error(403)], TokenRequestError, 1, (0, 0)),
}


@pytest.mark.parametrize("case", MATRIX.values(), ids=list(MATRIX))
def test_fault_matrix(twin: SyncTwin, emulator: Emulator, case: Case) -> None:
    emulator.add_faults(*case.faults)
    credential = twin.make(endpoint=emulator.endpoint, **(case.options or {}))
    started = time.monotonic()
    if case.outcome is None:
        token = twin.get_token(credential, ARM)
        assert token.expires_on > time.time() + 60
    else:
        with pytest.raises(case.outcome, match=case.message or None):
            twin.get_token(credential, ARM)
    elapsed = time.monotonic() - started
    assert emulator.request_count == case.requests
    low, high = case.waits
    assert low <= twin.recorder.total <= high
    assert elapsed < 5.0  # nothing slept for real; timeouts above are the only real waits


def test_refused_connection_is_fast_and_makes_no_retry(twin: SyncTwin) -> None:
    credential = twin.make(endpoint=f"http://127.0.0.1:{closed_port()}/oauth2/token")
    started = time.monotonic()
    with pytest.raises(CredentialUnavailableError, match="nothing is listening"):
        twin.get_token(credential, ARM)
    assert twin.recorder.sleeps == []  # the mechanism; the time is measured in benchmarks/
    assert time.monotonic() - started < 5.0


def test_absurd_expiry_is_refreshed_within_12_hours(emulator: Emulator, clock: Clock, sleeps: SleepRecorder) -> None:
    emulator.add_faults(Fault.token_fields(expires_in="99999999999"))
    credential = LegacyMsiCredential(endpoint=emulator.endpoint, clock=clock, transport=RecordingTransport(sleeps))
    info = credential.get_token_info(ARM)
    assert info.refresh_on is not None
    assert info.refresh_on <= clock.now + 12 * 3600


@pytest.mark.parametrize("skew", [3600, -3600])
def test_clock_skew_of_an_hour_causes_no_storm_and_no_expired_token(twin: SyncTwin, clock: Clock, skew: int) -> None:
    server = Clock()
    server.now = clock.now + skew
    with Emulator(port=0, clock=server) as vm:
        credential = twin.make(endpoint=vm.endpoint, clock=clock)
        for _ in range(58):
            token = twin.get_token(credential, ARM)
            assert token.expires_on - clock.now > 300  # never a token inside azure-core's own margin
            clock.advance(60)
            server.advance(60)
        # 58 minutes in: exactly one refresh, 5 minutes before the first token's expiry.
        assert vm.request_count == 2


def test_load_32_threads_with_refreshes_and_faults(emulator: Emulator, sleeps: SleepRecorder) -> None:
    threads, calls, lifetime = 32, 10_000, 3600
    clock = Clock()
    step = (lifetime - 300) * 4.5 / (threads * calls)  # about 4 refreshes over the run
    lock = threading.Lock()

    def tick() -> None:
        with lock:
            clock.now += step

    with Emulator(port=0, clock=clock, lifetime=lifetime) as vm:
        credential = LegacyMsiCredential(endpoint=vm.endpoint, clock=clock, transport=RecordingTransport(sleeps))
        credential.get_token(ARM)
        # Every refresh meets one 503 first: a retry each time.
        vm.add_faults(*[Fault.http_error(503), Fault.ok()] * 20)
        faults_before = vm.pending_faults
        unexpected: list[BaseException] = []
        tokens: set[str] = set()

        def work() -> None:
            try:
                for _ in range(calls):
                    tokens.add(credential.get_token(ARM).token)
                    tick()
            except BaseException as exc:
                unexpected.append(exc)

        with ThreadPoolExecutor(threads) as pool:
            for future in [pool.submit(work) for _ in range(threads)]:
                future.result(timeout=300)
        consumed = faults_before - vm.pending_faults
        retries = consumed // 2  # each 503 consumed was followed by its retry's normal answer
        assert unexpected == []
        refreshes = len(tokens) - 1
        assert refreshes >= 3
        assert vm.request_count == 1 + refreshes + retries
        assert retries == refreshes  # one 503 per refresh, each retried once


# Each fork happens in a new interpreter that has started no thread, as a user's program that
# forks would: forking this multi-threaded test process (the emulator's thread, pytest-xdist's)
# is what Python 3.12 warns about, and not what these tests are about.
FORKS = {
    "a lock held at fork time": """
import os
credential = LegacyMsiCredential(endpoint=ENDPOINT)
credential.get_token(ARM)
lock = credential._lock("https://vault.azure.net")
lock.acquire()  # held by the parent at fork time: the child must not inherit it held
pid = os.fork()
if pid == 0:
    ok = False
    try:
        ok = bool(credential.get_token("https://vault.azure.net/.default").token)
    finally:
        os._exit(0 if ok else 1)
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, status
lock.release()
credential.close()
""",
    "multiprocessing workers (fork)": """
import multiprocessing
credential = LegacyMsiCredential(endpoint=ENDPOINT)
credential.get_token(ARM)

def work(scope):
    return bool(credential.get_token(scope).token) and bool(credential.get_token(ARM).token)

with multiprocessing.get_context("fork").Pool(3) as pool:
    assert all(pool.map(work, ["https://vault.azure.net/.default"] * 6))
credential.close()
""",
    "the async twin": """
import asyncio, os
from legacy_msi_credential.aio import LegacyMsiCredential as AsyncLegacyMsiCredential
credential = AsyncLegacyMsiCredential(endpoint=ENDPOINT, transport=None)

async def fetch(scope):
    token = (await credential.get_token(scope)).token
    await credential.close()  # each event loop closes its own connections
    return token

asyncio.run(fetch(ARM))
pid = os.fork()
if pid == 0:
    code = 1
    try:
        code = 0 if asyncio.run(fetch("https://vault.azure.net/.default")) else 1
    finally:
        os._exit(code)
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, status
""",
}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.parametrize("case", FORKS)
def test_a_credential_inherited_through_fork_works_in_the_child(case: str, emulator: Emulator) -> None:
    preamble = (
        "import warnings; warnings.simplefilter('error')\n"  # a fork warning would fail the run
        "from legacy_msi_credential import LegacyMsiCredential\n"
        f"ENDPOINT, ARM = {emulator.endpoint!r}, {ARM!r}\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", preamble + FORKS[case]], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    if case == "multiprocessing workers (fork)":
        # the parent's ARM token was inherited: one request for it, one for the vault per worker
        assert 2 <= emulator.request_count <= 4
        assert sum(request.param("resource") == "https://management.azure.com" for request in emulator.requests) == 1
    else:
        assert emulator.request_count == 2  # the parent's token, then the child's own for the vault


def test_spawned_workers_receive_a_credential_or_make_one(emulator: Emulator) -> None:
    credential = LegacyMsiCredential(endpoint=emulator.endpoint)
    credential.get_token(ARM)  # the parent's token does not travel: the worker asks for its own
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        assert pool.apply(_worker_token_from, (credential,))
        assert pool.apply(_worker_new_credential, (emulator.endpoint,))
    assert emulator.request_count == 3
    credential.close()


def _worker_token_from(credential: LegacyMsiCredential) -> bool:
    return bool(credential.get_token(ARM).token)


def _worker_new_credential(endpoint: str) -> bool:
    return bool(LegacyMsiCredential(endpoint=endpoint).get_token(ARM).token)


# --- endpoint safety ----------------------------------------------------------------------------


class _Redirector(http.server.BaseHTTPRequestHandler):
    target = ""

    def do_GET(self) -> None:
        self.send_response(302)
        self.send_header("Location", self.target)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_POST = do_GET

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def redirecting_endpoint(emulator: Emulator) -> Iterator[str]:
    handler = type("Handler", (_Redirector,), {"target": emulator.endpoint + "?resource=x"})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/oauth2/token"
    server.shutdown()
    server.server_close()


def test_redirects_are_never_followed(twin: SyncTwin, emulator: Emulator, redirecting_endpoint: str) -> None:
    credential = twin.make(endpoint=redirecting_endpoint)
    with pytest.raises(CredentialUnavailableError, match="redirect, which is not followed"):
        twin.get_token(credential, ARM)
    assert emulator.request_count == 0  # the redirect's target never saw the request or its headers


def test_non_loopback_http_is_refused_from_every_source(twin: SyncTwin, monkeypatch, tmp_path) -> None:
    for variable in ("LEGACY_MSI_ENDPOINT", "MSI_ENDPOINT"):
        monkeypatch.setenv(variable, "http://169.254.169.254/metadata/identity/oauth2/token")
        with pytest.raises(ValueError, match="not a loopback address"):
            twin.make()
        monkeypatch.delenv(variable)
    settings = tmp_path / "ManagedIdentity-Settings"
    settings.write_text('{"url": "http://10.0.0.5:50342/"}')
    monkeypatch.setenv("LEGACY_MSI_SETTINGS_FILE", str(settings))
    credential = twin.make()
    with pytest.raises(CredentialUnavailableError, match="not a loopback address"):
        twin.get_token(credential, ARM)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x00\xff" * 100, "not UTF-8 JSON"),
        (b" " * (64 * 1024 + 10), "is 65546 bytes, more than the 65536"),
        (None, "symbolic link"),
    ],
)
def test_hostile_settings_files_are_refused(twin: SyncTwin, tmp_path, monkeypatch, content, message) -> None:
    path = tmp_path / "ManagedIdentity-Settings"
    if content is None:
        target = tmp_path / "elsewhere"
        target.write_text('{"url": "http://localhost:50342/"}')
        path.symlink_to(target)
    else:
        path.write_bytes(content)
    monkeypatch.setenv("LEGACY_MSI_SETTINGS_FILE", str(path))
    credential = twin.make()
    with pytest.raises(CredentialUnavailableError, match=message):
        twin.get_token(credential, ARM)
