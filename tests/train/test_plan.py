"""Memory planner and train.bench: planner bytes vs XLA's compiled memory analysis, sharded byte
counts vs jax's own shard shapes, the FLOP formula vs a hand count, and both CLIs end to end."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers.sharding import SLIM, slim_cfg

from funasr_jax.models.axes import logical_axes_for

ROOT = Path(__file__).resolve().parents[2]


def test_planner_matches_compiled_memory_analysis():
    from train import setup
    from train.plan import plan
    from train.synthetic import synthetic_batch

    cfg = slim_cfg()
    batch, seconds = 8, 6.0
    p = plan(cfg, n_devices=1, device="cpu", batch=batch, seconds=seconds, presets=["1"])
    lay = p["layouts"][0]

    parts = setup.stage_parts(cfg, total_steps=10)
    train_step = parts.steps.train
    state = parts.abstract_state(0)
    host = synthetic_batch(cfg.model, batch, seconds, ctc=True)
    bsd = host.on_device_fields().map(lambda v: jax.ShapeDtypeStruct(v.shape, v.dtype))
    norm = {"tokens": jax.ShapeDtypeStruct((), jnp.float32), "utts": jax.ShapeDtypeStruct((), jnp.float32)}
    mem = jax.jit(train_step, donate_argnums=(0,)).lower(state, bsd, norm).compile().memory_analysis()
    compiled = mem.argument_size_in_bytes + mem.temp_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes
    planned = lay["total"]["none"]
    # Activations must be a real share of the total, or the check would only test the params.
    assert lay["activations"]["none"] > 0.5 * planned
    assert abs(planned - compiled) <= 0.2 * compiled, (planned, compiled, mem)
    # The static parts are exact: arguments = params + optimizer state + batch (+ rng, step, norm).
    static = lay["params"] + lay["opt_state"] + lay["batch"]
    assert abs(mem.argument_size_in_bytes - static) <= 64, (mem.argument_size_in_bytes, static)


def test_sharded_byte_counts_match_jax_shard_shapes():
    from funasr_jax.models.config import nano_config
    from funasr_jax.models.funasr import abstract_params
    from sharding import get_rules, param_shardings
    from train.plan import sharded_bytes

    ab = abstract_params(nano_config())
    for sizes in ({"data": 1, "fsdp": 8, "tensor": 1}, {"data": 1, "fsdp": 2, "tensor": 4}):
        mesh = jax.sharding.AbstractMesh(tuple(sizes.values()), tuple(sizes))
        sh = param_shardings(ab, mesh, get_rules(), logical_axes_for)
        want = sum(math.prod(s.shard_shape(x.shape)) * 4 for x, s in zip(
            jax.tree_util.tree_leaves(ab), jax.tree_util.tree_leaves(sh, is_leaf=lambda s: hasattr(s, "spec"))))
        assert sharded_bytes(ab, sh, sizes) == want
    total = sum(math.prod(x.shape) * 4 for x in jax.tree_util.tree_leaves(ab))
    assert want < total / 6  # nearly everything is split 8 ways


def test_flop_count_by_hand():
    from funasr_jax.models.funasr import abstract_params
    from train.bench import anchor_shapes, step_flops
    from train.optimizer import trainable_mask

    cfg = slim_cfg(["stage.trainable=[\"*\"]", "stage.ctc_weight=0", "model.llm.lora.rank=0"])
    mc = cfg.model
    ab = abstract_params(mc)
    s = anchor_shapes(10.0)
    assert (s["lfr_frames"], s["audio_tokens"], s["llm_tokens"]) == (167, 21, 80)  # the anchor's 10 s shape
    b = 3
    fl = step_flops(mc, ab, trainable_mask(ab, ("*",)), b, s, 1.0, 0.0)
    n = {c: sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(ab[c]))
         for c in ("audio_encoder", "audio_adaptor", "llm")}
    t, length = 167, 80
    ta = -(-t // mc.adaptor.downsample_rate)  # adaptor rows after frame stacking
    e, q = mc.encoder, mc.llm
    hand = (6 * n["audio_encoder"] * b * t + 6 * n["audio_adaptor"] * b * ta + 6 * n["llm"] * b * length
            + 3 * 4 * b * t * t * e.output_size * (e.num_blocks + e.tp_blocks)
            + 3 * 4 * b * ta * ta * mc.adaptor.llm_dim * mc.adaptor.n_layer
            + 3 * 4 * b * length * length * q.num_attention_heads * q.head_dim * q.num_hidden_layers / 2)
    assert fl["total"] == pytest.approx(hand, rel=1e-9)
    assert fl["flops_6nd_all"] == pytest.approx(hand, rel=1e-9)
    # Freezing the LLM removes its weight-gradient third only (gradients still flow through it).
    frozen = step_flops(mc, ab, trainable_mask(ab, ("audio_encoder", "audio_adaptor")), b, s, 1.0, 0.0)
    assert hand - frozen["total"] == pytest.approx(2 * n["llm"] * b * length, rel=1e-9)


def _cli(args, timeout=240):
    env = dict(os.environ, FUNASR_JAX_NO_COMPILE_CACHE="1", JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_backend_optimization_level=0")
    p = subprocess.run([sys.executable, "-m"] + args, capture_output=True, text=True, timeout=timeout, env=env,
                       cwd=str(ROOT))
    assert p.returncode == 0, p.stderr[-3000:]
    return p.stdout


def test_plan_cli(tmp_path):
    out = _cli(["train.plan", "--config", "sft4.py", "--preset", "tiny", "--mesh", "8xh100-80g", "--batch", "8",
                "--seconds", "5", "--json", str(tmp_path / "p.json")] + sum((["--set", s] for s in SLIM), []))
    p = json.loads((tmp_path / "p.json").read_text())
    assert {L["preset"] for L in p["layouts"]} == {"8x-data", "8x-fsdp", "2fsdp-4tensor"}
    assert p["usable_gib"] == pytest.approx(79.1 * 0.75, abs=0.01)
    d = {L["preset"]: L for L in p["layouts"]}
    assert d["8x-fsdp"]["params"] < d["8x-data"]["params"] / 4
    assert d["8x-data"]["total"]["block"] < d["8x-data"]["total"]["none"]
    assert "| 8x-fsdp |" in out and "fits" in out
    bad = subprocess.run([sys.executable, "-m", "train.plan", "--config", "sft4.py", "--mesh", "8xv100"],
                         capture_output=True, text=True, cwd=str(ROOT))
    assert bad.returncode == 2 and "--mesh '8xv100'" in bad.stderr


def test_bench_cli(tmp_path):
    out = _cli(["train.bench", "--config", "sft4.py", "--preset", "tiny", "--batch", "2", "--seconds", "2",
                "--steps", "2", "--warmup", "1", "--out", str(tmp_path / "b.json")] + sum((["--set", s] for s in SLIM), []))
    r = json.loads((tmp_path / "b.json").read_text())
    assert r["batch"] == 2 and r["lfr_frames"] == 33 and r["backend"] == "cpu" and r["mfu"] is None
    assert r["tokens_per_s"] == pytest.approx(2 * r["llm_tokens"] / (r["step_ms"] / 1e3), rel=1e-2)
    assert r["compiles"] == 2 and np.isfinite(r["loss"]) and r["eval_ms"] > 0
    assert "| tiny | 2 |" in out
