"""The real clients, the protocols each is driven through, and the identities each is asked for.

One table for the tests that run them (``test_clients.py``) and for the table of
``docs/clients.md`` (``tests/e2e/test_client_table.py`` compares them), so neither drifts.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The protocols the adapter serves, as the variables that choose them name them.
APP_SERVICE = "App Service 2019-08-01 (IDENTITY_ENDPOINT, IDENTITY_HEADER)"
IMDS = "IMDS (AZURE_POD_IDENTITY_AUTHORITY_HOST)"
PROTOCOLS = {"app-service": APP_SERVICE, "imds": IMDS}
#: How a user-assigned identity is named; "system" asks for the system-assigned one.
IDENTITIES = ("system", "client_id", "object_id", "resource_id")
#: DefaultAzureCredential's two cases: no AZURE_CLIENT_ID (system), AZURE_CLIENT_ID (client_id).
CHAIN = ("system", "AZURE_CLIENT_ID")


@dataclass(frozen=True)
class Client:
    """One client as the table shows it."""

    name: str  # as the docs table names it
    package: str  # where it comes from, pinned
    driver: str  # how test_clients.py runs it
    identities: tuple[str, ...]


CLIENTS = (
    Client("azure-identity ManagedIdentityCredential (sync)", "PyPI azure-identity", "py-mic-sync", IDENTITIES),
    Client("azure-identity ManagedIdentityCredential (aio)", "PyPI azure-identity", "py-mic-aio", IDENTITIES),
    Client("azure-identity DefaultAzureCredential (sync)", "PyPI azure-identity", "py-dac-sync", CHAIN),
    Client("azure-identity DefaultAzureCredential (aio)", "PyPI azure-identity", "py-dac-aio", CHAIN),
    Client("msal ManagedIdentityClient", "PyPI msal", "py-msal", IDENTITIES),
    Client("@azure/identity ManagedIdentityCredential", "npm @azure/identity 4.14.1", "node-mic", IDENTITIES),
    Client("@azure/identity DefaultAzureCredential", "npm @azure/identity 4.14.1", "node-dac", CHAIN),
    Client("@azure/msal-node ManagedIdentityApplication", "npm @azure/msal-node 7.2.4", "node-msal", IDENTITIES),
    Client("az login --identity, az account get-access-token", "PyPI azure-cli 2.91.0", "az", ("system", "client_id")),
)


def cases() -> list[tuple[str, str, str]]:
    """(driver, protocol, identity) for every run: each client, both protocols, each identity."""
    return [
        (client.driver, protocol, identity)
        for client in CLIENTS
        for protocol in PROTOCOLS
        for identity in client.identities
    ]


def table() -> str:
    """The client table of docs/clients.md, as this module runs it."""
    names = {"system": "system-assigned", "client_id": "client_id", "object_id": "object_id",
             "resource_id": "resource_id", "AZURE_CLIENT_ID": "AZURE_CLIENT_ID"}  # fmt: skip
    lines = ["| client | from | protocols | identities |", "| --- | --- | --- | --- |"]
    for client in CLIENTS:
        identities = ", ".join(names[identity] for identity in client.identities)
        lines.append(f"| {client.name} | {client.package} | App Service, IMDS | {identities} |")
    return "\n".join(lines)
