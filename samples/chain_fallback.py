"""A DefaultAzureCredential replacement for fleets mixing old and new VMs.

The legacy credential goes first: where nothing listens on localhost:50342 it gives way
in about a millisecond, and azure-identity's ManagedIdentityCredential (IMDS) answers.

On any VM::

    python samples/chain_fallback.py

Locally, the legacy endpoint answering::

    legacy-msi emulate --port 0 -- python samples/chain_fallback.py

Locally, the legacy endpoint absent and IMDS answering (the emulator serves IMDS's path
too; azure-identity reads its address from AZURE_POD_IDENTITY_AUTHORITY_HOST)::

    legacy-msi emulate --port 0 -- sh -c 'AZURE_POD_IDENTITY_AUTHORITY_HOST=${LEGACY_MSI_ENDPOINT%/oauth2/token} \\
        LEGACY_MSI_ENDPOINT=http://127.0.0.1:9/oauth2/token python samples/chain_fallback.py'

The commands above run from the repository's root in its virtual environment
(``scripts/setup.sh``, then ``source .venv/bin/activate``).
"""

from __future__ import annotations

import logging
import time

from azure.identity import ChainedTokenCredential, ManagedIdentityCredential
from local_services import run_sample

from legacy_msi_credential import LegacyMsiCredential
from legacy_msi_credential.cli import decode_claims


def main() -> int:
    # The chain logs which credential answered at INFO; show just that line.
    logging.basicConfig(format="%(message)s")
    logging.getLogger("azure.identity._credentials.chained").setLevel(logging.INFO)
    chain = ChainedTokenCredential(LegacyMsiCredential(), ManagedIdentityCredential())
    started = time.perf_counter()
    token = chain.get_token("https://management.azure.com/.default")
    elapsed = (time.perf_counter() - started) * 1000
    print(f"got a token in {elapsed:.0f} ms, for tenant {decode_claims(token.token).get('tid')}")
    chain.close()
    return 0


if __name__ == "__main__":
    run_sample(main, __file__)
