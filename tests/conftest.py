"""Shared fixtures: an isolated environment, the emulator, a simulated clock and sleeps."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import os
import socket
import subprocess
import sys
import warnings
from collections.abc import Iterator
from typing import Any, Callable

import pytest
from azure.core.pipeline.policies import AsyncRetryPolicy, RetryPolicy
from azure.core.pipeline.transport import AsyncioRequestsTransport, RequestsTransport

from legacy_msi_credential import LegacyMsiCredential
from legacy_msi_credential._endpoint import ENDPOINT_VARIABLES
from legacy_msi_credential.aio import LegacyMsiCredential as AsyncLegacyMsiCredential
from legacy_msi_credential.emulator import Emulator

_ISOLATED_VARIABLES = (
    *ENDPOINT_VARIABLES,  # every variable an endpoint source reads
    "AZURE_TOKEN_CREDENTIALS",
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "IMDS_ENDPOINT",
    "AZURE_CLIENT_ID",
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_FEDERATED_TOKEN_FILE",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
)


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m legacy_msi_credential ARGS`` as a user runs it; the outcome is the caller's to check."""
    return subprocess.run(
        [sys.executable, "-m", "legacy_msi_credential", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )


def start_cli(*args: str, env: dict[str, str] | None = None, text: bool = True) -> subprocess.Popen[Any]:
    """``python -m legacy_msi_credential ARGS`` started as a service manager starts a server
    (``serve``, ``emulate``): stdout and stderr piped, unbuffered; the caller stops it."""
    return subprocess.Popen(
        [sys.executable, "-m", "legacy_msi_credential", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=text,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``legacy-msi ARGS`` run in this process through ``cli.main``, as :func:`run_cli` runs it in
    a new one: its exit status, and what a terminal would show on stdout and stderr (log lines,
    and the traceback the interpreter prints for an exception ``--debug`` lets through).

    For what a subprocess proves nothing more about, at a fraction of the cost. The
    process's environment, root logger and streams are as before afterwards.
    """
    import io
    import logging
    import traceback

    from legacy_msi_credential.cli import main

    root = logging.getLogger()
    saved_handlers, saved_level, saved_environ = root.handlers[:], root.level, dict(os.environ)
    root.handlers.clear()  # as in a new process, so that main's logging.basicConfig takes effect
    # ...and every logger with no level of its own and enabled, as a new process has them
    # (filters stay: this package's own are installed once, when its modules are imported)
    loggers = [item for item in logging.Logger.manager.loggerDict.values() if isinstance(item, logging.Logger)]
    saved_loggers = [(item, item.level, item.disabled) for item in loggers]
    for item in loggers:
        item.setLevel(logging.NOTSET)
        item.disabled = False
    disabled = logging.root.manager.disable
    logging.disable(logging.NOTSET)
    os.environ.update(env or {})
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                status = main(list(args))
            except SystemExit as exc:
                status = exc.code if isinstance(exc.code, int) else 1
            except Exception as exc:  # what the interpreter does with an uncaught exception
                err.write("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
                status = 1
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        for item, level, was_disabled in saved_loggers:
            item.setLevel(level)
            item.disabled = was_disabled
        logging.disable(disabled)
        os.environ.clear()
        os.environ.update(saved_environ)
    return subprocess.CompletedProcess(["legacy-msi", *args], status, out.getvalue(), err.getvalue())


#: Parameters no legacy client sends, as put on the wire (percent-encoded) and as a server
#: reads them: misspelled, decorated or differently cased identity parameters, and others.
#: A server that read the request without one would answer for the system-assigned identity.
UNKNOWN_PARAMETERS = [
    ("client_id%20", "client_id "),
    ("client_id%5B%5D", "client_id[]"),
    ("identity_name", "identity_name"),
    ("mi_res_idx", "mi_res_idx"),
    ("msi_res_id2", "msi_res_id2"),
    ("Client_ID", "Client_ID"),
    ("CLIENT_ID", "CLIENT_ID"),
    ("Object_Id", "Object_Id"),
    ("MSI_RES_ID", "MSI_RES_ID"),
    ("Mi_Res_Id", "Mi_Res_Id"),
    ("principal_id", "principal_id"),
    ("clientid", "clientid"),
    ("user_assigned_identity", "user_assigned_identity"),
    ("API-Version", "API-Version"),
]


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


#: A loopback port bound and never listened on, for as long as this process lives: a
#: connection to it is refused, and no other process can start listening there (a released
#: port can be taken by any server of the test runs beside this one).
_HELD = socket.socket()
_HELD.bind(("127.0.0.1", 0))
DEAD_PORT = int(_HELD.getsockname()[1])


def pytest_configure(config: pytest.Config) -> None:
    """Once, before pytest-xdist starts its workers: Hypothesis's Unicode tables. On a fresh
    checkout each worker would otherwise build them itself, one pass over every code point
    for each table, about 9 s a worker under coverage with six at a time. Built here, they
    are saved in ``.hypothesis/`` and every worker reads them. The tables are Hypothesis's
    internals: should they move, the workers build them again, as before."""
    if hasattr(config, "workerinput"):
        return  # a worker: its controller did it
    try:
        from hypothesis.errors import HypothesisSideeffectWarning
        from hypothesis.internal.charmap import charmap, intervals_from_codec

        with warnings.catch_warnings():
            # Hypothesis warns of storage touched while plugins load: here that is the point.
            warnings.simplefilter("ignore", HypothesisSideeffectWarning)
            charmap()
            intervals_from_codec("utf-8")
    except Exception:  # only the head start is lost
        pass


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests marked ``slow``, then those of an ``xdist_group`` (which run one after the
    other in one worker), start first, so that with pytest-xdist none of them is left to run
    alone at the end; the order of the others is kept."""
    items.sort(
        key=lambda item: (item.get_closest_marker("slow") is None, item.get_closest_marker("xdist_group") is None)
    )


def _no_backoff(policy: Any, settings: Any) -> float:
    return 0.0


@pytest.fixture(autouse=True)
def isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """No test sees this machine's Azure settings, proxies or settings file, or reaches IMDS."""
    for name in _ISOLATED_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    missing = tmp_path_factory.mktemp("no-settings") / "ManagedIdentity-Settings"
    monkeypatch.setenv("LEGACY_MSI_SETTINGS_FILE", str(missing))
    dead = f"http://127.0.0.1:{DEAD_PORT}"
    # azure-identity's IMDS path and this package's diagnostics both go to a dead loopback port.
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", dead)
    monkeypatch.setenv("LEGACY_MSI_IMDS_URL", dead)
    # azure-identity's retries (azure-core's RetryPolicy) keep every attempt but not their
    # waits (1.6 s, 3.2 s... against that dead port): their timing is not under test here,
    # and this package's retry policies are its own, untouched.
    for policy in (RetryPolicy, AsyncRetryPolicy):
        monkeypatch.setattr(policy, "get_backoff_time", _no_backoff)


@pytest.fixture(autouse=True)
def collect_garbage_after_each_test() -> Iterator[None]:
    """Unclosed sockets and sessions are reported by the test that left them, not a later one."""
    yield
    if sys.version_info < (3, 10):
        # Python 3.9 makes an event loop for the main thread whenever a library asks for
        # one outside a running loop (azure-core and aiohttp objects built outside
        # asyncio.run do); nobody closes it, and the next asyncio.run drops it. Close it here.
        with contextlib.suppress(RuntimeError):
            loop = asyncio.get_event_loop_policy().get_event_loop()
            if not loop.is_running() and not loop.is_closed():
                loop.close()
        asyncio.set_event_loop(None)
    gc.collect()
    # What is still alive now outlives the test (session fixtures, caches, modules): moved out
    # of the collector's sight, so that the next test's collection looks only at what that
    # test made (a full collection over everything costs about 45 ms a test).
    gc.freeze()


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator(port=0) as running:
        yield running


class Clock:
    """A settable clock, starting at the real time."""

    def __init__(self) -> None:
        import time

        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


class SleepRecorder:
    """Sleeps that are recorded instead of slept."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []

    @property
    def total(self) -> float:
        return sum(self.sleeps)


class RecordingTransport(RequestsTransport):
    """azure-core's requests transport, whose retry sleeps are recorded, not slept."""

    def __init__(self, recorder: SleepRecorder, **kwargs: Any) -> None:
        super().__init__(use_env_settings=False, **kwargs)
        self.recorder = recorder

    def sleep(self, duration: float) -> None:
        self.recorder.sleeps.append(duration)


class AsyncRecordingTransport(AsyncioRequestsTransport):
    """The async twin of :class:`RecordingTransport`."""

    def __init__(self, recorder: SleepRecorder, **kwargs: Any) -> None:
        super().__init__(use_env_settings=False, **kwargs)
        self.recorder = recorder

    async def sleep(self, duration: float) -> None:
        self.recorder.sleeps.append(duration)


@pytest.fixture
def sleeps() -> SleepRecorder:
    return SleepRecorder()


@pytest.fixture
def retry_waits(monkeypatch: pytest.MonkeyPatch) -> SleepRecorder:
    """Every azure-core transport's retry waits recorded, not slept: for the tests whose
    subject is what an answer leaves behind, not how long the retries wait."""
    from azure.core.pipeline.transport import AioHttpTransport

    recorder = SleepRecorder()

    def record(transport: Any, seconds: float) -> None:
        recorder.sleeps.append(seconds)

    async def record_async(transport: Any, seconds: float) -> None:
        recorder.sleeps.append(seconds)

    monkeypatch.setattr(RequestsTransport, "sleep", record)
    monkeypatch.setattr(AsyncioRequestsTransport, "sleep", record_async)
    monkeypatch.setattr(AioHttpTransport, "sleep", record_async)
    return recorder


class SyncTwin:
    """Drives the sync credential."""

    name = "sync"
    cls: Any = LegacyMsiCredential
    transport_class: Any = RecordingTransport

    def __init__(self, recorder: SleepRecorder) -> None:
        self.recorder = recorder
        self.made: list[Any] = []

    def make(self, **kwargs: Any) -> Any:
        kwargs.setdefault("transport", self.transport_class(self.recorder))
        credential = self.cls(**kwargs)
        self.made.append(credential)
        return credential

    def run(self, value: Any) -> Any:
        """The value of a call: as is here, awaited by the async twin."""
        return value

    def get_token(self, credential: Any, *scopes: str, **kwargs: Any) -> Any:
        return self.run(credential.get_token(*scopes, **kwargs))

    def get_token_info(self, credential: Any, *scopes: str, **kwargs: Any) -> Any:
        return self.run(credential.get_token_info(*scopes, **kwargs))

    def close_all(self) -> None:
        for credential in self.made:
            self.run(credential.close())


class AsyncTwin(SyncTwin):
    """Drives the async credential, each call in its own event loop run."""

    name = "async"
    cls = AsyncLegacyMsiCredential
    transport_class = AsyncRecordingTransport

    def __init__(self, recorder: SleepRecorder) -> None:
        super().__init__(recorder)
        self.loop = asyncio.new_event_loop()

    def run(self, value: Any) -> Any:
        return self.loop.run_until_complete(value) if inspect.isawaitable(value) else value

    def close_all(self) -> None:
        super().close_all()
        self.loop.close()


@pytest.fixture(params=["sync", "async"])
def twin(request: pytest.FixtureRequest, sleeps: SleepRecorder) -> Iterator[SyncTwin]:
    """Each scenario runs against both credentials."""
    driver = SyncTwin(sleeps) if request.param == "sync" else AsyncTwin(sleeps)
    yield driver
    driver.close_all()


Twin = SyncTwin
MakeCredential = Callable[..., Any]

#: The real clients (tests/clients) are a job of their own, in a private network namespace:
#: scripts/test-clients.sh runs them, never this suite.
collect_ignore = [] if os.environ.get("LEGACY_MSI_CLIENT_TESTS") else ["clients"]
