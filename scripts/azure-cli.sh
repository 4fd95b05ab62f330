#!/usr/bin/env bash
# The Azure CLI the real-client tests drive (`az login --identity`), pip-installed into a
# virtual environment of its own, cached outside the clone and reused while it is there:
#   ${XDG_CACHE_HOME:-~/.cache}/legacy-msi-credential/azure-cli-$VERSION
# It prints the path of that environment's `az` on its last line. The install downloads
# about 150 packages from the package index and takes minutes (measured in docs/clients.md);
# it says so before it starts. PYTHON= chooses the interpreter (default: python3).
set -euo pipefail
VERSION=2.91.0  # the CLI whose behaviour docs/clients.md records
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/legacy-msi-credential
VENV=$CACHE/azure-cli-$VERSION
if [ ! -f "$VENV/.installed" ]; then
    echo "azure-cli: installing azure-cli $VERSION into $VENV (pip, from the package index; a few minutes)" >&2
    rm -rf "$VENV"
    mkdir -p "$CACHE"
    "${PYTHON:-python3}" -m venv "$VENV"
    start=$(date +%s)
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "azure-cli==$VERSION" 2> >(
        grep -v "^WARNING: Location '.*' is ignored: it is neither a file nor a directory" >&2 || true)
    echo "azure-cli: installed in $(( $(date +%s) - start )) s" >&2
    touch "$VENV/.installed"
fi
echo "$VENV/bin/az"
