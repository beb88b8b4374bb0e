"""cuDNN fused attention through `jax.nn.dot_product_attention(implementation='cudnn')`.

Same contract as `reference.attention`; bf16/f16 only, head_dim a multiple of 8 and <= 128
(cuDNN flash-attention limits). Rows past `q_lengths` are zeroed here explicitly.
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


def attention(q, k, v, *, q_lengths=None, kv_lengths=None, causal=False, scale=None, mask=None):
    check_supported(q, k, v, mask=mask)
    b, t = q.shape[:2]
    s = k.shape[1]
    ql = None if q_lengths is None and kv_lengths is None else lengths_or_full(q_lengths, b, t, "q_lengths")
    kl = None if ql is None else lengths_or_full(kv_lengths, b, s, "kv_lengths")
    out = jax.nn.dot_product_attention(q, k, v, scale=scale, is_causal=causal, query_seq_lengths=ql,
                                       key_value_seq_lengths=kl, implementation="cudnn")
    if ql is not None:   # rows past q_lengths, and rows of an utterance with no key, are zero
        visible = (jnp.arange(t)[None, :] < ql[:, None]) & (kl > 0)[:, None]
        out = jnp.where(visible[:, :, None, None], out, 0)
    return out
