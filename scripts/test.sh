#!/usr/bin/env bash
# The whole test suite, with line coverage of the package (at least 95%).
# Extra arguments go to pytest, e.g. scripts/test.sh -k emulator
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
rm -rf .coverage && mkdir -p .coverage
.venv/bin/python -m coverage run -m pytest "$@"
.venv/bin/python -m coverage combine --quiet
.venv/bin/python -m coverage report --fail-under=95
