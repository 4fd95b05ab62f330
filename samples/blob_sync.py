"""Blob storage with the synchronous client: create a container, upload, list, download, delete.

On a VM with the legacy extension::

    python samples/blob_sync.py --account-url https://NAME.blob.core.windows.net

Anywhere, against the emulator and a local Azurite::

    legacy-msi emulate --port 0 -- python samples/blob_sync.py --azurite

The commands above run from the repository's root in its virtual environment
(``scripts/setup.sh``, then ``source .venv/bin/activate``).
"""

from __future__ import annotations

import argparse
import uuid

from azure.storage.blob import BlobServiceClient
from local_services import add_storage_arguments, run_sample, storage_account

from legacy_msi_credential import LegacyMsiCredential


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_storage_arguments(parser)
    args = parser.parse_args(argv)
    with LegacyMsiCredential() as credential, storage_account(args) as (url, verify):
        client = BlobServiceClient(url, credential=credential, connection_verify=verify)
        container = client.create_container(f"sample-{uuid.uuid4().hex[:12]}")
        print(f"created container {container.container_name}")
        for name in ("one.txt", "two.txt"):
            container.upload_blob(name, f"contents of {name}".encode())
        print("blobs:", ", ".join(blob.name for blob in container.list_blobs()))
        print("one.txt:", container.download_blob("one.txt").readall().decode())
        container.delete_container()
        print("deleted it")
    return 0


if __name__ == "__main__":
    run_sample(main, __file__)
