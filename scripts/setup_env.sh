#!/usr/bin/env bash
# Create ./.venv (if missing) and install transformers-scl with its test dependencies into it.
# torch/torchvision are pinned to the pair that the image and video processors need (transformers v5).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
.venv/bin/python -m pip install --quiet -e ".[dev]"
