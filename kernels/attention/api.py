"""Attention dispatch: one call for every model, the best implementation per backend.

`attention(q, k, v, *, q_lengths, kv_lengths, causal, scale, mask, implementation)`:
q [B, T, Hq, D], k/v [B, S, Hkv, D] -> [B, T, Hq, D] (native GQA, Hq % Hkv == 0). Rows past
`q_lengths` and rows that see no key are zero; `causal` is top-left aligned (query t sees keys
s <= t). `mask` [B, T, S] bool (KV-cache decoding) is served by "xla" (or "reference").

`implementation`: None (best for the backend), a name from `IMPLEMENTATIONS`, or a tuple of names
tried in order:
- "reference": the plain-JAX oracle (f32 everywhere);
- "xla": grouped einsums, f32 softmax — always available, the CPU default;
- "pallas_gpu": our Pallas/Triton flash attention (forward + backward; interpreted off-GPU);
- "cudnn": `jax.nn.dot_product_attention(implementation="cudnn")` (bf16/f16, head_dim <= 128);
- "splash": JAX's Pallas TPU splash attention (TPU only).
A name asked for explicitly either serves the call or raises `KernelUnsupportedError` saying why;
`None` or a tuple tries the candidates in order and warns ONCE per cause when it moves on.
On an accelerator (`_dispatch.accelerator_checks()`), the first call per signature of
"pallas_gpu" / "cudnn" / "splash" compiles the tiling the real call uses (failure -> refusal) and
checks its forward and gradients against "xla" on a small input at that tiling, padding rows with
`kv_lengths == 0` included (failure -> `KernelNumericsError` when asked for by name; for None / a
tuple, one warning naming the difference and the next candidate).

Under a `kernels.kernel_layout(mesh, batch_axes, head_axes)` context (the trainer enters it) the
non-XLA implementations run per shard (`jax.shard_map`): q/k/v split as
P(batch_axes, None, head_axes, None), lengths as P(batch_axes); sequence and head_dim local
(`kernels/_partition.py`). "xla" and "reference" are left to XLA's partitioner.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from kernels._common import KernelUnsupportedError, lengths_or_full, validate_attention_inputs
from kernels._dispatch import (Dispatcher, accelerator_checks, compile_probe, max_rel_error, numerics_probe,
                               require_accurate, require_compiled)
from kernels._partition import attention_specs, current_layout, per_shard
from kernels.attention import cudnn, pallas_gpu, reference, tpu, xla

IMPLEMENTATIONS = {
    "reference": reference.attention,
    "xla": xla.attention,
    "pallas_gpu": pallas_gpu.flash_attention,
    "cudnn": cudnn.attention,
    "splash": tpu.attention,
}

# GPU preference per device kind (substring match, first wins). From H200 measurements of the alternatives:
# cuDNN 223-247 fwd / 179-220 fwd+bwd TFLOP/s on the LLM shape vs 153-164 / 108-110 for the JAX
# Pallas-Triton kernel our kernel is modelled on; re-order after `python -m kernels.bench`.
GPU_PREFERENCE: list[tuple[str, tuple[str, ...]]] = [
    ("H200", ("cudnn", "pallas_gpu", "xla")),
    ("H100", ("cudnn", "pallas_gpu", "xla")),
    ("", ("cudnn", "pallas_gpu", "xla")),
]
BACKEND_PREFERENCE = {"cpu": ("xla",), "tpu": ("splash", "xla")}

_DISPATCH = Dispatcher(
    "attention", IMPLEMENTATIONS, BACKEND_PREFERENCE, GPU_PREFERENCE,
    unknown=lambda name: f"{name!r} is not an attention implementation ({sorted(IMPLEMENTATIONS)})")
_warned = _DISPATCH.warned
_SUPPORT_CHECKS = {"pallas_gpu": pallas_gpu.check_supported, "cudnn": cudnn.check_supported,
                   "splash": tpu.check_supported}


def preference(backend: str | None = None, kind: str | None = None) -> tuple[str, ...]:
    """Implementations tried in order when `implementation=None`."""
    return _DISPATCH.preference(backend, kind)


def default_implementation(backend: str | None = None) -> str:
    return preference(backend)[0]


PROBED = ("pallas_gpu", "cudnn", "splash")   # compiled and checked on the first call per signature


def _tiling(name: str, dtype, t: int, s: int, d: int):
    """What the compiled kernel specialises on besides dtype/group/causal: the resolved Pallas
    block sizes (which depend on T, S and the padded head_dim), or nothing."""
    if name == "pallas_gpu":
        return pallas_gpu.resolve_blocks(t, s, d, dtype)
    return None


def _probe_inputs(dtype, tiling, d: int, group: int, seed: int = 0):
    """q [4, T, group, D], k/v [4, S, 1, D], do, q_lengths [4], kv_lengths [4] (int32): T/S span
    two tiles of the resolved tiling (a partial one included). Rows as the training pipeline
    makes them: 0 full, 1 shorter, 2 queries but no key (kv_len 0), 3 a padding row (both 0);
    rows 2 and 3 must come out zero with finite, zero gradients."""
    rows = 2 * max(tiling.block_q, tiling.block_q_dq, tiling.block_q_dkv) - 3 if tiling else 200
    cols = 2 * max(tiling.block_k, tiling.block_k_dq, tiling.block_k_dkv) - 5 if tiling else 190
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((4, rows, group, d), np.float32).astype(dtype)
    k = rng.standard_normal((4, cols, 1, d), np.float32).astype(dtype)
    v = rng.standard_normal((4, cols, 1, d), np.float32).astype(dtype)
    do = rng.standard_normal((4, rows, group, d), np.float32).astype(dtype)
    q_len = np.array([rows, rows // 2 + 1, rows // 3 + 1, 0], np.int32)
    kv_len = np.array([cols, cols // 3 + 1, 0, 0], np.int32)
    return q, k, v, do, q_len, kv_len


def _fwd_bwd(name, causal, tiling):
    fn = IMPLEMENTATIONS[name]
    extra = {"block_sizes": tiling} if tiling is not None else {}

    def run(q, k, v, do, ql, kl):
        def loss(q, k, v):
            out = fn(q, k, v, q_lengths=ql, kv_lengths=kl, causal=causal, **extra)
            return jnp.sum(out.astype(jnp.float32) * do.astype(jnp.float32)), out
        (_, out), grads = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(q, k, v)
        return out, grads

    return run


@compile_probe
def _compiles(name: str, dtype, d: int, group: int, causal: bool, tiling, precision):
    """fwd+bwd of `name` at the call's tiling (two tiles of it; compiling is what can fail)."""
    del precision   # part of the cache key: it changes the lowering
    args = _probe_inputs(dtype, tiling, d, group)
    return _fwd_bwd(name, causal, tiling), [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in args]


def numerics_tolerance(dtype, precision) -> float:
    """Max error relative to each tensor's largest |xla| value that the probe accepts: bf16/f16
    inputs 3e-2 (8/11 mantissa bits, p rounded to the input dtype inside the kernels); f32 at
    'highest' 1e-4; f32 at any lower precision (TF32 on NVIDIA, bf16 passes on TPU) 2e-2."""
    if jnp.dtype(dtype) != jnp.float32:
        return 3e-2
    return 1e-4 if precision in ("highest", "float32") else 2e-2


@numerics_probe
def _agrees(name: str, dtype, d: int, group: int, causal: bool, tiling, precision):
    tol = numerics_tolerance(dtype, precision)

    def compare(got, want):
        err = max_rel_error(got, want)
        return None if err <= tol else f"max error {err:.3g} x max|xla| > {tol:g} ({jnp.dtype(dtype).name}, " \
                                       f"precision {precision})"

    return _fwd_bwd(name, causal, tiling), _fwd_bwd("xla", causal, None), _probe_inputs(dtype, tiling, d, group), \
        compare


def _check(name, q, k, v, mask, causal):
    """Raises KernelUnsupportedError("<name>: <why>") when `name` cannot serve this call here
    (q/k/v: the per-shard shapes); KernelNumericsError when it compiles but computes wrongly."""
    try:
        if name in _SUPPORT_CHECKS:
            _SUPPORT_CHECKS[name](q, k, v, mask=mask)
        if name in PROBED and accelerator_checks():
            dtype = jnp.dtype(q.dtype)
            key = (name, dtype, q.shape[-1], q.shape[2] // k.shape[2], bool(causal),
                   _tiling(name, dtype, q.shape[1], k.shape[1], q.shape[-1]),
                   jax.config.jax_default_matmul_precision or "default")
            require_compiled(name, _compiles(*key))
            require_accurate(name, _agrees(*key), f"a {dtype.name} probe input (head_dim {key[2]}, group {key[3]}, "
                                                  f"causal {key[4]}, tiling {key[5]})")
    except KernelUnsupportedError as e:
        raise KernelUnsupportedError(f"{name}: {e}") from None


def select(q, k, v, *, mask=None, causal=False, implementation=None) -> str:
    """The implementation `attention` will use for inputs shaped like q/k/v (arrays or
    ShapeDtypeStructs of the per-shard shapes); warns once when falling back."""
    return _DISPATCH.select(implementation, lambda name: _check(name, q, k, v, mask, causal))


def attention(q, k, v, *, q_lengths=None, kv_lengths=None, causal=False, scale=None, mask=None,
              implementation: str | tuple[str, ...] | None = None):
    validate_attention_inputs(q, k, v, mask)
    b, t, hq, d = q.shape
    s, hkv = k.shape[1], k.shape[2]
    layout = current_layout()
    qkv_spec, len_spec, b_loc, hq_loc, hkv_loc = attention_specs(layout, b, hq, hkv)
    local_q = jax.ShapeDtypeStruct((b_loc, t, hq_loc, d), q.dtype)
    local_kv = jax.ShapeDtypeStruct((b_loc, s, hkv_loc, d), k.dtype)
    name = select(local_q, local_kv, local_kv, mask=mask, causal=causal, implementation=implementation)
    fn = IMPLEMENTATIONS[name]
    if name in ("xla", "reference") or layout is None:
        return fn(q, k, v, q_lengths=q_lengths, kv_lengths=kv_lengths, causal=causal, scale=scale, mask=mask)
    q_len = lengths_or_full(q_lengths, b, t, "q_lengths")
    kv_len = lengths_or_full(kv_lengths, b, s, "kv_lengths")

    def local(q, k, v, ql, kl):
        return fn(q, k, v, q_lengths=ql, kv_lengths=kl, causal=causal, scale=scale)

    return per_shard(local, layout, (qkv_spec, qkv_spec, qkv_spec, len_spec, len_spec), qkv_spec)(
        q, k, v, q_len, kv_len)
