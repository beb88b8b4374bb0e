"""Training losses: the LLM's masked next-token cross-entropy and the CTC branch loss.

Both return sums and counts as well as the mean so that gradient accumulation and data-parallel
reduction weight every token (or utterance) equally, as one large batch would.

The LLM loss comes in two forms with the same metrics: `llm_cross_entropy` takes full logits
[B, L, V] (decoding / evaluation callers that have them), `llm_cross_entropy_from_hidden` takes
the final hidden states [B, L, D] and an LM head, and projects only the scored positions, a
chunk at a time, forming each chunk's gradient as it goes (training: no [B, L, V] tensor is
ever built, and no logits are kept for the backward).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero

from funasr_jax.models.batch import IGNORE_INDEX
from kernels.ctc import ctc_loss
from sharding.context import active
from sharding.mesh import mesh_sizes
from sharding.rules import resolve_spec

# One chunk of the hidden-state loss holds about this many scored positions per device; its f32
# logits are LOSS_CHUNK_TOKENS x V x 4 bytes (Qwen3's V = 151,936: 311 MB).
LOSS_CHUNK_TOKENS = 512
# ... and at most this many positions per row, so that a chunk past every row's last target is
# skipped at a fine grain (rows hold few targets when the batch is large).
LOSS_CHUNK_MAX_POSITIONS = 64


def scored_targets(labels, row_weight=None):
    """HF shift (as `Qwen3ForCausalLM`'s loss): position l predicts labels[l + 1].

    labels [B, L] int (IGNORE_INDEX = not scored), row_weight [B] (0 drops a padding row) ->
    (valid [B, L-1] bool, targets [B, L-1] int32 with unscored entries set to 0).
    """
    targets = labels[:, 1:]
    valid = targets != IGNORE_INDEX
    if row_weight is not None:
        valid &= (row_weight > 0)[:, None]
    return valid, jnp.where(valid, targets, 0).astype(jnp.int32)


def _metrics(total, count, correct):
    return {"loss": total / jnp.maximum(count, 1), "sum": total, "count": count, "correct": correct}


def llm_cross_entropy(logits, labels, row_weight=None):
    """HF-style causal LM loss from full logits: position l predicts labels[l + 1].

    logits [B, L, V] (f32), labels [B, L] (IGNORE_INDEX = not scored), row_weight [B] (0 drops a
    padding row). Returns dict(loss = sum / count, sum, count, correct = argmax hits).
    """
    valid, safe = scored_targets(labels, row_weight)
    shift_logits = logits[:, :-1].astype(jnp.float32)
    logz = jax.nn.logsumexp(shift_logits, axis=-1)
    picked = jnp.take_along_axis(shift_logits, safe[..., None], axis=-1)[..., 0]
    nll = jnp.where(valid, logz - picked, 0.0)
    correct = jnp.where(valid, jnp.argmax(shift_logits, -1) == safe, False).sum()
    return _metrics(nll.sum(), valid.sum(), correct)


def local_rows(batch: int) -> int:
    """Rows of a [batch, ...] activation held by one device under the active activation-sharding
    context (`sharding.context`); `batch` without one."""
    ctx = active()
    if ctx is None:
        return batch
    mesh, rules = ctx
    sizes = mesh_sizes(mesh)
    spec = resolve_spec(("batch",), (batch,), rules.activation_axes, sizes)
    axes = spec[0] if len(spec) else None
    axes = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
    return batch // math.prod(sizes[a] for a in axes)


def chunk_positions(rows: int, length: int, *, tokens: int = LOSS_CHUNK_TOKENS,
                    max_positions: int = LOSS_CHUNK_MAX_POSITIONS) -> int:
    """Positions per row in one loss chunk: about tokens / rows, within [1, min(max_positions, length)].

    rows: rows per device (`local_rows`); length: scorable positions per row (L - 1).
    """
    return max(1, min(max_positions, length, -(-tokens // max(rows, 1))))


def chunk_stats(head, w, h, targets, valid):
    """Loss terms of one chunk of positions; the only place its logits exist.

    head(w, h [..., D]) -> logits [..., V] (f32, or cast to it); h [B, C, D]; targets [B, C] int;
    valid [B, C] bool. Returns (sum of -log p(target) over valid positions, f32 scalar;
    argmax hits over valid positions, int32 scalar). Softmax statistics in f32.
    """
    logits = head(w, h).astype(jnp.float32)
    nll, correct, _ = _nll_terms(logits, targets, valid)
    return nll, correct


def _nll_terms(logits, targets, valid):
    """logits [B, C, V] f32 -> (nll sum, argmax hits, log-normaliser [B, C])."""
    logz = jax.nn.logsumexp(logits, axis=-1)
    picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    nll = jnp.where(valid, logz - picked, 0.0).sum()
    correct = jnp.where(valid, jnp.argmax(logits, -1) == targets, False).sum().astype(jnp.int32)
    return nll, correct, logz


def _chunk_with_grads(head, w, h, targets, valid, with_w: bool):
    """`chunk_stats` and its gradient in one pass: d(nll sum)/d h [B, C, D] (h's dtype) and, with
    `with_w`, d/d w (like w); the chunk's dlogits = (softmax - onehot) on valid positions."""
    if with_w:
        logits, vjp = jax.vjp(head, w, h)
    else:
        logits, vjp_h = jax.vjp(lambda x: head(w, x), h)
        vjp = lambda g: (None,) + vjp_h(g)  # noqa: E731
    lf = logits.astype(jnp.float32)
    nll, correct, logz = _nll_terms(lf, targets, valid)
    soft = jnp.exp(lf - logz[..., None])
    dlogits = jnp.where(valid[..., None], soft - jax.nn.one_hot(targets, lf.shape[-1], dtype=jnp.float32), 0.0)
    dw, dh = vjp(dlogits.astype(logits.dtype))
    return nll, correct, dw, dh


def _zero_stats():
    return jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _chunked_nll(head, w, hs, ts, ms):
    """Sum of `chunk_stats` over chunks hs [n, B, C, D], ts / ms [n, B, C]; a chunk without a
    valid position is skipped. Returns (nll sum f32, argmax hits int32)."""
    def body(carry, xs):
        nll, correct = lax.cond(xs[2].any(), lambda *a: chunk_stats(head, w, *a), lambda *_: _zero_stats(), *xs)
        return (carry[0] + nll, carry[1] + correct), None

    out, _ = lax.scan(body, _zero_stats(), (hs, ts, ms))
    return out


def _chunked_nll_fwd(head, w, hs, ts, ms):
    """Forward pass that also forms the gradients, chunk by chunk (so no chunk's logits are
    kept or recomputed for the backward). Residuals: dh [n, B, C, D], and dw (f32, like w)
    only if w is differentiated (`perturbed`; a frozen head costs no weight gradient)."""
    is_primal = lambda x: hasattr(x, "perturbed")  # noqa: E731
    with_w = any(p.perturbed for p in jax.tree_util.tree_leaves(w, is_leaf=is_primal))
    w, hs, ts, ms = (jax.tree_util.tree_map(lambda p: p.value, x, is_leaf=is_primal) for x in (w, hs, ts, ms))

    def run(acc, h, t, m):
        nll, correct, dw, dh = _chunk_with_grads(head, w, h, t, m, with_w)
        acc = None if acc is None else jax.tree_util.tree_map(lambda a, d: a + d.astype(a.dtype), acc, dw)
        return nll, correct, acc, dh

    def skip(acc, h, t, m):
        return *_zero_stats(), acc, jnp.zeros_like(h)

    def body(carry, xs):
        total, hits, acc = carry
        nll, correct, acc, dh = lax.cond(xs[2].any(), run, skip, acc, *xs)
        return (total + nll, hits + correct, acc), dh

    acc = jax.tree_util.tree_map(lambda x: jnp.zeros(x.shape, jnp.float32), w) if with_w else None
    (total, hits, acc), dhs = lax.scan(body, (*_zero_stats(), acc), (hs, ts, ms))
    return (total, hits), (acc, dhs)


def _chunked_nll_bwd(head, res, g):
    dw, dhs = res
    g_nll = g[0]
    if isinstance(g_nll, SymbolicZero):
        return None, None, None, None
    dw = None if dw is None else jax.tree_util.tree_map(lambda d: d * g_nll, dw)
    return dw, (dhs.astype(jnp.float32) * g_nll).astype(dhs.dtype), None, None


_chunked_nll.defvjp(_chunked_nll_fwd, _chunked_nll_bwd, symbolic_zeros=True)


def pack_scored(hidden, valid, targets, chunk: int):
    """Each row's scored positions moved to its front (in order), cut into chunks of `chunk`.

    hidden [B, L, D]; valid / targets [B, L-1] (`scored_targets`). Returns chunk-major
    (h [n, B, chunk, D], targets [n, B, chunk], valid [n, B, chunk]) with n = ceil((L-1) / chunk);
    packed slot j of row b holds its j-th scored position (valid False past the row's count).
    """
    b, scorable = valid.shape
    n = -(-scorable // chunk)
    pad = n * chunk - scorable
    valid = jnp.pad(valid, ((0, 0), (0, pad)))
    targets = jnp.pad(targets, ((0, 0), (0, pad)))
    order = jnp.argsort(~valid, axis=1, stable=True)  # scored positions first, each in order
    src = jnp.minimum(order, scorable - 1)
    h = jnp.take_along_axis(hidden[:, :scorable], src[..., None], axis=1)
    valid = jnp.take_along_axis(valid, order, axis=1)
    targets = jnp.take_along_axis(targets, order, axis=1)

    def chunks(x):  # [B, n * chunk, ...] -> [n, B, chunk, ...]
        return jnp.moveaxis(x.reshape((b, n, chunk) + x.shape[2:]), 1, 0)

    return chunks(h), chunks(targets), chunks(valid)


def llm_cross_entropy_from_hidden(hidden, labels, head, head_params, row_weight=None, *,
                                  chunk: int | None = None):
    """`llm_cross_entropy` (same shift, masking and metrics) from final hidden states.

    hidden [B, L, D] (the LLM's final-normed output, any float dtype); head(head_params,
    h [B, C, D]) -> logits [B, C, V] f32 (the LM head; head_params: the arrays it reads, e.g.
    `funasr.lm_head_params(params)`); labels [B, L]; row_weight [B].
    chunk: positions per row per chunk (default `chunk_positions` of the rows per device).

    Scored positions are packed to the front of their rows, then a scan over chunks of
    [B, chunk] positions projects, takes logsumexp / target logit / argmax and sums; a chunk
    with no scored position in any row is skipped (lax.cond). Under differentiation the same
    scan also forms each chunk's gradient (softmax - onehot, back through the head) and keeps
    only d hidden (and d head_params when the head is trained), so the backward neither keeps
    nor recomputes logits: peak logits memory is one chunk, [B, chunk, V] f32, and the head
    runs on about max-row-targets positions per row instead of L, with no extra forward.
    Returns dict(loss = sum / count, sum, count, correct).
    """
    valid, targets = scored_targets(labels, row_weight)
    b, scorable = valid.shape
    count = valid.sum()
    if scorable == 0:
        zero_sum, zero_hits = _zero_stats()
        return _metrics(zero_sum, count, zero_hits)
    chunk = chunk or chunk_positions(local_rows(b), scorable)
    total, correct = _chunked_nll(head, head_params, *pack_scored(hidden, valid, targets, chunk))
    return _metrics(total, count, correct)


def ctc_branch_loss(ctc_logits, logit_lengths, labels, label_lengths, *, blank_id, row_weight=None,
                    implementation=None):
    """CTC loss of the CTC head, averaged per utterance over valid rows.

    ctc_logits [B, T, V] unnormalized; labels [B, Lc] padded past label_lengths. Impossible
    alignments count as 0 (zero_infinity) so one bad utterance cannot poison a step. A row with
    audio but an empty label (a noise-only clip) counts: its loss is that of the all-blank path,
    which teaches the head to emit nothing on noise; rows without audio (padding) do not.
    Returns dict(loss = sum / count, sum, count).
    """
    per_utt = ctc_loss(ctc_logits, logit_lengths, labels, label_lengths, blank_id=blank_id,
                       reduction="none", zero_infinity=True, implementation=implementation)
    w = jnp.ones_like(per_utt) if row_weight is None else (row_weight > 0).astype(per_utt.dtype)
    w = w * (logit_lengths > 0)
    total = (per_utt * w).sum()
    count = w.sum()
    return {"loss": total / jnp.maximum(count, 1.0), "sum": total, "count": count}
