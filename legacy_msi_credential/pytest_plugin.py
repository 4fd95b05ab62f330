"""pytest fixtures for code that uses LegacyMsiCredential, registered as the ``legacy_msi`` plugin.

Installed with the package; nothing runs unless a test asks for a fixture:

``legacy_msi_emulator``
    A running :class:`~legacy_msi_credential.emulator.Emulator` on 127.0.0.1, on a free port.
``legacy_msi_endpoint``
    The same, with ``LEGACY_MSI_ENDPOINT`` pointing at it for the test, so that code
    constructing ``LegacyMsiCredential()`` with no arguments uses it.

The ``legacy_msi`` marker configures the emulator of a test (or of a class or module, with
``pytestmark``): its keywords are the :class:`~legacy_msi_credential.emulator.Emulator`'s,
and ``user_assigned`` also takes client IDs::

    @pytest.mark.legacy_msi(user_assigned=["<client id>"], system_assigned=False, flavor="windows")
    def test_app(legacy_msi_endpoint):
        ...
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .emulator import Emulator

#: The marker's name, and the Emulator keywords it does not take: the fixtures' promise is
#: a free port on loopback.
MARKER = "legacy_msi"
_FIXED = frozenset({"host", "port", "allow_remote"})


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(**options): the options of the legacy_msi_emulator/legacy_msi_endpoint fixtures' "
        "Emulator (user_assigned=[client IDs], system_assigned, flavor='windows', known_resources, ...)",
    )


def _options(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The Emulator's keywords from the closest ``legacy_msi`` marker, checked here so that a
    misspelt one fails the test naming the marker, not deep in the emulator."""
    from .emulator import Emulator, UserAssignedIdentity

    marker = request.node.get_closest_marker(MARKER)
    if marker is None:
        return {}
    allowed = sorted(set(inspect.signature(Emulator).parameters) - _FIXED)
    if marker.args:
        pytest.fail(f"@pytest.mark.{MARKER} takes keywords only ({', '.join(allowed)})", pytrace=False)
    unknown = sorted(set(marker.kwargs) - set(allowed))
    if unknown:
        pytest.fail(
            f"@pytest.mark.{MARKER}: unknown option {', '.join(map(repr, unknown))}; "
            f"the options are: {', '.join(allowed)}",
            pytrace=False,
        )
    options = dict(marker.kwargs)
    if options.get("user_assigned") is not None:
        options["user_assigned"] = [
            UserAssignedIdentity(client_id=item) if isinstance(item, str) else item for item in options["user_assigned"]
        ]
    return options


@pytest.fixture
def legacy_msi_emulator(request: pytest.FixtureRequest) -> Iterator[Emulator]:
    """A running emulator on a free loopback port, stopped after the test; configured by the
    ``legacy_msi`` marker when there is one."""
    from .emulator import Emulator

    with Emulator(port=0, **_options(request)) as emulator:
        yield emulator


@pytest.fixture
def legacy_msi_endpoint(legacy_msi_emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Emulator:
    """The emulator, announced to the test's code through ``LEGACY_MSI_ENDPOINT``."""
    monkeypatch.setenv("LEGACY_MSI_ENDPOINT", legacy_msi_emulator.endpoint)
    return legacy_msi_emulator
