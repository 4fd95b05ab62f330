"""The async credential's transports: aiohttp when installed, requests in a thread otherwise; nothing left open."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from legacy_msi_credential.emulator import Emulator

SCRIPT = textwrap.dedent(
    """
    import asyncio, gc, sys, warnings
    {prelude}
    from legacy_msi_credential.aio import LegacyMsiCredential

    async def main():
        credential = LegacyMsiCredential(endpoint=sys.argv[1])
        token = await credential.get_token("https://storage.azure.com/.default")
        pipeline = credential._for_loop()[0]
        print(type(pipeline._transport).__name__, bool(token.token))
        await credential.close()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        asyncio.run(main())
        gc.collect()
    print("warnings:", [str(w.message) for w in caught])
    """
)


@pytest.mark.parametrize(
    ("prelude", "transport"),
    [
        ("", "AioHttpTransport"),
        ("sys.modules['aiohttp'] = None  # as if the aio extra were not installed", "AsyncioRequestsTransport"),
    ],
)
def test_transport_choice_and_clean_close(emulator: Emulator, prelude: str, transport: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(prelude=prelude), emulator.endpoint],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = result.stdout.splitlines()
    assert lines[0] == f"{transport} True"
    assert lines[1] == "warnings: []"
    assert "Unclosed" not in result.stderr
