"""msal's ManagedIdentityClient, unmodified: one token, printed as JSON.

python py_msal.py KIND VALUE RESOURCE     # KIND: system, client_id, object_id, resource_id
"""

import json
import sys
import time

import msal
import requests

kind, value, resource = sys.argv[1:4]
if kind == "system":
    identity = msal.SystemAssignedManagedIdentity()
else:
    identity = msal.UserAssignedManagedIdentity(**{kind: value})
start = time.monotonic()
try:
    client = msal.ManagedIdentityClient(identity, http_client=requests.Session())
    result = client.acquire_token_for_client(resource=resource)
    if "access_token" in result:
        print(json.dumps({"token": result["access_token"], "seconds": time.monotonic() - start}))
    else:
        print(json.dumps({"error": json.dumps(result)[:500], "type": "error", "seconds": time.monotonic() - start}))
except Exception as exc:  # the outcome is the test's to judge
    print(json.dumps({"error": str(exc)[:500], "type": type(exc).__name__, "seconds": time.monotonic() - start}))
