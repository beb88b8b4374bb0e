"""`python -m funasr_jax.data.bench`: the loader's audio-s/s table, JSONL + files vs shards."""

from __future__ import annotations

import json

from helpers.data import write_corpus
from helpers.train import DEMO

from funasr_jax.data.bench import main, tree_cpu_seconds
from funasr_jax.data.pack import pack


def test_bench_table_and_json(tmp_path, capsys):
    manifest = write_corpus(str(tmp_path), [0.5, 0.7, 0.9, 1.1, 0.6, 0.8])
    pack([("jsonl", manifest)], tmp_path / "shards", log=lambda s: None)
    out = tmp_path / "bench.json"
    assert main(["--jsonl", manifest, "--shards", str(tmp_path / "shards"), "--workers", "0", "--batches", "2",
                 "--warmup", "0", "--batch-size", "2", "--tokenizer", str(DEMO / "tokenizer.model"),
                 "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    rows = {r["source"]: r for r in res["rows"]}
    assert set(rows) == {"jsonl+files", "shards"}
    assert rows["shards"]["audio_s"] == rows["jsonl+files"]["audio_s"] > 0  # the same rows either way
    for r in rows.values():
        assert r["rows"] == 4 and r["audio_s_per_s"] > 0
        assert r["cores_for_gpu"] == round(10500 / r["audio_s_per_cpu_s"], 1)
    printed = capsys.readouterr().out
    assert "audio-s/s" in printed and "jsonl+files" in printed and "shards" in printed


def test_cpu_seconds_grow_with_work():
    a = tree_cpu_seconds()
    sum(i * i for i in range(2_000_000))
    assert tree_cpu_seconds() > a
