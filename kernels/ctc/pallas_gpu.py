"""CTC loss with Pallas (Triton-lowered) GPU kernels; interpreted off-GPU.

Same pipeline and contract as `kernels.ctc.xla` (read its docstring); four kernels replace the
heavy stages so the [B, T, V] logits are read twice (log-normalizer, gradient) and the gradient
is written once:
- `_lse_kernel`, grid (B, T/bt): per-frame logsumexp over V tiles (online max/sum), skipping
  frames past the utterance's length;
- `_alpha_kernel`, grid (B,): the whole forward recursion of one utterance inside one program.
  The state vector (S = next_pow2(2L+1) lanes) lives in registers; the s-1 / s-2 neighbours are
  read back from the row just written to the alpha buffer (stored at a column offset of 2 with
  two -inf guard columns) after a block barrier — Triton has no register shift;
- `_beta_kernel`, grid (B,): the backward recursion (guards on the right) fused with the
  posterior occupation post = exp(alpha + beta - em), normalized over states per frame.
  Both recursions rescale each frame's row to max 0 (as `xla` does) so values stay O(1);
- `_grad_kernel`, grid (B, T/bt, V/bv): g * exp(logits - lse), zero past the length.
The emission gather (B*T*S elements) and the posterior scatter-add at the extended labels stay
in XLA. V and T need not be multiples of the tiles (masked loads and stores).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

from kernels._common import default_interpret, next_pow2
from kernels.ctc import xla

NEG_INF = float("-inf")


@dataclasses.dataclass(frozen=True)
class CTCBlocks:
    """Tiles: bt frames x bv vocabulary entries (powers of two); Triton warps."""

    bt: int = 16
    bv: int = 1024
    num_warps: int = 4
    num_warps_recursion: int = 4


@dataclasses.dataclass(frozen=True)
class _Static:
    blocks: CTCBlocks
    interpret: bool


def num_states(max_labels: int) -> int:
    """State lanes of the recursion kernels: next power of two >= 2L+1 (at least 16)."""
    return max(16, next_pow2(2 * max_labels + 1))


def _lse_kernel(tlen_ref, x_ref, lse_ref, *, bt, bv, t, v):
    t0 = pl.program_id(1) * bt
    rows = t0 + lax.broadcasted_iota(jnp.int32, (bt,), 0)
    t_len = tlen_ref[...]
    live = rows < jnp.minimum(t_len, t)
    n_v = jnp.where(t0 < t_len, (v + bv - 1) // bv, 0)

    def body(j, carry):
        m, l = carry
        cols = j * bv + lax.broadcasted_iota(jnp.int32, (bv,), 0)
        x = pltriton.load(x_ref.at[pl.ds(t0, bt), pl.ds(j * bv, bv)],
                          mask=live[:, None] & (cols[None, :] < v), other=NEG_INF).astype(jnp.float32)
        m_new = jnp.maximum(m, jnp.max(x, axis=1))
        l = l * jnp.exp(m - m_new) + jnp.sum(jnp.exp(x - m_new[:, None]), axis=1)
        return m_new, l

    m, l = lax.fori_loop(0, n_v, body, (jnp.full((bt,), -1e30, jnp.float32), jnp.zeros((bt,), jnp.float32)))
    lse = jnp.where(l > 0, m + jnp.log(jnp.where(l > 0, l, 1.0)), 0.0)
    pltriton.store(lse_ref.at[pl.ds(t0, bt)], lse, mask=rows < t)


def _grad_kernel(tlen_ref, g_ref, x_ref, lse_ref, o_ref, *, bt, bv, t, v):
    t0 = pl.program_id(1) * bt
    v0 = pl.program_id(2) * bv
    rows = t0 + lax.broadcasted_iota(jnp.int32, (bt,), 0)
    cols = v0 + lax.broadcasted_iota(jnp.int32, (bv,), 0)
    inside = (rows[:, None] < t) & (cols[None, :] < v)
    live = rows < tlen_ref[...]
    x = pltriton.load(x_ref.at[pl.ds(t0, bt), pl.ds(v0, bv)], mask=inside & live[:, None],
                      other=0.0).astype(jnp.float32)
    lse = pltriton.load(lse_ref.at[pl.ds(t0, bt)], mask=rows < t, other=0.0)
    p = jnp.where(live[:, None], jnp.exp(x - lse[:, None]) * g_ref[...], 0.0)
    pltriton.store(o_ref.at[pl.ds(t0, bt), pl.ds(v0, bv)], p.astype(o_ref.dtype), mask=inside)


def _sync(interpret: bool):
    """Block barrier between writing a row and reading it back shifted (no-op when interpreted:
    the interpreter runs one program sequentially)."""
    if not interpret:
        pltriton.debug_barrier()


def _lse3(a, b, c):
    m = jnp.maximum(jnp.maximum(a, b), c)
    ms = jnp.where(m == NEG_INF, 0.0, m)
    return ms + jnp.log(jnp.exp(a - ms) + jnp.exp(b - ms) + jnp.exp(c - ms))


def _rescale(row):
    m = jnp.max(row)
    m = jnp.where(m == NEG_INF, 0.0, m)
    return row - m, m


def _alpha_kernel(tlen_ref, ulen_ref, em_ref, skip_ref, buf_ref, nll_ref, *, t, s, interpret):
    # em_ref [T, S]; skip_ref [S] int32; buf_ref [T, S + 2] holds the rescaled alpha[t, j] (max 0
    # per frame) at column j + 2; the scales are summed in `scale`.
    lanes = lax.broadcasted_iota(jnp.int32, (s,), 0)
    t_len = tlen_ref[...]
    u_len = ulen_ref[...]
    skip = skip_ref[...] != 0
    guard = jnp.full((2,), NEG_INF, jnp.float32)
    empty = jnp.full((s,), NEG_INF, jnp.float32)

    def write(ti, a):
        buf_ref[ti, pl.ds(2, s)] = a
        buf_ref[ti, pl.ds(0, 2)] = guard

    a0, scale0 = _rescale(jnp.where((lanes <= 1) & (t_len > 0), em_ref[0, :], NEG_INF))
    write(0, a0)
    _sync(interpret)

    def body(ti, carry):
        a, scale = carry
        a1 = buf_ref[ti - 1, pl.ds(1, s)]
        a2 = jnp.where(skip, buf_ref[ti - 1, pl.ds(0, s)], NEG_INF)
        new, m = _rescale(em_ref[ti, :] + _lse3(a, a1, a2))
        write(ti, new)
        _sync(interpret)
        return new, scale + m

    stop = jnp.maximum(t_len, 1)
    a, scale = lax.fori_loop(1, stop, body, (a0, scale0))

    def fill(ti, c):
        write(ti, empty)
        return c

    lax.fori_loop(stop, t, fill, 0)
    sel = (lanes == 2 * u_len) | ((lanes == 2 * u_len - 1) & (u_len > 0))
    x = jnp.where(sel, a, NEG_INF)
    m = jnp.max(x)
    ms = jnp.where(m == NEG_INF, 0.0, m)
    nll = -(scale + ms + jnp.log(jnp.sum(jnp.exp(x - ms))))
    nll_ref[...] = nll  # t_len == 0 is patched by the caller


def _beta_kernel(tlen_ref, ulen_ref, nll_ref, em_ref, alpha_ref, skipn_ref, buf_ref, post_ref, *, t, s,
                 interpret):
    # buf_ref [T, S + 2] holds beta[t, j] at column j, -inf guards at S, S+1; post_ref [T, S].
    lanes = lax.broadcasted_iota(jnp.int32, (s,), 0)
    t_len = tlen_ref[...]
    u_len = ulen_ref[...]
    finite = nll_ref[...] < jnp.inf
    skip_next = skipn_ref[...] != 0
    guard = jnp.full((2,), NEG_INF, jnp.float32)
    last = (lanes == 2 * u_len) | ((lanes == 2 * u_len - 1) & (u_len > 0))

    def write(ti, beta):
        buf_ref[ti, pl.ds(0, s)] = beta
        buf_ref[ti, pl.ds(s, 2)] = guard
        e = em_ref[ti, :]
        gamma = jnp.where(e > NEG_INF, alpha_ref[ti, pl.ds(2, s)] + beta - e, NEG_INF)
        gamma = _rescale(gamma)[0]           # per-frame normalization: post sums to 1 over s
        norm = jnp.log(jnp.sum(jnp.exp(gamma)))
        ok = finite & (norm > NEG_INF)
        post_ref[ti, :] = jnp.where(ok, jnp.exp(gamma - jnp.where(ok, norm, 0.0)), 0.0)

    t_last = jnp.maximum(t_len - 1, 0)
    b_last = _rescale(jnp.where(last & (t_len > 0), em_ref[t_last, :], NEG_INF))[0]
    write(t_last, b_last)
    _sync(interpret)

    def body(i, b_next):
        ti = t_len - 2 - i
        n1 = buf_ref[ti + 1, pl.ds(1, s)]
        n2 = jnp.where(skip_next, buf_ref[ti + 1, pl.ds(2, s)], NEG_INF)
        new = _rescale(em_ref[ti, :] + _lse3(b_next, n1, n2))[0]
        write(ti, new)
        _sync(interpret)
        return new

    lax.fori_loop(0, t_last, body, b_last)

    def fill(ti, c):
        write(ti, jnp.full((s,), NEG_INF, jnp.float32))
        return c

    lax.fori_loop(jnp.maximum(t_len, 1), t, fill, 0)


def log_normalizer(logits, t_len, st: _Static):
    b, t, v = logits.shape
    bt, bv = st.blocks.bt, st.blocks.bv
    return pl.pallas_call(
        functools.partial(_lse_kernel, bt=bt, bv=bv, t=t, v=v),
        grid=(b, pl.cdiv(t, bt)),
        in_specs=[pl.BlockSpec((None,), lambda i, j: (i,)),
                  pl.BlockSpec((None, t, v), lambda i, j: (i, 0, 0))],
        out_specs=pl.BlockSpec((None, t), lambda i, j: (i, 0)),
        out_shape=jax.ShapeDtypeStruct((b, t), jnp.float32),
        compiler_params=pltriton.CompilerParams(num_warps=st.blocks.num_warps, num_stages=2),
        interpret=st.interpret,
        name="ctc_log_normalizer",
    )(t_len, logits)


def dense_grad(logits, lse, t_len, g, st: _Static):
    b, t, v = logits.shape
    bt, bv = st.blocks.bt, st.blocks.bv
    return pl.pallas_call(
        functools.partial(_grad_kernel, bt=bt, bv=bv, t=t, v=v),
        grid=(b, pl.cdiv(t, bt), pl.cdiv(v, bv)),
        in_specs=[pl.BlockSpec((None,), lambda i, j, k: (i,)),
                  pl.BlockSpec((None,), lambda i, j, k: (i,)),
                  pl.BlockSpec((None, t, v), lambda i, j, k: (i, 0, 0)),
                  pl.BlockSpec((None, t), lambda i, j, k: (i, 0))],
        out_specs=pl.BlockSpec((None, t, v), lambda i, j, k: (i, 0, 0)),
        out_shape=jax.ShapeDtypeStruct(logits.shape, logits.dtype),
        compiler_params=pltriton.CompilerParams(num_warps=st.blocks.num_warps, num_stages=2),
        interpret=st.interpret,
        name="ctc_grad",
    )(t_len, g, logits, lse)


def alpha(em, skip, t_len, u_len, st: _Static):
    """alpha buffer [B, T, S+2] (alpha at columns 2..) and nll [B]."""
    b, t, s = em.shape
    return pl.pallas_call(
        functools.partial(_alpha_kernel, t=t, s=s, interpret=st.interpret),
        grid=(b,),
        in_specs=[pl.BlockSpec((None,), lambda i: (i,)), pl.BlockSpec((None,), lambda i: (i,)),
                  pl.BlockSpec((None, t, s), lambda i: (i, 0, 0)),
                  pl.BlockSpec((None, s), lambda i: (i, 0))],
        out_specs=[pl.BlockSpec((None, t, s + 2), lambda i: (i, 0, 0)),
                   pl.BlockSpec((None,), lambda i: (i,))],
        out_shape=[jax.ShapeDtypeStruct((b, t, s + 2), jnp.float32),
                   jax.ShapeDtypeStruct((b,), jnp.float32)],
        compiler_params=pltriton.CompilerParams(num_warps=st.blocks.num_warps_recursion, num_stages=1),
        interpret=st.interpret,
        name="ctc_alpha",
    )(t_len, u_len, em, skip.astype(jnp.int32))


def beta_posterior(em, alpha_buf, nll, skip, t_len, u_len, st: _Static):
    """post [B, T, S] (and the beta scratch buffer, discarded)."""
    b, t, s = em.shape
    skip_next = jnp.pad(skip, ((0, 0), (0, 2)))[:, 2:].astype(jnp.int32)
    _, post = pl.pallas_call(
        functools.partial(_beta_kernel, t=t, s=s, interpret=st.interpret),
        grid=(b,),
        in_specs=[pl.BlockSpec((None,), lambda i: (i,)), pl.BlockSpec((None,), lambda i: (i,)),
                  pl.BlockSpec((None,), lambda i: (i,)),
                  pl.BlockSpec((None, t, s), lambda i: (i, 0, 0)),
                  pl.BlockSpec((None, t, s + 2), lambda i: (i, 0, 0)),
                  pl.BlockSpec((None, s), lambda i: (i, 0))],
        out_specs=[pl.BlockSpec((None, t, s + 2), lambda i: (i, 0, 0)),
                   pl.BlockSpec((None, t, s), lambda i: (i, 0, 0))],
        out_shape=[jax.ShapeDtypeStruct((b, t, s + 2), jnp.float32),
                   jax.ShapeDtypeStruct((b, t, s), jnp.float32)],
        compiler_params=pltriton.CompilerParams(num_warps=st.blocks.num_warps_recursion, num_stages=1),
        interpret=st.interpret,
        name="ctc_beta_posterior",
    )(t_len, u_len, nll, em, alpha_buf, skip_next)
    return post


@functools.partial(jax.custom_vjp, nondiff_argnums=(6,))
def _ctc_nll(logits, ext, skip, valid, t_len, u_len, st):
    return _fwd(logits, ext, skip, valid, t_len, u_len, st)[0]


def _fwd(logits, ext, skip, valid, t_len, u_len, st):
    lse = log_normalizer(logits, t_len, st)
    em = xla.emissions(logits, lse, ext, valid, t_len)
    alpha_buf, nll = alpha(em, skip, t_len, u_len, st)
    nll = jnp.where(t_len == 0, jnp.where(u_len == 0, 0.0, jnp.inf), nll)
    return jnp.maximum(nll, 0.0), (logits, lse, em, alpha_buf, nll, ext, skip, t_len, u_len)


def _bwd(st, res, g):
    logits, lse, em, alpha_buf, nll, ext, skip, t_len, u_len = res
    g = jnp.where(jnp.isfinite(nll), g, 0.0).astype(jnp.float32)
    post = beta_posterior(em, alpha_buf, nll, skip, t_len, u_len, st)
    grad = xla.subtract_posterior(dense_grad(logits, lse, t_len, g, st), post, ext, g)
    return grad, None, None, None, None, None


_ctc_nll.defvjp(_fwd, _bwd)


def resolve_blocks(t: int, v: int, blocks: CTCBlocks | None = None) -> CTCBlocks:
    """The tiles a call with T frames and V classes uses: `blocks` (default `CTCBlocks()`) with
    bt clamped to [16, next_pow2(T)] and bv to [16, next_pow2(V)]."""
    blocks = blocks or CTCBlocks()
    return dataclasses.replace(blocks, bv=max(16, min(blocks.bv, next_pow2(v))),
                               bt=max(16, min(blocks.bt, next_pow2(t))))


def ctc_nll(logits, ext, skip, valid, t_len, u_len, *, blocks: CTCBlocks | None = None,
            interpret: bool | None = None):
    """Per-utterance -log p(labels | logits) [B] (clamped >= 0, inf if impossible).

    ext/skip/valid [B, S] from `xla.extended_labels(..., num_states(L))` (S a power of two).
    """
    s = ext.shape[1]
    if s & (s - 1):
        raise ValueError(f"pallas CTC needs a power-of-two number of states, got {s}")
    blocks = resolve_blocks(logits.shape[1], logits.shape[2], blocks)
    st = _Static(blocks=blocks, interpret=default_interpret() if interpret is None else bool(interpret))
    return _ctc_nll(logits, ext, skip, valid, t_len.astype(jnp.int32), u_len.astype(jnp.int32), st)
