"""Turn the OAuth2 scopes Azure SDK clients ask for into the resource the endpoint wants."""

from __future__ import annotations

import unicodedata

from ._constants import DEFAULT_SCOPE_SUFFIX as _DEFAULT_SUFFIX


def scopes_to_resource(scopes: tuple[str, ...]) -> str:
    """Return the resource for exactly one scope.

    A trailing ``/.default`` is dropped (``https://vault.azure.net/.default`` becomes
    ``https://vault.azure.net``); a scope without it is taken as the resource itself.

    Args:
        scopes: The scopes passed to ``get_token``.

    Returns:
        The resource to send as the ``resource`` parameter.

    Raises:
        ValueError: No scope, several scopes, or a scope that is not a usable string.
    """
    if len(scopes) != 1:
        raise ValueError(
            f"the legacy managed identity endpoint issues a token for exactly one scope; got {len(scopes)}"
        )
    scope = scopes[0]
    if not isinstance(scope, str):
        raise ValueError(f"a scope must be a string, not {type(scope).__name__}")
    if not scope or scope.isspace():
        raise ValueError("the scope is empty")
    if scope != scope.strip():
        raise ValueError("the scope has leading or trailing whitespace")
    if any(unicodedata.category(char) in ("Cc", "Cs") for char in scope):
        raise ValueError("the scope contains control characters or unpaired surrogates")
    resource = scope[: -len(_DEFAULT_SUFFIX)] if scope.endswith(_DEFAULT_SUFFIX) else scope
    if not resource:
        raise ValueError(f"the scope {scope!r} names no resource")
    return resource
