"""``legacy-msi doctor``: what this machine offers, and what to fix.

Each check returns findings (a status and a line) and records what it learned in
:class:`Facts` for the checks after it and the verdict; one renderer prints them. A check
that makes the rest pointless (an unusable settings file or URL) gives the verdict itself.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, TextIO
from urllib.parse import urlencode, urlsplit

from .._constants import (
    DEFAULT_SCOPE_SUFFIX,
    ENV_IMDS_URL,
    EXTRA_HINT,
    HEALTH_PATH,
    IMDS_DEFAULT_URL,
    IMDS_TOKEN_PATH,
    TOKEN_PATH,
)
from .._endpoint import (
    SOURCES,
    EndpointChoice,
    SettingsFileError,
    default_settings_file,
    endpoint_context,
    resolve_endpoint,
)
from .._loopback import is_loopback_host
from .._text import printable
from .._version import VERSION
from ._common import (
    add_identity_options,
    add_resource_argument,
    decode_claims,
    identity_kwargs,
    point_azure_identity_at_imds,
    when,
)

#: Where the drop-in chain is explained, for users sent there (a page of the documentation site).
DOCS_DEFAULT_CREDENTIAL = "docs/default-credential.md"

_PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")
#: How long doctor waits for IMDS before concluding it is absent.
_IMDS_PROBE_TIMEOUT = 1.0  # s
#: How long doctor waits for the legacy endpoint's raw probes.
_PROBE_TIMEOUT = 3.0  # s


def add_parser(commands: Any) -> None:
    doctor = commands.add_parser(
        "doctor",
        help="diagnose this machine",
        description="Say which endpoint would be used and why, whether something listens there and "
        "answers like the extension, whether a token can be had, whether IMDS answers too, which "
        "proxy variables could interfere, and what to fix. Exit status 0 when a token can be had.",
    )
    add_resource_argument(doctor, "what to ask a token for")
    add_identity_options(doctor)
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
    doctor.set_defaults(run=run)


@dataclass(frozen=True)
class Finding:
    """One line of the diagnosis: ``ok``, ``info``, ``note``, ``warn``, ``FAIL`` or ``skip``, and what was found."""

    status: str
    text: str


@dataclass
class Facts:
    """What the checks learned, for the checks after them and for the verdict."""

    args: argparse.Namespace
    choice: Optional[EndpointChoice] = None
    listening: bool = False
    #: Whether what listens answered a request without ``Metadata: true`` as the extension does
    #: (None: it did not answer that request).
    answers_like_extension: Optional[bool] = None
    #: What answers: ``extension``, ``emulator`` or ``bridge``.
    kind: str = "extension"
    #: What answers, in words (``_what_listens``).
    listener: str = "the legacy managed identity extension"
    got_token: bool = False
    #: The verdict of the check that found the problem, if one did.
    problem: str = ""
    #: Whether IMDS answered (None: not probed).
    imds_answers: Optional[bool] = None
    #: The step of this package's DefaultAzureCredential that got a token.
    step: Optional[str] = None
    #: A verdict that ends the diagnosis at once.
    final: Optional[str] = None


def _where(facts: Facts) -> list[Finding]:
    args = facts.args
    context = endpoint_context(args.endpoint)
    findings: list[Finding] = []
    try:
        for source in SOURCES:  # the credential's own order, each source saying what it finds here
            findings.append(Finding("info", source.describe(context)))
    except SettingsFileError as exc:
        findings.append(Finding("FAIL", str(exc)))
        path = default_settings_file(os.environ)
        facts.final = f"the extension's settings file is unusable. Fix: repair or remove {path}"
        return findings
    try:
        facts.choice = resolve_endpoint(args.endpoint)
    except ValueError as exc:
        findings.append(Finding("FAIL", str(exc)))
        facts.final = "the configured endpoint is unusable. Fix: correct the URL named above"
        return findings
    findings.append(Finding("ok", f"chosen: {facts.choice.url}, {facts.choice.detail}"))
    return findings


def _proxies(facts: Facts) -> list[Finding]:
    assert facts.choice is not None
    proxies = [name for name in _PROXY_VARIABLES if os.environ.get(name)]
    if proxies and is_loopback_host(urlsplit(facts.choice.url).hostname or ""):
        return [
            Finding(
                "warn",
                f"{', '.join(proxies)} set: this credential ignores them for a loopback endpoint, but other "
                "tools may send loopback traffic through the proxy unless NO_PROXY lists localhost,127.0.0.1",
            )
        ]
    if proxies:
        return [Finding("warn", f"{', '.join(proxies)} set and the endpoint is not loopback: requests go through them")]
    return [Finding("ok", "no proxy variables set")]


def _endpoint(facts: Facts) -> list[Finding]:
    from .._protocol import describe_body

    args, choice = facts.args, facts.choice
    assert choice is not None
    facts.listening = _listening(choice.url, timeout=args.timeout)
    if not facts.listening:
        facts.problem = (
            "the legacy extension is not running here. Fix: enable the ManagedIdentityExtension on the VM "
            "(or wait for it: wait_for_endpoint=SECONDS on a booting VM)"
        )
        return [Finding("FAIL", f"nothing listens at {choice.url}")]
    findings = [Finding("ok", f"something listens at {choice.url}")]
    status, content_type, body, error = _probe(
        choice.url + ("&" if "?" in choice.url else "?") + urlencode({"resource": args.resource}),
        headers={},
        timeout=args.timeout,
    )
    if status == 400 and _json_field(body, "error") == "bad_request_102":
        facts.answers_like_extension = True
        facts.kind, facts.listener = _what_listens(choice.url, args.timeout)
        findings.append(
            Finding("ok", "it answers like the extension (a request without 'Metadata: true' gets 400 bad_request_102)")
        )
        findings.append(Finding("info" if facts.kind == "extension" else "note", f"it is {facts.listener}"))
    elif status is None:
        findings.append(Finding("warn", f"a request without 'Metadata: true' got no answer ({error})"))
    else:
        facts.answers_like_extension = False
        findings.append(
            Finding(
                "warn",
                f"a request without 'Metadata: true' got HTTP {status} with "
                f"{describe_body(content_type, body)}; the extension answers 400 bad_request_102",
            )
        )
    return findings


def _token(facts: Facts) -> list[Finding]:
    from .._credential import LegacyMsiCredential
    from .._errors import CredentialUnavailableError, TokenRequestError
    from .._protocol import fix_for

    args, choice = facts.args, facts.choice
    assert choice is not None
    if not facts.listening:
        return [Finding("skip", "not tried: nothing listens")]
    try:
        with LegacyMsiCredential(endpoint=args.endpoint, **identity_kwargs(args)) as credential:
            info = credential.get_token_info(args.resource)
    except (CredentialUnavailableError, TokenRequestError) as exc:
        if isinstance(exc, TokenRequestError) and facts.answers_like_extension is not False:
            facts.problem = "the extension refused. Fix: " + fix_for(exc.error_code)
        else:  # an error document, even, from what did not answer as the extension does is not its refusal
            facts.problem = (
                "something else is listening on the extension's port. Fix: find the program "
                f"(`ss -ltnp | grep {urlsplit(choice.url).port or 80}`) and stop it, or point the credential "
                "at the real endpoint"
            )
        return [Finding("FAIL", exc.message)]
    facts.got_token = True
    claims = decode_claims(info.token)
    tenant = f", tenant {claims['tid']}" if "tid" in claims else ""
    expires = when(info.expires_on, time.time())
    return [Finding("ok", f"token for {args.resource} ({credential.identity.describe()}), expires {expires}{tenant}")]


def _imds(facts: Facts) -> list[Finding]:
    args = facts.args
    if args.skip_imds:
        return [Finding("skip", "not probed (--skip-imds)")]
    imds = (args.imds_url or os.environ.get(ENV_IMDS_URL) or IMDS_DEFAULT_URL).rstrip("/")
    status, _, _, error = _probe(
        f"{imds}{IMDS_TOKEN_PATH}?" + urlencode({"api-version": "2018-02-01", "resource": args.resource}),
        headers={"Metadata": "true"},
        timeout=_IMDS_PROBE_TIMEOUT,
        loopback=False,
    )
    facts.imds_answers = status is not None
    if status is None:
        return [Finding("info", f"IMDS at {imds} does not answer ({error})")]
    return [
        Finding(
            "info",
            f"IMDS at {imds} answers (HTTP {status}): azure-identity's ManagedIdentityCredential works "
            "here too; DefaultAzureCredential from this package tries the legacy endpoint, then IMDS "
            f"({DOCS_DEFAULT_CREDENTIAL})",
        )
    ]


def _chain(facts: Facts) -> list[Finding]:
    """Which step of this package's DefaultAzureCredential answers here, if any."""
    from azure.core.exceptions import ClientAuthenticationError

    args = facts.args
    try:
        from azure.identity import ManagedIdentityCredential

        from .._default import DefaultAzureCredential
    except ImportError:
        return [Finding("skip", f"not tried: azure-identity is not installed ({EXTRA_HINT})")]
    resource = args.resource.rstrip("/")
    scope = resource if resource.endswith(DEFAULT_SCOPE_SUFFIX) else resource + DEFAULT_SCOPE_SUFFIX
    saved = os.environ.get("AZURE_POD_IDENTITY_AUTHORITY_HOST")
    # azure-identity logs the chain's failure as a WARNING; the lines below say it once.
    identity_logger = logging.getLogger("azure.identity")
    level = identity_logger.level
    identity_logger.setLevel(logging.ERROR)
    try:
        # azure-identity's IMDS step goes where doctor's own probe went, for this call only.
        point_azure_identity_at_imds(args.imds_url)
        client_id = getattr(args, "client_id", None)
        identity = {"managed_identity_client_id": client_id} if client_id else {}
        chain = DefaultAzureCredential(legacy_msi_endpoint=args.endpoint, **identity)
        if args.skip_imds:
            chain.credentials = tuple(c for c in chain.credentials if not isinstance(c, ManagedIdentityCredential))
        with chain:
            chain.get_token_info(scope)
    except ClientAuthenticationError as exc:
        steps = [Finding("info", line.strip()) for line in exc.message.splitlines() if line.startswith("\t")]
        return [Finding("FAIL", "no step of the chain gets a token here"), *steps]
    finally:
        identity_logger.setLevel(level)
        if saved is None:
            os.environ.pop("AZURE_POD_IDENTITY_AUTHORITY_HOST", None)
        else:
            os.environ["AZURE_POD_IDENTITY_AUTHORITY_HOST"] = saved
    facts.step = type(getattr(chain, "_successful_credential", None)).__name__
    skipped = " (IMDS not tried: --skip-imds)" if args.skip_imds else ""
    return [Finding("ok", f"{facts.step} answers: {_step_kind(facts, 'a step of the chain')}{skipped}")]


def _clients(facts: Facts) -> list[Finding]:
    """The variables azure-identity, MSAL, az and the other SDKs choose a protocol by, whether what
    they name answers (loopback only is probed), and which protocol each kind of client uses here.
    The secret (``IDENTITY_HEADER``) is never shown: only whether it is set."""
    environ = os.environ
    endpoint, header = environ.get("IDENTITY_ENDPOINT"), environ.get("IDENTITY_HEADER")
    msi, authority = environ.get("MSI_ENDPOINT"), environ.get("AZURE_POD_IDENTITY_AUTHORITY_HOST")
    findings = [
        Finding("info", f"IDENTITY_ENDPOINT: {endpoint or 'not set'}"),
        Finding("info", f"IDENTITY_HEADER: {'set (not shown)' if header else 'not set'}"),
        Finding("info", f"MSI_ENDPOINT: {msi or 'not set'}{' (with MSI_SECRET)' if environ.get('MSI_SECRET') else ''}"),
        Finding("info", f"AZURE_POD_IDENTITY_AUTHORITY_HOST: {authority or 'not set'}"),
    ]
    timeout = facts.args.timeout
    if endpoint and header:
        findings.extend(_answers_there("IDENTITY_ENDPOINT", endpoint, timeout))
        findings.append(Finding("info", "every current client (azure-identity, MSAL, az, Go, .NET, Java, Node) uses "
                                "App Service's protocol at IDENTITY_ENDPOINT"))  # fmt: skip
        return findings
    if endpoint:
        findings.append(Finding("warn", "IDENTITY_ENDPOINT is set without IDENTITY_HEADER: clients ignore it"))
    if msi:
        findings.append(Finding("info", "clients use MSI_ENDPOINT (Azure ML with MSI_SECRET, else Cloud Shell); "
                                "msal Python and az ignore MSI_ENDPOINT alone"))  # fmt: skip
    if authority:
        findings.extend(_answers_there("AZURE_POD_IDENTITY_AUTHORITY_HOST", authority, timeout))
        findings.append(Finding("info", "azure-identity, MSAL, az, .NET, Java and Node use IMDS's protocol at "
                                "AZURE_POD_IDENTITY_AUTHORITY_HOST; Go (azidentity, azcopy, kubelogin) asks "
                                "169.254.169.254 (legacy-msi adapt's IDENTITY_ENDPOINT reaches it)"))  # fmt: skip
    else:
        findings.append(Finding("info", "clients ask IMDS at 169.254.169.254 (or this package's credential, "
                                "the legacy extension)"))  # fmt: skip
    return findings


def _answers_there(name: str, url: str, timeout: float) -> list[Finding]:
    """Whether what ``url`` names answers, and what it is (loopback only is probed)."""
    host = urlsplit(url).hostname or ""
    if not is_loopback_host(host):
        return [Finding("info", f"{name} is not on loopback: not probed")]
    if not _listening(url, timeout=timeout):
        return [
            Finding(
                "warn",
                f"nothing listens at {name} ({url}): azure-identity's DefaultAzureCredential stops there after "
                "about 5 s instead of trying its next credential. Fix: start legacy-msi adapt, or unset the variable",
            )
        ]
    parts = urlsplit(url)
    kind, listener = _what_listens(f"{parts.scheme}://{parts.netloc}{TOKEN_PATH}", timeout)
    return [Finding("ok", f"{name} answers: it is {listener if kind != 'extension' else 'not this package'}")]


def _step_kind(facts: Facts, otherwise: str) -> str:
    """What the chain's successful step is on this machine: for the legacy step, what the
    endpoint check found answering (the extension, the emulator or a bridge)."""
    if facts.step == "LegacyMsiCredential" and facts.listening:
        return facts.listener
    return _STEP_KINDS.get(facts.step or "", otherwise)


#: The checks, in the order they run and print.
CHECKS: list[tuple[str, Callable[[Facts], list[Finding]]]] = [
    ("Where the endpoint comes from, in order", _where),
    ("Proxies", _proxies),
    ("The endpoint", _endpoint),
    ("A token", _token),
    ("IMDS", _imds),
    ("What today's clients read (IDENTITY_ENDPOINT, MSI_ENDPOINT, AZURE_POD_IDENTITY_AUTHORITY_HOST)", _clients),
    ("DefaultAzureCredential (azure-identity's chain with the legacy step)", _chain),
]


def verdict(facts: Facts) -> tuple[str, int]:
    """What the findings add up to, and the exit status (0 when a token can be had here)."""
    if facts.final is not None:
        return facts.final, 1
    if facts.got_token:
        origin = {
            "emulator": "from this package's emulator: test tokens that no Azure service accepts",
            "bridge": "from a legacy-msi serve bridge",
        }.get(facts.kind, "from the legacy managed identity extension")
        return f"healthy: LegacyMsiCredential gets tokens on this machine, {origin}", 0
    if facts.step is not None:
        return (
            f"LegacyMsiCredential gets no token here, but DefaultAzureCredential from this package does, "
            f"from {facts.step} ({_step_kind(facts, 'another step of the chain')}). Use it: "
            "`from legacy_msi_credential import DefaultAzureCredential`",
            0,
        )
    if not facts.listening and facts.imds_answers is False:
        return (
            "neither the legacy extension nor IMDS answers: this is not an Azure VM with a managed identity "
            "(a developer's machine or a CI runner?). Fix: on a VM, enable a managed identity (or the "
            "ManagedIdentityExtension on an old VM); elsewhere sign in with `az login`, or set AZURE_CLIENT_ID, "
            "AZURE_TENANT_ID and AZURE_CLIENT_SECRET for a service principal",
            1,
        )
    if not facts.listening and facts.imds_answers:
        return (
            "the legacy extension is not running here, but IMDS answers: use DefaultAzureCredential from this "
            "package (or azure-identity's ManagedIdentityCredential), which gets tokens from IMDS",
            1,
        )
    return facts.problem, 1


def render(out: TextIO, title: str, findings: list[Finding]) -> None:
    """Print one section of the diagnosis."""
    out.write(f"\n{title}:\n")
    for finding in findings:
        status = " ok " if finding.status == "ok" else finding.status
        out.write(f"[{status:^4}] {printable(finding.text)}\n")
    out.flush()


def run(args: argparse.Namespace, out: TextIO) -> int:
    facts = Facts(args)
    out.write(f"legacy-msi doctor {VERSION}\n")
    for title, check in CHECKS:
        render(out, title, check(facts))
        if facts.final is not None:
            break
    text, status = verdict(facts)
    out.write(f"\nVerdict: {printable(text)}.\n")
    return status


# --- probes --------------------------------------------------------------------------------


def _probe(
    url: str, *, headers: dict[str, str], timeout: float, loopback: bool = True
) -> tuple[Optional[int], str, bytes, str]:
    """One raw GET, no proxies, no retries: (status, content type, first bytes, error).

    With ``loopback``, a plain-http connection is made only to a loopback peer, as the
    credential's are.
    """
    from .._guard import new_guarded_session

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
    if role == "adapter":
        return (
            "adapter",
            "a legacy-msi adapt adapter (today's protocols, not the legacy one: point clients at it by variables)",
        )
    return "extension", "the legacy managed identity extension"


def _json_field(body: bytes, name: str) -> Optional[str]:
    try:
        document = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    value = document.get(name) if isinstance(document, dict) else None
    return value if isinstance(value, str) else None


def _listening(url: str, *, timeout: float) -> bool:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "localhost", port), timeout=timeout):
            return True
    except OSError:
        return False


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
