"""The client's defaults, and the names and limits the servers share with it, each with its
unit and where it comes from.

What the credentials, their cache, retries and settings default to is here. A limit that
belongs to one server is written once beside it instead: the bridge's in ``bridge/`` (its
limits records), the emulator's in ``emulator/``, the doctor's probe timeouts in
``cli/_doctor``, the netlink query's in ``_owner``, the port tries in ``_binding``.
"""

from __future__ import annotations

# --- Where the extension listens -------------------------------------------------------

#: Port the extension's ``{"port": 50342}`` setting defaults to.
DEFAULT_PORT = 50342
#: The port ``legacy-msi adapt`` serves today's protocols on (packaging/legacy-msi-adapt.socket holds it).
DEFAULT_ADAPT_PORT = 50343
#: Path of the token service; the settings file holds only the base URL.
TOKEN_PATH = "/oauth2/token"
#: What the extension's documentation and C# sample call.
DEFAULT_ENDPOINT = f"http://localhost:{DEFAULT_PORT}{TOKEN_PATH}"
#: Path IMDS serves tokens on (the emulator answers it too, for side-by-side comparisons).
IMDS_TOKEN_PATH = "/metadata/identity/oauth2/token"
#: Where a service manager asks whether this package's emulator or bridge is up (no ``Metadata`` header).
HEALTH_PATH = "/healthz"
#: Where IMDS listens on every Azure VM; only the CLI's diagnostics look at it, and they
#: take the address from ``LEGACY_MSI_IMDS_URL`` first.
IMDS_DEFAULT_URL = "http://169.254.169.254"

#: The extension's "service url discovery document" on Linux (waagent writes it).
LINUX_SETTINGS_FILE = "/var/lib/waagent/ManagedIdentity-Settings"
#: The same document on Windows, below ``%SystemDrive%``.
WINDOWS_SETTINGS_FILE = r"WindowsAzure\Config\ManagedIdentity-Settings"
#: A settings file is a few dozen bytes; anything larger is not the extension's.
SETTINGS_FILE_MAX_BYTES = 64 * 1024  # 64 KiB
#: The settings file's permission bits when this package writes it: every local user's
#: credential reads it, and it holds only a URL.
SETTINGS_FILE_MODE = 0o644

# --- Environment variables -------------------------------------------------------------

ENV_ENDPOINT = "LEGACY_MSI_ENDPOINT"
ENV_SETTINGS_FILE = "LEGACY_MSI_SETTINGS_FILE"
#: Azure Cloud Shell announces the same protocol here, without ``MSI_SECRET``.
ENV_MSI_ENDPOINT = "MSI_ENDPOINT"
#: With ``MSI_SECRET`` set, ``MSI_ENDPOINT`` is App Service's different protocol.
ENV_MSI_SECRET = "MSI_SECRET"
ENV_IMDS_URL = "LEGACY_MSI_IMDS_URL"

#: How to install what ``DefaultAzureCredential`` and ``legacy-msi serve`` need.
EXTRA_HINT = 'pip install ".[identity]" in a clone of legacy-msi-credential (not published yet)'
#: What ``legacy-msi serve`` needs: azure-identity and aiohttp.
SERVE_HINT = 'pip install ".[serve]" in a clone of legacy-msi-credential (not published yet)'


# --- The protocol's parameters ---------------------------------------------------------

#: The parameters that choose a user-assigned identity, as this package sends them.
IDENTITY_PARAMETERS = ("client_id", "object_id", "msi_res_id")
#: @azure/ms-rest-nodeauth's name for ``msi_res_id`` (IMDS's own); the servers accept it too.
IDENTITY_ALIASES = {"mi_res_id": "msi_res_id"}
#: What ``/.default`` scopes end in; the resource is the rest.
DEFAULT_SCOPE_SUFFIX = "/.default"

# --- Timeouts --------------------------------------------------------------------------

#: Connecting over loopback either succeeds or is refused at once; 1 s covers a loaded VM.
CONNECTION_TIMEOUT = 1.0  # s
#: The extension asks Azure AD before answering a cold request: allow a few seconds.
READ_TIMEOUT = 10.0  # s
#: A whole response must arrive within this, however slowly it trickles in.
RESPONSE_DEADLINE = 15.0  # s
#: A token response is a few KiB; a larger body is refused without being read whole.
MAX_RESPONSE_BYTES = 256 * 1024  # 256 KiB

#: The longest any setting in seconds may be (a timeout, a wait, a backoff).
MAX_SECONDS = 86400  # s, one day

# --- Retries ---------------------------------------------------------------------------

#: Attempts in all, the first one included (IMDS guidance: about 5).
MAX_ATTEMPTS = 5
#: Total time waited between attempts for one token request.
RETRY_TOTAL_WAIT = 20.0  # s
#: IMDS guidance: keep retrying 410 for about 70 s while the service is being updated.
RETRY_GONE_TOTAL_WAIT = 70.0  # s
#: First backoff; doubled each attempt, then jittered down by up to half.
RETRY_BACKOFF_BASE = 0.5  # s
#: First backoff for 410, so that four waits fill ``RETRY_GONE_TOTAL_WAIT``.
RETRY_GONE_BACKOFF_BASE = 5.0  # s
#: The extension's guidance: wait at least 1 s before retrying a 5xx, or Azure AD may throttle.
RETRY_SERVER_ERROR_MIN_DELAY = 1.0  # s
#: A single ``Retry-After`` is honoured up to this; larger values are clamped.
RETRY_AFTER_MAX = 10.0  # s
#: A wait shorter than this is not worth another attempt.
RETRY_MIN_USEFUL_DELAY = 0.05  # s
#: Statuses worth another attempt: IMDS guidance (404, 410, 429) and every 5xx.
RETRYABLE_STATUSES = frozenset([404, 410, 429, *range(500, 600)])
#: While waiting for a booting extension (``wait_for_endpoint``), connection attempts are
#: spaced by a doubling delay capped here.
ENDPOINT_WAIT_MAX_DELAY = 5.0  # s

# --- Token cache -----------------------------------------------------------------------

#: Tokens living at least this long are refreshed at half their life...
REFRESH_HALF_LIFE_THRESHOLD = 2 * 60 * 60  # 2 h
#: ...shorter ones this long before they expire (azure-core's policy uses the same margin).
REFRESH_BEFORE_EXPIRY = 5 * 60  # 5 min
#: A token is never refreshed sooner than this after it arrived (short-lived tokens from a
#: caching extension would otherwise be refreshed on every call).
REFRESH_MIN_INTERVAL = 30  # s
#: However long a token claims to live, it is refreshed at least this often.
REFRESH_MAX_INTERVAL = 12 * 60 * 60  # 12 h
#: After a failed proactive refresh, the valid token is served this long before trying again.
REFRESH_RETRY_DELAY = 30  # s
#: A token this close to its expiry counts as expired: it could lapse in flight.
EXPIRY_MARGIN = 10  # s
#: Latest expiry accepted from a response (9999-12-31T23:59:59Z); later values are garbage.
MAX_EPOCH_SECONDS = 253402300799  # s
#: Scopes tuples remembered by a credential's fast path before its table starts again empty
#: (a credential's clients use a few resources; a caller cycling through many costs a
#: slow-path lookup each, never memory).
FAST_TABLE_MAX = 256
#: Keys whose last request's outcome single flight remembers (a credential has a few; the
#: bridge's source one per identity and resource).
MAX_FLIGHT_OUTCOMES = 4096
#: Largest token whose claims are read: an Azure AD token is a few KiB.
MAX_TOKEN_BYTES = 64 * 1024  # 64 KiB

# --- The emulator and the bridge (defaults the CLI shows too) -------------------------

#: The emulator's token lifetime: the documented sample's ``expires_in``.
EMULATOR_LIFETIME = 3599  # s
#: Where ``legacy-msi serve`` gets its tokens: IMDS, the Azure CLI, azure-identity's chain.
BRIDGE_SOURCES = ("imds", "cli", "default")
