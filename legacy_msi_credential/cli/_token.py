"""``legacy-msi token``: an access token, like ``az account get-access-token``."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any, TextIO

from .._scopes import scopes_to_resource
from ._common import add_identity_options, add_resource_argument, decode_claims, identity_kwargs, iso, when

#: The claims the table shows, in this order.
_SHOWN_CLAIMS = ("aud", "iss", "tid", "oid", "appid", "xms_mirid", "idtyp", "iat", "nbf", "exp")


def add_parser(commands: Any) -> None:
    token = commands.add_parser(
        "token",
        help="get an access token, like `az account get-access-token`",
        description="Get an access token from the legacy endpoint and show its expiry and decoded "
        "(never verified) claims. The token itself is printed only with --output raw or json.",
    )
    add_resource_argument(token, "a scope (https://vault.azure.net/.default) or a resource")
    add_identity_options(token)
    token.add_argument("--endpoint", help="token URL (default: environment, settings file, then localhost:50342)")
    token.add_argument(
        "--allow-insecure-http",
        action="store_true",
        help="accept a plain http endpoint that is not loopback (default: refused; the extension is on localhost)",
    )
    token.add_argument(
        "--output", "-o", choices=("table", "json", "raw"), default="table", help="output form (default: table)"
    )
    token.add_argument(
        "--wait-for-endpoint",
        type=float,
        default=0,
        metavar="SECONDS",
        help="keep trying this long while nothing listens, a booting VM (default: 0, fail at once)",
    )
    token.add_argument(
        "--retry-total",
        type=int,
        default=None,
        metavar="N",
        help="retries after the first attempt (default: 4; 0 asks once)",
    )
    token.set_defaults(run=run)


def run(args: argparse.Namespace, out: TextIO) -> int:
    from .._credential import LegacyMsiCredential

    with LegacyMsiCredential(
        endpoint=args.endpoint,
        wait_for_endpoint=args.wait_for_endpoint,
        allow_insecure_http=args.allow_insecure_http,
        **({} if args.retry_total is None else {"retry_total": args.retry_total}),
        **identity_kwargs(args),
    ) as credential:
        info = credential.get_token_info(args.resource)
        choice = credential.endpoint
    assert choice is not None
    now = time.time()
    claims = decode_claims(info.token)
    if args.output == "raw":
        out.write(info.token + "\n")
        return 0
    resource = scopes_to_resource((args.resource,))
    if args.output == "json":
        document = {
            "accessToken": info.token,
            "tokenType": info.token_type,
            "expiresOn": iso(info.expires_on),
            "expires_on": info.expires_on,
            "refresh_on": info.refresh_on,
            "resource": resource,
            "tenant": claims.get("tid"),
            "endpoint": choice.url,
            "endpointSource": choice.source,
            "identity": credential.identity.describe(),
            "claims": claims,
        }
        json.dump(document, out, indent=2)
        out.write("\n")
        return 0
    rows = [
        ("Resource", resource),
        ("Token type", info.token_type),
        ("Expires", when(info.expires_on, now)),
        ("Refresh at", when(info.refresh_on, now) if info.refresh_on else "-"),
        ("Endpoint", f"{choice.url} ({choice.detail})"),
        ("Identity", credential.identity.describe()),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        out.write(f"{name + ':':<{width + 2}}{value}\n")
    if claims:
        out.write("Claims (decoded, not verified):\n")
        for name in _SHOWN_CLAIMS:
            if name in claims:
                value = claims[name]
                if name in ("iat", "nbf", "exp") and isinstance(value, int):
                    value = f"{value} ({when(value, now)})"
                out.write(f"  {name:<10}{value}\n")
    out.write("The token itself is shown only with --output raw or --output json.\n")
    return 0
