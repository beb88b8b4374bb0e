"""Attention dispatch: one call for every model, the best implementation per backend.

`attention(q, k, v, *, q_lengths, kv_lengths, causal, implementation)`:
q [B, T, Hq, D], k/v [B, S, Hkv, D] -> [B, T, Hq, D]. Rows past `q_lengths` and rows that see no
key are zero. `implementation`: None (best available), "reference", "xla", or a kernel name
registered in `IMPLEMENTATIONS`.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp

from kernels.attention import reference


def _xla(q, k, v, *, q_lengths=None, kv_lengths=None, causal=False, scale=None, mask=None):
    """XLA path: f32 softmax via einsum with GQA grouping (no repeated K/V)."""
    return reference.attention(q, k, v, q_lengths=q_lengths, kv_lengths=kv_lengths, causal=causal,
                               scale=scale, mask=mask)


IMPLEMENTATIONS = {"reference": reference.attention, "xla": _xla}
_warned: set[str] = set()


def default_implementation(backend: str | None = None) -> str:
    backend = backend or jax.default_backend()
    return "xla"


def attention(q, k, v, *, q_lengths=None, kv_lengths=None, causal=False, scale=None, mask=None,
              implementation: str | None = None):
    name = implementation or default_implementation()
    fn = IMPLEMENTATIONS.get(name)
    if fn is None:
        if name not in _warned:
            _warned.add(name)
            warnings.warn(f"attention implementation {name!r} is not available here; using 'xla'")
        fn = IMPLEMENTATIONS["xla"]
    return fn(q, k, v, q_lengths=q_lengths, kv_lengths=kv_lengths, causal=causal, scale=scale, mask=mask)
