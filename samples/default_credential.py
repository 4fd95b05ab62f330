"""DefaultAzureCredential for fleets with old VMs: the only change is the import line.

    # before
    from azure.identity import DefaultAzureCredential
    # after
    from legacy_msi_credential import DefaultAzureCredential

The chain is azure-identity's own (environment, workload identity, managed identity,
developer tools...), with the legacy extension tried right before IMDS. It prints which
step answered and the token's tenant, never the token.

On any machine (an old VM, a new VM, a laptop signed in with `az login`)::

    python samples/default_credential.py

Locally, the legacy endpoint answering::

    legacy-msi emulate --port 0 -- python samples/default_credential.py

The commands above run from the repository's root in its virtual environment
(``scripts/setup.sh``, then ``source .venv/bin/activate``).
"""

from __future__ import annotations

import logging
import time

from local_services import run_sample

from legacy_msi_credential import DefaultAzureCredential
from legacy_msi_credential.cli import decode_claims


def main() -> int:
    # azure-identity logs which step answered at INFO; show just that line.
    logging.basicConfig(format="%(message)s")
    logging.getLogger("azure.identity._credentials.chained").setLevel(logging.INFO)
    with DefaultAzureCredential() as credential:
        started = time.perf_counter()
        token = credential.get_token_info("https://management.azure.com/.default")
        elapsed = (time.perf_counter() - started) * 1000
    print(f"got a token in {elapsed:.0f} ms, for tenant {decode_claims(token.token).get('tid')}")
    return 0


if __name__ == "__main__":
    run_sample(main, __file__)
