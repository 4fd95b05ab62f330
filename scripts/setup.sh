#!/usr/bin/env bash
# Prepare a fresh checkout: .venv with the package, and Azurite and the pinned Node
# clients (npm). Safe to run again: it only installs what changed.
#
#   scripts/setup.sh              # everything the test suite and CI need (the dev extra)
#   scripts/setup.sh quickstart   # only what the quick start runs: the package, the
#                                 # emulator's signing, the Blob client, Azurite
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE=${1:-dev}
case "$PROFILE" in
    dev) EXTRAS="dev" ;;
    quickstart) EXTRAS="quickstart" ;;
    *) echo "setup: unknown profile $PROFILE (dev or quickstart)" >&2; exit 2 ;;
esac

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
MARKER=".venv/.installed-$PROFILE"
if [ ! -f "$MARKER" ] || [ setup.cfg -nt "$MARKER" ] || [ pyproject.toml -nt "$MARKER" ]; then
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[$EXTRAS]"
    touch "$MARKER"
    if [ "$PROFILE" = dev ]; then touch .venv/.installed-quickstart; fi  # dev includes it
fi

# The loopback tests make private network namespaces (unshare from util-linux, ip from iproute2);
# the DNS rebinding test drives a real browser (Debian's chromium); the bridge's benchmark uses
# wrk; the service unit is judged by systemd-analyze (no running systemd needed).
if [ "$PROFILE" = dev ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    missing=()
    command -v ip >/dev/null 2>&1 || missing+=(iproute2 util-linux)
    command -v chromium >/dev/null 2>&1 || missing+=(chromium)
    command -v wrk >/dev/null 2>&1 || missing+=(wrk)
    command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)  # the service unit's checks
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "setup: installing ${missing[*]} (Debian packages)"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
fi

if ! command -v npm >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
    else
        echo "setup: npm not found; the Azurite tests and the quick start need Node.js and npm" >&2
        exit 0
    fi
fi
if [ ! -f tests/e2e/node_modules/.installed ] || [ tests/e2e/package-lock.json -nt tests/e2e/node_modules/.installed ]; then
    (cd tests/e2e && npm ci --no-audit --no-fund --loglevel=error)
    touch tests/e2e/node_modules/.installed
fi
