#!/usr/bin/env bash
# The suite (all but the Azurite and Node tests) on every Python the package claims,
# 3.9 to 3.13, each from the built wheel (see noxfile.py). An interpreter this machine
# lacks is skipped, and nox says so. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# pyenv's interpreters, where pyenv keeps them, ahead of its shims.
for version in 3.9 3.10 3.11 3.12 3.13; do
    for folder in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$version".*/bin; do
        [ -x "$folder/python$version" ] && PATH="$folder:$PATH"
    done
done
export PATH
rm -rf dist
.venv/bin/python -m build --wheel --outdir dist . >/dev/null
.venv/bin/nox --sessions "wheel-3.9" "wheel-3.10" "wheel-3.11" "wheel-3.12" "wheel-3.13" -- "$@"
