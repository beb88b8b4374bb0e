"""The production model's shape meets the real data path: the nano preset with the real Qwen3
vocabulary (151,936 embedding rows, the bundled 151,669-entry tokenizer), bf16, but few layers so
that CI stays fast, trains two sft4 steps on the demo corpus through `python -m train.main`, and
the run then serves `funasr_jax.transcribe` and `funasr_jax.evaluate`, all as subprocesses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.memo import once_per_session
from helpers.train import DEMO, ROOT, small_manifest

pytestmark = pytest.mark.slow

# Nano widths and vocabularies; two encoder blocks, two LLM layers, one CTC-decoder block.
FEW_LAYERS = ["model.encoder.num_blocks=2", "model.encoder.tp_blocks=1", "model.llm.num_hidden_layers=2",
              "model.ctc.decoder.n_layer=1", "model.adaptor.n_layer=1"]


def _run(args, timeout=900):
    r = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(args[:3])} failed:\n{r.stderr[-4000:]}"
    return r


def _train_nano(tmp) -> dict:
    train = small_manifest(tmp, "train", 8)
    dev = small_manifest(tmp, "dev", 2)
    out = tmp / "run"
    sets = FEW_LAYERS + [f"data.train_files=['{train}']", f"data.dev_files=['{dev}']", "data.batch_size=2",
                         "data.bucket_frames=[96]", "run.steps=2", "run.log_every=1", "run.decode_max_tokens=4",
                         f"run.out_dir={out}", "optim.warmup_steps=1"]
    r = _run(["train.main", "--config", "sft4.py", "--preset", "nano"] + [a for s in sets for a in ("--set", s)])
    return {"out": str(out), "summary": json.loads(r.stdout[r.stdout.index("{"):])}


@pytest.fixture(scope="session")  # built once even when xdist tears session fixtures down
def nano_run(tmp_path_factory):
    run = once_per_session(tmp_path_factory, "nano-vocab", _train_nano)
    return Path(run["out"]), run["summary"]


def test_nano_sft4_trains_with_the_real_vocabulary(nano_run):
    out, summary = nano_run
    assert summary["steps"] == 2
    cfg = json.loads((out / "train_config.json").read_text())
    assert cfg["model"]["llm"]["vocab_size"] == 151936 and cfg["model"]["dtype"] == "bfloat16"
    assert cfg["data"]["tokenizer"] == "qwen3" and cfg["model"]["ctc"]["vocab_size"] == 1601
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["split"] == "train"]
    assert len(train) == 2 and all(r["llm_loss"] > 5.0 for r in train)  # ~ln(151936) = 11.9 untrained
    meta = json.loads((out / "funasr_jax.json").read_text())
    assert meta["tokenizer"] == "qwen3"  # the bundled tokenizer is named, not copied


def test_transcribe_and_evaluate_serve_the_nano_run(nano_run, tmp_path):
    out, _ = nano_run
    wav = DEMO / json.loads((DEMO / "test.jsonl").read_text().splitlines()[0])["messages"][1]["content"].split(
        "<|startofspeech|>!")[1].split("<|endofspeech|>")[0]
    r = _run(["funasr_jax.transcribe", "--checkpoint", str(out), "--json", str(wav)])
    rec = json.loads(r.stdout.strip().splitlines()[-1])
    assert isinstance(rec.get("text"), str)
    test = small_manifest(tmp_path, "test", 2)
    hyps = tmp_path / "hyps.jsonl"
    _run(["funasr_jax.evaluate", "--checkpoint", str(out), "--data", test, "--out", str(hyps)])
    lines = [json.loads(x) for x in hyps.read_text().splitlines()]
    assert len(lines) == 2
