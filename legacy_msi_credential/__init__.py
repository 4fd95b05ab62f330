"""Azure SDK credential for VMs that only have the legacy managed identity VM extension.

Pass it as ``credential=`` to any Azure SDK client::

    from azure.storage.blob import BlobServiceClient
    from legacy_msi_credential import LegacyMsiCredential

    client = BlobServiceClient("https://NAME.blob.core.windows.net", credential=LegacyMsiCredential())
"""

from ._credential import LegacyMsiCredential
from ._endpoint import EndpointChoice, SettingsFileError, resolve_endpoint
from ._errors import CredentialUnavailableError, TokenRequestError
from ._protocol import Identity
from ._version import VERSION

__version__ = VERSION

__all__ = [
    "CredentialUnavailableError",
    "EndpointChoice",
    "Identity",
    "LegacyMsiCredential",
    "SettingsFileError",
    "TokenRequestError",
    "__version__",
    "resolve_endpoint",
]
