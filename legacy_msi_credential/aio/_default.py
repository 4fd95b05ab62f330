"""``DefaultAzureCredential`` for asyncio: azure-identity's async chain with the legacy step added."""

from __future__ import annotations

from typing import Any

from .._chain import AsyncUnusableLegacyStep, ChainParts, IdentityInit, build_chain, import_error, reduce
from ._credential import LegacyMsiCredential

try:
    from azure.identity.aio import ChainedTokenCredential
    from azure.identity.aio import DefaultAzureCredential as _IdentityDefaultAzureCredential
except ImportError as _error:  # pragma: no cover - exercised in a venv without azure-identity
    raise import_error(_error) from None

#: azure-identity's ``__init__`` (reading its collaborators through this module, see
#: IdentityInit) and the classes this twin builds the chain from.
_PARTS = ChainParts(
    identity_init=IdentityInit(_IdentityDefaultAzureCredential, globals()),
    chained_init=ChainedTokenCredential.__init__,
    make=LegacyMsiCredential,
    unusable=AsyncUnusableLegacyStep,
)


class DefaultAzureCredential(_IdentityDefaultAzureCredential):
    """azure-identity's async ``DefaultAzureCredential``, which also tries the legacy VM extension.

    The async twin of :class:`legacy_msi_credential.DefaultAzureCredential`: the same
    arguments, the same place for the legacy step, for ``azure.*.aio`` clients.
    """

    def __init__(self, **kwargs: Any) -> None:
        build_chain(self, kwargs, _PARTS)

    def __reduce__(self) -> Any:
        """Pickled: its arguments, never a secret, token or connection (see ``_chain.reduce``)."""
        return reduce(self)
