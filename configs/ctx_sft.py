"""Contextual SFT (recipe: the LLM reads dialogue context without over-trusting it).

Each training prompt may carry the previous segment's transcript and context passages: one that
contains the utterance's keywords and five irrelevant ones (`data.context_*`,
funasr_jax/data/context.py). Utterances of one manifest `subset` form the "conversations". No
LLM is available offline, so passages are template sentences filled with the keywords; to use
passages written by an LLM (or any tool), write a JSONL {"key", "passages": [...]} and set
`data.context_passages_file` (the first passage of a key is its relevant one). At inference,
`evaluate --context FILE` / `transcribe --context TEXT --passage TEXT` give the same prompts.
"""

import dataclasses

from configs.base import ALL_PROJECTIONS, make_config
from funasr_jax.models.config import LoraConfig
from train.config import OptimConfig, RunConfig, StageConfig


def get_config(preset: str = "tiny"):
    tiny = preset == "tiny"
    cfg = make_config(
        preset,
        StageConfig(name="ctx_sft", trainable=("audio_adaptor", "llm") if tiny else ("audio_adaptor", "llm:lora"),
                    llm_weight=1.0, ctc_weight=0.0),
        OptimConfig(lr=5e-4 if tiny else 2e-5, schedule="constant", warmup_steps=20),
        RunConfig(out_dir="runs/ctx_sft", steps=400, eval_every=200, eval_max_utts=60,
                  init_from="runs/quickstart/sft_llm" if tiny else "runs/sft4",
                  decode_ctc_weight=0.5 if tiny else 0.0),
        lora=None if tiny else LoraConfig(rank=16, alpha=32.0, dropout=0.05, targets=ALL_PROJECTIONS),
    )
    data = dataclasses.replace(cfg.data, batch_size=8, noise_prob=0.2, zero_pad_prob=0.5, context_prompt=True,
                               context_chain=4, context_previous_share=0.5, context_irrelevant=5)
    if tiny:
        data = dataclasses.replace(data, train_files=("runs/quickstart/first_pass/train.jsonl",),
                                   first_pass_prompt=True)
    return dataclasses.replace(cfg, data=data)
