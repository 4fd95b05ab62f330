"""The README's promises against a hostile endpoint, environment and caller, for both twins on every transport.

Each class of promise has its own section: no token in any output, bounded time, shared
failures, only the documented exceptions, and the smaller promises. "Loopback only" needs
addresses that are not loopback, so it runs in a private network namespace:
``test_loopback_namespace.py``.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import os
import select
import socket
import subprocess
import sys
import threading
import traceback
from typing import Any

import pytest
from azure.core.exceptions import ClientAuthenticationError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from legacy_msi_credential import CredentialUnavailableError, LegacyMsiCredential, TokenRequestError
from legacy_msi_credential._retry import REFUSED_RETRY_KEYWORDS
from legacy_msi_credential.aio import LegacyMsiCredential as AsyncLegacyMsiCredential
from legacy_msi_credential.emulator import Emulator, Fault

from .conftest import AsyncRecordingTransport, RecordingTransport, SleepRecorder, SyncTwin, cli, run_cli
from .hostile import (
    ARM,
    KINDS,
    HostileServer,
    attempt,
    http_answer,
    make,
    new_token,
    secret_part,
    texts_of,
    token_body,
)

DOCUMENTED = (CredentialUnavailableError, TokenRequestError)
FAST = {"retry_backoff_factor": 0.01, "response_timeout": 3, "retry_total": 1}


def _assert_no_token(texts: list[str], token: str) -> None:
    part = secret_part(token)
    for text in texts:
        assert part not in text, f"a part of the token leaked into: {text[:2000]}"


# --- 2. No token in a traceback, a log record or CLI output -----------------------------


def _scenarios(token: str) -> dict[str, tuple[list[Any], bool]]:
    """name -> (script steps for every connection, keep the connection open)."""
    body = token_body(token)
    json_type = {"Content-Type": "application/json"}
    return {
        "no status line": ([body, None], False),
        "chunked header, unchunked body": (
            [http_answer("200 OK", {**json_type, "Transfer-Encoding": "chunked"}, body), None],
            False,
        ),
        "body line parsed as a header": (
            [
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                + body
                + b"\r\n"
                + token.encode()
                + b"\r\nContent-Length: 0\r\n\r\n",
                None,
            ],
            False,
        ),
        "token as a header name and value": (
            [http_answer("503 Busy", {token: "x", "X-Debug": token, "Content-Length": "2"}, b"{}"), None],
            False,
        ),
        "token as the reason phrase": ([http_answer(f"500 {token}", {"Content-Length": "2"}, b"{}"), None], False),
        "short Content-Length, rest left on the connection": (
            [http_answer("200 OK", {**json_type, "Content-Length": "5"}, body)],
            True,
        ),
        "gzip-encoded token": (
            [http_answer("200 OK", {**json_type, "Content-Encoding": "gzip"}, gzip.compress(body)), None],
            False,
        ),
        "broken deflate": (
            [http_answer("200 OK", {**json_type, "Content-Encoding": "deflate", "Content-Length": "9"}, b"x" * 9)],
            False,
        ),
        "plain-text token": (
            [http_answer("200 OK", {"Content-Type": "text/plain"}, token.encode()), None],
            False,
        ),
        "token in error_description": (
            [
                http_answer(
                    "400 Bad Request",
                    json_type,
                    json.dumps({"error": "invalid_request", "error_description": f"bad {token} here"}).encode(),
                ),
                None,
            ],
            False,
        ),
        "token and an unusable expiry": (
            [http_answer("200 OK", json_type, token_body(token, expires_in="soon"))],
            False,
        ),
        "token after garbage": ([http_answer("200 OK", json_type, b")]}'\n" + body), None], False),
        "redirect quoting the token": (
            [http_answer("302 Found", {"Location": f"http://127.0.0.1/?t={token}", "Content-Length": "0"}, b"")],
            False,
        ),
        "token in a 100 Continue": ([f"HTTP/1.1 100 {token}\r\nX: {token}\r\n\r\n".encode(), body, None], False),
    }


SCENARIOS = list(_scenarios("x"))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_no_token_in_errors_or_logs(kind: str, scenario: str, retry_waits: SleepRecorder) -> None:
    token = new_token()
    steps, keep_open = _scenarios(token)[scenario]
    with HostileServer(lambda _: steps, keep_open=keep_open) as server:
        first = attempt(kind, server.endpoint, **FAST)
        # A second call on the same credential kind reuses what the first left behind.
        second = attempt(kind, server.endpoint, **FAST)
    for outcome in (first, second):
        assert outcome.error is not None, "no hostile answer may produce a token"
        assert isinstance(outcome.error, DOCUMENTED), repr(outcome.error)
        _assert_no_token(outcome.texts, token)
        # The chain stops at a sanitised cause: nothing a library raised is kept.
        assert outcome.error.__context__ is None
        cause = outcome.error.__cause__
        assert cause is None or (cause.__cause__ is None and cause.__context__ is None)


_cli = run_cli


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_no_token_in_cli_output(scenario: str, retry_waits: SleepRecorder) -> None:
    """Run in process (``conftest.cli``): a new interpreter shows nothing more here;
    ``test_reliability.py`` runs the command as a process. The retrying run's back-off is
    recorded, not slept: its waits are not under test here."""
    token = new_token()
    steps, keep_open = _scenarios(token)[scenario]
    with HostileServer(lambda _: steps, keep_open=keep_open) as server:
        once = ["--endpoint", server.endpoint, "--retry-total", "0"]
        runs = [
            cli("token", *once),
            cli("--debug", "token", *once),
            cli("token", *once, "--output", "json"),
            cli("--debug", "token", "--endpoint", server.endpoint, "--output", "raw"),  # with retries
        ]
    for run in runs:
        _assert_no_token([run.stdout, run.stderr], token)
        assert run.returncode == 1, (run.args, run.stdout, run.stderr)
    errors = [line for line in runs[0].stderr.splitlines() if not line.startswith("legacy-msi: warning:")]
    assert len(errors) == 1, runs[0].stderr
    assert errors[0].startswith("legacy-msi: error: ")
    assert "Traceback" not in runs[0].stderr + runs[2].stderr
    assert "DEBUG " in runs[1].stderr  # the debug log was on, and written where a terminal shows it


@pytest.mark.parametrize("scenario", ["no status line", "body line parsed as a header", "plain-text token"])
def test_no_token_in_doctor_output(scenario: str, retry_waits: SleepRecorder) -> None:
    """The doctor's token attempt retries: its waits are recorded, not slept."""
    token = new_token()
    steps, keep_open = _scenarios(token)[scenario]
    with HostileServer(lambda _: steps, keep_open=keep_open) as server:
        run = cli("--debug", "doctor", "--endpoint", server.endpoint, "--skip-imds")
    _assert_no_token([run.stdout, run.stderr], token)
    assert run.returncode == 1
    assert "DEBUG " in run.stderr


#: Tokens only one redaction rule catches, so that each rule is tried on its own: a JWT
#: whose payload and signature are too short for the long-run rule, and an opaque token long
#: enough for that rule but not a JWT (the scenarios above use a token both rules catch).
TOKEN_SHAPES = {
    "short JWT": "eyJ0eXAiOiJKV1QifQ.eyJhIjoxfQ.c2ln",
    "opaque, 22 characters": "a1b2c3d4e5f6g7h8i9j0k1",
    "opaque, base64 with padding": "Zm9vYmFyMTIzNDU2Nzg5MA==",
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", TOKEN_SHAPES)
@pytest.mark.parametrize("where", ["error_description", "a body that is not JSON"])
def test_every_redaction_rule_holds_on_its_own(kind: str, shape: str, where: str) -> None:
    token = TOKEN_SHAPES[shape]
    if where == "error_description":
        body = json.dumps({"error": "invalid_request", "error_description": f"rejected token {token} here"}).encode()
        answer = http_answer("400 Bad Request", {"Content-Type": "application/json"}, body)
    else:
        answer = http_answer("200 OK", {"Content-Type": "text/html"}, f"<p>{token}</p>".encode())
    with HostileServer(lambda _: [answer, None]) as server:
        outcome = attempt(kind, server.endpoint, retry_total=0)
    assert isinstance(outcome.error, (CredentialUnavailableError, TokenRequestError)), repr(outcome.error)
    parts = [part for part in token.split(".") if len(part) >= 4]
    for text in [*texts_of(outcome.error), *outcome.texts]:
        for part in parts:
            assert part not in text, f"{shape}: {part!r} in {text[:600]}"


LEAK_FAULTS = [
    [],
    [Fault.http_error(503), Fault.drop(), Fault.reset()],
    [Fault.truncated()],
    [Fault.expired()],
    [Fault.token_fields(expires_on="1000", not_before="2000")],
    [Fault.token_fields(expires_in="soon", expires_on=None)],
    [Fault.token_fields(token_type=["x"], resource=7)],
    [Fault.http_error(400, error="invalid_resource")],
    [Fault.http_error(500)] * 5,
]


def test_no_token_in_any_log_message_repr_or_traceback(
    twin: SyncTwin, emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    texts: list[str] = []
    with caplog.at_level(logging.DEBUG):
        for faults in LEAK_FAULTS:
            emulator.reset()
            emulator.add_faults(*faults)
            credential = twin.make(endpoint=emulator.endpoint, logging_enable=True)
            try:
                token = twin.get_token(credential, ARM)
                info = twin.get_token_info(credential, ARM)
                texts += [repr(token), str(token), repr(info), str(info)]
            except Exception as exc:
                texts += [str(exc), repr(exc), "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))]
            texts += [repr(credential), str(credential)]
    texts += [record.getMessage() for record in caplog.records]
    texts += [str(record.args) for record in caplog.records]
    assert any("Response status" in text for text in texts), "the network trace should have been logged"
    minted = emulator.minted_tokens
    assert len(minted) >= 5
    for token in minted:
        signature = token.split(".")[2]
        for text in texts:
            assert token not in text
            assert signature not in text


def test_cli_never_prints_a_token_unless_asked(emulator: Emulator) -> None:
    """As a user runs it, in a process of its own: its stdout and stderr, logs included."""
    outputs = []
    for args in (
        ["token", "--endpoint", emulator.endpoint],
        ["--debug", "token", "--endpoint", emulator.endpoint],
        ["doctor", "--endpoint", emulator.endpoint, "--skip-imds"],
        ["--debug", "doctor", "--endpoint", emulator.endpoint, "--skip-imds"],
    ):
        result = run_cli(*args)
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout + result.stderr)
    raw = run_cli("token", "--endpoint", emulator.endpoint, "-o", "raw").stdout.strip()
    assert raw in emulator.minted_tokens
    for token in emulator.minted_tokens:
        for output in outputs:
            assert token.split(".")[2] not in output


# --- 3. Every call is bounded in time ----------------------------------------------------


def _trickle(data: bytes, interval: float) -> list[Any]:
    steps: list[Any] = []
    for byte in data:
        steps += [bytes([byte]), interval]
    return steps


#: Each byte comes well within the socket's read timeout, the whole far beyond the 0.5 s deadline.
SLOW_PHASES: dict[str, list[Any]] = {
    "status line": _trickle(b"HTTP/1.1 200 OK\r\n" * 4, 0.1),
    "headers": [b"HTTP/1.1 200 OK\r\n", *_trickle(b"X-Slow: " + b"a" * 200, 0.1)],
    "body": [
        http_answer("200 OK", {"Content-Type": "application/json", "Content-Length": "400"}, b""),
        *_trickle(b" " * 200, 0.1),
    ],
    "endless 100 Continue": [b"HTTP/1.1 100 Continue\r\n\r\n", 0.05] * 400,
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("phase", list(SLOW_PHASES))
def test_each_slow_phase_is_bounded(kind: str, phase: str) -> None:
    """With a 0.5 s response_timeout, a server that would hold a call for 7 to 20 s cannot."""
    with HostileServer(lambda _: SLOW_PHASES[phase]) as server:
        outcome = attempt(kind, server.endpoint, response_timeout=0.5, retry_backoff_factor=0.01)
        requests_seen = len(server.connections)
    assert isinstance(outcome.error, CredentialUnavailableError), repr(outcome.error)
    assert "within 0.5 s" in str(outcome.error)
    assert requests_seen == 1  # an answer too slow is not asked for again
    assert outcome.seconds < 8, f"{phase}: held for {outcome.seconds:.1f} s"


@pytest.mark.parametrize("kind", KINDS)
def test_a_slow_proxy_is_bounded_as_a_slow_endpoint_is(kind: str) -> None:
    """Through ``proxies=`` (an endpoint allowed plain http, so the proxy is used), the
    connection to the proxy is watched as a direct one is: a proxy trickling its status
    line cannot hold a call past ``response_timeout``."""
    unreachable = socket.socket()  # bound, never listening: the endpoint is reached through the proxy only
    unreachable.bind(("127.0.0.1", 0))
    endpoint = f"http://127.0.0.1:{unreachable.getsockname()[1]}/oauth2/token"
    try:
        with HostileServer(lambda _: _trickle(b"HTTP/1.1 200 OK\r\n" * 12, 0.1)) as proxy:
            outcome = attempt(
                kind,
                endpoint,
                allow_insecure_http=True,
                proxies={"http": f"http://127.0.0.1:{proxy.port}"},
                response_timeout=0.5,
                retry_backoff_factor=0.01,
            )
            heads = [connection.head for connection in proxy.connections]
    finally:
        unreachable.close()
    assert len(heads) == 1  # an answer too slow is not asked for again
    assert heads[0].startswith(f"GET {endpoint}?".encode())  # the absolute form: sent to a proxy
    assert isinstance(outcome.error, CredentialUnavailableError), repr(outcome.error)
    assert "within 0.5 s" in str(outcome.error)
    assert outcome.seconds < 8, f"held for {outcome.seconds:.1f} s"


@pytest.mark.parametrize("kind", KINDS)
def test_slow_connect_is_bounded(kind: str) -> None:
    """A listener whose accept queue is full: connecting hangs until connection_timeout."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers = []
    try:
        for _ in range(8):  # fill the accept queue so that further SYNs are dropped
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(listener.getsockname())
            fillers.append(filler)
        select.select([], fillers, [], 2)  # until their connections are queued (or refused)
        endpoint = f"http://127.0.0.1:{listener.getsockname()[1]}/oauth2/token"
        outcome = attempt(kind, endpoint, connection_timeout=0.5, response_timeout=1, retry_backoff_factor=0.01)
    finally:
        for filler in fillers:
            filler.close()
        listener.close()
    assert isinstance(outcome.error, CredentialUnavailableError), repr(outcome.error)
    assert outcome.seconds < 8


# --- 4. Callers share a failure as they share a success ----------------------------------


def _persistent_503(emulator: Emulator) -> None:
    emulator.add_faults(*[Fault.http_error(503, error="busy")] * 2000)


def test_threads_share_one_failed_retry_sequence(emulator: Emulator, sleeps: SleepRecorder) -> None:
    """Every thread arrives while the sequence is under way: its first attempt is held for 0.5 s
    (then dropped, a broken connection, retried), as the other single-flight tests hold theirs."""
    emulator.add_faults(Fault.hang(0.5))
    _persistent_503(emulator)
    credential = LegacyMsiCredential(endpoint=emulator.endpoint, transport=RecordingTransport(sleeps))
    errors: list[BaseException] = []
    barrier = threading.Barrier(64)

    def worker() -> None:
        barrier.wait()
        try:
            credential.get_token(ARM)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(64)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    credential.close()
    assert len(errors) == 64
    assert all(isinstance(error, TokenRequestError) and error.status_code == 503 for error in errors)
    assert len({id(error) for error in errors}) == 64  # each caller its own instance
    assert emulator.request_count == 5  # one retry sequence: 1 attempt + 4 retries
    assert len(sleeps.sleeps) == 4


@pytest.mark.parametrize("transport", ["requests", "aiohttp"])
def test_tasks_share_one_failed_retry_sequence(emulator: Emulator, sleeps: SleepRecorder, transport: str) -> None:
    from azure.core.pipeline.transport import AioHttpTransport

    class AioRecording(AioHttpTransport):  # type: ignore[misc]
        async def sleep(self, duration: float) -> None:
            sleeps.sleeps.append(duration)

    _persistent_503(emulator)

    async def main() -> list[Any]:
        given = AsyncRecordingTransport(sleeps) if transport == "requests" else AioRecording()
        async with AsyncLegacyMsiCredential(endpoint=emulator.endpoint, transport=given) as credential:
            return await asyncio.gather(*(credential.get_token(ARM) for _ in range(1000)), return_exceptions=True)

    results = asyncio.run(main())
    assert all(isinstance(result, TokenRequestError) for result in results)
    assert emulator.request_count == 5
    assert len(sleeps.sleeps) == 4


def test_a_caller_arriving_after_a_failure_tries_again(emulator: Emulator, sleeps: SleepRecorder) -> None:
    emulator.add_faults(Fault.http_error(400, error="invalid_request"))
    credential = LegacyMsiCredential(endpoint=emulator.endpoint, transport=RecordingTransport(sleeps))
    with pytest.raises(TokenRequestError):
        credential.get_token(ARM)
    assert credential.get_token(ARM).token  # not handed the old failure
    assert emulator.request_count == 2
    credential.close()


# --- 5. Only the documented exceptions escape --------------------------------------------

CONTENT_LENGTHS = ["²", "-1", "1e3", "5, 6", "+5", "0x10", " 7 ", "9" * 40, "١٢", ""]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("length", CONTENT_LENGTHS)
def test_odd_content_length_values(kind: str, length: str) -> None:
    token = new_token()
    answer = http_answer("200 OK", {"Content-Type": "application/json", "Content-Length": length}, token_body(token))
    with HostileServer(lambda _: [answer, None]) as server:
        outcome = attempt(kind, server.endpoint, **FAST)
    if outcome.error is not None:
        assert isinstance(outcome.error, DOCUMENTED), repr(outcome.error)
        _assert_no_token(outcome.texts, token)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "fields",
    [
        {"expires_in": int("9" * 400)},
        {"expires_in": None, "expires_on": int("9" * 400)},
        {"expires_in": None, "expires_on": "12/31/99999 11:59:59 PM +00:00"},
        {"expires_in": None, "expires_on": "\uff11\uff12/31/2030 11:59:59 PM +00:00"},
        {"expires_in": 1e308},
        {"expires_in": "1" * 25},
    ],
)
def test_numbers_out_of_any_range(kind: str, fields: dict[str, Any]) -> None:
    token = new_token()
    body = json.dumps({"access_token": token, **{k: v for k, v in fields.items() if v is not None}}).encode()
    answer = http_answer("200 OK", {"Content-Type": "application/json", "Content-Length": str(len(body))}, body)
    with HostileServer(lambda _: [answer, None]) as server:
        outcome = attempt(kind, server.endpoint, **FAST)
    if outcome.error is not None:
        assert isinstance(outcome.error, TokenRequestError), repr(outcome.error)
        _assert_no_token(outcome.texts, token)
    else:
        assert outcome.value.expires_on <= 253402300799


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("scopes", "call_kwargs"),
    [
        ((["https://management.azure.com/.default"],), {}),
        (({"a": 1},), {}),
        ((None,), {}),
        ((b"https://management.azure.com",), {}),
        ((ARM,), {"claims": ["not", "a", "string"]}),
    ],
)
def test_bad_callers_get_value_errors_before_any_io(kind: str, scopes: tuple[Any, ...], call_kwargs: Any) -> None:
    with HostileServer(lambda _: [None]) as server:
        outcome = attempt(kind, server.endpoint, *scopes, call_kwargs=call_kwargs)
        assert server.connections == []
    assert isinstance(outcome.error, ValueError), repr(outcome.error)


@pytest.mark.parametrize("kind", KINDS)
def test_get_token_info_options_must_be_a_mapping(kind: str) -> None:
    credential = make(kind, "http://127.0.0.1:9/oauth2/token")

    async def run() -> Any:
        return await credential.get_token_info(ARM, options=["claims"])

    def get() -> Any:
        return credential.get_token_info(ARM, options=["claims"]) if kind == "sync" else asyncio.run(run())

    with pytest.raises(ValueError, match="options must be a mapping"):
        get()


def test_deeply_nested_settings_file(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = tmp_path / "ManagedIdentity-Settings"
    settings.write_text("[" * 30000 + "]" * 30000)
    monkeypatch.setenv("LEGACY_MSI_SETTINGS_FILE", str(settings))
    credential = LegacyMsiCredential()  # never raises: the file is reported at token time
    with pytest.raises(CredentialUnavailableError, match="not UTF-8 JSON"):
        credential.get_token(ARM)


_STATUS = st.sampled_from(
    [b"HTTP/1.1 200 OK", b"HTTP/1.0 200 OK", b"HTTP/1.1 400 Bad", b"HTTP/1.1 503 X", b"HTTP/1.1 999 ?", b"", b"HTP/1 2"]
)
_HEADER = st.tuples(
    st.sampled_from(["Content-Length", "Content-Type", "Transfer-Encoding", "Content-Encoding", "Retry-After", "X"]),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=12),
)


@st.composite
def hostile_answers(draw: Any, token: str) -> bytes:
    status = draw(_STATUS)
    headers = draw(st.lists(_HEADER, max_size=4))
    fields = draw(
        st.dictionaries(
            st.sampled_from(["expires_in", "expires_on", "not_before", "token_type", "error", "error_description"]),
            st.one_of(st.integers(), st.floats(), st.text(max_size=20), st.none(), st.booleans()),
            max_size=4,
        )
    )
    body = draw(
        st.one_of(
            st.just(token_body(token, **fields)),
            st.binary(max_size=64),
            st.just(token_body(token, **fields)[: draw(st.integers(0, 40))]),
        )
    )
    head = status + b"".join(b"\r\n" + f"{name}: {value}".encode() for name, value in headers)
    return head + b"\r\n\r\n" + body if status else body


@pytest.mark.parametrize("kind", KINDS)
def test_any_answer_ends_in_a_documented_outcome(kind: str) -> None:
    """Property: for any answer, a token or a documented error, never a part of the token in it."""
    token = new_token()
    current: list[bytes] = [b""]
    with HostileServer(lambda _: [current[0], None]) as server:

        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(answer=hostile_answers(token))
        def check(answer: bytes) -> None:
            current[0] = answer
            outcome = attempt(kind, server.endpoint, retry_total=0, response_timeout=2, logging_enable=False)
            if outcome.error is not None:
                assert isinstance(outcome.error, DOCUMENTED), repr(outcome.error)
                _assert_no_token(outcome.texts, token)

        check()


@pytest.mark.parametrize("identity_imported_first", [False, True])
def test_errors_pickle_across_processes(identity_imported_first: bool) -> None:
    script = f"""
import pickle, sys
{"import azure.identity" if identity_imported_first else ""}
from legacy_msi_credential import LegacyMsiCredential
try:
    LegacyMsiCredential(endpoint="http://127.0.0.1:9/oauth2/token").get_token("https://x/.default")
except Exception as exc:
    again = pickle.loads(pickle.dumps(exc))
    import azure.identity
    chained = isinstance(again, azure.identity.CredentialUnavailableError)
    print(type(again).__name__, again.message == exc.message, chained)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.split("\n")[0] == "CredentialUnavailableError True True"


def test_refusals_pickle_with_their_fields(emulator: Emulator) -> None:
    import pickle

    emulator.add_faults(Fault.http_error(401, error="unauthorized_client", description="not assigned"))
    with pytest.raises(TokenRequestError) as caught:
        LegacyMsiCredential(endpoint=emulator.endpoint).get_token(ARM)
    again = pickle.loads(pickle.dumps(caught.value))
    assert (again.status_code, again.error_code, again.error_description, again.message) == (
        401,
        "unauthorized_client",
        "not assigned",
        caught.value.message,
    )


# --- 6. Smaller promises ------------------------------------------------------------------


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
@pytest.mark.parametrize("kind", ["aio-aiohttp", "aio-requests"])
def test_many_event_loops_leak_nothing(emulator: Emulator, kind: str) -> None:
    credential = make(kind, emulator.endpoint)

    async def once() -> None:
        await credential.get_token(ARM, claims="{}")  # claims: a request every time

    asyncio.run(once())
    before = _open_descriptors()
    for _ in range(150):
        asyncio.run(once())
    import gc

    gc.collect()
    assert _open_descriptors() - before <= 4
    assert len(credential._loops) <= 1
    assert emulator.request_count == 151


@pytest.mark.parametrize("kind", KINDS)
def test_a_token_within_10_s_of_expiry_is_never_served(emulator: Emulator, clock: Any, kind: str) -> None:
    emulator.add_faults(Fault.lifetime(15))
    credential = make(kind, emulator.endpoint, clock=clock)

    async def twice() -> tuple[Any, Any]:
        first = await credential.get_token(ARM)
        clock.advance(6)  # 9 s left
        return first, await credential.get_token(ARM)

    if kind == "sync":
        first = credential.get_token(ARM)
        clock.advance(6)
        second = credential.get_token(ARM)
        credential.close()
    else:
        first, second = asyncio.run(twice())
    assert second.token != first.token
    assert second.expires_on - clock() > 10
    assert emulator.request_count == 2


@pytest.mark.slow
def test_settings_file_swapped_for_a_fifo_never_blocks(tmp_path: Any) -> None:
    """Another process swaps the file for a FIFO over and over; construction never blocks."""
    path = tmp_path / "ManagedIdentity-Settings"
    script = f"""
import os, threading, time
os.environ["LEGACY_MSI_SETTINGS_FILE"] = path = {str(path)!r}
from legacy_msi_credential import LegacyMsiCredential
LegacyMsiCredential()  # what the first construction loads, loaded
stop = time.monotonic() + 1.5  # from here: import time on a loaded machine is not the test's
def swap():
    while time.monotonic() < stop:
        tmp = path + ".f"
        with open(path + ".r", "w") as f:
            f.write('{{"url": "http://localhost:50342"}}')
        os.replace(path + ".r", path)
        try:
            os.mkfifo(tmp)
            os.replace(tmp, path)
        except FileExistsError:
            pass
threading.Thread(target=swap, daemon=True).start()
count = 0
while time.monotonic() < stop:
    LegacyMsiCredential()
    count += 1
print(count)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert int(result.stdout) > 100


def test_cli_shows_no_terminal_escapes(emulator: Emulator) -> None:
    emulator.add_faults(Fault.http_error(400, error="invalid_request\x1b]0;x\x07", description="\x1b[31mred\x1b[0m\r"))
    run = _cli("token", "--endpoint", emulator.endpoint)
    assert run.returncode == 1
    assert "\x1b" not in run.stderr
    assert "\x07" not in run.stderr
    assert "\r" not in run.stderr
    assert "red" in run.stderr


def test_cli_prints_a_far_future_expiry(emulator: Emulator) -> None:
    emulator.add_faults(Fault.token_fields(expires_in="253402300799"))
    for output in ("table", "json"):
        emulator.add_faults(Fault.token_fields(expires_in="253402300799"))
        run = _cli("token", "--endpoint", emulator.endpoint, "--output", output)
        assert run.returncode == 0, run.stderr
        assert "9999" in run.stdout


def test_emulate_refuses_an_infinite_lifetime_in_one_line() -> None:
    run = _cli("emulate", "--port", "0", "--fault", "lifetime=inf", "--", sys.executable, "-c", "pass")
    assert run.returncode == 1
    assert run.stderr.startswith("legacy-msi: error: fault 'lifetime=inf'")
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize("kind", ["sync", "aio-aiohttp"])
@pytest.mark.parametrize("name", REFUSED_RETRY_KEYWORDS)
def test_retry_keywords_are_refused_by_their_own_name(name: str, kind: str) -> None:
    with pytest.raises(ValueError, match=f"^{name} is not supported"):
        make(kind, None, **{name: 1})


def test_retry_backoff_keywords_are_honoured(emulator: Emulator, sleeps: SleepRecorder) -> None:
    emulator.add_faults(*[Fault.http_error(429)] * 3)
    credential = LegacyMsiCredential(
        endpoint=emulator.endpoint,
        transport=RecordingTransport(sleeps),
        retry_backoff_factor=0.1,
        retry_backoff_max=0.15,
    )
    assert credential.get_token(ARM).token
    credential.close()
    assert len(sleeps.sleeps) == 3
    assert all(0.05 <= wait <= 0.15 for wait in sleeps.sleeps), sleeps.sleeps


@pytest.mark.parametrize("kind", KINDS)
def test_a_byte_order_mark_before_the_answer_is_accepted(kind: str) -> None:
    body = b"\xef\xbb\xbf" + token_body("bom-token")
    answer = http_answer("200 OK", {"Content-Type": "application/json", "Content-Length": str(len(body))}, body)
    with HostileServer(lambda _: [answer, None]) as server:
        outcome = attempt(kind, server.endpoint)
    assert outcome.error is None, outcome.error
    assert outcome.value.token == "bom-token"


def test_errors_keep_no_record_of_what_was_being_handled() -> None:
    """azure-core's AzureError copies sys.exc_info(); this package's errors drop it."""
    try:
        raise RuntimeError("raw bytes from a server: SECRET")
    except RuntimeError:
        with pytest.raises(CredentialUnavailableError) as caught:
            LegacyMsiCredential(endpoint="http://127.0.0.1:9/oauth2/token").get_token(ARM)
    assert "SECRET" not in "".join(texts_of(caught.value).__iter__().__next__())
    assert caught.value.exc_value is None
    assert "SECRET" not in caught.value.exc_msg


def test_outcomes_are_documented_for_a_closed_port() -> None:
    outcome = attempt("sync", "http://127.0.0.1:9/oauth2/token")
    assert isinstance(outcome.error, CredentialUnavailableError)
    assert isinstance(outcome.error, ClientAuthenticationError)


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("refusal", ["announced oversized body", "encoded body", "too slow"])
def test_a_half_read_connection_is_never_used_again(kind: str, refusal: str) -> None:
    """The first answer is abandoned halfway; the next request must not read its leftovers."""
    body = token_body("second-token")
    good = http_answer("200 OK", {"Content-Type": "application/json", "Content-Length": str(len(body))}, body)
    first: list[Any] = {
        "announced oversized body": [
            http_answer("200 OK", {"Content-Type": "application/json", "Content-Length": "999999"}, b"x" * 4096),
            0.5,
            b"x" * 4096,
        ],
        "encoded body": [http_answer("200 OK", {"Content-Encoding": "gzip", "Content-Length": "60"}, b"")],
        "too slow": [
            http_answer("200 OK", {"Content-Type": "application/json", "Content-Length": "60"}, b"{"),
            1.5,
        ],
    }[refusal]
    # The same bytes follow on the first connection, so reusing it would read them as an answer.
    script = {0: [*first, good, good], 1: [good]}
    with HostileServer(lambda number: script.get(number, [None]), keep_open=True) as server:
        credential = make(kind, server.endpoint, response_timeout=1, retry_total=0)

        async def both() -> tuple[Any, Any]:
            try:
                await credential.get_token(ARM)
            except CredentialUnavailableError as exc:
                failure = exc
            return failure, await credential.get_token("https://vault.azure.net/.default")

        if kind == "sync":
            with pytest.raises(CredentialUnavailableError):
                credential.get_token(ARM)
            second = credential.get_token("https://vault.azure.net/.default")
            credential.close()
        else:

            async def run() -> Any:
                try:
                    _, token = await both()
                    return token
                finally:
                    await credential.close()

            second = asyncio.run(run())
        connections = len(server.connections)
    assert second.token == "second-token"
    assert connections == 2
