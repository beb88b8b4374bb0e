"""Training never runs on nothing: rows whose audio cannot be read are counted per epoch and stop
the run, by name and with counts, past `data.max_unreadable_share`; a manifest whose audio is all
missing stops before anything compiles; an empty manifest is a named error in training and in
evaluate alike."""

from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np
import pytest
from helpers.data import CharTokenizer, write_corpus
from helpers.train import DEMO, small_manifest

from configs.base import model_for_preset
from funasr_jax.data.config import DataConfig
from funasr_jax.data import datasets
from funasr_jax.data.datasets import make_train_data
from funasr_jax.data.manifest import read_manifests
from funasr_jax.infer import evaluate
from funasr_jax.io.checkpoint import save_params
from funasr_jax.models.funasr import abstract_params
from train.main import main as train_main


def _moved(tmp_path, n=24, missing=None) -> str:
    """The first n demo train lines with the audio of the lines in `missing` (1-based; all when
    None) pointing into a folder that does not exist."""
    src = small_manifest(tmp_path / "src", "train", n)
    lines = open(src, encoding="utf-8").read().splitlines()
    gone = str(tmp_path / "gone")
    out = [ln.replace(str(DEMO), gone) if missing is None or i in missing else ln for i, ln in enumerate(lines, 1)]
    path = tmp_path / "moved.jsonl"
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    return str(path)


def _train_argv(tmp_path, train_file):
    return ["--config", "sft2", "--set", f'data.train_files=["{train_file}"]',
            "--set", f'data.dev_files=["{small_manifest(tmp_path / "dev", "dev", 4)}"]',
            "--set", f"run.out_dir={tmp_path / 'run'}", "--set", "run.steps=2", "--set", "data.batch_size=4",
            "--set", "run.progress=false"]


def test_all_missing_audio_stops_training_with_counts_before_compiling(tmp_path, capsys):
    manifest = _moved(tmp_path)
    assert train_main(_train_argv(tmp_path, manifest)) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    n = len(read_manifests([manifest]))
    assert err.startswith("data error: UnreadableDataError:")
    assert f"{n} of {n} training rows" in err and f"audio file not found: {n}" in err
    assert f"{manifest}:1 " in err and f"{manifest}:2 " in err and "data.max_unreadable_share=0.05" in err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_missing_files_are_counted_against_the_share_before_training(tmp_path):
    """Up to the share the run goes on (the rows are skipped as before); past it, it stops."""
    cfg = DataConfig(max_unreadable_share=0.05)
    ok = read_manifests([_moved(tmp_path / "a", 24, missing={7})])  # 1 of 24 = 0.042
    datasets.check_audio_present(cfg, ok)
    bad = read_manifests([_moved(tmp_path / "b", 24, missing={7, 19})])  # 2 of 24 = 0.083
    with pytest.raises(datasets.UnreadableDataError, match=r"2 of 24 training rows.*audio file not found: 2") as e:
        datasets.check_audio_present(cfg, bad)
    assert f"{bad[6].where} " in str(e.value) and f"{bad[18].where} " in str(e.value)
    datasets.check_audio_present(dataclasses.replace(cfg, max_unreadable_share=0.1), bad)
    datasets.check_audio_present(dataclasses.replace(cfg, on_error="raise"), bad)  # the first one raises when loaded


def _epoch(cfg, exs):
    td = make_train_data(cfg, exs, CharTokenizer(), num_epochs=1)
    guard, it = datasets.UnreadableGuard(td), td.iterator()
    for step in range(td.steps_per_epoch):
        guard.observe(step, next(it))
    return td


def test_unreadable_rows_past_the_share_stop_the_epoch_with_reasons(tmp_path):
    path = write_corpus(str(tmp_path), [0.5, 0.6, 0.7, 0.8, 0.9, 0.5, 0.6, 0.7])
    (tmp_path / "wav" / "1.wav").write_bytes(b"this is a text file, not audio")
    os.remove(tmp_path / "wav" / "5.wav")
    exs = read_manifests([path])
    base = DataConfig(batch_size=4, bucket_frames=(16, 32), max_target_tokens=64, token_multiple=16, shuffle=False)
    td = _epoch(dataclasses.replace(base, max_unreadable_share=0.25), exs)  # 2 of 8: not above 0.25
    assert td.steps_per_epoch == 2 and len(td.kept) == len(exs) == 8
    with pytest.raises(datasets.UnreadableDataError) as e:
        _epoch(dataclasses.replace(base, max_unreadable_share=0.2), exs)
    msg = str(e.value)
    assert "2 of 8 training rows of epoch 0 could not be read" in msg
    assert "cannot decode audio: 1" in msg and "audio file not found: 1" in msg
    assert f"{path}:2 " in msg and f"{path}:6 " in msg
    assert "BytesIO" not in msg


def _tiny_checkpoint(path):
    """A tiny checkpoint with zero weights (nothing here decodes; an init would only cost time)."""
    cfg = model_for_preset("tiny")
    zeros = jax.tree_util.tree_map(lambda x: np.zeros(x.shape, x.dtype), abstract_params(cfg))
    save_params(path, zeros, cfg, tokenizer_path=str(DEMO / "tokenizer.model"))
    return str(path)


def test_an_empty_manifest_is_a_named_error_in_training_and_evaluate(tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert train_main(_train_argv(tmp_path, str(empty))) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("data error: EmptyManifestError: data.train_files: no usable example") and str(empty) in err

    ck = _tiny_checkpoint(tmp_path / "ck")
    assert evaluate.main(["--checkpoint", ck, "--data", str(empty)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "EmptyManifestError" in err and str(empty) in err and "0 lines" in err
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json}\n", encoding="utf-8")
    assert evaluate.main(["--checkpoint", ck, "--data", str(bad), "--on-error", "skip"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "EmptyManifestError" in err and "1 skipped as unusable" in err and f"{bad}:1" in err
    # every utterance unreadable: nothing scored is an error too, naming the first skipped line
    gone = _moved(tmp_path / "g", 3)
    assert evaluate.main(["--checkpoint", ck, "--data", gone, "--on-error", "skip"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "nothing scored: all 3 utterances" in err and f"{gone}:" in err and "not found" in err
