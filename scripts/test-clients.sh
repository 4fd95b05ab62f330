#!/usr/bin/env bash
# Today's Azure clients, unmodified, through `legacy-msi adapt` (tests/clients): azure-identity
# (sync, aio), msal, @azure/identity, @azure/msal-node and the Azure CLI, both protocols, each
# identity, with the emulator playing the extension. Slow (each client is a process of its
# own; the Azure CLI is installed once, into a cache: scripts/azure-cli.sh), so it is a job of
# its own that .ci/run runs beside the others, not part of scripts/test.sh.
# It runs pytest inside a private network namespace with only loopback (unshare -n, as root):
# nothing but this machine's loopback can answer a client. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >&2
LEGACY_MSI_AZ=$(scripts/azure-cli.sh | tail -n1)
export LEGACY_MSI_AZ LEGACY_MSI_CLIENT_TESTS=1
if ! unshare -n true 2>/dev/null; then
    echo "test-clients: cannot make a private network namespace here (unshare -n needs root); the tests say so and skip" >&2
    exec .venv/bin/python -m pytest tests/clients --numprocesses 3 --durations 10 "$@"
fi
exec unshare -n sh -c 'ip link set lo up && exec "$@"' sh \
    .venv/bin/python -m pytest tests/clients --numprocesses 3 --durations 10 "$@"
