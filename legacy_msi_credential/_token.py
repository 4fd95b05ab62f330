"""A token as this package's modules pass it around: the standard library's, not azure-core's.

The credentials wrap it into azure-core's ``AccessToken`` and ``AccessTokenInfo`` where they
hand it to a caller (``_base``, for the fast table); the cache keeps it and the servers hand it
on as it is, so that neither loads azure-core.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass(frozen=True)
class TokenResult:
    """A token read from a successful answer. Its ``repr`` never shows the token.

    Attributes:
        token: The access token.
        expires_on: Expiry, in Unix seconds by this machine's clock.
        token_type: ``Bearer`` unless the endpoint said otherwise.
        resource: The resource the endpoint said the token is for, if it said.
    """

    token: str = field(repr=False)
    expires_on: int
    token_type: str = "Bearer"
    resource: Optional[str] = None
    #: The ``client_id`` a user-assigned answer names, if it named one.
    client_id: Optional[str] = None
