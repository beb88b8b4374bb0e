"""The batched, jittable jnp path of the front end (`cfg` is a static Python object).

waves [B, S] float (16 kHz, [-1, 1]) with lengths [B] samples -> fbank [B, T_fb, 80] (10 ms
frames) -> LFR [B, T, 560] (60 ms frames) -> optional CMVN; numerically `frontend.extract_features`
per row (the tables, sizes and CMVN come from `funasr_jax.audio.frontend`).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from funasr_jax.audio.frontend import (
    INT16_SCALE,
    LOG_FLOOR,
    PREEMPH,
    FrontendConfig,
    FrontendError,
    apply_cmvn,
    frontend_tables,
    lfr_index,
    num_fbank_frames,
    resolve_cmvn,
)

__all__ = ["fbank", "lfr", "features"]



def _check_lengths(lengths, num_samples: int, cfg: FrontendConfig) -> None:
    """Validates concrete lengths eagerly (skipped when traced: then the caller vouches)."""
    try:
        lens = np.asarray(lengths)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return
    t = frontend_tables(cfg)
    bad = np.nonzero((lens < 0) | (lens > num_samples) | ((lens > 0) & (lens < t.min_samples)))[0]
    if bad.size:
        b = int(bad[0])
        raise FrontendError(
            f"lengths[{b}] = {int(lens[b])} is invalid for waves of {num_samples} samples "
            f"(need 0 or {t.min_samples}..{num_samples})"
        )


def fbank(waves, lengths, cfg: FrontendConfig = FrontendConfig()):
    """Batched Kaldi fbank (jittable; cfg is static).

    Args:
      waves: [B, S] float samples in [-1, 1], zero-padded past each clip.
      lengths: [B] int, valid samples per clip (0 or >= frontend_tables(cfg).min_samples).
    Returns:
      feats [B, T_fb_max, n_mels] float32 with T_fb_max = num_fbank_frames(S), frames at or
      past a clip's own T_fb are 0; fb_lengths [B] int32.
    """
    waves = jnp.asarray(waves, jnp.float32)
    if waves.ndim != 2:
        raise FrontendError(f"waves must be [B, S], got shape {waves.shape}")
    lengths = jnp.asarray(lengths)
    if lengths.shape != waves.shape[:1]:
        raise FrontendError(f"lengths must be [B] = [{waves.shape[0]}], got shape {lengths.shape}")
    _check_lengths(lengths, waves.shape[1], cfg)
    t = frontend_tables(cfg)
    s = waves.shape[1]
    t_max = num_fbank_frames(s, cfg)
    if t_max == 0:
        return jnp.zeros((waves.shape[0], 0, cfg.n_mels), jnp.float32), jnp.zeros(waves.shape[:1], jnp.int32)
    lengths = lengths.astype(jnp.int32)

    # Per-clip frame count and window length (the whole clip when shorter than one frame).
    short = lengths < t.frame_len
    fb_len = jnp.where(short, (lengths > 0).astype(jnp.int32), 1 + (lengths - t.frame_len) // t.frame_shift)
    win_len = jnp.where(short, jnp.asarray(t.short_window_len)[jnp.clip(lengths, 0, t.frame_len - 1)], t.frame_len)

    x = waves * INT16_SCALE
    if s < t.frame_len:
        x = jnp.pad(x, ((0, 0), (0, t.frame_len - s)))
    idx = np.arange(t_max)[:, None] * t.frame_shift + np.arange(t.frame_len)[None, :]
    frames = x[:, idx]  # [B, T, frame_len]

    pos = jnp.arange(t.frame_len)
    valid = (pos[None, :] < win_len[:, None]).astype(jnp.float32)[:, None, :]  # [B, 1, frame_len]
    frames = frames * valid
    mean = frames.sum(-1, keepdims=True) / win_len.astype(jnp.float32)[:, None, None]
    frames = (frames - mean) * valid
    prev = jnp.concatenate([frames[..., :1], frames[..., :-1]], axis=-1)
    frames = frames - PREEMPH * prev
    # Full-length clips use the shared table; a short clip's window spans its own length.
    n1 = jnp.maximum(win_len - 1, 1).astype(jnp.float32)[:, None]
    short_win = 0.54 - 0.46 * jnp.cos((2.0 * math.pi) * pos[None, :].astype(jnp.float32) / n1)
    window = jnp.where((win_len == t.frame_len)[:, None], jnp.asarray(t.window)[None, :], short_win)
    frames = frames * (window[:, None, :] * valid)

    spec = jnp.fft.rfft(frames, n=t.n_fft, axis=-1)
    power = jnp.real(spec) ** 2 + jnp.imag(spec) ** 2
    energies = jnp.einsum("btf,fm->btm", power, jnp.asarray(t.mel), precision=jax.lax.Precision.HIGHEST)
    feats = jnp.log(jnp.maximum(energies, LOG_FLOOR))
    keep = jnp.arange(t_max)[None, :] < fb_len[:, None]
    return jnp.where(keep[..., None], feats, 0.0), fb_len


def lfr(feats, fb_lengths, m: int = 7, n: int = 6):
    """Batched LFR stacking with each utterance's own padding (jittable).

    Args: feats [B, T_fb, D]; fb_lengths [B] int (valid fbank frames per row).
    Returns: x [B, ceil(T_fb / n), m * D] float32 (rows at or past a clip's length are 0) and
      lfr_lengths [B] int32 = ceil(fb_lengths / n).
    """
    feats = jnp.asarray(feats, jnp.float32)
    if feats.ndim != 3:
        raise FrontendError(f"feats must be [B, T_fb, D], got shape {feats.shape}")
    b, t_fb, d = feats.shape
    fb_lengths = jnp.asarray(fb_lengths).astype(jnp.int32)
    if fb_lengths.shape != (b,):
        raise FrontendError(f"fb_lengths must be [B] = [{b}], got shape {fb_lengths.shape}")
    t_out = -(-t_fb // n)
    out_len = (fb_lengths + n - 1) // n
    if t_out == 0:
        return jnp.zeros((b, 0, m * d), jnp.float32), out_len
    idx = jnp.asarray(lfr_index(t_out, m, n))[None]  # [1, T, m]
    idx = jnp.clip(idx, 0, jnp.maximum(fb_lengths - 1, 0)[:, None, None])  # [B, T, m], right pad per clip
    x = jnp.take_along_axis(feats, idx.reshape(b, t_out * m, 1), axis=1)  # [B, T*m, D]
    x = x.reshape(b, t_out, m * d)
    keep = jnp.arange(t_out)[None, :] < out_len[:, None]
    return jnp.where(keep[..., None], x, 0.0), out_len


def features(waves, lengths, cfg: FrontendConfig = FrontendConfig(), cmvn=None):
    """Batched encoder input: fbank -> LFR -> CMVN (if `cmvn` or cfg.cmvn_file). Jittable.

    Args: waves [B, S] float in [-1, 1]; lengths [B] int samples.
    Returns: x [B, T, lfr_m * n_mels] float32 (rows past a clip's length are 0), lengths [B]
      int32 in frames of lfr_n * 10 ms (60 ms).
    """
    fb, fb_len = fbank(waves, lengths, cfg)
    x, x_len = lfr(fb, fb_len, cfg.lfr_m, cfg.lfr_n)
    cmvn = resolve_cmvn(cfg, cmvn)
    if cmvn is not None:
        shift = jnp.asarray(cmvn[0], jnp.float32)
        scale = jnp.asarray(cmvn[1], jnp.float32)
        keep = jnp.arange(x.shape[1])[None, :] < x_len[:, None]
        x = jnp.where(keep[..., None], apply_cmvn(x, shift, scale), 0.0)
    return x, x_len

