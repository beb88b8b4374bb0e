"""CPU time of one Fun-ASR-Nano forward (encoder + adaptor + LLM prefill) on 10 s of audio.

    python tools/time_nano_forward.py [--seconds 10] [--repeats 3]

Random weights (shape-only config of the release), f32. Prints compile time and the median of
the timed calls (after one warm-up), split into encoder+adaptor and the LLM prefill.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from funasr_jax.audio.frontend import num_fbank_frames, num_lfr_frames  # noqa: E402
from funasr_jax.models.batch import Batch  # noqa: E402
from funasr_jax.models.config import audio_token_count, nano_config  # noqa: E402
from funasr_jax.models.funasr import FunASRNano, init_params  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    cfg = nano_config()
    t0 = time.time()
    params = jax.jit(lambda r: init_params(cfg, r))(jax.random.PRNGKey(0))
    jax.block_until_ready(params)
    print(f"init {time.time() - t0:.1f} s")
    frames = num_lfr_frames(num_fbank_frames(int(round(args.seconds * 16000))))
    n = int(audio_token_count(frames))
    prompt = 18 + n + 5
    feats = jax.random.normal(jax.random.PRNGKey(1), (1, frames, 560))
    lens = jnp.array([frames])
    model = FunASRNano(cfg)

    @jax.jit
    def forward(params, feats):
        batch = Batch(feats=feats, feat_lengths=lens, input_ids=jnp.zeros((1, prompt), jnp.int32),
                      token_lengths=jnp.array([prompt]), audio_start=jnp.array([18]), audio_tokens=jnp.array([n]))
        return model.apply({"params": params}, batch, with_ctc=False)["logits"][:, -1]

    @jax.jit
    def audio_only(params, feats):
        enc, l = model.apply({"params": params}, feats, lens, method="encode")
        return model.apply({"params": params}, enc, l, method="adapt")[0]

    for name, fn in (("encoder+adaptor", audio_only), ("full forward (encoder+adaptor+LLM prefill)", forward)):
        t0 = time.time()
        jax.block_until_ready(fn(params, feats))
        compile_s = time.time() - t0
        times = []
        for _ in range(args.repeats):
            t0 = time.time()
            jax.block_until_ready(fn(params, feats))
            times.append(time.time() - t0)
        print(f"{name}: {args.seconds:.0f} s audio ({frames} LFR frames, {prompt} LLM positions): "
              f"median {np.median(times):.3f} s (first call incl. compile {compile_s:.1f} s), "
              f"{jax.devices()[0].device_kind}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
