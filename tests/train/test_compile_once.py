"""One compile per bucket: a tiny run over two epochs of three buckets, with gradient accumulation,
compiles its train step exactly once per bucket, all before step 1, and nothing at all after step 1
(counted from jax's own backend-compile events, not from our counter)."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from helpers.train import DEMO

from funasr_jax.data.planning import lfr_estimate

EDGES = (48, 64, 96)  # the demo config's data.bucket_frames
PER_BUCKET = (4, 4, 5)  # examples per bucket: with B=2, k=2 the 96 bucket's 2nd step has padding rows only
BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"


class CompileEvents:
    """Every XLA backend compile in this process (time, jitted function name), from jax.monitoring."""

    def __init__(self):
        self.events: list[tuple[float, str]] = []
        self.lock = threading.Lock()
        jax.monitoring.register_event_duration_secs_listener(self._on_event)

    def _on_event(self, event: str, duration: float, **kw):
        if event == BACKEND_COMPILE:
            with self.lock:
                self.events.append((time.time(), str(kw.get("fun_name", ""))))


@pytest.fixture(scope="module")
def compiles():
    return CompileEvents()


def bucket_manifest(tmp_path: Path, per_bucket=PER_BUCKET) -> str:
    """Demo training lines, per_bucket[i] of them in bucket EDGES[i] (absolute audio paths)."""
    want = list(per_bucket)
    out = []
    for line in (DEMO / "train.jsonl").read_text().splitlines():
        obj = json.loads(line)
        k = int(np.searchsorted(EDGES, lfr_estimate(obj["speech_length"])))
        if k >= len(EDGES) or not want[k]:
            continue
        want[k] -= 1
        user = obj["messages"][1]["content"]
        obj["messages"][1]["content"] = user.replace("<|startofspeech|>!", f"<|startofspeech|>!{DEMO}/")
        out.append(json.dumps(obj, ensure_ascii=False))
        if not any(want):
            break
    path = tmp_path / "train_buckets.jsonl"
    path.write_text("\n".join(out) + "\n")
    return str(path)


def test_one_compile_per_bucket_and_none_after_step_1(tmp_path, compiles):
    from train.loop import train
    from train.main import load_config

    cfg = load_config("sft_full", "tiny")
    batch, accum = 2, 2
    groups = [-(-n // (batch * accum)) for n in PER_BUCKET]
    steps = 2 * sum(groups)  # two epochs of optimizer steps
    cfg = dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, train_files=(bucket_manifest(tmp_path),), dev_files=(),
                                 batch_size=batch, bucket_frames=EDGES, noise_prob=0.5),
        optim=dataclasses.replace(cfg.optim, accum_steps=accum, warmup_steps=1),
        run=dataclasses.replace(cfg.run, out_dir=str(tmp_path / "run"), steps=steps, log_every=1, save_every=0,
                                eval_at_end=False, progress=False),
    ).validate()
    start = len(compiles.events)
    summary = train(cfg)
    events = compiles.events[start:]

    assert summary["steps"] == steps
    c = summary["compile"]
    assert c["count"] == len(EDGES) and sorted(r["bucket"] for r in c["per_bucket"]) == [0, 1, 2]
    assert c["seconds"] > 0 and all(r["feats"][:2] == [accum, batch] for r in c["per_bucket"])
    assert summary["compiles"] == {"accumulate": len(EDGES)}  # traces, by our counter

    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["split"] == "train"]
    assert [r["step"] for r in train_rows] == list(range(1, steps + 1))
    assert all(np.isfinite(r["loss"]) and np.isfinite(r["grad_norm"]) for r in train_rows)  # padding-only micro-batches too
    assert all(0.05 < r["host_rss_gib"] < 64 for r in train_rows)  # this process's resident memory, in GiB
    t_step1, t_last = train_rows[0]["time"], train_rows[-1]["time"]
    step_compiles = [(t, n) for t, n in events if "accumulate" in n]
    assert len(step_compiles) == len(EDGES), step_compiles  # one XLA compile per bucket ...
    assert all(t < t_step1 for t, _ in step_compiles)  # ... all before step 1
    after = [(t, n) for t, n in events if t_step1 < t <= t_last]
    assert after == [], f"compiled during training: {after}"


def test_an_unplanned_shape_is_an_error_not_a_compile():
    from funasr_jax.models.batch import Batch
    from train.precompile import CompiledSteps, UnplannedShapeError

    table = CompiledSteps(per_bucket=[{"bucket": 0, "feats": [2, 4, 48, 560], "tokens": 32, "ctc_tokens": 32,
                                       "seconds": 1.0}])
    rows = np.zeros((2, 4), np.int32)
    batch = Batch(feats=np.zeros((2, 4, 64, 560), np.float32), feat_lengths=rows, input_ids=np.zeros((2, 4, 32), np.int32),
                  token_lengths=rows, audio_start=rows, audio_tokens=rows)
    with pytest.raises(UnplannedShapeError, match=r"matches no precompiled step \(planned: bucket 0: feats \[2, 4, 48"):
        table(None, batch, None)
