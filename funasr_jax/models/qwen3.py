"""Qwen3 causal LM in Flax Linen (Hugging Face `Qwen3ForCausalLM`), with LoRA and a functional KV cache.

Parameter paths mirror the Hugging Face state dict (`funasr_jax.io.names` maps them):
`model/embed_tokens/embedding` [V, D], `model/layers/{i}/self_attn/{q,k,v,o}_proj/kernel`,
`model/layers/{i}/self_attn/{q,k}_norm/scale` [head_dim], `model/layers/{i}/mlp/{gate,up,down}_proj/kernel`,
`model/layers/{i}/{input,post_attention}_layernorm/scale`, `model/norm/scale`, and `lm_head/kernel`
[D, V] only when `tie_word_embeddings=False` (tied: logits = h @ embedding.T). With
`scan_layers=True` the layers are stacked at rest: `model/layers/stacked/<same names>` with a
leading [L, ...] axis (`funasr_jax.models.stack`).

Block: pre-RMSNorm; GQA attention with per-head RMSNorm on q and k *before* RoPE (HF rotate_half
layout, theta from config), f32 softmax; SwiGLU MLP down(silu(gate(x)) * up(x)).

Three attention modes (`DecoderContext.mode`, chosen by `Qwen3ForCausalLM.__call__`):
* "train" (no cache; training / scoring): right padding, `lengths` [B] masks keys, causal.
* "decode" (a cache, generation): k/v of the L new tokens are written at slot `cache_index` of a
  static-size cache [B, S_max, Hkv, head_dim]; queries attend to slots s <= cache_index + t that
  are also True in `kv_mask` [B, S_max] (left padding).
* "prefill" (a cache and the Python int cache_index 0): written at slot 0, attending to the new
  k/v only (same result as "decode", cheaper).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct
from jax import lax

from funasr_jax.models.batch import IGNORE_INDEX
from funasr_jax.models.config import Qwen3Config
from funasr_jax.models.lora import LoRADense
from funasr_jax.models.precision import with_matmul_precision
from funasr_jax.models.stack import LayerStack
from kernels.attention.api import attention


class Qwen3InputError(ValueError):
    """Bad input to the Qwen3 model (names the tensor and the expected shape)."""


# ----------------------------------------------------------------------------- small parts


class RMSNorm(nn.Module):
    """y = x / sqrt(mean(x^2) + eps) * scale over the last axis, in f32; returns `dtype`."""

    eps: float = 1e-6
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        scale = self.param("scale", nn.initializers.ones, (x.shape[-1],), jnp.float32)
        xf = x.astype(jnp.float32)
        y = xf * lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + self.eps)
        return (y * scale).astype(self.dtype)


def rope_cos_sin(positions, head_dim: int, theta: float):
    """positions [B, L] int -> (cos, sin) [B, L, head_dim] f32, HF layout (freqs repeated twice)."""
    inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    freqs = positions.astype(jnp.float32)[..., None] * inv_freq
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(emb), jnp.sin(emb)


def apply_rope(x, cos, sin):
    """x [B, L, H, hd]; cos/sin [B, L, hd]. HF rotate_half (non-interleaved) rotation, f32 math."""
    xf = x.astype(jnp.float32)
    half = x.shape[-1] // 2
    rot = jnp.concatenate([-xf[..., half:], xf[..., :half]], axis=-1)
    return (xf * cos[:, :, None, :] + rot * sin[:, :, None, :]).astype(x.dtype)


def _proj(cfg: Qwen3Config, name: str, features: int, dtype) -> LoRADense:
    lc = cfg.lora
    rank = lc.rank if (lc.rank > 0 and name in lc.targets) else 0
    return LoRADense(features, rank=rank, alpha=lc.alpha, dropout_rate=lc.dropout, dtype=dtype, name=name)


# ----------------------------------------------------------------------------- blocks


MODES = ("train", "prefill", "decode")


@struct.dataclass
class DecoderContext:
    """Per-call inputs shared by every decoder layer (the per-layer KV cache travels separately).

    positions [B, L] int32: RoPE positions of the L new tokens.
    lengths [B] int | None: train mode only; keys at or past lengths[b] are masked (right padding).
    cache_index int32 scalar | None: decode mode only; cache slot of the first new token.
    kv_mask [B, S_max] bool | None: prefill / decode; False on (left) pad slots. None = no padding.
    mode (static): "train"   no cache, causal, right padding masked by `lengths`;
                   "prefill" write k/v at cache slot 0 (static) and attend only to the new k/v;
                   "decode"  write k/v at `cache_index` and attend over the cache.
    deterministic (static): no dropout (LoRA) when True.

    `mode` and `deterministic` are not pytree leaves: under jit / jax.checkpoint they are part of
    the treedef, so they stay Python values (a change recompiles; new positions do not).
    """

    positions: jax.Array
    lengths: jax.Array | None = None
    cache_index: jax.Array | None = None
    kv_mask: jax.Array | None = None
    mode: str = struct.field(pytree_node=False, default="train")
    deterministic: bool = struct.field(pytree_node=False, default=True)

    def __post_init__(self):
        if self.mode not in MODES:
            raise Qwen3InputError(f"DecoderContext: mode must be one of {MODES}, got {self.mode!r}")


class _Qwen3Part(nn.Module):
    """Fields shared by the Qwen3 modules."""

    cfg: Qwen3Config
    dtype: Any = jnp.float32  # matmul input / activation dtype; params and softmax stay f32
    attention_impl: str | None = None  # kernels.attention implementation (None = default dispatch)


class Qwen3Attention(_Qwen3Part):
    """GQA self-attention. x [B, L, D], cache {'k', 'v'} [B, S_max, Hkv, hd] | None (train),
    ctx -> (out [B, L, D], new cache | None)."""

    @nn.compact
    def __call__(self, x, cache, ctx: DecoderContext):
        cfg = self.cfg
        if (cache is None) != (ctx.mode == "train"):
            raise Qwen3InputError(f"Qwen3Attention: mode {ctx.mode!r} with cache={'None' if cache is None else 'given'}")
        b, l, _ = x.shape
        hq, hkv, hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        det = ctx.deterministic
        q = _proj(cfg, "q_proj", hq * hd, self.dtype)(x, det).reshape(b, l, hq, hd)
        k = _proj(cfg, "k_proj", hkv * hd, self.dtype)(x, det).reshape(b, l, hkv, hd)
        v = _proj(cfg, "v_proj", hkv * hd, self.dtype)(x, det).reshape(b, l, hkv, hd)
        q = RMSNorm(cfg.rms_norm_eps, self.dtype, name="q_norm")(q)
        k = RMSNorm(cfg.rms_norm_eps, self.dtype, name="k_norm")(k)
        cos, sin = rope_cos_sin(ctx.positions, hd, cfg.rope_theta)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)

        new_cache = None
        if ctx.mode == "train":
            out = attention(q, k, v, kv_lengths=ctx.lengths, causal=True, implementation=self.attention_impl)
        else:
            zero = jnp.zeros((), jnp.int32)
            idx = zero if ctx.mode == "prefill" else jnp.asarray(ctx.cache_index, jnp.int32)
            ck = lax.dynamic_update_slice(cache["k"], k.astype(cache["k"].dtype), (zero, idx, zero, zero))
            cv = lax.dynamic_update_slice(cache["v"], v.astype(cache["v"].dtype), (zero, idx, zero, zero))
            new_cache = {"k": ck, "v": cv}
            s_max = ck.shape[1]
            # Only "xla" (and the "reference" oracle) take an explicit mask: the KV-cache paths use
            # it whatever kernel training asked for (an explicit kernel name would raise).
            impl = self.attention_impl if self.attention_impl in ("xla", "reference") else "xla"
            kvm = jnp.ones((b, s_max), bool) if ctx.kv_mask is None else ctx.kv_mask.astype(bool)
            if ctx.mode == "decode":
                slot = jnp.arange(s_max)[None, None, :]
                mask = (slot <= idx + jnp.arange(l)[None, :, None]) & kvm[:, None, :]
                # Cast cached k/v to the query dtype (bf16 cache with f32 compute must not mismatch).
                out = attention(q, ck.astype(q.dtype), cv.astype(q.dtype), mask=mask, implementation=impl)
            elif ctx.kv_mask is None:  # prefill without padding: plain causal attention
                out = attention(q, k, v, causal=True, implementation=self.attention_impl)
            else:  # prefill: the cache holds nothing but these L tokens
                mask = jnp.broadcast_to(kvm[:, None, :l], (b, l, l))
                out = attention(q, k, v, causal=True, mask=mask, implementation=impl)
        out = out.reshape(b, l, hq * hd)
        return _proj(cfg, "o_proj", cfg.hidden_size, self.dtype)(out, det), new_cache


class Qwen3MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x)). [B, L, D] -> [B, L, D]."""

    cfg: Qwen3Config
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        cfg = self.cfg
        g = _proj(cfg, "gate_proj", cfg.intermediate_size, self.dtype)(x, deterministic)
        u = _proj(cfg, "up_proj", cfg.intermediate_size, self.dtype)(x, deterministic)
        return _proj(cfg, "down_proj", cfg.hidden_size, self.dtype)(nn.silu(g) * u, deterministic)


class Qwen3DecoderLayer(_Qwen3Part):
    """Pre-norm block. h [B, L, D], cache (this layer's {'k', 'v'} | None), ctx -> (h, new cache | None).

    Remat: `remat_layer(Qwen3DecoderLayer, policy)` needs no static arguments — `cache` and `ctx`
    are pytrees whose only Python values (ctx.mode, ctx.deterministic) are non-pytree fields, which
    jax.checkpoint keeps static through the treedef.
    """

    @nn.compact
    def __call__(self, h, cache, ctx: DecoderContext):
        cfg = self.cfg
        a, new_cache = Qwen3Attention(cfg, self.dtype, self.attention_impl, name="self_attn")(
            RMSNorm(cfg.rms_norm_eps, self.dtype, name="input_layernorm")(h), cache, ctx)
        h = h + a
        m = Qwen3MLP(cfg, self.dtype, name="mlp")(
            RMSNorm(cfg.rms_norm_eps, self.dtype, name="post_attention_layernorm")(h), ctx.deterministic)
        return h + m, new_cache


class Qwen3Model(_Qwen3Part):
    """HF `model.*`: embeddings, decoder layers `layers/{i}` (a `LayerStack`; scanned:
    `layers/stacked/...` with [L, ...] leaves), final norm.

    __call__(inputs_embeds [B, L, D], cache (tuple per layer) | None, ctx) -> (final-normed hidden
    [B, L, D] in `dtype`, new cache | None).
    """

    remat: bool | str = False
    scan_layers: bool = False   # layers stacked at rest ([L, ...]) and scanned: funasr_jax.models.stack

    def setup(self):
        cfg = self.cfg
        self.embed_tokens = nn.Embed(cfg.vocab_size, cfg.hidden_size, dtype=self.dtype,
                                     param_dtype=jnp.float32,
                                     embedding_init=nn.initializers.normal(stddev=0.02))
        layer_args = ((cfg, self.dtype, self.attention_impl),) * cfg.num_hidden_layers
        self.layers = LayerStack(Qwen3DecoderLayer, layer_args, collect=True, scan=self.scan_layers,
                                 remat=self.remat)
        self.norm = RMSNorm(cfg.rms_norm_eps, self.dtype)

    def embed(self, input_ids):
        return self.embed_tokens(input_ids)

    def __call__(self, inputs_embeds, cache, ctx: DecoderContext):
        per_layer = (None,) * self.cfg.num_hidden_layers if cache is None else tuple(cache)
        h, new_cache = self.layers(inputs_embeds.astype(self.dtype), ctx, per_layer=per_layer)
        return self.norm(h), (None if cache is None else new_cache)


# ----------------------------------------------------------------------------- causal LM


def decoder_context(positions, lengths, cache, cache_index, kv_mask, deterministic: bool) -> DecoderContext:
    """The context of a `Qwen3ForCausalLM.__call__`: no cache -> "train"; a cache with the Python
    int cache_index 0 -> "prefill" (only the fresh k/v are needed); any other index -> "decode"."""
    if cache is None:
        return DecoderContext(positions, lengths, None, None, "train", deterministic)
    if isinstance(cache_index, int) and cache_index == 0:
        return DecoderContext(positions, None, None, kv_mask, "prefill", deterministic)
    return DecoderContext(positions, None, jnp.asarray(cache_index, jnp.int32), kv_mask, "decode", deterministic)


def init_cache(cfg: Qwen3Config, batch: int, max_len: int, dtype=jnp.float32):
    """Zero KV cache: a tuple (one per layer) of {'k', 'v'} arrays [batch, max_len, Hkv, head_dim]."""
    shape = (batch, max_len, cfg.num_key_value_heads, cfg.head_dim)
    return tuple({"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}
                 for _ in range(cfg.num_hidden_layers))


_precision = with_matmul_precision(lambda self: self.matmul_precision)


class Qwen3ForCausalLM(_Qwen3Part):
    """Qwen3 causal LM. Params f32; matmul inputs in `dtype`; logits f32.

    Methods (use with `module.apply({'params': p}, ..., method=...)`, or from a parent module):
      embed(input_ids [B, L] int) -> [B, L, D] (dtype)
      __call__(inputs_embeds [B, L, D], *, positions, lengths, cache, cache_index, kv_mask,
               deterministic, return_hidden) -> (logits [B, L, V] f32 | hidden [B, L, D], new_cache)
      logits_from_hidden(h [..., D]) -> [..., V] f32
      init_cache(batch, max_len, dtype=None) -> cache (needs no params; callable unbound)
    """

    remat: bool | str = False  # False/"none", True/"block", or a funasr_jax.models.remat policy name
    matmul_precision: str | None = None  # funasr_jax.models.precision; None: JAX's current setting
    scan_layers: bool = False   # layers stacked at rest ([L, ...]) and scanned: funasr_jax.models.stack

    def setup(self):
        self.model = Qwen3Model(self.cfg, self.dtype, self.attention_impl, self.remat, scan_layers=self.scan_layers)
        if not self.cfg.tie_word_embeddings:
            # f32 accumulation (as the tied head): bf16 compute must not round the logits to bf16.
            self.lm_head = nn.Dense(self.cfg.vocab_size, use_bias=False, dtype=self.dtype,
                                    param_dtype=jnp.float32,
                                    kernel_init=nn.initializers.normal(stddev=0.02),
                                    dot_general=functools.partial(lax.dot_general,
                                                                  preferred_element_type=jnp.float32))

    @_precision
    def embed(self, input_ids):
        """input_ids [B, L] int -> [B, L, D] in `dtype`."""
        return self.model.embed(input_ids)

    @_precision
    def logits_from_hidden(self, h):
        """Final-normed hidden [..., D] -> logits [..., V] f32 (tied: h @ embedding.T).

        Matmul inputs in `dtype`, accumulated in f32. With `__call__(..., return_hidden=True)`
        this lets a caller project only the positions it needs (the training loss, GRPO).
        """
        if self.cfg.tie_word_embeddings:
            w = self.model.embed_tokens.embedding.astype(self.dtype)
            return jnp.einsum("...d,vd->...v", h.astype(self.dtype), w, preferred_element_type=jnp.float32)
        return self.lm_head(h.astype(self.dtype)).astype(jnp.float32)

    def init_cache(self, batch: int, max_len: int, dtype=None):
        """Zero KV cache for `batch` rows of `max_len` slots (default dtype: the compute dtype)."""
        return init_cache(self.cfg, batch, max_len, self.dtype if dtype is None else dtype)

    @_precision
    def __call__(self, inputs_embeds, *, positions=None, lengths=None, cache=None, cache_index=None,
                 kv_mask=None, deterministic: bool = True, return_hidden: bool = False):
        """Forward pass.

        inputs_embeds [B, L, D]; positions [B, L] int (RoPE positions; default arange(L)).
        Without cache: `lengths` [B] (right padding) masks keys at or past lengths[b]; causal.
        With cache (from `init_cache`): k/v are written at slot `cache_index` (int or traced int32
          scalar) and queries attend over the cache to slots <= cache_index + t and True in
          `kv_mask` [B, S_max] (left padding: False on pad slots). `lengths` must be None.
        Returns (logits [B, L, V] f32, new_cache) — or (final-normed hidden [B, L, D], new_cache)
        with `return_hidden=True`. new_cache is None without a cache.
        """
        self._check(inputs_embeds, positions, lengths, cache, cache_index, kv_mask)
        b, l, _ = inputs_embeds.shape
        if self.is_initializing() and not self.cfg.tie_word_embeddings:
            self.model.embed(jnp.zeros((1, 1), jnp.int32))  # create embed_tokens (unused here)
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(l, dtype=jnp.int32)[None], (b, l))
        h, new_cache = self.model(inputs_embeds, cache, decoder_context(
            positions, lengths, cache, cache_index, kv_mask, deterministic))
        if return_hidden:
            return h, new_cache
        return self.logits_from_hidden(h), new_cache

    def _check(self, x, positions, lengths, cache, cache_index, kv_mask):
        cfg = self.cfg
        if x.ndim != 3 or x.shape[-1] != cfg.hidden_size:
            raise Qwen3InputError(
                f"Qwen3ForCausalLM: inputs_embeds must be [B, L, {cfg.hidden_size}], got {tuple(x.shape)}")
        b, l, _ = x.shape
        if positions is not None and tuple(positions.shape) != (b, l):
            raise Qwen3InputError(f"Qwen3ForCausalLM: positions must be [B, L] = {(b, l)}, got {tuple(positions.shape)}")
        if lengths is not None and tuple(jnp.shape(lengths)) != (b,):
            raise Qwen3InputError(f"Qwen3ForCausalLM: lengths must be [B] = ({b},), got {tuple(jnp.shape(lengths))}")
        if cache is None:
            if cache_index is not None or kv_mask is not None:
                raise Qwen3InputError("Qwen3ForCausalLM: cache_index / kv_mask given without a cache")
            return
        if lengths is not None:
            raise Qwen3InputError("Qwen3ForCausalLM: with a cache, mask padding with kv_mask, not lengths")
        if cache_index is None:
            raise Qwen3InputError("Qwen3ForCausalLM: a cache needs cache_index (slot of the first new token)")
        if len(cache) != cfg.num_hidden_layers:
            raise Qwen3InputError(
                f"Qwen3ForCausalLM: cache has {len(cache)} layers, model has {cfg.num_hidden_layers}")
        want = (b, cfg.num_key_value_heads, cfg.head_dim)
        ks = tuple(cache[0]["k"].shape)
        if len(ks) != 4 or (ks[0], ks[2], ks[3]) != want:
            raise Qwen3InputError(
                f"Qwen3ForCausalLM: cache k must be [B, S_max, Hkv, head_dim] with B, Hkv, head_dim = {want}, got {ks}")
        if kv_mask is not None and tuple(kv_mask.shape) != (b, ks[1]):
            raise Qwen3InputError(f"Qwen3ForCausalLM: kv_mask must be [B, S_max] = {(b, ks[1])}, got {tuple(kv_mask.shape)}")
        if isinstance(cache_index, int) and cache_index + l > ks[1]:
            raise Qwen3InputError(
                f"Qwen3ForCausalLM: cache_index {cache_index} + {l} new tokens exceeds the cache size {ks[1]}")


def causal_lm_loss(logits, labels, ignore_index: int = IGNORE_INDEX):
    """HF causal-LM loss: logits [B, L, V] predict labels shifted by one; mean over kept tokens.

    labels [B, L] int, `ignore_index` entries skipped. Returns (mean loss f32, number of kept tokens).
    With no kept token the mean is 0 (HF gives NaN).
    """
    lg = logits[:, :-1].astype(jnp.float32)
    tgt = labels[:, 1:]
    keep = tgt != ignore_index
    logp = jax.nn.log_softmax(lg, axis=-1)
    nll = -jnp.take_along_axis(logp, jnp.where(keep, tgt, 0)[..., None], axis=-1)[..., 0]
    n = jnp.sum(keep)
    return jnp.sum(jnp.where(keep, nll, 0.0)) / jnp.maximum(n, 1), n
