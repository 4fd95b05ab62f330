"""The asynchronous stand-in: recorded tests are skipped."""

from __future__ import annotations

from typing import Any

import pytest


def recorded_by_proxy_async(test: Any) -> Any:
    return pytest.mark.skip(reason="a recorded test: needs the Azure SDK's test proxy")(test)
