"""Greedy generation with a static-size functional KV cache, all under one `jax.jit`.

Prompts are LEFT-padded embeddings [B, P, D] (use `left_pad` on right-padded ones): row b's
prompt occupies slots P - len_b .. P - 1, so every row's last prompt token sits at slot P - 1 and
generated token i (0-based) is fed at slot P + i for every row. RoPE positions are
`cumsum(mask) - 1` over the prompt (pads get 1, as in FunASR's batch path and HF generate) and
len_b + i for generated tokens. Pads are hidden from attention by `kv_mask` [B, S_max].

The generator needs only a `CausalDecoder`-like object (duck-typed):
  embed(params, ids [B, L]) -> [B, L, D]
  forward(params, embeds [B, L, D], positions [B, L], cache, cache_index, kv_mask) -> (hidden, cache)
  logits(params, hidden [B, D]) -> [B, V] f32
  init_cache(batch, max_len) -> cache
`CausalDecoder(Qwen3ForCausalLM(...))` provides them; for the full ASR model pass the LLM's
params (e.g. `params['llm']`) and prompt embeddings with the audio rows already spliced in.

Joint CTC / LLM decoding: given the CTC head's log-posteriors over the *same* label ids, each
token maximises (1 - w) log p_llm + w (log psi(g + c) - log psi(g)) (see `ctc_prefix`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from funasr_jax.decode import ctc_prefix


class GenerateInputError(ValueError):
    """Bad input to generation (names the argument)."""


def restrict_vocab(logits, vocab_size: int):
    """logits [B, V] with ids >= vocab_size (when 0 < vocab_size < V) at -inf."""
    if 0 < vocab_size < logits.shape[-1]:
        return jnp.where(jnp.arange(logits.shape[-1]) < vocab_size, logits, jnp.asarray(-jnp.inf, logits.dtype))
    return logits


@dataclasses.dataclass(frozen=True)
class CausalDecoder:
    """Adapts a Linen causal LM (`Qwen3ForCausalLM` API) to the callables generation needs.

    Hashable (a static argument of the jitted generator). `params` may be the bare param dict
    or {'params': ...}. vocab_size > 0: ids >= vocab_size get -inf logits, so no decoding rule
    (greedy, beam, joint) can emit an embedding row the tokenizer has no token for (Qwen3's
    151,936 rows against its tokenizer's 151,669 entries).
    """

    module: nn.Module
    vocab_size: int = 0

    @staticmethod
    def _vars(params):
        return params if set(params) == {"params"} else {"params": params}

    def embed(self, params, ids):
        return self.module.apply(self._vars(params), ids, method="embed")

    def forward(self, params, embeds, positions, cache, cache_index, kv_mask):
        return self.module.apply(self._vars(params), embeds, positions=positions, cache=cache,
                                 cache_index=cache_index, kv_mask=kv_mask, return_hidden=True)

    def logits(self, params, hidden):
        return restrict_vocab(self.module.apply(self._vars(params), hidden, method="logits_from_hidden"),
                              self.vocab_size)

    def init_cache(self, batch, max_len):
        return self.module.init_cache(batch, max_len)


class DecodeState(NamedTuple):
    """Loop carry. tokens [B, N] (pad_id where not yet generated); step: index of the newest
    token in `tokens` (it is fed next, at slot P + step, position lengths + step)."""

    step: jax.Array
    tokens: jax.Array
    done: jax.Array  # [B] bool: row has emitted EOS
    cache: Any
    kv_mask: jax.Array  # [B, S_max]
    prompt_lengths: jax.Array  # [B]
    aux: Any = ()  # the token chooser's state (the CTC prefix state for joint decoding)
    limits: Any = None  # [B] int32: new tokens row b may emit (EOS included); None: N for every row


def argmax_chooser(logits, aux):
    """Plain greedy: (argmax token [B], aux unchanged)."""
    return jnp.argmax(logits, axis=-1).astype(jnp.int32), aux


def joint_ctc_chooser(ctc_log_probs, ctc_lengths, *, weight: float, blank: int, eos_id: int, prefix=None):
    """(chooser, initial aux) for joint CTC / LLM greedy decoding (see `ctc_prefix`).

    prefix: optional (ids [B, L] int32, lengths [B]): labels already emitted (a prefix forced in
    the prompt), run into the CTC state first so the scores continue after them."""
    def choose(logits, state):
        scores, ext = ctc_prefix.joint_scores(state, logits, ctc_log_probs, ctc_lengths, blank=blank,
                                              eos_id=eos_id, weight=weight)
        token = jnp.argmax(scores, axis=-1).astype(jnp.int32)
        return token, ctc_prefix.advance(state, token, *ext)

    state = ctc_prefix.init_state(ctc_log_probs, ctc_lengths, blank)
    if prefix is not None:
        state = ctc_prefix.force_prefix(state, ctc_log_probs, ctc_lengths, blank, *prefix)
    return choose, state


def left_pad(embeds, lengths):
    """Right-padded [B, L, D] (row b valid in [0, lengths[b])) -> left-padded [B, L, D]."""
    l = embeds.shape[1]
    shift = l - jnp.asarray(lengths)
    src = (jnp.arange(l)[None, :] - shift[:, None]) % l
    valid = jnp.arange(l)[None, :] >= shift[:, None]
    out = jnp.take_along_axis(embeds, src[..., None], axis=1)
    return jnp.where(valid[..., None], out, jnp.zeros((), embeds.dtype))


def prompt_mask_positions(prompt_lengths, p: int):
    """Left-padding mask [B, P] (True on real tokens) and RoPE positions [B, P] (pads get 1)."""
    mask = jnp.arange(p)[None, :] >= (p - jnp.asarray(prompt_lengths))[:, None]
    pos = jnp.cumsum(mask, axis=1) - 1
    return mask, jnp.where(mask, pos, 1).astype(jnp.int32)


def prefill(decoder, params, prompt_embeds, prompt_lengths, *, max_new_tokens: int, pad_id: int,
            eos_id: int, choose=argmax_chooser, aux=(), limits=None) -> DecodeState:
    """Run the prompt into a fresh cache of P + max_new_tokens slots; pick the first token.

    choose(logits [B, V], aux) -> (tokens [B], aux): the token rule (greedy by default).
    limits: [B] int (>= 1) new tokens each row may emit, or None (max_new_tokens for all); a row
    is done once it has emitted EOS or reached its limit."""
    b, p, _ = prompt_embeds.shape
    mask, positions = prompt_mask_positions(prompt_lengths, p)
    kv_mask = jnp.concatenate([mask, jnp.ones((b, max_new_tokens), bool)], axis=1)
    cache = decoder.init_cache(b, p + max_new_tokens)
    hidden, cache = decoder.forward(params, prompt_embeds, positions, cache, 0, kv_mask)
    first, aux = choose(decoder.logits(params, hidden[:, -1]), aux)
    tokens = jnp.full((b, max_new_tokens), pad_id, jnp.int32).at[:, 0].set(first)
    done = first == eos_id
    if limits is not None:
        limits = jnp.asarray(limits, jnp.int32)
        done = done | (limits <= 1)
    return DecodeState(jnp.zeros((), jnp.int32), tokens, done, cache, kv_mask,
                       jnp.asarray(prompt_lengths, jnp.int32), aux, limits)


def decode_step(decoder, params, state: DecodeState, *, eos_id: int, pad_id: int,
                choose=argmax_chooser) -> DecodeState:
    """Feed tokens[:, step] and append the greedy next token (pad_id for finished rows; a row
    reaching its `state.limits` entry is finished after this token)."""
    n = state.tokens.shape[1]
    p = state.kv_mask.shape[1] - n
    last = jax.lax.dynamic_slice_in_dim(state.tokens, state.step, 1, axis=1)  # [B, 1]
    emb = decoder.embed(params, last)
    positions = (state.prompt_lengths + state.step)[:, None]
    hidden, cache = decoder.forward(params, emb, positions, state.cache, p + state.step, state.kv_mask)
    nxt, aux = choose(decoder.logits(params, hidden[:, 0]), state.aux)
    nxt = jnp.where(state.done, pad_id, nxt)
    tokens = jax.lax.dynamic_update_slice_in_dim(state.tokens, nxt[:, None], state.step + 1, axis=1)
    done = state.done | (nxt == eos_id)
    if state.limits is not None:
        done = done | (state.step + 2 >= state.limits)  # this row now holds step + 2 tokens
    return state._replace(step=state.step + 1, tokens=tokens, done=done, cache=cache, aux=aux)


def generated_lengths(tokens, eos_id: int):
    """Tokens per row up to and including the first EOS (N if none)."""
    n = tokens.shape[1]
    is_eos = tokens == eos_id
    first = jnp.argmax(is_eos, axis=1)
    return jnp.where(jnp.any(is_eos, axis=1), first + 1, n).astype(jnp.int32)


def run_generation(decoder, params, prompt_embeds, prompt_lengths, limits, *, max_new_tokens: int, eos_id: int,
                   pad_id: int, choose=argmax_chooser, aux=()):
    """The generation loop, untransformed (call it inside a jit): prefill, then one `decode_step`
    per token in a `lax.while_loop` until every row is done. Returns (tokens [B, N], lengths [B])."""
    state = prefill(decoder, params, prompt_embeds, prompt_lengths, max_new_tokens=max_new_tokens,
                    pad_id=pad_id, eos_id=eos_id, choose=choose, aux=aux, limits=limits)

    def cond(s):
        return (s.step < max_new_tokens - 1) & ~jnp.all(s.done)

    state = jax.lax.while_loop(
        cond, lambda s: decode_step(decoder, params, s, eos_id=eos_id, pad_id=pad_id, choose=choose), state)
    return state.tokens, jnp.minimum(generated_lengths(state.tokens, eos_id), limits)


@functools.partial(jax.jit, static_argnames=("decoder", "max_new_tokens", "eos_id", "pad_id", "ctc_weight",
                                             "ctc_blank"))
def _greedy(decoder, params, prompt_embeds, prompt_lengths, ctc, limits, ctc_prefix_ids, *, max_new_tokens, eos_id,
            pad_id, ctc_weight, ctc_blank):
    if ctc is None:
        choose, aux = argmax_chooser, ()
    else:
        choose, aux = joint_ctc_chooser(*ctc, weight=ctc_weight, blank=ctc_blank, eos_id=eos_id,
                                        prefix=ctc_prefix_ids)
    return run_generation(decoder, params, prompt_embeds, prompt_lengths, limits, max_new_tokens=max_new_tokens,
                          eos_id=eos_id, pad_id=pad_id, choose=choose, aux=aux)


def greedy_generate(decoder, params, prompt_embeds, prompt_lengths, *, max_new_tokens: int,
                    eos_id: int, pad_id: int, ctc_log_probs=None, ctc_lengths=None, ctc_weight: float = 0.0,
                    ctc_blank: int | None = None, row_max_new_tokens=None, ctc_prefix_ids=None):
    """Greedy decoding of LEFT-padded prompt embeddings.

    With `ctc_log_probs` [B, T, V_ctc] (label ids shared with the LLM, blank = `ctc_blank`),
    `ctc_lengths` [B] and 0 < ctc_weight < 1, tokens are chosen jointly with the CTC prefix
    scores (module docstring); otherwise plain greedy.

    decoder: a `CausalDecoder` (a `Qwen3ForCausalLM` module is wrapped automatically).
    prompt_embeds [B, P, D] left-padded; prompt_lengths [B] int (1 <= len <= P).
    row_max_new_tokens: optional [B] int >= 1, a per-row cap on the new tokens (EOS included) on
    top of `max_new_tokens` (values above it are clipped to it): row b stops after
    min(row_max_new_tokens[b], max_new_tokens) tokens as if it had emitted EOS (pad_id after,
    no EOS written). A traced array: changing it does not recompile.
    ctc_prefix_ids: optional (ids [B, L] int32, lengths [B]) for joint decoding: the labels the
    prompt already ends with (a forced prefix), run into the CTC prefix state before the first
    token, so the CTC scores continue after them rather than from the start of the utterance.
    Returns (tokens [B, max_new_tokens] int32 — greedy tokens, the EOS included, pad_id after it,
    matching HF `generate(do_sample=False)`'s new tokens; lengths [B] int32 — tokens up to and
    including the first EOS, the row's cap if none). The loop stops once every row has emitted
    EOS or reached its cap. Compiled once per (decoder, shapes, max_new_tokens, eos_id, pad_id).
    """
    if isinstance(decoder, nn.Module):
        decoder = CausalDecoder(decoder)
    if int(max_new_tokens) < 1:
        raise GenerateInputError(f"greedy_generate: max_new_tokens must be >= 1, got {max_new_tokens}")
    if prompt_embeds.ndim != 3:
        raise GenerateInputError(f"greedy_generate: prompt_embeds must be [B, P, D], got {tuple(prompt_embeds.shape)}")
    b, p, _ = prompt_embeds.shape
    if tuple(jnp.shape(prompt_lengths)) != (b,):
        raise GenerateInputError(f"greedy_generate: prompt_lengths must be [B] = ({b},), got {tuple(jnp.shape(prompt_lengths))}")
    try:  # checkable only outside a trace
        ln = np.asarray(prompt_lengths)
    except jax.errors.TracerArrayConversionError:
        ln = None
    if ln is not None and (ln.min() < 1 or ln.max() > p):
        raise GenerateInputError(f"greedy_generate: prompt_lengths must lie in [1, P={p}], got {ln.tolist()}")
    limits = _row_limits(row_max_new_tokens, b, int(max_new_tokens))
    ctc = None
    if ctc_log_probs is not None and ctc_weight > 0:
        if not 0.0 < float(ctc_weight) < 1.0:
            raise GenerateInputError(f"greedy_generate: ctc_weight must lie in [0, 1), got {ctc_weight}")
        if ctc_log_probs.ndim != 3 or ctc_log_probs.shape[0] != b:
            raise GenerateInputError(f"greedy_generate: ctc_log_probs must be [B={b}, T, V], got "
                                     f"{tuple(ctc_log_probs.shape)}")
        if ctc_lengths is None or tuple(jnp.shape(ctc_lengths)) != (b,):
            raise GenerateInputError(f"greedy_generate: ctc_lengths must be [B] = ({b},)")
        if ctc_blank is None or not 0 <= int(ctc_blank) < ctc_log_probs.shape[2]:
            raise GenerateInputError(f"greedy_generate: ctc_blank must index the CTC labels "
                                     f"(V={ctc_log_probs.shape[2]}), got {ctc_blank}")
        ctc = (jnp.asarray(ctc_log_probs, jnp.float32), jnp.asarray(ctc_lengths, jnp.int32))
    if ctc_prefix_ids is not None:
        ids, lens = ctc_prefix_ids
        if ctc is None:
            ctc_prefix_ids = None  # plain greedy: the prompt alone carries the prefix
        elif jnp.ndim(ids) != 2 or jnp.shape(ids)[0] != b or tuple(jnp.shape(lens)) != (b,):
            raise GenerateInputError(f"greedy_generate: ctc_prefix_ids must be (ids [B={b}, L], lengths [B]), got "
                                     f"{tuple(jnp.shape(ids))} and {tuple(jnp.shape(lens))}")
        else:
            ctc_prefix_ids = (jnp.asarray(ids, jnp.int32), jnp.asarray(lens, jnp.int32))
    return _greedy(decoder, params, prompt_embeds, jnp.asarray(prompt_lengths, jnp.int32), ctc, limits, ctc_prefix_ids,
                   max_new_tokens=int(max_new_tokens), eos_id=int(eos_id), pad_id=int(pad_id),
                   ctc_weight=float(ctc_weight) if ctc is not None else 0.0,
                   ctc_blank=int(ctc_blank) if ctc is not None else -1)


def _row_limits(row_max_new_tokens, b: int, max_new_tokens: int):
    """Per-row caps [B] int32 = min(row_max_new_tokens, max_new_tokens) (all max_new_tokens if None)."""
    if row_max_new_tokens is None:
        return jnp.full((b,), max_new_tokens, jnp.int32)
    if tuple(jnp.shape(row_max_new_tokens)) != (b,):
        raise GenerateInputError(f"greedy_generate: row_max_new_tokens must be [B] = ({b},), got "
                                 f"{tuple(jnp.shape(row_max_new_tokens))}")
    try:  # checkable only outside a trace
        lim = np.asarray(row_max_new_tokens)
    except jax.errors.TracerArrayConversionError:
        lim = None
    if lim is not None and lim.min() < 1:
        raise GenerateInputError(f"greedy_generate: row_max_new_tokens must be >= 1, got {lim.tolist()}")
    return jnp.minimum(jnp.asarray(row_max_new_tokens, jnp.int32), max_new_tokens)
