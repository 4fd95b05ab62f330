"""What ``dir()`` shows of each public package: its public names, and no name it merely uses
(``Any``, ``TYPE_CHECKING``, ``annotations``, ``importlib``, ``sys``), so that completion and
``help()`` offer the API and nothing else."""

from __future__ import annotations

import importlib

import pytest


@pytest.mark.parametrize(
    "name",
    [
        "legacy_msi_credential",
        "legacy_msi_credential.aio",
        "legacy_msi_credential.cli",
        "legacy_msi_credential.emulator",
        "legacy_msi_credential.bridge",
        "legacy_msi_credential.adapt",
    ],
)
def test_dir_shows_the_public_names_and_no_other(name: str) -> None:
    module = importlib.import_module(name)
    public = {entry for entry in dir(module) if not entry.startswith("_")}
    assert public == {entry for entry in module.__all__ if not entry.startswith("_")}
    for entry in module.__all__:  # each resolves, the lazy ones too
        assert getattr(module, entry) is not None
