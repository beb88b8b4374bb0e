"""Attention encoder-decoder (AED) head: FunASR's `TransformerDecoder` over the SAN-M encoder.

The supervised encoder pre-training of the recipe (§4.1, after Best-RQ): a pre-LN transformer
decoder of width d = the encoder's output size reads the encoder output through cross-attention
and predicts the transcript in the CTC vocabulary. Layout and names follow FunASR
(`funasr.models.transformer.decoder.TransformerDecoder`, `normalize_before=True`,
`concat_after=False`), so a state dict converts by `funasr_jax.io.names`:

    embed/0/embedding [V, d]                 token embedding, scaled by sqrt(d), + sinusoidal
                                             positions (sin on even channels, cos on odd ones)
    decoders/{i}/norm1, self_attn/linear_{q,k,v,out}   causal self-attention
    decoders/{i}/norm2, src_attn/linear_{q,k,v,out}    cross-attention over the encoder output
    decoders/{i}/norm3, feed_forward/{w_1,w_2}         ReLU feed-forward
    after_norm, output_layer [d, V]

LayerNorm epsilon 1e-12 (ESPnet's). Start and end of a transcript are both the CTC blank id
(`sos_eos`): the blank is never a label, so it is free to mark them.

Shapes: memory [B, T, d] (encoder output, T LFR frames of 60 ms), memory_lengths [B];
ys_in [B, L] token ids (sos + labels), ys_in_lengths [B]; logits [B, L, V] float32.
Incremental decoding (`embed_tokens` / `forward_cached` / `logits`) keeps a per-layer key/value
cache [B, S, d] of the self-attention and plugs into `funasr_jax.decode.generate` and
`funasr_jax.decode.beam` through `AEDSearchDecoder`.
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from funasr_jax.models.batch import IGNORE_INDEX
from funasr_jax.models.config import AEDConfig
from funasr_jax.models.stack import LayerStack

LN_EPS = 1e-12


def causal_padding_mask(lengths, length: int):
    """[B, L, L] bool: query i may see key j iff j <= i and j < lengths[b] (FunASR tgt_mask)."""
    j = jnp.arange(length)
    causal = j[None, :] <= j[:, None]
    valid = j[None, :] < jnp.asarray(lengths)[:, None]
    return causal[None, :, :] & valid[:, None, :]


def memory_padding_mask(lengths, t: int):
    """[B, 1, T] bool: every query may see encoder frame t iff t < lengths[b]."""
    return (jnp.arange(t)[None, :] < jnp.asarray(lengths)[:, None])[:, None, :]


def cached_self_mask(kv_mask, cache_index, q_len: int):
    """[B, Lq, S] bool for queries at slots cache_index .. cache_index + Lq - 1 over S cache
    slots: slot s is visible iff s <= the query's slot and kv_mask[b, s] (left-padding mask)."""
    s = jnp.arange(kv_mask.shape[1])
    q_slot = cache_index + jnp.arange(q_len)
    return (s[None, :] <= q_slot[:, None])[None] & kv_mask[:, None, :]


def position_table(length: int, d: int):
    """FunASR `PositionalEncoding` table [length, d] f32: pe[p, 2i] = sin(p w_i), pe[p, 2i+1] =
    cos(p w_i), w_i = 10000^(-2i/d); positions 0-based."""
    pos = jnp.arange(length, dtype=jnp.float32)[:, None]
    w = jnp.exp(jnp.arange(0, d, 2, dtype=jnp.float32) * -(math.log(10000.0) / d))
    pe = jnp.zeros((length, d), jnp.float32)
    pe = pe.at[:, 0::2].set(jnp.sin(pos * w))
    return pe.at[:, 1::2].set(jnp.cos(pos * w)[:, : d // 2])


def decoder_io(labels, lengths, sos_eos: int):
    """CTC-style targets -> teacher-forcing pairs.

    labels [B, U] int (0-padded past lengths), lengths [B]. Returns ys_in [B, U+1] = (sos, y_1..y_n,
    sos_eos padding), ys_out [B, U+1] = (y_1..y_n, eos, IGNORE_INDEX padding), lengths + 1 [B].
    A row of length 0 (a padding row, or a noise-only clip) predicts eos only.
    """
    labels = jnp.asarray(labels, jnp.int32)
    lengths = jnp.asarray(lengths, jnp.int32)
    b, u = labels.shape
    j = jnp.arange(u + 1)[None, :]
    shifted = jnp.concatenate([jnp.full((b, 1), sos_eos, jnp.int32), labels], axis=1)
    ys_in = jnp.where(j <= lengths[:, None], shifted, sos_eos)
    padded = jnp.concatenate([labels, jnp.zeros((b, 1), jnp.int32)], axis=1)
    ys_out = jnp.where(j < lengths[:, None], padded, jnp.where(j == lengths[:, None], sos_eos, IGNORE_INDEX))
    return ys_in, ys_out, lengths + 1


def label_smoothing_loss(logits, targets, smoothing: float, row_weight=None):
    """FunASR `LabelSmoothingLoss` (KL to the smoothed target), as sums.

    logits [B, L, V] f32; targets [B, L] (IGNORE_INDEX = not scored); the target distribution puts
    1 - smoothing on the label and smoothing / (V - 1) on every other class. Returns dict(sum =
    the KL summed over scored positions, count = scored positions, correct = argmax hits).
    FunASR divides `sum` by the batch size (or by `count` with `length_normalized_loss`).
    """
    v = logits.shape[-1]
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    valid = targets != IGNORE_INDEX
    if row_weight is not None:
        valid &= (row_weight > 0)[:, None]
    safe = jnp.where(valid, targets, 0)
    conf, other = 1.0 - smoothing, smoothing / (v - 1)
    onehot = jax.nn.one_hot(safe, v, dtype=jnp.float32)
    dist = onehot * conf + (1.0 - onehot) * other

    def xlogx(p):
        return jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0)

    kl = jnp.sum(xlogx(dist) - dist * logp, axis=-1)
    kl = jnp.where(valid, kl, 0.0)
    correct = jnp.where(valid, jnp.argmax(logp, axis=-1) == safe, False)
    return {"sum": kl.sum(), "count": valid.sum().astype(jnp.float32), "correct": correct.sum().astype(jnp.float32)}


class MultiHeadedAttention(nn.Module):
    """ESPnet multi-head attention: linear_q / linear_k / linear_v / linear_out (with biases).

    `project(x_q, x_kv)` -> q, k, v [B, L, d]; `attend(q, k, v, mask)` -> [B, Lq, d], mask [B, 1|Lq, Lk]
    bool (masked probabilities are 0; a fully masked query row gives 0)."""

    n_head: int
    n_feat: int
    dropout_rate: float = 0.0
    dtype: jnp.dtype = jnp.float32

    def setup(self):
        dense = lambda name: nn.Dense(self.n_feat, dtype=self.dtype, name=name)  # noqa: E731
        self.linear_q, self.linear_k, self.linear_v = dense("linear_q"), dense("linear_k"), dense("linear_v")
        self.linear_out = dense("linear_out")

    def project(self, x_q, x_kv):
        return self.linear_q(x_q), self.linear_k(x_kv), self.linear_v(x_kv)

    def attend(self, q, k, v, mask, deterministic: bool = True):
        b, lq, _ = q.shape
        h, dk = self.n_head, self.n_feat // self.n_head
        split = lambda x: x.reshape(b, x.shape[1], h, dk).astype(jnp.float32)  # noqa: E731
        scores = jnp.einsum("bqhd,bkhd->bhqk", split(q), split(k)) / math.sqrt(dk)
        m = mask[:, None, :, :]
        p = jnp.where(m, jax.nn.softmax(jnp.where(m, scores, -1e30), axis=-1), 0.0)
        if self.dropout_rate > 0 and not deterministic:
            keep = jax.random.bernoulli(self.make_rng("dropout"), 1.0 - self.dropout_rate, p.shape)
            p = jnp.where(keep, p / (1.0 - self.dropout_rate), 0.0)
        ctx = jnp.einsum("bhqk,bkhd->bqhd", p, split(v)).reshape(b, lq, h * dk)
        return self.linear_out(ctx.astype(self.dtype)).astype(jnp.float32)

    def __call__(self, x_q, x_kv, mask, deterministic: bool = True):
        return self.attend(*self.project(x_q, x_kv), mask, deterministic)


class FeedForward(nn.Module):
    """w_2(dropout(relu(w_1 x))) (ESPnet PositionwiseFeedForward)."""

    units: int
    size: int
    dropout_rate: float
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        h = jax.nn.relu(nn.Dense(self.units, dtype=self.dtype, name="w_1")(x))
        h = nn.Dropout(self.dropout_rate)(h, deterministic=deterministic)
        return nn.Dense(self.size, dtype=self.dtype, name="w_2")(h).astype(jnp.float32)


def _layer_norm(name):
    return nn.LayerNorm(epsilon=LN_EPS, dtype=jnp.float32, param_dtype=jnp.float32, use_fast_variance=False,
                        name=name)


class DecoderLayer(nn.Module):
    """Pre-LN block: x + SelfAttn(norm1 x) -> + SrcAttn(norm2 x, memory) -> + FFN(norm3 x).

    __call__(x [B, Lq, d], cache, self_mask [B, Lq, Lk], memory [B, T, d], memory_mask [B, 1, T],
    cache_index, deterministic) -> (x, new cache). cache None: keys are this call's positions
    (teacher forcing); else (k, v) [B, S, d] written at slots cache_index.. and attended over."""

    size: int
    n_head: int
    units: int
    dropout_rate: float
    attention_dropout_rate: float
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, cache, self_mask, memory, memory_mask, cache_index=None, deterministic: bool = True):
        drop = nn.Dropout(self.dropout_rate)
        attn = lambda name: MultiHeadedAttention(self.n_head, self.size, self.attention_dropout_rate,  # noqa: E731
                                                 self.dtype, name=name)
        self_attn, src_attn = attn("self_attn"), attn("src_attn")
        h = _layer_norm("norm1")(x)
        q, k, v = self_attn.project(h, h)
        if cache is not None:
            k = jax.lax.dynamic_update_slice_in_dim(cache[0], k.astype(cache[0].dtype), cache_index, axis=1)
            v = jax.lax.dynamic_update_slice_in_dim(cache[1], v.astype(cache[1].dtype), cache_index, axis=1)
            cache = (k, v)
        x = x + drop(self_attn.attend(q, k, v, self_mask, deterministic), deterministic=deterministic)
        x = x + drop(src_attn(_layer_norm("norm2")(x), memory, memory_mask, deterministic),
                     deterministic=deterministic)
        ffn = FeedForward(self.units, self.size, self.dropout_rate, self.dtype, name="feed_forward")
        x = x + drop(ffn(_layer_norm("norm3")(x), deterministic), deterministic=deterministic)
        return x, cache


class AEDDecoder(nn.Module):
    """FunASR TransformerDecoder (module docstring). size = d = encoder output width."""

    cfg: AEDConfig
    size: int
    vocab_size: int
    dtype: jnp.dtype = jnp.float32

    def setup(self):
        c = self.cfg
        self.embed = _TokenEmbedding(self.vocab_size, self.size)
        layer = (self.size, c.attention_heads, c.linear_units, c.dropout_rate, c.attention_dropout_rate, self.dtype)
        self.decoders = LayerStack(DecoderLayer, tuple(layer for _ in range(c.num_blocks)), collect=True)
        self.after_norm = _layer_norm("after_norm")
        self.output_layer = nn.Dense(self.vocab_size, dtype=self.dtype)
        self.pos_dropout = nn.Dropout(c.positional_dropout_rate)

    def embed_tokens(self, ids):
        """ids [B, L] -> token embeddings x sqrt(d) [B, L, d] f32 (positions are added by the caller)."""
        return self.embed(ids) * math.sqrt(self.size)

    def _run(self, x, caches, self_mask, memory, memory_lengths, cache_index, deterministic):
        mmask = memory_padding_mask(memory_lengths, memory.shape[1])
        h, caches = self.decoders(x, self_mask, memory, mmask, cache_index, deterministic, per_layer=caches)
        return self.after_norm(h), caches

    def __call__(self, memory, memory_lengths, ys_in, ys_in_lengths, deterministic: bool = True):
        """Teacher-forced logits [B, L, V] f32 for ys_in [B, L] over memory [B, T, d]."""
        length = ys_in.shape[1]
        x = self.embed_tokens(ys_in) + position_table(length, self.size)[None]
        x = self.pos_dropout(x, deterministic=deterministic)
        h, _ = self._run(x, (None,) * self.cfg.num_blocks, causal_padding_mask(ys_in_lengths, length),
                         memory.astype(jnp.float32), memory_lengths, None, deterministic)
        return self.logits(h)

    def forward_cached(self, embeds, positions, cache, cache_index, kv_mask, memory, memory_lengths):
        """Incremental step: embeds [B, Lq, d] (from embed_tokens) at int positions [B, Lq] written
        at cache slots cache_index..; kv_mask [B, S]. -> (hidden [B, Lq, d], new cache)."""
        pe = position_table(kv_mask.shape[1], self.size)
        x = embeds + pe[positions]
        mask = cached_self_mask(kv_mask, cache_index, embeds.shape[1])
        h, cache = self._run(x, cache, mask, memory.astype(jnp.float32), memory_lengths, cache_index, True)
        return h, cache

    def logits(self, hidden):
        return self.output_layer(hidden).astype(jnp.float32)


class _TokenEmbedding(nn.Module):
    """`embed.0` of FunASR's Sequential(Embedding, PositionalEncoding)."""

    vocab_size: int
    size: int

    @nn.compact
    def __call__(self, ids):
        return nn.Embed(self.vocab_size, self.size, name="0")(ids).astype(jnp.float32)


def init_cache(cfg: AEDConfig, size: int, batch: int, max_len: int):
    """Per-layer self-attention (k, v) cache, zeros [batch, max_len, size] f32 each."""
    z = jnp.zeros((batch, max_len, size), jnp.float32)
    return tuple((z, z) for _ in range(cfg.num_blocks))


@dataclasses.dataclass(frozen=True)
class AEDSearchDecoder:
    """`AEDDecoder` as the duck-typed causal decoder of `decode.generate` / `decode.beam`.

    Its params are {"aed": the decoder's params, "memory": [B, T, d], "memory_lengths": [B]}: the
    encoder output rides along with the params, and a search over B·K rows (beam) reads row
    r's memory from utterance r // K (the beams of one utterance sit next to each other).
    """

    module: AEDDecoder

    def _apply(self, params, *args, method):
        return self.module.apply({"params": params["aed"]}, *args, method=method)

    def embed(self, params, ids):
        return self._apply(params, ids, method="embed_tokens")

    def forward(self, params, embeds, positions, cache, cache_index, kv_mask):
        memory, lengths = params["memory"], params["memory_lengths"]
        reps = embeds.shape[0] // memory.shape[0]
        if reps > 1:
            memory, lengths = jnp.repeat(memory, reps, axis=0), jnp.repeat(lengths, reps, axis=0)
        return self._apply(params, embeds, positions, cache, cache_index, kv_mask, memory, lengths,
                           method="forward_cached")

    def logits(self, params, hidden):
        return self._apply(params, hidden, method="logits")

    def init_cache(self, batch, max_len):
        return init_cache(self.module.cfg, self.module.size, batch, max_len)


def strip_ids(tokens: np.ndarray, lengths: np.ndarray, sos_eos: int) -> list[list[int]]:
    """Generated ids [B, N] + lengths (EOS included) -> per-row label ids without EOS / padding."""
    out = []
    for row, n in zip(np.asarray(tokens), np.asarray(lengths)):
        ids = [int(t) for t in row[: int(n)]]
        out.append([t for t in ids if t != sos_eos])
    return out
