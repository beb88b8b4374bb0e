"""Values shared by the stage configs: the bundled demo corpus and `make_config`.

The schema is `train.config`; a file in `configs/` only builds values (`get_config(preset)` ->
`TrainConfig`) and reads no file.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from funasr_jax.audio.frontend import FrontendConfig
from funasr_jax.data.config import DataConfig
from funasr_jax.models.config import FunASRConfig, LoraConfig, preset
from train.config import OptimConfig, RunConfig, StageConfig, TrainConfig

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "data" / "demo"
# Pieces in data/demo/tokenizer.model (tests/configs check it); the tiny preset's LLM vocabulary.
# The CTC vocabulary is the same pieces plus a blank.
DEMO_VOCAB_SIZE = 1600
# LoRA on every projection of the LLM (SFT 3 / 4).
ALL_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def demo_data(**kw) -> DataConfig:
    """The bundled demo corpus with the tiny sentencepiece vocabulary."""
    base = dict(
        train_files=(str(DEMO / "train.jsonl"),), dev_files=(str(DEMO / "dev.jsonl"),),
        test_files=(str(DEMO / "test.jsonl"),), tokenizer=str(DEMO / "tokenizer.model"),
        ctc_tokenizer=str(DEMO / "tokenizer.model"), noise_dir=str(DEMO / "noise"), batch_size=16,
        bucket_frames=(48, 64, 96),
    )
    base.update(kw)
    return DataConfig(**base)


def model_for_preset(name: str) -> FunASRConfig:
    """Model config for a preset; the tiny preset is sized for the demo tokenizer."""
    cfg = preset(name)
    if name == "tiny":
        cfg = cfg.replace(llm=dataclasses.replace(cfg.llm, vocab_size=DEMO_VOCAB_SIZE),
                          ctc=dataclasses.replace(cfg.ctc, vocab_size=DEMO_VOCAB_SIZE + 1))
    return cfg


def make_config(preset_name: str, stage: StageConfig, optim: OptimConfig | None = None,
                run: RunConfig | None = None, data: DataConfig | None = None,
                lora: LoraConfig | None = None) -> TrainConfig:
    """A TrainConfig for `stage` on `preset_name`; `lora` sets the LLM's adapters (model.llm.lora)."""
    data = data or demo_data()
    model = model_for_preset(preset_name)
    if lora is not None:
        model = model.replace(llm=dataclasses.replace(model.llm, lora=lora))
    on_demo = bool(data.train_files) and str(data.train_files[0]).startswith(str(DEMO))
    return TrainConfig(preset=preset_name, model=model, data=data, optim=optim or OptimConfig(),
                       stage=stage, run=run or RunConfig(out_dir=f"runs/{stage.name}"),
                       frontend=FrontendConfig(cmvn_file=str(DEMO / "am.mvn")) if on_demo else FrontendConfig())
