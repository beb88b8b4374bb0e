"""The AED stage in the trainer: resume equals an uninterrupted run, dev error is the AED decoder's,
its encoder initialises sft2 with every encoder tensor matched, and the recognizer decodes it."""

import json
from pathlib import Path

import jax
import numpy as np
import pytest

from funasr_jax.io.checkpoint import load_model
from funasr_jax.io.names import flatten
from helpers.train import tiny_cfg


def test_aed_trains_resumes_and_feeds_sft2(tmp_path):
    from train.loop import initial_params, merged_model_config, train

    a = tiny_cfg("aed", tmp_path / "a", steps=4)
    train(a)
    b = tiny_cfg("aed", tmp_path / "b", steps=4)
    assert train(b, stop_after=2).get("interrupted")
    train(b)
    pa, pb = load_model(a.run.out_dir).params, load_model(b.run.out_dir).params
    assert "aed_decoder" in pa
    for (path, x), (_, y) in zip(flatten(pa).items(), flatten(pb).items()):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg="/".join(path))
    rows = [json.loads(l) for l in (Path(a.run.out_dir) / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["split"] == "train"]
    assert len(train_rows) == 4 and all(np.isfinite(r["aed_loss"]) and np.isfinite(r["ctc_loss"]) for r in train_rows)
    dev = [r for r in rows if r["split"] == "dev"]
    assert dev and dev[-1]["mode"] == "aed" and dev[-1]["utterances"] == 4

    start = load_model(a.run.out_dir)
    sft = tiny_cfg("sft2", tmp_path / "sft", **{"run.init_from": a.run.out_dir})
    model_cfg = merged_model_config(sft, start.cfg)
    assert not model_cfg.aed.enabled  # the SFT model has no AED decoder
    params, _ = initial_params(sft, model_cfg, jax.random.PRNGKey(0), start)
    assert "aed_decoder" not in params
    for part in ("audio_encoder", "ctc_decoder", "ctc"):
        src, got = flatten(start.params[part]), flatten(params[part])
        assert set(src) == set(got)
        for path, v in src.items():
            np.testing.assert_array_equal(np.asarray(got[path]), np.asarray(v), err_msg=f"{part}/" + "/".join(path))


def test_recognizer_decodes_an_aed_run(tmp_path):
    from funasr_jax.infer.recognizer import Recognizer
    from train.loop import train

    a = tiny_cfg("aed", tmp_path / "a", steps=1)
    train(a)
    wave = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    for beam in (1, 2):
        rec = Recognizer.from_checkpoint(a.run.out_dir, beam=beam)
        out = rec.recognize([wave], ["语音转写："], mode="aed", max_new_tokens=5)
        assert len(out) == 1 and isinstance(out[0].text, str)
    sft = tiny_cfg("sft2", tmp_path / "s", steps=1)
    train(sft)
    with pytest.raises(ValueError, match="model.aed.enabled"):
        Recognizer.from_checkpoint(sft.run.out_dir).recognize([wave], ["语音转写："], mode="aed")


def test_aed_config_errors_name_the_field():
    from funasr_jax.configtools import ConfigError
    from train.main import load_config

    with pytest.raises(ConfigError, match="model.aed.enabled"):
        load_config("sft4", "tiny", ["stage.aed_weight=1.0"])
    with pytest.raises(ConfigError, match="model.aed.attention_heads"):
        load_config("aed", "tiny", ["model.aed.attention_heads=3"])
    with pytest.raises(ConfigError, match="model.aed.label_smoothing"):
        load_config("aed", "tiny", ["model.aed.label_smoothing=1.5"])
    with pytest.raises(ConfigError, match="model.ctc.enabled"):
        load_config("aed", "tiny", ["model.ctc.enabled=false", "stage.ctc_weight=0"])
