"""Global CMVN statistics of the encoder input over a manifest, written as a FunASR `am.mvn`.

    python tools/compute_cmvn.py data/demo/train.jsonl --out data/demo/am.mvn [--max-utts 2000]

shift = -mean, scale = 1 / std per LFR feature dimension (560), as FunASR's WavFrontend applies
them: x' = (x + shift) * scale. Training from scratch converges far faster on normalised input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from funasr_jax.audio.io import load_audio  # noqa: E402
from funasr_jax.data.manifest import read_manifests  # noqa: E402
from funasr_jax.audio.frontend import FrontendConfig, extract_features, write_cmvn  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("manifests", nargs="+")
    p.add_argument("--out", required=True)
    p.add_argument("--max-utts", type=int, default=0)
    args = p.parse_args(argv)
    examples = read_manifests(args.manifests)
    if args.max_utts:
        examples = examples[: args.max_utts]
    total, total_sq, n = None, None, 0
    for ex in examples:
        x = extract_features(load_audio(ex.audio_path), FrontendConfig()).astype(np.float64)
        total = x.sum(0) if total is None else total + x.sum(0)
        total_sq = (x * x).sum(0) if total_sq is None else total_sq + (x * x).sum(0)
        n += len(x)
    mean = total / n
    std = np.sqrt(np.maximum(total_sq / n - mean * mean, 1e-10))
    write_cmvn(args.out, -mean, 1.0 / std)
    print(f"wrote {args.out}: {len(examples)} utterances, {n} LFR frames, dim {len(mean)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
