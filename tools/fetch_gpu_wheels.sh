#!/usr/bin/env bash
# Download (here, where pip reaches a registry) the wheels the GPU machine's image lacks, for
# Python 3.12 x86-64, into DIR (default .whl/, kept out of git). tools/gpu_check.sh installs them there
# with --no-deps into a private folder; the run tool's `carry` names DIR (about 7 MiB).
# usage: bash tools/fetch_gpu_wheels.sh [DIR]
# The list = our dependencies and the GPU comparisons' tools, minus what the image holds
# (/work/.library/device/KINDS.md), with their own missing dependencies. tokamax is left out: it
# imports xprof (32 MB, with google-cloud-storage, duckdb, ...) at import time, which does not fit the
# carry limit; kernels.bench then reports its rows as unavailable.
set -eu
dir=${1:-.whl}
mkdir -p "$dir"
names="grain array-record portpicker jiwer rapidfuzz soundfile cffi pycparser soxr kaldi-native-fbank"
plat=""
for n in 17 24 27 28 31 34; do plat="$plat --platform manylinux_2_${n}_x86_64"; done
for n in $names; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    $plat --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d "$dir" "$n"
done
echo "wheels in $dir: $(ls "$dir" | wc -l) files, $(du -sh "$dir" | cut -f1)"
