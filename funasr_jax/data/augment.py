"""Waveform augmentation (pure numpy; randomness only through an explicit np.random.Generator).

Recipe (funaudio-asr-recipe.md "Noise robustness", "Hallucination mitigation"): noise is mixed
into ~30% of utterances at SNR ~ N(10 dB, 5 dB) (the caller draws the SNR); zero padding is
applied *before* the noise so the model sees noise-only stretches it must transcribe as nothing.
All signals are [S] float32 samples at 16 kHz in [-1, 1].
"""

from __future__ import annotations

import numpy as np
import soxr

__all__ = ["mix_noise", "noise_segment", "speed_perturb", "zero_pad"]

SAMPLE_RATE = 16000


def noise_segment(noise: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """[length] samples of `noise` from a random offset, tiled (wrapping) if it is too short."""
    noise = np.asarray(noise, dtype=np.float32)
    if noise.ndim != 1 or noise.size == 0:
        raise ValueError(f"noise must be a non-empty 1-D array, got shape {noise.shape}")
    offset = int(rng.integers(noise.size))
    return noise[(offset + np.arange(length)) % noise.size]


def mix_noise(speech: np.ndarray, noise: np.ndarray, snr_db: float, rng: np.random.Generator,
              speech_power: float | None = None) -> np.ndarray:
    """speech + g * noise_segment, with g chosen so 10*log10(Ps / Pn) == snr_db.

    Args:
      speech: [S] float32.
      noise: [S_n] float32, any length (cropped at a random offset or tiled).
      snr_db: target SNR in dB (drawn by the caller, e.g. N(10, 5)).
      rng: source of the crop offset.
      speech_power: Ps (mean square) to use instead of mean(speech**2); pass the power of the
        un-padded utterance when `speech` was zero-padded, so padding does not lower the SNR.
    Returns: [S] float32. Unchanged when speech or noise is all zeros (SNR undefined).
    """
    speech = np.asarray(speech, dtype=np.float32)
    seg = noise_segment(noise, speech.size, rng).astype(np.float64)
    ps = float(np.mean(np.square(speech, dtype=np.float64))) if speech_power is None else float(speech_power)
    pn = float(np.mean(np.square(seg)))
    if ps <= 0.0 or pn <= 0.0:
        return speech.copy()
    gain = np.sqrt(ps / (pn * 10.0 ** (snr_db / 10.0)))
    return (speech.astype(np.float64) + gain * seg).astype(np.float32)


def zero_pad(speech: np.ndarray, before_s: float, after_s: float, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Prepends round(before_s*sr) and appends round(after_s*sr) zero samples. [S] -> [S']."""
    if before_s < 0 or after_s < 0:
        raise ValueError(f"padding must be >= 0 s, got before={before_s}, after={after_s}")
    b, a = int(round(before_s * sr)), int(round(after_s * sr))
    return np.pad(np.asarray(speech, dtype=np.float32), (b, a))


def speed_perturb(speech: np.ndarray, factor: float, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Kaldi-style speed perturbation: play `factor` times faster (pitch shifts too).

    Implemented as resampling from sr*factor to sr with soxr, so [S] -> [~S / factor].
    """
    if factor <= 0:
        raise ValueError(f"speed factor must be > 0, got {factor}")
    speech = np.asarray(speech, dtype=np.float32)
    if factor == 1.0:
        return speech.copy()
    return np.ascontiguousarray(soxr.resample(speech, sr * factor, sr, quality="HQ"), dtype=np.float32)
