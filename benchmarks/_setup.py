"""The three credentials under comparison, each wired to one emulator on loopback."""

from __future__ import annotations

import os
from typing import Any

from legacy_msi_credential import LegacyMsiCredential
from legacy_msi_credential.emulator import Emulator

SCOPE = "https://storage.azure.com/.default"


def identity_cloud_shell(emulator: Emulator) -> Any:
    """azure-identity's ManagedIdentityCredential on the same legacy protocol (the workaround)."""
    os.environ.pop("AZURE_POD_IDENTITY_AUTHORITY_HOST", None)
    os.environ["MSI_ENDPOINT"] = emulator.endpoint
    os.environ.pop("MSI_SECRET", None)
    from azure.identity import ManagedIdentityCredential

    credential = ManagedIdentityCredential()
    del os.environ["MSI_ENDPOINT"]  # read at construction
    return credential


def identity_imds(emulator: Emulator) -> Any:
    """azure-identity's ManagedIdentityCredential on IMDS's path, served by the emulator."""
    os.environ.pop("MSI_ENDPOINT", None)
    os.environ["AZURE_POD_IDENTITY_AUTHORITY_HOST"] = emulator.imds_authority
    from azure.identity import ManagedIdentityCredential

    return ManagedIdentityCredential()


def legacy(emulator: Emulator) -> LegacyMsiCredential:
    return LegacyMsiCredential(endpoint=emulator.endpoint)


CREDENTIALS = {
    "legacy-msi-credential": legacy,
    "identity (MSI_ENDPOINT)": identity_cloud_shell,
    "identity (IMDS)": identity_imds,
}
