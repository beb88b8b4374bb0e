"""Joint SFT of every part (encoder, adaptor, whole LLM) with an auxiliary CTC loss.

For models whose LLM starts untrained: stages 1-4 assume a pre-trained LLM, so this trains the
LLM fully instead of through LoRA, together with the encoder. (The quickstart uses `sft_llm`
instead: on the demo the frozen CTC-trained encoder and the first-pass prompt work better.)
"""

from configs.base import make_config
from train.config import OptimConfig, RunConfig, StageConfig


def get_config(preset: str = "tiny"):
    return make_config(
        preset,
        StageConfig(name="sft_full", trainable=("*",), llm_weight=1.0, ctc_weight=0.3),
        OptimConfig(lr=1e-3 if preset == "tiny" else 5e-5, warmup_steps=100),
        RunConfig(out_dir="runs/sft_full", steps=1000),
    )
