"""The two failure meanings: "could not try here" and "tried and was refused".

Every error this package raises is built here, and none of them holds what a server sent
beyond the vetted fields: azure-core's ``AzureError`` records the exception being handled
when it is made (``exc_value``, ``exc_msg``), which for a transport failure quotes the raw
bytes of a hostile answer; these classes drop that record. They also pickle, so that they
cross ``multiprocessing`` boundaries.

Where azure-identity is installed, every :class:`CredentialUnavailableError` raised is also
an ``azure.identity.CredentialUnavailableError``, whether or not ``azure.identity`` was
imported first: azure-identity's chains then move on, and ``except`` clauses naming either
class catch it. To be so, the first such error made in a process imports ``azure.identity``
(about 70 ms here, once, paid on a failure only); the package never imports it otherwise.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
from typing import Any, Optional

from azure.core.exceptions import ClientAuthenticationError

from ._loopback import describe_peer


class _PackageError(ClientAuthenticationError):
    """What this package's errors share: no record of a handled exception, and pickling.

    ``_fields`` names the keyword arguments that rebuild an instance; one ``__reduce__``
    serves every class, and an error that azure-identity's chains recognise comes back as one.
    """

    _fields: tuple[str, ...] = ()

    def __init__(self, message: str, **kwargs: Any) -> None:
        fields = {name: kwargs.pop(name, None) for name in self._fields}
        super().__init__(message=message, **kwargs)
        # Drop what AzureError.__init__ copied from sys.exc_info(): it may quote a server's bytes.
        self.exc_type = type(self)
        self.exc_value = None
        self.exc_traceback = None
        self.exc_msg = self.message
        self.inner_exception = None
        for name, value in fields.items():
            setattr(self, name, value)

    def __reduce__(self) -> Any:
        fields = {name: getattr(self, name, None) for name in self._fields}
        return (_restore, (public_class(type(self)), self.message, fields))


class CredentialUnavailableError(_PackageError):
    """The legacy endpoint is not there: nothing listens, or what answers is not it.

    A credential chain treats this as "try the next credential". Where azure-identity is
    installed, the instance raised is also an ``azure.identity.CredentialUnavailableError``
    (imported for that on the first failure), so azure-identity's ``ChainedTokenCredential``
    and ``DefaultAzureCredential`` move on as they should, whatever was imported first.

    Attributes:
        status_code: The HTTP status, when something answered.
    """

    _fields = ("status_code",)
    status_code: Optional[int]


class TokenRequestError(_PackageError):
    """The endpoint answered and refused to issue a token.

    Attributes:
        status_code: The HTTP status of the answer.
        error_code: The ``error`` field of the answer (``invalid_resource``, ...), when it had one.
            (``error`` itself is azure-core's parsed OData error, as on every ``HttpResponseError``.)
        error_description: The ``error_description`` field, when it had one. Its wording
            may change at any time: branch on ``status_code`` and ``error_code``.
    """

    _fields = ("status_code", "error_code", "error_description")
    status_code: Optional[int]
    error_code: Optional[str]
    error_description: Optional[str]


class IdentityMismatchError(TokenRequestError):
    """The endpoint answered with a token for another identity than the one asked for.

    Raised when a user-assigned identity was asked for and the token's claims (``appid``,
    ``oid``, ``xms_mirid``) or the answer's ``client_id`` name another; the token is not
    cached. ``error_code`` is ``identity_mismatch``; the message names both identities
    (identifiers only, never the token).
    """


class NotLoopbackError(CredentialUnavailableError):
    """A plain-http connection reached an address that is not loopback; nothing was sent on it.

    Internal: it leaves the package (and pickles) as a :class:`CredentialUnavailableError`.
    """

    _public = CredentialUnavailableError


def public_class(cls: type) -> type:
    """The documented class of this package that an error of class ``cls`` leaves the package as."""
    public: type = cls.__dict__.get("_public", cls)
    return public if public is cls else public_class(public)


def _restore(cls: type[_PackageError], message: str, fields: dict[str, Any]) -> _PackageError:
    if issubclass(cls, CredentialUnavailableError):
        return unavailable(message, cls=cls, **fields)
    return cls(message, **fields)


_chain_types: dict[tuple[type, type], type] = {}
_peer_lock = threading.Lock()
_peer_looked_up = False


def _identity_peer() -> Optional[type]:
    """``azure.identity.CredentialUnavailableError`` when azure-identity is installed (imported
    once, here, if nothing imported it before), else None."""
    global _peer_looked_up
    module = sys.modules.get("azure.identity")
    if module is None:
        with _peer_lock:
            if _peer_looked_up:
                module = sys.modules.get("azure.identity")
            else:
                _peer_looked_up = True
                try:
                    if importlib.util.find_spec("azure.identity") is not None:
                        module = importlib.import_module("azure.identity")
                except Exception:  # a broken or partial installation: the plain class serves
                    module = None
    peer = getattr(module, "CredentialUnavailableError", None)
    return peer if isinstance(peer, type) and issubclass(peer, BaseException) else None


def unavailable(
    message: str,
    *,
    status_code: Optional[int] = None,
    cls: type[CredentialUnavailableError] = CredentialUnavailableError,
) -> CredentialUnavailableError:
    """Build a ``CredentialUnavailableError`` (or ``cls``) that azure-identity's chains recognise.

    Args:
        message: What a person reads.
        status_code: The HTTP status, when something answered.
        cls: The class of this package to raise.

    Returns:
        The error to raise: an instance of ``cls`` and, where azure-identity is installed,
        of ``azure.identity.CredentialUnavailableError``.
    """
    peer = _identity_peer()
    if peer is None or issubclass(cls, peer):
        return cls(message, status_code=status_code)
    chained = _chain_types.get((cls, peer))
    if chained is None:
        chained = type(cls.__name__, (cls, peer), {"__module__": cls.__module__, "_public": cls})
        _chain_types[(cls, peer)] = chained
    error: CredentialUnavailableError = chained(message, status_code=status_code)
    return error


def refused_peer(peer: Any) -> NotLoopbackError:
    """The error for a plain-http connection whose peer is not loopback (nothing was sent on it)."""
    error = unavailable(
        f"refused to send the token request to {describe_peer(peer)}: plain http goes only to a loopback "
        "address, and the connection reached this one. Use https, or pass allow_insecure_http=True if this "
        "is intended.",
        cls=NotLoopbackError,
    )
    assert isinstance(error, NotLoopbackError)
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


def fresh_copy(error: ClientAuthenticationError, *, named: str = "") -> ClientAuthenticationError:
    """A new instance of one of this package's errors, with no cause, context or traceback.

    Raised at the package's boundary, so that nothing a transport or parser raised on the
    way (whose messages may quote a hostile server's bytes) is chained to what a caller
    sees, and so that several callers sharing one failure each get their own instance.

    Args:
        error: The error.
        named: The credential's name, which the copy's message starts with (``Name: ...``),
            once, whatever the error said first.
    """
    prefix = f"{named}: " if named else ""
    message = error.message if error.message.startswith(prefix) else prefix + error.message
    if isinstance(error, _PackageError):
        rebuild, (cls, _, fields) = error.__reduce__()[:2]
        copy: ClientAuthenticationError = rebuild(cls, message, fields)
        return copy
    status_code = getattr(error, "status_code", None)
    return unavailable(message, status_code=status_code if isinstance(status_code, int) else None)
