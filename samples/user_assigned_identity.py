"""A token for a user-assigned identity, chosen by client ID, object ID or ARM resource ID.

On a VM with the legacy extension::

    python samples/user_assigned_identity.py --client-id 00000000-0000-0000-0000-000000000000

Anywhere, against the emulator (which accepts any identity unless told otherwise)::

    legacy-msi emulate --port 0 -- python samples/user_assigned_identity.py --client-id 6d1e8a7c-0001

The commands above run from the repository's root in its virtual environment
(``scripts/setup.sh``, then ``source .venv/bin/activate``).
"""

from __future__ import annotations

import argparse

from local_services import run_sample

from legacy_msi_credential import LegacyMsiCredential
from legacy_msi_credential.cli import decode_claims


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--client-id")
    which.add_argument("--object-id")
    which.add_argument("--msi-res-id")
    parser.add_argument("--scope", default="https://management.azure.com/.default")
    args = parser.parse_args(argv)
    with LegacyMsiCredential(
        client_id=args.client_id, object_id=args.object_id, msi_res_id=args.msi_res_id
    ) as credential:
        claims = decode_claims(credential.get_token(args.scope).token)
        print(f"identity: {credential.identity.describe()}")
    for name in ("appid", "oid", "xms_mirid", "aud"):
        print(f"  {name:<10}{claims.get(name)}")
    return 0


if __name__ == "__main__":
    run_sample(main, __file__)
