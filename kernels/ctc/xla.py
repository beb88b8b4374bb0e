"""CTC loss in plain JAX: log-space alpha/beta recursions with a closed-form `custom_vjp`.

Notation: logits [B, T, V] (unnormalized), extended labels ext [B, S] with S >= 2L+1 states
(blank, l1, blank, l2, ..., blank; states past 2U+1 are padding), t_len [B] frames, u_len [B]
labels. All statistics are f32.

Pipeline (shared with the Pallas implementation, which swaps the heavy stages for kernels):
1. lse[b, t] = logsumexp_v logits[b, t, v]                         (reads the logits once)
2. em[b, t, s] = logits[b, t, ext[b, s]] - lse[b, t]                (a gather, not a one-hot matmul)
3. alpha recursion over t (`lax.scan`), nll = -log(alpha[T-1, 2U] + alpha[T-1, 2U-1]); each
   frame's row is rescaled to max 0 (the scales are summed separately) so values stay O(1)
backward:
4. beta recursion over t (reverse scan, rescaled too), posterior occupation
   post[b, t, s] = exp(alpha + beta - em) normalized over s per frame  (= divided by p(labels))
5. dlogits = g * (softmax(logits) - scatter_add_s(post at ext))     (one dense write + a scatter)
Memory: O(B T S) for em/alpha/post plus the logits and their gradient.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

NEG_INF = float("-inf")


def extended_labels(labels, label_lengths, blank_id: int, num_states: int):
    """ext [B, S] int32, skip [B, S] bool (transition s-2 -> s allowed), valid [B, S] bool.

    ext is blank at even s, labels[(s-1)//2] at odd s < 2U+1, blank at padding states.
    """
    b, n = labels.shape
    s = jnp.arange(num_states)
    lab = jnp.take(labels.astype(jnp.int32), jnp.clip((s - 1) // 2, 0, max(n - 1, 0)), axis=1) if n else \
        jnp.zeros((b, num_states), jnp.int32)
    valid = s[None, :] < (2 * label_lengths[:, None] + 1)
    is_label = (s[None, :] % 2 == 1) & valid
    ext = jnp.where(is_label, lab, blank_id).astype(jnp.int32)
    prev2 = jnp.pad(ext, ((0, 0), (2, 0)), constant_values=-1)[:, :num_states]
    skip = is_label & (s[None, :] >= 2) & (ext != prev2)
    return ext, skip, valid


def lse3(a, b, c):
    """log(exp(a) + exp(b) + exp(c)) elementwise, -inf safe."""
    m = jnp.maximum(jnp.maximum(a, b), c)
    ms = jnp.where(m == NEG_INF, 0.0, m)
    return ms + jnp.log(jnp.exp(a - ms) + jnp.exp(b - ms) + jnp.exp(c - ms))


def final_states(num_states: int, u_len):
    """[B, S] bool: the states a complete alignment may end in (2U and, if U > 0, 2U-1)."""
    s = jnp.arange(num_states)[None, :]
    u = u_len[:, None]
    return (s == 2 * u) | ((s == 2 * u - 1) & (u > 0))


def masked_lse(x, sel):
    """logsumexp over the last axis of x where sel, -inf safe."""
    x = jnp.where(sel, x, NEG_INF)
    m = jnp.max(x, axis=-1)
    ms = jnp.where(m == NEG_INF, 0.0, m)
    return ms + jnp.log(jnp.sum(jnp.exp(x - ms[..., None]), axis=-1))


def rescale(row):
    """(row - max(row), max(row)) with max 0 for an all -inf row: keeps the recursions O(1)."""
    m = jnp.max(row, axis=-1, keepdims=True)
    m = jnp.where(m == NEG_INF, 0.0, m)
    return row - m, m[..., 0]


def log_normalizer(logits, t_len):
    """lse [B, T] f32 (0 at frames past t_len)."""
    lse = jax.nn.logsumexp(logits.astype(jnp.float32), axis=-1)
    return jnp.where(jnp.arange(logits.shape[1])[None, :] < t_len[:, None], lse, 0.0)


def emissions(logits, lse, ext, valid, t_len):
    """em [B, T, S] f32 log-probabilities of each state's symbol; -inf at padding states/frames."""
    b, t, _ = logits.shape
    idx = jnp.broadcast_to(ext[:, None, :], (b, t, ext.shape[1]))
    em = jnp.take_along_axis(logits, idx, axis=2).astype(jnp.float32) - lse[:, :, None]
    live = valid[:, None, :] & (jnp.arange(t)[None, :, None] < t_len[:, None, None])
    return jnp.where(live, em, NEG_INF)


def _shift_right(x, k):
    return jnp.pad(x, ((0, 0), (k, 0)), constant_values=NEG_INF)[:, : x.shape[1]]


def _shift_left(x, k, fill=NEG_INF):
    return jnp.pad(x, ((0, 0), (0, k)), constant_values=fill)[:, k:]


def alpha_scan(em, skip, t_len, u_len):
    """Rescaled log forward variables alphas [B, T, S] (each frame's max is 0) and nll [B].

    alpha_true[t] = alphas[t] + sum of the per-frame scales up to t; nll uses the true values.
    """
    b, t, s = em.shape
    init = jnp.where(jnp.arange(s)[None, :] == 0, 0.0, NEG_INF) * jnp.ones((b, 1))  # virtual frame -1
    ends = final_states(s, u_len)

    def step(carry, x):
        a, scale, nll = carry
        e_t, ti = x
        new, m = rescale(e_t + lse3(a, _shift_right(a, 1), jnp.where(skip, _shift_right(a, 2), NEG_INF)))
        scale = scale + m
        nll = jnp.where(ti == t_len - 1, -(scale + masked_lse(new, ends)), nll)
        return (new, scale, nll), new

    carry = (init, jnp.zeros((b,)), jnp.full((b,), jnp.inf))
    (_, _, nll), alphas = lax.scan(step, carry, (jnp.swapaxes(em, 0, 1), jnp.arange(t)))
    # No frames: the empty label sequence has probability 1, anything else 0.
    nll = jnp.where(t_len == 0, jnp.where(u_len == 0, 0.0, jnp.inf), nll)
    return jnp.swapaxes(alphas, 0, 1), nll


def beta_posterior_scan(em, alphas, nll, skip, t_len, u_len):
    """post [B, T, S]: posterior probability of occupying state s at frame t (0 if impossible)."""
    b, t, s = em.shape
    skip_next = _shift_left(skip, 2, fill=False)          # transition s -> s+2 allowed
    last = final_states(s, u_len)

    def step(b_next, x):
        e_t, ti = x
        rec = e_t + lse3(b_next, _shift_left(b_next, 1), jnp.where(skip_next, _shift_left(b_next, 2), NEG_INF))
        new = rescale(jnp.where((ti == t_len - 1)[:, None], jnp.where(last, e_t, NEG_INF), rec))[0]
        return new, new

    _, betas = lax.scan(step, jnp.full((b, s), NEG_INF), (jnp.swapaxes(em, 0, 1), jnp.arange(t)),
                        reverse=True)
    return posterior(alphas, jnp.swapaxes(betas, 0, 1), em, nll)


def posterior(alphas, betas, em, nll):
    """Per-frame normalized occupation exp(gamma - logsumexp_s gamma), gamma = alpha + beta - em.

    Every complete path occupies exactly one state per frame, so normalizing each frame by its
    own sum equals dividing by p(labels) but avoids the cancellation against a large nll.
    """
    gamma = jnp.where(em > NEG_INF, alphas + betas - em, NEG_INF)
    norm = masked_lse(gamma, True)
    live = jnp.isfinite(nll)[:, None, None] & (norm > NEG_INF)[..., None]
    return jnp.where(live, jnp.exp(gamma - jnp.where(live, norm[..., None], 0.0)), 0.0)


def dense_grad(logits, lse, t_len, g):
    """g[b] * softmax(logits) at frames < t_len, else 0; in the logits' dtype."""
    live = jnp.arange(logits.shape[1])[None, :, None] < t_len[:, None, None]
    p = jnp.exp(logits.astype(jnp.float32) - lse[:, :, None]) * g[:, None, None]
    return jnp.where(live, p, 0.0).astype(logits.dtype)


def subtract_posterior(grad, post, ext, g):
    """grad[b, t, ext[b, s]] -= g[b] * post[b, t, s] (scatter-add over the extended labels)."""
    b, t, s = post.shape
    bi = jnp.arange(b)[:, None, None]
    ti = jnp.arange(t)[None, :, None]
    upd = (-(g[:, None, None] * post)).astype(grad.dtype)
    return grad.at[bi, ti, ext[:, None, :]].add(upd, mode="promise_in_bounds")


@functools.partial(jax.custom_vjp, nondiff_argnums=())
def ctc_nll(logits, ext, skip, valid, t_len, u_len):
    """Per-utterance -log p(labels | logits) [B], clamped at >= 0, inf when impossible."""
    return _fwd(logits, ext, skip, valid, t_len, u_len)[0]


def _fwd(logits, ext, skip, valid, t_len, u_len):
    lse = log_normalizer(logits, t_len)
    em = emissions(logits, lse, ext, valid, t_len)
    alphas, nll = alpha_scan(em, skip, t_len, u_len)
    return jnp.maximum(nll, 0.0), (logits, lse, em, alphas, nll, ext, skip, t_len, u_len)


def _bwd(res, g):
    logits, lse, em, alphas, nll, ext, skip, t_len, u_len = res
    g = jnp.where(jnp.isfinite(nll), g, 0.0).astype(jnp.float32)
    post = beta_posterior_scan(em, alphas, nll, skip, t_len, u_len)
    grad = subtract_posterior(dense_grad(logits, lse, t_len, g), post, ext, g)
    return grad, None, None, None, None, None


ctc_nll.defvjp(_fwd, _bwd)
