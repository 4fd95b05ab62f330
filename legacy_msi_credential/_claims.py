"""A token's claims, decoded and never verified: "is this the identity asked for", "is it app-only".

Nothing here checks a signature: the claims are read only to catch an endpoint (or a
token source) that answers for another identity than the one requested, which would
otherwise surface as a puzzling 403 far away, or that answers a managed identity request
with a signed-in user's token. A token that is not a JWT has no claims to read. No I/O.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any, Optional

from ._constants import IDENTITY_ALIASES, MAX_TOKEN_BYTES
from ._text import clean_text

#: The claim that names each kind of user-assigned identity in an Azure AD token.
IDENTITY_CLAIMS = {"client_id": "appid", "object_id": "oid", "msi_res_id": "xms_mirid"}


def decode_claims(token: str) -> Optional[dict[str, Any]]:
    """The claims of a JWT, or None when ``token`` is not one (no verification)."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_BYTES:
        return None
    parts = token.split(".")
    if len(parts) != 3 or not parts[1]:
        return None
    try:
        decoded = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError, RecursionError):
        return None
    return decoded if isinstance(decoded, dict) else None


def _same(asked: str, claimed: Any, parameter: str) -> bool:
    if not isinstance(claimed, str):
        return False
    if parameter == "msi_res_id":  # ARM IDs are case-insensitive
        return asked.strip().rstrip("/").lower() == claimed.strip().rstrip("/").lower()
    return asked.strip().lower() == claimed.strip().lower()  # GUIDs


def identity_mismatch(
    parameter: Optional[str],
    value: Optional[str],
    claims: Optional[Mapping[str, Any]],
    *,
    echoed_client_id: Optional[str] = None,
) -> Optional[str]:
    """Why an answer is not for the identity asked for, or None when nothing shows it is not.

    Args:
        parameter: ``client_id``, ``object_id`` or ``msi_res_id`` (``mi_res_id`` too), or None
            for the system-assigned identity, which is not checked.
        value: The identity asked for.
        claims: The token's claims (:func:`decode_claims`), or None for a token that is not a JWT.
        echoed_client_id: The ``client_id`` the answer's body names, if any.

    Returns:
        A sentence naming what was asked for and what came back (identifiers only), or None.
    """
    if parameter is None or value is None:
        return None
    parameter = IDENTITY_ALIASES.get(parameter, parameter)
    if claims is not None:
        claim, claimed = _claimed(parameter, claims)
        if claimed is not None and not _same(value, claimed, parameter):  # an absent claim says nothing
            return f"asked for {parameter} {_show(value)}, the token's {claim} claim is {_show(claimed)}"
    if echoed_client_id and parameter == "client_id" and not _same(value, echoed_client_id, parameter):
        return f"asked for client_id {_show(value)}, the answer names client_id {_show(echoed_client_id)}"
    return None


def _claimed(parameter: str, claims: Mapping[str, Any]) -> tuple[str, Any]:
    """The claim naming this kind of identity, and its value (``azp`` stands for ``appid`` in v2 tokens)."""
    claim = IDENTITY_CLAIMS[parameter]
    if claim == "appid" and claims.get("appid") is None and claims.get("azp") is not None:
        return "azp", claims["azp"]
    return claim, claims.get(claim)


def lacks_identity(parameter: str, value: str, claims: Optional[Mapping[str, Any]]) -> Optional[str]:
    """Stricter than :func:`identity_mismatch`: why a token does not *show* the identity asked for.

    For a service that hands tokens on (the bridge), an answer is served for a user-assigned
    identity only when its claims name that identity.
    """
    parameter = IDENTITY_ALIASES.get(parameter, parameter)
    claim = IDENTITY_CLAIMS[parameter]
    if claims is None:
        return (
            f"asked for {parameter} {_show(value)}, the token is not a JWT, so it cannot show which identity it is for"
        )
    claimed = claims.get(claim)
    if claimed is None:
        return f"asked for {parameter} {_show(value)}, the token has no {claim} claim"
    return identity_mismatch(parameter, value, claims)


#: Claims only a token issued to a signed-in user carries (v1 and v2 access tokens): its
#: delegated scopes, its names and how it signed in. An app-only token has none of them.
USER_CLAIMS = (
    "scp",
    "upn",
    "unique_name",
    "name",
    "given_name",
    "family_name",
    "preferred_username",
    "email",
    "amr",
    "puid",
)


def not_app_only(claims: Optional[Mapping[str, Any]]) -> Optional[str]:
    """Why a token is not shown to be app-only (a managed identity's, or an application's), or None.

    What Azure AD's claims say of an app-only token: ``idtyp``, when present, is ``app``; it
    carries no claim of a signed-in user (:data:`USER_CLAIMS`); it was not issued to a public
    client (``appidacr`` / ``azpacr`` ``0``), which only users sign in to; and its ``sub`` is
    its ``oid`` (a user's ``sub`` is a pairwise identifier of its own). A token that is not a
    JWT shows none of this. The one place this is decided: the bridge asks it of every token
    it hands on for a managed identity.

    Returns:
        A phrase naming the kind of token and the claims that show it (their names, never a
        value a user could be identified by), or None.
    """
    if claims is None:
        return "a token that is not a JWT, whose claims cannot show it is a managed identity's"
    found = [name for name in USER_CLAIMS if name in claims]
    if found:
        return f"a signed-in user's token (it carries {', '.join(found)})"
    kind = claims.get("idtyp")
    if kind is not None and str(kind).lower() != "app":
        return f"a token whose idtyp claim is {_show(kind)}, not 'app'"
    acr = next((claims[name] for name in ("appidacr", "azpacr") if name in claims), None)
    if str(acr) == "0":
        return "a token issued to a public client (appidacr 0), as only a signed-in user's is"
    oid, sub = claims.get("oid"), claims.get("sub")
    if isinstance(oid, str) and isinstance(sub, str) and oid.strip().lower() != sub.strip().lower():
        return "a signed-in user's token (its sub is not its oid)"
    return None


def _show(value: Any) -> str:
    return repr(clean_text(str(value), 200))
