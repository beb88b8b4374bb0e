"""Streaming SFT: the LLM learns to transcribe audio cut at a chunk boundary as far as it was spoken.

Continues an SFT model (tiny: the quickstart's `sft_llm`, which reads the CTC first pass) on
manifests written by `python -m funasr_jax.stream_data` (funasr_jax/infer/stream_data.py): every
training line, plus for half of them a copy cut at a multiple of 480 / 720 / 1,440 ms whose target
is the transcript prefix aligned (CTC forced alignment) before the cut, and whose first pass is
recomputed on the cut audio — what the streaming decoder (funasr_jax/infer/streaming.py) feeds the
model at each chunk. The offline lines keep the offline behaviour; the recipe's streaming stage
mixes the two the same way. Non-tiny presets train the LLM through LoRA.
"""

import dataclasses

from configs.base import ALL_PROJECTIONS, make_config
from funasr_jax.models.config import LoraConfig
from train.config import OptimConfig, RunConfig, StageConfig


def get_config(preset: str = "tiny"):
    tiny = preset == "tiny"
    cfg = make_config(
        preset,
        StageConfig(name="stream_sft", trainable=("audio_adaptor", "llm") if tiny else ("audio_adaptor", "llm:lora"),
                    llm_weight=1.0, ctc_weight=0.0),
        OptimConfig(lr=1e-3 if tiny else 2e-5, schedule="constant", warmup_steps=20),
        RunConfig(out_dir="runs/stream_sft", steps=600, eval_every=200, eval_max_utts=60,
                  init_from="runs/quickstart/sft_llm" if tiny else "runs/sft4",
                  decode_ctc_weight=0.5 if tiny else 0.0),
        lora=None if tiny else LoraConfig(rank=16, alpha=32.0, dropout=0.05, targets=ALL_PROJECTIONS),
    )
    data = dataclasses.replace(cfg.data, batch_size=8, noise_prob=0.2, zero_pad_prob=0.5,
                               train_files=("runs/stream_data/train.jsonl",))
    if tiny:
        data = dataclasses.replace(data, first_pass_prompt=True, first_pass_noise=0.15)
    return dataclasses.replace(cfg, data=data)
