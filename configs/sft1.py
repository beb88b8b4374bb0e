"""SFT stage 1: train the adaptor only; encoder and LLM frozen (recipe: ~200k h)."""

from configs.base import make_config
from train.config import OptimConfig, RunConfig, StageConfig


def get_config(preset: str = "tiny"):
    return make_config(
        preset,
        StageConfig(name="sft1", trainable=("audio_adaptor",), llm_weight=1.0, ctc_weight=0.0),
        OptimConfig(lr=1e-4 if preset != "tiny" else 1e-3, warmup_steps=100),
        RunConfig(out_dir="runs/sft1", steps=1000),
    )
