"""TPU attention: a documented dispatch to JAX's Pallas TPU splash attention.

`jax.experimental.pallas.ops.tpu.splash_attention` (Mosaic TPU, forward and backward kernels) in
its MQA form, vmapped over kv heads and batch, serves grouped-query attention without repeating
K/V: each kv head sees its `group` query heads as the kernel's head axis. Lengths become segment
ids (valid query rows 1, padded rows 2; valid keys 1, padded keys 3), so padded rows see no key
and are zeroed afterwards; `causal` is a static `CausalMask` (top-left aligned). Sequences are
padded to the 128-row tiles and head_dim to a multiple of 128; q is pre-scaled (splash has no
scale argument). On CPU it runs inside `pltpu.force_tpu_interpret_mode()` (that is how the tests
check it; there the per-(batch, kv head) calls run under `lax.map` because the TPU interpreter
cannot batch a kernel grid, while on a TPU they are `vmap`ped into the grid); the dispatcher
only picks it on a TPU backend.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from kernels._common import KernelUnsupportedError, lengths_or_full, pad_axis, round_up


def check_supported(q, k, v, *, mask=None, allow_interpret=False):
    if jax.default_backend() != "tpu" and not allow_interpret:
        raise KernelUnsupportedError("splash attention needs a TPU backend")
    if mask is not None:
        raise KernelUnsupportedError("splash path takes lengths, not a general mask")
    if not (q.dtype == k.dtype == v.dtype) or q.dtype not in (jnp.float32, jnp.bfloat16):
        raise KernelUnsupportedError(f"splash attention: dtype {q.dtype}")


@functools.lru_cache(maxsize=64)
def _kernel(group: int, tp: int, sp: int, causal: bool, block: int):
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm

    one = sm.CausalMask((tp, sp)) if causal else sm.FullMask((tp, sp))
    bq, bk = min(block, tp), min(block, sp)
    sizes = sk.BlockSizes(block_q=bq, block_kv=bk, block_kv_compute=bk, block_q_dkv=bq,
                          block_kv_dkv=bk, block_kv_dkv_compute=bk, block_q_dq=bq, block_kv_dq=bk)
    return sk.make_splash_mqa_single_device(sm.MultiHeadMask([one] * group), block_sizes=sizes), sk


def attention(q, k, v, *, q_lengths=None, kv_lengths=None, causal=False, scale=None, mask=None,
              block: int = 512):
    check_supported(q, k, v, mask=mask, allow_interpret=True)
    b, t, hq, d = q.shape
    s, hkv = k.shape[1], k.shape[2]
    g = hq // hkv
    scale = d ** -0.5 if scale is None else scale
    ql = lengths_or_full(q_lengths, b, t, "q_lengths")
    kl = lengths_or_full(kv_lengths, b, s, "kv_lengths")
    tp, sp, dp = round_up(t, 128), round_up(s, 128), round_up(d, 128)
    kern, sk = _kernel(g, tp, sp, bool(causal), block)
    qs = pad_axis(pad_axis((q * jnp.asarray(scale, q.dtype)), 3, dp), 1, tp)
    qs = qs.reshape(b, tp, hkv, g, dp).transpose(0, 2, 3, 1, 4)          # [B, Hkv, G, Tp, Dp]
    ks = pad_axis(pad_axis(k, 3, dp), 1, sp).transpose(0, 2, 1, 3)        # [B, Hkv, Sp, Dp]
    vs = pad_axis(pad_axis(v, 3, dp), 1, sp).transpose(0, 2, 1, 3)
    seg_q = jnp.where(jnp.arange(tp)[None] < ql[:, None], 1, 2).astype(jnp.int32)
    seg_kv = jnp.where(jnp.arange(sp)[None] < kl[:, None], 1, 3).astype(jnp.int32)

    def one(qh, kh, vh, sq, skv):
        return kern(qh, kh, vh, segment_ids=sk.SegmentIds(q=sq, kv=skv))

    if jax.default_backend() == "tpu":   # batching folds (B, Hkv) into the kernel grid
        per_batch = jax.vmap(one, in_axes=(0, 0, 0, None, None))
        out = jax.vmap(per_batch)(qs, ks, vs, seg_q, seg_kv)              # [B, Hkv, G, Tp, Dp]
    else:   # TPU interpret mode cannot batch a pallas_call grid: one call per (b, kv head)
        flat = lax.map(lambda a: one(*a), (qs.reshape(b * hkv, g, tp, dp), ks.reshape(b * hkv, sp, dp),
                                           vs.reshape(b * hkv, sp, dp), jnp.repeat(seg_q, hkv, axis=0),
                                           jnp.repeat(seg_kv, hkv, axis=0)))
        out = flat.reshape(b, hkv, g, tp, dp)
    out = out.transpose(0, 3, 1, 2, 4).reshape(b, tp, hq, dp)[:, :t, :, :d]
    visible = (jnp.arange(t)[None, :] < ql[:, None]) & (kl > 0)[:, None]   # a row sees >= 1 key
    return jnp.where(visible[:, :, None, None], out, 0).astype(q.dtype)
