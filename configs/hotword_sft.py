"""Hotword SFT: the LLM learns to use a retrieved hotword list in its prompt, and to ignore it.

Continues an SFT model (tiny: the quickstart's `sft_llm`, which reads the CTC first pass). Each
training prompt lists the utterance's own hotwords among distractors (`data.hotword_*`,
funasr_jax/data/context.py): some prompts have no list, some only distractors, and with a
`first_pass` field the distractors are retrieved from the first pass as the recognizer does at
inference (the own words stay listed, `data.hotword_keep_own`: with the first pass given
simulated errors, `data.first_pass_noise`, the LLM must take a listed word over a wrong first pass) (`evaluate --hotwords manifest --distractors N`, `transcribe --hotwords FILE`).
The tiny preset draws distractors from the demo's pool (`data/demo/hotwords/distractors.txt`);
otherwise from every training utterance's hotwords (`data.hotword_pool_file` to change).
"""

import dataclasses

from configs.base import ALL_PROJECTIONS, make_config
from funasr_jax.models.config import LoraConfig
from train.config import OptimConfig, RunConfig, StageConfig


def get_config(preset: str = "tiny"):
    tiny = preset == "tiny"
    cfg = make_config(
        preset,
        StageConfig(name="hotword_sft", trainable=("audio_adaptor", "llm") if tiny else ("audio_adaptor", "llm:lora"),
                    llm_weight=1.0, ctc_weight=0.0),
        OptimConfig(lr=2e-3 if tiny else 2e-5, schedule="constant", warmup_steps=20),
        RunConfig(out_dir="runs/hotword_sft", steps=2000, eval_every=200, eval_max_utts=60,
                  init_from="runs/quickstart/sft_llm" if tiny else "runs/sft4",
                  decode_ctc_weight=0.5 if tiny else 0.0),
        lora=None if tiny else LoraConfig(rank=16, alpha=32.0, dropout=0.05, targets=ALL_PROJECTIONS),
    )
    data = dataclasses.replace(cfg.data, batch_size=8, noise_prob=0.2, zero_pad_prob=0.5, hotword_prompt=True,
                               hotword_distractors=10, hotword_none_share=0.15, hotword_own_drop_share=0.15,
                               hotword_mask_share=0.8)
    if tiny:
        data = dataclasses.replace(data, train_files=("runs/quickstart/first_pass/train.jsonl",),
                                   first_pass_prompt=True, first_pass_noise=0.15,
                                   hotword_pool_file="data/demo/hotwords/distractors.txt")
    return dataclasses.replace(cfg, data=data)
