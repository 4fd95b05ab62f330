"""The credential's guarantees, on both twins against the emulator:

* a token only for the identity asked for;
* right when the wall clock steps;
* never wedged by an exception (an interrupt included) anywhere in a locked region;
* usable again after ``close()``, with ``with``, ``async with``, ``get_token`` and ``get_token_info``.
"""

from __future__ import annotations

import asyncio
import linecache
import sys
import threading
from typing import Any, Callable

import pytest

from legacy_msi_credential import IdentityMismatchError, LegacyMsiCredential, TokenRequestError
from legacy_msi_credential.aio import LegacyMsiCredential as AsyncLegacyMsiCredential
from legacy_msi_credential.cli import main
from legacy_msi_credential.emulator import Emulator, Fault, UserAssignedIdentity

from .conftest import Clock, SyncTwin

ARM = "https://management.azure.com/.default"
ASKED = UserAssignedIdentity(client_id="3f2a9c1e-0000-4000-8000-00000000a5ed").completed()


# --- a token only for the identity asked for ---------------------------------------------------


@pytest.mark.parametrize(
    ("parameter", "claim"), [("client_id", "appid"), ("object_id", "oid"), ("msi_res_id", "xms_mirid")]
)
def test_a_token_for_another_identity_is_refused_and_not_cached(
    twin: SyncTwin, emulator: Emulator, parameter: str, claim: str
) -> None:
    asked = getattr(ASKED, parameter)
    credential = twin.make(endpoint=emulator.endpoint, **{parameter: asked})
    emulator.add_faults(Fault.wrong_identity())
    with pytest.raises(IdentityMismatchError) as caught:
        twin.get_token(credential, ARM)
    error = caught.value
    assert isinstance(error, TokenRequestError)  # a ClientAuthenticationError: a chain stops there
    assert error.error_code == "identity_mismatch"
    assert asked in error.message
    wrong_token = emulator.minted_tokens[-1]
    assert wrong_token.split(".")[1] not in error.message  # identifiers, never the token
    assert "another identity than the one asked for" in error.message
    assert "was not used or cached" in error.message
    right = twin.get_token(credential, ARM)  # nothing was cached: a new request, the right token
    assert right.token == emulator.minted_tokens[-1] != wrong_token
    assert emulator.request_count == 2


def test_an_echoed_client_id_of_another_identity_is_refused(twin: SyncTwin, emulator: Emulator) -> None:
    credential = twin.make(endpoint=emulator.endpoint, client_id=ASKED.client_id)
    emulator.add_faults(Fault.token_fields(client_id="00000000-0000-4000-8000-0000000e1ce0"))  # the token is right
    with pytest.raises(
        IdentityMismatchError, match="the answer names client_id '00000000-0000-4000-8000-0000000e1ce0'"
    ):
        twin.get_token(credential, ARM)


@pytest.mark.parametrize("case", ["system-assigned", "not a JWT"])
def test_what_cannot_be_checked_passes_as_before(twin: SyncTwin, emulator: Emulator, case: str) -> None:
    """The README's limits: a system-assigned request, and a token that is not a JWT, are not checked."""
    if case == "system-assigned":
        credential = twin.make(endpoint=emulator.endpoint)
        emulator.add_faults(Fault.wrong_identity())
    else:
        credential = twin.make(endpoint=emulator.endpoint, object_id=ASKED.object_id)
        emulator.add_faults(Fault.token_fields(access_token="opaque-token-of-no-known-shape"))
    assert twin.get_token(credential, ARM).token


def test_the_cli_says_which_identity_came_back(emulator: Emulator, capsys: pytest.CaptureFixture[str]) -> None:
    emulator.add_faults(Fault.wrong_identity())
    status = main(["token", "--endpoint", emulator.endpoint, "--client-id", ASKED.client_id, ARM])
    err = capsys.readouterr().err
    assert status == 1
    assert f"asked for client_id '{ASKED.client_id}', the token's appid claim is '" in err


def test_the_fault_is_in_the_emulators_language() -> None:
    from legacy_msi_credential.emulator import parse_fault_spec

    assert [fault.kind for fault in parse_fault_spec("wrong-identity,ok")] == ["wrong-identity", "ok"]


# --- clocks that step ---------------------------------------------------------------------------


class Monotonic:
    """A monotonic clock the test moves forward only."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_wall_clock_stepped_back_does_not_extend_a_tokens_life(twin: SyncTwin, emulator: Emulator) -> None:
    wall, mono = Clock(), Monotonic()
    credential = twin.make(endpoint=emulator.endpoint, clock=wall, monotonic=mono)
    first = twin.get_token(credential, ARM)  # expires_in 3599: by both clocks
    wall.advance(-3600)  # NTP steps an hour-fast clock back
    for seconds in (3000, 595):  # the token's real life passes
        wall.advance(seconds)
        mono.now += seconds
    assert first.expires_on - wall() > 3000  # the wall clock still thinks it has most of an hour
    twin.get_token(credential, ARM)
    assert emulator.request_count == 2  # expired by its age: a new token


def test_the_refresh_window_is_kept_on_both_clocks(twin: SyncTwin, emulator: Emulator) -> None:
    wall, mono = Clock(), Monotonic()
    credential = twin.make(endpoint=emulator.endpoint, clock=wall, monotonic=mono)
    first = twin.get_token_info(credential, ARM)
    wall.advance(-3600)
    mono.now += first.refresh_on - first.expires_on + 3599 + 1  # past the refresh moment, by age
    twin.get_token_info(credential, ARM)
    assert emulator.request_count == 2  # refreshed although the wall clock says it is not due


def test_a_wall_clock_stepped_forward_costs_one_refresh(twin: SyncTwin, emulator: Emulator) -> None:
    wall, mono = Clock(), Monotonic()
    credential = twin.make(endpoint=emulator.endpoint, clock=wall, monotonic=mono)
    twin.get_token(credential, ARM)
    wall.advance(3600)
    twin.get_token(credential, ARM)
    twin.get_token(credential, ARM)
    assert emulator.request_count == 2


# --- never wedged --------------------------------------------------------------------------------


#: The twins' own code, where their locks are taken and released.
#:
#: A ``with`` statement's own line is not a line of the region it guards: CPython 3.11+
#: reports it again as the block exits, and an exception a trace hook raises *there* skips
#: ``__exit__``, which no real interrupt can do (signals are handled only after the call to
#: ``__exit__``). Every other line is tried.
TWINS = (
    "legacy_msi_credential/_credential.py",
    "legacy_msi_credential/_base.py",
    "legacy_msi_credential/_cache.py",
    "legacy_msi_credential/aio/_credential.py",
)


class Injected(BaseException):
    """What the trace hook raises: not an Exception, like KeyboardInterrupt."""


def _is_with_statement(frame: Any) -> bool:
    source = linecache.getline(frame.f_code.co_filename, frame.f_lineno).strip()
    return source.startswith(("with ", "async with "))


def _inject_at(n: int, held: Callable[[], bool]) -> Callable[..., Any]:
    """A trace function raising :class:`Injected` at the ``n``-th line run while ``held()``."""
    seen = [0]

    def local(frame: Any, event: str, arg: Any) -> Any:
        if event == "line" and held() and not _is_with_statement(frame):
            seen[0] += 1
            if seen[0] == n:
                raise Injected(n)
        return local

    def global_(frame: Any, event: str, arg: Any) -> Any:
        return local if frame.f_code.co_filename.endswith(TWINS) else None

    return global_


def _run_with_timeout(call: Callable[[], Any], seconds: float = 15) -> Any:
    outcome: list[Any] = []
    thread = threading.Thread(target=lambda: outcome.append(call()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert outcome, "wedged: the call did not return"
    return outcome[0]


def test_an_exception_at_any_line_of_the_locked_region_leaves_nothing_locked(emulator: Emulator) -> None:
    resource = "https://management.azure.com"
    injected_at = []
    for n in range(1, 400):
        credential = LegacyMsiCredential(endpoint=emulator.endpoint)

        def held(credential: LegacyMsiCredential = credential) -> bool:
            lock = credential._locks.get(resource)
            return lock is not None and lock.locked()

        previous = sys.gettrace()  # coverage's tracer, if it runs: put back after
        sys.settrace(_inject_at(n, held))
        try:
            credential.get_token(ARM)
            finished = True
        except Injected:
            finished = False
        finally:
            sys.settrace(previous)
        assert not held(), f"the lock stayed held after an exception at line {n} of the locked region"
        assert _run_with_timeout(lambda credential=credential: credential.get_token(ARM).token)
        credential.close()
        if finished:
            break
        injected_at.append(n)
    assert len(injected_at) > 20  # every line of the region was tried, and then the call ran through


def test_an_exception_during_a_refresh_leaves_nothing_locked(clock: Clock) -> None:
    """The refresh path too: the caller that refreshes is interrupted at each line."""
    resource = "https://management.azure.com"
    with Emulator(port=0, clock=clock) as vm:
        credential = LegacyMsiCredential(endpoint=vm.endpoint, clock=clock)
        info = credential.get_token_info(ARM)
        tried = 0
        for n in range(1, 400):
            clock.now = info.refresh_on + 1  # due for refresh, still valid
            lock = credential._locks[resource]
            previous = sys.gettrace()
            sys.settrace(_inject_at(n, lock.locked))
            try:
                credential.get_token_info(ARM)
                finished = True
            except Injected:
                finished = False
            finally:
                sys.settrace(previous)
            assert not lock.locked()
            info = _run_with_timeout(lambda: credential.get_token_info(ARM))  # refreshes again, or serves
            if finished:
                break
            tried += 1
        credential.close()
    assert tried > 20


def test_the_async_twin_is_never_wedged_either(emulator: Emulator) -> None:
    resource = "https://management.azure.com"

    async def scenario() -> int:
        tried = 0
        for n in range(1, 400):
            credential = AsyncLegacyMsiCredential(endpoint=emulator.endpoint)

            def held(credential: AsyncLegacyMsiCredential = credential) -> bool:
                lock = credential._for_loop().locks.get(resource)
                return lock is not None and lock.locked()

            previous = sys.gettrace()
            sys.settrace(_inject_at(n, held))
            try:
                await credential.get_token(ARM)
                finished = True
            except Injected:
                finished = False
            finally:
                sys.settrace(previous)
            assert not held()
            assert (await asyncio.wait_for(credential.get_token(ARM), 15)).token
            await credential.close()
            if finished:
                return tried
            tried += 1
        return tried

    assert asyncio.run(scenario()) > 20


# --- usable again after close ---------------------------------------------------------------------


def test_sync_with_twice_and_calls_after_close(emulator: Emulator) -> None:
    credential = LegacyMsiCredential(endpoint=emulator.endpoint)
    with credential:
        first = credential.get_token(ARM)
    with credential:  # was: ValueError: HTTP transport has already been closed
        assert credential.get_token_info("https://vault.azure.net/.default").token
    credential.close()
    assert credential.get_token("https://storage.azure.com/.default").token
    credential.close()
    assert credential.get_token_info("https://graph.microsoft.com/.default").token
    assert credential.get_token(ARM).token == first.token  # the cache outlives the transport
    credential.close()
    assert emulator.request_count == 4


def test_async_with_twice_and_calls_after_close(emulator: Emulator) -> None:
    async def scenario() -> None:
        credential = AsyncLegacyMsiCredential(endpoint=emulator.endpoint)
        async with credential:
            await credential.get_token(ARM)
        async with credential:
            assert (await credential.get_token_info("https://vault.azure.net/.default")).token
        await credential.close()
        assert (await credential.get_token("https://storage.azure.com/.default")).token
        await credential.close()
        assert (await credential.get_token_info("https://graph.microsoft.com/.default")).token
        await credential.close()

    asyncio.run(scenario())
    assert emulator.request_count == 4
