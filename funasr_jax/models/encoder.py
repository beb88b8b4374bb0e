"""SenseVoiceEncoderSmall: the SAN-M audio encoder of Fun-ASR (FunASR `sense_voice/model.py`).

Input: LFR features [B, T, input_size] (one frame = 60 ms) and their lengths [B]; output:
[B, T, output_size] float32 and the same lengths (no subsampling).

Module names mirror FunASR's state-dict keys (`encoders0/0/self_attn/linear_q_k_v/kernel` <->
`encoders0.0.self_attn.linear_q_k_v.weight`), so `funasr_jax.io.names.params_from_state_dict`
converts a PyTorch checkpoint by renaming alone.

Precision: matmul inputs are cast to `dtype`; the residual stream, LayerNorms, softmax and the
FSMN memory block stay in float32 (an fp16 FSMN raised a port's max error from 0.005 to 2.9).
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from funasr_jax.models.config import EncoderConfig
from funasr_jax.models.stack import LayerStack
from kernels.attention.api import attention


class ModelInputError(ValueError):
    """An input array or a config field does not fit the model; the message names it."""


def check_features(name: str, x, dim: int, what: str = "feature dim") -> None:
    """Raise ModelInputError unless `x` is [B, T, dim]."""
    if x.ndim != 3 or x.shape[-1] != dim:
        raise ModelInputError(f"{name}: expected [B, T, {dim}] ({what} {dim}), got shape {tuple(x.shape)}")


def check_lengths(name: str, lengths, batch: int) -> None:
    if lengths.ndim != 1 or lengths.shape[0] != batch:
        raise ModelInputError(f"{name}: expected lengths of shape [{batch}], got {tuple(lengths.shape)}")


def sinusoidal_position_encoding(length: int, depth: int) -> jnp.ndarray:
    """FunASR SinusoidalPositionEncoder table [length, depth], float32.

    Positions are 1-based; the first depth/2 channels are sines, the rest cosines (not
    interleaved); timescale increment ln(10000) / (depth/2 - 1).
    """
    if depth % 2 or depth < 4:
        raise ModelInputError(f"EncoderConfig.input_size must be even and >= 4 for the position encoding, got {depth}")
    half = depth // 2
    inc = math.log(10000.0) / (half - 1)
    inv = jnp.exp(jnp.arange(half, dtype=jnp.float32) * -inc)
    t = jnp.arange(1, length + 1, dtype=jnp.float32)[:, None] * inv[None, :]
    return jnp.concatenate([jnp.sin(t), jnp.cos(t)], axis=-1)


def length_mask(lengths, t: int) -> jnp.ndarray:
    """[B, T] float32, 1.0 on valid frames."""
    return (jnp.arange(t)[None, :] < jnp.asarray(lengths)[:, None]).astype(jnp.float32)


def layer_norm(eps: float, name: str) -> nn.LayerNorm:
    """LayerNorm computed in float32 with the two-pass variance (inputs here reach |x| ~ 1e3)."""
    return nn.LayerNorm(epsilon=eps, dtype=jnp.float32, param_dtype=jnp.float32,
                        use_fast_variance=False, name=name)


def attention_with_prob_dropout(q, k, v, lengths, rate: float, rng) -> jnp.ndarray:
    """Key-padded softmax attention with dropout on the probabilities (training only).

    The kernel dispatch has no dropout, so this plain path is used only when an attention
    dropout rate is set and the call is not deterministic. q/k/v [B, T, H, D] -> [B, T, H, D].
    """
    d = q.shape[-1]
    logits = jnp.einsum("bthd,bshd->bhts", q.astype(jnp.float32), k.astype(jnp.float32)) * d ** -0.5
    keep = (jnp.arange(k.shape[1])[None, :] < lengths[:, None])[:, None, None, :]
    logits = jnp.where(keep, logits, -jnp.inf)
    p = jnp.where(keep, jax.nn.softmax(logits, axis=-1), 0.0)
    p = jnp.where(jax.random.bernoulli(rng, 1.0 - rate, p.shape), p / (1.0 - rate), 0.0)
    return jnp.einsum("bhts,bshd->bthd", p, v.astype(jnp.float32)).astype(q.dtype)


class FSMNBlock(nn.Module):
    """Depthwise, bias-free temporal conv (FunASR `fsmn_block`, a cross-correlation).

    Param `kernel` [K, 1, D] (Flax Conv layout of torch Conv1d weight [D, 1, K]). Computed as a
    float32 shift-accumulate over the zero-padded time axis. [B, T, D] -> [B, T, D] float32.
    """

    features: int
    kernel_size: int
    left_pad: int

    @nn.compact
    def __call__(self, x):
        k = self.kernel_size
        kernel = self.param(
            "kernel",
            nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform", in_axis=(0, 1), out_axis=2),
            (k, 1, self.features), jnp.float32,
        )
        t = x.shape[1]
        xp = jnp.pad(x.astype(jnp.float32), ((0, 0), (self.left_pad, k - 1 - self.left_pad), (0, 0)))
        w = kernel[:, 0, :].astype(jnp.float32)
        out = jnp.zeros(x.shape, jnp.float32)
        for j in range(k):
            out = out + xp[:, j:j + t, :] * w[j]
        return out


class MultiHeadedAttentionSANM(nn.Module):
    """SAN-M self-attention + FSMN memory on the masked value projection (§3.4).

    x [B, T, in_size] (already normalised), mask [B, T] float32 -> [B, T, n_feat] float32.
    """

    n_head: int
    n_feat: int
    kernel_size: int
    sanm_shift: int = 0
    dropout_rate: float = 0.0
    dtype: jnp.dtype = jnp.float32
    attention_impl: str | None = None

    @nn.compact
    def __call__(self, x, mask, lengths, deterministic: bool = True):
        b, t, _ = x.shape
        d_k = self.n_feat // self.n_head
        qkv = nn.Dense(3 * self.n_feat, dtype=self.dtype, param_dtype=jnp.float32, name="linear_q_k_v")(
            x.astype(self.dtype))
        q, k, v = jnp.split(qkv, 3, axis=-1)

        left = (self.kernel_size - 1) // 2 + max(self.sanm_shift, 0)
        vm = v.astype(jnp.float32) * mask[:, :, None]
        mem = FSMNBlock(self.n_feat, self.kernel_size, left, name="fsmn_block")(vm) + vm
        mem = nn.Dropout(self.dropout_rate)(mem, deterministic=deterministic)
        mem = mem * mask[:, :, None]

        heads = lambda a: a.reshape(b, t, self.n_head, d_k)
        if self.dropout_rate > 0.0 and not deterministic:
            ctx = attention_with_prob_dropout(heads(q), heads(k), heads(v), lengths, self.dropout_rate,
                                              self.make_rng("dropout"))
        else:
            ctx = attention(heads(q), heads(k), heads(v), kv_lengths=lengths, q_lengths=None,
                            implementation=self.attention_impl)
        ctx = ctx.reshape(b, t, self.n_feat)
        out = nn.Dense(self.n_feat, dtype=self.dtype, param_dtype=jnp.float32, name="linear_out")(
            ctx.astype(self.dtype))
        return out.astype(jnp.float32) + mem


class PositionwiseFeedForward(nn.Module):
    """w_2(dropout(ReLU(w_1 x))): [B, T, D] -> [B, T, D] float32."""

    hidden: int
    out: int
    dropout_rate: float = 0.0
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        h = nn.Dense(self.hidden, dtype=self.dtype, param_dtype=jnp.float32, name="w_1")(x.astype(self.dtype))
        h = nn.Dropout(self.dropout_rate)(nn.relu(h), deterministic=deterministic)
        return nn.Dense(self.out, dtype=self.dtype, param_dtype=jnp.float32, name="w_2")(h).astype(jnp.float32)


class EncoderLayerSANM(nn.Module):
    """Pre-norm SAN-M layer (§3.3). [B, T, in_size] -> [B, T, size] float32.

    No attention residual when in_size != size (the 560 -> 512 first layer).
    """

    cfg: EncoderConfig
    in_size: int
    dtype: jnp.dtype = jnp.float32
    attention_impl: str | None = None

    @nn.compact
    def __call__(self, x, mask, lengths, deterministic: bool = True):
        cfg = self.cfg
        size = cfg.output_size
        h = layer_norm(cfg.layer_norm_eps, "norm1")(x)
        a = MultiHeadedAttentionSANM(
            cfg.attention_heads, size, cfg.kernel_size, cfg.sanm_shift, cfg.attention_dropout_rate,
            self.dtype, self.attention_impl, name="self_attn",
        )(h, mask, lengths, deterministic)
        a = nn.Dropout(cfg.dropout_rate)(a, deterministic=deterministic)
        x = x.astype(jnp.float32) + a if self.in_size == size else a
        h = layer_norm(cfg.layer_norm_eps, "norm2")(x)
        f = PositionwiseFeedForward(cfg.linear_units, size, cfg.dropout_rate, self.dtype, name="feed_forward")(
            h, deterministic)
        return x + nn.Dropout(cfg.dropout_rate)(f, deterministic=deterministic)


def sanm_stack(cfg: EncoderConfig, in_size: int, count: int, *, dtype, attention_impl, remat, name: str,
               scan: bool = False) -> LayerStack:
    """`count` EncoderLayerSANM layers: children "0", ... (a torch ModuleList) or, with `scan`,
    stacked at rest under "stacked" ([count, ...] leaves; `funasr_jax.models.stack`); the first
    takes `in_size` features, the rest output_size (so a scanned stack needs in_size == output_size). Call it inside a compact method; apply it as
    (x [B, T, in_size], mask [B, T] f32, lengths [B], deterministic) -> [B, T, output_size] f32.
    remat: False/"none", True/"block", or a `funasr_jax.models.remat` policy name.
    """
    args = tuple((cfg, in_size if i == 0 else cfg.output_size, dtype, attention_impl) for i in range(count))
    return LayerStack(EncoderLayerSANM, args, scan=scan, remat=remat, static_argnames=("deterministic",), name=name)


class SenseVoiceEncoderSmall(nn.Module):
    """The SAN-M encoder (§3.2).

    __call__(xs [B, T, input_size], lengths [B] int, deterministic) -> (out [B, T, output_size]
    float32, lengths [B] int32). Rows past a length are not meaningful.
    """

    cfg: EncoderConfig
    dtype: jnp.dtype = jnp.float32
    attention_impl: str | None = None
    remat: bool | str = False
    scan_layers: bool = False   # stacks of > 1 layer stacked at rest and scanned: funasr_jax.models.stack

    def _check_config(self):
        cfg = self.cfg
        if cfg.output_size % cfg.attention_heads:
            raise ModelInputError(
                f"EncoderConfig.output_size {cfg.output_size} is not a multiple of attention_heads {cfg.attention_heads}")
        if cfg.num_blocks < 1:
            raise ModelInputError(f"EncoderConfig.num_blocks must be >= 1, got {cfg.num_blocks}")
        if cfg.kernel_size < 1 or (cfg.kernel_size - 1) // 2 + max(cfg.sanm_shift, 0) > cfg.kernel_size - 1:
            raise ModelInputError(
                f"EncoderConfig.kernel_size {cfg.kernel_size} / sanm_shift {cfg.sanm_shift} give a negative padding")

    @nn.compact
    def __call__(self, xs, lengths, deterministic: bool = True):
        cfg = self.cfg
        self._check_config()
        check_features("SenseVoiceEncoderSmall input xs", xs, cfg.input_size, "EncoderConfig.input_size")
        lengths = jnp.asarray(lengths)
        check_lengths("SenseVoiceEncoderSmall lengths", lengths, xs.shape[0])
        t = xs.shape[1]
        lengths = jnp.minimum(lengths.astype(jnp.int32), t)
        mask = length_mask(lengths, t)

        x = xs.astype(jnp.float32) * math.sqrt(cfg.output_size)
        x = x + sinusoidal_position_encoding(t, cfg.input_size)[None]

        stack = functools.partial(sanm_stack, cfg, dtype=self.dtype, attention_impl=self.attention_impl,
                                  remat=self.remat, scan=self.scan_layers)
        x = stack(cfg.input_size, 1, name="encoders0")(x, mask, lengths, deterministic)
        if cfg.num_blocks > 1:
            x = stack(cfg.output_size, cfg.num_blocks - 1, name="encoders")(x, mask, lengths, deterministic)
        x = layer_norm(cfg.layer_norm_eps, "after_norm")(x)
        if cfg.tp_blocks > 0:
            x = stack(cfg.output_size, cfg.tp_blocks, name="tp_encoders")(x, mask, lengths, deterministic)
        x = layer_norm(cfg.layer_norm_eps, "tp_norm")(x)
        return x.astype(jnp.float32), lengths
