"""Gradient accumulation in one jitted step: k micro-batches stacked [k, B, ...] and scanned inside
the step give the update of one batch of k x B rows (AdamW, rows of different token counts, f32),
and the loop makes one call of that step per optimizer step."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

if __name__ == "__main__":  # worker mode: fake devices before jax starts
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax
import numpy as np
import pytest
from helpers.train import tiny_cfg

from funasr_jax.io.names import flatten
from funasr_jax.models.batch import IGNORE_INDEX

# f32 on CPU with matmuls at full precision: the two programs differ only in summation order.
RTOL, ATOL = 1e-5, 1e-6
# Adam's first update is lr * g / (|g| + eps): for |g| ~ eps it amplifies a gradient's rounding
# error by lr / eps (1e5 at lr 1e-3, eps 1e-8), so a gradient that is pure rounding noise would
# decide a weight's first step. eps = 1e-6 keeps that factor at 1e3: the comparison of the
# parameters then tests the accumulation, not the conditioning of Adam's first step.
EPS = 1e-6


def _stack(batches):
    """Host Batches of one shape -> one Batch [k, B, ...] (on-device fields)."""
    ds = [b.on_device_fields() for b in batches]
    return ds[0].replace(**{k: np.stack([getattr(d, k) for d in ds]) for k in ds[0].arrays()})


@pytest.fixture(scope="module")
def highest_precision():
    old = jax.config.values["jax_default_matmul_precision"]
    jax.config.update("jax_default_matmul_precision", "highest")
    yield
    jax.config.update("jax_default_matmul_precision", old)


def test_accumulation_equals_one_big_batch(tmp_path, highest_precision):
    from train import setup
    from train.data import TrainData
    from train.loop import initial_params
    from train.step import accumulate_grads, init_state, step_counts

    # every part trained, LLM + CTC losses, AdamW (+ clipping) at a constant lr from the first step
    cfg = tiny_cfg("sft_full", tmp_path, **{"optim.warmup_steps": 0, "optim.schedule": "constant",
                                            "optim.eps": EPS})
    assert cfg.optim.weight_decay > 0
    params, _ = initial_params(cfg, cfg.model, jax.random.PRNGKey(0))
    parts = setup.stage_parts(cfg, total_steps=10)
    big = TrainData(cfg).next_train()
    assert big.weight.shape == (4,) and (big.weight > 0).all()
    scored = ((big.labels[:, 1:] != IGNORE_INDEX)).sum(1)
    assert len(set(scored.tolist())) > 1 and len(set(big.ctc_label_lengths.tolist())) > 1  # unequal rows
    halves = [big.map(lambda v: v[:2]), big.map(lambda v: v[2:])]
    norm = step_counts([big])
    assert step_counts(halves) == norm and norm["tokens"] == scored.sum()

    # the summed gradients themselves, on the scale of the whole gradient (no optimizer involved)
    keys = jax.random.split(jax.random.PRNGKey(1), 2)
    g_big, _ = jax.jit(parts.steps.grad)(params, big.on_device_fields(), keys[0], norm)
    g_acc, _ = jax.jit(lambda p, m, k: accumulate_grads(parts.steps.grad, p, parts.mask, m, k, norm))(
        params, _stack(halves), keys)
    scale = max(float(np.abs(np.asarray(x)).max()) for x in jax.tree_util.tree_leaves(g_big))
    for (path, x), (_, y) in zip(flatten(g_big).items(), flatten(g_acc).items()):
        np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=RTOL, atol=ATOL * scale, err_msg="/".join(path))

    step = jax.jit(parts.steps.accumulate)
    s_big, m_big = step(init_state(params, parts.tx, 0), _stack([big]), norm)  # k = 1, B = 4
    s_acc, m_acc = step(init_state(params, parts.tx, 0), _stack(halves), norm)  # k = 2, B = 2

    for k in ("loss", "llm_sum", "llm_count", "llm_correct", "ctc_sum", "ctc_count", "grad_norm"):
        np.testing.assert_allclose(float(m_acc[k]), float(m_big[k]), rtol=RTOL, atol=ATOL, err_msg=k)
    assert float(m_big["llm_count"]) == norm["tokens"]
    before, a, b = flatten(params), flatten(s_big["params"]), flatten(s_acc["params"])
    gb, ga = flatten(g_big), flatten(g_acc)
    moved = 0
    for path in a:
        x, y = np.asarray(a[path]), np.asarray(b[path])
        # Adam's first step moves a parameter by lr * g / (|g| + eps): the gradient difference
        # checked above (rounding of two sums) moves it by up to lr * eps * dg / (|g| + eps)^2,
        # which for a near-zero gradient exceeds ATOL; that much more is allowed, element by element
        g = np.abs(np.asarray(gb[path], np.float64))
        dg = np.abs(np.asarray(ga[path], np.float64) - np.asarray(gb[path], np.float64))
        slack = 2 * cfg.optim.lr * EPS * dg / (g + EPS) ** 2
        err = np.abs(y.astype(np.float64) - x) - (RTOL * np.abs(x) + ATOL + slack)
        assert err.max() <= 0, f"{'/'.join(path)}: {int((err > 0).sum())} elements beyond tolerance (worst by {err.max():.3g})"
        moved += not np.array_equal(x, np.asarray(before[path]))
    assert moved == len(a)  # every tensor took the update
    assert int(s_acc["step"]) == int(s_big["step"]) == 1


def test_accumulating_step_is_one_scan_and_one_call_per_optimizer_step(tmp_path, monkeypatch):
    from train import precompile, setup
    from train.data import TrainData
    from train.loop import train

    accum, steps = 3, 2
    cfg = tiny_cfg("sft1", tmp_path, steps=steps, **{"optim.accum_steps": accum, "run.eval_at_end": False})
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, dev_files=()))

    # the step is one program: a single scan over the k micro-batches, then the update
    parts = setup.stage_parts(cfg, total_steps=10)
    data = TrainData(cfg)
    micro = _stack([data.next_train() for _ in range(accum)])
    state = parts.abstract_state(0)
    jaxpr = jax.make_jaxpr(parts.steps.accumulate)(state, micro, {"tokens": 1.0, "utts": 1.0})
    scans = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "scan"]
    assert len(scans) == 1 and scans[0].params["length"] == accum

    calls = []
    real = precompile.CompiledSteps.__call__

    def counted(self, state, micro, norm):
        calls.append(micro.feats.shape)
        return real(self, state, micro, norm)

    monkeypatch.setattr(precompile.CompiledSteps, "__call__", counted)
    summary = train(cfg)
    assert summary["steps"] == steps
    assert len(calls) == steps and all(s[0] == accum and s[1] == cfg.data.batch_size for s in calls)


# ----------------------------------------------------------------------------- 8 fake devices

MESHES = ["8x-fsdp", "2fsdp-4tensor"]


def worker_sharded():
    """The accumulating step (k = 2 micro-batches of 8 rows) on fsdp / tensor meshes vs one device."""
    jax.config.update("jax_default_matmul_precision", "highest")
    from helpers.sharding import host_params, slim_cfg

    from funasr_jax.models.funasr import abstract_params
    from train import bench
    from train.precompile import aot_compile
    from train.sharded import replicate, shard_micro_batches
    from train.step import step_counts

    assert jax.device_count() == 8, jax.devices()
    cfg = slim_cfg(["optim.eps=1e-3"])  # a smooth first Adam step (see tests/sharding/test_sharding.py)
    params0 = host_params(abstract_params(cfg.model))
    out, ref = {}, None
    for preset in ["1"] + MESHES:
        devices = jax.devices()[:1] if preset == "1" else None
        mesh, _, steps, state, _, _, info = bench.prepare(cfg, batch=16, seconds=1.5, text_tokens=8,
                                                          mesh_preset=preset, devices=devices, params=params0)
        host = info["host_batch"]
        halves = [host.map(lambda v: v[:8]), host.map(lambda v: v[8:])]
        micro, norm = shard_micro_batches(halves, mesh), replicate(step_counts(halves), mesh)
        compiled, _ = aot_compile(steps.accumulate, state, micro, norm)
        state, m = compiled(state, micro, norm)
        params = [np.asarray(x) for x in jax.tree_util.tree_leaves(state["params"])]
        rec = {"mesh": dict(mesh.shape), "loss": float(m["loss"]), "compiles": dict(steps.counter.by_name),
               "feats_spec": str(micro.feats.sharding.spec)}
        if ref is None:
            ref = params
        else:
            rec["max_param_diff"] = float(max(np.abs(a - b).max() for a, b in zip(params, ref)))
        out[preset] = rec
    print(json.dumps(out))


@pytest.fixture(scope="module")
def sharded():
    env = dict(os.environ, JAX_PLATFORMS="cpu", FUNASR_JAX_NO_COMPILE_CACHE="1",
               XLA_FLAGS="--xla_backend_optimization_level=0")  # LLVM -O0: faster CPU compiles, both sides
    root = Path(__file__).resolve().parents[2]
    p = subprocess.run([sys.executable, str(Path(__file__).resolve()), "sharded"], capture_output=True, text=True,
                       timeout=900, env=env, cwd=str(root))
    assert p.returncode == 0, p.stderr[-4000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("preset", MESHES)
def test_accumulating_step_on_a_mesh_equals_one_device(sharded, preset):
    """Micro-batches [k, B, ...]: k unsharded, rows over data x fsdp; same loss and update as one device."""
    ref, got = sharded["1"], sharded[preset]
    assert got["mesh"] != ref["mesh"] and got["compiles"] == {"accumulate": 1}
    assert got["feats_spec"] == "P(None, 'fsdp')"  # data = 1 on both meshes
    np.testing.assert_allclose(got["loss"], ref["loss"], rtol=2e-6, atol=0)
    assert got["max_param_diff"] <= 2e-6, got


if __name__ == "__main__":
    {"sharded": worker_sharded}[sys.argv[1]]()
