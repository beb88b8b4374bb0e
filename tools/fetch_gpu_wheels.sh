#!/usr/bin/env bash
# The one command to run HERE (where pip reaches a registry) before a GPU call: it makes everything
# tools/gpu_check.sh needs that the GPU machine's image lacks and that is not in the tree.
#
#   bash tools/fetch_gpu_wheels.sh            # -> .whl/ and .torchref/ (both ignored by git)
#   then call the device tool with: command "bash tools/gpu_check.sh", carry [".whl", ".torchref"]
#
# .whl/      wheels for Python 3.12 x86-64 (about 8 MiB): our dependencies missing from the image
#            (/work/.library/device/KINDS.md lists what it has: jax 0.11, flax, optax, orbax, torch,
#            transformers, ...), each with its own missing dependencies. gpu_check.sh installs them with
#            `pip install --no-index --no-deps --target` into a private folder on the GPU machine.
# .torchref/ FunASR's PyTorch model code (funasr 1.4.16, no dependencies installed; about 6 MiB), for
#            the side-by-side torch rows (train.bench --compare-torch, funasr_jax.bench): the package
#            with its top-level __init__ (which imports every submodule, and so every dependency)
#            replaced by one importing only the modules whose registrations FunASRNano's constructor
#            reads (encoder, adaptor / CTC decoder, the CTC CharTokenizer), and empty stand-ins for
#            two audio libraries its model modules import but never call (kaldiio, librosa).
# tokamax is left out: it imports xprof (32 MB, with google-cloud-storage, duckdb, ...) at import
# time; kernels.bench then has no tokamax rows.
# usage: bash tools/fetch_gpu_wheels.sh [WHEEL_DIR [TORCHREF_DIR]]
set -eu
dir=${1:-.whl}
ref=${2:-.torchref}
py=${PYTHON:-python3}
names="grain array-record portpicker jiwer rapidfuzz soundfile cffi pycparser soxr kaldi-native-fbank pypinyin
webrtcvad-wheels"
plat=""
for n in 17 24 27 28 31 34; do plat="$plat --platform manylinux_2_${n}_x86_64"; done
mkdir -p "$dir"
for n in $names; do
  "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    $plat --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d "$dir" "$n"
done
echo "wheels in $dir: $(ls "$dir" | wc -l) files, $(du -sh "$dir" | cut -f1)"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$py" -m pip download -q --no-deps funasr==1.4.16 -d "$tmp"
"$py" -m zipfile -e "$tmp"/funasr-*.whl "$tmp/x"
rm -rf "$ref" && mkdir -p "$ref"
cp -r "$tmp/x/funasr" "$ref/"
cat > "$ref/funasr/__init__.py" <<'PY'
# Written by tools/fetch_gpu_wheels.sh: FunASR's model code without the package-wide import of every
# submodule; only the registrations FunASRNano's constructor looks up in funasr.register.tables.
from funasr.models.sense_voice import model as _sense_voice  # noqa: F401  SenseVoiceEncoderSmall
from funasr.models.llm_asr import adaptor as _adaptor  # noqa: F401  Transformer (adaptor, CTC decoder)
from funasr.tokenizer import char_tokenizer as _char_tokenizer  # noqa: F401  CharTokenizer (CTC)
PY
for m in kaldiio librosa; do
  mkdir -p "$ref/$m" && echo "# stand-in: imported by FunASR's model modules, never called by the benches" > "$ref/$m/__init__.py"
done
find "$ref" -name __pycache__ -prune -exec rm -rf {} +
echo "FunASR model code in $ref: $(du -sh "$ref" | cut -f1)"
echo "carry: [\"$dir\", \"$ref\"]"
