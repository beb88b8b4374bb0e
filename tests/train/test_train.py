"""Trainer: configs validate, freeze plans hold, resume is exact, every stage runs end to end."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from funasr_jax import configtools
from funasr_jax.configtools import ConfigError
from funasr_jax.io.names import flatten
from helpers.train import DEMO, assert_resume_equals_uninterrupted, small_manifest, tiny_cfg

ROOT = Path(__file__).resolve().parents[2]
STAGES = ["sft1", "sft2", "sft3", "sft4", "sft5", "ctc_warmup", "sft_full", "sft_llm", "hotword_sft", "ctx_sft",
          "stream_sft", "bestrq", "aed"]
FIRST_PASS_STAGES = ("sft_llm", "hotword_sft", "ctx_sft", "stream_sft")  # prompts carry the CTC first pass


@pytest.mark.parametrize("stage", STAGES)
def test_each_config_loads_and_validates(stage):
    from train.main import load_config

    cfg = load_config(stage, "tiny")
    assert cfg.stage.trainable
    nano = load_config(stage, "nano", ["run.steps=7"])
    assert nano.run.steps == 7 and nano.model.llm.hidden_size == 1024


def test_config_errors_name_the_field():
    from train.main import load_config

    with pytest.raises(ConfigError, match="optim.lrr.*did you mean lr"):
        load_config("sft4", "tiny", ["optim.lrr=1e-3"])
    with pytest.raises(ConfigError, match="run.steps: expected an integer"):
        load_config("sft4", "tiny", ["run.steps=many"])
    with pytest.raises(ConfigError, match="optim.lr must be > 0"):
        load_config("sft4", "tiny", ["optim.lr=-1"])
    with pytest.raises(ConfigError, match="no such file"):
        load_config("sft9", "tiny")
    r = subprocess.run([sys.executable, "-m", "train.main", "--config", "sft1.py", "--set", "data.batch_sise=3"],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "data.batch_sise" in r.stderr and "batch_size" in r.stderr


def _state_after(stage, tmp_path, steps=2):
    """Run `steps` optimizer steps of `stage` in-process; return (initial, final) params and state."""
    from train import setup
    from train.data import TrainData
    from train.loop import initial_params
    from train.step import device_batch, init_state, step_counts

    cfg = tiny_cfg(stage, tmp_path)
    params, _ = initial_params(cfg, cfg.model, jax.random.PRNGKey(0))
    parts = setup.stage_parts(cfg, total_steps=10)
    tx, mask, train_step = parts.tx, parts.mask, parts.steps.train
    state = init_state(params, tx, 0)
    data = TrainData(cfg)
    step = jax.jit(train_step)
    for _ in range(steps):
        b = data.next_train()  # only the targets the stage reads (a CTC stage: no LLM labels)
        state, m = step(state, device_batch(b), step_counts([b]))
        assert np.isfinite(float(m["loss"]))
    return params, state, mask


@pytest.mark.parametrize("stage", ["sft1", "sft3", "sft5", "sft_llm", "ctc_warmup"])
def test_freeze_plan(stage, tmp_path):
    before, state, mask = _state_after(stage, tmp_path)
    after = state["params"]
    fb, fa, fm = flatten(before), flatten(after), flatten(mask)
    moved = frozen_changed = 0
    for path, m in fm.items():
        same = np.array_equal(np.asarray(fb[path]), np.asarray(fa[path]))
        if m:
            moved += not same
        else:
            frozen_changed += not same
    assert frozen_changed == 0, "a frozen parameter changed"
    assert moved > 0.5 * sum(fm.values()), f"only {moved} of {sum(fm.values())} trainable tensors moved"
    trainable_paths = {p for p, m in fm.items() if m}
    prefixes = {"sft1": ("audio_adaptor",), "sft5": ("ctc_decoder", "ctc"), "sft3": ("llm",),
                "sft_llm": ("audio_adaptor", "llm"), "ctc_warmup": ("audio_encoder", "ctc_decoder", "ctc")}[stage]
    assert all(p[0] in prefixes for p in trainable_paths)
    if stage == "sft3":
        assert all(("lora_A" in p or "lora_B" in p) for p in trainable_paths)
    # optimizer state exists only for trainable leaves (Adam mu and nu each)
    n_state = sum(np.size(x) for x in jax.tree_util.tree_leaves(state["opt_state"]) if np.ndim(x) > 0)
    n_train = sum(np.size(fb[p]) for p in trainable_paths)
    assert n_state == 2 * n_train


def test_resume_equals_uninterrupted(tmp_path):
    a = tiny_cfg("sft_full", tmp_path / "a", steps=4, **{"run.eval_max_utts": 1})
    b = tiny_cfg("sft_full", tmp_path / "b", steps=4, **{"run.eval_max_utts": 1})
    assert_resume_equals_uninterrupted(a, b)
    assert (Path(b.run.out_dir) / "curves.png").stat().st_size > 1000
    from helpers.tensorboard import assert_tensorboard_matches_jsonl

    assert_tensorboard_matches_jsonl(a.run.out_dir)  # every metric row also went to TensorBoard
    assert_tensorboard_matches_jsonl(b.run.out_dir)  # and a resumed run's, once each


@pytest.fixture(scope="module")
def base_checkpoint(tmp_path_factory):
    """A random tiny model with the demo tokenizer: the `init_from` of the stage runs."""
    from configs.base import model_for_preset
    from funasr_jax.io.checkpoint import save_params
    from funasr_jax.models.funasr import init_params

    cfg = model_for_preset("tiny")
    d = tmp_path_factory.mktemp("base")
    save_params(d, init_params(cfg, jax.random.PRNGKey(0)), cfg, tokenizer_path=str(DEMO / "tokenizer.model"))
    return d


# Four stages as a user runs them (sft4: encoder + adaptor + LoRA; sft_llm: first-pass prompts and
# joint decoding recorded; hotword and contextual SFT prompts). Every stage's config is loaded
# above, and test_freeze_plan trains five in-process; more subprocess runs would only repeat the
# same CLI path at ~1 min each.
@pytest.mark.parametrize("stage", ["sft4", "sft_llm", "hotword_sft", "ctx_sft"])
def test_every_stage_runs_as_a_subprocess(stage, base_checkpoint, tmp_path):
    """`python -m train.main --config <stage>.py` for a few steps, as a user runs it, from a checkpoint."""
    train_file = small_manifest(tmp_path, "train", 16, first_pass=stage in FIRST_PASS_STAGES)
    dev_file = small_manifest(tmp_path, "dev", 2)
    out = tmp_path / stage
    cmd = [sys.executable, "-m", "train.main", "--config", f"{stage}.py", "--preset", "tiny",
           "--set", "run.steps=2", "--set", f"run.out_dir={out}", "--set", f"data.train_files={train_file}",
           "--set", f"data.dev_files={dev_file}", "--set", "data.batch_size=4",
           "--set", "data.bucket_frames=(128,)", "--set", "run.decode_max_tokens=3",
           "--set", "run.log_every=1", "--set", f"run.init_from={base_checkpoint}",
           # decoding is covered by the resume and CLI tests; two stages decode here too
           "--set", f"run.eval_at_end={stage in ('sft4', 'sft5', 'sft_llm')}"]
    cache = tmp_path / "xla"
    cmd += ["--set", f"mesh.compilation_cache={cache}"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert r.returncode == 0, f"{stage} failed:\n{r.stderr[-3000:]}"
    summary = json.loads(r.stdout[r.stdout.index("{"):])
    assert summary["steps"] == 2 and summary["tensors_loaded"] > 0
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["split"] == "train"] == [1, 2]
    assert all(np.isfinite(r["loss"]) for r in rows if r["split"] == "train")
    assert all(0.0 <= r["data_share"] <= 1.0 for r in rows if r["split"] == "train")  # host batch wait
    assert (out / "curves.png").exists() and (out / "checkpoints" / "2" / "params").exists()
    # the step's executable reached the persistent cache (JAX fixes cache use at a process's first compile)
    assert list(cache.glob("jit_accumulate-*")), sorted(p.name for p in cache.glob("*"))
    if stage in ("sft4", "sft5", "sft_llm"):
        assert summary["eval"]["utterances"] == 2
    if stage in ("hotword_sft", "ctx_sft"):
        data = json.loads((out / "train_config.json").read_text())["data"]
        assert data["hotword_prompt"] == (stage == "hotword_sft") and data["context_prompt"] == (stage == "ctx_sft")
    if stage == "sft_llm":  # the model records its prompt and decoding: first pass, joint CTC weight
        meta = json.loads((out / "funasr_jax.json").read_text())
        assert meta["prompt"] == {"first_pass": True} and meta["decoding"] == {"ctc_weight": 0.5}


def test_gradient_accumulation_equals_one_big_batch(tmp_path):
    """Two micro-batches, each normalised by the step's totals, give the big batch's update."""
    from train import setup
    from train.data import TrainData
    from train.loop import initial_params
    from train.step import batch_counts, device_batch, init_state

    jax.config.update("jax_default_matmul_precision", "highest")
    cfg = tiny_cfg("sft_full", tmp_path)
    params, _ = initial_params(cfg, cfg.model, jax.random.PRNGKey(0))
    parts = setup.stage_parts(cfg, total_steps=10)
    tx, grad_fn, update_fn = parts.tx, parts.steps.grad, parts.steps.update
    big = TrainData(cfg).next_train()
    halves = [big.map(lambda v: v[:2]), big.map(lambda v: v[2:])]
    norm = {k: np.float32(max(1.0, v)) for k, v in batch_counts(big).items()}
    rng = jax.random.PRNGKey(1)
    g_big, _ = jax.jit(grad_fn)(params, device_batch(big), rng, norm)
    g_parts = [jax.jit(grad_fn)(params, device_batch(h), rng, norm)[0] for h in halves]
    g_sum = jax.tree_util.tree_map(lambda a, b: a + b, *g_parts)
    # tensors whose true gradient is ~0 (e.g. 1e-11) are compared on the scale of the whole gradient
    overall = max(float(np.max(np.abs(np.asarray(a)))) for a in jax.tree_util.tree_leaves(g_big))
    for (path, a), (_, b) in zip(flatten(g_big).items(), flatten(g_sum).items()):
        scale = max(1e-3 * overall, float(np.max(np.abs(np.asarray(a)))))
        assert float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) <= 1e-4 * scale, "/".join(path)
    s1, _ = jax.jit(update_fn)(init_state(params, tx, 0), g_big)
    s2, _ = jax.jit(update_fn)(init_state(params, tx, 0), g_sum)
    for a, b in zip(jax.tree_util.tree_leaves(s1["params"]), jax.tree_util.tree_leaves(s2["params"])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
