"""Every sample, run as a user would run it, so that none rots."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from legacy_msi_credential.emulator import Emulator

from ..conftest import closed_port
from .challenge_server import ChallengeServer

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
ALL_SAMPLES = sorted(p.name for p in SAMPLES.glob("*.py") if p.name != "local_services.py")


def run_sample(name: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, str(SAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
        cwd=SAMPLES.parent,
    )
    assert result.returncode == 0, f"{name} failed:\n{result.stdout}\n{result.stderr}"
    return result


def test_every_sample_is_covered_here() -> None:
    tested = {
        "quickstart.py",
        "blob_sync.py",
        "blob_async.py",
        "user_assigned_identity.py",
        "raw_token.py",
        "arm_list_resource_groups.py",
        "keyvault_secret.py",
        "chain_fallback.py",
        "default_credential.py",
    }
    assert set(ALL_SAMPLES) == tested
    for name in ALL_SAMPLES:
        docstring = (SAMPLES / name).read_text().split('"""')[1]
        assert "python samples/" in docstring, f"{name} says how to run it"


@pytest.mark.azurite
@pytest.mark.parametrize("name", ["quickstart.py", "blob_sync.py", "blob_async.py"])
def test_storage_samples_against_azurite(name: str, azurite, session_emulator: Emulator) -> None:
    del azurite  # the samples start their own Azurite; this fixture fails clearly if it is missing
    result = run_sample(name, "--azurite", env={"LEGACY_MSI_ENDPOINT": session_emulator.endpoint})
    assert "eyJ" not in result.stdout


def test_user_assigned_identity_sample(session_emulator: Emulator) -> None:
    result = run_sample(
        "user_assigned_identity.py",
        "--client-id",
        "6d1e8a7c-0000-4000-8000-000000000001",
        env={"LEGACY_MSI_ENDPOINT": session_emulator.endpoint},
    )
    assert "appid     6d1e8a7c-0000-4000-8000-000000000001" in result.stdout


def test_raw_token_sample(challenge_server: ChallengeServer, session_emulator: Emulator, tls_files) -> None:
    result = run_sample(
        "raw_token.py",
        "--arm-url",
        challenge_server.url,
        "--ca-file",
        tls_files[2],
        env={"LEGACY_MSI_ENDPOINT": session_emulator.endpoint},
    )
    assert "legacy-vm-rg (westeurope)" in result.stdout


def test_arm_sample(challenge_server: ChallengeServer, session_emulator: Emulator, tls_files) -> None:
    result = run_sample(
        "arm_list_resource_groups.py",
        "--endpoint",
        session_emulator.endpoint,
        "--arm-url",
        challenge_server.url,
        "--ca-file",
        tls_files[2],
        "--subscription-id",
        "00000000-0000-0000-0000-000000000001",
        env={},
    )
    assert "legacy-vm-rg (westeurope)" in result.stdout


def test_keyvault_sample(challenge_server: ChallengeServer, session_emulator: Emulator, tls_files) -> None:
    result = run_sample(
        "keyvault_secret.py",
        "--vault-url",
        challenge_server.url,
        "--ca-file",
        tls_files[2],
        "--secret",
        "db-password",
        env={"LEGACY_MSI_ENDPOINT": session_emulator.endpoint},
    )
    assert "db-password: 27 characters" in result.stdout


def test_chain_sample_uses_the_legacy_endpoint_when_present(session_emulator: Emulator) -> None:
    result = run_sample("chain_fallback.py", env={"LEGACY_MSI_ENDPOINT": session_emulator.endpoint})
    assert "acquired a token from LegacyMsiCredential" in result.stderr
    assert session_emulator.tenant_id in result.stdout


def test_chain_sample_falls_back_to_imds_when_absent() -> None:
    with Emulator(port=0) as imds:
        result = run_sample(
            "chain_fallback.py",
            env={
                "LEGACY_MSI_ENDPOINT": f"http://127.0.0.1:{closed_port()}/oauth2/token",
                "AZURE_POD_IDENTITY_AUTHORITY_HOST": imds.imds_authority,
            },
        )
        assert "acquired a token from ManagedIdentityCredential" in result.stderr
        assert [r.path for r in imds.requests][-1] == "/metadata/identity/oauth2/token"


def test_default_credential_sample_uses_the_legacy_step(session_emulator: Emulator) -> None:
    result = run_sample("default_credential.py", env={"LEGACY_MSI_ENDPOINT": session_emulator.endpoint})
    assert "DefaultAzureCredential acquired a token from LegacyMsiCredential" in result.stderr
    assert session_emulator.tenant_id in result.stdout


def test_default_credential_sample_on_a_new_vm() -> None:
    with Emulator(port=0) as imds:
        result = run_sample(
            "default_credential.py",
            env={
                "LEGACY_MSI_ENDPOINT": f"http://127.0.0.1:{closed_port()}/oauth2/token",
                "AZURE_POD_IDENTITY_AUTHORITY_HOST": imds.imds_authority,
            },
        )
        assert "acquired a token from ManagedIdentityCredential" in result.stderr
        assert imds.tenant_id in result.stdout


#: Each sample's arguments that keep it on loopback (a token is asked for before anything is
#: sent). Left out, as slow here, not different: blob_sync.py and blob_async.py (the storage
#: client retries a credential's error for about 90 s before giving up) and the two chains
#: (azure-identity's IMDS retries against the dead port, about 6 s); they end in the same
#: run_sample of samples/local_services.py.
NO_ENDPOINT_ARGS = {
    "quickstart.py": ["--account-url", "https://127.0.0.1:9/"],
    "user_assigned_identity.py": ["--client-id", "6d1e8a7c-0000-4000-8000-000000000001"],
    "raw_token.py": ["--arm-url", "https://127.0.0.1:9"],
    "arm_list_resource_groups.py": ["--arm-url", "https://127.0.0.1:9", "--subscription-id", "x"],
    "keyvault_secret.py": ["--secret", "s"],  # the vault (the challenge server) answers first
}


@pytest.mark.parametrize("name", sorted(NO_ENDPOINT_ARGS))
def test_a_sample_without_an_endpoint_says_what_to_do_in_one_line(
    name: str, challenge_server: ChallengeServer, tls_files
) -> None:
    """A first try away from a VM: nothing at the legacy endpoint, nor at IMDS (the test
    environment's dead loopback port)."""
    vault = ["--vault-url", challenge_server.url, "--ca-file", tls_files[2]] if name == "keyvault_secret.py" else []
    result = subprocess.run(
        [sys.executable, str(SAMPLES / name), *NO_ENDPOINT_ARGS[name], *vault],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "LEGACY_MSI_ENDPOINT": f"http://127.0.0.1:{closed_port()}/oauth2/token"},
        cwd=SAMPLES.parent,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()[-1:]
    assert line.startswith(f"samples/{name}: no token: "), result.stderr
    assert f"legacy-msi emulate --port 0 -- python samples/{name}" in line
    assert ". Run it on a VM with the legacy extension" in line  # the reason ends its sentence
    assert ".. Run" not in line


#: The order the emulator page shows the samples in: the quick start first.
SHOWN_ORDER = [
    "quickstart.py",
    "blob_sync.py",
    "blob_async.py",
    "keyvault_secret.py",
    "arm_list_resource_groups.py",
    "user_assigned_identity.py",
    "chain_fallback.py",
    "default_credential.py",
    "raw_token.py",
]
SAMPLES_START = "<!-- samples: generated from the samples' docstrings, checked by tests/e2e/test_samples.py -->"
SAMPLES_END = "<!-- samples: end -->"


def samples_section() -> str:
    """The emulator page's list of samples, each with the commands its docstring gives: the
    docstring's first line, then each paragraph that introduces a literal block (``::``) and
    the block, as a shell block."""
    import ast
    import textwrap

    parts = [SAMPLES_START, ""]
    for name in SHOWN_ORDER:
        docstring = ast.get_docstring(ast.parse((SAMPLES / name).read_text(encoding="utf-8"))) or ""
        paragraphs = docstring.split("\n\n")
        parts += [f"**[`{name}`](../samples/{name})**: {paragraphs[0].strip()}", ""]
        for lead, block in zip(paragraphs, paragraphs[1:]):
            if lead.endswith("::") and block.startswith("    "):
                text = " ".join(lead[:-1].split()).replace("``", "`")
                parts += [text, "", "```sh", textwrap.dedent(block).strip(), "```", ""]
    parts.append(SAMPLES_END)
    return "\n".join(parts)


def test_the_emulator_page_shows_each_samples_commands_as_its_docstring_gives_them() -> None:
    assert sorted(SHOWN_ORDER) == ALL_SAMPLES, "a new sample goes in SHOWN_ORDER"
    page = (SAMPLES.parent / "docs" / "emulator.md").read_text(encoding="utf-8")
    expected = samples_section()
    assert expected.count("```sh") >= 2 * len(SHOWN_ORDER)  # each: on a VM, and here
    assert expected in page, f"docs/emulator.md's samples section should read:\n{expected}"
