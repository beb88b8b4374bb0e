"""Adaptor + whole LLM on the frozen encoder, with the CTC first-pass hypothesis in the prompt.

For models whose LLM starts untrained (the tiny demo), after `ctc_warmup`: stages 1 and 3 of the
recipe (adaptor; LLM through LoRA) assume a pre-trained LLM, so here both are trained fully at
once. The prompt carries the CTC head's greedy hypothesis ("一遍解码结果：...", recipe: the LLM
reads audio + prompt + CTC hypothesis); `data.train_files` must point at manifests with a
`first_pass` field (`python -m funasr_jax.first_pass --checkpoint runs/ctc_warmup --data ...`).
Dev decoding (and the saved model's default) is joint CTC/LLM greedy at weight 0.5 on the tiny
preset, whose CTC head shares the LLM's vocabulary; plain greedy otherwise.
"""

import dataclasses

from configs.base import make_config
from train.config import OptimConfig, RunConfig, StageConfig


def get_config(preset: str = "tiny"):
    cfg = make_config(
        preset,
        StageConfig(name="sft_llm", trainable=("audio_adaptor", "llm"), llm_weight=1.0, ctc_weight=0.0),
        OptimConfig(lr=2e-3 if preset == "tiny" else 5e-5, warmup_steps=50),
        RunConfig(out_dir="runs/sft_llm", steps=800, decode_ctc_weight=0.5 if preset == "tiny" else 0.0),
    )
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, first_pass_prompt=True))
