"""A tiny training run reading shards (`python -m funasr_jax.data.pack`) resumes mid-epoch exactly."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
from helpers.train import small_manifest, tiny_cfg

from funasr_jax.data.pack import pack
from funasr_jax.io.names import flatten


def test_training_on_shards_resumes_equal_to_uninterrupted(tmp_path):
    from train.loop import train

    shards = tmp_path / "shards"
    pack([("jsonl", small_manifest(tmp_path, "train", 24))], shards, shard_size=7, log=lambda s: None)

    def cfg(name):
        c = tiny_cfg("sft_full", tmp_path / name, steps=4, **{"run.eval_max_utts": 1})
        return dataclasses.replace(c, data=dataclasses.replace(c.data, train_files=(str(shards / "shards.json"),)))

    a, b = cfg("a"), cfg("b")
    train(a)
    r = train(b, stop_after=2)  # 6 steps per epoch: stopped mid-epoch
    assert r.get("interrupted") and r["steps"] == 2
    train(b)
    from funasr_jax.io.checkpoint import load_model

    pa, pb = load_model(a.run.out_dir).params, load_model(b.run.out_dir).params
    for (path, x), (_, y) in zip(flatten(pa).items(), flatten(pb).items()):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg="/".join(path))
    rows = [json.loads(l) for l in (Path(b.run.out_dir) / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["split"] == "train"]
    assert [r["step"] for r in train_rows] == [1, 2, 3, 4]
    ref = [r for r in (json.loads(l) for l in (Path(a.run.out_dir) / "metrics.jsonl").read_text().splitlines())
           if r["split"] == "train"]
    assert [r["loss"] for r in train_rows] == [r["loss"] for r in ref]
