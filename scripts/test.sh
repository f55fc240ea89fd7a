#!/usr/bin/env bash
# Set up and run the whole test suite (the README's test command).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m services.train >/dev/null
.venv/bin/python -m pytest "$@"
