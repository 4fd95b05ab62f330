"""A token's claims, decoded and never verified, and "is this the identity asked for".

Nothing here checks a signature: the claims are read only to catch an endpoint (or a
token source) that answers for another identity than the one requested, which would
otherwise surface as a puzzling 403 far away. A token that is not a JWT has no claims to
read. No I/O.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any, Optional

from ._constants import IDENTITY_ALIASES
from ._text import clean_text

#: The claim that names each kind of user-assigned identity in an Azure AD token.
IDENTITY_CLAIMS = {"client_id": "appid", "object_id": "oid", "msi_res_id": "xms_mirid"}
#: Largest token whose claims are read: an Azure AD token is a few KiB.
_MAX_TOKEN = 64 * 1024


def decode_claims(token: str) -> Optional[dict[str, Any]]:
    """The claims of a JWT, or None when ``token`` is not one (no verification)."""
    if not isinstance(token, str) or len(token) > _MAX_TOKEN:
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


def is_user_token(claims: Optional[Mapping[str, Any]]) -> bool:
    """Whether a token was issued to a signed-in user rather than to an application or identity."""
    if claims is None:
        return False
    if claims.get("idtyp") == "user":
        return True
    return any(name in claims for name in ("upn", "unique_name", "scp"))


def _show(value: Any) -> str:
    return repr(clean_text(str(value), 200))
