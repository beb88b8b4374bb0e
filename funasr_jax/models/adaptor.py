"""The FunASR llm_asr `Transformer` adaptor (FunASR `llm_asr/adaptor.py`); also the CTC decoder body.

x [B, T, encoder_dim] -> frame-concat downsample by k -> linear1 -> ReLU -> linear2 ->
n_layer pre-norm transformer blocks (no positional encoding, key-padding mask) -> [B, T', llm_dim].
T' = ceil(T / k); lengths' = (lengths - 1) // k + 1.

Names mirror FunASR's state-dict keys (`blocks/0/self_attn/linear_q/kernel` <->
`blocks.0.self_attn.linear_q.weight`). Block FFN width is llm_dim // 4 (hard-coded in FunASR).
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from funasr_jax.models.config import AdaptorConfig
from funasr_jax.models.encoder import (
    ModelInputError,
    PositionwiseFeedForward,
    check_features,
    check_lengths,
    layer_norm,
)
from funasr_jax.models.stack import LayerStack
from kernels.attention.api import attention


class MultiHeadedAttention(nn.Module):
    """Self-attention with separate q/k/v/out projections. [B, T, D] -> [B, T, D] float32."""

    n_head: int
    n_feat: int
    dtype: jnp.dtype = jnp.float32
    attention_impl: str | None = None

    @nn.compact
    def __call__(self, x, lengths):
        b, t, _ = x.shape
        d_k = self.n_feat // self.n_head
        xc = x.astype(self.dtype)
        proj = lambda name: nn.Dense(self.n_feat, dtype=self.dtype, param_dtype=jnp.float32, name=name)
        q, k, v = (proj(n)(xc).reshape(b, t, self.n_head, d_k) for n in ("linear_q", "linear_k", "linear_v"))
        ctx = attention(q, k, v, kv_lengths=lengths, q_lengths=None, implementation=self.attention_impl)
        return proj("linear_out")(ctx.reshape(b, t, self.n_feat)).astype(jnp.float32)


class EncoderLayer(nn.Module):
    """Pre-norm block: x + MHA(LN1 x); x + FFN(LN2 x). [B, T, D] -> [B, T, D] float32."""

    cfg: AdaptorConfig
    dtype: jnp.dtype = jnp.float32
    attention_impl: str | None = None

    @nn.compact
    def __call__(self, x, lengths, deterministic: bool = True):
        cfg = self.cfg
        drop = nn.Dropout(cfg.dropout_rate)
        h = layer_norm(cfg.layer_norm_eps, "norm1")(x)
        a = MultiHeadedAttention(cfg.attention_heads, cfg.llm_dim, self.dtype, self.attention_impl,
                                 name="self_attn")(h, lengths)
        x = x + drop(a, deterministic=deterministic)
        h = layer_norm(cfg.layer_norm_eps, "norm2")(x)
        f = PositionwiseFeedForward(cfg.llm_dim // 4, cfg.llm_dim, cfg.dropout_rate, self.dtype,
                                    name="feed_forward")(h, deterministic)
        return x + drop(f, deterministic=deterministic)


def frame_concat(x, k: int):
    """[B, T, D] -> [B, ceil(T/k), D*k]: zero-pad time to a multiple of k, stack k frames per row."""
    b, t, d = x.shape
    chunks = (t - 1) // k + 1
    x = jnp.pad(x, ((0, 0), (0, chunks * k - t), (0, 0)))
    return x.reshape(b, chunks, d * k)


class Transformer(nn.Module):
    """__call__(x [B, T, encoder_dim], lengths [B] int or None, deterministic)
    -> (y [B, T', llm_dim] float32, lengths' [B] int32 or None).

    lengths None means every frame is valid (no key mask); FunASR itself requires lengths.
    """

    cfg: AdaptorConfig
    dtype: jnp.dtype = jnp.float32
    attention_impl: str | None = None
    remat: bool | str = False
    scan_layers: bool = False   # blocks stacked at rest and scanned: funasr_jax.models.stack

    @nn.compact
    def __call__(self, x, lengths=None, deterministic: bool = True):
        cfg = self.cfg
        if cfg.downsample_rate < 1:
            raise ModelInputError(f"AdaptorConfig.downsample_rate must be >= 1, got {cfg.downsample_rate}")
        if cfg.n_layer > 0 and cfg.llm_dim % cfg.attention_heads:
            raise ModelInputError(
                f"AdaptorConfig.llm_dim {cfg.llm_dim} is not a multiple of attention_heads {cfg.attention_heads}")
        check_features(f"{self.name or 'Transformer'} input x", x, cfg.encoder_dim, "AdaptorConfig.encoder_dim")
        k = cfg.downsample_rate
        x = frame_concat(x.astype(jnp.float32), k)
        if lengths is not None:
            lengths = jnp.asarray(lengths)
            check_lengths(f"{self.name or 'Transformer'} lengths", lengths, x.shape[0])
            lengths = jnp.minimum((lengths.astype(jnp.int32) - 1) // k + 1, x.shape[1])

        dense = lambda n, name: nn.Dense(n, dtype=self.dtype, param_dtype=jnp.float32, name=name)
        h = nn.relu(dense(cfg.ffn_dim, "linear1")(x.astype(self.dtype)))
        x = dense(cfg.llm_dim, "linear2")(h).astype(jnp.float32)
        if cfg.n_layer > 0:
            # `n_layer` EncoderLayer children blocks/0, blocks/1, ... (a torch ModuleList), or
            # blocks/stacked/... [n_layer, ...] when scanned (funasr_jax.models.stack).
            args = ((cfg, self.dtype, self.attention_impl),) * cfg.n_layer
            x = LayerStack(EncoderLayer, args, scan=self.scan_layers, remat=self.remat,
                           static_argnames=("deterministic",), name="blocks")(x, lengths, deterministic)
        return x, lengths
