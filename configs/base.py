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
# The CTC vocabulary is the same pieces plus a blank (at every preset).
DEMO_VOCAB_SIZE = 1600
# The nano / full presets' LLM tokenizer: Qwen3's, bundled with the library (funasr_jax.text).
QWEN3_TOKENIZER = "qwen3"
# LoRA on every projection of the LLM (SFT 3 / 4).
ALL_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def demo_data(preset_name: str = "tiny", **kw) -> DataConfig:
    """The bundled demo corpus. The LLM reads it with the tiny sentencepiece vocabulary at the tiny
    preset and with the real Qwen3 tokenizer (bundled, `QWEN3_TOKENIZER`) at nano / full; the CTC
    head always uses the demo's sentencepiece pieces + blank."""
    base = dict(
        train_files=(str(DEMO / "train.jsonl"),), dev_files=(str(DEMO / "dev.jsonl"),),
        test_files=(str(DEMO / "test.jsonl"),),
        tokenizer=str(DEMO / "tokenizer.model") if preset_name == "tiny" else QWEN3_TOKENIZER,
        ctc_tokenizer=str(DEMO / "tokenizer.model"), noise_dir=str(DEMO / "noise"), batch_size=16,
        bucket_frames=(48, 64, 96),
    )
    base.update(kw)
    return DataConfig(**base)


def model_for_preset(name: str) -> FunASRConfig:
    """Model config for a preset on the demo corpus: the tiny LLM is sized for the demo tokenizer;
    every preset's CTC head for the demo's CTC vocabulary (a Fun-ASR release's 60,515-label head
    comes with `run.init_from`, which brings its own size)."""
    cfg = preset(name)
    cfg = cfg.replace(ctc=dataclasses.replace(cfg.ctc, vocab_size=DEMO_VOCAB_SIZE + 1))
    if name == "tiny":
        cfg = cfg.replace(llm=dataclasses.replace(cfg.llm, vocab_size=DEMO_VOCAB_SIZE))
    return cfg


def make_config(preset_name: str, stage: StageConfig, optim: OptimConfig | None = None,
                run: RunConfig | None = None, data: DataConfig | None = None,
                lora: LoraConfig | None = None) -> TrainConfig:
    """A TrainConfig for `stage` on `preset_name`; `lora` sets the LLM's adapters (model.llm.lora)."""
    data = data or demo_data(preset_name)
    model = model_for_preset(preset_name)
    if lora is not None:
        model = model.replace(llm=dataclasses.replace(model.llm, lora=lora))
    on_demo = bool(data.train_files) and str(data.train_files[0]).startswith(str(DEMO))
    return TrainConfig(preset=preset_name, model=model, data=data, optim=optim or OptimConfig(),
                       stage=stage, run=run or RunConfig(out_dir=f"runs/{stage.name}"),
                       frontend=FrontendConfig(cmvn_file=str(DEMO / "am.mvn")) if on_demo else FrontendConfig())
