"""Single flight, stale-while-refreshing, several event loops, cancellation, fork."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from legacy_msi_credential import LegacyMsiCredential
from legacy_msi_credential.aio import LegacyMsiCredential as AsyncLegacyMsiCredential
from legacy_msi_credential.emulator import Emulator, Fault

from .conftest import Clock

ARM = "https://management.azure.com/.default"


def tokens_from_threads_at_once(credential: LegacyMsiCredential, threads: int) -> list[str]:
    """``threads`` threads released together by a barrier, each asking for a token once."""
    barrier = threading.Barrier(threads)

    def ask(_: int) -> str:
        barrier.wait()
        return credential.get_token(ARM).token

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(ask, range(threads)))


def test_64_threads_cold_start_with_one_request(emulator: Emulator) -> None:
    emulator.add_faults(Fault.delay(0.3))  # keep the first request in flight while the others arrive
    credential = LegacyMsiCredential(endpoint=emulator.endpoint)
    tokens = tokens_from_threads_at_once(credential, 64)
    assert len(set(tokens)) == 1
    assert emulator.request_count == 1
    credential.close()


def test_stale_token_is_served_while_one_thread_refreshes(clock: Clock) -> None:
    with Emulator(port=0, clock=clock) as vm:
        credential = LegacyMsiCredential(endpoint=vm.endpoint, clock=clock)
        old = credential.get_token_info(ARM)
        clock.now = old.refresh_on + 1
        vm.add_faults(Fault.delay(0.5))
        tokens = tokens_from_threads_at_once(credential, 16)
        assert vm.request_count == 2  # the first token, then exactly one refresh
        # Every caller but the one refreshing got the still-valid token without waiting.
        assert tokens.count(old.token) >= 15
        assert credential.get_token(ARM).token != old.token
        credential.close()


def test_a_thread_holding_a_valid_token_never_waits_for_another_threads_refresh(clock: Clock) -> None:
    """The refresh is held inside the endpoint until the emulator stops: a second caller is
    served the still-valid token while it is held, which it could not be if it waited."""
    with ThreadPoolExecutor(2) as pool:
        with Emulator(port=0, clock=clock) as vm:
            credential = LegacyMsiCredential(endpoint=vm.endpoint, clock=clock, retry_total=0)
            old = credential.get_token_info(ARM)
            clock.now = old.refresh_on + 1  # due for refresh, valid for minutes more
            vm.add_faults(Fault.hang())
            refreshing = pool.submit(credential.get_token_info, ARM)
            assert vm.wait_for_requests(2)  # the refresh is in the endpoint, and stays there
            served = pool.submit(credential.get_token, ARM).result(timeout=5)
            assert served.token == old.token
            assert not refreshing.done()
        # The emulator stopped: the held refresh fails, and its caller keeps the valid token.
        assert refreshing.result(timeout=15).token == old.token
        assert vm.request_count == 2
        credential.close()


async def test_a_task_holding_a_valid_token_never_waits_for_another_tasks_refresh(clock: Clock) -> None:
    """The same for tasks; and a refresh whose task is cancelled lets the next caller refresh."""
    with Emulator(port=0, clock=clock) as vm:
        async with AsyncLegacyMsiCredential(endpoint=vm.endpoint, clock=clock, retry_total=0) as credential:
            old = await credential.get_token_info(ARM)
            clock.now = old.refresh_on + 1
            vm.add_faults(Fault.hang())
            refreshing = asyncio.ensure_future(credential.get_token_info(ARM))
            assert await asyncio.get_running_loop().run_in_executor(None, vm.wait_for_requests, 2)
            served = await asyncio.wait_for(credential.get_token(ARM), 5)
            assert served.token == old.token
            assert not refreshing.done()
            refreshing.cancel()
            with pytest.raises(asyncio.CancelledError):
                await refreshing
            renewed = await asyncio.wait_for(credential.get_token(ARM), 5)  # refreshes: nobody else does
            assert renewed.token != old.token
            assert vm.request_count == 3


async def test_1000_tasks_cold_start_with_one_request(emulator: Emulator) -> None:
    emulator.add_faults(Fault.delay(0.2))
    async with AsyncLegacyMsiCredential(endpoint=emulator.endpoint) as credential:
        tokens = await asyncio.gather(*(credential.get_token(ARM) for _ in range(1000)))
    assert len({t.token for t in tokens}) == 1
    assert emulator.request_count == 1


async def test_stale_token_is_served_while_one_task_refreshes(clock: Clock) -> None:
    with Emulator(port=0, clock=clock) as vm:
        async with AsyncLegacyMsiCredential(endpoint=vm.endpoint, clock=clock) as credential:
            old = await credential.get_token_info(ARM)
            clock.now = old.refresh_on + 1
            vm.add_faults(Fault.delay(0.3))
            tokens = await asyncio.gather(*(credential.get_token(ARM) for _ in range(50)))
            assert vm.request_count == 2
            assert sum(t.token == old.token for t in tokens) == 49
            assert (await credential.get_token(ARM)).token != old.token


def test_one_async_credential_serves_several_event_loops(emulator: Emulator) -> None:
    credential = AsyncLegacyMsiCredential(endpoint=emulator.endpoint)
    errors: list[BaseException] = []
    tokens: list[str] = []

    async def work(scope: str) -> None:
        for _ in range(20):
            tokens.append((await credential.get_token(scope)).token)
        await credential.close()

    def thread_main(index: int) -> None:
        try:
            asyncio.run(work(f"https://resource-{index % 3}.vault.azure.net/.default"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=thread_main, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(tokens) == 120
    assert len(set(tokens)) == 3


async def test_cancelled_get_token_leaves_nothing_locked(emulator: Emulator) -> None:
    emulator.add_faults(Fault.hang(5))
    async with AsyncLegacyMsiCredential(endpoint=emulator.endpoint) as credential:
        waiting = asyncio.ensure_future(credential.get_token(ARM))
        assert await asyncio.get_running_loop().run_in_executor(None, emulator.wait_for_requests, 1)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        token = await asyncio.wait_for(credential.get_token(ARM), timeout=5)
        assert token.token
        assert emulator.request_count == 2
