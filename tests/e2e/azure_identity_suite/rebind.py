"""A pytest plugin for azure-identity's own tests: with LEGACY_MSI_DROP_IN=1, every
``DefaultAzureCredential`` those tests import is this package's drop-in (sync and aio).

Loaded with ``-p rebind`` before any test module is imported, so that their
``from azure.identity import DefaultAzureCredential`` picks the drop-in up.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

if os.environ.get("LEGACY_MSI_DROP_IN") == "1":
    import azure.identity
    import azure.identity.aio

    from legacy_msi_credential import DefaultAzureCredential
    from legacy_msi_credential.aio import DefaultAzureCredential as AsyncDefaultAzureCredential

    azure.identity.DefaultAzureCredential = DefaultAzureCredential  # type: ignore[misc]
    azure.identity.aio.DefaultAzureCredential = AsyncDefaultAzureCredential  # type: ignore[misc]


class _Variables:
    """The recording helpers' ``environment_variables`` fixture, which only sanitises recordings."""

    def sanitize_batch(self, mapping: Any) -> None:
        return None

    def sanitize(self, name: str, value: str) -> str:
        return os.environ.get(name, value)


@pytest.fixture(scope="session")
def environment_variables() -> _Variables:
    return _Variables()
