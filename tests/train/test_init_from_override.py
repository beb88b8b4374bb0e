"""`--set` of a model field together with `run.init_from` is never dropped: a field that leaves
every parameter shape as the source has it (a dropout rate) is applied; one that changes a shape
(the encoder's FFN width) stops the run naming the field, the requested value and the source's."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from configs.base import model_for_preset
from funasr_jax.configtools import ConfigError
from funasr_jax.io.checkpoint import load_model, save_params
from funasr_jax.models.funasr import abstract_params
from train.loop import merged_model_config
from train.main import load_config
from train.main import main as train_main


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A tiny checkpoint whose encoder differs from the preset's in a setting that changes no shape."""
    cfg = model_for_preset("tiny")
    cfg = cfg.replace(encoder=dataclasses.replace(cfg.encoder, dropout_rate=0.05))
    path = tmp_path_factory.mktemp("src") / "ck"
    zeros = jax.tree_util.tree_map(lambda x: np.zeros(x.shape, x.dtype), abstract_params(cfg))  # never run
    save_params(path, zeros, cfg)
    return str(path), cfg


def test_a_shape_free_field_is_applied(source):
    path, src_cfg = source
    cfg = load_config("sft2", "tiny", [f"run.init_from={path}", "model.encoder.dropout_rate=0.3",
                                       "model.adaptor.dropout_rate=0.2"])
    merged = merged_model_config(cfg, load_model(path).cfg)
    assert merged.encoder.dropout_rate == 0.3 and merged.adaptor.dropout_rate == 0.2
    assert merged.encoder.linear_units == src_cfg.encoder.linear_units  # the architecture is still the source's
    # not asked for: the source's value stays, as before
    plain = load_config("sft2", "tiny", [f"run.init_from={path}"])
    assert merged_model_config(plain, load_model(path).cfg).encoder.dropout_rate == src_cfg.encoder.dropout_rate


def test_a_shape_changing_field_is_refused_by_name(source, tmp_path, capsys):
    path, src_cfg = source
    want = src_cfg.encoder.linear_units + 128
    cfg = load_config("sft2", "tiny", [f"run.init_from={path}", f"model.encoder.linear_units={want}"])
    with pytest.raises(ConfigError) as e:
        merged_model_config(cfg, load_model(path).cfg)
    msg = str(e.value)
    assert f"model.encoder.linear_units={want}" in msg and f"model.encoder.linear_units={src_cfg.encoder.linear_units}" in msg
    assert path in msg
    # the same through the command line: one line, exit 2, before anything is built
    out = tmp_path / "run"
    rc = train_main(["--config", "sft2", "--set", f"run.init_from={path}", "--set", f"model.encoder.linear_units={want}",
                     "--set", f"run.out_dir={out}"])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("config error: model.encoder.linear_units=") and str(src_cfg.encoder.linear_units) in err
    assert not (out / "checkpoints").exists()


def test_a_field_equal_to_the_source_or_run_side_is_no_error(source):
    path, src_cfg = source
    cfg = load_config("sft2", "tiny", [f"run.init_from={path}",
                                       f"model.encoder.linear_units={src_cfg.encoder.linear_units}",
                                       "model.remat=block"])
    merged = merged_model_config(cfg, load_model(path).cfg)
    assert merged.remat == "block" and merged.encoder == src_cfg.encoder
