"""Best-RQ self-supervised pre-training of the SAN-M encoder (recipe §4.1, stage 0).

Only the encoder and the prediction heads train (`model.bestrq`: the frozen random-projection
quantiser, span masking; `funasr_jax.models.bestrq`); transcripts are not read by the loss, and
the training manifests may hold unlabelled lines (`python -m funasr_jax.audio_list LIST --out
F.jsonl`, then `--set data.train_files=F.jsonl`). The
encoder then initialises a later stage through `run.init_from` (tensors matched by name and
shape; the heads and quantiser are left behind because that stage's model has no Best-RQ heads).
"""

import dataclasses

from configs.base import make_config
from funasr_jax.models.config import BestRQConfig
from train.config import OptimConfig, RunConfig, StageConfig


def get_config(preset: str = "tiny"):
    cfg = make_config(
        preset,
        StageConfig(name="bestrq", trainable=("audio_encoder", "bestrq_head"), llm_weight=0.0, ctc_weight=0.0,
                    bestrq_weight=1.0),
        OptimConfig(lr=2e-3 if preset == "tiny" else 5e-4, warmup_steps=100),
        RunConfig(out_dir="runs/bestrq", steps=1000, eval_at_end=False, eval_every=0),
    )
    rq = BestRQConfig(enabled=True, codebook_size=256 if preset == "tiny" else 8192)
    data = dataclasses.replace(cfg.data, require_transcripts=False)  # unlabelled lines welcome (audio_list)
    return dataclasses.replace(cfg, model=cfg.model.replace(bestrq=rq), data=data)
