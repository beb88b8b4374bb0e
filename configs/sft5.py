"""SFT stage 5: train the CTC decoder (+ ctc_lo) only, with CTC loss on the frozen encoder.

Its greedy CTC hypothesis is the first pass for hotword retrieval. The LLM is not run.
"""

from configs.base import make_config
from train.config import OptimConfig, RunConfig, StageConfig


def get_config(preset: str = "tiny"):
    return make_config(
        preset,
        StageConfig(name="sft5", trainable=("ctc_decoder", "ctc"), llm_weight=0.0, ctc_weight=1.0),
        OptimConfig(lr=5e-4 if preset != "tiny" else 2e-3, warmup_steps=100),
        RunConfig(out_dir="runs/sft5", steps=1000),
    )
