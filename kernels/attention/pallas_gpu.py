"""Flash attention for GPUs as Pallas (Triton-lowered) kernels, forward and backward.

Shapes: q [B, T, Hq, D], k/v [B, S, Hkv, D], Hq % Hkv == 0 (grouped-query attention: query head h
reads kv head h // (Hq // Hkv) through the BlockSpec index map, K/V are never repeated).
Key/query padding comes as int32 lengths [B]; rows past `q_lengths` and rows with no visible key
are zero. `causal` is top-left aligned (query t sees keys s <= t), like `reference.attention`.

Three kernels, FlashAttention-2 style:
- forward, grid (T/bq, B, Hq): online softmax over key tiles in base 2 (exp2), writes the output
  and the log2-sum-exp `lse` [B, Hq, T] (the residual kept with the output for the backward);
- dq, grid (T/bq, B, Hq): recomputes p = exp2(s - lse) per key tile, dq += ds @ k;
- dk/dv, grid (S/bk, B, Hkv): one program per kv head and key tile loops over the query heads of
  its group and the query tiles, so dk/dv of a shared kv head are summed without atomics.
delta = rowsum(o * do) is a plain XLA fusion. Loop bounds come from the lengths and the causal
diagonal, so fully masked tiles are skipped. Arbitrary T, S and head_dim are padded to the tile
sizes (and head_dim to a power of two >= 16) outside the kernels and sliced back.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

from kernels._common import (KernelUnsupportedError, default_interpret, device_kind,
                             lengths_or_full, next_pow2, pad_axis, round_up, validate_attention_inputs)
from kernels.attention.config import BlockSizes, block_sizes_for, tiling_problem

_LOG2E = math.log2(math.e)
_NEG = -1e30  # finite "minus infinity" for masked logits (keeps exp2(m_old - m_new) finite)

SUPPORTED_DTYPES = (jnp.float32, jnp.bfloat16, jnp.float16)


@dataclasses.dataclass(frozen=True)
class _Static:
    """Everything the kernels specialise on (hashable: a custom_vjp nondiff argument)."""

    scale: float
    causal: bool
    group: int
    bq: int
    bk: int
    bq_dq: int
    bk_dq: int
    bq_dkv: int
    bk_dkv: int
    num_warps: int
    num_stages: int
    num_warps_bwd: int
    num_stages_bwd: int
    interpret: bool


def _dot_nt(a, b):
    """a [m, d] @ b[n, d]^T -> [m, n] in f32."""
    return lax.dot_general(a, b, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32)


def _dot_tn(a, b):
    """a [m, n]^T @ b [m, d] -> [n, d] in f32."""
    return lax.dot_general(a, b, (((0,), (0,)), ((), ())), preferred_element_type=jnp.float32)


def _dot(a, b):
    return lax.dot_general(a, b, (((1,), (0,)), ((), ())), preferred_element_type=jnp.float32)


def _cdiv(a, b: int):
    return lax.div(a + (b - 1), jnp.int32(b))


def _tile_mask(rows, cols, q_len, kv_len, causal):
    mask = (rows[:, None] < q_len) & (cols[None, :] < kv_len)
    if causal:
        mask &= cols[None, :] <= rows[:, None]
    return mask


def _key_blocks(iq, q_len, kv_len, bq: int, bk: int, causal: bool):
    """Key blocks of size `bk` that query block `iq` (of size `bq`) must visit: none past
    kv_len, none above the diagonal when causal, none at all when the query block is padding."""
    n_k = _cdiv(kv_len, bk)
    if causal:
        n_k = jnp.minimum(n_k, _cdiv((iq + 1) * bq, bk))
    return jnp.where(iq * bq < q_len, n_k, 0)


def _fwd_kernel(qlen_ref, kvlen_ref, q_ref, k_ref, v_ref, o_ref, lse_ref, *, st: _Static):
    bq, bk = st.bq, st.bk
    iq = pl.program_id(0)
    q_len = qlen_ref[...]
    kv_len = kvlen_ref[...]
    q = q_ref[...]
    rows = iq * bq + lax.broadcasted_iota(jnp.int32, (bq,), 0)
    n_k = _key_blocks(iq, q_len, kv_len, bq, bk, st.causal)
    c = st.scale * _LOG2E

    def body(j, carry):
        acc, m, l = carry
        start = pl.multiple_of(j * bk, bk)
        k = k_ref[pl.ds(start, bk), :]
        v = v_ref[pl.ds(start, bk), :]
        s = _dot_nt(q, k) * c
        cols = start + lax.broadcasted_iota(jnp.int32, (bk,), 0)
        mask = _tile_mask(rows, cols, q_len, kv_len, st.causal)
        s = jnp.where(mask, s, _NEG)
        m_new = jnp.maximum(m, jnp.max(s, axis=1))
        alpha = jnp.exp2(m - m_new)
        p = jnp.where(mask, jnp.exp2(s - m_new[:, None]), 0.0)
        l = alpha * l + jnp.sum(p, axis=1)
        acc = acc * alpha[:, None] + _dot(p.astype(v.dtype), v)
        return acc, m_new, l

    init = (jnp.zeros(q.shape, jnp.float32), jnp.full((bq,), _NEG, jnp.float32),
            jnp.zeros((bq,), jnp.float32))
    acc, m, l = lax.fori_loop(0, n_k, body, init)
    seen = l > 0
    l_safe = jnp.where(seen, l, 1.0)
    o_ref[...] = (acc / l_safe[:, None]).astype(o_ref.dtype)
    lse_ref[...] = jnp.where(seen, m + jnp.log2(l_safe), 0.0)


def _dq_kernel(qlen_ref, kvlen_ref, q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, dq_ref, *,
               st: _Static):
    bq, bk = st.bq_dq, st.bk_dq
    iq = pl.program_id(0)
    q_len = qlen_ref[...]
    kv_len = kvlen_ref[...]
    q = q_ref[...]
    do = do_ref[...]
    lse = lse_ref[...]
    delta = delta_ref[...]
    rows = iq * bq + lax.broadcasted_iota(jnp.int32, (bq,), 0)
    n_k = _key_blocks(iq, q_len, kv_len, bq, bk, st.causal)
    c = st.scale * _LOG2E

    def body(j, dq):
        start = pl.multiple_of(j * bk, bk)
        k = k_ref[pl.ds(start, bk), :]
        v = v_ref[pl.ds(start, bk), :]
        s = _dot_nt(q, k) * c
        cols = start + lax.broadcasted_iota(jnp.int32, (bk,), 0)
        mask = _tile_mask(rows, cols, q_len, kv_len, st.causal)
        p = jnp.where(mask, jnp.exp2(s - lse[:, None]), 0.0)
        dp = _dot_nt(do, v)
        ds = p * (dp - delta[:, None])
        return dq + _dot(ds.astype(k.dtype), k)

    dq = lax.fori_loop(0, n_k, body, jnp.zeros(q.shape, jnp.float32))
    dq_ref[...] = (dq * st.scale).astype(dq_ref.dtype)


def _dkv_kernel(qlen_ref, kvlen_ref, q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, dk_ref, dv_ref,
                *, st: _Static):
    # q_ref/do_ref [T, group, D]; lse_ref/delta_ref [group, T]; k_ref/v_ref/dk_ref/dv_ref [bk, D].
    bq, bk = st.bq_dkv, st.bk_dkv
    ik = pl.program_id(0)
    q_len = qlen_ref[...]
    kv_len = kvlen_ref[...]
    k = k_ref[...]
    v = v_ref[...]
    cols = ik * bk + lax.broadcasted_iota(jnp.int32, (bk,), 0)
    lo = lax.div(ik * bk, jnp.int32(bq)) if st.causal else jnp.int32(0)
    hi = _cdiv(q_len, bq)
    hi = jnp.where(ik * bk < kv_len, hi, lo)
    c = st.scale * _LOG2E

    def head(jh, carry):
        def body(i, carry):
            dk, dv = carry
            start = pl.multiple_of(i * bq, bq)
            q = q_ref[pl.ds(start, bq), jh, :]
            do = do_ref[pl.ds(start, bq), jh, :]
            lse = lse_ref[jh, pl.ds(start, bq)]
            delta = delta_ref[jh, pl.ds(start, bq)]
            s = _dot_nt(q, k) * c
            rows = start + lax.broadcasted_iota(jnp.int32, (bq,), 0)
            mask = _tile_mask(rows, cols, q_len, kv_len, st.causal)
            p = jnp.where(mask, jnp.exp2(s - lse[:, None]), 0.0)
            dv = dv + _dot_tn(p.astype(do.dtype), do)
            dp = _dot_nt(do, v)
            ds = p * (dp - delta[:, None])
            dk = dk + _dot_tn(ds.astype(q.dtype), q)
            return dk, dv

        return lax.fori_loop(lo, hi, body, carry)

    zeros = jnp.zeros(k.shape, jnp.float32)
    dk, dv = lax.fori_loop(0, st.group, head, (zeros, zeros))
    dk_ref[...] = (dk * st.scale).astype(dk_ref.dtype)
    dv_ref[...] = dv.astype(dv_ref.dtype)


def _len_spec():
    return pl.BlockSpec((None,), lambda i, b, h: (b,))


def _forward(q, k, v, q_len, kv_len, st: _Static):
    b, t, hq, d = q.shape
    s = k.shape[1]
    g = st.group
    grid = (t // st.bq, b, hq)
    out, lse = pl.pallas_call(
        functools.partial(_fwd_kernel, st=st),
        grid=grid,
        in_specs=[
            _len_spec(), _len_spec(),
            pl.BlockSpec((None, st.bq, None, d), lambda i, bi, h: (bi, i, h, 0)),
            pl.BlockSpec((None, s, None, d), lambda i, bi, h: (bi, 0, h // g, 0)),
            pl.BlockSpec((None, s, None, d), lambda i, bi, h: (bi, 0, h // g, 0)),
        ],
        out_specs=[
            pl.BlockSpec((None, st.bq, None, d), lambda i, bi, h: (bi, i, h, 0)),
            pl.BlockSpec((None, None, st.bq), lambda i, bi, h: (bi, h, i)),
        ],
        out_shape=[jax.ShapeDtypeStruct(q.shape, q.dtype),
                   jax.ShapeDtypeStruct((b, hq, t), jnp.float32)],
        compiler_params=pltriton.CompilerParams(num_warps=st.num_warps, num_stages=st.num_stages),
        interpret=st.interpret,
        name="flash_attention_fwd",
    )(q_len, kv_len, q, k, v)
    return out, lse


def _backward(q, k, v, q_len, kv_len, out, lse, do, st: _Static):
    b, t, hq, d = q.shape
    s, hkv = k.shape[1], k.shape[2]
    g = st.group
    # delta = rowsum(o * do) in base-e units; the kernels work in base 2 for p only.
    delta = jnp.einsum("bthd,bthd->bht", out.astype(jnp.float32), do.astype(jnp.float32))
    params = pltriton.CompilerParams(num_warps=st.num_warps_bwd, num_stages=st.num_stages_bwd)

    dq = pl.pallas_call(
        functools.partial(_dq_kernel, st=st),
        grid=(t // st.bq_dq, b, hq),
        in_specs=[
            _len_spec(), _len_spec(),
            pl.BlockSpec((None, st.bq_dq, None, d), lambda i, bi, h: (bi, i, h, 0)),
            pl.BlockSpec((None, s, None, d), lambda i, bi, h: (bi, 0, h // g, 0)),
            pl.BlockSpec((None, s, None, d), lambda i, bi, h: (bi, 0, h // g, 0)),
            pl.BlockSpec((None, st.bq_dq, None, d), lambda i, bi, h: (bi, i, h, 0)),
            pl.BlockSpec((None, None, st.bq_dq), lambda i, bi, h: (bi, h, i)),
            pl.BlockSpec((None, None, st.bq_dq), lambda i, bi, h: (bi, h, i)),
        ],
        out_specs=pl.BlockSpec((None, st.bq_dq, None, d), lambda i, bi, h: (bi, i, h, 0)),
        out_shape=jax.ShapeDtypeStruct(q.shape, q.dtype),
        compiler_params=params,
        interpret=st.interpret,
        name="flash_attention_dq",
    )(q_len, kv_len, q, k, v, do, lse, delta)

    qg = q.reshape(b, t, hkv, g, d)
    dog = do.reshape(b, t, hkv, g, d)
    lseg = lse.reshape(b, hkv, g, t)
    deltag = delta.reshape(b, hkv, g, t)
    dk, dv = pl.pallas_call(
        functools.partial(_dkv_kernel, st=st),
        grid=(s // st.bk_dkv, b, hkv),
        in_specs=[
            _len_spec(), _len_spec(),
            pl.BlockSpec((None, t, None, g, d), lambda i, bi, h: (bi, 0, h, 0, 0)),
            pl.BlockSpec((None, st.bk_dkv, None, d), lambda i, bi, h: (bi, i, h, 0)),
            pl.BlockSpec((None, st.bk_dkv, None, d), lambda i, bi, h: (bi, i, h, 0)),
            pl.BlockSpec((None, t, None, g, d), lambda i, bi, h: (bi, 0, h, 0, 0)),
            pl.BlockSpec((None, None, g, t), lambda i, bi, h: (bi, h, 0, 0)),
            pl.BlockSpec((None, None, g, t), lambda i, bi, h: (bi, h, 0, 0)),
        ],
        out_specs=[
            pl.BlockSpec((None, st.bk_dkv, None, d), lambda i, bi, h: (bi, i, h, 0)),
            pl.BlockSpec((None, st.bk_dkv, None, d), lambda i, bi, h: (bi, i, h, 0)),
        ],
        out_shape=[jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype)],
        compiler_params=params,
        interpret=st.interpret,
        name="flash_attention_dkv",
    )(q_len, kv_len, qg, k, v, dog, lseg, deltag)
    return dq, dk, dv


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _flash(q, k, v, q_len, kv_len, st: _Static):
    return _forward(q, k, v, q_len, kv_len, st)[0]


def _flash_fwd(q, k, v, q_len, kv_len, st):
    out, lse = _forward(q, k, v, q_len, kv_len, st)
    return out, (q, k, v, q_len, kv_len, out, lse)


def _flash_bwd(st, res, do):
    q, k, v, q_len, kv_len, out, lse = res
    dq, dk, dv = _backward(q, k, v, q_len, kv_len, out, lse, do, st)
    return dq, dk, dv, None, None


_flash.defvjp(_flash_fwd, _flash_bwd)


def check_supported(q, k, v, *, mask=None, block_sizes: BlockSizes | None = None):
    """Raise KernelUnsupportedError when this kernel cannot serve the call (KernelInputError on
    bad shapes). On a GPU this includes a tiling whose shared memory exceeds the device's."""
    validate_attention_inputs(q, k, v)
    if mask is not None:
        raise KernelUnsupportedError("pallas_gpu attention takes lengths, not a general mask")
    if not (q.dtype == k.dtype == v.dtype) or q.dtype not in SUPPORTED_DTYPES:
        raise KernelUnsupportedError(f"pallas_gpu attention: dtype {q.dtype}/{k.dtype}/{v.dtype}")
    if q.shape[3] > 256:
        raise KernelUnsupportedError(f"pallas_gpu attention: head_dim {q.shape[3]} > 256")
    if jax.default_backend() == "gpu":
        bs = resolve_blocks(q.shape[1], k.shape[1], q.shape[3], q.dtype, block_sizes)
        problem = tiling_problem(bs, padded_head_dim(q.shape[3]), q.dtype, device_kind())
        if problem:
            raise KernelUnsupportedError(f"pallas_gpu attention: {problem}")


def _clamp_block(block: int, n: int) -> int:
    return max(16, min(block, next_pow2(n)))


def padded_head_dim(d: int) -> int:
    return max(16, next_pow2(d))


def resolve_blocks(t: int, s: int, d: int, dtype, block_sizes: BlockSizes | None = None) -> BlockSizes:
    """The tiles a call with T queries, S keys and head_dim D uses: `block_sizes` or the table's
    entry for this device, dtype and padded D, each clamped to [16, next_pow2(T or S)]."""
    bs = block_sizes or block_sizes_for(device_kind(), padded_head_dim(d), dtype)
    return dataclasses.replace(
        bs, block_q=_clamp_block(bs.block_q, t), block_q_dq=_clamp_block(bs.block_q_dq, t),
        block_q_dkv=_clamp_block(bs.block_q_dkv, t), block_k=_clamp_block(bs.block_k, s),
        block_k_dq=_clamp_block(bs.block_k_dq, s), block_k_dkv=_clamp_block(bs.block_k_dkv, s))


def flash_attention(q, k, v, *, q_lengths=None, kv_lengths=None, causal=False, scale=None, mask=None,
                    block_sizes: BlockSizes | None = None, interpret: bool | None = None):
    """Flash attention (Pallas GPU kernels; interpreted off-GPU). Same contract as `reference.attention`.

    The matmuls follow `jax_default_matmul_precision` (as XLA's do): f32 inputs run TF32 on
    NVIDIA tensor cores at 'default'/'high' and IEEE f32 at 'highest'."""
    check_supported(q, k, v, mask=mask, block_sizes=block_sizes)
    b, t, hq, d = q.shape
    s, hkv = k.shape[1], k.shape[2]
    scale = float(d ** -0.5 if scale is None else scale)
    dp = padded_head_dim(d)
    bs = resolve_blocks(t, s, d, q.dtype, block_sizes)
    st = _Static(scale=scale, causal=bool(causal), group=hq // hkv, bq=bs.block_q, bk=bs.block_k,
                 bq_dq=bs.block_q_dq, bk_dq=bs.block_k_dq, bq_dkv=bs.block_q_dkv, bk_dkv=bs.block_k_dkv,
                 num_warps=bs.num_warps, num_stages=bs.num_stages, num_warps_bwd=bs.num_warps_bwd,
                 num_stages_bwd=bs.num_stages_bwd,
                 interpret=default_interpret() if interpret is None else bool(interpret))
    q_len = lengths_or_full(q_lengths, b, t, "q_lengths")
    kv_len = lengths_or_full(kv_lengths, b, s, "kv_lengths")
    tp = round_up(t, max(st.bq, st.bq_dq, st.bq_dkv))
    sp = round_up(s, max(st.bk, st.bk_dq, st.bk_dkv))
    qp = pad_axis(pad_axis(q, 3, dp), 1, tp)
    kp = pad_axis(pad_axis(k, 3, dp), 1, sp)
    vp = pad_axis(pad_axis(v, 3, dp), 1, sp)
    out = _flash(qp, kp, vp, q_len, kv_len, st)
    return out[:, :t, :, :d]
