"""pyperf script: the cached path of get_token and get_token_info, for the three credentials.

Run by run.py; alone: python benchmarks/bench_cached.py -o cached.json
"""

from __future__ import annotations

import logging

import pyperf
from _setup import CREDENTIALS, SCOPE

from legacy_msi_credential.emulator import Emulator

logging.disable(logging.WARNING)


def main() -> None:
    runner = pyperf.Runner()
    with Emulator(port=0) as emulator:
        for name, make in CREDENTIALS.items():
            credential = make(emulator)
            credential.get_token(SCOPE)  # warm the cache
            runner.bench_func(f"{name} get_token", credential.get_token, SCOPE)
            runner.bench_func(f"{name} get_token_info", credential.get_token_info, SCOPE)


if __name__ == "__main__":
    main()
