"""``DefaultAzureCredential`` for asyncio: azure-identity's async chain with the legacy step added."""

from __future__ import annotations

from .._chain import AsyncUnusableLegacyStep, ChainParts, DropIn, import_error
from ._credential import LegacyMsiCredential

try:
    from azure.identity.aio import ChainedTokenCredential
    from azure.identity.aio import DefaultAzureCredential as _IdentityDefaultAzureCredential
except ImportError as _error:  # pragma: no cover - exercised in a venv without azure-identity
    raise import_error(_error) from None


class DefaultAzureCredential(DropIn, _IdentityDefaultAzureCredential):
    """azure-identity's async ``DefaultAzureCredential``, which also tries the legacy VM extension.

    The async twin of :class:`legacy_msi_credential.DefaultAzureCredential`: the same
    arguments, the same place for the legacy step, for ``azure.*.aio`` clients.
    """

    _parts = ChainParts.of(
        _IdentityDefaultAzureCredential, ChainedTokenCredential, LegacyMsiCredential, AsyncUnusableLegacyStep, globals()
    )
