"""Stage configs are values: building and validating one reads no file; the tiny preset's
vocabulary matches the bundled tokenizer; LoRA settings have one home (model.llm.lora)."""

from __future__ import annotations

import builtins
import io
import os
from pathlib import Path

import pytest
import sentencepiece
import tokenizers

from configs.base import DEMO, DEMO_VOCAB_SIZE
from funasr_jax.text.tokenizer import CTCVocabulary, load_tokenizer
from train.main import CONFIG_DIR, load_config

STAGES = sorted(p.stem for p in CONFIG_DIR.glob("*.py") if p.name not in ("__init__.py", "base.py"))


def test_every_stage_config_is_found():
    assert {"sft1", "sft2", "sft3", "sft4", "sft5", "ctc_warmup", "sft_full", "sft_llm"} <= set(STAGES)


@pytest.mark.parametrize("preset", ["tiny", "nano", "full"])
def test_building_a_config_reads_no_file(preset, monkeypatch):
    # Import every config module first (reading its source is the loader's job, not the config's).
    mods = {}
    import importlib.util

    for name in STAGES:
        spec = importlib.util.spec_from_file_location(f"_cfg_{name}", CONFIG_DIR / f"{name}.py")
        mods[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mods[name])
    opened = []

    def no_open(file, *a, **kw):
        opened.append(str(file))
        raise AssertionError(f"a config opened {file}")

    monkeypatch.setattr(builtins, "open", no_open)
    monkeypatch.setattr(io, "open", no_open)
    monkeypatch.setattr(os, "open", no_open)
    # Tokenizer libraries read files in C++, past Python's open: guard their loaders too.
    monkeypatch.setattr(sentencepiece, "SentencePieceProcessor", no_open)
    monkeypatch.setattr(tokenizers.Tokenizer, "from_file", no_open)
    for name, mod in mods.items():
        mod.get_config(preset).validate()
    assert opened == []


def test_tiny_vocabulary_matches_the_demo_tokenizer():
    tok = load_tokenizer(str(DEMO / "tokenizer.model"))
    assert tok.vocab_size == DEMO_VOCAB_SIZE
    assert CTCVocabulary(str(DEMO / "tokenizer.model")).vocab_size == DEMO_VOCAB_SIZE + 1
    cfg = load_config("sft4.py", "tiny")
    assert cfg.model.llm.vocab_size == DEMO_VOCAB_SIZE and cfg.model.ctc.vocab_size == DEMO_VOCAB_SIZE + 1


def test_lora_has_one_home():
    cfg = load_config("sft4.py", "tiny")
    assert cfg.model.llm.lora.rank == 8 and not hasattr(cfg.stage, "lora")
    assert load_config("sft4.py", "nano").model.llm.lora.rank == 16
    assert load_config("sft1.py", "tiny").model.llm.lora.rank == 0
    assert load_config("sft4.py", "tiny", ["model.llm.lora.rank=4"]).model.llm.lora.rank == 4


def test_a_run_whose_tokenizer_does_not_fit_fails_naming_both(tmp_path):
    from train.data import TrainData

    cfg = load_config("sft1.py", "tiny", ["model.llm.vocab_size=100"])
    with pytest.raises(ValueError, match=r"data.tokenizer has 1600 tokens but model.llm.vocab_size is 100"):
        TrainData(cfg)


def test_configs_hold_no_schema():
    """configs/ only produces values: the dataclass schema lives in train/config.py."""
    for path in Path(CONFIG_DIR).glob("*.py"):
        assert "@dataclass" not in path.read_text(), path
