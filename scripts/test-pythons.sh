#!/usr/bin/env bash
# The suite (all but the Azurite and Node tests) on every Python the package claims,
# 3.9 to 3.13, each from the built wheel, and once more on the floors: Python 3.9 with the
# lowest version of every dependency setup.cfg declares and urllib3 1.26 (see noxfile.py).
# An interpreter this machine lacks is skipped, and nox says so. The sessions run side by side (the suite mostly
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
export UV_PYTHON_DOWNLOADS=never  # the interpreters found above, never a download
rm -rf dist
.venv/bin/python -m build --wheel --outdir dist . >.nox-build.log 2>&1 || { cat .nox-build.log; exit 1; }
rm -f .nox-build.log
mkdir -p .nox
SESSIONS=(wheel-3.9 wheel-3.10 wheel-3.11 wheel-3.12 wheel-3.13 floors)
pids=()
for session in "${SESSIONS[@]}"; do
    .venv/bin/nox --sessions "$session" -- "$@" >".nox/$session.log" 2>&1 &
    pids+=("$!")
done
status=0
index=0
for session in "${SESSIONS[@]}"; do
    if wait "${pids[$index]}"; then result=ok; else result=FAILED; status=1; fi
    echo "== $session: $result"
    grep -E "passed|failed|skipped:|Session .* (was successful|failed|skipped)|testing the installed wheel|^with " \
        ".nox/$session.log" | tail -5
    # A failing session also names its failing tests and the lines that say why.
    if [ "$result" = FAILED ]; then grep -E "^(FAILED|ERROR) |^E " ".nox/$session.log" | head -40; fi
    index=$((index + 1))
done
exit "$status"
