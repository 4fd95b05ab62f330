"""azure-identity, unmodified, as an application on the VM uses it: one token, printed as JSON.

    python py_identity.py sync|aio ManagedIdentityCredential|DefaultAzureCredential KIND VALUE RESOURCE

KIND is system, client_id, object_id or resource_id (ManagedIdentityCredential's keyword
arguments); DefaultAzureCredential takes no identity argument here (AZURE_CLIENT_ID in the
environment chooses one). The last line is {"token", "seconds"} or {"error", "type", "seconds"}.
"""

import asyncio
import json
import sys
import time

mode, kind_of_credential, kind, value, resource = sys.argv[1:6]
# ManagedIdentityCredential names a user-assigned identity by client_id=, or by
# identity_config={"object_id": ...} / {"resource_id": ...}; any other keyword is ignored.
if kind == "system":
    arguments = {}
elif kind == "client_id":
    arguments = {"client_id": value}
elif mode == "aio" and kind == "resource_id":
    # The aio twin sends identity_config's keys as they are (its sync twin maps them through
    # msal): the resource ID has each protocol's own name there, and "resource_id" is refused.
    import os

    arguments = {"identity_config": {"mi_res_id" if "IDENTITY_ENDPOINT" in os.environ else "msi_res_id": value}}
else:
    arguments = {"identity_config": {kind: value}}
start = time.monotonic()
try:
    if mode == "sync":
        import azure.identity as identity

        credential = getattr(identity, kind_of_credential)(**arguments)
        token = credential.get_token(resource + ".default").token
    else:
        import azure.identity.aio as identity

        async def main() -> str:
            async with getattr(identity, kind_of_credential)(**arguments) as credential:
                return (await credential.get_token(resource + ".default")).token

        token = asyncio.run(main())
    print(json.dumps({"token": token, "seconds": time.monotonic() - start}))
except Exception as exc:  # the outcome is the test's to judge
    print(json.dumps({"error": str(exc)[:500], "type": type(exc).__name__, "seconds": time.monotonic() - start}))
