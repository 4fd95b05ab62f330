"""The two failure meanings: "could not try here" and "tried and was refused".

Every error this package raises is built here, and none of them holds what a server sent
beyond the vetted fields: azure-core's ``AzureError`` records the exception being handled
when it is made (``exc_value``, ``exc_msg``), which for a transport failure quotes the raw
bytes of a hostile answer; these classes drop that record. They also pickle, so that they
cross ``multiprocessing`` boundaries, with or without ``azure.identity`` imported.
"""

from __future__ import annotations

import sys
from typing import Any, Optional

from azure.core.exceptions import ClientAuthenticationError


def _forget_handled_exception(error: ClientAuthenticationError) -> None:
    """Drop what ``AzureError.__init__`` copied from ``sys.exc_info()``: it may quote a server's bytes."""
    error.exc_type = type(error)
    error.exc_value = None
    error.exc_traceback = None
    error.exc_msg = error.message
    error.inner_exception = None


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
        _forget_handled_exception(self)
        self.status_code = status_code

    def __reduce__(self) -> Any:
        return (_restore_unavailable, (self.message, self.status_code))


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
        _forget_handled_exception(self)
        self.status_code = status_code
        self.error_code = error_code
        self.error_description = error_description

    def __reduce__(self) -> Any:
        return (
            _restore_refusal,
            (type(self), self.message, self.status_code, self.error_code, self.error_description),
        )


class IdentityMismatchError(TokenRequestError):
    """The endpoint answered with a token for another identity than the one asked for.

    Raised when a user-assigned identity was asked for and the token's claims (``appid``,
    ``oid``, ``xms_mirid``) or the answer's ``client_id`` name another; the token is not
    cached. ``error_code`` is ``identity_mismatch``; the message names both identities
    (identifiers only, never the token).
    """


class NotLoopbackError(CredentialUnavailableError):
    """A plain-http connection reached an address that is not loopback; nothing was sent on it."""

    def __reduce__(self) -> Any:
        return (NotLoopbackError, (self.message,))


def _restore_unavailable(message: str, status_code: Optional[int]) -> CredentialUnavailableError:
    return unavailable(message, status_code=status_code)


def _restore_refusal(
    cls: type[TokenRequestError],
    message: str,
    status_code: Optional[int],
    error_code: Optional[str],
    error_description: Optional[str],
) -> TokenRequestError:
    return cls(message, status_code=status_code, error_code=error_code, error_description=error_description)


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


class SanitizedCause(Exception):
    """Stands in for a library's exception as the cause of one of this package's errors.

    It names the exception types of the original chain and nothing of their messages,
    which may quote a hostile server's bytes.
    """

    def __init__(self, error: BaseException) -> None:
        names: list[str] = []
        seen: set[int] = set()
        current: Optional[BaseException] = error
        while current is not None and id(current) not in seen and len(names) < 8:
            seen.add(id(current))
            names.append(type(current).__name__)
            current = current.__cause__ or current.__context__
        super().__init__(" <- ".join(names) + " (details withheld: they may quote the server's bytes)")

    def __reduce__(self) -> Any:
        return (Exception, self.args)


def fresh_copy(error: ClientAuthenticationError) -> ClientAuthenticationError:
    """A new instance of one of this package's errors, with no cause, context or traceback.

    Raised at the package's boundary, so that nothing a transport or parser raised on the
    way (whose messages may quote a hostile server's bytes) is chained to what a caller
    sees, and so that several callers sharing one failure each get their own instance.
    """
    if isinstance(error, TokenRequestError):
        return type(error)(
            error.message,
            status_code=error.status_code,
            error_code=error.error_code,
            error_description=error.error_description,
        )
    status_code = getattr(error, "status_code", None)
    return unavailable(error.message, status_code=status_code if isinstance(status_code, int) else None)
