"""The two failure meanings: "could not try here" and "tried and was refused"."""

from __future__ import annotations

import sys
from typing import Any, Optional

from azure.core.exceptions import ClientAuthenticationError


class CredentialUnavailableError(ClientAuthenticationError):
    """The legacy endpoint is not there: nothing listens, or what answers is not it.

    A credential chain treats this as "try the next credential". When ``azure.identity``
    has been imported, the instance raised is also an
    ``azure.identity.CredentialUnavailableError``, so azure-identity's
    ``ChainedTokenCredential`` and ``DefaultAzureCredential`` move on as they should; this
    package never imports ``azure.identity`` itself.
    """

    def __init__(self, message: str, *, status_code: Optional[int] = None, **kwargs: Any) -> None:
        super().__init__(message=message, **kwargs)
        self.status_code = status_code


class TokenRequestError(ClientAuthenticationError):
    """The endpoint answered and refused to issue a token.

    Attributes:
        status_code: The HTTP status of the answer.
        error_code: The ``error`` field of the answer (``invalid_resource``, ...), when it had one.
            (``error`` itself is azure-core's parsed OData error, as on every ``HttpResponseError``.)
        error_description: The ``error_description`` field, when it had one. Its wording
            may change at any time: branch on ``status_code`` and ``error_code``.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: Optional[int] = None,
        error_code: Optional[str] = None,
        error_description: Optional[str] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(message=message, **kwargs)
        self.status_code = status_code
        self.error_code = error_code
        self.error_description = error_description


_chain_types: dict[type, type] = {}


def unavailable(message: str, *, status_code: Optional[int] = None) -> CredentialUnavailableError:
    """Build a ``CredentialUnavailableError`` that azure-identity's chains recognise.

    Args:
        message: What a person reads.
        status_code: The HTTP status, when something answered.

    Returns:
        The error to raise.
    """
    identity = sys.modules.get("azure.identity")
    peer = getattr(identity, "CredentialUnavailableError", None)
    if not isinstance(peer, type) or issubclass(CredentialUnavailableError, peer):
        return CredentialUnavailableError(message, status_code=status_code)
    cls = _chain_types.get(peer)
    if cls is None:
        cls = type(
            "CredentialUnavailableError",
            (CredentialUnavailableError, peer),
            {"__module__": CredentialUnavailableError.__module__},
        )
        _chain_types[peer] = cls
    error: CredentialUnavailableError = cls(message, status_code=status_code)
    return error
