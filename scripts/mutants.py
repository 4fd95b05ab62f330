"""Plant bugs one at a time in the security-relevant modules and see whether the suite notices.

    .venv/bin/python scripts/mutants.py             # every mutant (about 18 minutes on 2 cores)
    .venv/bin/python scripts/mutants.py -k bridge   # those whose name contains "bridge"

Each mutant is a realistic bug that breaks one promise the README or the guide makes (a
remote client served, identities sharing a cache entry, a short token left unredacted...),
written as an exact replacement in one module. For each, a scratch checkout of ``HEAD``
(``git worktree``) gets the change, and the tests that cover that module run against it
(``-x``, stopping at the first failure). A mutant is *caught* when they fail, *survives*
when they pass; the script first checks that they pass without any change, and that each
replacement applies exactly once, so that a mutant that no longer applies is an error
rather than a silent pass. The score and the survivors (each killed by a test or
explained as equivalent in ``docs/reliability.md``) are printed at the end; exit status 1
when a mutant survives that is not listed as equivalent.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutant:
    name: str
    module: str
    old: str
    new: str
    promise: str
    tests: tuple[str, ...]
    #: Why it cannot be caught, for a mutant that changes no behaviour anyone can see.
    equivalent: str = ""


BRIDGE_TESTS = ("tests/test_bridge_service.py", "tests/test_bridge.py", "tests/test_emulator.py")
CLAIMS_TESTS = ("tests/test_claims_and_flight.py", "tests/test_bridge_service.py", "tests/test_guarantees.py")
WIRE_TESTS = ("tests/test_endpoint.py", "tests/test_credential.py", "tests/test_loopback_namespace.py")
TEXT_TESTS = ("tests/test_small_parts.py", "tests/test_hostile.py")
CHAIN_TESTS = ("tests/test_default_chain.py",)
CORNER_TESTS = ("tests/test_corners.py",)
ADAPT_TESTS = ("tests/test_adapt.py",)
FAIRNESS_TESTS = ("tests/test_fairness.py",)
BINDING_TESTS = ("tests/test_binding.py",)
SAFE_FILE_TESTS = ("tests/test_safe_file.py",)

MUTANTS = [
    # --- the protocol's rules (_server): what the bridge and the emulator refuse ---------------
    Mutant(
        "rules: a client not on loopback is served",
        "legacy_msi_credential/_server/_rules.py",
        "    if not request.peer_is_loopback:\n",
        "    if False:\n",
        "only loopback clients, even with --allow-remote",
        BRIDGE_TESTS,
    ),
    Mutant(
        "rules: Sec-Fetch-Site passes",
        "legacy_msi_credential/_server/_rules.py",
        '("origin", "sec-fetch-site", "sec-fetch-dest", "sec-fetch-user")',
        '("origin", "sec-fetch-dest", "sec-fetch-user")',
        "requests carrying Sec-Fetch-Site (as Origin, -Dest, -User) are refused",
        BRIDGE_TESTS,
    ),
    Mutant(
        "rules: any Host passes",
        "legacy_msi_credential/_server/_rules.py",
        "    return match is not None and is_loopback_host(match.group(1))\n",
        "    return match is not None\n",
        "Host must name localhost, 127.0.0.1 or [::1] (DNS rebinding)",
        BRIDGE_TESTS,
    ),
    Mutant(
        "rules: any Metadata value passes",
        "legacy_msi_credential/_server/_legacy.py",
        '    if request.header("Metadata") != "true":\n',
        '    if request.header("Metadata") is None:\n',
        "Metadata: true, else 400 bad_request_102",
        BRIDGE_TESTS,
    ),
    Mutant(
        "rules: a parameter given twice passes",
        "legacy_msi_credential/_server/_rules.py",
        "if len(values) > 1)",
        "if len(values) > 2)",
        "a repeated parameter is refused, never read one way here and another there",
        BRIDGE_TESTS,
    ),
    Mutant(
        "rules: a parameter not ending in id passes",
        "legacy_msi_credential/_server/_legacy.py",
        "if name not in IDENTITY_NAMES and name not in TOLERATED_PARAMETERS)",
        'if name not in IDENTITY_NAMES and name not in TOLERATED_PARAMETERS and name.endswith("id"))',
        "a parameter that is not an accepted one, exactly, is a 400, never the system-assigned identity",
        BRIDGE_TESTS,
    ),
    Mutant(
        "rules: X-Forwarded-For passes",
        "legacy_msi_credential/_server/_rules.py",
        "        if lowered in RELAY_HEADERS or lowered.startswith(RELAY_HEADER_PREFIXES):",
        "        if lowered in RELAY_HEADERS:",
        "X-Forwarded-For and every other relaying header are refused",
        BRIDGE_TESTS,
    ),
    Mutant(
        "rules: Via passes",
        "legacy_msi_credential/_server/_rules.py",
        '        "via",\n',
        "",
        "a request relayed by a proxy is refused, whichever header says so",
        BRIDGE_TESTS,
    ),
    Mutant(
        "bridge: the health path answered before the rule",
        "legacy_msi_credential/bridge/_app.py",
        "        refused = first_refusal(ADMIT, facts, self.policy)  # every path, first",
        "        refused = None if request.rel_url.path == HEALTH_PATH else first_refusal(ADMIT, facts, self.policy)",
        "the health path obeys the Host, browser and relay rules of the token path",
        BRIDGE_TESTS,
    ),
    Mutant(
        "bridge: a blocking notification",
        "legacy_msi_credential/bridge/_notify.py",
        "socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK",
        "socket.SOCK_CLOEXEC",
        "the serving loop never waits on systemd's socket",
        BRIDGE_TESTS,
    ),
    # --- whose token it is (_claims) -----------------------------------------------------------
    Mutant(
        "claims: another identity's token accepted",
        "legacy_msi_credential/_claims.py",
        "        if claimed is not None and not _same(value, claimed, parameter):",
        "        if claimed is not None and False:",
        "never a token for another identity than the one asked for",
        CLAIMS_TESTS,
    ),
    Mutant(
        "claims: azp ignored",
        "legacy_msi_credential/_claims.py",
        'claims.get("appid") is None and claims.get("azp") is not None',
        "False",
        "v2 tokens name the client in azp",
        CLAIMS_TESTS,
    ),
    Mutant(
        "claims: a token without the claim served by the bridge",
        "legacy_msi_credential/_claims.py",
        "    claimed = claims.get(claim)\n    if claimed is None:\n",
        "    claimed = claims.get(claim)\n    if False:\n",
        "the bridge serves a user-assigned identity only when the token names it",
        CLAIMS_TESTS,
    ),
    Mutant(
        "claims: a user token with scp counts as an identity's",
        "legacy_msi_credential/_claims.py",
        '    "scp",\n    "upn",\n',
        '    "upn",\n',
        "a managed identity request never gets a signed-in user's token",
        CLAIMS_TESTS,
    ),
    Mutant(
        "claims: a token that is not a JWT counts as app-only",
        "legacy_msi_credential/_claims.py",
        """        return "a token that is not a JWT, whose claims cannot show it is a managed identity's"\n""",
        "        return None\n",
        "a token whose claims cannot be read never answers a managed identity request",
        CLAIMS_TESTS,
    ),
    Mutant(
        "claims: a user's pairwise sub passes",
        "legacy_msi_credential/_claims.py",
        "oid.strip().lower() != sub.strip().lower()",
        "False",
        "an app-only token's sub is its oid",
        CLAIMS_TESTS,
    ),
    # --- loopback, decided on names and on the wire (_endpoint, _guard) -------------------------
    Mutant(
        "loopback: localhost. counts as loopback",
        "legacy_msi_credential/_loopback.py",
        '    if host.lower() == "localhost":\n',
        '    if host.lower().rstrip(".") == "localhost":\n',
        "names that go through DNS (localhost.) are not loopback",
        WIRE_TESTS,
    ),
    Mutant(
        "loopback: a private peer counts as loopback",
        "legacy_msi_credential/_loopback.py",
        "    return bool(ip.is_loopback)\n",
        "    return bool(ip.is_loopback or ip.is_private)\n",
        "plain http reaches only a loopback peer, checked on the connected socket",
        WIRE_TESTS,
    ),
    Mutant(
        "loopback: any peer address counts as loopback",
        "legacy_msi_credential/_loopback.py",
        "        return is_loopback_address(peer[0])\n",
        "        return True\n",
        "plain http reaches only a loopback peer, checked on the connected socket",
        WIRE_TESTS,
    ),
    Mutant(
        "guard: a shared transport weakened by another credential's settings",
        "legacy_msi_credential/_guard.py",
        "require_loopback = require_loopback or any(",
        "require_loopback = require_loopback or 0 and any(",
        "plain http reaches only a loopback peer, whatever other credentials share the transport",
        WIRE_TESTS,
    ),
    Mutant(
        "endpoint: a dangling symbolic link taken for a missing settings file",
        "legacy_msi_credential/_endpoint.py",
        "        info = os.lstat(path)\n",
        "        info = os.stat(path)\n",
        "a settings file that exists but is unusable (a symbolic link) makes chains move on, loudly",
        WIRE_TESTS,
    ),
    Mutant(
        "endpoint: the symbolic link check left to a later layer",
        "legacy_msi_credential/_endpoint.py",
        "    if stat.S_ISLNK(info.st_mode):\n",
        "    if False:\n",
        "a settings file behind a symbolic link is refused, saying so",
        WIRE_TESTS,
    ),
    Mutant(
        "pipeline: the proxies keyword used for plain http to loopback",
        "legacy_msi_credential/_policies.py",
        '        if self._require_loopback and request.http_request.url.lower().startswith("http://"):\n',
        "        if False:\n",
        "proxies are never used for plain http to loopback",
        WIRE_TESTS,
    ),
    Mutant(
        "retry: timeout silently accepted",
        "legacy_msi_credential/_retry.py",
        '    "retry_on_methods",\n    "timeout",\n',
        '    "retry_on_methods",\n',
        "azure-core's other retry keywords are refused by name, and the guide names each",
        (*TEXT_TESTS, "tests/e2e/test_docs.py"),
    ),
    # --- redaction (_redact) ------------------------------------------------------------------
    Mutant(
        "text: a short token left in messages",
        "legacy_msi_credential/_redact.py",
        "{20,}",
        "{40,}",
        "no token in a message, whatever its shape",
        TEXT_TESTS,
    ),
    Mutant(
        "text: only a JWT's header redacted",
        "legacy_msi_credential/_redact.py",
        r'_JWT_LIKE = re.compile(r"eyJ[A-Za-z0-9_\-]*(?:\.[A-Za-z0-9_\-]*)*")',
        r'_JWT_LIKE = re.compile(r"eyJ[A-Za-z0-9_\-]*")',
        "no part of a token in a message",
        TEXT_TESTS,
    ),
    # --- the bridge's source (bridge/_source, _flight) -----------------------------------------
    Mutant(
        "bridge: the cache key leaves out the identity",
        "legacy_msi_credential/bridge/_source.py",
        "key = f\"{ask.parameter or ''}\\x00{ask.value or ''}\\x00{ask.resource}\"",
        "key = f\"{ask.parameter or ''}\\x00{ask.resource}\"",
        "identities never bleed into each other through the cache",
        BRIDGE_TESTS,
    ),
    Mutant(
        "bridge: the app-only check only for system-assigned requests",
        "legacy_msi_credential/bridge/_source.py",
        'why = None if self.kind == "cli" else not_app_only(claims)',
        'why = None if self.kind == "cli" or ask.parameter else not_app_only(claims)',
        "a user token never answers a managed identity request, whatever the identity parameter",
        BRIDGE_TESTS,
    ),
    Mutant(
        "bridge: the identity check skipped",
        "legacy_msi_credential/bridge/_source.py",
        "wrong = lacks_identity(ask.parameter, ask.value, claims)",
        "wrong = None",
        "only the identity asked for",
        BRIDGE_TESTS,
    ),
    Mutant(
        "flight: no single flight",
        "legacy_msi_credential/_server/_flights.py",
        "        running = self._running.get(key)\n",
        "        running = None\n",
        "one source request per identity and resource, however many clients ask",
        (*BRIDGE_TESTS, "tests/test_claims_and_flight.py"),
    ),
    Mutant(
        "flight: a waiter does not share the failure it waited for",
        "legacy_msi_credential/_flight.py",
        "        if count != ticket.seen and failure is not None:\n",
        "        if False:\n",
        "callers share a failure as they share a success",
        ("tests/test_claims_and_flight.py", "tests/test_concurrency.py", "tests/test_hostile.py"),
    ),
    Mutant(
        "flight: a failed refresh drops the valid token",
        "legacy_msi_credential/_flight.py",
        "        entry = ticket.refreshing\n",
        "        entry = None\n",
        "a failed proactive refresh serves the still-valid token",
        ("tests/test_claims_and_flight.py", "tests/test_cache_and_retry.py", "tests/test_credential.py"),
    ),
    Mutant(
        "flight: a caller holding a valid token waits for the refresh",
        "legacy_msi_credential/_flight.py",
        "                    ticket.action = Action.SERVE  # another caller replaces it: serve it, never wait\n",
        "                    pass\n",
        "one holding a valid token never waits for another's refresh, in both credentials and the bridge",
        ("tests/test_claims_and_flight.py", "tests/test_concurrency.py", *BRIDGE_TESTS),
    ),
    Mutant(
        "attempt: an answer the watchdog cut short is accepted",
        "legacy_msi_credential/_policies.py",
        "            raise self.too_slow()  # the watchdog cut the answer short\n",
        "            pass\n",
        "every call is bounded in time: response_timeout covers the whole answer",
        ("tests/test_hostile.py", "tests/test_credential.py"),
    ),
    Mutant(
        "errors: azure-identity's class only when it was imported first",
        "legacy_msi_credential/_errors.py",
        '                        module = importlib.import_module("azure.identity")\n',
        "                        module = None\n",
        "azure-identity's chains recognise the error whatever was imported first",
        ("tests/test_azure_integration.py", "tests/test_hostile.py"),
    ),
    # --- the emulator's identities -------------------------------------------------------------
    Mutant(
        "emulator: an unknown object_id or msi_res_id gets a token",
        "legacy_msi_credential/emulator/__init__.py",
        "matches = [i for i in self.user_assigned if getattr(i, parameter) == value]",
        'matches = [i for i in self.user_assigned if parameter != "client_id" or getattr(i, parameter) == value]',
        "the emulator never hands out an identity that was not asked for",
        ("tests/test_emulator.py", "tests/test_emulator_fidelity.py"),
    ),
    Mutant(
        "emulator: a form judged on what has arrived",
        "legacy_msi_credential/emulator/__init__.py",
        "        body = self.rfile.read(int(length))\n",
        "        body = self.rfile.read1(int(length))\n",
        "a request is judged on its whole body, never on its first segment",
        ("tests/test_emulator.py", "tests/test_emulator_fidelity.py"),
    ),
    Mutant(
        "bridge: a form judged on what has arrived",
        "legacy_msi_credential/bridge/_app.py",
        "            facts = replace(facts, body=await self._read_body(request))\n",
        "            facts = replace(facts, body=await request.content.read(self.limits.max_body + 1))\n",
        "a request is judged on its whole body, never on its first segment",
        BRIDGE_TESTS,
    ),
    # --- the drop-in (_chain) ------------------------------------------------------------------
    Mutant(
        "chain: identity_config does not reach the legacy step",
        "legacy_msi_credential/_chain.py",
        "        if self.identity:\n            options.update(self.identity)\n",
        "        if False:\n            options.update(self.identity)\n",
        "the legacy step asks for the identity azure-identity's managed identity step gets",
        CHAIN_TESTS,
    ),
    Mutant(
        "chain: the caller's transport does not reach the legacy step",
        "legacy_msi_credential/_chain.py",
        'PIPELINE_KEYWORDS = ("transport", "logging_enable", "user_agent", "headers", "proxies")',
        'PIPELINE_KEYWORDS = ("logging_enable", "user_agent", "headers", "proxies")',
        "a caller's transport is never bypassed",
        CHAIN_TESTS,
    ),
    Mutant(
        "chain: managed_identity_client_id taken from azure-identity",
        "legacy_msi_credential/_chain.py",
        '            client_id = kwargs["managed_identity_client_id"]\n',
        '            client_id = kwargs.pop("managed_identity_client_id")\n',
        "managed_identity_client_id still reaches azure-identity's own managed identity step",
        CHAIN_TESTS,
    ),
    Mutant(
        "chain: the legacy step after managed identity",
        "legacy_msi_credential/_chain.py",
        "            return (*credentials[:index], step, *credentials[index:])",
        "            return (*credentials[: index + 1], step, *credentials[index + 1 :])",
        "the legacy step runs right before ManagedIdentityCredential",
        CHAIN_TESTS,
    ),
    Mutant(
        "chain: managed_identity_client_id ignored by the legacy step",
        "legacy_msi_credential/_chain.py",
        '            client_id = kwargs["managed_identity_client_id"]\n',
        "            client_id = None\n",
        "managed_identity_client_id selects the identity, for the legacy step too",
        CHAIN_TESTS,
    ),
    # --- corners: a caller's transport, secrets, keywords, the servers' edges, the CLI, the chain -
    Mutant(
        "guard: a caller's session.proxies used for plain http to loopback",
        "legacy_msi_credential/_guard.py",
        '        if self.require_loopback and str(request.url).lower().startswith("http://"):\n',
        "        if False:\n",
        "proxies are never used for plain http to loopback, a caller's own session's included",
        CORNER_TESTS,
    ),
    Mutant(
        "protocol: a short secret repeated in error_description shown",
        "legacy_msi_credential/_protocol.py",
        "        if isinstance(secret, str) and len(secret) >= 4:\n",
        "        if isinstance(secret, str) and len(secret) >= 20:\n",
        "no secret of the answer in a message, whatever its shape",
        CORNER_TESTS,
    ),
    Mutant(
        "retry: timeout accepted where the credential is built",
        "legacy_msi_credential/_retry.py",
        "            if name in kwargs:\n",
        '            if name in kwargs and name.startswith("retry_"):\n',
        "timeout= and the other refused keywords raise a ValueError at construction, by name",
        CORNER_TESTS,
    ),
    Mutant(
        "chain: the async stand-in for an unusable legacy step cannot be closed",
        "legacy_msi_credential/_chain.py",
        "    async def close(self) -> None:  # type: ignore[override]\n        return None\n\n",
        "",
        "the async drop-in opens and closes as azure-identity's, whatever its legacy step",
        CORNER_TESTS,
    ),
    Mutant(
        "emulator: a client not on loopback is served",
        "legacy_msi_credential/emulator/__init__.py",
        "            self.command, self.path, tuple(self.headers.items()), "
        "is_loopback_address(self.client_address[0]), params\n",
        "            self.command, self.path, tuple(self.headers.items()), True, params\n",
        "only loopback clients, even with allow_remote",
        CORNER_TESTS,
    ),
    Mutant(
        "emulator: the health path answered to a client not on loopback",
        "legacy_msi_credential/emulator/__init__.py",
        "            refused = admit(self._facts({}), emulator._policy)\n",
        "            refused = None\n",
        "every path obeys the one rule: loopback clients only",
        CORNER_TESTS,
    ),
    Mutant(
        "bridge: a displaced connection left open",
        "legacy_msi_credential/bridge/_app.py",
        "    def close(self) -> None:\n        self._ended = True\n        self.disarm()\n"
        "        if self.transport is not None:\n            self.transport.abort()\n",
        "    def close(self) -> None:\n        self._ended = True\n        self.disarm()\n"
        "        if self.transport is not None:\n            self.transport.pause_reading()\n",
        "a connection the bridge lets go is closed, its descriptor and its place freed",
        CORNER_TESTS,
    ),
    Mutant(
        "bridge: the client deadline runs on while the source answers",
        "legacy_msi_credential/bridge/_app.py",
        "            connection.disarm()  # the request is in: what remains is the source's time\n",
        "            pass\n",
        "the client deadline is for receiving the request; a slower source still answers",
        CORNER_TESTS,
    ),
    Mutant(
        "rules: an alias pair counted as one identity parameter",
        "legacy_msi_credential/_server/_legacy.py",
        "    if len(_identity_names(request)) > 1:\n",
        "    if len({IDENTITY_ALIASES.get(name, name) for name in _identity_names(request)}) > 1:\n",
        "one identity parameter, never one of two read and the other ignored",
        CORNER_TESTS,
    ),
    Mutant(
        "rules: an identity parameter in another case passes",
        "legacy_msi_credential/_server/_legacy.py",
        "if name not in IDENTITY_NAMES and name not in TOLERATED_PARAMETERS)",
        "if name.lower() not in IDENTITY_NAMES and name not in TOLERATED_PARAMETERS)",
        "Client_ID is refused, never read as a request for the system-assigned identity",
        CORNER_TESTS,
    ),
    Mutant(
        "rules: a 405 in POST-only mode allows GET",
        "legacy_msi_credential/_server/_legacy.py",
        'allowed = "GET, POST" if policy.accept_get else "POST"',
        'allowed = "GET, POST"',
        "a 405's Allow header names what this server allows",
        CORNER_TESTS,
    ),
    Mutant(
        "cache: the token stored first let go, not the one used least recently",
        "legacy_msi_credential/_cache.py",
        "        if user in holders:\n            held.move_to_end(key)\n            return\n",
        "        if user in holders:\n            return\n",
        "a full cache lets go of the token used least recently",
        CORNER_TESTS,
    ),
    Mutant(
        "gate: a bucket fills past its capacity while idle",
        "legacy_msi_credential/_server/_flights.py",
        "        self._tokens = min(self._capacity, self._tokens + (now - self._last) * self._rate)\n",
        "        self._tokens = self._tokens + (now - self._last) * self._rate\n",
        "at most rate starts a second, however long the source was idle",
        CORNER_TESTS,
    ),
    Mutant(
        "notify: an error other than a full queue raised",
        "legacy_msi_credential/bridge/_notify.py",
        "        except OSError as exc:\n",
        "        except BlockingIOError as exc:\n",
        "systemd's socket never stops the serving loop: each failure is said, none raised",
        CORNER_TESTS,
    ),
    Mutant(
        "cli: --source-timeout does not reach the source",
        "legacy_msi_credential/cli/_serve.py",
        "source = TokenSource(args.source, timeout=args.source_timeout)",
        "source = TokenSource(args.source)",
        "each serve flag configures what it names",
        CORNER_TESTS,
    ),
    Mutant(
        "doctor: any 400 taken for the extension's",
        "legacy_msi_credential/cli/_doctor.py",
        'if status == 400 and _json_field(body, "error") == "bad_request_102":',
        "if status == 400:",
        "the doctor names what listens by what it answers: only the extension answers 400 bad_request_102",
        CORNER_TESTS,
    ),
    Mutant(
        "doctor: --skip-imds leaves IMDS in the chain",
        "legacy_msi_credential/cli/_doctor.py",
        "        if args.skip_imds:\n            chain.credentials",
        "        if False:\n            chain.credentials",
        "--skip-imds sends nothing to IMDS",
        CORNER_TESTS,
    ),
    Mutant(
        "rules: bare ::1 unbracketed in the settings document",
        "legacy_msi_credential/_server/_legacy.py",
        """    bracketed = f"[{host.strip('[]')}]" if ":" in host else host\n""",
        "    bracketed = host\n",
        "the settings file a server writes is one a credential reads, for every listening form",
        CORNER_TESTS,
    ),
    Mutant(
        "rules: the unspecified address in the settings document",
        "legacy_msi_credential/_server/_legacy.py",
        '        return ipaddress.ip_address(host.strip("[]")).is_unspecified\n',
        "        return False\n",
        "the settings file a server writes is one a credential reads, for every listening form",
        CORNER_TESTS,
    ),
    Mutant(
        "chain: the caller's pipeline keywords taken from azure-identity",
        "legacy_msi_credential/_chain.py",
        "pipeline=tuple((name, kwargs[name]) for name in PIPELINE_KEYWORDS if name in kwargs),",
        "pipeline=tuple((name, kwargs.pop(name)) for name in PIPELINE_KEYWORDS if name in kwargs),",
        "the caller's transport and pipeline keywords reach azure-identity's steps too",
        CORNER_TESTS,
    ),
    # --- legacy-msi adapt: its protocols, its secret, its environment file ---------------------
    Mutant(
        "adapt: the secret compared case-insensitively",
        "legacy_msi_credential/adapt/_protocols.py",
        'hmac.compare_digest(value.encode("utf-8", "surrogateescape"), settings.secret)',
        'hmac.compare_digest(value.lower().encode("utf-8", "surrogateescape"), settings.secret.lower())',
        "App Service's protocol answers only the adapter's secret, byte for byte",
        ADAPT_TESTS,
    ),
    Mutant(
        "adapt: a second identity parameter allowed",
        "legacy_msi_credential/adapt/_protocols.py",
        "        if len(named) > 1:\n",
        "        if len(named) > 2:\n",
        "an unknown, repeated, empty or second identity parameter is a 400, never a token",
        ADAPT_TESTS,
    ),
    Mutant(
        "adapt: IMDS's answer carries a refresh_token",
        "legacy_msi_credential/adapt/_protocols.py",
        '        "not_before": str(now),\n',
        '        "not_before": str(now),\n        "refresh_token": "",\n',
        "IMDS's answer is IMDS's shape, no refresh_token",
        ADAPT_TESTS,
    ),
    Mutant(
        "adapt: the secret file readable by others",
        "legacy_msi_credential/adapt/__init__.py",
        "SECRET_FILE_MODE = 0o600",
        "SECRET_FILE_MODE = 0o644",
        "the secret is kept in a state file only its owner reads",
        ADAPT_TESTS,
    ),
    Mutant(
        "adapt: an environment file value that needs quoting written",
        "legacy_msi_credential/adapt/__init__.py",
        "        if not _PLAIN_VALUE.fullmatch(value):\n",
        "        if not value:\n",
        "the environment file reads the same in a shell and in systemd's EnvironmentFile=",
        ADAPT_TESTS,
    ),
    Mutant(
        "adapt: the environment file left on exit",
        "legacy_msi_credential/cli/_adapt.py",
        "                written.remove()\n",
        "                pass\n",
        "the environment file is removed when the adapter stops",
        ADAPT_TESTS,
    ),
    # --- the server core: its budgets, its shares between users, its addresses ----------------
    Mutant(
        "budget: a request head read past max_head",
        "legacy_msi_credential/bridge/_app.py",
        "        room = connections.limits.max_head - self._received\n",
        "        room = 2 * connections.limits.max_head - self._received\n",
        "a connection's head is bounded: 431 and closed beyond max_head",
        ("tests/test_bridge_service.py",),
    ),
    Mutant(
        "shares: the gate queues every user's calls in one line",
        "legacy_msi_credential/_server/_flights.py",
        "await self._turn(user)",
        "await self._turn(None)",
        "a user's call waits for at most one call of each other user, however many they queue",
        FAIRNESS_TESTS,
    ),
    Mutant(
        "shares: the cache evicts the user holding the smallest share",
        "legacy_msi_credential/_cache.py",
        "heaviest = max(self._shares, key=self._shares.__getitem__)",
        "heaviest = min(self._shares, key=self._shares.__getitem__)",
        "another user's churn never evicts a user's token: the largest share lets go",
        FAIRNESS_TESTS,
    ),
    Mutant(
        "binding: ::1 taken by another process skipped",
        "legacy_msi_credential/_server/_binding.py",
        "                if item.required or exc.errno not in _NO_IPV6:\n",
        "                if item.required or exc.errno not in (*_NO_IPV6, errno.EADDRINUSE):\n",
        "both loopback addresses on one port, or a refusal to start: never one left to a squatter",
        BINDING_TESTS,
    ),
    # --- what a connection holds, and for how long ---------------------------------------------
    Mutant(
        "bridge: a body still arriving is not counted in the budget",
        "legacy_msi_credential/bridge/_app.py",
        "                if self.reading_body:\n                    connections.heard(self, len(data))\n",
        "                if False:\n                    connections.heard(self, len(data))\n",
        "bodies on their way count in max_pending, as heads do",
        BRIDGE_TESTS,
    ),
    Mutant(
        "bridge: an ended connection gets a new deadline",
        "legacy_msi_credential/bridge/_app.py",
        "        if not self._ended:\n            self._timer = self._loop.call_later(",
        "        if True:\n            self._timer = self._loop.call_later(",
        "nothing of a connection is kept once it has ended",
        BRIDGE_TESTS,
    ),
    Mutant(
        "bridge: a body read is kept after the connection ends",
        "legacy_msi_credential/bridge/_app.py",
        "            body.clear()\n",
        "            pass\n",
        "what a connection sent is let go when it ends, not at the next garbage collection",
        BRIDGE_TESTS,
    ),
    Mutant(
        "bridge: large blocks left to glibc's moving threshold",
        "legacy_msi_credential/bridge/__init__.py",
        "        fix_mmap_threshold(self.limits.mmap_threshold)",
        "        pass  # fix_mmap_threshold(self.limits.mmap_threshold)",
        "a flood of large reads cannot fragment the heap flood after flood",
        BRIDGE_TESTS,
    ),
    Mutant(
        "gate: the last place goes to a user already holding places",
        "legacy_msi_credential/_server/_flights.py",
        "        return free > 1 or (free == 1 and user not in self._held)\n",
        "        return free >= 1\n",
        "a user whose source calls hang leaves a place to the others",
        FAIRNESS_TESTS,
    ),
    Mutant(
        "safe file: a folder another user owns is accepted",
        "legacy_msi_credential/_server/_safe_file.py",
        "    if info.st_uid not in (0, os.geteuid()):\n",
        "    if False:\n",
        "no file is published in a folder another user owns",
        SAFE_FILE_TESTS,
    ),
    Mutant(
        "safe file: the folders above are not checked",
        "legacy_msi_credential/_server/_safe_file.py",
        "        parent = os.path.dirname(current)\n",
        "        return\n",
        "no file is published under a folder another user may write",
        SAFE_FILE_TESTS,
    ),
]


def _run(command: list[str], cwd: Path, timeout: float) -> tuple[int, str]:
    env = {**os.environ, "PYTHONPATH": str(cwd), "PYTHONDONTWRITEBYTECODE": "1"}
    try:
        done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return -1, "timed out"
    return done.returncode, done.stdout[-2000:] + done.stderr[-2000:]


def _pytest(tests: tuple[str, ...]) -> list[str]:
    return [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-n", "4", *tests]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", default="", help="only the mutants whose name contains this (default: all)")
    args = parser.parse_args(argv)
    chosen = [mutant for mutant in MUTANTS if args.k in mutant.name]
    with tempfile.TemporaryDirectory() as scratch:
        tree = Path(scratch) / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", "--quiet", str(tree), "HEAD"], cwd=ROOT, check=True)
        (tree / ".venv").symlink_to(ROOT / ".venv")  # what the documentation's commands activate
        try:
            return _check(chosen, tree)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False)


def _check(chosen: list[Mutant], tree: Path) -> int:
    baseline = sorted({test for mutant in chosen for test in mutant.tests})
    status, output = _run(_pytest(tuple(baseline)), tree, 900)
    if status != 0:
        print(f"the tests fail without any change:\n{output}")
        return 2
    caught, survived = [], []
    for mutant in chosen:
        path = tree / mutant.module
        original = path.read_text(encoding="utf-8")
        if original.count(mutant.old) != 1:
            print(f"error: {mutant.name}: the replacement does not apply exactly once in {mutant.module}")
            return 2
        path.write_text(original.replace(mutant.old, mutant.new), encoding="utf-8")
        started = time.monotonic()
        try:
            status, output = _run(_pytest(mutant.tests), tree, 600)
        finally:
            path.write_text(original, encoding="utf-8")
        seconds = time.monotonic() - started
        verdict = "caught" if status != 0 else "SURVIVED"
        (caught if status != 0 else survived).append(mutant)
        failed = next((line for line in output.splitlines() if line.startswith("FAILED")), "")
        print(f"{verdict:9} {seconds:5.1f} s  {mutant.name}  {failed.split(' - ')[0]}")
    print(f"\n{len(caught)} of {len(chosen)} mutants caught.")
    unexplained = [mutant for mutant in survived if not mutant.equivalent]
    for mutant in survived:
        print(f"survived: {mutant.name} ({mutant.promise}){': ' + mutant.equivalent if mutant.equivalent else ''}")
    return 1 if unexplained else 0


if __name__ == "__main__":
    sys.exit(main())
