"""Plain-JAX attention for XLA: grouped einsums (no repeated K/V), f32 softmax statistics.

q [B, T, Hq, D], k/v [B, S, Hkv, D] -> [B, T, Hq, D]. The matmuls run in the input dtype with f32
accumulation (tensor cores for bf16); the logits [B, Hkv, G, T, S] and the softmax are f32. Rows
past `q_lengths` or with no visible key are zero. `mask` [B, T, S] (bool) is ANDed with the rest.
"""

from __future__ import annotations

import jax.numpy as jnp

from kernels._common import KernelInputError


def visibility_mask(b, t, s, *, q_lengths=None, kv_lengths=None, causal=False, mask=None):
    """[B|1, T, S] bool, built from broadcast iotas so XLA fuses it into the softmax."""
    rows = jnp.arange(t)[None, :, None]
    cols = jnp.arange(s)[None, None, :]
    vis = jnp.ones((1, t, s), bool)
    if kv_lengths is not None:
        vis = vis & (cols < jnp.asarray(kv_lengths)[:, None, None])
    if q_lengths is not None:
        vis = vis & (rows < jnp.asarray(q_lengths)[:, None, None])
    if causal:
        vis = vis & (cols <= rows)
    if mask is not None:
        if mask.shape != (b, t, s):
            raise KernelInputError(f"attention: mask must be [B, T, S] = {(b, t, s)}, got {mask.shape}")
        vis = vis & mask.astype(bool)
    return vis


def attention(q, k, v, *, q_lengths=None, kv_lengths=None, causal=False, scale=None, mask=None):
    b, t, hq, d = q.shape
    s, hkv = k.shape[1], k.shape[2]
    if hkv == 0 or hq % hkv:
        raise KernelInputError(f"attention: q heads {hq} not a multiple of kv heads {hkv}")
    g = hq // hkv
    scale = d ** -0.5 if scale is None else scale
    vis = visibility_mask(b, t, s, q_lengths=q_lengths, kv_lengths=kv_lengths, causal=causal,
                          mask=mask)[:, None, None]                       # [B|1, 1, 1, T, S]
    qg = q.reshape(b, t, hkv, g, d)
    logits = jnp.einsum("btkgd,bskd->bkgts", qg, k, preferred_element_type=jnp.float32) * scale
    logits = jnp.where(vis, logits, -jnp.inf)
    mx = jnp.max(logits, axis=-1, keepdims=True)
    mx = jnp.where(jnp.isfinite(mx), mx, 0.0)
    p = jnp.exp(logits - mx)
    denom = jnp.sum(p, axis=-1, keepdims=True)
    p = p / jnp.where(denom > 0, denom, 1.0)
    out = jnp.einsum("bkgts,bskd->btkgd", p.astype(v.dtype), v, preferred_element_type=jnp.float32)
    return out.reshape(b, t, hq, d).astype(q.dtype)
