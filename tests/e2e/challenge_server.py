"""A small HTTPS server on loopback that answers like Key Vault and ARM do to bearer tokens.

No local Key Vault or ARM emulator checks tokens, so this is the one hand-written fake of
the suite. It issues the documented challenges and checks each bearer token's ``aud``:

* Key Vault (``/secrets/...``): a request without a token gets 401 with
  ``WWW-Authenticate: Bearer authorization="https://login.microsoftonline.com/<tenant>",
  resource="https://vault.azure.net"``; then the token's ``aud`` must be that resource.
* ARM (``/subscriptions/.../resourcegroups``): the token's ``aud`` must be
  ``https://management.azure.com``. With ``claims_challenge`` on, the first request is
  refused with the CAE challenge (``error="insufficient_claims", claims="..."``), as ARM
  does for a revoked token; the client must then ask its credential again and retry.
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import ssl
import threading
from dataclasses import dataclass, field
from typing import Any, Optional
from urllib.parse import urlsplit

VAULT_RESOURCE = "https://vault.azure.net"
ARM_RESOURCE = "https://management.azure.com"
CLAIMS = base64.b64encode(b'{"access_token":{"nbf":{"essential":true,"value":"1726258122"}}}').decode()


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return decoded


@dataclass
class ChallengeServer:
    tenant_id: str
    cert_file: str
    key_file: str
    claims_challenge: bool = False
    seen: list[tuple[str, Optional[str]]] = field(default_factory=list)
    challenged_token: Optional[str] = None
    _server: Optional[http.server.ThreadingHTTPServer] = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"https://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> ChallengeServer:
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, status: int, body: Any, headers: Optional[dict[str, str]] = None) -> None:
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self) -> None:
                path = urlsplit(self.path).path
                authorization = self.headers.get("Authorization")
                token = (
                    authorization[len("Bearer ") :] if authorization and authorization.startswith("Bearer ") else None
                )
                owner.seen.append((path, token))
                if path.startswith("/secrets/"):
                    self._vault(path, token)
                elif path.startswith("/subscriptions/"):
                    self._arm(path, token)
                else:
                    self._reply(404, {"error": {"code": "NotFound", "message": path}})

            def _vault(self, path: str, token: Optional[str]) -> None:
                if token is None:
                    challenge = (
                        f'Bearer authorization="https://login.microsoftonline.com/{owner.tenant_id}", '
                        f'resource="{VAULT_RESOURCE}"'
                    )
                    self._reply(401, {"error": {"code": "Unauthorized"}}, {"WWW-Authenticate": challenge})
                    return
                if claims_of(token).get("aud") != VAULT_RESOURCE:
                    self._reply(401, {"error": {"code": "Unauthorized", "message": "AKV10022: Invalid audience."}})
                    return
                name = path.split("/")[2]
                self._reply(
                    200,
                    {
                        "value": f"secret-value-of-{name}",
                        "id": f"{owner.url}/secrets/{name}/0123456789abcdef",
                        "attributes": {"enabled": True, "created": 1700000000, "updated": 1700000000},
                    },
                )

            def _arm(self, path: str, token: Optional[str]) -> None:
                if token is None or claims_of(token).get("aud") != ARM_RESOURCE:
                    self._reply(401, {"error": {"code": "InvalidAuthenticationTokenAudience", "message": "bad aud"}})
                    return
                if owner.claims_challenge and owner.challenged_token is None:
                    owner.challenged_token = token
                    challenge = (
                        f'Bearer authorization_uri="https://login.microsoftonline.com/{owner.tenant_id}/", '
                        f'error="insufficient_claims", claims="{CLAIMS}"'
                    )
                    self._reply(401, {"error": {"code": "InvalidAuthenticationToken"}}, {"WWW-Authenticate": challenge})
                    return
                subscription = path.split("/")[2]
                group = {
                    "id": f"/subscriptions/{subscription}/resourceGroups/legacy-vm-rg",
                    "name": "legacy-vm-rg",
                    "type": "Microsoft.Resources/resourceGroups",
                    "location": "westeurope",
                    "properties": {"provisioningState": "Succeeded"},
                }
                self._reply(200, {"value": [group]})

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, self.key_file)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def main() -> None:
    """Serve until interrupted, printing the URL and the CA file (for the samples' docstrings)."""
    import signal
    import tempfile

    import trustme

    folder = tempfile.mkdtemp(prefix="challenge-server-")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file, ca_file = (f"{folder}/{name}.pem" for name in ("cert", "key", "ca"))
    cert.private_key_and_cert_chain_pem.write_to_path(cert_file)
    cert.private_key_pem.write_to_path(key_file)
    ca.cert_pem.write_to_path(ca_file)
    tenant = "00000000-0000-0000-0000-0000000000aa"
    server = ChallengeServer(tenant, cert_file, key_file).start()
    print(f"URL {server.url}\nCA  {ca_file}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with contextlib.suppress(KeyboardInterrupt):
        stop.wait()
    server.stop()


if __name__ == "__main__":
    main()
