"""The async twin: ``legacy_msi_credential.aio.LegacyMsiCredential`` for ``azure.*.aio`` clients."""

from ._credential import LegacyMsiCredential

__all__ = ["LegacyMsiCredential"]
