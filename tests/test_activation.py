"""Socket activation: the listening sockets systemd passes as descriptors 3, 4, ...

The descriptors must be exactly 3 and up, so each case runs in a fresh interpreter that
puts real sockets there (``os.dup2``) before reading them, as systemd would have; one
child runs every case. ``systemd-socket-activate`` (systemd's own tool) passes them for
real in the last test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]

_CASES = r"""
import json, os, socket, sys
from legacy_msi_credential._server._activation import inherited_listeners
from legacy_msi_credential._server._binding import ListenError

def listening(host, port=0, listen=True):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.bind((host, port))
    if listen:
        sock.listen()
    return sock

def place(*objects):
    # Every object's descriptor at 3, 4, ...: what systemd hands over.
    for index, item in enumerate(objects):
        os.dup2(item.fileno() if hasattr(item, "fileno") else item, 3 + index)
        os.set_inheritable(3 + index, True)  # as systemd passes them (dup2 onto itself changes nothing)

def run(count, pid=None, extra=None):
    env = {"LISTEN_FDS": str(count), "LISTEN_PID": str(os.getpid() if pid is None else pid), **(extra or {})}
    try:
        found = inherited_listeners(env)
    except ListenError as exc:
        return {"error": str(exc), "left": sorted(env)}
    if found is None:
        return {"none": True, "left": sorted(env)}
    described = {
        "port": found.port,
        "addresses": sorted(sock.getsockname()[0] for sock in found.sockets),
        "fds": [sock.fileno() for sock in found.sockets],
        "inheritable": [sock.get_inheritable() for sock in found.sockets],
        "left": sorted(env),
    }
    for sock in found.sockets:
        sock.detach()
    return described

out = {}
v4 = listening("127.0.0.1")
port = v4.getsockname()[1]
v6 = listening("::1", port)
place(v4, v6)
out["both"] = run(2, extra={"LISTEN_FDNAMES": "adapt.socket:adapt.socket"})
out["other_pid"] = run(2, pid=1)
out["no_pid"] = (lambda env: [inherited_listeners(env), sorted(env)][1])({"LISTEN_FDS": "2"})
out["garbage"] = run("2x")
out["too_many"] = run(1000)
out["nothing"] = inherited_listeners({}) is None
other = listening("127.0.0.1")
place(v4, other)
out["two_ports"] = run(2)
idle = listening("127.0.0.1", listen=False)
place(idle)
out["not_listening"] = run(1)
remote = listening("0.0.0.0")
place(remote)
out["remote"] = run(1)
read, write = os.pipe()
place(read)
out["pipe"] = run(1)
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind(("127.0.0.1", 0))
place(udp)
out["udp"] = run(1)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def outcomes() -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-c", _CASES],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr
    parsed: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return parsed


def test_the_sockets_systemd_passes_are_taken_from_descriptor_3(outcomes: dict[str, Any]) -> None:
    both = outcomes["both"]
    assert both["addresses"] == ["127.0.0.1", "::1"]
    assert both["fds"] == [3, 4]
    assert both["port"] > 0
    assert both["inheritable"] == [False, False]  # a child process never holds the port
    assert both["left"] == []  # LISTEN_* read once, never a child's


def test_variables_for_another_process_are_not_this_ones(outcomes: dict[str, Any]) -> None:
    assert outcomes["other_pid"] == {"none": True, "left": []}
    assert outcomes["no_pid"] == []  # without LISTEN_PID: nothing taken, the variables still cleared
    assert outcomes["nothing"] is True


@pytest.mark.parametrize(
    ("case", "says"),
    [
        ("garbage", "LISTEN_FDS='2x' is not a count"),
        ("too_many", "LISTEN_FDS='1000' is not a count of 1 to 16"),
        ("two_ports", "not one port"),
        ("not_listening", "descriptor 3 passed by systemd is not listening"),
        ("remote", "descriptor 3 passed by systemd is bound to 0.0.0.0, not loopback"),
        ("pipe", "descriptor 3 passed by systemd is not a socket"),
        ("udp", "descriptor 3 passed by systemd is not a TCP socket"),
    ],
)
def test_anything_but_listening_tcp_sockets_on_loopback_is_refused_with_the_fix(
    outcomes: dict[str, Any], case: str, says: str
) -> None:
    error = outcomes[case]["error"]
    assert says in error
    assert "ListenStream=127.0.0.1:PORT" in error  # the setting to change
    assert outcomes[case]["left"] == []


def test_systemd_socket_activate_passes_them(tmp_path: Path) -> None:
    """systemd's own tool binds, then runs a child with LISTEN_FDS/LISTEN_PID: the child finds
    the socket systemd bound, and a connection made before it accepts is queued, not refused."""
    tool = shutil.which("systemd-socket-activate")
    if tool is None:
        if os.environ.get("CI"):
            pytest.fail("CI installs systemd (scripts/setup.sh), which has systemd-socket-activate")
        pytest.skip("needs systemd-socket-activate (Debian package systemd)")
    import socket

    with socket.socket() as probe:  # a free port: the tool takes an address, not port 0
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    child = (
        "import json, socket; from legacy_msi_credential._server._activation import inherited_listeners; "
        "found = inherited_listeners(); (sock,) = found.sockets; conn, _ = sock.accept(); "
        "conn.sendall(json.dumps([found.port, sock.getsockname()[0]]).encode()); conn.close()"
    )
    process = subprocess.Popen(
        [tool, "--listen", f"127.0.0.1:{port}", sys.executable, "-c", child],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        # The tool says where it listens (on stderr) once it has bound, before it starts the child.
        assert process.stderr is not None
        said = process.stderr.readline()
        assert f"Listening on 127.0.0.1:{port} as 3" in said, said
        conn = socket.create_connection(("127.0.0.1", port), timeout=20)
        with conn:
            received = conn.makefile("rb").read()
        assert json.loads(received) == [port, "127.0.0.1"]
        assert process.wait(timeout=20) == 0, process.stderr.read() if process.stderr else ""
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


# --- legacy-msi adapt, activated --------------------------------------------------------------

#: Starts ``legacy-msi adapt`` as systemd does: the listening sockets (descriptors named in
#: argv[1], inherited) moved to 3, 4, ..., LISTEN_FDS and LISTEN_PID set for this very process,
#: which then becomes the command (``exec`` keeps the process id).
_LAUNCHER = r"""
import fcntl, os, sys
passed = [int(fd) for fd in sys.argv[1].split(",")]
high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in passed]  # out of the way of 3, 4, ...
for index, fd in enumerate(high):
    os.dup2(fd, 3 + index, inheritable=True)
    os.close(fd)
os.environ.update(LISTEN_FDS=str(len(passed)), LISTEN_PID=str(os.getpid()), LISTEN_FDNAMES="adapt")
os.execv(sys.executable, [sys.executable, "-m", "legacy_msi_credential", "adapt", *sys.argv[2:]])
"""


def _activated(sockets: list[Any], *args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    fds = [sock.fileno() for sock in sockets]
    return subprocess.Popen(
        [sys.executable, "-c", _LAUNCHER, ",".join(map(str, fds)), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        pass_fds=fds,
        env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", **env},
    )


def _stop(process: subprocess.Popen[str]) -> tuple[int, str]:
    import signal

    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        out, err = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
    return process.returncode, out + err


def _answer(conn: Any) -> tuple[int, dict[str, Any]]:
    with conn:
        head, _, body = conn.makefile("rb").read().partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_adapt_serves_the_sockets_systemd_holds_answering_connections_made_before_it_started(
    tmp_path: Path,
) -> None:
    """The point of socket activation: a client that connects while the adapter is not running
    (before its first start, between a stop and the next start) is queued by the socket systemd
    holds, and answered once the adapter runs, by either protocol; the secret is the one kept in
    ``$STATE_DIRECTORY``, the same across the restart. ``--port`` beside the sockets is refused."""
    import socket

    from legacy_msi_credential.adapt import read_or_make_secret
    from legacy_msi_credential.emulator import Emulator, UserAssignedIdentity

    alice = UserAssignedIdentity(client_id="0a1b2c3d-0000-4000-8000-0000000a11ce").completed()
    state = tmp_path / "state"
    secret, _ = read_or_make_secret(str(state / "adapt-secret"))  # what systemd's StateDirectory= keeps
    env = {"STATE_DIRECTORY": str(state), "XDG_STATE_HOME": str(tmp_path / "xdg")}
    env_file = tmp_path / "run" / "env"
    env_file.parent.mkdir()
    resource = "https://management.azure.com/"
    app = (
        f"GET /msi/token?api-version=2019-08-01&resource={resource} HTTP/1.1\r\nHost: localhost\r\n"
        f"X-IDENTITY-HEADER: {secret.reveal()}\r\nConnection: close\r\n\r\n"
    ).encode()
    imds = (
        f"GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource={resource}"
        f"&client_id={alice.client_id} HTTP/1.1\r\nHost: localhost\r\nMetadata: true\r\nConnection: close\r\n\r\n"
    ).encode()
    v4 = socket.create_server(("127.0.0.1", 0))
    port = v4.getsockname()[1]
    v6 = socket.create_server(("::1", port), family=socket.AF_INET6)
    with Emulator(port=0, user_assigned=[alice]) as extension, v4, v6:
        args = ("--endpoint", extension.endpoint, "--env-file", str(env_file), "--no-access-log")
        early = [socket.create_connection(("127.0.0.1", port), timeout=30), socket.create_connection(("::1", port))]
        early[0].sendall(app)
        early[1].settimeout(30)
        early[1].sendall(imds)  # both before the adapter exists
        first = _activated([v4, v6], *args, env=env)
        try:
            (status, body), (imds_status, imds_body) = _answer(early[0]), _answer(early[1])
            assert (status, imds_status) == (200, 200), (body, imds_body)
            assert body["access_token"] in extension.minted_tokens
            assert imds_body["access_token"] in extension.minted_tokens
            assert imds_body["client_id"] == alice.client_id
            values = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
            assert values["IDENTITY_ENDPOINT"] == f"http://127.0.0.1:{port}/msi/token"
            assert values["IDENTITY_HEADER"] == secret.reveal()
        finally:
            code, said = _stop(first)
        assert code == 0, said
        assert secret.reveal() not in said
        # Stopped: the port is still held; a client now waits for the next start, and is answered.
        between = socket.create_connection(("127.0.0.1", port), timeout=30)
        between.sendall(app)
        second = _activated([v4, v6], *args, env=env)
        try:
            status, body = _answer(between)
            assert status == 200, body
        finally:
            code, said = _stop(second)
        assert code == 0, said
        assert sorted(path.name for path in state.iterdir()) == ["adapt-secret"]
        # An address given beside systemd's sockets is a configuration error, said with its fix.
        refused = _activated([v4, v6], "--port", str(port), *args, env=env)
        out, err = refused.communicate(timeout=30)  # it exits by itself
        code, said = refused.returncode, out + err
        assert code != 0
        assert "--port: systemd passed the sockets to serve" in said
        assert "ListenStream=" in said
