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


@pytest.mark.parametrize("preset", ["nano", "full"])
def test_production_presets_read_the_demo_with_qwen3_and_a_matching_ctc_head(preset):
    cfg = load_config("sft4.py", preset)
    assert cfg.data.tokenizer == "qwen3" and cfg.model.llm.vocab_size == 151936
    assert cfg.data.ctc_tokenizer == str(DEMO / "tokenizer.model")
    assert cfg.model.ctc.vocab_size == DEMO_VOCAB_SIZE + 1


def test_a_ctc_mismatch_a_stage_does_not_use_is_no_error(tmp_path):
    """sft4 has no CTC loss: a CTC head of another size (a release's 60,515) does not stop it."""
    from helpers.train import tiny_cfg
    from train.data import TrainData

    data = TrainData(tiny_cfg("sft4.py", tmp_path, **{"model.ctc.vocab_size": 60515}))
    assert data.ctc_vocab.vocab_size == DEMO_VOCAB_SIZE + 1


@pytest.mark.parametrize("stage", ["sft5.py", "ctc_warmup.py"])
def test_a_ctc_mismatch_that_matters_is_one_line_naming_both_sizes_and_the_flag(stage, tmp_path):
    from funasr_jax.configtools import ConfigError
    from helpers.train import tiny_cfg
    from train.data import TrainData

    with pytest.raises(ConfigError) as e:
        TrainData(tiny_cfg(stage, tmp_path, **{"model.ctc.vocab_size": 60515}))
    msg = str(e.value)
    assert "\n" not in msg and "1601" in msg and "60515" in msg and "--set model.ctc.vocab_size=1601" in msg


def test_the_cli_reports_a_vocabulary_mismatch_without_a_traceback(tmp_path):
    import subprocess
    import sys

    from helpers.train import ROOT, small_manifest

    train = small_manifest(tmp_path, "train", 8)
    r = subprocess.run([sys.executable, "-m", "train.main", "--config", "sft5.py", "--set",
                        f"data.train_files=['{train}']", "--set", "model.ctc.vocab_size=60515", "--set",
                        f"run.out_dir={tmp_path / 'run'}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and "config error: data.ctc_tokenizer has 1601 labels" in r.stderr
