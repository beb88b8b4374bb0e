#!/usr/bin/env bash
# The one-call GPU check (see tools/gpu_check.py). Before the call, here: bash tools/fetch_gpu_wheels.sh
# Then the device tool: command "bash tools/gpu_check.sh", carry [".whl", ".torchref"], timeout_s 480.
# usage: bash tools/gpu_check.sh [--smoke] [--dry-run] [--imports-only] [--out DIR] [--no-torch]
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-$(command -v python3 || command -v python)}
cd "$here" && exec "$py" tools/gpu_check.py "$@"
