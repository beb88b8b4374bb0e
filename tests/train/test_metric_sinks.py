"""Metric rows reach TensorBoard (read back with TensorBoard's own reader) and W&B is refused by
name when it is asked for but not installed; the console scripts answer --help."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from funasr_jax.configtools import ConfigError
from helpers.tensorboard import read_scalars
from train.metric_sinks import TensorBoardSink, scalars

SCRIPTS = ["funasr-jax-train", "funasr-jax-quickstart", "funasr-jax-transcribe", "funasr-jax-evaluate",
           "funasr-jax-convert", "funasr-jax-bench", "funasr-jax-train-bench", "funasr-jax-kernels-bench"]


def test_scalars_flatten_numbers_by_split_and_skip_the_rest():
    row = {"step": 7, "split": "dev", "loss": 1.5, "utterances": 4, "ok": True, "text": "x", "ids": [1, 2],
           "per_language": {"zh": {"rate": 0.25}, "en": 0.5}}
    assert scalars(row) == {"dev/loss": 1.5, "dev/utterances": 4.0, "dev/per_language/zh/rate": 0.25,
                            "dev/per_language/en": 0.5}
    assert scalars({"step": 1, "loss": 2.0}) == {"train/loss": 2.0}  # rows without a split are training rows


def test_tensorboard_sink_round_trip(tmp_path):
    sink = TensorBoardSink(tmp_path / "tb")
    rows = [{"step": s, "split": "train", "loss": 3.0 / s, "lr": 1e-3 * s} for s in (1, 2, 3)]
    rows.append({"step": 3, "split": "train", "loss": float("nan")})  # not plotted; kept in the JSONL
    for r in rows:
        sink.write(r)
    sink.close()
    got = read_scalars(tmp_path / "tb")
    assert set(got) == {"train/loss", "train/lr"}
    assert [s for s, _ in got["train/loss"]] == [1, 2, 3]
    np.testing.assert_allclose([v for _, v in got["train/loss"]], [3.0, 1.5, 1.0], rtol=1e-6)


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed here")
def test_wandb_asked_for_but_missing_is_a_config_error():
    from train.config import RunConfig

    with pytest.raises(ConfigError, match=r"run.wandb_project='asr'.*pip install wandb"):
        RunConfig(wandb_project="asr").validate()
    RunConfig(wandb_project="").validate()


def test_console_scripts_answer_help():
    bindir = Path(sys.executable).parent
    for name in SCRIPTS:
        exe = bindir / name
        assert exe.exists(), f"{exe}: not installed (pip install -e . writes the [project.scripts])"
        r = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and "usage:" in r.stdout.lower(), (name, r.stderr[-2000:])
