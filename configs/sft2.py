"""SFT stage 2: train encoder + adaptor; LLM frozen (recipe: ~10M h, one epoch)."""

from configs.base import make_config
from train.config import OptimConfig, RunConfig, StageConfig


def get_config(preset: str = "tiny"):
    return make_config(
        preset,
        StageConfig(name="sft2", trainable=("audio_encoder", "audio_adaptor"), llm_weight=1.0),
        OptimConfig(lr=5e-5 if preset != "tiny" else 1e-3, warmup_steps=200),
        RunConfig(out_dir="runs/sft2", steps=1000),
    )
