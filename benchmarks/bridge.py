"""`legacy-msi serve` as a machine-wide token service: the figures of its README section.

* **Broker**: N processes, each with its own credential, get a token: through the bridge
  (this package's ``LegacyMsiCredential``) or straight from IMDS (azure-identity's
  ``ManagedIdentityCredential``); the emulator in its IMDS role counts the requests it gets.
* **Throughput**: cached answers per second with keep-alive from 32 clients (``wrk``), and
  p99 latency; the same while 512 slow clients hold connections open, trickling bytes.
* **Starvation**: a client asking for a cached token on a new connection while 512 slow
  clients trickle: its latency.
* **Memory**: the resident size of a bridge process after 10,000 distinct identities were
  asked for (the source is a stand-in with Azure AD-sized tokens and no rate cap).
* **Heads** and **Bodies**: the resident size of a bridge process, under the unit's
  descriptor limit, before, while and after 1,024 connections each send all the request
  head they may (just under 32 KiB), or a whole head and all the body they may (just under
  64 KiB), and never end it, against the unit's ``MemoryMax``.
* **Churn**: clients that send their request's lines 200 ms apart (0.8 s of the 10 s
  allowed) while another process opens connections as fast as it can and sends nothing:
  how many of them are answered.
* **Two local users**: a victim's cached and uncached latency while another uid churns
  new identities through the same bridge (fair shares of its cache and its IMDS gate).

    python benchmarks/bridge.py            # the published figures
    python benchmarks/bridge.py --quick    # CI: fewer processes, shorter runs, the same targets
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from legacy_msi_credential.bridge import Bridge  # noqa: E402
from legacy_msi_credential.emulator import Emulator  # noqa: E402

SCOPE = "https://management.azure.com/.default"
RESOURCE = "https://management.azure.com/"

_THROUGH_BRIDGE = (
    "import sys\nfrom legacy_msi_credential import LegacyMsiCredential\n"
    "with LegacyMsiCredential(endpoint=sys.argv[1]) as credential:\n"
    f"    assert credential.get_token({SCOPE!r}).token\n"
)
_DIRECT = (
    "from azure.identity import ManagedIdentityCredential\n"
    "with ManagedIdentityCredential() as credential:\n"
    f"    assert credential.get_token({SCOPE!r}).token\n"
)


def _processes(code: str, count: int, *args: str, env: dict[str, str]) -> float:
    """Start ``count`` processes at once; seconds until the last one ends (each must succeed)."""
    started = time.perf_counter()
    running = [
        subprocess.Popen([sys.executable, "-c", code, *args], env=env, stdout=subprocess.DEVNULL) for _ in range(count)
    ]
    failed = [process for process in running if process.wait(300) != 0]
    if failed:
        raise SystemExit(f"{len(failed)} of {count} processes failed")
    return time.perf_counter() - started


def broker(count: int) -> tuple[int, int]:
    """IMDS requests for ``count`` processes through the bridge, and straight to IMDS."""
    env = dict(os.environ, PYTHONPATH=str(HERE.parent))
    for name in ("MSI_ENDPOINT", "LEGACY_MSI_ENDPOINT", "AZURE_CLIENT_ID"):
        env.pop(name, None)
    with Emulator(port=0) as imds:
        env["AZURE_POD_IDENTITY_AUTHORITY_HOST"] = imds.imds_authority
        os.environ["AZURE_POD_IDENTITY_AUTHORITY_HOST"] = imds.imds_authority
        try:
            with Bridge(port=0, source="imds") as bridge:
                _processes(_THROUGH_BRIDGE, count, bridge.endpoint, env=env)
                through_bridge = imds.request_count
        finally:
            os.environ.pop("AZURE_POD_IDENTITY_AUTHORITY_HOST", None)
        imds.reset()
        _processes(_DIRECT, count, env=env)
        direct = imds.request_count
    return through_bridge, direct


class Tricklers:
    """``count`` connections that each send a request's first bytes, then a byte every half second."""

    def __init__(self, port: int, count: int) -> None:
        self.port = port
        self.count = count
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.reconnects = 0

    def _open(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        sock.sendall(b"GET /oauth2/token?resource=x HTTP/1.1\r\nHost: localhost\r\n")
        return sock

    def _run(self) -> None:
        sockets = [self._open() for _ in range(self.count)]
        while not self._stop.wait(0.5):
            for index, sock in enumerate(sockets):
                try:
                    sock.sendall(b"X")
                except OSError:  # cut off at its deadline: come back, as an attacker would
                    sock.close()
                    self.reconnects += 1
                    with suppress(OSError):
                        sockets[index] = self._open()
        for sock in sockets:
            sock.close()

    def __enter__(self) -> Tricklers:
        self._thread.start()
        time.sleep(1.0)  # all connected and trickling
        return self

    def __exit__(self, *args: object) -> None:
        self._stop.set()
        self._thread.join(30)


def wrk(url: str, seconds: int) -> tuple[float, float, float]:
    """Requests per second, p99 latency (ms) for 32 keep-alive clients, and the microseconds of
    this process's CPU (the bridge, served from here) each answer took."""
    started = time.process_time()
    output = subprocess.run(
        ["wrk", "-t2", "-c32", f"-d{seconds}s", "--latency", "-H", "Metadata: true", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rate = float(re.search(r"Requests/sec:\s+([0-9.]+)", output).group(1))  # type: ignore[union-attr]
    value, unit = re.search(r"99%\s+([0-9.]+)(us|ms|s)", output).groups()  # type: ignore[union-attr]
    p99 = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if errors:
        raise SystemExit(f"wrk got {errors.group(1)} failed answers")
    answered = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    return rate, p99, (time.process_time() - started) / max(answered, 1) * 1e6


def one_new_client(url: str, count: int) -> list[float]:
    """Latencies (ms) of ``count`` requests, each on a new connection."""
    import requests

    samples = []
    for _ in range(count):
        started = time.perf_counter()
        answer = requests.get(url, headers={"Metadata": "true"}, timeout=30)
        samples.append((time.perf_counter() - started) * 1000)
        answer.raise_for_status()
    return samples


@contextmanager
def cached_bridge() -> Iterator[tuple[Bridge, str]]:
    with Emulator(port=0) as imds:
        os.environ["AZURE_POD_IDENTITY_AUTHORITY_HOST"] = imds.imds_authority
        try:
            with Bridge(port=0, source="imds") as bridge:
                url = f"{bridge.endpoint}?resource={RESOURCE}"
                one_new_client(url, 1)  # cached from now on
                yield bridge, url
        finally:
            os.environ.pop("AZURE_POD_IDENTITY_AUTHORITY_HOST", None)


_MEMORY = """
import base64, json, resource, sys, time
import requests
from azure.core.credentials import AccessToken
from legacy_msi_credential.bridge import Bridge, ServerLimits, TokenSource

def claims(value):
    part = base64.urlsafe_b64encode(json.dumps({"oid": value, "aio": "x" * 1500}).encode()).decode().rstrip("=")
    return "e30." + part + "."

class Source:
    def __call__(self, kind, parameter, value):
        return Credential(value)

class Credential:
    def __init__(self, value):
        self.value = value
    def get_token(self, *scopes):
        return AccessToken(claims(self.value), int(time.time()) + 3600)

def rss():
    return int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize() / 2**20

source = TokenSource("imds", credential_factory=Source(), limits=ServerLimits(source_rate=1e9))
with Bridge(port=0, source=source) as bridge, requests.Session() as session:
    session.get(bridge.endpoint, params={"resource": "https://vault.azure.net", "object_id": "warm"},
                headers={"Metadata": "true"}).raise_for_status()
    before = rss()
    for number in range(int(sys.argv[1])):
        session.get(bridge.endpoint, params={"resource": "https://vault.azure.net", "object_id": f"id-{number}"},
                    headers={"Metadata": "true"}).raise_for_status()
    print(json.dumps({"before": before, "after": rss(), "cached": source.cached}))
"""


def memory(count: int) -> dict[str, float]:
    """Resident MiB of a bridge before and after ``count`` distinct identities (the client shares the process)."""
    import json

    env = dict(os.environ, PYTHONPATH=str(HERE.parent))
    output = subprocess.run(
        [sys.executable, "-c", _MEMORY, str(count)], capture_output=True, text=True, check=True, env=env
    ).stdout
    figures: dict[str, float] = json.loads(output.strip().splitlines()[-1])
    return figures


_CHURNER = 65534  # nobody: the second local user
#: Tokens the two-user benchmark's bridge keeps: few, so that the churn (at most the gate's
#: 15 a second) goes through them all in less time than the victim takes to ask again.
_TWO_USERS_CACHE = 20


class _SlowSource:
    """An asynchronous stand-in for IMDS: 50 ms per token, each naming the identity asked for."""

    def __call__(self, kind: str, parameter: Optional[str], value: Optional[str]) -> _SlowSource._Credential:
        return self._Credential(value)

    class _Credential:
        def __init__(self, value: Optional[str]) -> None:
            self.value = value

        async def get_token(self, *scopes: str) -> object:
            import asyncio
            import base64
            import json

            from azure.core.credentials import AccessToken

            await asyncio.sleep(0.05)
            claims = base64.urlsafe_b64encode(json.dumps({"oid": self.value}).encode()).decode().rstrip("=")
            return AccessToken(f"e30.{claims}.", int(time.time()) + 3600)


def _churn(port: int, seconds: float, clients: int) -> dict[str, int]:
    """As the second user: ``clients`` keep-alive connections asking for new identities for ``seconds``."""
    import http.client

    statuses: dict[str, int] = {}
    stop = time.monotonic() + seconds

    def client(number: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        asked = 0
        while time.monotonic() < stop:
            asked += 1
            connection.request(
                "GET",
                f"/oauth2/token?resource={RESOURCE}&object_id=churn-{number}-{asked}",
                headers={"Metadata": "true"},
            )
            answer = connection.getresponse()
            answer.read()
            statuses[str(answer.status)] = statuses.get(str(answer.status), 0) + 1
        connection.close()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


def two_users(seconds: float, clients: int = 32) -> dict[str, Any]:
    """A victim's cached and uncached latencies (ms) while another local uid churns identities.

    The churner is a forked child that drops to uid 65534 (so this needs root); the victim
    is this process, asking again for one of its 8 cached tokens every 0.2 s (each every
    1.6 s) and for a new identity every 2 s. The bridge keeps 20 tokens and the gate is
    IMDS's (4 at once, 15 a second, 2 s wait): the churn goes through the whole cache in
    about a second and keeps the gate's queue full.
    """
    import json

    import requests

    from legacy_msi_credential.bridge import ServerLimits, TokenSource

    source = TokenSource("imds", credential_factory=_SlowSource(), limits=ServerLimits(max_tokens=_TWO_USERS_CACHE))
    cached: list[float] = []
    uncached: list[float] = []
    statuses: list[int] = []
    with Bridge(port=0, source=source) as bridge, requests.Session() as session:

        def ask(identity: str, into: list[float]) -> None:
            started = time.perf_counter()
            answer = session.get(
                bridge.endpoint, params={"resource": RESOURCE, "object_id": identity}, headers={"Metadata": "true"}
            )
            into.append((time.perf_counter() - started) * 1000)
            statuses.append(answer.status_code)

        mine = [f"victim-{number}" for number in range(8)]
        for identity in mine:
            ask(identity, [])  # cached from now on
        statuses.clear()
        reading, writing = os.pipe()
        pid = os.fork()
        if pid == 0:  # the churner
            code = 1
            try:
                os.close(reading)
                os.setgroups([])
                os.setgid(_CHURNER)
                os.setuid(_CHURNER)
                os.write(writing, json.dumps(_churn(bridge.port, seconds, clients)).encode())
                code = 0
            finally:
                os._exit(code)
        os.close(writing)
        time.sleep(0.5)  # the churn under way
        stop = time.monotonic() + seconds - 1.0
        tick = 0
        while time.monotonic() < stop:
            tick += 1
            ask(mine[tick % len(mine)], cached)
            if tick % 10 == 0:
                ask(f"victim-new-{tick}", uncached)
            time.sleep(0.2)
        with os.fdopen(reading, "rb") as pipe:
            churned = json.loads(pipe.read() or b"{}")
        _, status = os.waitpid(pid, 0)
        if status:
            raise SystemExit("the churning user's process failed")

    def p99(samples: list[float]) -> float:
        return sorted(samples)[max(0, int(len(samples) * 0.99) - 1)] if samples else 0.0

    return {
        "cached_p99": p99(cached),
        "cached_count": len(cached),
        "uncached_p99": p99(uncached),
        "uncached_worst": max(uncached, default=0.0),
        "uncached_count": len(uncached),
        "victim_429": statuses.count(429),
        "victim_failed": sum(status != 200 for status in statuses),
        "churn": churned,
    }


def two_users_section(quick: bool) -> list[str]:
    """Print the two-user figures; the names of the targets missed."""
    if os.geteuid() != 0:
        print("Two local users: not measured (acting as a second user needs root)")
        return ["two users"] if os.environ.get("CI") else []
    seconds = 4 if quick else 10
    figures = two_users(seconds)
    print(
        f"Two local users: uid {_CHURNER} churns new identities ({seconds} s, 32 clients, "
        f"{_TWO_USERS_CACHE} tokens kept)"
    )
    print(f"  the churner's answers: {figures['churn']}")
    print(
        f"  the victim's cached answers: p99 {figures['cached_p99']:.1f} ms of {figures['cached_count']}; "
        f"uncached: p99 {figures['uncached_p99']:.0f} ms, worst {figures['uncached_worst']:.0f} ms of "
        f"{figures['uncached_count']}; 429s: {figures['victim_429']}"
    )
    print("  targets: cached p99 under 20 ms, uncached under 2.5 s, no 429")
    if figures["cached_p99"] >= 20 or figures["uncached_worst"] >= 2500 or figures["victim_failed"]:
        return ["two users"]
    return []


_CHILD_BRIDGE = """
import json, resource, sys, time
from azure.core.credentials import AccessToken
from legacy_msi_credential.bridge import UNIT_LIMITS, Bridge, TokenSource

nofile = UNIT_LIMITS["LimitNOFILE"]  # as the unit gives it
resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

class Source:
    def __call__(self, kind, parameter, value):
        return self
    def get_token(self, *scopes):
        return AccessToken("e30.e30.", int(time.time()) + 3600)

with Bridge(port=0, source=TokenSource("imds", credential_factory=Source())) as bridge:
    print(bridge.port, flush=True)
    sys.stdin.read()
    print(json.dumps({"displaced": bridge.connections.displaced, "limit": bridge.connections.limit}), flush=True)
"""


@contextmanager
def child_bridge() -> Iterator[tuple[subprocess.Popen[str], int]]:
    """A bridge with the default limits in a process of its own, under the unit's descriptor limit."""
    env = dict(os.environ, PYTHONPATH=str(HERE.parent))
    process = subprocess.Popen(
        [sys.executable, "-c", _CHILD_BRIDGE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert process.stdout is not None
        yield process, int(process.stdout.readline())
    finally:
        if process.poll() is None:
            process.communicate("", timeout=30)


def _rss(pid: int) -> float:
    """Resident MiB of process ``pid``."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024  # type: ignore[union-attr]


def _more_descriptors(count: int) -> None:
    """This process holds ``count`` sockets at once: raise its soft limit where it is lower."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < count:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(count, hard), hard))


def maximal_head() -> bytes:
    """All the request head a connection may send (``max_head`` less 100 bytes), never ended."""
    from legacy_msi_credential._server._limits import DEFAULT_LIMITS

    line = b"X-Fill: " + b"a" * 1000 + b"\r\n"
    head = b"GET /oauth2/token?resource=x HTTP/1.1\r\nHost: localhost\r\n"
    return head + line * ((DEFAULT_LIMITS.max_head - len(head) - 100) // len(line))


def maximal_body() -> bytes:
    """A whole head announcing the largest body allowed, and all of that body but 100 bytes."""
    from legacy_msi_credential._server._limits import DEFAULT_LIMITS

    size = DEFAULT_LIMITS.max_body
    head = (
        "POST /oauth2/token HTTP/1.1\r\nHost: localhost\r\nMetadata: true\r\n"
        f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {size}\r\n\r\n"
    ).encode()
    return head + b"resource=" + b"a" * (size - 100 - len(b"resource="))


def held_requests(count: int, request: bytes) -> dict[str, float]:
    """Resident MiB of a bridge before, while and after ``count`` connections each send ``request`` and never end it."""
    _more_descriptors(count + 256)
    with child_bridge() as (process, port):
        before = _rss(process.pid)
        sockets = []
        peak = before
        for number in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sockets.append(sock)
            with suppress(OSError):  # displaced once what they hold together reaches its budget
                sock.sendall(request)
            if number % 128 == 127:
                peak = max(peak, _rss(process.pid))
        time.sleep(0.5)  # the last bytes parsed
        peak = max(peak, _rss(process.pid))
        for sock in sockets:
            sock.close()
        time.sleep(0.5)
        after = _rss(process.pid)
    return {"before": before, "during": peak, "after": after}


def churn(rounds: int, clients: int) -> tuple[int, int, int]:
    """Slow-but-timely clients answered, of how many, while silent connections churn; and how many churned."""
    _more_descriptors(3000)
    request = f"GET /oauth2/token?resource={RESOURCE} HTTP/1.1\r\nHost: localhost\r\nMetadata: true\r\n"
    lines = [line.encode() + b"\r\n" for line in request.split("\r\n")[:-1]] + [b"Connection: close\r\n", b"\r\n"]
    with child_bridge() as (_, port):
        stop = threading.Event()
        opened = [0]

        def flood() -> None:
            silent: list[socket.socket] = []
            while not stop.is_set():
                for _ in range(100):
                    sock = socket.socket()
                    sock.setblocking(False)
                    with suppress(BlockingIOError):
                        sock.connect(("127.0.0.1", port))
                    silent.append(sock)
                opened[0] += 100
                if len(silent) > 2000:
                    for sock in silent[:100]:
                        sock.close()
                    del silent[:100]
                stop.wait(0.01)
            for sock in silent:
                sock.close()

        answered = []

        def slow_client() -> None:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
                    for line in lines:  # five lines, 200 ms apart
                        sock.sendall(line)
                        if line != b"\r\n":
                            time.sleep(0.2)
                    answered.append(sock.recv(65536).startswith(b"HTTP/1.1 200"))
            except OSError:
                answered.append(False)

        flooding = threading.Thread(target=flood, daemon=True)
        flooding.start()
        time.sleep(0.5)  # the flood under way
        for _ in range(rounds):
            threads = [threading.Thread(target=slow_client) for _ in range(clients)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
        stop.set()
        flooding.join(30)
    return sum(answered), rounds * clients, opened[0]


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI mode: fewer processes, shorter runs")
    args = parser.parse_args(argv)
    processes = 20 if args.quick else 60
    seconds = 3 if args.quick else 10
    missed = []

    through_bridge, direct = broker(processes)
    print(f"Broker: {processes} processes, each with its own credential, get a token")
    print(f"  IMDS requests through the bridge:                {through_bridge}")
    print(f"  IMDS requests straight (ManagedIdentityCredential): {direct}")
    print(f"  ratio: {direct / max(1, through_bridge):.0f}x fewer through the bridge (target: 1 request)")
    if through_bridge != 1:
        missed.append("broker")

    with cached_bridge() as (bridge, url):
        if shutil.which("wrk") is None:
            print("wrk not installed (Debian package wrk): throughput not measured")
            if os.environ.get("CI"):
                missed.append("wrk")
        else:
            rate, p99, cpu = wrk(url, seconds)
            print(
                f"Cached answers, 32 keep-alive clients (wrk, {seconds} s): {rate:,.0f}/s, p99 {p99:.1f} ms, "
                f"{cpu:.0f} us of the bridge's CPU each"
            )
            # The bridge's CPU per answer is the gate: the rate and p99 of a shared 2-core VM move
            # with its neighbours (the same code has measured 2,700 to 8,000/s and p99 from 5 to
            # 30 ms), while the CPU an answer costs moves only with the code (290 to 340 us).
            cpu_limit = 500 if args.quick else 400
            print(f"  targets: at most {cpu_limit} us of CPU an answer, at least 2,000/s, p99 under 50 ms")
            if cpu > cpu_limit or rate < 2000 or p99 >= 50:
                missed.append("throughput")
            with Tricklers(bridge.port, 512) as slow:
                rate_slow, p99_slow, _ = wrk(url, seconds)
                print(
                    f"  the same while 512 slow clients trickle: {rate_slow:,.0f}/s, p99 {p99_slow:.1f} ms "
                    f"({slow.reconnects} slow reconnects after their deadline)"
                )
                if rate_slow < (1500 if args.quick else 2000):
                    missed.append("throughput under slow clients")
        with Tricklers(bridge.port, 512) as slow:
            samples = one_new_client(url, 50)
            worst = max(samples)
            print(
                f"A new client asking for a cached token while 512 slow clients trickle: median "
                f"{statistics.median(samples):.1f} ms, worst {worst:.1f} ms of 50 (target: every one under 100 ms); "
                f"{bridge.connections.timed_out} connections cut at their deadline"
            )
            if worst >= 100:
                missed.append("starvation")
    identities = 2_000 if args.quick else 10_000
    held = memory(identities)
    print(
        f"Memory: {held['before']:.0f} MiB resident, {held['after']:.0f} MiB after {identities:,} distinct identities "
        f"({held['cached']:.0f} tokens kept; target: under 96 MiB, within the unit's MemoryMax=128M)"
    )
    if held["after"] >= 96 or held["cached"] > 1000:
        missed.append("memory")

    from legacy_msi_credential._server._limits import DEFAULT_LIMITS

    MAX_HEAD, MAX_BODY = DEFAULT_LIMITS.max_head, DEFAULT_LIMITS.max_body
    MAX_PENDING, MEMORY_MAX = DEFAULT_LIMITS.max_pending, DEFAULT_LIMITS.memory_max

    limit = MEMORY_MAX / 2**20
    for name, request, what in (
        ("Heads", maximal_head(), f"{MAX_HEAD // 1024} KiB of request head less 100 bytes"),
        ("Bodies", maximal_body(), f"a head and {MAX_BODY // 1024} KiB of request body less 100 bytes"),
    ):
        figures = held_requests(1024, request)
        print(
            f"{name}: 1,024 connections each send {what} and never end it ({MAX_PENDING // 2**20} MiB held together "
            f"at most): {figures['before']:.0f} MiB resident before, {figures['during']:.0f} MiB while "
            f"({figures['during'] / limit:.0%} of MemoryMax={limit:.0f}M), {figures['after']:.0f} MiB after "
            "(target: under 75% of MemoryMax)"
        )
        if figures["during"] >= 0.75 * limit:
            missed.append(name.lower())
    rounds = 1 if args.quick else 8
    answered, asked, churned = churn(rounds, 25)
    print(
        f"Churn: {answered} of {asked} clients sending a line every 200 ms answered ({answered / asked:.1%}) while "
        f"{churned:,} silent connections were opened (target: at least 99%)"
    )
    if answered < 0.99 * asked:
        missed.append("churn")
    missed += two_users_section(args.quick)
    if missed:
        print(f"MISSED: {', '.join(missed)}")
        return 1
    print("All bridge targets met.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
