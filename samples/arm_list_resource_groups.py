"""ARM's ResourceManagementClient listing resource groups with the legacy endpoint's token.

On a VM with the legacy extension (against the real ARM)::

    python samples/arm_list_resource_groups.py --subscription-id SUBSCRIPTION

Anywhere, against the emulator and a local ARM stand-in (the test suite's challenge
server, ``python tests/e2e/challenge_server.py`` prints its URL and CA file)::

    python samples/arm_list_resource_groups.py --endpoint http://127.0.0.1:PORT/oauth2/token \\
        --arm-url URL --ca-file CA --subscription-id 00000000-0000-0000-0000-000000000001
"""

from __future__ import annotations

import argparse

try:  # azure-mgmt-resource 26 moved the client
    from azure.mgmt.resource.resources import ResourceManagementClient
except ImportError:  # pragma: no cover - older releases
    from azure.mgmt.resource import ResourceManagementClient

from local_services import run_sample

from legacy_msi_credential import LegacyMsiCredential


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscription-id", required=True)
    parser.add_argument("--endpoint", help="the legacy token URL (default: resolved as usual)")
    parser.add_argument("--arm-url", default="https://management.azure.com")
    parser.add_argument("--ca-file", help="CA bundle for a local stand-in's certificate")
    args = parser.parse_args(argv)
    with LegacyMsiCredential(endpoint=args.endpoint) as credential:
        client = ResourceManagementClient(
            credential,
            args.subscription_id,
            base_url=args.arm_url,
            credential_scopes=["https://management.azure.com/.default"],
            connection_verify=args.ca_file or True,
        )
        for group in client.resource_groups.list():
            print(f"{group.name} ({group.location})")
    return 0


if __name__ == "__main__":
    run_sample(main, __file__)
