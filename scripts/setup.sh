#!/usr/bin/env bash
# Prepare a fresh checkout: .venv with the package, Azurite (tools/azurite) and, for the
# tests, the pinned legacy Node clients (tests/e2e) and azure-identity's sdist (its own tests
# run against the drop-in). Safe to run again: it only installs what changed, and says what
# it is doing, and from where, before each step that takes time or downloads.
#
#   scripts/setup.sh              # everything the test suite and CI need (the dev extra)
#   scripts/setup.sh quickstart   # only what the quick start runs: the package, the
#                                 # emulator's signing, the Blob client, Azurite
#
# It changes nothing outside the checkout unless asked: LEGACY_MSI_SETUP_SYSTEM=1, as root on
# Debian, installs the system packages some tests use (iproute2, util-linux, chromium, wrk,
# systemd, nodejs, npm; CI sets it). Without it, it names those missing and their tests skip.
# PYTHON=python3.11 chooses the interpreter of a new .venv (default: python3).
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE=${1:-dev}
case "$PROFILE" in
    dev) EXTRAS="dev" ;;
    quickstart) EXTRAS="quickstart" ;;
    *) echo "setup: unknown profile $PROFILE (dev or quickstart)" >&2; exit 2 ;;
esac

PYTHON_GIVEN=${PYTHON:-}
PYTHON=${PYTHON:-python3}
SYSTEM=${LEGACY_MSI_SETUP_SYSTEM:-0}
MINIMUM=3.9  # setup.cfg's python_requires
# The interpreter's major.minor, or nothing if it does not run.
version_of() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true; }
too_old() { [ "$(printf '%s\n%s\n' "$MINIMUM" "$1" | sort -V | head -n1)" != "$MINIMUM" ]; }

# Checks first, so that a machine that cannot run the quick start says why before anything is installed.
if [ -x .venv/bin/python ]; then
    have=$(version_of .venv/bin/python)
    if [ -z "$have" ] || too_old "$have"; then
        echo "setup: .venv has Python ${have:-that does not run}, and this package needs $MINIMUM or newer: remove it (rm -rf .venv) and run again, choosing the interpreter with PYTHON= if python3 is older (PYTHON=python3.11 $0)" >&2
        exit 1
    fi
    if [ -n "$PYTHON_GIVEN" ]; then
        wanted=$(version_of "$PYTHON")
        if [ -n "$wanted" ] && [ "$wanted" != "$have" ]; then
            echo "setup: .venv has Python $have, not $PYTHON's $wanted: remove it (rm -rf .venv) to have a new one made with $PYTHON" >&2
            exit 1
        fi
    fi
else
    wanted=$(version_of "$PYTHON")
    if [ -z "$wanted" ]; then
        echo "setup: $PYTHON does not run; choose an interpreter with PYTHON= (PYTHON=python3.11 $0)" >&2
        exit 1
    fi
    if too_old "$wanted"; then
        echo "setup: $PYTHON is Python $wanted, and this package needs $MINIMUM or newer: choose another with PYTHON= (PYTHON=python3.11 $0)" >&2
        exit 1
    fi
fi
if [ "$PROFILE" = quickstart ] && ! command -v npm >/dev/null 2>&1 && [ "$SYSTEM" != 1 ]; then
    echo "setup: the quick start needs Node.js and npm, for Azurite (a local Blob service), and npm is not on the PATH: install them (Debian: apt-get install nodejs npm; or LEGACY_MSI_SETUP_SYSTEM=1 as root), then run $0 again" >&2
    exit 1
fi

# Left out of the log: pip's notices about find-links folders of this machine's pip
# configuration that do not exist, and setuptools' that an editable install is not a regular
# one. Errors still show, and pip's exit status still counts.
quiet() { grep -v "^WARNING: Location '.*' is ignored: it is neither a file nor a directory" >&2 || true; }

if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv ($("$PYTHON" --version))"
    "$PYTHON" -m venv .venv
fi
MARKER=".venv/.installed-$PROFILE"
if [ ! -f "$MARKER" ] || [ setup.cfg -nt "$MARKER" ] || [ pyproject.toml -nt "$MARKER" ]; then
    echo "setup: installing the package and its $PROFILE requirements into .venv (pip, about a minute the first time)"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip 2> >(quiet)
    PYTHONWARNINGS="ignore:Editable installation" \
        .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[$EXTRAS]" 2> >(quiet)
    touch "$MARKER"
    if [ "$PROFILE" = dev ]; then touch .venv/.installed-quickstart; fi  # dev includes it
fi

# The loopback tests make private network namespaces (unshare from util-linux, ip from iproute2);
# the DNS rebinding test drives a real browser (Debian's chromium); the bridge's benchmark uses
# wrk; the service unit is judged by systemd-analyze (no running systemd needed).
# Installed only when asked (LEGACY_MSI_SETUP_SYSTEM=1), as root with apt-get; otherwise named.
can_install_system() { [ "$SYSTEM" = 1 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; }
missing=()
if [ "$PROFILE" = dev ]; then
    command -v ip >/dev/null 2>&1 || missing+=(iproute2 util-linux)
    command -v chromium >/dev/null 2>&1 || missing+=(chromium)
    command -v wrk >/dev/null 2>&1 || missing+=(wrk)
    command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)  # the service unit's checks
fi
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
if [ "${#missing[@]}" -gt 0 ]; then
    if can_install_system; then
        echo "setup: installing ${missing[*]} (Debian packages, asked by LEGACY_MSI_SETUP_SYSTEM=1)"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "setup: not installed here: ${missing[*]} (Debian packages); the tests that need them skip. LEGACY_MSI_SETUP_SYSTEM=1, as root, installs them" >&2
    fi
fi

if [ "$PROFILE" = dev ]; then
    # azure-identity's own tests run against the drop-in (tests/e2e/test_azure_identity_suite.py):
    # its sdist is fetched here, once per version, so that the tests themselves reach only loopback.
    version=$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("azure-identity"))')
    cache=.cache/azure-identity-sdist
    if [ ! -f "$cache/azure_identity-$version.tar.gz" ]; then
        echo "setup: downloading the sdist of azure-identity $version from the package index (pip download), for its own tests"
        mkdir -p "$cache"
        .venv/bin/python -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
            "azure-identity==$version" -d "$cache" 2> >(quiet)
    fi
fi

if ! command -v npm >/dev/null 2>&1; then
    exit 0  # said above; only the quick start needs it (checked first)
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
