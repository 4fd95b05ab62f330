"""legacy-msi-credential against azure-identity's ManagedIdentityCredential, side by side.

Every figure is measured for this package and for azure-identity on the same emulator on
loopback, in one run, and printed with its ratio and target. Exit status 1 when a target
is missed.

    python benchmarks/run.py --quick    # CI: fewer runs; exact request counts, ratios with margins
    python benchmarks/run.py            # full: the published targets; the results go to a temporary directory
    python benchmarks/run.py --publish  # full, and rewrite results/ and README.md's table with its figures
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _setup import CREDENTIALS, SCOPE  # noqa: E402

from legacy_msi_credential import LegacyMsiCredential  # noqa: E402
from legacy_msi_credential.aio import LegacyMsiCredential as AsyncLegacyMsiCredential  # noqa: E402
from legacy_msi_credential.emulator import Emulator, Fault  # noqa: E402

logging.disable(logging.WARNING)
OURS = "legacy-msi-credential"
FLOOR = "floor: azure-core pipeline"
#: The first token's target: how much more than the floor (FLOOR) the credential may take for
#: what it adds (a guarded session, the loopback check, the answer's checks, the cache).
FIRST_TOKEN_OVER_FLOOR = 1.3


@dataclass
class Figure:
    name: str
    unit: str
    values: dict[str, float]
    target: str
    ok: bool
    ratio: Optional[float] = None
    spread: dict[str, float] = field(default_factory=dict)
    note: str = ""


def _clean_env() -> dict[str, str]:
    env = dict(os.environ)
    for name in ("MSI_ENDPOINT", "MSI_SECRET", "AZURE_POD_IDENTITY_AUTHORITY_HOST", "LEGACY_MSI_ENDPOINT"):
        env.pop(name, None)
    env["PYTHONPATH"] = str(HERE.parent) + os.pathsep + env.get("PYTHONPATH", "")
    return env


# --- cached path (pyperf) ------------------------------------------------------------------


def cached_path(quick: bool) -> list[Figure]:
    from pyperf import BenchmarkSuite

    with tempfile.TemporaryDirectory() as folder:
        output = Path(folder) / "cached.json"
        command = [sys.executable, str(HERE / "bench_cached.py"), "--quiet", "-o", str(output)]
        command += ["--processes", "3", "--values", "3"] if quick else ["--processes", "8", "--values", "5"]
        subprocess.run(command, check=True, env=_clean_env(), cwd=HERE)
        suite = BenchmarkSuite.load(str(output))
    medians = {b.get_name(): b.median() * 1e6 for b in suite.get_benchmarks()}
    spreads = {b.get_name(): b.stdev() * 1e6 for b in suite.get_benchmarks()}
    figures = []
    for method in ("get_token", "get_token_info"):
        values = {name: medians[f"{name} {method}"] for name in CREDENTIALS}
        others = [v for k, v in values.items() if k != OURS]
        ratio = values[OURS] / min(others)
        # Quick mode still fails a cached path 10x slower than today's 0.25 µs.
        limit, factor = (1.5, 8.0) if quick else (1.0, 10.0)
        ok = values[OURS] <= limit and min(others) / values[OURS] >= factor
        figures.append(
            Figure(
                f"cached {method}",
                "µs",
                values,
                f"<= {limit:g} µs and >= {factor:g}x faster than either",
                ok,
                ratio,
                {name: spreads[f"{name} {method}"] for name in CREDENTIALS},
            )
        )
    return figures


# --- first token and import, in fresh processes ------------------------------------------------

_FIRST_TOKEN = {
    OURS: (
        "from legacy_msi_credential import LegacyMsiCredential",
        "LegacyMsiCredential(endpoint=URL).get_token(SCOPE)",
        {},
    ),
    "identity (MSI_ENDPOINT)": (
        "from azure.identity import ManagedIdentityCredential",
        "ManagedIdentityCredential().get_token(SCOPE)",
        {"MSI_ENDPOINT": "{url}"},
    ),
    "identity (IMDS)": (
        "from azure.identity import ManagedIdentityCredential",
        "ManagedIdentityCredential().get_token(SCOPE)",
        {"AZURE_POD_IDENTITY_AUTHORITY_HOST": "{imds}"},
    ),
    "bare requests": (
        "import requests",
        "requests.Session().get(URL, params={'resource': SCOPE[:-9]}, headers={'Metadata': 'true'}).json()",
        {},
    ),
    # The floor: what any credential on azure-core's pipeline over requests does for its first
    # token (the policies an Azure SDK client's pipeline has, no cache, no retry waits), its
    # imports made first, as importing this package's credential makes them.
    FLOOR: (
        "from azure.core.pipeline import Pipeline\n"
        "from azure.core.pipeline.policies import (CustomHookPolicy, DistributedTracingPolicy, HeadersPolicy,\n"
        "    HttpLoggingPolicy, NetworkTraceLoggingPolicy, RetryPolicy, UserAgentPolicy)\n"
        "from azure.core.pipeline.transport import RequestsTransport\n"
        "from azure.core.rest import HttpRequest",
        "policies = [HeadersPolicy(), UserAgentPolicy(), RetryPolicy(), CustomHookPolicy(),\n"
        "    NetworkTraceLoggingPolicy(), DistributedTracingPolicy(), HttpLoggingPolicy()]\n"
        "with Pipeline(RequestsTransport(), policies) as pipeline:\n"
        "    request = HttpRequest('GET', URL, params={'resource': SCOPE[:-9]}, headers={'Metadata': 'true'})\n"
        "    pipeline.run(request).http_response.json()",
        {},
    ),
}


def _first_token_once(emulator: Emulator, kind: str) -> float:
    setup, call, extra = _FIRST_TOKEN[kind]
    code = (
        f"import time, logging\nlogging.disable(logging.WARNING)\n{setup}\n"
        f"URL, SCOPE = {emulator.endpoint!r}, {SCOPE!r}\n"
        f"t = time.perf_counter()\n{call}\nprint(time.perf_counter() - t)\n"
    )
    env = _clean_env()
    env.update({k: v.format(url=emulator.endpoint, imds=emulator.imds_authority) for k, v in extra.items()})
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return float(result.stdout.strip().splitlines()[-1])


def first_token(quick: bool) -> Figure:
    runs = 5 if quick else 21
    samples: dict[str, list[float]] = {kind: [] for kind in _FIRST_TOKEN}
    with Emulator(port=0) as emulator:
        for _ in range(runs):
            for kind in _FIRST_TOKEN:  # interleaved, so drift affects all alike
                samples[kind].append(_first_token_once(emulator, kind) * 1000)
    values = {kind: statistics.median(s) for kind, s in samples.items()}
    identity = min(values["identity (MSI_ENDPOINT)"], values["identity (IMDS)"])
    ratio = values[OURS] / identity
    versus_floor = values[OURS] / values[FLOOR]
    # The target is set against the floor measured in the same run: a ratio to azure-identity
    # that the dependencies alone cannot reach is no target, and it is published all the same.
    # Quick mode (5 runs on a shared CI machine) varies by about 2x from run to run, so it
    # only catches a first token that got twice as slow; the full run holds the real target.
    limit = 2.0 if quick else FIRST_TOKEN_OVER_FLOOR
    return Figure(
        "first token (construct + get_token)",
        "ms",
        values,
        f"<= {limit:g}x the floor (an azure-core pipeline over requests doing the same request)",
        versus_floor <= limit,
        ratio,
        {kind: statistics.pstdev(s) for kind, s in samples.items()},
        note=f"ours is {versus_floor:.2f}x the floor, which is itself {values[FLOOR] / identity:.2f}x azure-identity",
    )


_PEAK = "print([line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM')][0])"


def _import_once(module: str) -> tuple[float, float]:
    """Wall time of ``python -c "import MODULE"``, and the peak memory of such a process.

    The peak is read from the child's own ``VmHWM``, which exec resets (``ru_maxrss``
    would include the parent's pages from before the child's exec).
    """
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"import {module}"], env=_clean_env(), check=True)
    elapsed = time.perf_counter() - started
    peak = subprocess.run(
        [sys.executable, "-c", f"import {module}\n{_PEAK}"],
        env=_clean_env(),
        check=True,
        capture_output=True,
        text=True,
    )
    return elapsed * 1000, int(peak.stdout.strip()) / 1024  # ms, MiB


def import_cost(quick: bool) -> list[Figure]:
    runs = 5 if quick else 15
    modules = {
        OURS: "legacy_msi_credential",
        "azure-identity": "azure.identity",
        # What any credential built on azure-core's RequestsTransport must import.
        "floor: azure-core + requests": "azure.core.pipeline.transport._requests_basic",
    }
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in modules}
    for _ in range(runs):
        for name, module in modules.items():
            samples[name].append(_import_once(module))
    limit = 0.9 if quick else 0.6
    figures = []
    for index, (what, unit) in enumerate((("import wall time", "ms"), ("import peak memory", "MiB"))):
        values = {name: statistics.median(s[index] for s in runs_) for name, runs_ in samples.items()}
        ratio = values[OURS] / values["azure-identity"]
        floor = values["floor: azure-core + requests"]
        note = (
            f"ours is {values[OURS] / floor:.2f}x the floor, which is itself "
            f"{floor / values['azure-identity']:.2f}x azure-identity"
        )
        figures.append(Figure(what, unit, values, f"<= {limit:g}x azure-identity", ratio <= limit, ratio, note=note))
    return figures


# --- concurrency ---------------------------------------------------------------------------------


def _in_threads(target: Callable[[], None], threads: int) -> None:
    """Run ``target`` in ``threads`` threads at once and wait for all of them."""
    workers = [threading.Thread(target=target) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


def threads_cold_start(threads: int = 64) -> Figure:
    counts = {}
    for name, make in CREDENTIALS.items():
        with Emulator(port=0) as emulator:
            emulator.add_faults(*[Fault.delay(0.05)] * threads)  # a cold extension asks Azure AD first
            credential = make(emulator)
            barrier = threading.Barrier(threads)

            def ask(credential: Any = credential, barrier: threading.Barrier = barrier) -> None:
                barrier.wait()
                credential.get_token(SCOPE)

            _in_threads(ask, threads)
            counts[name] = float(emulator.request_count)
    return Figure(f"{threads} threads, empty cache", "requests", counts, "exactly 1 request", counts[OURS] == 1)


def tasks_cold_start(tasks: int = 1000) -> Figure:
    counts = {}

    async def ours(emulator: Emulator) -> None:
        async with AsyncLegacyMsiCredential(endpoint=emulator.endpoint) as credential:
            await asyncio.gather(*(credential.get_token(SCOPE) for _ in range(tasks)))

    async def identity(emulator: Emulator) -> None:
        os.environ["AZURE_POD_IDENTITY_AUTHORITY_HOST"] = emulator.imds_authority
        from azure.identity.aio import ManagedIdentityCredential

        async with ManagedIdentityCredential() as credential:
            await asyncio.gather(*(credential.get_token(SCOPE) for _ in range(tasks)))

    runs: dict[str, Callable[[Emulator], Any]] = {OURS: ours, "identity (IMDS)": identity}
    for name, run in runs.items():
        with Emulator(port=0) as emulator:
            emulator.add_faults(*[Fault.delay(0.05)] * 50)
            asyncio.run(run(emulator))
            counts[name] = float(emulator.request_count)
    os.environ.pop("AZURE_POD_IDENTITY_AUTHORITY_HOST", None)
    return Figure(f"{tasks} asyncio tasks, empty cache", "requests", counts, "exactly 1 request", counts[OURS] == 1)


class _SharedClock:
    """Simulated time that every call moves forward by ``step`` seconds."""

    def __init__(self, step: float) -> None:
        self.now = time.time()
        self.step = step
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def tick(self) -> None:
        with self._lock:
            self.now += self.step


def steady_state(calls: int = 10_000, threads: int = 8, refreshes: int = 5) -> Figure:
    lifetime = 3600
    fresh_span = lifetime - 300  # refresh_on is 5 minutes before expiry for a 1 h token
    clock = _SharedClock(step=fresh_span * (refreshes + 0.5) / calls)
    with Emulator(port=0, lifetime=lifetime, clock=clock) as emulator:
        credential = LegacyMsiCredential(endpoint=emulator.endpoint, clock=clock)
        latencies: list[float] = []
        seen: set[str] = set()
        lock = threading.Lock()

        def work() -> None:
            mine = []
            for _ in range(calls // threads):
                started = time.perf_counter()
                token = credential.get_token(SCOPE).token
                mine.append(time.perf_counter() - started)
                clock.tick()
                with lock:
                    seen.add(token)
            with lock:
                latencies.extend(mine)

        _in_threads(work, threads)
        requests_made = emulator.request_count
    # One request per distinct token (no stampede), one first token plus the refreshes.
    slowest = max(latencies) * 1000
    values = {"requests": float(requests_made), "tokens": float(len(seen)), "slowest call ms": slowest}
    ok = requests_made == len(seen) == refreshes + 1
    return Figure(
        f"steady state: {calls} calls, {threads} threads, {refreshes} refreshes",
        "",
        values,
        f"requests = 1 + {refreshes} refreshes",
        ok,
    )


# --- the plot ------------------------------------------------------------------------------------


def latency_plot(path: Path, batches: int = 2000, batch: int = 100) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {}
    with Emulator(port=0) as emulator:
        for name, make in CREDENTIALS.items():
            credential = make(emulator)
            credential.get_token(SCOPE)
            get = credential.get_token
            samples = []
            for _ in range(batches):
                started = time.perf_counter_ns()
                for _ in range(batch):
                    get(SCOPE)
                samples.append((time.perf_counter_ns() - started) / batch / 1000)
            series[name] = samples
    figure, axis = plt.subplots(figsize=(8, 4.5))
    for name, samples in series.items():
        axis.hist(samples, bins=200, histtype="step", label=f"{name} (median {statistics.median(samples):.2f} µs)")
    axis.set_xscale("log")
    axis.set_xlabel("get_token with a fresh cached token, µs per call (log scale)")
    axis.set_ylabel(f"batches of {batch} calls")
    axis.set_title("Cached-path latency: legacy-msi-credential vs azure-identity")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)


# --- report --------------------------------------------------------------------------------------


def _fmt(value: float) -> str:
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def _amount(value: float, unit: str) -> str:
    """A value and its unit, if it has one: ``4.9 ms``, ``1 request``, ``6``."""
    if unit.endswith("s") and value == 1 and unit != "ms":
        unit = unit[:-1]
    return f"{_fmt(value)} {unit}".rstrip()


#: The files whose change makes the published figures stale (tests/e2e/test_docs.py checks it).
BENCHMARK_CODE = ("benchmarks/run.py", "benchmarks/bench_cached.py", "benchmarks/_setup.py")
RESULTS_START = "<!-- results: generated by benchmarks/run.py, do not edit -->"
RESULTS_END = "<!-- results: end -->"


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=HERE.parent, capture_output=True, text=True, check=True).stdout.strip()


def code_digest(root: Path = HERE.parent) -> str:
    """SHA-256 of the benchmark code's bytes, file by file: what the published figures are
    tied to. It needs no git history, so a shallow or re-written clone checks it the same."""
    digest = hashlib.sha256()
    for name in BENCHMARK_CODE:
        data = (root / name).read_bytes()
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def stamp() -> dict[str, Any]:
    """What was measured: the benchmark code's digest, the commit (for reference), the machine."""
    import azure.core
    import azure.identity
    import requests

    dirty = bool(_git("status", "--porcelain", "--", *BENCHMARK_CODE))
    return {
        "benchmark_code_sha256": code_digest(),
        "commit": _git("rev-parse", "HEAD"),
        "benchmark_code_modified": dirty,
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "libraries": f"azure-core {azure.core.__version__}, azure-identity {azure.identity.__version__}, "
        f"requests {requests.__version__}",
    }


def markdown(figures: list[Figure], measured: dict[str, Any]) -> str:
    """The README's results table, from a run."""
    names = ["legacy-msi-credential", "identity (MSI_ENDPOINT)", "identity (IMDS)"]
    lines = [
        RESULTS_START,
        "",
        f"Measured on {measured['date']} with the benchmark code of SHA-256 "
        f"`{measured['benchmark_code_sha256'][:16]}` (commit `{measured['commit'][:12]}`): {measured['machine']}, "
        f"{measured['python']}, {measured['libraries']}.",
        "",
        "| figure | legacy-msi-credential | identity (MSI_ENDPOINT) | identity (IMDS) | ratio | target |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for figure in figures:
        cells = []
        for name in names:
            value = figure.values.get(name)
            spread = f" ± {_fmt(figure.spread[name])}" if name in figure.spread else ""
            cells.append("" if value is None else f"{_amount(value, figure.unit)}{spread}")
        others = [
            f"{name}: {_amount(value, figure.unit)}" for name, value in figure.values.items() if name not in names
        ]
        if others:
            cells[0] = "; ".join(filter(None, [cells[0], *others]))
        ratio = "" if figure.ratio is None else f"{figure.ratio:.3f}"
        verdict = "met" if figure.ok else "**missed**"
        target = f"{figure.target}: {verdict}" + (f" ({figure.note})" if figure.note else "")
        lines.append(f"| {figure.name} | {' | '.join(cells)} | {ratio} | {target} |")
    lines += ["", RESULTS_END]
    return "\n".join(lines)


#: Where ``--publish`` writes: the results the README shows, and the README.
RESULTS = HERE / "results"
README = HERE / "README.md"


def save(figures: list[Figure], folder: Path) -> dict[str, Any]:
    """Write the run, stamped with the benchmark code's digest and the commit, to
    ``folder/latest.json``; returns the stamp."""
    measured = stamp()
    document = {**measured, "figures": [figure.__dict__ for figure in figures]}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "latest.json").write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    return measured


def publish(figures: list[Figure], measured: dict[str, Any], readme: Path = README) -> None:
    """Rewrite the README's results section from the run saved in ``results/``."""
    text = readme.read_text(encoding="utf-8")
    start, end = text.index(RESULTS_START), text.index(RESULTS_END) + len(RESULTS_END)
    readme.write_text(text[:start] + markdown(figures, measured) + text[end:], encoding="utf-8")
    if measured["benchmark_code_modified"]:
        print("\nnote: the benchmark code has uncommitted changes; commit them and run again to publish")


def report(figures: list[Figure]) -> str:
    lines = []
    width = max(len(name) for figure in figures for name in figure.values) + 2
    for figure in figures:
        status = "ok" if figure.ok else "MISSED"
        unit = f" [{figure.unit}]" if figure.unit else ""
        lines.append(f"\n{figure.name}{unit}  target: {figure.target}  -> {status}")
        for name, value in figure.values.items():
            spread = f" ± {_fmt(figure.spread[name])}" if name in figure.spread else ""
            lines.append(f"    {name:<{width}}{_fmt(value)}{spread}")
        if figure.ratio is not None:
            lines.append(f"    ratio (ours / azure-identity): {figure.ratio:.3f}")
        if figure.note:
            lines.append(f"    {figure.note}")
    return "\n".join(lines)


# --- failures: shared, and how fast a chain moves on ------------------------------------------


def _recording_transport(sleeps: list[float]) -> Any:
    """azure-core's requests transport whose retry waits are recorded, not slept."""
    from azure.core.pipeline.transport import RequestsTransport

    class Recording(RequestsTransport):  # type: ignore[misc]
        def sleep(self, duration: float) -> None:
            sleeps.append(duration)

    return Recording(use_env_settings=False)


def shared_failure(threads: int = 64) -> Figure:
    """Cold callers, an endpoint answering 503 to everything: how many requests, how long the slowest waits.

    Retry waits are recorded rather than slept, for both credentials, so the figure is the
    number of requests and the simulated wait of the slowest caller.
    """
    requests_sent: dict[str, float] = {}
    slowest: dict[str, float] = {}
    makers: dict[str, Callable[[Emulator, list[float]], Any]] = {
        OURS: lambda emulator, sleeps: LegacyMsiCredential(
            endpoint=emulator.endpoint, transport=_recording_transport(sleeps)
        ),
    }

    def identity(emulator: Emulator, sleeps: list[float]) -> Any:
        os.environ["AZURE_POD_IDENTITY_AUTHORITY_HOST"] = emulator.imds_authority
        from azure.identity import ManagedIdentityCredential

        return ManagedIdentityCredential(transport=_recording_transport(sleeps))

    makers["identity (IMDS)"] = identity
    for name, make in makers.items():
        with Emulator(port=0) as emulator:
            emulator.add_faults(*[Fault.http_error(503)] * 10_000)
            sleeps: list[float] = []
            credential = make(emulator, sleeps)
            barrier = threading.Barrier(threads)
            waits: list[float] = []

            def ask(
                credential: Any = credential, barrier: threading.Barrier = barrier, waits: list[float] = waits
            ) -> None:
                barrier.wait()
                started = time.perf_counter()
                with contextlib.suppress(Exception):  # every caller is expected to fail
                    credential.get_token(SCOPE)
                waits.append(time.perf_counter() - started)

            _in_threads(ask, threads)
            requests_sent[name] = float(emulator.request_count)
            slowest[name] = max(waits) + sum(sleeps) / max(1.0, requests_sent[name] / 5)
    os.environ.pop("AZURE_POD_IDENTITY_AUTHORITY_HOST", None)
    return Figure(
        f"{threads} threads, empty cache, endpoint answering 503",
        "requests",
        requests_sent,
        "at most 5 requests (one retry sequence)",
        requests_sent[OURS] <= 5,
        note=f"recorded retry waits: ours {slowest[OURS]:.1f} s for the slowest caller",
    )


def chain_fallthrough(quick: bool) -> list[Figure]:
    """A chain whose first step finds nothing listening: how long until the next step answers."""
    from azure.core.credentials import AccessToken
    from azure.identity import ChainedTokenCredential, ManagedIdentityCredential

    class Static:
        def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
            return AccessToken("static", int(time.time()) + 3600)

    with Emulator(port=0) as probe:
        dead = probe.endpoint  # released on exit: nothing listens there any more
    runs = 7 if quick else 21
    ours = []
    for _ in range(runs):
        chain = ChainedTokenCredential(LegacyMsiCredential(endpoint=dead), Static())
        started = time.perf_counter()
        chain.get_token(SCOPE)
        ours.append((time.perf_counter() - started) * 1000)
    os.environ["MSI_ENDPOINT"] = dead
    try:
        workaround = ManagedIdentityCredential()
    finally:
        del os.environ["MSI_ENDPOINT"]
    chain = ChainedTokenCredential(workaround, Static())
    started = time.perf_counter()
    try:
        chain.get_token(SCOPE)
        outcome = "the chain moved on"
    except Exception as exc:  # the workaround stops the chain: that is the figure
        outcome = f"the chain stopped with {type(exc).__name__}"
    workaround_ms = (time.perf_counter() - started) * 1000
    values = {OURS: statistics.median(ours), "identity (MSI_ENDPOINT workaround)": workaround_ms}
    return [
        Figure(
            "chain, nothing on the legacy port: time to the next credential",
            "ms",
            values,
            "ours under 5 ms (the README says within milliseconds; the workaround about 5 s)",
            values[OURS] < 5.0,
            values[OURS] / workaround_ms,
            note=f"workaround: {outcome}",
        )
    ]


# --- the bridge ----------------------------------------------------------------------------------------


def bridge_latency(quick: bool) -> Figure:
    """A cached answer from `legacy-msi serve` beside the emulator's and a direct IMDS call through azure-identity."""
    import requests
    from azure.identity import ManagedIdentityCredential

    from legacy_msi_credential.bridge import Bridge

    calls = 50 if quick else 300
    params = {"resource": SCOPE[: -len("/.default")]}
    values: dict[str, float] = {}
    with Emulator(port=0) as imds:
        os.environ["AZURE_POD_IDENTITY_AUTHORITY_HOST"] = imds.imds_authority
        try:
            with Bridge(port=0, source="imds") as bridge, requests.Session() as session:
                for name, url in (("bridge (cached)", bridge.endpoint), ("emulator", imds.endpoint)):
                    session.get(url, params=params, headers={"Metadata": "true"}).raise_for_status()
                    samples = []
                    for _ in range(calls):
                        started = time.perf_counter()
                        session.get(url, params=params, headers={"Metadata": "true"}).json()
                        samples.append((time.perf_counter() - started) * 1000)
                    values[name] = statistics.median(samples)
                samples = []
                for _ in range(max(10, calls // 5)):
                    credential = ManagedIdentityCredential()  # a new one: no cache of its own
                    started = time.perf_counter()
                    credential.get_token(SCOPE)
                    samples.append((time.perf_counter() - started) * 1000)
                    credential.close()
                values["direct IMDS (azure-identity)"] = statistics.median(samples)
                source_requests = bridge.source.requests
        finally:
            os.environ.pop("AZURE_POD_IDENTITY_AUTHORITY_HOST", None)
    ratio = values["bridge (cached)"] / values["emulator"]
    return Figure(
        "legacy-msi serve: one token request over loopback",
        "ms",
        values,
        "cached bridge answer <= 3x the emulator's; 1 source request",
        ratio <= 3.0 and source_requests == 1,
        ratio,
        note=f"the bridge asked its source {source_requests} time(s) for {calls + 1} requests",
    )


def measure(quick: bool) -> list[Figure]:
    """Every figure, this package's and azure-identity's, in one run."""
    return [
        *cached_path(quick),
        first_token(quick),
        *import_cost(quick),
        threads_cold_start(),
        tasks_cold_start(),
        shared_failure(),
        *chain_fallthrough(quick),
        bridge_latency(quick),
        steady_state(),
    ]


def main(argv: Optional[list[str]] = None, *, run: Callable[[bool], list[Figure]] = measure) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI mode: fewer runs, generous ratio margins")
    parser.add_argument(
        "--publish",
        action="store_true",
        help="write the figures where the README shows them: results/latest.json, results/cached_latency.png "
        "and the README's table (a full run only)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        metavar="DIR",
        help="without --publish, where the run's latest.json goes (default: a new temporary directory)",
    )
    parser.add_argument("--plot", action="store_true", help="also draw cached_latency.png (always with --publish)")
    args = parser.parse_args(argv)
    if args.publish and args.quick:
        parser.error("--publish publishes a full run: leave out --quick")
    if args.publish and args.output:
        parser.error("--publish writes to benchmarks/results: leave out --output")
    os.environ.pop("MSI_ENDPOINT", None)

    figures = run(args.quick)
    print(
        f"{platform.python_implementation()} {platform.python_version()} on {platform.machine()}, "
        f"{os.cpu_count()} cores{' (quick mode)' if args.quick else ''}"
    )
    print(report(figures))
    folder = RESULTS if args.publish else args.output or Path(tempfile.mkdtemp(prefix="legacy-msi-benchmarks-"))
    measured = save(figures, folder)
    if args.publish:
        publish(figures, measured)
    if args.plot or args.publish:
        latency_plot(folder / "cached_latency.png")
    print(f"\nresults: {folder / 'latest.json'}" + ("" if args.publish else " (not published: --publish)"))
    missed = [figure.name for figure in figures if not figure.ok]
    if missed:
        print(f"\nMISSED: {', '.join(missed)}")
        return 1
    print("\nAll targets met.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
