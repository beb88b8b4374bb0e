#!/usr/bin/env bash
# Thin wrapper: bash tools/gpu_check.sh [--smoke] [--out DIR] [--budget-s S]  (see tools/gpu_check.py)
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-$(command -v python3 || command -v python)}
cd "$here" && exec "$py" tools/gpu_check.py "$@"
