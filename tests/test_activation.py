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
from legacy_msi_credential._activation import inherited_listeners
from legacy_msi_credential._binding import ListenError

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
        "import json, socket; from legacy_msi_credential._activation import inherited_listeners; "
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
