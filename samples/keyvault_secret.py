"""Key Vault's SecretClient reading a secret: the client answers the vault's challenge with our token.

On a VM with the legacy extension::

    python samples/keyvault_secret.py --vault-url https://NAME.vault.azure.net --secret NAME

Anywhere, against the emulator and a local Key Vault stand-in (the test suite's
challenge server, ``python tests/e2e/challenge_server.py`` prints its URL and CA file)::

    legacy-msi emulate --port 0 -- python samples/keyvault_secret.py --vault-url URL --ca-file CA --secret db-password

The commands above run from the repository's root in its virtual environment
(``scripts/setup.sh``, then ``source .venv/bin/activate``).
"""

from __future__ import annotations

import argparse

from azure.keyvault.secrets import SecretClient
from local_services import run_sample

from legacy_msi_credential import LegacyMsiCredential


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vault-url", required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--ca-file", help="CA bundle for a local stand-in's certificate")
    args = parser.parse_args(argv)
    local = args.ca_file is not None
    with LegacyMsiCredential() as credential:
        client = SecretClient(
            args.vault_url,
            credential,
            # A local stand-in is not *.vault.azure.net: let the client accept its challenge.
            verify_challenge_resource=not local,
            connection_verify=args.ca_file or True,
        )
        secret = client.get_secret(args.secret)
    print(f"{secret.name}: {len(secret.value or '')} characters (version {secret.properties.version})")
    return 0


if __name__ == "__main__":
    run_sample(main, __file__)
