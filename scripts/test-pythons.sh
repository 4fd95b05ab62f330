#!/usr/bin/env bash
# The suite (all but the Azurite and Node tests) on every Python the package claims,
# 3.9 to 3.13, each from the built wheel (see noxfile.py). An interpreter this machine
# lacks is skipped, and nox says so. The sessions run side by side (the suite mostly
# waits on loopback I/O); each one's output ends up in .nox/<session>.log and its last
# lines are printed. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# pyenv's interpreters, where pyenv keeps them, ahead of its shims.
for version in 3.9 3.10 3.11 3.12 3.13; do
    for folder in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$version".*/bin; do
        if [ -x "$folder/python$version" ]; then PATH="$folder:$PATH"; fi
    done
done
export PATH
rm -rf dist
.venv/bin/python -m build --wheel --outdir dist . >/dev/null
mkdir -p .nox
pids=()
for version in 3.9 3.10 3.11 3.12 3.13; do
    .venv/bin/nox --sessions "wheel-$version" -- "$@" >".nox/wheel-$version.log" 2>&1 &
    pids+=("$!")
done
status=0
index=0
for version in 3.9 3.10 3.11 3.12 3.13; do
    if wait "${pids[$index]}"; then result=ok; else result=FAILED; status=1; fi
    echo "== Python $version: $result"
    grep -E "passed|failed|skipped:|Session .* (was successful|failed|skipped)|testing the installed wheel" ".nox/wheel-$version.log" | tail -4
    index=$((index + 1))
done
exit "$status"
