"""Quick start: a real Azure SDK client authenticating through LegacyMsiCredential.

It asks the legacy endpoint for a storage token, prints what it got (claims and expiry,
never the token), then has ``BlobServiceClient`` create a container, upload and read a
blob, and fetch a user delegation key (which only a bearer token can get), and cleans up.

On a VM with the legacy managed identity extension::

    python samples/quickstart.py --account-url https://NAME.blob.core.windows.net

Anywhere, against the emulator and a local Azurite (what ``scripts/quickstart.sh`` runs)::

    legacy-msi emulate --port 0 -- python samples/quickstart.py --azurite

The commands above run from the repository's root in its virtual environment
(``scripts/setup.sh``, then ``source .venv/bin/activate``).
"""

from __future__ import annotations

import argparse
import datetime
import sys
import uuid

from azure.storage.blob import BlobServiceClient
from local_services import add_storage_arguments, run_sample, storage_account

from legacy_msi_credential import LegacyMsiCredential
from legacy_msi_credential.cli import decode_claims

STORAGE_SCOPE = "https://storage.azure.com/.default"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_storage_arguments(parser)
    args = parser.parse_args(argv)

    credential = LegacyMsiCredential()
    endpoint = credential.endpoint
    print(f"Endpoint: {endpoint.url if endpoint else '-'} ({endpoint.detail if endpoint else 'unusable'})")
    info = credential.get_token_info(STORAGE_SCOPE)
    claims = decode_claims(info.token)
    expires = datetime.datetime.fromtimestamp(info.expires_on, datetime.timezone.utc)
    refresh = datetime.datetime.fromtimestamp(info.refresh_on or info.expires_on, datetime.timezone.utc)
    print(f"Token:    {info.token_type}, expires {expires:%H:%M:%S} UTC, refreshed from {refresh:%H:%M:%S} UTC")
    for name in ("aud", "iss", "tid", "oid", "appid"):
        print(f"  {name:<6}{claims.get(name)}")

    with (
        storage_account(args) as (account_url, verify),
        BlobServiceClient(account_url, credential=credential, connection_verify=verify) as client,
    ):
        container = client.create_container(f"quickstart-{uuid.uuid4().hex[:12]}")
        try:
            container.upload_blob("hello.txt", b"hello from an old VM")
            text = container.download_blob("hello.txt").readall()
            print(f"Blob:     wrote and read back {text!r} in {container.container_name}")
            now = datetime.datetime.now(datetime.timezone.utc)
            key = client.get_user_delegation_key(now, now + datetime.timedelta(hours=1))
            print(f"Delegation key for oid {key.signed_oid} in tenant {key.signed_tid}")
            if (key.signed_oid, key.signed_tid) != (claims.get("oid"), claims.get("tid")):
                print("The service saw another identity than the token's", file=sys.stderr)
                return 1
        finally:
            container.delete_container()
    credential.close()
    print("OK: the SDK client authenticated with the legacy endpoint's token.")
    return 0


if __name__ == "__main__":
    run_sample(main, __file__)
