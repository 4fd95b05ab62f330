"""``DefaultAzureCredential``: azure-identity's chain with the legacy extension's step added.

Importing this module imports azure-identity (the ``identity`` extra); ``import
legacy_msi_credential`` alone does not.
"""

from __future__ import annotations

from ._chain import ChainParts, DropIn, UnusableLegacyStep, import_error
from ._credential import LegacyMsiCredential

try:
    from azure.identity import ChainedTokenCredential
    from azure.identity import DefaultAzureCredential as _IdentityDefaultAzureCredential
except ImportError as _error:  # pragma: no cover - exercised in a venv without azure-identity
    raise import_error(_error) from None


class DefaultAzureCredential(DropIn, _IdentityDefaultAzureCredential):
    """azure-identity's ``DefaultAzureCredential``, which also tries the legacy VM extension.

    A drop-in replacement: change ``from azure.identity import DefaultAzureCredential`` to
    ``from legacy_msi_credential import DefaultAzureCredential``. Every keyword argument,
    ``AZURE_TOKEN_CREDENTIALS``, the remembered successful credential, logging and error
    messages are azure-identity's own: its ``__init__`` runs as written, and reads the
    classes it builds the chain from through this module, so that a test's
    ``patch(DefaultAzureCredential.__module__ + ".AzureCliCredential")`` works on the
    drop-in as it does on azure-identity's class. :class:`LegacyMsiCredential` runs immediately
    before azure-identity's ``ManagedIdentityCredential``, whenever that one is in the
    chain: on a VM with only the extension it answers; anywhere else nothing listens on
    ``localhost:50342`` and the chain moves on within a few milliseconds.

    Keyword Args:
        exclude_legacy_msi_credential: Leave the legacy step out (so does
            ``exclude_managed_identity_credential``).
        legacy_msi_wait_for_endpoint: Seconds the legacy step keeps trying while its
            connection is refused (a booting VM whose extension is known to be installed);
            default 0, so a machine without the extension costs no wait.
        legacy_msi_endpoint: The legacy token URL, when not found as
            :class:`LegacyMsiCredential` finds it.
        managed_identity_client_id: A user-assigned identity, for the legacy step too
            (default ``AZURE_CLIENT_ID``, as azure-identity reads it).
        **kwargs: Everything azure-identity's ``DefaultAzureCredential`` takes.

    ``AZURE_TOKEN_CREDENTIALS=LegacyMsiCredential`` makes the legacy step the only one.
    """

    _parts = ChainParts.of(
        _IdentityDefaultAzureCredential, ChainedTokenCredential, LegacyMsiCredential, UnusableLegacyStep, globals()
    )
