"""Local stand-ins for the samples: Azurite over HTTPS with OAuth, and a throwaway CA.

Azurite (the Azure Storage emulator, npm package ``azurite``) checks bearer tokens'
claims when started with ``--oauth basic``, which requires HTTPS. This module makes a CA
and a server certificate for 127.0.0.1, starts Azurite on free loopback ports with
telemetry off, waits until it listens, and stops it afterwards::

    with Azurite.start() as azurite:
        client = BlobServiceClient(azurite.blob_url, credential=..., connection_verify=azurite.ca_file)

It looks for Azurite in ``tools/azurite/node_modules`` (``npm ci`` there installs the pinned
version), then on ``PATH``. It needs the ``trustme`` package for the certificates.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn, Optional

ROOT = Path(__file__).resolve().parent.parent
#: Azurite's well-known development account.
ACCOUNT = "devstoreaccount1"
_STARTUP_TIMEOUT = 60.0  # s: a cold Node start on a small machine takes a few seconds


def find_azurite() -> Optional[str]:
    """The Azurite executable: the repository's pinned copy, else one on PATH."""
    pinned = ROOT / "tools" / "azurite" / "node_modules" / ".bin" / "azurite"
    if pinned.exists():
        return str(pinned)
    return shutil.which("azurite")


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass
class Azurite:
    """A running Azurite with OAuth on, bound to 127.0.0.1."""

    process: subprocess.Popen[str]
    workdir: tempfile.TemporaryDirectory[str]
    ca_file: str
    blob_port: int
    queue_port: int
    table_port: int
    output: list[str]

    @property
    def blob_url(self) -> str:
        return f"https://127.0.0.1:{self.blob_port}/{ACCOUNT}"

    @property
    def queue_url(self) -> str:
        return f"https://127.0.0.1:{self.queue_port}/{ACCOUNT}"

    @property
    def table_url(self) -> str:
        return f"https://127.0.0.1:{self.table_port}/{ACCOUNT}"

    @classmethod
    def start(cls, executable: Optional[str] = None) -> Azurite:
        """Start Azurite and wait until its three services listen.

        Raises:
            RuntimeError: Azurite is not installed, or did not start.
        """
        import trustme

        azurite = executable or find_azurite()
        if azurite is None:
            raise RuntimeError("Azurite is not installed: run `npm ci` in tools/azurite (needs Node.js)")
        workdir = tempfile.TemporaryDirectory(prefix="azurite-")
        ca = trustme.CA()
        server = ca.issue_cert("127.0.0.1", "localhost")
        cert_file = os.path.join(workdir.name, "cert.pem")
        key_file = os.path.join(workdir.name, "key.pem")
        ca_file = os.path.join(workdir.name, "ca.pem")
        server.cert_chain_pems[0].write_to_path(cert_file)
        for extra in server.cert_chain_pems[1:]:
            extra.write_to_path(cert_file, append=True)
        server.private_key_pem.write_to_path(key_file)
        ca.cert_pem.write_to_path(ca_file)
        blob, queue, table = _free_ports(3)
        command = [
            azurite,
            "--blobHost", "127.0.0.1", "--blobPort", str(blob),
            "--queueHost", "127.0.0.1", "--queuePort", str(queue),
            "--tableHost", "127.0.0.1", "--tablePort", str(table),
            "--oauth", "basic", "--cert", cert_file, "--key", key_file,
            "--inMemoryPersistence", "--skipApiVersionCheck", "--disableTelemetry", "--silent",
        ]  # fmt: skip
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=workdir.name,
        )
        output: list[str] = []
        running = cls(process, workdir, ca_file, blob, queue, table, output)
        running._wait_until_listening()
        return running

    def _wait_until_listening(self) -> None:
        listening: set[str] = set()
        ready = threading.Event()
        assert self.process.stdout is not None
        stream = self.process.stdout

        def read() -> None:
            for line in stream:
                self.output.append(line.rstrip())
                match = re.search(r"Azurite (Blob|Queue|Table) service is successfully listening at (\S+)", line)
                if match:
                    if not match.group(2).startswith("https://"):
                        self.output.append(f"!! {match.group(1)} is serving plain http, not https")
                        ready.set()
                    listening.add(match.group(1))
                    if len(listening) == 3:
                        ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        deadline = time.monotonic() + _STARTUP_TIMEOUT
        ready.wait(timeout=_STARTUP_TIMEOUT)
        if len(listening) < 3 or any(line.startswith("!!") for line in self.output) or time.monotonic() > deadline:
            self.stop()
            raise RuntimeError("Azurite did not start with HTTPS and OAuth:\n" + "\n".join(self.output[-20:]))

    def stop(self) -> None:
        """Stop Azurite by its PID and remove its files."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.workdir.cleanup()

    def __enter__(self) -> Azurite:
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.stop()


def add_storage_arguments(parser: argparse.ArgumentParser) -> None:
    """``--account-url`` for a real storage account, or ``--azurite`` for a local one."""
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--account-url", help="a storage account's blob URL, e.g. https://NAME.blob.core.windows.net")
    where.add_argument("--azurite", action="store_true", help="start a local Azurite with OAuth and use it")


@contextlib.contextmanager
def storage_account(args: argparse.Namespace, service: str = "blob") -> Iterator[tuple[str, Any]]:
    """Yield (account URL for ``service``, ``connection_verify`` value) for the chosen account."""
    if not args.azurite:
        yield args.account_url.replace(".blob.", f".{service}."), True
        return
    with Azurite.start() as azurite:
        yield getattr(azurite, f"{service}_url"), azurite.ca_file


def run_sample(main: Callable[[], int], path: str) -> NoReturn:
    """Run a sample's ``main``; no token to be had (no VM, no emulator) is one line that says
    what to do, not a traceback from inside the credential."""
    from azure.core.exceptions import ClientAuthenticationError

    try:
        sys.exit(main())
    except ClientAuthenticationError as error:
        reason = error.message.strip().splitlines()[0].rstrip(". ")
        name = f"samples/{Path(path).name}"
        sys.exit(
            f"{name}: no token: {reason}. Run it on a VM with the legacy extension, or against the emulator "
            f"as its docstring shows: legacy-msi emulate --port 0 -- python {name} ..."
        )
