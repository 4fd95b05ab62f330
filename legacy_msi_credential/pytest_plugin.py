"""pytest fixtures for code that uses LegacyMsiCredential, registered as the ``legacy_msi`` plugin.

Installed with the package; nothing runs unless a test asks for a fixture:

``legacy_msi_emulator``
    A running :class:`~legacy_msi_credential.emulator.Emulator` on 127.0.0.1, on a free port.
``legacy_msi_endpoint``
    The same, with ``LEGACY_MSI_ENDPOINT`` pointing at it for the test, so that code
    constructing ``LegacyMsiCredential()`` with no arguments uses it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .emulator import Emulator


@pytest.fixture
def legacy_msi_emulator() -> Iterator[Emulator]:
    """A running emulator on a free loopback port, stopped after the test."""
    from .emulator import Emulator

    with Emulator(port=0) as emulator:
        yield emulator


@pytest.fixture
def legacy_msi_endpoint(legacy_msi_emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Emulator:
    """The emulator, announced to the test's code through ``LEGACY_MSI_ENDPOINT``."""
    monkeypatch.setenv("LEGACY_MSI_ENDPOINT", legacy_msi_emulator.endpoint)
    return legacy_msi_emulator
