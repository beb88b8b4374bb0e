"""Shared helpers for the trainer tests: small demo manifests and slim tiny stage configs."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from funasr_jax import configtools

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "data" / "demo"


def small_manifest(tmp_path, split="train", n=24, first_pass=False) -> str:
    """The first n lines of a demo split, with absolute audio paths, as a new JSONL
    (first_pass: with a `first_pass` field, the transcript less its last character)."""
    lines = (DEMO / f"{split}.jsonl").read_text().splitlines()[:n]
    tmp_path.mkdir(parents=True, exist_ok=True)
    out = tmp_path / f"{split}_{n}.jsonl"
    fixed = []
    for line in lines:
        obj = json.loads(line)
        user = obj["messages"][1]["content"]
        head, rest = user.split("<|startofspeech|>!", 1)
        path, tail = rest.split("<|endofspeech|>", 1)
        obj["messages"][1]["content"] = f"{head}<|startofspeech|>!{DEMO / path}<|endofspeech|>{tail}"
        if first_pass:
            obj["first_pass"] = obj["messages"][2]["content"][:-1]
        fixed.append(json.dumps(obj, ensure_ascii=False))
    out.write_text("\n".join(fixed) + "\n")
    return str(out)


def tiny_cfg(stage: str, tmp_path, steps=3, **sets):
    from train.main import load_config

    cfg = load_config(stage, "tiny")
    train_file = small_manifest(tmp_path, "train", 24, first_pass=cfg.data.first_pass_prompt)
    dev_file = small_manifest(tmp_path, "dev", 4)
    cfg = dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, train_files=(train_file,), dev_files=(dev_file,), batch_size=4,
                                 bucket_frames=(128,), noise_prob=0.5),  # one bucket: one compile
        run=dataclasses.replace(cfg.run, out_dir=str(tmp_path / stage), steps=steps, log_every=1,
                                save_every=0, decode_max_tokens=4, progress=False),
        optim=dataclasses.replace(cfg.optim, warmup_steps=1),
    )
    for k, v in sets.items():
        cfg = configtools.override(cfg, k, str(v))
    return cfg.validate()


def train_rows(run_dir) -> list[dict]:
    """The `train` rows of a run's metrics.jsonl."""
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    return [r for r in (json.loads(line) for line in lines) if r["split"] == "train"]


def assert_resume_equals_uninterrupted(a, b, stop_after: int = 2) -> tuple[list[dict], list[dict]]:
    """Train config `a` straight through; train `b` (the same run in another out_dir) stopped
    after `stop_after` steps, then again (a resume). The final params must be bit-equal and each
    step logged once. -> (a's train rows, b's train rows) for further checks."""
    import numpy as np

    from funasr_jax.io.checkpoint import load_model
    from sharding.paths import flatten
    from train.loop import train

    train(a)
    r = train(b, stop_after=stop_after)
    assert r.get("interrupted") and r["steps"] == stop_after
    train(b)  # resumes
    pa, pb = load_model(a.run.out_dir).params, load_model(b.run.out_dir).params
    fa, fb = flatten(pa), flatten(pb)
    assert fa.keys() == fb.keys()
    for path in fa:
        np.testing.assert_array_equal(np.asarray(fb[path]), np.asarray(fa[path]), err_msg="/".join(path))
    rows_a, rows_b = train_rows(a.run.out_dir), train_rows(b.run.out_dir)
    assert [r["step"] for r in rows_b] == list(range(1, a.run.steps + 1))
    return rows_a, rows_b
