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
When the requested/preferred implementation cannot serve a call (backend, dtype, head_dim, mask,
a failed compile probe on GPU) the next candidate is used and ONE warning per cause is issued.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from kernels._common import KernelUnsupportedError, validate_attention_inputs
from kernels._dispatch import Dispatcher, compile_probe, require_compiled
from kernels.attention import cudnn, pallas_gpu, reference, tpu, xla

IMPLEMENTATIONS = {
    "reference": reference.attention,
    "xla": xla.attention,
    "pallas_gpu": pallas_gpu.flash_attention,
    "cudnn": cudnn.attention,
    "splash": tpu.attention,
}

# GPU preference per device kind (substring match, first wins). From gpu-anchors.md (one H200):
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


@compile_probe
def _compiles(name: str, dtype, d: int, group: int, causal: bool):
    """On GPU: a tiny fwd+bwd of `name` (q [1, 128, group, D], k/v [1, 128, 1, D]) per signature."""
    fn = IMPLEMENTATIONS[name]
    qs = jax.ShapeDtypeStruct((1, 128, group, d), dtype)
    ks = jax.ShapeDtypeStruct((1, 128, 1, d), dtype)
    ls = jax.ShapeDtypeStruct((1,), jnp.int32)

    def loss(q, k, v, ln):
        out = fn(q, k, v, q_lengths=ln, kv_lengths=ln, causal=causal)
        return out.astype(jnp.float32).sum()

    return jax.grad(loss, argnums=(0, 1, 2)), (qs, ks, ks, ls)


def _check(name, q, k, v, mask, causal):
    """Raises KernelUnsupportedError("<name>: <why>") when `name` cannot serve this call here."""
    try:
        if name in _SUPPORT_CHECKS:
            _SUPPORT_CHECKS[name](q, k, v, mask=mask)
        if name in ("pallas_gpu", "cudnn") and jax.default_backend() == "gpu":
            require_compiled(name, _compiles(name, jnp.dtype(q.dtype), q.shape[-1], q.shape[2] // k.shape[2],
                                             bool(causal)))
    except KernelUnsupportedError as e:
        raise KernelUnsupportedError(f"{name}: {e}") from None


def select(q, k, v, *, mask=None, causal=False, implementation=None) -> str:
    """The implementation `attention` will use for these inputs (warns once when falling back)."""
    return _DISPATCH.select(implementation, lambda name: _check(name, q, k, v, mask, causal))


def attention(q, k, v, *, q_lengths=None, kv_lengths=None, causal=False, scale=None, mask=None,
              implementation: str | tuple[str, ...] | None = None):
    validate_attention_inputs(q, k, v, mask)
    name = select(q, k, v, mask=mask, causal=causal, implementation=implementation)
    return IMPLEMENTATIONS[name](q, k, v, q_lengths=q_lengths, kv_lengths=kv_lengths, causal=causal,
                                 scale=scale, mask=mask)
