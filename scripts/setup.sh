#!/usr/bin/env bash
# Prepare a fresh checkout: .venv with the package, Azurite (tools/azurite) and, for the
# tests, the pinned legacy Node clients (tests/e2e). Safe to run again: it only installs
# what changed, and says what it is doing before each step that takes time.
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
    echo "setup: creating .venv ($("$PYTHON" --version))"
    "$PYTHON" -m venv .venv
fi
MARKER=".venv/.installed-$PROFILE"
if [ ! -f "$MARKER" ] || [ setup.cfg -nt "$MARKER" ] || [ pyproject.toml -nt "$MARKER" ]; then
    echo "setup: installing the package and its $PROFILE requirements into .venv (pip, about a minute the first time)"
    # Left out of the log: pip's notices about find-links folders of
    # this machine's pip configuration that do not exist, and setuptools' that an editable
    # install is not a regular one. Errors still show, and pip's exit status still counts.
    quiet() { grep -v "^WARNING: Location '.*' is ignored: it is neither a file nor a directory" >&2 || true; }
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip 2> >(quiet)
    PYTHONWARNINGS="ignore:Editable installation" \
        .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[$EXTRAS]" 2> >(quiet)
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
        echo "setup: installing Node.js and npm (Debian packages)"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
    else
        echo "setup: npm not found; the Azurite tests and the quick start need Node.js and npm" >&2
        exit 0
    fi
fi
# npm projects: Azurite for the quick start and the tests; the legacy Node clients for the tests only.
NPM_PROJECTS=(tools/azurite)
if [ "$PROFILE" = dev ]; then NPM_PROJECTS+=(tests/e2e); fi
for project in "${NPM_PROJECTS[@]}"; do
    if [ ! -f "$project/node_modules/.installed" ] || [ "$project/package-lock.json" -nt "$project/node_modules/.installed" ]; then
        echo "setup: installing the pinned npm packages of $project (npm ci)"
        (cd "$project" && npm ci --no-audit --no-fund --loglevel=error --no-color)
        touch "$project/node_modules/.installed"
    fi
done
