"""A tiny training run reading shards (`python -m funasr_jax.data.pack`) resumes mid-epoch exactly."""

from __future__ import annotations

import dataclasses

from helpers.train import assert_resume_equals_uninterrupted, small_manifest, tiny_cfg

from funasr_jax.data.pack import pack


def test_training_on_shards_resumes_equal_to_uninterrupted(tmp_path):
    shards = tmp_path / "shards"
    pack([("jsonl", small_manifest(tmp_path, "train", 24))], shards, shard_size=7, log=lambda s: None)

    def cfg(name):
        c = tiny_cfg("sft_full", tmp_path / name, steps=4, **{"run.eval_max_utts": 1})
        return dataclasses.replace(c, data=dataclasses.replace(c.data, train_files=(str(shards / "shards.json"),)))

    ref, train_rows = assert_resume_equals_uninterrupted(cfg("a"), cfg("b"))  # 6 steps per epoch: stopped mid-epoch
    assert [r["loss"] for r in train_rows] == [r["loss"] for r in ref]
