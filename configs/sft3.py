"""SFT stage 3: train the LLM through LoRA only; encoder and adaptor frozen (recipe: ~20k h)."""

from configs.base import ALL_PROJECTIONS, make_config
from funasr_jax.models.config import LoraConfig
from train.config import OptimConfig, RunConfig, StageConfig


def get_config(preset: str = "tiny"):
    return make_config(
        preset,
        StageConfig(name="sft3", trainable=("llm:lora",), llm_weight=1.0),
        OptimConfig(lr=1e-4 if preset != "tiny" else 1e-3, warmup_steps=100),
        RunConfig(out_dir="runs/sft3", steps=1000),
        lora=LoraConfig(rank=16 if preset != "tiny" else 8, alpha=32.0, dropout=0.05, targets=ALL_PROJECTIONS),
    )
