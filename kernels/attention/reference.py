"""Obviously-correct attention in plain JAX: the test oracle for every other implementation.

Shapes: q [B, T, Hq, D], k/v [B, S, Hkv, D] with Hq % Hkv == 0 (grouped-query attention:
query head h reads kv head h // (Hq // Hkv)). Softmax statistics in float32.
"""

from __future__ import annotations

import jax.numpy as jnp


def attention_mask(batch, t, s, *, q_lengths=None, kv_lengths=None, causal=False, q_offset=0):
    """Boolean mask [B, T, S]: True where query t may attend key s.

    Keys at or past `kv_lengths[b]` are masked; query rows at or past `q_lengths[b]` attend to
    nothing (their output is defined as zero). With `causal`, query t (absolute position
    t + q_offset) sees keys s <= t + q_offset.
    """
    mask = jnp.ones((batch, t, s), dtype=bool)
    if kv_lengths is not None:
        mask &= (jnp.arange(s)[None, None, :] < jnp.asarray(kv_lengths)[:, None, None])
    if q_lengths is not None:
        mask &= (jnp.arange(t)[None, :, None] < jnp.asarray(q_lengths)[:, None, None])
    if causal:
        mask &= (jnp.arange(s)[None, None, :] <= (jnp.arange(t) + q_offset)[None, :, None])
    return mask


def attention(q, k, v, *, q_lengths=None, kv_lengths=None, causal=False, scale=None, mask=None):
    """Reference attention. `mask` [B, T, S] (bool), if given, is ANDed with the length masks.

    Returns [B, T, Hq, D] in q's dtype; rows with no visible key are exactly zero.
    """
    b, t, hq, d = q.shape
    s, hkv = k.shape[1], k.shape[2]
    if hq % hkv:
        raise ValueError(f"query heads {hq} not a multiple of kv heads {hkv}")
    g = hq // hkv
    scale = d ** -0.5 if scale is None else scale
    full = attention_mask(b, t, s, q_lengths=q_lengths, kv_lengths=kv_lengths, causal=causal)
    if mask is not None:
        full &= mask
    qf = q.astype(jnp.float32).reshape(b, t, hkv, g, d)
    logits = jnp.einsum("btkgd,bskd->bkgts", qf, k.astype(jnp.float32)) * scale
    m = full[:, None, None, :, :]
    logits = jnp.where(m, logits, -jnp.inf)
    mx = jnp.max(logits, axis=-1, keepdims=True)
    mx = jnp.where(jnp.isfinite(mx), mx, 0.0)
    p = jnp.where(m, jnp.exp(logits - mx), 0.0)
    denom = jnp.sum(p, axis=-1, keepdims=True)
    p = p / jnp.where(denom > 0, denom, 1.0)
    out = jnp.einsum("bkgts,bskd->btkgd", p, v.astype(jnp.float32))
    return out.reshape(b, t, hq, d).astype(q.dtype)
