"""Attention kernels against the plain-JAX reference (`kernels.attention.reference`).

Pallas GPU kernels run in interpret mode on CPU (small tiles of 16 so every shape spans several
tiles and ends in a partial one). Seeds are fresh per run and printed in failure messages.
The oracle always runs at matmul precision "highest"; the kernel under test runs at the
precision each test names (`jax.default_matmul_precision`, as `model.matmul_precision` applies it).
Tolerances, per precision: f32 inputs at "highest" (and at "default" on CPU, which computes f32
exactly): max abs error 2e-5 (outputs and gradients are O(1)); f32 at "default" on a GPU (TF32,
10 mantissa bits) and bf16 inputs at any precision: max abs error <= 2e-2 * max |reference| per
tensor (bf16 keeps 8 mantissa bits and the kernels round p and the outputs to bf16; the reference
runs in f32 from the same rounded inputs).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers.lowering import custom_call_targets, lower_for_cuda, triton_calls

from kernels._common import KernelInputError, KernelUnsupportedError
from kernels.attention import api, pallas_gpu, reference, tpu, xla
from kernels.attention.config import BlockSizes

SMALL = BlockSizes(16, 16, 16, 16, 16, 16)
F32_TOL = 2e-5
BF16_REL_TOL = 2e-2
PRODUCTION_PRECISION = "default"   # FunASRConfig.matmul_precision's default


def _f32_is_exact(precision: str) -> bool:
    """Whether f32 matmuls at `precision` are full f32 here (CPU always is)."""
    return precision == "highest" or jax.default_backend() == "cpu"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _seed():
    return int(np.random.SeedSequence().entropy % (2**31))


def _inputs(seed, b, t, s, hq, hkv, d, dtype=jnp.float32):
    ks = jax.random.split(jax.random.key(seed), 4)
    q = jax.random.normal(ks[0], (b, t, hq, d), jnp.float32).astype(dtype)
    k = jax.random.normal(ks[1], (b, s, hkv, d), jnp.float32).astype(dtype)
    v = jax.random.normal(ks[2], (b, s, hkv, d), jnp.float32).astype(dtype)
    do = jax.random.normal(ks[3], (b, t, hq, d), jnp.float32).astype(dtype)
    rng = np.random.default_rng(seed)
    q_len = jnp.asarray(rng.integers(1, t + 1, b), jnp.int32).at[0].set(t)
    kv_len = jnp.asarray(rng.integers(1, s + 1, b), jnp.int32).at[0].set(s)
    return q, k, v, do, q_len, kv_len


def _value_and_grads(fn, q, k, v, do, **kw):
    def loss(q, k, v):
        return jnp.sum(fn(q, k, v, **kw).astype(jnp.float32) * do.astype(jnp.float32))

    out = fn(q, k, v, **kw)
    grads = jax.grad(loss, argnums=(0, 1, 2))(q, k, v)
    return out, grads


def _jit_value_and_grads(fn, q, k, v, do, **kw):
    return jax.jit(lambda q, k, v, do: _value_and_grads(fn, q, k, v, do, **kw))(q, k, v, do)


def _max_err(a, b):
    return float(jnp.max(jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32))))


def _compare(fn, seed, shape, causal, dtype, tol=None, precision="highest", **extra):
    """`fn` at matmul `precision` vs the f32 oracle at "highest"; tol None: the module's table."""
    b, t, s, hq, hkv, d = shape
    q, k, v, do, q_len, kv_len = _inputs(seed, b, t, s, hq, hkv, d, dtype)
    kw = dict(q_lengths=q_len, kv_lengths=kv_len, causal=causal)
    # The oracle sees the same (rounded) inputs, in f32.
    f32 = [x.astype(jnp.float32) for x in (q, k, v, do)]
    with jax.default_matmul_precision("highest"):
        ref_out, ref_g = _jit_value_and_grads(reference.attention, *f32, **kw)
    with jax.default_matmul_precision(precision):
        out, g = _jit_value_and_grads(lambda q, k, v, **kw: fn(q, k, v, **kw, **extra), q, k, v, do, **kw)
    errs = [_max_err(out, ref_out)] + [_max_err(a, r) for a, r in zip(g, ref_g)]
    relative = dtype != jnp.float32 or not _f32_is_exact(precision)
    if relative:   # relative to each tensor's largest reference magnitude
        errs = [e / float(jnp.abs(r).max()) for e, r in zip(errs, (ref_out, *ref_g))]
    tol = tol if tol is not None else BF16_REL_TOL if relative else F32_TOL
    assert out.dtype == q.dtype and out.shape == q.shape
    assert max(errs) < tol, f"seed={seed} shape={shape} causal={causal} {dtype} {precision}: errors {errs}"
    # rows past q_lengths are exactly zero
    rows = jnp.arange(t)[None, :] >= q_len[:, None]
    assert float(jnp.abs(jnp.where(rows[:, :, None, None], out.astype(jnp.float32), 0)).max()) == 0.0
    return errs


# (B, T, S, Hq, Hkv, D): GQA ratios 1, 2, 4; T and S not multiples of the 16-row tiles.
SHAPES = [(2, 37, 37, 4, 4, 16), (2, 29, 45, 4, 2, 32), (1, 50, 23, 8, 2, 8)]


@pytest.mark.parametrize("shape,causal", [(SHAPES[0], True), (SHAPES[1], False), (SHAPES[2], True)])
def test_xla_matches_reference_f32(shape, causal):
    _compare(xla.attention, _seed(), shape, causal, jnp.float32, F32_TOL)


def test_xla_matches_reference_bf16():
    _compare(xla.attention, _seed(), (2, 33, 40, 4, 2, 32), True, jnp.bfloat16, BF16_REL_TOL)


@pytest.mark.parametrize("shape,causal", [(SHAPES[0], False), (SHAPES[1], True), (SHAPES[2], True)])
def test_pallas_gpu_matches_reference_f32(shape, causal):
    _compare(pallas_gpu.flash_attention, _seed(), shape, causal, jnp.float32, F32_TOL,
             block_sizes=SMALL, interpret=True)


@pytest.mark.parametrize("impl", ["xla", "pallas_gpu"])
def test_f32_at_the_production_precision(impl):
    """f32 inputs at `model.matmul_precision`'s default, not only at "highest"."""
    fn, extra = ((xla.attention, {}) if impl == "xla" else
                 (pallas_gpu.flash_attention, dict(block_sizes=SMALL, interpret=True)))
    _compare(fn, _seed(), SHAPES[1], True, jnp.float32, precision=PRODUCTION_PRECISION, **extra)


def test_pallas_gpu_matches_reference_bf16():
    _compare(pallas_gpu.flash_attention, _seed(), (2, 40, 40, 4, 2, 16), True, jnp.bfloat16, BF16_REL_TOL,
             block_sizes=SMALL, interpret=True)


def test_pallas_gpu_default_blocks_and_odd_head_dim():
    # head_dim 20 is padded to 32 inside; default (CPU) block table.
    _compare(pallas_gpu.flash_attention, _seed(), (1, 70, 70, 2, 1, 20), False, jnp.float32, F32_TOL,
             interpret=True)


def test_rows_without_keys_are_zero():
    seed = _seed()
    q, k, v, do, _, _ = _inputs(seed, 2, 20, 20, 2, 1, 16)
    kv_len = jnp.array([0, 7])
    ref_out, ref_g = _jit_value_and_grads(reference.attention, q, k, v, do, kv_lengths=kv_len)
    for fn in (xla.attention, lambda *a, **kw: pallas_gpu.flash_attention(*a, **kw, block_sizes=SMALL,
                                                                          interpret=True)):
        out, g = _jit_value_and_grads(fn, q, k, v, do, kv_lengths=kv_len, causal=False)
        assert float(jnp.abs(out[0]).max()) == 0.0
        assert _max_err(out, ref_out) < F32_TOL
        assert max(_max_err(a, r) for a, r in zip(g, ref_g)) < F32_TOL
        assert all(bool(jnp.isfinite(x).all()) for x in g)


def test_pallas_gpu_outputs_fully_written():
    """Interpret mode fills pallas outputs with NaN before the kernel runs (poisoned buffers):
    every element of out/lse/dq/dk/dv, padded rows included, must be overwritten."""
    seed = _seed()
    q, k, v, do, q_len, kv_len = _inputs(seed, 2, 32, 48, 4, 2, 16)
    q_len, kv_len = jnp.array([32, 5]), jnp.array([48, 0])
    st = pallas_gpu._Static(scale=0.25, causal=True, group=2, bq=16, bk=16, bq_dq=16, bk_dq=16,
                            bq_dkv=16, bk_dkv=16, num_warps=4, num_stages=2, num_warps_bwd=4,
                            num_stages_bwd=2, interpret=True)
    out, lse = pallas_gpu._forward(q, k, v, q_len, kv_len, st)
    dq, dk, dv = pallas_gpu._backward(q, k, v, q_len, kv_len, out, lse, do, st)
    for name, x in dict(out=out, lse=lse, dq=dq, dk=dk, dv=dv).items():
        assert not bool(jnp.isnan(x).any()), f"{name} has unwritten (NaN) elements, seed={seed}"
    assert float(jnp.abs(out[1, 5:]).max()) == 0.0 and float(jnp.abs(dk[1]).max()) == 0.0


def test_pallas_gpu_lowers_to_triton():
    """Cross-lower fwd+bwd for the CUDA platform on this CPU machine: the Pallas->Triton lowering
    (tile shapes, ops) runs without a GPU; three Triton custom calls come out."""
    q = jax.ShapeDtypeStruct((2, 200, 4, 128), jnp.bfloat16)
    k = jax.ShapeDtypeStruct((2, 200, 2, 128), jnp.bfloat16)
    ln = jax.ShapeDtypeStruct((2,), jnp.int32)

    def loss(q, k, v, ln):
        out = pallas_gpu.flash_attention(q, k, v, q_lengths=ln, kv_lengths=ln, causal=True, interpret=False)
        return out.astype(jnp.float32).sum()

    text = lower_for_cuda(jax.grad(loss, argnums=(0, 1, 2)), q, k, k, ln)
    assert triton_calls(text) == 3, custom_call_targets(text)


def test_splash_tpu_path_in_tpu_interpret_mode():
    from jax.experimental.pallas import tpu as pltpu
    seed = _seed()
    q, k, v, do, q_len, kv_len = _inputs(seed, 2, 100, 100, 4, 2, 32)
    kw = dict(q_lengths=q_len, kv_lengths=kv_len, causal=True)
    ref_out, ref_g = _jit_value_and_grads(reference.attention, q, k, v, do, **kw)
    with pltpu.force_tpu_interpret_mode():
        out, g = _jit_value_and_grads(lambda q, k, v: tpu.attention(q, k, v, **kw, block=128), q, k, v, do)
    errs = [_max_err(out, ref_out)] + [_max_err(a, r) for a, r in zip(g, ref_g)]
    assert max(errs) < 1e-4, f"seed={seed}: {errs}"


def test_dispatch_cpu_explicit_and_fallbacks():
    seed = _seed()
    q, k, v, do, q_len, kv_len = _inputs(seed, 2, 12, 12, 2, 1, 8)
    assert api.default_implementation("cpu") == "xla"
    assert api.preference("gpu", "NVIDIA H100 80GB HBM3")[0] in ("cudnn", "pallas_gpu")
    assert api.preference("tpu")[0] == "splash"
    ref = reference.attention(q, k, v, kv_lengths=kv_len, causal=True)
    # asked for by name and unable to serve: an error naming why, never another implementation
    with pytest.raises(KernelUnsupportedError, match=r"'cudnn' was requested but cannot serve.*CUDA GPU"):
        api.attention(q, k, v, kv_lengths=kv_len, causal=True, implementation="cudnn")
    with pytest.raises(KernelUnsupportedError, match="not an attention implementation"):
        api.attention(q, k, v, implementation="flash3")
    mask = jax.random.bernoulli(jax.random.key(seed), 0.7, (2, 12, 12))
    with pytest.raises(KernelUnsupportedError, match="general mask"):
        api.attention(q, k, v, mask=mask, implementation="pallas_gpu")
    # a tuple / None falls back, warning once per cause
    api._warned.clear()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        for _ in range(3):
            out = api.attention(q, k, v, kv_lengths=kv_len, causal=True, implementation=("cudnn", "xla"))
    assert [str(x.message) for x in w] == ["attention: using 'xla' (cudnn: cudnn attention needs a CUDA GPU)"]
    assert _max_err(out, ref) < F32_TOL
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # the CPU preference needs no fallback
        out = api.attention(q, k, v, mask=mask)
    assert _max_err(out, reference.attention(q, k, v, mask=mask)) < F32_TOL
    assert api.select(q, k, v, implementation="pallas_gpu") == "pallas_gpu"   # interpreted on CPU
    with pytest.raises(KernelInputError, match="kv heads"):
        api.attention(q, k[:, :, :0], v[:, :, :0])
    with pytest.raises(KernelInputError, match="mask"):
        api.attention(q, k, v, mask=mask[:, :3])


@pytest.mark.slow
def test_bench_smoke(tmp_path):
    out = tmp_path / "tmp.json"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-m", "kernels.bench", "--smoke", "--out", str(out)],
                          cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    ours = [r for r in rows if r["impl"] == "ours"]
    assert {r["op"] for r in ours} == {"attention", "ctc"}
    assert all("error" not in r and r["fwd_ms"] > 0 and r["fwdbwd_ms"] > 0 for r in ours), ours
    assert all(r["ran"] == "pallas_gpu" for r in ours), ours   # what the dispatch actually ran
    assert any(r["impl"] == "xla" and "speedup_of_ours_fwd" in r for r in rows)
    assert all(r.get("ran") for r in rows), rows


@pytest.mark.gpu
@pytest.mark.skipif(jax.default_backend() != "gpu", reason="compiled Triton kernels need a GPU")
@pytest.mark.parametrize("impl", ["pallas_gpu", "cudnn"])
@pytest.mark.parametrize("precision", [PRODUCTION_PRECISION, "highest"])
def test_compiled_kernels_on_gpu(impl, precision):
    """On a GPU session: the compiled kernels (default block table) against the f32 reference,
    at the production matmul precision (f32 as TF32) and at "highest"."""
    fn = api.IMPLEMENTATIONS[impl]
    for shape, causal, dtype in [((2, 300, 300, 8, 2, 128), True, jnp.bfloat16),
                                 ((3, 257, 190, 4, 4, 64), False, jnp.bfloat16),
                                 ((2, 130, 130, 4, 1, 64), True, jnp.float32)]:
        if impl == "cudnn" and dtype == jnp.float32:
            continue
        tol = F32_TOL * 10 if dtype == jnp.float32 and precision == "highest" else None
        _compare(fn, _seed(), shape, causal, dtype, tol, precision=precision)


@pytest.mark.gpu
@pytest.mark.skipif(jax.default_backend() != "gpu", reason="compiled kernels need a GPU")
@pytest.mark.parametrize("impl", ["pallas_gpu", "cudnn", None])
def test_compiled_kernels_rows_without_keys_on_gpu(impl):
    """The pipeline's padding rows on the compiled kernels (None: the dispatch's own choice, probes
    included): a row with queries but kv_len = 0 and a row with both lengths 0 come out exactly
    zero with finite gradients; the other rows match the f32 oracle (bf16 tolerance)."""
    seed = _seed()
    b, t, s, hq, hkv, d = 4, 300, 280, 8, 2, 128
    q, k, v, do, _, _ = _inputs(seed, b, t, s, hq, hkv, d, jnp.bfloat16)
    kw = dict(q_lengths=jnp.array([t, 151, 77, 0], jnp.int32), kv_lengths=jnp.array([s, 93, 0, 0], jnp.int32),
              causal=True)
    f32 = [x.astype(jnp.float32) for x in (q, k, v, do)]
    with jax.default_matmul_precision("highest"):
        ref_out, ref_g = _jit_value_and_grads(reference.attention, *f32, **kw)
    fn = (lambda q, k, v, **kw: api.attention(q, k, v, **kw)) if impl is None else api.IMPLEMENTATIONS[impl]
    out, g = _jit_value_and_grads(fn, q, k, v, do, **kw)
    for name, x in zip(("out", "dq", "dk", "dv"), (out, *g)):
        assert bool(jnp.isfinite(x.astype(jnp.float32)).all()), f"{impl}: {name} not finite, seed={seed}"
    assert float(jnp.abs(out[2:].astype(jnp.float32)).max()) == 0.0, f"{impl}: empty rows not zero"
    errs = [_max_err(a, r) / float(jnp.abs(r).max()) for a, r in zip((out, *g), (ref_out, *ref_g))]
    assert max(errs) < BF16_REL_TOL, f"{impl} seed={seed}: errors {errs}"
