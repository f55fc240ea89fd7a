#!/usr/bin/env bash
# GPU check: the guard around a torch model on a GPU under bf16 matmul load, in under 5 minutes.
#
#   bash scripts/gpu_check.sh [options of load_tests/gpu_check.py, e.g. --load-seconds 60 --slo-ms 30]
#
# Prints the GPU checks, the causes of slow calls and the guard's per-call overhead
# (see load_tests/gpu_check.py). Without an NVIDIA GPU it says so and exits 0
# (pass --require-gpu to exit 3 instead), before installing anything.
# Environment: GPU_CHECK_VENV (default .venv): the venv to use; created with the
# project installed if missing, and torch / nvidia-ml-py are installed into it
# when they are not importable. GPU_CHECK_TIMEOUT (default 280): seconds the check may run.
set -euo pipefail
cd "$(dirname "$0")/.."

require=0
for a in "$@"; do [ "$a" = "--require-gpu" ] && require=1; done
skip() {
  echo "gpu_check: SKIPPED, no usable GPU here: $1. Nothing was checked."
  if [ "$require" = 1 ]; then exit 3; fi
  exit 0
}

# 1. Is there an NVIDIA GPU at all? (cheap, before installing gigabytes of torch)
if command -v nvidia-smi >/dev/null 2>&1; then
  if ! nvidia-smi -L 2>/dev/null | grep -q "^GPU "; then
    skip "nvidia-smi lists no GPU ($(nvidia-smi -L 2>&1 | head -n 1))"
  fi
elif ! ls /dev/nvidia[0-9]* >/dev/null 2>&1; then
  skip "no NVIDIA driver (no nvidia-smi, no /dev/nvidia0)"
fi

# 2. A venv with the project, torch and nvidia-ml-py.
VENV=${GPU_CHECK_VENV:-.venv}
PY=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  echo "gpu_check: creating $VENV with the project installed"
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e . || { echo "gpu_check: FAILED to install the project into $VENV"; exit 1; }
fi
missing=()
"$VENV/bin/python" -c "import torch" 2>/dev/null || missing+=(torch)
"$VENV/bin/python" -c "import pynvml" 2>/dev/null || missing+=(nvidia-ml-py)
if [ ${#missing[@]} -gt 0 ]; then
  echo "gpu_check: installing ${missing[*]} into $VENV"
  "$VENV/bin/python" -m pip install -q "${missing[@]}" || {
    echo "gpu_check: FAILED to install ${missing[*]} (offline? install them into $VENV by hand)"; exit 1; }
fi

# 3. The check itself (NVML and CUDA are checked again there, with the guard's own provider).
exec timeout "${GPU_CHECK_TIMEOUT:-280}" "$VENV/bin/python" -m load_tests.gpu_check "$@"
