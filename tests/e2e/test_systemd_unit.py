"""``packaging/legacy-msi-serve.service`` judged by systemd's own tools, and installed as documented.

``systemd-analyze security --offline=true`` rates the unit's exposure and ``systemd-analyze
verify`` checks it; neither needs a running systemd. The install steps of the unit's
comments are run as written (less ``sudo``), in a private mount namespace where ``/opt``
and ``/etc/systemd/system`` are scratch folders, from this clone (``pip install ".[serve]"``).
What cannot be run here without a real systemd: starting the unit, its sandbox and its
``ExecStartPost=``/``ExecStopPost=`` steps.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from legacy_msi_credential._server._limits import DEFAULT_LIMITS

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "packaging" / "legacy-msi-serve.service"
ADAPT = ROOT / "packaging" / "legacy-msi-adapt.service"
ADAPT_SOCKET = ROOT / "packaging" / "legacy-msi-adapt.socket"


def _need(tool: str) -> str:
    found = shutil.which(tool)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(f"CI installs {tool} (scripts/setup.sh)")
        pytest.skip(f"needs {tool}")
    return found


def _settings(path: Path) -> dict[str, list[str]]:
    """Each setting of a unit file and its values, in order (a setting may be repeated)."""
    found: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            found.setdefault(key, []).append(value)
    return found


@pytest.mark.parametrize("unit", [UNIT, ADAPT], ids=lambda path: path.name)
def test_the_units_exposure_is_ok(unit: Path) -> None:
    analyze = _need("systemd-analyze")
    result = subprocess.run(
        [analyze, "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "SYSTEMD_COLORS": "0"},
    )
    print(result.stdout)  # the whole table, for the log
    match = re.search(rf"Overall exposure level for {re.escape(unit.name)}: ([0-9.]+) (\w+)", result.stdout)
    assert match is not None, result.stdout + result.stderr
    exposure, verdict = float(match.group(1)), match.group(2)
    print(f"exposure {exposure} {verdict}")
    assert exposure <= 2.0
    assert verdict == "OK"
    for check in ("User=/DynamicUser=", "CapabilityBoundingSet=~CAP_SYS_ADMIN", "SystemCallFilter=~@privileged"):
        line = next(line for line in result.stdout.splitlines() if check in line)
        assert line.lstrip().startswith("✓"), line


def test_the_unit_says_what_it_promises() -> None:
    settings = dict(
        line.split("=", 1) for line in UNIT.read_text().splitlines() if "=" in line and not line.startswith("#")
    )
    assert settings["DynamicUser"] == "yes"
    assert settings["CapabilityBoundingSet"] == ""
    assert settings["IPAddressDeny"] == "any"
    assert settings["IPAddressAllow"].split() == ["localhost", "169.254.169.254"]
    assert settings["Type"] == "notify"
    assert "ReadWritePaths" not in settings  # the service writes nothing; the privileged steps write the file
    assert settings["ExecStartPost"].startswith("+")
    assert settings["ExecStopPost"] == "+/bin/rm -f /var/lib/waagent/ManagedIdentity-Settings"
    assert "Documentation" not in settings  # no page to point at until the package is published
    # ServerLimits.memory_max; benchmarks/bridge.py: about 60 MiB resident after 10,000 identities.
    assert settings["MemoryMax"] == f"{DEFAULT_LIMITS.memory_max // 2**20}M"
    assert int(settings["LimitNOFILE"]) == DEFAULT_LIMITS.unit_limits()["LimitNOFILE"]
    # Fair shares between local users need their real uids: no user namespace mapping them all to 65534.
    assert "PrivateUsers" not in settings
    assert "AF_NETLINK" in settings["RestrictAddressFamilies"].split()  # who owns a client's socket (sock_diag)


def _install_steps(unit: Path) -> list[str]:
    """The ``#   sudo ...`` lines of a unit's comments, as commands to run from this clone."""
    steps = [line.strip()[1:].strip() for line in unit.read_text().splitlines() if line.startswith("#   sudo ")]
    assert steps, f"{unit.name}'s comments carry the install steps"
    commands = []
    for step in steps:
        command = step.removeprefix("sudo ").split("   #", 1)[0].strip()
        command = command.replace('".[serve]"', shlex.quote(f"{ROOT}[serve]"))  # this clone
        command = re.sub(r"\bUSER$", "nobody", command)  # a user given the right to tokens
        if command.startswith("systemctl") or "systemctl " in command:
            continue  # needs a running systemd: verify instead
        commands.append(command)
    return commands


@pytest.mark.slow
def test_the_install_steps_as_written_then_verify(tmp_path: Path) -> None:
    """The bridge's unit's steps, then the adapter's (its group, both units, a user in the
    group), run as written in a private mount namespace where ``/opt`` is a scratch folder and
    ``/etc`` a copy: the steps they share (the virtual environment) run once."""
    analyze = _need("systemd-analyze")
    _need("unshare")
    if os.geteuid() != 0:
        pytest.skip("a private mount namespace needs root")
    commands = _install_steps(UNIT)
    commands += [command for command in _install_steps(ADAPT) if command not in commands]
    assert any(command.startswith("groupadd") for command in commands)
    opt, etc = tmp_path / "opt", tmp_path / "etc"
    opt.mkdir()
    subprocess.run(["cp", "-a", "/etc/.", str(etc)], check=True, timeout=60)
    units = "/etc/systemd/system/"
    script = " && ".join(
        [
            f"mount --bind {opt} /opt",
            f"mount --bind {etc} /etc",
            f"cd {ROOT}",
            *commands,
            "/opt/legacy-msi/bin/legacy-msi serve --help >/dev/null",
            "/opt/legacy-msi/bin/legacy-msi adapt --help >/dev/null",
            f"{analyze} verify {units}legacy-msi-serve.service",
            f"{analyze} verify {units}legacy-msi-adapt.socket {units}legacy-msi-adapt.service",
        ]
    )
    python = Path(sys.executable).resolve().parent
    result = subprocess.run(
        ["unshare", "-m", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "PATH": f"{python}{os.pathsep}{os.environ['PATH']}", "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    print(result.stdout[-3000:])
    assert result.returncode == 0, result.stderr[-3000:]
    for unit in ("legacy-msi-serve.service:", "legacy-msi-adapt.socket:", "legacy-msi-adapt.service:"):
        assert unit not in result.stderr, result.stderr  # verify found nothing to say
    assert (opt / "legacy-msi" / "bin" / "legacy-msi").exists()
    assert {path.name for path in (etc / "systemd" / "system").iterdir()} >= {
        "legacy-msi-serve.service", "legacy-msi-adapt.socket", "legacy-msi-adapt.service"
    }  # fmt: skip
    members = {line.split(":")[0]: line.split(":")[3].split(",") for line in (etc / "group").read_text().splitlines()}
    assert "nobody" in members["legacy-msi-tokens"]  # the group the service runs in, given to a user
    assert "legacy-msi-tokens" not in Path("/etc/group").read_text()  # the machine's own /etc untouched


def _unit_command(name: str, folder: Path) -> list[str]:
    """The unit's ``name=`` command as systemd runs it: ``+`` dropped, ``$$`` made ``$``, the
    words split as systemd splits them, the agent's folder replaced by ``folder``."""
    settings = dict(
        line.split("=", 1) for line in UNIT.read_text().splitlines() if "=" in line and not line.startswith("#")
    )
    line = settings[name].removeprefix("+").replace("$$", "$").replace("/var/lib/waagent", str(folder))
    return shlex.split(line)


def test_the_unit_writes_the_settings_file_whole_and_never_through_a_link(tmp_path: Path) -> None:
    folder = tmp_path / "waagent"
    folder.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("not to be touched")
    (folder / "ManagedIdentity-Settings").symlink_to(victim)
    command = _unit_command("ExecStartPost", folder)
    subprocess.run(command, check=True, timeout=30, env={"PATH": "/usr/bin:/bin"})
    written = folder / "ManagedIdentity-Settings"
    assert victim.read_text() == "not to be touched"  # the link was replaced, not followed
    assert not written.is_symlink()
    assert json.loads(written.read_text()) == {"url": "http://localhost:50342/"}
    assert stat.S_IMODE(written.stat().st_mode) == 0o644  # every local user's credential reads it
    assert sorted(path.name for path in folder.iterdir()) == ["ManagedIdentity-Settings"]  # no temporary left
    subprocess.run(command, check=True, timeout=30, env={"PATH": "/usr/bin:/bin"})  # again, over its own file
    assert json.loads(written.read_text()) == {"url": "http://localhost:50342/"}
    subprocess.run(_unit_command("ExecStopPost", folder), check=True, timeout=30, env={"PATH": "/usr/bin:/bin"})
    assert not written.exists()


def test_the_adapters_units_say_what_they_promise() -> None:
    from legacy_msi_credential._constants import DEFAULT_ADAPT_PORT
    from legacy_msi_credential.bridge import UNIT_LIMITS

    socket_unit, service = _settings(ADAPT_SOCKET), _settings(ADAPT)
    # systemd holds the port on both addresses the server core binds, for one service.
    listens = socket_unit["ListenStream"]
    assert [address.rsplit(":", 1)[0] for address in listens] == ["127.0.0.1", "[::1]"]
    (port,) = {address.rsplit(":", 1)[1] for address in listens}
    assert socket_unit["Accept"] == ["no"]
    assert socket_unit["BindIPv6Only"] == ["ipv6-only"]
    assert socket_unit["IPAddressAllow"] == ["localhost"]
    assert socket_unit["Service"] == ["legacy-msi-adapt.service"]
    # The service: notify and a watchdog; the address from the socket alone (the command refuses
    # --host and --port beside it), the port the command binds without it; the secret in its
    # state directory (the command's default there); the variables file in its runtime
    # directory, readable by the group that may get tokens.
    assert service["Type"] == ["notify"]
    assert int(service["WatchdogSec"][0]) > 0
    command = shlex.split(service["ExecStart"][0])
    assert command[:2] == ["/opt/legacy-msi/bin/legacy-msi", "adapt"]
    assert not {"--host", "--port", "--state-file"} & set(command)
    assert port == str(DEFAULT_ADAPT_PORT)
    assert service["StateDirectory"] == ["legacy-msi-adapt"]
    env_file = command[command.index("--env-file") + 1]
    assert env_file == f"/run/{service['RuntimeDirectory'][0]}/env"
    assert service["RuntimeDirectoryMode"] == ["0750"]  # the group may read the file, nobody else
    assert service["RuntimeDirectoryPreserve"] == ["restart"]  # clients keep their variables across a restart
    assert service["StateDirectoryMode"] == ["0700"]  # the secret: the service's own
    assert service["Group"] == ["legacy-msi-tokens"]
    assert service["DynamicUser"] == ["yes"]
    assert service["CapabilityBoundingSet"] == [""]
    assert service["IPAddressDeny"] == ["any"]
    assert service["IPAddressAllow"] == ["localhost"]  # the extension and its clients, nothing else
    assert "PrivateUsers" not in service  # fair shares between local users need their real uids
    assert "AF_NETLINK" in service["RestrictAddressFamilies"][0].split()
    assert "ReadWritePaths" not in service  # it writes its two directories only
    # The limits the server core is built for, as the bridge's unit states them.
    assert service["LimitNOFILE"] == [str(UNIT_LIMITS["LimitNOFILE"])]
    assert service["MemoryMax"] == [f"{UNIT_LIMITS['MemoryMax'] // 2**20}M"]
    # The install steps name the group the service runs in, and both units.
    steps = [line for line in ADAPT.read_text().splitlines() if line.startswith("#   sudo ")]
    assert any(f"groupadd --system {service['Group'][0]}" in step for step in steps)
    assert any("enable --now legacy-msi-adapt.socket legacy-msi-adapt.service" in step for step in steps)


def test_both_adapter_units_verify(tmp_path: Path) -> None:
    """``systemd-analyze verify`` of the socket with its service, the command made to exist."""
    analyze = _need("systemd-analyze")
    folder = tmp_path / "units"
    folder.mkdir()
    executable = tmp_path / "legacy-msi"
    executable.write_text("#!/bin/sh\n")
    executable.chmod(0o755)
    for unit in (ADAPT_SOCKET, ADAPT):
        (folder / unit.name).write_text(unit.read_text().replace("/opt/legacy-msi/bin/legacy-msi", str(executable)))
    result = subprocess.run(
        [analyze, "verify", str(folder / ADAPT_SOCKET.name), str(folder / ADAPT.name)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "SYSTEMD_COLORS": "0"},
    )
    assert "legacy-msi-adapt" not in result.stderr, result.stderr  # verify found nothing to say about them
    assert result.returncode == 0, result.stderr
