"""Encoder warm-up from scratch with CTC (stands in for the recipe's AED pre-training on the demo).

Encoder + CTC branch trained jointly (encoder not detached); the LLM is not run.
"""

import dataclasses

from configs.base import make_config
from train.config import OptimConfig, RunConfig, StageConfig


def get_config(preset: str = "tiny"):
    cfg = make_config(
        preset,
        StageConfig(name="ctc_warmup", trainable=("audio_encoder", "ctc_decoder", "ctc"), llm_weight=0.0,
                    ctc_weight=1.0),
        OptimConfig(lr=2e-3 if preset == "tiny" else 5e-4, warmup_steps=100),
        RunConfig(out_dir="runs/ctc_warmup", steps=1000),
    )
    return dataclasses.replace(cfg, model=cfg.model.replace(ctc=dataclasses.replace(cfg.model.ctc, detach_encoder=False)))
