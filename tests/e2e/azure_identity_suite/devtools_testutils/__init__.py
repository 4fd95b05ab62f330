"""Stand-ins for the Azure SDK's recording helpers, which azure-identity's test conftest imports.

Only the offline tests run here (never a live or recorded one), so each helper does nothing;
the two fixtures the conftest asks for exist and do nothing either.
"""

from __future__ import annotations

from typing import Any

import pytest


def is_live() -> bool:
    return False


def _nothing(*args: Any, **kwargs: Any) -> None:
    return None


add_general_regex_sanitizer = add_body_key_sanitizer = add_header_regex_sanitizer = _nothing
add_remove_header_sanitizer = set_custom_default_matcher = _nothing


class AzureRecordedTestCase:
    """Recorded test classes are not collected here."""


def recorded_by_proxy(test: Any) -> Any:
    return pytest.mark.skip(reason="a recorded test: needs the Azure SDK's test proxy")(test)


@pytest.fixture(scope="session")
def test_proxy() -> None:
    return None
