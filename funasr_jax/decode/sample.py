"""Sampled generation (temperature, top-k, top-p) on the same jitted KV-cache loop as greedy decoding.

`sample_generate` is `greedy_generate` with a sampling token rule: each row b draws its token at
step t from `jax.random.categorical(fold_in(row_keys[b], t), filtered logits)`, so a row's samples
depend only on its own key (not on the batch it sits in or on the mesh), and the same keys give the
same tokens. Temperature 0 is plain greedy (argmax), and as temperature -> 0 sampling tends to it.

Filters, applied to logits [B, V] in this order: ids past `vocab_size` removed (if set); divide by the temperature; top-k keeps the k
largest logits (0 = all); top-p keeps the smallest set of most likely tokens whose probability
reaches p (1.0 = all; the most likely token is always kept). Removed tokens get -inf.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp

from funasr_jax.decode.generate import CausalDecoder, GenerateInputError, _row_limits, restrict_vocab, run_generation


@dataclass(frozen=True)
class SamplingConfig:
    temperature: float = 1.0
    top_k: int = 0  # 0 = no top-k filter
    top_p: float = 1.0  # 1.0 = no nucleus filter
    vocab_size: int = 0  # > 0: ids >= vocab_size are never drawn (an LLM vocabulary padded past the tokenizer's)

    def validate(self):
        if not self.temperature >= 0:
            raise GenerateInputError(f"sampling temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise GenerateInputError(f"sampling top_k must be >= 0 (0 = off), got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise GenerateInputError(f"sampling top_p must lie in (0, 1], got {self.top_p}")
        if self.vocab_size < 0:
            raise GenerateInputError(f"sampling vocab_size must be >= 0 (0 = all ids), got {self.vocab_size}")
        return self


def filter_logits(logits, cfg: SamplingConfig):
    """logits [B, V] -> f32 logits / temperature with the top-k / top-p removals at -inf (temperature > 0)."""
    x = logits.astype(jnp.float32) / cfg.temperature
    neg = jnp.asarray(-jnp.inf, jnp.float32)
    if 0 < cfg.top_k < x.shape[-1]:
        kth = jax.lax.top_k(x, cfg.top_k)[0][:, -1:]
        x = jnp.where(x < kth, neg, x)
    if cfg.top_p < 1.0:
        desc = -jnp.sort(-x, axis=-1)
        probs = jax.nn.softmax(desc, axis=-1)
        before = jnp.cumsum(probs, axis=-1) - probs  # mass of the strictly more likely tokens
        keep = before < cfg.top_p  # always true for the first
        cutoff = jnp.min(jnp.where(keep, desc, jnp.inf), axis=-1, keepdims=True)
        x = jnp.where(x < cutoff, neg, x)
    return x


def sampling_chooser(row_keys, cfg: SamplingConfig):
    """(choose, initial aux) for `run_generation`: aux is the step counter t (int32 scalar)."""
    def choose(logits, t):
        logits = restrict_vocab(logits, cfg.vocab_size)
        if cfg.temperature == 0:
            return jnp.argmax(logits, axis=-1).astype(jnp.int32), t + 1
        keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(row_keys, t)
        tok = jax.vmap(jax.random.categorical)(keys, filter_logits(logits, cfg))
        return tok.astype(jnp.int32), t + 1

    return choose, jnp.zeros((), jnp.int32)


def sample_tokens(decoder, params, prompt_embeds, prompt_lengths, row_keys, limits, *, max_new_tokens: int,
                  eos_id: int, pad_id: int, cfg: SamplingConfig):
    """The sampling loop, untransformed (for use inside a caller's jit): (tokens [B, N], lengths [B])."""
    choose, aux = sampling_chooser(row_keys, cfg)
    return run_generation(decoder, params, prompt_embeds, prompt_lengths, limits, max_new_tokens=max_new_tokens,
                          eos_id=eos_id, pad_id=pad_id, choose=choose, aux=aux)


@functools.partial(jax.jit, static_argnames=("decoder", "max_new_tokens", "eos_id", "pad_id", "cfg"))
def _sample(decoder, params, prompt_embeds, prompt_lengths, row_keys, limits, *, max_new_tokens, eos_id, pad_id,
            cfg):
    return sample_tokens(decoder, params, prompt_embeds, prompt_lengths, row_keys, limits,
                         max_new_tokens=max_new_tokens, eos_id=eos_id, pad_id=pad_id, cfg=cfg)


def row_keys_for(rng, n: int):
    """[n] per-row keys from one key (row b's key is `fold_in(rng, b)`)."""
    return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(rng, jnp.arange(n))


def sample_generate(decoder, params, prompt_embeds, prompt_lengths, rng, *, max_new_tokens: int, eos_id: int,
                    pad_id: int, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                    vocab_size: int = 0, row_max_new_tokens=None):
    """Sampled decoding of LEFT-padded prompt embeddings (layout and outputs as `greedy_generate`).

    rng: one PRNG key; row b samples with `fold_in(rng, b)` (see `row_keys_for`).
    Returns (tokens [B, max_new_tokens] int32, EOS included, pad_id after; lengths [B] int32).
    """
    if isinstance(decoder, nn.Module):
        decoder = CausalDecoder(decoder)
    cfg = SamplingConfig(float(temperature), int(top_k), float(top_p), int(vocab_size)).validate()
    if int(max_new_tokens) < 1:
        raise GenerateInputError(f"sample_generate: max_new_tokens must be >= 1, got {max_new_tokens}")
    if prompt_embeds.ndim != 3:
        raise GenerateInputError(f"sample_generate: prompt_embeds must be [B, P, D], got {tuple(prompt_embeds.shape)}")
    b = prompt_embeds.shape[0]
    limits = _row_limits(row_max_new_tokens, b, int(max_new_tokens))
    return _sample(decoder, params, prompt_embeds, jnp.asarray(prompt_lengths, jnp.int32), row_keys_for(rng, b),
                   limits, max_new_tokens=int(max_new_tokens), eos_id=int(eos_id), pad_id=int(pad_id), cfg=cfg)
