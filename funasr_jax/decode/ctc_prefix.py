"""CTC prefix scores for joint CTC / LLM decoding (hybrid CTC-attention decoding).

For a prefix g and every label c, `extend` returns log psi(g + c), the CTC probability that the
label sequence of the utterance *starts with* g + c, and for c = EOS log P(g) (the sequence is
exactly g). Adding w * (log psi(g + c) - log psi(g)) to the LLM's log-probabilities keeps the
generated text consistent with the CTC head's evidence (Watanabe et al., 2017, sec. III-B).

State per row: forward variables over the T frames for the current prefix, r_n[t] (paths ending
in its last label at t) and r_b[t] (ending in blank), in log space. One `extend` is a scan over
the T frames, vectorised over all V labels: O(B * T * V) memory and work per generated token.
Frames t >= length are padding and never contribute.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

NEG_INF = -1e30  # finite, so that 0 * NEG_INF and NEG_INF - NEG_INF stay NaN-free


class CTCPrefixState(NamedTuple):
    """r_n, r_b [B, T] f32 (log); last [B] int32 (-1 = empty prefix); score [B] = log psi(g)."""

    r_n: jax.Array
    r_b: jax.Array
    last: jax.Array
    score: jax.Array


def init_state(ctc_logp, lengths, blank: int) -> CTCPrefixState:
    """The empty prefix. ctc_logp [B, T, V] log-posteriors (blank included); lengths [B]."""
    b, t, _ = ctc_logp.shape
    valid = jnp.arange(t)[None, :] < jnp.asarray(lengths)[:, None]
    blank_lp = jnp.where(valid, ctc_logp[..., blank], 0.0)
    r_b = jnp.where(valid, jnp.cumsum(blank_lp, axis=1), NEG_INF)
    return CTCPrefixState(jnp.full((b, t), NEG_INF, jnp.float32), r_b.astype(jnp.float32),
                          jnp.full((b,), -1, jnp.int32), jnp.zeros((b,), jnp.float32))


def extend(state: CTCPrefixState, ctc_logp, lengths, blank: int, num_labels: int):
    """Scores of every one-label extension of the prefix.

    ctc_logp [B, T, V_ctc]; num_labels: the candidate ids are 0 .. num_labels - 1 (ids at or
    beyond V_ctc, and the blank id, get NEG_INF).
    Returns (psi [B, num_labels] = log psi(g + c), r_n [B, T, num_labels], r_b [B, T, num_labels],
    final [B] = log P(g) — the score of ending the sequence here).
    """
    b, t, v_ctc = ctc_logp.shape
    lengths = jnp.asarray(lengths)
    ids = jnp.arange(num_labels)
    x = jnp.take(ctc_logp, jnp.clip(ids, 0, v_ctc - 1), axis=2).astype(jnp.float32)  # [B, T, C]
    usable = (ids < v_ctc) & (ids != blank)
    x = jnp.where(usable[None, None, :], x, NEG_INF)
    x_blank = ctc_logp[..., blank].astype(jnp.float32)  # [B, T]
    valid = jnp.arange(t)[None, :] < lengths[:, None]  # [B, T]
    # phi[t]: prefix g complete by frame t, ready for a new label c (a repeat needs a blank between)
    both = jnp.logaddexp(state.r_n, state.r_b)  # [B, T]
    same = ids[None, :] == state.last[:, None]  # [B, C]
    phi = jnp.where(same[:, None, :], state.r_b[:, :, None], both[:, :, None])  # [B, T, C]
    empty = (state.last < 0)[:, None]  # [B, 1]
    rn0 = jnp.where(empty, x[:, 0], NEG_INF)
    rn0 = jnp.where(valid[:, :1], rn0, NEG_INF)
    rb0 = jnp.full_like(rn0, NEG_INF)

    def step(carry, inp):
        rn_prev, rb_prev = carry
        phi_prev, x_t, xb_t, ok = inp
        rn = jnp.logaddexp(rn_prev, phi_prev) + x_t
        rb = jnp.logaddexp(rn_prev, rb_prev) + xb_t[:, None]
        rn = jnp.where(ok[:, None], rn, NEG_INF)
        rb = jnp.where(ok[:, None], rb, NEG_INF)
        new_mass = jnp.where(ok[:, None], phi_prev + x_t, NEG_INF)
        return (rn, rb), (rn, rb, new_mass)

    xs = (jnp.moveaxis(phi[:, :-1], 1, 0), jnp.moveaxis(x[:, 1:], 1, 0), jnp.moveaxis(x_blank[:, 1:], 1, 0),
          jnp.moveaxis(valid[:, 1:], 1, 0))
    _, (rn_s, rb_s, mass) = jax.lax.scan(step, (rn0, rb0), xs)
    r_n = jnp.concatenate([rn0[:, None], jnp.moveaxis(rn_s, 0, 1)], axis=1)  # [B, T, C]
    r_b = jnp.concatenate([rb0[:, None], jnp.moveaxis(rb_s, 0, 1)], axis=1)
    psi = jax.nn.logsumexp(jnp.concatenate([rn0[None], mass], axis=0), axis=0)  # [B, C]
    psi = jnp.maximum(jnp.where(usable[None, :], psi, NEG_INF), NEG_INF)
    last_t = jnp.clip(lengths - 1, 0, t - 1)
    final = jnp.take_along_axis(both, last_t[:, None], axis=1)[:, 0]
    return psi, r_n, r_b, final


def advance(state: CTCPrefixState, token, psi, r_n, r_b) -> CTCPrefixState:
    """The state of prefix g + token, from `extend`'s outputs (token [B] int32)."""
    idx = token[:, None, None]
    return CTCPrefixState(jnp.take_along_axis(r_n, idx, axis=2)[..., 0],
                          jnp.take_along_axis(r_b, idx, axis=2)[..., 0], token.astype(jnp.int32),
                          jnp.take_along_axis(psi, token[:, None], axis=1)[:, 0])


def joint_scores(state: CTCPrefixState, llm_logits, ctc_logp, lengths, *, blank: int, eos_id: int,
                 weight: float):
    """(1 - weight) * log p_llm(c) + weight * (log psi(g + c) - log psi(g)) for every c.

    llm_logits [B, V_llm]. EOS scores the CTC probability of the whole prefix. Returns
    (scores [B, V_llm], extend outputs for `advance`).
    """
    v = llm_logits.shape[-1]
    psi, r_n, r_b, final = extend(state, ctc_logp, lengths, blank, v)
    psi = psi.at[:, eos_id].set(final)
    llm_lp = jax.nn.log_softmax(llm_logits.astype(jnp.float32), axis=-1)
    scores = (1.0 - weight) * llm_lp + weight * (psi - state.score[:, None])
    return scores, (psi, r_n, r_b)


def force_prefix(state: CTCPrefixState, ctc_logp, lengths, blank: int, prefix, prefix_lengths) -> CTCPrefixState:
    """The state after the labels `prefix` [B, L] int32 (row b's first prefix_lengths[b] entries;
    the rest ignored): the CTC side of a decode that continues an already emitted prefix (the
    streaming decoder's stable partial). One `extend` per prefix position, O(L * B * T * V)."""
    prefix = jnp.asarray(prefix, jnp.int32)
    prefix_lengths = jnp.asarray(prefix_lengths, jnp.int32)
    v = ctc_logp.shape[2]

    def body(k, s):
        token = jnp.clip(prefix[:, k], 0, v - 1)
        nxt = advance(s, token, *extend(s, ctc_logp, lengths, blank, v)[:3])
        live = k < prefix_lengths
        return CTCPrefixState(*(jnp.where(live.reshape((-1,) + (1,) * (a.ndim - 1)), a, b)
                                for a, b in zip(nxt, s)))

    return jax.lax.fori_loop(0, prefix.shape[1], body, state)
