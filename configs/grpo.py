"""GRPO reinforcement learning (recipe: the stage after SFT) from an SFT run, LoRA on the LLM.

`run.init_from` is the SFT model (any run dir / checkpoint / Fun-ASR model dir); its own LoRA
adapters, if any, are folded into the base weights and fresh ones are trained, so the KL reference
(the base with adapters off) is exactly the SFT model. Full fine-tuning or a trainable encoder:
`--set 'stage.trainable=["llm"]'` or `'["audio_encoder", "llm:lora"]'` (the reference is then a
frozen copy of the start weights). Rewards and sampling: `grpo.*` (train/config.py GRPOConfig).

The tiny preset continues the quickstart (`python -m train.quickstart` -> runs/quickstart): its
sft_llm model reads the CTC first pass in the prompt, so the data are the first-pass manifests the
quickstart wrote (`runs/quickstart/first_pass/train.jsonl`) with `data.first_pass_prompt`.
"""

import dataclasses

from configs.base import ALL_PROJECTIONS, make_config
from funasr_jax.models.config import LoraConfig
from train.config import GRPOConfig, OptimConfig, RunConfig, StageConfig


def get_config(preset: str = "tiny"):
    tiny = preset == "tiny"
    cfg = make_config(
        preset,
        StageConfig(name="grpo", kind="grpo", trainable=("llm:lora",), llm_weight=1.0),
        OptimConfig(lr=1e-3 if tiny else 1e-5, schedule="constant", warmup_steps=10, weight_decay=0.0,
                    b2=0.99, grad_clip=1.0),
        RunConfig(out_dir="runs/grpo", steps=200, log_every=10, save_every=100, eval_every=100,
                  init_from="runs/quickstart/sft_llm" if tiny else "runs/sft4",
                  decode_ctc_weight=0.5 if tiny else 0.0, eval_max_utts=60),
        lora=LoraConfig(rank=8 if tiny else 16, alpha=16.0 if tiny else 32.0, dropout=0.0, targets=ALL_PROJECTIONS),
    )
    data = dataclasses.replace(cfg.data, batch_size=8, noise_prob=0.2, zero_pad_prob=0.5)
    if tiny:
        data = dataclasses.replace(data, train_files=("runs/quickstart/first_pass/train.jsonl",),
                                   first_pass_prompt=True)
    return dataclasses.replace(cfg, data=data, grpo=GRPOConfig(group_size=4, temperature=1.0, max_new_tokens=48,
                                                               beta=0.04, clip_eps=0.2))
