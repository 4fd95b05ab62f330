"""Blob storage with the async client and the async credential.

On a VM with the legacy extension::

    python samples/blob_async.py --account-url https://NAME.blob.core.windows.net

Anywhere, against the emulator and a local Azurite::

    legacy-msi emulate --port 0 -- python samples/blob_async.py --azurite

The commands above run from the repository's root in its virtual environment
(``scripts/setup.sh``, then ``source .venv/bin/activate``).
"""

from __future__ import annotations

import argparse
import asyncio
import uuid

from azure.storage.blob.aio import BlobServiceClient
from local_services import add_storage_arguments, run_sample, storage_account

from legacy_msi_credential.aio import LegacyMsiCredential


async def run(url: str, verify: object) -> None:
    async with (
        LegacyMsiCredential() as credential,
        BlobServiceClient(url, credential=credential, connection_verify=verify) as client,
    ):
        container = await client.create_container(f"sample-{uuid.uuid4().hex[:12]}")
        await asyncio.gather(*(container.upload_blob(f"{n}.txt", f"blob {n}".encode()) for n in range(5)))
        names = [blob.name async for blob in container.list_blobs()]
        print(f"uploaded {len(names)} blobs concurrently to {container.container_name}: {', '.join(names)}")
        await container.delete_container()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_storage_arguments(parser)
    args = parser.parse_args(argv)
    with storage_account(args) as (url, verify):
        asyncio.run(run(url, verify))
    return 0


if __name__ == "__main__":
    run_sample(main, __file__)
