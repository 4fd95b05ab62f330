"""`legacy-msi adapt` for clients that cannot import this package: the figures of its section.

* **Throughput**: cached answers per second with keep-alive from 32 clients (``wrk``), and
  p99 latency, by App Service's protocol and by IMDS's, beside the bridge's own (``legacy-msi
  serve``, its legacy protocol) on the same machine in the same run.
* **Broker**: N processes of azure-identity, unmodified, each with its own
  ``ManagedIdentityCredential``, get a token: through the adapter (``IDENTITY_ENDPOINT`` and
  ``IDENTITY_HEADER``), and with the ``MSI_ENDPOINT`` workaround straight to the extension;
  the emulator playing the extension counts the requests it gets.
* **First token**: a fresh process of azure-identity imports it, then times construct + first
  ``get_token``: through the adapter when it has the token cached, through the adapter when it
  must ask the extension first (a resource never asked for), and straight to the extension
  with the ``MSI_ENDPOINT`` workaround. Runs interleaved, median.

    python benchmarks/adapt.py            # 60 processes, 10 s wrk runs, 21 first tokens
    python benchmarks/adapt.py --quick    # 20 processes, 3 s wrk runs, 7 first tokens
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from legacy_msi_credential.adapt import Adapter, Secret  # noqa: E402
from legacy_msi_credential.bridge import Bridge  # noqa: E402
from legacy_msi_credential.emulator import Emulator  # noqa: E402

RESOURCE = "https://management.azure.com/"
SCOPE = RESOURCE + ".default"
#: The variables that choose azure-identity's managed identity flavour: each run sets its own.
_CHOOSERS = ("IDENTITY_ENDPOINT", "IDENTITY_HEADER", "MSI_ENDPOINT", "MSI_SECRET", "IMDS_ENDPOINT",
             "AZURE_POD_IDENTITY_AUTHORITY_HOST", "AZURE_CLIENT_ID", "LEGACY_MSI_ENDPOINT")  # fmt: skip

_GET_ONE = (
    "import sys\nfrom azure.identity import ManagedIdentityCredential\n"
    "with ManagedIdentityCredential() as credential:\n"
    "    assert credential.get_token(sys.argv[1]).token\n"
)
_TIME_ONE = (
    "import sys, time\nfrom azure.identity import ManagedIdentityCredential\n"
    "started = time.perf_counter()\n"
    "with ManagedIdentityCredential() as credential:\n"
    "    assert credential.get_token(sys.argv[1]).token\n"
    "    print((time.perf_counter() - started) * 1000)\n"
)


def clean_environment(**variables: str) -> dict[str, str]:
    """This process's environment without any variable that chooses a flavour, plus ``variables``."""
    env = {name: value for name, value in os.environ.items() if name not in _CHOOSERS}
    env.pop("PYTHONPATH", None)  # azure-identity as installed: nothing of this package
    return {**env, **variables}


def through_adapter(adapter: Adapter) -> dict[str, str]:
    return clean_environment(IDENTITY_ENDPOINT=adapter.identity_endpoint, IDENTITY_HEADER=adapter.secret.reveal())


def workaround(extension: Emulator) -> dict[str, str]:
    """The documented workaround: azure-identity's Cloud Shell flavour pointed at the extension."""
    return clean_environment(MSI_ENDPOINT=extension.endpoint)


def processes(count: int, env: dict[str, str], scope: str = SCOPE) -> None:
    """``count`` processes of azure-identity at once, each getting one token (each must)."""
    running = [
        subprocess.Popen([sys.executable, "-c", _GET_ONE, scope], env=env, stdout=subprocess.DEVNULL)
        for _ in range(count)
    ]
    failed = [process for process in running if process.wait(300) != 0]
    if failed:
        raise SystemExit(f"{len(failed)} of {count} azure-identity processes failed")


def first_token(env: dict[str, str], scope: str) -> float:
    """Milliseconds from constructing azure-identity's credential to its first token, in a fresh process."""
    output = subprocess.run(
        [sys.executable, "-c", _TIME_ONE, scope], env=env, capture_output=True, text=True, check=True
    ).stdout
    return float(output.strip().splitlines()[-1])


def wrk(url: str, seconds: int, headers: dict[str, str]) -> tuple[float, float]:
    """Requests per second and p99 latency (ms) for 32 keep-alive clients; every answer must be a 200."""
    command = ["wrk", "-t2", "-c32", f"-d{seconds}s", "--latency"]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    output = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([0-9.]+)", output).group(1))  # type: ignore[union-attr]
    value, unit = re.search(r"99%\s+([0-9.]+)(us|ms|s)", output).groups()  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if errors:
        raise SystemExit(f"wrk got {errors.group(1)} failed answers from {url}")
    return rate, float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


@contextmanager
def extension_and_adapter() -> Iterator[tuple[Emulator, Adapter]]:
    with (
        Emulator(port=0, known_resources=None) as extension,
        Adapter(port=0, secret=Secret.new(), endpoint=extension.endpoint) as adapter,
    ):
        yield extension, adapter


def throughput(seconds: int) -> dict[str, tuple[float, float]]:
    """Cached answers: the adapter by each protocol, and the bridge (IMDS source) by the legacy one."""
    figures = {}
    with extension_and_adapter() as (extension, adapter):
        app = f"{adapter.identity_endpoint}?api-version=2019-08-01&resource={RESOURCE}"
        imds = f"{adapter.imds_endpoint}?api-version=2018-02-01&resource={RESOURCE}"
        secret = {"X-IDENTITY-HEADER": adapter.secret.reveal()}
        processes(1, through_adapter(adapter))  # cached from now on
        figures["adapter, App Service"] = wrk(app, seconds, secret)
        figures["adapter, IMDS"] = wrk(imds, seconds, {"Metadata": "true"})
        os.environ["AZURE_POD_IDENTITY_AUTHORITY_HOST"] = extension.imds_authority
        try:
            with Bridge(port=0, source="imds") as bridge:
                legacy = f"{bridge.endpoint}?resource={RESOURCE}"
                wrk(legacy, 1, {"Metadata": "true"})  # cached from now on
                figures["bridge, legacy"] = wrk(legacy, seconds, {"Metadata": "true"})
        finally:
            os.environ.pop("AZURE_POD_IDENTITY_AUTHORITY_HOST", None)
    return figures


def broker(count: int) -> tuple[int, int]:
    """Requests the extension gets for ``count`` processes: through the adapter, and with the workaround."""
    with extension_and_adapter() as (extension, adapter):
        processes(count, through_adapter(adapter))
        through = extension.request_count
        extension.reset()
        processes(count, workaround(extension))
        straight = extension.request_count
    return through, straight


def first_tokens(runs: int) -> dict[str, list[float]]:
    """Milliseconds to the first token, each way, ``runs`` times interleaved."""
    samples: dict[str, list[float]] = {"adapter, cached": [], "adapter, uncached": [], "straight (MSI_ENDPOINT)": []}
    with extension_and_adapter() as (extension, adapter):
        adapted, straight = through_adapter(adapter), workaround(extension)
        first_token(adapted, SCOPE)  # the adapter has the token from now on
        for run in range(runs):
            samples["adapter, cached"].append(first_token(adapted, SCOPE))
            samples["adapter, uncached"].append(first_token(adapted, f"https://bench-{run}.example.com/.default"))
            samples["straight (MSI_ENDPOINT)"].append(first_token(straight, SCOPE))
    return samples


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer processes, shorter runs")
    args = parser.parse_args(argv)
    count, seconds, runs = (20, 3, 7) if args.quick else (60, 10, 21)
    missed = []

    if shutil.which("wrk") is None:
        print("wrk not installed (Debian package wrk): throughput not measured")
    else:
        figures = throughput(seconds)
        bridge_rate, _ = figures["bridge, legacy"]
        print(f"Cached answers, 32 keep-alive clients (wrk, {seconds} s):")
        for name, (rate, p99) in figures.items():
            print(f"  {name:22} {rate:8,.0f}/s  p99 {p99:6.1f} ms  ({rate / bridge_rate:.2f}x the bridge's rate)")
        worst = min(rate for rate, _ in figures.values())
        print("  target: the adapter at least 0.5x the bridge's rate (it checks a secret and shapes two answers)")
        if worst < 0.5 * bridge_rate:
            missed.append("throughput")

    through, straight = broker(count)
    print(f"Broker: {count} processes of azure-identity, each with its own ManagedIdentityCredential, get a token")
    print(f"  requests to the extension through the adapter:            {through}")
    print(f"  requests to the extension with the MSI_ENDPOINT workaround: {straight}")
    print(f"  ratio: {straight / max(1, through):.0f}x fewer through the adapter (target: 1 request)")
    if through != 1:
        missed.append("broker")

    samples = first_tokens(runs)
    base = statistics.median(samples["straight (MSI_ENDPOINT)"])
    print(f"First token, azure-identity in a fresh process, construct + get_token (median of {runs}):")
    for name, values in samples.items():
        median = statistics.median(values)
        print(f"  {name:24} {median:6.1f} ms  ({median / base:.2f}x straight to the extension)")
    print("  target: through the adapter, cached, at most 1.5x straight to the extension")
    if statistics.median(samples["adapter, cached"]) > 1.5 * base:
        missed.append("first token")

    if missed:
        print(f"MISSED: {', '.join(missed)}")
        return 1
    print("All adapter targets met.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
