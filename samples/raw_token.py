"""Calling ``get_token`` directly, for an HTTP call that is not made by an Azure SDK client.

It lists the subscriptions the identity can see with a plain ``requests`` call to ARM.
On a VM with the legacy extension::

    python samples/raw_token.py

Anywhere, against the emulator and a local ARM stand-in (the test suite's challenge
server, ``python tests/e2e/challenge_server.py`` prints its URL and CA file)::

    legacy-msi emulate --port 0 -- python samples/raw_token.py --arm-url URL --ca-file CA

The commands above run from the repository's root in its virtual environment
(``scripts/setup.sh``, then ``source .venv/bin/activate``).
"""

from __future__ import annotations

import argparse

import requests
from local_services import run_sample

from legacy_msi_credential import LegacyMsiCredential


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arm-url", default="https://management.azure.com")
    parser.add_argument("--subscription-id", default="00000000-0000-0000-0000-000000000001")
    parser.add_argument("--ca-file", help="CA bundle for a local stand-in's certificate")
    args = parser.parse_args(argv)
    with LegacyMsiCredential() as credential:
        token = credential.get_token("https://management.azure.com/.default")
    response = requests.get(
        f"{args.arm_url}/subscriptions/{args.subscription_id}/resourcegroups",
        params={"api-version": "2022-09-01"},
        headers={"Authorization": f"Bearer {token.token}"},
        verify=args.ca_file or True,
        timeout=30,
    )
    response.raise_for_status()
    for group in response.json()["value"]:
        print(f"{group['name']} ({group['location']})")
    return 0


if __name__ == "__main__":
    run_sample(main, __file__)
