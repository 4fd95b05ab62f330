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
        pipeline = credential._for_loop().pipeline
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


ON_AIOHTTP_ONLY = textwrap.dedent(
    """
    import asyncio, sys

    def loaded(*names):
        return sorted(name for name in names if name in sys.modules)

    REQUESTS_SIDE = ("requests", "legacy_msi_credential._guard", "azure.core.pipeline.transport._requests_basic")

    import legacy_msi_credential.aio
    print("import:", loaded("urllib3", *REQUESTS_SIDE))
    from legacy_msi_credential.aio import LegacyMsiCredential

    async def main():
        async with LegacyMsiCredential(endpoint=sys.argv[1]) as credential:
            token = await credential.get_token("https://storage.azure.com/.default")
            print(type(credential._for_loop().pipeline._transport).__name__, bool(token.token))

    asyncio.run(main())
    print("use:", loaded(*REQUESTS_SIDE))
    """
)


def test_the_aiohttp_path_never_loads_requests(emulator: Emulator) -> None:
    """The attempt (its deadline, its watchdog) is shared by both transports in a module of the
    standard library only, and requests' guard is imported only for a requests transport.

    After use, urllib3 itself is loaded, and only by the endpoint's URL check
    (``_endpoint._same_reading`` compares urllib3's reading of the URL with the standard
    library's at construction); requests and everything of the requests transport are not.
    """
    result = subprocess.run(
        [sys.executable, "-c", ON_AIOHTTP_ONLY, emulator.endpoint],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.splitlines() == ["import: []", "AioHttpTransport True", "use: []"]
