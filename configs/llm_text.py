"""Text pre-training of an untrained LLM: correct a noisy first-pass line into the transcript.

For models whose LLM starts untrained (the tiny demo), between `ctc_warmup` (+ its first pass) and
`sft_llm`. The recipe's SFT stages start from a pre-trained text LLM (Qwen3) that already copies
and corrects text in its prompt; a from-scratch tiny LLM has to learn that first, and learning it
from text alone costs no audio: `data.text_only` reads no audio (the prompt has no audio rows) and
`data.first_pass_noise` gives each training row's CTC hypothesis simulated errors (substituted,
deleted and inserted characters and words: a share drawn per row uniformly in [0, 40 %]), so the LLM learns to copy
what is right and to repair what is wrong from its knowledge of the transcripts. Only the LLM is
trained. `data.train_files` must point at manifests with a `first_pass` field
(`python -m funasr_jax.first_pass --checkpoint runs/ctc_warmup --data ...`). The dev decoding at the
end runs with audio and the CTC first pass in the prompt, so it measures how well the LLM
reproduces and repairs the hypothesis before it has ever seen audio.
"""

import dataclasses

from configs.base import make_config
from train.config import OptimConfig, RunConfig, StageConfig


def get_config(preset: str = "tiny"):
    cfg = make_config(
        preset,
        StageConfig(name="llm_text", trainable=("llm",), llm_weight=1.0, ctc_weight=0.0),
        OptimConfig(lr=3e-3 if preset == "tiny" else 2e-5, warmup_steps=100),
        RunConfig(out_dir="runs/llm_text", steps=2000),
    )
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, first_pass_prompt=True, text_only=True,
                                                             first_pass_noise=0.2, noise_prob=0.0,
                                                             batch_size=32))
