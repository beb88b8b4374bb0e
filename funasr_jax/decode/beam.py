"""Beam search for the LLM (optionally joint with CTC prefix scores), all under one `jax.jit`.

Same conventions as `generate.greedy_generate`: LEFT-padded prompt embeddings [B, P, D], a
duck-typed `CausalDecoder` (embed / forward / logits / init_cache), per-row caps on the new
tokens, EOS included in the output and pad_id after it.

Algorithm (K = beam, V = vocabulary, N = max_new_tokens):
  * the B prompts are prefilled once, then the KV cache, the masks and (for joint decoding) the
    CTC prefix state are tiled to B·K rows, row b·K + k holding beam k of prompt b;
  * beam 0 starts with score 0 and beams 1..K-1 with -inf, so the first step picks the K best
    first tokens rather than K copies of the best one;
  * each step scores all K·V one-token extensions of every row, keeps the K best (by the running
    sum of token scores) and reorders the KV cache (and the CTC prefix state) by the parent beam
    with a gather on the batch axis — every cache leaf must have the batch as its leading axis,
    as `Qwen3ForCausalLM.init_cache` does;
  * a finished hypothesis (it emitted EOS or reached its row's cap) stays in the beam with its
    score frozen: its only extension is itself (pad_id appended, cost 0), so it competes with the
    live ones for the K slots without being duplicated;
  * the loop (`lax.while_loop`, no host round trip per token) stops once every beam of every row
    is finished or N tokens are generated.

Token score: log_softmax(logits) (f32), or with joint CTC decoding (weight w)
  (1 - w) log p_llm(c | g) + w (log psi(g + c) - log psi(g))
exactly as `ctc_prefix.joint_scores` gives it (EOS scores the CTC probability of the whole prefix).

Final ranking (GNMT-style simplification): among the K beams of a row the winner maximises
  score / length ** length_penalty,
where score is the sum of its token scores and length counts its tokens, EOS included
(length_penalty 0: the raw sum). The search itself ranks by raw sums; the penalty only picks the
returned hypothesis among the final K. With beam = 1 this is exactly greedy decoding.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from funasr_jax.decode import ctc_prefix
from funasr_jax.decode.generate import CausalDecoder, GenerateInputError, prompt_mask_positions


class BeamState(NamedTuple):
    """Loop carry, all rows flattened to B·K (row b·K + k = beam k of prompt b).

    step: index of the newest token column (fed next, at slot P + step, position len + step);
    tokens [BK, N] int32 (pad_id where not generated); scores [BK] f32 (running sums);
    lengths [BK] int32 (tokens so far, EOS included); done [BK] bool; cache: the KV cache of B·K
    rows; kv_mask [BK, S_max]; prompt_lengths [BK]; limits [BK] int32 (row caps);
    ctc: the CTC prefix state of B·K rows, or () without joint decoding."""

    step: jax.Array
    tokens: jax.Array
    scores: jax.Array
    lengths: jax.Array
    done: jax.Array
    cache: Any
    kv_mask: jax.Array
    prompt_lengths: jax.Array
    limits: jax.Array
    ctc: Any = ()


def _tile(x, k: int):
    """[B, ...] -> [B·K, ...], row b·K + j = row b."""
    return jnp.repeat(x, k, axis=0)


def _token_scores(logits, ctc_state, ctc, *, eos_id: int, weight: float, blank: int):
    """Per-token scores [BK, V] f32 and `extend`'s outputs (None without CTC)."""
    if ctc is None:
        return jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1), None
    ctc_lp, ctc_len = ctc
    return ctc_prefix.joint_scores(ctc_state, logits, ctc_lp, ctc_len, blank=blank, eos_id=eos_id,
                                   weight=weight)


def _select(logits, s: BeamState, col, ctc, *, beam: int, eos_id: int, pad_id: int, weight: float,
            blank: int) -> BeamState:
    """Extend every hypothesis by one token: logits [BK, V] are the next-token logits of the B·K
    hypotheses in `s` (their KV already in `s.cache`); the K best extensions per prompt are written
    at token column `col` and everything per-row is reordered by the parent beam."""
    bk, v = logits.shape
    b = bk // beam
    tok, ext = _token_scores(logits, s.ctc, ctc, eos_id=eos_id, weight=weight, blank=blank)
    live = s.scores[:, None] + tok  # [BK, V]
    # A finished hypothesis has one candidate, itself (column 0 stands for "append pad_id").
    frozen = jnp.full_like(live, -jnp.inf).at[:, 0].set(s.scores)
    cand = jnp.where(s.done[:, None], frozen, live).reshape(b, beam * v)
    top, idx = jax.lax.top_k(cand, beam)  # [B, K], best first
    parent = (jnp.arange(b, dtype=jnp.int32)[:, None] * beam + idx // v).reshape(bk).astype(jnp.int32)
    label = (idx % v).reshape(bk).astype(jnp.int32)
    was_done = s.done[parent]
    token = jnp.where(was_done, pad_id, label).astype(jnp.int32)
    tokens = jax.lax.dynamic_update_slice_in_dim(s.tokens[parent], token[:, None], col, axis=1)
    lengths = s.lengths[parent] + (~was_done).astype(jnp.int32)
    scores = top.reshape(bk)
    done = was_done | (token == eos_id) | (lengths >= s.limits) | jnp.isneginf(scores)
    cache = jax.tree_util.tree_map(lambda x: x[parent], s.cache)
    ctc_state = s.ctc
    if ctc is not None:
        psi, r_n, r_b = ext  # [BK, V], [BK, T, V], [BK, T, V]: index (parent, :, label) directly
        ctc_state = ctc_prefix.CTCPrefixState(r_n[parent, :, label], r_b[parent, :, label], label,
                                              psi[parent, label])
    return s._replace(tokens=tokens, scores=scores, lengths=lengths, done=done, cache=cache, ctc=ctc_state)


def run_beam_search(decoder, params, prompt_embeds, prompt_lengths, limits, ctc, length_penalty, *, beam: int,
                    max_new_tokens: int, eos_id: int, pad_id: int, ctc_weight: float = 0.0, ctc_blank: int = -1):
    """The beam search loop, untransformed (call it inside a jit).

    prompt_embeds [B, P, D] left-padded; prompt_lengths [B]; limits [B] int32 (1..N) row caps;
    ctc: None or (ctc_log_probs [B, T, V_ctc] f32, ctc_lengths [B] int32); length_penalty: f32
    scalar. Returns (tokens [B, N] int32, lengths [B] int32, scores [B] f32) of each row's best
    hypothesis (module docstring)."""
    b, p, _ = prompt_embeds.shape
    n, k = max_new_tokens, beam
    mask, positions = prompt_mask_positions(prompt_lengths, p)
    kv_mask = jnp.concatenate([mask, jnp.ones((b, n), bool)], axis=1)
    cache = decoder.init_cache(b, p + n)
    hidden, cache = decoder.forward(params, prompt_embeds, positions, cache, 0, kv_mask)
    logits = _tile(decoder.logits(params, hidden[:, -1]), k)  # [BK, V]

    ctc_state = ()
    if ctc is not None:
        ctc = (_tile(ctc[0], k), _tile(ctc[1], k))
        ctc_state = ctc_prefix.init_state(ctc[0], ctc[1], ctc_blank)
    init_scores = jnp.tile(jnp.where(jnp.arange(k) == 0, 0.0, -jnp.inf).astype(jnp.float32), b)
    state = BeamState(
        step=jnp.zeros((), jnp.int32), tokens=jnp.full((b * k, n), pad_id, jnp.int32), scores=init_scores,
        lengths=jnp.zeros((b * k,), jnp.int32), done=jnp.zeros((b * k,), bool),
        cache=jax.tree_util.tree_map(lambda x: _tile(x, k), cache), kv_mask=_tile(kv_mask, k),
        prompt_lengths=_tile(jnp.asarray(prompt_lengths, jnp.int32), k), limits=_tile(limits, k), ctc=ctc_state)
    select = functools.partial(_select, ctc=ctc, beam=k, eos_id=eos_id, pad_id=pad_id, weight=ctc_weight,
                               blank=ctc_blank)
    state = select(logits, state, 0)

    def body(s: BeamState) -> BeamState:
        last = jax.lax.dynamic_slice_in_dim(s.tokens, s.step, 1, axis=1)  # [BK, 1]
        emb = decoder.embed(params, last)
        pos = (s.prompt_lengths + s.step)[:, None]
        hidden, cache = decoder.forward(params, emb, pos, s.cache, p + s.step, s.kv_mask)
        s = s._replace(cache=cache)
        return select(decoder.logits(params, hidden[:, 0]), s, s.step + 1)._replace(step=s.step + 1)

    def cond(s: BeamState):
        return (s.step < n - 1) & ~jnp.all(s.done)

    state = jax.lax.while_loop(cond, body, state)
    lengths = state.lengths.reshape(b, k)
    norm = state.scores.reshape(b, k) / jnp.power(lengths.astype(jnp.float32), length_penalty)
    best = jnp.argmax(norm, axis=1)  # ties: the beam with the larger raw sum (top_k order)
    rows = jnp.arange(b) * k + best
    return (state.tokens[rows], lengths[jnp.arange(b), best],
            norm[jnp.arange(b), best].astype(jnp.float32))


@functools.partial(jax.jit, static_argnames=("decoder", "beam", "max_new_tokens", "eos_id", "pad_id", "ctc_weight",
                                             "ctc_blank"))
def _beam(decoder, params, prompt_embeds, prompt_lengths, limits, ctc, length_penalty, *, beam, max_new_tokens,
          eos_id, pad_id, ctc_weight, ctc_blank):
    return run_beam_search(decoder, params, prompt_embeds, prompt_lengths, limits, ctc, length_penalty, beam=beam,
                           max_new_tokens=max_new_tokens, eos_id=eos_id, pad_id=pad_id, ctc_weight=ctc_weight,
                           ctc_blank=ctc_blank)


def _host_values(x):
    """np.ndarray of x, or None inside a trace (values not checkable)."""
    try:
        return np.asarray(x)
    except jax.errors.TracerArrayConversionError:
        return None


def beam_search(decoder, params, prompt_embeds, prompt_lengths, *, beam: int, max_new_tokens: int, eos_id: int,
                pad_id: int, length_penalty: float = 0.0, ctc_log_probs=None, ctc_lengths=None,
                ctc_weight: float = 0.0, ctc_blank: int | None = None, row_max_new_tokens=None):
    """Beam search over LEFT-padded prompt embeddings; the best hypothesis per row.

    decoder: a `CausalDecoder` (a `Qwen3ForCausalLM` module is wrapped automatically); params its
    params (bare or {'params': ...}).
    prompt_embeds [B, P, D] left-padded; prompt_lengths [B] int (1 <= len <= P).
    beam: K >= 1 hypotheses per row (1: exactly `greedy_generate`).
    length_penalty: the winner of a row maximises score / length ** length_penalty (module
      docstring); 0: the raw sum of token scores. A traced value: changing it does not recompile.
    ctc_log_probs [B, T, V_ctc], ctc_lengths [B], ctc_blank, 0 < ctc_weight < 1: joint CTC / LLM
      scores as in `greedy_generate` (ignored when ctc_log_probs is None or ctc_weight == 0).
    row_max_new_tokens: optional [B] int >= 1, per-row caps (clipped to max_new_tokens); a
      hypothesis reaching its cap is finished as if it had emitted EOS (no EOS written). Traced.
    Returns (tokens [B, max_new_tokens] int32 — EOS included, pad_id after; lengths [B] int32 —
    tokens up to and including EOS, or the row's cap; scores [B] f32 — the winner's
    score / length ** length_penalty). Compiled once per (decoder, shapes, beam, max_new_tokens,
    eos_id, pad_id, ctc_weight, ctc_blank).
    """
    name = "beam_search"
    if isinstance(decoder, nn.Module):
        decoder = CausalDecoder(decoder)
    if int(beam) != beam or int(beam) < 1:
        raise GenerateInputError(f"{name}: beam must be an int >= 1, got {beam}")
    if int(max_new_tokens) != max_new_tokens or int(max_new_tokens) < 1:
        raise GenerateInputError(f"{name}: max_new_tokens must be an int >= 1, got {max_new_tokens}")
    if not math.isfinite(float(length_penalty)):
        raise GenerateInputError(f"{name}: length_penalty must be finite, got {length_penalty}")
    if jnp.ndim(prompt_embeds) != 3:
        raise GenerateInputError(f"{name}: prompt_embeds must be [B, P, D], got {tuple(jnp.shape(prompt_embeds))}")
    b, p, _ = prompt_embeds.shape
    n = int(max_new_tokens)
    if tuple(jnp.shape(prompt_lengths)) != (b,):
        raise GenerateInputError(f"{name}: prompt_lengths must be [B] = ({b},), got {tuple(jnp.shape(prompt_lengths))}")
    ln = _host_values(prompt_lengths)
    if ln is not None and (ln.min() < 1 or ln.max() > p):
        raise GenerateInputError(f"{name}: prompt_lengths must lie in [1, P={p}], got {ln.tolist()}")
    if row_max_new_tokens is None:
        limits = jnp.full((b,), n, jnp.int32)
    else:
        if tuple(jnp.shape(row_max_new_tokens)) != (b,):
            raise GenerateInputError(f"{name}: row_max_new_tokens must be [B] = ({b},), got "
                                     f"{tuple(jnp.shape(row_max_new_tokens))}")
        lim = _host_values(row_max_new_tokens)
        if lim is not None and lim.min() < 1:
            raise GenerateInputError(f"{name}: row_max_new_tokens must be >= 1, got {lim.tolist()}")
        limits = jnp.minimum(jnp.asarray(row_max_new_tokens, jnp.int32), n)
    ctc = None
    if ctc_log_probs is not None and ctc_weight > 0:
        if not 0.0 < float(ctc_weight) < 1.0:
            raise GenerateInputError(f"{name}: ctc_weight must lie in [0, 1), got {ctc_weight}")
        if jnp.ndim(ctc_log_probs) != 3 or ctc_log_probs.shape[0] != b:
            raise GenerateInputError(f"{name}: ctc_log_probs must be [B={b}, T, V], got "
                                     f"{tuple(jnp.shape(ctc_log_probs))}")
        if ctc_lengths is None or tuple(jnp.shape(ctc_lengths)) != (b,):
            raise GenerateInputError(f"{name}: ctc_lengths must be [B] = ({b},)")
        if ctc_blank is None or not 0 <= int(ctc_blank) < ctc_log_probs.shape[2]:
            raise GenerateInputError(f"{name}: ctc_blank must index the CTC labels "
                                     f"(V={ctc_log_probs.shape[2]}), got {ctc_blank}")
        ctc = (jnp.asarray(ctc_log_probs, jnp.float32), jnp.asarray(ctc_lengths, jnp.int32))
    return _beam(decoder, params, prompt_embeds, jnp.asarray(prompt_lengths, jnp.int32), limits, ctc,
                 jnp.asarray(length_penalty, jnp.float32), beam=int(beam), max_new_tokens=n, eos_id=int(eos_id),
                 pad_id=int(pad_id), ctc_weight=float(ctc_weight) if ctc is not None else 0.0,
                 ctc_blank=int(ctc_blank) if ctc is not None else -1)
