#!/usr/bin/env bash
# Set up, then run the main job: serve the guarded example and replay traffic against it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m services.demo "$@"
