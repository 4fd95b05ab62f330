"""Azure SDK credential for VMs that only have the legacy managed identity VM extension.

Pass it as ``credential=`` to any Azure SDK client::

    from azure.storage.blob import BlobServiceClient
    from legacy_msi_credential import LegacyMsiCredential

    client = BlobServiceClient("https://NAME.blob.core.windows.net", credential=LegacyMsiCredential())
"""

from typing import TYPE_CHECKING, Any

from ._credential import LegacyMsiCredential
from ._endpoint import EndpointChoice, SettingsFileError, resolve_endpoint
from ._errors import CredentialUnavailableError, TokenRequestError
from ._protocol import Identity
from ._version import VERSION

if TYPE_CHECKING:
    from ._default import DefaultAzureCredential

__version__ = VERSION


def __getattr__(name: str) -> Any:
    # DefaultAzureCredential extends azure-identity's: imported on first use, so that
    # ``import legacy_msi_credential`` never imports azure-identity.
    if name == "DefaultAzureCredential":
        from ._default import DefaultAzureCredential

        return DefaultAzureCredential
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CredentialUnavailableError",
    "DefaultAzureCredential",
    "EndpointChoice",
    "Identity",
    "LegacyMsiCredential",
    "SettingsFileError",
    "TokenRequestError",
    "__version__",
    "resolve_endpoint",
]
