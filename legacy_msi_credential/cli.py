"""``legacy-msi``: get a token, diagnose a machine, or run the emulator."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Optional, TextIO
from urllib.parse import urlencode, urlsplit

from . import _claims
from ._constants import (
    BRIDGE_SOURCE_TIMEOUT,
    BRIDGE_SOURCES,
    DEFAULT_PORT,
    DEFAULT_SCOPE_SUFFIX,
    EMULATOR_LIFETIME,
    ENV_ENDPOINT,
    ENV_IMDS_URL,
    EXTRA_HINT,
    HEALTH_PATH,
    IDENTITY_PARAMETERS,
    IMDS_DEFAULT_URL,
    IMDS_TOKEN_PATH,
    TOKEN_PATH,
)
from ._endpoint import (
    SOURCES,
    EndpointChoice,
    SettingsFileError,
    default_settings_file,
    endpoint_context,
    resolve_endpoint,
)
from ._loopback import is_loopback_host
from ._scopes import scopes_to_resource
from ._text import printable
from ._version import VERSION

if TYPE_CHECKING:
    from ._errors import TokenRequestError

# Only the standard library and this package's light modules are imported here: a
# subcommand imports what it needs when it runs, so that `--help` and usage errors cost
# little more than starting Python.

DEFAULT_RESOURCE = "https://management.azure.com/"
_PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")
_SHOWN_CLAIMS = ("aud", "iss", "tid", "oid", "appid", "xms_mirid", "idtyp", "iat", "nbf", "exp")
#: How long doctor waits for IMDS before concluding it is absent.
_IMDS_PROBE_TIMEOUT = 1.0  # s
#: How long doctor waits for the legacy endpoint's raw probes.
_PROBE_TIMEOUT = 3.0  # s


# --- helpers ---------------------------------------------------------------------------


def decode_claims(token: str) -> dict[str, Any]:
    """The JWT's claims, decoded but **not verified**; ``{}`` for a token that is not a JWT."""
    return _claims.decode_claims(token) or {}


def _iso(epoch: float) -> str:
    try:
        return datetime.fromtimestamp(epoch, timezone.utc).isoformat()
    except (ValueError, OverflowError, OSError):
        return str(epoch)


def _when(epoch: int, now: float) -> str:
    try:
        moment = datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (ValueError, OverflowError, OSError):
        moment = f"{epoch} (Unix seconds)"
    left = int(epoch - now)
    if left >= 0:
        return f"{moment} (in {left // 60} min {left % 60} s)"
    return f"{moment} ({-left} s ago)"


def _identity_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    chosen = {name: getattr(args, name) for name in IDENTITY_PARAMETERS}
    return {name: value for name, value in chosen.items() if value is not None}


def _add_identity_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    system = "(default: the system-assigned identity)"
    group.add_argument("--client-id", help=f"client ID of a user-assigned identity {system}")
    group.add_argument("--object-id", help=f"object (principal) ID of a user-assigned identity {system}")
    group.add_argument("--msi-res-id", help=f"ARM resource ID of a user-assigned identity {system}")


# --- token -----------------------------------------------------------------------------


def _cmd_token(args: argparse.Namespace, out: TextIO) -> int:
    from ._credential import LegacyMsiCredential

    with LegacyMsiCredential(
        endpoint=args.endpoint,
        wait_for_endpoint=args.wait_for_endpoint,
        **({} if args.retry_total is None else {"retry_total": args.retry_total}),
        **_identity_kwargs(args),
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
            "expiresOn": _iso(info.expires_on),
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
        ("Expires", _when(info.expires_on, now)),
        ("Refresh at", _when(info.refresh_on, now) if info.refresh_on else "-"),
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
                    value = f"{value} ({_when(value, now)})"
                out.write(f"  {name:<10}{value}\n")
    out.write("The token itself is shown only with --output raw or --output json.\n")
    return 0


# --- doctor ----------------------------------------------------------------------------


@dataclass
class _Report:
    out: TextIO
    problems: int = 0

    def line(self, status: str, text: str) -> None:
        self.out.write(f"[{status:^4}] {printable(text)}\n")
        if status == "FAIL":
            self.problems += 1


def _probe(
    url: str, *, headers: dict[str, str], timeout: float, loopback: bool = True
) -> tuple[Optional[int], str, bytes, str]:
    """One raw GET, no proxies, no retries: (status, content type, first bytes, error).

    With ``loopback``, a plain-http connection is made only to a loopback peer, as the
    credential's are.
    """
    from ._guard import new_guarded_session

    session = new_guarded_session(require_loopback=loopback)
    session.trust_env = False
    try:
        with session.get(url, headers=headers, timeout=timeout, allow_redirects=False, stream=True) as response:
            body = response.raw.read(4096, decode_content=True)
            return response.status_code, response.headers.get("Content-Type", ""), body, ""
    except Exception as exc:  # requests', urllib3's (the adapter does not retry) and this package's errors
        return None, "", b"", type(exc).__name__
    finally:
        session.close()


def _what_listens(token_url: str, timeout: float) -> tuple[str, str]:
    """What answers at ``token_url``: ``("emulator", ...)``, ``("bridge", ...)`` or ``("extension", ...)``,
    with a phrase naming it. The emulator and the bridge say so on their health path; the
    extension has none."""
    base = token_url.split("?", 1)[0]
    base = base[: -len(TOKEN_PATH)] if base.endswith(TOKEN_PATH) else base.rstrip("/")
    status, _, body, _ = _probe(base + HEALTH_PATH, headers={}, timeout=timeout)
    role = _json_field(body, "role") if status == 200 else None
    if role == "emulator":
        return "emulator", "this package's emulator (legacy-msi emulate): its tokens are not real"
    if role == "bridge":
        source = _json_field(body, "source") or "an unknown"
        return "bridge", f"a legacy-msi serve bridge, with tokens from its {source} source"
    return "extension", "the legacy managed identity extension"


def _json_field(body: bytes, name: str) -> Optional[str]:
    try:
        document = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    value = document.get(name) if isinstance(document, dict) else None
    return value if isinstance(value, str) else None


def _cmd_doctor(args: argparse.Namespace, out: TextIO) -> int:
    from ._credential import LegacyMsiCredential
    from ._errors import CredentialUnavailableError, TokenRequestError
    from ._protocol import describe_body

    report = _Report(out)
    env = os.environ
    out.write(f"legacy-msi doctor {VERSION}\n\nWhere the endpoint comes from, in order:\n")
    context = endpoint_context(args.endpoint)
    settings_path = default_settings_file(env)
    try:
        for source in SOURCES:  # the credential's own order, each source saying what it finds here
            report.line("info", source.describe(context))
    except SettingsFileError as exc:
        report.line("FAIL", f"{exc}")
        out.write(f"\nVerdict: the extension's settings file is unusable. Fix: repair or remove {settings_path}.\n")
        return 1
    try:
        choice: EndpointChoice = resolve_endpoint(args.endpoint)
    except ValueError as exc:
        report.line("FAIL", str(exc))
        out.write("\nVerdict: the configured endpoint is unusable. Fix: correct the URL named above.\n")
        return 1
    report.line(" ok ", f"chosen: {choice.url}, {choice.detail}")

    out.write("\nProxies:\n")
    proxies = [name for name in _PROXY_VARIABLES if env.get(name)]
    host = urlsplit(choice.url).hostname or ""
    if proxies and is_loopback_host(host):
        report.line(
            "warn",
            f"{', '.join(proxies)} set: this credential ignores them for a loopback endpoint, but other "
            "tools may send loopback traffic through the proxy unless NO_PROXY lists localhost,127.0.0.1",
        )
    elif proxies:
        report.line("warn", f"{', '.join(proxies)} set and the endpoint is not loopback: requests go through them")
    else:
        report.line(" ok ", "no proxy variables set")

    out.write("\nThe endpoint:\n")
    listening = _listening(choice.url, timeout=args.timeout)
    verdict = ""
    kind = "extension"
    if not listening:
        report.line("FAIL", f"nothing listens at {choice.url}")
        verdict = (
            "the legacy extension is not running here. Fix: enable the ManagedIdentityExtension on the VM "
            "(or wait for it: wait_for_endpoint=SECONDS on a booting VM)"
        )
    else:
        report.line(" ok ", f"something listens at {choice.url}")
        bare_status, bare_type, bare_body, bare_error = _probe(
            choice.url + ("&" if "?" in choice.url else "?") + urlencode({"resource": args.resource}),
            headers={},
            timeout=args.timeout,
        )
        if bare_status == 400 and _json_field(bare_body, "error") == "bad_request_102":
            kind, listener = _what_listens(choice.url, args.timeout)
            report.line(
                " ok ", "it answers like the extension (a request without 'Metadata: true' gets 400 bad_request_102)"
            )
            report.line("info" if kind == "extension" else "note", f"it is {listener}")
        elif bare_status is None:
            report.line("warn", f"a request without 'Metadata: true' got no answer ({bare_error})")
        else:
            report.line(
                "warn",
                f"a request without 'Metadata: true' got HTTP {bare_status} with "
                f"{describe_body(bare_type, bare_body)}; the extension answers 400 bad_request_102",
            )

    out.write("\nA token:\n")
    got_token = False
    if listening:
        try:
            with LegacyMsiCredential(endpoint=args.endpoint, **_identity_kwargs(args)) as credential:
                info = credential.get_token_info(args.resource)
            got_token = True
            claims = decode_claims(info.token)
            report.line(
                " ok ",
                f"token for {args.resource} ({credential.identity.describe()}), "
                f"expires {_when(info.expires_on, time.time())}"
                + (f", tenant {claims['tid']}" if "tid" in claims else ""),
            )
        except CredentialUnavailableError as exc:
            report.line("FAIL", exc.message)
            verdict = (
                "something else is listening on the extension's port. Fix: find the program "
                f"(`ss -ltnp | grep {urlsplit(choice.url).port or 80}`) and stop it, or point the credential "
                "at the real endpoint"
            )
        except TokenRequestError as exc:
            report.line("FAIL", exc.message)
            verdict = "the extension refused. Fix: " + _fix_for(exc)
    else:
        report.line("skip", "not tried: nothing listens")

    imds_answers: Optional[bool] = None  # not probed
    out.write("\nIMDS:\n")
    if args.skip_imds:
        report.line("skip", "not probed (--skip-imds)")
    else:
        imds = (args.imds_url or env.get(ENV_IMDS_URL) or IMDS_DEFAULT_URL).rstrip("/")
        status, _, _, error = _probe(
            f"{imds}{IMDS_TOKEN_PATH}?" + urlencode({"api-version": "2018-02-01", "resource": args.resource}),
            headers={"Metadata": "true"},
            timeout=_IMDS_PROBE_TIMEOUT,
            loopback=False,
        )
        imds_answers = status is not None
        if status is None:
            report.line("info", f"IMDS at {imds} does not answer ({error})")
        else:
            report.line(
                "info",
                f"IMDS at {imds} answers (HTTP {status}): azure-identity's ManagedIdentityCredential works "
                "here too; see the README's recommended chain",
            )

    out.write("\nDefaultAzureCredential (azure-identity's chain with the legacy step):\n")
    step = _chain_step(args, report)

    out.write("\nVerdict: ")
    if got_token:
        origin = {
            "emulator": "from this package's emulator: test tokens that no Azure service accepts",
            "bridge": "from a legacy-msi serve bridge",
        }.get(kind, "from the legacy managed identity extension")
        out.write(f"healthy: LegacyMsiCredential gets tokens on this machine, {origin}.\n")
        return 0
    if step is not None:
        out.write(
            f"LegacyMsiCredential gets no token here, but DefaultAzureCredential from this package does, "
            f"from {step} ({_STEP_KINDS.get(step, 'another step of the chain')}). Use it: "
            "`from legacy_msi_credential import DefaultAzureCredential`.\n"
        )
        return 0
    if not listening and imds_answers is False:
        verdict = (
            "neither the legacy extension nor IMDS answers: this is not an Azure VM with a managed identity "
            "(a developer's machine or a CI runner?). Fix: on a VM, enable a managed identity (or the "
            "ManagedIdentityExtension on an old VM); elsewhere sign in with `az login`, or set AZURE_CLIENT_ID, "
            "AZURE_TENANT_ID and AZURE_CLIENT_SECRET for a service principal"
        )
    elif not listening and imds_answers:
        verdict = (
            "the legacy extension is not running here, but IMDS answers: use DefaultAzureCredential from this "
            "package (or azure-identity's ManagedIdentityCredential), which gets tokens from IMDS"
        )
    out.write(verdict + ".\n")
    return 1


#: What each step of the chain means on this machine.
_STEP_KINDS = {
    "LegacyMsiCredential": "the legacy managed identity extension",
    "ManagedIdentityCredential": "IMDS, this VM's managed identity",
    "EnvironmentCredential": "a service principal from the environment",
    "WorkloadIdentityCredential": "workload identity federation",
    "AzureCliCredential": "the Azure CLI: a developer's machine",
    "AzureDeveloperCliCredential": "the Azure Developer CLI: a developer's machine",
    "AzurePowerShellCredential": "Azure PowerShell: a developer's machine",
    "VisualStudioCodeCredential": "Visual Studio Code: a developer's machine",
    "SharedTokenCacheCredential": "a shared token cache: a developer's machine",
}


def _chain_step(args: argparse.Namespace, report: _Report) -> Optional[str]:
    """Which step of this package's DefaultAzureCredential answers here, reported; ``None`` if none."""
    from azure.core.exceptions import ClientAuthenticationError

    try:
        from azure.identity import ManagedIdentityCredential

        from ._default import DefaultAzureCredential
    except ImportError:
        report.line("skip", f"not tried: azure-identity is not installed ({EXTRA_HINT})")
        return None
    resource = args.resource.rstrip("/")
    scope = resource if resource.endswith(DEFAULT_SCOPE_SUFFIX) else resource + DEFAULT_SCOPE_SUFFIX
    saved = os.environ.get("AZURE_POD_IDENTITY_AUTHORITY_HOST")
    # azure-identity logs the chain's failure as a WARNING; the lines below say it once.
    identity_logger = logging.getLogger("azure.identity")
    level = identity_logger.level
    identity_logger.setLevel(logging.ERROR)
    try:
        # azure-identity's IMDS step goes where doctor's own probe went, for this call only.
        _point_azure_identity_at_imds(args.imds_url)
        chain = DefaultAzureCredential(legacy_msi_endpoint=args.endpoint, **_chain_identity(args))
        if args.skip_imds:
            chain.credentials = tuple(c for c in chain.credentials if not isinstance(c, ManagedIdentityCredential))
        with chain:
            chain.get_token_info(scope)
    except ClientAuthenticationError as exc:
        report.line("FAIL", "no step of the chain gets a token here")
        for line in exc.message.splitlines():
            if line.startswith("\t"):
                report.line("info", line.strip())
        return None
    finally:
        identity_logger.setLevel(level)
        if saved is None:
            os.environ.pop("AZURE_POD_IDENTITY_AUTHORITY_HOST", None)
        else:
            os.environ["AZURE_POD_IDENTITY_AUTHORITY_HOST"] = saved
    step = type(getattr(chain, "_successful_credential", None)).__name__
    skipped = " (IMDS not tried: --skip-imds)" if args.skip_imds else ""
    report.line(" ok ", f"{step} answers: {_STEP_KINDS.get(step, 'a step of the chain')}{skipped}")
    return step


def _chain_identity(args: argparse.Namespace) -> dict[str, Any]:
    client_id = getattr(args, "client_id", None)
    return {"managed_identity_client_id": client_id} if client_id else {}


def _fix_for(error: TokenRequestError) -> str:
    fixes = {
        "unauthorized_client": "assign the managed identity to this VM, or pass the right --client-id/--object-id",
        "invalid_resource": "ask for a resource Azure AD knows, e.g. https://management.azure.com/",
        "bad_request_102": "remove the proxy or gateway that strips the 'Metadata: true' header",
        "unknown_source": "the endpoint URL must end in /oauth2/token",
    }
    return fixes.get(error.error_code or "", "see the message above; the extension's log on the VM has details")


def _listening(url: str, *, timeout: float) -> bool:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "localhost", port), timeout=timeout):
            return True
    except OSError:
        return False


# --- emulate ---------------------------------------------------------------------------


def _cmd_emulate(args: argparse.Namespace, out: TextIO) -> int:
    from .emulator import Emulator, UserAssignedIdentity, parse_fault_spec

    faults = [fault for spec in args.fault for fault in parse_fault_spec(spec)]
    stack = contextlib.ExitStack()
    emulator = Emulator(
        args.host,
        args.port,
        lifetime=args.lifetime,
        tenant_id=args.tenant_id,
        user_assigned=[UserAssignedIdentity(client_id=c) for c in args.user_assigned] or None,
        accept_get=not args.post_only,
        flavor=args.os,
        sign=False if args.unsigned else None,
        allow_remote=args.allow_remote,
    )
    emulator.add_faults(*faults)
    emulator.start()
    try:
        written = stack.enter_context(_settings_file(emulator, args.write_settings))
        out.write(f"Emulator listening on {emulator.endpoint}\n")
        if written:
            out.write(f"Settings file written: {written}\n")
        command = args.command[1:] if args.command[:1] == ["--"] else args.command
        if command:
            env = dict(os.environ, **{ENV_ENDPOINT: emulator.endpoint})
            out.flush()
            return subprocess.call(command, env=env)  # noqa: S603 - the user's own command
        out.write(f"export {ENV_ENDPOINT}={emulator.endpoint}\nPress Ctrl+C to stop.\n")
        out.flush()
        previous = {sig: signal.signal(sig, lambda *_: emulator.stop()) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            emulator.wait()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 0
    finally:
        stack.close()  # the settings file goes first, while the server still answers
        emulator.stop()


@contextlib.contextmanager
def _settings_file(server: Any, path: Optional[str]) -> Iterator[Optional[str]]:
    """Write the extension's settings file for ``server`` (when asked); remove it on the way out."""
    written = server.write_settings(path) if path else None
    try:
        yield written
    finally:
        if written:
            with contextlib.suppress(OSError):
                os.remove(written)


# --- serve -----------------------------------------------------------------------------


def _point_azure_identity_at_imds(url: Optional[str]) -> None:
    """Send azure-identity's IMDS requests to ``url`` (``--imds-url``), else to ``LEGACY_MSI_IMDS_URL``
    unless azure-identity's own setting (``AZURE_POD_IDENTITY_AUTHORITY_HOST``) says where."""
    if url:
        os.environ["AZURE_POD_IDENTITY_AUTHORITY_HOST"] = url.rstrip("/")
    elif os.environ.get(ENV_IMDS_URL) and not os.environ.get("AZURE_POD_IDENTITY_AUTHORITY_HOST"):
        os.environ["AZURE_POD_IDENTITY_AUTHORITY_HOST"] = os.environ[ENV_IMDS_URL].rstrip("/")


def _cmd_serve(args: argparse.Namespace, out: TextIO) -> int:
    from .bridge import Bridge, Notifier, TokenSource

    _point_azure_identity_at_imds(args.imds_url)
    if not args.no_access_log:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        access = logging.getLogger("legacy_msi_credential.bridge.access")
        access.addHandler(stream)
        access.setLevel(logging.INFO)
        access.propagate = False
    source = TokenSource(args.source, timeout=args.source_timeout)
    notifier = Notifier.from_environment()
    bridge = Bridge(args.host, args.port, source=source, allow_remote=args.allow_remote, notifier=notifier)
    bridge.start()
    stop_requested = threading.Event()

    def stop(*_: Any) -> None:
        stop_requested.set()  # the main thread stops the bridge: a handler must not block on it

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with _settings_file(bridge, args.write_settings) as written:
            out.write(f"Serving the legacy endpoint at {bridge.endpoint}, tokens from the {args.source} source\n")
            if written:
                out.write(f"Settings file written: {written}\n")
            out.flush()
            notifier.ready(f"serving {bridge.endpoint} from the {args.source} source")
            stop_requested.wait()  # a signal handler runs in this thread while it waits, and sets it
            bridge.stop()  # answers what is in flight first, then the settings file goes
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        bridge.stop()
        out.write("Stopped.\n")
        out.flush()


# --- the parser ------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The ``legacy-msi`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="legacy-msi",
        description="Tokens from the legacy Azure managed identity VM extension (localhost:50342), "
        "diagnostics, and a local emulator of it.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {VERSION}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    commands = parser.add_subparsers(dest="command_name", metavar="COMMAND", required=True)

    token = commands.add_parser(
        "token",
        help="get an access token, like `az account get-access-token`",
        description="Get an access token from the legacy endpoint and show its expiry and decoded "
        "(never verified) claims. The token itself is printed only with --output raw or json.",
    )
    token.add_argument(
        "resource",
        nargs="?",
        default=DEFAULT_RESOURCE,
        metavar="SCOPE_OR_RESOURCE",
        help=f"a scope (https://vault.azure.net/.default) or a resource (default: {DEFAULT_RESOURCE})",
    )
    _add_identity_options(token)
    token.add_argument("--endpoint", help="token URL (default: environment, settings file, then localhost:50342)")
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

    doctor = commands.add_parser(
        "doctor",
        help="diagnose this machine",
        description="Say which endpoint would be used and why, whether something listens there and "
        "answers like the extension, whether a token can be had, whether IMDS answers too, which "
        "proxy variables could interfere, and what to fix. Exit status 0 when a token can be had.",
    )
    doctor.add_argument(
        "resource",
        nargs="?",
        default=DEFAULT_RESOURCE,
        metavar="SCOPE_OR_RESOURCE",
        help=f"what to ask a token for (default: {DEFAULT_RESOURCE})",
    )
    _add_identity_options(doctor)
    doctor.add_argument(
        "--endpoint", help="token URL to check (default: the one the credential resolves, shown with its reason)"
    )
    doctor.add_argument("--skip-imds", action="store_true", help="do not probe IMDS (default: probe it, 1 s)")
    doctor.add_argument(
        "--imds-url",
        help=f"IMDS address to probe (default: ${ENV_IMDS_URL}, else {IMDS_DEFAULT_URL})",
    )
    doctor.add_argument(
        "--timeout",
        type=float,
        default=_PROBE_TIMEOUT,
        metavar="SECONDS",
        help=f"timeout of each raw probe of the endpoint (default: {_PROBE_TIMEOUT:g})",
    )

    emulate = commands.add_parser(
        "emulate",
        help="run a local emulator of the legacy endpoint",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.fill(
            "Serve the legacy endpoint's protocol locally, minting JWTs that look like Azure AD's "
            "(they are not: no Azure service accepts them). With COMMAND, run it with "
            f"{ENV_ENDPOINT} pointing at the emulator and exit with its status; otherwise serve until "
            "Ctrl+C or SIGTERM.",
            width=min(shutil.get_terminal_size().columns, 100) - 2,
        ),
        epilog="""fault SPEC (one per token request, in order; comma-separated; xN repeats):
  503  429@5  400/invalid_resource  an error answer, optionally with Retry-After
  ok                        a normal answer (spaces out the others)
  drop | reset              close the connection / reset it mid-body
  hang[=S] | delay=S        never answer (or for S seconds) / answer after S
  not-json | truncated      an HTML page / half a JSON body
  expired                   an expired token
  huge=BYTES | flood=BYTES  an oversized body, announced / not announced
  trickle=S                 a good answer, one byte every S seconds
  lifetime=S                a new token living S seconds
  wrong-identity            a token (and client_id) of an identity not asked for
example: legacy-msi emulate --port 0 --fault 503x2,drop -- python app.py""",
    )
    emulate.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port to bind; 0 for a free one (default: {DEFAULT_PORT})"
    )
    emulate.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    emulate.add_argument(
        "--allow-remote", action="store_true", help="allow binding an address that is not loopback (default: refused)"
    )
    emulate.add_argument(
        "--lifetime",
        type=int,
        default=EMULATOR_LIFETIME,
        metavar="SECONDS",
        help=f"token lifetime (default: {EMULATOR_LIFETIME})",
    )
    emulate.add_argument("--tenant-id", help="tenant ID put in tokens (default: a fixed made-up one)")
    emulate.add_argument(
        "--user-assigned",
        action="append",
        default=[],
        metavar="CLIENT_ID",
        help="a user-assigned identity the VM has, repeatable (default: none, and every identity is accepted)",
    )
    emulate.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="SPEC",
        help="scripted answers, see below (default: none, every answer normal)",
    )
    emulate.add_argument(
        "--write-settings",
        metavar="PATH",
        help="write a ManagedIdentity-Settings file, removed on exit (default: none written)",
    )
    emulate.add_argument(
        "--post-only",
        action="store_true",
        help="answer GET with 405, as POST-only deployments did (default: GET and POST)",
    )
    emulate.add_argument(
        "--os",
        choices=("linux", "windows"),
        default="linux",
        help="the extension's flavour: windows answers an unknown resource 500 unknown (default: linux)",
    )
    emulate.add_argument(
        "--unsigned", action="store_true", help="mint unsigned tokens, alg none (default: RS256 with cryptography)"
    )
    emulate.add_argument(
        "command",
        nargs=argparse.REMAINDER,
        metavar="-- COMMAND",
        help="command to run, then stop (default: serve until stopped)",
    )

    serve = commands.add_parser(
        "serve",
        help="serve the legacy endpoint from a real token source (IMDS, az, azure-identity's default chain)",
        description="Keep software written against the legacy extension working where the extension is gone: "
        "serve its protocol on loopback, with tokens from IMDS (default), the Azure CLI or azure-identity's "
        "DefaultAzureCredential (needs the identity extra). One source request per identity and resource, "
        "cached until five minutes before expiry. Stops cleanly on SIGTERM, removing a settings file it wrote.",
    )
    serve.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port to bind; 0 for a free one (default: {DEFAULT_PORT})"
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, and ::1)")
    serve.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow binding an address that is not loopback; requests not over loopback are still refused "
        "(default: refused)",
    )
    serve.add_argument(
        "--source",
        choices=BRIDGE_SOURCES,
        default=BRIDGE_SOURCES[0],
        help=f"where tokens come from (default: {BRIDGE_SOURCES[0]})",
    )
    serve.add_argument(
        "--source-timeout",
        type=float,
        default=BRIDGE_SOURCE_TIMEOUT,
        metavar="SECONDS",
        help=f"longest wait for the source (default: {BRIDGE_SOURCE_TIMEOUT:g})",
    )
    serve.add_argument(
        "--write-settings",
        metavar="PATH",
        help="write the extension's settings file there, e.g. /var/lib/waagent/ManagedIdentity-Settings "
        "(default: none written)",
    )
    serve.add_argument(
        "--imds-url",
        metavar="URL",
        help=f"where the imds source asks, e.g. a local emulator (default: ${ENV_IMDS_URL}, else IMDS itself)",
    )
    serve.add_argument(
        "--no-access-log",
        action="store_true",
        help="no line per request on stderr (by default: method, path, identity kind, status and milliseconds)",
    )
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``legacy-msi``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    out = sys.stdout
    if args.debug:
        logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(name)s: %(message)s")
    else:
        logging.basicConfig(level=logging.WARNING, format="legacy-msi: warning: %(message)s")
    handlers = {"token": _cmd_token, "doctor": _cmd_doctor, "emulate": _cmd_emulate, "serve": _cmd_serve}
    try:
        return handlers[args.command_name](args, out)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if args.debug:
            raise
        core = sys.modules.get("azure.core.exceptions")  # loaded if such an error can have been raised
        if core is not None and isinstance(exc, core.ClientAuthenticationError):
            message = exc.message
        elif isinstance(exc, (ValueError, OSError)):
            message = str(exc)
        else:
            message = f"unexpected {type(exc).__name__}; run with --debug for the traceback"
        sys.stderr.write(f"legacy-msi: error: {printable(message)}\n")
        return 1
