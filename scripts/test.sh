#!/usr/bin/env bash
# The whole test suite, with line coverage of the package (at least 95%), spread over
# pytest-xdist workers (most tests wait on loopback I/O: three times as many workers as CPUs, or
# TEST_WORKERS), the 15 slowest named at the end so that drift is seen.
# Extra arguments go to pytest, e.g. scripts/test.sh -k emulator
# First scripts/setup.sh, which says what it installs and downloads before it does, and
# changes nothing outside the clone unless LEGACY_MSI_SETUP_SYSTEM=1 (Debian packages, as root).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
rm -rf .coverage && mkdir -p .coverage
WORKERS=${TEST_WORKERS:-$(( $(nproc) * 3 ))}
.venv/bin/python -m coverage run -m pytest --numprocesses "$WORKERS" --dist loadgroup --durations 15 "$@"
# A subprocess killed by its test (the signal tests do that) leaves an empty data file.
find .coverage -type f -size 0 -delete
.venv/bin/python -m coverage combine --quiet
.venv/bin/python -m coverage report --fail-under=95
