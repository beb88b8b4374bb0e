"""cuDNN fused attention through `jax.nn.dot_product_attention(implementation='cudnn')`.

Same contract as `reference.attention`: q [B, T, Hq, D], k/v [B, S, Hkv, D] -> [B, T, Hq, D];
rows past `q_lengths` and rows of an utterance with no key (`kv_lengths == 0`) are exactly zero,
with zero gradients. bf16/f16 only, head_dim a multiple of 8 and <= 128 (cuDNN flash-attention
limits).

Empty rows: the training pipeline pads batches with rows whose lengths are 0. cuDNN's padding
mask has no defined result for a row with no key (a softmax over nothing), so the lengths handed
to cuDNN are clamped to >= 1 and the rows that should see nothing are zeroed afterwards. The
zeroing also zeroes the cotangent of those rows, so cuDNN's backward sees dO = 0 there and their
dq / dk / dv contributions are zero.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from kernels._common import KernelUnsupportedError, lengths_or_full


def check_supported(q, k, v, *, mask=None):
    if jax.default_backend() != "gpu":
        raise KernelUnsupportedError("cudnn attention needs a CUDA GPU")
    if mask is not None:
        raise KernelUnsupportedError("cudnn path takes lengths, not a general mask")
    if not (q.dtype == k.dtype == v.dtype) or q.dtype not in (jnp.bfloat16, jnp.float16):
        raise KernelUnsupportedError(f"cudnn attention needs bf16/f16, got {q.dtype}")
    d = q.shape[-1]
    if d % 8 or d > 128:
        raise KernelUnsupportedError(f"cudnn attention needs head_dim % 8 == 0 and <= 128, got {d}")


def cudnn_call(q, k, v, *, scale, causal, q_lengths, kv_lengths):
    """The single call into cuDNN (a module attribute, so a CPU test can put a stand-in here).
    q_lengths / kv_lengths: int32 [B] (>= 1 when given) or None."""
    return jax.nn.dot_product_attention(q, k, v, scale=scale, is_causal=causal, query_seq_lengths=q_lengths,
                                        key_value_seq_lengths=kv_lengths, implementation="cudnn")


def clamped_lengths(q_lengths, kv_lengths):
    """(q_lengths, kv_lengths) as handed to cuDNN: each clamped to >= 1 (int32 [B])."""
    return jnp.maximum(q_lengths, 1), jnp.maximum(kv_lengths, 1)


def attention(q, k, v, *, q_lengths=None, kv_lengths=None, causal=False, scale=None, mask=None):
    check_supported(q, k, v, mask=mask)
    b, t = q.shape[:2]
    s = k.shape[1]
    if q_lengths is None and kv_lengths is None:
        return cudnn_call(q, k, v, scale=scale, causal=causal, q_lengths=None, kv_lengths=None)
    ql = lengths_or_full(q_lengths, b, t, "q_lengths")
    kl = lengths_or_full(kv_lengths, b, s, "kv_lengths")
    safe_ql, safe_kl = clamped_lengths(ql, kl)
    out = cudnn_call(q, k, v, scale=scale, causal=causal, q_lengths=safe_ql, kv_lengths=safe_kl)
    # rows past q_lengths, and every row of an utterance with no key, are zero
    visible = (jnp.arange(t)[None, :] < ql[:, None]) & (kl > 0)[:, None]
    return jnp.where(visible[:, :, None, None], out, jnp.zeros((), out.dtype))
