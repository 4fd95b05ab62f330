"""The emulator's tokens: identities, their IDs, and JWTs whose claims look like Azure AD's.

**They are not Azure AD tokens**: no Azure service accepts them. They are signed RS256
with a key made once per process when ``cryptography`` is installed (the ``emulator``
extra), otherwise unsigned (``alg: none``). No I/O.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional

_NAMESPACE = uuid.UUID("5d0f3f4e-8a43-4c59-9f5e-0c1d6b2f7a10")
#: The extension served tokens that AAD dates 5 minutes back (``nbf``/``iat``).
BACKDATE = 300  # s


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def derived_id(*parts: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, "/".join(parts)))


@dataclass(frozen=True)
class UserAssignedIdentity:
    """A user-assigned identity the emulated VM has.

    Any of the three identifiers selects it in a request; those not given are derived.
    """

    client_id: Optional[str] = None
    object_id: Optional[str] = None
    msi_res_id: Optional[str] = None

    def completed(self) -> UserAssignedIdentity:
        """The same identity with every identifier filled in."""
        seed = self.client_id or self.object_id or self.msi_res_id or "user-assigned"
        return UserAssignedIdentity(
            client_id=self.client_id or derived_id("client", seed),
            object_id=self.object_id or derived_id("object", seed),
            msi_res_id=self.msi_res_id
            or f"/subscriptions/{derived_id('subscription')}/resourcegroups/emulator/providers/"
            f"Microsoft.ManagedIdentity/userAssignedIdentities/{derived_id('name', seed)[:8]}",
        )


class Signer:
    """RS256 with a key made once per process, or no signature without ``cryptography``."""

    _shared: Optional[Signer] = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        from cryptography.hazmat.primitives.asymmetric import rsa

        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        numbers = self._key.public_key().public_numbers()
        n = numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")
        e = numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")
        self.kid = b64url(hashlib.sha256(n).digest()[:20])
        self.jwk = {"kty": "RSA", "use": "sig", "alg": "RS256", "kid": self.kid, "n": b64url(n), "e": b64url(e)}

    @classmethod
    def shared(cls) -> Optional[Signer]:
        try:
            import cryptography  # noqa: F401
        except ImportError:
            return None
        with cls._lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    def sign(self, data: bytes) -> bytes:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        return self._key.sign(data, padding.PKCS1v15(), hashes.SHA256())


def stranger() -> dict[str, str]:
    """The claims of an identity nobody asked for (the wrong-identity fault)."""
    other = UserAssignedIdentity(client_id=derived_id("stranger", "client")).completed()
    return {"appid": str(other.client_id), "oid": str(other.object_id), "xms_mirid": str(other.msi_res_id)}


def mint_jwt(
    signer: Optional[Signer], tenant_id: str, resource: str, identity: Mapping[str, str], now: int, expires: int
) -> tuple[str, dict[str, Any]]:
    """A JWT for ``identity`` and ``resource``, and its claims (signed when ``signer`` is given)."""
    claims: dict[str, Any] = {
        "aud": resource,
        "iss": f"https://sts.windows.net/{tenant_id}/",
        "iat": now - BACKDATE,
        "nbf": now - BACKDATE,
        "exp": expires,
        "aio": b64url(os.urandom(24)),
        "appid": identity.get("appid"),
        "appidacr": "2",
        "idp": f"https://sts.windows.net/{tenant_id}/",
        "idtyp": "app",
        "oid": identity.get("oid"),
        "sub": identity.get("oid"),
        "tid": tenant_id,
        "uti": b64url(os.urandom(16)),
        "ver": "1.0",
        "xms_mirid": identity.get("xms_mirid"),
    }
    header: dict[str, str] = {"typ": "JWT", "alg": "RS256" if signer else "none"}
    if signer:
        header["kid"] = header["x5t"] = signer.kid
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    signature = b64url(signer.sign(signing_input.encode("ascii"))) if signer else ""
    return f"{signing_input}.{signature}", claims
