"""``legacy-msi``: through main(argv) and as a subprocess, against the emulator."""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.server
import io
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from legacy_msi_credential.cli import main
from legacy_msi_credential.emulator import Emulator, Fault

from .conftest import cli, closed_port, run_cli, start_cli

run = run_cli


def test_token_table_shows_claims_but_not_the_token(emulator: Emulator, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "https://vault.azure.net/.default", "--endpoint", emulator.endpoint]) == 0
    out = capsys.readouterr().out
    token = emulator.mint_token("x")[0]  # any token: none may show up
    assert "Resource:   https://vault.azure.net" in out
    assert "aud       https://vault.azure.net" in out
    assert f"tid       {emulator.tenant_id}" in out
    assert "Expires:" in out
    assert "(argument)" in out or "passed as the endpoint argument" in out
    assert "eyJ" not in out
    assert token not in out


def test_token_json_and_raw(emulator: Emulator, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "--endpoint", emulator.endpoint, "--client-id", "cid", "-o", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["resource"] == "https://management.azure.com/"
    assert document["claims"]["appid"] == "cid"
    assert emulator.minted_tokens == [document["accessToken"]]
    payload = document["accessToken"].split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims == document["claims"]  # decoded here, apart from the package's decoder
    assert document["endpointSource"] == "argument"
    assert main(["token", "--endpoint", emulator.endpoint, "--client-id", "cid", "--output", "raw"]) == 0
    assert capsys.readouterr().out.strip() == document["accessToken"]


def test_token_from_environment_as_a_subprocess(emulator: Emulator) -> None:
    result = run("token", "https://storage.azure.com/", env={"LEGACY_MSI_ENDPOINT": emulator.endpoint})
    assert result.returncode == 0, result.stderr
    assert "LEGACY_MSI_ENDPOINT" in result.stdout
    assert "eyJ" not in result.stdout + result.stderr


def test_errors_are_one_line_without_traceback(emulator: Emulator) -> None:
    emulator.add_faults(Fault.http_error(400, error="invalid_resource", description="AADSTS50001: nope"))
    result = run("token", "--endpoint", emulator.endpoint)
    assert result.returncode == 1
    assert result.stderr.startswith("legacy-msi: error: ")
    assert "invalid_resource" in result.stderr
    assert "Traceback" not in result.stderr
    refused = run("token", "--endpoint", f"http://127.0.0.1:{closed_port()}/oauth2/token")
    assert refused.returncode == 1
    assert "nothing is listening" in refused.stderr
    assert "Traceback" not in refused.stderr
    bad = run("token", "--endpoint", "http://10.9.9.9/oauth2/token")
    assert bad.returncode == 2  # the fix is a flag: a usage error, as argparse's own
    assert "not a loopback address" in bad.stderr
    assert "Pass --allow-insecure-http if" in bad.stderr


def test_debug_shows_the_traceback() -> None:
    result = run("--debug", "token", "--endpoint", f"http://127.0.0.1:{closed_port()}/oauth2/token")
    assert result.returncode == 1
    assert "Traceback" in result.stderr


def _usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The message of a usage error of ``argv`` (exit status 2, as argparse's own), through the real parser."""
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "said", "unsaid"),
    [
        (["token", "--retry-total", "101"], "--retry-total must be a whole number of retries", "retry_total"),
        (["token", "--wait-for-endpoint", "-1"], "--wait-for-endpoint must be a number of", "wait_for_endpoint"),
        (["token", "--endpoint", "http://10.9.9.9/oauth2/token"], "Pass --allow-insecure-http", "allow_insecure"),
        (["emulate", "--host", "10.9.9.9", "--port", "0"], "unless --allow-remote", "allow_remote"),
    ],
)
def test_errors_at_the_command_line_name_the_flag(
    argv: list[str], said: str, unsaid: str, capsys: pytest.CaptureFixture[str]
) -> None:
    message = _usage_error(argv, capsys)
    assert said in message
    assert unsaid not in message
    assert message.startswith(f"usage: legacy-msi {argv[0]}")  # the command's usage, not the top level's


def test_a_flag_the_library_rejects_with_a_flag_s_fix_is_still_honoured(emulator: Emulator) -> None:
    """--allow-insecure-http, named by the message above, exists and reaches the credential."""
    plain = emulator.endpoint.replace("127.0.0.1", "localhost")
    assert main(["token", "--endpoint", plain, "--allow-insecure-http", "-o", "raw"]) == 0


@pytest.mark.parametrize(
    "argv",
    [
        ["token", "--resource", "https://vault.azure.net"],
        ["token", "--scope", "https://vault.azure.net/.default"],
        ["token", "--scope", "https://vault.azure.net/.default", "https://vault.azure.net/user_impersonation"],
        ["token", "https://vault.azure.net/.default https://vault.azure.net/.default"],
        ["token", "https://vault.azure.net/.default", "https://vault.azure.net/.default"],
    ],
)
def test_token_takes_the_resource_as_az_users_type_it(
    argv: list[str], emulator: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*argv, "--endpoint", emulator.endpoint, "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["claims"]["aud"] == "https://vault.azure.net"
    assert [request.params["resource"] for request in emulator.requests] == [["https://vault.azure.net"]]


@pytest.mark.parametrize(
    "argv",
    [
        ["token", "--scope", "https://vault.azure.net/.default", "https://storage.azure.com/.default"],
        ["token", "https://vault.azure.net/.default https://storage.azure.com/.default"],
        ["doctor", "https://vault.azure.net", "--resource", "https://storage.azure.com"],
    ],
)
def test_scopes_of_two_resources_are_a_usage_error_that_says_why(
    argv: list[str], emulator: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    message = _usage_error([*argv, "--endpoint", emulator.endpoint], capsys)
    assert "one resource at a time; got 2 (https://vault.azure.net, https://storage.azure.com)" in message
    assert emulator.requests == []  # refused before anything is asked, not by Azure AD's AADSTS50001


SHADOW_MODULE = 'raise ModuleNotFoundError("No module named {name!r}", name={name!r})\n'


@pytest.mark.parametrize("debug_first", [True, False, None])
def test_a_missing_extra_is_one_line_naming_it_and_debug_is_accepted_after_the_command(
    debug_first: bool | None, tmp_path: Path
) -> None:
    """`pip install .` then `legacy-msi serve`: aiohttp is missing (a package on PYTHONPATH that
    fails to import, as a missing one does)."""
    (tmp_path / "aiohttp").mkdir()
    (tmp_path / "aiohttp" / "__init__.py").write_text(SHADOW_MODULE.format(name="aiohttp"))
    path = os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])
    debug = [] if debug_first is None else ["--debug"]
    argv = [*debug, "serve", "--port", "0"] if debug_first else ["serve", "--port", "0", *debug]
    result = run(*argv, env={"PYTHONPATH": path})
    assert result.returncode == 1
    assert 'pip install ".[serve]"' in result.stderr
    if debug_first is None:
        assert result.stderr.count("\n") == 1, result.stderr
        assert result.stderr.startswith("legacy-msi: error: legacy-msi serve runs on aiohttp")
    else:
        assert "Traceback" in result.stderr


def test_a_missing_module_the_package_did_not_name_gets_its_extra() -> None:
    from legacy_msi_credential.cli import missing_dependency

    message = missing_dependency(ModuleNotFoundError("No module named 'azure.identity'", name="azure.identity"))
    assert message == 'azure.identity is not installed: pip install ".[identity]" in a clone of legacy-msi-credential'
    other = missing_dependency(ModuleNotFoundError("No module named 'yaml'", name="yaml"))
    assert other.startswith("yaml is not installed; see the install section")


def test_a_reader_that_goes_away_is_not_an_error(emulator: Emulator) -> None:
    """`legacy-msi token | head`: quiet, with the status of a filter killed by SIGPIPE."""
    process = subprocess.Popen(
        [sys.executable, "-m", "legacy_msi_credential", "token", "--endpoint", emulator.endpoint],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    process.stdout.close()  # before the command writes anything: its writes meet a closed pipe
    error = process.stderr.read()
    process.stderr.close()
    assert process.wait(timeout=60) == 141
    assert error == b""


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["token", "--client-id", "a", "--object-id", "b"])
    assert caught.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


@pytest.mark.parametrize("command", [[], ["token"], ["doctor"], ["emulate"]])
def test_help_is_complete(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main([*command, "--help"])
    assert caught.value.code == 0
    text = capsys.readouterr().out
    assert "usage: legacy-msi" in text
    expected = {
        (): ["token", "doctor", "emulate", "--debug"],
        ("token",): ["--output", "--client-id", "--object-id", "--msi-res-id", "--endpoint", "--wait-for-endpoint"],
        ("doctor",): ["--skip-imds", "--imds-url", "--endpoint", "Exit status 0"],
        ("emulate",): ["--port", "--host", "--lifetime", "--fault", "--write-settings", "503x2,drop"],
    }[tuple(command)]
    for word in expected:
        assert word in text


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    from legacy_msi_credential.cli import build_parser

    (action,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


@pytest.mark.parametrize("name", sorted(_subcommands()))
def test_every_option_s_help_names_its_default(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """From the parser itself, so that no option added later can skip it: every option but
    ``--help`` says what happens without it, and no line of the help is wider than 80
    columns (descriptions and epilogs included)."""
    monkeypatch.setenv("COLUMNS", "80")
    parser = _subcommands()[name]
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or action.dest == "command":
            continue
        assert action.help, (name, action.dest)
        assert "default" in action.help, (name, action.option_strings or action.dest, action.help)
        if action.default not in (None, False, [], argparse.SUPPRESS) and not isinstance(action.default, bool):
            shown = f"{action.default:g}" if isinstance(action.default, float) else str(action.default)
            assert shown in action.help, (name, action.dest, action.default, action.help)
    text = parser.format_help()
    after_usage = text.split("\n\n", 1)[1]  # argparse cannot wrap a usage line's exclusive group
    assert max(len(line) for line in after_usage.splitlines()) <= 80, text


# --- doctor ------------------------------------------------------------------------------


def test_doctor_healthy_with_imds_absent(emulator: Emulator, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--endpoint", emulator.endpoint]) == 0
    out = capsys.readouterr().out
    assert "answers like the extension" in out
    assert "it is this package's emulator (legacy-msi emulate): its tokens are not real" in out
    assert "Verdict: healthy: LegacyMsiCredential gets tokens on this machine, from this package's emulator" in out
    assert "the legacy managed identity extension" not in out  # nowhere, the chain's step included
    assert "LegacyMsiCredential answers: this package's emulator" in out
    assert "does not answer" in out  # IMDS, at the dead loopback address of the test environment


def test_doctor_names_a_bridge_and_its_source(
    emulator: Emulator, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from legacy_msi_credential.bridge import Bridge

    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", emulator.imds_authority)
    with Bridge(port=0, source="imds") as bridge:
        assert main(["doctor", "--endpoint", bridge.endpoint, "--skip-imds"]) == 0
    out = capsys.readouterr().out
    assert "it is a legacy-msi serve bridge, with tokens from its imds source" in out
    assert "Verdict: healthy: LegacyMsiCredential gets tokens on this machine, from a legacy-msi serve bridge." in out
    assert "emulator" not in out.split("The endpoint:", 1)[1].split("IMDS:", 1)[0]


def test_doctor_reports_imds_when_it_answers(emulator: Emulator, capsys: pytest.CaptureFixture[str]) -> None:
    imds = Emulator(port=0).start()
    try:
        assert main(["doctor", "--endpoint", emulator.endpoint, "--imds-url", imds.imds_authority]) == 0
    finally:
        imds.stop()
    out = capsys.readouterr().out
    assert "answers (HTTP 200)" in out
    assert "README's recommended chain" not in out
    from legacy_msi_credential.cli._doctor import DOCS_DEFAULT_CREDENTIAL

    assert f"({DOCS_DEFAULT_CREDENTIAL})" in out
    page = Path(__file__).resolve().parents[1] / DOCS_DEFAULT_CREDENTIAL
    assert "immediately before `ManagedIdentityCredential`" in page.read_text()  # the promise, on a page that exists
    assert imds.requests[0].path == "/metadata/identity/oauth2/token"


def test_doctor_nothing_listening(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--endpoint", f"http://127.0.0.1:{closed_port()}/oauth2/token", "--skip-imds"]) == 1
    out = capsys.readouterr().out
    assert "[FAIL] nothing listens" in out
    assert "Verdict: the legacy extension is not running here" in out
    assert "not probed (--skip-imds)" in out


class _NotTheExtension(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<html>a web app</html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def squatter() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotTheExtension)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/oauth2/token"
    server.shutdown()
    server.server_close()


def test_doctor_something_else_listening(squatter: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--endpoint", squatter, "--skip-imds"]) == 1
    out = capsys.readouterr().out
    assert "the extension answers 400 bad_request_102" in out
    assert "not the legacy managed identity endpoint" in out
    assert "Verdict: something else is listening" in out


def test_doctor_refusal(capsys: pytest.CaptureFixture[str]) -> None:
    with Emulator(port=0, system_assigned=False) as vm:
        assert main(["doctor", "--endpoint", vm.endpoint, "--skip-imds"]) == 1
    out = capsys.readouterr().out
    assert "unauthorized_client" in out
    assert "Verdict: the extension refused. Fix: assign the managed identity" in out


def test_doctor_broken_settings_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    broken = tmp_path / "ManagedIdentity-Settings"
    broken.write_bytes(b"\x00\x01binary")
    monkeypatch.setenv("LEGACY_MSI_SETTINGS_FILE", str(broken))
    assert main(["doctor", "--skip-imds"]) == 1
    out = capsys.readouterr().out
    assert "not UTF-8 JSON" in out
    assert f"repair or remove {broken}" in out


def test_doctor_explains_the_chosen_endpoint_and_proxies(
    emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    settings = emulator.write_settings(tmp_path / "ManagedIdentity-Settings")
    monkeypatch.setenv("LEGACY_MSI_SETTINGS_FILE", settings)
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("MSI_ENDPOINT", "http://127.0.0.1:1/oauth2/token")
    monkeypatch.setenv("MSI_SECRET", "s")
    assert main(["doctor", "--skip-imds"]) == 0
    out = capsys.readouterr().out
    expected = f"http://localhost:{emulator.port}/oauth2/token"  # the settings file names localhost
    assert f"chosen: {expected}, from the extension's settings file {settings}" in out
    assert "ignored: MSI_SECRET is set" in out
    assert "HTTPS_PROXY set: this credential ignores them for a loopback endpoint" in out


def test_doctor_invalid_endpoint(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--endpoint", "ftp://x", "--skip-imds"]) == 1
    assert "configured endpoint is unusable" in capsys.readouterr().out


# --- emulate -----------------------------------------------------------------------------


def test_emulate_runs_a_command_against_itself_with_faults() -> None:
    code = (
        "import os; from legacy_msi_credential import LegacyMsiCredential as C; "
        "t = C(wait_for_endpoint=0).get_token('https://storage.azure.com/.default'); "
        "print(os.environ['LEGACY_MSI_ENDPOINT'], t.expires_on > 0)"
    )
    result = run("emulate", "--port", "0", "--fault", "503", "--lifetime", "600", "--", sys.executable, "-c", code)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("Emulator listening on http://127.0.0.1:")
    assert lines[-1].endswith("True")
    assert "attempt 1 of 5" in result.stderr


def test_emulate_passes_the_command_exit_status_through() -> None:
    result = run("emulate", "--port", "0", "--", sys.executable, "-c", "raise SystemExit(7)")
    assert result.returncode == 7


def test_sigterm_stops_the_command_first_then_the_emulator_and_its_settings_file(tmp_path: Path) -> None:
    """CI time-outs and `docker stop` send SIGTERM to legacy-msi, not to its COMMAND."""
    settings = tmp_path / "ManagedIdentity-Settings"
    child = "import os, sys, time; print(os.getpid(), flush=True); time.sleep(60)"
    process = start_cli("emulate", "--port", "0", "--write-settings", str(settings), "--", sys.executable, "-c", child)
    assert process.stdout is not None
    lines = iter(process.stdout.readline, "")
    assert next(lines).startswith("Emulator listening on")
    assert next(lines).startswith("Settings file written")
    pid = int(next(lines))  # COMMAND runs: it printed its process id
    process.send_signal(signal.SIGTERM)
    status = process.wait(timeout=30)
    if status != 128 + signal.SIGTERM:  # the old behaviour: COMMAND left running; stop it, then fail
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert status == 128 + signal.SIGTERM  # COMMAND's own end, passed through
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # COMMAND ended (and was reaped) before legacy-msi did
    process.stdout.close()
    assert process.stderr is not None
    process.stderr.close()
    assert not settings.exists()


def test_emulate_takes_a_command_only_after_the_double_dash(capsys: pytest.CaptureFixture[str]) -> None:
    message = _usage_error(["emulate", "8080"], capsys)
    assert "a command to run goes after --" in message
    assert "a port is given with --port" in message


@pytest.mark.parametrize(("command", "status"), [("no-such-command-here", 127), (__file__, 126)])
def test_emulate_reports_a_command_it_cannot_run_as_the_shell_does(
    command: str, status: int, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["emulate", "--port", "0", "--", command]) == status
    assert f"command not {'found' if status == 127 else 'executable'}: {command}" in capsys.readouterr().err


def test_emulate_rejects_bad_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["emulate", "--port", "0", "--fault", "teapot"]) == 1
    assert "unknown fault 'teapot'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as caught:
        main(["emulate", "--host", "0.0.0.0", "--port", "0"])
    assert caught.value.code == 2
    assert "loopback only unless --allow-remote" in capsys.readouterr().err


def test_doctor_on_a_machine_without_extension_or_imds(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """A laptop or a CI runner: the verdict does not tell it to enable a VM extension, the
    chain's failure is said once (not again as azure-identity's warning), and the
    environment is as it was."""
    before = dict(os.environ)
    imds = f"http://127.0.0.1:{closed_port()}"  # given: azure-identity's IMDS step is sent there, for the call only
    assert main(["doctor", "--endpoint", f"http://127.0.0.1:{closed_port()}/oauth2/token", "--imds-url", imds]) == 1
    assert dict(os.environ) == before
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING], caplog.text
    out = capsys.readouterr().out
    assert out.count("Verdict:") == 1
    assert "neither the legacy extension nor IMDS answers: this is not an Azure VM" in out
    assert "az login" in out
    assert "the legacy extension is not running here" not in out
    assert "no step of the chain gets a token here" in out
    assert "LegacyMsiCredential: LegacyMsiCredential: nothing is listening" in out


def test_doctor_names_the_step_that_answers_on_a_new_vm(capsys: pytest.CaptureFixture[str]) -> None:
    with Emulator(port=0) as imds:
        endpoint = f"http://127.0.0.1:{closed_port()}/oauth2/token"
        assert main(["doctor", "--endpoint", endpoint, "--imds-url", imds.imds_authority]) == 0
    out = capsys.readouterr().out
    assert "ManagedIdentityCredential answers: IMDS, this VM's managed identity" in out
    assert "but DefaultAzureCredential from this package does, from ManagedIdentityCredential" in out


def test_doctor_names_the_step_that_answers_on_a_developers_machine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "bin"
    folder.mkdir()
    az = folder / "az"
    az.write_text(
        f"#!{sys.executable}\nimport json, time\n"
        "print(json.dumps({'accessToken': 'a', 'expires_on': int(time.time()) + 3600, 'tokenType': 'Bearer'}))\n"
    )
    az.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    assert main(["doctor", "--endpoint", f"http://127.0.0.1:{closed_port()}/oauth2/token", "--skip-imds"]) == 0
    out = capsys.readouterr().out
    assert "AzureCliCredential answers: the Azure CLI: a developer's machine" in out


def test_help_and_usage_errors_import_neither_azure_core_nor_requests() -> None:
    """The mechanism behind a cheap `--help`: heavy libraries are imported by the subcommand that needs them."""
    code = (
        "import sys\n"
        "from legacy_msi_credential.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('azure', 'requests', 'urllib3', 'aiohttp')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip().splitlines()[-1] == "[]"


# --- version -----------------------------------------------------------------------------

#: The libraries a bug report names, as the issue tracker will ask for them.
_REPORTED = ("azure-core", "azure-identity", "msal", "requests", "urllib3", "aiohttp")


def _installed(name: str) -> str | None:
    """The installed version, read here apart from the command's own reading."""
    from importlib import metadata

    try:
        return metadata.distribution(name).metadata["Version"]
    except metadata.PackageNotFoundError:
        return None


def test_version_json_is_what_runs() -> None:
    """``legacy-msi version -o json``: this package's version and location as imported, this
    interpreter, and each library's installed version, compared with importlib.metadata."""
    import platform

    import legacy_msi_credential

    result = cli("version", "--output", "json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    package = document["legacy-msi-credential"]
    assert package["version"] == legacy_msi_credential.__version__
    assert package["location"] == str(Path(legacy_msi_credential.__file__).resolve().parent)
    assert package["distribution"] == _installed("legacy-msi-credential")
    assert document["python"]["version"] == platform.python_version()
    assert document["python"]["executable"] == sys.executable
    assert document["python"]["openssl"].startswith(("OpenSSL", "LibreSSL"))
    dependencies = document["dependencies"]
    assert set(_REPORTED) <= set(dependencies)
    assert dependencies == {name: _installed(name) for name in dependencies}
    assert all(dependencies[name] for name in _REPORTED)  # the suite installs every one of them


def test_dash_dash_version_prints_the_same_table_as_the_command() -> None:
    shown = cli("--version")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == cli("version").stdout
    lines = dict(line.split(None, 1) for line in shown.stdout.split("\n\n")[0].splitlines())
    import legacy_msi_credential

    assert lines.pop("legacy-msi-credential") == legacy_msi_credential.__version__
    assert set(_REPORTED) <= set(lines)
    assert lines == {name: _installed(name) for name in lines}
    assert f"Python:           {sys.version.split()[0]}" in shown.stdout


def test_dash_dash_version_takes_the_output_given_with_it_in_either_order() -> None:
    """``--version -o json`` is the JSON report, as ``version -o json`` is: the ``-o`` given
    with ``--version`` is read, not dropped because ``--version`` printed first."""
    expected = json.loads(cli("version", "--output", "json").stdout)
    for arguments in (["--version", "-o", "json"], ["--output", "json", "--version"], ["--version", "--output=json"]):
        shown = cli(*arguments)
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout) == expected, arguments
    assert cli("--version", "-o", "table").stdout == cli("version").stdout
    assert json.loads(cli("--version", "version", "-o", "json").stdout) == expected


def test_an_output_before_the_command_without_version_names_both_fixes() -> None:
    refused = cli("--output", "json", "version")
    assert refused.returncode == 2
    assert refused.stdout == ""
    assert "goes with --version" in refused.stderr
    assert "a command's own --output goes after its name" in refused.stderr
    bare = cli()
    assert bare.returncode == 2
    assert "required: COMMAND" in bare.stderr


def test_a_library_that_is_not_installed_is_named_so() -> None:
    from legacy_msi_credential.cli._versions import installed_versions, render_table, report

    absent = "legacy-msi-credential-no-such-distribution"
    assert installed_versions([absent, "requests"]) == {absent: None, "requests": _installed("requests")}
    document = report([absent])
    assert document["dependencies"] == {absent: None}
    out = io.StringIO()
    render_table(document, out)
    assert f"{absent}  not installed\n" in out.getvalue()


def test_version_in_an_interpreter_without_the_libraries(tmp_path: Path) -> None:
    """End to end where nothing is installed: the package's source alone on a Python started
    without site-packages (``-S``), as on a machine where only the standard library is."""
    import legacy_msi_credential

    shutil.copytree(Path(legacy_msi_credential.__file__).parent, tmp_path / "legacy_msi_credential")
    environment = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    for arguments in (["--version"], ["version", "--output", "json"]):
        result = subprocess.run(
            [sys.executable, "-S", "-s", "-m", "legacy_msi_credential", *arguments],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
            env=environment,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        if arguments[0] == "--version":
            for name in _REPORTED:
                assert f"\n{name} " in result.stdout
                assert result.stdout.split(f"\n{name} ", 1)[1].split("\n", 1)[0].strip() == "not installed"
            assert "Installed distribution: legacy-msi-credential not installed" in result.stdout
        else:
            document = json.loads(result.stdout)
            assert document["legacy-msi-credential"]["version"] == legacy_msi_credential.__version__
            assert document["legacy-msi-credential"]["distribution"] is None
            assert document["legacy-msi-credential"]["location"] == str(tmp_path / "legacy_msi_credential")
            assert set(document["dependencies"].values()) == {None}


def test_version_imports_none_of_the_libraries_it_names() -> None:
    """The versions come from metadata: printing them loads no library (a bug report from a
    machine where importing one fails still names its version)."""
    code = (
        "import sys\n"
        "from legacy_msi_credential.cli import main\n"
        "try:\n"
        "    main(['--version'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "main(['version', '-o', 'json'])\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('azure', 'msal', 'requests', 'urllib3', 'aiohttp', 'cryptography')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_emulate_answers_a_custom_resource_named_by_flag() -> None:
    code = "from legacy_msi_credential import LegacyMsiCredential as C; C().get_token('https://my-app.contoso.com')"
    named = run(
        "emulate", "--port", "0", "--known-resource", "https://my-app.contoso.com", "--", sys.executable, "-c", code
    )
    assert named.returncode == 0, named.stderr
    unnamed = run("emulate", "--port", "0", "--", sys.executable, "-c", code)
    assert unnamed.returncode == 1
    assert "invalid_resource" in unnamed.stderr
