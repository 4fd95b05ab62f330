"""Azure SDK credential for VMs that only have the legacy managed identity VM extension.

Pass it as ``credential=`` to any Azure SDK client::

    from azure.storage.blob import BlobServiceClient
    from legacy_msi_credential import LegacyMsiCredential

    client = BlobServiceClient("https://NAME.blob.core.windows.net", credential=LegacyMsiCredential())

The names below are imported on first use, so that ``legacy-msi --help`` does not pay for
azure-core and requests, and ``DefaultAzureCredential`` (which extends azure-identity's,
an extra) is the only one that imports azure-identity.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import VERSION

if TYPE_CHECKING:
    from ._credential import LegacyMsiCredential
    from ._default import DefaultAzureCredential
    from ._endpoint import EndpointChoice, SettingsFileError, resolve_endpoint
    from ._errors import CredentialUnavailableError, IdentityMismatchError, TokenRequestError
    from ._protocol import Identity

__version__ = VERSION

#: Each public name and the module that defines it.
_WHERE = {
    "LegacyMsiCredential": "._credential",
    "DefaultAzureCredential": "._default",
    "EndpointChoice": "._endpoint",
    "SettingsFileError": "._endpoint",
    "resolve_endpoint": "._endpoint",
    "CredentialUnavailableError": "._errors",
    "TokenRequestError": "._errors",
    "IdentityMismatchError": "._errors",
    "Identity": "._protocol",
}

__all__ = [
    "CredentialUnavailableError",
    "DefaultAzureCredential",
    "EndpointChoice",
    "Identity",
    "IdentityMismatchError",
    "LegacyMsiCredential",
    "SettingsFileError",
    "TokenRequestError",
    "__version__",
    "resolve_endpoint",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups do not come here
    return value


def __dir__() -> list[str]:
    # The public names and the module's own (dunder and private): not the typing and
    # importlib names this module uses for its lazy imports.
    return sorted({name for name in globals() if name.startswith("_")} | set(__all__))
