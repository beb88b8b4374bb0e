"""SFT stage 4: encoder + adaptor fully, LLM through LoRA (recipe: ~3M h of high-quality data)."""

from configs.base import ALL_PROJECTIONS, make_config
from funasr_jax.models.config import LoraConfig
from train.config import OptimConfig, RunConfig, StageConfig


def get_config(preset: str = "tiny"):
    return make_config(
        preset,
        StageConfig(name="sft4", trainable=("audio_encoder", "audio_adaptor", "llm:lora"), llm_weight=1.0),
        OptimConfig(lr=5e-5 if preset != "tiny" else 5e-4, warmup_steps=200),
        RunConfig(out_dir="runs/sft4", steps=1000),
        lora=LoraConfig(rank=16 if preset != "tiny" else 8, alpha=32.0, dropout=0.05, targets=ALL_PROJECTIONS),
    )
