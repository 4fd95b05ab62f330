#!/usr/bin/env bash
# The main job on this machine: start the emulator on a free port as the default
# endpoint, and run samples/quickstart.py, whose BlobServiceClient authenticates to a
# local Azurite (which checks the token) through LegacyMsiCredential.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh quickstart
exec .venv/bin/legacy-msi emulate --port 0 -- .venv/bin/python samples/quickstart.py --azurite
