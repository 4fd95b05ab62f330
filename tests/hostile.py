"""A hostile endpoint on 127.0.0.1, and the three ways a credential can reach it.

:class:`HostileServer` is a raw TCP server: for each connection it reads the request's
head and then plays a script of its own (bytes, pauses, closes), so it can send what no
HTTP server would (no status line, broken framing, a token in a header, a trickle).
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import secrets
import select
import socket
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

from azure.core.pipeline.transport import AsyncioRequestsTransport

from legacy_msi_credential import LegacyMsiCredential
from legacy_msi_credential.aio import LegacyMsiCredential as AsyncLegacyMsiCredential

ARM = "https://management.azure.com/.default"
#: How a credential is driven: the sync twin, the async twin on aiohttp, and on requests.
KINDS = ("sync", "aio-aiohttp", "aio-requests")

Step = Union[bytes, float, None]  # bytes to send, seconds to pause, None to close


def new_token() -> str:
    """A token no output may show any part of; its middle is what tests look for."""
    return f"hostile.{secrets.token_hex(20)}.Z9"


def secret_part(token: str) -> str:
    return token.split(".")[1][8:32]


@dataclass
class Connection:
    """What one connection received."""

    head: bytes = b""
    received: bytes = b""


class HostileServer:
    """A loopback server playing ``script(connection_number)`` on each connection.

    A script is a list of steps: ``bytes`` are sent, a ``float`` pauses, ``None`` closes
    (the connection is also closed when the script ends, unless ``keep_open``).
    """

    def __init__(
        self,
        script: Callable[[int], list[Step]],
        *,
        keep_open: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
        family: int = socket.AF_INET,
    ) -> None:
        self.script = script
        self.keep_open = keep_open
        self.connections: list[Connection] = []
        self._stop = threading.Event()
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self._sock.listen(64)
        self._sock.settimeout(0.1)
        self._threads: list[threading.Thread] = []
        self._accepter = threading.Thread(target=self._accept, daemon=True)
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/oauth2/token"

    def __enter__(self) -> HostileServer:
        self._accepter.start()
        return self

    def __exit__(self, *args: Any) -> None:
        self._stop.set()
        self._accepter.join(5)
        with self._lock:
            for conn in self._open:
                with suppress(OSError):  # shutdown wakes a thread blocked in recv; close alone would not
                    conn.shutdown(socket.SHUT_RDWR)
                with suppress(OSError):
                    conn.close()
        for thread in self._threads:
            thread.join(5)
        self._sock.close()

    def _accept(self) -> None:
        number = 0
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (socket.timeout, OSError):
                continue
            record = Connection()
            with self._lock:
                self.connections.append(record)
                self._open.append(conn)
            thread = threading.Thread(target=self._serve, args=(conn, number, record), daemon=True)
            number += 1
            self._threads.append(thread)
            thread.start()

    def _read_head(self, conn: socket.socket, record: Connection) -> bool:
        conn.settimeout(5)
        data = b""
        while b"\r\n\r\n" not in data and len(data) < 65536:
            try:
                chunk = conn.recv(4096)
            except OSError:
                return False
            if not chunk:
                return False
            data += chunk
        record.head = data
        record.received += data
        return True

    def _serve(self, conn: socket.socket, number: int, record: Connection) -> None:
        try:
            while not self._stop.is_set():
                if not self._read_head(conn, record):
                    return
                for step in self.script(number):
                    if self._stop.is_set():
                        return
                    if step is None:
                        return
                    if isinstance(step, float):
                        if self._stop.wait(step):
                            return
                        continue
                    conn.sendall(step)
                if not self.keep_open:
                    return
        except OSError:
            return
        finally:
            with suppress(OSError):
                conn.close()


def http_answer(status: str, headers: dict[str, str], body: bytes) -> bytes:
    lines = [f"HTTP/1.1 {status}", *(f"{name}: {value}" for name, value in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body


def token_body(token: str, **fields: Any) -> bytes:
    document = {"access_token": token, "expires_in": "3599", "token_type": "Bearer", **fields}
    import json

    return json.dumps(document).encode()


def make(kind: str, endpoint: Optional[str], **options: Any) -> Any:
    """A credential of ``kind``; ``endpoint=None`` leaves it to the environment."""
    if endpoint is not None:
        options["endpoint"] = endpoint
    if kind == "sync":
        return LegacyMsiCredential(**options)
    if kind == "aio-requests":
        options.setdefault("transport", AsyncioRequestsTransport())
    return AsyncLegacyMsiCredential(**options)


def call(kind: str, credential: Any, *scopes: Any, **kwargs: Any) -> Any:
    """``get_token`` on a credential of ``kind``, closing it afterwards."""
    if kind == "sync":
        try:
            return credential.get_token(*scopes, **kwargs)
        finally:
            credential.close()

    async def run() -> Any:
        try:
            return await credential.get_token(*scopes, **kwargs)
        finally:
            await credential.close()

    return asyncio.run(run())


@dataclass
class Outcome:
    """What a call produced, and every text it left behind."""

    value: Any = None
    error: Optional[BaseException] = None
    seconds: float = 0.0
    texts: list[str] = field(default_factory=list)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@contextmanager
def every_log_record() -> Iterator[list[str]]:
    """Every record of every logger, at DEBUG, formatted (exception text included)."""
    handler = _Collect()
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler.lines
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)


def texts_of(error: BaseException) -> list[str]:
    """Everything a person or a tool could read of an exception: chain, repr, attributes, pickle."""
    texts = ["".join(traceback.format_exception(type(error), error, error.__traceback__))]
    texts.append(repr(error))
    texts.append(repr(vars(error)))
    try:
        texts.append(repr(pickle.dumps(error)))
    except Exception as exc:
        texts.append(f"UNPICKLABLE {type(exc).__name__}: {exc}")
    return texts


def attempt(
    kind: str, endpoint: Optional[str], *scopes: Any, call_kwargs: Optional[dict[str, Any]] = None, **options: Any
) -> Outcome:
    """Make a credential, call it once, and collect the outcome and every log record."""
    outcome = Outcome()
    options.setdefault("logging_enable", True)
    with every_log_record() as lines:
        started = time.monotonic()
        try:
            credential = make(kind, endpoint, **options)
            outcome.value = call(kind, credential, *(scopes or (ARM,)), **(call_kwargs or {}))
        except Exception as exc:
            outcome.error = exc
        outcome.seconds = time.monotonic() - started
    outcome.texts = list(lines)
    if outcome.error is not None:
        outcome.texts.extend(texts_of(outcome.error))
    return outcome


def split_form_posts(form: str, split: int) -> list[tuple[bytes, bytes]]:
    """A form POST of ``form`` cut in two at ``split``: once framed by ``Content-Length``, once
    chunked (the cut between two chunks). Each as (head and first part, the rest)."""
    head = (
        "POST /oauth2/token HTTP/1.1\r\nHost: localhost\r\nMetadata: true\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\nConnection: close\r\n"
    )
    first, rest = form[:split].encode(), form[split:].encode()
    sized = (f"{head}Content-Length: {len(form)}\r\n\r\n".encode() + first, rest)
    chunked = (
        f"{head}Transfer-Encoding: chunked\r\n\r\n".encode() + b"%x\r\n%s\r\n" % (len(first), first),
        b"%x\r\n%s\r\n0\r\n\r\n" % (len(rest), rest),
    )
    return [sized, chunked]


def send_in_two_segments(port: int, first: bytes, rest: bytes, *, gap: float = 0.2) -> tuple[bool, bytes]:
    """Send ``first`` (a request's head and part of its body) in one TCP segment, then ``rest``
    in another once ``gap`` seconds have passed without an answer; read until the server closes.

    Returns whether the server answered before ``rest`` was sent (it judged the request on
    part of its body), and everything it sent.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(first)
        early = bool(select.select([sock], [], [], gap)[0])  # an answer to part of the body wakes this at once
        with suppress(OSError):  # a server that answered may have closed already
            sock.sendall(rest)
        received = b""
        with suppress(OSError):
            while chunk := sock.recv(65536):
                received += chunk
    return early, received


#: In :func:`run_beside_a_remote_peer`'s namespace, the address that stands in for a remote client.
REMOTE_PEER = "10.99.0.1"


def run_beside_a_remote_peer(script: Any) -> list[Any]:
    """Run the Python file ``script`` in a private network namespace (``unshare -n``) whose
    ``lo`` also carries :data:`REMOTE_PEER`, a client address that is not loopback, and return
    the JSON document its last line prints. Skipped where namespaces cannot be made; in CI
    that is a failure."""
    import json
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    import pytest

    if shutil.which("unshare") is None or subprocess.run(["unshare", "-n", "true"], check=False).returncode:
        if os.environ.get("CI"):
            pytest.fail("CI must be able to make network namespaces (unshare -n, as root)")
        pytest.skip("cannot make a private network namespace here")
    result = subprocess.run(
        [
            "unshare",
            "-n",
            "sh",
            "-c",
            f"ip link set lo up && ip addr add {REMOTE_PEER}/32 dev lo && {sys.executable} {script}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)},
    )
    assert result.returncode == 0, result.stderr
    document: list[Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return document


def sockets_here() -> set[str]:
    """The inodes of this process's open sockets (what a server leaves open is in the difference)."""
    import os

    found = set()
    for name in os.listdir("/proc/self/fd"):
        with suppress(OSError):  # an fd closed while listing
            link = os.readlink(f"/proc/self/fd/{name}")
            if link.startswith("socket:["):
                found.add(link)
    return found
